//! The Engine operations on one container that both the converge loop and
//! a replacement use: create (with Compose's labels, the inline secrets
//! and every network), start, stop, remove, rename, and reading the
//! anonymous volumes a recreate carries over.
//!
//! Why a module of its own: [`super::converge`] drives [`super::replace`],
//! and both need these; here they sit below both, so the dependencies
//! point one way.

use std::collections::BTreeMap;

use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use bollard::Docker;

use super::create::{create_body, endpoint, inject_inline_files, Instance};
use super::model::{MountKind, Project, Service};
use super::plan::docker_error;
use crate::error::Error;

/// The service's `stop_grace_period` in whole seconds (Compose's default
/// 10).
pub(super) fn grace_seconds(service: &Service) -> i32 {
    service
        .stop_grace_period
        .map_or(10, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
}

/// Create container `name` for `instance` of `service`, attached to every
/// network of the service; not started. Returns its id.
pub(super) async fn create(
    docker: &Docker,
    project: &Project,
    service: &Service,
    image_id: &str,
    name: &str,
    instance: &Instance,
) -> Result<String, Error> {
    let body = create_body(project, service, image_id, name, instance);
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| docker_error(&format!("create container {name}"), e))?;
    inject_inline_files(docker, project, service, &created.id, name).await?;
    // API 1.41 attaches one network at create; connect the others now.
    if let (None, Some(networks)) = (&service.network_mode, &service.networks) {
        for (key, config) in networks.iter().skip(1) {
            let engine_name = project
                .networks
                .get(key)
                .map_or_else(|| key.clone(), |n| n.name.clone());
            docker
                .connect_network(
                    &engine_name,
                    NetworkConnectRequest {
                        container: created.id.clone(),
                        endpoint_config: Some(endpoint(
                            service,
                            name,
                            config.as_ref(),
                            !instance.unannounced,
                        )),
                    },
                )
                .await
                .map_err(|e| docker_error(&format!("connect {name} to {engine_name}"), e))?;
        }
    }
    Ok(created.id)
}

pub(super) async fn start(docker: &Docker, id: &str) -> Result<(), Error> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| docker_error(&format!("start container {id}"), e))
}

pub(super) async fn stop_and_remove(docker: &Docker, id: &str, grace: i32) -> Result<(), Error> {
    stop(docker, id, grace).await?;
    remove(docker, id).await
}

/// Stop a container within `grace` seconds; one already stopped or gone is
/// fine.
pub(super) async fn stop(docker: &Docker, id: &str, grace: i32) -> Result<(), Error> {
    match docker
        .stop_container(
            id,
            Some(StopContainerOptions {
                t: Some(grace),
                ..Default::default()
            }),
        )
        .await
    {
        // 304: already stopped; 404: already gone.
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        }) => Ok(()),
        Err(e) => Err(docker_error(&format!("stop container {id}"), e)),
    }
}

/// Remove a container (forced); one already gone is fine. Its anonymous
/// volumes stay (no `v`), as Compose leaves them: a recreate has already
/// reattached them to the new container.
pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), Error> {
    match docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(docker_error(&format!("remove container {id}"), e)),
    }
}

pub(super) async fn rename(docker: &Docker, id: &str, from: &str, to: &str) -> Result<(), Error> {
    docker
        .rename_container(
            id,
            RenameContainerOptions {
                name: to.to_owned(),
            },
        )
        .await
        .map_err(|e| docker_error(&format!("rename {from} to {to}"), e))
}

/// The replacement of container `old_id` (replica `number`): the old
/// container's anonymous volumes, by container path, for the service's
/// anonymous mounts. Compose reattaches them the same way, so data in an
/// anonymous volume (`- /app/node_modules`) survives a recreate. A
/// container already gone has nothing to carry over.
pub(super) async fn inherited(
    docker: &Docker,
    service: &Service,
    old_id: &str,
    number: u32,
) -> Result<Instance, Error> {
    let mut instance = Instance::new(number);
    let anonymous: Vec<&str> = service
        .volumes
        .iter()
        .filter(|m| m.kind == MountKind::Volume && m.source.is_empty())
        .map(|m| m.target.as_str())
        .collect();
    if anonymous.is_empty() {
        return Ok(instance);
    }
    let info = match docker.inspect_container(old_id, None).await {
        Ok(info) => info,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(instance),
        Err(e) => return Err(docker_error(&format!("inspect container {old_id}"), e)),
    };
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for m in info.mounts.unwrap_or_default() {
        if let (Some("volume"), Some(target), Some(volume)) =
            (m.typ.as_deref(), m.destination, m.name)
        {
            if anonymous.contains(&target.as_str()) {
                found.insert(target, volume);
            }
        }
    }
    instance.anonymous = found;
    Ok(instance)
}

/// Put container `id` (named `name`, maybe still a temporary name) under
/// the service's name and aliases on every network of the service: an
/// unannounced start-first replacement, now healthy. The Engine cannot add
/// an alias to an endpoint, so the container leaves each network and joins
/// it again with the aliases; it is not serving anyone yet, so only its
/// own outgoing connections notice (a new address). Idempotent: a network
/// where it already has the service's name is left alone, which lets a
/// rerun finish an interrupted announce.
pub(super) async fn announce(
    docker: &Docker,
    project: &Project,
    service: &Service,
    id: &str,
    name: &str,
) -> Result<(), Error> {
    let Some(networks) = (service.network_mode.is_none())
        .then_some(service.networks.as_ref())
        .flatten()
    else {
        return Ok(());
    };
    let info = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| docker_error(&format!("inspect container {name}"), e))?;
    let joined = info
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    for (key, config) in networks {
        let engine_name = project
            .networks
            .get(key)
            .map_or_else(|| key.clone(), |n| n.name.clone());
        if let Some(current) = joined.get(&engine_name) {
            let aliases = current.aliases.clone().unwrap_or_default();
            if aliases.contains(&service.name) {
                continue;
            }
            docker
                .disconnect_network(
                    &engine_name,
                    NetworkDisconnectRequest {
                        container: id.to_owned(),
                        force: Some(false),
                    },
                )
                .await
                .map_err(|e| docker_error(&format!("disconnect {name} from {engine_name}"), e))?;
        }
        docker
            .connect_network(
                &engine_name,
                NetworkConnectRequest {
                    container: id.to_owned(),
                    endpoint_config: Some(endpoint(service, name, config.as_ref(), true)),
                },
            )
            .await
            .map_err(|e| docker_error(&format!("connect {name} to {engine_name}"), e))?;
    }
    Ok(())
}
