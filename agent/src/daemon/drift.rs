//! Drift: how what runs differs from the current release, in the terms a
//! heal can fix.
//!
//! The rules are the converge planner's, so the daemon and a deploy agree
//! on what "different" means (and both agree with `docker compose up`):
//!
//! - **missing**: a service has no container;
//! - **exited**: its container is `exited`, `created` or `dead`, so neither
//!   it nor its restart policy runs it (`restarting` is the Engine bringing
//!   it back: not drift). A one-shot service (another service waits for it
//!   with `service_completed_successfully`) is meant to exit: not drift;
//! - **image**: the container runs another image than the release's tag
//!   points to;
//! - **config**: its config hash (Compose's `com.docker.compose.config-hash`)
//!   differs from the one the env and Compose files on disk give,
//!   environment included.
//!
//! Missing and exited are crash-type drift, which a heal may act on
//! ([`super::heal`]); an exited container is exited drift even when its
//! image or config differs too. Image and config drift are only reported:
//! they are what a person's `docker compose up`, a failed deploy or a
//! `runtime-env --execute` left, and only a gated command changes those.
//!
//! A drift is healed only once it holds still: seen the same (same
//! services, kinds and containers) in two checks in a row, with no
//! container of the project starting its healthcheck or created, started
//! or stopped in the last [`QUIET`]. An operator's `docker compose up`
//! stops, recreates and starts containers in steps, waiting for health in
//! between; a check that lands in the middle sees exited or missing
//! containers that Compose is about to replace, and must leave them alone.
//!
//! Not drift: a container an operator recreated with `docker compose up -d`
//! from the same release (same image, same hash: the planner keeps it), a
//! surplus or orphan container (a deploy removes those, a heal does not
//! need to), a paused container (someone paused it on purpose), an
//! unhealthy one (its healthcheck and restart policy are Docker's job; the
//! status shows it), and an image that is no longer tagged on the host
//! while its container runs (nothing to fix until it stops).

use std::collections::BTreeSet;
use std::fmt;

use crate::compose::{self, Action, Plan, Project, Reason};
use crate::config::Config;
use crate::error::Error;
use crate::release::Release;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Exited,
    Image,
    Config,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Missing => "missing",
            Kind::Exited => "exited",
            Kind::Image => "another image",
            Kind::Config => "another config",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub service: String,
    pub kind: Kind,
    /// The container id it concerns (`None` when missing).
    pub container: Option<String>,
}

/// How long the project must be still before a drift is healed.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// What one check found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub drift: Vec<Drift>,
    /// Why the project is not still (`api health starting`, `frontend
    /// started 3s ago`); `None` when it is.
    pub moving: Option<String>,
}

/// The facts of one container that say whether it is in motion.
#[derive(Debug, Clone, Default)]
pub struct Motion {
    pub container: String,
    pub health: Option<String>,
    /// RFC 3339 times of creation, last start and last stop (Docker
    /// reports `0001-01-01T00:00:00Z` for "never").
    pub times: Vec<String>,
}

/// The first sign that the project is changing right now, if any.
pub fn in_motion(
    containers: &[Motion],
    now: chrono::DateTime<chrono::Utc>,
    quiet: std::time::Duration,
) -> Option<String> {
    let quiet = chrono::Duration::from_std(quiet).unwrap_or(chrono::Duration::MAX);
    for c in containers {
        if c.health.as_deref() == Some("starting") {
            return Some(format!("{} health starting", c.container));
        }
        for t in &c.times {
            if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
                let age = now.signed_duration_since(at.with_timezone(&chrono::Utc));
                if age < quiet {
                    return Some(format!(
                        "{} changed {}s ago",
                        c.container,
                        age.num_seconds().max(0)
                    ));
                }
            }
        }
    }
    None
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.service, self.kind)
    }
}

/// `api missing, frontend exited`.
pub fn describe(drift: &[Drift]) -> String {
    drift
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Services another service waits on with `service_completed_successfully`.
pub fn one_shot_services(project: &Project) -> BTreeSet<String> {
    project
        .services
        .iter()
        .flat_map(|s| s.depends_on.iter())
        .filter(|(_, dep)| dep.condition == compose::model::Condition::ServiceCompletedSuccessfully)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The rules above, applied to a converge plan.
pub fn rules(plan: &Plan, one_shot: &BTreeSet<String>) -> Vec<Drift> {
    let mut out = Vec::new();
    for s in &plan.services {
        let state = s.container.as_ref().map_or("", |c| c.state.as_str());
        let crashed = match state {
            "exited" => !one_shot.contains(&s.service),
            "created" | "dead" => true,
            _ => false,
        };
        let kind = match &s.action {
            Action::Create => Some(Kind::Missing),
            Action::Remove => None,
            // A crash is a crash whatever else differs: the heal decides
            // whether it can bring it back with the recorded config.
            _ if crashed => Some(Kind::Exited),
            Action::Keep { .. } => None,
            // The release's image is not on the host: the planner cannot
            // compare, and a running container is left alone.
            Action::Recreate { .. } if s.image_id.is_none() => None,
            Action::Recreate {
                reason: Reason::Image,
            } => Some(Kind::Image),
            Action::Recreate { .. } => Some(Kind::Config),
        };
        if let Some(kind) = kind {
            out.push(Drift {
                service: s.service.clone(),
                kind,
                container: s.container.as_ref().map(|c| c.id.clone()),
            });
        }
    }
    out
}

/// Drift of what runs from `release`, using the env files on disk (a heal
/// never renders them). The caller holds the operation lock, so no
/// deploy is half-way through its converge.
pub async fn detect(
    docker: &bollard::Docker,
    config: &Config,
    release: &Release,
) -> Result<Found, Error> {
    let vars = crate::deploy::compose_vars(config, release);
    let project = Project::load(
        config.runtime.compose_file.as_path(),
        &config.runtime.project_name,
        &vars,
    )?;
    let plan = compose::plan(docker, &project).await?;
    let drift = rules(&plan, &one_shot_services(&project));
    if drift.is_empty() {
        return Ok(Found::default());
    }
    let mut motion = Vec::new();
    for c in plan.services.iter().filter_map(|s| s.container.as_ref()) {
        // Gone since the list: that is motion too.
        let Ok(info) = docker
            .inspect_container(
                &c.id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        else {
            return Ok(Found {
                drift,
                moving: Some(format!("{} went away", c.name)),
            });
        };
        let state = info.state.unwrap_or_default();
        motion.push(Motion {
            container: c.name.clone(),
            health: state.health.and_then(|h| h.status).map(|s| s.to_string()),
            times: [info.created, state.started_at, state.finished_at]
                .into_iter()
                .flatten()
                .collect(),
        });
    }
    Ok(Found {
        drift,
        moving: in_motion(&motion, chrono::Utc::now(), QUIET),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::plan::{Existing, ServicePlan};

    fn service(name: &str, action: Action, state: Option<&str>, image: bool) -> ServicePlan {
        ServicePlan {
            service: name.into(),
            action,
            container: state.map(|s| Existing {
                id: format!("id-{name}"),
                name: format!("p-{name}-1"),
                state: s.into(),
            }),
            image: Some(format!("registry/{name}:sha-1")),
            image_id: image.then(|| format!("sha256:{name}")),
            config_hash: Some("h".into()),
        }
    }

    fn plan(services: Vec<ServicePlan>) -> Plan {
        Plan {
            project: "p".into(),
            services,
        }
    }

    const RUNNING: Action = Action::Keep { running: true };
    const STOPPED: Action = Action::Keep { running: false };

    #[test]
    fn the_same_release_running_is_no_drift_whoever_created_the_containers() {
        // After an operator's `docker compose up -d` (or `--force-recreate`)
        // of the same release, every container has the release's image and
        // config hash: the planner keeps each one, whatever its id or age.
        let p = plan(vec![
            service("postgres", RUNNING, Some("running"), true),
            service("api", RUNNING, Some("running"), true),
            service("frontend", RUNNING, Some("running"), true),
        ]);
        assert!(rules(&p, &BTreeSet::new()).is_empty());
        // The Engine restarting a crashed container (restart policy) too.
        let p = plan(vec![service("api", RUNNING, Some("restarting"), true)]);
        assert!(rules(&p, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn missing_exited_other_image_and_other_config_are_drift() {
        let p = plan(vec![
            service("postgres", Action::Create, None, true),
            service("api", STOPPED, Some("exited"), true),
            service(
                "frontend",
                Action::Recreate {
                    reason: Reason::Image,
                },
                Some("running"),
                true,
            ),
            service(
                "worker",
                Action::Recreate {
                    reason: Reason::Env,
                },
                Some("running"),
                true,
            ),
            service(
                "cron",
                Action::Recreate {
                    reason: Reason::Config,
                },
                Some("running"),
                true,
            ),
            service("init", STOPPED, Some("created"), true),
            service("dead", STOPPED, Some("dead"), true),
        ]);
        let kinds: Vec<(String, Kind)> = rules(&p, &BTreeSet::new())
            .into_iter()
            .map(|d| (d.service, d.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("postgres".to_string(), Kind::Missing),
                ("api".into(), Kind::Exited),
                ("frontend".into(), Kind::Image),
                ("worker".into(), Kind::Config),
                ("cron".into(), Kind::Config),
                ("init".into(), Kind::Exited),
                ("dead".into(), Kind::Exited),
            ]
        );
        assert_eq!(
            describe(&rules(&p, &BTreeSet::new())[..2]),
            "postgres missing, api exited"
        );
    }

    #[test]
    fn a_crashed_container_is_exited_drift_even_when_its_config_differs_too() {
        // `runtime-env --execute` changed the env file, then the container
        // died: a crash, which the heal may bring back with its recorded
        // config; running, the same container is config drift (reported).
        let env = Action::Recreate {
            reason: Reason::Env,
        };
        let p = plan(vec![
            service("api", env.clone(), Some("exited"), true),
            service("web", env, Some("running"), true),
        ]);
        let kinds: Vec<Kind> = rules(&p, &BTreeSet::new())
            .into_iter()
            .map(|d| d.kind)
            .collect();
        assert_eq!(kinds, [Kind::Exited, Kind::Config]);
    }

    #[test]
    fn orphans_pauses_finished_one_shots_and_untagged_images_are_not_drift() {
        let p = plan(vec![
            service("old", Action::Remove, Some("running"), true),
            service("api", STOPPED, Some("paused"), true),
            service("migrate", STOPPED, Some("exited"), true),
            service(
                "frontend",
                Action::Recreate {
                    reason: Reason::Image,
                },
                Some("running"),
                false,
            ),
        ]);
        let one_shot = BTreeSet::from(["migrate".to_string()]);
        assert!(
            rules(&p, &one_shot).is_empty(),
            "{:?}",
            rules(&p, &one_shot)
        );
        // A one-shot that was never created is still missing.
        let p = plan(vec![service("migrate", Action::Create, None, true)]);
        assert_eq!(rules(&p, &one_shot).len(), 1);
    }

    #[test]
    fn a_project_that_is_starting_or_just_changed_is_in_motion() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let still = |name: &str| Motion {
            container: name.into(),
            health: Some("healthy".into()),
            times: vec![
                "2026-11-25T09:00:00Z".into(),
                "2026-11-25T09:00:01Z".into(),
                "0001-01-01T00:00:00Z".into(),
            ],
        };
        assert_eq!(
            in_motion(&[still("p-api-1"), still("p-web-1")], now, QUIET),
            None
        );
        // Compose waits for a dependency's health before the next step.
        let mut starting = still("p-postgres-1");
        starting.health = Some("starting".into());
        assert_eq!(
            in_motion(&[still("p-api-1"), starting], now, QUIET).as_deref(),
            Some("p-postgres-1 health starting")
        );
        // Compose just stopped it (to recreate it), 4 s ago.
        let mut stopped = still("p-api-1");
        stopped.health = None;
        stopped.times.push("2026-11-25T10:00:26.5Z".into());
        assert_eq!(
            in_motion(&[stopped], now, QUIET).as_deref(),
            Some("p-api-1 changed 3s ago")
        );
        // Stopped 11 s ago and left so: still, a heal may act.
        let mut left = still("p-api-1");
        left.times.push("2026-11-25T10:00:19Z".into());
        assert_eq!(in_motion(&[left], now, QUIET), None);
    }

    #[test]
    fn one_shots_are_the_targets_of_service_completed_successfully() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("compose.yaml");
        std::fs::write(
            &file,
            "services:\n  migrate:\n    image: busybox:1\n  api:\n    image: busybox:1\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n  web:\n    image: busybox:1\n    depends_on:\n      api:\n        condition: service_healthy\n",
        )
        .expect("write");
        let project =
            Project::load(&file, "p", &Default::default()).expect("the compose file loads");
        assert_eq!(
            one_shot_services(&project),
            BTreeSet::from(["migrate".to_string()])
        );
    }
}
