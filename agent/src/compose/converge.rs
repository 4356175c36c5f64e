//! Applying a [`Plan`]: networks and volumes first, orphans out, then each
//! service in dependency order, waiting for its `depends_on` conditions.
//!
//! A recreate never leaves a service without a container when the create
//! fails: the replacement is created under a temporary name
//! (`<old id>_<name>`, Compose's own scheme), and only then is the old
//! container stopped and removed and the new one renamed and started.
//!
//! Every container, network and volume carries Compose's labels and names so
//! `docker compose ps/logs/up` treat the project as their own. Images are
//! never pulled here: the deploy pulls first, and a missing image fails the
//! converge before anything is touched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountType, MountVolumeOptions, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListNetworksOptions, RemoveContainerOptions, RenameContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use serde::Serialize;

use super::hash;
use super::health::{wait_for, Target};
use super::labels;
use super::model::{Condition, MountKind, Project, Service};
use super::plan::{docker_error, Action, Plan};
use crate::error::Error;

const STAGE: &str = "converge";

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

    for entry in plan.services.iter().filter(|s| s.action == Action::Remove) {
        if let Some(c) = &entry.container {
            log::info!(stage = STAGE; "removing {} (service {} is no longer in the file)", c.name, entry.service);
            stop_and_remove(docker, &c.id, 10).await?;
            summary.removed.push(entry.service.clone());
        }
    }

    let dependency_deadline = Instant::now() + project.dependency_wait;
    let mut recreated: BTreeSet<String> = BTreeSet::new();
    // Services created, recreated, started or restarted in this run.
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for entry in plan.services.iter().filter(|s| s.action != Action::Remove) {
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
            let waited = wait_for(
                docker,
                dep,
                &project.container_name(dep),
                target,
                dependency_deadline,
                STAGE,
            )
            .await;
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
        let name = project.container_name(&service.name);
        match &entry.action {
            Action::Create => {
                log::info!(stage = STAGE; "creating {name}");
                let id = create(docker, project, service, image_id, &name).await?;
                start(docker, &id).await?;
                summary.created.push(service.name.clone());
            }
            Action::Recreate { reason } => {
                let Some(old) = &entry.container else {
                    continue;
                };
                log::info!(stage = STAGE; "recreating {name} ({reason} changed)");
                let short: String = old.id.chars().take(12).collect();
                let temporary = format!("{short}_{name}");
                let id = create(docker, project, service, image_id, &temporary).await?;
                let grace = grace_seconds(service);
                stop_and_remove(docker, &old.id, grace).await?;
                docker
                    .rename_container(&id, RenameContainerOptions { name: name.clone() })
                    .await
                    .map_err(|e| docker_error(&format!("rename {temporary} to {name}"), e))?;
                start(docker, &id).await?;
                recreated.insert(service.name.clone());
                summary.recreated.push(service.name.clone());
            }
            Action::Keep { running } => match (running, restart_for, &entry.container) {
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
            },
            Action::Remove => {}
        }
    }
    Ok(summary)
}

fn grace_seconds(service: &Service) -> i32 {
    service
        .stop_grace_period
        .map_or(10, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
}

async fn start(docker: &Docker, id: &str) -> Result<(), Error> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| docker_error(&format!("start container {id}"), e))
}

async fn stop_and_remove(docker: &Docker, id: &str, grace: i32) -> Result<(), Error> {
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
        }) => {}
        Err(e) => return Err(docker_error(&format!("stop container {id}"), e)),
    }
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

/// Labels Compose v2 puts on a service container, plus the agent's two.
pub fn container_labels(
    project: &Project,
    service: &Service,
    image_id: &str,
) -> BTreeMap<String, String> {
    let mut out = service.labels.clone();
    let files: Vec<String> = project
        .config_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let depends_on: Vec<String> = service
        .depends_on
        .iter()
        .map(|(name, d)| format!("{name}:{}:{}", d.condition.as_str(), d.restart))
        .collect();
    for (key, value) in [
        (labels::CONFIG_HASH, hash::service_hash(service)),
        (labels::CONTAINER_NUMBER, "1".to_owned()),
        (labels::DEPENDS_ON, depends_on.join(",")),
        (labels::IMAGE, image_id.to_owned()),
        (labels::ONEOFF, "False".to_owned()),
        (labels::PROJECT, project.name.clone()),
        (labels::CONFIG_FILES, files.join(",")),
        (
            labels::WORKING_DIR,
            project.working_dir.display().to_string(),
        ),
        (labels::SERVICE, service.name.clone()),
        (labels::VERSION, labels::COMPOSE_VERSION.to_owned()),
        (labels::AGENT_ENV_HASH, hash::environment_hash(service)),
        (
            labels::AGENT_BASE_HASH,
            hash::service_hash_without_env(service),
        ),
    ] {
        out.insert(key.to_owned(), value);
    }
    out
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The Engine's create body for `service`, as Compose builds it.
pub fn create_body(
    project: &Project,
    service: &Service,
    image_id: &str,
    name: &str,
) -> ContainerCreateBody {
    let env: Vec<String> = service
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    let healthcheck = service.healthcheck.as_ref().map(|h| HealthConfig {
        test: if h.disable {
            Some(vec!["NONE".into()])
        } else {
            h.test.clone()
        },
        interval: h.interval.map(nanos),
        timeout: h.timeout.map(nanos),
        retries: h.retries.map(|r| i64::try_from(r).unwrap_or(i64::MAX)),
        start_period: h.start_period.map(nanos),
        start_interval: h.start_interval.map(nanos),
    });

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &service.ports {
        let key = format!("{}/{}", p.target, p.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: p.published.clone(),
            });
    }

    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for m in &service.volumes {
        let mode = if m.read_only { "ro" } else { "rw" };
        match m.kind {
            MountKind::Volume => {
                let volume_name = project
                    .volumes
                    .get(&m.source)
                    .map_or_else(|| m.source.clone(), |v| v.name.clone());
                if m.volume_nocopy == Some(true) {
                    mounts.push(Mount {
                        target: Some(m.target.clone()),
                        source: Some(volume_name),
                        typ: Some(MountType::VOLUME),
                        read_only: Some(m.read_only),
                        volume_options: Some(MountVolumeOptions {
                            no_copy: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                } else {
                    binds.push(format!("{volume_name}:{}:{mode}", m.target));
                }
            }
            // Binds create a missing host path, as create_host_path asks.
            MountKind::Bind if m.bind.unwrap_or(true) => {
                binds.push(format!("{}:{}:{mode}", m.source, m.target));
            }
            MountKind::Bind => mounts.push(Mount {
                target: Some(m.target.clone()),
                source: Some(m.source.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(m.read_only),
                ..Default::default()
            }),
        }
    }

    let restart_policy = service.restart.as_deref().map(|r| {
        let (name, count) = match r.split_once(':') {
            Some((name, count)) => (name, count.parse().ok()),
            None => (r, None),
        };
        RestartPolicy {
            name: Some(match name {
                "always" => RestartPolicyNameEnum::ALWAYS,
                "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
                "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                _ => RestartPolicyNameEnum::NO,
            }),
            maximum_retry_count: count,
        }
    });

    let (network_mode, endpoints) = match (&service.network_mode, &service.networks) {
        (Some(mode), _) => (Some(mode.clone()), None),
        (None, Some(networks)) => match networks.iter().next() {
            Some((key, config)) => {
                let engine_name = project
                    .networks
                    .get(key)
                    .map_or_else(|| key.clone(), |n| n.name.clone());
                let endpoint = endpoint(service, name, config.as_ref());
                (
                    Some(engine_name.clone()),
                    Some(HashMap::from([(engine_name, endpoint)])),
                )
            }
            None => (None, None),
        },
        (None, None) => (None, None),
    };

    ContainerCreateBody {
        image: Some(service.image.clone()),
        cmd: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        env: Some(env),
        user: service.user.clone(),
        working_dir: service.working_dir.clone(),
        labels: Some(
            container_labels(project, service, image_id)
                .into_iter()
                .collect(),
        ),
        healthcheck,
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: service
            .stop_grace_period
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            mounts: (!mounts.is_empty()).then_some(mounts),
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            restart_policy,
            log_config: service.logging.as_ref().map(|l| HostConfigLogConfig {
                typ: l.driver.clone(),
                config: Some(l.options.clone().into_iter().collect()),
            }),
            extra_hosts: (!service.extra_hosts.is_empty()).then(|| {
                service
                    .extra_hosts
                    .iter()
                    .map(|h| h.replacen('=', ":", 1))
                    .collect()
            }),
            network_mode,
            ..Default::default()
        }),
        networking_config: endpoints.map(|e| NetworkingConfig {
            endpoints_config: Some(e),
        }),
        ..Default::default()
    }
}

fn endpoint(
    service: &Service,
    container_name: &str,
    config: Option<&super::model::ServiceNetwork>,
) -> EndpointSettings {
    // The final name, even while the container has a temporary one.
    let final_name = container_name
        .split_once('_')
        .filter(|(prefix, _)| prefix.len() == 12 && prefix.chars().all(|c| c.is_ascii_hexdigit()))
        .map_or(container_name, |(_, rest)| rest);
    let mut aliases = vec![final_name.to_owned(), service.name.clone()];
    if let Some(c) = config {
        aliases.extend(c.aliases.iter().cloned());
    }
    EndpointSettings {
        aliases: Some(aliases),
        ..Default::default()
    }
}

async fn create(
    docker: &Docker,
    project: &Project,
    service: &Service,
    image_id: &str,
    name: &str,
) -> Result<String, Error> {
    let body = create_body(project, service, image_id, name);
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
                        endpoint_config: Some(endpoint(service, name, config.as_ref())),
                    },
                )
                .await
                .map_err(|e| docker_error(&format!("connect {name} to {engine_name}"), e))?;
        }
    }
    Ok(created.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn project() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compose.yaml");
        std::fs::write(
            &path,
            r#"
services:
  db:
    image: db:1
    healthcheck:
      disable: true
  api:
    image: api:1
    command: ["serve", "--port", "8080"]
    entrypoint: /sbin/tini --
    environment:
      TOKEN: abc
      UNSET_WITHOUT_VALUE: null
    ports: ["127.0.0.1:18080:8080", "9000/udp"]
    volumes:
      - data:/data:ro
      - /srv/conf:/conf
      - type: volume
        source: data
        target: /nocopy
        volume: {nocopy: true}
      - type: bind
        source: /srv/strict
        target: /strict
        bind: {create_host_path: false}
    healthcheck:
      test: ["CMD", "true"]
      interval: 2s
      timeout: 1500ms
      retries: 3
      start_period: 1m
    restart: on-failure:4
    logging:
      driver: json-file
      options: {max-size: 10m}
    extra_hosts: ["db.internal:10.0.0.5"]
    stop_grace_period: 20s
    user: "1000:1000"
    working_dir: /app
    labels: {team: web}
    depends_on:
      db: {condition: service_healthy, restart: true}
    networks:
      back: {aliases: [api-alias]}
      default:
volumes:
  data:
networks:
  back:
"#,
        )
        .unwrap();
        super::super::load::load(&path, "unit", &BTreeMap::new()).unwrap()
    }

    #[test]
    fn the_create_body_is_what_compose_would_send() {
        let project = project();
        let api = project.service("api").unwrap();
        let body = create_body(&project, api, "sha256:img", "0123456789ab_unit-api-1");
        assert_eq!(body.image.as_deref(), Some("api:1"));
        assert_eq!(
            body.cmd,
            Some(vec!["serve".into(), "--port".into(), "8080".into()])
        );
        assert_eq!(
            body.entrypoint,
            Some(vec!["/sbin/tini".into(), "--".into()])
        );
        // Names without a value are not passed; values never appear elsewhere.
        assert_eq!(body.env, Some(vec!["TOKEN=abc".into()]));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.working_dir.as_deref(), Some("/app"));
        assert_eq!(body.stop_timeout, Some(20));
        let hc = body.healthcheck.clone().unwrap();
        assert_eq!(hc.test, Some(vec!["CMD".into(), "true".into()]));
        assert_eq!(hc.interval, Some(2_000_000_000));
        assert_eq!(hc.timeout, Some(1_500_000_000));
        assert_eq!(hc.retries, Some(3));
        assert_eq!(hc.start_period, Some(60_000_000_000));
        let mut exposed = body.exposed_ports.clone().unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["8080/tcp".to_owned(), "9000/udp".into()]);

        let labels = body.labels.clone().unwrap();
        for (key, value) in [
            ("com.docker.compose.project", "unit"),
            ("com.docker.compose.service", "api"),
            ("com.docker.compose.container-number", "1"),
            ("com.docker.compose.oneoff", "False"),
            ("com.docker.compose.version", labels::COMPOSE_VERSION),
            ("com.docker.compose.image", "sha256:img"),
            ("com.docker.compose.depends_on", "db:service_healthy:true"),
            ("team", "web"),
        ] {
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert_eq!(
            labels.get("com.docker.compose.config-hash"),
            Some(&hash::service_hash(api))
        );
        assert_eq!(
            labels.get("com.docker.compose.project.config_files"),
            Some(&project.config_files[0].display().to_string())
        );

        let host = body.host_config.clone().unwrap();
        assert_eq!(
            host.binds,
            Some(vec![
                "unit_data:/data:ro".into(),
                "/srv/conf:/conf:rw".into()
            ])
        );
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].source.as_deref(), Some("unit_data"));
        assert_eq!(
            mounts[0].volume_options.as_ref().and_then(|o| o.no_copy),
            Some(true)
        );
        assert_eq!(mounts[1].typ, Some(MountType::BIND));
        assert_eq!(mounts[1].source.as_deref(), Some("/srv/strict"));
        let ports = host.port_bindings.unwrap();
        let web = ports["8080/tcp"].clone().unwrap();
        assert_eq!(web[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(web[0].host_port.as_deref(), Some("18080"));
        assert_eq!(ports["9000/udp"].clone().unwrap()[0].host_port, None);
        let restart = host.restart_policy.unwrap();
        assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(restart.maximum_retry_count, Some(4));
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(
            log.config.unwrap().get("max-size").map(String::as_str),
            Some("10m")
        );
        assert_eq!(host.extra_hosts, Some(vec!["db.internal:10.0.0.5".into()]));
        // The first network (sorted) at create; `default` is connected after.
        assert_eq!(host.network_mode.as_deref(), Some("unit_back"));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["unit_back"].aliases,
            Some(vec!["unit-api-1".into(), "api".into(), "api-alias".into()])
        );

        let db = project.service("db").unwrap();
        let body = create_body(&project, db, "sha256:db", "unit-db-1");
        assert_eq!(body.healthcheck.unwrap().test, Some(vec!["NONE".into()]));
        assert_eq!(
            body.host_config.unwrap().network_mode.as_deref(),
            Some("unit_default")
        );
    }
}
