//! SIGKILL at every stage of deploy, rollback and record-release (issues 6
//! and 10): the agent is killed the moment its stderr announces a stage;
//! rerunning the same command must converge, and a reader polling the
//! receipt and the current-release state meanwhile must never see a half-
//! written file. Black-box: no crash hooks in the agent.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wavemap_e2e::{stack, RuntimeProject, TestDir};

const STAGES: [&str; 5] = ["env-render", "ecr-login", "pull", "converge", "health"];

/// Run the agent and SIGKILL it when stderr shows `[stage]`. Returns
/// whether the kill happened before the process ended by itself.
fn kill_at(td: &TestDir, args: &[&str], stage: &str) -> bool {
    let mut child = td
        .command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let needle = format!("[{stage}]");
    let mut killed = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains(&needle) {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            killed = true;
            break;
        }
    }
    let _ = child.wait();
    killed
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_every_stage_then_rerun_converges() {
    let s = stack();
    let td = TestDir::new("crash");
    let project = RuntimeProject::new(&td).await;
    let (ba, fa) = (
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A").to_owned(),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A").to_owned(),
    );
    let (bb, fb) = (
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_B").to_owned(),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B").to_owned(),
    );
    let deploy = |b: &str, f: &str, sha: &str| -> Vec<String> {
        [
            "runtime",
            "deploy",
            "--backend-image",
            b,
            "--frontend-image",
            f,
            "--source-sha",
            sha,
            "--deployment-version",
            "crash",
            "--execute",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let deploy_a = deploy(&ba, &fa, &s.sha_a);
    let deploy_b = deploy(&bb, &fb, &s.sha_b);
    let out = td.run(&deploy_a);
    assert_eq!(out.code, 0, "{}", out.dump());
    let mut record = deploy_a.clone();
    record[1] = "record-release".into();
    let out = td.run(&record);
    assert_eq!(out.code, 0, "{}", out.dump());

    // A reader that never may see a half-written receipt or state file.
    let stop = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, torn, reads) = (stop.clone(), torn.clone(), reads.clone());
        let files = [
            td.receipt_path(),
            td.state_dir().join("current-release.json"),
        ];
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

    let mut tried = 0;
    let mut recovered = 0;
    let mut report = String::new();
    // Deploy B killed at each stage (A running before), then rerun; then
    // rollback to A killed the same way (B running before).
    let rollback: Vec<String> = vec!["runtime".into(), "rollback".into(), "--execute".into()];
    for (label, args, expect, start) in [
        ("deploy", &deploy_b, &bb, &deploy_a),
        ("rollback", &rollback, &ba, &deploy_b),
    ] {
        for stage in STAGES {
            let out = td.run(start);
            assert_eq!(out.code, 0, "{}", out.dump());
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            if !kill_at(&td, &argv, stage) {
                report.push_str(&format!("{label}@{stage}: stage not reached\n"));
                continue;
            }
            tried += 1;
            let started = Instant::now();
            let out = td.run(&argv);
            let ok = out.code == 0 && project.container("api").await.0 == *expect;
            if ok {
                recovered += 1;
            }
            report.push_str(&format!(
                "{label}@{stage}: rerun exit {} in {:?}\n",
                out.code,
                started.elapsed()
            ));
            assert!(
                ok,
                "{label} killed at {stage}, rerun did not converge:\n{}",
                out.dump()
            );
        }
    }
    // record-release (A runs now) killed as soon as it starts, then rerun.
    let argv: Vec<&str> = record.iter().map(String::as_str).collect();
    let mut child = td
        .command()
        .args(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(30));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    tried += 1;
    let out = td.run(&argv);
    if out.code == 0 {
        recovered += 1;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    eprintln!(
        "crash points: {recovered} of {tried} recovered; reader made {} reads\n{report}",
        reads.load(Ordering::Relaxed)
    );
    assert_eq!(
        torn.load(Ordering::Relaxed),
        0,
        "a reader saw a half-written file"
    );
    assert_eq!(recovered, tried, "{report}");
    assert!(tried >= 9, "too few crash points reached:\n{report}");
}
