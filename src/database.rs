//! Connecting to PostgreSQL, and telling passing database failures (a
//! restart, a failover, a dropped connection) from lasting ones (a missing
//! grant, a wrong schema). This module never runs the job's queries.

use rustls::ClientConfig;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::database_url::DatabaseUrl;
use crate::tls;

/// Opens one connection, with TLS as `sslmode` says.
pub fn connect(url: &DatabaseUrl) -> Result<postgres::Client, postgres::Error> {
    match url.tls() {
        Some(tls) => url
            .config()
            .connect(MakeRustlsConnect::new(ClientConfig::clone(tls))),
        None => url.config().connect(postgres::NoTls),
    }
}

/// A `postgres` error with the server's message when there is one, which the
/// crate's own `Display` leaves out ("db error").
pub fn describe_error(err: &postgres::Error) -> String {
    if let Some(verification) = tls::describe_verification(err) {
        return verification;
    }
    match err.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => err.to_string(),
    }
}

/// Whether trying again, on a new connection if need be, may succeed.
pub fn is_transient(err: &postgres::Error) -> bool {
    if tls::describe_verification(err).is_some() {
        return false;
    }
    let Some(db) = err.as_db_error() else {
        // No answer from the server: the connection broke or never opened.
        return true;
    };
    let code = db.code().code();
    // 08: connection exceptions; 57P01-57P03: shutdown, crash, starting up;
    // 53300: too many connections; 40001, 40P01: serialisation and deadlock.
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
        )
}
