//! The job against an API and a database that fail: retries, bad posts
//! isolated, outages, kills, restarts, signals and overlapping runs. Real
//! PostgreSQL, real stand-in API processes, the job as a real process.

mod common;

use std::time::{Duration, Instant};

use common::{assert_vectors, job, run, signal, spawn, wait, PrivateCluster, Standin, TestDb};

/// Runs the job over 200 posts with the stand-in failing 30 % of requests
/// with `fault`, and checks every due post ends embedded, rightly.
fn a_transient_fault_alone_loses_nothing(
    label: &str,
    fault: &str,
    extra: &[(&str, &str)],
) -> Duration {
    let db = TestDb::new(label);
    db.seed(200, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    let api = Standin::start(&[
        "--fail",
        &format!("{fault}=0.3"),
        "--seed",
        "7",
        "--hang-secs",
        "5",
    ]);
    let mut command = job(&db.url, &api.url);
    command.env("BATCH_SIZE", "10");
    for (var, value) in extra {
        command.env(var, value);
    }
    let started = Instant::now();
    let ended = run(command);
    let took = started.elapsed();

    assert_eq!(ended.code, 0, "{}", ended.output);
    let stored = db.embeddings();
    assert_eq!(stored.len(), expected.len());
    assert_vectors(&api, &stored, &expected);
    assert!(
        api.stats().requests > expected.len() as u64 / 10,
        "no request was retried"
    );
    took
}

#[test]
fn a_connection_dropped_without_answer_is_retried() {
    a_transient_fault_alone_loses_nothing("reset", "reset", &[]);
}

#[test]
fn a_request_that_times_out_is_retried() {
    a_transient_fault_alone_loses_nothing("timeout", "timeout", &[("API_REQUEST_TIMEOUT", "1s")]);
}

#[test]
fn a_503_is_retried() {
    a_transient_fault_alone_loses_nothing("unavailable", "503", &[]);
}

#[test]
fn a_malformed_body_is_retried() {
    a_transient_fault_alone_loses_nothing("malformed", "malformed", &[]);
}

#[test]
fn a_429_is_retried_after_the_wait_it_asks() {
    // The stand-in asks for 1 s; with one batch in flight at a time, every
    // 429 costs at least that.
    let took = a_transient_fault_alone_loses_nothing("too_many", "429", &[("CONCURRENCY", "1")]);
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After was not honoured: {took:?}"
    );
}

#[test]
fn an_unfetchable_image_costs_only_its_own_post() {
    let db = TestDb::new("unfetchable");
    for i in 1..=40u32 {
        let id = (1000 + i).to_string();
        db.post(&id, &format!("'post {i}'"), "false", "'FEED'", i);
        let url = if i == 27 {
            "https://cdn/unfetchable.jpg"
        } else {
            "https://cdn/ok.jpg"
        };
        db.media(&id, 0, &id, "IMAGE", &format!("'{url}_{i}'"), "NULL");
    }
    let expected = db.expected_payloads();
    let api = Standin::start(&[]);
    let ended = run(job(&db.url, &api.url));

    assert_eq!(ended.code, 3, "{}", ended.output);
    assert!(
        ended
            .output
            .contains("post 1027 rejected: API answered 500"),
        "{}",
        ended.output
    );
    let stored = db.embeddings();
    assert_eq!(stored.len(), 39);
    assert!(!stored.contains_key("1027"));
    let healthy: Vec<_> = expected
        .into_iter()
        .filter(|(id, _, _)| id != "1027")
        .collect();
    assert_vectors(&api, &stored, &healthy);

    // Four batches, plus at most 2⌈log2 10⌉ + 2 = 10 for the bad post.
    let requests = api.stats().requests;
    assert!(requests <= 4 + 10, "{requests} requests for one bad post");
}

#[test]
fn a_lone_bad_post_is_rejected_at_once_not_taken_for_an_outage() {
    // A rerun whose only due post is one the API cannot embed.
    let db = TestDb::new("lone_bad_post");
    db.post("1", "'p'", "false", "'FEED'", 1);
    db.media(
        "1",
        0,
        "1",
        "IMAGE",
        "'https://cdn/unfetchable.jpg'",
        "NULL",
    );
    let api = Standin::start(&[]);
    let started = Instant::now();
    let ended = run(job(&db.url, &api.url));
    assert_eq!(ended.code, 3, "{}", ended.output);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        ended.output.contains("post 1 rejected: API answered 500"),
        "{}",
        ended.output
    );
    assert!(api.stats().requests <= 3, "two tries and a probe");
}

#[test]
fn rejected_posts_can_exit_0_for_cloud_run() {
    let db = TestDb::new("rejected_status");
    db.post("1", "'fine'", "false", "'FEED'", 1);
    db.post("2", "'bad [[fault:422]]'", "false", "'FEED'", 2);
    let api = Standin::start(&[]);
    let mut command = job(&db.url, &api.url);
    command.env("REJECTED_POSTS_STATUS", "0");
    let ended = run(command);
    assert_eq!(ended.code, 0, "{}", ended.output);
    assert_eq!(ended.summary("rejected"), 1);
    assert!(
        ended.output.contains("post 2 rejected: API answered 422"),
        "{}",
        ended.output
    );
}

#[test]
fn an_api_down_for_good_ends_the_run_within_the_outage_limit() {
    let db = TestDb::new("api_down");
    db.seed(100, 17_900_000_000_000_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = job(&db.url, &format!("http://127.0.0.1:{port}"));
    command.env("OUTAGE_LIMIT", "3s");
    let started = Instant::now();
    let ended = run(command);
    let took = started.elapsed();

    assert_eq!(ended.code, 1, "{}", ended.output);
    assert!(
        ended
            .output
            .contains("service unavailable: the API has not answered well for 3 s"),
        "{}",
        ended.output
    );
    assert!(
        took < Duration::from_secs(9),
        "took {took:?} for a 3 s outage limit"
    );
    assert!(db.embeddings().is_empty());
    assert_eq!(ended.summary("unfinished"), ended.summary("due"));
}

#[test]
fn an_api_failing_every_request_with_500_is_an_outage_not_bad_posts() {
    let db = TestDb::new("api_all_500");
    for i in 1..=6u32 {
        db.post(&i.to_string(), "'p'", "false", "'FEED'", i);
    }
    let api = Standin::start(&["--fail", "500=1"]);
    let mut command = job(&db.url, &api.url);
    command.env("OUTAGE_LIMIT", "2s");
    let ended = run(command);
    assert_eq!(ended.code, 1, "{}", ended.output);
    assert_eq!(ended.summary("rejected"), 0, "{}", ended.output);
    assert_eq!(ended.summary("unfinished"), 6);
}

#[test]
fn a_wrong_api_path_is_a_setup_error() {
    let db = TestDb::new("api_404");
    db.post("1", "'p'", "false", "'FEED'", 1);
    let api = Standin::start(&[]);
    let ended = run(job(&db.url, &format!("{}/v9", api.url)));
    assert_eq!(ended.code, 2, "{}", ended.output);
    assert!(
        ended
            .output
            .contains("the API refuses requests: API answered 404"),
        "{}",
        ended.output
    );
}

#[test]
fn kill_9_at_random_moments_then_a_full_run_embeds_every_post_once() {
    let db = TestDb::new("kill9");
    db.seed(3000, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    // About 3 s for a whole run: every kill lands mid-run.
    let api = Standin::start(&["--delay-per-post-ms", "5", "--slots", "4"]);

    for (round, pause) in [150u64, 400, 700, 250, 900].into_iter().enumerate() {
        let running = spawn(job(&db.url, &api.url));
        std::thread::sleep(Duration::from_millis(pause + 37 * round as u64));
        signal(&running, "KILL");
        let ended = wait(running);
        assert_eq!(
            ended.code, -1,
            "round {round}: the job ended before the kill"
        );
    }
    let killed_stored = db.embeddings().len();
    assert!(
        killed_stored > 0 && killed_stored < expected.len(),
        "kills came too late or too early"
    );

    let ended = run(job(&db.url, &api.url));
    assert_eq!(ended.code, 0, "{}", ended.output);
    let stored = db.embeddings();
    assert_eq!(stored.len(), expected.len());
    assert_vectors(&api, &stored, &expected);
}

#[test]
fn sigterm_mid_run_exits_within_seconds_with_work_remaining() {
    let db = TestDb::new("sigterm");
    db.seed(2000, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    // One second per request: requests are in flight when the signal comes.
    let api = Standin::start(&["--delay-per-post-ms", "100", "--slots", "4"]);
    let running = spawn(job(&db.url, &api.url));
    std::thread::sleep(Duration::from_millis(2500));
    let signalled = Instant::now();
    signal(&running, "TERM");
    let ended = wait(running);
    let took = signalled.elapsed();

    assert!(took < Duration::from_secs(10), "took {took:?} to exit");
    assert_eq!(ended.code, 1, "{}", ended.output);
    assert!(
        ended.output.contains("a signal asked the job to stop"),
        "{}",
        ended.output
    );
    let stored = db.embeddings();
    assert!(!stored.is_empty() && stored.len() < expected.len());
    let written: Vec<_> = expected
        .into_iter()
        .filter(|(id, _, _)| stored.contains_key(id))
        .collect();
    assert_eq!(written.len(), stored.len());
    assert_vectors(&api, &stored, &written);
    assert_eq!(ended.summary("embedded"), stored.len() as u64);
}

#[test]
fn max_runtime_ends_the_run_like_a_signal() {
    let db = TestDb::new("max_runtime");
    db.seed(2000, 17_900_000_000_000_000);
    let api = Standin::start(&["--delay-per-post-ms", "20", "--slots", "4"]);
    let mut command = job(&db.url, &api.url);
    command.env("MAX_RUNTIME", "2s");
    let started = Instant::now();
    let ended = run(command);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(ended.code, 1, "{}", ended.output);
    assert!(
        ended.output.contains("MAX_RUNTIME is spent"),
        "{}",
        ended.output
    );
    assert!(ended.summary("embedded") > 0);
}

#[test]
fn two_processes_on_the_same_shard_write_each_post_once() {
    let db = TestDb::new("overlap");
    db.seed(1500, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    let api = Standin::start(&[]);
    let first = spawn(job(&db.url, &api.url));
    let second = spawn(job(&db.url, &api.url));
    let (first, second) = (wait(first), wait(second));

    assert_eq!(first.code, 0, "{}", first.output);
    assert_eq!(second.code, 0, "{}", second.output);
    assert_eq!(
        first.summary("embedded") + second.summary("embedded"),
        expected.len() as u64
    );
    let stored = db.embeddings();
    assert_eq!(stored.len(), expected.len());
    assert_vectors(&api, &stored, &expected);
}

#[test]
fn a_postgresql_restart_mid_run_loses_nothing_and_a_rerun_completes() {
    let cluster = PrivateCluster::start("");
    let db = cluster.posts();
    db.seed(8000, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    // About 2 s for a whole run; the restart comes in the middle of it.
    let api = Standin::start(&["--delay-per-post-ms", "1", "--slots", "4"]);

    let running = spawn(job(&db.url, &api.url));
    std::thread::sleep(Duration::from_millis(800));
    let before_restart = db.embeddings().len();
    assert!(
        before_restart > 0 && before_restart < expected.len(),
        "the restart is not mid-run"
    );
    cluster.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]);
    let ended = wait(running);
    // The writer connects again and goes on. The streamed read cannot: if
    // rows were still to come, the run ends saying so, and the next one
    // goes on from what is stored.
    match ended.code {
        0 => assert!(ended.output.contains("connected again"), "{}", ended.output),
        1 => assert!(
            ended.output.contains("reading the due posts failed"),
            "{}",
            ended.output
        ),
        _ => panic!("{}", ended.output),
    }

    let ended = run(job(&db.url, &api.url));
    assert_eq!(ended.code, 0, "{}", ended.output);
    let stored = db.embeddings();
    assert_eq!(stored.len(), expected.len());
    assert_vectors(&api, &stored, &expected);
}
