//! The fake migrator against the fixtures made by the real Drizzle migrator.
//!
//! Each fixture's `database.sql` is loaded into a fresh database on the local
//! stack's Postgres (`scripts/stack/up`), the `fake-backend migrate` binary
//! runs with that fixture's image migrations, and the resulting ledger must be
//! exactly what the real migrator would leave: for `behind`, the ledger that
//! `up-to-date/database.sql` holds, row for row.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/drizzle")
}

/// WAVEMAP_TEST_PG_URL from the environment or the stack's env file.
fn pg_url() -> String {
    if let Ok(url) = std::env::var("WAVEMAP_TEST_PG_URL") {
        return url;
    }
    let env_file = repo_root().join(".stack/env");
    let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/stack/up first (or set WAVEMAP_TEST_PG_URL)",
            env_file.display()
        )
    });
    text.lines()
        .find_map(|l| l.strip_prefix("WAVEMAP_TEST_PG_URL="))
        .map(str::to_string)
        .expect("WAVEMAP_TEST_PG_URL in .stack/env")
}

/// `postgres://.../postgres` with the database name replaced.
fn url_for(base: &str, db: &str) -> String {
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{prefix}/{db}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the stack's Postgres: {e}"));
    tokio::spawn(conn);
    client
}

type Ledger = Vec<(i32, String, Option<i64>)>;

async fn ledger(client: &tokio_postgres::Client) -> Ledger {
    client
        .query(
            "SELECT id, hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id",
            &[],
        )
        .await
        .expect("ledger readable")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The ledger rows of a fixture dump, parsed from its INSERT lines.
fn dumped_ledger(fixture: &str) -> Ledger {
    let dump = std::fs::read_to_string(fixtures().join(fixture).join("database.sql")).unwrap();
    dump.lines()
        .filter_map(|l| l.strip_prefix("INSERT INTO drizzle.__drizzle_migrations VALUES ("))
        .map(|rest| {
            let rest = rest.trim_end_matches(");");
            let parts: Vec<&str> = rest.split(", ").collect();
            (
                parts[0].parse().unwrap(),
                parts[1].trim_matches('\'').to_string(),
                parts[2].parse().ok(),
            )
        })
        .collect()
}

/// A fresh database loaded with the fixture's dump; dropped by `drop_db`.
async fn load(
    admin: &tokio_postgres::Client,
    base: &str,
    fixture: &str,
    test: &str,
) -> (String, String) {
    let db = format!(
        "fb_{test}_{}_{}",
        fixture.replace('-', "_"),
        std::process::id()
    );
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let url = url_for(base, &db);
    let sql = std::fs::read_to_string(fixtures().join(fixture).join("database.sql")).unwrap();
    if !sql.trim().is_empty() {
        connect(&url).await.batch_execute(&sql).await.unwrap();
    }
    (db, url)
}

fn run_migrate(url: &str, migrations: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fake-backend"))
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("MIGRATIONS_DIR", migrations)
        .output()
        .expect("fake-backend runs")
}

async fn ledger_after_migrate(
    admin: &tokio_postgres::Client,
    base: &str,
    fixture: &str,
) -> (Ledger, String) {
    let (db, url) = load(admin, base, fixture, "fix").await;
    let out = run_migrate(&url, &fixtures().join(fixture).join("image-migrations"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{fixture}: migrate failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = connect(&url).await;
    let rows = ledger(&client).await;
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
    (rows, stdout)
}

#[tokio::test]
async fn migrate_matches_the_real_drizzle_migrator_on_every_fixture() {
    if !fixtures().exists() {
        panic!("{} is missing", fixtures().display());
    }
    let base = pg_url();
    let admin = connect(&base).await;
    let complete = dumped_ledger("up-to-date");
    assert_eq!(complete.len(), 4);

    // behind: the two pending entries are applied, and the ledger becomes the
    // one the real migrator left in up-to-date, ids included.
    let (rows, stdout) = ledger_after_migrate(&admin, &base, "behind").await;
    assert_eq!(rows, complete, "{stdout}");
    assert!(stdout.contains("applying 0002_media"), "{stdout}");
    assert!(stdout.contains("applying 0003_event_venue"), "{stdout}");
    assert!(!stdout.contains("applying 0001_events"), "{stdout}");

    // A fresh database and an empty ledger: everything, in journal order.
    for fixture in ["ledger-missing", "empty"] {
        let (rows, stdout) = ledger_after_migrate(&admin, &base, fixture).await;
        assert_eq!(rows, complete, "{fixture}\n{stdout}");
    }

    // Nothing newer than the newest row: the real migrator does nothing, so
    // drift stays drift and a mismatched hash stays mismatched.
    for fixture in [
        "up-to-date",
        "ahead",
        "hash-mismatch",
        "drift-skipped-migration",
    ] {
        let (rows, stdout) = ledger_after_migrate(&admin, &base, fixture).await;
        assert_eq!(rows, dumped_ledger(fixture), "{fixture}\n{stdout}");
        assert!(stdout.contains("nothing to apply"), "{fixture}\n{stdout}");
    }
}

#[tokio::test]
async fn a_failing_statement_applies_nothing_and_exits_non_zero() {
    let base = pg_url();
    let admin = connect(&base).await;
    let (db, url) = load(&admin, &base, "behind", "broken").await;
    // A copy of the image migrations whose last entry is broken: 0002 must
    // not stay applied either, since the batch is one transaction.
    let dir = std::env::temp_dir().join(format!("fb-broken-{}", std::process::id()));
    let src = fixtures().join("behind/image-migrations");
    std::fs::create_dir_all(dir.join("meta")).unwrap();
    for f in [
        "0000_init.sql",
        "0001_events.sql",
        "0002_media.sql",
        "meta/_journal.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("0003_event_venue.sql"),
        "ALTER TABLE nope ADD COLUMN x int;",
    )
    .unwrap();
    let out = run_migrate(&url, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("0003_event_venue failed"), "{stderr}");
    assert!(stderr.contains("42P01"), "{stderr}");
    let client = connect(&url).await;
    assert_eq!(ledger(&client).await, dumped_ledger("behind"));
    let media: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'media'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(media, 0, "0002 rolled back with the failing 0003");
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
