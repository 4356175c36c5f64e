//! `wavemap-agent daemon`: the systemd service (`Type=notify`), a
//! reconciler that keeps the current release running.
//!
//! At boot the host was stopped for cost and woken on demand; nobody is
//! watching, and what the release needs (Docker, SSM, ECR, the registry)
//! may come up after us. And nobody asked for a change: the rule is that
//! what runs is exactly what the last gated command that
//! succeeded (a deploy or rollback) put there, so the daemon restores that
//! after a crash or a wake, and nothing else:
//!
//! - **Boot recovery** brings the current release back through the deploy
//!   pipeline with the env files on disk, as the last deploy promoted them,
//!   and makes no SSM call: a parameter changed while the host slept goes
//!   live with the next deploy, not at wake. Only a file the release needs
//!   that is missing is rendered from SSM (tried for `daemon.ssm_wait`;
//!   unreachable or refused, the existing files are kept and it says so).
//! - **READY=1** comes once the release runs healthy (`STATUS=ready:
//!   recovered ...`), or when there is nothing to recover, or at the latest
//!   at `daemon.ready_timeout` (inside the unit's `TimeoutStartSec`) with
//!   `STATUS=degraded: <why>; retrying in Ns`. Units ordered after ours
//!   start either way; the STATUS line (and `status`) says which it was.
//! - **A failed attempt is retried** with jittered exponential backoff
//!   ([`crate::retry::Backoff`]) until the release runs healthy, before and after READY.
//! - **A heal** ([`heal`]) acts only on crash-type drift ([`drift`]: a
//!   container missing, exited or dead), and brings it back with the config
//!   the deploy recorded (`configHashes` in the current release), never one
//!   made from today's env files: when the files on disk no longer give the
//!   recorded config, it reports that and does not act. Each heal is checked
//!   and done under the operation lock (never while another operation holds
//!   it) and is an operation in the journal (`daemon heal`).
//! - **Image and config drift** (a person's `docker compose up` with other
//!   images, what a failed deploy left, env files `runtime-env --execute`
//!   changed) is reported in STATUS, `status` and the journal (`daemon
//!   drift`) and never acted on.
//! - **After a failed or interrupted deploy, rollback or migrate** (the
//!   operation journal says so, [`authority`]), the daemon heals and
//!   recovers nothing until a deploy or rollback succeeds; STATUS says that
//!   it is waiting, and why.
//! - `daemon.heal = false` turns the daemon into an observer that reports
//!   drift and failures but changes nothing after READY.
//!
//! `WATCHDOG=1` is sent by a task that checks, on the monotonic clock, that
//! the main loop made progress recently: a stuck main loop stops the pings
//! and systemd restarts us, which a blind timer would never do. SIGTERM and
//! SIGINT stop the daemon and never the app's containers.
//!
//! The heartbeat (run_dir) and the boot recovery record (state_dir) are
//! what `status` shows; both are redacted before they are written.

mod attempt;
pub mod authority;
pub mod drift;
pub mod heal;
mod records;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::clock::{self, Monotonic};
use crate::config::Config;
use crate::error::{Error, Stage};
use crate::output::redact;
use crate::release;
use crate::retry::Backoff;
use attempt::Attempt;
use records::write_heartbeat;
use records::{finish, journal_heal, journal_report, register_known_secrets};
pub use records::{
    read_boot_recovery, read_heartbeat, BootRecovery, Heartbeat, Phase, RecoveryResult,
};

fn notify(states: &[NotifyState]) {
    // Outside systemd there is no NOTIFY_SOCKET and this is a no-op.
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("sd_notify: {e}");
    }
}

/// A STATUS= line, also logged (OPERATION=daemon in the journal).
fn status_line(text: &str) {
    let text = redact(text);
    log::info!(operation = "daemon"; "{text}");
    notify(&[NotifyState::Status(&text)]);
}

type Shutdown = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// The daemon's state between attempts.
struct Daemon<'a> {
    config: &'a Config,
    alive: Monotonic,
    shutdown: Shutdown,
    started: Instant,
    ready_at: Instant,
    ready: bool,
    backoff: Backoff,
    /// What READY's STATUS says if the deadline passes now.
    pending: String,
    last_status: String,
    /// What was last written to the journal as reported drift.
    last_reported: String,
}

pub async fn run(config: &Config) -> Result<(), Error> {
    register_known_secrets(config);
    let alive = Monotonic::default();
    alive.touch();
    write_heartbeat(config, Phase::Starting, "starting");

    let mut watchdog_usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0 {
        let limit = Duration::from_micros(watchdog_usec);
        tokio::spawn(watchdog(limit / 2, limit, alive.clone()));
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::failed(Stage::Daemon, format!("cannot handle SIGTERM: {e}")))?;
    let shutdown: Shutdown = Box::pin(async move {
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    });
    let started = Instant::now();
    let mut daemon = Daemon {
        config,
        alive,
        shutdown,
        started,
        ready_at: started + config.daemon.ready_timeout.duration(),
        ready: false,
        backoff: Backoff::jittered(Duration::from_secs(2), config.daemon.retry_max.duration()),
        pending: "still recovering".into(),
        last_status: String::new(),
        last_reported: String::new(),
    };
    if daemon.recover().await.is_none() {
        return Ok(());
    }
    daemon.watch().await;
    Ok(())
}

impl Daemon<'_> {
    /// Run `work` while keeping the liveness mark fresh, sending READY at
    /// the deadline, and answering SIGTERM. `None`: told to stop.
    async fn drive<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                signal = &mut self.shutdown => {
                    log::info!(operation = "daemon"; "{signal}: stopping (containers keep running)");
                    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
                    return None;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    self.alive.touch();
                    self.ready_if_due();
                }
            }
        }
    }

    async fn sleep(&mut self, pause: Duration) -> Option<()> {
        self.drive(tokio::time::sleep(pause)).await
    }

    /// READY=1 with a degraded STATUS once `daemon.ready_timeout` passed.
    fn ready_if_due(&mut self) {
        if !self.ready && Instant::now() >= self.ready_at {
            let text = redact(&format!("degraded: {}", self.pending));
            self.ready = true;
            log::warn!(operation = "daemon"; "ready (degraded) after {}s: {text}", self.config.daemon.ready_timeout.get());
            notify(&[NotifyState::Ready, NotifyState::Status(&text)]);
            write_heartbeat(self.config, Phase::Degraded, &text);
            self.last_status = text;
        }
    }

    fn ready_now(&mut self, phase: Phase, text: &str) {
        let text = redact(text);
        if self.ready {
            log::info!(operation = "daemon"; "{text}");
            notify(&[NotifyState::Status(&text)]);
        } else {
            self.ready = true;
            log::info!(operation = "daemon"; "{text}");
            notify(&[NotifyState::Ready, NotifyState::Status(&text)]);
        }
        write_heartbeat(self.config, phase, &text);
        self.last_status = text;
    }

    /// Say `text` (STATUS, journal, heartbeat) unless it is what was said last.
    fn say(&mut self, phase: Phase, text: &str) {
        let text = redact(text);
        if text != self.last_status {
            status_line(&text);
            self.last_status = text.clone();
        }
        write_heartbeat(self.config, phase, &text);
    }

    /// Say `text` as [`Daemon::say`] does, and record it in the journal
    /// (`daemon drift`) when it is news.
    fn report(&mut self, phase: Phase, text: &str) {
        if text != self.last_reported {
            log::warn!(operation = "heal"; "{}", redact(text));
            journal_report(self.config, text);
            self.last_reported = text.to_owned();
        }
        self.say(phase, text);
    }

    /// Boot recovery and its retries, until the release runs healthy or
    /// there is none. `None`: told to stop.
    async fn recover(&mut self) -> Option<()> {
        let config = self.config;
        let mut record = BootRecovery {
            started_at: clock::now(),
            ..Default::default()
        };
        loop {
            record.attempts += 1;
            let after_ready = self.ready;
            let phase = if after_ready {
                Phase::Healing
            } else {
                Phase::Recovering
            };
            // Before READY the lock wait ends at the READY deadline, which
            // is inside TimeoutStartSec; after it, never wait on an operation.
            let lock_wait = if after_ready {
                Duration::ZERO
            } else {
                self.ready_at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1))
            };
            let alive = self.alive.clone();
            let heal_started = clock::now();
            let heal_clock = Instant::now();
            // After READY each attempt is a heal in the journal, written
            // once it ran: an attempt that found the lock held did nothing
            // and leaves no entry (a long deploy would otherwise fill the
            // journal with them).
            let result = self
                .drive(attempt::recover(config, &alive, phase, lock_wait))
                .await?;
            match result {
                Attempt::Healthy(h) => {
                    self.backoff.reset();
                    record.result = RecoveryResult::Recovered;
                    record.release = Some(h.image_tag.clone());
                    record.to_docker_ms = Some(h.to_docker_ms);
                    record.to_converged_ms = Some(h.to_converged_ms);
                    record.to_healthy_ms = Some(attempt::ms(self.started));
                    record.env = h.env.clone();
                    record.detail = format!("release {} healthy; {}", h.image_tag, h.env);
                    let tries = match record.attempts {
                        1 => String::new(),
                        n => format!(" after {n} attempts"),
                    };
                    let word = if self.ready { "running" } else { "ready" };
                    let text = format!(
                        "{word}: recovered{tries}: {} (docker {}ms, converged {}ms, healthy {}ms)",
                        record.detail,
                        h.to_docker_ms,
                        h.to_converged_ms,
                        record.to_healthy_ms.unwrap_or(0)
                    );
                    finish(config, &record);
                    if after_ready {
                        journal_heal(config, "start", &heal_started, None, "", None);
                        journal_heal(
                            config,
                            "end",
                            &heal_started,
                            Some("success"),
                            &format!("recovered {}", h.image_tag),
                            Some(attempt::ms(heal_clock)),
                        );
                    }
                    self.ready_now(Phase::Running, &text);
                    return Some(());
                }
                Attempt::NoRelease => {
                    record.result = RecoveryResult::NoRelease;
                    record.detail = "no release deployed yet; nothing to recover".into();
                    finish(config, &record);
                    self.ready_now(
                        Phase::Running,
                        &format!("{}: {}", record.result, record.detail),
                    );
                    return Some(());
                }
                Attempt::Waiting(why) => {
                    record.result = RecoveryResult::Waiting;
                    record.detail =
                        format!("{why}; recovering nothing until a deploy or rollback succeeds");
                    finish(config, &record);
                    let text = format!("degraded: waiting: {}", record.detail);
                    self.ready_now(Phase::Degraded, &text);
                    return Some(());
                }
                Attempt::Failed(f) => {
                    record.result = RecoveryResult::Failed;
                    record.release = f.image_tag.clone().or(record.release.take());
                    record.to_docker_ms = f.to_docker_ms;
                    record.detail = format!("attempt {}: {}", record.attempts, f.why);
                    finish(config, &record);
                    if after_ready && !f.lock_busy {
                        journal_heal(config, "start", &heal_started, None, "", None);
                        journal_heal(
                            config,
                            "end",
                            &heal_started,
                            Some("failed"),
                            &f.why,
                            Some(attempt::ms(heal_clock)),
                        );
                    }
                    let pause = self.backoff.next_delay();
                    let secs = pause.as_secs().max(1);
                    self.pending = format!(
                        "boot recovery failed (attempt {}): {}; retrying in {secs}s",
                        record.attempts, f.why
                    );
                    log::error!(operation = "daemon"; "{}", redact(&self.pending));
                    if self.ready && !config.daemon.heal {
                        let text = format!(
                            "degraded: boot recovery failed: {}; not retrying (daemon.heal = false)",
                            f.why
                        );
                        self.say(Phase::Degraded, &text);
                        return Some(());
                    }
                    if self.ready {
                        let text = format!("degraded: {}", self.pending);
                        self.say(Phase::Degraded, &text);
                    } else {
                        let text = format!("recovering: {}", self.pending);
                        self.say(Phase::Recovering, &text);
                        self.ready_if_due();
                    }
                    self.sleep(pause).await?;
                }
            }
        }
    }

    /// After recovery: observe health and converge drift back, forever.
    async fn watch(&mut self) {
        let config = self.config;
        let interval = config.daemon.health_interval.duration();
        let mut pause = interval;
        // The drift of the previous check: a heal needs the same twice.
        let mut previous: Option<Vec<drift::Drift>> = None;
        // Until something changes, STATUS keeps saying what READY said
        // (how boot recovery went) rather than a bare health line.
        let mut baseline: Option<String> = None;
        let mut eventful = false;
        // The last low-disk warning, so the journal gets it once per change.
        let mut low_disk: Option<String> = None;
        loop {
            if self.sleep(pause).await.is_none() {
                return;
            }
            pause = interval;
            let seen = match self.drive(observe(config)).await {
                Some(seen) => seen,
                None => return,
            };
            let check = match self.drive(check_drift(config)).await {
                Some(check) => check,
                None => return,
            };
            let low = match self
                .drive(crate::images::disk::low_space_warning(config))
                .await
            {
                Some(low) => low,
                None => return,
            };
            if low != low_disk {
                if let Some(warning) = &low {
                    log::warn!(operation = "daemon"; "{warning}");
                }
                eventful = true;
                low_disk = low;
            }
            let check = match check {
                Check::Drift {
                    found,
                    current,
                    lock,
                } => {
                    let still = found.moving.is_none();
                    let again = previous.as_ref() == Some(&found.drift);
                    if still && again {
                        Check::Drift {
                            found,
                            current,
                            lock,
                        }
                    } else {
                        drop(lock);
                        let what = drift::describe(&found.drift);
                        let why = found.moving.unwrap_or_else(|| "first sighting".into());
                        log::info!(operation = "heal"; "drift: {what}; waiting for it to hold still ({why})");
                        previous = Some(found.drift);
                        Check::Skipped(why)
                    }
                }
                other => {
                    previous = None;
                    other
                }
            };
            let calm = matches!(check, Check::Clean | Check::NoRelease) && seen.docker_ok;
            if !calm || baseline.get_or_insert_with(|| seen.summary.clone()) != &seen.summary {
                eventful = true;
            }
            if !eventful {
                write_heartbeat(config, Phase::Running, &self.last_status);
                continue;
            }
            match check {
                Check::Clean | Check::NoRelease | Check::Skipped(_) => {
                    if let Check::Skipped(why) = &check {
                        log::debug!(operation = "daemon"; "drift check skipped: {why}");
                    }
                    let (phase, word) = if seen.docker_ok {
                        (Phase::Running, "running")
                    } else {
                        (Phase::Degraded, "degraded")
                    };
                    let mut text = format!("{word}: {}", seen.summary);
                    if let Some(warning) = &low_disk {
                        text.push_str(&format!("; warning: {warning}"));
                    }
                    self.say(phase, &text);
                }
                Check::Waiting { why, drift } => {
                    let mut text = format!(
                        "degraded: waiting: {why}; healing nothing until a deploy or rollback succeeds"
                    );
                    if !drift.is_empty() {
                        text.push_str(&format!(
                            "; drift: {} (reported, not acted on)",
                            drift::describe(&drift)
                        ));
                    }
                    self.report(Phase::Degraded, &text);
                }
                Check::Drift { found, .. } if !config.daemon.heal => {
                    self.say(
                        Phase::Degraded,
                        &format!(
                            "degraded: drift: {}; not healing (daemon.heal = false)",
                            drift::describe(&found.drift)
                        ),
                    );
                }
                Check::Drift {
                    found,
                    current,
                    lock,
                } => {
                    let crashed = heal::crashed(&found.drift);
                    let others: Vec<drift::Drift> = found
                        .drift
                        .iter()
                        .filter(|d| !crashed.contains(d))
                        .cloned()
                        .collect();
                    if crashed.is_empty() {
                        drop(lock);
                        self.report(
                            Phase::Degraded,
                            &format!(
                                "degraded: drift: {} (reported, not acted on: only a deploy or rollback changes images or config)",
                                drift::describe(&others)
                            ),
                        );
                        continue;
                    }
                    match self.heal(&crashed, &current, lock).await {
                        Some(Some(backoff)) => pause = backoff,
                        Some(None) => {}
                        None => return,
                    }
                }
            }
        }
    }

    /// Heal `crashed` (the lock held until it ends). `None`: told to stop;
    /// `Some(Some(pause))`: it failed, check again after `pause`.
    async fn heal(
        &mut self,
        crashed: &[drift::Drift],
        current: &release::CurrentRelease,
        lock: crate::lock::OperationLock,
    ) -> Option<Option<Duration>> {
        let config = self.config;
        let what = drift::describe(crashed);
        let tag = current.release.image_tag.clone();
        log::warn!(operation = "heal"; "drift from {tag}: {what}; healing");
        self.say(Phase::Healing, &format!("healing: {what}"));
        let started_at = clock::now();
        let started = Instant::now();
        let result = self.drive(heal::heal(config, current, crashed)).await;
        drop(lock);
        let took = attempt::ms(started);
        let journal = |outcome: &str, detail: &str| {
            journal_heal(config, "start", &started_at, None, &what, None);
            journal_heal(
                config,
                "end",
                &started_at,
                Some(outcome),
                detail,
                Some(took),
            );
        };
        match result? {
            Ok(healed) => {
                self.backoff.reset();
                let mut detail = format!("{what}; changed {}", healed.changed.join(","));
                if !healed.refused.is_empty() {
                    detail.push_str(&format!("; not healed: {}", healed.refused.join("; ")));
                }
                journal("success", &detail);
                self.say(
                    Phase::Running,
                    &format!(
                        "running: healed {what} in {:.1}s ({tag})",
                        took as f64 / 1000.0
                    ),
                );
                Some(None)
            }
            Err(heal::HealError::Refused(why)) => {
                self.report(
                    Phase::Degraded,
                    &format!(
                        "degraded: not healing {what}: {} (reported, not acted on)",
                        why.join("; ")
                    ),
                );
                Some(None)
            }
            Err(heal::HealError::Failed(why)) => {
                journal("failed", &format!("{what}: {why}"));
                let pause = self.backoff.next_delay();
                self.say(
                    Phase::Degraded,
                    &format!(
                        "degraded: heal of {what} failed at {why}; retrying in {}s",
                        pause.as_secs().max(1)
                    ),
                );
                Some(Some(pause))
            }
        }
    }
}

async fn watchdog(period: Duration, limit: Duration, alive: Monotonic) {
    loop {
        tokio::time::sleep(period).await;
        if alive.age() < limit {
            notify(&[NotifyState::Watchdog]);
        } else {
            log::error!(operation = "daemon"; "main loop made no progress for {}s; withholding the watchdog ping", alive.age().as_secs());
        }
    }
}

struct Seen {
    docker_ok: bool,
    /// `api=healthy frontend=healthy`, or why nothing could be seen.
    summary: String,
}

/// One line summarizing the project's services, e.g. `api=healthy frontend=healthy`.
async fn observe(config: &Config) -> Seen {
    let docker = match crate::docker::connect_to(
        &config.docker.host,
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            return Seen {
                docker_ok: false,
                summary: format!("Docker unavailable ({e})"),
            }
        }
    };
    let summary = match crate::compose::service_states(&docker, &config.runtime.project_name).await
    {
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
        Err(e) => {
            return Seen {
                docker_ok: false,
                summary: format!("cannot list containers ({e})"),
            }
        }
    };
    Seen {
        docker_ok: true,
        summary,
    }
}

enum Check {
    Clean,
    NoRelease,
    /// Not checked this round (lock busy, Docker or the files unreadable).
    Skipped(String),
    /// The last gated command failed or was interrupted: nothing is
    /// healed. The drift found, to report.
    Waiting {
        why: String,
        drift: Vec<drift::Drift>,
    },
    /// Drift found; the lock is still held for the heal.
    Drift {
        found: drift::Found,
        current: Box<release::CurrentRelease>,
        lock: crate::lock::OperationLock,
    },
}

/// Look for drift under the lock, without waiting for it.
async fn check_drift(config: &Config) -> Check {
    let lock = match crate::lock::acquire(&config.lock_path(), "daemon drift check", Duration::ZERO)
        .await
    {
        Ok(lock) => lock,
        Err(e) => return Check::Skipped(e.to_string()),
    };
    let current = match release::read_current(config) {
        Ok(Some(current)) => current,
        Ok(None) => return Check::NoRelease,
        Err(e) => return Check::Skipped(format!("cannot read the current release: {e}")),
    };
    let docker = match crate::docker::connect_to(
        &config.docker.host,
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => return Check::Skipped(e.to_string()),
    };
    let detected = drift::detect(&docker, config, &current.release).await;
    if let Some(why) = authority::waiting_for(config) {
        return Check::Waiting {
            why,
            drift: detected.map(|f| f.drift).unwrap_or_default(),
        };
    }
    match detected {
        Ok(found) if found.drift.is_empty() => Check::Clean,
        Ok(found) => Check::Drift {
            found,
            current: Box::new(current),
            lock,
        },
        Err(e) => Check::Skipped(format!("cannot plan: {e}")),
    }
}
