//! The runbook's operator paths, end to end (issue 20): the parameter
//! contract from infrastructure, on-host endpoint smoke, and repair runs
//! without CI metadata. Real dockerd, the local registry, moto and the
//! Compose project of `tests/fixtures/smoke` (the runtime project with the
//! frontend's port published on 127.0.0.1).
//!
//! The smoke paths need a frontend that rewrites `/api/...` to the backend
//! and a backend that answers `/api/v1/health` and `/api/v1/ready`. The
//! shared test images may predate that, so [`SmokePair`] builds this test
//! binary's own pair from the freshly built `fake-backend` (layered on the
//! stack's backend image, which carries its libraries), tagged in a
//! repository unique to the test and removed afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use wavemap_e2e::{
    build_image, docker_cli, release_args, repo_root, ssm_client, stack, with_execute,
    RuntimeProject, TestDir,
};

/// `target/debug/fake-backend`, which `cargo build --workspace` (and
/// `scripts/stack/build-images`) produce.
fn fake_backend_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug/fake-backend");
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build -p fake-backend` (scripts/test builds the workspace)",
        path.display()
    );
    path
}

/// An image pair that serves the runbook's smoke paths: the backend answers
/// `/api/v1/health` and `/api/v1/ready`, the frontend (`fake-backend
/// frontend`) serves `/en/ping` and forwards `/api/...` to `API_ORIGIN`.
/// Tagged `sha-<sha>` in a repository unique to the test, present locally
/// (so a deploy pulls nothing); removed on drop.
pub struct SmokePair {
    pub backend: String,
    pub frontend: String,
    pub sha: String,
}

impl SmokePair {
    /// The pair for `sha` (one of the stack's `WAVEMAP_TEST_SHA_*`), whose
    /// `/health` reports `version`.
    pub async fn build(repo: &str, sha: &str, version: &str) -> SmokePair {
        let s = stack();
        let base = s.require("WAVEMAP_TEST_BACKEND_IMAGE_A").to_owned();
        let present = Command::new("docker")
            .args(["image", "inspect", &base])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        if !present {
            docker_cli(
                &[
                    "login",
                    "-u",
                    &s.registry_user,
                    "--password-stdin",
                    &s.registry,
                ],
                Some(&s.registry_password),
            );
            docker_cli(&["pull", "-q", &base], None);
        }
        let binary = std::fs::read(fake_backend_binary()).expect("read fake-backend");
        let sha = sha.to_owned();
        let backend = format!("{}/{repo}/backend:sha-{sha}", s.registry);
        let frontend = format!("{}/{repo}/frontend:sha-{sha}", s.registry);
        build_image(
            &backend,
            &format!(
                "FROM {base}\nCOPY fake-backend /app/fake-backend\n\
                 ENV WAVEMAP_BUILD_VERSION={version}\nLABEL org.wavemap.test.version={version}\n"
            ),
            &[("fake-backend", binary.clone())],
        )
        .await;
        build_image(
            &frontend,
            &format!(
                "FROM {base}\nCOPY fake-backend /app/fake-backend\n\
                 ENV API_ORIGIN=http://api:8080 WAVEMAP_BUILD_VERSION={version}\n\
                 LABEL org.wavemap.test.version={version}\n\
                 CMD [\"/app/fake-backend\",\"frontend\"]\n"
            ),
            &[("fake-backend", binary)],
        )
        .await;
        // A deploy pulls its tags from the registry (and pins the digest it
        // holds), as on a real host where CI pushed them.
        docker_cli(
            &[
                "login",
                "-u",
                &s.registry_user,
                "--password-stdin",
                &s.registry,
            ],
            Some(&s.registry_password),
        );
        docker_cli(&["push", &backend], None);
        docker_cli(&["push", &frontend], None);
        SmokePair {
            backend,
            frontend,
            sha,
        }
    }

    /// `runtime <verb>` (`deploy`, `record-release`) for this pair.
    pub fn args(&self, verb: &str, version: &str) -> Vec<String> {
        release_args(verb, &self.backend, &self.frontend, &self.sha, version)
    }
}

impl Drop for SmokePair {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.backend, &self.frontend])
            .output();
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The host as bootstrap leaves it, with the smoke fixture: the runtime
/// parameters in moto, `frontend/API_ORIGIN` set to `api_origin`, and the
/// Compose file whose frontend publishes the returned port on 127.0.0.1.
pub async fn smoke_host(td: &TestDir, api_origin: &str) -> (RuntimeProject, u16) {
    let project = RuntimeProject::new(td).await;
    let port = free_port();
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/smoke/compose.yaml"))
        .expect("smoke fixture")
        .replace("${WAVEMAP_POSTGRES_IMAGE}", &stack().postgres_image)
        .replace("${WAVEMAP_SMOKE_PORT}", &port.to_string());
    std::fs::write(td.compose_file(), text).expect("write compose file");
    put_parameter(td, "frontend/API_ORIGIN", api_origin, false).await;
    (project, port)
}

async fn put_parameter(td: &TestDir, name: &str, value: &str, secure: bool) {
    ssm_client()
        .await
        .put_parameter()
        .name(format!("{}{name}", td.parameter_prefix()))
        .value(value)
        .r#type(if secure {
            aws_sdk_ssm::types::ParameterType::SecureString
        } else {
            aws_sdk_ssm::types::ParameterType::String
        })
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
}

/// A document's script run the way the SSM Agent runs it: `/bin/sh`, the
/// parameters as `SSM_<name>` (SSM passes every parameter, defaults
/// included), the agent with the test's config and the stack's AWS.
fn run_document(file: &str, params: &[(&str, &str)], td: &TestDir) -> wavemap_e2e::Output {
    let path = repo_root().join("ssm-documents").join(file);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read document"))
        .expect("JSON");
    let script: Vec<&str> = doc["mainSteps"][0]["inputs"]["runCommand"]
        .as_array()
        .expect("runCommand")
        .iter()
        .map(|l| l.as_str().expect("line"))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let script_path = dir.path().join("_script.sh");
    std::fs::write(&script_path, script.join("\n") + "\n").expect("write script");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    // Every declared parameter arrives, with its default when not given.
    for (name, p) in doc["parameters"].as_object().expect("parameters") {
        if let Some(default) = p.get("default").and_then(Value::as_str) {
            env.insert(format!("SSM_{name}"), default.to_owned());
        }
    }
    for (k, v) in params {
        env.insert(format!("SSM_{k}"), (*v).to_owned());
    }
    for (k, v) in &stack().vars {
        if k.starts_with("AWS_") {
            env.insert(k.clone(), v.clone());
        }
    }
    env.insert(
        "WAVEMAP_AGENT_BIN".into(),
        wavemap_e2e::agent_bin().display().to_string(),
    );
    // A pass-through in place of the systemd sandbox the documents run the
    // agent in (this machine need not run systemd; systemd.rs runs a
    // document through the real one).
    let sandbox = dir.path().join("sandbox");
    std::fs::write(&sandbox, "#!/bin/sh\nexec \"$@\"\n").expect("write sandbox");
    std::fs::set_permissions(
        &sandbox,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod sandbox");
    env.insert(
        "WAVEMAP_AGENT_SANDBOX".into(),
        sandbox.display().to_string(),
    );
    env.insert(
        "WAVEMAP_AGENT_CONFIG".into(),
        td.config_path().display().to_string(),
    );
    Command::new("/bin/sh")
        .arg(&script_path)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(&env)
        .stdin(Stdio::null())
        .output()
        .expect("run the document's script")
        .into()
}

fn assert_markers_only(out: &wavemap_e2e::Output) {
    for line in out.stdout.lines() {
        assert!(
            line.starts_with("WAVEMAP_") && line.contains('='),
            "stdout is markers only: {line:?}\n{}",
            out.dump()
        );
    }
}

fn contract_file(td: &TestDir, json: &str) -> PathBuf {
    let path = td.path().join("runtime-contract.json");
    std::fs::write(&path, json).expect("write contract file");
    path
}

fn set_contract_file(td: &mut TestDir, path: &Path) {
    td.set(
        "runtime",
        "contract_file",
        wavemap_e2e::toml_str(&path.display().to_string()),
    );
}

// ---------------------------------------------------------------------------
// Repair runs and on-host smoke on a healthy pair.

/// The runbook's local repair run: deploy and release-record by hand
/// through the documents, dry run first, with no workflow run. Smoke passes
/// on the healthy pair, the receipt is written with no workflow field, no
/// marker invents one, and `status` shows the release as manual.
#[tokio::test(flavor = "multi_thread")]
async fn a_repair_run_without_workflow_metadata_smokes_and_records_a_manual_receipt() {
    let mut td = TestDir::new("repair");
    let none = td.path().join("no-contract.json");
    set_contract_file(&mut td, &none);
    let pair = SmokePair::build(&td.name.replace('_', "-"), &stack().sha_a, "A").await;
    let (project, port) = smoke_host(&td, "http://api:8080").await;
    let secret = project.db_password.clone();
    let release = [
        ("BackendImage", pair.backend.as_str()),
        ("FrontendImage", pair.frontend.as_str()),
        ("SourceSha", pair.sha.as_str()),
        ("DeploymentVersion", "repair-1"),
    ];
    let with = |execute: &'static str| {
        let mut p = release.to_vec();
        p.push(("Execute", execute));
        p
    };

    // Dry run first, then the deploy.
    let out = run_document("wavemap-runtime-deploy.json", &with("false"), &td);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("planned"));
    let out = run_document("wavemap-runtime-deploy.json", &with("true"), &td);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("success"));
    assert_markers_only(&out);
    assert!(
        !out.stdout.contains("WORKFLOW") && !out.stdout.contains("SELECTED_REF"),
        "no marker invents CI metadata:\n{}",
        out.stdout
    );
    assert_eq!(
        project.container("frontend").await.0,
        wavemap_e2e::pinned(&pair.frontend).await
    );

    // The smoke on its own: three checks through the published port.
    let out = td.run(["runtime", "smoke"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_markers_only(&out);
    assert_eq!(out.marker("WAVEMAP_SMOKE_RESULT"), Some("passed"));
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(out.marker("WAVEMAP_SMOKE_BASE_URL"), Some(base.as_str()));
    assert_eq!(
        out.marker("WAVEMAP_SMOKE_CHECKS"),
        Some("ping,health,ready")
    );
    assert_eq!(out.marker("WAVEMAP_SMOKE_FAILED_CHECKS"), Some(""));
    for (check, path) in [
        ("PING", "/en/ping"),
        ("HEALTH", "/api/v1/health"),
        ("READY", "/api/v1/ready"),
    ] {
        let key = |f: &str| format!("WAVEMAP_SMOKE_CHECK_{check}_{f}");
        assert_eq!(out.marker(&key("PATH")), Some(path), "{}", out.dump());
        assert_eq!(out.marker(&key("STATUS")), Some("200"), "{}", out.dump());
        assert_eq!(out.marker(&key("RESULT")), Some("pass"), "{}", out.dump());
        let ms = out.marker(&key("MS")).expect("latency marker");
        assert!(ms.parse::<u64>().is_ok(), "{check} latency {ms:?}");
    }
    // Read-only: no lock, no journal entry.
    assert!(
        !std::fs::read_to_string(td.journal_path())
            .unwrap_or_default()
            .contains("runtime smoke"),
        "smoke is read-only and journals nothing"
    );

    // The port from the config instead of the container: the same answer;
    // a port nothing listens on fails every check, exit 3.
    td.set("smoke", "port", port.to_string());
    let out = td.run(["runtime", "smoke"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_SMOKE_BASE_URL"), Some(base.as_str()));
    td.set("smoke", "port", free_port().to_string());
    td.set("smoke", "attempts", "1");
    let out = td.run(["runtime", "smoke"]);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_SMOKE_FAILED_CHECKS"),
        Some("ping,health,ready")
    );
    assert_eq!(out.marker("WAVEMAP_SMOKE_CHECK_PING_STATUS"), Some("none"));
    td.set("smoke", "port", port.to_string());

    // Record: dry run, then for real, through the document.
    let out = run_document("wavemap-runtime-record-release.json", &with("false"), &td);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_RECEIPT_RESULT"),
        Some("planned")
    );
    assert_eq!(out.marker("WAVEMAP_SMOKE_RESULT"), Some("passed"));
    assert!(!td.receipt_path().exists(), "the dry run wrote a receipt");
    let out = run_document("wavemap-runtime-record-release.json", &with("true"), &td);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_markers_only(&out);
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_RECEIPT_RESULT"),
        Some("recorded")
    );
    assert_eq!(out.marker("WAVEMAP_SMOKE_RESULT"), Some("passed"));
    assert!(
        !out.stdout.contains("WORKFLOW") && !out.stdout.contains("SELECTED_REF"),
        "{}",
        out.stdout
    );
    let text = std::fs::read_to_string(td.receipt_path()).expect("receipt");
    let receipt: Value = serde_json::from_str(&text).expect("receipt is JSON");
    let keys: Vec<&str> = receipt
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec![
            "schemaVersion",
            "sourceSha",
            "imageTag",
            "backendImageUri",
            "frontendImageUri",
            "deploymentVersion",
            "backendDigest",
            "frontendDigest",
            "recordedAt"
        ],
        "a manual receipt has no workflow field and no selected ref (and names the digests): {text}"
    );
    assert_eq!(receipt["frontendImageUri"], pair.frontend.as_str());
    assert_eq!(receipt["deploymentVersion"], "repair-1");

    // status says who made it: nobody's workflow, a person.
    let out = td.run(["status"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let last_good = out
        .stdout
        .lines()
        .find(|l| l.starts_with("last-good"))
        .unwrap_or_else(|| panic!("no last-good line:\n{}", out.stdout));
    assert!(last_good.ends_with(" manual"), "{last_good}");
    let out = td.run(["status", "--json"]);
    let json: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(json["data"]["receipt"]["workflow"], "manual", "{json}");
    assert_eq!(
        json["data"]["current_release"]["workflow"], "manual",
        "{json}"
    );

    for text in [&out.stdout, &out.stderr, &text] {
        assert!(!text.contains(&secret), "secret leaked: {text}");
    }
}

/// A frontend whose API rewrite points at a host that does not exist: the
/// container is healthy, `/en/ping` answers, `/api/v1/health` does not.
/// Smoke and record-release exit 3 naming the check; no receipt is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_api_rewrite_fails_smoke_and_record_release_writes_no_receipt() {
    let mut td = TestDir::new("rewrite");
    let none = td.path().join("no-contract.json");
    set_contract_file(&mut td, &none);
    td.set("smoke", "attempts", "2");
    let pair = SmokePair::build(&td.name.replace('_', "-"), &stack().sha_a, "A").await;
    let (_project, port) = smoke_host(&td, "http://api-missing:8080").await;

    let deploy = with_execute(pair.args("deploy", "broken-1"));
    let out = td.run(&deploy);
    assert_eq!(out.code, 0, "the containers are healthy: {}", out.dump());
    let status = td.run(["status", "--json"]);
    let json: Value = serde_json::from_str(status.stdout.trim()).expect("JSON");
    let frontend = json["data"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == "frontend")
        .cloned()
        .unwrap_or_else(|| panic!("no frontend: {json}"));
    assert_eq!(frontend["health"], "healthy", "{frontend}");

    let out = td.run(["runtime", "smoke"]);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_markers_only(&out);
    assert_eq!(out.marker("WAVEMAP_AGENT_ERROR"), Some("gate-blocked"));
    assert_eq!(out.marker("WAVEMAP_SMOKE_RESULT"), Some("failed"));
    assert_eq!(
        out.marker("WAVEMAP_SMOKE_BASE_URL"),
        Some(format!("http://127.0.0.1:{port}").as_str())
    );
    assert_eq!(out.marker("WAVEMAP_SMOKE_CHECK_PING_STATUS"), Some("200"));
    assert_eq!(out.marker("WAVEMAP_SMOKE_CHECK_PING_RESULT"), Some("pass"));
    assert_eq!(out.marker("WAVEMAP_SMOKE_CHECK_HEALTH_STATUS"), Some("502"));
    assert_eq!(
        out.marker("WAVEMAP_SMOKE_CHECK_HEALTH_RESULT"),
        Some("fail")
    );
    assert!(
        out.marker("WAVEMAP_SMOKE_FAILED_CHECKS")
            .is_some_and(|f| f.split(',').any(|c| c == "health")),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr
            .contains("check health (GET /api/v1/health) answered 502"),
        "{}",
        out.dump()
    );

    let mut record = pair.args("record-release", "broken-1");
    let out = td.run(&record);
    assert_eq!(out.code, 3, "dry run: {}", out.dump());
    record.push("--execute".into());
    let out = td.run(&record);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_RECEIPT_RESULT"),
        Some("refused")
    );
    assert_eq!(out.marker("WAVEMAP_SMOKE_CHECK_HEALTH_STATUS"), Some("502"));
    assert!(out.stderr.contains("check health"), "{}", out.dump());
    assert!(!td.receipt_path().exists(), "a receipt was written");
    assert!(
        !td.state_dir().join("receipts").exists(),
        "receipt history was touched"
    );
}

// ---------------------------------------------------------------------------
// The parameter contract from infrastructure.

/// The contract file names a required SecureString that SSM does not hold:
/// `runtime-config live` and `runtime deploy` exit 3 naming it, and the
/// deploy writes no env file and starts nothing. Stored, it is ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_contract_file_with_a_missing_required_secret_blocks_live_and_deploy() {
    let s = stack();
    let mut td = TestDir::new("contract");
    let project = RuntimeProject::new(&td).await;
    let missing = format!("{}backend/SESSION_SECRET", td.parameter_prefix());
    let file = contract_file(
        &td,
        &format!(
            r#"{{
  "schemaVersion": 1,
  "parameters": [
    {{ "name": "{prefix}backend/DATABASE_URL", "type": "SecureString", "required": true }},
    {{ "name": "backend/SESSION_SECRET", "type": "SecureString", "required": true, "group": "backend", "variable": "SESSION_SECRET" }},
    {{ "name": "frontend/PUBLIC_API_ORIGIN", "type": "String", "required": false }}
  ]
}}
"#,
            prefix = td.parameter_prefix()
        ),
    );
    set_contract_file(&mut td, &file);

    let out = td.run(["config", "check"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_CONFIG_CONTRACT_FILE"),
        Some("loaded (3 entries)")
    );

    let out = td.run(["runtime-config", "plan"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_CONFIG_CONTRACT_FILE_STATE"),
        Some("loaded")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_CONFIG_FROM_FILE_COUNT"),
        Some("3")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_CONFIG_REQUIRED_COUNT"),
        Some("2")
    );
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("SESSION_SECRET"))
        .unwrap_or_else(|| panic!("plan does not list it:\n{}", out.stderr));
    assert!(line.contains("contract-file"), "{line}");

    let out = td.run(["runtime-config", "live"]);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_CONFIG_RESULT"), Some("blocked"));
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_CONFIG_MISSING_REQUIRED_COUNT"),
        Some("1")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_CONFIG_MISSING"),
        Some(missing.as_str())
    );
    assert!(out.stderr.contains(&missing), "{}", out.dump());

    let out = td.run(with_execute(release_args(
        "deploy",
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "contract-1",
    )));
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("env-render")
    );
    assert!(out.stderr.contains(&missing), "{}", out.dump());
    assert!(!td.env_dir().join("backend.env").exists(), "env written");
    assert_eq!(
        project.container("api").await,
        (String::new(), String::new())
    );

    // Stored in Parameter Store, the same contract is met.
    put_parameter(
        &td,
        "backend/SESSION_SECRET",
        "session-secret-Zq9-value",
        true,
    )
    .await;
    let out = td.run(["runtime-config", "live"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_CONFIG_RESULT"), Some("ready"));
    let out = td.run(["runtime-env", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    let backend = std::fs::read_to_string(td.env_dir().join("backend.env")).expect("backend.env");
    assert!(
        backend.contains("SESSION_SECRET='session-secret-Zq9-value'"),
        "{backend}"
    );
    assert!(!out.stdout.contains("session-secret-Zq9-value"));
    assert!(!out.stderr.contains("session-secret-Zq9-value"));
}

/// One name, two types: the contract file says SecureString, `agent.toml`
/// says String. Every command that reads the contract exits 2 naming both
/// sources, before anything is touched.
#[test]
fn conflicting_types_between_the_contract_file_and_agent_toml_exit_2() {
    let mut td = TestDir::new("conflict");
    let file = contract_file(
        &td,
        r#"{"schemaVersion": 1, "parameters": [{"name": "backend/DATABASE_URL", "type": "SecureString"}]}"#,
    );
    set_contract_file(&mut td, &file);
    td.set(
        "runtime",
        "parameters",
        r#"[{ name = "backend/DATABASE_URL", type = "String" }]"#,
    );
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let registry = &stack().registry;
    let backend = format!("{registry}/wavemap/backend:sha-{sha}");
    let frontend = format!("{registry}/wavemap/frontend:sha-{sha}");
    let deploy = with_execute(release_args("deploy", &backend, &frontend, sha, "v1"));
    for args in [
        vec!["config", "check"],
        vec!["runtime-config", "plan"],
        vec!["runtime-config", "live"],
        vec!["runtime-env", "--execute"],
        deploy.iter().map(String::as_str).collect(),
    ] {
        let out = td.run(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.dump());
        assert_eq!(
            out.marker("WAVEMAP_AGENT_ERROR"),
            Some("invalid-config"),
            "{args:?}"
        );
        assert!(
            out.stderr.contains(&file.display().to_string())
                && out.stderr.contains("SecureString")
                && out
                    .stderr
                    .contains("runtime.parameters[0] in agent.toml says String"),
            "{args:?} must name both sources: {}",
            out.dump()
        );
        assert!(!td.env_dir().exists(), "{args:?} touched the env folder");
    }
}
