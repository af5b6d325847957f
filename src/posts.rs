//! Reading the due posts of one shard, and what is sent for each.
//!
//! The selection is the old job's, to the letter (see README "Which posts"):
//! no embedding yet, `suspected IS FALSE`, `media_product_type <> 'STORY'`
//! under SQL's three-valued logic, most recent first. The image is the
//! first media item's: its thumbnail for a video, its media URL otherwise.
//!
//! The rows are streamed: the query runs as one statement on its own
//! connection and rows are pulled as the pipeline needs them, so memory does
//! not grow with the backlog. This module only reads; it never writes.

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;

use crate::shard::{self, Shard};

/// One due post and exactly what the API receives for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// The post's `ig_media_id`.
    pub id: String,
    /// The caption as stored: `None` for `NULL`, `Some("")` for `''`.
    pub caption: Option<String>,
    /// The first media item's image, if there is one.
    pub image_url: Option<String>,
}

/// The spec's definition of a due post `p`, in SQL.
const DUE: &str = "p.suspected IS FALSE \
                   AND p.media_product_type <> 'STORY' \
                   AND NOT EXISTS ( \
                       SELECT 1 FROM instagram.post_embeddings e \
                       WHERE e.ig_media_id = p.ig_media_id)";

/// The due posts of one shard, with how many there are in all.
///
/// The first cover (`media_order = 0`) of a post is taken from a
/// `DISTINCT ON` over the media table rather than a per-post subquery:
/// `parent_ig_media_id` has no index, so a per-post lookup would scan the
/// media table once per post. Among two covers of one post, the one with the
/// smallest media id wins, so the choice is the same on every run.
///
/// `count(*) OVER ()` gives the number of due posts with the first row, at
/// no extra scan: the sort by time has to see every row first anyway.
fn due_posts_sql(shard: &Shard) -> String {
    format!(
        "SELECT p.ig_media_id::text, p.caption, \
                CASE WHEN m.media_type = 'VIDEO' THEN m.thumbnail_url ELSE m.media_url END, \
                count(*) OVER () \
         FROM instagram.core_posts p \
         LEFT JOIN ( \
             SELECT DISTINCT ON (parent_ig_media_id) \
                    parent_ig_media_id, media_type, media_url, thumbnail_url \
             FROM instagram.core_post_media \
             WHERE media_order = 0 AND {media_shard} \
             ORDER BY parent_ig_media_id, ig_media_id \
         ) m ON m.parent_ig_media_id = p.ig_media_id \
         WHERE {DUE} AND {post_shard} \
         ORDER BY p.\"timestamp\" DESC NULLS LAST, p.ig_media_id",
        media_shard = shard.sql_condition("parent_ig_media_id"),
        post_shard = shard.sql_condition("p.ig_media_id"),
    )
}

/// The due posts of every shard of `task_count`: (task, due posts), for
/// the tasks that have any. Reads counts only.
pub fn count_due_by_shard(
    client: &mut postgres::Client,
    task_count: usize,
) -> Result<Vec<(i64, i64)>, postgres::Error> {
    let sql = format!(
        "SELECT {owner}, count(*) \
         FROM instagram.core_posts p \
         WHERE {DUE} \
         GROUP BY 1 ORDER BY 1",
        owner = shard::owner_sql("p.ig_media_id", task_count),
    );
    let no_params: [(&(dyn ToSql + Sync), postgres::types::Type); 0] = [];
    let rows = client.query_typed(&sql, &no_params)?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Streams the due posts of `shard`, calling `each` with every post and the
/// total number due, in order. Stops early, without error, when `each`
/// returns `false`.
///
/// The statement is sent unnamed, with its types given, so it works through
/// a pooler in transaction mode, which cannot keep a prepared statement.
pub fn for_each_due_post(
    client: &mut postgres::Client,
    shard: &Shard,
    mut each: impl FnMut(Post, u64) -> bool,
) -> Result<(), postgres::Error> {
    let no_params: [(&(dyn ToSql + Sync), postgres::types::Type); 0] = [];
    let mut rows = client.query_typed_raw(&due_posts_sql(shard), no_params)?;
    while let Some(row) = rows.next()? {
        let post = Post {
            id: row.try_get(0)?,
            caption: row.try_get(1)?,
            image_url: row.try_get(2)?,
        };
        let due: i64 = row.try_get(3)?;
        if !each(post, due.max(0) as u64) {
            break;
        }
    }
    Ok(())
}
