//! `wavemap-agent status`: the one command an operator runs over SSH.
//!
//! Read-only and fast: no AWS call, never the lock, one container list from
//! Docker (skipped with a note when Docker does not answer within a second
//! or two). It gathers what the agent knows from its own files (current
//! release, receipt, env files' age and key counts, the last database
//! status, the operation journal, boot recovery timings, the daemon's
//! heartbeat) and what runs, and says whether the receipt matches what runs.
//! Human output fits 80 columns; `--json` is a stable object for tools.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;
use crate::daemon::{self, BootRecovery};
use crate::error::{Error, Stage};
use crate::output::Report;
use crate::{envfile, fsutil, journal, lock, release};

#[derive(Debug, Serialize)]
pub struct Status {
    pub project: String,
    pub daemon: DaemonView,
    pub lock_holder: Option<String>,
    pub current_release: Option<ReleaseView>,
    pub receipt: Option<ReleaseView>,
    /// `matches`, `differs`, `no-receipt`, `unknown` (Docker unavailable).
    pub receipt_matches_running: String,
    pub docker: String,
    pub services: Vec<ServiceView>,
    pub env_files: Vec<EnvFileView>,
    pub database: Option<serde_json::Value>,
    pub operations: Vec<OperationView>,
    pub boot_recovery: Option<BootRecovery>,
    /// Free space on Docker's data root and the state dir; what a prune
    /// would reclaim.
    pub disk: crate::images::DiskView,
}

#[derive(Debug, Serialize)]
pub struct DaemonView {
    /// `running`, `stale`, `not-running`.
    pub state: String,
    pub phase: Option<String>,
    pub last_heartbeat: Option<String>,
    pub heartbeat_age_secs: Option<u64>,
    pub summary: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ReleaseView {
    pub image_tag: String,
    pub source_sha: String,
    pub deployment_version: String,
    pub backend_image: String,
    pub frontend_image: String,
    /// The recorded repo digests (`sha256:...`), absent before schema 2.
    pub backend_digest: Option<String>,
    pub frontend_digest: Option<String>,
    pub at: String,
    /// `manual` for a release made by hand (no workflow run), else the
    /// workflow and its run as given (`deploy-dev.yml run 412 attempt 1`).
    pub workflow: String,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub service: String,
    pub container: String,
    pub state: String,
    pub health: Option<String>,
    pub image: String,
    pub uptime_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct EnvFileView {
    pub file: String,
    pub keys: Option<usize>,
    pub age_secs: Option<u64>,
    pub mode: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct OperationView {
    pub command: String,
    pub started_at: String,
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
}

pub async fn gather(config: &Config) -> Status {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let daemon = match daemon::read_heartbeat(config) {
        None => DaemonView {
            state: "not-running".into(),
            phase: None,
            last_heartbeat: None,
            heartbeat_age_secs: None,
            summary: None,
        },
        Some(beat) => {
            let age = now.saturating_sub(beat.updated_unix);
            let alive = pid_alive(beat.pid);
            let fresh = age <= 3 * config.daemon.health_interval.get().max(10);
            DaemonView {
                state: match (alive, fresh) {
                    (true, true) => "running",
                    (true, false) => "stale",
                    (false, _) => "not-running",
                }
                .into(),
                phase: Some(beat.phase.to_string()),
                last_heartbeat: Some(beat.updated_at),
                heartbeat_age_secs: Some(age),
                summary: Some(beat.summary),
            }
        }
    };
    let view = |r: &release::Release, at: &str| ReleaseView {
        image_tag: r.image_tag.clone(),
        source_sha: r.source_sha.clone(),
        deployment_version: r.deployment_version.clone(),
        backend_image: r.backend_image_uri.clone(),
        frontend_image: r.frontend_image_uri.clone(),
        backend_digest: r.backend_digest.clone(),
        frontend_digest: r.frontend_digest.clone(),
        at: at.to_owned(),
        workflow: workflow_text(r),
    };
    let current = release::read_current(config).ok().flatten();
    let receipt = release::read_receipt(config).ok().flatten();

    let mut services = Vec::new();
    // One connection for both; the disk view's Engine calls run beside the
    // container list, not after it.
    let docker: Result<bollard::Docker, String> = match tokio::time::timeout(
        Duration::from_secs(3),
        crate::docker::connect_to(
            &config.docker.host,
            std::time::Duration::from_secs(3),
            std::time::Duration::ZERO,
        ),
    )
    .await
    {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(format!("unavailable: {e}")),
        Err(_) => Err("unavailable: no answer within 3s".to_owned()),
    };
    let containers = async {
        let docker = docker.as_ref().map_err(Clone::clone)?;
        match tokio::time::timeout(
            Duration::from_secs(3),
            crate::compose::service_states(docker, &config.runtime.project_name),
        )
        .await
        {
            Ok(Ok(states)) => Ok(states),
            Ok(Err(e)) => Err(format!("unavailable: {e}")),
            Err(_) => Err("unavailable: no answer within 3s".to_owned()),
        }
    };
    let (containers, disk) = tokio::join!(
        containers,
        crate::images::view(config, docker.as_ref().ok())
    );
    let docker_state = match containers {
        Ok(states) => {
            for s in states {
                services.push(ServiceView {
                    uptime_secs: s.started_at.as_deref().and_then(|t| {
                        chrono::DateTime::parse_from_rfc3339(t)
                            .ok()
                            .map(|t| now.saturating_sub(u64::try_from(t.timestamp()).unwrap_or(0)))
                    }),
                    service: s.service,
                    container: s.container_name,
                    state: s.state,
                    health: s.health,
                    image: s.image,
                });
            }
            "ok".to_owned()
        }
        Err(why) => why,
    };
    let running_image = |service: &str| {
        services
            .iter()
            .find(|s| s.service == service)
            .map(|s| s.image.clone())
    };
    let receipt_matches_running = match (&receipt, docker_state.as_str()) {
        (None, _) => "no-receipt".to_owned(),
        (Some(_), s) if s != "ok" => "unknown".to_owned(),
        (Some(r), _) => {
            let same = running_image(&config.runtime.backend_service)
                == Some(r.release.backend_ref())
                && running_image(&config.runtime.frontend_service)
                    == Some(r.release.frontend_ref());
            if same { "matches" } else { "differs" }.to_owned()
        }
    };

    let mut env_files = Vec::new();
    for group in &config.runtime.groups {
        let path = config.runtime.env_dir.join(format!("{group}.env"));
        let meta = std::fs::symlink_metadata(&path).ok();
        let keys = fsutil::read_owned(&path)
            .ok()
            .flatten()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| envfile::parse(&text).ok())
            .map(|vars| vars.len());
        env_files.push(EnvFileView {
            file: format!("{group}.env"),
            keys,
            age_secs: fsutil::mtime(&path)
                .map(|m| now.saturating_sub(u64::try_from(m).unwrap_or(0))),
            mode: meta.map(|m| {
                use std::os::unix::fs::PermissionsExt;
                format!("{:o}", m.permissions().mode() & 0o7777)
            }),
        });
    }

    let database = fsutil::read_owned(&config.database_status_path())
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let operations = journal::tail(&config.journal_path(), 40)
        .into_iter()
        .filter(|e| e.event == "end")
        .rev()
        .take(5)
        .map(|e| OperationView {
            command: e.command,
            started_at: e.started_at,
            outcome: e.outcome.unwrap_or_default(),
            exit_code: e.exit_code,
            duration_ms: e.duration_ms,
        })
        .collect();

    Status {
        project: config.runtime.project_name.clone(),
        daemon,
        lock_holder: lock::current_holder(&config.lock_path()),
        current_release: current.as_ref().map(|c| view(&c.release, &c.deployed_at)),
        receipt: receipt.as_ref().map(|r| view(&r.release, &r.recorded_at)),
        receipt_matches_running,
        docker: docker_state,
        services,
        env_files,
        database,
        operations,
        boot_recovery: daemon::read_boot_recovery(config),
        disk,
    }
}

/// What `status` says about who made a release: `manual` when no workflow
/// run was given, else the parts CI gave (nothing filled in).
fn workflow_text(r: &release::Release) -> String {
    let Some(run) = &r.workflow_run else {
        return "manual".to_owned();
    };
    let mut parts = Vec::new();
    if let Some(name) = &run.name {
        parts.push(name.clone());
    }
    if let Some(id) = &run.run_id {
        parts.push(format!("run {id}"));
    }
    if let Some(attempt) = &run.run_attempt {
        parts.push(format!("attempt {attempt}"));
    }
    parts.join(" ")
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `status` command: human view on stdout (or JSON), a few markers.
pub async fn command(config: &Config, json: bool, report: &mut Report) -> Result<(), Error> {
    let status = gather(config).await;
    report.marker("WAVEMAP_STATUS_DAEMON", &status.daemon.state);
    report.marker(
        "WAVEMAP_STATUS_RELEASE",
        status
            .current_release
            .as_ref()
            .map_or("none", |r| r.image_tag.as_str()),
    );
    report.marker(
        "WAVEMAP_STATUS_RECEIPT_MATCHES",
        &status.receipt_matches_running,
    );
    if let Some(free) = status.disk.docker_root_free_bytes {
        report.marker(
            "WAVEMAP_STATUS_DOCKER_ROOT_FREE_MB",
            crate::images::disk::mib(free),
        );
    }
    let healthy = status
        .services
        .iter()
        .filter(|s| {
            s.health.as_deref().unwrap_or(s.state.as_str()) == "healthy"
                || (s.health.is_none() && s.state == "running")
        })
        .count();
    report.marker(
        "WAVEMAP_STATUS_SERVICES",
        format!("{healthy}/{} healthy", status.services.len()),
    );
    if json {
        report
            .set_data(serde_json::to_value(&status).map_err(|e| Error::caused(Stage::Status, e))?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

/// `docker 12.3G free, state 40.1G free, prune ~1.2G (4 images)`.
fn disk_text(d: &crate::images::DiskView) -> String {
    let gib = |b: u64| format!("{:.1}G", b as f64 / (1u64 << 30) as f64);
    let docker = match (d.docker_root_free_bytes, &d.docker_root_note) {
        (Some(free), _) => format!(
            "docker {} free{}",
            gib(free),
            if d.low { " (LOW)" } else { "" }
        ),
        (None, Some(note)) if note.contains("not reachable") => "docker root not reachable".into(),
        _ => "docker -".into(),
    };
    let state = d
        .state_dir_free_bytes
        .map_or("state -".into(), |b| format!("state {} free", gib(b)));
    let prune = match (d.prune_reclaimable_bytes, d.prune_images) {
        (Some(b), Some(n)) => format!("prune ~{} ({n} images)", gib(b)),
        _ => "prune -".into(),
    };
    format!("{docker}, {state}, {prune}")
}

fn age(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) if s < 172_800 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86_400),
    }
}

/// `text` cut to `max` characters (with `...`), so a line fits 80 columns.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

fn short_image(uri: &str) -> String {
    let name = uri.rsplit('/').next().unwrap_or(uri);
    match name.split_once(":sha-") {
        Some((repo, sha)) => format!("{repo}:sha-{}", &sha[..sha.len().min(12)]),
        None => name.chars().take(30).collect(),
    }
}

/// The human view, at most 80 columns wide.
pub fn render(s: &Status) -> String {
    use comfy_table::{presets::NOTHING, ContentArrangement, Table};
    let mut out = String::new();
    let line =
        |out: &mut String, label: &str, value: &str| out.push_str(&format!("{label:<16}{value}\n"));
    line(&mut out, "project", &s.project);
    let daemon = match (&s.daemon.last_heartbeat, s.daemon.heartbeat_age_secs) {
        (Some(_), Some(a)) => format!(
            "{} ({}, heartbeat {} ago)",
            s.daemon.state,
            s.daemon.phase.as_deref().unwrap_or("-"),
            age(Some(a))
        ),
        _ => s.daemon.state.clone(),
    };
    line(&mut out, "daemon", &daemon);
    // The daemon's last STATUS= line: ready, degraded (why, next retry),
    // healing, healed.
    if let Some(summary) = s.daemon.summary.as_deref().filter(|t| !t.is_empty()) {
        line(&mut out, "daemon says", &clip(summary, 64));
    }
    if let Some(holder) = &s.lock_holder {
        line(&mut out, "lock", &format!("held: {holder}"));
    }
    let rel = |r: &Option<ReleaseView>| match r {
        Some(r) => format!(
            "sha-{} {} ({}) {}",
            &r.source_sha[..r.source_sha.len().min(12)],
            r.deployment_version,
            r.at,
            r.workflow
        ),
        None => "none".into(),
    };
    // The short digests say which bytes: a tag can be pushed again.
    let digests = |r: &Option<ReleaseView>| {
        r.as_ref().map(|r| {
            let short = |d: &Option<String>| {
                d.as_deref()
                    .map_or("-".to_owned(), |d| crate::image::short_digest(d).to_owned())
            };
            format!(
                "backend {} frontend {}",
                short(&r.backend_digest),
                short(&r.frontend_digest)
            )
        })
    };
    line(&mut out, "current release", &rel(&s.current_release));
    if let Some(d) = digests(&s.current_release) {
        line(&mut out, "  digests", &d);
    }
    line(&mut out, "last-good", &rel(&s.receipt));
    if let Some(d) = digests(&s.receipt) {
        line(&mut out, "  digests", &d);
    }
    line(&mut out, "receipt vs run", &s.receipt_matches_running);
    if s.docker != "ok" {
        line(&mut out, "docker", &s.docker);
    }
    line(&mut out, "disk", &clip(&disk_text(&s.disk), 64));
    if let Some(db) = &s.database {
        let get = |k: &str| {
            db.get(k)
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .or_else(|| Some(v.to_string()))
                })
                .unwrap_or_else(|| "-".into())
        };
        line(
            &mut out,
            "database",
            &format!(
                "{} gate {} (checked {})",
                get("state"),
                get("gate"),
                get("checkedAt")
            ),
        );
    }
    if let Some(b) = &s.boot_recovery {
        let attempts = match b.attempts {
            0 | 1 => String::new(),
            n => format!(" ({n} attempts)"),
        };
        line(
            &mut out,
            "boot recovery",
            &clip(
                &format!(
                    "{}{attempts} docker {}ms, converged {}ms, healthy {}ms",
                    b.result,
                    b.to_docker_ms.unwrap_or(0),
                    b.to_converged_ms.unwrap_or(0),
                    b.to_healthy_ms.unwrap_or(0)
                ),
                64,
            ),
        );
        if !b.env.is_empty() {
            line(&mut out, "boot env", &clip(&b.env, 64));
        }
        if b.result == daemon::RecoveryResult::Failed {
            line(&mut out, "boot failure", &clip(&b.detail, 64));
        }
    }

    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(80);
    table.set_header(vec!["SERVICE", "STATE", "HEALTH", "UP", "IMAGE"]);
    for svc in &s.services {
        table.add_row(vec![
            svc.service.clone(),
            svc.state.clone(),
            svc.health.clone().unwrap_or_else(|| "-".into()),
            age(svc.uptime_secs),
            short_image(&svc.image),
        ]);
    }
    out.push('\n');
    out.push_str(&table.to_string());
    out.push('\n');

    let mut env = Table::new();
    env.load_preset(NOTHING).set_width(80);
    env.set_header(vec!["ENV FILE", "KEYS", "AGE", "MODE"]);
    for f in &s.env_files {
        env.add_row(vec![
            f.file.clone(),
            f.keys.map_or("-".into(), |k| k.to_string()),
            age(f.age_secs),
            f.mode.clone().unwrap_or_else(|| "missing".into()),
        ]);
    }
    out.push('\n');
    out.push_str(&env.to_string());
    out.push('\n');

    if !s.operations.is_empty() {
        let mut ops = Table::new();
        ops.load_preset(NOTHING).set_width(80);
        ops.set_header(vec![
            "LAST OPERATIONS",
            "STARTED",
            "OUTCOME",
            "EXIT",
            "TOOK",
        ]);
        for o in &s.operations {
            ops.add_row(vec![
                o.command.clone(),
                o.started_at
                    .get(..19)
                    .unwrap_or(&o.started_at)
                    .replace('T', " "),
                o.outcome.clone(),
                o.exit_code.map_or("-".into(), |c| c.to_string()),
                o.duration_ms
                    .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            ]);
        }
        out.push('\n');
        out.push_str(&ops.to_string());
        out.push('\n');
    }
    out
}
