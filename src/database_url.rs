//! `DATABASE_URL` as the old job's users wrote it, turned into a connection
//! configuration for the `postgres` crate.
//!
//! The old job took SQLAlchemy URLs (`postgresql+asyncpg://…`), so any
//! `+driver` suffix is dropped, and asyncpg's own query options are
//! translated or dropped. The URL carries a password: this module is the only
//! place that sees it, and nothing it returns for display contains it.

use std::fmt;
use std::str::FromStr;

/// A validated database target. Its `Debug` and `Display` show the target
/// without the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The configuration the `postgres` crate connects with.
    config: postgres::Config,
    /// `user@host:port/dbname`, safe to log.
    display: String,
}

/// asyncpg and SQLAlchemy options that mean nothing to libpq. They only
/// tune asyncpg's statement cache, which this job does not have.
const DROPPED_OPTIONS: [&str; 2] = ["prepared_statement_cache_size", "statement_cache_size"];

impl DatabaseUrl {
    /// Parses a URL or a `key=value` string. The error text never contains
    /// the input, which may hold a password.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        let normalised = normalise(text)?;
        let config = postgres::Config::from_str(&normalised)
            .map_err(|err| format!("cannot be parsed as a PostgreSQL URL: {err}"))?;
        let display = describe(&config);
        Ok(DatabaseUrl { config, display })
    }

    /// The configuration to connect with.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.display)
    }
}

/// Rewrites the scheme to `postgresql://` and asyncpg's options to libpq's.
/// A `key=value` string is left as it is.
fn normalise(text: &str) -> Result<String, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        if text.contains('=') {
            return Ok(text.to_string());
        }
        return Err("expected postgresql://… or key=value pairs".to_string());
    };

    // Step 1: `postgresql+asyncpg`, `postgres`, … all mean PostgreSQL.
    let base = scheme
        .split('+')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if base != "postgresql" && base != "postgres" {
        return Err(format!(
            "unsupported scheme {scheme:?}; expected postgresql://"
        ));
    }

    // Step 2: asyncpg's `ssl=` is libpq's `sslmode=`; its cache options go.
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let mut options = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let key = pair.split('=').next().unwrap_or_default();
        if DROPPED_OPTIONS.contains(&key) {
            continue;
        }
        match pair.strip_prefix("ssl=") {
            Some(mode) => options.push(format!("sslmode={}", asyncpg_ssl_mode(mode))),
            None => options.push(pair.to_string()),
        }
    }

    let mut url = format!("postgresql://{location}");
    if !options.is_empty() {
        url.push('?');
        url.push_str(&options.join("&"));
    }
    Ok(url)
}

/// asyncpg accepts `ssl=true` and `ssl=false` beside libpq's mode names.
fn asyncpg_ssl_mode(mode: &str) -> &str {
    match mode {
        "true" => "require",
        "false" => "disable",
        other => other,
    }
}

/// `user@host:port/dbname` from the parsed configuration, without password.
fn describe(config: &postgres::Config) -> String {
    use postgres::config::Host;

    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    let user = config.get_user().unwrap_or("(default user)");
    let dbname = config.get_dbname().unwrap_or("(default database)");
    format!("{user}@{}/{dbname}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlalchemy_schemes_mean_postgresql() {
        for url in [
            "postgresql+asyncpg://app:s3cret@db:5433/posts",
            "postgresql+psycopg2://app:s3cret@db:5433/posts",
            "postgres://app:s3cret@db:5433/posts",
            "postgresql://app:s3cret@db:5433/posts?prepared_statement_cache_size=0",
        ] {
            let parsed = DatabaseUrl::parse(url).unwrap();
            assert_eq!(parsed.to_string(), "app@db:5433/posts", "{url}");
            assert_eq!(parsed.config().get_password(), Some(&b"s3cret"[..]));
        }
    }

    #[test]
    fn the_password_never_shows() {
        let parsed = DatabaseUrl::parse("postgresql+asyncpg://app:hunter2@db/posts").unwrap();
        assert!(!format!("{parsed} {parsed:?}").contains("hunter2"));
        let err = DatabaseUrl::parse("postgresql://app:hunter2@db:notaport/posts").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn asyncpg_ssl_spelling_becomes_sslmode() {
        let parsed = DatabaseUrl::parse("postgresql+asyncpg://a@h/d?ssl=require").unwrap();
        assert_eq!(
            parsed.config().get_ssl_mode(),
            postgres::config::SslMode::Require
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(DatabaseUrl::parse("mysql://a@h/d").is_err());
        assert!(DatabaseUrl::parse("just words").is_err());
    }
}
