//! Issue 3: the stack is real, the lock holds across processes, bad config
//! is named, and the command surface is complete.

use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use wavemap_e2e::{
    build_image, busybox_binary, docker, ecr_client, pg_client, registry_credentials, release_args,
    ssm_client, stack, unique_name, Output, TestDir,
};

// ---------------------------------------------------------------------------
// (a) every part of the stack is real

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_stores_and_decrypts_a_secure_string() {
    let ssm = ssm_client().await;
    let name = format!("/wavemap-e2e/{}/backend/API_KEY", unique_name("ssm"));
    let value = format!("s3cret+/={}", unique_name("value"));
    ssm.put_parameter()
        .name(&name)
        .value(&value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("put SecureString into moto");

    let got = ssm
        .get_parameter()
        .name(&name)
        .with_decryption(true)
        .send()
        .await
        .expect("get it back")
        .parameter
        .expect("parameter in the answer");
    assert_eq!(got.value.as_deref(), Some(value.as_str()));
    assert_eq!(
        got.r#type,
        Some(aws_sdk_ssm::types::ParameterType::SecureString)
    );

    // Without decryption the value is not the plaintext: it is really stored
    // as a SecureString, not a String.
    let raw = ssm
        .get_parameter()
        .name(&name)
        .with_decryption(false)
        .send()
        .await
        .expect("get without decryption")
        .parameter
        .and_then(|p| p.value)
        .unwrap_or_default();
    assert_ne!(raw, value);

    ssm.delete_parameter()
        .name(&name)
        .send()
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_ecr_token_decodes_to_the_registry_user() {
    let s = stack();
    let auth = ecr_client()
        .await
        .get_authorization_token()
        .send()
        .await
        .expect("ECR GetAuthorizationToken from moto");
    let token = auth
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .expect("one token");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .expect("token is base64");
    assert_eq!(
        String::from_utf8_lossy(&decoded),
        format!("{}:{}", s.registry_user, s.registry_password),
        "moto's ECR token must be a user of the stack's registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_answers_queries() {
    let client = pg_client().await;
    let row = client
        .query_one(
            "select current_user::text, current_setting('server_version_num')::int",
            &[],
        )
        .await
        .expect("query PostgreSQL");
    let user: String = row.get(0);
    let version: i32 = row.get(1);
    assert_eq!(user, "wavemap");
    assert!(
        (150000..160000).contains(&version),
        "PostgreSQL 15 expected, got {version}"
    );

    let url = wavemap_e2e::pg_fresh_database("foundation").await;
    let db = wavemap_e2e::pg_connect(&url).await;
    db.batch_execute("create table t (v text); insert into t values ('written')")
        .await
        .expect("write into the fresh database");
    let v: String = db
        .query_one("select v from t", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(v, "written");
}

/// A tiny image built here from Debian's static busybox: nothing is pulled.
async fn build_busybox(tag: &str) -> String {
    build_image(
        tag,
        "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"echo\", \"built-locally\"]\n",
        &[("busybox", busybox_binary())],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerd_creates_starts_and_removes_a_container_from_a_local_image() {
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        RemoveImageOptionsBuilder, WaitContainerOptions,
    };

    let docker = docker().await;
    let tag = format!("{}:local", unique_name("container-image"));
    let image_id = build_busybox(&tag).await;
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    let name = unique_name("container");
    let config = bollard::models::ContainerCreateBody {
        image: Some(tag.clone()),
        cmd: Some(vec![
            "/bin/busybox".into(),
            "sh".into(),
            "-c".into(),
            "echo hello from $WHO; exit 7".into(),
        ]),
        env: Some(vec!["WHO=wavemap-e2e".into()]),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            config,
        )
        .await
        .expect("create container");
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start container");
    // bollard reports a non-zero exit as an error item; either way, the
    // container has ended when the stream ends.
    let mut wait = docker.wait_container(&created.id, None::<WaitContainerOptions>);
    while wait.next().await.is_some() {}

    let inspected = docker
        .inspect_container(&created.id, None)
        .await
        .expect("inspect container");
    let state = inspected.state.expect("container state");
    assert_eq!(state.exit_code, Some(7));
    assert_eq!(inspected.config.and_then(|c| c.image), Some(tag.clone()));
    assert_eq!(inspected.image.as_deref(), Some(image_id.as_str()));

    let mut logs = docker.logs(
        &created.id,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    let mut text = String::new();
    while let Some(chunk) = logs.next().await {
        text.push_str(&chunk.expect("read logs").to_string());
    }
    assert_eq!(text.trim(), "hello from wavemap-e2e");

    docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .expect("remove container");
    let gone = docker.inspect_container(&name, None).await;
    assert!(
        matches!(
            gone,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        ),
        "container still there after remove: {gone:?}"
    );
    let _ = docker
        .remove_image(
            &tag,
            Some(RemoveImageOptionsBuilder::default().force(true).build()),
            None,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_needs_auth_and_round_trips_an_image() {
    use bollard::query_parameters::{
        CreateImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
        TagImageOptionsBuilder,
    };

    let s = stack();
    let docker = docker().await;
    let local = format!("{}:local", unique_name("registry-image"));
    let image_id = build_busybox(&local).await;
    let repo = format!("{}/{}", s.registry, unique_name("push"));
    docker
        .tag_image(
            &local,
            Some(
                TagImageOptionsBuilder::default()
                    .repo(&repo)
                    .tag("v1")
                    .build(),
            ),
        )
        .await
        .expect("tag for the registry");
    let remote = format!("{repo}:v1");
    let untag_remote = || async {
        docker
            .remove_image(
                &remote,
                Some(RemoveImageOptionsBuilder::default().noprune(true).build()),
                None,
            )
            .await
    };

    // Push with the user moto's ECR token names.
    let mut push = docker.push_image(
        &repo,
        Some(PushImageOptionsBuilder::default().tag("v1").build()),
        Some(registry_credentials()),
    );
    while let Some(item) = push.next().await {
        let info = item.expect("push to the stack registry");
        assert!(info.error_detail.is_none(), "push failed: {info:?}");
    }

    // Pull it back with credentials: same image.
    untag_remote().await.expect("untag before pull");
    let pull = |credentials| {
        docker
            .create_image(
                Some(
                    CreateImageOptionsBuilder::default()
                        .from_image(&repo)
                        .tag("v1")
                        .build(),
                ),
                None,
                credentials,
            )
            .collect::<Vec<_>>()
    };
    for item in pull(Some(registry_credentials())).await {
        let info = item.expect("pull from the stack registry");
        assert!(info.error_detail.is_none(), "pull failed: {info:?}");
    }
    let pulled = docker.inspect_image(&remote).await.expect("pulled image");
    assert_eq!(pulled.id.as_deref(), Some(image_id.as_str()));

    // Without credentials the registry refuses the pull.
    untag_remote().await.expect("untag before anonymous pull");
    let anonymous = pull(None).await;
    let refused = anonymous.iter().any(|item| match item {
        Err(e) => {
            let t = e.to_string().to_lowercase();
            t.contains("auth") || t.contains("unauthorized")
        }
        Ok(info) => info.error_detail.is_some(),
    });
    assert!(refused, "anonymous pull was not refused: {anonymous:?}");
    assert!(
        docker.inspect_image(&remote).await.is_err(),
        "anonymous pull left {remote} behind"
    );

    let _ = docker
        .remove_image(
            &local,
            Some(RemoveImageOptionsBuilder::default().force(true).build()),
            None,
        )
        .await;
}

/// The second registry user's 2.5 KB password works with the reference
/// client (docker login) and a wrong one does not: the stack is ready for
/// the agent's own registry-auth tests.
#[test]
fn registry_long_password_user_logs_in_with_the_docker_cli() {
    let s = stack();
    assert!(s.registry_long_password.len() >= 2500);
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        s.registry_long_user, s.registry_long_password
    ));
    assert!(b64.contains('+') && b64.contains('/'), "{b64:.40}...");

    let login = |password: &str| {
        let config = tempfile::tempdir().expect("docker config dir");
        let mut child = std::process::Command::new("docker")
            .env("DOCKER_CONFIG", config.path())
            .args([
                "login",
                "--username",
                &s.registry_long_user,
                "--password-stdin",
            ])
            .arg(&s.registry)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker login");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("write password");
        Output::from(child.wait_with_output().expect("docker login ends"))
    };
    let ok = login(&s.registry_long_password);
    assert_eq!(ok.code, 0, "{}", ok.dump());
    let bad = login("wrong-password");
    assert_ne!(bad.code, 0, "{}", bad.dump());
}

// ---------------------------------------------------------------------------
// (b) the mutation lock across real processes

/// Holds the agent's lock file the way the agent does (flock + holder
/// line) until dropped.
struct LockHolder {
    _file: std::fs::File,
}

fn hold_lock(path: &std::path::Path, command: &str) -> LockHolder {
    std::fs::create_dir_all(path.parent().expect("lock dir")).expect("create run dir");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open lock file");
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "cannot take the lock for the test");
    file.set_len(0).expect("truncate lock file");
    writeln!(
        file,
        "pid={} command=\"{command}\" since=2026-01-01T00:00:00Z",
        std::process::id()
    )
    .expect("write holder line");
    LockHolder { _file: file }
}

/// Wait for a spawned agent, killing it past `limit` (a hang is a failure,
/// not a stuck test run).
fn finish(mut child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("poll child").is_some() {
            let out = child.wait_with_output().expect("collect output");
            return (out.into(), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out: Output = child.wait_with_output().expect("collect output").into();
            panic!(
                "agent still running after {limit:?}; killed\n{}",
                out.dump()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(dir: &TestDir, args: &[&str]) -> Child {
    dir.command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent")
}

/// Two agent processes: the first `runtime-env --execute` holds the lock
/// while its SSM call hangs on an endpoint that accepts and never answers;
/// the second gives up after its `--lock-timeout` with 75, naming the
/// first one's pid and command, and `config check` runs meanwhile.
#[test]
fn two_agent_processes_the_second_mutation_exits_75() {
    // An "SSM" that accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stalled endpoint");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let mut dir = TestDir::new("lock2");
    dir.set(
        "aws",
        "ssm_endpoint",
        wavemap_e2e::toml_str(&format!("http://127.0.0.1:{port}")),
    );
    dir.set("aws", "max_attempts", "1");
    dir.set("aws", "attempt_timeout", "60");
    dir.set("aws", "operation_timeout", "60");

    let mut first = spawn(&dir, &["runtime-env", "--execute"]);
    let first_pid = first.id();
    // Wait until the first process has recorded itself as the holder.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.lock_path()).unwrap_or_default();
        if text.contains(&format!("pid={first_pid} ")) {
            break;
        }
        if let Some(status) = first.try_wait().expect("poll first") {
            let out: Output = first.wait_with_output().expect("output").into();
            panic!(
                "first agent ended ({status}) before holding the lock\n{}",
                out.dump()
            );
        }
        assert!(Instant::now() < deadline, "first agent never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }

    let second = spawn(&dir, &["--lock-timeout", "1", "runtime-env", "--execute"]);
    let check = spawn(&dir, &["config", "check"]);
    let (out, waited) = finish(second, Duration::from_secs(50));
    let (check, _) = finish(check, Duration::from_secs(50));
    let first_still_running = first.try_wait().expect("poll first").is_none();
    let _ = first.kill();
    let _ = first.wait();

    assert!(
        first_still_running,
        "the holder ended early: the test proved nothing"
    );
    assert_eq!(out.code, 75, "{}", out.dump());
    assert!(
        waited >= Duration::from_millis(900),
        "gave up before its limit: {waited:?}"
    );
    assert!(
        out.stderr.contains(&format!("pid={first_pid}")),
        "holder pid not named\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("runtime-env"),
        "holder command not named\n{}",
        out.dump()
    );
    assert_eq!(check.code, 0, "{}", check.dump());
}

#[test]
fn second_mutation_exits_75_naming_the_holder_while_reads_run() {
    let mut dir = TestDir::new("lock");
    // A reader that wrongly took the lock would hang for this long.
    dir.set("agent", "lock_timeout", "600");
    let holder = hold_lock(&dir.lock_path(), "runtime deploy");

    let mutation = spawn(&dir, &["--lock-timeout", "1", "runtime-env", "--execute"]);
    let check = spawn(&dir, &["config", "check"]);
    let status = spawn(&dir, &["status"]);

    let (out, waited) = finish(mutation, Duration::from_secs(60));
    assert_eq!(out.code, 75, "{}", out.dump());
    assert!(
        waited >= Duration::from_millis(900),
        "gave up before its limit: {waited:?}"
    );
    assert!(
        out.stderr.contains("runtime deploy"),
        "holder command not named\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains(&format!("pid={}", std::process::id())),
        "holder pid not named\n{}",
        out.dump()
    );
    assert_eq!(
        out.marker("WAVEMAP_AGENT_EXIT_CODE"),
        Some("75"),
        "{}",
        out.dump()
    );
    assert_eq!(
        out.marker("WAVEMAP_AGENT_ERROR"),
        Some("lock-busy"),
        "{}",
        out.dump()
    );

    // Read-only commands ran to the end while the lock was held.
    let (check, _) = finish(check, Duration::from_secs(60));
    assert_eq!(check.code, 0, "{}", check.dump());
    assert_eq!(
        check.marker("WAVEMAP_CONFIG_VALID"),
        Some("true"),
        "{}",
        check.dump()
    );
    let (status, _) = finish(status, Duration::from_secs(120));
    assert_ne!(
        status.code,
        75,
        "status waited for the lock\n{}",
        status.dump()
    );
    assert!(
        !status.stderr.contains("waiting up to"),
        "{}",
        status.dump()
    );

    // Once the holder is gone, the same mutation gets past the lock.
    drop(holder);
    let after = dir.run(["--lock-timeout", "1", "runtime-env", "--execute"]);
    assert_ne!(after.code, 75, "{}", after.dump());
}

// ---------------------------------------------------------------------------
// (c) malformed config is refused, naming the key

#[test]
fn malformed_config_exits_2_naming_the_key() {
    let dir = TestDir::new("badconfig");
    let cases = [
        (
            "unknown key",
            "[agent]\nstate_dir = \"/tmp/x\"\nbogus_key = 1\n",
            "bogus_key",
        ),
        (
            "wrong type",
            "[agent]\nlock_timeout = \"ten\"\n",
            "lock_timeout",
        ),
        (
            "relative path",
            "[runtime]\nenv_dir = \"runtime/env\"\n",
            "env_dir",
        ),
        (
            "bad URL",
            "[aws]\nssm_endpoint = \"127.0.0.1:5055\"\n",
            "ssm_endpoint",
        ),
        ("unknown section", "[dockerd]\nhost = \"x\"\n", "dockerd"),
    ];
    for (what, text, key) in cases {
        dir.write_config(text);
        let out = dir.run(["config", "check"]);
        assert_eq!(out.code, 2, "{what}: {}", out.dump());
        assert!(
            out.stderr.contains(key),
            "{what}: key {key} not named\n{}",
            out.dump()
        );
        assert_eq!(
            out.marker("WAVEMAP_AGENT_ERROR"),
            Some("invalid-config"),
            "{what}"
        );

        // The same file through WAVEMAP_AGENT_CONFIG instead of --config.
        let via_env = wavemap_e2e::run_agent(
            ["config", "check"],
            None,
            &[(
                "WAVEMAP_AGENT_CONFIG",
                dir.config_path().to_str().expect("utf-8 path"),
            )],
        );
        assert_eq!(via_env.code, 2, "{what} via env: {}", via_env.dump());
        assert!(
            via_env.stderr.contains(key),
            "{what} via env\n{}",
            via_env.dump()
        );
    }

    // A good file passes and the effective config shows the test's paths.
    let good = TestDir::new("goodconfig");
    let out = good.run(["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_CONFIG_VALID"), Some("true"));
    assert!(
        out.stderr.contains(&good.env_dir().display().to_string()),
        "effective config does not show env_dir\n{}",
        out.dump()
    );
}

// ---------------------------------------------------------------------------
// (d) the command surface

#[test]
fn help_lists_every_contract_command() {
    let help = wavemap_e2e::run_agent(["--help"], None, &[]);
    assert_eq!(help.code, 0, "{}", help.dump());
    for command in [
        "daemon",
        "status",
        "config",
        "runtime-config",
        "runtime-env",
        "runtime",
        "database",
        "media",
    ] {
        assert!(
            help.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "`{command}` missing from --help\n{}",
            help.stdout
        );
    }
    for (group, subcommands) in [
        ("runtime-config", &["plan", "live"][..]),
        ("runtime", &["deploy", "record-release", "rollback"][..]),
        ("database", &["status", "migrate", "reset"][..]),
        ("media", &["discrepancy-report"][..]),
        ("config", &["check"][..]),
    ] {
        let out = wavemap_e2e::run_agent([group, "--help"], None, &[]);
        assert_eq!(out.code, 0, "{group} --help: {}", out.dump());
        for sub in subcommands {
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
                "`{group} {sub}` missing from `{group} --help`\n{}",
                out.stdout
            );
        }
    }
    let deploy = wavemap_e2e::run_agent(["runtime", "deploy", "--help"], None, &[]);
    for flag in ["--backend-image", "--frontend-image", "--execute"] {
        assert!(deploy.stdout.contains(flag), "deploy --help lacks {flag}");
    }
}

/// Every command, on a host with nothing deployed and no parameters, exits
/// with the contract's code for that situation and says why in the
/// `WAVEMAP_AGENT_ERROR` marker and on stderr. Never a panic.
#[test]
fn every_command_on_an_empty_host_exits_with_its_contract_code() {
    let dir = TestDir::new("surface");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let image = |name: &str| format!("{}/{name}:sha-{sha}", stack().registry);
    let backend = image(&unique_name("absent-backend"));
    let frontend = image(&unique_name("absent-frontend"));
    let deploy = release_args("deploy", &backend, &frontend, sha, "e2e-1");
    let record = release_args("record-release", &backend, &frontend, sha, "e2e-1");
    let missing = dir.path().join("no-such-migrations");
    let missing = missing.to_str().expect("utf-8 path");
    let db_url = "postgres://nobody:wrong@127.0.0.1:1/none";
    let db = |sub: &'static str| {
        vec![
            "database",
            sub,
            "--migrations-dir",
            missing,
            "--database-url",
            db_url,
        ]
    };
    let invocations: Vec<(Vec<&str>, i32)> = vec![
        // Read-only, or a dry run with nothing declared: done.
        (vec!["status"], 0),
        (vec!["runtime-config", "plan"], 0),
        (vec!["runtime-config", "live"], 0),
        // An SSM tree with no parameter: the empty-render guard, dry run or not.
        (vec!["runtime-env"], 3),
        // No Compose file where runtime.compose_file points: invalid config.
        (deploy.iter().map(String::as_str).collect(), 2),
        // Nothing runs, so nothing may be recorded.
        (record.iter().map(String::as_str).collect(), 3),
        // No receipt: nothing to do by design.
        (vec!["runtime", "rollback"], 4),
        // No release, so no release repositories: nothing to prune, done.
        (vec!["runtime", "prune"], 0),
        (vec!["runtime", "prune", "--execute"], 0),
        // No migrations folder: invalid input.
        (db("status"), 2),
        (db("migrate"), 2),
        // reset runs the image's own migrations: --migrations-dir is refused.
        (db("reset"), 2),
        // Dry runs that only print what would run.
        (vec!["database", "reset", "--database-url", db_url], 0),
        (vec!["media", "discrepancy-report"], 0),
    ];
    let mut report = String::new();
    let mut wrong = 0;
    for (args, expected) in invocations {
        let (out, _) = finish(spawn(&dir, &args), Duration::from_secs(180));
        let shown = args.join(" ");
        let error = out.marker("WAVEMAP_AGENT_ERROR").unwrap_or("-").to_owned();
        report.push_str(&format!("`{shown}`: exit {} ({error})\n", out.code));
        let exit_marker = out.marker("WAVEMAP_AGENT_EXIT_CODE");
        let right = out.code == expected
            && exit_marker == Some(expected.to_string().as_str())
            && (expected == 0) == (error == "-")
            && (expected == 0 || !out.stderr.trim().is_empty());
        if !right {
            wrong += 1;
            report.push_str(&format!("  expected exit {expected}\n{}\n", out.dump()));
        }
    }
    assert_eq!(wrong, 0, "{report}");
}
