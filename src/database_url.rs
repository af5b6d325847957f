//! `DATABASE_URL` as the old job's users wrote it, turned into a connection
//! configuration for the `postgres` crate.
//!
//! The old job took SQLAlchemy URLs (`postgresql+asyncpg://…`), so any
//! `+driver` suffix is dropped, and asyncpg's own query options are
//! translated or dropped. The URL carries a password: this module is the only
//! place that sees it, and nothing it returns for display contains it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::tls::{self, SslMode};

/// A validated database target. Its `Debug` and `Display` show the target
/// without the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The configuration the `postgres` crate connects with.
    config: postgres::Config,
    /// The TLS configuration, `None` for `sslmode=disable`.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `user@host:port/dbname sslmode=…`, safe to log.
    display: String,
}

/// asyncpg and SQLAlchemy options that mean nothing to libpq. They only
/// tune asyncpg's statement cache, which this job does not have.
const DROPPED_OPTIONS: [&str; 2] = ["prepared_statement_cache_size", "statement_cache_size"];

/// The TLS options, which this job handles itself (the `postgres` crate
/// knows neither `verify-ca`, `verify-full` nor `sslrootcert`).
#[derive(Default)]
struct TlsOptions {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl DatabaseUrl {
    /// Parses a URL or a `key=value` string. The error text never contains
    /// the input, which may hold a password.
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let text = text.trim();
        let (libpq, options) = if text.contains("://") {
            from_url(text)?
        } else {
            from_pairs(text)?
        };
        let mut config = postgres::Config::from_str(&libpq)
            .map_err(|err| format!("cannot be parsed as a PostgreSQL URL: {err}"))?;

        detect_dead_connections(&mut config);

        let mode = SslMode::parse(options.sslmode.as_deref().unwrap_or("prefer"))?;
        config.ssl_mode(mode.negotiation());
        let tls = tls::client_config(mode, options.sslrootcert.as_deref())?.map(Arc::new);
        let display = format!(
            "{} sslmode={}",
            describe(&config),
            options.sslmode.as_deref().unwrap_or("prefer")
        );
        Ok(DatabaseUrl {
            config,
            tls,
            display,
        })
    }

    /// The configuration to connect with.
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// The TLS configuration, if TLS may be used.
    pub fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
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

/// Makes a dead or half-open connection (a failover, a cut network) fail in
/// about a minute instead of blocking a read or a write for hours, which
/// neither a signal nor `MAX_RUNTIME` could end. Values written in the URL
/// are kept. TCP keepalives find a silent server; the user timeout finds
/// one that stops acknowledging what is sent.
fn detect_dead_connections(config: &mut postgres::Config) {
    use std::time::Duration;

    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(30));
    }
    // The `postgres` crate's default idle time before the first probe.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(10));
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_secs(60));
    }
}

/// A URL with its scheme made `postgresql://`, asyncpg's options made
/// libpq's, and the TLS options taken out.
fn from_url(text: &str) -> Result<(String, TlsOptions), String> {
    let (scheme, rest) = text.split_once("://").expect("the caller saw ://");

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

    // Step 2: the query's options, sorted out.
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut options = TlsOptions::default();
    let mut kept = Vec::new();
    let mut port = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" | "ssl" => options.sslmode = Some(percent_decode(value)?),
            "sslrootcert" => options.sslrootcert = Some(percent_decode(value)?),
            "port" => port = Some(value),
            key if DROPPED_OPTIONS.contains(&key) => {}
            _ => kept.push(pair.to_string()),
        }
    }

    // Step 3: a port in the query. The `postgres` crate gives every host of
    // the authority a port of its own (5432 when none is written), so the
    // query's port goes onto those hosts; with no host there (a socket
    // directory in `host=`), it stays in the query.
    let (authority, path) = location.split_once('/').unwrap_or((location, ""));
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let location = match port {
        Some(port) if !hosts.is_empty() && !hosts.contains([':', '[']) => {
            let hosts: Vec<String> = hosts
                .split(',')
                .map(|host| format!("{host}:{port}"))
                .collect();
            format!("{user}{}/{path}", hosts.join(","))
        }
        Some(port) => {
            kept.push(format!("port={port}"));
            location.to_string()
        }
        None => location.to_string(),
    };

    let mut url = format!("postgresql://{location}");
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    Ok((url, options))
}

/// A libpq `key=value` string with the TLS options taken out.
fn from_pairs(text: &str) -> Result<(String, TlsOptions), String> {
    let mut options = TlsOptions::default();
    let mut kept = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        // A key, `=` with optional spaces around it, then a value that is
        // either bare or single-quoted with backslash escapes.
        let (key, after) = rest
            .split_once('=')
            .ok_or("expected postgresql://… or key=value pairs")?;
        let key = key.trim();
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((i, '\'')) => break i + 1,
                    Some((_, c)) => value.push(c),
                    None => return Err("a quoted value is not closed".to_string()),
                }
            };
            (value, &quoted[end..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        match key {
            "sslmode" => options.sslmode = Some(value),
            "sslrootcert" => options.sslrootcert = Some(value),
            _ => kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
        rest = after.trim_start();
    }
    Ok((kept.join(" "), options))
}

/// Decodes `%XX` escapes, as URLs write special characters.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("a % escape is cut short")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a % escape is not hexadecimal")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a % escape is not UTF-8".to_string())
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
            assert_eq!(
                parsed.to_string(),
                "app@db:5433/posts sslmode=prefer",
                "{url}"
            );
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
        assert!(parsed.tls().is_some());
        let parsed = DatabaseUrl::parse("postgresql://a@h/d?sslmode=disable").unwrap();
        assert!(parsed.tls().is_none());
    }

    #[test]
    fn key_value_strings_keep_quotes_and_lose_tls_options() {
        let parsed = DatabaseUrl::parse(
            "host=/cloudsql/proj:europe-west1:db user=job password='a \\'b\\' c' dbname = posts sslmode=require",
        )
        .unwrap();
        assert_eq!(parsed.config().get_password(), Some(&b"a 'b' c"[..]));
        assert_eq!(parsed.config().get_dbname(), Some("posts"));
        assert_eq!(
            parsed.to_string(),
            "job@/cloudsql/proj:europe-west1:db/posts sslmode=require"
        );
    }

    #[test]
    fn percent_encoded_credentials_and_query_port_are_read() {
        let parsed =
            DatabaseUrl::parse("postgresql://us%40er:p%40ss%3Aw%2Frd%3F@db/posts?port=6432")
                .unwrap();
        assert_eq!(parsed.config().get_user(), Some("us@er"));
        assert_eq!(parsed.config().get_password(), Some(&b"p@ss:w/rd?"[..]));
        assert_eq!(parsed.config().get_ports(), &[6432]);
    }

    #[test]
    fn dead_connections_are_detected_unless_the_url_says_otherwise() {
        let parsed = DatabaseUrl::parse("postgresql://a@h/d").unwrap();
        assert_eq!(
            parsed.config().get_connect_timeout(),
            Some(&std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parsed.config().get_keepalives_idle(),
            std::time::Duration::from_secs(30)
        );
        let parsed = DatabaseUrl::parse("postgresql://a@h/d?connect_timeout=5").unwrap();
        assert_eq!(
            parsed.config().get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(DatabaseUrl::parse("mysql://a@h/d").is_err());
        assert!(DatabaseUrl::parse("just words").is_err());
    }
}
