//! The pipeline: due posts stream from the database, go to the API in
//! batches, several at once, and their vectors are written as they arrive.
//!
//! ```text
//!  reader thread ──batch──▶ rayon pool (CONCURRENCY threads) ──vectors──▶ writer (this thread)
//!   (reading conn)            one API call per batch                      (writing conn)
//! ```
//!
//! Memory is bounded by permits: the reader takes one before it sends a batch
//! off and the writer gives it back once the batch is written or counted as
//! failed, so at most `2 × CONCURRENCY` batches exist at any time, however
//! large the backlog. The writer writes whatever has arrived, in arrival
//! order, so a slow batch never holds back faster ones. No write transaction
//! is open while the API works: a write starts only once its vectors are in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use pgvector::Vector;

use crate::api::{ApiClient, ApiError};
use crate::config::Settings;
use crate::posts::{self, Post};
use crate::report::Report;
use crate::store::{self, Store};

/// The most rows put in one write. Several batches that arrive together
/// share one round trip and one transaction; more than this gains nothing
/// and delays the progress count.
const MAX_ROWS_PER_WRITE: usize = 1000;

/// A batch back from the API.
struct Answered {
    /// The posts sent, in order.
    posts: Vec<Post>,
    /// Their vectors, in the same order, or why there are none.
    vectors: Result<Vec<Vec<f32>>, ApiError>,
}

/// What the reader tells the writer.
enum Message {
    /// The number of due posts, known with the first row.
    Due(u64),
    /// A batch the API has answered.
    Answered(Answered),
    /// The reading failed; what was read is still written.
    ReadFailed(String),
}

/// Runs the job over the due posts of the shard and returns its report.
pub fn run(settings: &Settings, reader: postgres::Client, store: Store, api: ApiClient) -> Report {
    let api = Arc::new(api);
    let permits = Permits::new(2 * settings.concurrency);
    let stop = AtomicBool::new(false);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.concurrency)
        .thread_name(|i| format!("api-{i}"))
        .build()
        .expect("the API threads can be started");
    let (sender, receiver) = mpsc::channel();

    let mut report = Report::new();
    std::thread::scope(|scope| {
        scope.spawn(|| read_and_send(settings, reader, &pool, &api, sender, &permits, &stop));
        write_answers(settings, receiver, store, &permits, &stop, &mut report);
    });
    report
}

/// The reader: streams the due posts, cuts them into batches and hands each
/// to the pool. Ends when the posts run out or `stop` is set.
fn read_and_send(
    settings: &Settings,
    mut reader: postgres::Client,
    pool: &rayon::ThreadPool,
    api: &Arc<ApiClient>,
    sender: Sender<Message>,
    permits: &Permits,
    stop: &AtomicBool,
) {
    let batch_size = settings.batch_size;
    let mut batch = Vec::with_capacity(batch_size);
    let mut told_due = false;

    // Hands a full batch to the pool once a permit is free.
    let send_batch = |batch: Vec<Post>| {
        permits.acquire();
        let api = Arc::clone(api);
        let sender = sender.clone();
        pool.spawn(move || {
            let vectors = api.embed(&batch);
            // The writer only hangs up after every sender is gone.
            let _ = sender.send(Message::Answered(Answered {
                posts: batch,
                vectors,
            }));
        });
    };

    let read = posts::for_each_due_post(&mut reader, &settings.shard, |post, due| {
        if !told_due {
            let _ = sender.send(Message::Due(due));
            told_due = true;
        }
        batch.push(post);
        if batch.len() == batch_size {
            send_batch(std::mem::replace(
                &mut batch,
                Vec::with_capacity(batch_size),
            ));
        }
        !stop.load(Ordering::Relaxed)
    });
    if !batch.is_empty() && !stop.load(Ordering::Relaxed) {
        send_batch(batch);
    }
    if let Err(err) = read {
        let _ = sender.send(Message::ReadFailed(store::describe_error(&err)));
    }
}

/// The writer: writes each answered batch as it arrives, counts failures,
/// logs progress. Returns once the reader and every API call are done.
fn write_answers(
    settings: &Settings,
    receiver: Receiver<Message>,
    mut store: Store,
    permits: &Permits,
    stop: &AtomicBool,
    report: &mut Report,
) {
    let mut next_progress = Instant::now() + settings.progress_interval;
    let mut pending = Pending::default();

    loop {
        // Step 1: wait for the next message, logging progress on time.
        let message =
            match receiver.recv_timeout(next_progress.saturating_duration_since(Instant::now())) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
        if Instant::now() >= next_progress {
            report.log_progress();
            next_progress = Instant::now() + settings.progress_interval;
        }

        // Step 2: take it and whatever else has already arrived.
        let mut next = message;
        while let Some(message) = next {
            match message {
                Message::Due(due) => {
                    report.set_due(due);
                    log::info!("{due} posts due in shard {}", settings.shard);
                }
                Message::ReadFailed(why) => {
                    report.stop(format!("reading the due posts failed: {why}"));
                    stop.store(true, Ordering::Relaxed);
                }
                Message::Answered(answered) => pending.add(answered, report),
            }
            next = if pending.rows() >= MAX_ROWS_PER_WRITE {
                None
            } else {
                receiver.try_recv().ok()
            };
        }

        // Step 3: write it in one transaction, then free its permits.
        pending.write(&mut store, report, stop);
        permits.release(pending.take_batches());
    }
}

/// Answered batches waiting to be written together.
#[derive(Default)]
struct Pending {
    /// The post ids, in the order of `vectors`.
    ids: Vec<String>,
    /// One vector per id.
    vectors: Vec<Vector>,
    /// Batches taken since the last write, failed ones included.
    batches: usize,
}

impl Pending {
    /// Adds an answered batch, or counts it as failed.
    fn add(&mut self, answered: Answered, report: &mut Report) {
        self.batches += 1;
        match answered.vectors {
            Ok(vectors) => {
                self.ids
                    .extend(answered.posts.into_iter().map(|post| post.id));
                self.vectors.extend(vectors.into_iter().map(Vector::from));
            }
            Err(err) => {
                log::warn!("batch of {} failed: {err}", describe_batch(&answered.posts));
                report.failed(answered.posts.len() as u64, err.kind());
            }
        }
    }

    fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Writes the rows and counts them. A failed write loses nothing: its
    /// posts stay due and are counted as failed.
    fn write(&mut self, store: &mut Store, report: &mut Report, stop: &AtomicBool) {
        if self.ids.is_empty() {
            return;
        }
        let posts = self.ids.len() as u64;
        let ids = std::mem::take(&mut self.ids);
        let vectors = std::mem::take(&mut self.vectors);
        match store.write(ids, vectors) {
            Ok(inserted) => report.written(posts, inserted),
            Err(err) => {
                log::error!(
                    "writing {posts} vectors failed: {}",
                    store::describe_error(&err)
                );
                report.failed(posts, "database write".to_string());
                if store.is_closed() {
                    report.stop("the database connection was lost".to_string());
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// The number of batches settled since the last call.
    fn take_batches(&mut self) -> usize {
        std::mem::take(&mut self.batches)
    }
}

/// `12 posts (17912345678901234 … 17912345678905678)`, for a log line.
fn describe_batch(posts: &[Post]) -> String {
    match (posts.first(), posts.last()) {
        (Some(first), Some(last)) if posts.len() > 1 => {
            format!("{} posts ({} … {})", posts.len(), first.id, last.id)
        }
        (Some(only), _) => format!("1 post ({})", only.id),
        _ => "0 posts".to_string(),
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

    /// Waits for a free permit and takes it.
    fn acquire(&self) {
        let mut free = self.free.lock().expect("permit lock");
        while *free == 0 {
            free = self.freed.wait(free).expect("permit lock");
        }
        *free -= 1;
    }

    /// Gives back `count` permits.
    fn release(&self, count: usize) {
        if count > 0 {
            *self.free.lock().expect("permit lock") += count;
            self.freed.notify_all();
        }
    }
}
