//! The daemon under a real systemd (issue 16): the .deb that
//! `scripts/build-deb --dev` makes, installed with `apt-get install` into a
//! Debian 12 container whose PID 1 is systemd, driving the real dockerd
//! through the bind-mounted socket, with moto and the registry reached over
//! the host network. Everything is checked with `systemctl`, `journalctl`
//! and the Engine API, as an operator would.
//!
//! Preconditions, each failing the test with a message when missing:
//! - the image `scripts/stack/build-systemd-image` builds (debootstrap,
//!   `docker import`; `scripts/stack/up` runs it), named by
//!   `WAVEMAP_TEST_SYSTEMD_IMAGE` in `.stack/env`;
//! - the .deb: `WAVEMAP_TEST_DEB` (scripts/test sets it), else this test
//!   runs `scripts/build-deb --dev` itself.
//!
//! It is `#[ignore]`d in a plain `cargo test`: `scripts/test` runs it after
//! packaging, with the other root-only tests (`--ignored`). By hand:
//! `cargo test -p wavemap-e2e --test e2e -- --ignored systemd::`.
//!
//! The project's Compose file has no bind mounts (one named volume), so it
//! can live inside the container at the packaged default path
//! /opt/wavemap/runtime; a bind mount would need a path the host's dockerd
//! sees, since dockerd resolves it on the host.
//!
//! One scenario, in order, because each step builds on the unit's state:
//! start (READY only once healthy), the journal, the watchdog, the security
//! report, stop, a degraded start that heals without a unit restart, an
//! upgrade, a purge.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wavemap_e2e::{
    docker, private_copy, release_args, stack, unique_name, with_execute, RuntimeProject, TestDir,
};

const UNIT: &str = "wavemap-agent";

/// A container booted with systemd as PID 1; removed on drop.
struct Machine {
    name: String,
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn dump(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Machine {
    fn boot(image: &str, share: &Path) -> Machine {
        let name = unique_name("systemd");
        let share_mount = format!("{}:/wavemap-test:ro", share.display());
        let r = run(
            Command::new("docker").args([
                "run",
                "-d",
                "--name",
                &name,
                "-e",
                "container=docker",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/run/lock",
                "--tmpfs",
                "/tmp",
                "--network",
                "host",
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
                &share_mount,
                image,
                "/sbin/init",
            ]),
            None,
        );
        assert_eq!(r.code, 0, "docker run of the systemd image: {}", r.dump());
        let machine = Machine { name };
        // PID 1 needs a moment before its bus answers (until then
        // `systemctl` says "offline" or cannot connect); `--wait` then
        // returns once boot finished: running, or degraded when some unit
        // of the image failed (not ours; shown in the message).
        let booted = || {
            let state = machine.sh("systemctl is-system-running --wait");
            ["running", "degraded"].contains(&state.stdout.trim())
        };
        wait_until(
            Duration::from_secs(90),
            "systemd's boot in the container",
            booted,
            || {
                format!(
                    "{}\n{}",
                    machine.sh("systemctl is-system-running").dump(),
                    machine
                        .sh("systemctl --failed --no-pager; journalctl -b --no-pager | tail -40")
                        .stdout
                )
            },
        );
        machine
    }

    /// `bash -c script` inside, with `stdin`.
    fn sh_in(&self, script: &str, stdin: Option<&str>) -> Run {
        run(
            Command::new("docker").args(["exec", "-i", &self.name, "bash", "-c", script]),
            stdin,
        )
    }

    fn sh(&self, script: &str) -> Run {
        self.sh_in(script, None)
    }

    fn sh_ok(&self, script: &str) -> String {
        let r = self.sh(script);
        assert_eq!(r.code, 0, "`{script}` in the container: {}", r.dump());
        r.stdout
    }

    fn write(&self, path: &str, text: &str) {
        let r = self.sh_in(
            &format!("mkdir -p \"$(dirname '{path}')\" && cat > '{path}'"),
            Some(text),
        );
        assert_eq!(r.code, 0, "write {path}: {}", r.dump());
    }

    /// `wavemap-agent ARGS` as an operator runs it (not through the unit),
    /// with the stack's AWS variables.
    fn agent(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new("docker");
        cmd.args(["exec", "-i"]);
        for (k, v) in &stack().vars {
            if k.starts_with("AWS_") {
                cmd.arg("-e").arg(format!("{k}={v}"));
            }
        }
        cmd.arg(&self.name).arg("wavemap-agent").args(args);
        run(&mut cmd, None)
    }

    /// `systemctl show -p NAME --value wavemap-agent`.
    fn prop(&self, name: &str) -> String {
        self.sh_ok(&format!("systemctl show -p {name} --value {UNIT}"))
            .trim()
            .to_owned()
    }

    fn journal(&self) -> String {
        self.sh_ok(&format!("journalctl -u {UNIT} --no-pager -o cat"))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

/// Poll `check` every 500 ms until it holds; panic with `what` and
/// `context()` after `limit`.
fn wait_until(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what} did not happen within {limit:?}\n{}", context());
}

fn deb_path() -> PathBuf {
    if let Some(deb) = std::env::var_os("WAVEMAP_TEST_DEB") {
        let deb = PathBuf::from(deb);
        assert!(
            deb.is_file(),
            "WAVEMAP_TEST_DEB={} does not exist",
            deb.display()
        );
        return deb;
    }
    let script = wavemap_e2e::repo_root().join("scripts/build-deb");
    let r = run(Command::new(&script).arg("--dev"), None);
    assert_eq!(
        r.code,
        0,
        "no WAVEMAP_TEST_DEB and `scripts/build-deb --dev` failed (build the agent first: cargo build -p wavemap-agent): {}",
        r.dump()
    );
    PathBuf::from(r.stdout.lines().last().unwrap_or_default().trim())
}

/// The same package with a higher version (`<version>+upgrade1`), for the
/// upgrade step: unpacked and rebuilt with dpkg-deb, nothing recompiled.
fn newer_deb(deb: &Path, dir: &Path) -> (PathBuf, String) {
    let tree = dir.join("deb-tree");
    let _ = std::fs::remove_dir_all(&tree);
    let r = run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree), None);
    assert_eq!(r.code, 0, "dpkg-deb -R: {}", r.dump());
    let control_path = tree.join("DEBIAN/control");
    let control = std::fs::read_to_string(&control_path).expect("control");
    let version = control
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("Version field")
        .trim()
        .to_owned();
    let newer = format!("{version}+upgrade1");
    std::fs::write(
        &control_path,
        control.replace(&format!("Version: {version}"), &format!("Version: {newer}")),
    )
    .expect("write control");
    let out = dir.join("wavemap-agent-upgrade.deb");
    let r = run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "-b"])
            .arg(&tree)
            .arg(&out),
        None,
    );
    assert_eq!(r.code, 0, "dpkg-deb -b: {}", r.dump());
    (out, newer)
}

/// (container id, image, health) of each service of `project`.
async fn app(project: &str) -> Vec<(String, String, String, String)> {
    let d = docker().await;
    let mut out = Vec::new();
    for service in ["postgres", "api", "frontend"] {
        match d
            .inspect_container(
                &format!("{project}-{service}-1"),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(info) => out.push((
                service.to_owned(),
                info.id.unwrap_or_default(),
                info.config.and_then(|c| c.image).unwrap_or_default(),
                info.state
                    .and_then(|s| s.health)
                    .and_then(|h| h.status)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into()),
            )),
            Err(_) => out.push((
                service.to_owned(),
                String::new(),
                String::new(),
                "missing".into(),
            )),
        }
    }
    out
}

async fn all_healthy(project: &str) -> bool {
    app(project).await.iter().all(|(_, _, _, h)| h == "healthy")
}

async fn remove_app(project: &str) {
    let d = docker().await;
    for service in ["frontend", "api", "postgres"] {
        let _ = d
            .remove_container(
                &format!("{project}-{service}-1"),
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
    assert!(
        app(project).await.iter().all(|(_, id, _, _)| id.is_empty()),
        "containers left: {:?}",
        app(project).await
    );
}

fn ids(app: &[(String, String, String, String)]) -> Vec<String> {
    app.iter().map(|(_, id, _, _)| id.clone()).collect()
}

fn agent_config(name: &str, prefix: &str, ready_timeout: u64) -> String {
    let s = stack();
    format!(
        "# written by tests/tests/systemd.rs\n\
         [aws]\nregion = \"{region}\"\nssm_endpoint = \"{ssm}\"\necr_endpoint = \"{ecr}\"\n\
         max_attempts = 6\noperation_timeout = 20\nattempt_timeout = 5\n\
         test_ecr_registry_alias = \"{registry}\"\n\n\
         [runtime]\nproject_name = \"{name}\"\nparameter_prefix = \"{prefix}\"\n\
         health_timeout = 90\npull_timeout = 120\n\n\
         [daemon]\nhealth_interval = 2\nssm_wait = 5\nretry_max = 4\nready_timeout = {ready_timeout}\n\n\
         # The test frontend serves /health only (no /en/ping, no API rewrite).\n\
         [smoke]\nchecks = [{{ name = \"health\", path = \"/health\", status = 200 }}]\n\n\
         # It deploys the stack's shared images: a prune after record-release\n\
         # would remove the other shared test images from the shared dockerd.\n\
         [images]\nprune_after_record = false\n",
        region = s.region,
        ssm = s.ssm_endpoint,
        ecr = s.ecr_endpoint,
        registry = s.registry,
    )
}

/// Run the deploy document's script in the container as the SSM Agent
/// would (`sh`, parameters as `SSM_<name>`), through the packaged sandbox.
/// With `analyze`, find its transient unit while it runs and check
/// `systemd-analyze security` on it (exposure <= 2.0, printed and kept in
/// target/systemd-analyze-security-command.txt); a run that ends within
/// moments (a failure) may be gone before it can be looked at.
fn deploy_document_in_sandbox(m: &Machine, params: &[(&str, &str)], analyze: bool) -> Run {
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            wavemap_e2e::repo_root().join("ssm-documents/wavemap-runtime-deploy.json"),
        )
        .expect("read the deploy document"),
    )
    .expect("the deploy document is JSON");
    let script: Vec<&str> = doc["mainSteps"][0]["inputs"]["runCommand"]
        .as_array()
        .expect("runCommand")
        .iter()
        .map(|l| l.as_str().expect("line"))
        .collect();
    m.write("/root/ssm/_script.sh", &(script.join("\n") + "\n"));
    let mut cmd = Command::new("docker");
    cmd.arg("exec");
    for (k, v) in params {
        cmd.arg("-e").arg(format!("SSM_{k}={v}"));
    }
    let child = cmd
        .args([&m.name, "sh", "/root/ssm/_script.sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the document");
    if !analyze {
        let out = child.wait_with_output().expect("wait for the document");
        return Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
    }
    // The transient unit exists while the command runs.
    let started = Instant::now();
    let unit = loop {
        let list = m.sh(
            "systemctl list-units --type=service --all --no-legend --plain 'wavemap-agent-command-*' | awk '{print $1}'",
        );
        if let Some(unit) = list.stdout.lines().map(str::trim).find(|l| !l.is_empty()) {
            break unit.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no wavemap-agent-command-* unit appeared: the document did not run the agent in the sandbox"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let security = m.sh(&format!("systemd-analyze security --no-pager {unit}"));
    let out = child.wait_with_output().expect("wait for the document");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "systemd-analyze security {unit} (the document's command):\n{}",
        security.stdout
    );
    let score_line = security
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure score for {unit}: {}\n{}",
                security.dump(),
                run.dump()
            )
        });
    let _ = std::fs::write(
        wavemap_e2e::repo_root().join("target/systemd-analyze-security-command.txt"),
        &security.stdout,
    );
    let score: f64 = score_line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {score_line:?}"));
    wavemap_e2e::report_line(
        "sandbox",
        &format!("a deploy document's command ran in {unit}: {score_line}"),
    );
    assert!(score <= 2.0, "{unit}: exposure {score} > 2.0: {score_line}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the .deb and the systemd image; scripts/test runs it with the root-only tests (--ignored, WAVEMAP_TEST_DEB set)"]
async fn the_packaged_unit_under_systemd_recovers_degrades_heals_and_survives_upgrade() {
    let s = stack();
    let image = s.var("WAVEMAP_TEST_SYSTEMD_IMAGE").to_owned();
    assert!(
        !image.is_empty(),
        "WAVEMAP_TEST_SYSTEMD_IMAGE is not in .stack/env: run scripts/stack/up (it runs scripts/stack/build-systemd-image)"
    );
    let deb = deb_path();
    let td = TestDir::new("systemd");
    let share = td.path().join("share");
    std::fs::create_dir_all(&share).expect("mkdir share");
    std::fs::copy(&deb, share.join("wavemap-agent.deb")).expect("copy .deb");
    let (_, newer_version) = newer_deb(&deb, &share);
    let runtime = RuntimeProject::new(&td).await;
    let project = runtime.name.clone();
    let secret = runtime.db_password.clone();
    let compose = std::fs::read_to_string(td.compose_file()).expect("compose file");

    let m = Machine::boot(&image, &share);

    // --- install: apt, offline, from the .deb alone ----------------------
    let install = m.sh("apt-get install -y -q /wavemap-test/wavemap-agent.deb");
    assert_eq!(install.code, 0, "apt-get install: {}", install.dump());
    assert_eq!(
        m.sh_ok("systemctl is-enabled wavemap-agent").trim(),
        "enabled"
    );
    assert_eq!(
        m.prop("ActiveState"),
        "inactive",
        "a fresh install must not start the unit"
    );
    m.write(
        "/etc/wavemap-agent/agent.toml",
        &agent_config(&project, &td.parameter_prefix(), 120),
    );
    let aws: String = s
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    m.write("/etc/default/wavemap-agent", &aws);
    m.write("/opt/wavemap/runtime/compose.yaml", &compose);
    let check = m.agent(&["config", "check"]);
    assert_eq!(check.code, 0, "config check: {}", check.dump());

    // The first deploy, as SSM would run it on the host.
    let backend = s.require("WAVEMAP_TEST_BACKEND_IMAGE_A").to_owned();
    let frontend = s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A").to_owned();
    // --- 0. the first deploy as SSM runs it: the deploy document's script,
    // its parameters as SSM_ variables, the agent in the packaged sandbox
    // (a transient unit with the daemon's hardening) --------------------------
    let release = [
        ("BackendImage", backend.as_str()),
        ("FrontendImage", frontend.as_str()),
        ("SourceSha", s.sha_a.as_str()),
        ("DeploymentVersion", "systemd-a"),
        ("SelectedRef", "develop"),
        ("WorkflowName", ""),
        ("WorkflowRunId", ""),
        ("WorkflowRunAttempt", ""),
        ("Execute", "true"),
    ];
    let out = deploy_document_in_sandbox(&m, &release, true);
    assert_eq!(
        out.code,
        0,
        "the deploy document inside the container: {}",
        out.dump()
    );
    assert!(
        out.stdout.contains("WAVEMAP_RUNTIME_DEPLOY_STAGE=health\n")
            && out
                .stdout
                .contains("WAVEMAP_RUNTIME_DEPLOY_RESULT=success\n"),
        "stage and final markers pass through the sandbox: {}",
        out.dump()
    );
    // A failing command's exit code, markers and message pass through
    // unchanged: a backend tag that does not match the frontend's is bad
    // input (exit 2), refused before anything changes.
    let other = format!(
        "{}:sha-{}",
        backend.rsplit_once(':').expect("tag").0,
        "0".repeat(40)
    );
    let mut failing = release;
    failing[0] = ("BackendImage", other.as_str());
    let out = deploy_document_in_sandbox(&m, &failing, false);
    assert_eq!(out.code, 2, "a mismatched pair: {}", out.dump());
    assert_eq!(
        out.stdout,
        "WAVEMAP_AGENT_ERROR=invalid-input\nWAVEMAP_AGENT_EXIT_CODE=2\n",
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("invalid --frontend-image"),
        "{}",
        out.dump()
    );
    // SIGTERM to the sandbox (an operator's Ctrl-C, SSM's cancel) reaches
    // the command in the transient unit, whose exit code comes back; the
    // unit is gone afterwards (--collect).
    let term = m.sh(
        "/usr/lib/wavemap-agent/sandbox sh -c 'trap \"echo got-term; exit 7\" TERM; echo started; sleep 60 & wait' & w=$!; \
         for i in $(seq 100); do systemctl is-active --quiet 'wavemap-agent-command-*' && break; sleep 0.1; done; \
         sleep 0.5; kill -TERM $w; wait $w; echo \"exit=$?\"; \
         systemctl list-units --all --no-legend --plain 'wavemap-agent-command-*' | wc -l",
    );
    assert!(
        term.stdout.contains("started\ngot-term\nexit=7\n0\n"),
        "SIGTERM through the sandbox: {}",
        term.dump()
    );
    let record = with_execute(release_args(
        "record-release",
        &backend,
        &frontend,
        &s.sha_a,
        "systemd-a",
    ));
    let record: Vec<&str> = record.iter().map(String::as_str).collect();
    let out = m.agent(&record);
    assert_eq!(out.code, 0, "record-release: {}", out.dump());

    // --- 1. `systemctl start` returns once the project is healthy ----------
    remove_app(&project).await;
    let start = m.sh("systemctl start wavemap-agent");
    let at_ready = app(&project).await;
    assert_eq!(
        start.code,
        0,
        "systemctl start: {}\n{}",
        start.dump(),
        m.journal()
    );
    for (service, id, image, health) in &at_ready {
        assert!(
            !id.is_empty() && health == "healthy",
            "{service} not healthy when `systemctl start` returned (READY came early): {at_ready:?}"
        );
        if service == "api" {
            // Deploys run the pair pinned to the digests they pulled.
            assert_eq!(image, &wavemap_e2e::pinned(&backend).await);
        }
    }
    let status_text = m.prop("StatusText");
    println!("StatusText after start: {status_text}");
    assert!(
        status_text.starts_with("ready: recovered: release sha-"),
        "StatusText: {status_text}"
    );
    assert!(status_text.contains("healthy"), "{status_text}");
    assert_eq!(m.prop("ActiveState"), "active");

    // --- 2. journald: the agent's fields, no secret -------------------------
    let json = m.sh_ok(&format!("journalctl -u {UNIT} -o json --no-pager"));
    let entries: Vec<serde_json::Value> = json
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["SYSLOG_IDENTIFIER"] == "wavemap-agent")
        .collect();
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let brief: String = entries
        .iter()
        .map(|e| {
            format!(
                "PRIORITY={} OPERATION={} STAGE={} {}\n",
                field(e, "PRIORITY"),
                field(e, "OPERATION"),
                field(e, "STAGE"),
                field(e, "MESSAGE")
            )
        })
        .collect();
    assert!(!entries.is_empty(), "no entry from wavemap-agent:\n{json}");
    // log's info is journald's "notice" (5) in systemd-journal-logger.
    assert!(
        entries
            .iter()
            .all(|e| field(e, "PRIORITY").parse::<u8>().is_ok_and(|p| p <= 7)),
        "an entry without a syslog PRIORITY:\n{brief}"
    );
    assert!(
        entries.iter().any(|e| field(e, "OPERATION") == "daemon"
            && field(e, "PRIORITY") == "5"
            && field(e, "MESSAGE").starts_with("ready: recovered")),
        "no OPERATION=daemon entry saying READY at PRIORITY 5:\n{brief}"
    );
    for stage in ["env-render", "converge", "health"] {
        assert!(
            entries.iter().any(|e| field(e, "STAGE") == stage),
            "no STAGE={stage} entry:\n{brief}"
        );
    }
    assert!(
        !json.contains(&secret),
        "the database password is in the journal"
    );

    // --- 3. the watchdog: a stopped main loop gets the unit restarted --------
    m.write(
        "/etc/systemd/system/wavemap-agent.service.d/50-test-watchdog.conf",
        "[Service]\nWatchdogSec=4\nTimeoutAbortSec=2\n",
    );
    m.sh_ok("systemctl daemon-reload && systemctl restart wavemap-agent");
    let before = app(&project).await;
    let pid = m.prop("MainPID");
    let restarts: u32 = m.prop("NRestarts").parse().expect("NRestarts");
    m.sh_ok(&format!("kill -STOP {pid}"));
    wait_until(
        Duration::from_secs(90),
        "a watchdog restart",
        || {
            m.prop("NRestarts").parse::<u32>().unwrap_or(0) > restarts
                && m.prop("ActiveState") == "active"
                && m.prop("MainPID") != pid
        },
        || m.journal(),
    );
    let journal = m.journal();
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    let after = app(&project).await;
    assert_eq!(
        ids(&after),
        ids(&before),
        "the restart recreated containers"
    );
    assert!(all_healthy(&project).await, "{after:?}");
    assert!(
        m.prop("StatusText").contains("recovered"),
        "{}",
        m.prop("StatusText")
    );
    m.sh_ok("rm /etc/systemd/system/wavemap-agent.service.d/50-test-watchdog.conf && systemctl daemon-reload");

    // --- 4. the exposure score, for the record -----------------------------
    let security = m.sh(&format!("systemd-analyze security --no-pager {UNIT}"));
    println!("systemd-analyze security {UNIT}:\n{}", security.stdout);
    let score_line = security
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure score: {}", security.dump()))
        .to_owned();
    let _ = std::fs::write(
        wavemap_e2e::repo_root().join("target/systemd-analyze-security.txt"),
        &security.stdout,
    );
    println!("{score_line}");
    // 1.8 with this unit on Debian 12's systemd 252; a change that loosens
    // the sandboxing shows up here.
    let score: f64 = score_line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {score_line:?}"));
    assert!(score <= 2.0, "exposure {score} > 2.0: {score_line}");

    // --- 5. `systemctl stop` leaves the app running -------------------------
    let before = app(&project).await;
    m.sh_ok("systemctl stop wavemap-agent");
    assert_eq!(m.prop("ActiveState"), "inactive");
    assert_eq!(ids(&app(&project).await), ids(&before));
    assert!(all_healthy(&project).await, "stop touched the app");

    // --- 6. degraded, then healed with no unit restart ----------------------
    // A release whose backend bytes are on neither the host nor the
    // registry at boot, and come back a little later. Releases run pinned
    // by digest, and the copy's bytes are the stack's image A, which stays
    // on the host and in the registry: so the recorded backend digest is
    // made one no registry holds, and the real one is written back as
    // "the cause goes away".
    let repo_prefix = unique_name("systemd-heal");
    let copy_b = private_copy(&backend, &repo_prefix);
    let copy_f = private_copy(&frontend, &repo_prefix);
    // The daemon pulls them onto the host; untag them there at the end.
    let _untag = Untag(vec![copy_b.clone(), copy_f.clone()]);
    let deploy = with_execute(release_args(
        "deploy",
        &copy_b,
        &copy_f,
        &s.sha_a,
        "systemd-heal",
    ));
    let deploy: Vec<&str> = deploy.iter().map(String::as_str).collect();
    let out = m.agent(&deploy);
    assert_eq!(out.code, 0, "deploy of the private copy: {}", out.dump());
    remove_app(&project).await;
    let state = "/var/lib/wavemap-agent/current-release.json";
    let recorded = m.sh(&format!("cat {state}")).stdout;
    let real = wavemap_e2e::registry_digest(&copy_b).1;
    assert!(recorded.contains(&real), "{recorded}");
    let absent = format!("sha256:{}", "0".repeat(64));
    m.write(state, &recorded.replace(&real, &absent));
    m.write(
        "/etc/wavemap-agent/agent.toml",
        &agent_config(&project, &td.parameter_prefix(), 8),
    );
    let start = m.sh("systemctl start wavemap-agent");
    assert_eq!(
        start.code,
        0,
        "degraded start: {}\n{}",
        start.dump(),
        m.journal()
    );
    let degraded = m.prop("StatusText");
    println!("StatusText when degraded: {degraded}");
    assert!(
        degraded.starts_with("degraded: boot recovery failed") && degraded.contains("retrying in"),
        "StatusText: {degraded}\n{}",
        m.journal()
    );
    assert!(degraded.contains("pull"), "{degraded}");
    let pid = m.prop("MainPID");
    let restarts = m.prop("NRestarts");
    let status = m.agent(&["status"]);
    assert!(status.stdout.contains("degraded"), "{}", status.dump());
    assert!(
        !all_healthy(&project).await,
        "healthy although the backend image is gone"
    );
    // The cause goes away.
    m.write(state, &recorded);
    wait_until(
        Duration::from_secs(120),
        "the heal after the tag came back",
        || m.prop("StatusText").contains("recovered"),
        || format!("{}\n{}", m.prop("StatusText"), m.journal()),
    );
    let healed = m.prop("StatusText");
    println!("StatusText after the heal: {healed}");
    assert!(
        healed.contains("after") && healed.contains("attempts"),
        "{healed}"
    );
    assert_eq!(m.prop("MainPID"), pid, "the unit was restarted to heal");
    assert_eq!(m.prop("NRestarts"), restarts);
    let now = app(&project).await;
    assert!(all_healthy(&project).await, "{now:?}");
    assert!(
        now.iter().any(|(s, _, i, _)| s == "api"
            && *i
                == format!(
                    "{}@{real}",
                    copy_b.rsplit_once(':').map_or(copy_b.as_str(), |(r, _)| r)
                )),
        "{now:?}"
    );
    let status = m.agent(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("json");
    let ops = json["data"]["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        ops.iter()
            .any(|o| o["command"] == "daemon heal" && o["outcome"] == "success"),
        "no successful `daemon heal` in the journal: {ops:#?}"
    );
    assert_eq!(
        json["data"]["daemon"]["phase"], "running",
        "{}",
        status.stdout
    );

    // --- 7. upgrade while running: try-restart, nothing recreated ------------
    let before = app(&project).await;
    let pid = m.prop("MainPID");
    let up = m.sh("apt-get install -y -q /wavemap-test/wavemap-agent-upgrade.deb");
    assert_eq!(up.code, 0, "upgrade: {}", up.dump());
    assert_eq!(
        m.sh_ok("dpkg-query -W -f '${Version}' wavemap-agent")
            .trim(),
        newer_version
    );
    assert_eq!(m.prop("ActiveState"), "active", "{}", m.journal());
    assert_ne!(
        m.prop("MainPID"),
        pid,
        "the upgrade did not restart the service"
    );
    assert_eq!(
        ids(&app(&project).await),
        ids(&before),
        "the upgrade recreated containers"
    );
    assert!(
        m.prop("StatusText").contains("recovered"),
        "{}",
        m.prop("StatusText")
    );

    // --- 8. purge keeps the state and the receipt --------------------------
    let purge = m.sh("apt-get purge -y -q wavemap-agent");
    assert_eq!(purge.code, 0, "purge: {}", purge.dump());
    let left = m.sh_ok(
        "for f in /usr/bin/wavemap-agent /etc/wavemap-agent/agent.toml \
         /var/lib/wavemap-agent/current-release.json \
         /opt/wavemap/deployment/last-successful-runtime-release.json; do \
         if [ -e $f ]; then echo \"present $f\"; else echo \"absent $f\"; fi; done",
    );
    for line in [
        "absent /usr/bin/wavemap-agent",
        "absent /etc/wavemap-agent/agent.toml",
        "present /var/lib/wavemap-agent/current-release.json",
        "present /opt/wavemap/deployment/last-successful-runtime-release.json",
    ] {
        assert!(left.contains(line), "{line}:\n{left}");
    }
    assert!(all_healthy(&project).await, "purge touched the app");
    assert!(
        !m.journal().contains(&secret),
        "the database password is in the journal"
    );
}

/// Tags this test put on the host's images, removed when it ends.
struct Untag(Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", image]).output();
        }
    }
}
