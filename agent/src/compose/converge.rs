//! Applying a [`Plan`]: networks and volumes first, orphans and surplus
//! replicas out (highest numbers first), then each service's replicas in
//! dependency order, waiting for its `depends_on` conditions.
//!
//! A recreate is a replacement in the service's order, stop-first or
//! start-first ([`super::replace`]), one replica at a time; either never
//! leaves a replica without a container when the create fails. A dependent
//! waits for its dependency's condition on every replica, each under its
//! Compose name, so after a start-first replacement it waits for the new
//! container to be healthy. The container operations themselves live in
//! [`super::container`], below both this loop and the replacement.
//!
//! Every container, network and volume carries Compose's labels and names so
//! `docker compose ps/logs/up` treat the project as their own. Images are
//! never pulled here: the deploy pulls first, and a missing image fails the
//! converge before anything is touched.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::ListNetworksOptions;
use bollard::Docker;
use serde::Serialize;

use super::container::{create, start, stop_and_remove};
use super::create::Instance;
use super::hash;
use super::health::{wait_for, Target};
use super::labels;
use super::model::{Condition, Project};
use super::plan::{docker_error, Action, Plan};
use super::replace::{self, Replacement};
use crate::error::{Error, Stage};

const STAGE: Stage = Stage::Converge;

/// What the converge did, per service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvergeSummary {
    pub created: Vec<String>,
    pub recreated: Vec<String>,
    pub kept: Vec<String>,
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub removed: Vec<String>,
    pub networks_created: Vec<String>,
    pub volumes_created: Vec<String>,
}

/// Apply `plan` to the engine. The plan must come from [`super::plan`] on
/// the same project, moments before.
pub async fn converge(
    docker: &Docker,
    project: &Project,
    plan: &Plan,
) -> Result<ConvergeSummary, Error> {
    let mut summary = ConvergeSummary::default();

    // Fail before touching anything if an image is missing.
    let missing: Vec<String> = plan
        .services
        .iter()
        .filter(|s| s.action != Action::Remove && s.image_id.is_none())
        .map(|s| format!("{} ({})", s.service, s.image.as_deref().unwrap_or("?")))
        .collect();
    if !missing.is_empty() {
        return Err(Error::failed(
            STAGE,
            format!(
                "image not present locally for {}; the deploy pulls images before converging, nothing was changed",
                missing.join(", ")
            ),
        ));
    }

    ensure_networks(docker, project, &mut summary).await?;
    ensure_volumes(docker, project, &mut summary).await?;

    // A start-first replacement's new container that a killed run left
    // beside the old one is resumed, not removed: it may be the one serving.
    // Removals come in the plan's order: orphans, surplus containers, and
    // replicas above the service's scale, highest number first.
    let mut leftovers = replace::leftovers(project, plan);
    for entry in plan.services.iter().filter(|s| s.action == Action::Remove) {
        if let Some(c) = &entry.container {
            if leftovers.values().any(|l| l.id == c.id) {
                continue;
            }
            let why = match project.service(&entry.service) {
                None => "its service is no longer in the file",
                Some(_) => "surplus: above the service's scale, or a leftover",
            };
            log::info!(stage = STAGE; "removing {} ({why})", c.name);
            let grace = project
                .service(&entry.service)
                .map_or(10, super::container::grace_seconds);
            stop_and_remove(docker, &c.id, grace).await?;
            summary.removed.push(entry.service.clone());
        }
    }

    let dependency_deadline = Instant::now() + project.dependency_wait;
    let mut recreated: BTreeSet<String> = BTreeSet::new();
    // Services created, recreated, started or restarted in this run.
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for (number, entry) in plan
        .numbered()
        .into_iter()
        .filter(|(_, s)| s.action != Action::Remove)
    {
        let Some(service) = project.service(&entry.service) else {
            continue;
        };
        let restart_for = service
            .depends_on
            .iter()
            .find(|(dep, d)| d.restart && recreated.contains(*dep))
            .map(|(dep, _)| dep.clone());
        let untouched = entry.action == (Action::Keep { running: true }) && restart_for.is_none();
        // Dependencies first, with their conditions (Compose waits before
        // starting the dependent). A running service left as is waits for
        // nothing, which keeps a no-op converge to a few API calls; except
        // that a one-shot dependency re-run in this converge (a migration)
        // must succeed again before the converge goes on.
        let must_wait = |dep: &String, condition: Condition| {
            !untouched
                || (condition == Condition::ServiceCompletedSuccessfully && touched.contains(dep))
        };
        for (dep, dependency) in service
            .depends_on
            .iter()
            .filter(|(dep, d)| must_wait(dep, d.condition))
        {
            let target = Target::for_condition(dependency.condition);
            let waited = wait_for_replicas(docker, project, dep, target, dependency_deadline).await;
            match waited {
                Ok(()) => {}
                Err(e) if !dependency.required => {
                    log::warn!(stage = STAGE; "optional dependency of {}: {e}", service.name);
                }
                Err(Error::Failed { detail, .. }) => {
                    return Err(Error::failed(
                        STAGE,
                        format!("{} waits on {dep}: {detail}", service.name),
                    ))
                }
                Err(other) => return Err(other),
            }
        }
        if !untouched {
            touched.insert(service.name.clone());
        }
        let image_id = entry.image_id.as_deref().unwrap_or_default();
        let name = project.replica_name(&service.name, number);
        match &entry.action {
            Action::Create => {
                log::info!(stage = STAGE; "creating {name}");
                let instance = Instance::new(number);
                let id = create(docker, project, service, image_id, &name, &instance).await?;
                start(docker, &id).await?;
                summary.created.push(service.name.clone());
            }
            Action::Recreate { reason } => {
                let Some(old) = &entry.container else {
                    continue;
                };
                log::info!(stage = STAGE; "recreating {name} ({reason} changed)");
                let leftover = leftovers.remove(&name);
                let job = Replacement {
                    service,
                    image_id,
                    old,
                    name: &name,
                    number,
                    leftover,
                };
                replace::replace(docker, project, job).await?;
                recreated.insert(service.name.clone());
                summary.recreated.push(service.name.clone());
            }
            Action::Keep { running } => {
                if let Some(c) = entry.container.as_ref().filter(|c| c.name != name) {
                    replace::finish_rename(docker, c, &name).await?;
                }
                match (running, restart_for, &entry.container) {
                    (_, Some(dep), Some(c)) => {
                        log::info!(stage = STAGE; "restarting {name} because {dep} was recreated");
                        docker
                            .restart_container(&c.id, None)
                            .await
                            .map_err(|e| docker_error(&format!("restart {name}"), e))?;
                        summary.restarted.push(service.name.clone());
                    }
                    (false, None, Some(c)) => {
                        log::info!(stage = STAGE; "starting {name}");
                        start(docker, &c.id).await?;
                        summary.started.push(service.name.clone());
                    }
                    _ => summary.kept.push(service.name.clone()),
                }
            }
            Action::Remove => {}
        }
    }
    Ok(summary)
}

/// Wait until every replica of `service` reaches `target` (a dependency's
/// condition holds for the service only when it holds for each of its
/// containers).
async fn wait_for_replicas(
    docker: &Docker,
    project: &Project,
    service: &str,
    target: Target,
    deadline: Instant,
) -> Result<(), Error> {
    let scale = project.service(service).map_or(1, |s| s.scale());
    for number in 1..=scale {
        let name = project.replica_name(service, number);
        wait_for(docker, service, &name, target, deadline, STAGE).await?;
    }
    Ok(())
}

async fn ensure_networks(
    docker: &Docker,
    project: &Project,
    summary: &mut ConvergeSummary,
) -> Result<(), Error> {
    let existing = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| docker_error("list networks", e))?;
    let by_name: HashMap<String, HashMap<String, String>> = existing
        .into_iter()
        .filter_map(|n| Some((n.name?, n.labels.unwrap_or_default())))
        .collect();
    for (key, def) in &project.networks {
        if let Some(found) = by_name.get(&def.name) {
            let expected = hash::network_hash(def);
            if !def.external
                && found
                    .get(labels::CONFIG_HASH)
                    .is_some_and(|h| h != &expected)
            {
                log::warn!(stage = STAGE; "network {} differs from the file; it is left as is (recreating it would stop every container on it)", def.name);
            }
            continue;
        }
        if def.external {
            return Err(Error::failed(
                STAGE,
                format!(
                    "external network {} does not exist; create it first",
                    def.name
                ),
            ));
        }
        let mut network_labels: HashMap<String, String> = def.labels.clone().into_iter().collect();
        network_labels.insert(labels::CONFIG_HASH.into(), hash::network_hash(def));
        network_labels.insert(labels::NETWORK.into(), key.clone());
        network_labels.insert(labels::PROJECT.into(), project.name.clone());
        network_labels.insert(labels::VERSION.into(), labels::COMPOSE_VERSION.into());
        log::info!(stage = STAGE; "creating network {}", def.name);
        docker
            .create_network(NetworkCreateRequest {
                name: def.name.clone(),
                driver: Some(def.driver.clone().unwrap_or_else(|| "bridge".into())),
                internal: Some(def.internal),
                attachable: Some(def.attachable),
                options: Some(def.driver_opts.clone().into_iter().collect()),
                labels: Some(network_labels),
                ipam: super::create::network_ipam(def),
                enable_ipv6: def.enable_ipv6,
                ..Default::default()
            })
            .await
            .map_err(|e| docker_error(&format!("create network {}", def.name), e))?;
        summary.networks_created.push(def.name.clone());
    }
    Ok(())
}

async fn ensure_volumes(
    docker: &Docker,
    project: &Project,
    summary: &mut ConvergeSummary,
) -> Result<(), Error> {
    for (key, def) in &project.volumes {
        match docker.inspect_volume(&def.name).await {
            Ok(found) => {
                let expected = hash::volume_hash(def);
                if !def.external
                    && found
                        .labels
                        .get(labels::CONFIG_HASH)
                        .is_some_and(|h| h != &expected)
                {
                    // Never recreate a volume: it holds the database.
                    log::warn!(stage = STAGE; "volume {} differs from the file; it is kept as is", def.name);
                }
                continue;
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(docker_error(&format!("inspect volume {}", def.name), e)),
        }
        if def.external {
            return Err(Error::failed(
                STAGE,
                format!(
                    "external volume {} does not exist; create it first",
                    def.name
                ),
            ));
        }
        let mut volume_labels: HashMap<String, String> = def.labels.clone().into_iter().collect();
        volume_labels.insert(labels::CONFIG_HASH.into(), hash::volume_hash(def));
        volume_labels.insert(labels::PROJECT.into(), project.name.clone());
        volume_labels.insert(labels::VERSION.into(), labels::COMPOSE_VERSION.into());
        volume_labels.insert(labels::VOLUME.into(), key.clone());
        log::info!(stage = STAGE; "creating volume {}", def.name);
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(def.name.clone()),
                driver: Some(def.driver.clone().unwrap_or_else(|| "local".into())),
                driver_opts: Some(def.driver_opts.clone().into_iter().collect()),
                labels: Some(volume_labels),
                ..Default::default()
            })
            .await
            .map_err(|e| docker_error(&format!("create volume {}", def.name), e))?;
        summary.volumes_created.push(def.name.clone());
    }
    Ok(())
}
