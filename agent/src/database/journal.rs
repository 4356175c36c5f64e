//! The migration journal: what the deployed API image says the database
//! should hold.
//!
//! Drizzle ships its migrations as a folder. Two layouts exist and both are
//! read here, the way the real migrator reads them, because the status gate is
//! only worth anything if it predicts what `migrate()` will do:
//!
//! - 0.x: `meta/_journal.json` (journal versions 5 and 7 have the same entry
//!   shape: `idx`, `when`, `tag`, `breakpoints`) and one `<tag>.sql` per entry.
//!   The migrator takes the entries in journal order and writes `when` into
//!   the ledger's `created_at`.
//! - 1.0: one folder per migration, `<YYYYMMDDHHMMSS>_<name>/migration.sql`,
//!   ordered by folder name; `when` is the folder's timestamp as UTC millis.
//!   The 1.0 migrator refuses a folder that still has `meta/_journal.json`, so
//!   that file decides the layout.
//!
//! The hash is SHA-256 of the file *as Node reads it into a string*
//! (`readFileSync(...).toString()`), not of the raw bytes: invalid UTF-8
//! becomes U+FFFD before hashing. Rust's `String::from_utf8_lossy` replaces
//! the same maximal subparts as Node's decoder (checked against Node 20 in the
//! tests below), and a BOM is kept by both.
//!
//! The folder comes either from a local directory or from a tar archive (the
//! Docker archive API of a created, never-started container), so the parser
//! works on [`Files`], an in-memory map of the folder's small text files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Upper bound on the bytes read from one migrations folder: a journal is a
/// few hundred kilobytes; anything near this is not a migrations folder.
const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("no Drizzle migrations in {origin}: neither meta/_journal.json (0.x) nor <YYYYMMDDHHMMSS>_<name>/migration.sql folders (1.0)")]
    NotFound { origin: String },
    #[error("cannot parse {origin}/meta/_journal.json: {message}")]
    Parse { origin: String, message: String },
    #[error("journal entry {tag:?} has no file {origin}/{tag}.sql (the migrator would fail the same way)")]
    MissingFile { origin: String, tag: String },
    #[error("migration folder {name:?} in {origin} does not start with a valid UTC timestamp YYYYMMDDHHMMSS")]
    BadFolderName { origin: String, name: String },
    #[error("{origin} holds more than {MAX_TOTAL_BYTES} bytes; that is not a migrations folder")]
    TooLarge { origin: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which layout the folder uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Layout {
    /// 0.x `meta/_journal.json` with its `version` field ("5", "7").
    Journal { version: String },
    /// 1.0 folder per migration.
    Folders,
}

/// One migration as the migrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    /// The journal `tag` (0.x) or the folder name (1.0).
    pub name: String,
    /// Milliseconds since the epoch: the value the migrator writes into the
    /// ledger's `created_at` and compares with it.
    pub when: i64,
    /// SHA-256 hex of the file as Node reads it.
    pub hash: String,
}

/// The parsed folder, migrations in the order the migrator applies them.
#[derive(Debug, Clone, Serialize)]
pub struct Journal {
    pub layout: Layout,
    pub migrations: Vec<Migration>,
}

/// The small files of a migrations folder, by path relative to the folder
/// (`meta/_journal.json`, `0000_init.sql`, `20250101000000_init/migration.sql`).
#[derive(Debug, Default, Clone)]
pub struct Files {
    files: BTreeMap<String, Vec<u8>>,
}

impl Files {
    pub fn insert(&mut self, path: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(path.into(), bytes);
    }

    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Read a local folder: files at the top and one level down, which is all
    /// either layout uses. Symlinks are followed, as Node's `readFileSync` does.
    pub fn from_dir(dir: &Path) -> Result<Files, JournalError> {
        let mut files = Files::default();
        let mut total = 0u64;
        let read_err = |path: &Path, source| JournalError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut stack: Vec<(PathBuf, String, usize)> = vec![(dir.to_path_buf(), String::new(), 0)];
        while let Some((folder, prefix, depth)) = stack.pop() {
            let entries = std::fs::read_dir(&folder).map_err(|e| read_err(&folder, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| read_err(&folder, e))?;
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue; // not UTF-8: no Drizzle tag or folder looks like that
                };
                let rel = format!("{prefix}{name}");
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue; // a dangling symlink is not a migration
                };
                if meta.is_dir() {
                    if depth == 0 {
                        stack.push((path, format!("{rel}/"), depth + 1));
                    }
                } else if meta.is_file() && is_wanted(&rel) {
                    total += meta.len();
                    if total > MAX_TOTAL_BYTES {
                        return Err(JournalError::TooLarge {
                            origin: dir.display().to_string(),
                        });
                    }
                    let bytes = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
                    files.insert(rel, bytes);
                }
            }
        }
        Ok(files)
    }

    /// Read the tar the Docker archive API returns for the folder: every entry
    /// sits under the folder's own name (`drizzle/meta/_journal.json`), which
    /// is stripped.
    pub fn from_tar(reader: impl Read, origin: &str) -> Result<Files, JournalError> {
        let read_err = |source| JournalError::Read {
            path: origin.to_owned(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        let mut files = Files::default();
        let mut total = 0u64;
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(read_err)?.into_owned();
            let mut parts = path.components();
            parts.next(); // the folder's own name
            let Some(rel) = parts.as_path().to_str().map(str::to_owned) else {
                continue;
            };
            if rel.is_empty() || !is_wanted(&rel) {
                continue;
            }
            total += entry.size();
            if total > MAX_TOTAL_BYTES {
                return Err(JournalError::TooLarge {
                    origin: origin.to_owned(),
                });
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read_err)?;
            files.insert(rel, bytes);
        }
        Ok(files)
    }
}

/// Only what a layout can use: the journal, top-level `.sql`, and
/// `<folder>/migration.sql`. Snapshots (`meta/*_snapshot.json`) are skipped.
fn is_wanted(rel: &str) -> bool {
    match rel.split_once('/') {
        None => rel.ends_with(".sql"),
        Some(("meta", "_journal.json")) => true,
        Some((_, "migration.sql")) => true,
        Some(_) => false,
    }
}

/// SHA-256 hex of `bytes` decoded the way Node's `Buffer#toString()` does.
pub fn node_hash(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(serde::Deserialize)]
struct JournalFile {
    #[serde(default)]
    version: Option<serde_json::Value>,
    entries: Vec<JournalEntry>,
}

#[derive(serde::Deserialize)]
struct JournalEntry {
    when: i64,
    tag: String,
}

/// Parse a migrations folder; `origin` names it in errors.
pub fn parse(files: &Files, origin: &str) -> Result<Journal, JournalError> {
    if let Some(bytes) = files.get("meta/_journal.json") {
        return parse_journal(files, bytes, origin);
    }
    parse_folders(files, origin)
}

fn parse_journal(files: &Files, bytes: &[u8], origin: &str) -> Result<Journal, JournalError> {
    let text = String::from_utf8_lossy(bytes);
    let journal: JournalFile = serde_json::from_str(&text).map_err(|e| JournalError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let version = match journal.version {
        Some(serde_json::Value::String(v)) => v,
        Some(other) => other.to_string(),
        None => "unknown".into(),
    };
    let mut migrations = Vec::with_capacity(journal.entries.len());
    for entry in journal.entries {
        let file = format!("{}.sql", entry.tag);
        let bytes = files.get(&file).ok_or_else(|| JournalError::MissingFile {
            origin: origin.to_owned(),
            tag: entry.tag.clone(),
        })?;
        migrations.push(Migration {
            hash: node_hash(bytes),
            name: entry.tag,
            when: entry.when,
        });
    }
    Ok(Journal {
        layout: Layout::Journal { version },
        migrations,
    })
}

fn parse_folders(files: &Files, origin: &str) -> Result<Journal, JournalError> {
    let mut migrations = Vec::new();
    for (path, bytes) in &files.files {
        let Some((folder, "migration.sql")) = path.split_once('/') else {
            continue;
        };
        let when = folder_millis(folder).ok_or_else(|| JournalError::BadFolderName {
            origin: origin.to_owned(),
            name: folder.to_owned(),
        })?;
        migrations.push(Migration {
            name: folder.to_owned(),
            when,
            hash: node_hash(bytes),
        });
    }
    if migrations.is_empty() {
        return Err(JournalError::NotFound {
            origin: origin.to_owned(),
        });
    }
    // The migrator sorts with `localeCompare`; for `<14 digits>_<snake_case>`
    // names that is the timestamp first, then the name ignoring case.
    migrations.sort_by(|a, b| {
        (a.when, a.name.to_lowercase(), &a.name).cmp(&(b.when, b.name.to_lowercase(), &b.name))
    });
    Ok(Journal {
        layout: Layout::Folders,
        migrations,
    })
}

/// `Date.UTC` of the folder name's first 14 characters. Out-of-range fields
/// (month 13) would roll over in JavaScript; a folder like that is a mistake,
/// so it is refused instead of guessed at.
fn folder_millis(folder: &str) -> Option<i64> {
    let stamp = folder.get(..14)?;
    if !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<u32>().ok();
    let year = i32::try_from(field(0..4)?).ok()?;
    if year < 100 {
        return None; // Date.UTC maps years 0-99 to 1900-1999
    }
    let date = chrono::NaiveDate::from_ymd_opt(year, field(4..6)?, field(6..8)?)?;
    let time = date.and_hms_opt(field(8..10)?, field(10..12)?, field(12..14)?)?;
    Some(time.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_node_for_invalid_utf8() {
        // Expected values printed by Node 20:
        // crypto.createHash('sha256').update(buf.toString()).digest('hex')
        let cases: [(&[u8], &str); 5] = [
            (
                &[0x61, 0xff, 0x62],
                "05087813392efc16fe8ff448920c6328e53af865df39419436659d9ffda90f7b",
            ),
            (
                &[0xed, 0xa0, 0x80, 0x41],
                "2bd433ff893b359e66d217d102424e02ad5f0c37e2d0853404813bb1b6920ec0",
            ),
            (
                &[0xe2, 0x82, 0x41],
                "1b6d8a78363cf390895eba876b9fefb99d73506bb40fe31c4efeb2b58f7fe1fc",
            ),
            (
                &[0xf0, 0x9f, 0x98],
                "83d544ccc223c057d2bf80d3f2a32982c32c3c0db8e2674820da5064783fb097",
            ),
            (
                &[0xef, 0xbb, 0xbf, 0x41, 0xc0, 0x80, 0xf4, 0x90, 0x80, 0x80],
                "de78d21f84f7fc838d82e404d861b42daa40cdc9fe31f3d2e9b20f8261df28d8",
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(node_hash(bytes), expected, "bytes {bytes:02x?}");
        }
    }

    #[test]
    fn valid_utf8_hashes_like_sha256sum() {
        assert_eq!(
            node_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn journal_files(version: &str) -> Files {
        let mut files = Files::default();
        files.insert(
            "meta/_journal.json",
            format!(
                r#"{{"version":"{version}","dialect":"pg","entries":[
                {{"idx":0,"version":"{version}","when":1700000000000,"tag":"0000_a","breakpoints":true}},
                {{"idx":1,"version":"{version}","when":1700000001000,"tag":"0001_b","breakpoints":true}}]}}"#
            )
            .into_bytes(),
        );
        files.insert("0000_a.sql", b"CREATE TABLE a();".to_vec());
        files.insert("0001_b.sql", b"CREATE TABLE b();".to_vec());
        files
    }

    #[test]
    fn journal_versions_5_and_7_read_alike() {
        for version in ["5", "7"] {
            let journal = parse(&journal_files(version), "t").unwrap();
            assert_eq!(
                journal.layout,
                Layout::Journal {
                    version: version.into()
                }
            );
            let names: Vec<_> = journal.migrations.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["0000_a", "0001_b"]);
            assert_eq!(journal.migrations[1].when, 1_700_000_001_000);
            assert_eq!(journal.migrations[0].hash, node_hash(b"CREATE TABLE a();"));
        }
    }

    #[test]
    fn missing_sql_file_is_named() {
        let mut files = journal_files("7");
        files.files.remove("0001_b.sql");
        let e = parse(&files, "/app/drizzle").unwrap_err().to_string();
        assert!(e.contains("0001_b"), "{e}");
    }

    #[test]
    fn folder_layout_orders_by_name_and_uses_utc_timestamp() {
        let mut files = Files::default();
        files.insert("20250102030405_second/migration.sql", b"B".to_vec());
        files.insert("20250101000000_first/migration.sql", b"A".to_vec());
        files.insert("20250101000000_first/snapshot.json", b"{}".to_vec());
        let journal = parse(&files, "t").unwrap();
        assert_eq!(journal.layout, Layout::Folders);
        assert_eq!(journal.migrations[0].name, "20250101000000_first");
        // Date.UTC(2025, 0, 2, 3, 4, 5) in Node.
        assert_eq!(journal.migrations[1].when, 1_735_787_045_000);
        assert_eq!(journal.migrations[1].hash, node_hash(b"B"));
    }

    #[test]
    fn bad_folder_timestamp_is_refused() {
        let mut files = Files::default();
        files.insert("20251301000000_bad/migration.sql", b"B".to_vec());
        assert!(matches!(
            parse(&files, "t"),
            Err(JournalError::BadFolderName { .. })
        ));
    }

    #[test]
    fn empty_folder_is_not_found() {
        assert!(matches!(
            parse(&Files::default(), "t"),
            Err(JournalError::NotFound { .. })
        ));
    }

    #[test]
    fn tar_entries_are_relative_to_the_folder() {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in [
            (
                "drizzle/meta/_journal.json",
                &br#"{"version":"7","entries":[{"when":5,"tag":"0000_a"}]}"#[..],
            ),
            ("drizzle/0000_a.sql", &b"SELECT 1;"[..]),
            ("drizzle/meta/0000_snapshot.json", &b"{}"[..]),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, data).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let files = Files::from_tar(&bytes[..], "image").unwrap();
        assert!(files.get("meta/0000_snapshot.json").is_none());
        let journal = parse(&files, "image").unwrap();
        assert_eq!(journal.migrations[0].when, 5);
        assert_eq!(journal.migrations[0].hash, node_hash(b"SELECT 1;"));
    }
}
