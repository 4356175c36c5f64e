//! The typed, normalized project: what the loader produces and what the
//! hash, the plan and the converge read.
//!
//! "Normalized" means the shape compose-go gives a service after loading
//! (short syntax expanded, env files merged into `environment`, relative
//! paths made absolute, the implicit `default` network added), because the
//! config-hash is computed over that shape. Maps are `BTreeMap` since Go's
//! `encoding/json` writes map keys sorted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A loaded Compose project with an explicit name.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    /// Directory of the compose file; relative paths resolve against it.
    pub working_dir: PathBuf,
    /// Absolute path(s) of the compose file(s), for the Compose labels.
    pub config_files: Vec<PathBuf>,
    /// Services in file order.
    pub services: Vec<Service>,
    /// Top-level volumes by their key in the file.
    pub volumes: BTreeMap<String, VolumeDef>,
    /// Top-level networks by their key in the file (`default` included when
    /// a service uses it).
    pub networks: BTreeMap<String, NetworkDef>,
    /// Upper bound on waiting for a dependency's condition during converge.
    pub dependency_wait: Duration,
}

impl Project {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// `<project>-<service>-1`: Compose's container name for number 1.
    pub fn container_name(&self, service: &str) -> String {
        format!("{}-{}-1", self.name, service)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub image: String,
    /// `None`: the image's; `Some(vec![])`: explicitly cleared.
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Effective environment: env files, then `environment` on top. `None`
    /// values are names without a value that resolved to nothing; Compose
    /// hashes them as `null` and does not pass them to the container.
    pub environment: BTreeMap<String, Option<String>>,
    /// Sorted `host=ip` entries (compose-go's canonical form).
    pub extra_hosts: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    pub labels: BTreeMap<String, String>,
    pub logging: Option<Logging>,
    /// `None` when `network_mode` is set.
    pub networks: Option<BTreeMap<String, Option<ServiceNetwork>>>,
    pub network_mode: Option<String>,
    pub ports: Vec<Port>,
    pub restart: Option<String>,
    pub stop_grace_period: Option<Duration>,
    pub user: Option<String>,
    pub volumes: Vec<VolumeMount>,
    pub working_dir: Option<String>,
    /// Dependencies by service name (excluded from the config-hash).
    pub depends_on: BTreeMap<String, Dependency>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub condition: Condition,
    /// Restart this service when the dependency is recreated.
    pub restart: bool,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `None` with `disable: true`.
    pub test: Option<Vec<String>>,
    pub timeout: Option<Duration>,
    pub interval: Option<Duration>,
    pub retries: Option<u64>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub disable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: Option<String>,
    pub target: u16,
    pub published: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub kind: MountKind,
    /// Volume key (for `Volume`) or absolute host path (for `Bind`).
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// `Some` when compose-go emits a `bind` object; the flag is
    /// `create_host_path` (short syntax sets it).
    pub bind: Option<bool>,
    /// `Some` when compose-go emits a `volume` object; the flag is `nocopy`.
    pub volume_nocopy: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDef {
    /// Engine name: `<project>_<key>` unless `name:` is set.
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub external: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub external: bool,
}
