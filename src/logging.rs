//! Log lines: plain and readable on a terminal, or one JSON object a line
//! for Cloud Logging when `CLOUD_RUN_JOB` is set or `LOG_FORMAT=json`.
//!
//! Events carry their numbers as `log` key-values (`done = 5, due = 10;`):
//! the plain format shows the message, which already says them in words,
//! and the JSON format adds them as fields, with `severity` in Cloud
//! Logging's names and the task's place in the execution, so operators can
//! filter and chart. `RUST_LOG` sets the level either way (default `info`);
//! the libraries the job uses never log below warnings.
//! Nothing here ever sees a secret: callers log only redacted values.

use std::io::Write;

use log::kv::{self, Key, Value, VisitSource};
use serde_json::{Map, Value as Json};

/// Where the task stands in its execution, from the scheduler's variables.
fn execution_fields() -> Map<String, Json> {
    let mut fields = Map::new();
    let number = |vars: &[&str]| {
        vars.iter()
            .find_map(|var| std::env::var(var).ok()?.trim().parse::<u64>().ok())
    };
    if let Some(index) = number(&["CLOUD_RUN_TASK_INDEX", "JOB_COMPLETION_INDEX", "TASK_INDEX"]) {
        fields.insert("task_index".into(), index.into());
    }
    if let Some(count) = number(&["CLOUD_RUN_TASK_COUNT", "TASK_COUNT"]) {
        fields.insert("task_count".into(), count.into());
    }
    if let Some(attempt) = number(&["CLOUD_RUN_TASK_ATTEMPT"]) {
        fields.insert("task_attempt".into(), attempt.into());
    }
    if let Ok(execution) = std::env::var("CLOUD_RUN_EXECUTION") {
        fields.insert("execution".into(), execution.into());
    }
    fields
}

/// Whether lines should be JSON.
fn wants_json() -> bool {
    match std::env::var("LOG_FORMAT") {
        Ok(format) => format.eq_ignore_ascii_case("json"),
        Err(_) => std::env::var_os("CLOUD_RUN_JOB").is_some(),
    }
}

/// Cloud Logging's name for a level.
fn severity(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARNING",
        log::Level::Info => "INFO",
        log::Level::Debug | log::Level::Trace => "DEBUG",
    }
}

/// Collects an event's key-values into JSON fields.
struct Fields<'a>(&'a mut Map<String, Json>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let json = serde_json::to_value(&value).unwrap_or(Json::Null);
        self.0.insert(key.as_str().to_string(), json);
        Ok(())
    }
}

/// Starts logging to stderr in the format the environment asks for.
pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if wants_json() {
        let context = execution_fields();
        builder.format(move |buf, record| {
            let mut line = Map::new();
            line.insert("severity".into(), severity(record.level()).into());
            line.insert("message".into(), record.args().to_string().into());
            line.insert("time".into(), buf.timestamp_millis().to_string().into());
            line.extend(context.clone());
            let _ = record.key_values().visit(&mut Fields(&mut line));
            writeln!(buf, "{}", Json::Object(line))
        });
    } else {
        builder.format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                buf.timestamp(),
                record.level(),
                record.args()
            )
        });
    }
    // Dependencies log requests, headers included, at debug and trace:
    // whatever RUST_LOG asks, they say no more than warnings, so that no
    // token or password can reach a log line through them.
    for module in [
        "ureq",
        "ureq_proto",
        "rustls",
        "tokio_postgres",
        "postgres",
        "tokio_postgres_rustls",
        "tokio_rustls",
    ] {
        builder.filter_module(module, log::LevelFilter::Warn);
    }
    builder.init();
}
