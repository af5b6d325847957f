//! Answers the job must not trust, and reruns: against a real PostgreSQL and
//! the stand-in API.

mod common;

use common::{job, run, Standin, TestDb};

/// Twelve posts, sent in three batches of four by time; the newest post's
/// caption carries `marker`, so the first batch (posts 12 to 9) is hit.
fn twelve_posts(label: &str, marker: &str) -> TestDb {
    let db = TestDb::new(label);
    for i in 1..=12u32 {
        let caption = if i == 12 {
            format!("'post {i} {marker}'")
        } else {
            format!("'post {i}'")
        };
        db.post(&i.to_string(), &caption, "false", "'FEED'", i);
    }
    db
}

/// Runs the job over the twelve posts and checks that the hit batch wrote
/// nothing, the others everything, and the exit status says work remains.
fn the_hit_batch_writes_nothing(label: &str, marker: &str, reason: &str) {
    let db = twelve_posts(label, marker);
    let api = Standin::start(&[]);
    let mut command = job(&db.url, &api.url);
    command.env("BATCH_SIZE", "4");
    let ended = run(command);

    assert_eq!(ended.code, 1, "{}", ended.output);
    assert!(
        ended.output.contains(reason),
        "no {reason:?} in:\n{}",
        ended.output
    );
    let mut stored: Vec<u32> = db
        .embeddings()
        .keys()
        .map(|id| id.parse().unwrap())
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        (1..=8).collect::<Vec<_>>(),
        "only the healthy batches are written"
    );
    assert_eq!(ended.summary("failed"), 4);
    assert_eq!(ended.summary("embedded"), 8);
}

#[test]
fn a_short_answer_writes_nothing_of_its_batch() {
    the_hit_batch_writes_nothing(
        "short",
        "[[fault:short]]",
        "API answered 3 vectors (count 4) for 4 posts",
    );
}

#[test]
fn a_vector_of_the_wrong_width_writes_nothing_of_its_batch() {
    the_hit_batch_writes_nothing("width", "[[fault:width]]", "has width 513, expected 512");
}

#[test]
fn a_nan_writes_nothing_of_its_batch() {
    the_hit_batch_writes_nothing("nan", "[[fault:nan]]", "holds a non-finite number");
}

#[test]
fn a_rerun_finds_nothing_due_and_calls_the_api_zero_times() {
    let db = TestDb::new("rerun");
    db.seed(300, 17_900_000_000_000_000);
    let first = Standin::start(&[]);
    let ended = run(job(&db.url, &first.url));
    assert_eq!(ended.code, 0, "{}", ended.output);
    assert!(ended.summary("embedded") > 200);
    let before = db.embeddings();

    let second = Standin::start(&[]);
    let ended = run(job(&db.url, &second.url));
    assert_eq!(ended.code, 0, "{}", ended.output);
    assert_eq!(ended.summary("due"), 0);
    assert_eq!(second.stats().requests, 0, "the rerun called the API");
    assert_eq!(db.embeddings(), before, "the rerun changed stored vectors");
}

#[test]
fn the_api_down_leaves_every_post_due_and_says_work_remains() {
    let db = twelve_posts("api_down", "");
    // A port that was just free: nothing answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ended = run(job(&db.url, &format!("http://127.0.0.1:{port}")));
    assert_eq!(ended.code, 1, "{}", ended.output);
    assert!(db.embeddings().is_empty());
    assert_eq!(ended.summary("failed"), 12);
}
