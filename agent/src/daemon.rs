//! `wavemap-agent daemon`: the systemd service (`Type=notify`).
//!
//! At boot the host was stopped for cost and woken on demand; nobody is
//! watching. The daemon brings the last deployed release back up (the
//! current-release state, through the same pipeline as a deploy, keeping
//! the existing env files if SSM stays unreachable) and only then tells
//! systemd `READY=1`, so anything ordered after the unit sees a healthy app.
//!
//! While it runs it observes the project's health at an interval and logs
//! changes; restart policies are Docker's job, not ours. `WATCHDOG=1` is sent
//! by a task that checks the main loop made progress recently: a stuck main
//! loop stops the pings and systemd restarts us, which a blind timer would
//! never do. SIGTERM/SIGINT stop the daemon and never the app's containers.
//!
//! Boot recovery holds the operation lock, so SSM commands that arrive
//! meanwhile wait for it instead of racing the recovery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sd_notify::NotifyState;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::deploy::{self, EnvPolicy, Options};
use crate::error::Error;
use crate::fsutil;
use crate::journal;
use crate::output::Report;
use crate::release;

/// What `status` reads to show the daemon (run_dir/daemon-heartbeat.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub pid: u32,
    pub updated_at: String,
    pub updated_unix: u64,
    /// `waiting-for-docker`, `recovering`, `running`.
    pub phase: String,
    pub summary: String,
}

/// Boot recovery timings (state_dir/boot-recovery.json), for `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootRecovery {
    pub started_at: String,
    pub result: String,
    pub to_docker_ms: Option<u64>,
    pub to_converged_ms: Option<u64>,
    pub to_healthy_ms: Option<u64>,
    pub release: Option<String>,
    pub env: String,
    pub detail: String,
}

/// Milliseconds since the epoch of the main loop's last sign of life.
#[derive(Clone, Default)]
struct Liveness(Arc<AtomicU64>);

impl Liveness {
    fn touch(&self) {
        self.0.store(now_unix_ms(), Ordering::Relaxed);
    }
    fn age(&self) -> Duration {
        Duration::from_millis(now_unix_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn notify(states: &[NotifyState]) {
    // Outside systemd there is no NOTIFY_SOCKET and this is a no-op.
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("sd_notify: {e}");
    }
}

fn status_line(text: &str) {
    log::info!(operation = "daemon"; "{text}");
    notify(&[NotifyState::Status(text)]);
}

pub async fn run(config: &Config) -> Result<(), Error> {
    let liveness = Liveness::default();
    liveness.touch();
    write_heartbeat(config, "starting", "");

    let mut watchdog_usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0 {
        let period = Duration::from_micros(watchdog_usec) / 2;
        tokio::spawn(watchdog(
            period,
            Duration::from_micros(watchdog_usec),
            liveness.clone(),
        ));
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::failed("daemon", format!("cannot handle SIGTERM: {e}")))?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    };
    tokio::pin!(shutdown);

    // Boot recovery, with the main loop still proving it is alive.
    let recovery = boot_recovery(config, &liveness);
    tokio::pin!(recovery);
    let summary = loop {
        tokio::select! {
            summary = &mut recovery => break summary,
            signal = &mut shutdown => {
                log::info!(operation = "daemon"; "{signal} during boot recovery; stopping (containers keep running)");
                notify(&[NotifyState::Stopping]);
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => liveness.touch(),
        }
    };
    notify(&[NotifyState::Ready, NotifyState::Status(&summary)]);
    log::info!(operation = "daemon"; "ready: {summary}");
    write_heartbeat(config, "running", &summary);

    // Observe health until told to stop.
    let interval = config.daemon.health_interval.duration();
    let mut last: Option<String> = None;
    let mut next_check = Instant::now();
    loop {
        tokio::select! {
            signal = &mut shutdown => {
                log::info!(operation = "daemon"; "{signal}: stopping (containers keep running)");
                notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                liveness.touch();
                if Instant::now() >= next_check {
                    next_check = Instant::now() + interval;
                    let now = observe(config).await;
                    if last.as_deref() != Some(now.as_str()) {
                        log::info!(operation = "daemon"; "project health: {now}");
                        notify(&[NotifyState::Status(&format!("running: {now}"))]);
                        last = Some(now.clone());
                    }
                    write_heartbeat(config, "running", &now);
                }
            }
        }
    }
}

async fn watchdog(period: Duration, limit: Duration, liveness: Liveness) {
    loop {
        tokio::time::sleep(period).await;
        if liveness.age() < limit {
            notify(&[NotifyState::Watchdog]);
        } else {
            log::error!(operation = "daemon"; "main loop made no progress for {}s; withholding the watchdog ping", liveness.age().as_secs());
        }
    }
}

/// One line summarizing the project's services, e.g. `api=healthy frontend=healthy`.
async fn observe(config: &Config) -> String {
    let docker = match crate::docker::connect_to(
        &config.docker.host,
        std::time::Duration::from_secs(3),
        std::time::Duration::ZERO,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => return format!("Docker unavailable ({e})"),
    };
    match crate::compose::service_states(&docker, &config.runtime.project_name).await {
        Ok(states) if states.is_empty() => "no containers".into(),
        Ok(states) => states
            .iter()
            .map(|s| {
                format!(
                    "{}={}",
                    s.service,
                    s.health.clone().unwrap_or_else(|| s.state.clone())
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("cannot list containers ({e})"),
    }
}

/// Bring the current release back; returns the READY status summary.
async fn boot_recovery(config: &Config, liveness: &Liveness) -> String {
    let started = Instant::now();
    let mut record = BootRecovery {
        started_at: crate::commands::now(),
        ..Default::default()
    };
    let set_phase = |name: &str, summary: &str| write_heartbeat(config, name, summary);

    set_phase("waiting-for-docker", "waiting for Docker");
    status_line("waiting for Docker");
    let deadline = config.daemon.docker_wait.duration();
    let mut delay = Duration::from_millis(250);
    loop {
        match crate::docker::connect_to(
            &config.docker.host,
            std::time::Duration::from_secs(3),
            std::time::Duration::ZERO,
        )
        .await
        {
            Ok(_) => break,
            Err(e) if started.elapsed() < deadline => {
                status_line(&format!(
                    "waiting for Docker ({}s): {e}",
                    started.elapsed().as_secs()
                ));
                liveness.touch();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                record.result = "failed".into();
                record.detail =
                    format!("Docker did not answer within {}s: {e}", deadline.as_secs());
                return finish(config, record);
            }
        }
    }
    record.to_docker_ms = Some(ms(started));

    let current = match release::read_current(config) {
        Ok(Some(current)) => current,
        Ok(None) => {
            record.result = "no-release".into();
            record.detail = "no release deployed yet; nothing to recover".into();
            return finish(config, record);
        }
        Err(e) => {
            record.result = "failed".into();
            record.detail = format!("cannot read the current release: {e}");
            return finish(config, record);
        }
    };
    record.release = Some(current.release.image_tag.clone());
    set_phase(
        "recovering",
        &format!("recovering {}", current.release.image_tag),
    );
    status_line(&format!(
        "recovering release {} ({})",
        current.release.image_tag, current.release.deployment_version
    ));

    // Wait for any SSM command already running, then hold the lock.
    let _lock = match crate::lock::acquire(
        &config.lock_path(),
        "daemon boot recovery",
        Duration::from_secs(3600),
    )
    .await
    {
        Ok(lock) => lock,
        Err(e) => {
            record.result = "failed".into();
            record.detail = e.to_string();
            return finish(config, record);
        }
    };
    let mut report = Report::new();
    let options = Options {
        execute: true,
        env: EnvPolicy::KeepExistingIfUnavailable,
        record_as: None,
    };
    let outcome = deploy::run(
        config,
        &current.release,
        options,
        &mut report,
        "WAVEMAP_BOOT",
    )
    .await;
    let stage_ms = |name: &str| -> Option<u64> {
        report.get("WAVEMAP_BOOT_STAGE_MS").and_then(|t| {
            t.split(',').find_map(|p| {
                p.strip_prefix(&format!("{name}:"))
                    .and_then(|v| v.parse().ok())
            })
        })
    };
    let before_converge: u64 = ["env-render", "ecr-login", "pull", "converge"]
        .iter()
        .filter_map(|s| stage_ms(s))
        .sum();
    let to_docker = record.to_docker_ms.unwrap_or(0);
    record.to_converged_ms = Some(to_docker + before_converge);
    match outcome {
        Ok(outcome) => {
            record.to_healthy_ms = Some(ms(started));
            record.env = if outcome.env_kept_existing {
                "kept existing env files (SSM unavailable)".into()
            } else {
                "re-rendered from SSM".into()
            };
            record.result = "recovered".into();
            record.detail = format!(
                "release {} healthy; env {}",
                current.release.image_tag, record.env
            );
        }
        Err(e) => {
            record.result = "failed".into();
            record.detail = format!(
                "boot recovery failed at {}: {e}",
                report.get("WAVEMAP_BOOT_FAILED_STAGE").unwrap_or("start")
            );
        }
    }
    finish(config, record)
}

fn finish(config: &Config, record: BootRecovery) -> String {
    let summary = match record.result.as_str() {
        "recovered" => format!(
            "recovered: {} (docker {}ms, converged {}ms, healthy {}ms)",
            record.detail,
            record.to_docker_ms.unwrap_or(0),
            record.to_converged_ms.unwrap_or(0),
            record.to_healthy_ms.unwrap_or(0)
        ),
        _ => format!("{}: {}", record.result, record.detail),
    };
    if record.result == "failed" {
        log::error!(operation = "daemon"; "{summary}");
    }
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
            ended_at: Some(crate::commands::now()),
            outcome: Some(record.result.clone()),
            exit_code: None,
            duration_ms: record.to_healthy_ms,
            details,
        },
    );
    if let Ok(bytes) = serde_json::to_vec_pretty(&record) {
        if let Err(e) = fsutil::ensure_dir(config.agent.state_dir.as_path(), 0o755).and_then(|()| {
            fsutil::write_atomic(
                &config.agent.state_dir.join("boot-recovery.json"),
                &bytes,
                0o644,
            )
        }) {
            log::warn!("cannot record boot recovery timings: {e}");
        }
    }
    summary
}

fn write_heartbeat(config: &Config, phase: &str, summary: &str) {
    let beat = Heartbeat {
        pid: std::process::id(),
        updated_at: crate::commands::now(),
        updated_unix: now_unix_ms() / 1000,
        phase: phase.to_owned(),
        summary: summary.to_owned(),
    };
    let result = serde_json::to_vec(&beat)
        .map_err(|e| Error::failed("daemon", e))
        .and_then(|bytes| {
            fsutil::ensure_dir(config.agent.run_dir.as_path(), 0o755)?;
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

fn ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
