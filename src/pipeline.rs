//! The pipeline: due posts stream from the database, go to the API in
//! batches, several at once, and their vectors are written as they arrive.
//!
//! ```text
//!  reader thread ──batch──▶ rayon pool (CONCURRENCY threads) ──vectors──▶ writer (this thread)
//!   (reading conn)          each batch settled (batch.rs)                 (writing conn)
//! ```
//!
//! Memory is bounded, however large the backlog: the reader takes a permit
//! before it sends a batch off, and the API thread gives it back once the
//! settled batch is in the writer's channel, so at most `2 × CONCURRENCY`
//! batches are with the API; the channel holds about one write's worth of
//! settled batches, and the writer gathers at most `MAX_WRITE_BYTES` of
//! vectors before it writes them. The writer writes whatever has arrived, in arrival
//! order, so a slow batch never holds back faster ones. No write transaction
//! is open while the API works: a write starts only once its vectors are in.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pgvector::Vector;

use crate::api::ApiClient;
use crate::batch::{self, Settled};
use crate::config::Settings;
use crate::database;
use crate::posts::{self, Post};
use crate::report::Report;
use crate::retry::Availability;
use crate::shutdown::{Cause, Shutdown};
use crate::store::Store;

/// The most vector bytes put in one write: about 1,000 rows of 512 numbers.
/// Every commit costs the server a WAL flush, so rows are gathered from
/// several batches into one statement and one transaction: on the 2-core
/// benchmark machine, writing each 10-post batch alone capped the job at
/// 12,800 posts/s, against 20,000+ with this (README "Performance").
const MAX_WRITE_BYTES: usize = 2 * 1024 * 1024;

/// The most rows in one write: `MAX_WRITE_BYTES` of vectors.
fn max_rows_per_write(settings: &Settings) -> usize {
    (MAX_WRITE_BYTES / (4 * settings.dimension)).max(1)
}

/// The longest a received vector waits to be written, so that a slow API
/// still sees its posts stored within a moment.
const MAX_WRITE_DELAY: Duration = Duration::from_millis(200);

/// How long the writer waits, once the run is stopping, for batches still
/// in the API. Cloud Run kills a task 10 s after SIGTERM: what arrives
/// within this time is written, the rest stays due for the next run.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often the writer looks at the stop flag while nothing arrives.
const POLL: Duration = Duration::from_millis(100);

/// What the reader and the API threads share.
struct Shared {
    api: ApiClient,
    /// The API's outage clock.
    api_availability: Availability,
    shutdown: Arc<Shutdown>,
    /// Bounds the batches alive at once.
    permits: Permits,
}

/// What the reader and the API threads tell the writer.
enum Message {
    /// The number of due posts, known with the first row.
    Due(u64),
    /// A batch the API threads are done with.
    Settled(Settled),
}

/// Runs the job over the due posts of the shard and returns its report.
pub fn run(
    settings: &Settings,
    reader: postgres::Client,
    store: Store,
    api: ApiClient,
    shutdown: Arc<Shutdown>,
) -> Report {
    let shared = Arc::new(Shared {
        api,
        api_availability: Availability::new("API", settings.outage_limit),
        shutdown,
        permits: Permits::new(2 * settings.concurrency),
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.concurrency)
        .thread_name(|i| format!("api-{i}"))
        .build()
        .expect("the API threads can be started");
    // Room for a full write's worth of settled batches, so that the API
    // threads go on while the writer waits on the database.
    let max_rows = max_rows_per_write(settings);
    let (sender, receiver) =
        mpsc::sync_channel((max_rows / settings.batch_size).max(2 * settings.concurrency));

    // The reader is not joined: once the run is stopping, it may be waiting
    // on the database, and the process ends without it.
    let reader_settings = settings.clone();
    let reader_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("reader".to_string())
        .spawn(move || read_and_send(&reader_settings, reader, pool, &reader_shared, sender))
        .expect("the reader thread can be started");

    let mut report = Report::new();
    let database_availability = Availability::new("database", settings.outage_limit);
    let mut writer = Writer {
        store,
        availability: database_availability,
        pending: Pending::default(),
    };
    writer.run(settings, receiver, &shared, &mut report);
    report.stopped(shared.shutdown.cause());
    report
}

/// The reader: streams the due posts, cuts them into batches and hands each
/// to the pool. Ends when the posts run out or the run is stopping.
fn read_and_send(
    settings: &Settings,
    mut reader: postgres::Client,
    pool: rayon::ThreadPool,
    shared: &Arc<Shared>,
    sender: SyncSender<Message>,
) {
    let batch_size = settings.batch_size;
    let mut batch = Vec::with_capacity(batch_size);
    let mut told_due = false;

    // Hands a batch to the pool once a permit is free; `false` if the run
    // stopped while waiting.
    let send_batch = |batch: Vec<Post>| {
        if !shared.permits.acquire(&shared.shutdown) {
            return false;
        }
        let shared = Arc::clone(shared);
        let sender = sender.clone();
        pool.spawn(move || {
            let context = batch::Context {
                api: &shared.api,
                availability: &shared.api_availability,
                shutdown: &shared.shutdown,
            };
            let settled = context.settle(batch);
            // The writer only hangs up once the run is over.
            let _ = sender.send(Message::Settled(settled));
            shared.permits.release(1);
        });
        true
    };

    let read = posts::for_each_due_post(&mut reader, &settings.shard, |post, due| {
        if !told_due {
            let _ = sender.send(Message::Due(due));
            told_due = true;
        }
        batch.push(post);
        if batch.len() == batch_size {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            if !send_batch(full) {
                return false;
            }
        }
        !shared.shutdown.is_stopping()
    });
    if !batch.is_empty() && !shared.shutdown.is_stopping() {
        send_batch(batch);
    }

    // A broken read ends the run; the next run reads again from the start,
    // which is cheap as every post written is no longer due.
    if let Err(err) = read {
        let problem = format!(
            "reading the due posts failed: {}",
            database::describe_error(&err)
        );
        let cause = if database::is_transient(&err) {
            Cause::Unavailable(problem)
        } else {
            Cause::Setup(problem)
        };
        shared.shutdown.stop(cause);
    }
}

/// The writer: writes the settled batches as they arrive and counts them.
struct Writer {
    store: Store,
    /// The database's outage clock.
    availability: Availability,
    /// What has arrived and is not written yet.
    pending: Pending,
}

impl Writer {
    /// Writes until the reader and every API thread are done, or until the
    /// grace period after a stop runs out.
    fn run(
        &mut self,
        settings: &Settings,
        receiver: Receiver<Message>,
        shared: &Shared,
        report: &mut Report,
    ) {
        let shutdown = &shared.shutdown;
        let max_rows = max_rows_per_write(settings);
        let mut next_progress = Instant::now() + settings.progress_interval;
        let mut stop_seen: Option<Instant> = None;

        loop {
            // Step 1: wait for the next message, minding progress, stop and
            // the rows that have waited long enough.
            let mut deadline = next_progress;
            if let Some(oldest) = self.pending.since {
                deadline = deadline.min(oldest + MAX_WRITE_DELAY);
            }
            let wait = deadline.saturating_duration_since(Instant::now()).min(POLL);
            let message = match receiver.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if Instant::now() >= next_progress {
                report.log_progress();
                next_progress = Instant::now() + settings.progress_interval;
            }
            if shutdown.is_stopping() {
                let since = *stop_seen.get_or_insert_with(Instant::now);
                if since.elapsed() > STOP_GRACE {
                    log::warn!(
                        "batches still in the API after {} s are left for the next run",
                        STOP_GRACE.as_secs()
                    );
                    break;
                }
            }

            // Step 2: take it and whatever else has already arrived.
            let mut next = message;
            while let Some(message) = next {
                match message {
                    Message::Due(due) => {
                        report.set_due(due);
                        log::info!(due = due; "{due} posts due in shard {}", settings.shard);
                    }
                    Message::Settled(settled) => self.pending.add(settled, report),
                }
                next = if self.pending.rows() >= max_rows {
                    None
                } else {
                    receiver.try_recv().ok()
                };
            }

            // Step 3: write in one transaction once enough rows are pending,
            // or once the oldest has waited long enough, or when stopping.
            let waited = self
                .pending
                .since
                .is_some_and(|t| t.elapsed() >= MAX_WRITE_DELAY);
            if self.pending.rows() >= max_rows || waited || stop_seen.is_some() {
                self.write(report, shutdown);
            }
        }
        self.write(report, shutdown);
    }

    /// Writes what is pending. Rows that cannot be written stay due.
    fn write(&mut self, report: &mut Report, shutdown: &Shutdown) {
        if self.pending.ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.pending.ids);
        let vectors = std::mem::take(&mut self.pending.vectors);
        self.pending.since = None;
        if let Some(inserted) = self
            .store
            .write(&ids, &vectors, &self.availability, shutdown)
        {
            report.written(ids.len() as u64, inserted);
        }
    }
}

/// Settled batches waiting to be written together.
#[derive(Default)]
struct Pending {
    /// The post ids, in the order of `vectors`.
    ids: Vec<String>,
    /// One vector per id.
    vectors: Vec<Vector>,
    /// When the oldest pending row arrived.
    since: Option<Instant>,
}

impl Pending {
    /// Adds the embedded posts of a batch and counts its rejected ones.
    fn add(&mut self, settled: Settled, report: &mut Report) {
        if !settled.embedded.is_empty() {
            self.since.get_or_insert_with(Instant::now);
        }
        for (post, vector) in settled.embedded {
            self.ids.push(post.id);
            self.vectors.push(Vector::from(vector));
        }
        for (_, err) in settled.rejected {
            report.rejected(err.kind());
        }
    }

    fn rows(&self) -> usize {
        self.ids.len()
    }
}

/// A counting semaphore: bounds the batches alive at once.
struct Permits {
    /// Permits free now.
    free: Mutex<usize>,
    /// Signalled when permits are given back.
    freed: Condvar,
}

impl Permits {
    fn new(count: usize) -> Permits {
        Permits {
            free: Mutex::new(count),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free permit and takes it; `false` if the run started
    /// stopping meanwhile.
    fn acquire(&self, shutdown: &Shutdown) -> bool {
        let mut free = self.free.lock().expect("permit lock");
        while *free == 0 {
            if shutdown.is_stopping() {
                return false;
            }
            free = self.freed.wait_timeout(free, POLL).expect("permit lock").0;
        }
        *free -= 1;
        true
    }

    /// Gives back `count` permits.
    fn release(&self, count: usize) {
        if count > 0 {
            *self.free.lock().expect("permit lock") += count;
            self.freed.notify_all();
        }
    }
}
