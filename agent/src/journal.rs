//! The operation journal: one JSON line per finished operation (and one when
//! it starts, so a killed run is visible), appended under `state_dir`.
//!
//! Arguments are recorded by name and value only for flags that are never
//! secret (image URIs, SHAs, versions); nothing read from SSM goes here.
//! The file is rotated once past [`MAX_BYTES`] so it cannot fill the disk.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::output::redact;

const MAX_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// `start` or `end`.
    pub event: String,
    pub command: String,
    pub args: Vec<String>,
    pub pid: u32,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Extra facts (stage timings, boot recovery timings, failed stage).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Append one entry. Journal trouble is logged, never fatal: the operation
/// itself matters more than its record.
pub fn append(path: &Path, entry: &Entry) {
    if let Err(e) = try_append(path, entry) {
        log::warn!("cannot append to operation journal {}: {e}", path.display());
    }
}

fn try_append(path: &Path, entry: &Entry) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        // state_dir: 0750, as packaging/wavemap-agent.tmpfile makes it.
        crate::fsutil::ensure_dir(dir, crate::fsutil::AGENT_DIR_MODE)
            .map_err(|e| std::io::Error::new(e.source.kind(), e.to_string()))?;
    }
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > MAX_BYTES {
        std::fs::rename(path, path.with_extension("jsonl.1"))?;
    }
    let line = redact(&serde_json::to_string(entry).map_err(std::io::Error::other)?);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // One write call per line: O_APPEND keeps concurrent lines whole.
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()
}

/// The last `n` entries, newest last. Unreadable lines are skipped.
pub fn tail(path: &Path, n: usize) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut entries: Vec<Entry> = text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str(line).ok())
        .take(n)
        .collect();
    entries.reverse();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ops.jsonl");
        for i in 0..3 {
            append(
                &path,
                &Entry {
                    event: "end".into(),
                    command: format!("cmd{i}"),
                    args: vec![],
                    pid: 1,
                    started_at: "t".into(),
                    ended_at: None,
                    outcome: Some("success".into()),
                    exit_code: Some(0),
                    duration_ms: None,
                    details: Default::default(),
                },
            );
        }
        let last = tail(&path, 2);
        assert_eq!(last.len(), 2);
        assert_eq!(last[1].command, "cmd2");
    }
}
