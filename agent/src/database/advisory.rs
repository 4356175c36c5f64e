//! The PostgreSQL advisory lock that `database migrate` and `database reset`
//! hold on the target database for their job's whole run.
//!
//! The agent's file lock serializes operations on one host. It cannot stop a
//! second host, or a person at a shell on another machine, from migrating
//! the same database at the same moment: two migrators racing on one ledger
//! is how a migration gets applied twice or half. A session-level advisory
//! lock lives in the database itself, so every `wavemap-agent` that reaches
//! that database waits for the others. PostgreSQL releases it when the
//! session ends, so a killed agent never leaves it stuck (the job it left
//! running is caught by [`crate::jobs`] on this host).
//!
//! The key is [`KEY`], the bytes `wavemapD` read as a big-endian `i64`
//! (`SELECT pg_advisory_lock(8602286941253234756)` takes it by hand).

use std::time::Duration;

use crate::database::ledger::{self, LedgerError};
use crate::error::Error;
use crate::lock::LockError;
use crate::retry::{Backoff, Retry};

/// `i64::from_be_bytes(*b"wavemapD")`.
pub const KEY: i64 = i64::from_be_bytes(*b"wavemapD");

/// The held lock: the session that holds it. Dropping it closes the
/// session, which releases the lock.
pub struct Held {
    client: tokio_postgres::Client,
    endpoint: String,
}

impl Held {
    /// Release the lock now (dropping does the same, less politely).
    pub async fn release(self) {
        if let Err(e) = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&KEY])
            .await
        {
            log::debug!(stage = "database"; "releasing the advisory lock on {}: {e}", self.endpoint);
        }
    }
}

/// Take the advisory lock on the database of `url`, waiting up to `wait`
/// for whoever holds it. Exit 75 (lock busy) when it is still held then;
/// exit 69 when the database cannot be reached.
pub async fn acquire(
    url: &str,
    connect_timeout: Duration,
    wait: Duration,
    unavailable: impl Fn(LedgerError) -> Error,
) -> Result<Held, Error> {
    let (client, endpoint) = ledger::open(url, connect_timeout)
        .await
        .map_err(&unavailable)?;
    let mut retry = Retry::for_time(wait, Backoff::constant(Duration::from_millis(500)));
    let mut announced = false;
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&KEY])
            .await
            .map_err(|e| {
                unavailable(LedgerError::Connect {
                    endpoint: endpoint.clone(),
                    detail: ledger::error_text(&e),
                })
            })?;
        if row.get::<_, bool>(0) {
            if announced {
                log::info!(stage = "database"; "took the advisory lock on {endpoint} after {:.1}s", retry.elapsed().as_secs_f64());
            }
            return Ok(Held { client, endpoint });
        }
        if let Some(signal) = crate::operation::interrupted() {
            return Err(Error::Interrupted {
                signal,
                detail: format!("while waiting for the advisory lock on {endpoint}"),
            });
        }
        if retry.exhausted() {
            let holder = client
                .query_opt(
                    "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local') \
                     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.granted \
                       AND l.classid = (($1::bigint >> 32) & 4294967295)::oid \
                       AND l.objid = ($1::bigint & 4294967295)::oid \
                     LIMIT 1",
                    &[&KEY],
                )
                .await
                .ok()
                .flatten()
                .map(|r| {
                    format!(
                        "held by session {} ({} from {})",
                        r.get::<_, i32>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2)
                    )
                })
                .unwrap_or_else(|| "held by another session".into());
            return Err(LockError::Busy {
                path: format!("PostgreSQL advisory lock {KEY} on {endpoint}"),
                holder: format!("{holder}: another migrate or reset works on this database"),
                waited_secs: retry.elapsed().as_secs(),
            }
            .into());
        }
        if !announced {
            log::warn!(stage = "database"; "another session holds the advisory lock on {endpoint} (a migrate or reset elsewhere); waiting up to {}s", wait.as_secs());
            announced = true;
        }
        retry.pause().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_spells_wavemap() {
        assert_eq!(KEY, 8_602_286_941_253_234_756);
        assert_eq!(&KEY.to_be_bytes(), b"wavemapD");
    }
}
