//! Issue 23: markers as they happen, and the command's deadline.
//!
//! - SIGKILL in every stage of a deploy (the SSM Agent's kill at the
//!   document's timeout, or the OOM killer) leaves that stage's
//!   `WAVEMAP_RUNTIME_DEPLOY_STAGE` marker on stdout: the agent prints it,
//!   flushed, when the stage starts. The kill is deterministic, at the
//!   stage's test pause point (`wavemap_agent::testpoint`), which comes
//!   right after the marker.
//!   A database migrate killed in each of its stages before the job leaves
//!   its `WAVEMAP_DATABASE_MIGRATE_STAGE` the same way.
//! - `--deadline 8` on a release that never gets healthy: the agent stops
//!   itself at the deadline the way a signal stops it (failed stage named,
//!   `WAVEMAP_AGENT_ERROR=deadline`, exit 1, the operation journalled as
//!   interrupted), within the issue's bar of the deadline plus 5 s.

use std::process::Stdio;
use std::time::{Duration, Instant};

use wavemap_e2e::{release_args, stack, with_execute, Output, RuntimeProject, TestDir};

/// Every stage a deploy announces, in order: the lock wait, the pipeline,
/// the current-release write.
const DEPLOY_STAGES: [&str; 7] = [
    "lock",
    "env-render",
    "ecr-login",
    "pull",
    "converge",
    "health",
    "state",
];

/// Run `args` paused at `point`, SIGKILL it once it announces the pause,
/// and return what it had written to stdout and stderr by then.
fn stdout_when_killed_at(td: &TestDir, args: &[String], point: &str) -> (String, String) {
    let pause_file = td.path().join(format!("pause-{point}"));
    let stdout_file = td.path().join(format!("stdout-{point}"));
    let stderr_file = td.path().join(format!("stderr-{point}"));
    let _ = std::fs::remove_file(&pause_file);
    let mut child = td
        .command()
        .args(args)
        .env(wavemap_agent::testpoint::PAUSE_AT, point)
        .env(wavemap_agent::testpoint::PAUSE_FILE, &pause_file)
        // A file, as the SSM Agent's capture is: what was written before the
        // kill is all there is.
        .stdout(std::fs::File::create(&stdout_file).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("spawn the agent");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    loop {
        if std::fs::read_to_string(&pause_file).is_ok_and(|a| a == point) {
            // SAFETY: kill(2) on the pid of a child we have not reaped.
            let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            assert_eq!(rc, 0, "SIGKILL at {point}");
            let status = child.wait().expect("wait for the killed agent");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL),
                "the agent at {point} died of SIGKILL"
            );
            return (read(&stdout_file), read(&stderr_file));
        }
        if let Some(status) = child.try_wait().expect("poll the agent") {
            panic!(
                "stage {point} not reached: the deploy ended ({status}) without pausing there\n--- stdout\n{}--- stderr\n{}",
                read(&stdout_file),
                read(&stderr_file)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_every_stage_leaves_that_stage_marker_on_stdout() {
    let s = stack();
    let td = TestDir::new("stagekill");
    let _project = RuntimeProject::new(&td).await;
    let deploy = with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "stagekill",
    ));
    let mut seen = Vec::new();
    for stage in DEPLOY_STAGES {
        let (stdout, stderr) = stdout_when_killed_at(&td, &deploy, stage);
        let stages: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("WAVEMAP_RUNTIME_DEPLOY_STAGE="))
            .collect();
        assert_eq!(
            stages.last(),
            Some(&stage),
            "killed in {stage}: the last stage marker on stdout\n--- stdout\n{stdout}--- stderr\n{stderr}"
        );
        // Every stage before it was announced too, in order, and stdout
        // holds markers only.
        let at = DEPLOY_STAGES
            .iter()
            .position(|s| *s == stage)
            .expect("known stage");
        assert_eq!(stages, DEPLOY_STAGES[..=at], "killed in {stage}");
        assert!(
            stdout.lines().all(|l| l.starts_with("WAVEMAP_")),
            "{stdout}"
        );
        seen.push(stage);
    }
    // The same run unkilled ends with the final markers after the stages.
    let out = td.run(&deploy);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_STAGE"), Some("state"));
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("success"));
    let line = format!(
        "{}/{} deploy stages killed with SIGKILL left their marker: {}",
        seen.len(),
        DEPLOY_STAGES.len(),
        seen.join(", ")
    );
    eprintln!("{line}");
    wavemap_e2e::report_line("stage-markers", &line);
}

/// The stages of `database migrate --execute` before its job starts (the
/// left-over job wait is the first `job`).
const MIGRATE_STAGES: [&str; 5] = ["lock", "job", "journal", "advisory-lock", "ledger"];

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_every_migrate_stage_leaves_that_stage_marker_on_stdout() {
    let td = crate::safety::job_dir("stagekill-db");
    let url = crate::safety::fixture_db("behind").await;
    let _api = crate::safety::Api::start(&td, &url);
    let migrate: Vec<String> = ["database", "migrate", "--execute", "--database-url", &url]
        .map(String::from)
        .to_vec();
    for stage in MIGRATE_STAGES {
        let (stdout, stderr) = stdout_when_killed_at(&td, &migrate, stage);
        let stages: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("WAVEMAP_DATABASE_MIGRATE_STAGE="))
            .collect();
        let at = MIGRATE_STAGES
            .iter()
            .position(|s| *s == stage)
            .expect("known stage");
        assert_eq!(
            stages,
            MIGRATE_STAGES[..=at],
            "killed in {stage}: the stage markers on stdout\n--- stdout\n{stdout}--- stderr\n{stderr}"
        );
    }
    // Unkilled, it migrates; the last stage is the ledger read after the job.
    let out = td.run(&migrate);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("applied"),
        "{}",
        out.dump()
    );
    let stages: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("WAVEMAP_DATABASE_MIGRATE_STAGE="))
        .collect();
    assert_eq!(
        stages,
        [
            "lock",
            "job",
            "journal",
            "advisory-lock",
            "ledger",
            "job",
            "ledger"
        ],
        "{}",
        out.dump()
    );
}

/// The fixture's frontend healthcheck made one that never passes: health
/// stays `starting` (a long start period), so only a deadline ends the wait.
fn never_healthy_frontend(td: &TestDir) {
    let path = td.compose_file();
    let text = std::fs::read_to_string(&path).expect("compose file");
    let (head, frontend) = text.split_once("  frontend:").expect("frontend service");
    let frontend = frontend
        .replacen(
            r#"test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]"#,
            r#"test: ["CMD", "false"]"#,
            1,
        )
        .replacen("start_period: 5s", "start_period: 600s", 1);
    assert!(frontend.contains(r#"["CMD", "false"]"#), "{frontend}");
    std::fs::write(&path, format!("{head}  frontend:{frontend}")).expect("write compose file");
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_stops_a_release_that_never_gets_healthy_at_health() {
    let s = stack();
    let mut td = TestDir::new("deadline");
    td.set("runtime", "health_timeout", "300");
    let project = RuntimeProject::new(&td).await;
    let args = |sha: &str, version: &str| {
        with_execute(release_args(
            "deploy",
            s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
            s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
            sha,
            version,
        ))
    };
    // The project up and healthy first, so the deadline's deploy only
    // recreates the frontend and spends its budget waiting for health.
    let first = td.run(args(&s.sha_a, "deadline-1"));
    assert_eq!(first.code, 0, "{}", first.dump());
    let (_, frontend_before) = project.container("frontend").await;
    never_healthy_frontend(&td);

    let deadline = 8;
    let started = Instant::now();
    let out: Output = td
        .command()
        .arg("--deadline")
        .arg(deadline.to_string())
        .args(args(&s.sha_a, "deadline-2"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the agent")
        .into();
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("health"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.marker("WAVEMAP_AGENT_ERROR"),
        Some("deadline"),
        "{}",
        out.dump()
    );
    assert_eq!(out.marker("WAVEMAP_AGENT_INTERRUPTED"), Some("deadline"));
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("failed"));
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_STAGE"), Some("health"));
    // It ended by itself (runtime.health_timeout is 300 s), within the
    // issue's bar for the deadline.
    assert!(
        took < Duration::from_secs(deadline + 5),
        "--deadline {deadline} ended after {took:?}\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("--deadline"),
        "the error names the budget: {}",
        out.dump()
    );
    // The health wait really ran: the frontend was recreated and is the
    // never-healthy one.
    let (_, frontend_after) = project.container("frontend").await;
    assert_ne!(frontend_after, frontend_before, "{}", out.dump());
    // Journalled as an interrupted operation, the way a signal leaves it.
    let journal = std::fs::read_to_string(td.journal_path()).expect("journal");
    let end: serde_json::Value = journal
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .expect("an end record");
    assert_eq!(end["event"], "end", "{journal}");
    assert_eq!(end["outcome"], "interrupted", "{journal}");
    assert_eq!(end["exit_code"], 1, "{journal}");
}

/// A job is never cut in the middle by the budget: with `--deadline 30`
/// and a longer `jobs.timeout` (the test config's) the migrate job cannot fit, so
/// it is refused at once, before anything runs, naming the job and the
/// budget; the database stays `behind`.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_cannot_fit_in_the_budget_is_not_started() {
    let td = crate::safety::job_dir("deadline-fit");
    let url = crate::safety::fixture_db("behind").await;
    let _api = crate::safety::Api::start(&td, &url);
    let out = td.run([
        "--deadline",
        "30",
        "database",
        "migrate",
        "--execute",
        "--database-url",
        &url,
    ]);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_AGENT_ERROR"),
        Some("deadline"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.marker("WAVEMAP_DATABASE_MIGRATE_RESULT"),
        Some("interrupted")
    );
    assert!(
        out.stderr
            .contains("job migrate (jobs.timeout) may take up to ")
            && out.stderr.contains("s, which does not fit in the ")
            && out
                .stderr
                .contains("of the 30s budget (--deadline); it was not started"),
        "{}",
        out.dump()
    );
    // Nothing ran: the database is still behind.
    let status = td.run(["database", "status", "--database-url", &url]);
    assert_eq!(
        status.marker("WAVEMAP_DATABASE_STATUS_STATE"),
        Some("behind"),
        "{}",
        status.dump()
    );
}

/// `WAVEMAP_AGENT_DEADLINE` is the flag's default: a bad value is exit 2
/// naming the variable, and the daemon, which runs until stopped, refuses
/// the flag.
#[test]
fn a_bad_deadline_is_refused_naming_where_it_came_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").expect("write config");
    let out = wavemap_e2e::run_agent(
        ["status"],
        Some(&config),
        &[("WAVEMAP_AGENT_DEADLINE", "ten")],
    );
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(
        out.stderr.contains("invalid WAVEMAP_AGENT_DEADLINE: `ten`"),
        "{}",
        out.dump()
    );
    let out = wavemap_e2e::run_agent(["--deadline", "5", "daemon"], Some(&config), &[]);
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(out.stderr.contains("invalid --deadline"), "{}", out.dump());
    let out = wavemap_e2e::run_agent(["--deadline", "0", "status"], Some(&config), &[]);
    assert_eq!(out.code, 2, "{}", out.dump());
}
