//! The one operation a process runs: its id, how long it may wait for
//! others, where its full job output went, and its interruption by a signal.
//!
//! The SSM Agent ends a command on its timeout with a signal, and an
//! operator ends one with Ctrl-C or by closing the terminal. A job running in
//! the API container through `docker exec` does not die with the agent, so
//! a signal must reach the code that owns the job: [`listen`] turns SIGTERM,
//! SIGINT and SIGHUP into a value every waiter sees ([`interrupted`]), the
//! job runner stops its exec, and `commands` records the operation as
//! interrupted before the process exits.
//!
//! One process runs one command, so this state is process-wide; `commands`
//! sets it when the operation starts ([`begin`]).
//!
//! The deadline (`--deadline SECS`, `WAVEMAP_AGENT_DEADLINE`) is the same
//! interruption, sent by a timer instead of the SSM Agent: SSM's own kill at
//! `timeoutSeconds` leaves no markers and no journal end record, so each
//! document gives the agent a budget a margin below it. Every wait takes its
//! limit from [`wait_limit`] (its own limit, cut to what is left of the
//! budget) and a step that must not be cut in the middle (a job) asks
//! [`fits`] before it starts; when the budget runs out, [`arm_deadline`]'s
//! timer interrupts whatever is still waiting, exactly as SIGTERM would.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::error::Error;

/// The name a deadline interruption goes by where a signal's name would
/// (`WAVEMAP_AGENT_INTERRUPTED=deadline`, [`interrupted`]).
pub const DEADLINE: &str = "deadline";

/// Less than this left of the budget, and a wait cannot start: it could not
/// try even once.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// The whole command's budget, from the moment it was set.
#[derive(Debug, Clone, Copy)]
struct Budget {
    at: Instant,
    total: Duration,
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

struct State {
    id: String,
    lock_timeout: Duration,
}

static STATE: OnceLock<State> = OnceLock::new();
static SIGNAL: OnceLock<watch::Sender<Option<&'static str>>> = OnceLock::new();
static JOB_LOG: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Name the operation and record how long it may wait for others (the
/// lock timeout, `--lock-timeout` or `agent.lock_timeout`). A second call
/// keeps the first values.
pub fn begin(lock_timeout: Duration) {
    let _ = STATE.set(State {
        id: new_id(),
        lock_timeout,
    });
}

/// `20261130T160042.123Z-4242`: start time and pid, unique on the host and
/// sortable; names the full job log (`state_dir/jobs/<id>.log`).
pub fn id() -> &'static str {
    &STATE
        .get_or_init(|| State {
            id: new_id(),
            lock_timeout: Duration::from_secs(600),
        })
        .id
}

/// How long this operation may wait for another one (a job left running by
/// a killed agent, a database advisory lock held elsewhere).
pub fn lock_timeout() -> Duration {
    STATE
        .get()
        .map_or(Duration::from_secs(600), |s| s.lock_timeout)
}

fn new_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

/// Remember where the full job output of this operation went (for the
/// `WAVEMAP_AGENT_JOB_LOG` marker).
pub fn set_job_log(path: PathBuf) {
    *JOB_LOG.lock().unwrap_or_else(PoisonError::into_inner) = Some(path);
}

pub fn job_log() -> Option<PathBuf> {
    JOB_LOG
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn sender() -> &'static watch::Sender<Option<&'static str>> {
    SIGNAL.get_or_init(|| watch::channel(None).0)
}

/// Handle SIGTERM, SIGINT and SIGHUP from now on (inside the runtime). Once
/// installed, a signal no longer ends the process by itself: it is seen
/// through [`interrupted`] and [`wait`], and the command ends on its own
/// terms.
pub fn listen() -> std::io::Result<()> {
    let mut streams = Vec::new();
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        streams.push((signal(kind)?, name));
    }
    for (mut stream, name) in streams {
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                interrupt(name);
            }
        });
    }
    Ok(())
}

/// The signal that interrupted the operation, if one came.
pub fn interrupted() -> Option<&'static str> {
    *sender().borrow()
}

/// Wait for a signal; returns its name.
pub async fn wait() -> &'static str {
    let mut rx = sender().subscribe();
    loop {
        if let Some(name) = *rx.borrow_and_update() {
            return name;
        }
        if rx.changed().await.is_err() {
            // The sender lives in a static and is never dropped.
            std::future::pending::<()>().await;
        }
    }
}

/// Bound the whole command by `total` from now (`--deadline`). A second
/// call keeps the first budget.
pub fn set_deadline(total: Duration) {
    let _ = BUDGET.set(Budget {
        at: Instant::now() + total,
        total,
    });
}

/// What is left of the budget; `None` without a deadline.
pub fn remaining() -> Option<Duration> {
    BUDGET
        .get()
        .map(|b| b.at.saturating_duration_since(Instant::now()))
}

/// The budget ran out (never true without a deadline).
pub fn deadline_passed() -> bool {
    remaining().is_some_and(|left| left.is_zero())
}

/// The budget's total in seconds, for messages.
fn total_secs() -> u64 {
    BUDGET.get().map_or(0, |b| b.total.as_secs())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The limit for a wait whose own limit is `limit` (named by `wait`, e.g.
/// `the health wait (runtime.health_timeout)`): `limit`, cut to what is left
/// of the budget. A wait that cannot start (less than a second left) fails
/// at once naming itself and the budget.
pub fn wait_limit(wait: &str, limit: Duration) -> Result<Duration, Error> {
    cut(wait, limit, remaining(), total_secs())
}

fn cut(wait: &str, limit: Duration, left: Option<Duration>, total: u64) -> Result<Duration, Error> {
    let Some(left) = left else {
        return Ok(limit);
    };
    if left < MIN_WAIT && !limit.is_zero() {
        return Err(out_of_time(format!(
            "{wait} (up to {}s) cannot start: {} of the {total}s budget (--deadline) is left",
            limit.as_secs(),
            secs(left),
        )));
    }
    if left < limit {
        log::debug!(
            "{wait}: cut from {}s to the {} left of the budget (--deadline)",
            limit.as_secs(),
            secs(left)
        );
    }
    Ok(limit.min(left))
}

/// A step that must not be cut in the middle (a job that writes to the
/// database) starts only when its whole limit fits in what is left of the
/// budget; otherwise it fails at once naming itself and the budget, and
/// nothing was started.
pub fn fits(step: &str, limit: Duration) -> Result<(), Error> {
    fit(step, limit, remaining(), total_secs())
}

fn fit(step: &str, limit: Duration, left: Option<Duration>, total: u64) -> Result<(), Error> {
    match left {
        Some(left) if left < limit => Err(out_of_time(format!(
            "{step} may take up to {}s, which does not fit in the {} left of the {total}s budget (--deadline); it was not started",
            limit.as_secs(),
            secs(left),
        ))),
        _ => Ok(()),
    }
}

/// The error of a command stopped by its deadline.
pub fn out_of_time(detail: impl Into<String>) -> Error {
    Error::Interrupted {
        signal: DEADLINE,
        detail: detail.into(),
    }
}

/// From now on (inside the runtime), the deadline interrupts the command the
/// way a signal does: [`interrupted`] and [`wait`] answer [`DEADLINE`].
pub fn arm_deadline() {
    let Some(budget) = BUDGET.get().copied() else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(budget.at)).await;
        log::warn!(
            "the {}s budget (--deadline) ran out",
            budget.total.as_secs()
        );
        interrupt(DEADLINE);
    });
}

fn interrupt(name: &'static str) {
    sender().send_if_modified(|current| {
        if current.is_none() {
            *current = Some(name);
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_wait_is_cut_to_what_is_left_of_the_budget() {
        assert_eq!(
            cut("the health wait", S(300), Some(S(40)), 60).ok(),
            Some(S(40))
        );
        assert_eq!(cut("the lock wait", S(5), Some(S(40)), 60).ok(), Some(S(5)));
        assert_eq!(cut("the lock wait", S(600), None, 0).ok(), Some(S(600)));
    }

    #[test]
    fn a_wait_that_cannot_fit_fails_at_once_naming_it_and_the_budget() {
        let e = cut(
            "the health wait (runtime.health_timeout)",
            S(300),
            Some(Duration::from_millis(400)),
            8,
        )
        .expect_err("no time left");
        let text = e.to_string();
        assert!(
            text.contains("the health wait (runtime.health_timeout)"),
            "{text}"
        );
        assert!(
            text.contains("0.4s of the 8s budget (--deadline)"),
            "{text}"
        );
        assert_eq!(e.kind(), "deadline");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn a_step_that_cannot_fit_whole_fails_at_once_naming_it_and_the_budget() {
        let e =
            fit("job migrate (jobs.timeout)", S(900), Some(S(100)), 1740).expect_err("too long");
        let text = e.to_string();
        assert!(
            text.contains("job migrate (jobs.timeout) may take up to 900s"),
            "{text}"
        );
        assert!(
            text.contains("100.0s left of the 1740s budget (--deadline)"),
            "{text}"
        );
        assert!(text.contains("not started"), "{text}");
        assert_eq!(e.kind(), "deadline");
        assert!(fit("job seed", S(10), Some(S(100)), 1740).is_ok());
        assert!(fit("job seed", S(10_000), None, 0).is_ok());
    }
}
