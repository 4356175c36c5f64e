//! A heal: bring back crashed containers of the current release, with the
//! config the deploy applied and nothing newer.
//!
//! Only crash-type drift is acted on (a container missing, exited, created
//! and never started, or dead). The heal touches only those services: it
//! runs no render, no pull and no converge of the rest of the project.
//!
//! The config a crashed service comes back with must be the one the deploy
//! converged, which the current release records as Compose config hashes
//! (`configHashes`). A hash is one-way: the daemon cannot rebuild a config
//! from it, only check one. So:
//!
//! - an exited container whose own config hash (its label) is the recorded
//!   one is started as it is: it *is* the recorded config;
//! - a missing container is created from the env and Compose files on disk
//!   only when they give the recorded hash again;
//! - otherwise (the files changed since, by `runtime-env --execute` or by
//!   hand, or nothing was recorded) the heal does not act and says why: a
//!   container built from today's files would be a config rollout no gate
//!   approved, and one rebuilt from a guess would not be the recorded one.
//!   The next deploy or rollback brings the service back.

use std::collections::BTreeMap;
use std::time::Duration;

use super::drift::{Drift, Kind};
use crate::compose::{self, Action, Plan, Project};
use crate::config::Config;
use crate::release::CurrentRelease;

/// What the heal does for one crashed service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create it from the files on disk (they give the recorded hash).
    Create,
    /// Start its existing container (its config is the recorded one).
    Start,
}

/// What a heal did.
#[derive(Debug, Clone, Default)]
pub struct Healed {
    /// `api:start`, `frontend:create`.
    pub changed: Vec<String>,
    /// Crashed services left alone, each with why.
    pub refused: Vec<String>,
}

/// A heal that did not bring anything back.
#[derive(Debug, Clone)]
pub enum HealError {
    /// Nothing can be restored with the recorded config: reported, not
    /// retried (a retry would find the same files).
    Refused(Vec<String>),
    /// It tried and failed (Docker, health): retried with backoff.
    Failed(String),
}

/// The steps for the crashed services of `plan` (made with the files on
/// disk), and the services left alone with why. `labels` maps a container
/// id to its config-hash label, for containers the planner would recreate.
pub fn decide(
    plan: &Plan,
    crashed: &[Drift],
    recorded: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> (Vec<(String, Step)>, Vec<String>) {
    let mut steps = Vec::new();
    let mut refused = Vec::new();
    for d in crashed {
        let Some(entry) = plan
            .services
            .iter()
            .find(|s| s.service == d.service && s.action != Action::Remove)
        else {
            continue;
        };
        let want = recorded.get(&d.service);
        let planned = entry.config_hash.as_ref();
        let step = match &entry.action {
            Action::Create if want.is_some() && want == planned => Ok(Step::Create),
            Action::Create if want.is_none() => Err(format!(
                "{}: no config recorded for it (the release was deployed by an older agent); a deploy recreates it",
                d.service
            )),
            Action::Create => Err(format!(
                "{}: the env or Compose files on disk no longer give the config the deploy applied (changed since, e.g. by runtime-env); the next deploy or rollback recreates it",
                d.service
            )),
            // Its container has the files' config: fine when that is the
            // recorded one, or when nothing was recorded (it is still the
            // container the deploy made, started as it was).
            Action::Keep { .. } if want.is_none() || want == planned => Ok(Step::Start),
            Action::Keep { .. } => Err(format!(
                "{}: its container has a config other than the deployed one; the next deploy or rollback replaces it",
                d.service
            )),
            Action::Recreate {
                reason: compose::Reason::Image,
            } => Err(format!(
                "{}: its container has another image than the release; the next deploy or rollback replaces it",
                d.service
            )),
            Action::Recreate { .. } => {
                let label = d.container.as_ref().and_then(|id| labels.get(id));
                if want.is_some() && label == want {
                    Ok(Step::Start)
                } else {
                    Err(format!(
                        "{}: neither its container nor the files on disk have the config the deploy applied; the next deploy or rollback recreates it",
                        d.service
                    ))
                }
            }
            Action::Remove => continue,
        };
        match step {
            Ok(step) => steps.push((d.service.clone(), step)),
            Err(why) => refused.push(why),
        }
    }
    (steps, refused)
}

/// The plan cut down to `steps`: the healed services only, each created or
/// started, every other service and every orphan left alone.
pub fn heal_plan(plan: &Plan, steps: &[(String, Step)]) -> Plan {
    let services = plan
        .services
        .iter()
        .filter(|s| s.action != Action::Remove)
        .filter_map(|s| {
            let (_, step) = steps.iter().find(|(name, _)| name == &s.service)?;
            let mut s = s.clone();
            s.action = match step {
                Step::Create => Action::Create,
                Step::Start => Action::Keep { running: false },
            };
            Some(s)
        })
        .collect();
    Plan {
        project: plan.project.clone(),
        services,
    }
}

/// Heal the crash-type drift of `current`. The caller holds the operation
/// lock and has checked that the last gated command succeeded.
pub async fn heal(
    config: &Config,
    current: &CurrentRelease,
    crashed: &[Drift],
) -> Result<Healed, HealError> {
    let failed = |what: &str, e: crate::error::Error| HealError::Failed(format!("{what}: {e}"));
    let docker =
        crate::docker::connect_to(&config.docker.host, Duration::from_secs(3), Duration::ZERO)
            .await
            .map_err(|e| failed("Docker", e))?;
    let vars = crate::deploy::compose_vars(config, &current.release);
    let mut project = Project::load(
        config.runtime.compose_file.as_path(),
        &config.runtime.project_name,
        &vars,
    )
    .map_err(|e| failed("compose file", e))?;
    project.dependency_wait = config.runtime.health_timeout.duration();
    let plan = compose::plan(&docker, &project)
        .await
        .map_err(|e| failed("plan", e))?;
    let labels = config_labels(&docker, &plan, crashed).await;
    let (steps, refused) = decide(&plan, crashed, &current.config_hashes, &labels);
    if steps.is_empty() {
        return Err(HealError::Refused(refused));
    }
    let plan = heal_plan(&plan, &steps);
    log::info!(operation = "heal"; "heal plan:\n{plan}");
    compose::converge(&docker, &project, &plan)
        .await
        .map_err(|e| failed("converge", e))?;
    compose::wait_healthy(&docker, &project, config.runtime.health_timeout.duration())
        .await
        .map_err(|e| failed("health", e))?;
    Ok(Healed {
        changed: steps
            .iter()
            .map(|(s, step)| {
                format!(
                    "{s}:{}",
                    if *step == Step::Create {
                        "create"
                    } else {
                        "start"
                    }
                )
            })
            .collect(),
        refused,
    })
}

/// The config-hash label of each crashed container the planner would
/// recreate (its own config may still be the recorded one).
async fn config_labels(
    docker: &bollard::Docker,
    plan: &Plan,
    crashed: &[Drift],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in crashed {
        let recreate = plan
            .services
            .iter()
            .any(|s| s.service == d.service && matches!(s.action, Action::Recreate { .. }));
        let Some(id) = d.container.as_ref().filter(|_| recreate) else {
            continue;
        };
        if let Ok(info) = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            if let Some(hash) = info
                .config
                .and_then(|c| c.labels)
                .and_then(|mut l| l.remove(compose::labels::CONFIG_HASH))
            {
                out.insert(id.clone(), hash);
            }
        }
    }
    out
}

/// The crash-type part of a drift list.
pub fn crashed(drift: &[Drift]) -> Vec<Drift> {
    drift
        .iter()
        .filter(|d| matches!(d.kind, Kind::Missing | Kind::Exited))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::plan::{Existing, ServicePlan};
    use crate::compose::Reason;

    fn entry(name: &str, action: Action, hash: &str) -> ServicePlan {
        ServicePlan {
            service: name.into(),
            action,
            container: Some(Existing {
                id: format!("id-{name}"),
                name: format!("p-{name}-1"),
                state: "exited".into(),
            }),
            image: Some("img".into()),
            image_id: Some("sha256:x".into()),
            config_hash: Some(hash.into()),
        }
    }

    fn drift(name: &str, kind: Kind) -> Drift {
        Drift {
            service: name.into(),
            kind,
            container: (kind != Kind::Missing).then(|| format!("id-{name}")),
        }
    }

    #[test]
    fn a_crashed_service_comes_back_only_with_the_recorded_config() {
        let plan = Plan {
            project: "p".into(),
            services: vec![
                entry("db", Action::Keep { running: false }, "h-db"),
                entry("api", Action::Create, "h-api-new"),
                entry("web", Action::Create, "h-web"),
                entry(
                    "worker",
                    Action::Recreate {
                        reason: Reason::Env,
                    },
                    "h-worker-new",
                ),
                entry(
                    "cron",
                    Action::Recreate {
                        reason: Reason::Env,
                    },
                    "h-cron-new",
                ),
                entry(
                    "other",
                    Action::Recreate {
                        reason: Reason::Image,
                    },
                    "h-other",
                ),
                entry("running", Action::Keep { running: true }, "h-run"),
                entry("orphan", Action::Remove, "-"),
            ],
        };
        let recorded: BTreeMap<String, String> = [
            ("db", "h-db"),
            ("api", "h-api-old"),
            ("web", "h-web"),
            ("worker", "h-worker-old"),
            ("cron", "h-cron-old"),
            ("other", "h-other"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        // worker's container still has the deployed config; cron's not.
        let labels = BTreeMap::from([
            ("id-worker".to_owned(), "h-worker-old".to_owned()),
            ("id-cron".to_owned(), "h-cron-mystery".to_owned()),
        ]);
        let crashed = vec![
            drift("db", Kind::Exited),
            drift("api", Kind::Missing),
            drift("web", Kind::Missing),
            drift("worker", Kind::Exited),
            drift("cron", Kind::Exited),
            drift("other", Kind::Exited),
        ];
        let (steps, refused) = decide(&plan, &crashed, &recorded, &labels);
        assert_eq!(
            steps,
            vec![
                ("db".to_owned(), Step::Start),
                ("web".to_owned(), Step::Create),
                ("worker".to_owned(), Step::Start),
            ]
        );
        let refused = refused.join("\n");
        for name in ["api:", "cron:", "other:"] {
            assert!(refused.contains(name), "{refused}");
        }
        assert!(refused.contains("no longer give the config"), "{refused}");

        let cut = heal_plan(&plan, &steps);
        let actions: Vec<(String, Action)> = cut
            .services
            .iter()
            .map(|s| (s.service.clone(), s.action.clone()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("db".to_owned(), Action::Keep { running: false }),
                ("web".to_owned(), Action::Create),
                ("worker".to_owned(), Action::Keep { running: false }),
            ]
        );
    }

    #[test]
    fn without_a_record_an_exited_container_starts_and_a_missing_one_waits() {
        let plan = Plan {
            project: "p".into(),
            services: vec![
                entry("db", Action::Keep { running: false }, "h"),
                entry("api", Action::Create, "h"),
            ],
        };
        let (steps, refused) = decide(
            &plan,
            &[drift("db", Kind::Exited), drift("api", Kind::Missing)],
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(steps, vec![("db".to_owned(), Step::Start)]);
        assert!(refused[0].contains("no config recorded"), "{refused:?}");
    }
}
