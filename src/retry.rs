//! Waiting out an unreliable service: exponential backoff with jitter, and
//! the outage clock that says when waiting has gone on long enough.
//!
//! The outage clock measures the time since the service last answered well
//! (or since the run started). A failure is worth retrying while that time
//! is under `OUTAGE_LIMIT`; past it, the service counts as down and the run
//! stops. One clock per service, shared by all threads: one batch failing
//! while others succeed is not an outage. This module never sleeps past a
//! stop request.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::shutdown::{Cause, Shutdown};

/// The first wait after a failure.
const FIRST_DELAY: Duration = Duration::from_millis(500);

/// The longest wait between two attempts, `Retry-After` included: a service
/// that asks for more is retried sooner, within the outage limit.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter for one sequence of attempts.
pub struct Backoff {
    /// Failures so far in this sequence.
    failures: u32,
    /// State of the jitter's random sequence.
    seed: u64,
}

impl Backoff {
    pub fn new() -> Backoff {
        // The jitter only has to differ between threads and processes: the
        // standard library's random hash keys are enough.
        let seed = RandomState::new().build_hasher().finish();
        Backoff {
            failures: 0,
            seed: seed | 1,
        }
    }

    /// The wait before the next attempt: doubling from `FIRST_DELAY`, each
    /// time a random share between a half and the whole of it so that
    /// threads and tasks spread out, never less than what the server asked.
    pub fn next_delay(&mut self, asked: Option<Duration>) -> Duration {
        let exponent = self.failures.min(16);
        self.failures += 1;
        let full = FIRST_DELAY.saturating_mul(1 << exponent).min(MAX_DELAY);
        let jittered = full.mul_f64(0.5 + 0.5 * self.random());
        jittered.max(asked.unwrap_or_default()).min(MAX_DELAY)
    }

    /// A number in [0, 1) (xorshift64).
    fn random(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// The outage clock of one service.
pub struct Availability {
    /// The service's name, for messages.
    name: &'static str,
    /// How long the service may fail before it counts as down.
    limit: Duration,
    /// When it last answered well, or when the run started.
    last_success: Mutex<Instant>,
    /// Good answers so far.
    successes: AtomicU64,
}

impl Availability {
    pub fn new(name: &'static str, limit: Duration) -> Availability {
        Availability {
            name,
            limit,
            last_success: Mutex::new(Instant::now()),
            successes: AtomicU64::new(0),
        }
    }

    /// Records a good answer.
    pub fn success(&self) {
        *self.last_success.lock().expect("availability lock") = Instant::now();
        self.successes.fetch_add(1, Ordering::Relaxed);
    }

    /// Good answers so far; compare two readings to see whether the service
    /// answered well in between.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// How much longer failures may go on before the service counts as
    /// down; `None` once it does.
    pub fn patience_left(&self) -> Option<Duration> {
        let since = self
            .last_success
            .lock()
            .expect("availability lock")
            .elapsed();
        self.limit.checked_sub(since).filter(|left| !left.is_zero())
    }

    /// What to say when it is down.
    pub fn outage(&self, last_error: &str) -> String {
        format!(
            "the {} has not answered well for {} s (OUTAGE_LIMIT); last error: {last_error}",
            self.name,
            self.limit.as_secs()
        )
    }
}

/// Waits before the next attempt at something `availability` serves.
/// Returns `false` when there is no next attempt: the run is stopping, or
/// the outage clock ran out, in which case this stops the run.
pub fn wait_to_retry(
    availability: &Availability,
    backoff: &mut Backoff,
    asked: Option<Duration>,
    shutdown: &Shutdown,
    last_error: &str,
) -> bool {
    let Some(patience) = availability.patience_left() else {
        shutdown.stop(Cause::Unavailable(availability.outage(last_error)));
        return false;
    };
    // Never sleep past the outage limit: the run should end on time.
    let delay = backoff
        .next_delay(asked)
        .min(patience + Duration::from_millis(10));
    !shutdown.sleep(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay(None)).collect();
        assert!(delays[0] >= FIRST_DELAY / 2 && delays[0] <= FIRST_DELAY);
        assert!(delays[3] >= FIRST_DELAY * 4 && delays[3] <= FIRST_DELAY * 8);
        assert!(delays.iter().all(|d| *d <= MAX_DELAY));
        assert!(delays[9] >= MAX_DELAY / 2);
    }

    #[test]
    fn the_server_asked_wait_is_honoured() {
        let mut backoff = Backoff::new();
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(3600))),
            MAX_DELAY
        );
    }

    #[test]
    fn patience_runs_out_without_success() {
        let availability = Availability::new("API", Duration::from_millis(30));
        assert!(availability.patience_left().is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(availability.patience_left().is_none());
        availability.success();
        assert!(availability.patience_left().is_some());
        assert_eq!(availability.successes(), 1);
    }
}
