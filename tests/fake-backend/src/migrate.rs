//! `migrate`: the Drizzle 0.x node-postgres migrator, reproduced faithfully.
//!
//! The agent's status classifier predicts what the real migrator will do to a
//! ledger; the end-to-end tests check that prediction by running this one in
//! the API container. So it must make the same choices as drizzle-orm 0.x
//! (`migrator.ts` `readMigrationFiles` and `pg-core/dialect.ts` `migrate`):
//!
//! - entries come from `meta/_journal.json` in journal order; each
//!   `<tag>.sql` is read into a string (invalid UTF-8 becomes U+FFFD, as
//!   Node's `Buffer.toString()` does), split on `--> statement-breakpoint`,
//!   and hashed as SHA-256 hex of that string;
//! - only the newest ledger row counts (`order by created_at desc limit 1`;
//!   Postgres sorts NULL first in a descending order, and JavaScript's
//!   `Number(null)` is 0);
//! - every entry whose `when` is newer than that row is applied, all in one
//!   transaction, and recorded as `(hash, when)`: older entries missing from
//!   the ledger are never looked at.
//!
//! Some later drizzle-orm sources also turn CRLF into LF before hashing; the
//! fixtures were made with 0.45.4, which hashes the file as read, and so does
//! this.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const BREAKPOINT: &str = "--> statement-breakpoint";

/// One journal entry with its file read, as `readMigrationFiles` returns it.
#[derive(Debug, Clone)]
pub struct Migration {
    pub tag: String,
    pub when: i64,
    pub hash: String,
    pub statements: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Journal {
    entries: Vec<JournalEntry>,
}

#[derive(serde::Deserialize)]
struct JournalEntry {
    when: i64,
    tag: String,
}

/// SHA-256 hex of the file as Node reads it into a string.
pub fn hash_file_contents(bytes: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    (text, hash)
}

/// Reads the folder the way drizzle-orm's `readMigrationFiles` does.
pub fn read_migration_files(dir: &Path) -> Result<Vec<Migration>, String> {
    let journal_path = dir.join("meta").join("_journal.json");
    let journal_bytes = std::fs::read(&journal_path).map_err(|e| {
        format!(
            "Can't find meta/_journal.json file ({}: {e})",
            journal_path.display()
        )
    })?;
    let journal: Journal = serde_json::from_slice(&journal_bytes)
        .map_err(|e| format!("{} is not a Drizzle journal: {e}", journal_path.display()))?;
    journal
        .entries
        .into_iter()
        .map(|entry| {
            let path: PathBuf = dir.join(format!("{}.sql", entry.tag));
            let bytes = std::fs::read(&path).map_err(|_| {
                format!(
                    "No file {} found in {} folder",
                    path.display(),
                    dir.display()
                )
            })?;
            let (text, hash) = hash_file_contents(&bytes);
            Ok(Migration {
                tag: entry.tag,
                when: entry.when,
                hash,
                statements: text.split(BREAKPOINT).map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The newest ledger row as the migrator sees it: `None` when the ledger is
/// empty, `Some(None)` when that row's `created_at` is NULL.
pub type NewestRow = Option<Option<i64>>;

/// Indexes (in journal order) of the entries the migrator will apply.
pub fn plan(migrations: &[Migration], newest: NewestRow) -> Vec<usize> {
    migrations
        .iter()
        .enumerate()
        .filter(|(_, m)| match newest {
            None => true,
            // Number(null) === 0 in JavaScript.
            Some(created_at) => created_at.unwrap_or(0) < m.when,
        })
        .map(|(i, _)| i)
        .collect()
}

/// `"name"` with embedded quotes doubled, as `sql.identifier` renders it.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub async fn run_from_env() -> Result<(), String> {
    let dir = std::env::var("MIGRATIONS_DIR").unwrap_or_else(|_| "/app/drizzle".into());
    let schema = std::env::var("MIGRATIONS_SCHEMA").unwrap_or_else(|_| "drizzle".into());
    let table = std::env::var("MIGRATIONS_TABLE").unwrap_or_else(|_| "__drizzle_migrations".into());
    if std::env::var("FAKE_MIGRATE_FAIL").is_ok_and(|v| v == "1") {
        return Err("migrate: failing on purpose (FAKE_MIGRATE_FAIL=1)".into());
    }
    let url = crate::database_url()?;
    let migrations = read_migration_files(Path::new(&dir))?;
    println!("migrate: {} journal entries in {dir}", migrations.len());
    let mut client = crate::connect(&url).await?;
    migrate(&mut client, &migrations, &schema, &table).await
}

pub async fn migrate(
    client: &mut tokio_postgres::Client,
    migrations: &[Migration],
    schema: &str,
    table: &str,
) -> Result<(), String> {
    let ledger = format!("{}.{}", ident(schema), ident(table));
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)))
        .await
        .map_err(|e| format!("migrate: cannot create schema {schema}: {e}"))?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (\n\tid SERIAL PRIMARY KEY,\n\thash text NOT NULL,\n\tcreated_at bigint\n)"
        ))
        .await
        .map_err(|e| format!("migrate: cannot create {schema}.{table}: {e}"))?;
    let rows = client
        .query(
            &format!("select id, hash, created_at from {ledger} order by created_at desc limit 1"),
            &[],
        )
        .await
        .map_err(|e| format!("migrate: cannot read {schema}.{table}: {e}"))?;
    let newest: NewestRow = match rows.first() {
        None => None,
        Some(row) => Some(
            row.try_get::<_, Option<i64>>(2)
                .map_err(|e| format!("migrate: bad created_at: {e}"))?,
        ),
    };
    match newest {
        None => println!("migrate: ledger {schema}.{table} is empty"),
        Some(None) => println!("migrate: newest ledger row has created_at NULL (counts as 0)"),
        Some(Some(at)) => println!("migrate: newest ledger row created_at={at}"),
    }
    let chosen = plan(migrations, newest);
    if chosen.is_empty() {
        println!("migrate: nothing to apply");
        return Ok(());
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| format!("migrate: cannot begin a transaction: {e}"))?;
    for &i in &chosen {
        let m = &migrations[i];
        println!(
            "migrate: applying {} (when={}, hash={})",
            m.tag, m.when, m.hash
        );
        for stmt in &m.statements {
            tx.batch_execute(stmt).await.map_err(|e| {
                format!(
                    "migrate: {} failed, nothing applied: {}",
                    m.tag,
                    db_error(&e)
                )
            })?;
        }
        tx.execute(
            &format!("insert into {ledger} (\"hash\", \"created_at\") values($1, $2)"),
            &[&m.hash, &m.when],
        )
        .await
        .map_err(|e| format!("migrate: cannot record {}: {e}", m.tag))?;
    }
    tx.commit()
        .await
        .map_err(|e| format!("migrate: commit failed, nothing applied: {e}"))?;
    println!("migrate: applied {} migration(s)", chosen.len());
    Ok(())
}

/// The server's message, not just "db error".
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(tag: &str, when: i64) -> Migration {
        Migration {
            tag: tag.into(),
            when,
            hash: String::new(),
            statements: vec![],
        }
    }

    fn journal() -> Vec<Migration> {
        vec![
            m("0000", 100),
            m("0001", 200),
            m("0002", 300),
            m("0003", 400),
        ]
    }

    #[test]
    fn empty_ledger_applies_everything() {
        assert_eq!(plan(&journal(), None), vec![0, 1, 2, 3]);
    }

    #[test]
    fn applies_only_entries_newer_than_the_newest_row() {
        assert_eq!(plan(&journal(), Some(Some(200))), vec![2, 3]);
        assert_eq!(plan(&journal(), Some(Some(400))), Vec::<usize>::new());
        assert_eq!(plan(&journal(), Some(Some(10_000))), Vec::<usize>::new());
    }

    #[test]
    fn an_older_missing_entry_is_never_applied() {
        // Ledger holds 0000, 0001, 0003: the newest is 400, so 0002 (300)
        // stays missing for good. That is drift.
        assert_eq!(plan(&journal(), Some(Some(400))), Vec::<usize>::new());
    }

    #[test]
    fn equal_when_is_not_newer() {
        assert_eq!(plan(&journal(), Some(Some(300))), vec![3]);
        assert_eq!(plan(&journal(), Some(Some(299))), vec![2, 3]);
    }

    #[test]
    fn null_created_at_counts_as_zero_and_reapplies_history() {
        assert_eq!(plan(&journal(), Some(None)), vec![0, 1, 2, 3]);
        assert_eq!(plan(&[m("neg", -5)], Some(None)), Vec::<usize>::new());
    }

    #[test]
    fn journal_order_is_kept_even_when_when_is_not_sorted() {
        let j = vec![m("b", 500), m("a", 150), m("c", 600)];
        assert_eq!(plan(&j, Some(Some(100))), vec![0, 1, 2]);
        assert_eq!(plan(&j, Some(Some(200))), vec![0, 2]);
    }

    #[test]
    fn hash_is_of_the_string_node_would_read() {
        let (text, hash) = hash_file_contents(b"SELECT 1;\n");
        assert_eq!(text, "SELECT 1;\n");
        assert_eq!(hash, hex::encode(Sha256::digest(b"SELECT 1;\n")));
        // 0xff is not UTF-8: Node turns it into U+FFFD (EF BF BD) first.
        let (text, hash) = hash_file_contents(b"-- \xff\n");
        assert_eq!(text, "-- \u{fffd}\n");
        assert_eq!(hash, hex::encode(Sha256::digest(b"-- \xef\xbf\xbd\n")));
    }

    fn fixtures() -> PathBuf {
        // tests/fake-backend -> tests/fixtures/drizzle
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/drizzle")
    }

    #[test]
    fn reads_the_real_fixture_and_matches_the_real_ledger_hashes() {
        let dir = fixtures().join("up-to-date");
        assert!(
            dir.exists(),
            "{} is missing: the Drizzle fixtures ship in tests/fixtures/drizzle",
            dir.display()
        );
        let migrations = read_migration_files(&dir.join("image-migrations")).unwrap();
        let tags: Vec<_> = migrations.iter().map(|m| m.tag.as_str()).collect();
        assert_eq!(
            tags,
            ["0000_init", "0001_events", "0002_media", "0003_event_venue"]
        );
        let dump = std::fs::read_to_string(dir.join("database.sql")).unwrap();
        for m in &migrations {
            let row = format!("'{}', {});", m.hash, m.when);
            assert!(dump.contains(&row), "ledger row {row} not in the dump");
        }
        let sql: String = migrations[0].statements.concat();
        assert!(!sql.contains(BREAKPOINT));
    }

    #[test]
    fn missing_files_fail_like_drizzle() {
        let dir = std::env::temp_dir().join(format!("fake-backend-mig-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("meta")).unwrap();
        let err = read_migration_files(&dir).unwrap_err();
        assert!(
            err.starts_with("Can't find meta/_journal.json file"),
            "{err}"
        );
        std::fs::write(
            dir.join("meta/_journal.json"),
            r#"{"version":"7","dialect":"postgresql","entries":[{"idx":0,"version":"7","when":1,"tag":"0000_x","breakpoints":true}]}"#,
        )
        .unwrap();
        let err = read_migration_files(&dir).unwrap_err();
        assert!(
            err.starts_with("No file ") && err.contains("0000_x.sql"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
