//! Replacing a service's container with a new one, in the order its
//! `deploy.update_config.order` asks for.
//!
//! **stop-first** (Compose's default, and what `docker compose up` does):
//! the new container is created under a temporary name (`<old id>_<name>`,
//! Compose's own scheme) while the old one still serves, so a create that
//! fails changes nothing; then the old one is stopped, the new one started
//! at once, the old one removed and the new one renamed. The service is
//! down from the old container's stop to the new one's start, the shortest
//! a published host port or a fixed `container_name` allows (two running
//! containers cannot hold one).
//!
//! **start-first**: the new container is created and started under the
//! temporary name next to the old one, on the project networks but *without*
//! the service name and aliases, and must become healthy within the
//! deploy's health timeout. Only then is it announced (it leaves and rejoins
//! each network with the service's aliases: the Engine cannot add an alias
//! to an endpoint), and the old one drained (disconnected from the project
//! networks, so the service name stops resolving to it, then a short
//! grace), stopped, removed, and the new one renamed. Why unannounced first:
//! the Engine's DNS answers with a container's address as soon as it joins,
//! before it can answer (issue 25 measured a lost request at every flip).
//! The floor without a proxy: the Engine drops the old container's DNS entry
//! together with its address, so a request that resolved it just before the
//! disconnect, or is in flight to it, is lost (docs/compose-engine.md,
//! "Start-first drain"). If the new container never becomes healthy it is
//! removed and the old one keeps serving; the deploy fails at `health`.
//! Replicas are replaced one at a time (the converge loop), so a service of
//! N replicas keeps at least N-1 healthy ones serving.
//!
//! Crash safety: a kill at any step leaves the service served by the old or
//! the new container. The rerun's plan sees the leftovers: a temporary
//! container beside the old one is resumed when it runs the config the file
//! asks for and is running (start-first: the service stays served during
//! the rerun too; [`leftovers`]), and removed otherwise, the replacement
//! then running again; a temporary container alone is the service's
//! container and the converge renames it ([`finish_rename`]); a resumed
//! replacement is announced if it was not yet ([`super::container::announce`]
//! is idempotent). Every step has
//! a test pause point (`start-first:*`, `stop-first:*`) so the crash test
//! can kill there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::models::NetworkDisconnectRequest;
use bollard::query_parameters::RemoveContainerOptions;
use bollard::Docker;

use super::container::{announce, create, grace_seconds, inherited, remove, rename, start, stop};
use super::create::Instance;
use super::health::{wait_for, Target};
use super::model::{Project, Service, UpdateOrder};
use super::plan::{docker_error, Action, Existing, Plan};
use super::{hash, labels};
use crate::error::{Error, Stage};
use crate::testpoint::pause;

const STAGE: Stage = Stage::Converge;

/// Time the old container keeps running after it left the networks, for
/// work it has in hand (a request being answered, a write being committed)
/// before it gets SIGTERM. New requests already go to the new container.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Time between announcing the new container and draining the old one.
/// A container that just joined a network under the service name can be
/// given out by the Engine's DNS before it is reachable (its endpoint
/// settling; measured at hundreds of ms on a loaded host). While the old
/// one is still in DNS beside it, a client that gets the new address in
/// that window is the only one at risk; drained at once, every client
/// would be.
const ANNOUNCE_SETTLE: Duration = Duration::from_millis(1000);

/// Compose's temporary name for the replacement of `old`: `<old id>_<name>`.
fn temporary_name(old: &Existing, name: &str) -> String {
    let short: String = old.id.chars().take(12).collect();
    format!("{short}_{name}")
}

/// Per start-first replica about to be replaced, by its container name:
/// the container under the replacement's temporary name that a killed run
/// left (the plan lists it for removal as surplus). [`replace`] resumes
/// with it when it already runs the new config, and removes it otherwise.
pub(super) fn leftovers(project: &Project, plan: &Plan) -> BTreeMap<String, Existing> {
    let mut out = BTreeMap::new();
    for (number, entry) in plan.numbered() {
        let (Action::Recreate { .. }, Some(old), Some(service)) = (
            &entry.action,
            &entry.container,
            project.service(&entry.service),
        ) else {
            continue;
        };
        if service.update_order != UpdateOrder::StartFirst {
            continue;
        }
        let name = project.replica_name(&service.name, number);
        let temporary = temporary_name(old, &name);
        let found = plan.services.iter().find(|e| {
            e.action == Action::Remove
                && e.service == service.name
                && e.container.as_ref().is_some_and(|c| c.name == temporary)
        });
        if let Some(c) = found.and_then(|e| e.container.clone()) {
            out.insert(name, c);
        }
    }
    out
}

/// One replica's replacement: the old container, the name and number the
/// new one takes, and what a killed run left.
pub(super) struct Replacement<'a> {
    pub service: &'a Service,
    pub image_id: &'a str,
    pub old: &'a Existing,
    pub name: &'a str,
    pub number: u32,
    pub leftover: Option<Existing>,
}

/// Replace `job.old` by a new container of the service named `job.name`,
/// in the service's `deploy.update_config.order` (the loader refuses
/// start-first for a service with host ports or a `container_name`). The
/// new container gets the old one's anonymous volumes. Replicas are
/// replaced one at a time by the converge loop, so a start-first service
/// of N replicas never has fewer than N-1 healthy ones serving. Returns
/// the new container's id.
pub(super) async fn replace(
    docker: &Docker,
    project: &Project,
    job: Replacement<'_>,
) -> Result<String, Error> {
    let instance = inherited(docker, job.service, &job.old.id, job.number).await?;
    match job.service.update_order {
        UpdateOrder::StopFirst => stop_first(docker, project, &job, &instance).await,
        UpdateOrder::StartFirst => start_first(docker, project, &job, &instance).await,
    }
}

async fn stop_first(
    docker: &Docker,
    project: &Project,
    job: &Replacement<'_>,
    instance: &Instance,
) -> Result<String, Error> {
    let (service, old, name) = (job.service, job.old, job.name);
    let temporary = temporary_name(old, name);
    let id = create(docker, project, service, job.image_id, &temporary, instance).await?;
    pause("stop-first:created");
    stop(docker, &old.id, grace_seconds(service)).await?;
    pause("stop-first:stopped");
    // A stopped container holds no port and no DNS entry: start the new
    // one now; removing the old one and the rename are not on the path to
    // serving.
    start(docker, &id).await?;
    pause("stop-first:started");
    remove(docker, &old.id).await?;
    pause("stop-first:removed");
    rename(docker, &id, &temporary, name).await?;
    pause("stop-first:renamed");
    Ok(id)
}

async fn start_first(
    docker: &Docker,
    project: &Project,
    job: &Replacement<'_>,
    instance: &Instance,
) -> Result<String, Error> {
    let (service, image_id, old, name) = (job.service, job.image_id, job.old, job.name);
    let temporary = temporary_name(old, name);
    let resumed = match &job.leftover {
        Some(c) => resume(docker, service, image_id, c).await?,
        None => None,
    };
    let id = match resumed {
        Some(id) => {
            log::info!(stage = STAGE; "start-first: resuming with {temporary}, left running by an interrupted run");
            id
        }
        None => {
            log::info!(stage = STAGE; "start-first: starting {temporary} next to {name}");
            // Out of the service's DNS until healthy: a client resolving the
            // service name must never be sent to a container that cannot
            // answer yet (issue 25: the one failure the outside probe saw
            // per flip was a request to the new container while it joined
            // the network).
            let hidden = Instance {
                unannounced: true,
                ..instance.clone()
            };
            let id = create(docker, project, service, image_id, &temporary, &hidden).await?;
            pause("start-first:created");
            if let Err(e) = start(docker, &id).await {
                discard(docker, &id, &temporary).await;
                return Err(e);
            }
            pause("start-first:started");
            id
        }
    };
    let deadline = Instant::now() + project.dependency_wait;
    let started = Instant::now();
    match wait_for(
        docker,
        &service.name,
        &id,
        Target::Ready,
        deadline,
        Stage::Health,
    )
    .await
    {
        Ok(()) => {}
        Err(Error::Failed { detail, .. }) => {
            discard(docker, &id, &temporary).await;
            return Err(Error::failed(
                Stage::Health,
                format!(
                    "start-first replacement of {}: {detail}; the new container was removed and {name} keeps serving",
                    service.name
                ),
            ));
        }
        Err(other) => {
            discard(docker, &id, &temporary).await;
            return Err(other);
        }
    }
    log::info!(stage = STAGE; "start-first: {temporary} is ready after {}ms; draining {name}", started.elapsed().as_millis());
    pause("start-first:healthy");
    announce(docker, project, service, &id, &temporary).await?;
    pause("start-first:announced");
    tokio::time::sleep(ANNOUNCE_SETTLE).await;
    drain(docker, project, service, old).await;
    pause("start-first:drained");
    tokio::time::sleep(DRAIN_GRACE).await;
    stop(docker, &old.id, grace_seconds(service)).await?;
    pause("start-first:stopped");
    remove(docker, &old.id).await?;
    pause("start-first:removed");
    rename(docker, &id, &temporary, name).await?;
    pause("start-first:renamed");
    Ok(id)
}

/// The id of `leftover` if it runs the config and image the file asks for
/// now (then the replacement goes on with it); otherwise it is removed.
async fn resume(
    docker: &Docker,
    service: &Service,
    image_id: &str,
    leftover: &Existing,
) -> Result<Option<String>, Error> {
    let info = match docker.inspect_container(&leftover.id, None).await {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(docker_error(&format!("inspect {}", leftover.name), e)),
    };
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    let current = labels.get(labels::CONFIG_HASH) == Some(&hash::service_hash(service))
        && labels.get(labels::IMAGE).map(String::as_str) == Some(image_id);
    let running = info.state.and_then(|s| s.running).unwrap_or(false);
    if current && running {
        return Ok(Some(leftover.id.clone()));
    }
    log::info!(stage = STAGE; "removing {}, left by an interrupted run with another config", leftover.name);
    remove(docker, &leftover.id).await?;
    Ok(None)
}

/// Disconnect `old` from the service's project networks, so the service
/// name resolves only to the new container. A failure is logged, not fatal:
/// the new container is healthy, and finishing the replacement (the stop
/// takes the old one out of DNS anyway) beats leaving two containers.
async fn drain(docker: &Docker, project: &Project, service: &Service, old: &Existing) {
    let Some(networks) = &service.networks else {
        return;
    };
    for key in networks.keys() {
        let engine_name = project
            .networks
            .get(key)
            .map_or_else(|| key.clone(), |n| n.name.clone());
        let request = NetworkDisconnectRequest {
            container: old.id.clone(),
            force: Some(false),
        };
        if let Err(e) = docker.disconnect_network(&engine_name, request).await {
            log::warn!(stage = STAGE; "draining {}: disconnect from {engine_name}: {e}; it is stopped next", old.name);
        }
    }
}

/// Remove a replacement that will not serve; best effort, the error that
/// brought us here is the one to report.
async fn discard(docker: &Docker, id: &str, name: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        log::warn!(stage = STAGE; "cannot remove the failed replacement {name}: {e}; the next deploy removes it");
    }
}

/// A service whose only container still has a temporary name: a replacement
/// was interrupted after the old container was removed. Give it the name.
pub(super) async fn finish_rename(
    docker: &Docker,
    current: &Existing,
    name: &str,
) -> Result<(), Error> {
    log::info!(stage = STAGE; "renaming {} to {name} (an interrupted replacement)", current.name);
    rename(docker, &current.id, &current.name, name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(order: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compose.yaml");
        std::fs::write(
            &path,
            format!("services:\n  api:\n    image: api:1\n    deploy:\n      update_config:\n        order: {order}\n"),
        )
        .unwrap();
        Project::load(&path, "unit", &std::collections::BTreeMap::new()).unwrap()
    }

    fn entry(action: Action, id: &str, name: &str) -> super::super::plan::ServicePlan {
        super::super::plan::ServicePlan {
            service: "api".into(),
            action,
            container: Some(Existing {
                id: id.into(),
                name: name.into(),
                state: "running".into(),
            }),
            image: None,
            image_id: None,
            config_hash: None,
        }
    }

    #[test]
    fn a_start_first_replacements_leftover_is_found_and_nothing_else() {
        let plan = |extra: &str| Plan {
            project: "unit".into(),
            services: vec![
                entry(
                    Action::Recreate {
                        reason: super::super::plan::Reason::Image,
                    },
                    "aaaaaaaaaaaa0000",
                    "unit-api-1",
                ),
                entry(Action::Remove, "bbbb", extra),
            ],
        };
        let found = leftovers(&project("start-first"), &plan("aaaaaaaaaaaa_unit-api-1"));
        assert_eq!(found.get("unit-api-1").map(|c| c.id.as_str()), Some("bbbb"));
        // Another temporary name (an older run's) is plain surplus.
        assert!(leftovers(&project("start-first"), &plan("cccccccccccc_unit-api-1")).is_empty());
        // Stop-first never resumes: its new container was never started.
        assert!(leftovers(&project("stop-first"), &plan("aaaaaaaaaaaa_unit-api-1")).is_empty());
    }

    #[test]
    fn the_temporary_name_is_composes() {
        let old = Existing {
            id: "0123456789abcdef0123".into(),
            name: "p-api-1".into(),
            state: "running".into(),
        };
        assert_eq!(temporary_name(&old, "p-api-1"), "0123456789ab_p-api-1");
    }
}
