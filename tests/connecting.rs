//! Connecting where the team's database and API live: TLS with libpq's
//! modes against a PostgreSQL with `ssl = on`, a pooler in transaction mode,
//! the least-privileged role, API credentials, and no secret in any output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{
    assert_vectors, cluster_port, job, percent_encode, run, spawn, url_as, wait, PrivateCluster,
    Standin, TestDb,
};

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA named `name` in `dir`: `name.pem` and `name.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A cluster with `ssl = on` and a server certificate for `localhost` only,
/// signed by the CA `ca.pem`; `other-ca.pem` is a CA that signed nothing.
fn tls_cluster() -> (PrivateCluster, PathBuf) {
    let certs = std::env::temp_dir().join(format!(
        "postfinder-certs-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&certs).unwrap();
    make_ca(&certs, "ca");
    make_ca(&certs, "other-ca");
    openssl(
        &certs,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(certs.join("san.ext"), "subjectAltName = DNS:localhost\n").unwrap();
    openssl(
        &certs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // The server reads its key as its own user, and wants it private.
    let _ = Command::new("chown")
        .arg("-R")
        .arg("postgres")
        .arg(&certs)
        .status();
    let _ = Command::new("chmod")
        .arg("600")
        .arg(certs.join("server.key"))
        .status();
    let _ = Command::new("chmod").arg("755").arg(&certs).status();
    let conf = format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        certs.join("server.pem").display(),
        certs.join("server.key").display()
    );
    (PrivateCluster::start(&conf), certs)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs the job on the TLS cluster as `host` with `query` in the URL.
fn tls_run(cluster: &PrivateCluster, api: &Standin, host: &str, query: &str) -> common::Ended {
    let url = format!(
        "postgresql://postgres@{host}:{}/posts?{query}",
        cluster.port
    );
    run(job(&url, &api.url))
}

#[test]
fn tls_modes_connect_and_verify_like_libpq() {
    let (cluster, certs) = tls_cluster();
    let db = cluster.posts();
    db.post("1", "'over tls'", "false", "'FEED'", 1);
    let api = Standin::start(&[]);
    let ca = certs.join("ca.pem");
    let other = certs.join("other-ca.pem");
    let ca = percent_encode(&ca.display().to_string());
    let other = percent_encode(&other.display().to_string());

    // Encrypted, nothing verified: works whatever the certificate.
    for query in ["sslmode=require", "ssl=require", "sslmode=prefer"] {
        let ended = tls_run(&cluster, &api, "127.0.0.1", query);
        assert_eq!(ended.code, 0, "{query}: {}", ended.output);
    }

    // The chain and the name, both right.
    let ended = tls_run(
        &cluster,
        &api,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(ended.code, 0, "{}", ended.output);

    // The chain only: the IP address is not in the certificate, and that is
    // fine for verify-ca.
    let ended = tls_run(
        &cluster,
        &api,
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    assert_eq!(ended.code, 0, "{}", ended.output);

    // A CA that did not sign the server's certificate.
    let ended = tls_run(
        &cluster,
        &api,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert!(
        ended.output.contains("not signed by a trusted CA"),
        "{}",
        ended.output
    );
    let ended = tls_run(
        &cluster,
        &api,
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={other}"),
    );
    assert_eq!(
        ended.code, 2,
        "require with a root file verifies the CA, as libpq: {}",
        ended.output
    );

    // The right CA, the wrong name.
    let ended = tls_run(
        &cluster,
        &api,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert!(
        ended.output.contains("does not match the host name"),
        "{}",
        ended.output
    );

    // verify-full with the built-in web roots cannot trust a private CA.
    let ended = tls_run(&cluster, &api, "localhost", "sslmode=verify-full");
    assert_eq!(ended.code, 2, "{}", ended.output);

    assert_eq!(db.embeddings().len(), 1);
    let _ = std::fs::remove_dir_all(certs);
}

#[test]
fn a_unix_socket_directory_in_host_connects() {
    let cluster = PrivateCluster::start("");
    let db = cluster.posts();
    db.post("1", "'over a socket'", "false", "'FEED'", 1);
    let api = Standin::start(&[]);
    let socket_dir = cluster.socket_dir();
    for url in [
        format!(
            "postgresql://postgres@/posts?host={}&port={}",
            percent_encode(&socket_dir),
            cluster.port
        ),
        format!(
            "host={socket_dir} port={} user=postgres dbname=posts",
            cluster.port
        ),
    ] {
        let ended = run(job(&url, &api.url));
        assert_eq!(ended.code, 0, "{url}: {}", ended.output);
    }
    assert_eq!(db.embeddings().len(), 1);
}

/// A PgBouncer in transaction mode in front of the test cluster, stopped at
/// the end of the test.
struct Pooler {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Pooler {
    fn start(pool_size: usize) -> Pooler {
        let dir = std::env::temp_dir().join(format!(
            "postfinder-pgbouncer-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let password = std::env::var("POSTFINDER_TEST_PASSWORD").expect("POSTFINDER_TEST_PASSWORD");
        let ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={} user=postgres password={password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {}\n",
            cluster_port(),
            dir.join("pgbouncer.log").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        let _ = Command::new("chown")
            .arg("-R")
            .arg("postgres")
            .arg(&dir)
            .status();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        let mut command = if root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", "/usr/sbin/pgbouncer"]);
            command
        } else {
            Command::new("/usr/sbin/pgbouncer")
        };
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Pooler { child, port, dir }
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_sharded_run_through_pgbouncer_in_transaction_mode_embeds_everything() {
    let db = TestDb::new("pgbouncer");
    db.seed(1500, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    // Three tasks hold three long reads; the writes share what is left, so
    // server connections really are passed between clients.
    let pooler = Pooler::start(4);
    let api = Standin::start(&[]);
    let url = format!(
        "postgresql+asyncpg://postgres@127.0.0.1:{}/{}?prepared_statement_cache_size=0",
        pooler.port, db.name
    );

    let running: Vec<_> = (0..3)
        .map(|index| {
            let mut command = job(&url, &api.url);
            command
                .env("CLOUD_RUN_TASK_INDEX", index.to_string())
                .env("CLOUD_RUN_TASK_COUNT", "3");
            spawn(command)
        })
        .collect();
    for running in running {
        let ended = wait(running);
        assert_eq!(ended.code, 0, "{}", ended.output);
    }
    let stored = db.embeddings();
    assert_eq!(stored.len(), expected.len());
    assert_vectors(&api, &stored, &expected);

    let mut check = job(&url, &api.url);
    check.arg("check");
    let ended = run(check);
    assert_eq!(ended.code, 0, "check through the pooler: {}", ended.output);
}

#[test]
fn the_least_privileged_role_with_a_url_special_password_runs_the_job() {
    let db = TestDb::new("least_privilege");
    db.seed(300, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    let role = format!("{}_job", db.name);
    let password = "p@ss:w/rd?#&=% +'\"é";
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{}'; \
         GRANT CONNECT ON DATABASE \"{}\" TO {role}; \
         GRANT USAGE ON SCHEMA instagram TO {role}; \
         GRANT SELECT ON instagram.core_posts, instagram.core_post_media TO {role}; \
         GRANT SELECT, INSERT ON instagram.post_embeddings TO {role};",
        password.replace('\'', "''"),
        db.name
    ));
    let api = Standin::start(&[]);
    let url = url_as(&db.name, &role, password);

    let mut check = job(&url, &api.url);
    check.arg("check");
    let checked = run(check);
    let ended = run(job(&url, &api.url));
    db.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));

    assert_eq!(checked.code, 0, "{}", checked.output);
    assert_eq!(ended.code, 0, "{}", ended.output);
    let stored = db.embeddings();
    assert_eq!(stored.len(), expected.len());
    assert_vectors(&api, &stored, &expected);
}

#[test]
fn api_token_and_extra_headers_are_sent() {
    let db = TestDb::new("api_credentials");
    db.post("1", "'p'", "false", "'FEED'", 1);
    let api = Standin::start(&[
        "--token",
        "tok-abc",
        "--require-header",
        "cf-access-client-secret:hdr-def",
    ]);

    let mut without = job(&db.url, &api.url);
    without.env("EMBEDDING_API_TOKEN", "tok-abc");
    let ended = run(without);
    assert_eq!(
        ended.code, 2,
        "a missing header is a setup error: {}",
        ended.output
    );
    assert!(
        ended.output.contains("API answered 403"),
        "{}",
        ended.output
    );

    let mut with = job(&db.url, &api.url);
    with.env("EMBEDDING_API_TOKEN", "tok-abc")
        .env("EMBEDDING_API_HEADER_CF_ACCESS_CLIENT_SECRET", "hdr-def");
    let ended = run(with);
    assert_eq!(ended.code, 0, "{}", ended.output);
    assert_eq!(db.embeddings().len(), 1);
}

/// A failure path: its name, the database URL, the API URL, arguments and
/// variables.
type Case<'a> = (
    &'a str,
    String,
    String,
    Vec<&'a str>,
    Vec<(&'a str, &'a str)>,
);

#[test]
fn the_api_is_reached_through_https_proxy_unless_no_proxy_says_otherwise() {
    let db = TestDb::new("api_proxy");
    db.post("1", "'p'", "false", "'FEED'", 1);
    let api = Standin::start(&[]);
    // A "proxy" that accepts connections and never answers.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.local_addr().unwrap().port());

    let mut through = job(&db.url, &api.url);
    through
        .env("HTTPS_PROXY", &proxy_url)
        .env("OUTAGE_LIMIT", "1s")
        .env("API_REQUEST_TIMEOUT", "1s");
    let ended = run(through);
    assert_eq!(ended.code, 1, "{}", ended.output);
    assert!(
        proxy.accept().is_ok(),
        "the job did not go through HTTPS_PROXY"
    );
    assert_eq!(api.stats().requests, 0, "the job went around the proxy");

    let mut around = job(&db.url, &api.url);
    around
        .env("HTTPS_PROXY", &proxy_url)
        .env("NO_PROXY", "127.0.0.1");
    let ended = run(around);
    assert_eq!(ended.code, 0, "{}", ended.output);
    assert_eq!(db.embeddings().len(), 1);
}

#[test]
fn no_secret_appears_in_any_output_whatever_fails() {
    const PASSWORD: &str = "Pw-S3CRET-7q";
    const TOKEN: &str = "Tok-S3CRET-9z";
    const HEADER: &str = "Hdr-S3CRET-5x";

    let db = TestDb::new("secrets");
    db.post("1", "'p'", "false", "'FEED'", 1);
    db.post("2", "'bad [[fault:422]]'", "false", "'FEED'", 2);
    let role = format!("{}_job", db.name);
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'; \
         GRANT USAGE ON SCHEMA instagram TO {role}; \
         GRANT SELECT ON instagram.core_posts, instagram.core_post_media TO {role}; \
         GRANT SELECT ON instagram.post_embeddings TO {role};"
    ));
    let api = Standin::start(&["--token", TOKEN]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let good = url_as(&db.name, &role, PASSWORD);
    let port = cluster_port();

    // Each failure path, with the secrets set.
    let cases: Vec<Case> = vec![
        (
            "bad setting",
            good.clone(),
            api.url.clone(),
            vec![],
            vec![("BATCH_SIZE", "0")],
        ),
        (
            "unparseable URL",
            format!("postgresql://{role}:{PASSWORD}@127.0.0.1:port/x"),
            api.url.clone(),
            vec![],
            vec![],
        ),
        (
            "bad sslmode",
            format!("{good}?sslmode=sometimes"),
            api.url.clone(),
            vec![],
            vec![],
        ),
        (
            "wrong password",
            url_as(&db.name, &role, &format!("{PASSWORD}-wrong")),
            api.url.clone(),
            vec![],
            vec![],
        ),
        (
            "database down",
            format!("postgresql://{role}:{PASSWORD}@127.0.0.1:{closed}/x"),
            api.url.clone(),
            vec![],
            vec![],
        ),
        (
            "TLS refused",
            format!("{good}?sslmode=require"),
            api.url.clone(),
            vec![],
            vec![],
        ),
        (
            "missing insert grant",
            good.clone(),
            api.url.clone(),
            vec![],
            vec![("EMBEDDING_API_TOKEN", TOKEN)],
        ),
        (
            "API token wrong",
            good.clone(),
            api.url.clone(),
            vec![],
            vec![("EMBEDDING_API_TOKEN", "wrong")],
        ),
        (
            "API down",
            good.clone(),
            format!("http://127.0.0.1:{closed}"),
            vec![],
            vec![("OUTAGE_LIMIT", "1s")],
        ),
        (
            "check",
            good.clone(),
            api.url.clone(),
            vec!["check"],
            vec![],
        ),
        (
            "dry run",
            good.clone(),
            api.url.clone(),
            vec!["--dry-run"],
            vec![],
        ),
        (
            "help",
            good.clone(),
            api.url.clone(),
            vec!["--help"],
            vec![],
        ),
        (
            "trace logs",
            good.clone(),
            api.url.clone(),
            vec![],
            vec![("RUST_LOG", "trace"), ("EMBEDDING_API_TOKEN", TOKEN)],
        ),
        (
            "json logs",
            good.clone(),
            api.url.clone(),
            vec![],
            vec![("LOG_FORMAT", "json"), ("EMBEDDING_API_TOKEN", TOKEN)],
        ),
        (
            "key=value URL",
            format!("host=127.0.0.1 port={port} user={role} password={PASSWORD} dbname=nosuchdb"),
            api.url.clone(),
            vec![],
            vec![],
        ),
    ];
    db.execute(&format!(
        "GRANT INSERT ON instagram.post_embeddings TO {role}"
    ));
    for (name, url, api_url, args, vars) in cases {
        if name == "missing insert grant" {
            db.execute(&format!(
                "REVOKE INSERT ON instagram.post_embeddings FROM {role}"
            ));
        }
        let mut command = job(&url, &api_url);
        command
            .args(&args)
            .env("EMBEDDING_API_HEADER_CF_ACCESS_CLIENT_SECRET", HEADER);
        for (var, value) in &vars {
            command.env(var, value);
        }
        eprintln!("case: {name}");
        let ended = run(command);
        if name == "missing insert grant" {
            db.execute(&format!(
                "GRANT INSERT ON instagram.post_embeddings TO {role}"
            ));
            assert_eq!(ended.code, 2, "{name}: {}", ended.output);
        }
        for secret in [PASSWORD, TOKEN, HEADER] {
            assert!(
                !ended.output.contains(secret),
                "{name}: {secret} shows in:\n{}",
                ended.output
            );
        }
        assert!(!ended.output.is_empty(), "{name}: no output at all");
    }
    db.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}
