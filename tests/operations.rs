//! What operators see and use: JSON logs for Cloud Logging, the `check`
//! preflight, `--dry-run`. Real PostgreSQL, real stand-in API.

mod common;

use common::{job, run, url_as, Standin, TestDb};

#[test]
fn json_logs_are_one_object_a_line_with_the_task_and_the_numbers() {
    let db = TestDb::new("json_logs");
    db.seed(200, 17_900_000_000_000_000);
    let api = Standin::start(&[]);
    let mut command = job(&db.url, &api.url);
    command
        .env("CLOUD_RUN_JOB", "postfinder-embeddings")
        .env("CLOUD_RUN_EXECUTION", "postfinder-embeddings-x7k2p")
        .env("CLOUD_RUN_TASK_ATTEMPT", "2")
        .env("CLOUD_RUN_TASK_INDEX", "1")
        .env("CLOUD_RUN_TASK_COUNT", "3")
        .env("PROGRESS_INTERVAL", "1ms");
    let ended = run(command);
    assert_eq!(ended.code, 0, "{}", ended.output);

    let lines: Vec<serde_json::Value> = ended
        .output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 4);
    for line in &lines {
        assert!(["INFO", "WARNING", "ERROR", "DEBUG"].contains(&line["severity"].as_str().unwrap()));
        assert!(line["message"].is_string());
        assert_eq!(line["task_index"], 1);
        assert_eq!(line["task_count"], 3);
        assert_eq!(line["task_attempt"], 2);
        assert_eq!(line["execution"], "postfinder-embeddings-x7k2p");
    }
    let summary = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("summary:"))
        .unwrap();
    let due = summary["due"].as_u64().unwrap();
    assert!(due > 0);
    assert_eq!(summary["embedded"].as_u64().unwrap(), due);
    assert_eq!(summary["unfinished"], 0);
    assert!(summary["rate"].as_f64().unwrap() > 0.0);
    let progress = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("progress:"));
    let progress = progress.expect("a progress line");
    for field in ["done", "due", "rate", "eta_s"] {
        assert!(
            progress[field].is_number(),
            "progress has no {field}: {progress}"
        );
    }
}

#[test]
fn plain_logs_are_not_json_outside_cloud_run() {
    let db = TestDb::new("plain_logs");
    let api = Standin::start(&[]);
    let ended = run(job(&db.url, &api.url));
    assert_eq!(ended.code, 0, "{}", ended.output);
    assert!(
        ended.output.lines().all(|line| !line.starts_with('{')),
        "{}",
        ended.output
    );
    assert!(
        ended.output.contains(" INFO  summary: 0 due"),
        "{}",
        ended.output
    );
}

/// Runs `check` and returns its exit status and output.
fn check(database_url: &str, api_url: &str, vars: &[(&str, &str)]) -> common::Ended {
    let mut command = job(database_url, api_url);
    command.arg("check");
    for (var, value) in vars {
        command.env(var, value);
    }
    run(command)
}

/// The result column of a check's row.
fn result_of(output: &str, check: &str) -> String {
    let line = output
        .lines()
        .find(|line| line.starts_with(check))
        .unwrap_or_else(|| panic!("no {check:?} row in:\n{output}"));
    line[check.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn check_passes_on_a_healthy_setup() {
    let db = TestDb::new("check_ok");
    let api = Standin::start(&[]);
    let ended = check(&db.url, &api.url, &[]);
    assert_eq!(ended.code, 0, "{}", ended.output);
    for row in [
        "pgvector installed",
        "table instagram.post_embeddings",
        "embedding width",
        "grant INSERT on instagram.post_embeddings",
        "api health",
        "api embeds a post",
    ] {
        assert_eq!(result_of(&ended.output, row), "ok", "{}", ended.output);
    }
    assert_eq!(api.stats().requests, 1, "check makes one real call");
    assert!(db.embeddings().is_empty(), "check wrote something");
}

#[test]
fn check_names_a_wrong_width() {
    let db = TestDb::new("check_width");
    let api = Standin::start(&[]);
    let ended = check(&db.url, &api.url, &[("EMBEDDING_DIMENSION", "1024")]);
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert_eq!(result_of(&ended.output, "embedding width"), "FAILED");
    assert!(
        ended
            .output
            .contains("vector(512) but EMBEDDING_DIMENSION is 1024"),
        "{}",
        ended.output
    );
}

#[test]
fn check_names_a_missing_pgvector() {
    let db = TestDb::new("check_no_vector");
    db.execute("DROP TABLE instagram.post_embeddings; DROP EXTENSION vector");
    let api = Standin::start(&[]);
    let ended = check(&db.url, &api.url, &[]);
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert_eq!(result_of(&ended.output, "pgvector installed"), "FAILED");
    assert!(
        ended.output.contains("CREATE EXTENSION vector"),
        "{}",
        ended.output
    );
    assert_eq!(
        result_of(&ended.output, "table instagram.post_embeddings"),
        "FAILED"
    );
}

#[test]
fn check_names_a_missing_grant() {
    let db = TestDb::new("check_grant");
    let role = format!("{}_reader", db.name);
    db.execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'; \
         GRANT USAGE ON SCHEMA instagram TO {role}; \
         GRANT SELECT ON instagram.core_posts, instagram.core_post_media, \
             instagram.post_embeddings TO {role};"
    ));
    let url = url_as(&db.name, &role, "reader-pw");
    let api = Standin::start(&[]);
    let ended = check(&url, &api.url, &[]);
    db.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));

    assert_eq!(ended.code, 2, "{}", ended.output);
    assert_eq!(
        result_of(&ended.output, "grant SELECT on instagram.core_posts"),
        "ok"
    );
    assert_eq!(
        result_of(&ended.output, "grant INSERT on instagram.post_embeddings"),
        "FAILED"
    );
}

#[test]
fn check_names_an_api_that_is_down() {
    let db = TestDb::new("check_api_down");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ended = check(&db.url, &format!("http://127.0.0.1:{port}"), &[]);
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert_eq!(result_of(&ended.output, "api health"), "FAILED");
    assert_eq!(result_of(&ended.output, "embedding width"), "ok");
}

#[test]
fn dry_run_counts_every_shard_and_neither_calls_the_api_nor_writes() {
    let db = TestDb::new("dry_run");
    db.seed(500, 17_900_000_000_000_000);
    let due = db.expected_payloads().len();
    let api = Standin::start(&[]);
    let mut command = job(&db.url, &api.url);
    command.arg("--dry-run").env("CLOUD_RUN_TASK_COUNT", "3");
    let ended = run(command);

    assert_eq!(ended.code, 0, "{}", ended.output);
    assert_eq!(api.stats().requests, 0, "the dry run called the API");
    assert!(db.embeddings().is_empty(), "the dry run wrote");
    let counts: Vec<u64> = ended
        .output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let task: u64 = words.next()?.parse().ok()?;
            (task < 3).then(|| words.next()?.parse().ok())?
        })
        .collect();
    assert_eq!(counts.len(), 3, "{}", ended.output);
    assert_eq!(counts.iter().sum::<u64>(), due as u64);
    assert!(
        ended.output.contains(&format!(" all  {due}")),
        "{}",
        ended.output
    );
}
