//! Sharding: tasks run as separate processes at the same time embed every
//! due post exactly once, each taking only its own shard.

mod common;

use common::{job, spawn, wait, Standin, TestDb};

/// `id` modulo `n`, exact for any number of digits.
fn modulo(id: &str, n: u64) -> u64 {
    id.bytes()
        .fold(0, |rest, digit| (rest * 10 + u64::from(digit - b'0')) % n)
}

/// Runs `tasks` tasks at once over generated posts, ids longer than 64 bits
/// and ids that are not numbers, and checks every count.
fn every_due_post_is_embedded_exactly_once_with(tasks: u64) {
    let db = TestDb::new(&format!("shards_{tasks}"));
    db.seed(2000, 17_900_000_000_000_000);
    for (i, id) in [
        "123456789012345678901234567890",
        "98765432109876543210987654321",
    ]
    .iter()
    .enumerate()
    {
        db.post(id, "'long id'", "false", "'FEED'", i as u32);
    }
    for (i, id) in ["abc", "", "12a", " 42", "٣"].iter().enumerate() {
        db.post(id, "'odd id'", "false", "'FEED'", i as u32);
    }
    let due = db.expected_payloads();
    let api = Standin::start(&[]);

    // What each task must take: the documented rule, computed here for the
    // numbers and by PostgreSQL's MD5 for the rest.
    let mut expected = vec![0u64; tasks as usize];
    for (id, _, _) in &due {
        let task = if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            modulo(id, tasks)
        } else {
            let row = db
                .client()
                .query_one(
                    "SELECT (('x' || substr(md5($1), 1, 8))::bit(32)::bigint % $2)::bigint",
                    &[id, &(tasks as i64)],
                )
                .unwrap();
            row.get::<_, i64>(0) as u64
        };
        expected[task as usize] += 1;
    }

    let running: Vec<_> = (0..tasks)
        .map(|index| {
            let mut command = job(&db.url, &api.url);
            command
                .env("CLOUD_RUN_TASK_INDEX", index.to_string())
                .env("CLOUD_RUN_TASK_COUNT", tasks.to_string())
                .env("BATCH_SIZE", "13");
            spawn(command)
        })
        .collect();
    for (index, running) in running.into_iter().enumerate() {
        let ended = wait(running);
        assert_eq!(ended.code, 0, "task {index}: {}", ended.output);
        assert_eq!(
            ended.summary("embedded"),
            expected[index],
            "task {index}: {}",
            ended.output
        );
        assert_eq!(ended.summary("due"), expected[index], "task {index}");
    }

    let stored = db.embeddings();
    assert_eq!(stored.len(), due.len(), "every due post is embedded");
    for (id, _, _) in &due {
        assert!(stored.contains_key(id), "post {id:?} was left out");
    }
    assert_eq!(
        api.stats().posts,
        due.len() as u64,
        "no post was sent by two tasks"
    );
}

#[test]
fn one_task_embeds_every_due_post_once() {
    every_due_post_is_embedded_exactly_once_with(1);
}

#[test]
fn three_tasks_embed_every_due_post_once() {
    every_due_post_is_embedded_exactly_once_with(3);
}

#[test]
fn four_tasks_embed_every_due_post_once() {
    every_due_post_is_embedded_exactly_once_with(4);
}

#[test]
fn seven_tasks_embed_every_due_post_once() {
    every_due_post_is_embedded_exactly_once_with(7);
}
