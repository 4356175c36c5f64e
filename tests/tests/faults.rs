//! Fault injection end to end (issue 10): what a user checks when SSM, ECR,
//! dockerd, PostgreSQL or the disk misbehave: the exit code, a message
//! that says what failed, bounded time, and files that are byte for byte
//! untouched (env files, the receipt, the current-release state).
//!
//! Faults are injected without disturbing the shared services (see
//! `tests/faultproxy.rs` for why): AWS calls go through a loopback proxy
//! that answers 503, throttles, stalls or fails only the first request;
//! dockerd is reached through a unix socket forwarder the test cuts and
//! restores; PostgreSQL faults are a closed port and a wrong password; a
//! full disk is a 64 KiB tmpfs mounted over the agent's folders.
//!
//! Timings are asserted only as generous upper bounds that catch a hang
//! (the config makes every wait short), never as performance checks.
//!
//! Path safety lives here too: the agent refuses to write env files, the
//! receipt and the current-release state through a symlink it did not make,
//! creates them with their final mode whatever the umask, and refuses
//! parameter and group names that would escape the env folder.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use wavemap_e2e::faultproxy::{Fault, FaultProxy, SocketProxy};
use wavemap_e2e::{
    docker, mode, private_copy, release_args, ssm_client, stack, toml_str, with_execute, Output,
    TestDir,
};

// ---------------------------------------------------------------------------
// Helpers shared with `secrets.rs`.

/// One parameter: relative name (`group/VAR`), value, SecureString or not.
pub(crate) type Param = (String, String, bool);

pub(crate) fn p(name: &str, value: &str, secure: bool) -> Param {
    (name.to_owned(), value.to_owned(), secure)
}

/// The parameters of the small project: a database password (in two
/// places, as deployed dev has it), an API secret and a public origin.
pub(crate) fn base_params(db_password: &str, api_secret: &str) -> Vec<Param> {
    vec![
        p("postgres/POSTGRES_PASSWORD", db_password, true),
        p("postgres/POSTGRES_USER", "wavemap", false),
        p(
            "backend/DATABASE_URL",
            &format!("postgres://wavemap:{db_password}@postgres:5432/wavemap"),
            true,
        ),
        p("backend/API_SECRET", api_secret, true),
        p(
            "frontend/PUBLIC_API_ORIGIN",
            "https://dev.wavemap.app/api",
            false,
        ),
    ]
}

pub(crate) async fn put_params(td: &TestDir, params: &[Param]) {
    let ssm = ssm_client().await;
    for (name, value, secure) in params {
        let full = format!("{}{name}", td.parameter_prefix());
        ssm.put_parameter()
            .name(&full)
            .value(value)
            .r#type(if *secure {
                ParameterType::SecureString
            } else {
                ParameterType::String
            })
            .tier(if value.len() > 4096 {
                ParameterTier::Advanced
            } else {
                ParameterTier::Standard
            })
            .overwrite(true)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("put {full}: {}", aws_sdk_ssm::error::DisplayErrorContext(e))
            });
    }
}

/// A two-service project (api + frontend, no database, no depends_on) that
/// becomes healthy in a few seconds: enough for every deploy-path fault.
/// The frontend publishes a loopback port the Engine picks, and endpoint
/// smoke checks what this project serves (no database: no `/api/v1/ready`),
/// so a release recorded from it passes the same smoke as on a host.
pub(crate) fn write_small_project(td: &mut TestDir) {
    let health = r#"
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
      interval: 1s
      timeout: 3s
      retries: 60
    restart: unless-stopped
"#;
    let text = format!(
        "services:\n  api:\n    image: ${{WAVEMAP_BACKEND_IMAGE}}\n    env_file: ${{WAVEMAP_ENV_DIR}}/backend.env{health}  frontend:\n    image: ${{WAVEMAP_FRONTEND_IMAGE}}\n    env_file: ${{WAVEMAP_ENV_DIR}}/frontend.env\n    ports:\n      - \"127.0.0.1::8080\"{health}"
    );
    td.set(
        "smoke",
        "checks",
        r#"[{ name = "ping", path = "/en/ping", status = 200 }, { name = "health", path = "/api/v1/health", status = 200 }]"#,
    );
    std::fs::create_dir_all(td.compose_file().parent().expect("dir")).expect("mkdir");
    std::fs::write(td.compose_file(), text).expect("write compose file");
}

/// `docker compose down` for the test's project on drop.
pub(crate) struct Down(pub String);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["compose", "-p", &self.0, "down", "-v", "-t", "1"])
            .output();
    }
}

/// Bytes, mtime and inode of each path (`None` when absent): equal
/// snapshots mean "not rewritten", not merely "same content".
pub(crate) type Snapshot = BTreeMap<PathBuf, Option<(Vec<u8>, SystemTime, u64)>>;

pub(crate) fn snapshot(paths: &[PathBuf]) -> Snapshot {
    paths
        .iter()
        .map(|path| {
            let entry = std::fs::symlink_metadata(path).ok().map(|meta| {
                let bytes = std::fs::read(path).unwrap_or_default();
                (bytes, meta.modified().expect("mtime"), meta.ino())
            });
            (path.clone(), entry)
        })
        .collect()
}

pub(crate) fn env_files(td: &TestDir) -> Vec<PathBuf> {
    ["backend", "frontend", "postgres"]
        .iter()
        .map(|g| td.env_dir().join(format!("{g}.env")))
        .collect()
}

pub(crate) fn current_release(td: &TestDir) -> PathBuf {
    td.state_dir().join("current-release.json")
}

/// Env files, receipt and current-release state.
pub(crate) fn release_files(td: &TestDir) -> Vec<PathBuf> {
    let mut files = env_files(td);
    files.push(td.receipt_path());
    files.push(current_release(td));
    files
}

/// `Config.Image` of the service's container.
pub(crate) async fn running_image(project: &str, service: &str) -> String {
    docker()
        .await
        .inspect_container(
            &format!("{project}-{service}-1"),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|c| c.config)
        .and_then(|c| c.image)
        .unwrap_or_default()
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(out.code, code, "`{what}`\n{}", out.dump());
}

fn timed(td: &TestDir, args: &[String]) -> (Output, Duration) {
    let started = Instant::now();
    let out = td.run(args);
    (out, started.elapsed())
}

/// Run the agent under `umask`, to show modes are set, not inherited.
fn run_with_umask(td: &TestDir, umask: &str, args: &[String]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(wavemap_e2e::agent_bin())
        .arg("--config")
        .arg(td.config_path())
        .args(args)
        .env_remove("WAVEMAP_AGENT_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in &stack().vars {
        if k.starts_with("AWS_") {
            cmd.env(k, v);
        }
    }
    cmd.output().expect("run agent").into()
}

/// Short AWS waits: 2 attempts of at most 2 s, 10 s for the operation.
fn short_aws(td: &mut TestDir) {
    td.set("aws", "max_attempts", "2");
    td.set("aws", "attempt_timeout", "2");
    td.set("aws", "operation_timeout", "10");
}

/// With `aws.attempt_timeout` 2 s and `max_attempts` 2 an AWS operation
/// ends in seconds; 30 s of wall time (process start-up, a debug build,
/// a busy 2-core machine) is a hang, not a slow run.
const AWS_BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// AWS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_5xx_throttling_and_stalls_exit_69_in_bounded_time_and_touch_nothing() {
    let s = stack();
    let mut td = TestDir::new("fault-ssm");
    // The deploy checks the Compose file before it reaches SSM.
    write_small_project(&mut td);
    put_params(&td, &base_params("fault-ssm-db-pw", "fault-ssm-api")).await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_exit(&out, 0, "runtime-env --execute (no fault)");
    let files = release_files(&td);
    let before = snapshot(&files);
    short_aws(&mut td);

    let render = vec!["runtime-env".to_string(), "--execute".into()];
    let deploy = with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "faults",
    ));
    for (fault, says) in [
        (Fault::Unavailable503, "ServiceUnavailable"),
        (Fault::Throttle, "ThrottlingException"),
        (Fault::Stall, "timeout"),
    ] {
        for args in [&render, &deploy] {
            let proxy = FaultProxy::start(&s.ssm_endpoint, fault);
            td.set("aws", "ssm_endpoint", toml_str(&proxy.url));
            let (out, took) = timed(&td, args);
            let what = format!("{} under {fault:?}", args[..2].join(" "));
            assert_exit(&out, 69, &what);
            assert_eq!(
                out.marker("WAVEMAP_AGENT_ERROR"),
                Some("dependency-unavailable"),
                "{what}\n{}",
                out.dump()
            );
            assert!(
                out.stderr
                    .contains("SSM Parameter Store stayed unavailable")
                    && out.stderr.contains(says),
                "{what}: the message does not say what failed\n{}",
                out.dump()
            );
            if args[0] == "runtime" {
                assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("failed"));
                assert_eq!(
                    out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
                    Some("env-render")
                );
            }
            if fault != Fault::Stall {
                // aws.max_attempts = 2: the first failure was retried.
                assert!(
                    proxy.requests() >= 2,
                    "{what}: {} request(s), no retry",
                    proxy.requests()
                );
            }
            assert!(took < AWS_BOUND, "{what} took {took:?}");
            assert_eq!(snapshot(&files), before, "{what} touched a file");
        }
    }

    // A transient fault (the first request fails) is retried and the
    // render succeeds: the changed value reaches the file.
    put_params(
        &td,
        &[p("backend/API_SECRET", "fault-ssm-api-rotated", true)],
    )
    .await;
    let proxy = FaultProxy::start(&s.ssm_endpoint, Fault::FailFirst(1));
    td.set("aws", "ssm_endpoint", toml_str(&proxy.url));
    let out = td.run(["runtime-env", "--execute"]);
    assert_exit(&out, 0, "runtime-env --execute, first request 503");
    assert!(proxy.requests() >= 2, "the 503 was not retried");
    let backend = wavemap_agent::envfile::parse_bytes(
        &std::fs::read(td.env_dir().join("backend.env")).expect("backend.env"),
    )
    .expect("parse backend.env");
    assert_eq!(
        backend.get("API_SECRET").map(String::as_str),
        Some("fault-ssm-api-rotated")
    );
}

/// ECR faults stop a deploy at `ecr-login` with 69, and the running
/// release, its receipt and state stay as they were. The baseline deploy
/// itself goes through proxies that fail the first SSM and the first ECR
/// request: transient faults are retried and the deploy succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_faults_stop_at_ecr_login_with_69_and_transient_faults_are_retried() {
    let s = stack();
    let mut td = TestDir::new("fault-ecr");
    let _down = Down(td.name.clone());
    write_small_project(&mut td);
    put_params(&td, &base_params("fault-ecr-db-pw", "fault-ecr-api")).await;
    td.set("runtime", "health_timeout", "60");
    let repo = td.name.replace('_', "-");
    let backend = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"), &repo);
    let frontend = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"), &repo);
    short_aws(&mut td);

    let ssm = FaultProxy::start(&s.ssm_endpoint, Fault::FailFirst(1));
    let ecr = FaultProxy::start(&s.ecr_endpoint, Fault::FailFirst(1));
    td.set("aws", "ssm_endpoint", toml_str(&ssm.url));
    td.set("aws", "ecr_endpoint", toml_str(&ecr.url));
    let deploy = with_execute(release_args(
        "deploy", &backend, &frontend, &s.sha_a, "faults",
    ));
    let out = run_with_umask(&td, "077", &deploy);
    assert_exit(&out, 0, "deploy with one transient SSM and ECR fault");
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("success"));
    assert!(ssm.requests() >= 2, "SSM 503 not retried");
    assert!(ecr.requests() >= 2, "ECR 503 not retried");
    assert_eq!(
        running_image(&td.name, "api").await,
        wavemap_e2e::pinned(&backend).await
    );
    let out = run_with_umask(
        &td,
        "077",
        &with_execute(release_args(
            "record-release",
            &backend,
            &frontend,
            &s.sha_a,
            "faults",
        )),
    );
    assert_exit(&out, 0, "record-release");
    // Modes are the agent's, not the umask's.
    assert_eq!(
        mode(&td.receipt_path()),
        0o644,
        "receipt mode under umask 077"
    );
    assert_eq!(
        mode(&current_release(&td)),
        0o644,
        "state mode under umask 077"
    );
    for file in env_files(&td) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    td.set("aws", "ssm_endpoint", toml_str(&s.ssm_endpoint));

    // A pair nobody has pulled: the deploy must log in to ECR first.
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let other_b = format!("{}/{repo}/backend:sha-{sha}", s.registry);
    let other_f = format!("{}/{repo}/frontend:sha-{sha}", s.registry);
    let files = release_files(&td);
    let before = snapshot(&files);
    for (fault, says) in [
        (Fault::Unavailable503, "ServiceUnavailable"),
        (Fault::Throttle, "ThrottlingException"),
        (Fault::Stall, "timeout"),
    ] {
        let proxy = FaultProxy::start(&s.ecr_endpoint, fault);
        td.set("aws", "ecr_endpoint", toml_str(&proxy.url));
        let args = with_execute(release_args("deploy", &other_b, &other_f, sha, "faults"));
        let (out, took) = timed(&td, &args);
        let what = format!("deploy under ECR {fault:?}");
        assert_exit(&out, 69, &what);
        assert_eq!(
            out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
            Some("ecr-login"),
            "{what}\n{}",
            out.dump()
        );
        assert!(
            out.stderr.contains("ECR stayed unavailable") && out.stderr.contains(says),
            "{what}: the message does not say what failed\n{}",
            out.dump()
        );
        if fault != Fault::Stall {
            assert!(proxy.requests() >= 2, "{what}: no retry");
        }
        assert!(took < AWS_BOUND, "{what} took {took:?}");
        assert_eq!(snapshot(&files), before, "{what} touched a file");
        assert_eq!(
            running_image(&td.name, "api").await,
            wavemap_e2e::pinned(&backend).await,
            "{what} changed the running release"
        );
    }

    // Path safety on the same running release: the receipt and the state
    // are never written through a symlink the agent did not make.
    td.set("aws", "ecr_endpoint", toml_str(&s.ecr_endpoint));
    let victim = td.path().join("victim.txt");
    std::fs::write(&victim, b"not the agent's file\n").expect("victim");
    for (target, args) in [
        (
            td.receipt_path(),
            with_execute(release_args(
                "record-release",
                &backend,
                &frontend,
                &s.sha_a,
                "faults",
            )),
        ),
        (current_release(&td), deploy.clone()),
    ] {
        let saved = std::fs::read(&target).expect("file exists");
        std::fs::remove_file(&target).expect("remove");
        std::os::unix::fs::symlink(&victim, &target).expect("symlink");
        let out = td.run(&args);
        let what = format!("{} with {} a symlink", args[1], target.display());
        assert!(out.code != 0 && out.code != -1, "{what}\n{}", out.dump());
        assert!(out.stderr.contains("symlink"), "{what}\n{}", out.dump());
        assert_eq!(
            std::fs::read(&victim).expect("victim"),
            b"not the agent's file\n",
            "{what} wrote through the symlink"
        );
        assert!(
            std::fs::symlink_metadata(&target)
                .expect("still there")
                .file_type()
                .is_symlink(),
            "{what} replaced the symlink"
        );
        std::fs::remove_file(&target).expect("remove link");
        std::fs::write(&target, saved).expect("restore");
    }
}

// ---------------------------------------------------------------------------
// Docker

/// Spawn `daemon` under a notify socket; returns the child and the socket.
fn spawn_daemon(td: &TestDir) -> (std::process::Child, std::os::unix::net::UnixDatagram) {
    let path = td.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let child = td
        .command()
        .arg("daemon")
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    (child, socket)
}

/// Collect notify messages until `done` says so or `limit` passes.
fn collect_notify(
    socket: &std::os::unix::net::UnixDatagram,
    into: &mut Vec<String>,
    limit: Duration,
    done: impl Fn(&[String]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 8192];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            into.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if done(into) {
                return true;
            }
        }
    }
    false
}

fn stop(child: std::process::Child) -> String {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("daemon output");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// dockerd unreachable at start: deploy exits 69 within
/// `docker.connect_wait`, `status` still reports (exit 0), and the daemon
/// keeps waiting with STATUS lines and never claims a healthy release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_unreachable_at_start_is_69_for_deploy_and_a_report_for_status_and_daemon() {
    let s = stack();
    let mut td = TestDir::new("fault-nodocker");
    write_small_project(&mut td);
    put_params(&td, &base_params("fault-nodocker-pw", "fault-nodocker-api")).await;
    let host = format!("unix://{}", td.path().join("no-dockerd.sock").display());
    td.set("docker", "host", toml_str(&host));
    td.set("docker", "connect_wait", "3");
    td.set("daemon", "docker_wait", "4");
    td.set("daemon", "health_interval", "1");

    let deploy = with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "faults",
    ));
    let (out, took) = timed(&td, &deploy);
    assert_exit(&out, 69, "deploy without dockerd");
    assert!(
        out.stderr.contains("Docker Engine stayed unavailable") && out.stderr.contains(&host),
        "{}",
        out.dump()
    );
    assert!(
        took >= Duration::from_secs(3),
        "gave up before docker.connect_wait: {took:?}"
    );
    assert!(took < AWS_BOUND, "deploy without dockerd took {took:?}");
    assert!(
        !current_release(&td).exists(),
        "state written without a deploy"
    );

    for args in [vec!["status"], vec!["status", "--json"]] {
        let out = td.run(&args);
        assert_exit(&out, 0, &args.join(" "));
        assert!(
            out.stdout.contains("unavailable") || out.stderr.contains("unavailable"),
            "`{}` does not say Docker is unavailable\n{}",
            args.join(" "),
            out.dump()
        );
    }

    let (child, socket) = spawn_daemon(&td);
    let mut messages = Vec::new();
    let ready = collect_notify(&socket, &mut messages, Duration::from_secs(30), |m| {
        m.iter().any(|x| x.contains("READY=1"))
    });
    let alive = Command::new("kill")
        .args(["-0", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    let stderr = stop(child);
    let waiting = messages
        .iter()
        .filter(|m| m.contains("STATUS=waiting for Docker"))
        .count();
    assert!(
        waiting >= 2,
        "the daemon did not report waiting for Docker:\n{messages:#?}\n{stderr}"
    );
    assert!(alive, "the daemon exited while Docker was down\n{stderr}");
    if ready {
        let last = messages.last().expect("a message");
        assert!(
            !last.contains("recovered") && !last.contains("healthy"),
            "READY claims a healthy release without Docker: {last}"
        );
        assert!(last.contains("failed"), "READY status: {last}");
    }
}

/// dockerd goes away while a deploy waits on health: a clear exit 69
/// naming the Docker Engine, well before `runtime.health_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cut_while_a_deploy_waits_on_health_fails_clearly_without_hanging() {
    let s = stack();
    let mut td = TestDir::new("fault-dockercut");
    let _down = Down(td.name.clone());
    write_small_project(&mut td);
    let mut params = base_params("fault-cut-pw", "fault-cut-api");
    // The api answers 503 on /health for 10 minutes: health waits.
    params.push(p("backend/FAKE_STARTUP_SECS", "600", false));
    put_params(&td, &params).await;
    let proxy = SocketProxy::start(
        &td.path().join("docker.sock"),
        Path::new("/var/run/docker.sock"),
    );
    td.set("docker", "host", toml_str(&proxy.host()));
    td.set("docker", "connect_wait", "3");
    td.set("runtime", "health_timeout", "40");

    let deploy = with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "faults",
    ));
    let mut child = td
        .command()
        .args(&deploy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deploy");
    let stderr = child.stderr.take().expect("stderr");
    let mut log = String::new();
    let mut lines = BufReader::new(stderr).lines();
    let mut cut_at = None;
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        log.push_str(&line);
        log.push('\n');
        if line.contains("[health]") {
            // Let it observe once, then take dockerd away.
            std::thread::sleep(Duration::from_secs(2));
            proxy.cut();
            cut_at = Some(Instant::now());
            break;
        }
    }
    for line in lines.map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().expect("deploy ends");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read stdout");
    let out = Output {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr: log,
    };
    let cut_at = cut_at.unwrap_or_else(|| panic!("health stage not reached\n{}", out.dump()));
    let after_cut = cut_at.elapsed();
    assert_exit(&out, 69, "deploy with dockerd cut during health");
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("health"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("Docker Engine stayed unavailable"),
        "{}",
        out.dump()
    );
    assert!(
        after_cut < Duration::from_secs(40),
        "the deploy outlived runtime.health_timeout after the cut: {after_cut:?}"
    );
    assert!(
        !current_release(&td).exists(),
        "an unhealthy deploy was recorded as the current release"
    );
    proxy.restore();
}

/// dockerd goes away and comes back while the daemon runs: the daemon keeps
/// running and reports the change both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cut_and_restored_while_the_daemon_runs_is_survived_and_reported() {
    let mut td = TestDir::new("fault-daemoncut");
    write_small_project(&mut td);
    let proxy = SocketProxy::start(
        &td.path().join("docker.sock"),
        Path::new("/var/run/docker.sock"),
    );
    td.set("docker", "host", toml_str(&proxy.host()));
    td.set("daemon", "health_interval", "1");
    td.set("daemon", "docker_wait", "10");
    let (child, socket) = spawn_daemon(&td);
    let mut messages = Vec::new();
    let ready = collect_notify(&socket, &mut messages, Duration::from_secs(30), |m| {
        m.iter().any(|x| x.contains("READY=1"))
    });
    assert!(ready, "no READY with dockerd up: {messages:#?}");
    proxy.cut();
    let saw_down = collect_notify(&socket, &mut messages, Duration::from_secs(20), |m| {
        m.iter().any(|x| x.contains("Docker unavailable"))
    });
    proxy.restore();
    let saw_up = collect_notify(&socket, &mut messages, Duration::from_secs(20), |m| {
        m.last()
            .is_some_and(|x| x.contains("STATUS=running:") && !x.contains("unavailable"))
    });
    let exited = Command::new("kill")
        .args(["-0", &child.id().to_string()])
        .status()
        .map_or(true, |s| !s.success());
    let stderr = stop(child);
    assert!(!exited, "the daemon died when dockerd went away\n{stderr}");
    assert!(
        saw_down,
        "no STATUS about Docker going away: {messages:#?}\n{stderr}"
    );
    assert!(
        saw_up,
        "no STATUS about Docker coming back: {messages:#?}\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// A Drizzle migrations folder (the same fixtures `database.rs` uses).
pub(crate) fn drizzle_fixture() -> PathBuf {
    std::env::var_os("WAVEMAP_DRIZZLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| wavemap_e2e::repo_root().join("tests/fixtures/drizzle"))
        .join("up-to-date/image-migrations")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_or_refusing_the_password_exits_69_without_showing_it() {
    let td = TestDir::new("fault-pg");
    let migrations = drizzle_fixture();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let down_pw = "pg-down-Secr3t-pw";
    let base = stack()
        .pg_url
        .split_once('@')
        .map(|(_, rest)| rest.to_owned())
        .expect("pg url has credentials");
    let wrong_pw = "pg-wrong-Secr3t-pw";
    for (url, pw, says) in [
        (
            format!("postgres://wavemap:{down_pw}@127.0.0.1:{closed}/x"),
            down_pw,
            "cannot connect",
        ),
        (
            format!("postgres://wavemap:{wrong_pw}@{base}"),
            wrong_pw,
            "refused the credentials",
        ),
    ] {
        let args = vec![
            "database".to_string(),
            "status".into(),
            "--database-url".into(),
            url.clone(),
            "--migrations-dir".into(),
            migrations.display().to_string(),
        ];
        let started = Instant::now();
        let out = td.run(&args);
        let took = started.elapsed();
        assert_exit(&out, 69, &format!("database status ({says})"));
        assert!(
            out.stderr.contains("PostgreSQL stayed unavailable") && out.stderr.contains(says),
            "{}",
            out.dump()
        );
        assert!(
            !out.stdout.contains(pw) && !out.stderr.contains(pw),
            "the password was printed\n{}",
            out.dump()
        );
        let journal = std::fs::read_to_string(td.journal_path()).unwrap_or_default();
        assert!(!journal.contains(pw), "the password is in the journal");
        assert!(took < Duration::from_secs(60), "took {took:?}");
    }
}

// ---------------------------------------------------------------------------
// Disk full

/// A 64 KiB tmpfs mounted at a dir; unmounted on drop. The disk-full tests
/// need it: where mounting is not permitted (not root, no CAP_SYS_ADMIN)
/// they fail saying so.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8) (package mount): {e}"));
        assert!(
            out.status.success(),
            "the disk-full test needs to mount a 64 KiB tmpfs at {} (root with CAP_SYS_ADMIN, \
             as scripts/test runs): mount said: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Fill the filesystem until a write fails, leaving `keep` bytes free
    /// at most (tmpfs counts whole pages).
    fn fill(&self) {
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![b'x'; 1024];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        let _ = file.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".wavemap-tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_env_render_cleanly_and_keeps_the_old_files() {
    let td = TestDir::new("fault-disk");
    let tmpfs = Tmpfs::mount(&td.env_dir());
    put_params(&td, &base_params("fault-disk-pw", "fault-disk-api")).await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_exit(&out, 0, "runtime-env --execute (fits)");
    let files = env_files(&td);
    let before = snapshot(&files);
    tmpfs.fill();
    // Larger values than the space left: three 8 KB parameters.
    let big: String = "0123456789abcdef".repeat(512);
    put_params(
        &td,
        &[
            p("backend/BIG_A", &big, true),
            p("backend/BIG_B", &big, true),
            p("frontend/BIG_C", &big, false),
        ],
    )
    .await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_exit(&out, 1, "runtime-env --execute on a full disk");
    assert_eq!(
        out.marker("WAVEMAP_AGENT_ERROR"),
        Some("io"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains(&big[..64]), "a value was printed");
    assert_eq!(
        snapshot(&files),
        before,
        "an env file changed on a full disk"
    );
    assert_eq!(
        leftovers(&td.env_dir()),
        Vec::<String>::new(),
        "a temp file was left behind"
    );
    drop(tmpfs);
}

/// The receipt on a full disk: record-release fails with exit 1, the old
/// receipt stays whole. Needs a running release, so it reuses the small
/// project with the stack's images (present on the host: no ECR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_record_release_cleanly_and_keeps_the_old_receipt() {
    let s = stack();
    let mut td = TestDir::new("fault-diskrcpt");
    let _down = Down(td.name.clone());
    let receipt_dir = td.receipt_path().parent().expect("dir").to_path_buf();
    let tmpfs = Tmpfs::mount(&receipt_dir);
    write_small_project(&mut td);
    put_params(&td, &base_params("fault-dr-pw", "fault-dr-api")).await;
    let (b, f) = (
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
    );
    let out = td.run(with_execute(release_args(
        "deploy", b, f, &s.sha_a, "faults",
    )));
    assert_exit(&out, 0, "deploy");
    let record = with_execute(release_args("record-release", b, f, &s.sha_a, "faults"));
    let out = td.run(&record);
    assert_exit(&out, 0, "record-release (fits)");
    let before = snapshot(&[td.receipt_path()]);
    tmpfs.fill();
    let out = td.run(&record);
    assert_exit(&out, 1, "record-release on a full disk");
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.dump()
    );
    assert_eq!(
        snapshot(&[td.receipt_path()]),
        before,
        "the receipt changed on a full disk"
    );
    assert_eq!(
        leftovers(&receipt_dir),
        Vec::<String>::new(),
        "temp file left"
    );
    drop(tmpfs);
}

// ---------------------------------------------------------------------------
// Paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_files_are_not_written_through_a_symlink_and_get_their_mode_whatever_the_umask() {
    let td = TestDir::new("path-env");
    put_params(&td, &base_params("path-env-pw", "path-env-api")).await;

    // Modes from the start: under umask 000 and 077 alike.
    for umask in ["000", "077"] {
        let _ = std::fs::remove_dir_all(td.env_dir());
        let args = ["runtime-env".to_string(), "--execute".into()];
        let out = run_with_umask(&td, umask, &args);
        assert_exit(
            &out,
            0,
            &format!("runtime-env --execute under umask {umask}"),
        );
        for file in env_files(&td) {
            assert_eq!(mode(&file), 0o600, "{} under umask {umask}", file.display());
            assert_eq!(std::fs::metadata(&file).expect("stat").uid(), 0, "owner");
        }
        let dir_mode = mode(&td.env_dir()) & 0o077;
        assert_eq!(dir_mode, 0, "env dir open to others under umask {umask}");
    }

    // A symlink planted where an env file goes is refused, its target kept.
    let victim = td.path().join("victim.txt");
    std::fs::write(&victim, b"keep me\n").expect("victim");
    let link = td.env_dir().join("backend.env");
    std::fs::remove_file(&link).expect("remove");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    put_params(&td, &[p("backend/API_SECRET", "path-env-rotated", true)]).await;
    let out = td.run(["runtime-env", "--execute"]);
    assert!(out.code != 0 && out.code != -1, "{}", out.dump());
    assert!(out.stderr.contains("symlink"), "{}", out.dump());
    assert!(out.stderr.contains("backend.env"), "{}", out.dump());
    assert_eq!(std::fs::read(&victim).expect("victim"), b"keep me\n");
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());

    // The env folder itself as a symlink is refused too.
    let elsewhere = td.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::remove_dir_all(td.env_dir()).expect("rm env dir");
    std::os::unix::fs::symlink(&elsewhere, td.env_dir()).expect("symlink dir");
    let out = td.run(["runtime-env", "--execute"]);
    assert!(out.code != 0 && out.code != -1, "{}", out.dump());
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("elsewhere").count(),
        0,
        "files written through a symlinked env folder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_would_escape_the_env_folder_are_refused_naming_them() {
    // A parameter under the prefix whose relative name climbs out.
    let td = TestDir::new("path-escape");
    put_params(&td, &base_params("path-escape-pw", "path-escape-api")).await;
    let out = td.run(["runtime-env", "--execute"]);
    assert_exit(&out, 0, "runtime-env --execute");
    let before = snapshot(&env_files(&td));
    let escaping = format!("{}backend/../../x", td.parameter_prefix());
    let ssm = ssm_client().await;
    let stored = ssm
        .put_parameter()
        .name(&escaping)
        .value("escape-value")
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await;
    if let Err(e) = stored {
        panic!("moto must store the name {escaping} for this test to reach the agent: {e:?}");
    }
    let out = td.run(["runtime-env", "--execute"]);
    let _ = ssm.delete_parameter().name(&escaping).send().await;
    assert_exit(&out, 3, "runtime-env --execute with an escaping name");
    assert!(
        out.stderr.contains("backend/../../x"),
        "the parameter is not named\n{}",
        out.dump()
    );
    assert_eq!(snapshot(&env_files(&td)), before, "a file changed");
    assert!(!td.path().join("x").exists() && !td.path().join("x.env").exists());

    // The same through the config: a declared parameter or a group name
    // with `..` is an invalid configuration (exit 2) naming it.
    for (key, value, named) in [
        (
            "parameters",
            "[{ name = \"backend/../../x\", type = \"String\" }]",
            "backend/../../x",
        ),
        (
            "parameters",
            "[{ name = \"backend/X\", type = \"String\", group = \"../etc\" }]",
            "../etc",
        ),
        ("groups", "[\"backend\", \"../x\"]", "../x"),
    ] {
        let mut td = TestDir::new("path-escape-cfg");
        td.set("runtime", key, value);
        let out = td.run(["runtime-env", "--execute"]);
        assert_exit(&out, 2, &format!("runtime.{key} = {value}"));
        assert!(
            out.stderr.contains(named),
            "{named} not named\n{}",
            out.dump()
        );
        assert!(!td.env_dir().exists(), "env folder created");
    }
}
