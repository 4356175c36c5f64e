//! SIGKILL at every crash point of deploy, rollback and record-release
//! (issues 6, 10 and 18): rerunning the same command must converge, and a
//! reader polling the receipt and the current-release state meanwhile must
//! never see a half-written file.
//!
//! The agent is stopped at each point deterministically: a debug build
//! pauses at `wavemap_agent::testpoint::pause(name)` when
//! `WAVEMAP_TEST_PAUSE_AT=name`, writes the name to
//! `WAVEMAP_TEST_PAUSE_FILE` and waits to be killed. The test waits for that
//! announcement, SIGKILLs, and reruns. A point the run never reaches fails
//! the test: every point of [`DEPLOY_POINTS`] and [`RECORD_POINTS`] must be
//! reached and recovered from.
//!
//! The images are private copies (pushed to a repository unique to this
//! test, local tags removed before each killed run), so the killed runs and
//! their reruns really log in to ECR and pull.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wavemap_e2e::{
    private_copy, release_args, stack, with_execute, Output, RuntimeProject, TestDir,
};

/// Where deploy and rollback can be killed: before each stage of the deploy
/// pipeline, before the current-release state is written, and in the middle
/// of that write (temp file written and synced, not yet renamed).
const DEPLOY_POINTS: [&str; 7] = [
    "env-render",
    "ecr-login",
    "pull",
    "converge",
    "health",
    "state",
    "write:current-release.json",
];

/// record-release killed in the middle of writing the receipt.
const RECORD_POINTS: [&str; 1] = ["write:last-successful-runtime-release.json"];

/// The state of one killed run at the moment of the kill.
struct Killed {
    /// The pause file's content: the point the agent announced.
    announced: String,
    stderr: String,
}

/// Run the agent with a pause at `point`, wait until it announces that it
/// is there, SIGKILL it. Panics naming the point if the run ends without
/// reaching it.
fn kill_at(td: &TestDir, args: &[String], point: &str, tag: &str) -> Killed {
    let pause_file = td.path().join(format!("pause-{tag}"));
    let stderr_file = td.path().join(format!("stderr-{tag}"));
    let _ = std::fs::remove_file(&pause_file);
    let mut child = td
        .command()
        .args(args)
        .env(wavemap_agent::testpoint::PAUSE_AT, point)
        .env(wavemap_agent::testpoint::PAUSE_FILE, &pause_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("spawn the agent");
    let read_stderr = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
    loop {
        if let Ok(announced) = std::fs::read_to_string(&pause_file) {
            let stderr = read_stderr();
            // SAFETY: kill(2) on the pid of a child we have not reaped.
            let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            assert_eq!(rc, 0, "SIGKILL {point}");
            let status = child.wait().expect("wait for the killed agent");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL),
                "the agent at {point} died of SIGKILL"
            );
            return Killed { announced, stderr };
        }
        if let Some(status) = child.try_wait().expect("poll the agent") {
            panic!(
                "crash point {point} not reached: `{}` ended ({status}) without pausing there\n{}",
                args.join(" "),
                read_stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Remove a local image tag if it is there (the private copies are this
/// test's own), so the next deploy of it must log in and pull. An image a
/// container still uses stays; the run then finds it present.
fn drop_local(image: &str) {
    let _ = Command::new("docker")
        .args(["image", "rm", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The `.wavemap-tmp-*` files beside `path`: what a write killed between
/// its temp file and its rename leaves.
fn temp_files_beside(path: &Path) -> Vec<PathBuf> {
    let dir = path.parent().expect("parent");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".wavemap-tmp-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn json_at(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not whole JSON: {e}", path.display()))
}

fn ok(out: &Output, what: &str) {
    assert_eq!(out.code, 0, "{what}:\n{}", out.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_every_crash_point_then_rerun_converges() {
    let s = stack();
    let td = TestDir::new("crash");
    let project = RuntimeProject::new(&td).await;
    let repo = td.name.replace('_', "-");
    let ba = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"), &repo);
    let fa = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"), &repo);
    let bb = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_B"), &repo);
    let fb = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B"), &repo);
    let deploy_a = with_execute(release_args("deploy", &ba, &fa, &s.sha_a, "crash"));
    let deploy_b = with_execute(release_args("deploy", &bb, &fb, &s.sha_b, "crash"));
    let record_a = with_execute(release_args("record-release", &ba, &fa, &s.sha_a, "crash"));
    let record_b = with_execute(release_args("record-release", &bb, &fb, &s.sha_b, "crash"));
    let rollback: Vec<String> = ["runtime", "rollback", "--execute"]
        .map(String::from)
        .to_vec();
    let state_path = td.state_dir().join("current-release.json");
    let receipt_path = td.receipt_path();

    ok(&td.run(&deploy_a), "deploy A");
    ok(&td.run(&record_a), "record A");

    // A reader that never may see a half-written receipt or state file.
    let stop = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, torn, reads) = (stop.clone(), torn.clone(), reads.clone());
        let files = [receipt_path.clone(), state_path.clone()];
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for f in &files {
                    if let Ok(bytes) = std::fs::read(f) {
                        reads.fetch_add(1, Ordering::Relaxed);
                        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
                            torn.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut recovered: Vec<String> = Vec::new();
    // Deploy B killed at each point (A running before), then rerun; then
    // rollback to A killed the same way (B running before).
    for (label, args, target, before, start) in [
        ("deploy", &deploy_b, [&bb, &fb], &s.sha_a, &deploy_a),
        ("rollback", &rollback, [&ba, &fa], &s.sha_b, &deploy_b),
    ] {
        for point in DEPLOY_POINTS {
            let name = format!("{label}@{point}");
            ok(&td.run(start), &format!("{name}: the deploy before"));
            for image in target {
                drop_local(image);
            }
            let killed = kill_at(&td, args, point, &name.replace([':', '@'], "-"));
            assert_eq!(killed.announced, point, "{name}\n{}", killed.stderr);
            if point == "write:current-release.json" {
                // Killed between the temp file and the rename: the state
                // still names the release before, whole.
                assert_eq!(json_at(&state_path)["sourceSha"], **before, "{name}");
                assert!(
                    !temp_files_beside(&state_path).is_empty(),
                    "{name}: no temp file, so the kill was not mid-write\n{}",
                    killed.stderr
                );
            }
            let out = td.run(args);
            ok(&out, &format!("{name}: the rerun"));
            let (image, _) = project.container("api").await;
            assert_eq!(
                image,
                wavemap_e2e::pinned(target[0]).await,
                "{name}: the rerun left api on another image"
            );
            let (image, _) = project.container("frontend").await;
            assert_eq!(
                image,
                wavemap_e2e::pinned(target[1]).await,
                "{name}: the rerun left frontend on another image"
            );
            recovered.push(name);
        }
    }

    // record-release killed mid-write of the receipt (B runs, A recorded).
    for point in RECORD_POINTS {
        let name = format!("record-release@{point}");
        ok(&td.run(&deploy_b), &format!("{name}: the deploy before"));
        let killed = kill_at(&td, &record_b, point, "record-release");
        assert_eq!(killed.announced, point, "{name}\n{}", killed.stderr);
        assert_eq!(json_at(&receipt_path)["sourceSha"], *s.sha_a, "{name}");
        assert!(
            !temp_files_beside(&receipt_path).is_empty(),
            "{name}: no temp file, so the kill was not mid-write\n{}",
            killed.stderr
        );
        ok(&td.run(&record_b), &format!("{name}: the rerun"));
        assert_eq!(json_at(&receipt_path)["sourceSha"], *s.sha_b, "{name}");
        recovered.push(name);
    }

    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    let total = 2 * DEPLOY_POINTS.len() + RECORD_POINTS.len();
    let line = format!(
        "{}/{total} crash points reached and recovered: {}\n(a reader made {} reads meanwhile, {} torn)",
        recovered.len(),
        recovered.join(", "),
        reads.load(Ordering::Relaxed),
        torn.load(Ordering::Relaxed)
    );
    eprintln!("{line}");
    wavemap_e2e::report_line("crash", &line);
    assert_eq!(recovered.len(), total);
    assert_eq!(
        torn.load(Ordering::Relaxed),
        0,
        "a reader saw a half-written file"
    );
}
