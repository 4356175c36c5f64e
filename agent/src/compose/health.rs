//! Waiting for services to be ready, with a deadline.
//!
//! `unhealthy` is not final before the deadline: a backend that fails its
//! first checks while the database warms up and then recovers passes. What
//! is final earlier: a one-shot service (a `service_completed_successfully`
//! dependency) that exited non-zero, or a container that exited and has no
//! restart policy to bring it back. At the deadline the error names each
//! service that is not ready and shows its last healthcheck output.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use bollard::Docker;
use serde::Serialize;

use super::model::{Condition, Project};
use super::plan::docker_error;
use crate::error::{Error, Stage};
use crate::retry::{Backoff, Retry};

/// How often waits look at the containers again. An inspect on the local
/// socket costs a few milliseconds, and noticing a dependency or the last
/// service turn healthy is on every deploy's critical path (BENCHMARKS.md:
/// a 1 s poll added about a second per deploy).
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What "ready" means for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Started at least once (running, restarting or already exited).
    Started,
    /// Running, and healthy if it has a healthcheck.
    Ready,
    /// Healthy; a container without a healthcheck can never satisfy this.
    Healthy,
    /// Exited with status 0 (one-shot jobs).
    Completed,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Started => "started",
            Target::Ready => "ready",
            Target::Healthy => "healthy",
            Target::Completed => "completed successfully",
        })
    }
}

impl Target {
    pub fn for_condition(condition: Condition) -> Self {
        match condition {
            Condition::ServiceStarted => Target::Started,
            Condition::ServiceHealthy => Target::Healthy,
            Condition::ServiceCompletedSuccessfully => Target::Completed,
        }
    }
}

/// One service's state when the wait ended.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceHealth {
    pub service: String,
    pub container: String,
    pub target: Target,
    pub state: String,
    pub health: Option<String>,
    pub exit_code: Option<i64>,
    pub ready: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub services: Vec<ServiceHealth>,
    pub waited_ms: u64,
}

enum Verdict {
    Ready,
    Waiting,
    Failed(String),
}

struct Observed {
    state: String,
    exit_code: Option<i64>,
    health: Option<String>,
    has_restart_policy: bool,
    log: Vec<String>,
}

async fn observe(docker: &Docker, container: &str) -> Result<Option<Observed>, Error> {
    let info: ContainerInspectResponse = match docker.inspect_container(container, None).await {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(docker_error(&format!("inspect container {container}"), e)),
    };
    let state = info.state.unwrap_or_default();
    let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
    let health = state
        .health
        .as_ref()
        .and_then(|h| h.status)
        .and_then(|s| match s {
            HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
            other => Some(other.to_string()),
        });
    let log = state
        .health
        .and_then(|h| h.log)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .take(3)
        .rev()
        .map(|r| {
            let output: String = r
                .output
                .unwrap_or_default()
                .trim()
                .chars()
                .take(300)
                .collect();
            format!("exit {}: {}", r.exit_code.unwrap_or(-1), output)
        })
        .collect();
    let policy = info
        .host_config
        .and_then(|h| h.restart_policy)
        .and_then(|p| p.name)
        .map(|n| n.to_string())
        .unwrap_or_default();
    Ok(Some(Observed {
        state: status.to_string(),
        exit_code: state.exit_code,
        health,
        has_restart_policy: !(policy.is_empty() || policy == "no"),
        log,
    }))
}

fn judge(target: Target, o: &Observed) -> Verdict {
    let exited = matches!(o.state.as_str(), "exited" | "dead");
    let gone_for_good = exited && !o.has_restart_policy;
    match target {
        Target::Completed => match (exited, o.exit_code) {
            (true, Some(0)) => Verdict::Ready,
            (true, code) => Verdict::Failed(format!(
                "exited with status {} (a one-shot service must exit 0)",
                code.unwrap_or(-1)
            )),
            _ => Verdict::Waiting,
        },
        Target::Started => match o.state.as_str() {
            "running" | "restarting" | "exited" => Verdict::Ready,
            _ => Verdict::Waiting,
        },
        Target::Healthy | Target::Ready => {
            if gone_for_good {
                return Verdict::Failed(format!(
                    "exited with status {} and has no restart policy",
                    o.exit_code.unwrap_or(-1)
                ));
            }
            match (o.state.as_str(), o.health.as_deref()) {
                ("running", Some("healthy")) => Verdict::Ready,
                ("running", None) if target == Target::Ready => Verdict::Ready,
                ("running", None) => {
                    Verdict::Failed("has no healthcheck, so it can never become healthy".into())
                }
                _ => Verdict::Waiting,
            }
        }
    }
}

fn describe(o: &Observed) -> String {
    let mut text = o.state.clone();
    if let Some(h) = &o.health {
        text.push_str(&format!(", {h}"));
    }
    if matches!(o.state.as_str(), "exited" | "dead") {
        text.push_str(&format!(", exit status {}", o.exit_code.unwrap_or(-1)));
    }
    if !o.log.is_empty() {
        text.push_str("; last healthcheck output: ");
        text.push_str(&o.log.join(" | "));
    }
    text
}

/// Wait until `container` meets `target` or `deadline` passes. Used by the
/// converge for `depends_on` conditions; `stage` names the failure.
pub(crate) async fn wait_for(
    docker: &Docker,
    label: &str,
    container: &str,
    target: Target,
    deadline: Instant,
    stage: Stage,
) -> Result<(), Error> {
    let mut retry = Retry::for_time(
        deadline.saturating_duration_since(Instant::now()),
        Backoff::constant(POLL_INTERVAL),
    );
    loop {
        let observed = observe(docker, container).await?;
        let verdict = match &observed {
            None => Verdict::Failed("has no container".into()),
            Some(o) => judge(target, o),
        };
        match verdict {
            Verdict::Ready => return Ok(()),
            Verdict::Failed(why) => {
                let state = observed.as_ref().map(describe).unwrap_or_default();
                return Err(Error::failed(
                    stage,
                    format!("service {label} {why} ({state})"),
                ));
            }
            Verdict::Waiting if retry.exhausted() => {
                let state = observed.as_ref().map(describe).unwrap_or_default();
                return Err(Error::failed(
                    stage,
                    format!("service {label} did not become {target} in time: {state}"),
                ));
            }
            Verdict::Waiting => retry.pause().await,
        }
    }
}

/// Services some other service waits on with
/// `service_completed_successfully`: one-shot jobs.
pub fn one_shot_services(project: &Project) -> BTreeSet<String> {
    project
        .services
        .iter()
        .flat_map(|s| s.depends_on.iter())
        .filter(|(_, d)| d.condition == Condition::ServiceCompletedSuccessfully)
        .map(|(name, _)| name.clone())
        .collect()
}

/// A service's name in a health message; with replicas, the container's.
fn label(service: &str, container: &str, scale: u32) -> String {
    if scale > 1 {
        container.to_owned()
    } else {
        service.to_owned()
    }
}

/// Wait until every service is ready (healthy where it has a healthcheck,
/// running otherwise, exited 0 for one-shot services) or `deadline` passes.
pub async fn wait_healthy(
    docker: &Docker,
    project: &Project,
    deadline: Duration,
) -> Result<HealthReport, Error> {
    let mut retry = Retry::for_time(deadline, Backoff::constant(POLL_INTERVAL));
    let one_shots = one_shot_services(project);
    loop {
        let mut report = Vec::new();
        let mut failures = Vec::new();
        let mut waiting = Vec::new();
        // Every replica must be ready: each is a row of its own.
        let replicas = project
            .services
            .iter()
            .flat_map(|s| (1..=s.scale()).map(move |n| (s, project.replica_name(&s.name, n))));
        for (service, container) in replicas {
            let target = if one_shots.contains(&service.name) {
                Target::Completed
            } else {
                Target::Ready
            };
            let observed = observe(docker, &container).await?;
            let verdict = match &observed {
                None => Verdict::Failed("has no container".into()),
                Some(o) => judge(target, o),
            };
            let ready = matches!(verdict, Verdict::Ready);
            match verdict {
                Verdict::Ready => {}
                Verdict::Failed(why) => failures.push(format!(
                    "{}: {why} ({})",
                    label(&service.name, &container, service.scale()),
                    observed.as_ref().map(describe).unwrap_or_default()
                )),
                Verdict::Waiting => waiting.push(format!(
                    "{}: {}",
                    label(&service.name, &container, service.scale()),
                    observed.as_ref().map(describe).unwrap_or_default()
                )),
            }
            report.push(ServiceHealth {
                service: service.name.clone(),
                container,
                target,
                state: observed
                    .as_ref()
                    .map(|o| o.state.clone())
                    .unwrap_or_default(),
                health: observed.as_ref().and_then(|o| o.health.clone()),
                exit_code: observed.as_ref().and_then(|o| o.exit_code),
                ready,
            });
        }
        if !failures.is_empty() {
            return Err(Error::failed(Stage::Health, failures.join("; ")));
        }
        if waiting.is_empty() {
            return Ok(HealthReport {
                services: report,
                waited_ms: retry.elapsed().as_millis() as u64,
            });
        }
        if retry.exhausted() {
            return Err(Error::failed(
                Stage::Health,
                format!(
                    "not healthy after {}s: {}",
                    deadline.as_secs(),
                    waiting.join("; ")
                ),
            ));
        }
        log::debug!(stage = "health"; "waiting for {}", waiting.join("; "));
        retry.pause().await;
    }
}
