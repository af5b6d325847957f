//! Writing vectors into `instagram.post_embeddings`.
//!
//! One statement per write, which PostgreSQL runs as one transaction: every
//! post of the batches in it is stored, or none is. Posts that already have
//! an embedding (another task, a rerun, an overlapping run) are left exactly
//! as they are (`ON CONFLICT DO NOTHING`), and so are posts deleted since
//! they were read. This module only ever inserts into that one table; it
//! never updates, deletes, or writes anywhere else.

use std::fmt;

use pgvector::Vector;
use postgres::types::{Kind, ToSql, Type};

use crate::database;
use crate::database_url::DatabaseUrl;
use crate::retry::{self, Availability, Backoff};
use crate::shutdown::{Cause, Shutdown};

/// The writer: one connection, opened again if it breaks, and the `vector`
/// types of its database.
pub struct Store {
    /// Where to connect again.
    url: DatabaseUrl,
    /// The connection the vectors are written on.
    client: postgres::Client,
    /// The `vector[]` type, whose OID differs from database to database.
    vector_array: Type,
}

/// The SQL of a write. The rows travel as two binary arrays; a post that has
/// an embedding already, or no longer exists, is skipped.
const INSERT_SQL: &str = "INSERT INTO instagram.post_embeddings (ig_media_id, embedding) \
                          SELECT u.id, u.embedding \
                          FROM unnest($1::text[], $2::vector[]) AS u(id, embedding) \
                          WHERE EXISTS ( \
                              SELECT 1 FROM instagram.core_posts p WHERE p.ig_media_id = u.id) \
                          ON CONFLICT (ig_media_id) DO NOTHING";

/// The embedding column as the database declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The declared width, or `None` for a `vector` without one.
    pub width: Option<usize>,
    /// The `vector[]` type.
    vector_array: Type,
}

/// Why the database cannot take this job's vectors.
#[derive(Debug)]
pub enum SetupError {
    /// The table or its column is missing, or is not a `vector`.
    Schema(String),
    /// The column's width is not the one asked of the API.
    Width {
        /// The column's declared width.
        column: usize,
        /// `EMBEDDING_DIMENSION`.
        dimension: usize,
    },
    /// The database could not be asked.
    Database(postgres::Error),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Schema(problem) => f.write_str(problem),
            SetupError::Width { column, dimension } => write!(
                f,
                "instagram.post_embeddings.embedding is vector({column}) but \
                 EMBEDDING_DIMENSION is {dimension}; set EMBEDDING_DIMENSION={column} \
                 or migrate the column"
            ),
            SetupError::Database(err) => write!(f, "database: {}", database::describe_error(err)),
        }
    }
}

impl std::error::Error for SetupError {}

/// Reads the embedding column's type and width.
pub fn embedding_column(client: &mut postgres::Client) -> Result<Column, SetupError> {
    let sql = "SELECT t.typname::text, a.atttypmod, t.oid, t.typarray, n.nspname::text \
               FROM pg_attribute a \
               JOIN pg_type t ON t.oid = a.atttypid \
               JOIN pg_namespace n ON n.oid = t.typnamespace \
               WHERE a.attrelid = to_regclass('instagram.post_embeddings') \
                 AND a.attname = 'embedding' AND NOT a.attisdropped";
    let no_params: [(&(dyn ToSql + Sync), Type); 0] = [];
    let rows = client
        .query_typed(sql, &no_params)
        .map_err(SetupError::Database)?;
    let Some(row) = rows.first() else {
        return Err(SetupError::Schema(
            "table instagram.post_embeddings with a column embedding not found \
             (or not readable by this user)"
                .to_string(),
        ));
    };

    let type_name: String = row.get(0);
    if type_name != "vector" {
        return Err(SetupError::Schema(format!(
            "instagram.post_embeddings.embedding is of type {type_name}, expected vector \
             (is pgvector installed?)"
        )));
    }
    let typmod: i32 = row.get(1);
    let schema: String = row.get(4);
    let vector = Type::new(
        "vector".to_string(),
        row.get(2),
        Kind::Simple,
        schema.clone(),
    );
    let vector_array = Type::new(
        "_vector".to_string(),
        row.get(3),
        Kind::Array(vector),
        schema,
    );
    Ok(Column {
        width: usize::try_from(typmod).ok(),
        vector_array,
    })
}

impl Store {
    /// A writer on `client`, once the column is known to take vectors of
    /// `dimension`.
    pub fn new(url: &DatabaseUrl, dimension: usize) -> Result<Store, SetupError> {
        let mut client = database::connect(url).map_err(SetupError::Database)?;
        let column = embedding_column(&mut client)?;
        match column.width {
            Some(width) if width != dimension => Err(SetupError::Width {
                column: width,
                dimension,
            }),
            _ => Ok(Store {
                url: url.clone(),
                client,
                vector_array: column.vector_array,
            }),
        }
    }

    /// Writes the vectors of `ids` in one transaction and returns how many
    /// rows were inserted; the others already had an embedding or are gone.
    ///
    /// A write that fails because the connection broke is tried again on a
    /// new connection until the database has been unavailable for
    /// `OUTAGE_LIMIT`. That is safe even when the first try may have
    /// committed: a second insert of the same rows changes nothing (its
    /// rows are then counted as already embedded rather than embedded). Returns
    /// `None` when the vectors were not written; the run is then stopping,
    /// and the posts stay due for the next run.
    pub fn write(
        &mut self,
        ids: &[String],
        vectors: &[Vector],
        availability: &Availability,
        shutdown: &Shutdown,
    ) -> Option<u64> {
        let mut backoff = Backoff::new();
        loop {
            // The statement is unnamed, so it works through a pooler in
            // transaction mode; one statement is one transaction.
            let params: [(&(dyn ToSql + Sync), Type); 2] = [
                (&ids, Type::TEXT_ARRAY),
                (&vectors, self.vector_array.clone()),
            ];
            let err = match self.client.execute_typed(INSERT_SQL, &params) {
                Ok(inserted) => {
                    availability.success();
                    return Some(inserted);
                }
                Err(err) => err,
            };

            let problem = database::describe_error(&err);
            if !database::is_transient(&err) {
                shutdown.stop(Cause::Setup(format!("writing vectors failed: {problem}")));
                return None;
            }
            log::warn!("writing {} vectors failed: {problem}; retrying", ids.len());
            loop {
                if !retry::wait_to_retry(availability, &mut backoff, None, shutdown, &problem) {
                    return None;
                }
                match database::connect(&self.url) {
                    Ok(client) => {
                        log::info!("connected again to {}", self.url);
                        self.client = client;
                        break;
                    }
                    Err(err) => log::warn!(
                        "connecting again failed: {}",
                        database::describe_error(&err)
                    ),
                }
            }
        }
    }
}
