//! The classifier: journal + ledger -> the runbook's state, counts and gate.
//!
//! It predicts what the real Drizzle 0.x migrator would do, because "behind"
//! is only safe to repair if `migrate()` will in fact apply exactly the
//! missing entries. The migrator reads the ledger with
//! `ORDER BY created_at DESC LIMIT 1` and applies every journal entry whose
//! `when` is greater than that newest `created_at`. It never looks at older
//! rows, which gives the states:
//!
//! - an entry at or below the newest row with no row of its own will never be
//!   applied: `drift`;
//! - a row with an entry's `when` but another hash (the file was edited after
//!   it ran): `hash-mismatch`;
//! - rows newer than every entry (an older image deployed after a newer one
//!   migrated): `ahead`;
//! - entries newer than every row, everything else matching: `behind`.
//!
//! Ledgers the migrator would mishandle block, reported as `drift` because
//! the ledger's history no longer matches the journal:
//! - a NULL `created_at`: PostgreSQL sorts NULL first under `DESC`, so the
//!   migrator takes `Number(null) = 0` as the newest and re-runs everything;
//! - two rows for one entry: history was applied twice or copied;
//! - a row inside the journal's time range that matches no entry: a
//!   migration from another branch or a deleted entry.
//!
//! The 1.0 migrator (folder layout) matches rows to folders by `name` and
//! applies every folder without a row, whatever its timestamp, so there an
//! older missing entry is `behind`, not `drift`. Rows without a name (written
//! before the table upgrade) are matched by time, as the upgrade does. NULL
//! `created_at` only blocks where the row has no name to match by.
//!
//! Counts: `expected` = journal entries, `applied` = ledger rows, `pending` =
//! entries with no row of their own `when` (a mismatched row still counts as
//! that entry's row).

use serde::Serialize;

use super::journal::{Journal, Layout, Migration};
use super::ledger::{Ledger, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    UpToDate,
    Behind,
    Ahead,
    HashMismatch,
    Drift,
    LedgerMissing,
    Empty,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::UpToDate => "up-to-date",
            State::Behind => "behind",
            State::Ahead => "ahead",
            State::HashMismatch => "hash-mismatch",
            State::Drift => "drift",
            State::LedgerMissing => "ledger-missing",
            State::Empty => "empty",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    Pass,
    Migrate,
    Block,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Pass => "pass",
            Gate::Migrate => "migrate",
            Gate::Block => "block",
        }
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A journal entry named in the explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryRef {
    pub name: String,
    pub when: i64,
}

impl From<&Migration> for EntryRef {
    fn from(m: &Migration) -> Self {
        EntryRef {
            name: m.name.clone(),
            when: m.when,
        }
    }
}

/// A ledger row paired with the entry it should have matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub row_id: i64,
    pub entry: String,
    pub ledger_hash: String,
    pub journal_hash: String,
}

/// The full answer: state, counts, gate, and the evidence behind them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub state: State,
    pub gate: Gate,
    pub expected_count: usize,
    pub applied_count: usize,
    pub pending_count: usize,
    /// Entries the migrator would apply now (newer than every row).
    pub pending: Vec<EntryRef>,
    /// Entries at or below the newest row with no row: never applied.
    pub skipped: Vec<EntryRef>,
    pub mismatched: Vec<Mismatch>,
    /// Rows newer than every journal entry.
    pub ahead_rows: Vec<Row>,
    /// Rows inside the journal's range that match no entry.
    pub unknown_rows: Vec<Row>,
    pub null_rows: Vec<Row>,
    /// Second and later rows for the same entry.
    pub duplicate_rows: Vec<Row>,
    /// The newest `created_at` in the ledger: the 0.x migrator's cut-off.
    pub newest_applied: Option<i64>,
    /// Rows were matched by folder name (1.0 layout), not by time.
    pub by_name: bool,
}

/// Classify. `allow_migrate` turns `behind` into gate `migrate`.
pub fn classify(journal: &Journal, ledger: &Ledger, allow_migrate: bool) -> Status {
    let entries = &journal.migrations;
    let mut status = Status {
        state: State::UpToDate,
        gate: Gate::Block,
        expected_count: entries.len(),
        applied_count: 0,
        pending_count: entries.len(),
        pending: Vec::new(),
        skipped: Vec::new(),
        mismatched: Vec::new(),
        ahead_rows: Vec::new(),
        unknown_rows: Vec::new(),
        null_rows: Vec::new(),
        duplicate_rows: Vec::new(),
        newest_applied: None,
        by_name: journal.layout == Layout::Folders,
    };
    let rows = match ledger {
        Ledger::Missing => {
            status.state = State::LedgerMissing;
            status.pending = entries.iter().map(EntryRef::from).collect();
            return status;
        }
        Ledger::Rows(rows) if rows.is_empty() => {
            status.state = State::Empty;
            status.pending = entries.iter().map(EntryRef::from).collect();
            return status;
        }
        Ledger::Rows(rows) => rows,
    };
    status.applied_count = rows.len();
    let newest_when = entries.iter().map(|e| e.when).max();
    // Which entries have a row of their own `when` (matched or mismatched).
    let mut present = vec![false; entries.len()];
    // 1.0 matches rows to folders by name (set difference); rows written
    // before the upgrade have no name and are matched by time, as the 1.0
    // migrator's table upgrade does.
    let by_name = status.by_name;
    for row in rows {
        let name = row.name.as_deref().filter(|n| by_name && !n.is_empty());
        let candidates: Vec<usize> = match (name, row.created_at) {
            (Some(name), _) => (0..entries.len())
                .filter(|&i| entries[i].name == name)
                .collect(),
            (None, Some(created_at)) => (0..entries.len())
                .filter(|&i| entries[i].when == created_at)
                .collect(),
            (None, None) => {
                status.null_rows.push(row.clone());
                continue;
            }
        };
        if candidates.is_empty() {
            match row.created_at {
                Some(c) if newest_when.is_none_or(|w| c > w) => status.ahead_rows.push(row.clone()),
                _ => status.unknown_rows.push(row.clone()),
            }
            continue;
        }
        // Several entries may share a `when`; the hash picks one.
        let by_hash = candidates
            .iter()
            .copied()
            .find(|&i| entries[i].hash == row.hash);
        let index = by_hash
            .or_else(|| candidates.iter().copied().find(|&i| !present[i]))
            .unwrap_or(candidates[0]);
        if present[index] {
            status.duplicate_rows.push(row.clone());
            continue;
        }
        present[index] = true;
        if by_hash.is_none() {
            status.mismatched.push(Mismatch {
                row_id: row.id,
                entry: entries[index].name.clone(),
                ledger_hash: row.hash.clone(),
                journal_hash: entries[index].hash.clone(),
            });
        }
    }
    status.newest_applied = rows.iter().filter_map(|r| r.created_at).max();
    for (i, entry) in entries.iter().enumerate() {
        if present[i] {
            continue;
        }
        // Only the 0.x migrator stops at the newest row; 1.0 applies every
        // folder that has no row of its name.
        if !by_name
            && status
                .newest_applied
                .is_some_and(|newest| entry.when <= newest)
        {
            status.skipped.push(entry.into());
        } else {
            status.pending.push(entry.into());
        }
    }
    status.pending_count = status.pending.len() + status.skipped.len();
    status.state = if !status.null_rows.is_empty()
        || !status.duplicate_rows.is_empty()
        || !status.unknown_rows.is_empty()
        || !status.skipped.is_empty()
    {
        State::Drift
    } else if !status.mismatched.is_empty() {
        State::HashMismatch
    } else if !status.ahead_rows.is_empty() {
        State::Ahead
    } else if !status.pending.is_empty() {
        State::Behind
    } else {
        State::UpToDate
    };
    status.gate = match status.state {
        State::UpToDate => Gate::Pass,
        State::Behind if allow_migrate => Gate::Migrate,
        _ => Gate::Block,
    };
    status
}

impl Status {
    /// A few lines for people: the state, then which entries and rows.
    pub fn explain(&self, table: &str) -> Vec<String> {
        const SHOWN: usize = 5;
        let names = |list: &[EntryRef]| -> String {
            let mut text: Vec<String> = list
                .iter()
                .take(SHOWN)
                .map(|e| format!("{} (when {})", e.name, e.when))
                .collect();
            if list.len() > SHOWN {
                text.push(format!("and {} more", list.len() - SHOWN));
            }
            text.join(", ")
        };
        let rows = |list: &[Row]| -> String {
            let mut text: Vec<String> = list
                .iter()
                .take(SHOWN)
                .map(|r| match r.created_at {
                    Some(c) => format!("id {} (created_at {c})", r.id),
                    None => format!("id {} (created_at NULL)", r.id),
                })
                .collect();
            if list.len() > SHOWN {
                text.push(format!("and {} more", list.len() - SHOWN));
            }
            text.join(", ")
        };
        let mut lines = vec![format!(
            "state {}: journal has {} entries, ledger {table} has {} rows, {} pending; gate {}",
            self.state, self.expected_count, self.applied_count, self.pending_count, self.gate
        )];
        match self.state {
            State::LedgerMissing => lines.push(format!(
                "{table} does not exist: the migrator never ran against this database (or it uses another schema/table)"
            )),
            State::Empty => lines.push(format!(
                "{table} exists but holds no rows: the migrator ran with an empty journal, or the rows were deleted"
            )),
            State::UpToDate => lines.push("every journal entry has its ledger row with the same hash".into()),
            _ => {}
        }
        if !self.pending.is_empty() {
            let why = if self.by_name {
                "no row of their name".to_owned()
            } else {
                format!(
                    "newer than the newest row {}",
                    self.newest_applied.map_or("none".into(), |n| n.to_string())
                )
            };
            lines.push(format!(
                "the migrator would apply ({why}): {}",
                names(&self.pending)
            ));
        }
        if !self.skipped.is_empty() {
            lines.push(format!(
                "never applied and never will be (at or below the newest row {}, which the migrator does not look past): {}",
                self.newest_applied.map_or("none".into(), |n| n.to_string()),
                names(&self.skipped)
            ));
        }
        for m in self.mismatched.iter().take(SHOWN) {
            lines.push(format!(
                "row id {} matches entry {} by time but its hash {} differs from the image's {}: the file changed after it ran",
                m.row_id,
                m.entry,
                short(&m.ledger_hash),
                short(&m.journal_hash)
            ));
        }
        if !self.ahead_rows.is_empty() {
            lines.push(format!(
                "rows newer than every journal entry (the database was migrated by a newer image): {}",
                rows(&self.ahead_rows)
            ));
        }
        if !self.unknown_rows.is_empty() {
            lines.push(format!(
                "rows that match no journal entry (another branch, or an entry removed from the journal): {}",
                rows(&self.unknown_rows)
            ));
        }
        if !self.null_rows.is_empty() {
            lines.push(format!(
                "rows with NULL created_at (the migrator would take them as the newest and re-run every migration): {}",
                rows(&self.null_rows)
            ));
        }
        if !self.duplicate_rows.is_empty() {
            lines.push(format!(
                "duplicate rows for an entry already in the ledger: {}",
                rows(&self.duplicate_rows)
            ));
        }
        match (self.state, self.gate) {
            (State::Behind, Gate::Block) => lines.push(
                "behind without permission to migrate: rerun with --allow-migrate, or run `database migrate --execute`".into(),
            ),
            (State::Behind, Gate::Migrate) => lines.push(
                "`database migrate --execute` applies exactly the pending entries".into(),
            ),
            (State::UpToDate, _) => {}
            _ => lines.push(
                "blocked: the migrator cannot repair this; a person must reconcile the ledger and the image".into(),
            ),
        }
        lines
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(entries: &[(&str, i64, &str)]) -> Journal {
        Journal {
            layout: Layout::Journal {
                version: "7".into(),
            },
            migrations: entries
                .iter()
                .map(|(name, when, hash)| Migration {
                    name: (*name).into(),
                    when: *when,
                    hash: (*hash).into(),
                })
                .collect(),
        }
    }

    fn rows(rows: &[(i64, &str, Option<i64>)]) -> Ledger {
        Ledger::Rows(
            rows.iter()
                .map(|(id, hash, created_at)| Row {
                    id: *id,
                    hash: (*hash).into(),
                    created_at: *created_at,
                    name: None,
                })
                .collect(),
        )
    }

    fn four() -> Journal {
        journal(&[
            ("a", 10, "ha"),
            ("b", 20, "hb"),
            ("c", 30, "hc"),
            ("d", 40, "hd"),
        ])
    }

    fn counts(s: &Status) -> (State, usize, usize, usize) {
        (s.state, s.expected_count, s.applied_count, s.pending_count)
    }

    #[test]
    fn up_to_date_passes() {
        let l = rows(&[
            (1, "ha", Some(10)),
            (2, "hb", Some(20)),
            (3, "hc", Some(30)),
            (4, "hd", Some(40)),
        ]);
        let s = classify(&four(), &l, false);
        assert_eq!(counts(&s), (State::UpToDate, 4, 4, 0));
        assert_eq!(s.gate, Gate::Pass);
    }

    #[test]
    fn behind_gates_on_permission() {
        let l = rows(&[(1, "ha", Some(10)), (2, "hb", Some(20))]);
        let s = classify(&four(), &l, false);
        assert_eq!(counts(&s), (State::Behind, 4, 2, 2));
        assert_eq!(s.gate, Gate::Block);
        assert_eq!(classify(&four(), &l, true).gate, Gate::Migrate);
        let names: Vec<_> = s.pending.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
    }

    #[test]
    fn entry_below_newest_row_is_drift() {
        let l = rows(&[
            (1, "ha", Some(10)),
            (2, "hb", Some(20)),
            (3, "hd", Some(40)),
        ]);
        let s = classify(&four(), &l, true);
        assert_eq!(counts(&s), (State::Drift, 4, 3, 1));
        assert_eq!(s.skipped[0].name, "c");
        assert_eq!(s.gate, Gate::Block);
    }

    #[test]
    fn same_when_other_hash_is_hash_mismatch() {
        let l = rows(&[
            (1, "ha", Some(10)),
            (2, "XX", Some(20)),
            (3, "hc", Some(30)),
            (4, "hd", Some(40)),
        ]);
        let s = classify(&four(), &l, true);
        assert_eq!(counts(&s), (State::HashMismatch, 4, 4, 0));
        assert_eq!(s.mismatched[0].entry, "b");
        assert_eq!(s.mismatched[0].row_id, 2);
    }

    #[test]
    fn rows_newer_than_every_entry_are_ahead() {
        let j = journal(&[("a", 10, "ha"), ("b", 20, "hb"), ("c", 30, "hc")]);
        let l = rows(&[
            (1, "ha", Some(10)),
            (2, "hb", Some(20)),
            (3, "hc", Some(30)),
            (4, "hd", Some(40)),
        ]);
        let s = classify(&j, &l, true);
        assert_eq!(counts(&s), (State::Ahead, 3, 4, 0));
        assert_eq!(s.ahead_rows[0].id, 4);
    }

    #[test]
    fn null_created_at_blocks_as_drift() {
        // Everything else matches, but the migrator would sort the NULL row
        // first and re-run every entry.
        let l = rows(&[
            (1, "ha", Some(10)),
            (2, "hb", Some(20)),
            (3, "hc", Some(30)),
            (4, "hd", Some(40)),
            (5, "x", None),
        ]);
        let s = classify(&four(), &l, true);
        assert_eq!(counts(&s), (State::Drift, 4, 5, 0));
        assert_eq!(s.null_rows[0].id, 5);
        assert!(s.explain("t").iter().any(|l| l.contains("NULL")));
    }

    #[test]
    fn duplicate_rows_block_as_drift() {
        let l = rows(&[
            (1, "ha", Some(10)),
            (2, "ha", Some(10)),
            (3, "hb", Some(20)),
        ]);
        let s = classify(&four(), &l, true);
        assert_eq!(s.state, State::Drift);
        assert_eq!(s.duplicate_rows[0].id, 2);
        assert_eq!(s.gate, Gate::Block);
    }

    #[test]
    fn row_matching_nothing_inside_the_range_is_drift() {
        let l = rows(&[
            (1, "ha", Some(10)),
            (2, "zz", Some(15)),
            (3, "hb", Some(20)),
        ]);
        let s = classify(&four(), &l, true);
        assert_eq!(s.state, State::Drift);
        assert_eq!(s.unknown_rows[0].id, 2);
        // c and d are still newer than the newest row: counted as pending.
        assert_eq!(s.pending_count, 2);
    }

    #[test]
    fn missing_and_empty_ledgers_block_even_with_permission() {
        let s = classify(&four(), &Ledger::Missing, true);
        assert_eq!(counts(&s), (State::LedgerMissing, 4, 0, 4));
        assert_eq!(s.gate, Gate::Block);
        let s = classify(&four(), &Ledger::Rows(vec![]), true);
        assert_eq!(counts(&s), (State::Empty, 4, 0, 4));
        assert_eq!(s.gate, Gate::Block);
    }

    #[test]
    fn shared_when_is_told_apart_by_hash() {
        let j = journal(&[("a", 10, "ha"), ("b", 10, "hb"), ("c", 20, "hc")]);
        let l = rows(&[(1, "hb", Some(10)), (2, "ha", Some(10))]);
        let s = classify(&j, &l, true);
        assert_eq!(counts(&s), (State::Behind, 3, 2, 1));
    }

    fn folders(entries: &[(&str, i64, &str)]) -> Journal {
        Journal {
            layout: Layout::Folders,
            ..journal(entries)
        }
    }

    fn named(rows: &[(i64, &str, Option<i64>, Option<&str>)]) -> Ledger {
        Ledger::Rows(
            rows.iter()
                .map(|(id, hash, created_at, name)| Row {
                    id: *id,
                    hash: (*hash).into(),
                    created_at: *created_at,
                    name: name.map(str::to_owned),
                })
                .collect(),
        )
    }

    #[test]
    fn folder_layout_applies_an_older_missing_folder_so_it_is_behind() {
        let j = folders(&[("a", 10, "ha"), ("b", 20, "hb"), ("c", 30, "hc")]);
        let l = named(&[
            (1, "ha", Some(10), Some("a")),
            (2, "hc", Some(30), Some("c")),
        ]);
        let s = classify(&j, &l, true);
        assert_eq!(counts(&s), (State::Behind, 3, 2, 1));
        assert_eq!(s.pending[0].name, "b");
        assert_eq!(s.gate, Gate::Migrate);
    }

    #[test]
    fn folder_layout_matches_by_name_not_time() {
        // created_at is wall-clock here; the name still matches.
        let j = folders(&[("a", 10, "ha"), ("b", 20, "hb")]);
        let l = named(&[(1, "ha", Some(999), Some("a")), (2, "hb", None, Some("b"))]);
        let s = classify(&j, &l, true);
        assert_eq!(counts(&s), (State::UpToDate, 2, 2, 0));
        let l = named(&[
            (1, "XX", Some(10), Some("a")),
            (2, "hb", Some(20), Some("b")),
        ]);
        assert_eq!(classify(&j, &l, true).state, State::HashMismatch);
        let l = named(&[
            (1, "ha", Some(10), Some("a")),
            (2, "hb", Some(20), Some("b")),
            (3, "hz", Some(5), Some("z")),
        ]);
        assert_eq!(classify(&j, &l, true).state, State::Drift);
        let l = named(&[
            (1, "ha", Some(10), Some("a")),
            (2, "hb", Some(20), Some("b")),
            (3, "hz", Some(50), Some("z")),
        ]);
        assert_eq!(classify(&j, &l, true).state, State::Ahead);
    }

    #[test]
    fn folder_layout_classifies_by_timestamp() {
        let mut j = four();
        j.layout = Layout::Folders;
        let l = Ledger::Rows(vec![Row {
            id: 1,
            hash: "ha".into(),
            created_at: Some(10),
            name: Some("a".into()),
        }]);
        let s = classify(&j, &l, true);
        assert_eq!(counts(&s), (State::Behind, 4, 1, 3));
        assert_eq!(s.gate, Gate::Migrate);
    }
}
