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

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

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
                sender().send_if_modified(|current| {
                    if current.is_none() {
                        *current = Some(name);
                        true
                    } else {
                        false
                    }
                });
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
