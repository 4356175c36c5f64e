//! The ledger: the rows the migrator wrote into the live database
//! (`drizzle.__drizzle_migrations` by default).
//!
//! Read-only, one short connection. The 0.x table has `id`, `hash` and
//! `created_at`; 1.0 adds `name` and `applied_at`. Both are read by first
//! asking the catalog which columns exist, which also tells a missing schema
//! or table (`ledger-missing`) apart from a broken query.
//!
//! The connection string carries a password: it is registered with the
//! redaction layer before anything else happens and is never formatted into
//! an error. A database that cannot be reached (refused, timed out, name not
//! resolved, authentication refused) is a dependency that stayed unavailable
//! (exit 69), after a couple of quick retries for the transient cases.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::error::Chain;
use crate::output::register_secret;
use crate::retry::{Backoff, Retry};

/// Connection attempts before giving up; authentication failures are not
/// retried (another try cannot fix a wrong password).
const CONNECT_ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The text does not parse as a PostgreSQL connection string. The text
    /// itself is never shown.
    #[error("the database URL is not a valid PostgreSQL connection string ({detail})")]
    BadUrl { detail: String },
    #[error("cannot connect to {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("{endpoint} refused the credentials: {detail}")]
    Auth { endpoint: String, detail: String },
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
        matches!(self, LedgerError::Connect { .. } | LedgerError::Auth { .. })
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

/// Parse the URL and register its password (and the URL itself) as secrets.
fn parse_url(url: &str) -> Result<tokio_postgres::Config, LedgerError> {
    register_secret(url);
    let config = tokio_postgres::Config::from_str(url).map_err(|e| LedgerError::BadUrl {
        // tokio-postgres's parse errors name the problem, not the value;
        // redaction still runs over every output as a second guard.
        detail: e.to_string(),
    })?;
    if let Some(password) = config.get_password() {
        register_secret(&String::from_utf8_lossy(password));
    }
    Ok(config)
}

/// `host:port/dbname` for messages: enough to know where, never who or how.
fn endpoint(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default database)");
    format!("PostgreSQL at {host}:{port}/{db}")
}

/// One connection to `url` (retried like the ledger read) and where it
/// goes, for callers that hold a session (the advisory lock).
pub async fn open(
    url: &str,
    connect_timeout: Duration,
) -> Result<(tokio_postgres::Client, String), LedgerError> {
    let mut config = parse_url(url)?;
    config.connect_timeout(connect_timeout);
    config.application_name("wavemap-agent");
    let endpoint = endpoint(&config);
    let client = connect(&config, &endpoint, connect_timeout).await?;
    Ok((client, endpoint))
}

/// Read the ledger at `target` through `url`.
pub async fn read(
    url: &str,
    target: &Target,
    connect_timeout: Duration,
) -> Result<Ledger, LedgerError> {
    let mut config = parse_url(url)?;
    config.connect_timeout(connect_timeout);
    config.application_name("wavemap-agent");
    let endpoint = endpoint(&config);
    let client = connect(&config, &endpoint, connect_timeout).await?;
    read_with(&client, target).await
}

async fn connect(
    config: &tokio_postgres::Config,
    endpoint: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, LedgerError> {
    let mut retry = Retry::tries(CONNECT_ATTEMPTS, Backoff::constant(RETRY_PAUSE));
    loop {
        // connect_timeout bounds each socket attempt; this bounds the whole
        // handshake too (a server that accepts and then says nothing).
        let result =
            tokio::time::timeout(timeout + Duration::from_secs(1), config.connect(NoTls)).await;
        let error = match result {
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        log::debug!(stage = "ledger"; "connection closed: {e}");
                    }
                });
                return Ok(client);
            }
            Ok(Err(e)) => {
                let code = e.code();
                if code == Some(&SqlState::INVALID_PASSWORD)
                    || code == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
                {
                    return Err(LedgerError::Auth {
                        endpoint: endpoint.to_owned(),
                        detail: error_text(&e),
                    });
                }
                if code == Some(&SqlState::INVALID_CATALOG_NAME) {
                    // The server answered: retrying will not create the database.
                    return Err(LedgerError::Connect {
                        endpoint: endpoint.to_owned(),
                        detail: error_text(&e),
                    });
                }
                error_text(&e)
            }
            Err(_) => format!("no answer within {}s", timeout.as_secs() + 1),
        };
        let attempt = retry.attempt();
        if retry.exhausted() {
            return Err(LedgerError::Connect {
                endpoint: endpoint.to_owned(),
                detail: format!("{error} (after {attempt} attempts)"),
            });
        }
        log::warn!(stage = "ledger"; "cannot connect to {endpoint} (attempt {attempt}/{CONNECT_ATTEMPTS}): {error}; retrying");
        retry.pause().await;
    }
}

/// The server's message and SQLSTATE, or the error and its causes:
/// tokio-postgres puts the useful part (refused,
/// name not resolved) in the source.
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => Chain(e).to_string(),
    }
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

    #[test]
    fn bad_url_error_does_not_echo_the_password() {
        let e = parse_url("postgres://u:s3cr3t-pw@host:notaport/db").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
    }

    #[test]
    fn endpoint_names_host_and_database_only() {
        let c = parse_url("postgres://user:topsecret-pw@db.example:6543/app").unwrap();
        let text = endpoint(&c);
        assert_eq!(text, "PostgreSQL at db.example:6543/app");
    }
}
