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
//! - `store`: writing the vectors;
//! - `pipeline`: reading, calling and writing at the same time;
//! - `report`: progress, summary and exit status.

mod api;
mod config;
mod database_url;
mod pipeline;
mod posts;
mod report;
mod shard;
mod store;

use std::process::ExitCode;

use config::{Command, Settings};
use report::ExitStatus;

fn main() -> ExitCode {
    init_logging();
    let status = match config::from_process() {
        Ok(Command::Help) => {
            print!("{}", config::help_text());
            ExitStatus::Done
        }
        Ok(Command::Version) => {
            println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
            ExitStatus::Done
        }
        Ok(Command::Run(settings)) => run(&settings),
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
        "starting: shard {}, database {}, api {}, dimension {}, batch size {}, concurrency {}",
        settings.shard,
        settings.database_url,
        redact_url(&settings.api_url),
        settings.dimension,
        settings.batch_size,
        settings.concurrency,
    );

    // Step 1: the writing connection, and the column it writes into.
    let writer = match connect(settings) {
        Ok(client) => client,
        Err(status) => return status,
    };
    let store = match store::Store::new(writer, settings.dimension) {
        Ok(store) => store,
        Err(err @ store::SetupError::Database(_)) => {
            log::error!("cannot check the database: {err}");
            return ExitStatus::WorkRemains;
        }
        Err(err) => {
            log::error!("database setup: {err}");
            return ExitStatus::BadSetup;
        }
    };

    // Step 2: the API's health, a warning only, as in the old job: a down API
    // shows up as failed batches, and a rerun will pick them up.
    let api = api::ApiClient::new(settings);
    match api.health() {
        Ok(model) => log::info!("api is healthy, model {model}"),
        Err(err) => log::warn!("api health check failed: {err}"),
    }

    // Step 3: the reading connection, then the pipeline.
    let reader = match connect(settings) {
        Ok(client) => client,
        Err(status) => return status,
    };
    let report = pipeline::run(settings, reader, store, api);
    report.finish()
}

/// Opens one connection, logging why it failed. A connection failure is
/// transient as far as the job can tell: a retry may succeed.
fn connect(settings: &Settings) -> Result<postgres::Client, ExitStatus> {
    settings
        .database_url
        .config()
        .connect(postgres::NoTls)
        .map_err(|err| {
            log::error!(
                "cannot connect to {}: {}",
                settings.database_url,
                store::describe_error(&err)
            );
            ExitStatus::WorkRemains
        })
}

/// A URL without its user information and query, which can hold secrets.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{rest}")
}

/// Logs to stderr, `info` and up unless `RUST_LOG` says otherwise.
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
}
