//! What a run did, in numbers: the progress lines while it runs, the summary
//! at the end, and the exit status that sums it up.
//!
//! Every post of the shard ends in exactly one bucket: embedded, already
//! embedded, rejected (it failed alone while the API worked; counted by
//! reason), or unfinished (the run stopped before it was written). The exit
//! status is 0 only when the last two are empty. This module only counts and
//! logs; it never decides what to retry.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::shutdown::Cause;

/// The exit statuses, stable and documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every due post of the shard has an embedding.
    Done = 0,
    /// Work remains: a service was unavailable, a signal or `MAX_RUNTIME`
    /// stopped the run; a new run picks up where this one stopped.
    WorkRemains = 1,
    /// The configuration or the setup is wrong (a setting, the column's
    /// width, a grant, the API's URL or credentials); a new run with the
    /// same settings fails the same way.
    BadSetup = 2,
    /// Every due post was settled, but some were rejected on their own (an
    /// image the API cannot fetch, say): data problems a rerun will not fix.
    /// `REJECTED_POSTS_STATUS` can map this to another number.
    PostsRejected = 3,
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
    /// Posts rejected on their own, by reason.
    rejected: BTreeMap<String, u64>,
    /// Why the run stopped before it settled every due post, if it did.
    stopped: Option<Cause>,
}

impl Report {
    pub fn new() -> Report {
        Report {
            started: Instant::now(),
            due: 0,
            embedded: 0,
            already_embedded: 0,
            rejected: BTreeMap::new(),
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

    /// Records a post rejected for `reason`.
    pub fn rejected(&mut self, reason: String) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// Records that the run stopped early, and why.
    pub fn stopped(&mut self, cause: Option<Cause>) {
        self.stopped = cause;
    }

    fn rejected_posts(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Posts done with, one way or another.
    fn settled(&self) -> u64 {
        self.embedded + self.already_embedded + self.rejected_posts()
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
        let (done, rate) = (self.settled(), self.rate());
        let eta_s = if rate > 0.0 {
            (self.due.saturating_sub(done) as f64 / rate).round() as u64
        } else {
            0
        };
        log::info!(
            done = done, due = self.due, rate = rate.round(), eta_s = eta_s,
            rejected = self.rejected_posts();
            "progress: {done} of {} posts done ({percent:.1} %), {rate:.0} posts/s, {} rejected, ETA {}",
            self.due,
            self.rejected_posts(),
            clock(eta_s),
        );
    }

    /// Logs the summary and returns the exit status it amounts to.
    pub fn finish(&self) -> ExitStatus {
        let duration = self.started.elapsed();
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(reason, posts)| format!("{reason}: {posts}"))
            .collect();
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        };
        log::info!(
            due = self.due, embedded = self.embedded, already_embedded = self.already_embedded,
            rejected = self.rejected_posts(), unfinished = self.unfinished(),
            duration_s = (duration.as_secs_f64() * 10.0).round() / 10.0, rate = self.rate().round();
            "summary: {} due, {} embedded, {} already embedded, {} rejected{reasons}, \
             {} unfinished, {:.1} s, {:.0} posts/s",
            self.due,
            self.embedded,
            self.already_embedded,
            self.rejected_posts(),
            self.unfinished(),
            duration.as_secs_f64(),
            self.rate(),
        );

        let status = self.status();
        match (&self.stopped, status) {
            (Some(cause), _) => log::error!("run stopped early: {cause}"),
            (None, ExitStatus::Done) => log::info!("every due post of the shard is embedded"),
            (None, _) => log::warn!(
                "{} posts were rejected on their own; a rerun will try them again",
                self.rejected_posts()
            ),
        }
        status
    }

    /// The exit status these counts amount to.
    pub fn status(&self) -> ExitStatus {
        match &self.stopped {
            Some(Cause::Setup(_)) => ExitStatus::BadSetup,
            Some(_) => ExitStatus::WorkRemains,
            None if self.unfinished() > 0 => ExitStatus::WorkRemains,
            None if self.rejected_posts() > 0 => ExitStatus::PostsRejected,
            None => ExitStatus::Done,
        }
    }
}

/// `1h02m03s`, `4m05s` or `6s`.
fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
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
    fn done_only_when_every_due_post_is_settled_without_rejection() {
        let mut report = Report::new();
        report.set_due(10);
        report.written(8, 7);
        assert_eq!(report.unfinished(), 2);
        assert_eq!(report.status(), ExitStatus::WorkRemains);
        report.written(1, 1);
        report.rejected("api status 500".to_string());
        assert_eq!(report.status(), ExitStatus::PostsRejected);
        let mut done = Report::new();
        done.set_due(3);
        done.written(3, 3);
        assert_eq!(done.status(), ExitStatus::Done);
    }

    #[test]
    fn the_eta_reads_as_a_clock() {
        assert_eq!(clock(6), "6s");
        assert_eq!(clock(245), "4m05s");
        assert_eq!(clock(3723), "1h02m03s");
    }

    #[test]
    fn a_stopped_run_is_never_done() {
        let mut report = Report::new();
        report.stopped(Some(Cause::Signal));
        assert_eq!(report.status(), ExitStatus::WorkRemains);
        report.stopped(Some(Cause::Setup("no grant".into())));
        assert_eq!(report.status(), ExitStatus::BadSetup);
    }
}
