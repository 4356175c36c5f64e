//! The label keys Compose v2 reads, plus the agent's own two.
//!
//! `docker compose ps/logs/up` find a project's containers only through
//! these labels, so the agent writes exactly what Compose v2.40 writes
//! (checked with `docker inspect` on a project Compose created).

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const VERSION: &str = "com.docker.compose.version";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
pub const IMAGE: &str = "com.docker.compose.image";
pub const VOLUME: &str = "com.docker.compose.volume";
pub const NETWORK: &str = "com.docker.compose.network";

/// The Compose version whose hashing the agent reproduces; written to the
/// version label so `docker compose` sees a peer, not an older release.
pub const COMPOSE_VERSION: &str = "2.40.3";

/// Hash of the effective environment alone, so the plan can say `env`
/// rather than `config`. Compose ignores labels it does not know.
pub const AGENT_ENV_HASH: &str = "io.wavemap.agent.env-hash";
/// Hash of the service without its environment (same purpose).
pub const AGENT_BASE_HASH: &str = "io.wavemap.agent.base-hash";
