//! The file's sections (`[agent]`, `[aws]`, `[docker]`, `[runtime]`,
//! `[receipt]`, `[database]`, `[jobs]`, `[daemon]`, `[images]`) and their defaults, which
//! describe the runbook's deployed dev. Why apart from loading: a reader
//! looking for a key and its default finds all of them here.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{AbsPath, HttpUrl, Seconds};

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
    /// The host's AWS account (12 digits). Its ECR in `region` is the
    /// registry the ECR token is for and the one allowed without listing.
    /// Absent: read from the instance identity document (IMDSv2) the first
    /// time an image needs it.
    pub account_id: Option<String>,
    /// Test seam, never set on a real host: this `host:port` counts as the
    /// host account's ECR (allowed, and sent the ECR token), so the local
    /// stack's registry can stand in for ECR.
    pub test_ecr_registry_alias: Option<String>,
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
    /// Registry hosts (`host[:port]`, exact, no wildcards) image URIs may
    /// name besides the host account's ECR in `aws.region`, which is always
    /// allowed. They never get the ECR token.
    pub allowed_registries: Vec<String>,
    /// A Docker `config.json` whose `auths` give credentials for registries
    /// in `allowed_registries`; a registry without an entry is pulled
    /// anonymously.
    pub auth_config: Option<AbsPath>,
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
            account_id: None,
            test_ecr_registry_alias: None,
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
            allowed_registries: Vec::new(),
            auth_config: None,
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

/// Pairs the deploy history remembers (`state_dir/deployed-pairs.json`);
/// `images.keep` may not exceed it.
pub const IMAGES_HISTORY_MAX: usize = 50;

/// `[images]`: what `runtime prune` keeps, and the free space a pull
/// must leave on Docker's data root.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// How many most recent deployed pairs, other than the current release
    /// and the last-good receipt, `runtime prune` keeps (for a quick
    /// redeploy without a pull).
    pub keep: usize,
    /// Prune after a successful `runtime record-release --execute`.
    pub prune_after_record: bool,
    /// A pull must leave at least this much free on Docker's data root
    /// (free minus twice the compressed size of the missing images), else
    /// the deploy is refused at `pull-preflight`; the daemon warns below it.
    /// 2048 MiB: room for PostgreSQL's WAL and logs on the same volume.
    pub min_free_mb: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            keep: 1,
            prune_after_record: true,
            min_free_mb: 2048,
        }
    }
}

// --- [smoke]: the runbook's endpoint smoke, on the host -----------------------
