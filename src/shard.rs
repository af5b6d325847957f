//! The sharding rule: which task owns which post.
//!
//! Task `i` of `N` owns the posts whose `ig_media_id`, read as an exact
//! integer, is congruent to `i` modulo `N`. The rule is evaluated by
//! PostgreSQL, so a task reads and transfers only its own posts. It depends
//! on the post alone, never on timing or list position, so tasks that start
//! at different moments never overlap and never leave a gap.
//!
//! An id that is not all ASCII digits (it should not happen, but a crash on
//! one was how the old job failed) belongs to the task given by the first 32
//! bits of the id's MD5, read as an unsigned integer, modulo `N`. MD5 is used
//! only because PostgreSQL computes it everywhere with the same result.

/// One task's part of the posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This task's index, below `count`.
    index: usize,
    /// The number of tasks sharing the posts.
    count: usize,
}

impl Shard {
    /// The shard of task `index` among `count`, or `None` if the index is not
    /// below the count.
    pub fn new(index: usize, count: usize) -> Option<Shard> {
        (index < count).then_some(Shard { index, count })
    }

    /// The number of tasks sharing the posts.
    pub fn count(&self) -> usize {
        self.count
    }

    /// A SQL condition, true for the rows whose `column` belongs to this
    /// shard. With one task every row does, and the condition is `true`:
    /// evaluating the rule on every row cost a third of the read of 20,000
    /// posts before the first batch could go out.
    pub fn sql_condition(&self, column: &str) -> String {
        if self.count == 1 {
            return "true".to_string();
        }
        format!("{} = {}", owner_sql(column, self.count), self.index)
    }
}

/// A SQL expression for the task, from 0 to `count - 1`, that owns the id in
/// `column`. `numeric` arithmetic is exact for any number of digits. The
/// count is a validated integer, so writing it into the text is safe.
pub fn owner_sql(column: &str, count: usize) -> String {
    format!(
        "(CASE WHEN {column} ~ '^[0-9]+$' \
           THEN ({column}::numeric % {count})::bigint \
           ELSE ('x' || substr(md5({column}), 1, 8))::bit(32)::bigint % {count} \
         END)"
    )
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_must_be_below_the_count() {
        assert!(Shard::new(0, 1).is_some());
        assert!(Shard::new(3, 4).is_some());
        assert!(Shard::new(4, 4).is_none());
        assert!(Shard::new(0, 0).is_none());
    }

    #[test]
    fn the_condition_names_the_column_and_numbers() {
        let sql = Shard::new(2, 7).unwrap().sql_condition("p.ig_media_id");
        assert!(
            sql.contains("(p.ig_media_id::numeric % 7)::bigint"),
            "{sql}"
        );
        assert!(sql.contains("md5(p.ig_media_id)"), "{sql}");
        assert!(sql.ends_with(" = 2"), "{sql}");
    }
}
