//! What the daemon leaves for `status` and for people: the heartbeat
//! (run_dir/daemon-heartbeat.json), the boot recovery record
//! (state_dir/boot-recovery.json) and its entries in the operation journal
//! (`daemon boot recovery`, `daemon heal`). Every text is redacted before
//! it is written: a failure message can quote a URL or an env value.

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::config::Config;
use crate::error::{Error, Stage};
use crate::output::redact;
use crate::{fsutil, journal};

/// What the daemon is doing, as the heartbeat records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Starting,
    WaitingForDocker,
    Recovering,
    /// READY sent; the release runs as deployed (or there is none).
    Running,
    /// READY sent; the release is not running healthy and as deployed.
    Degraded,
    /// A heal (or a retry after READY) is converging the release.
    Healing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::WaitingForDocker => "waiting-for-docker",
            Phase::Recovering => "recovering",
            Phase::Running => "running",
            Phase::Degraded => "degraded",
            Phase::Healing => "healing",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How boot recovery ended (so far).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryResult {
    Recovered,
    #[default]
    Failed,
    NoRelease,
    /// The last gated command failed or was interrupted: nothing was done.
    Waiting,
}

impl RecoveryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryResult::Recovered => "recovered",
            RecoveryResult::Failed => "failed",
            RecoveryResult::NoRelease => "no-release",
            RecoveryResult::Waiting => "waiting",
        }
    }
}

impl std::fmt::Display for RecoveryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `status` reads to show the daemon (run_dir/daemon-heartbeat.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub pid: u32,
    pub updated_at: String,
    pub updated_unix: u64,
    pub phase: Phase,
    /// The last STATUS= line.
    pub summary: String,
}

/// Boot recovery (state_dir/boot-recovery.json), for `status`. Rewritten
/// after every attempt until the release runs healthy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootRecovery {
    pub started_at: String,
    pub result: RecoveryResult,
    pub to_docker_ms: Option<u64>,
    pub to_converged_ms: Option<u64>,
    pub to_healthy_ms: Option<u64>,
    pub release: Option<String>,
    pub env: String,
    pub detail: String,
    /// Attempts so far (1 when the first one worked).
    #[serde(default)]
    pub attempts: u32,
}

/// A `daemon heal` record in the operation journal (`start`, then `end`).
pub(super) fn journal_heal(
    config: &Config,
    event: &str,
    started_at: &str,
    outcome: Option<&str>,
    detail: &str,
    duration_ms: Option<u64>,
) {
    let mut details = serde_json::Map::new();
    if !detail.is_empty() {
        details.insert("detail".into(), redact(detail).into());
    }
    if let Some(outcome) = outcome {
        log::info!(operation = "heal"; "heal {outcome}: {}", redact(detail));
    }
    journal::append(
        &config.journal_path(),
        &journal::Entry {
            event: event.into(),
            command: "daemon heal".into(),
            args: vec![],
            pid: std::process::id(),
            started_at: started_at.to_owned(),
            ended_at: outcome.map(|_| clock::now()),
            outcome: outcome.map(str::to_owned),
            exit_code: None,
            duration_ms,
            details,
        },
    );
}

/// A `daemon drift` record in the operation journal: drift the daemon
/// reports and does not act on, or why it heals nothing now.
pub(super) fn journal_report(config: &Config, detail: &str) {
    let mut details = serde_json::Map::new();
    details.insert("detail".into(), redact(detail).into());
    let now = clock::now();
    journal::append(
        &config.journal_path(),
        &journal::Entry {
            // `end`: `status` lists it with the finished operations.
            event: "end".into(),
            command: "daemon drift".into(),
            args: vec![],
            pid: std::process::id(),
            started_at: now.clone(),
            ended_at: Some(now),
            outcome: Some("not-acted-on".into()),
            exit_code: None,
            duration_ms: None,
            details,
        },
    );
}

/// Journal and boot-recovery.json, redacted.
pub(super) fn finish(config: &Config, record: &BootRecovery) {
    let mut record = record.clone();
    record.detail = redact(&record.detail);
    record.env = redact(&record.env);
    let mut details = serde_json::Map::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&record) {
        details = map;
    }
    journal::append(
        &config.journal_path(),
        &journal::Entry {
            event: "end".into(),
            command: "daemon boot recovery".into(),
            args: vec![],
            pid: std::process::id(),
            started_at: record.started_at.clone(),
            ended_at: Some(clock::now()),
            outcome: Some(record.result.as_str().into()),
            exit_code: None,
            duration_ms: record.to_healthy_ms,
            details,
        },
    );
    if let Ok(bytes) = serde_json::to_vec_pretty(&record) {
        if let Err(e) = fsutil::ensure_dir(config.agent.state_dir.as_path(), fsutil::AGENT_DIR_MODE)
            .and_then(|()| {
                fsutil::write_atomic(
                    &config.agent.state_dir.join("boot-recovery.json"),
                    &bytes,
                    0o644,
                )
            })
        {
            log::warn!("cannot record boot recovery: {e}");
        }
    }
}

pub(super) fn write_heartbeat(config: &Config, phase: Phase, summary: &str) {
    let beat = Heartbeat {
        pid: std::process::id(),
        updated_at: clock::now(),
        updated_unix: clock::unix_secs(),
        phase,
        summary: redact(summary),
    };
    let result = serde_json::to_vec(&beat)
        .map_err(|e| Error::caused(Stage::Daemon, e))
        .and_then(|bytes| {
            fsutil::ensure_dir(config.agent.run_dir.as_path(), fsutil::AGENT_DIR_MODE)?;
            Ok(fsutil::write_atomic(
                &config.heartbeat_path(),
                &bytes,
                0o644,
            )?)
        });
    if let Err(e) = result {
        log::warn!("cannot write the heartbeat: {e}");
    }
}

/// Secrets the daemon may meet before any render registers them: the
/// configured database URL (its password, and the URL whole) and the
/// SecureString values of the env files already on disk.
pub(super) fn register_known_secrets(config: &Config) {
    if let Some(url) = &config.database.url {
        crate::output::register_secret(url);
        if let Some(password) = url_password(url) {
            crate::output::register_secret(password);
        }
    }
    let secure = crate::envrender::secure_variables(config);
    for group in &config.runtime.groups {
        if let Ok(Some(vars)) = crate::envrender::read_group(config, group) {
            for (name, value) in &vars {
                if secure.contains(name) {
                    crate::output::register_secret(value);
                    if let Some(password) = url_password(value) {
                        crate::output::register_secret(password);
                    }
                }
            }
        }
    }
}

/// The password of `scheme://user:password@host...`, if any.
fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let (credentials, _) = rest.rsplit_once('@')?;
    let (_, password) = credentials.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// Read the heartbeat (for `status`).
pub fn read_heartbeat(config: &Config) -> Option<Heartbeat> {
    let bytes = fsutil::read_owned(&config.heartbeat_path()).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Read the last boot recovery (for `status`).
pub fn read_boot_recovery(config: &Config) -> Option<BootRecovery> {
    let bytes = fsutil::read_owned(&config.agent.state_dir.join("boot-recovery.json")).ok()??;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_and_boot_record_are_redacted_before_they_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.agent.run_dir = crate::config::AbsPath::new(dir.path().join("run"));
        config.agent.state_dir = crate::config::AbsPath::new(dir.path().join("state"));
        config.runtime.env_dir = crate::config::AbsPath::new(dir.path().join("env"));
        let password = "Daemon-Records-Pw-81f2";
        config.database.url = Some(format!("postgres://wavemap:{password}@db:5432/wavemap"));
        register_known_secrets(&config);
        let leaky = format!("cannot connect to postgres://wavemap:{password}@db:5432/wavemap");
        write_heartbeat(&config, Phase::Degraded, &leaky);
        let record = BootRecovery {
            started_at: clock::now(),
            detail: leaky.clone(),
            env: leaky.clone(),
            attempts: 2,
            ..Default::default()
        };
        finish(&config, &record);
        journal_heal(
            &config,
            "end",
            &record.started_at,
            Some("failed"),
            &leaky,
            Some(1),
        );
        for path in [
            config.heartbeat_path(),
            config.agent.state_dir.join("boot-recovery.json"),
            config.journal_path(),
        ] {
            let text = std::fs::read_to_string(&path).expect("written");
            assert!(!text.contains(password), "{}: {text}", path.display());
            assert!(
                text.contains(crate::output::REDACTED),
                "{}: {text}",
                path.display()
            );
        }
        let beat = read_heartbeat(&config).expect("heartbeat reads back");
        assert_eq!(beat.phase, Phase::Degraded);
        let back = read_boot_recovery(&config).expect("record reads back");
        assert_eq!((back.result, back.attempts), (RecoveryResult::Failed, 2));
    }

    #[test]
    fn phase_and_result_serialize_as_the_strings_status_always_read() {
        for (phase, text) in [
            (Phase::Starting, "starting"),
            (Phase::WaitingForDocker, "waiting-for-docker"),
            (Phase::Recovering, "recovering"),
            (Phase::Running, "running"),
            (Phase::Degraded, "degraded"),
            (Phase::Healing, "healing"),
        ] {
            assert_eq!(
                serde_json::to_string(&phase).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(phase.to_string(), text);
        }
        for (result, text) in [
            (RecoveryResult::Recovered, "recovered"),
            (RecoveryResult::Failed, "failed"),
            (RecoveryResult::NoRelease, "no-release"),
        ] {
            assert_eq!(
                serde_json::to_string(&result).unwrap(),
                format!("\"{text}\"")
            );
        }
        // A record written before `attempts` existed still reads.
        let old = r#"{"startedAt":"2026-11-25T02:27:06.692Z","result":"recovered","toDockerMs":3,"toConvergedMs":4,"toHealthyMs":5,"release":"sha-x","env":"re-rendered from SSM","detail":"ok"}"#;
        let record: BootRecovery = serde_json::from_str(old).expect("old record");
        assert_eq!(record.result, RecoveryResult::Recovered);
        assert_eq!(record.attempts, 0);
    }

    #[test]
    fn url_password_finds_the_password_only() {
        assert_eq!(
            url_password("postgres://wavemap:s3cr3t@db:5432/x"),
            Some("s3cr3t")
        );
        assert_eq!(url_password("postgres://wavemap@db/x"), None);
        assert_eq!(url_password("postgres://u:@db/x"), None);
        assert_eq!(url_password("not a url"), None);
    }
}
