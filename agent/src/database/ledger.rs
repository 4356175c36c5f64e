//! The ledger: the rows the migrator wrote into the live database
//! (`drizzle.__drizzle_migrations` by default).
//!
//! Read-only, one short connection. The 0.x table has `id`, `hash` and
//! `created_at`; 1.0 adds `name` and `applied_at`. Both are read by first
//! asking the catalog which columns exist, which also tells a missing schema
//! or table (`ledger-missing`) apart from a broken query.
//!
//! The connection (TLS, retries, the redaction of the string) is
//! [`super::dsn`]'s.

use std::time::Duration;

use serde::Serialize;

use super::dsn::{error_text, Dsn, DsnError};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The connection string, or the connection.
    #[error(transparent)]
    Dsn(#[from] DsnError),
    #[error("cannot read the ledger {table}: {detail}")]
    Query { table: String, detail: String },
    #[error("ledger {table} row id {id}: created_at {value:?} is not a whole number")]
    BadValue {
        table: String,
        id: i64,
        value: String,
    },
}

impl LedgerError {
    /// Whether the database itself could not be reached or refused us.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LedgerError::Dsn(e) if e.is_unavailable())
    }
}

/// Where the ledger lives.
#[derive(Debug, Clone)]
pub struct Target {
    pub schema: String,
    pub table: String,
}

impl Target {
    /// `"schema"."table"`, each identifier quoted so any name is safe.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// One row as the migrator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub id: i64,
    pub hash: String,
    /// The journal `when` of the migration (not the time it ran); NULL is
    /// possible in the schema and matters to the migrator.
    pub created_at: Option<i64>,
    /// 1.0 ledgers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What the database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ledger {
    /// No such schema or table: the migrator never ran here.
    Missing,
    /// The rows, ordered by `id`.
    Rows(Vec<Row>),
}

/// PostgreSQL identifier quoting: wrap in `"` and double any `"` inside.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Read the ledger at `target` in the database of `dsn`.
pub async fn read(
    dsn: &Dsn,
    target: &Target,
    connect_timeout: Duration,
) -> Result<Ledger, LedgerError> {
    let client = dsn.connect(connect_timeout).await?;
    read_with(&client, target).await
}

/// Read with an open client (tests reuse their own connection).
pub async fn read_with(
    client: &tokio_postgres::Client,
    target: &Target,
) -> Result<Ledger, LedgerError> {
    let query_err = |e: tokio_postgres::Error| LedgerError::Query {
        table: target.display(),
        detail: error_text(&e),
    };
    let columns: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
             AND a.attnum > 0 AND NOT a.attisdropped",
            &[&target.schema, &target.table],
        )
        .await
        .map_err(query_err)?
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    if columns.is_empty() {
        return Ok(Ledger::Missing);
    }
    let has = |c: &str| columns.iter().any(|x| x == c);
    for needed in ["id", "hash", "created_at"] {
        if !has(needed) {
            return Err(LedgerError::Query {
                table: target.display(),
                detail: format!(
                    "it has no `{needed}` column (columns: {}); this is not a Drizzle ledger",
                    columns.join(", ")
                ),
            });
        }
    }
    let name = if has("name") {
        "name::text"
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT id::bigint, hash::text, created_at::text, {name} FROM {} ORDER BY id",
        target.quoted()
    );
    let rows = client.query(sql.as_str(), &[]).await.map_err(query_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.try_get(0).map_err(query_err)?;
        let hash: Option<String> = row.try_get(1).map_err(query_err)?;
        let created_at: Option<String> = row.try_get(2).map_err(query_err)?;
        let name: Option<String> = row.try_get(3).map_err(query_err)?;
        let created_at = match created_at {
            None => None,
            Some(text) => Some(parse_millis(&text).ok_or_else(|| LedgerError::BadValue {
                table: target.display(),
                id,
                value: text.clone(),
            })?),
        };
        out.push(Row {
            id,
            hash: hash.unwrap_or_default(),
            created_at,
            name,
        });
    }
    Ok(Ledger::Rows(out))
}

/// `created_at` is `bigint` in PostgreSQL ledgers; a `numeric` column prints
/// as `123` or `123.000`. The migrator compares it with `Number(...)`.
fn parse_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(v) = text.parse::<i64>() {
        return Some(v);
    }
    let (whole, frac) = text.split_once('.')?;
    if frac.bytes().all(|b| b == b'0') {
        whole.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_safely() {
        let t = Target {
            schema: "dr\"izzle".into(),
            table: "x; DROP TABLE y".into(),
        };
        assert_eq!(t.quoted(), "\"dr\"\"izzle\".\"x; DROP TABLE y\"");
    }

    #[test]
    fn numeric_created_at_parses() {
        assert_eq!(parse_millis("1795478199059"), Some(1_795_478_199_059));
        assert_eq!(parse_millis("17.000"), Some(17));
        assert_eq!(parse_millis("17.5"), None);
    }
}
