//! What a converge would change, decided from one container list call and
//! one image inspect per service.
//!
//! A service is recreated when its `com.docker.compose.config-hash` label
//! differs from the hash of its effective config (env file contents
//! included), when the image ID its tag points to now differs from the
//! `com.docker.compose.image` label, or when its container lost a network or
//! volume: the same rules `docker compose up` applies, so the two agree.
//! Containers of the project whose service left the file are orphans.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use serde::Serialize;

use super::hash;
use super::labels;
use super::model::{MountKind, Project};
use crate::error::{Dependency, Error, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The tag now points to another image ID.
    Image,
    /// Only the effective environment changed.
    Env,
    /// Anything else in the service config (or a lost network/volume).
    Config,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Image => "image",
            Reason::Env => "env",
            Reason::Config => "config",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Create,
    Recreate {
        reason: Reason,
    },
    /// Up to date; `running: false` means converge starts it.
    Keep {
        running: bool,
    },
    /// An orphan (service no longer in the file) or a surplus container.
    Remove,
}

/// The container a service has now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Existing {
    pub id: String,
    pub name: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub service: String,
    #[serde(flatten)]
    pub action: Action,
    pub container: Option<Existing>,
    /// The image reference of the file.
    pub image: Option<String>,
    /// The local image ID that reference points to; `None` when the image
    /// is not present (converge then fails without touching anything).
    pub image_id: Option<String>,
    pub config_hash: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub project: String,
    /// Services in dependency order, then removals.
    pub services: Vec<ServicePlan>,
}

impl Plan {
    /// True when converge would change nothing.
    pub fn is_noop(&self) -> bool {
        self.services
            .iter()
            .all(|s| s.action == Action::Keep { running: true })
    }

    /// The plan's entries with their replica numbers. A service's entries
    /// (other than removals) come in replica order, so its k-th entry is
    /// replica k; removals carry the number 0.
    pub fn numbered(&self) -> Vec<(u32, &ServicePlan)> {
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        self.services
            .iter()
            .map(|s| {
                if s.action == Action::Remove {
                    return (0, s);
                }
                let n = seen.entry(s.service.as_str()).or_insert(0);
                *n += 1;
                (*n, s)
            })
            .collect()
    }

    pub fn action(&self, service: &str) -> Option<&Action> {
        self.services
            .iter()
            .find(|s| s.service == service && s.action != Action::Remove)
            .map(|s| &s.action)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "project {}:", self.project)?;
        // Replicas after the first show their number: `worker#2`.
        let rows: Vec<(String, &ServicePlan)> = self
            .numbered()
            .into_iter()
            .map(|(number, s)| {
                let label = if number > 1 {
                    format!("{}#{number}", s.service)
                } else {
                    s.service.clone()
                };
                (label, s)
            })
            .collect();
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, s) in rows {
            let action = match &s.action {
                Action::Create => "create".to_owned(),
                Action::Recreate { reason } => format!("recreate ({reason})"),
                Action::Keep { running: true } => "keep".to_owned(),
                Action::Keep { running: false } => "keep (start)".to_owned(),
                Action::Remove => "remove".to_owned(),
            };
            let missing = if s.action != Action::Remove && s.image_id.is_none() {
                "  [image not present locally]"
            } else {
                ""
            };
            writeln!(
                f,
                "  {:width$}  {:14}  {}{}",
                label,
                action,
                s.image.as_deref().unwrap_or("-"),
                missing
            )?;
        }
        Ok(())
    }
}

/// Services in an order where every dependency comes first (file order
/// otherwise); `Err` names a cycle.
pub fn dependency_order(project: &Project) -> Result<Vec<String>, String> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    fn visit<'a>(
        project: &'a Project,
        name: &'a str,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.contains(&name) {
            let mut cycle: Vec<&str> = stack.clone();
            cycle.push(name);
            return Err(cycle.join(" -> "));
        }
        stack.push(name);
        if let Some(service) = project.service(name) {
            for dep in service.depends_on.keys() {
                visit(project, dep, done, stack, order)?;
            }
        }
        stack.pop();
        done.insert(name);
        order.push(name.to_owned());
        Ok(())
    }
    for service in &project.services {
        visit(
            project,
            &service.name,
            &mut done,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

/// A container of the project as the list call shows it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub id: String,
    pub name: String,
    pub service: String,
    pub number: u32,
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub image_id: Option<String>,
    pub networks: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
}

/// All non-one-off containers of `project` (one API call).
pub(crate) async fn list_project(docker: &Docker, project: &str) -> Result<Vec<Listed>, Error> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("{}={project}", labels::PROJECT)],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| docker_error("list containers", e))?;
    let mut out = Vec::new();
    for c in containers {
        let labels: BTreeMap<String, String> = c.labels.unwrap_or_default().into_iter().collect();
        if labels.get(labels::ONEOFF).map(String::as_str) == Some("True") {
            continue;
        }
        let Some(service) = labels.get(labels::SERVICE).cloned() else {
            continue;
        };
        let name = c
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        out.push(Listed {
            id: c.id.unwrap_or_default(),
            name,
            number: labels
                .get(labels::CONTAINER_NUMBER)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            service,
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            image_id: c.image_id,
            networks: c
                .network_settings
                .and_then(|n| n.networks)
                .map(|n| n.into_keys().collect())
                .unwrap_or_default(),
            volumes: c
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.name)
                .collect(),
            labels,
        });
    }
    Ok(out)
}

pub(crate) fn docker_error(action: &str, e: bollard::errors::Error) -> Error {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => Error::failed(
            Stage::Converge,
            format!("{action}: Docker said {status_code}: {message}"),
        ),
        E::RequestTimeoutError => {
            Error::unavailable(Dependency::Docker, format!("{action}: request timed out"))
        }
        other if is_connection_error(&other) => {
            Error::unavailable(Dependency::Docker, format!("{action}: {other}"))
        }
        other => Error::failed(Stage::Converge, format!("{action}: {other}")),
    }
}

fn is_connection_error(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    matches!(
        e,
        E::HyperResponseError { .. } | E::IOError { .. } | E::HyperLegacyError { .. }
    )
}

/// The image ID `reference` points to locally, `None` if it is absent.
pub(crate) async fn local_image_id(
    docker: &Docker,
    reference: &str,
) -> Result<Option<String>, Error> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(image.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(docker_error(&format!("inspect image {reference}"), e)),
    }
}

/// Decide what converge would do for every service and orphan.
pub async fn plan(docker: &Docker, project: &Project) -> Result<Plan, Error> {
    let order = dependency_order(project).map_err(|cycle| {
        Error::invalid(
            "compose file",
            format!("dependency cycle: {cycle}"),
            "break the cycle",
        )
    })?;
    let listed = list_project(docker, &project.name).await?;

    // One image inspect per distinct reference, run together.
    let references: BTreeSet<&str> = project.services.iter().map(|s| s.image.as_str()).collect();
    let lookups = futures_util::future::join_all(
        references
            .iter()
            .map(|r| async move { (*r, local_image_id(docker, r).await) }),
    )
    .await;
    let mut image_ids: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for (reference, result) in lookups {
        image_ids.insert(reference, result?);
    }

    let mut services = Vec::new();
    let mut removals = Vec::new();
    for name in &order {
        let Some(service) = project.service(name) else {
            continue;
        };
        let image_id = image_ids.get(service.image.as_str()).cloned().flatten();
        let config_hash = hash::service_hash(service);
        let mine: Vec<&Listed> = listed.iter().filter(|c| &c.service == name).collect();
        // One entry per replica, numbers 1..=N in order. Per number, the
        // container with Compose's name is the replica; any other with that
        // number (a leftover `<id>_<name>` from an interrupted recreate) is
        // surplus, as is every container numbered above N.
        for number in 1..=service.scale() {
            let canonical = project.replica_name(name, number);
            let mut candidates: Vec<&Listed> = mine
                .iter()
                .copied()
                .filter(|c| c.number == number)
                .collect();
            candidates.sort_by_key(|c| (c.name != canonical, c.name.clone()));
            let action = match candidates.first() {
                None => Action::Create,
                Some(current) => {
                    decide(project, service, current, &config_hash, image_id.as_deref())
                }
            };
            for surplus in candidates.iter().skip(1) {
                removals.push(removal(surplus));
            }
            services.push(ServicePlan {
                service: name.clone(),
                action,
                container: candidates.first().map(|c| Existing {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    state: c.state.clone(),
                }),
                image: Some(service.image.clone()),
                image_id: image_id.clone(),
                config_hash: Some(config_hash.clone()),
            });
        }
        // Scaling down removes the highest numbers first, as Compose does.
        let mut above: Vec<&Listed> = mine
            .iter()
            .copied()
            .filter(|c| c.number == 0 || c.number > service.scale())
            .collect();
        above.sort_by_key(|c| std::cmp::Reverse(c.number));
        removals.extend(above.into_iter().map(removal));
    }
    for orphan in listed
        .iter()
        .filter(|c| project.service(&c.service).is_none())
    {
        removals.push(removal(orphan));
    }
    services.extend(removals);
    Ok(Plan {
        project: project.name.clone(),
        services,
    })
}

fn removal(c: &Listed) -> ServicePlan {
    ServicePlan {
        service: c.service.clone(),
        action: Action::Remove,
        container: Some(Existing {
            id: c.id.clone(),
            name: c.name.clone(),
            state: c.state.clone(),
        }),
        image: None,
        image_id: c.image_id.clone(),
        config_hash: None,
    }
}

fn decide(
    project: &Project,
    service: &super::model::Service,
    current: &Listed,
    config_hash: &str,
    image_id: Option<&str>,
) -> Action {
    let label = |key: &str| current.labels.get(key).map(String::as_str);
    let current_image = label(labels::IMAGE).or(current.image_id.as_deref());
    if image_id.is_none() || current_image != image_id {
        return Action::Recreate {
            reason: Reason::Image,
        };
    }
    if label(labels::CONFIG_HASH) != Some(config_hash) {
        let env_changed =
            label(labels::AGENT_ENV_HASH).is_some_and(|h| h != hash::environment_hash(service));
        let rest_same =
            label(labels::AGENT_BASE_HASH) == Some(&hash::service_hash_without_env(service));
        let reason = if env_changed && rest_same {
            Reason::Env
        } else {
            Reason::Config
        };
        return Action::Recreate { reason };
    }
    // A restarting container is the Engine's to bring back (Compose leaves
    // it alone too); starting it would fail.
    let running = matches!(current.state.as_str(), "running" | "restarting");
    // Compose's own extra checks: a running container must be on every
    // network of the service, and every named volume must be mounted.
    if current.state == "running" {
        for key in service.networks.iter().flat_map(|n| n.keys()) {
            if let Some(def) = project.networks.get(key) {
                if !current.networks.contains(&def.name) {
                    return Action::Recreate {
                        reason: Reason::Config,
                    };
                }
            }
        }
    }
    for mount in service
        .volumes
        .iter()
        .filter(|m| m.kind == MountKind::Volume)
    {
        if let Some(def) = project.volumes.get(&mount.source) {
            if !current.volumes.contains(&def.name) {
                return Action::Recreate {
                    reason: Reason::Config,
                };
            }
        }
    }
    Action::Keep { running }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn project(env_value: &str, command: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compose.yaml");
        std::fs::write(
            &path,
            format!(
                "services:\n  db:\n    image: db:1\n    volumes: [data:/data]\n  api:\n    image: api:1\n    command: {command}\n    environment: {{TOKEN: {env_value}}}\n    depends_on: [db]\nvolumes:\n  data:\n"
            ),
        )
        .unwrap();
        super::super::load::load(&path, "unit", &BTreeMap::new()).unwrap()
    }

    /// The list entry of a container the agent created for `service`.
    fn listed(project: &Project, service: &str, image_id: &str, state: &str) -> Listed {
        let s = project.service(service).unwrap();
        let labels = super::super::create::container_labels(project, s, image_id, 1);
        Listed {
            id: format!("{service}-id"),
            name: project.container_name(service),
            service: service.to_owned(),
            number: 1,
            state: state.to_owned(),
            labels,
            image_id: Some(image_id.to_owned()),
            networks: BTreeSet::from(["unit_default".to_owned()]),
            volumes: if service == "db" {
                BTreeSet::from(["unit_data".to_owned()])
            } else {
                BTreeSet::new()
            },
        }
    }

    fn decide_for(now: &Project, then: &Project, image_now: &str, state: &str) -> Action {
        let current = listed(then, "api", "sha256:a", state);
        let api = now.service("api").unwrap();
        decide(
            now,
            api,
            &current,
            &hash::service_hash(api),
            Some(image_now),
        )
    }

    #[test]
    fn recreation_reasons_follow_what_changed() {
        let base = project("one", "serve");
        assert_eq!(
            decide_for(&base, &base, "sha256:a", "running"),
            Action::Keep { running: true }
        );
        assert_eq!(
            decide_for(&base, &base, "sha256:a", "exited"),
            Action::Keep { running: false }
        );
        assert_eq!(
            decide_for(&base, &base, "sha256:b", "running"),
            Action::Recreate {
                reason: Reason::Image
            }
        );
        assert_eq!(
            decide_for(&project("two", "serve"), &base, "sha256:a", "running"),
            Action::Recreate {
                reason: Reason::Env
            }
        );
        assert_eq!(
            decide_for(&project("one", "work"), &base, "sha256:a", "running"),
            Action::Recreate {
                reason: Reason::Config
            }
        );
        assert_eq!(
            decide_for(&project("two", "work"), &base, "sha256:a", "running"),
            Action::Recreate {
                reason: Reason::Config
            }
        );
    }

    #[test]
    fn a_container_compose_created_is_judged_by_compose_labels_only() {
        let base = project("one", "serve");
        let api = base.service("api").unwrap();
        let mut current = listed(&base, "api", "sha256:a", "running");
        current.labels.remove(labels::AGENT_ENV_HASH);
        current.labels.remove(labels::AGENT_BASE_HASH);
        assert_eq!(
            decide(
                &base,
                api,
                &current,
                &hash::service_hash(api),
                Some("sha256:a")
            ),
            Action::Keep { running: true }
        );
        // Without the agent's labels an env change reads as `config`.
        let changed = project("two", "serve");
        let api2 = changed.service("api").unwrap();
        assert_eq!(
            decide(
                &changed,
                api2,
                &current,
                &hash::service_hash(api2),
                Some("sha256:a")
            ),
            Action::Recreate {
                reason: Reason::Config
            }
        );
    }

    #[test]
    fn a_lost_network_or_volume_recreates_like_compose() {
        let base = project("one", "serve");
        let db = base.service("db").unwrap();
        let mut current = listed(&base, "db", "sha256:d", "running");
        current.volumes.clear();
        assert_eq!(
            decide(
                &base,
                db,
                &current,
                &hash::service_hash(db),
                Some("sha256:d")
            ),
            Action::Recreate {
                reason: Reason::Config
            }
        );
        let mut current = listed(&base, "db", "sha256:d", "running");
        current.networks.clear();
        assert_eq!(
            decide(
                &base,
                db,
                &current,
                &hash::service_hash(db),
                Some("sha256:d")
            ),
            Action::Recreate {
                reason: Reason::Config
            }
        );
    }

    #[test]
    fn the_plan_prints_a_table_and_serializes_for_json() {
        let plan = Plan {
            project: "unit".into(),
            services: vec![
                ServicePlan {
                    service: "api".into(),
                    action: Action::Recreate {
                        reason: Reason::Image,
                    },
                    container: None,
                    image: Some("api:2".into()),
                    image_id: Some("sha256:b".into()),
                    config_hash: Some("h".into()),
                },
                ServicePlan {
                    service: "old".into(),
                    action: Action::Remove,
                    container: None,
                    image: None,
                    image_id: None,
                    config_hash: None,
                },
                ServicePlan {
                    service: "web".into(),
                    action: Action::Create,
                    container: None,
                    image: Some("web:1".into()),
                    image_id: None,
                    config_hash: None,
                },
            ],
        };
        assert_eq!(
            plan.to_string(),
            "project unit:\n  api  recreate (image)  api:2\n  old  remove          -\n  web  create          web:1  [image not present locally]\n"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["services"][0]["action"], "recreate");
        assert_eq!(json["services"][0]["reason"], "image");
        assert_eq!(json["services"][1]["action"], "remove");
        assert!(!plan.is_noop());
    }

    #[test]
    fn replicas_are_numbered_in_order_and_shown_with_their_number() {
        let entry = |service: &str, action: Action| ServicePlan {
            service: service.into(),
            action,
            container: None,
            image: Some("w:1".into()),
            image_id: Some("sha256:w".into()),
            config_hash: None,
        };
        let plan = Plan {
            project: "unit".into(),
            services: vec![
                entry("worker", Action::Keep { running: true }),
                entry("worker", Action::Create),
                entry("api", Action::Keep { running: true }),
                entry("worker", Action::Remove),
            ],
        };
        let numbers: Vec<(u32, &str)> = plan
            .numbered()
            .into_iter()
            .map(|(n, s)| (n, s.service.as_str()))
            .collect();
        assert_eq!(
            numbers,
            vec![(1, "worker"), (2, "worker"), (1, "api"), (0, "worker")]
        );
        let text = plan.to_string();
        assert!(text.contains("  worker#2  create"), "{text}");
        assert!(text.contains("  worker    keep"), "{text}");
    }

    #[test]
    fn dependency_order_puts_dependencies_first() {
        let base = project("one", "serve");
        assert_eq!(dependency_order(&base).unwrap(), vec!["db", "api"]);
    }
}
