//! Which posts are due and exactly what is sent for each, against a real
//! PostgreSQL and the stand-in API.

mod common;

use common::{job, run, Standin, TestDb};

/// Runs the job once over a database set up by `setup` and returns the
/// stored embeddings, after checking the run ended well.
fn embed(
    label: &str,
    setup: impl Fn(&TestDb),
) -> (TestDb, Standin, std::collections::HashMap<String, Vec<f32>>) {
    let db = TestDb::new(label);
    setup(&db);
    let api = Standin::start(&[]);
    let ended = run(job(&db.url, &api.url));
    assert_eq!(ended.code, 0, "{}", ended.output);
    let stored = db.embeddings();
    (db, api, stored)
}

/// Asserts that `id` was stored with the vector of exactly this payload.
fn assert_vector(
    api: &Standin,
    stored: &std::collections::HashMap<String, Vec<f32>>,
    id: &str,
    caption: Option<&str>,
    image_url: Option<&str>,
) {
    let expected = (
        id.to_string(),
        caption.map(str::to_string),
        image_url.map(str::to_string),
    );
    common::assert_vectors(api, stored, &[expected]);
}

#[test]
fn a_post_with_suspected_null_is_not_due() {
    let (_db, _api, stored) = embed("suspected_null", |db| {
        db.post("1", "'a'", "NULL", "'FEED'", 1);
        db.post("2", "'b'", "false", "'FEED'", 2);
    });
    assert!(!stored.contains_key("1"));
    assert!(stored.contains_key("2"));
}

#[test]
fn a_suspected_post_is_not_due() {
    let (_db, _api, stored) = embed("suspected_true", |db| {
        db.post("1", "'a'", "true", "'FEED'", 1);
        db.post("2", "'b'", "false", "'FEED'", 2);
    });
    assert!(!stored.contains_key("1"));
    assert!(stored.contains_key("2"));
}

#[test]
fn a_story_is_not_due() {
    let (_db, _api, stored) = embed("story", |db| {
        db.post("1", "'a'", "false", "'STORY'", 1);
        db.post("2", "'b'", "false", "'REELS'", 2);
    });
    assert!(!stored.contains_key("1"));
    assert!(stored.contains_key("2"));
}

#[test]
fn a_post_without_product_type_is_not_due() {
    let (_db, _api, stored) = embed("null_product", |db| {
        db.post("1", "'a'", "false", "NULL", 1);
        db.post("2", "'b'", "false", "'FEED'", 2);
    });
    assert!(!stored.contains_key("1"));
    assert!(stored.contains_key("2"));
}

#[test]
fn a_video_is_embedded_with_its_thumbnail() {
    let (_db, api, stored) = embed("video_thumbnail", |db| {
        db.post("10", "'clip'", "false", "'REELS'", 1);
        db.media(
            "10",
            0,
            "10",
            "VIDEO",
            "'https://cdn/video.mp4'",
            "'https://cdn/thumb.jpg'",
        );
    });
    assert_vector(
        &api,
        &stored,
        "10",
        Some("clip"),
        Some("https://cdn/thumb.jpg"),
    );
}

#[test]
fn a_video_without_thumbnail_is_embedded_without_image() {
    let (_db, api, stored) = embed("video_no_thumbnail", |db| {
        db.post("10", "'clip'", "false", "'REELS'", 1);
        db.media("10", 0, "10", "VIDEO", "'https://cdn/video.mp4'", "NULL");
    });
    assert_vector(&api, &stored, "10", Some("clip"), None);
}

#[test]
fn an_image_is_embedded_with_its_first_media_url() {
    let (_db, api, stored) = embed("image_first_item", |db| {
        db.post("10", "'carousel'", "false", "'FEED'", 1);
        db.media("10_b", 1, "10", "IMAGE", "'https://cdn/second.jpg'", "NULL");
        db.media(
            "10",
            0,
            "10",
            "IMAGE",
            "'https://cdn/cover.jpg'",
            "'https://cdn/t.jpg'",
        );
    });
    assert_vector(
        &api,
        &stored,
        "10",
        Some("carousel"),
        Some("https://cdn/cover.jpg"),
    );
}

#[test]
fn a_post_without_media_is_embedded_without_image() {
    let (_db, api, stored) = embed("no_media", |db| {
        db.post("10", "'text only'", "false", "'FEED'", 1);
    });
    assert_vector(&api, &stored, "10", Some("text only"), None);
}

#[test]
fn an_empty_caption_and_a_null_caption_are_sent_apart() {
    let (_db, api, stored) = embed("empty_vs_null_caption", |db| {
        db.post("1", "''", "false", "'FEED'", 1);
        db.post("2", "NULL", "false", "'FEED'", 2);
    });
    assert_vector(&api, &stored, "1", Some(""), None);
    assert_vector(&api, &stored, "2", None, None);
    assert_ne!(stored["1"], stored["2"]);
}

#[test]
fn a_post_with_two_covers_is_embedded_once_with_the_smallest_media_id() {
    let (_db, api, stored) = embed("two_covers", |db| {
        db.post("10", "'twice'", "false", "'FEED'", 1);
        db.media("10_z", 0, "10", "IMAGE", "'https://cdn/z.jpg'", "NULL");
        db.media("10_a", 0, "10", "IMAGE", "'https://cdn/a.jpg'", "NULL");
    });
    assert_eq!(api.stats().posts, 1, "the post was sent more than once");
    assert_vector(
        &api,
        &stored,
        "10",
        Some("twice"),
        Some("https://cdn/a.jpg"),
    );
}

#[test]
fn a_post_already_embedded_is_left_as_it_is() {
    let db = TestDb::new("already_embedded");
    db.post("1", "'old'", "false", "'FEED'", 1);
    db.post("2", "'new'", "false", "'FEED'", 2);
    let old = format!("[{}]", vec!["0.5"; 512].join(","));
    db.execute(&format!(
        "INSERT INTO instagram.post_embeddings (ig_media_id, embedding, created_at) \
         VALUES ('1', '{old}', timestamp '2020-01-01')"
    ));
    let api = Standin::start(&[]);
    let ended = run(job(&db.url, &api.url));
    assert_eq!(ended.code, 0, "{}", ended.output);
    assert_eq!(
        api.stats().posts,
        1,
        "only the post without an embedding is due"
    );
    let kept: (f32, bool) = {
        let row = db
            .client()
            .query_one(
                "SELECT (embedding::real[])[1], created_at = timestamp '2020-01-01' \
                 FROM instagram.post_embeddings WHERE ig_media_id = '1'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(kept, (0.5, true));
}

#[test]
fn every_stored_vector_is_the_one_of_its_posts_payload() {
    let db = TestDb::new("payload_alignment");
    db.seed(1500, 17_900_000_000_000_000);
    let expected = db.expected_payloads();
    assert!(expected.len() > 1000, "the seed makes posts due");
    let api = Standin::start(&[]);

    let mut command = job(&db.url, &api.url);
    command.env("BATCH_SIZE", "7").env("CONCURRENCY", "5");
    let ended = run(command);
    assert_eq!(ended.code, 0, "{}", ended.output);

    let stored = db.embeddings();
    assert_eq!(stored.len(), expected.len());
    common::assert_vectors(&api, &stored, &expected);
}

#[test]
fn posts_are_sent_most_recent_first() {
    let db = TestDb::new("order");
    db.post("1", "'oldest'", "false", "'FEED'", 1);
    db.post("2", "'newest'", "false", "'FEED'", 3);
    db.post("3", "'middle'", "false", "'FEED'", 2);
    db.execute(
        "INSERT INTO instagram.core_posts (ig_media_id, caption, suspected, media_product_type) \
         VALUES ('4', 'undated', false, 'FEED')",
    );
    let api = Standin::start(&[]);
    let mut command = job(&db.url, &api.url);
    command.env("CONCURRENCY", "1");
    let ended = run(command);
    assert_eq!(ended.code, 0, "{}", ended.output);
    let sent = api.stats().captions;
    let sent: Vec<&str> = sent
        .iter()
        .map(|c| c.as_deref().unwrap_or("NULL"))
        .collect();
    assert_eq!(sent, ["newest", "middle", "oldest", "undated"]);
}
