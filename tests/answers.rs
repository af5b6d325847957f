//! Answers the job must not trust, and reruns: against a real PostgreSQL and
//! the stand-in API.

mod common;

use common::{assert_vectors, job, run, Standin, TestDb};

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

/// Runs the job over the twelve posts: nothing of the spoiled answer may be
/// written; the batch is split so its healthy posts are embedded from
/// answers of their own, and the post that spoils it is rejected.
fn nothing_of_a_spoiled_answer_is_written(label: &str, marker: &str, reason: &str) {
    let db = twelve_posts(label, marker);
    let expected = db.expected_payloads();
    let api = Standin::start(&[]);
    let mut command = job(&db.url, &api.url);
    command.env("BATCH_SIZE", "4");
    let ended = run(command);

    assert_eq!(ended.code, 3, "{}", ended.output);
    assert!(
        ended.output.contains(reason),
        "no {reason:?} in:\n{}",
        ended.output
    );
    assert!(
        ended.output.contains("post 12 rejected"),
        "{}",
        ended.output
    );
    let stored = db.embeddings();
    let mut ids: Vec<u32> = stored.keys().map(|id| id.parse().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (1..=11).collect::<Vec<_>>());
    let healthy: Vec<_> = expected
        .into_iter()
        .filter(|(id, _, _)| id != "12")
        .collect();
    assert_vectors(&api, &stored, &healthy);
    assert_eq!(ended.summary("rejected"), 1);
    assert_eq!(ended.summary("embedded"), 11);
}

#[test]
fn a_short_answer_writes_nothing_of_its_batch() {
    nothing_of_a_spoiled_answer_is_written(
        "short",
        "[[fault:short]]",
        "API answered 0 vectors (count 1) for a batch of 1",
    );
}

#[test]
fn a_vector_of_the_wrong_width_writes_nothing_of_its_batch() {
    nothing_of_a_spoiled_answer_is_written(
        "width",
        "[[fault:width]]",
        "has width 513, expected 512",
    );
}

#[test]
fn a_nan_writes_nothing_of_its_batch() {
    nothing_of_a_spoiled_answer_is_written("nan", "[[fault:nan]]", "holds a non-finite number");
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
