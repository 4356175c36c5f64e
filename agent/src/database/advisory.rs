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
//! The lock is only as good as its session: if the connection dies (the
//! server restarted, a network cut, `pg_terminate_backend`) the lock is gone
//! while the agent still thinks it holds it. [`Held::check`] looks between
//! job steps and stops the operation before the next step runs unguarded.
//!
//! The key is [`KEY`], the bytes `wavemapD` read as a big-endian `i64`
//! (`SELECT pg_advisory_lock(8602286941253234756)` takes it by hand).

use std::time::Duration;

use crate::database::dsn::{error_text, Dsn, DsnError};
use crate::database::ledger::LedgerError;
use crate::error::{Dependency, Error};
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

/// How long one look at the lock's session may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a look at the lock's session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The session answers and holds the lock.
    Held,
    /// The session answers but no longer holds the lock.
    Lost,
    /// The session is gone or does not answer; why.
    Dead(String),
}

impl Held {
    /// Look at the lock's session: is it alive, and does it still hold
    /// the lock?
    pub async fn probe(&self) -> Probe {
        if self.client.is_closed() {
            return Probe::Dead("its connection is closed".into());
        }
        let query = self.client.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() \
               AND classid = (($1::bigint >> 32) & 4294967295)::oid \
               AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1)",
            &[&KEY],
        );
        match tokio::time::timeout(PROBE_TIMEOUT, query).await {
            Ok(Ok(row)) => match row.try_get::<_, bool>(0) {
                Ok(true) => Probe::Held,
                Ok(false) => Probe::Lost,
                Err(e) => Probe::Dead(error_text(&e)),
            },
            Ok(Err(e)) => Probe::Dead(error_text(&e)),
            Err(_) => Probe::Dead(format!(
                "it did not answer within {}s",
                PROBE_TIMEOUT.as_secs()
            )),
        }
    }

    /// Before `next` starts: the lock must still be held, else the
    /// operation stops (exit 69) and says so.
    pub async fn check(&self, next: &str) -> Result<(), Error> {
        verdict(self.probe().await, &self.endpoint, next)
    }

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

/// What a [`Probe`] means for the step `next`: go on only while the lock
/// is held.
pub fn verdict(probe: Probe, endpoint: &str, next: &str) -> Result<(), Error> {
    let what = match probe {
        Probe::Held => return Ok(()),
        Probe::Lost => "answers but no longer holds it".to_owned(),
        Probe::Dead(why) => format!("ended ({why})"),
    };
    log::error!(stage = "database"; "the session holding the advisory lock {KEY} on {endpoint} {what}; not starting {next}");
    Err(Error::unavailable(
        Dependency::Postgres,
        format!(
            "the session holding the advisory lock {KEY} on {endpoint} {what}, so another migrate or reset could now work on this database; {next} was not started. Check the database, then rerun the command (it resumes from what is applied)"
        ),
    ))
}

/// Take the advisory lock on the database of `dsn`, waiting up to `wait`
/// for whoever holds it. Exit 75 (lock busy) when it is still held then;
/// exit 69 when the database cannot be reached.
pub async fn acquire(
    dsn: &Dsn,
    connect_timeout: Duration,
    wait: Duration,
    unavailable: impl Fn(LedgerError) -> Error,
) -> Result<Held, Error> {
    let endpoint = dsn.endpoint();
    let client = dsn
        .connect(connect_timeout)
        .await
        .map_err(|e| unavailable(e.into()))?;
    let mut retry = Retry::for_time(wait, Backoff::constant(Duration::from_millis(500)));
    let mut announced = false;
    loop {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&KEY])
            .await
            .map_err(|e| {
                unavailable(LedgerError::Dsn(DsnError::Connect {
                    endpoint: endpoint.clone(),
                    detail: error_text(&e),
                }))
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

    #[test]
    fn a_held_lock_lets_the_next_step_run() {
        assert!(verdict(Probe::Held, "PostgreSQL at h:5432/db", "base-seed").is_ok());
    }

    #[test]
    fn a_dead_or_lost_lock_session_stops_the_operation_with_exit_69() {
        for (probe, says) in [
            (
                Probe::Dead("terminating connection due to administrator command (57P01)".into()),
                "ended (terminating connection due to administrator command (57P01))",
            ),
            (Probe::Lost, "answers but no longer holds it"),
            (
                Probe::Dead("its connection is closed".into()),
                "ended (its connection is closed)",
            ),
        ] {
            let e = verdict(probe, "PostgreSQL at h:5432/db", "base-seed").unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE, "{e}");
            let text = e.to_string();
            assert!(text.contains(says), "{text}");
            assert!(
                text.contains("advisory lock 8602286941253234756 on PostgreSQL at h:5432/db"),
                "{text}"
            );
            assert!(text.contains("base-seed was not started"), "{text}");
        }
    }
}
