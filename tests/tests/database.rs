//! `database status | migrate | reset` and `media discrepancy-report`
//! against the stack's real PostgreSQL and dockerd.
//!
//! The status tests replay every scenario of `tests/fixtures/drizzle` (this repository's copy)
//! (ledgers written by the real Drizzle migrator) and compare the agent's
//! markers with the scenario's `expected.json`, once with the journal read
//! from `--migrations-dir` and once from an image built for the test, the way
//! the agent reads it on the host: from the running API container's image.
//!
//! The job tests run an "API container" of this test's Compose project (the
//! labels Compose would put on it) from the stack's fake-backend image, on the
//! host network so its `DATABASE_URL` reaches the stack's PostgreSQL on
//! 127.0.0.1. Its command is `sleep`: the jobs are `docker exec`s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};
use serde::Deserialize;
use wavemap_e2e::{
    build_image, busybox_binary, docker, pg_connect, pg_fresh_database, repo_root, stack, toml_str,
    unique_name, Output, TestDir,
};

fn fixtures() -> PathBuf {
    std::env::var_os("WAVEMAP_DRIZZLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/fixtures/drizzle"))
}

const SCENARIOS: [&str; 7] = [
    "up-to-date",
    "behind",
    "ahead",
    "hash-mismatch",
    "drift-skipped-migration",
    "empty",
    "ledger-missing",
];

#[derive(Debug, Deserialize)]
struct Expected {
    state: String,
    expected_count: usize,
    applied_count: usize,
    pending_count: usize,
    gate_when_migration_allowed: String,
    gate_when_migration_not_allowed: String,
}

fn expected(scenario: &str) -> Expected {
    let path = fixtures().join(scenario).join("expected.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn migrations_dir(scenario: &str) -> PathBuf {
    fixtures().join(scenario).join("image-migrations")
}

/// A fresh database holding the scenario's dump; returns its URL.
async fn load_fixture(scenario: &str) -> String {
    let url = pg_fresh_database(&format!("db-{}", &scenario[..scenario.len().min(8)])).await;
    let sql = std::fs::read_to_string(fixtures().join(scenario).join("database.sql"))
        .expect("read database.sql");
    pg_connect(&url)
        .await
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("load {scenario}/database.sql: {e}"));
    url
}

/// The ledger as (id, hash, created_at), or None when the table is missing.
async fn ledger(url: &str) -> Option<Vec<(i32, String, Option<i64>)>> {
    let client = pg_connect(url).await;
    let rows = client
        .query(
            "SELECT id, hash, created_at FROM drizzle.__drizzle_migrations ORDER BY id",
            &[],
        )
        .await
        .ok()?;
    Some(
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
    )
}

/// Run `database status` and check every marker and the exit code against
/// the scenario's expected answer.
fn assert_status(out: &Output, want: &Expected, allow: bool, what: &str) {
    let gate = if allow {
        &want.gate_when_migration_allowed
    } else {
        &want.gate_when_migration_not_allowed
    };
    let m = |k: &str| out.marker(&format!("WAVEMAP_DATABASE_STATUS_{k}"));
    assert_eq!(
        m("STATE"),
        Some(want.state.as_str()),
        "{what}\n{}",
        out.dump()
    );
    assert_eq!(
        m("EXPECTED_COUNT"),
        Some(want.expected_count.to_string().as_str()),
        "{what}\n{}",
        out.dump()
    );
    assert_eq!(
        m("APPLIED_COUNT"),
        Some(want.applied_count.to_string().as_str()),
        "{what}\n{}",
        out.dump()
    );
    assert_eq!(
        m("PENDING_COUNT"),
        Some(want.pending_count.to_string().as_str()),
        "{what}\n{}",
        out.dump()
    );
    assert_eq!(m("GATE"), Some(gate.as_str()), "{what}\n{}", out.dump());
    let code = if gate == "block" { 3 } else { 0 };
    assert_eq!(out.code, code, "{what}\n{}", out.dump());
}

fn status_args(url: &str, allow: bool, dir: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "database".to_string(),
        "status".into(),
        "--database-url".into(),
        url.into(),
    ];
    if allow {
        args.push("--allow-migrate".into());
    }
    if let Some(dir) = dir {
        args.push("--migrations-dir".into());
        args.push(dir.display().to_string());
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_gives_its_expected_answer_from_migrations_dir() {
    let t = TestDir::new("dbstatus-dir");
    for scenario in SCENARIOS {
        let url = load_fixture(scenario).await;
        let want = expected(scenario);
        for allow in [false, true] {
            let out = t.run(status_args(&url, allow, Some(&migrations_dir(scenario))));
            assert_status(&out, &want, allow, &format!("{scenario} allow={allow}"));
        }
    }
    // The last answer is kept for `status`, atomically, world-readable.
    let cache = t.state_dir().join("last-database-status.json");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache).expect("status cache written")).unwrap();
    assert_eq!(saved["state"], "ledger-missing");
    assert_eq!(saved["gate"], "block");
    assert_eq!(wavemap_e2e::mode(&cache), 0o644);
}

/// A container of this test's Compose project and service, as Compose
/// labels it; removed on drop.
struct ApiContainer {
    id: String,
    /// Unix seconds just before creation, for the event query.
    created_at: u64,
}

impl ApiContainer {
    async fn start(t: &TestDir, image: &str, cmd: &[&str], env: &[String]) -> ApiContainer {
        let docker = docker().await;
        let labels = HashMap::from([
            ("com.docker.compose.project".to_string(), t.name.clone()),
            ("com.docker.compose.service".to_string(), "api".to_string()),
            ("com.docker.compose.oneoff".to_string(), "False".to_string()),
        ]);
        let name = unique_name("api");
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 1;
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                ContainerCreateBody {
                    image: Some(image.to_owned()),
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    entrypoint: Some(vec![]),
                    env: Some(env.to_vec()),
                    labels: Some(labels),
                    host_config: Some(HostConfig {
                        network_mode: Some("host".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("create api container from {image}: {e}"));
        let container = ApiContainer {
            id: created.id,
            created_at,
        };
        docker
            .start_container(&container.id, None::<StartContainerOptions>)
            .await
            .unwrap_or_else(|e| panic!("start api container: {e}"));
        container
    }

    /// How many execs were started in the container (from the Engine's
    /// event log: finished execs leave the container's `ExecIDs` list).
    async fn exec_count(&self) -> usize {
        let out = std::process::Command::new("docker")
            .args(["events", "--since", &self.created_at.to_string(), "--until"])
            .arg(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .saturating_add(1)
                    .to_string(),
            )
            .args([
                "--filter",
                &format!("container={}", self.id),
                "--filter",
                "event=exec_start",
                "--format",
                "{{.Action}}",
            ])
            .output()
            .expect("docker events");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }
}

impl Drop for ApiContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

/// Journal helper containers the agent left behind for `image`.
async fn leftover_journal_containers(image_id: &str) -> usize {
    let docker = docker().await;
    let filters = HashMap::from([(
        "label".to_string(),
        vec!["wavemap-agent.purpose=journal-read".to_string()],
    )]);
    docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers")
        .into_iter()
        .filter(|c| c.image_id.as_deref() == Some(image_id))
        .count()
}

/// A tiny image like the API image as far as the journal goes: busybox (so a
/// container can run) and the scenario's migrations at /app/drizzle.
async fn journal_image(scenario: &str) -> (String, Cleanup) {
    let dir = migrations_dir(scenario);
    let mut files = vec![("bin/busybox", busybox_binary())];
    let mut owned: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            owned.push((format!("drizzle/{name}"), std::fs::read(&path).unwrap()));
        }
    }
    owned.push((
        "drizzle/meta/_journal.json".into(),
        std::fs::read(dir.join("meta/_journal.json")).unwrap(),
    ));
    for (name, bytes) in &owned {
        files.push((name.as_str(), bytes.clone()));
    }
    let tag = format!("wavemap-e2e/journal-{}:{}", scenario, unique_name("t"));
    let cleanup = Cleanup(vec!["rmi".into(), "-f".into(), tag.clone()]);
    let id = build_image(
        &tag,
        "FROM scratch\nCOPY bin/busybox /bin/busybox\nCOPY drizzle/ /app/drizzle/\n",
        &files,
    )
    .await;
    (id, cleanup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_gives_its_expected_answer_from_the_api_image() {
    for scenario in SCENARIOS {
        let t = TestDir::new("dbstatus-img");
        // Dropped last: the image goes after the container that uses it.
        let (image, _image) = journal_image(scenario).await;
        let api = ApiContainer::start(&t, &image, &["/bin/busybox", "sleep", "600"], &[]).await;
        let url = load_fixture(scenario).await;
        let want = expected(scenario);
        for allow in [false, true] {
            let out = t.run(status_args(&url, allow, None));
            assert_status(
                &out,
                &want,
                allow,
                &format!("{scenario} (image) allow={allow}"),
            );
            assert_eq!(
                out.marker("WAVEMAP_DATABASE_STATUS_JOURNAL_SOURCE"),
                Some(format!("{image}:/app/drizzle").as_str()),
                "{}",
                out.dump()
            );
        }
        assert_eq!(
            leftover_journal_containers(&image).await,
            0,
            "the helper container is removed"
        );
        // Reading the journal ran nothing in the API container.
        assert_eq!(api.exec_count().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_api_container_or_release_asks_for_migrations_dir() {
    let t = TestDir::new("dbstatus-nojournal");
    let out = t.run(status_args(&stack().pg_url, false, None));
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(out.stderr.contains("--migrations-dir"), "{}", out.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_exits_69_without_printing_the_url() {
    let t = TestDir::new("dbstatus-down");
    let secret = "pw-never-shown-4711";
    let url = format!("postgres://app:{secret}@127.0.0.1:1/app");
    let out = t.run(status_args(&url, false, Some(&migrations_dir("behind"))));
    assert_eq!(out.code, 69, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_AGENT_ERROR"),
        Some("dependency-unavailable")
    );
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("127.0.0.1:1"),
        "names where: {}",
        out.dump()
    );

    // Refused credentials are the same outcome, without retries.
    let wrong = stack()
        .pg_url
        .replacen(&format!(":{}@", pg_password()), &format!(":{secret}@"), 1);
    let out = t.run(status_args(&wrong, false, Some(&migrations_dir("behind"))));
    assert_eq!(out.code, 69, "{}", out.dump());
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "{}",
        out.dump()
    );
}

fn pg_password() -> String {
    let url = &stack().pg_url;
    let (_, rest) = url.split_once("://").unwrap();
    let (userinfo, _) = rest.rsplit_once('@').unwrap();
    userinfo.split_once(':').unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_created_at_blocks_even_with_permission() {
    let t = TestDir::new("dbstatus-null");
    let url = load_fixture("up-to-date").await;
    pg_connect(&url)
        .await
        .batch_execute("INSERT INTO drizzle.__drizzle_migrations (id, hash, created_at) VALUES (99, 'x', NULL)")
        .await
        .unwrap();
    let out = t.run(status_args(&url, true, Some(&migrations_dir("up-to-date"))));
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_STATE"), Some("drift"));
    assert!(out.stderr.contains("NULL created_at"), "{}", out.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drizzle_1_0_folders_and_ledger_columns_are_read() {
    let t = TestDir::new("dbstatus-v1");
    let dir = tempfile::tempdir().unwrap();
    let migrations = [
        ("20250101000000_init", "CREATE TABLE a (id int);"),
        ("20250102000000_more", "CREATE TABLE b (id int);"),
        ("20250103000000_last", "CREATE TABLE c (id int);"),
    ];
    for (name, sql) in migrations {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("migration.sql"), sql).unwrap();
        std::fs::write(dir.path().join(name).join("snapshot.json"), "{}").unwrap();
    }
    let url = pg_fresh_database("db-v1").await;
    let hash = |s: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    };
    // Date.UTC(2025, 0, 1) and Date.UTC(2025, 0, 3) in milliseconds.
    pg_connect(&url)
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA app_meta;
             CREATE TABLE app_meta.\"Migrations\" (id serial PRIMARY KEY, hash text NOT NULL,
                 created_at bigint, name text, applied_at timestamptz DEFAULT now());
             INSERT INTO app_meta.\"Migrations\" (hash, created_at, name) VALUES
                 ('{}', 1735689600000, '20250101000000_init'),
                 ('{}', 1735862400000, '20250103000000_last');",
            hash(migrations[0].1),
            hash(migrations[2].1)
        ))
        .await
        .unwrap();
    let mut args = status_args(&url, true, Some(dir.path()));
    args.extend([
        "--migrations-schema".into(),
        "app_meta".into(),
        "--migrations-table".into(),
        "Migrations".into(),
    ]);
    let out = t.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_STATE"), Some("behind"));
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_STATUS_PENDING_COUNT"),
        Some("1")
    );
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_GATE"), Some("migrate"));
    // 1.0 matches by folder name and applies the older missing folder too:
    // behind, where the 0.x migrator would leave it behind for good (drift).
    assert!(out.stderr.contains("20250102000000_more"), "{}", out.dump());
}

// --- jobs in the API container ------------------------------------------------

/// A test dir whose job commands are the fake backend's subcommands.
fn job_test_dir(prefix: &str) -> TestDir {
    let mut t = TestDir::new(prefix);
    for (key, sub) in [
        ("migrate_command", "migrate"),
        ("base_seed_command", "seed-base"),
        ("dev_seed_command", "seed-dev"),
        ("media_report_command", "media-report"),
    ] {
        t.set(
            "jobs",
            key,
            format!("[\"/app/fake-backend\", {}]", toml_str(sub)),
        );
    }
    t
}

/// The stack's fake-backend image as this test's API container, with
/// `DATABASE_URL` pointing at `url` and extra env.
async fn fake_api(t: &TestDir, url: &str, env: &[&str]) -> ApiContainer {
    let image = stack().require("WAVEMAP_TEST_BACKEND_IMAGE_A").to_owned();
    let mut vars = vec![format!("DATABASE_URL={url}")];
    vars.extend(env.iter().map(|s| s.to_string()));
    ApiContainer::start(t, &image, &["/bin/busybox", "sleep", "600"], &vars).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_behind_applies_through_the_api_container_then_up_to_date() {
    let t = job_test_dir("dbmigrate");
    let url = load_fixture("behind").await;
    let api = fake_api(&t, &url, &[]).await;

    // Dry run: status, the plan, nothing run.
    let out = t.run(["database", "migrate", "--database-url", &url]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_BEFORE_STATE"),
        Some("behind")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("planned")
    );
    assert_eq!(ledger(&url).await.unwrap().len(), 2);
    assert_eq!(api.exec_count().await, 0);

    let out = t.run(["database", "migrate", "--execute", "--database-url", &url]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_BEFORE_STATE"),
        Some("behind")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_AFTER_STATE"),
        Some("up-to-date")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("applied")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_APPLIED_COUNT"),
        Some("2")
    );
    assert_eq!(api.exec_count().await, 1);
    // Job output went to stderr; stdout is markers only.
    assert!(
        out.stdout.lines().all(|l| l.starts_with("WAVEMAP_")),
        "{}",
        out.dump()
    );
    let rows = ledger(&url).await.unwrap();
    assert_eq!(rows.len(), 4);
    let up_to_date = ledger_of_fixture("up-to-date");
    assert_eq!(
        rows.iter().map(|r| (r.1.clone(), r.2)).collect::<Vec<_>>(),
        up_to_date,
        "the ledger now equals the one the real migrator wrote"
    );

    let out = t.run(["database", "status", "--database-url", &url]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_STATUS_STATE"),
        Some("up-to-date")
    );
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_GATE"), Some("pass"));

    // Rerunning the same migrate (as after a crash) succeeds and runs nothing.
    let out = t.run(["database", "migrate", "--execute", "--database-url", &url]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("up-to-date")
    );
    assert_eq!(api.exec_count().await, 1);
}

/// (hash, created_at) of the rows in a fixture's dump.
fn ledger_of_fixture(scenario: &str) -> Vec<(String, Option<i64>)> {
    let sql = std::fs::read_to_string(fixtures().join(scenario).join("database.sql")).unwrap();
    sql.lines()
        .filter_map(|l| l.strip_prefix("INSERT INTO drizzle.__drizzle_migrations VALUES ("))
        .map(|l| {
            let parts: Vec<&str> = l.trim_end_matches(");").split(", ").collect();
            (
                parts[1].trim_matches('\'').to_owned(),
                parts[2].parse().ok(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_drift_ahead_and_hash_mismatch_and_changes_nothing() {
    for scenario in ["drift-skipped-migration", "ahead", "hash-mismatch"] {
        let t = job_test_dir("dbmigrate-block");
        let url = load_fixture(scenario).await;
        let api = fake_api(&t, &url, &[]).await;
        let before = ledger(&url).await;
        let dir = migrations_dir(scenario).display().to_string();
        let out = t.run([
            "database",
            "migrate",
            "--execute",
            "--database-url",
            &url,
            "--migrations-dir",
            &dir,
        ]);
        assert_eq!(out.code, 3, "{scenario}\n{}", out.dump());
        assert_eq!(
            out.marker("WAVEMAP_DATABASE_MIGRATE_BEFORE_STATE"),
            Some(expected(scenario).state.as_str())
        );
        assert_eq!(
            out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
            Some("blocked")
        );
        assert_eq!(ledger(&url).await, before, "{scenario}: ledger unchanged");
        assert_eq!(api.exec_count().await, 0, "{scenario}: nothing ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_needs_execute_and_the_environment_name_then_runs_three_steps() {
    let mut t = job_test_dir("dbreset");
    t.set("jobs", "warning_pattern", toml_str("warning:"));
    let url = load_fixture("behind").await;
    let api = fake_api(&t, &url, &[]).await;
    let seed_rows = |url: String| async move {
        pg_connect(&url)
            .await
            .query(
                "SELECT kind, count(*) FROM seed_marker GROUP BY kind ORDER BY kind",
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                    .collect::<Vec<_>>()
            })
            .ok()
    };

    let out = t.run(["database", "reset"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_RESET_RESULT"), Some("planned"));
    for (args, what) in [
        (vec!["database", "reset", "--execute"], "no confirmation"),
        (
            vec!["database", "reset", "--execute", "--confirm", "prod"],
            "wrong confirmation",
        ),
    ] {
        let out = t.run(&args);
        assert_eq!(out.code, 2, "{what}\n{}", out.dump());
        assert_eq!(out.marker("WAVEMAP_DATABASE_RESET_RESULT"), Some("refused"));
    }
    assert_eq!(api.exec_count().await, 0, "nothing ran before confirmation");
    assert_eq!(seed_rows(url.clone()).await, None, "no seed table yet");
    assert_eq!(ledger(&url).await.unwrap().len(), 2);

    let out = t.run(["database", "reset", "--execute", "--confirm", "dev"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    for step in ["MIGRATE", "BASE_SEED", "DEV_SEED"] {
        assert_eq!(
            out.marker(&format!("WAVEMAP_DATABASE_RESET_{step}_RESULT")),
            Some("success"),
            "{}",
            out.dump()
        );
    }
    // The dev seed's three event-series warnings, reported, not a failure.
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_WARNING_COUNT"),
        Some("3")
    );
    assert_eq!(out.marker("WAVEMAP_DATABASE_RESET_RESULT"), Some("success"));
    assert!(
        out.stderr.contains("Summer Sessions 2024"),
        "job output streamed: {}",
        out.dump()
    );
    assert_eq!(api.exec_count().await, 3);
    assert_eq!(ledger(&url).await.unwrap().len(), 4, "migrate ran");
    assert_eq!(
        seed_rows(url.clone()).await,
        Some(vec![("base".to_string(), 3), ("dev".to_string(), 3)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_report_markers_match_the_jobs_json() {
    let t = job_test_dir("media");
    let url = load_fixture("up-to-date").await;
    // The job also prints DATABASE_URL (a test knob): it must come out redacted.
    let api = fake_api(&t, &url, &["FAKE_PRINT_ENV=DATABASE_URL"]).await;

    let out = t.run(["media", "discrepancy-report"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_MEDIA_REPORT_RESULT"), Some("planned"));
    assert_eq!(api.exec_count().await, 0);

    let out = t.run(["media", "discrepancy-report", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let report = job_json(&api.id).await;
    let m = |k: &str| {
        out.marker(&format!("WAVEMAP_MEDIA_REPORT_{k}"))
            .map(str::to_owned)
    };
    assert_eq!(
        m("SCOPE"),
        Some(format!(
            "s3://{}/{}",
            report["scope"]["bucket"].as_str().unwrap(),
            report["scope"]["prefix"].as_str().unwrap()
        ))
    );
    assert_eq!(
        m("ROWS_INSPECTED"),
        Some(report["rowsInspected"].to_string())
    );
    assert_eq!(
        m("OBJECTS_INSPECTED"),
        Some(report["objectsInspected"].to_string())
    );
    assert_eq!(
        m("TOTAL_DISCREPANCIES"),
        Some(report["totalDiscrepancies"].to_string())
    );
    let missing = report["discrepancies"]["missingObject"].as_array().unwrap();
    let orphan = report["discrepancies"]["orphanObject"].as_array().unwrap();
    assert_eq!(m("MISSING_OBJECT_COUNT"), Some(missing.len().to_string()));
    assert_eq!(m("ORPHAN_OBJECT_COUNT"), Some(orphan.len().to_string()));
    let ids: Vec<&str> = missing
        .iter()
        .map(|d| d["mediaId"].as_str().unwrap())
        .collect();
    assert_eq!(m("SAMPLE_MISSING_OBJECT"), Some(ids.join(",")));
    assert_eq!(
        m("SAMPLE_ORPHAN_OBJECT"),
        Some(orphan[0]["key"].as_str().unwrap().to_owned())
    );
    assert_eq!(m("RESULT").as_deref(), Some("discrepancies"));
    let password = pg_password();
    assert!(
        !out.stderr.contains(&password) && !out.stdout.contains(&password),
        "the job printed DATABASE_URL; the agent must redact it:\n{}",
        out.dump()
    );
    assert!(out.stderr.contains("env DATABASE_URL="), "{}", out.dump());
}

/// What the report job prints, run directly in the container.
async fn job_json(container: &str) -> serde_json::Value {
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            "-e",
            "FAKE_PRINT_ENV=",
            container,
            "/app/fake-backend",
            "media-report",
        ])
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the job prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_media_report_is_a_clear_error_exit_1() {
    let url = load_fixture("up-to-date").await;
    // Canned documents baked into the backend image (tests/fixtures/media-report).
    for (file, why) in [
        ("not-json.txt", "is not the expected JSON"),
        ("malformed.json", "is not the expected JSON"),
        (
            "counts-mismatch.json",
            "totalDiscrepancies is 5 but the lists hold 1",
        ),
        ("wrong-schema.json", "schemaVersion 2"),
    ] {
        let t = job_test_dir("media-bad");
        let env = format!("FAKE_MEDIA_REPORT_FILE=/app/fixtures/media-report/{file}");
        let _api = fake_api(&t, &url, &[&env]).await;
        let out = t.run(["media", "discrepancy-report", "--execute"]);
        assert_eq!(out.code, 1, "{file}\n{}", out.dump());
        assert_eq!(
            out.marker("WAVEMAP_MEDIA_REPORT_RESULT"),
            Some("failed"),
            "{file}"
        );
        assert!(
            out.stderr.contains("malformed report"),
            "{file}\n{}",
            out.dump()
        );
        assert!(out.stderr.contains(why), "{file}: {why}\n{}", out.dump());
        assert_eq!(out.marker("WAVEMAP_MEDIA_REPORT_TOTAL_DISCREPANCIES"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_and_large_reports_summarise_with_a_few_samples() {
    let url = load_fixture("up-to-date").await;
    let t = job_test_dir("media-clean");
    let _api = fake_api(&t, &url, &["FAKE_MEDIA_CLEAN=1"]).await;
    let out = t.run(["media", "discrepancy-report", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_MEDIA_REPORT_RESULT"), Some("clean"));
    assert_eq!(
        out.marker("WAVEMAP_MEDIA_REPORT_TOTAL_DISCREPANCIES"),
        Some("0")
    );
    assert_eq!(
        out.marker("WAVEMAP_MEDIA_REPORT_MISSING_OBJECT_COUNT"),
        Some("0")
    );
    assert_eq!(
        out.marker("WAVEMAP_MEDIA_REPORT_SAMPLE_MISSING_OBJECT"),
        None
    );

    let t = job_test_dir("media-many");
    let _api = fake_api(
        &t,
        &url,
        &["FAKE_MEDIA_REPORT_FILE=/app/fixtures/media-report/many.json"],
    )
    .await;
    let out = t.run(["media", "discrepancy-report", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_MEDIA_REPORT_TOTAL_DISCREPANCIES"),
        Some("50")
    );
    assert_eq!(
        out.marker("WAVEMAP_MEDIA_REPORT_MISSING_OBJECT_COUNT"),
        Some("40")
    );
    assert_eq!(
        out.marker("WAVEMAP_MEDIA_REPORT_ORPHAN_OBJECT_COUNT"),
        Some("10")
    );
    let sample = out
        .marker("WAVEMAP_MEDIA_REPORT_SAMPLE_MISSING_OBJECT")
        .unwrap();
    assert_eq!(sample.split(',').count(), 3, "{sample}");
    assert!(
        sample.starts_with("00000000-0000-4000-8000-000000000001,"),
        "{sample}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_name_the_step_and_exit_1() {
    let url = load_fixture("behind").await;
    let t = job_test_dir("migrate-fail");
    let _api = fake_api(&t, &url, &["FAKE_MIGRATE_FAIL=1"]).await;
    let out = t.run(["database", "migrate", "--execute", "--database-url", &url]);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("failed")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_AFTER_STATE"),
        Some("behind")
    );
    assert_eq!(ledger(&url).await.unwrap().len(), 2);

    let mut t = job_test_dir("reset-fail");
    t.set("jobs", "warning_pattern", toml_str("warning:"));
    let _api = fake_api(&t, &url, &["FAKE_SEED_FAIL=base"]).await;
    let out = t.run(["database", "reset", "--execute", "--confirm", "dev"]);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_MIGRATE_RESULT"),
        Some("success")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_BASE_SEED_RESULT"),
        Some("failed")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_DEV_SEED_RESULT"),
        Some("skipped")
    );
    assert_eq!(out.marker("WAVEMAP_DATABASE_RESET_RESULT"), Some("failed"));
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_WARNING_COUNT"),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_url_from_the_rendered_backend_env() {
    let t = TestDir::new("dbstatus-envfile");
    let url = load_fixture("behind").await;
    std::fs::create_dir_all(t.env_dir()).unwrap();
    std::fs::write(
        t.env_dir().join("backend.env"),
        format!("# rendered\nAPP_NAME='x'\nDATABASE_URL='{url}'\n"),
    )
    .unwrap();
    let dir = migrations_dir("behind").display().to_string();
    let out = t.run(["--json", "database", "status", "--migrations-dir", &dir]);
    assert_eq!(out.code, 3, "{}", out.dump());
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(doc["markers"]["WAVEMAP_DATABASE_STATUS_STATE"], "behind");
    assert_eq!(doc["data"]["status"]["pending"][0]["name"], "0002_media");
    assert!(!out.stdout.contains(&pg_password()), "{}", out.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_past_its_deadline_fails_and_says_so() {
    let mut t = job_test_dir("job-timeout");
    t.set("jobs", "timeout", "2");
    let url = load_fixture("up-to-date").await;
    let api = fake_api(&t, &url, &["FAKE_JOB_SLEEP_SECS=20"]).await;
    let out = t.run(["media", "discrepancy-report", "--execute"]);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert!(
        out.stderr.contains("did not finish within 2s"),
        "{}",
        out.dump()
    );
    // The agent ended the job instead of leaving it running.
    assert!(
        out.stderr.contains("ended it with SIGTERM"),
        "{}",
        out.dump()
    );
    let top = std::process::Command::new("docker")
        .args(["top", &api.id])
        .output()
        .expect("docker top");
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(!top.contains("media-report"), "still running:\n{top}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_without_a_running_api_container_run_nothing() {
    let t = job_test_dir("job-noapi");
    let out = t.run(["database", "reset", "--execute", "--confirm", "dev"]);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_MIGRATE_RESULT"),
        Some("failed")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_BASE_SEED_RESULT"),
        Some("skipped")
    );
    assert!(
        out.stderr.contains("no running `api` container"),
        "{}",
        out.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_container_the_current_releases_image_is_read() {
    // An older image (3 journal entries) is the current release while the
    // database was migrated by a newer one: `ahead`, read from that image.
    let s = stack();
    let image = s.require("WAVEMAP_TEST_BACKEND_AHEAD_IMAGE").to_owned();
    let sha = s.require("WAVEMAP_TEST_SHA_AHEAD").to_owned();
    let t = TestDir::new("dbstatus-release");
    std::fs::create_dir_all(t.state_dir()).unwrap();
    let current = serde_json::json!({
        "schemaVersion": 1,
        "sourceSha": sha,
        "imageTag": format!("sha-{sha}"),
        "backendImageUri": image,
        "frontendImageUri": format!("{}/wavemap/frontend:sha-{sha}", s.registry),
        "deploymentVersion": "e2e",
        "workflowRun": {},
        "deployedAt": "2026-01-01T00:00:00.000Z",
        "deployedBy": "deploy",
    });
    std::fs::write(
        t.state_dir().join("current-release.json"),
        serde_json::to_vec(&current).unwrap(),
    )
    .unwrap();
    let url = load_fixture("ahead").await;
    let out = t.run(status_args(&url, true, None));
    assert_status(
        &out,
        &expected("ahead"),
        true,
        "ahead from the release image",
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_STATUS_JOURNAL_SOURCE"),
        Some(format!("{image}:/app/drizzle").as_str())
    );
    assert!(
        out.stderr.contains("rows newer than every journal entry"),
        "{}",
        out.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reaches_a_compose_service_named_in_the_env_file() {
    // The rendered env says `@dbsvc:5432`, a name only the Compose network
    // knows. The agent finds the project's `dbsvc` container and connects
    // to its address instead.
    let t = TestDir::new("dbstatus-svc");
    let docker = docker().await;
    let network = unique_name("dbnet");
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            ..Default::default()
        })
        .await
        .expect("create network");
    let _net = Cleanup(vec!["network".into(), "rm".into(), network.clone()]);
    let image = stack().require("WAVEMAP_TEST_POSTGRES_IMAGE").to_owned();
    let name = unique_name("dbsvc");
    let endpoint = bollard::models::EndpointSettings {
        aliases: Some(vec!["dbsvc".into()]),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            ContainerCreateBody {
                image: Some(image),
                env: Some(vec![
                    "POSTGRES_USER=app".into(),
                    "POSTGRES_PASSWORD=svc-pw-4711".into(),
                    "POSTGRES_DB=app".into(),
                ]),
                labels: Some(HashMap::from([
                    ("com.docker.compose.project".to_string(), t.name.clone()),
                    (
                        "com.docker.compose.service".to_string(),
                        "dbsvc".to_string(),
                    ),
                    ("com.docker.compose.oneoff".to_string(), "False".to_string()),
                ])),
                host_config: Some(HostConfig {
                    network_mode: Some(network.clone()),
                    ..Default::default()
                }),
                networking_config: Some(bollard::models::NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(network.clone(), endpoint)])),
                }),
                ..Default::default()
            },
        )
        .await
        .expect("create postgres container");
    let _pg = Cleanup(vec![
        "rm".into(),
        "-f".into(),
        "-v".into(),
        created.id.clone(),
    ]);
    docker
        .start_container(&created.id, None::<StartContainerOptions>)
        .await
        .expect("start postgres container");
    let ip = docker
        .inspect_container(
            &created.id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get(&network).and_then(|e| e.ip_address.clone()))
        .expect("container address");
    // Load the fixture through the address, once postgres answers.
    let direct = format!("postgres://app:svc-pw-4711@{ip}:5432/app");
    let sql = std::fs::read_to_string(fixtures().join("behind/database.sql")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match tokio_postgres::connect(&direct, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
                    .batch_execute(&sql)
                    .await
                    .expect("load behind fixture");
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => panic!("postgres container never answered at {ip}: {e}"),
        }
    }
    std::fs::create_dir_all(t.env_dir()).unwrap();
    std::fs::write(
        t.env_dir().join("backend.env"),
        "DATABASE_URL='postgres://app:svc-pw-4711@dbsvc:5432/app'\n",
    )
    .unwrap();
    let dir = migrations_dir("behind").display().to_string();
    let out = t.run([
        "database",
        "status",
        "--allow-migrate",
        "--migrations-dir",
        &dir,
    ]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_STATE"), Some("behind"));
    assert!(out.stderr.contains("container address"), "{}", out.dump());
    assert!(!out.stderr.contains("svc-pw-4711"), "{}", out.dump());
}

// --- TLS: sslmode and sslrootcert against the stack's TLS listener ----------
//
// scripts/stack/pg-tls gives the stack's PostgreSQL a server certificate
// for 127.0.0.1 and localhost from a test CA, and a role that pg_hba.conf
// admits over TLS only (a `hostnossl ... reject` line): a session as that
// role is TLS by the server's own rules, whatever the agent says.

/// `db_url` (a fresh test database) as the TLS-only role, with `query`.
fn tls_url(db_url: &str, host: &str, query: &str) -> String {
    let s = stack();
    let db = db_url.rsplit('/').next().expect("database name");
    format!(
        "postgres://{}:{}@{host}:55432/{db}{query}",
        s.require("WAVEMAP_TEST_PG_TLS_USER"),
        s.require("WAVEMAP_TEST_PG_TLS_PASSWORD")
    )
}

fn assert_no_tls_password(out: &Output) {
    let pw = stack().require("WAVEMAP_TEST_PG_TLS_PASSWORD");
    assert!(
        !out.stdout.contains(pw) && !out.stderr.contains(pw),
        "the password leaked: {}",
        out.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_stacks_ca_answers_status() {
    let t = TestDir::new("dbtls-full");
    let db = load_fixture("behind").await;
    let ca = stack().require("WAVEMAP_TEST_PG_CA").to_owned();
    for host in ["127.0.0.1", "localhost"] {
        let url = tls_url(&db, host, &format!("?sslmode=verify-full&sslrootcert={ca}"));
        let out = t.run(status_args(&url, true, Some(&migrations_dir("behind"))));
        assert_status(&out, &expected("behind"), true, host);
        assert!(
            out.stderr
                .contains("sslmode=verify-full: TLS, certificate checked against the CA file"),
            "{}",
            out.dump()
        );
        assert_no_tls_password(&out);
    }
    // The keyword form, verify-ca: the chain is checked, the host name is
    // not (the certificate does not name `db.invalid`; hostaddr routes).
    let name = db.rsplit('/').next().unwrap();
    let s = stack();
    let keywords = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port=55432 dbname={name} user={} password={} sslmode={mode} sslrootcert={ca}",
            s.require("WAVEMAP_TEST_PG_TLS_USER"),
            s.require("WAVEMAP_TEST_PG_TLS_PASSWORD")
        )
    };
    let out = t.run(status_args(
        &keywords("verify-ca"),
        true,
        Some(&migrations_dir("behind")),
    ));
    assert_status(&out, &expected("behind"), true, "verify-ca, another name");
    let out = t.run(status_args(
        &keywords("verify-full"),
        true,
        Some(&migrations_dir("behind")),
    ));
    assert_eq!(out.code, 69, "{}", out.dump());
    assert!(
        out.stderr.contains("does not name the host"),
        "{}",
        out.dump()
    );
    assert_no_tls_password(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused_naming_the_ca_file() {
    let t = TestDir::new("dbtls-wrongca");
    let db = load_fixture("behind").await;
    let other = stack().require("WAVEMAP_TEST_PG_OTHER_CA").to_owned();
    let url = tls_url(
        &db,
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={other}"),
    );
    let out = t.run(status_args(&url, true, Some(&migrations_dir("behind"))));
    assert_eq!(out.code, 69, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_AGENT_ERROR"),
        Some("dependency-unavailable")
    );
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_STATE"), None);
    assert!(
        out.stderr.contains(&format!(
            "the server's certificate is not signed by the CA file {other} (sslrootcert)"
        )),
        "{}",
        out.dump()
    );
    assert!(out.stderr.contains("UnknownIssuer"), "{}", out.dump());
    // A certificate failure is final: no retries.
    assert!(!out.stderr.contains("retrying"), "{}", out.dump());
    assert_no_tls_password(&out);

    // A CA file that is not there is bad input, named.
    let url = tls_url(
        &db,
        "localhost",
        "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let out = t.run(status_args(&url, true, Some(&migrations_dir("behind"))));
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(
        out.stderr
            .contains("sslrootcert /nonexistent/ca.pem: cannot read it"),
        "{}",
        out.dump()
    );
    // So is an sslmode libpq has but the agent does not do.
    let url = tls_url(&db, "localhost", "?sslmode=allow");
    let out = t.run(status_args(&url, true, Some(&migrations_dir("behind"))));
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(out.stderr.contains("sslmode `allow`"), "{}", out.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_prefer_use_tls_and_disable_does_not() {
    let t = TestDir::new("dbtls-require");
    let db = load_fixture("behind").await;
    // The TLS-only role gets in: the server saw TLS.
    for query in ["?sslmode=require", "?sslmode=prefer", ""] {
        let url = tls_url(&db, "127.0.0.1", query);
        let out = t.run(status_args(&url, true, Some(&migrations_dir("behind"))));
        assert_status(&out, &expected("behind"), true, query);
        assert_no_tls_password(&out);
    }
    // Without TLS the server refuses that role: disable means plain.
    let url = tls_url(&db, "127.0.0.1", "?sslmode=disable");
    let out = t.run(status_args(&url, true, Some(&migrations_dir("behind"))));
    assert_eq!(out.code, 69, "{}", out.dump());
    assert!(out.stderr.contains("no encryption"), "{}", out.dump());
    assert_no_tls_password(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_containers_url_reads_its_ca_file_from_the_container() {
    // On RDS the API container runs with sslrootcert naming a CA bundle in
    // its own filesystem; the host has no such file. The agent reads it from
    // the container (archive API), so `database status` works unchanged.
    let t = job_test_dir("dbtls-container");
    let db = load_fixture("behind").await;
    let in_container = "/wavemap-test-ca.crt";
    assert!(
        !Path::new(in_container).exists(),
        "{in_container} must not exist on the host"
    );
    let url = tls_url(
        &db,
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={in_container}"),
    );
    let api = fake_api(&t, &url, &[]).await;
    let dir = migrations_dir("behind").display().to_string();
    let status = [
        "database",
        "status",
        "--allow-migrate",
        "--migrations-dir",
        &dir,
    ];

    // Not there yet: named, exit 2.
    let out = t.run(status);
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(
        out.stderr.contains(&format!(
            "DATABASE_URL names {in_container}: no such file in the container"
        )),
        "{}",
        out.dump()
    );

    let ca = stack().require("WAVEMAP_TEST_PG_CA");
    let cp = std::process::Command::new("docker")
        .args(["cp", ca, &format!("{}:{in_container}", api.id)])
        .output()
        .expect("docker cp");
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let out = t.run(status);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_SOURCE"), Some("container"));
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_STATE"), Some("behind"));
    assert!(
        out.stderr.contains(&format!(
            "the CA file {in_container} in the API container (sslrootcert)"
        )),
        "{}",
        out.dump()
    );
    assert_no_tls_password(&out);
}

// --- one database: the API container's ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_containers_database_is_used_and_an_env_file_mismatch_is_reported() {
    // Deployed with database A; then a standalone `runtime-env` rendered
    // database B into the env file, and no converge followed. The jobs
    // work on A (the container's env), so the gate and the lock must too.
    let mut t = job_test_dir("dbone");
    let a = load_fixture("behind").await;
    let b = load_fixture("behind").await;
    let _api = fake_api(&t, &a, &[]).await;
    std::fs::create_dir_all(t.env_dir()).unwrap();
    std::fs::write(
        t.env_dir().join("backend.env"),
        format!("# rendered\nAPP_NAME='x'\nDATABASE_URL='{b}'\n"),
    )
    .unwrap();

    let dir = migrations_dir("behind").display().to_string();
    let out = t.run([
        "database",
        "status",
        "--allow-migrate",
        "--migrations-dir",
        &dir,
    ]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_SOURCE"), Some("container"));
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_MISMATCH"), Some("dbname"));
    assert!(
        out.stderr
            .contains("the API container runs with another DATABASE_URL than"),
        "{}",
        out.dump()
    );
    assert!(!out.stdout.contains(&pg_password()), "{}", out.dump());
    assert!(!out.stderr.contains(&pg_password()), "{}", out.dump());

    let out = t.run(["database", "migrate", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_SOURCE"), Some("container"));
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_MISMATCH"), Some("dbname"));
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("applied")
    );
    // The container's database was migrated, the env file's was not.
    assert_eq!(ledger(&a).await.unwrap().len(), 4, "A, the container's");
    assert_eq!(ledger(&b).await.unwrap().len(), 2, "B, the env file's");

    // Once the env file agrees, nothing is reported.
    std::fs::write(
        t.env_dir().join("backend.env"),
        format!("DATABASE_URL='{a}'\n"),
    )
    .unwrap();
    let out = t.run(["database", "status", "--migrations-dir", &dir]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_STATUS_STATE"),
        Some("up-to-date")
    );
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_MISMATCH"), None);

    // --database-url names the database for everything, the job included.
    let out = t.run([
        "database",
        "status",
        "--database-url",
        &b,
        "--migrations-dir",
        &dir,
    ]);
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_SOURCE"), Some("flag"));
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_STATE"), Some("behind"));

    // So does database.url: the gate, the lock and the job all go to B.
    t.set("database", "url", toml_str(&b));
    let out = t.run(["database", "migrate", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_URL_SOURCE"), Some("config"));
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("applied")
    );
    assert_eq!(ledger(&b).await.unwrap().len(), 4, "B, database.url's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_advisory_lock_session_stops_reset_before_the_next_step() {
    let t = job_test_dir("dblocklost");
    let url = load_fixture("behind").await;
    // Every job sleeps, so the lock is held long enough to be cut. (No
    // exec count from `docker events`: the Engine keeps only its last 256
    // events, which a busy shared dockerd pushes out; the seed table is the
    // observer.)
    let _api = fake_api(&t, &url, &["FAKE_JOB_SLEEP_SECS=4"]).await;
    let name = url.rsplit('/').next().unwrap().to_owned();
    // A person (or a failover) ends the agent's lock session mid-job.
    let killer = tokio::spawn(async move {
        let client = pg_connect(&stack().pg_url).await;
        for _ in 0..600 {
            let killed = client
                .query(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                     JOIN pg_database d ON d.oid = l.database \
                     WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1 \
                       AND l.classid = ((8602286941253234756::bigint >> 32) & 4294967295)::oid \
                       AND l.objid = (8602286941253234756::bigint & 4294967295)::oid",
                    &[&name],
                )
                .await
                .expect("look for the lock");
            if !killed.is_empty() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    });
    let out = tokio::task::block_in_place(|| {
        t.run(["database", "reset", "--execute", "--confirm", "dev"])
    });
    assert!(killer.await.unwrap(), "the lock session was never seen");
    assert_eq!(out.code, 69, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_MIGRATE_RESULT"),
        Some("success")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_BASE_SEED_RESULT"),
        Some("skipped")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_DEV_SEED_RESULT"),
        Some("skipped")
    );
    assert_eq!(out.marker("WAVEMAP_DATABASE_RESET_RESULT"), Some("failed"));
    assert!(
        out.stderr
            .contains("the session holding the advisory lock 8602286941253234756")
            && out.stderr.contains("the base-seed step was not started"),
        "{}",
        out.dump()
    );
    let seeded = pg_connect(&url)
        .await
        .query("SELECT 1 FROM seed_marker", &[])
        .await;
    assert!(seeded.is_err(), "no seed ran: {seeded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_label_host_is_never_looked_up_in_host_dns() {
    // The machine's own name: where /etc/hosts maps it to 127.0.0.1 (as on
    // the stack's machines), a host-DNS lookup would reach the stack's
    // PostgreSQL with these credentials and answer. A Compose-style name is
    // resolved only through Docker, and this project has no such service.
    let name = std::process::Command::new("hostname")
        .output()
        .expect("hostname");
    let name = String::from_utf8_lossy(&name.stdout).trim().to_owned();
    let label = name.split('.').next().unwrap_or_default().to_owned();
    assert!(
        !label.is_empty() && label != "localhost",
        "the machine's hostname ({name:?}) gives no usable single label"
    );
    let t = TestDir::new("dbstatus-nodns");
    let db = load_fixture("behind").await;
    let url = db.replacen("@127.0.0.1:", &format!("@{label}:"), 1);
    std::fs::create_dir_all(t.env_dir()).unwrap();
    std::fs::write(
        t.env_dir().join("backend.env"),
        format!("DATABASE_URL='{url}'\n"),
    )
    .unwrap();
    let dir = migrations_dir("behind").display().to_string();
    let out = t.run([
        "database",
        "status",
        "--allow-migrate",
        "--migrations-dir",
        &dir,
    ]);
    assert_eq!(out.code, 69, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_DATABASE_STATUS_STATE"), None);
    assert!(
        out.stderr.contains(&format!(
            "`{label}` in the database URL is a single-label name, which the agent resolves only as a service of Compose project `{}` (never through host DNS)",
            t.name
        )),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains(&pg_password()), "{}", out.dump());
}

/// A docker CLI command run on drop (cleanup that must happen on panic too).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(&self.0).output();
    }
}
