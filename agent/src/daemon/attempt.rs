//! One try at running the current release healthy: wait for Docker, take
//! the operation lock, read the current release under it, check that the
//! last gated command succeeded ([`super::authority`]), run the deploy
//! pipeline with the env files on disk. Boot recovery and every retry after
//! it are such attempts.

use std::time::{Duration, Instant};

use super::{status_line, write_heartbeat, Phase};
use crate::clock::Monotonic;
use crate::config::Config;
use crate::deploy::{self, EnvPolicy, Options};
use crate::lock::OperationLock;
use crate::output::Report;
use crate::release::{self, Release};
use crate::retry::{Backoff, Retry};

/// What one attempt found.
#[derive(Debug)]
pub enum Attempt {
    Healthy(Healthy),
    NoRelease,
    Failed(Failed),
    /// The last gated command failed or was interrupted: nothing was done.
    Waiting(String),
}

#[derive(Debug, Clone)]
pub struct Healthy {
    pub image_tag: String,
    /// `env files as on disk (no SSM call)`, `kept existing env files (...)`.
    pub env: String,
    pub to_docker_ms: u64,
    /// From the attempt's start to the end of converge.
    pub to_converged_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Failed {
    pub why: String,
    pub image_tag: Option<String>,
    pub to_docker_ms: Option<u64>,
    /// Another operation held the lock: not the release's fault.
    pub lock_busy: bool,
}

impl Failed {
    fn new(why: impl Into<String>) -> Self {
        Failed {
            why: why.into(),
            image_tag: None,
            to_docker_ms: None,
            lock_busy: false,
        }
    }
}

/// Wait up to `daemon.docker_wait` for the Engine, with STATUS lines.
pub async fn wait_for_docker(
    config: &Config,
    alive: &Monotonic,
) -> Result<bollard::Docker, String> {
    let deadline = config.daemon.docker_wait.duration();
    let backoff = Backoff::exponential(Duration::from_millis(250), Duration::from_secs(5));
    crate::docker::connect_waiting(
        &config.docker.host,
        Duration::from_secs(3),
        Retry::for_time(deadline, backoff),
        |failure, waited| {
            status_line(&format!(
                "waiting for Docker ({}s): {failure}",
                waited.as_secs()
            ));
            alive.touch();
        },
    )
    .await
    .map_err(|e| format!("Docker did not answer within {}s: {e}", deadline.as_secs()))
}

/// A full attempt. Attempts after READY never wait for the lock (an
/// operation that holds it is left alone). The env files are the ones on
/// disk; SSM is read only for a file the release needs that is missing.
pub async fn recover(
    config: &Config,
    alive: &Monotonic,
    phase: Phase,
    lock_wait: Duration,
) -> Attempt {
    let started = Instant::now();
    write_heartbeat(config, Phase::WaitingForDocker, "waiting for Docker");
    status_line("waiting for Docker");
    if let Err(why) = wait_for_docker(config, alive).await {
        return Attempt::Failed(Failed::new(why));
    }
    let to_docker_ms = ms(started);
    let command = match phase {
        Phase::Healing => "daemon heal",
        _ => "daemon boot recovery",
    };
    let lock = match crate::lock::acquire(&config.lock_path(), command, lock_wait).await {
        Ok(lock) => lock,
        Err(e) => {
            let busy = matches!(e, crate::lock::LockError::Busy { .. });
            return Attempt::Failed(Failed {
                lock_busy: busy,
                to_docker_ms: Some(to_docker_ms),
                ..Failed::new(e.to_string())
            });
        }
    };
    // Read under the lock: a deploy that held it may just have changed it.
    let current = match release::read_current(config) {
        Ok(Some(current)) => current,
        Ok(None) => return Attempt::NoRelease,
        Err(e) => {
            return Attempt::Failed(Failed {
                to_docker_ms: Some(to_docker_ms),
                ..Failed::new(format!("cannot read the current release: {e}"))
            })
        }
    };
    if let Some(why) = super::authority::waiting_for(config) {
        return Attempt::Waiting(why);
    }
    let tag = current.release.image_tag.clone();
    write_heartbeat(config, phase, &format!("recovering {tag}"));
    let progress = format!(
        "recovering release {tag} ({})",
        current.release.deployment_version
    );
    if phase == Phase::Recovering {
        status_line(&progress);
    } else {
        // After READY, STATUS keeps what READY (or the last heal) said until
        // this attempt ends: a degraded unit stays "degraded: ..." while it
        // retries, so `systemctl status` never shows a bare progress line.
        log::info!(operation = "daemon"; "{progress}");
    }
    match pipeline(config, &current.release, &lock).await {
        Ok(mut healthy) => {
            healthy.to_docker_ms = to_docker_ms;
            healthy.to_converged_ms += to_docker_ms;
            Attempt::Healthy(healthy)
        }
        Err(why) => Attempt::Failed(Failed {
            image_tag: Some(tag),
            to_docker_ms: Some(to_docker_ms),
            ..Failed::new(why)
        }),
    }
}

/// The deploy pipeline for `release`, records nothing (the release already
/// is the current one). `_lock` proves the caller holds the operation lock.
pub async fn pipeline(
    config: &Config,
    release: &Release,
    _lock: &OperationLock,
) -> Result<Healthy, String> {
    let mut report = Report::new();
    let options = Options {
        execute: true,
        env: EnvPolicy::FromDisk,
        record_as: None,
    };
    let outcome = deploy::run(config, release, options, &mut report, "WAVEMAP_BOOT").await;
    match outcome {
        Ok(outcome) => {
            let to_converged_ms = outcome
                .stage_ms
                .iter()
                .filter(|(s, _)| s != "health")
                .map(|(_, ms)| ms)
                .sum();
            let env = match outcome.env_kept_reason.as_deref() {
                Some(deploy::ENV_FROM_DISK) => {
                    format!("env files {}", deploy::ENV_FROM_DISK)
                }
                Some(reason) => format!("kept existing env files ({reason})"),
                None => "missing env files rendered from SSM".into(),
            };
            Ok(Healthy {
                image_tag: release.image_tag.clone(),
                env,
                to_docker_ms: 0,
                to_converged_ms,
            })
        }
        Err(e) => Err(format!(
            "failed at {}: {e}",
            report.get("WAVEMAP_BOOT_FAILED_STAGE").unwrap_or("start")
        )),
    }
}

pub fn ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
