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
        if ssm_down {
            assert!(all.contains("kept existing env files"), "{all}");
            assert_eq!(
                std::fs::read(td.env_dir().join("backend.env")).unwrap(),
                env_before
            );
        }
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

/// A boot render that the checks refuse (issue 15: the same path as an
/// empty SSM tree) keeps the existing env files byte for byte, recovers
/// the release with them, and says so in STATUS, in `status` and in the
/// redacted boot-recovery record.
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
        all.contains("ready: recovered") && all.contains("kept existing env files (render refused"),
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
        status.stdout.contains("boot env") && status.stdout.contains("render refused"),
        "{}",
        status.stdout
    );
    let record = std::fs::read_to_string(td.state_dir().join("boot-recovery.json"))
        .expect("boot-recovery.json");
    assert!(record.contains("render refused"), "{record}");
    let heartbeat =
        std::fs::read_to_string(td.run_dir().join("daemon-heartbeat.json")).expect("heartbeat");
    for text in [&record, &heartbeat, &all] {
        assert!(!text.contains(&runtime.db_password), "secret in {text}");
    }
    stop(child);
}
