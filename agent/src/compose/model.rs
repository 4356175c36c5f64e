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
    /// The project name: `runtime.project_name`, which wins over the file's
    /// `name:` the way `docker compose -p` does.
    pub name: String,
    /// The file's own top-level `name:`, when it sets one (shown by
    /// `compose config`; a different value only gets a warning).
    pub file_name: Option<String>,
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
    /// Top-level `secrets` by key: files (or variables) mounted read-only
    /// under `/run/secrets/`.
    pub secrets: BTreeMap<String, FileObject>,
    /// Top-level `configs` by key, mounted like secrets at `/<key>`.
    pub configs: BTreeMap<String, FileObject>,
    /// Upper bound on waiting for a dependency's condition during converge.
    pub dependency_wait: Duration,
}

impl Project {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The service's `container_name`, else `<project>-<service>-1`:
    /// Compose's container name for number 1.
    pub fn container_name(&self, service: &str) -> String {
        self.replica_name(service, 1)
    }

    /// Compose's name for replica `number` of `service`:
    /// `<project>-<service>-<number>`, or the `container_name` (which the
    /// loader allows only for a single replica).
    pub fn replica_name(&self, service: &str, number: u32) -> String {
        self.service(service)
            .and_then(|s| s.container_name.clone())
            .unwrap_or_else(|| format!("{}-{}-{number}", self.name, service))
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
    /// The `env_file` files read into `environment` (absolute; a missing
    /// optional one is left out). Not hashed: `docker compose up` hashes the
    /// merged environment, not the list.
    pub env_files: Vec<PathBuf>,
    /// `container_name`: a fixed name instead of `<project>-<service>-1`.
    pub container_name: Option<String>,
    /// `deploy.update_config.order`: how a changed container is replaced.
    pub update_order: UpdateOrder,
    /// `deploy.replicas` or `scale` when the file sets one (Compose leaves
    /// both out of the hash): how many containers the service runs.
    pub replicas: Option<u32>,
    /// Every other supported key, already in compose-go's normalized JSON
    /// form and keyed by its name in the file (`shm_size` as a byte count
    /// string, `dns` as a list, `deploy` without `replicas`...). The
    /// config-hash serializes these as they are, and [`super::create`] maps
    /// them onto the Engine's create body; one normalized value feeds both,
    /// so they cannot disagree.
    pub options: BTreeMap<String, serde_json::Value>,
}

impl Service {
    /// How many containers the service runs (`deploy.replicas`/`scale`,
    /// default 1), numbered 1..=N as Compose numbers them.
    pub fn scale(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }

    /// A normalized option as a string.
    pub fn option_str(&self, key: &str) -> Option<&str> {
        self.options.get(key).and_then(serde_json::Value::as_str)
    }

    /// A normalized option as a boolean (`false` when absent).
    pub fn option_bool(&self, key: &str) -> bool {
        self.options
            .get(key)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }

    /// A normalized list option as strings (empty when absent).
    pub fn option_strings(&self, key: &str) -> Vec<String> {
        self.options
            .get(key)
            .and_then(serde_json::Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A byte-size option (`mem_limit`, `shm_size`), which compose-go keeps
    /// as a decimal string of bytes.
    pub fn option_bytes(&self, key: &str) -> Option<i64> {
        self.option_str(key).and_then(|v| v.parse().ok())
    }

    /// `deploy.<path...>` as a JSON value.
    pub fn deploy_value(&self, path: &[&str]) -> Option<&serde_json::Value> {
        let mut value = self.options.get("deploy")?;
        for key in path {
            value = value.get(key)?;
        }
        Some(value)
    }
}

/// `deploy.update_config.order`. Compose v2 reads it only under Swarm, but
/// it is part of the config-hash; the agent uses it to choose between
/// stopping the old container first (the default) and starting the new one
/// first (needs a service with no fixed host port and no fixed name, since
/// both containers exist at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

impl UpdateOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
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
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub host_ip: Option<String>,
    pub target: u16,
    /// A host port, or a host range (`8000-8010`) for one target port.
    pub published: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `ingress` (the default) or `host`: on one host both publish the
    /// port the same way; the value is part of the config-hash.
    pub mode: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub kind: MountKind,
    /// Volume key (for `Volume`) or absolute host path (for `Bind`); empty
    /// for an anonymous volume (`- /app/node_modules`), which the Engine
    /// names and a recreate reattaches (see [`super::replace`]).
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// `Some` when compose-go emits a `bind` object; the flag is
    /// `create_host_path` (short syntax sets it).
    pub bind: Option<bool>,
    /// `Some` when compose-go emits a `volume` object; the flag is `nocopy`.
    pub volume_nocopy: Option<bool>,
    /// `bind.selinux`: `z` (shared) or `Z` (private) relabelling.
    pub selinux: Option<String>,
    /// `bind.propagation` (`rprivate`, `shared`...).
    pub propagation: Option<String>,
    /// Long syntax `consistency` (Docker Desktop only; kept for the hash).
    pub consistency: Option<String>,
    /// `volume.subpath`.
    pub subpath: Option<String>,
    /// `tmpfs.size` in bytes, for `Tmpfs`.
    pub tmpfs_size: Option<i64>,
    /// `tmpfs.mode` as a number (`0o1777` is 1023).
    pub tmpfs_mode: Option<u32>,
}

impl VolumeMount {
    /// A mount with only the required fields set.
    pub fn new(kind: MountKind, source: String, target: String) -> Self {
        VolumeMount {
            kind,
            source,
            target,
            read_only: false,
            bind: None,
            volume_nocopy: None,
            selinux: None,
            propagation: None,
            consistency: None,
            subpath: None,
            tmpfs_size: None,
            tmpfs_mode: None,
        }
    }
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
    /// `enable_ipv6` when the file sets it (compose-go keeps `false` too).
    pub enable_ipv6: Option<bool>,
    /// `ipam` in compose-go's JSON form (`driver`, `config` list with
    /// `subnet`, `gateway`, `ip_range`, `aux_addresses`), `{}` when unset.
    pub ipam: serde_json::Value,
}

/// A top-level secret or config: where its content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    /// `<project>_<key>` unless `name:` is set.
    pub name: String,
    pub source: FileSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// `file:`, made absolute: bind-mounted read-only.
    File(PathBuf),
    /// `environment:` (the value of that interpolation variable) or a
    /// config's `content:`: copied into the container before it starts,
    /// as Compose does.
    Inline(SecretText),
}

/// Text that may be secret: kept for the container, never shown by
/// `Debug` (a project can end up in a log or a test failure).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}
