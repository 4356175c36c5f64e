//! Shared harness for the end-to-end tests.
//!
//! The tests run the real `wavemap-agent` binary as a child process against
//! the real services of the local stack (`scripts/stack/up`): dockerd, an
//! htpasswd-protected registry on 127.0.0.1:5000, moto (SSM + ECR) on
//! 127.0.0.1:5055 and PostgreSQL on 127.0.0.1:55432. The stack describes
//! itself in `.stack/env`; [`stack`] reads that file once.
//!
//! Tests share one dockerd, one moto and one PostgreSQL and run in parallel,
//! so everything a test creates there carries a [`unique_name`] (Compose
//! project, container, image repository, SSM prefix, database), and every
//! file the agent writes goes into the test's own [`TestDir`].
//!
//! This is test code: it panics with a message instead of returning errors.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use bollard::Docker;

/// Everything `scripts/stack/up` (and `scripts/stack/build-images`) wrote
/// into `.stack/env`. Image fields are empty until build-images exists.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Every KEY=VALUE of the file, for passing on to child processes.
    pub vars: BTreeMap<String, String>,
    /// `http://127.0.0.1:5055` (moto serves SSM and ECR on one port).
    pub ssm_endpoint: String,
    pub ecr_endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Superuser URL of the stack's PostgreSQL (`postgres://wavemap:...`).
    pub pg_url: String,
    /// `127.0.0.1:5000`
    pub registry: String,
    /// What moto's ECR token decodes to: `AWS` / `123456789012-auth-token`.
    pub registry_user: String,
    pub registry_password: String,
    /// A second registry user whose 2.5 KB password base64-encodes to text
    /// with `+` and `/` (only its first 72 bytes are checked: bcrypt).
    pub registry_long_user: String,
    pub registry_long_password: String,
    /// The Compose v2 binary (also the docker CLI plugin) and Debian's v1.
    pub compose_v2: PathBuf,
    pub compose_v1: PathBuf,
    /// Test images pushed to the registry by build-images (`sha-<40 hex>` tags).
    pub backend_image_a: String,
    pub backend_image_b: String,
    pub frontend_image_a: String,
    pub frontend_image_b: String,
    pub sha_a: String,
    pub sha_b: String,
    pub postgres_image: String,
    pub busybox_image: String,
}

impl Stack {
    /// A value of `.stack/env` by key, or "" when absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or("")
    }

    /// Panics naming the missing key when a test needs the test images.
    pub fn require(&self, key: &str) -> &str {
        let value = self.var(key);
        assert!(
            !value.is_empty(),
            "{key} is not in {}: scripts/stack/build-images has not run (run scripts/stack/up)",
            env_file().display()
        );
        value
    }
}

/// The repository root (this crate lives in `<root>/tests`).
/// Keep a line of evidence for the `scripts/test` summary: cargo test shows
/// a passing test's output to nobody, so a test that measures or counts
/// something (crash points recovered, probe failures) also writes it to
/// `target/test-reports/<name>.txt`, which `scripts/test` prints at the end.
/// Best effort: a report that cannot be written fails nothing.
pub fn report_line(name: &str, text: &str) {
    let dir = repo_root().join("target/test-reports");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{text}\n"));
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent dir")
        .to_path_buf()
}

fn env_file() -> PathBuf {
    std::env::var_os("WAVEMAP_TEST_STACK_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".stack/env"))
}

/// The local stack, read once from `.stack/env`.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let path = env_file();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; run scripts/stack/up first (or scripts/test, which does)",
                path.display()
            )
        });
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
            .collect();
        let get = |key: &str| -> String {
            vars.get(key).cloned().unwrap_or_else(|| {
                panic!(
                    "{key} is missing from {}; rerun scripts/stack/up",
                    path.display()
                )
            })
        };
        let opt = |key: &str| vars.get(key).cloned().unwrap_or_default();
        Stack {
            ssm_endpoint: get("AWS_ENDPOINT_URL_SSM"),
            ecr_endpoint: get("AWS_ENDPOINT_URL_ECR"),
            region: get("AWS_REGION"),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            pg_url: get("WAVEMAP_TEST_PG_URL"),
            registry: get("WAVEMAP_TEST_REGISTRY"),
            registry_user: get("WAVEMAP_TEST_REGISTRY_USER"),
            registry_password: get("WAVEMAP_TEST_REGISTRY_PASSWORD"),
            registry_long_user: get("WAVEMAP_TEST_REGISTRY_LONG_USER"),
            registry_long_password: get("WAVEMAP_TEST_REGISTRY_LONG_PASSWORD"),
            compose_v2: get("WAVEMAP_TEST_COMPOSE_V2").into(),
            compose_v1: get("WAVEMAP_TEST_COMPOSE_V1").into(),
            backend_image_a: opt("WAVEMAP_TEST_BACKEND_IMAGE_A"),
            backend_image_b: opt("WAVEMAP_TEST_BACKEND_IMAGE_B"),
            frontend_image_a: opt("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
            frontend_image_b: opt("WAVEMAP_TEST_FRONTEND_IMAGE_B"),
            sha_a: opt("WAVEMAP_TEST_SHA_A"),
            sha_b: opt("WAVEMAP_TEST_SHA_B"),
            postgres_image: opt("WAVEMAP_TEST_POSTGRES_IMAGE"),
            busybox_image: opt("WAVEMAP_TEST_BUSYBOX_IMAGE"),
            vars,
        }
    })
}

/// A name for per-test resources on shared services: lowercase, safe as a
/// Compose project, container, image repository, database or SSM path
/// segment, and different for every call (pid + counter + clock).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    format!(
        "wme2e-{clean}-{}-{n}-{:x}",
        std::process::id(),
        nanos % 0xfffff
    )
}

/// `target/debug/wavemap-agent` (scripts/test builds it before the tests).
pub fn agent_bin() -> PathBuf {
    let path = std::env::var_os("WAVEMAP_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/wavemap-agent"));
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build -p wavemap-agent` (scripts/test does)",
        path.display()
    );
    path
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// What one agent run left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The value of marker `KEY=value` on stdout (the last one wins).
    pub fn marker(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    /// For assertion messages: everything the run printed.
    pub fn dump(&self) -> String {
        format!(
            "exit code {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<std::process::Output> for Output {
    fn from(o: std::process::Output) -> Self {
        Output {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A `Command` for the agent with the stack's AWS variables set (so the SDK
/// talks to moto) and nothing inherited that could point it elsewhere.
/// `config` is passed as `--config`. Use this to spawn long-running runs.
pub fn agent_command(config: Option<&Path>) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.env_remove("WAVEMAP_AGENT_CONFIG")
        .env_remove("AWS_PROFILE")
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null());
    for (k, v) in &stack().vars {
        if k.starts_with("AWS_") {
            cmd.env(k, v);
        }
    }
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd
}

/// Run the agent to completion and capture stdout, stderr and exit code.
pub fn run_agent<I, S>(args: I, config: Option<&Path>, extra_env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = agent_command(config);
    cmd.args(args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", agent_bin().display()))
        .into()
}

/// The arguments of `runtime <verb>` (`deploy`, `record-release`) for an
/// image pair: the one place tests spell the release flags. Add
/// `--execute` with [`with_execute`].
pub fn release_args(
    verb: &str,
    backend: &str,
    frontend: &str,
    sha: &str,
    version: &str,
) -> Vec<String> {
    [
        "runtime",
        verb,
        "--backend-image",
        backend,
        "--frontend-image",
        frontend,
        "--source-sha",
        sha,
        "--deployment-version",
        version,
        "--selected-ref",
        "develop",
    ]
    .map(String::from)
    .to_vec()
}

/// `args` with `--execute` appended.
pub fn with_execute(mut args: Vec<String>) -> Vec<String> {
    args.push("--execute".into());
    args
}

/// The permission bits of `path` (setuid, setgid and sticky included, so a
/// stray special bit fails an exact comparison), following symlinks.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// TOML text for a string value.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A temp dir that holds every path the agent writes, plus an `agent.toml`
/// pointing those paths into it and every endpoint at the stack.
///
/// Each test gets its own Compose project name and SSM prefix
/// ([`TestDir::name`]). Change keys with [`TestDir::set`] (the file is
/// rewritten at once); [`TestDir::write_config`] writes raw text.
pub struct TestDir {
    dir: tempfile::TempDir,
    /// Unique per test: the Compose project name; also in the SSM prefix.
    pub name: String,
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl TestDir {
    pub fn new(prefix: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wavemap-e2e-{prefix}-"))
            .tempdir()
            .expect("create temp dir");
        let name = unique_name(prefix).replace('-', "_");
        let root = dir.path().to_path_buf();
        let p = |rel: &str| toml_str(&root.join(rel).display().to_string());
        let s = stack();
        let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut set = |section: &str, key: &str, value: String| {
            sections
                .entry(section.to_owned())
                .or_default()
                .insert(key.to_owned(), value);
        };
        set("agent", "state_dir", p("state"));
        set("agent", "run_dir", p("run"));
        set("agent", "lock_timeout", "30".into());
        set("aws", "region", toml_str(&s.region));
        set("aws", "ssm_endpoint", toml_str(&s.ssm_endpoint));
        set("aws", "ecr_endpoint", toml_str(&s.ecr_endpoint));
        // moto answers 500 now and then under concurrent writes; retry like AWS.
        set("aws", "max_attempts", "6".into());
        set("aws", "operation_timeout", "20".into());
        set("aws", "attempt_timeout", "5".into());
        set("docker", "connect_wait", "5".into());
        // The stack's registry stands in for the host account's ECR: it is
        // allowed without listing and gets moto's ECR token.
        set("aws", "test_ecr_registry_alias", toml_str(&s.registry));
        set("runtime", "compose_file", p("runtime/compose.yaml"));
        set("runtime", "env_dir", p("runtime/env"));
        set("runtime", "project_name", toml_str(&name));
        set(
            "runtime",
            "parameter_prefix",
            toml_str(&format!("/wavemap-e2e/{name}/runtime/")),
        );
        set("runtime", "health_timeout", "90".into());
        set("runtime", "pull_timeout", "120".into());
        set(
            "receipt",
            "path",
            p("deployment/last-successful-runtime-release.json"),
        );
        set("jobs", "timeout", "120".into());
        set("daemon", "docker_wait", "10".into());
        set("daemon", "ssm_wait", "10".into());
        // Tests build their next pairs on the host before deploying them (a
        // real host pulls at deploy); the prune after record-release would
        // remove those, so it is on only where a test turns it on
        // (tests/tests/images.rs).
        set("images", "prune_after_record", "false".into());
        let test_dir = TestDir {
            dir,
            name,
            sections,
        };
        test_dir.write_sections();
        test_dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.path().join("agent.toml")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.path().join("run")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.run_dir().join("agent.lock")
    }
    pub fn journal_path(&self) -> PathBuf {
        self.state_dir().join("operations.jsonl")
    }
    pub fn env_dir(&self) -> PathBuf {
        self.path().join("runtime/env")
    }
    pub fn compose_file(&self) -> PathBuf {
        self.path().join("runtime/compose.yaml")
    }
    pub fn receipt_path(&self) -> PathBuf {
        self.path()
            .join("deployment/last-successful-runtime-release.json")
    }
    /// The SSM prefix this test's parameters live under (ends with `/`).
    pub fn parameter_prefix(&self) -> String {
        format!("/wavemap-e2e/{}/runtime/", self.name)
    }

    /// Set `[section] key = value` (value is TOML text: use [`toml_str`]
    /// for strings) and rewrite `agent.toml`.
    pub fn set(&mut self, section: &str, key: &str, toml_value: impl Into<String>) -> &mut Self {
        self.sections
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), toml_value.into());
        self.write_sections();
        self
    }

    /// Replace `agent.toml` with raw text (for malformed-config tests).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write agent.toml");
    }

    fn write_sections(&self) {
        let mut text = String::from("# written by the wavemap-e2e harness\n");
        for (section, keys) in &self.sections {
            text.push_str(&format!("\n[{section}]\n"));
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        self.write_config(&text);
    }

    /// Run the agent with this dir's config.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_agent(args, Some(&self.config_path()), &[])
    }

    /// A `Command` for the agent with this dir's config (to spawn).
    pub fn command(&self) -> Command {
        agent_command(Some(&self.config_path()))
    }
}

/// dockerd through bollard, API version negotiated (the engine here is
/// 20.10, older than bollard's default).
pub async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("connect to dockerd")
        .negotiate_version()
        .await
        .expect("dockerd answers (is the Docker Engine running?)")
}

/// Credentials of the stack registry's main user, for bollard calls.
pub fn registry_credentials() -> bollard::auth::DockerCredentials {
    let s = stack();
    bollard::auth::DockerCredentials {
        username: Some(s.registry_user.clone()),
        password: Some(s.registry_password.clone()),
        serveraddress: Some(s.registry.clone()),
        ..Default::default()
    }
}

/// Build an image on dockerd from a Dockerfile and files placed next to it
/// (`(name in the context, bytes)`), tagged `tag`; returns the image id.
/// Panics with the build output if the build fails.
pub async fn build_image(tag: &str, dockerfile: &str, files: &[(&str, Vec<u8>)]) -> String {
    use futures_util::StreamExt;

    let context = tempfile::tempdir().expect("context dir");
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    for (name, bytes) in files {
        let path = context.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create context subdir");
        }
        std::fs::write(&path, bytes).expect("write context file");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod context file");
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(context.path())
        .args(["-cf", "-", "."])
        .output()
        .expect("run tar");
    assert!(tar.status.success(), "tar failed");
    let docker = docker().await;
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut log = String::new();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.stdout.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info.stream {
                    log.push_str(&line);
                }
                if let Some(detail) = info.error_detail {
                    panic!("building {tag} failed: {detail:?}\n{log}");
                }
            }
            Err(e) => panic!("building {tag} failed: {e}\n{log}"),
        }
    }
    docker
        .inspect_image(tag)
        .await
        .unwrap_or_else(|e| panic!("built {tag} but cannot inspect it: {e}\n{log}"))
        .id
        .expect("image has an id")
}

/// Debian's static busybox (package busybox-static), for images built `FROM
/// scratch` without pulling anything.
pub fn busybox_binary() -> Vec<u8> {
    std::fs::read("/bin/busybox")
        .expect("read /bin/busybox (apt-get install busybox-static; scripts/stack/up does)")
}

/// AWS SDK config for moto: the stack's endpoint, region and test keys,
/// nothing read from the machine's profile or instance metadata.
pub async fn aws_config(endpoint: &str) -> aws_config::SdkConfig {
    let s = stack();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(s.region.clone()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            s.access_key_id.clone(),
            s.secret_access_key.clone(),
            None,
            None,
            "wavemap-e2e",
        ))
        .load()
        .await
}

/// SSM client talking to moto.
pub async fn ssm_client() -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&aws_config(&stack().ssm_endpoint).await)
}

/// ECR client talking to moto.
pub async fn ecr_client() -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::new(&aws_config(&stack().ecr_endpoint).await)
}

/// A superuser connection to the stack's PostgreSQL; the connection task
/// runs on the current tokio runtime.
pub async fn pg_client() -> tokio_postgres::Client {
    pg_connect(&stack().pg_url).await
}

/// Connect to `url` (see [`pg_client`]).
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to PostgreSQL: {e} (run scripts/stack/up)"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Create a fresh database for one test; returns its URL (same superuser).
pub async fn pg_fresh_database(prefix: &str) -> String {
    let name = unique_name(prefix).replace('-', "_");
    pg_client()
        .await
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    let base = stack()
        .pg_url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .expect("pg url has a database part");
    format!("{base}/{name}")
}

/// Fault-injecting proxies (HTTP in front of moto, unix socket in front of
/// dockerd) for the fault tests (issue 10).
pub mod faultproxy;

/// The production-shaped Compose project (`tests/fixtures/runtime`) for one
/// [`TestDir`]: the compose file written with the stack's postgres image
/// and a free loopback port for the frontend ([`RuntimeProject::frontend_port`]),
/// the SSM parameters its env files need seeded under the test's prefix
/// (the database password as a SecureString), and `docker compose down -v`
/// when dropped.
pub struct RuntimeProject {
    pub name: String,
    pub db_password: String,
    /// The frontend's published port on 127.0.0.1.
    pub frontend_port: u16,
}

impl RuntimeProject {
    pub async fn new(td: &TestDir) -> RuntimeProject {
        let s = stack();
        let fixture = repo_root().join("tests/fixtures/runtime/compose.yaml");
        let text = std::fs::read_to_string(&fixture)
            .expect("compose fixture")
            .replace("${WAVEMAP_POSTGRES_IMAGE}", &s.postgres_image);
        // Free now; the Engine binds it when the frontend starts.
        let frontend_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let text = text.replace("${WAVEMAP_FRONTEND_PORT:-}", &frontend_port.to_string());
        std::fs::create_dir_all(td.compose_file().parent().expect("dir")).expect("mkdir");
        std::fs::write(td.compose_file(), text).expect("write compose file");
        let db_password = format!("pw-{}-Zq9", td.name);
        let url = format!("postgres://wavemap:{db_password}@postgres:5432/wavemap");
        let ssm = ssm_client().await;
        for (name, value, secure) in [
            ("postgres/POSTGRES_USER", "wavemap", false),
            ("postgres/POSTGRES_DB", "wavemap", false),
            ("postgres/POSTGRES_PASSWORD", db_password.as_str(), true),
            ("backend/DATABASE_URL", url.as_str(), true),
            ("backend/APP_ORIGIN", "https://dev.wavemap.app", false),
            (
                "frontend/PUBLIC_API_ORIGIN",
                "https://dev.wavemap.app/api",
                false,
            ),
        ] {
            ssm.put_parameter()
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
        RuntimeProject {
            name: td.name.clone(),
            db_password,
            frontend_port,
        }
    }

    /// `Config.Image` and id of the service's container (`("", "")` if none).
    pub async fn container(&self, service: &str) -> (String, String) {
        match docker()
            .await
            .inspect_container(
                &format!("{}-{service}-1", self.name),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(info) => (
                info.config.and_then(|c| c.image).unwrap_or_default(),
                info.id.unwrap_or_default(),
            ),
            Err(_) => (String::new(), String::new()),
        }
    }
}

impl Drop for RuntimeProject {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args([
                "compose",
                "-p",
                &self.name,
                "down",
                "-v",
                "--remove-orphans",
                "-t",
                "1",
            ])
            .output();
    }
}

/// What a container's `Config.Image` is once the agent ran `uri`: the agent
/// pins each image to the repo digest it pulled, so `uri`'s repository at
/// the manifest digest the stack registry holds for `uri`'s tag now (asked
/// of the registry with curl, not of the agent).
pub async fn pinned(uri: &str) -> String {
    let (repo, digest) = registry_digest(uri);
    format!("{repo}@{digest}")
}

/// `(repository, manifest digest)` of the tag `uri` names in the stack
/// registry (`Docker-Content-Digest` of a HEAD on the manifest).
pub fn registry_digest(uri: &str) -> (String, String) {
    let s = stack();
    let (repo, tag) = uri
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .expect("image uri has a tag");
    let (host, path) = repo.split_once('/').expect("image uri has a registry");
    let out = Command::new("curl")
        .args(["-sfI", "-u"])
        .arg(format!("{}:{}", s.registry_user, s.registry_password))
        .args([
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.docker.distribution.manifest.list.v2+json, \
             application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        ])
        .arg(format!("http://{host}/v2/{path}/manifests/{tag}"))
        .output()
        .expect("run curl");
    let head = String::from_utf8_lossy(&out.stdout);
    let digest = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("the registry has no manifest for {uri}:\n{head}"));
    (repo.to_owned(), digest)
}

/// Copy `image` into a repository unique to this test and drop the local
/// tag, so a deploy of the copy must log in to ECR and pull.
pub fn private_copy(image: &str, repo_prefix: &str) -> String {
    let s = stack();
    let (name, tag) = image.rsplit_once(':').expect("image has a tag");
    let service = name.rsplit('/').next().expect("repository name");
    let copy = format!("{}/{repo_prefix}/{service}:{tag}", s.registry);
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
    docker_cli(&["tag", image, &copy], None);
    docker_cli(&["push", &copy], None);
    docker_cli(&["rmi", &copy], None);
    copy
}

pub fn docker_cli(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
