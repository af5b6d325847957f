//! The test rig: a database of its own per test, copied from the template
//! `scripts/test.sh` makes on a real PostgreSQL with pgvector; a real
//! stand-in API process per test; and the job run as a real process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

/// How long any one job process may run in a test before it is killed and
/// the test fails.
pub const JOB_LIMIT: Duration = Duration::from_secs(120);

/// The cluster's superuser URL, set by `scripts/test.sh`.
pub fn admin_url() -> String {
    std::env::var("POSTFINDER_TEST_ADMIN_URL").expect(
        "POSTFINDER_TEST_ADMIN_URL is not set: run the tests with scripts/test.sh, \
         which starts the PostgreSQL they need",
    )
}

/// Writes `text` with every byte but letters and digits as `%XX`, as a URL
/// needs for a password with special characters.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The test cluster's port.
pub fn cluster_port() -> u16 {
    std::env::var("POSTFINDER_TEST_PORT")
        .expect("POSTFINDER_TEST_PORT")
        .parse()
        .expect("a port")
}

/// A URL for `database` on the test cluster as `user` with `password`.
pub fn url_as(database: &str, user: &str, password: &str) -> String {
    format!(
        "postgresql://{user}:{}@127.0.0.1:{}/{database}",
        percent_encode(password),
        cluster_port()
    )
}

/// A superuser URL for `database` on the test cluster.
pub fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .expect("the admin URL names a database")
        .0;
    format!("{base}/{database}")
}

/// A database of the test's own, with the job's schema, dropped at the end.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// A superuser URL for it.
    pub url: String,
}

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    /// A fresh database with `vector(512)` embeddings.
    pub fn new(label: &str) -> TestDb {
        let name = format!(
            "t_{label}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = Client::connect(&admin_url(), NoTls).expect("connect to the test cluster");
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE postfinder_template"
            ))
            .expect("create a test database");
        let url = url_for(&name);
        TestDb { name, url }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connect to the test database")
    }

    pub fn execute(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err:?}"));
    }

    /// Adds `posts` generated posts with ids after `first`
    /// (`scripts/sql/seed.sql`).
    pub fn seed(&self, posts: u64, first: u64) {
        let seed = include_str!("../../scripts/sql/seed.sql");
        self.execute(&format!(
            "SET seed.posts = {posts}; SET seed.first = {first};\n{seed}"
        ));
    }

    /// Adds one post; `caption`, `suspected` and `product` are SQL literals.
    pub fn post(&self, id: &str, caption: &str, suspected: &str, product: &str, minute: u32) {
        self.execute(&format!(
            "INSERT INTO instagram.core_posts \
               (ig_media_id, caption, suspected, media_product_type, media_type, \"timestamp\") \
             VALUES ('{id}', {caption}, {suspected}, {product}, 'IMAGE', \
                     timestamp '2025-01-01' + interval '{minute} minutes')"
        ));
    }

    /// Adds one media item; `media_url` and `thumbnail` are SQL literals.
    pub fn media(
        &self,
        id: &str,
        order: i32,
        parent: &str,
        kind: &str,
        media_url: &str,
        thumbnail: &str,
    ) {
        self.execute(&format!(
            "INSERT INTO instagram.core_post_media \
               (ig_media_id, media_order, parent_ig_media_id, media_type, media_url, thumbnail_url) \
             VALUES ('{id}', {order}, '{parent}', '{kind}', {media_url}, {thumbnail})"
        ));
    }

    /// Every stored embedding, by post id.
    pub fn embeddings(&self) -> HashMap<String, Vec<f32>> {
        self.client()
            .query(
                "SELECT ig_media_id, embedding::real[] FROM instagram.post_embeddings",
                &[],
            )
            .expect("read the embeddings")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// The posts the spec calls due, with the payload it prescribes, read
    /// with a query written apart from the job's: `row_number()` picks the
    /// cover where the job uses `DISTINCT ON`, and the filters are spelled
    /// out with `coalesce` and `NOT IN`.
    pub fn expected_payloads(&self) -> Vec<(String, Option<String>, Option<String>)> {
        self.client()
            .query(
                "SELECT p.ig_media_id, p.caption, \
                        CASE c.media_type WHEN 'VIDEO' THEN c.thumbnail_url ELSE c.media_url END \
                 FROM instagram.core_posts p \
                 LEFT JOIN ( \
                     SELECT m.*, row_number() OVER ( \
                         PARTITION BY m.parent_ig_media_id ORDER BY m.ig_media_id) AS rank \
                     FROM instagram.core_post_media m WHERE m.media_order = 0 \
                 ) c ON c.parent_ig_media_id = p.ig_media_id AND c.rank = 1 \
                 WHERE coalesce(p.suspected = false, false) \
                   AND coalesce(p.media_product_type <> 'STORY', false) \
                   AND p.ig_media_id NOT IN (SELECT ig_media_id FROM instagram.post_embeddings)",
                &[],
            )
            .expect("read the due posts")
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A private cluster's database goes with its cluster.
        if self.name.is_empty() {
            return;
        }
        if let Ok(mut admin) = Client::connect(&admin_url(), NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A stand-in API process, killed at the end of the test.
pub struct Standin {
    child: Child,
    /// Its base URL.
    pub url: String,
}

/// What the stand-in has seen.
#[derive(Debug, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub posts: u64,
    /// Captions of the first posts received, in order.
    pub captions: Vec<Option<String>>,
}

impl Standin {
    pub fn start(args: &[&str]) -> Standin {
        let mut child = Command::new(env!("CARGO_BIN_EXE_embedding-standin"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the stand-in");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the stand-in prints its address");
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening on ADDR");
        Standin {
            child,
            url: format!("http://{address}"),
        }
    }

    pub fn stats(&self) -> Stats {
        let body: serde_json::Value = ureq::get(&format!("{}/stats", self.url))
            .call()
            .expect("stats answer")
            .body_mut()
            .read_json()
            .expect("stats are JSON");
        Stats {
            requests: body["requests"].as_u64().expect("requests"),
            posts: body["posts"].as_u64().expect("posts"),
            captions: body["captions"]
                .as_array()
                .expect("captions")
                .iter()
                .map(|c| c.as_str().map(str::to_string))
                .collect(),
        }
    }

    /// The vector the API gives a post with this caption and image.
    pub fn vector(
        &self,
        caption: Option<&str>,
        image_url: Option<&str>,
        dimension: usize,
    ) -> Vec<f32> {
        let request = serde_json::json!({
            "post": {"caption": caption, "image_urls": image_url.into_iter().collect::<Vec<_>>()},
            "dimension": dimension,
        });
        let body: serde_json::Value = ureq::post(&format!("{}/embed_post", self.url))
            .send_json(&request)
            .expect("embed_post answers")
            .body_mut()
            .read_json()
            .expect("embed_post answers JSON");
        body["embedding"]
            .as_array()
            .expect("an embedding")
            .iter()
            .map(|x| x.as_f64().expect("a number") as f32)
            .collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that every post in `expected` is stored with the vector of
/// exactly its payload, as the stand-in computes it.
pub fn assert_vectors(
    api: &Standin,
    stored: &HashMap<String, Vec<f32>>,
    expected: &[(String, Option<String>, Option<String>)],
) {
    for (id, caption, image_url) in expected {
        let vector = stored
            .get(id)
            .unwrap_or_else(|| panic!("post {id} was not embedded"));
        let wanted = api.vector(caption.as_deref(), image_url.as_deref(), vector.len());
        assert_eq!(vector.len(), 512, "post {id}: width");
        let off = vector
            .iter()
            .zip(&wanted)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            off < 1e-6,
            "post {id}: stored vector is not the one of its payload (off by {off})"
        );
    }
}

/// The job's settings variables, removed from the test's environment so a
/// developer's shell cannot change a test.
const SETTINGS: [&str; 14] = [
    "DATABASE_URL",
    "EMBEDDING_API_URL",
    "EMBEDDING_DIMENSION",
    "BATCH_SIZE",
    "CONCURRENCY",
    "CLOUD_RUN_TASK_INDEX",
    "CLOUD_RUN_TASK_COUNT",
    "API_CONNECT_TIMEOUT",
    "API_REQUEST_TIMEOUT",
    "PROGRESS_INTERVAL",
    "OUTAGE_LIMIT",
    "MAX_RUNTIME",
    "REJECTED_POSTS_STATUS",
    "RUST_LOG",
];

/// The proxy variables the job's HTTP client reads; a developer's proxy must
/// not send the tests' loopback requests elsewhere.
const PROXIES: [&str; 8] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The job, set up for a database and an API.
pub fn job(database_url: &str, api_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_postfinder-embeddings"));
    for var in SETTINGS.iter().chain(&PROXIES) {
        command.env_remove(var);
    }
    command
        .env("DATABASE_URL", database_url)
        .env("EMBEDDING_API_URL", api_url);
    command
}

/// How a job process ended.
#[derive(Debug)]
pub struct Ended {
    /// The exit status.
    pub code: i32,
    /// Everything it printed, both streams.
    pub output: String,
}

impl Ended {
    /// The number after `label` in the summary line (`12 embedded`).
    pub fn summary(&self, label: &str) -> u64 {
        let line = self
            .output
            .lines()
            .find(|line| line.contains("summary:"))
            .unwrap_or_else(|| panic!("no summary in:\n{}", self.output));
        let words: Vec<&str> = line.split_whitespace().collect();
        let position = words
            .iter()
            .position(|word| word.trim_end_matches(',') == label)
            .unwrap_or_else(|| panic!("no {label:?} in {line}"));
        words[position - 1]
            .parse()
            .unwrap_or_else(|_| panic!("no number before {label:?} in {line}"))
    }
}

/// A job process whose output is being collected.
pub struct Running {
    pub child: Child,
    /// Readers of stdout and stderr, so a chatty job never blocks on a full
    /// pipe.
    readers: Vec<std::thread::JoinHandle<String>>,
}

/// Starts a job process with its output captured.
pub fn spawn(mut command: Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the job");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let readers = vec![collect(stdout), collect(stderr)];
    Running { child, readers }
}

fn collect(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

/// Waits for a job process, killing it past `JOB_LIMIT`.
pub fn wait(mut running: Running) -> Ended {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("wait for the job") {
            break status;
        }
        if started.elapsed() > JOB_LIMIT {
            let _ = running.child.kill();
            panic!("the job ran longer than {JOB_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = running
        .readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    Ended {
        code: status.code().unwrap_or(-1),
        output,
    }
}

/// Runs a job to its end.
pub fn run(command: Command) -> Ended {
    wait(spawn(command))
}

/// Sends `signal` (`TERM`, `KILL`, …) to a running job.
pub fn signal(running: &Running, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(running.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// A PostgreSQL of the test's own, for tests that restart or reconfigure
/// the server. Stopped and removed at the end of the test.
pub struct PrivateCluster {
    dir: std::path::PathBuf,
    pub port: u16,
}

/// Where PostgreSQL's programs are.
fn pg_bin(program: &str) -> String {
    let dir = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_string());
    format!("{dir}/{program}")
}

/// Runs a PostgreSQL program as the cluster's owner: `postgres` when the
/// tests run as root, as PostgreSQL refuses to run as root.
fn as_owner(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &pg_bin(program)]);
        command
    } else {
        Command::new(pg_bin(program))
    }
}

fn succeed(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PrivateCluster {
    /// Starts a cluster with `extra` lines of configuration and a database
    /// `posts` holding the job's schema.
    pub fn start(extra: &str) -> PrivateCluster {
        let dir = std::env::temp_dir().join(format!(
            "postfinder-private-{}-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let _ = Command::new("chown").arg("postgres").arg(&dir).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();

        let data = dir.join("data");
        let mut initdb = as_owner("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"]);
        succeed(initdb, "initdb");
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n{extra}\n",
            dir.display()
        );
        let mut append = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("postgresql.conf");
        std::io::Write::write_all(&mut append, conf.as_bytes()).expect("write postgresql.conf");
        let cluster = PrivateCluster { dir, port };
        cluster.pg_ctl(&["start", "-w", "-t", "60"]);

        let mut admin = Client::connect(&cluster.url("postgres"), NoTls).expect("connect");
        admin
            .batch_execute("CREATE DATABASE posts")
            .expect("create posts");
        let schema = std::fs::read_to_string(
            std::env::var("POSTFINDER_TEST_SCHEMA_SQL").expect("POSTFINDER_TEST_SCHEMA_SQL"),
        )
        .expect("read schema.sql");
        Client::connect(&cluster.url("posts"), NoTls)
            .expect("connect")
            .batch_execute(&schema.replace(":dimension", "512"))
            .expect("create the schema");
        cluster
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> String {
        self.dir.display().to_string()
    }

    /// A superuser URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The `posts` database as a `TestDb`-like handle.
    pub fn posts(&self) -> TestDb {
        TestDb {
            name: String::new(),
            url: self.url("posts"),
        }
    }

    pub fn pg_ctl(&self, args: &[&str]) {
        let mut command = as_owner("pg_ctl");
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(args);
        succeed(command, "pg_ctl");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let mut command = as_owner("pg_ctl");
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = command.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
