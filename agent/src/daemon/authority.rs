//! Whether the daemon may touch the project at all: only while the last
//! gated command that changes what runs (`runtime deploy`, `runtime
//! rollback`, `database migrate`) succeeded, as the operation journal
//! records it.
//!
//! After such a command failed or was interrupted, what runs is what that
//! command left, and the operator decides what happens next (look at it,
//! roll back through the receipt, deploy again). A heal would replace the
//! evidence with a release no gate passed this time, so the daemon waits
//! until a deploy or rollback succeeds and says that it is waiting, and
//! why. A successful migrate does not end the wait: it changes the schema,
//! not what runs.

use crate::config::Config;
use crate::journal::{self, Entry};

/// Commands whose failure stops the daemon from healing.
const GATED: [&str; 3] = ["runtime deploy", "runtime rollback", "database migrate"];
/// Commands whose success lets it heal again.
const CLEARS: [&str; 2] = ["runtime deploy", "runtime rollback"];
/// How far back the journal is read: far more entries than any host
/// writes between two deploys, bounded so a check stays cheap.
const LOOK_BACK: usize = 2000;

/// Why the daemon must not heal now, or `None` when it may. Read with the
/// operation lock held, so a `start` with no `end` is a killed run, not one
/// in progress.
pub fn waiting_for(config: &Config) -> Option<String> {
    blocked_by(&journal::tail(&config.journal_path(), LOOK_BACK))
}

/// [`waiting_for`] over journal entries, oldest first.
pub fn blocked_by(entries: &[Entry]) -> Option<String> {
    let mut blocked: Option<String> = None;
    let mut open: Option<&Entry> = None;
    for entry in entries
        .iter()
        .filter(|e| GATED.contains(&e.command.as_str()))
    {
        match entry.event.as_str() {
            "start" => {
                // Operations run one at a time: a start after a start that
                // never ended means the first process died.
                if let Some(killed) = open.take() {
                    blocked = Some(interrupted(killed));
                }
                open = Some(entry);
            }
            "end" => {
                if open.is_some_and(|o| o.pid == entry.pid && o.started_at == entry.started_at) {
                    open = None;
                }
                match entry.outcome.as_deref() {
                    Some("success") if CLEARS.contains(&entry.command.as_str()) => blocked = None,
                    // Changed nothing (a rollback to what already runs).
                    Some("success" | "nothing-to-do") => {}
                    outcome => blocked = Some(failed(entry, outcome.unwrap_or("unknown"))),
                }
            }
            _ => {}
        }
    }
    if let Some(killed) = open {
        blocked = Some(interrupted(killed));
    }
    blocked
}

fn failed(entry: &Entry, outcome: &str) -> String {
    let stage = entry
        .details
        .iter()
        .find(|(k, _)| k.ends_with("_FAILED_STAGE"))
        .and_then(|(_, v)| v.as_str())
        .map(|s| format!(" at {s}"))
        .unwrap_or_default();
    let word = if outcome == "interrupted" {
        "was interrupted".to_owned()
    } else {
        format!("failed ({outcome})")
    };
    format!(
        "the last `{}` {word}{stage} ({})",
        entry.command,
        entry.ended_at.as_deref().unwrap_or(&entry.started_at)
    )
}

fn interrupted(entry: &Entry) -> String {
    format!(
        "the last `{}` (pid {}, started {}) was killed before it ended",
        entry.command, entry.pid, entry.started_at
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(command: &str, event: &str, pid: u32, outcome: Option<&str>) -> Entry {
        let mut details = serde_json::Map::new();
        if outcome == Some("failed") {
            details.insert("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE".into(), "pull".into());
        }
        Entry {
            event: event.into(),
            command: command.into(),
            args: vec![],
            pid,
            started_at: format!("t{pid}"),
            ended_at: outcome.map(|_| format!("e{pid}")),
            outcome: outcome.map(str::to_owned),
            exit_code: None,
            duration_ms: None,
            details,
        }
    }

    #[test]
    fn a_failed_or_killed_gated_command_blocks_until_a_deploy_or_rollback_succeeds() {
        let ok = |c: &str, pid| {
            vec![
                entry(c, "start", pid, None),
                entry(c, "end", pid, Some("success")),
            ]
        };
        assert_eq!(blocked_by(&[]), None);
        assert_eq!(blocked_by(&ok("runtime deploy", 1)), None);

        let mut log = ok("runtime deploy", 1);
        log.push(entry("runtime deploy", "start", 2, None));
        log.push(entry("runtime deploy", "end", 2, Some("failed")));
        let why = blocked_by(&log).expect("blocked");
        assert!(
            why.contains("`runtime deploy` failed (failed) at pull"),
            "{why}"
        );
        // Heals, runtime-env and a successful migrate do not clear it.
        log.extend(ok("daemon heal", 3));
        log.extend(ok("runtime-env", 4));
        log.extend(ok("database migrate", 5));
        assert!(blocked_by(&log).is_some());
        log.extend(ok("runtime rollback", 6));
        assert_eq!(blocked_by(&log), None);

        // A migrate interrupted by a signal, then one killed outright.
        log.push(entry("database migrate", "start", 7, None));
        log.push(entry("database migrate", "end", 7, Some("interrupted")));
        assert!(blocked_by(&log).unwrap().contains("was interrupted"));
        log.extend(ok("runtime deploy", 8));
        log.push(entry("runtime deploy", "start", 9, None));
        let why = blocked_by(&log).expect("killed");
        assert!(why.contains("pid 9") && why.contains("killed"), "{why}");
        // The killed one followed by a successful deploy: clear again.
        log.extend(ok("runtime deploy", 10));
        assert_eq!(blocked_by(&log), None);
        // A daemon heal killed midway is not a gated command.
        log.push(entry("daemon heal", "start", 11, None));
        assert_eq!(blocked_by(&log), None);
    }
}
