//! `postfinder-embeddings`: embeds the due Instagram posts of one shard
//! through the embedding API and stores the vectors in
//! `instagram.post_embeddings`.
//!
//! `main` reads the settings, runs the job and turns the outcome into an
//! exit status (see `report::ExitStatus`). The job itself:
//!
//! - `config`: the settings, from the environment and flags;
//! - `database_url`: `DATABASE_URL` as the old job took it, password hidden;
//! - `shard`: which task owns which post;
//! - `posts`: which posts are due, and what is sent for each;
//! - `api`: the API client and the checks on its answers;
//! - `batch`: settling one batch: retries, splitting out bad posts;
//! - `retry`: backoff, and when a service counts as down;
//! - `database`: connecting, and which database errors pass;
//! - `store`: writing the vectors;
//! - `pipeline`: reading, calling and writing at the same time;
//! - `shutdown`: stopping early and cleanly (signals, `MAX_RUNTIME`);
//! - `report`: progress, summary and exit status;
//! - `logging`: plain or JSON log lines;
//! - `check`: the `check` preflight.

mod api;
mod batch;
mod check;
mod config;
mod database;
mod database_url;
mod logging;
mod pipeline;
mod posts;
mod report;
mod retry;
mod shard;
mod shutdown;
mod store;
mod tls;

use std::process::ExitCode;

/// The static musl build, which is the one that ships, uses mimalloc. musl's
/// own allocator takes one lock for every allocation, and the job allocates
/// from several threads at once (an answer's body and vectors on each API
/// thread, the write's arrays on the writer): on the 2-core benchmark the
/// musl build ran at 0.84 of the glibc build's posts/s with it, against
/// 0.9+ with mimalloc (README "Performance"). glibc's allocator has
/// per-thread arenas and does not need this, so the default build keeps it.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use config::{Command, Mode, Settings};
use report::ExitStatus;

fn main() -> ExitCode {
    logging::init();
    let status = match config::from_process() {
        Ok(Command::Help) => {
            print!("{}", config::help_text());
            ExitStatus::Done
        }
        Ok(Command::Version) => {
            println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
            ExitStatus::Done
        }
        Ok(Command::Run(settings, Mode::Embed)) => match run(&settings) {
            ExitStatus::PostsRejected => return ExitCode::from(settings.rejected_posts_status),
            status => status,
        },
        Ok(Command::Run(settings, Mode::DryRun)) => dry_run(&settings),
        Ok(Command::Run(settings, Mode::Check)) => {
            if check::run(&settings) {
                ExitStatus::Done
            } else {
                ExitStatus::BadSetup
            }
        }
        Err(err) => {
            log::error!("configuration error: {err}");
            ExitStatus::BadSetup
        }
    };
    ExitCode::from(status as u8)
}

/// Runs the job: checks the database, asks the API's health, then streams
/// the shard through the pipeline.
fn run(settings: &Settings) -> ExitStatus {
    log::info!(
        dimension = settings.dimension, batch_size = settings.batch_size,
        concurrency = settings.concurrency;
        "starting: shard {}, database {}, api {}, dimension {}, batch size {}, concurrency {}",
        settings.shard,
        settings.database_url,
        redact_url(&settings.api_url),
        settings.dimension,
        settings.batch_size,
        settings.concurrency,
    );

    // Step 1: signals, so that even the set-up can be interrupted.
    let shutdown = match shutdown::Shutdown::install(settings.max_runtime) {
        Ok(shutdown) => Arc::new(shutdown),
        Err(err) => {
            log::error!("cannot install the signal handlers: {err}");
            return ExitStatus::WorkRemains;
        }
    };

    // Step 2: the writing connection, and the column it writes into.
    let store = match store::Store::new(&settings.database_url, settings.dimension) {
        Ok(store) => store,
        Err(store::SetupError::Database(err)) => return connection_failed(settings, &err),
        Err(err) => {
            log::error!("database setup: {err}");
            return ExitStatus::BadSetup;
        }
    };

    // Step 3: the API's health, a warning only, as in the old job: a down API
    // is waited for, up to OUTAGE_LIMIT, like any outage.
    let api = api::ApiClient::new(settings);
    match api.health() {
        Ok(model) => log::info!("api is healthy, model {model}"),
        Err(err) => log::warn!("api health check failed: {err}"),
    }

    // Step 4: the reading connection, then the pipeline.
    let reader = match database::connect(&settings.database_url) {
        Ok(client) => client,
        Err(err) => return connection_failed(settings, &err),
    };
    let report = pipeline::run(settings, reader, store, api, shutdown);
    report.finish()
}

/// Counts the due posts of every shard and prints them; no API call, no
/// write.
fn dry_run(settings: &Settings) -> ExitStatus {
    let count = settings.shard.count();
    let mut client = match database::connect(&settings.database_url) {
        Ok(client) => client,
        Err(err) => return connection_failed(settings, &err),
    };
    match posts::count_due_by_shard(&mut client, count) {
        Ok(counts) => {
            println!("task  due posts (of {count} tasks)");
            let mut total = 0;
            for task in 0..count as i64 {
                let due = counts
                    .iter()
                    .find(|(t, _)| *t == task)
                    .map_or(0, |(_, due)| *due);
                total += due;
                println!("{task:>4}  {due}");
            }
            println!(" all  {total}");
            ExitStatus::Done
        }
        Err(err) => {
            log::error!(
                "counting the due posts failed: {}",
                database::describe_error(&err)
            );
            ExitStatus::WorkRemains
        }
    }
}

/// Logs a failed connection and says what it amounts to: work remains if a
/// retry may connect (the server is down or restarting), bad setup if not
/// (a wrong password, a refused certificate, a missing database).
fn connection_failed(settings: &Settings, err: &postgres::Error) -> ExitStatus {
    log::error!(
        "cannot connect to {}: {}",
        settings.database_url,
        database::describe_error(err)
    );
    if database::is_transient(err) {
        ExitStatus::WorkRemains
    } else {
        ExitStatus::BadSetup
    }
}

/// A URL without its user information and query, which can hold secrets.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{rest}")
}
