//! The daemon under a real `NOTIFY_SOCKET` (issue 8): READY only once the
//! project is healthy, WATCHDOG at the expected cadence, STATUS lines that
//! say what happens, boot recovery with and without SSM, and `status`.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use wavemap_e2e::{docker, release_args, stack, toml_str, with_execute, RuntimeProject, TestDir};

/// A notify socket like systemd's, collecting every datagram.
struct NotifyListener {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    messages: Vec<(Duration, String)>,
    started: Instant,
}

impl NotifyListener {
    fn new(dir: &std::path::Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        NotifyListener {
            socket,
            path,
            messages: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Read until a message containing `needle` arrives or `limit` passes.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.messages.push((self.started.elapsed(), text.clone()));
                if text.lines().any(|l| l.contains(needle)) {
                    return true;
                }
            }
        }
        false
    }

    fn all(&self) -> String {
        self.messages
            .iter()
            .map(|(t, m)| format!("{:>6}ms {}\n", t.as_millis(), m.replace('\n', " | ")))
            .collect()
    }
}

/// The daemon process; killed on drop so a failing test leaves none behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_daemon(td: &TestDir, notify: &NotifyListener, watchdog_usec: u64) -> Daemon {
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the
    // shell's pid, so `$$` is the agent's pid too.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(wavemap_e2e::agent_bin())
        .arg("--config")
        .arg(td.config_path())
        .arg("daemon")
        .env_remove("WAVEMAP_AGENT_CONFIG")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", watchdog_usec.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &stack().vars {
        if k.starts_with("AWS_") {
            cmd.env(k, v);
        }
    }
    Daemon(cmd.spawn().expect("spawn daemon"))
}

fn stop(mut daemon: Daemon) -> String {
    let child = &mut daemon.0;
    // SIGTERM, as systemd does; the daemon must exit promptly and cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "daemon exited with {status:?} on SIGTERM");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "daemon ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    stderr
}

#[test]
fn no_release_yet_is_ready_and_says_so_with_watchdog_pings() {
    let td = TestDir::new("daemon-empty");
    let mut notify = NotifyListener::new(td.path());
    let child = spawn_daemon(&td, &notify, 1_000_000);
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(30)),
        "{}",
        notify.all()
    );
    assert!(
        notify.all().contains("no release deployed yet"),
        "{}",
        notify.all()
    );
    // WATCHDOG_USEC=1s: a ping every 0.5s.
    let before = notify
        .messages
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .count();
    notify.wait_for("never", Duration::from_millis(2600));
    let pings = notify
        .messages
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .count()
        - before;
    assert!(
        (3..=7).contains(&pings),
        "expected about 5 watchdog pings in 2.6s, got {pings}:\n{}",
        notify.all()
    );
    let status = td.run(["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.dump());
    let json: serde_json::Value =
        serde_json::from_str(status.stdout.trim()).expect("status --json is JSON");
    assert_eq!(
        json["data"]["daemon"]["state"], "running",
        "{}",
        status.stdout
    );
    stop(child);
}

/// Every container of the Compose project, running or not.
async fn project_containers(project: &str) -> Vec<bollard::models::ContainerSummary> {
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("com.docker.compose.project={project}")],
    );
    docker()
        .await
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
}

/// (service, image, status) of each container of the project. The image is
/// the container's `Config.Image` (the list call shows an image ID instead
/// once the tag moved, which the stack's image rebuild can do meanwhile).
async fn containers_of(project: &str) -> Vec<(String, String, String)> {
    let d = docker().await;
    let mut out = Vec::new();
    for c in project_containers(project).await {
        let service = c
            .labels
            .as_ref()
            .and_then(|l| l.get("com.docker.compose.service").cloned())
            .unwrap_or_default();
        let image = match d
            .inspect_container(
                c.id.as_deref().unwrap_or_default(),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(info) => info.config.and_then(|c| c.image).unwrap_or_default(),
            Err(_) => c.image.clone().unwrap_or_default(),
        };
        out.push((service, image, c.status.unwrap_or_default()));
    }
    out
}

async fn remove_containers(project: &str) {
    let d = docker().await;
    let list = project_containers(project).await;
    for c in list {
        d.remove_container(
            c.id.as_deref().unwrap_or_default(),
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                v: false,
                ..Default::default()
            }),
        )
        .await
        .expect("remove container");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_recovery_brings_back_the_current_release_with_and_without_ssm() {
    let s = stack();
    let mut td = TestDir::new("daemon-boot");
    let runtime = RuntimeProject::new(&td).await;
    let project = runtime.name.clone();
    let secret = runtime.db_password.clone();
    let backend = s.require("WAVEMAP_TEST_BACKEND_IMAGE_A").to_owned();
    let frontend = s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A").to_owned();
    let out = td.run(with_execute(release_args(
        "deploy", &backend, &frontend, &s.sha_a, "boot-a",
    )));
    assert_eq!(out.code, 0, "{}", out.dump());

    for ssm_down in [false, true] {
        remove_containers(&project).await;
        assert!(containers_of(&project).await.is_empty());
        if ssm_down {
            // A closed loopback port: SSM stays unreachable.
            td.set("aws", "ssm_endpoint", toml_str("http://127.0.0.1:9"));
        }
        let env_before = std::fs::read(td.env_dir().join("backend.env")).expect("env file");
        let mut notify =
            NotifyListener::new(&td.path().join(if ssm_down { "b" } else { "a" }).tap_mkdir());
        let child = spawn_daemon(&td, &notify, 30_000_000);
        assert!(
            notify.wait_for("READY=1", Duration::from_secs(240)),
            "{}",
            notify.all()
        );
        // READY only once healthy: every service is up and healthy right now.
        let running = containers_of(&project).await;
        assert_eq!(running.len(), 3, "{running:?}");
        for (service, image, status) in &running {
            assert!(
                status.contains("(healthy)"),
                "{service} not healthy at READY: {status}"
            );
            if service == "api" {
                assert_eq!(image, &wavemap_e2e::pinned(&backend).await);
            }
        }
        let all = notify.all();
        assert!(all.contains("STATUS=waiting for Docker"), "{all}");
        assert!(all.contains("STATUS=recovering release"), "{all}");
        assert!(all.contains("recovered"), "{all}");
        // Issue 23: a wake uses the env files on disk, SSM up or down.
        assert!(all.contains("env files as on disk; no SSM call"), "{all}");
        assert_eq!(
            std::fs::read(td.env_dir().join("backend.env")).unwrap(),
            env_before
        );
        let status = td.run(["status"]);
        assert_eq!(status.code, 0, "{}", status.dump());
        assert!(status.stdout.contains("boot recovery"), "{}", status.stdout);
        assert!(
            status.stdout.lines().all(|l| l.chars().count() <= 80),
            "status wider than 80 columns:\n{}",
            status.stdout
        );
        let stderr = stop(child);
        assert!(
            !stderr.contains(&secret) && !all.contains(&secret),
            "secret leaked"
        );
        // Stopping the daemon never stops the app.
        assert_eq!(containers_of(&project).await.len(), 3);
    }
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

/// Seconds-resolution marks of the daemon's heartbeat: each watch round
/// rewrites it, so `n` changes mean `n` drift checks happened.
fn wait_rounds(td: &TestDir, n: usize, notify: &mut NotifyListener) {
    let path = td.run_dir().join("daemon-heartbeat.json");
    let read = || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["updatedAt"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    let mut last = read();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < n {
        assert!(
            Instant::now() < deadline,
            "the daemon did not go through {n} watch rounds:\n{}",
            notify.all()
        );
        notify.wait_for("never", Duration::from_millis(300));
        let now = read();
        if now != last {
            seen += 1;
            last = now;
        }
    }
}

fn heals_in_journal(td: &TestDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(td.journal_path())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["command"] == "daemon heal" && e["event"] == "end")
        .collect()
}

async fn ids_of(project: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = project_containers(project)
        .await
        .into_iter()
        .map(|c| {
            (
                c.labels
                    .as_ref()
                    .and_then(|l| l.get("com.docker.compose.service").cloned())
                    .unwrap_or_default(),
                c.id.unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Drift (issue 16): an operator's `docker compose up -d --force-recreate`
/// of the same release is not drift; a removed or stopped container is
/// healed, each heal an operation in the journal; nothing is touched while
/// another operation holds the lock; `daemon.heal = false` only reports.
#[tokio::test(flavor = "multi_thread")]
async fn drift_is_healed_under_the_lock_and_an_operators_compose_up_is_not_drift() {
    let s = stack();
    let mut td = TestDir::new("daemon-drift");
    let runtime = RuntimeProject::new(&td).await;
    let project = runtime.name.clone();
    let out = td.run(with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "drift-a",
    )));
    assert_eq!(out.code, 0, "{}", out.dump());
    td.set("daemon", "health_interval", "1");
    td.set("daemon", "retry_max", "2");
    let mut notify = NotifyListener::new(&td.path().join("n1").tap_mkdir());
    let child = spawn_daemon(&td, &notify, 30_000_000);
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(120)),
        "{}",
        notify.all()
    );
    assert!(
        notify.all().contains("ready: recovered"),
        "{}",
        notify.all()
    );

    // The operator recreates everything with Compose, from the same files.
    let compose_dir = td.compose_file().parent().expect("dir").to_path_buf();
    let up = std::process::Command::new("docker")
        .current_dir(&compose_dir)
        .args(["compose", "up", "-d", "--force-recreate", "--wait"])
        .output()
        .expect("docker compose up");
    assert!(
        up.status.success(),
        "docker compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let after_compose = ids_of(&project).await;
    assert_eq!(after_compose.len(), 3, "{after_compose:?}");
    wait_rounds(&td, 3, &mut notify);
    assert_eq!(
        ids_of(&project).await,
        after_compose,
        "the daemon recreated what Compose made from the same release"
    );
    assert!(
        heals_in_journal(&td).is_empty(),
        "{:?}",
        heals_in_journal(&td)
    );
    assert!(!notify.all().contains("healing"), "{}", notify.all());

    // A removed container comes back, as a journaled heal.
    let frontend = format!("{project}-frontend-1");
    docker_rm(&frontend);
    assert!(
        notify.wait_for(
            "STATUS=running: healed frontend missing",
            Duration::from_secs(90)
        ),
        "{}",
        notify.all()
    );
    let now = containers_of(&project).await;
    assert!(
        now.iter()
            .any(|(svc, _, st)| svc == "frontend" && st.contains("(healthy)")),
        "{now:?}"
    );
    let heals = heals_in_journal(&td);
    assert_eq!(heals.len(), 1, "{heals:?}");
    assert_eq!(heals[0]["outcome"], "success");
    let status = td.run(["status"]);
    assert!(status.stdout.contains("daemon heal"), "{}", status.stdout);

    // A stopped one too.
    docker_stop(&format!("{project}-api-1"));
    assert!(
        notify.wait_for("STATUS=running: healed api exited", Duration::from_secs(90)),
        "{}",
        notify.all()
    );

    // Nothing happens while another operation holds the lock.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(td.lock_path())
        .expect("lock file");
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd we own.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    docker_rm(&frontend);
    wait_rounds(&td, 3, &mut notify);
    assert!(
        !containers_of(&project)
            .await
            .iter()
            .any(|(svc, _, _)| svc == "frontend"),
        "healed while the lock was held"
    );
    drop(lock);
    assert!(
        notify.wait_for(
            "STATUS=running: healed frontend missing",
            Duration::from_secs(90)
        ),
        "{}",
        notify.all()
    );
    assert_eq!(heals_in_journal(&td).len(), 3);
    stop(child);

    // Observe only.
    td.set("daemon", "heal", "false");
    let mut notify = NotifyListener::new(&td.path().join("n2").tap_mkdir());
    let child = spawn_daemon(&td, &notify, 30_000_000);
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(120)),
        "{}",
        notify.all()
    );
    docker_rm(&frontend);
    assert!(
        notify.wait_for(
            "STATUS=degraded: drift: frontend missing; not healing (daemon.heal = false)",
            Duration::from_secs(60)
        ),
        "{}",
        notify.all()
    );
    wait_rounds(&td, 2, &mut notify);
    assert!(
        !containers_of(&project)
            .await
            .iter()
            .any(|(svc, _, _)| svc == "frontend"),
        "heal = false healed"
    );
    assert_eq!(heals_in_journal(&td).len(), 3);
    let status = td.run(["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("json");
    assert_eq!(
        json["data"]["daemon"]["phase"], "degraded",
        "{}",
        status.stdout
    );
    stop(child);
}

fn docker_rm(container: &str) {
    wavemap_e2e::docker_cli(&["rm", "-f", container], None);
}

fn docker_stop(container: &str) {
    wavemap_e2e::docker_cli(&["stop", "-t", "1", container], None);
}

/// A contract SSM no longer meets (issue 15) does not touch a wake: since
/// issue 23 the wake renders nothing when the env files are there, so it
/// keeps them byte for byte, recovers the release with them, and says so in
/// STATUS, in `status` and in the redacted boot-recovery record.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_boot_render_keeps_the_env_files_and_says_so() {
    let s = stack();
    let mut td = TestDir::new("daemon-refused");
    let runtime = RuntimeProject::new(&td).await;
    let out = td.run([
        "runtime",
        "deploy",
        "--backend-image",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        "--frontend-image",
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        "--source-sha",
        &s.sha_a,
        "--deployment-version",
        "refused-a",
        "--execute",
    ]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let before: Vec<Vec<u8>> = ["backend", "frontend", "postgres"]
        .iter()
        .map(|g| std::fs::read(td.env_dir().join(format!("{g}.env"))).expect("env file"))
        .collect();
    // The contract now requires a parameter SSM does not have: the render
    // is refused (exit 3 for `runtime-env`).
    td.set(
        "runtime",
        "parameters",
        r#"[{ name = "backend/NOT_IN_SSM", type = "String", required = true }]"#,
    );
    let render = td.run(["runtime-env", "--execute"]);
    assert_eq!(render.code, 3, "{}", render.dump());
    remove_containers(&runtime.name).await;

    let mut notify = NotifyListener::new(&td.path().join("n").tap_mkdir());
    let child = spawn_daemon(&td, &notify, 30_000_000);
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(120)),
        "{}",
        notify.all()
    );
    let all = notify.all();
    assert!(
        all.contains("ready: recovered") && all.contains("env files as on disk; no SSM call"),
        "{all}"
    );
    let after: Vec<Vec<u8>> = ["backend", "frontend", "postgres"]
        .iter()
        .map(|g| std::fs::read(td.env_dir().join(format!("{g}.env"))).expect("env file"))
        .collect();
    assert_eq!(after, before, "the refused render changed an env file");
    assert_eq!(containers_of(&runtime.name).await.len(), 3);
    let status = td.run(["status"]);
    assert!(
        status.stdout.contains("boot env") && status.stdout.contains("no SSM call"),
        "{}",
        status.stdout
    );
    let record = std::fs::read_to_string(td.state_dir().join("boot-recovery.json"))
        .expect("boot-recovery.json");
    assert!(record.contains("no SSM call"), "{record}");
    let heartbeat =
        std::fs::read_to_string(td.run_dir().join("daemon-heartbeat.json")).expect("heartbeat");
    for text in [&record, &heartbeat, &all] {
        assert!(!text.contains(&runtime.db_password), "secret in {text}");
    }
    stop(child);
}

// ---- Issue 23: nothing changes what runs but a gated command that succeeded.

const GROUPS: [&str; 3] = ["backend", "frontend", "postgres"];

fn env_snapshot(td: &TestDir) -> Vec<Vec<u8>> {
    GROUPS
        .iter()
        .map(|g| std::fs::read(td.env_dir().join(format!("{g}.env"))).expect("env file"))
        .collect()
}

/// Staged copies (and any other temp file) in the env folder.
fn temps_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".wavemap-tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// `Config.Env` and the Compose config-hash label of the service's
/// container, as `docker inspect` shows them.
async fn inspect_service(project: &str, service: &str) -> (Vec<String>, String) {
    let info = docker()
        .await
        .inspect_container(
            &format!("{project}-{service}-1"),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("inspect {project}-{service}-1: {e}"));
    let config = info.config.unwrap_or_default();
    let hash = config
        .labels
        .unwrap_or_default()
        .remove("com.docker.compose.config-hash")
        .unwrap_or_default();
    (config.env.unwrap_or_default(), hash)
}

async fn put_param(td: &TestDir, name: &str, value: &str) {
    wavemap_e2e::ssm_client()
        .await
        .put_parameter()
        .name(format!("{}{name}", td.parameter_prefix()))
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
}

fn recorded_hashes(td: &TestDir) -> serde_json::Value {
    let text = std::fs::read_to_string(td.state_dir().join("current-release.json"))
        .expect("current-release.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["schemaVersion"], 2, "{text}");
    json["configHashes"].clone()
}

fn journal_commands(td: &TestDir, command: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(td.journal_path())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["command"] == command && e["event"] == "end")
        .collect()
}

/// Deploy pair A and start the daemon (a drift check every second) until
/// READY.
async fn deployed_with_daemon(
    td: &mut TestDir,
    version: &str,
) -> (RuntimeProject, Daemon, NotifyListener) {
    let s = stack();
    let runtime = RuntimeProject::new(td).await;
    let out = td.run(with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        version,
    )));
    assert_eq!(out.code, 0, "{}", out.dump());
    td.set("daemon", "health_interval", "1");
    td.set("daemon", "retry_max", "2");
    let mut notify = NotifyListener::new(&td.path().join("n1").tap_mkdir());
    let child = spawn_daemon(td, &notify, 30_000_000);
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(120)),
        "{}",
        notify.all()
    );
    (runtime, child, notify)
}

/// (a) An SSM change, then a deploy that fails at pull: the env files, the
/// containers and their env stay as they were through 3 heal intervals of
/// the running daemon, which says it waits for a deploy. A deploy killed
/// before converge leaves the live files too; its staged copies go with
/// the next run, which rolls the change out.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_failing_at_pull_after_an_ssm_change_changes_nothing_and_the_daemon_waits() {
    let s = stack();
    let mut td = TestDir::new("intent-pull");
    let (runtime, child, mut notify) = deployed_with_daemon(&mut td, "intent-a").await;
    let project = runtime.name.clone();
    let env_before = env_snapshot(&td);
    let ids_before = ids_of(&project).await;
    let (api_env_before, _) = inspect_service(&project, "api").await;

    put_param(&td, "backend/NEW_FLAG", "intent-pull").await;
    let sha = "0123456789abcdef0123456789abcdef0badc0de";
    let tagless = |image: &str| image.rsplit_once(':').expect("a tag").0.to_owned();
    let out = td.run(with_execute(release_args(
        "deploy",
        &format!(
            "{}:sha-{sha}",
            tagless(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"))
        ),
        &format!(
            "{}:sha-{sha}",
            tagless(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"))
        ),
        sha,
        "intent-unknown",
    )));
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("pull"),
        "{}",
        out.dump()
    );
    // The render did see the new parameter; it never went live.
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND_ADDED"),
        Some("NEW_FLAG"),
        "{}",
        out.dump()
    );
    assert_eq!(
        env_snapshot(&td),
        env_before,
        "the failed deploy changed an env file"
    );
    assert!(
        temps_in(&td.env_dir()).is_empty(),
        "{:?}",
        temps_in(&td.env_dir())
    );

    wait_rounds(&td, 3, &mut notify);
    assert_eq!(env_snapshot(&td), env_before, "an env file changed");
    assert_eq!(
        ids_of(&project).await,
        ids_before,
        "a container was replaced"
    );
    let (api_env, _) = inspect_service(&project, "api").await;
    assert_eq!(api_env, api_env_before, "the API's env changed");
    assert!(!api_env.iter().any(|e| e.starts_with("NEW_FLAG=")));
    let all = notify.all();
    assert!(
        all.contains("waiting: the last `runtime deploy` failed") && all.contains("at pull"),
        "{all}"
    );
    assert!(
        heals_in_journal(&td).is_empty(),
        "{:?}",
        heals_in_journal(&td)
    );
    let status = td.run(["status"]);
    assert!(status.stdout.contains("waiting"), "{}", status.stdout);
    stop(child);

    // SIGKILL when converge is about to start: still nothing live changed.
    let pause_file = td.path().join("pause");
    let deploy_a = with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "intent-a2",
    ));
    let mut agent = td
        .command()
        .args(&deploy_a)
        .env(wavemap_agent::testpoint::PAUSE_AT, "converge")
        .env(wavemap_agent::testpoint::PAUSE_FILE, &pause_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn deploy");
    let started = Instant::now();
    while !pause_file.exists() {
        assert!(
            agent.try_wait().expect("poll").is_none(),
            "the deploy ended before converge"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "converge never reached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reap");
    assert_eq!(
        env_snapshot(&td),
        env_before,
        "a killed deploy changed an env file"
    );
    assert_eq!(
        temps_in(&td.env_dir()).len(),
        1,
        "one staged copy (backend.env) is left"
    );
    assert_eq!(ids_of(&project).await, ids_before);

    // The next run cleans up and rolls the change out, as a deploy does.
    let out = td.run(&deploy_a);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert!(
        temps_in(&td.env_dir()).is_empty(),
        "{:?}",
        temps_in(&td.env_dir())
    );
    let (api_env, hash) = inspect_service(&project, "api").await;
    assert!(
        api_env.contains(&"NEW_FLAG=intent-pull".to_owned()),
        "{api_env:?}"
    );
    assert_eq!(recorded_hashes(&td)["api"], hash.as_str());
}

/// (b) A deploy failing at health (pair B, whose frontend never gets
/// healthy) is left running and reported: the daemon does not revert it,
/// and `status` says it waits. The next deploy that succeeds ends the wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_failing_at_health_is_left_running_reported_and_not_reverted() {
    let s = stack();
    let mut td = TestDir::new("intent-health");
    let (runtime, child, mut notify) = deployed_with_daemon(&mut td, "intent-a").await;
    let project = runtime.name.clone();
    let backend_b = s.require("WAVEMAP_TEST_BACKEND_IMAGE_B").to_owned();
    let frontend_b = s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B").to_owned();

    put_param(&td, "frontend/FAKE_FAIL_HEALTH", "1").await;
    td.set("runtime", "health_timeout", "8");
    let out = td.run(with_execute(release_args(
        "deploy",
        &backend_b,
        &frontend_b,
        &s.sha_b,
        "intent-b",
    )));
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("health"),
        "{}",
        out.dump()
    );
    let failed_ids = ids_of(&project).await;
    let images = |list: &[(String, String, String)], svc: &str| {
        list.iter()
            .find(|(s, _, _)| s == svc)
            .map(|(_, i, _)| i.clone())
            .unwrap_or_default()
    };
    let now = containers_of(&project).await;
    assert_eq!(images(&now, "api"), backend_b, "{now:?}");
    assert_eq!(images(&now, "frontend"), frontend_b, "{now:?}");

    wait_rounds(&td, 3, &mut notify);
    assert!(
        notify.all().contains("drift: ") || notify.wait_for("drift: ", Duration::from_secs(30)),
        "{}",
        notify.all()
    );
    let now = containers_of(&project).await;
    assert_eq!(
        ids_of(&project).await,
        failed_ids,
        "the daemon touched the failed pair"
    );
    assert_eq!(images(&now, "api"), backend_b, "{now:?}");
    assert_eq!(images(&now, "frontend"), frontend_b, "{now:?}");
    let all = notify.all();
    assert!(
        all.contains("waiting: the last `runtime deploy` failed") && all.contains("at health"),
        "{all}"
    );
    assert!(all.contains("another image"), "{all}");
    assert!(
        heals_in_journal(&td).is_empty(),
        "{:?}",
        heals_in_journal(&td)
    );
    assert!(!journal_commands(&td, "daemon drift").is_empty());
    let status = td.run(["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(status.stdout.trim()).expect("json");
    assert_eq!(
        json["data"]["daemon"]["phase"], "degraded",
        "{}",
        status.stdout
    );
    let text = td.run(["status"]);
    assert!(
        text.stdout.contains("waiting") && text.stdout.contains("daemon drift"),
        "{}",
        text.stdout
    );
    // The current release is still A: the failed pair was never recorded.
    let current = std::fs::read_to_string(td.state_dir().join("current-release.json"))
        .expect("current release");
    assert!(current.contains(&s.sha_a), "{current}");

    // A deploy that succeeds ends the wait.
    put_param(&td, "frontend/FAKE_FAIL_HEALTH", "0").await;
    td.set("runtime", "health_timeout", "90");
    let out = td.run(with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "intent-a2",
    )));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert!(
        notify.wait_for("STATUS=running:", Duration::from_secs(60)),
        "{}",
        notify.all()
    );
    stop(child);
}

/// (c) `docker kill` of the API: the heal starts it again with the config
/// the deploy recorded, although `runtime-env --execute` changed its env
/// file meanwhile (that change is reported, never rolled out). A removed
/// API cannot be rebuilt with the recorded config from today's files: the
/// heal says so and does not act.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_container_is_restarted_with_the_recorded_config() {
    let mut td = TestDir::new("intent-kill");
    let (runtime, child, mut notify) = deployed_with_daemon(&mut td, "intent-a").await;
    let project = runtime.name.clone();
    let recorded = recorded_hashes(&td);
    let (api_env_before, api_hash) = inspect_service(&project, "api").await;
    assert_eq!(recorded["api"], api_hash.as_str());

    // New SSM values rendered by hand: reported, not rolled out.
    put_param(&td, "backend/NEW_FLAG", "intent-kill").await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert!(
        notify.wait_for("api another config", Duration::from_secs(60)),
        "{}",
        notify.all()
    );
    assert!(
        notify.all().contains("reported, not acted on"),
        "{}",
        notify.all()
    );

    let api = format!("{project}-api-1");
    wavemap_e2e::docker_cli(&["kill", &api], None);
    assert!(
        notify.wait_for("STATUS=running: healed api exited", Duration::from_secs(90)),
        "{}",
        notify.all()
    );
    let (api_env, hash) = inspect_service(&project, "api").await;
    assert_eq!(hash, api_hash, "the heal changed the API's config");
    assert_eq!(api_env, api_env_before);
    assert!(!api_env.iter().any(|e| e.starts_with("NEW_FLAG=")));
    let now = containers_of(&project).await;
    assert!(
        now.iter()
            .any(|(svc, _, st)| svc == "api" && st.contains("(healthy)")),
        "{now:?}"
    );
    let heals = heals_in_journal(&td);
    assert_eq!(heals.len(), 1, "{heals:?}");
    assert_eq!(heals[0]["outcome"], "success");

    // Removed: today's files would give another config. Not healed.
    docker_rm(&api);
    assert!(
        notify.wait_for("not healing api missing", Duration::from_secs(60)),
        "{}",
        notify.all()
    );
    wait_rounds(&td, 2, &mut notify);
    assert!(
        !containers_of(&project)
            .await
            .iter()
            .any(|(svc, _, _)| svc == "api"),
        "the heal rebuilt the API from today's env files"
    );
    assert_eq!(heals_in_journal(&td).len(), 1);
    assert!(
        notify.all().contains("no longer give the config"),
        "{}",
        notify.all()
    );
    stop(child);
}

/// An SSM endpoint on loopback that counts connections and answers none.
struct CountingEndpoint {
    port: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingEndpoint {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        CountingEndpoint { port, count }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// (d) A wake after an SSM change: the env files stay as the deploy left
/// them, the change is not in the containers, and no SSM call is made (the
/// SSM endpoint counts connections). A missing env file is rendered, and
/// only that one.
#[tokio::test(flavor = "multi_thread")]
async fn a_wake_after_an_ssm_change_uses_the_files_on_disk_and_calls_no_ssm() {
    let s = stack();
    let mut td = TestDir::new("intent-wake");
    let runtime = RuntimeProject::new(&td).await;
    let project = runtime.name.clone();
    let out = td.run(with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "intent-wake",
    )));
    assert_eq!(out.code, 0, "{}", out.dump());
    let env_before = env_snapshot(&td);
    put_param(&td, "backend/NEW_FLAG", "intent-wake").await;
    remove_containers(&project).await;
    let ssm = CountingEndpoint::start();
    td.set("aws", "ssm_endpoint", toml_str(&ssm.url()));

    let mut notify = NotifyListener::new(&td.path().join("w1").tap_mkdir());
    let child = spawn_daemon(&td, &notify, 30_000_000);
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(240)),
        "{}",
        notify.all()
    );
    let all = notify.all();
    assert!(
        all.contains("ready: recovered") && all.contains("as on disk; no SSM call"),
        "{all}"
    );
    stop(child);
    assert_eq!(ssm.connections(), 0, "the wake called SSM");
    assert_eq!(
        env_snapshot(&td),
        env_before,
        "the wake changed an env file"
    );
    let (api_env, _) = inspect_service(&project, "api").await;
    assert!(
        !api_env.iter().any(|e| e.starts_with("NEW_FLAG=")),
        "{api_env:?}"
    );
    assert_eq!(containers_of(&project).await.len(), 3);

    // A file the release needs is gone: it alone is rendered from SSM.
    std::fs::remove_file(td.env_dir().join("frontend.env")).expect("remove frontend.env");
    remove_containers(&project).await;
    td.set("aws", "ssm_endpoint", toml_str(&s.ssm_endpoint));
    let mut notify = NotifyListener::new(&td.path().join("w2").tap_mkdir());
    let child = spawn_daemon(&td, &notify, 30_000_000);
    assert!(
        notify.wait_for("READY=1", Duration::from_secs(240)),
        "{}",
        notify.all()
    );
    assert!(
        notify.all().contains("ready: recovered"),
        "{}",
        notify.all()
    );
    stop(child);
    assert_eq!(
        env_snapshot(&td),
        env_before,
        "the wake did not render frontend.env alone, as before"
    );
    let (api_env, _) = inspect_service(&project, "api").await;
    assert!(
        !api_env.iter().any(|e| e.starts_with("NEW_FLAG=")),
        "{api_env:?}"
    );
}
