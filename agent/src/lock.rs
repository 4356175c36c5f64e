//! One mutating operation at a time.
//!
//! A `flock` on `run_dir/agent.lock`, held for the whole operation and
//! released by the kernel when the process ends, however it ends (a SIGKILL
//! from SSM's timeout included), so a stale lock cannot outlive its holder.
//! The holder writes its pid, command and start time into the file so the
//! process that waits can name it. Read-only commands never take the lock.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::retry::{Backoff, Retry};

/// The lock file names its holder's command; only root reads it.
pub const LOCK_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another mutating operation holds the lock {path} ({holder}); waited {waited_secs}s; \
         retry when it finishes or raise --lock-timeout"
    )]
    Busy {
        path: String,
        holder: String,
        waited_secs: u64,
    },
    #[error("cannot use lock file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the life of a mutating operation; dropping it releases the lock.
#[derive(Debug)]
pub struct OperationLock {
    _file: File,
    path: PathBuf,
}

impl OperationLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the lock, waiting up to `timeout`. `command` is recorded for others.
pub async fn acquire(
    path: &Path,
    command: &str,
    timeout: Duration,
) -> Result<OperationLock, LockError> {
    let io_err = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        // The run folder: 0750, as packaging/wavemap-agent.tmpfile makes it.
        crate::fsutil::ensure_dir(dir, crate::fsutil::AGENT_DIR_MODE).map_err(|e| {
            LockError::Io {
                path: e.path.display().to_string(),
                source: e.source,
            }
        })?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err)?;
    // A lock file an older agent made 0644 is narrowed too: the holder's
    // command line is nobody else's business.
    file.set_permissions(std::fs::Permissions::from_mode(LOCK_FILE_MODE))
        .map_err(io_err)?;
    let mut retry = Retry::for_time(timeout, Backoff::constant(Duration::from_millis(100)));
    let mut announced = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if retry.exhausted() {
                    return Err(LockError::Busy {
                        path: path.display().to_string(),
                        holder: holder(path),
                        waited_secs: retry.elapsed().as_secs(),
                    });
                }
                if !announced {
                    log::info!(
                        "waiting up to {}s for the lock held by {}",
                        timeout.as_secs(),
                        holder(path)
                    );
                    announced = true;
                }
                retry.pause().await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
    }
    let record = format!(
        "pid={} command=\"{}\" since={}\n",
        std::process::id(),
        command,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    file.set_len(0).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    file.write_all(record.as_bytes()).map_err(io_err)?;
    Ok(OperationLock {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// Who holds the lock, as recorded in the file (never waits, never locks).
pub fn holder(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => "holder unknown".to_owned(),
    }
}

/// The recorded holder if the lock is held right now, for `status`.
pub fn current_holder(path: &Path) -> Option<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => Some(holder(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_taker_times_out_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.lock");
        let first = acquire(&path, "runtime deploy", Duration::from_secs(1))
            .await
            .unwrap();
        let err = acquire(&path, "runtime rollback", Duration::from_millis(300))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("runtime deploy"), "{text}");
        assert!(
            text.contains(&format!("pid={}", std::process::id())),
            "{text}"
        );
        assert!(current_holder(&path).is_some());
        drop(first);
        assert!(current_holder(&path).is_none());
        acquire(&path, "runtime rollback", Duration::from_millis(300))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_lock_file_is_0600_and_an_older_0644_one_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.lock");
        drop(acquire(&path, "a", Duration::from_secs(1)).await.unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("run")), 0o750);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(acquire(&path, "a", Duration::from_secs(1)).await.unwrap());
        assert_eq!(mode(&path), 0o600);
    }
}
