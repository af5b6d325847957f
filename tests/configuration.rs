//! Bad configuration stops the job before it touches the database or the
//! API, with one line naming the variable, and exit status 2.

mod common;

use std::net::TcpListener;

use common::{job, run, Standin, TestDb};

/// Runs the job with `vars` on top of a database URL and an API URL that
/// point at listeners of this test, and checks that it exits 2 naming
/// `named` and that nobody connected to either.
fn refused_before_any_connection(vars: &[(&str, &str)], named: &str) {
    let database = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    database.set_nonblocking(true).unwrap();
    api.set_nonblocking(true).unwrap();
    let database_url = format!(
        "postgresql://job:pw@127.0.0.1:{}/posts",
        database.local_addr().unwrap().port()
    );
    let api_url = format!("http://127.0.0.1:{}", api.local_addr().unwrap().port());

    let mut command = job(&database_url, &api_url);
    for (var, value) in vars {
        command.env(var, value);
    }
    let ended = run(command);

    assert_eq!(ended.code, 2, "{vars:?}: {}", ended.output);
    let errors: Vec<&str> = ended
        .output
        .lines()
        .filter(|l| l.contains("configuration error"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{vars:?}: one line expected:\n{}",
        ended.output
    );
    assert!(
        errors[0].contains(named),
        "{vars:?}: {} does not name {named}",
        errors[0]
    );
    assert!(
        database.accept().is_err(),
        "{vars:?}: the database was contacted"
    );
    assert!(api.accept().is_err(), "{vars:?}: the API was contacted");
}

#[test]
fn every_bad_setting_exits_2_without_a_connection() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("EMBEDDING_DIMENSION", "300")], "EMBEDDING_DIMENSION"),
        (&[("EMBEDDING_DIMENSION", "big")], "EMBEDDING_DIMENSION"),
        (&[("BATCH_SIZE", "0")], "BATCH_SIZE"),
        (&[("BATCH_SIZE", "-1")], "BATCH_SIZE"),
        (&[("BATCH_SIZE", "ten")], "BATCH_SIZE"),
        (&[("BATCH_SIZE", "100000")], "BATCH_SIZE"),
        (&[("CONCURRENCY", "0")], "CONCURRENCY"),
        (&[("CLOUD_RUN_TASK_COUNT", "0")], "CLOUD_RUN_TASK_COUNT"),
        (&[("CLOUD_RUN_TASK_COUNT", "x")], "CLOUD_RUN_TASK_COUNT"),
        (&[("CLOUD_RUN_TASK_INDEX", "-1")], "CLOUD_RUN_TASK_INDEX"),
        (
            &[("CLOUD_RUN_TASK_INDEX", "4"), ("CLOUD_RUN_TASK_COUNT", "4")],
            "CLOUD_RUN_TASK_INDEX",
        ),
        (
            &[("EMBEDDING_API_URL", "embedding.views.fr")],
            "EMBEDDING_API_URL",
        ),
        (&[("DATABASE_URL", "mysql://a@b/c")], "DATABASE_URL"),
        (&[("API_REQUEST_TIMEOUT", "-5")], "API_REQUEST_TIMEOUT"),
    ];
    for (vars, named) in cases {
        refused_before_any_connection(vars, named);
    }
}

#[test]
fn a_missing_database_url_exits_2() {
    let mut command = job("", "http://127.0.0.1:9");
    command.env_remove("DATABASE_URL");
    let ended = run(command);
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert!(
        ended.output.contains("DATABASE_URL: is required"),
        "{}",
        ended.output
    );
}

#[test]
fn a_flag_wins_over_its_variable_and_is_named_when_bad() {
    let mut command = job("postgresql://a@127.0.0.1:9/x", "http://127.0.0.1:9");
    command.env("BATCH_SIZE", "10").arg("--batch-size").arg("0");
    let ended = run(command);
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert!(
        ended.output.contains("--batch-size: must be at least 1"),
        "{}",
        ended.output
    );
}

#[test]
fn help_and_version_exit_0() {
    let ended = run({
        let mut command = job("", "");
        command.arg("--help");
        command
    });
    assert_eq!(ended.code, 0);
    for var in [
        "DATABASE_URL",
        "EMBEDDING_API_URL",
        "BATCH_SIZE",
        "CONCURRENCY",
        "CLOUD_RUN_TASK_INDEX",
    ] {
        assert!(ended.output.contains(var), "--help does not list {var}");
    }
    let ended = run({
        let mut command = job("", "");
        command.arg("--version");
        command
    });
    assert_eq!(ended.code, 0);
    assert!(ended.output.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_column_of_another_width_exits_2_before_calling_the_api() {
    let db = TestDb::new("width_mismatch");
    db.post("1", "'a'", "false", "'FEED'", 1);
    let api = Standin::start(&[]);
    let mut command = job(&db.url, &api.url);
    command.env("EMBEDDING_DIMENSION", "256");
    let ended = run(command);
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert!(
        ended
            .output
            .contains("vector(512) but EMBEDDING_DIMENSION is 256"),
        "{}",
        ended.output
    );
    assert_eq!(api.stats().requests, 0);
}
