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
//!
//! Errors name the line, the column and the key path, never the line's
//! text, which may hold a password (`locate.rs`).
//!
//! This file loads and cross-checks the whole file; `sections.rs` holds the
//! sections and their defaults, `smoke.rs` the `[smoke]` checks, `values.rs`
//! the typed values.

use std::path::{Path, PathBuf};

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

mod locate;
mod sections;
mod smoke;
mod values;

pub use sections::*;
pub use smoke::*;
pub use values::*;

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
    pub images: ImagesConfig,
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
        // Never `e.to_string()`: toml's Display quotes the source line, and
        // that line may hold a password (locate.rs).
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: locate::describe(text, &e),
        })?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, problem, fix } => {
                let key = match locate::find_key(text, &key) {
                    Some((line, column)) => format!("{key} (line {line}, column {column})"),
                    None => key,
                };
                ConfigError::Invalid { key, problem, fix }
            }
            other => other,
        })?;
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
        if let Some(account) = &self.aws.account_id {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    "aws.account_id",
                    format!("{account:?} is not an AWS account id"),
                    "use the host's 12-digit account id, or leave it out to read it from instance metadata",
                ));
            }
        }
        if let Some(alias) = &self.aws.test_ecr_registry_alias {
            if !is_registry_host(alias) {
                return Err(invalid(
                    "aws.test_ecr_registry_alias",
                    format!("{alias:?} is not a registry host"),
                    "use HOST:PORT of the test registry (this key is for test stacks only)",
                ));
            }
        }
        for (i, registry) in self.docker.allowed_registries.iter().enumerate() {
            if registry.contains('*') {
                return Err(invalid(
                    &format!("docker.allowed_registries[{i}]"),
                    format!("{registry:?} is a wildcard; a wildcard over ECR hosts admits every AWS account"),
                    "list each registry host exactly; the host account's ECR in aws.region is allowed without listing",
                ));
            }
            if !is_registry_host(registry) {
                return Err(invalid(
                    &format!("docker.allowed_registries[{i}]"),
                    format!("{registry:?} is not a registry host"),
                    "write HOST or HOST:PORT, for example \"ghcr.io\"",
                ));
            }
        }
        let prefix = &self.runtime.parameter_prefix;
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.contains("//") {
            return Err(invalid(
                "runtime.parameter_prefix",
                format!("{prefix:?} is not an SSM path prefix"),
                "use a path that starts and ends with '/', such as \"/wavemap/dev/runtime/\"",
            ));
        }
        if self.images.keep > IMAGES_HISTORY_MAX {
            return Err(invalid(
                "images.keep",
                format!("{} is more than the deploy history holds", self.images.keep),
                &format!("use a number from 0 to {IMAGES_HISTORY_MAX}"),
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
    fn a_duplicated_database_url_names_line_and_key_but_not_the_password() {
        let e = err("[database]\nurl = \"postgres://app:Hunter2Secret@db/app\"\nurl = \"host=db password=Hunter2Secret\"\n");
        assert!(!e.contains("Hunter2Secret"), "{e}");
        assert!(e.contains("line 3") && e.contains("database.url"), "{e}");
        let e = err("[database]\nurl = 5\n");
        assert!(
            e.contains("line 2, column") && e.contains("database.url"),
            "{e}"
        );
        let e = err("[database]\nurl = \"postgres://app:Hunter2Secret@db/app\nport = 1\n");
        assert!(!e.contains("Hunter2Secret"), "{e}");
    }

    #[test]
    fn validation_errors_name_the_line() {
        let e = err("[aws]\nregion = \"US\"\n");
        assert!(e.contains("aws.region (line 2, column 1)"), "{e}");
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
    fn registry_keys_are_checked() {
        let e = err("[docker]\nallowed_registries = [\"*.dkr.ecr.us-east-2.amazonaws.com\"]\n");
        assert!(
            e.contains("docker.allowed_registries[0]") && e.contains("wildcard"),
            "{e}"
        );
        let e = err("[aws]\naccount_id = \"12345\"\n");
        assert!(e.contains("aws.account_id"), "{e}");
        let e = err("[aws]\ntest_ecr_registry_alias = \"not a host\"\n");
        assert!(e.contains("aws.test_ecr_registry_alias"), "{e}");
        let c = Config::parse("[aws]\naccount_id = \"123456789012\"\n[docker]\nallowed_registries = [\"ghcr.io\", \"127.0.0.1:5000\"]\n", "t").unwrap();
        assert_eq!(c.aws.account_id.as_deref(), Some("123456789012"));
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

    #[test]
    fn images_section_has_defaults_and_bounds_keep() {
        let c = Config::parse("", "test").unwrap();
        assert_eq!(
            (
                c.images.keep,
                c.images.prune_after_record,
                c.images.min_free_mb
            ),
            (1, true, 2048)
        );
        let e = err("[images]\nkeep = 51\n");
        assert!(e.contains("images.keep") && e.contains("0 to 50"), "{e}");
        let e = err("[images]\nmin_free = 1\n");
        assert!(e.contains("min_free"), "{e}");
    }
}
