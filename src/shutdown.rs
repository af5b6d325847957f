//! Stopping a run early, cleanly: on SIGTERM or SIGINT, when `MAX_RUNTIME`
//! is spent, or when the job itself gives up (the API or the database has
//! been unavailable too long, or the API refuses the job's requests).
//!
//! Stopping is one flag that every part of the pipeline polls: the reader
//! takes no new posts, the API threads send no new requests and abandon
//! their retries, and the writer writes what has already arrived. The first
//! reason given is the one reported. A second SIGTERM or SIGINT ends the
//! process at once. This module decides nothing about what is retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// SIGTERM or SIGINT.
    Signal,
    /// `MAX_RUNTIME` was spent.
    OutOfTime,
    /// The API or the database stayed unavailable past `OUTAGE_LIMIT`.
    Unavailable(String),
    /// Something no rerun will fix: the API refuses the job's requests, the
    /// database refuses its reads or writes.
    Setup(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Signal => f.write_str("a signal asked the job to stop"),
            Cause::OutOfTime => f.write_str("MAX_RUNTIME is spent"),
            Cause::Unavailable(what) => write!(f, "service unavailable: {what}"),
            Cause::Setup(what) => f.write_str(what),
        }
    }
}

/// The run's stop flag, shared by every thread.
pub struct Shutdown {
    /// Set by the signal handler; only ever goes from false to true.
    signalled: Arc<AtomicBool>,
    /// When `MAX_RUNTIME` ends, if it is set.
    deadline: Option<Instant>,
    /// Why the run stops; `None` while it goes on.
    cause: Mutex<Option<Cause>>,
    /// Mirrors `cause.is_some()`, for the polls on the hot path.
    stopping: AtomicBool,
}

impl Shutdown {
    /// Installs the signal handlers and starts the `MAX_RUNTIME` clock.
    pub fn install(max_runtime: Option<Duration>) -> std::io::Result<Shutdown> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;

        let signalled = Arc::new(AtomicBool::new(false));
        for signal in [SIGTERM, SIGINT] {
            // The second signal finds the flag set and ends the process now.
            flag::register_conditional_shutdown(signal, 1, Arc::clone(&signalled))?;
            flag::register(signal, Arc::clone(&signalled))?;
        }
        Ok(Shutdown::with_flag(signalled, max_runtime))
    }

    fn with_flag(signalled: Arc<AtomicBool>, max_runtime: Option<Duration>) -> Shutdown {
        Shutdown {
            signalled,
            deadline: max_runtime.map(|limit| Instant::now() + limit),
            cause: Mutex::new(None),
            stopping: AtomicBool::new(false),
        }
    }

    /// Stops the run for `cause`, unless it is already stopping.
    pub fn stop(&self, cause: Cause) {
        let mut current = self.cause.lock().expect("shutdown lock");
        if current.is_none() {
            log::warn!(cause = cause.to_string().as_str(); "stopping: {cause}; writing what has arrived");
            *current = Some(cause);
            self.stopping.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the run is stopping; notices signals and the deadline.
    pub fn is_stopping(&self) -> bool {
        if self.stopping.load(Ordering::Relaxed) {
            return true;
        }
        if self.signalled.load(Ordering::Relaxed) {
            self.stop(Cause::Signal);
        } else if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            self.stop(Cause::OutOfTime);
        }
        self.stopping.load(Ordering::Relaxed)
    }

    /// Why the run stopped, if it did.
    pub fn cause(&self) -> Option<Cause> {
        self.cause.lock().expect("shutdown lock").clone()
    }

    /// Sleeps for `duration`, or less if the run starts stopping. Returns
    /// whether the run is stopping.
    pub fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        loop {
            if self.is_stopping() {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
impl Shutdown {
    /// A flag with no signal handler, for tests.
    pub fn for_tests(max_runtime: Option<Duration>) -> Shutdown {
        Shutdown::with_flag(Arc::new(AtomicBool::new(false)), max_runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_stays() {
        let shutdown = Shutdown::for_tests(None);
        assert!(!shutdown.is_stopping());
        shutdown.stop(Cause::Unavailable("api".into()));
        shutdown.stop(Cause::Signal);
        assert!(shutdown.is_stopping());
        assert_eq!(shutdown.cause(), Some(Cause::Unavailable("api".into())));
    }

    #[test]
    fn the_deadline_stops_the_run() {
        let shutdown = Shutdown::for_tests(Some(Duration::from_millis(20)));
        assert!(!shutdown.is_stopping());
        assert!(shutdown.sleep(Duration::from_secs(5)));
        assert_eq!(shutdown.cause(), Some(Cause::OutOfTime));
    }
}
