//! The agent's one configuration file (`/etc/wavemap-agent/agent.toml`).
//!
//! Defaults describe the runbook's deployed dev (region us-east-2, prefix
//! `/wavemap/dev/runtime/`, the contract's host paths), so a stock host needs
//! no file at all. Every path, endpoint and timeout is a key here so tests
//! point the agent at temp dirs and loopback services.
//!
//! Parsing is strict: unknown keys are refused (`deny_unknown_fields`) and
//! values are typed ([`AbsPath`], [`HttpUrl`], [`Seconds`]) so the TOML
//! error carries the key, the line and the expected form.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/wavemap-agent/agent.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass --config or set WAVEMAP_AGENT_CONFIG")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {key}: {problem}; {fix}")]
    Invalid {
        key: String,
        problem: String,
        fix: String,
    },
}

/// An absolute filesystem path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AbsPath(PathBuf);

impl AbsPath {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AbsPath(path.into())
    }
    pub fn as_path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, part: impl AsRef<Path>) -> PathBuf {
        self.0.join(part)
    }
}

impl TryFrom<String> for AbsPath {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let path = PathBuf::from(&value);
        if !path.is_absolute() {
            return Err(format!(
                "expected an absolute path (starting with /), got {value:?}"
            ));
        }
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!("expected a path without `..`, got {value:?}"));
        }
        Ok(AbsPath(path))
    }
}

impl From<AbsPath> for String {
    fn from(value: AbsPath) -> String {
        value.0.display().to_string()
    }
}

impl AsRef<Path> for AbsPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// An `http://` or `https://` URL (endpoints of SSM, ECR, Docker over TCP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .ok_or_else(|| format!("expected an http:// or https:// URL, got {value:?}"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("expected a URL with a host, got {value:?}"));
        }
        Ok(HttpUrl(value))
    }
}

impl From<HttpUrl> for String {
    fn from(value: HttpUrl) -> String {
        value.0
    }
}

/// A whole number of seconds, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Seconds(u64);

impl Seconds {
    pub const fn new(secs: u64) -> Self {
        Seconds(secs)
    }
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Seconds {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, String> {
        if value == 0 || value > 86_400 {
            return Err(format!(
                "expected a number of seconds from 1 to 86400, got {value}"
            ));
        }
        Ok(Seconds(value))
    }
}

impl From<Seconds> for u64 {
    fn from(value: Seconds) -> u64 {
        value.0
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub aws: AwsConfig,
    pub docker: DockerConfig,
    pub runtime: RuntimeConfig,
    pub receipt: ReceiptConfig,
    pub database: DatabaseConfig,
    pub jobs: JobsConfig,
    pub daemon: DaemonConfig,
    pub smoke: SmokeConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Current release, operation journal, history.
    pub state_dir: AbsPath,
    /// Lock and daemon heartbeat.
    pub run_dir: AbsPath,
    /// How long a mutating command waits for the lock (`--lock-timeout`).
    pub lock_timeout: Seconds,
    /// The environment name; `database reset` asks for it as confirmation.
    pub environment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub region: String,
    /// Endpoint override for SSM; `AWS_ENDPOINT_URL_SSM` also works.
    pub ssm_endpoint: Option<HttpUrl>,
    /// Endpoint override for ECR; `AWS_ENDPOINT_URL_ECR` also works.
    pub ecr_endpoint: Option<HttpUrl>,
    /// Attempts per AWS call (standard retry mode, backoff on throttling).
    pub max_attempts: u32,
    /// Upper bound on one AWS operation including its retries.
    pub operation_timeout: Seconds,
    /// Upper bound on one attempt (a stalled connection ends here).
    pub attempt_timeout: Seconds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// `unix:///var/run/docker.sock` or `tcp://host:port`.
    pub host: String,
    /// Timeout of one Engine API request.
    pub request_timeout: Seconds,
    /// How long to wait for the Engine to answer before exit 69.
    pub connect_wait: Seconds,
    /// Registry hosts image URIs may name (`*.` matches one DNS label prefix).
    pub allowed_registries: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub compose_file: AbsPath,
    /// Compose project name; always set explicitly, never derived from a dir.
    pub project_name: String,
    pub env_dir: AbsPath,
    /// SSM prefix the env files are rendered from.
    pub parameter_prefix: String,
    /// Interpolation variables through which the images reach the Compose file.
    pub backend_image_variable: String,
    pub frontend_image_variable: String,
    /// Compose services that run the backend and frontend images.
    pub backend_service: String,
    pub frontend_service: String,
    /// Deadline for the project to become healthy after converge.
    pub health_timeout: Seconds,
    /// Deadline for pulling the image pair.
    pub pull_timeout: Seconds,
    /// Env groups (files) the contract knows.
    pub groups: Vec<String>,
    /// The parameter contract.
    pub parameters: Vec<ParameterSpec>,
    /// The contract as host bootstrap wrote it from the infrastructure
    /// outputs (JSON, see `ssm::ContractFile`); merged with `parameters`.
    /// A missing file is fine: then `parameters` is the whole contract.
    pub contract_file: AbsPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParameterType {
    String,
    SecureString,
}

impl fmt::Display for ParameterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParameterType::String => "String",
            ParameterType::SecureString => "SecureString",
        })
    }
}

/// One declared parameter: `<prefix><group>/<variable>` by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    /// Name relative to the prefix, for example `backend/DATABASE_URL`.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParameterType,
    #[serde(default = "yes")]
    pub required: bool,
    /// Env file (group) it lands in; defaults to the first path segment.
    pub group: Option<String>,
    /// Variable name; defaults to the last path segment.
    pub variable: Option<String>,
    /// A `NEXT_PUBLIC_*` variable is a build-time input of the frontend
    /// image; the render refuses one (exit 3) unless this says it is meant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_build_time: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiptConfig {
    pub path: AbsPath,
    /// How many earlier receipts are kept under `state_dir/receipts/`.
    pub history_limit: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Drizzle migrations folder inside the API image.
    pub migrations_path_in_image: AbsPath,
    pub migrations_schema: String,
    pub migrations_table: String,
    /// Connection string; when absent it is read from the rendered env.
    pub url: Option<String>,
    /// Env group and variable that hold the connection string.
    pub url_env_group: String,
    pub url_env_variable: String,
    pub connect_timeout: Seconds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Commands run inside the API container (argv, no shell).
    pub migrate_command: Vec<String>,
    pub base_seed_command: Vec<String>,
    pub dev_seed_command: Vec<String>,
    pub media_report_command: Vec<String>,
    /// Deadline of one job.
    pub timeout: Seconds,
    /// Last lines of each job shown on stderr (within the stderr budget;
    /// the full output goes to `state_dir/jobs/<operation-id>.log`).
    pub tail_lines: usize,
    /// Output lines matching this (case-insensitive substring) count as warnings.
    pub warning_pattern: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// How often the running daemon observes the project's health and
    /// checks it for drift.
    pub health_interval: Seconds,
    /// How long one recovery attempt waits for Docker before it counts as
    /// failed (and the next attempt follows after a backoff).
    pub docker_wait: Seconds,
    /// How long boot recovery keeps trying SSM before keeping the existing
    /// env files.
    pub ssm_wait: Seconds,
    /// READY=1 at the latest this long after start, with
    /// `STATUS=degraded: ...` when the release is not healthy yet; retries
    /// go on after it. Must stay below the unit's TimeoutStartSec (900 s),
    /// which also bounds boot recovery's wait for the operation lock.
    pub ready_timeout: Seconds,
    /// Longest pause between two recovery attempts (jittered exponential
    /// backoff from 2 s up to this).
    pub retry_max: Seconds,
    /// Converge drift and failed recoveries back to the current release.
    /// `false`: observe and report only.
    pub heal: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: AbsPath::new("/var/lib/wavemap-agent"),
            run_dir: AbsPath::new("/run/wavemap-agent"),
            lock_timeout: Seconds::new(600),
            environment: "dev".into(),
        }
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: "us-east-2".into(),
            ssm_endpoint: None,
            ecr_endpoint: None,
            max_attempts: 5,
            operation_timeout: Seconds::new(60),
            attempt_timeout: Seconds::new(15),
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: "unix:///var/run/docker.sock".into(),
            request_timeout: Seconds::new(120),
            connect_wait: Seconds::new(30),
            allowed_registries: vec!["*.dkr.ecr.us-east-2.amazonaws.com".into()],
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            compose_file: AbsPath::new("/opt/wavemap/runtime/compose.yaml"),
            project_name: "wavemap".into(),
            env_dir: AbsPath::new("/opt/wavemap/runtime/env"),
            parameter_prefix: "/wavemap/dev/runtime/".into(),
            backend_image_variable: "WAVEMAP_BACKEND_IMAGE".into(),
            frontend_image_variable: "WAVEMAP_FRONTEND_IMAGE".into(),
            backend_service: "api".into(),
            frontend_service: "frontend".into(),
            health_timeout: Seconds::new(300),
            pull_timeout: Seconds::new(900),
            groups: vec!["backend".into(), "frontend".into(), "postgres".into()],
            parameters: Vec::new(),
            contract_file: AbsPath::new("/etc/wavemap-agent/runtime-contract.json"),
        }
    }
}

impl Default for ReceiptConfig {
    fn default() -> Self {
        ReceiptConfig {
            path: AbsPath::new("/opt/wavemap/deployment/last-successful-runtime-release.json"),
            history_limit: 20,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            migrations_path_in_image: AbsPath::new("/app/drizzle"),
            migrations_schema: "drizzle".into(),
            migrations_table: "__drizzle_migrations".into(),
            url: None,
            url_env_group: "backend".into(),
            url_env_variable: "DATABASE_URL".into(),
            connect_timeout: Seconds::new(10),
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            migrate_command: vec!["node".into(), "dist/db/migrate.js".into()],
            base_seed_command: vec!["node".into(), "dist/db/seed-base.js".into()],
            dev_seed_command: vec!["node".into(), "dist/db/seed-dev.js".into()],
            media_report_command: vec!["node".into(), "dist/media/discrepancy-report.js".into()],
            timeout: Seconds::new(900),
            tail_lines: 15,
            warning_pattern: "warn".into(),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            health_interval: Seconds::new(30),
            docker_wait: Seconds::new(300),
            ssm_wait: Seconds::new(60),
            ready_timeout: Seconds::new(600),
            retry_max: Seconds::new(300),
            heal: true,
        }
    }
}

// --- [smoke]: the runbook's endpoint smoke, on the host -----------------------

/// The endpoint smoke `runtime smoke` and `runtime record-release` run:
/// GET requests through the frontend's published port on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmokeConfig {
    /// Address the published port is reached on.
    pub host: String,
    /// Host port; when unset, the port the running frontend container
    /// publishes (it must publish exactly one).
    pub port: Option<u16>,
    /// Seconds for one request.
    pub timeout: Seconds,
    /// Tries per check before it fails (one second apart).
    pub attempts: u32,
    /// The checks, in order; the runbook's three by default.
    pub checks: Vec<SmokeCheck>,
}

/// One smoke check: `GET path` must answer `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheck {
    /// Lowercase letters, digits and '-'; names the check in markers.
    pub name: String,
    pub path: String,
    pub status: u16,
}

impl Default for SmokeConfig {
    fn default() -> Self {
        let check = |name: &str, path: &str| SmokeCheck {
            name: name.into(),
            path: path.into(),
            status: 200,
        };
        SmokeConfig {
            host: "127.0.0.1".into(),
            port: None,
            timeout: Seconds::new(10),
            attempts: 3,
            checks: vec![
                // The frontend is reachable.
                check("ping", "/en/ping"),
                // The frontend's rewrite reaches the backend.
                check("health", "/api/v1/health"),
                // The backend reaches Postgres.
                check("ready", "/api/v1/ready"),
            ],
        }
    }
}

impl SmokeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, problem: String, fix: &str| ConfigError::Invalid {
            key,
            problem,
            fix: fix.to_owned(),
        };
        let host_ok = !self.host.is_empty()
            && self.host.len() <= 253
            && self
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
        if !host_ok {
            return Err(invalid(
                "smoke.host".into(),
                format!("{:?} is not a host name or IP address", self.host),
                "use an address such as \"127.0.0.1\"",
            ));
        }
        if self.port == Some(0) {
            return Err(invalid(
                "smoke.port".into(),
                "0 is not a port".into(),
                "use the frontend's published host port (1 to 65535), or leave it unset",
            ));
        }
        if !(1..=10).contains(&self.attempts) {
            return Err(invalid(
                "smoke.attempts".into(),
                format!("{} is out of range", self.attempts),
                "use a number from 1 to 10",
            ));
        }
        if self.checks.is_empty() {
            return Err(invalid(
                "smoke.checks".into(),
                "there are no checks".into(),
                "list at least one [[smoke.checks]], or remove the key for the runbook's three",
            ));
        }
        for (i, c) in self.checks.iter().enumerate() {
            let key = format!("smoke.checks[{i}]");
            let name_ok = !c.name.is_empty()
                && c.name.len() <= 32
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} cannot name a check", c.name),
                    "use 1 to 32 lowercase letters, digits and '-'",
                ));
            }
            if self.checks[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} names two checks", c.name),
                    "give every check its own name",
                ));
            }
            let path_ok = c.path.starts_with('/')
                && c.path.len() <= 512
                && c.path.bytes().all(|b| b.is_ascii_graphic());
            if !path_ok {
                return Err(invalid(
                    format!("{key}.path"),
                    format!("{:?} is not a request path", c.path),
                    "use a path that starts with '/' and has no spaces, such as \"/en/ping\"",
                ));
            }
            if !(100..=599).contains(&c.status) {
                return Err(invalid(
                    format!("{key}.status"),
                    format!("{} is not an HTTP status", c.status),
                    "use the status the path answers when it works, such as 200",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Load from `path`. A missing file at the default path means "all
    /// defaults"; a missing file that was asked for explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Config::parse(&text, &path.display().to_string())
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that need more than one value's type.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
            key: key.to_owned(),
            problem,
            fix: fix.to_owned(),
        };
        if self.aws.region.is_empty()
            || !self
                .aws
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "aws.region",
                format!("{:?} is not an AWS region name", self.aws.region),
                "use a region such as \"us-east-2\"",
            ));
        }
        if !(1..=10).contains(&self.aws.max_attempts) {
            return Err(invalid(
                "aws.max_attempts",
                format!("{} is out of range", self.aws.max_attempts),
                "use a number from 1 to 10",
            ));
        }
        let prefix = &self.runtime.parameter_prefix;
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.contains("//") {
            return Err(invalid(
                "runtime.parameter_prefix",
                format!("{prefix:?} is not an SSM path prefix"),
                "use a path that starts and ends with '/', such as \"/wavemap/dev/runtime/\"",
            ));
        }
        if !is_compose_project_name(&self.runtime.project_name) {
            return Err(invalid(
                "runtime.project_name",
                format!(
                    "{:?} is not a Compose project name",
                    self.runtime.project_name
                ),
                "use lowercase letters, digits, '-' and '_', starting with a letter or digit",
            ));
        }
        if !(self.docker.host.starts_with("unix:///") || self.docker.host.starts_with("tcp://")) {
            return Err(invalid(
                "docker.host",
                format!("{:?} is not a Docker host address", self.docker.host),
                "use unix:///var/run/docker.sock or tcp://HOST:PORT",
            ));
        }
        for (key, variable) in [
            (
                "runtime.backend_image_variable",
                &self.runtime.backend_image_variable,
            ),
            (
                "runtime.frontend_image_variable",
                &self.runtime.frontend_image_variable,
            ),
            ("database.url_env_variable", &self.database.url_env_variable),
        ] {
            if !is_env_name(variable) {
                return Err(invalid(
                    key,
                    format!("{variable:?} is not an environment variable name"),
                    "use letters, digits and '_', not starting with a digit",
                ));
            }
        }
        for (i, group) in self.runtime.groups.iter().enumerate() {
            if !is_group_name(group) {
                return Err(invalid(
                    &format!("runtime.groups[{i}]"),
                    format!("{group:?} cannot name an env file"),
                    "use letters, digits, '-' and '_' only",
                ));
            }
        }
        for (i, p) in self.runtime.parameters.iter().enumerate() {
            let key = format!("runtime.parameters[{i}] ({})", p.name);
            let segments: Vec<&str> = p.name.split('/').collect();
            if p.name.starts_with('/') || segments.iter().any(|s| s.is_empty() || *s == "..") {
                return Err(invalid(
                    &key,
                    "name must be relative to runtime.parameter_prefix".into(),
                    "write it as GROUP/VARIABLE, for example \"backend/DATABASE_URL\"",
                ));
            }
            let group = p.group.as_deref().unwrap_or(segments[0]);
            if !is_group_name(group) || !self.runtime.groups.iter().any(|g| g == group) {
                return Err(invalid(
                    &key,
                    format!("group {group:?} is not in runtime.groups"),
                    "add it to runtime.groups or set `group`",
                ));
            }
            let variable = p
                .variable
                .as_deref()
                .unwrap_or(segments.last().copied().unwrap_or_default());
            if !is_env_name(variable) {
                return Err(invalid(
                    &key,
                    format!("{variable:?} cannot be an environment variable name"),
                    "set `variable` to a name of letters, digits and '_'",
                ));
            }
        }
        for (key, argv) in [
            ("jobs.migrate_command", &self.jobs.migrate_command),
            ("jobs.base_seed_command", &self.jobs.base_seed_command),
            ("jobs.dev_seed_command", &self.jobs.dev_seed_command),
            ("jobs.media_report_command", &self.jobs.media_report_command),
        ] {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(invalid(
                    key,
                    "the command is empty".into(),
                    "give the argv as a list, for example [\"node\", \"dist/migrate.js\"]",
                ));
            }
        }
        self.smoke.validate()?;
        // The unit's TimeoutStartSec is 900 s: READY must come before it, or
        // systemd kills the daemon mid-recovery and counts a failed start.
        if !(1..=840).contains(&self.daemon.ready_timeout.get()) {
            return Err(invalid(
                "daemon.ready_timeout",
                format!("{}s is out of range", self.daemon.ready_timeout.get()),
                "use 1 to 840 seconds: READY must come before the unit's TimeoutStartSec=900",
            ));
        }
        if self.daemon.retry_max.get() == 0 || self.daemon.health_interval.get() == 0 {
            return Err(invalid(
                "daemon.retry_max / daemon.health_interval",
                "0 seconds would retry or poll without pause".into(),
                "use at least 1 second",
            ));
        }
        if self.agent.environment.is_empty() {
            return Err(invalid(
                "agent.environment",
                "the environment name is empty".into(),
                "set it to the environment this host runs, for example \"dev\"",
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `config check`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }

    // Paths the agent owns, derived from the configured folders.

    pub fn lock_path(&self) -> PathBuf {
        self.agent.run_dir.join("agent.lock")
    }
    pub fn heartbeat_path(&self) -> PathBuf {
        self.agent.run_dir.join("daemon-heartbeat.json")
    }
    pub fn journal_path(&self) -> PathBuf {
        self.agent.state_dir.join("operations.jsonl")
    }
    pub fn current_release_path(&self) -> PathBuf {
        self.agent.state_dir.join("current-release.json")
    }
    pub fn receipt_history_dir(&self) -> PathBuf {
        self.agent.state_dir.join("receipts")
    }
    pub fn database_status_path(&self) -> PathBuf {
        self.agent.state_dir.join("last-database-status.json")
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what a shell and Compose accept as a variable.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A name that is safe as a file name inside the env folder.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compose's rule: `^[a-z0-9][a-z0-9_-]*$`.
pub fn is_compose_project_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_deployed_dev_defaults() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.aws.region, "us-east-2");
        assert_eq!(c.runtime.parameter_prefix, "/wavemap/dev/runtime/");
        assert_eq!(
            c.receipt.path.to_string(),
            "/opt/wavemap/deployment/last-successful-runtime-release.json"
        );
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let e = err("[agent]\nstate_dir = \"/x\"\nbogus = 1\n");
        assert!(e.contains("bogus"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err("[agent]\nlock_timeout = \"ten\"\n");
        assert!(e.contains("lock_timeout"), "{e}");
    }

    #[test]
    fn relative_path_is_refused() {
        let e = err("[runtime]\nenv_dir = \"env\"\n");
        assert!(e.contains("env_dir") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn bad_url_is_refused() {
        let e = err("[aws]\nssm_endpoint = \"localhost:4566\"\n");
        assert!(e.contains("ssm_endpoint") && e.contains("http"), "{e}");
    }

    #[test]
    fn parameter_that_cannot_be_an_env_var_is_named() {
        let e = err("[[runtime.parameters]]\nname = \"backend/BAD-NAME\"\ntype = \"String\"\n");
        assert!(e.contains("BAD-NAME"), "{e}");
    }

    #[test]
    fn parameter_escaping_the_prefix_is_refused() {
        let e = err("[[runtime.parameters]]\nname = \"../etc/X\"\ntype = \"String\"\n");
        assert!(e.contains("../etc/X"), "{e}");
    }
}
