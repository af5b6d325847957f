//! `postfinder-embeddings check`: a preflight that connects to the database
//! and the API as the job would, and reports each thing the job relies on,
//! as a table, with what to fix.
//!
//! It reads the catalogue and makes one API call with a made-up post; it
//! never writes to the database.

use postgres::types::{ToSql, Type};

use crate::api::ApiClient;
use crate::config::Settings;
use crate::database;
use crate::posts::Post;
use crate::store;

/// The columns the job reads or writes, by table.
const COLUMNS: [(&str, &[&str]); 3] = [
    (
        "instagram.core_posts",
        &[
            "ig_media_id",
            "caption",
            "timestamp",
            "suspected",
            "media_product_type",
        ],
    ),
    (
        "instagram.core_post_media",
        &[
            "ig_media_id",
            "media_order",
            "parent_ig_media_id",
            "media_type",
            "media_url",
            "thumbnail_url",
        ],
    ),
    ("instagram.post_embeddings", &["ig_media_id", "embedding"]),
];

/// The grants the job needs, and nothing more.
const GRANTS: [(&str, &str); 4] = [
    ("instagram.core_posts", "SELECT"),
    ("instagram.core_post_media", "SELECT"),
    ("instagram.post_embeddings", "SELECT"),
    ("instagram.post_embeddings", "INSERT"),
];

/// One line of the report: what was checked, and what was found or what to
/// fix.
struct Line {
    check: String,
    outcome: Result<String, String>,
}

/// Runs every check, prints the table, and says whether all passed.
pub fn run(settings: &Settings) -> bool {
    let mut lines = Vec::new();
    database_checks(settings, &mut lines);
    api_checks(settings, &mut lines);

    let width = lines.iter().map(|line| line.check.len()).max().unwrap_or(0);
    println!("{:<width$}  result  detail", "check");
    for line in &lines {
        let (result, detail) = match &line.outcome {
            Ok(detail) => ("ok", detail),
            Err(fix) => ("FAILED", fix),
        };
        println!("{:<width$}  {result:<6}  {detail}", line.check);
    }
    lines.iter().all(|line| line.outcome.is_ok())
}

fn database_checks(settings: &Settings, lines: &mut Vec<Line>) {
    let mut add = |check: &str, outcome| {
        lines.push(Line {
            check: check.to_string(),
            outcome,
        })
    };

    let mut client = match database::connect(&settings.database_url) {
        Ok(client) => client,
        Err(err) => {
            add(
                "database connection",
                Err(format!(
                    "{}: {}; check DATABASE_URL",
                    settings.database_url,
                    database::describe_error(&err)
                )),
            );
            return;
        }
    };
    add("database connection", Ok(settings.database_url.to_string()));

    // Step 1: pgvector.
    let version = query_text(
        &mut client,
        "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
        &[],
    );
    add(
        "pgvector installed",
        match version {
            Ok(Some(version)) => Ok(format!("version {version}")),
            Ok(None) => Err("not installed; run CREATE EXTENSION vector as its owner".to_string()),
            Err(err) => Err(err),
        },
    );

    // Step 2: the tables and their columns.
    for (table, columns) in COLUMNS {
        let sql = "SELECT string_agg(attname::text, ',') FROM pg_attribute \
                   WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped";
        let found = query_text(&mut client, sql, &[(&table, Type::TEXT)]);
        add(
            &format!("table {table}"),
            match found {
                Ok(Some(found)) => {
                    let found: Vec<&str> = found.split(',').collect();
                    let missing: Vec<&str> = columns
                        .iter()
                        .copied()
                        .filter(|c| !found.contains(c))
                        .collect();
                    if missing.is_empty() {
                        Ok(format!("columns {}", columns.join(", ")))
                    } else {
                        Err(format!("missing columns: {}", missing.join(", ")))
                    }
                }
                Ok(None) => Err("not found, or not visible to this user".to_string()),
                Err(err) => Err(err),
            },
        );
    }

    // Step 3: the vector column's width.
    add(
        "embedding width",
        match store::embedding_column(&mut client) {
            Ok(column) => match column.width {
                Some(width) if width == settings.dimension => Ok(format!("vector({width})")),
                Some(width) => Err(format!(
                    "the column is vector({width}) but EMBEDDING_DIMENSION is {}",
                    settings.dimension
                )),
                None => Ok("vector without a declared width".to_string()),
            },
            Err(err) => Err(err.to_string()),
        },
    );

    // Step 4: the grants.
    for (table, privilege) in GRANTS {
        let sql = "SELECT CASE WHEN to_regclass($1) IS NULL THEN 'no table' \
                   WHEN has_table_privilege(to_regclass($1), $2) THEN 'yes' ELSE 'no' END";
        let granted = query_text(
            &mut client,
            sql,
            &[(&table, Type::TEXT), (&privilege, Type::TEXT)],
        );
        add(
            &format!("grant {privilege} on {table}"),
            match granted.as_ref().map(|g| g.as_deref()) {
                Ok(Some("yes")) => Ok("granted".to_string()),
                Ok(Some("no table")) => Err("the table is missing".to_string()),
                Ok(_) => Err(format!(
                    "missing; GRANT {privilege} ON {table} TO the job's role"
                )),
                Err(err) => Err(err.clone()),
            },
        );
    }
}

fn api_checks(settings: &Settings, lines: &mut Vec<Line>) {
    let api = ApiClient::new(settings);
    let health = api.health();
    let healthy = health.is_ok();
    lines.push(Line {
        check: "api health".to_string(),
        outcome: health
            .map(|model| format!("model {model}"))
            .map_err(|err| format!("{err}; check EMBEDDING_API_URL and that the service is up")),
    });
    if !healthy {
        return;
    }
    let post = Post {
        id: "check".to_string(),
        caption: Some("postfinder-embeddings check".to_string()),
        image_url: None,
    };
    lines.push(Line {
        check: "api embeds a post".to_string(),
        outcome: api
            .embed(std::slice::from_ref(&post))
            .map(|vectors| format!("one vector of width {}", vectors[0].len()))
            .map_err(|err| err.to_string()),
    });
}

/// The first column of the first row, as text, or the error to show.
fn query_text(
    client: &mut postgres::Client,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Option<String>, String> {
    let rows = client
        .query_typed(sql, params)
        .map_err(|err| database::describe_error(&err))?;
    Ok(rows.first().and_then(|row| row.get::<_, Option<String>>(0)))
}
