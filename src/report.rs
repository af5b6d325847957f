//! What a run did, in numbers: the progress lines while it runs, the summary
//! at the end, and the exit status that sums it up.
//!
//! Every post of the shard ends in exactly one bucket: embedded, already
//! embedded, failed (with a reason), or unfinished (never attempted, because
//! the run stopped early). The exit status is 0 only when the last two are
//! empty. This module only counts and logs; it never decides what to retry.

use std::collections::BTreeMap;
use std::time::Instant;

/// The exit statuses, stable and documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every due post of the shard has an embedding.
    Done = 0,
    /// Work remains: a batch or a service failed; a new run will retry it.
    WorkRemains = 1,
    /// The configuration or the database's setup is wrong; a new run with
    /// the same settings will fail the same way.
    BadSetup = 2,
}

/// The counts of one run.
#[derive(Debug)]
pub struct Report {
    /// When the run started.
    started: Instant,
    /// Due posts of the shard when the run read them.
    due: u64,
    /// Posts whose vector this run inserted.
    embedded: u64,
    /// Posts that had an embedding by the time this run wrote (another
    /// task or an overlapping run), or were deleted meanwhile.
    already_embedded: u64,
    /// Posts that failed, by reason.
    failed: BTreeMap<String, u64>,
    /// Why the run stopped before it tried every due post, if it did.
    stopped: Option<String>,
}

impl Report {
    pub fn new() -> Report {
        Report {
            started: Instant::now(),
            due: 0,
            embedded: 0,
            already_embedded: 0,
            failed: BTreeMap::new(),
            stopped: None,
        }
    }

    /// Records how many posts were due.
    pub fn set_due(&mut self, due: u64) {
        self.due = due;
    }

    /// Records a write: `inserted` new rows among `posts`.
    pub fn written(&mut self, posts: u64, inserted: u64) {
        self.embedded += inserted;
        self.already_embedded += posts - inserted;
    }

    /// Records `posts` posts that failed for `reason`.
    pub fn failed(&mut self, posts: u64, reason: String) {
        *self.failed.entry(reason).or_default() += posts;
    }

    /// Records that the run stopped early, and why. The first reason stays.
    pub fn stop(&mut self, why: String) {
        self.stopped.get_or_insert(why);
    }

    pub fn failed_posts(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Posts done with, one way or another.
    fn settled(&self) -> u64 {
        self.embedded + self.already_embedded + self.failed_posts()
    }

    /// Posts of the shard never attempted.
    pub fn unfinished(&self) -> u64 {
        self.due.saturating_sub(self.settled())
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (self.embedded + self.already_embedded) as f64 / secs
    }

    /// Logs one progress line.
    pub fn log_progress(&self) {
        let percent = if self.due == 0 {
            100.0
        } else {
            100.0 * self.settled() as f64 / self.due as f64
        };
        log::info!(
            "progress: {} of {} posts done ({percent:.1} %), {:.0} posts/s, {} failed",
            self.settled(),
            self.due,
            self.rate(),
            self.failed_posts(),
        );
    }

    /// Logs the summary and returns the exit status it amounts to.
    pub fn finish(&self) -> ExitStatus {
        let duration = self.started.elapsed();
        let reasons: Vec<String> = self
            .failed
            .iter()
            .map(|(reason, posts)| format!("{reason}: {posts}"))
            .collect();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        };
        log::info!(
            "summary: {} due, {} embedded, {} already embedded, {} failed{reasons}, \
             {} unfinished, {:.1} s, {:.0} posts/s",
            self.due,
            self.embedded,
            self.already_embedded,
            self.failed_posts(),
            self.unfinished(),
            duration.as_secs_f64(),
            self.rate(),
        );

        let status = self.status();
        match (&self.stopped, status) {
            (Some(why), _) => log::error!("run stopped early: {why}"),
            (None, ExitStatus::Done) => log::info!("every due post of the shard is embedded"),
            (None, _) => log::warn!("some due posts of the shard are not embedded; rerun to retry"),
        }
        status
    }

    /// The exit status these counts amount to.
    pub fn status(&self) -> ExitStatus {
        if self.stopped.is_none() && self.failed.is_empty() && self.unfinished() == 0 {
            ExitStatus::Done
        } else {
            ExitStatus::WorkRemains
        }
    }
}

impl Default for Report {
    fn default() -> Self {
        Report::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_only_when_every_due_post_is_settled_without_failure() {
        let mut report = Report::new();
        report.set_due(10);
        report.written(8, 7);
        assert_eq!(report.unfinished(), 2);
        assert_eq!(report.status(), ExitStatus::WorkRemains);
        report.written(2, 2);
        assert_eq!(report.status(), ExitStatus::Done);
        report.failed(1, "api status 500".to_string());
        assert_eq!(report.status(), ExitStatus::WorkRemains);
    }

    #[test]
    fn a_stopped_run_is_never_done() {
        let mut report = Report::new();
        report.stop("database connection lost".to_string());
        assert_eq!(report.status(), ExitStatus::WorkRemains);
    }
}
