//! The job's settings: read from the environment (the old Python job's
//! contract) and from command-line flags, which win over the environment.
//!
//! Everything is validated here, before the job opens a connection or sends a
//! request, so that a bad value stops the job with one line naming the
//! variable. This module never connects to anything.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::database_url::DatabaseUrl;
use crate::shard::Shard;

/// The vector widths the embedding API offers (Matryoshka truncations of its
/// native 2048).
pub const DIMENSIONS: [usize; 6] = [64, 128, 256, 512, 1024, 2048];

/// The largest batch the job will send. The API embeds the posts of a request
/// one after another, so a larger batch only makes one request slower and
/// makes a failure cost more posts.
const MAX_BATCH_SIZE: usize = 1000;

/// Everything the job needs to know before it starts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the posts and the vectors live.
    pub database_url: DatabaseUrl,
    /// Base URL of the embedding API, without the endpoint path.
    pub api_url: String,
    /// Width of the vectors asked from the API and stored.
    pub dimension: usize,
    /// Posts per API request.
    pub batch_size: usize,
    /// Batches in the API at the same time.
    pub concurrency: usize,
    /// Which part of the due posts this task takes.
    pub shard: Shard,
    /// How long a connection to the API may take to open.
    pub connect_timeout: Duration,
    /// How long one API request may take, answer included.
    pub request_timeout: Duration,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// How long the API or the database may fail before the run stops.
    pub outage_limit: Duration,
    /// When the run stops by itself, if it should.
    pub max_runtime: Option<Duration>,
    /// The exit status when the only problem is posts rejected on their own.
    pub rejected_posts_status: u8,
    /// `EMBEDDING_API_TOKEN`, sent as a bearer token.
    pub api_token: Option<Secret>,
    /// `EMBEDDING_API_HEADER_<NAME>` variables: extra headers, such as an
    /// access proxy's service token.
    pub api_headers: Vec<(String, Secret)>,
}

/// A value that must never be shown: its `Debug` hides it, and it has no
/// `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// The prefix of the variables that add a header to every API request:
/// `EMBEDDING_API_HEADER_CF_ACCESS_CLIENT_ID` sends `cf-access-client-id`.
const HEADER_PREFIX: &str = "EMBEDDING_API_HEADER_";

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the job with these settings, in this mode.
    Run(Box<Settings>, Mode),
    /// Print the help text and stop.
    Help,
    /// Print the version and stop.
    Version,
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Embed the due posts of the shard.
    Embed,
    /// Count the due posts of every shard; no API call, no write.
    DryRun,
    /// Check the database and the API and report, as a table.
    Check,
}

/// A setting that is missing or cannot be used, named so the user can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable (or flag) at fault.
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// One setting: its environment variable, its flag, its default and what it
/// means. The table drives both parsing and `--help`, so they cannot drift.
struct Spec {
    var: &'static str,
    /// Other variables read, in order, when `var` is not set: the names
    /// other schedulers give the same thing.
    aliases: &'static [&'static str],
    flag: &'static str,
    default: Option<&'static str>,
    help: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        var: "DATABASE_URL",
        aliases: &[],
        flag: "--database-url",
        default: None,
        help: "PostgreSQL URL (postgresql://, postgres://, postgresql+asyncpg://, or key=value)",
    },
    Spec {
        var: "EMBEDDING_API_URL",
        aliases: &[],
        flag: "--api-url",
        default: Some("https://embedding.views.fr"),
        help: "base URL of the embedding API",
    },
    Spec {
        var: "EMBEDDING_DIMENSION",
        aliases: &[],
        flag: "--dimension",
        default: Some("512"),
        help: "vector width: 64, 128, 256, 512, 1024 or 2048; must match the column",
    },
    Spec {
        var: "BATCH_SIZE",
        aliases: &[],
        flag: "--batch-size",
        default: Some("10"),
        help: "posts per API request (1 to 1000)",
    },
    Spec {
        var: "CONCURRENCY",
        aliases: &[],
        flag: "--concurrency",
        default: Some("4"),
        help: "batches in the API at once, per task",
    },
    Spec {
        var: "CLOUD_RUN_TASK_INDEX",
        aliases: &["JOB_COMPLETION_INDEX", "TASK_INDEX"],
        flag: "--task-index",
        default: Some("0"),
        help: "this task's shard, 0 to count - 1 (also JOB_COMPLETION_INDEX, TASK_INDEX)",
    },
    Spec {
        var: "CLOUD_RUN_TASK_COUNT",
        aliases: &["TASK_COUNT"],
        flag: "--task-count",
        default: Some("1"),
        help: "number of tasks sharing the posts (also TASK_COUNT)",
    },
    Spec {
        var: "API_CONNECT_TIMEOUT",
        aliases: &[],
        flag: "--api-connect-timeout",
        default: Some("10s"),
        help: "time to open a connection to the API",
    },
    Spec {
        var: "API_REQUEST_TIMEOUT",
        aliases: &[],
        flag: "--api-request-timeout",
        default: Some("600s"),
        help: "time one API request may take (the old job allowed 600 s)",
    },
    Spec {
        var: "OUTAGE_LIMIT",
        aliases: &[],
        flag: "--outage-limit",
        default: Some("5m"),
        help: "how long the API or the database may fail before the run stops",
    },
    Spec {
        var: "MAX_RUNTIME",
        aliases: &[],
        flag: "--max-runtime",
        default: Some("none"),
        help: "stop cleanly after this long, e.g. 55m (below the task timeout)",
    },
    Spec {
        var: "REJECTED_POSTS_STATUS",
        aliases: &[],
        flag: "--rejected-posts-status",
        default: Some("3"),
        help: "exit status when only posts rejected on their own remain (0 on Cloud Run)",
    },
    Spec {
        var: "PROGRESS_INTERVAL",
        aliases: &[],
        flag: "--progress-interval",
        default: Some("10s"),
        help: "time between progress lines",
    },
];

/// Reads the command line and the process environment.
pub fn from_process() -> Result<Command, ConfigError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: HashMap<String, String> = std::env::vars().collect();
    parse(&args, &env)
}

/// Turns arguments and environment into a command. Kept apart from the
/// process so tests can feed it anything.
pub fn parse(args: &[String], env: &HashMap<String, String>) -> Result<Command, ConfigError> {
    // Step 1: the flags, each `--flag value` or `--flag=value`.
    let mut flags: HashMap<&'static str, String> = HashMap::new();
    let mut mode = Mode::Embed;
    let mut rest = args.iter().peekable();
    if rest.peek().is_some_and(|first| first.as_str() == "check") {
        mode = Mode::Check;
        rest.next();
    }
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--dry-run" if mode == Mode::Embed => {
                mode = Mode::DryRun;
                continue;
            }
            _ => {}
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let spec = SPECS
            .iter()
            .find(|spec| spec.flag == name)
            .ok_or_else(|| ConfigError {
                setting: name.to_string(),
                problem: "unknown argument (see --help)".to_string(),
            })?;
        let value = match inline {
            Some(value) => value,
            None => rest.next().cloned().ok_or_else(|| ConfigError {
                setting: spec.flag.to_string(),
                problem: "needs a value".to_string(),
            })?,
        };
        flags.insert(spec.var, value);
    }

    // Step 2: each setting from its flag, else its variable, else its default.
    let lookup = Lookup { flags, env };
    let database_url = lookup.required("DATABASE_URL")?;
    let database_url = DatabaseUrl::parse(&database_url).map_err(|problem| ConfigError {
        setting: "DATABASE_URL".to_string(),
        problem,
    })?;
    let api_url = lookup.api_url()?;
    let dimension = lookup.whole_number("EMBEDDING_DIMENSION")?;
    if !DIMENSIONS.contains(&dimension) {
        return Err(lookup.invalid(
            "EMBEDDING_DIMENSION",
            "the API offers 64, 128, 256, 512, 1024 or 2048",
        ));
    }
    let batch_size = lookup.positive("BATCH_SIZE")?;
    if batch_size > MAX_BATCH_SIZE {
        return Err(lookup.invalid("BATCH_SIZE", "must be at most 1000"));
    }
    let concurrency = lookup.positive("CONCURRENCY")?;
    let task_index = lookup.whole_number("CLOUD_RUN_TASK_INDEX")?;
    let task_count = lookup.positive("CLOUD_RUN_TASK_COUNT")?;
    let shard = Shard::new(task_index, task_count).ok_or_else(|| {
        lookup.invalid(
            "CLOUD_RUN_TASK_INDEX",
            &format!("must be below CLOUD_RUN_TASK_COUNT ({task_count})"),
        )
    })?;

    // Step 3: the API's secrets, from the environment only: a flag would
    // show in the process list.
    let api_token = env
        .get("EMBEDDING_API_TOKEN")
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret(t.trim().to_string()));
    let mut api_headers = Vec::new();
    for (var, value) in env {
        if let Some(name) = var.strip_prefix(HEADER_PREFIX) {
            let name = name.to_ascii_lowercase().replace('_', "-");
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid || value.contains(['\r', '\n']) {
                return Err(ConfigError {
                    setting: var.clone(),
                    problem: "not a usable header name or value".to_string(),
                });
            }
            api_headers.push((name, Secret(value.clone())));
        }
    }
    api_headers.sort_by(|a, b| a.0.cmp(&b.0));

    let settings = Settings {
        database_url,
        api_url,
        dimension,
        batch_size,
        concurrency,
        shard,
        connect_timeout: lookup.duration("API_CONNECT_TIMEOUT")?,
        request_timeout: lookup.duration("API_REQUEST_TIMEOUT")?,
        progress_interval: lookup.duration("PROGRESS_INTERVAL")?,
        outage_limit: lookup.duration("OUTAGE_LIMIT")?,
        max_runtime: match lookup.required("MAX_RUNTIME")?.trim() {
            "none" => None,
            _ => Some(lookup.duration("MAX_RUNTIME")?),
        },
        rejected_posts_status: match lookup.whole_number("REJECTED_POSTS_STATUS")? {
            status @ 0..=125 => status as u8,
            _ => return Err(lookup.invalid("REJECTED_POSTS_STATUS", "must be from 0 to 125")),
        },
        api_token,
        api_headers,
    };
    Ok(Command::Run(Box::new(settings), mode))
}

/// Where a setting's raw text comes from, in order of precedence.
struct Lookup<'a> {
    flags: HashMap<&'static str, String>,
    env: &'a HashMap<String, String>,
}

impl Lookup<'_> {
    /// The raw text of a setting: flag, then environment, then default. An
    /// empty variable counts as unset, as it does for most shells' users.
    fn raw(&self, var: &str) -> Option<String> {
        let (_, value) = self.source(var)?;
        Some(value)
    }

    /// The name a setting's value came by (flag, variable or alias) and
    /// the value; the default comes by the variable's own name.
    fn source(&self, var: &str) -> Option<(&'static str, String)> {
        let spec = spec(var);
        if let Some(value) = self.flags.get(var) {
            return Some((spec.flag, value.clone()));
        }
        for name in std::iter::once(&spec.var).chain(spec.aliases) {
            if let Some(value) = self.env.get(*name).filter(|value| !value.trim().is_empty()) {
                return Some((name, value.clone()));
            }
        }
        spec.default.map(|default| (spec.var, default.to_string()))
    }

    fn required(&self, var: &str) -> Result<String, ConfigError> {
        self.raw(var).ok_or_else(|| ConfigError {
            setting: var.to_string(),
            problem: "is required but not set".to_string(),
        })
    }

    fn whole_number(&self, var: &str) -> Result<usize, ConfigError> {
        let text = self.required(var)?;
        text.trim()
            .parse::<usize>()
            .map_err(|_| self.invalid(var, &format!("expected a whole number, got {:?}", text)))
    }

    fn positive(&self, var: &str) -> Result<usize, ConfigError> {
        match self.whole_number(var)? {
            0 => Err(self.invalid(var, "must be at least 1")),
            n => Ok(n),
        }
    }

    fn duration(&self, var: &str) -> Result<Duration, ConfigError> {
        let text = self.required(var)?;
        parse_duration(&text).ok_or_else(|| {
            self.invalid(
                var,
                &format!("expected a duration such as 90, 90s, 15m or 1h, got {text:?}"),
            )
        })
    }

    fn api_url(&self) -> Result<String, ConfigError> {
        let text = self.required("EMBEDDING_API_URL")?;
        let url = text.trim().trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() => Ok(url.to_string()),
            _ => Err(self.invalid("EMBEDDING_API_URL", "expected an http:// or https:// URL")),
        }
    }

    /// An error naming the setting by the name the user set it with.
    fn invalid(&self, var: &str, problem: &str) -> ConfigError {
        let setting = self.source(var).map_or(var, |(name, _)| name);
        ConfigError {
            setting: setting.to_string(),
            problem: problem.to_string(),
        }
    }
}

/// A positive duration: a number of seconds, or a number with `ms`, `s`,
/// `m` or `h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (seconds > 0.0 && seconds < 1e9).then(|| Duration::from_secs_f64(seconds))
}

fn spec(var: &str) -> &'static Spec {
    SPECS
        .iter()
        .find(|spec| spec.var == var)
        .expect("every setting has a spec")
}

/// The text `--help` prints: every setting with its variable, flag and
/// default.
pub fn help_text() -> String {
    let mut text = format!(
        "{name} {version}\n\
         Embeds the due Instagram posts of one shard through the embedding API and\n\
         stores the vectors in instagram.post_embeddings.\n\n\
         Usage: {name} [check] [--dry-run] [--flag value]...\n\n\
         With no command, embeds the due posts of this task's shard.\n\
         check      checks the database and the API, and reports as a table\n\
         --dry-run  counts the due posts of every shard; no API call, no write\n\n\
         Settings (a flag wins over its environment variable):\n",
        name = env!("CARGO_PKG_NAME"),
        version = env!("CARGO_PKG_VERSION"),
    );
    for spec in SPECS {
        let default = spec.default.unwrap_or("required");
        text.push_str(&format!(
            "  {:<24} {:<22} {}\n  {:<24} {:<22} default: {}\n",
            spec.flag, spec.var, spec.help, "", "", default
        ));
    }
    text.push_str(
        "\nSecrets, from the environment only, never logged:\n\
         \x20 EMBEDDING_API_TOKEN          sent as `Authorization: Bearer …`\n\
         \x20 EMBEDDING_API_HEADER_<NAME>  sent as header <name>, `_` read as `-`\n\
         \x20 HTTPS_PROXY, NO_PROXY        the proxy to reach the API through\n",
    );
    text.push_str(
        "\nExit status: 0 every due post embedded; 1 work remains (a service was down,\n\
         a signal or MAX_RUNTIME stopped the run: run again); 2 bad configuration or\n\
         setup; 3 some posts rejected on their own (REJECTED_POSTS_STATUS).\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn settings(args: &[&str], pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&args, &env(pairs))? {
            Command::Run(settings, _) => Ok(*settings),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_old_job() {
        let s = settings(&[], &[("DATABASE_URL", "postgresql://u@h/db")]).unwrap();
        assert_eq!(s.api_url, "https://embedding.views.fr");
        assert_eq!(s.dimension, 512);
        assert_eq!(s.batch_size, 10);
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.shard, Shard::new(0, 1).unwrap());
        assert_eq!(s.request_timeout, Duration::from_secs(600));
    }

    #[test]
    fn a_flag_wins_over_the_environment() {
        let s = settings(
            &["--batch-size", "50", "--task-count=3"],
            &[("DATABASE_URL", "postgres://h/db"), ("BATCH_SIZE", "20")],
        )
        .unwrap();
        assert_eq!(s.batch_size, 50);
        assert_eq!(s.shard, Shard::new(0, 3).unwrap());
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let base = [("DATABASE_URL", "postgres://h/db")];
        let cases: &[(&str, &str, &str)] = &[
            ("BATCH_SIZE", "ten", "BATCH_SIZE"),
            ("BATCH_SIZE", "0", "BATCH_SIZE"),
            ("BATCH_SIZE", "-3", "BATCH_SIZE"),
            ("EMBEDDING_DIMENSION", "300", "EMBEDDING_DIMENSION"),
            ("CONCURRENCY", "0", "CONCURRENCY"),
            ("CLOUD_RUN_TASK_COUNT", "0", "CLOUD_RUN_TASK_COUNT"),
            ("CLOUD_RUN_TASK_INDEX", "1", "CLOUD_RUN_TASK_INDEX"),
            ("EMBEDDING_API_URL", "ftp://x", "EMBEDDING_API_URL"),
            ("API_REQUEST_TIMEOUT", "0", "API_REQUEST_TIMEOUT"),
            ("OUTAGE_LIMIT", "soon", "OUTAGE_LIMIT"),
            ("MAX_RUNTIME", "5 days", "MAX_RUNTIME"),
            ("REJECTED_POSTS_STATUS", "200", "REJECTED_POSTS_STATUS"),
        ];
        for (var, value, named) in cases {
            let mut pairs = base.to_vec();
            pairs.push((var, value));
            let err = settings(&[], &pairs).unwrap_err();
            assert_eq!(err.setting, *named, "{var}={value}: {err}");
        }
    }

    #[test]
    fn kubernetes_and_generic_task_variables_are_understood() {
        let base = ("DATABASE_URL", "postgres://h/db");
        let s = settings(
            &[],
            &[base, ("JOB_COMPLETION_INDEX", "2"), ("TASK_COUNT", "3")],
        )
        .unwrap();
        assert_eq!(s.shard, Shard::new(2, 3).unwrap());
        let s = settings(
            &[],
            &[
                base,
                ("CLOUD_RUN_TASK_INDEX", "1"),
                ("JOB_COMPLETION_INDEX", "2"),
                ("TASK_COUNT", "3"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.shard,
            Shard::new(1, 3).unwrap(),
            "Cloud Run's variable comes first"
        );
        let err = settings(&[], &[base, ("JOB_COMPLETION_INDEX", "5")]).unwrap_err();
        assert_eq!(err.setting, "JOB_COMPLETION_INDEX");
    }

    #[test]
    fn check_and_dry_run_are_modes() {
        let env = env(&[("DATABASE_URL", "postgres://h/db")]);
        let mode = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            match parse(&args, &env).unwrap() {
                Command::Run(_, mode) => mode,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(mode(&[]), Mode::Embed);
        assert_eq!(mode(&["--dry-run"]), Mode::DryRun);
        assert_eq!(mode(&["check", "--batch-size", "5"]), Mode::Check);
    }

    #[test]
    fn api_secrets_come_from_the_environment_and_stay_hidden() {
        let s = settings(
            &[],
            &[
                ("DATABASE_URL", "postgres://h/db"),
                ("EMBEDDING_API_TOKEN", "tok-123"),
                ("EMBEDDING_API_HEADER_CF_ACCESS_CLIENT_SECRET", "hdr-456"),
            ],
        )
        .unwrap();
        assert_eq!(s.api_token.as_ref().map(Secret::expose), Some("tok-123"));
        assert_eq!(s.api_headers[0].0, "cf-access-client-secret");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("tok-123") && !shown.contains("hdr-456"),
            "{shown}"
        );
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("-3s"), None);
        assert_eq!(parse_duration("3 weeks"), None);
    }

    #[test]
    fn max_runtime_is_off_unless_set() {
        let s = settings(&[], &[("DATABASE_URL", "postgres://h/db")]).unwrap();
        assert_eq!(s.max_runtime, None);
        let s = settings(
            &[],
            &[("DATABASE_URL", "postgres://h/db"), ("MAX_RUNTIME", "55m")],
        )
        .unwrap();
        assert_eq!(s.max_runtime, Some(Duration::from_secs(3300)));
    }

    #[test]
    fn a_missing_database_url_is_named() {
        let err = settings(&[], &[]).unwrap_err();
        assert_eq!(err.setting, "DATABASE_URL");
    }

    #[test]
    fn help_lists_every_variable_and_default() {
        let help = help_text();
        for spec in SPECS {
            assert!(help.contains(spec.var), "{} missing from --help", spec.var);
            assert!(
                help.contains(spec.flag),
                "{} missing from --help",
                spec.flag
            );
            if let Some(default) = spec.default {
                assert!(help.contains(default), "default of {} missing", spec.var);
            }
        }
    }
}
