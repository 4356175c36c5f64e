//! Safety under real failures (issue 15), and the reset evidence of issue
//! 20, against the real stack:
//!
//! - the empty-render guard through `runtime-env`, `runtime deploy` and the
//!   daemon's boot render: exit 3 (or, at boot, the existing files kept) and
//!   the env files unchanged byte for byte;
//! - a SIGKILL between a render's temp writes and its renames;
//! - a SIGKILLed `database migrate` and its immediate rerun: never two
//!   migrators; the PostgreSQL advisory lock; SIGTERM during a job;
//! - a job printing 20,000 lines: stderr bounded, the error last, the full
//!   log in the file the marker names;
//! - honest flags, `NEXT_PUBLIC_*`, `config check` redaction, reset warning
//!   samples and shape.
//!
//! Job tests run an "API container" of the test's Compose project (the labels
//! Compose puts on it) from the stack's fake-backend image on the host
//! network; its jobs are `docker exec`s. Where a test needs a job that is
//! slow, noisy or that varies its numbers, the job command is a busybox
//! shell line around the fake backend (the image carries busybox).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wavemap_e2e::{
    mode, pg_connect, pg_fresh_database, release_args, repo_root, stack, toml_str, unique_name,
    with_execute, Output, TestDir,
};

use super::faults::{base_params, env_files, p, put_params, snapshot, write_small_project, Down};

// --- helpers ------------------------------------------------------------------------------

fn drizzle() -> PathBuf {
    std::env::var_os("WAVEMAP_DRIZZLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/fixtures/drizzle"))
}

/// A fresh database holding the Drizzle fixture `scenario`; its URL.
pub(crate) async fn fixture_db(scenario: &str) -> String {
    let url = pg_fresh_database(&format!("safety-{}", &scenario[..scenario.len().min(6)])).await;
    let sql = std::fs::read_to_string(drizzle().join(scenario).join("database.sql"))
        .expect("read database.sql");
    pg_connect(&url)
        .await
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("load {scenario}: {e}"));
    url
}

/// Hashes of the ledger rows, or None without a ledger.
async fn ledger(url: &str) -> Option<Vec<String>> {
    pg_connect(url)
        .await
        .query(
            "SELECT hash FROM drizzle.__drizzle_migrations ORDER BY id",
            &[],
        )
        .await
        .ok()
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
}

/// Hashes of the ledger the real migrator leaves (the `up-to-date` dump).
fn up_to_date_ledger() -> Vec<String> {
    let sql = std::fs::read_to_string(drizzle().join("up-to-date/database.sql")).unwrap();
    sql.lines()
        .filter_map(|l| l.strip_prefix("INSERT INTO drizzle.__drizzle_migrations VALUES ("))
        .map(|l| l.split(", ").nth(1).unwrap().trim_matches('\'').to_owned())
        .collect()
}

/// An API container of `td`'s project, removed on drop.
pub(crate) struct Api {
    id: String,
    since: u64,
}

impl Api {
    pub(crate) fn start(td: &TestDir, database_url: &str) -> Api {
        let since = unix_now() - 1;
        let out = Command::new("docker")
            .args(["run", "-d", "--network", "host", "--name"])
            .arg(unique_name("safety-api"))
            .args([
                "--label",
                &format!("com.docker.compose.project={}", td.name),
            ])
            .args(["--label", "com.docker.compose.service=api"])
            .args(["--label", "com.docker.compose.oneoff=False"])
            .args(["-e", &format!("DATABASE_URL={database_url}")])
            .args(["--entrypoint", ""])
            .arg(stack().require("WAVEMAP_TEST_BACKEND_IMAGE_A"))
            .args(["/bin/busybox", "sleep", "900"])
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "start the API container: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Api {
            id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            since,
        }
    }

    /// Processes running in the container (`docker top`), one per line.
    fn top(&self) -> String {
        let out = Command::new("docker")
            .args(["top", &self.id, "-o", "pid,args"])
            .output()
            .expect("docker top");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Execs started in the container whose command contains `needle`
    /// (from the Engine's event log).
    pub(crate) fn execs(&self, needle: &str) -> usize {
        let out = Command::new("docker")
            .args(["events", "--since", &self.since.to_string(), "--until"])
            .arg((unix_now() + 1).to_string())
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
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Spawn the agent with `td`'s config; stdout and stderr captured.
fn spawn(td: &TestDir, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = td.command();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the agent")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0, "kill");
}

/// Wait for `child` (at most `limit`), then its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the agent did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output").into()
}

/// Poll `what` until it holds or `limit` passes; false on timeout.
fn eventually(limit: Duration, mut what: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A test dir whose jobs are the fake backend's, each overridable.
pub(crate) fn job_dir(prefix: &str) -> TestDir {
    let mut td = TestDir::new(prefix);
    for (key, sub) in [
        ("migrate_command", "migrate"),
        ("base_seed_command", "seed-base"),
        ("dev_seed_command", "seed-dev"),
        ("media_report_command", "media-report"),
    ] {
        td.set(
            "jobs",
            key,
            format!("[\"/app/fake-backend\", {}]", toml_str(sub)),
        );
    }
    td.set("jobs", "warning_pattern", toml_str("warning:"));
    td
}

/// A job command: a busybox shell line.
pub(crate) fn sh(line: &str) -> String {
    format!("[\"/bin/busybox\", \"sh\", \"-c\", {}]", toml_str(line))
}

/// The last journal entry with `event`.
fn last_journal(td: &TestDir, event: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(td.journal_path()).expect("operation journal");
    text.lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("journal line is JSON"))
        .find(|e| e["event"] == event)
        .unwrap_or_else(|| panic!("no {event} entry in\n{text}"))
}

// --- the empty-render guard ------------------------------------------------------------------

/// The daemon until its READY (boot recovery done); its STATUS lines.
fn daemon_until_ready(td: &TestDir) -> String {
    let notify_path = td.path().join(format!("{}.sock", unique_name("notify")));
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let child = td
        .command()
        .arg("daemon")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut buf = vec![0u8; 8192];
    let mut notes = String::new();
    while Instant::now() < deadline && !notes.contains("READY=1") {
        if let Ok(n) = notify.recv(&mut buf) {
            notes.push_str(&String::from_utf8_lossy(&buf[..n]));
            notes.push('\n');
        }
    }
    signal(&child, libc::SIGTERM);
    let out = finish(child, Duration::from_secs(30));
    assert!(
        notes.contains("READY=1"),
        "the daemon never became ready\n{notes}\n{}",
        out.dump()
    );
    notes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_prefix_or_an_emptied_file_is_refused_everywhere_and_changes_no_byte() {
    let s = stack();
    let mut td = TestDir::new("safety-empty");
    let _down = Down(td.name.clone());
    write_small_project(&mut td);
    let tag = td.name.replace('_', "");
    put_params(
        &td,
        &base_params(&format!("EmptyDb{tag}"), &format!("EmptyApi{tag}")),
    )
    .await;
    let deploy = with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "faults",
    ));
    let out = td.run(&deploy);
    assert_eq!(out.code, 0, "{}", out.dump());
    let dotenv = td.compose_file().with_file_name(".env");
    assert_eq!(mode(&dotenv), 0o600, "a new .env is owner-only");
    let files = env_files(&td);
    let before = snapshot(&files);
    let api_before = super::faults::running_image(&td.name, "api").await;

    // A typo in the prefix: 0 parameters.
    let good_prefix = td.parameter_prefix();
    let typo = format!("/wavemap-e2e/{}/runtme/", td.name);
    td.set("runtime", "parameter_prefix", toml_str(&typo));
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_AGENT_ERROR"), Some("gate-blocked"));
    assert_eq!(out.marker("WAVEMAP_RUNTIME_ENV_RESULT"), Some("blocked"));
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_BLOCKED_REASON"),
        Some("empty-prefix")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_PREFIX"),
        Some(typo.as_str())
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_EMPTIED_FILES"),
        Some("backend.env,frontend.env,postgres.env")
    );
    assert!(
        out.stderr.contains("read 0 parameters under"),
        "{}",
        out.dump()
    );
    assert_eq!(snapshot(&files), before, "runtime-env changed a file");

    let out = td.run(&deploy);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("env-render")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_BLOCKED_REASON"),
        Some("empty-prefix")
    );
    assert_eq!(snapshot(&files), before, "runtime deploy changed a file");

    // The daemon keeps the files too. Since issue 23 it renders nothing at
    // wake, and after the failed deploy it waits for one that succeeds.
    let notes = daemon_until_ready(&td);
    assert!(
        notes.contains("waiting: the last `runtime deploy` failed"),
        "STATUS does not say the daemon waits for a deploy:\n{notes}"
    );
    assert_eq!(
        snapshot(&files),
        before,
        "the daemon's boot render changed a file"
    );
    assert_eq!(
        super::faults::running_image(&td.name, "api").await,
        api_before
    );

    // The right prefix, but the frontend's only parameter is gone: that
    // file would be left with no variable.
    td.set("runtime", "parameter_prefix", toml_str(&good_prefix));
    let ssm = wavemap_e2e::ssm_client().await;
    ssm.delete_parameter()
        .name(format!("{good_prefix}frontend/PUBLIC_API_ORIGIN"))
        .send()
        .await
        .expect("delete parameter");
    for args in [
        vec!["runtime-env", "--execute"],
        deploy.iter().map(String::as_str).collect(),
    ] {
        let out = td.run(&args);
        assert_eq!(out.code, 3, "{}", out.dump());
        assert_eq!(
            out.marker("WAVEMAP_RUNTIME_ENV_BLOCKED_REASON"),
            Some("empty-file"),
            "{}",
            out.dump()
        );
        assert_eq!(
            out.marker("WAVEMAP_RUNTIME_ENV_EMPTIED_FILES"),
            Some("frontend.env")
        );
        assert_eq!(
            snapshot(&files),
            before,
            "`{}` changed a file",
            args.join(" ")
        );
    }
    let notes = daemon_until_ready(&td);
    assert!(
        notes.contains("waiting: the last `runtime deploy` failed"),
        "{notes}"
    );
    assert_eq!(
        snapshot(&files),
        before,
        "the daemon's boot render changed a file"
    );

    // --allow-empty is the deliberate way through.
    let out = td.run(["runtime-env", "--execute", "--allow-empty"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_FILE_FRONTEND_VARIABLES"),
        Some("0")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_FILE_FRONTEND_REMOVED"),
        Some("PUBLIC_API_ORIGIN")
    );
    // record-release renders nothing: --allow-empty is refused there.
    let mut record = release_args(
        "record-release",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "faults",
    );
    record.push("--allow-empty".into());
    let out = td.run(&record);
    assert_eq!(out.code, 2, "{}", out.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_between_temp_writes_and_renames_keeps_the_old_files_and_the_next_run_cleans_up()
{
    let td = TestDir::new("safety-crash");
    let tag = td.name.replace('_', "");
    let mut params = base_params(&format!("CrashDb{tag}"), &format!("CrashApi{tag}"));
    put_params(&td, &params).await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let files = env_files(&td);
    let before = snapshot(&files);

    params = vec![
        p("backend/API_SECRET", &format!("CrashApi{tag}v2"), true),
        p(
            "frontend/PUBLIC_API_ORIGIN",
            "https://next.wavemap.app/api",
            false,
        ),
    ];
    put_params(&td, &params).await;
    let child = spawn(
        &td,
        &["runtime-env", "--execute"],
        &[(wavemap_agent::testpoint::PAUSE_BEFORE_RENAME_MS, "60000")],
    );
    let temps = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".wavemap-tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let pending = td.state_dir().join("env-render-pending.json");
    assert!(
        eventually(Duration::from_secs(60), || pending.exists()
            && temps(&td.env_dir()).len() == 2),
        "the render never reached its rename phase: temps {:?}",
        temps(&td.env_dir())
    );
    signal(&child, libc::SIGKILL);
    let killed = finish(child, Duration::from_secs(10));
    assert_eq!(killed.code, -1, "{}", killed.dump());
    assert_eq!(
        snapshot(&files),
        before,
        "a file changed before the renames"
    );
    assert_eq!(
        temps(&td.env_dir()).len(),
        2,
        "the kill left its temp files"
    );
    // A stray temp file of some other dead process, too.
    std::fs::write(td.env_dir().join(".wavemap-tmp-backend.env-4194303"), b"x").unwrap();

    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(temps(&td.env_dir()), Vec::<String>::new());
    assert!(!pending.exists());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_RECOVERED_FILES"),
        Some("backend.env,frontend.env")
    );
    let frontend = std::fs::read_to_string(td.env_dir().join("frontend.env")).unwrap();
    assert!(
        frontend.contains("https://next.wavemap.app/api"),
        "{frontend}"
    );
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let recovered = last_journal(&td, "recovered");
    assert_eq!(
        recovered["details"]["finishedRenames"],
        serde_json::json!(["backend.env", "frontend.env"])
    );
    assert!(
        recovered["details"]["removedTempFiles"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == ".wavemap-tmp-backend.env-4194303")),
        "{recovered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_public_parameters_are_refused_unless_declared_build_time() {
    let mut td = TestDir::new("safety-nextpub");
    let tag = td.name.replace('_', "");
    let mut params = base_params(&format!("NpDb{tag}"), &format!("NpApi{tag}"));
    params.push(p(
        "frontend/NEXT_PUBLIC_API_URL",
        "https://dev.wavemap.app/api",
        false,
    ));
    put_params(&td, &params).await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert!(out.stderr.contains("NEXT_PUBLIC_API_URL"), "{}", out.dump());
    assert!(
        !td.env_dir().join("frontend.env").exists(),
        "nothing written"
    );
    td.set(
        "runtime",
        "parameters",
        "[{ name = \"frontend/NEXT_PUBLIC_API_URL\", type = \"String\", allow_build_time = true }]",
    );
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let frontend = std::fs::read_to_string(td.env_dir().join("frontend.env")).unwrap();
    assert!(frontend.contains("NEXT_PUBLIC_API_URL="), "{frontend}");
}

#[test]
fn config_check_shows_no_database_password() {
    let mut td = TestDir::new("safety-config");
    let password = format!("CfgPw{}", td.name.replace('_', ""));
    td.set(
        "database",
        "url",
        toml_str(&format!("postgres://app:{password}@db.internal:5432/app")),
    );
    for args in [vec!["config", "check"], vec!["--json", "config", "check"]] {
        let out = td.run(&args);
        assert_eq!(out.code, 0, "{}", out.dump());
        assert!(!out.stderr.contains(&password), "{}", out.dump());
        assert!(!out.stdout.contains(&password), "{}", out.dump());
        assert!(
            !out.stderr.contains("app:"),
            "the user is hidden too\n{}",
            out.dump()
        );
    }
    let out = td.run(["config", "check"]);
    assert!(
        out.stderr
            .contains("postgres://REDACTED:REDACTED@db.internal:5432/app"),
        "{}",
        out.dump()
    );
}

// --- jobs ---------------------------------------------------------------------------------

/// The migrate job, slowed down so a test can act while it runs.
const SLOW_MIGRATE: &str = "sleep 8; exec /app/fake-backend migrate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_migrate_and_its_rerun_never_run_two_migrators() {
    let mut td = job_dir("safety-kill");
    td.set("jobs", "migrate_command", sh(SLOW_MIGRATE));
    let url = fixture_db("behind").await;
    let api = Api::start(&td, &url);
    let migrate = ["database", "migrate", "--execute", "--database-url", &url];

    let child = spawn(&td, &migrate, &[]);
    assert!(
        eventually(Duration::from_secs(60), || api.top().contains("sleep 8")),
        "the migrate job never started:\n{}",
        api.top()
    );
    signal(&child, libc::SIGKILL);
    let killed = finish(child, Duration::from_secs(10));
    assert_eq!(killed.code, -1, "{}", killed.dump());
    assert!(api.top().contains("sleep 8"), "the orphaned job runs on");

    // A rerun that may not wait long enough: exit 75 naming the job.
    let mut short = vec!["--lock-timeout", "1"];
    short.extend(migrate);
    let out = td.run(&short);
    assert_eq!(out.code, 75, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_AGENT_ERROR"), Some("lock-busy"));
    assert!(out.stderr.contains(SLOW_MIGRATE), "{}", out.dump());

    // An immediate rerun with time: it waits for the orphan, then finds
    // nothing to apply.
    let out = td.run(migrate);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert!(
        out.stderr.contains("still running in the API container"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("up-to-date")
    );
    assert_eq!(api.execs("sleep 8"), 1, "one migrator ever ran");
    assert_eq!(ledger(&url).await, Some(up_to_date_ledger()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advisory_lock_keeps_a_second_migrator_off_the_database() {
    let td = job_dir("safety-advisory");
    let url = fixture_db("behind").await;
    let api = Api::start(&td, &url);
    let before = ledger(&url).await;
    // Someone else (another host, a shell) holds the lock on this database.
    let holder = pg_connect(&url).await;
    let key = i64::from_be_bytes(*b"wavemapD");
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .expect("take the advisory lock");
    let out = td.run([
        "--lock-timeout",
        "2",
        "database",
        "migrate",
        "--execute",
        "--database-url",
        &url,
    ]);
    assert_eq!(out.code, 75, "{}", out.dump());
    assert!(out.stderr.contains("advisory lock"), "{}", out.dump());
    assert_eq!(api.execs("migrate"), 0, "no job ran");
    assert_eq!(ledger(&url).await, before);
    let out = td.run([
        "--lock-timeout",
        "2",
        "database",
        "reset",
        "--execute",
        "--confirm",
        "dev",
        "--database-url",
        &url,
    ]);
    assert_eq!(out.code, 75, "{}", out.dump());
    assert_eq!(api.execs("seed"), 0, "no job ran");

    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .expect("release");
    let out = td.run(["database", "migrate", "--execute", "--database-url", &url]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("applied")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_job_stops_it_and_records_the_operation_as_interrupted() {
    let mut td = job_dir("safety-term");
    td.set(
        "jobs",
        "migrate_command",
        sh("echo migrating; exec sleep 120"),
    );
    let url = pg_fresh_database("safety-term").await;
    let api = Api::start(&td, &url);
    let child = spawn(
        &td,
        &["database", "reset", "--execute", "--confirm", "dev"],
        &[],
    );
    assert!(
        eventually(Duration::from_secs(60), || api.top().contains("sleep 120")),
        "the job never started:\n{}",
        api.top()
    );
    signal(&child, libc::SIGTERM);
    let out = finish(child, Duration::from_secs(30));
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_AGENT_ERROR"), Some("interrupted"));
    assert_eq!(out.marker("WAVEMAP_AGENT_INTERRUPTED"), Some("SIGTERM"));
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_MIGRATE_RESULT"),
        Some("interrupted")
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_RESET_BASE_SEED_RESULT"),
        Some("skipped")
    );
    assert!(
        out.stderr.contains("ended it with SIGTERM"),
        "{}",
        out.dump()
    );
    assert!(
        !api.top().contains("sleep 120"),
        "the job still runs:\n{}",
        api.top()
    );
    let end = last_journal(&td, "end");
    assert_eq!(end["command"], "database reset");
    assert_eq!(end["outcome"], "interrupted", "{end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_printing_20000_lines_keep_stderr_small_with_the_error_last() {
    let mut td = job_dir("safety-flood");
    let noisy = |name: &str| {
        sh(&format!(
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo \"{name}: row $i of 20000 imported from the fixture set\"; done"
        ))
    };
    td.set("jobs", "migrate_command", noisy("migrate"));
    td.set("jobs", "base_seed_command", noisy("seed-base"));
    td.set(
        "jobs",
        "dev_seed_command",
        sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo \"seed-dev: row $i\"; done; echo 'error: seed-dev aborted: duplicate key value violates unique constraint \"events_pkey\"' >&2; exit 1"),
    );
    let url = pg_fresh_database("safety-flood").await;
    let _api = Api::start(&td, &url);
    let out = td.run(["database", "reset", "--execute", "--confirm", "dev"]);
    assert_eq!(out.code, 1, "{}", out.dump());
    let chars = out.stderr.chars().count();
    eprintln!("stderr: {chars} characters for 60,001 job lines");
    assert!(
        chars < 7_000,
        "stderr is {chars} characters:\n{}",
        out.stderr
    );
    assert!(out.stdout.len() < 24_000);
    assert!(
        out.stderr
            .contains("duplicate key value violates unique constraint"),
        "the job's final error line is missing:\n{}",
        out.stderr
    );
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("dev-seed failed"),
        "the error is not last: {last}\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("lines not shown here"),
        "{}",
        out.stderr
    );
    let log = PathBuf::from(
        out.marker("WAVEMAP_AGENT_JOB_LOG")
            .unwrap_or_else(|| panic!("no job log marker\n{}", out.dump())),
    );
    assert!(
        log.starts_with(td.state_dir().join("jobs")),
        "{}",
        log.display()
    );
    assert_eq!(mode(&log), 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    for job in ["migrate", "seed-base"] {
        let rows = text
            .lines()
            .filter(|l| l.starts_with(&format!("{job}: row ")))
            .count();
        assert_eq!(rows, 20_000, "{job}");
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("seed-dev: row"))
            .count(),
        20_000
    );
    assert!(text.contains("seed-base: row 12345 of 20000"));
    // The job's stdout and stderr are two streams that docker exec
    // multiplexes: the error line is in the log, but not necessarily after
    // the last stdout row.
    assert!(
        text.lines().any(|l| l.ends_with(
            "error: seed-dev aborted: duplicate key value violates unique constraint \"events_pkey\""
        )),
        "the job's error line is not in the log:\n{}",
        &text[text.len().saturating_sub(300)..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_warnings_carry_samples_and_a_shape_that_ignores_numbers() {
    let mut shapes = Vec::new();
    for (round, dev_seed) in [
        (1, "[\"/app/fake-backend\", \"seed-dev\"]".to_owned()),
        (
            2,
            sh("/app/fake-backend seed-dev | sed -e 's/2024/2031/' -e 's/4711/90210/' -e 's/5SU/4SA/'"),
        ),
    ] {
        let mut td = job_dir(&format!("safety-warn{round}"));
        td.set("jobs", "dev_seed_command", dev_seed);
        let url = fixture_db("behind").await;
        let _api = Api::start(&td, &url);
        let out = td.run(["database", "reset", "--execute", "--confirm", "dev"]);
        assert_eq!(out.code, 0, "{}", out.dump());
        assert_eq!(out.marker("WAVEMAP_DATABASE_RESET_WARNING_COUNT"), Some("3"));
        let samples: Vec<&str> = (1..=3)
            .map(|i| {
                out.marker(&format!("WAVEMAP_DATABASE_RESET_WARNING_SAMPLE_{i}"))
                    .unwrap_or_else(|| panic!("sample {i} missing\n{}", out.dump()))
            })
            .collect();
        let year = if round == 1 { "2024" } else { "2031" };
        assert!(
            samples[0].starts_with("warning: event series \"Summer Sessions ")
                && samples[0].contains(year),
            "{samples:?}"
        );
        assert!(samples[2].contains(if round == 1 { "4711" } else { "90210" }), "{samples:?}");
        assert!(samples.iter().all(|s| s.len() <= 400));
        let shape = out
            .marker("WAVEMAP_DATABASE_RESET_WARNING_SHAPE")
            .expect("shape marker")
            .to_owned();
        assert_eq!(shape.len(), 12, "{shape}");
        shapes.push(shape);
    }
    assert_eq!(shapes[0], shapes[1], "the same warnings with other numbers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_commands_honour_their_flags_or_refuse_them() {
    let td = job_dir("safety-flags");
    // The container's own DATABASE_URL names one database; the flag another.
    let container_db = fixture_db("behind").await;
    let flag_db = fixture_db("behind").await;
    let api = Api::start(&td, &container_db);
    let out = td.run([
        "database",
        "migrate",
        "--execute",
        "--database-url",
        &flag_db,
    ]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("applied")
    );
    assert_eq!(
        ledger(&flag_db).await,
        Some(up_to_date_ledger()),
        "the gated database was migrated"
    );
    assert_eq!(
        ledger(&container_db).await.map(|l| l.len()),
        Some(2),
        "the other one was not"
    );

    // A journal other than the image's (3 entries, the image has 4): the
    // gate would read one journal and the job apply another.
    let dir = drizzle()
        .join("ahead/image-migrations")
        .display()
        .to_string();
    for flag in [
        vec!["--migrations-dir", dir.as_str()],
        vec!["--migrations-schema", "other"],
        vec!["--migrations-table", "other"],
    ] {
        let mut args = vec!["database", "reset", "--execute", "--confirm", "dev"];
        args.extend(&flag);
        let out = td.run(&args);
        assert_eq!(out.code, 2, "{}", out.dump());
        assert!(out.stderr.contains(flag[0]), "{}", out.dump());
        let mut args = vec![
            "database",
            "migrate",
            "--execute",
            "--database-url",
            &container_db,
        ];
        args.extend(&flag);
        let out = td.run(&args);
        assert_eq!(out.code, 2, "{}", out.dump());
        assert!(out.stderr.contains(flag[0]), "{}", out.dump());
    }
    assert_eq!(
        api.execs("migrate"),
        1,
        "only the honoured migrate ran a job"
    );
    assert_eq!(ledger(&container_db).await.map(|l| l.len()), Some(2));
    // The reset honours --database-url for every job.
    let out = td.run([
        "database",
        "reset",
        "--execute",
        "--confirm",
        "dev",
        "--database-url",
        &flag_db,
    ]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let seeded = |url: String| async move {
        pg_connect(&url)
            .await
            .query("SELECT count(*) FROM seed_marker", &[])
            .await
            .ok()
            .map(|rows| rows[0].get::<_, i64>(0))
    };
    assert_eq!(seeded(flag_db.clone()).await, Some(6));
    assert_eq!(
        seeded(container_db.clone()).await,
        None,
        "the container's database was not seeded"
    );
}
