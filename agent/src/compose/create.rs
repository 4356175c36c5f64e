//! The Engine's create body for a service: what Compose v2 sends to
//! `POST /containers/create`, field by field, plus the labels it writes.
//!
//! Separate from [`super::converge`] because the mapping from the model to
//! the Engine's fields grows with every supported Compose key, while the
//! converge loop (ordering, replacement, waits) changes for other reasons.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, HealthConfig,
    HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount, MountTmpfsOptions,
    MountType, MountVolumeOptions, NetworkingConfig, PortBinding, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};

use super::hash;
use super::labels;
use super::model::{FileSource, MountKind, Project, Service};

/// Which of a service's containers a create is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The replica number, 1..=N: Compose's `container-number` label.
    pub number: u32,
    /// Anonymous volumes to reattach, container path -> volume name: the
    /// old container's, on a recreate, as Compose carries them over.
    pub anonymous: BTreeMap<String, String>,
    /// Join the networks without the service-name and file aliases (only
    /// the container's own name resolves): a start-first replacement stays
    /// out of the service's DNS until it is healthy, then is announced
    /// (see [`super::replace`]).
    pub unannounced: bool,
}

impl Instance {
    /// Replica `number` with fresh anonymous volumes.
    pub fn new(number: u32) -> Self {
        Instance {
            number,
            anonymous: BTreeMap::new(),
            unannounced: false,
        }
    }
}

/// Labels Compose v2 puts on container `number` of a service, plus the
/// agent's two.
pub fn container_labels(
    project: &Project,
    service: &Service,
    image_id: &str,
    number: u32,
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
        (labels::CONTAINER_NUMBER, number.to_string()),
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

/// Secrets and configs whose content is inline (`environment:`, a
/// config's `content:`), as (absolute target, content, mode, uid, gid): the
/// files Compose copies into a container before starting it.
pub fn inline_files(project: &Project, service: &Service) -> Vec<(String, Vec<u8>, u32, u64, u64)> {
    let mut out = Vec::new();
    for (key, default_dir) in [("secrets", "/run/secrets/"), ("configs", "/")] {
        let defined = if key == "secrets" {
            &project.secrets
        } else {
            &project.configs
        };
        for r in service
            .options
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let Some(source) = r.get("source").and_then(|v| v.as_str()) else {
                continue;
            };
            let Some(FileSource::Inline(text)) = defined.get(source).map(|o| &o.source) else {
                continue;
            };
            let target = match r.get("target").and_then(|v| v.as_str()) {
                None => format!("{default_dir}{source}"),
                Some(t) if t.starts_with('/') => t.to_owned(),
                Some(t) => format!("{default_dir}{t}"),
            };
            let mode = r
                .get("mode")
                .and_then(|m| m.as_str())
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(0o444);
            let id = |k: &str| {
                r.get(k)
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            out.push((
                target,
                text.0.clone().into_bytes(),
                mode,
                id("uid"),
                id("gid"),
            ));
        }
    }
    out
}

/// Copy the inline secrets and configs of `service` into the created (not
/// yet started) container `id`, as one tar archive extracted at `/`.
pub async fn inject_inline_files(
    docker: &bollard::Docker,
    project: &Project,
    service: &Service,
    id: &str,
    name: &str,
) -> Result<(), crate::error::Error> {
    let files = inline_files(project, service);
    if files.is_empty() {
        return Ok(());
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (target, content, mode, uid, gid) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_uid(*uid);
        header.set_gid(*gid);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(
                &mut header,
                target.trim_start_matches('/'),
                content.as_slice(),
            )
            .map_err(|e| {
                crate::error::Error::failed(
                    crate::error::Stage::Converge,
                    format!("archive {target} for {name}: {e}"),
                )
            })?;
    }
    let archive = builder.into_inner().map_err(|e| {
        crate::error::Error::failed(
            crate::error::Stage::Converge,
            format!("archive the files for {name}: {e}"),
        )
    })?;
    docker
        .upload_to_container(
            id,
            Some(bollard::query_parameters::UploadToContainerOptions {
                path: "/".into(),
                ..Default::default()
            }),
            bollard::body_full(archive.into()),
        )
        .await
        .map_err(|e| super::plan::docker_error(&format!("copy secrets and configs into {name}"), e))
}

/// A network's `ipam` for the Engine's create call (`None` when unset).
pub fn network_ipam(def: &super::model::NetworkDef) -> Option<bollard::models::Ipam> {
    let ipam = def.ipam.as_object().filter(|o| !o.is_empty())?;
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let map = |v: Option<&serde_json::Value>| {
        v.and_then(|m| m.as_object()).map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect::<HashMap<String, String>>()
        })
    };
    let config = ipam
        .get("config")
        .and_then(|c| c.as_array())
        .map(|entries| {
            entries
                .iter()
                .map(|e| bollard::models::IpamConfig {
                    subnet: text(e, "subnet"),
                    ip_range: text(e, "ip_range"),
                    gateway: text(e, "gateway"),
                    auxiliary_addresses: map(e.get("aux_addresses")),
                })
                .collect()
        });
    Some(bollard::models::Ipam {
        driver: ipam
            .get("driver")
            .and_then(|d| d.as_str())
            .map(str::to_owned),
        config,
        options: map(ipam.get("options")),
    })
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
    instance: &Instance,
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

    // Compose passes `expose` entries as written (`8080`, not `8080/tcp`;
    // the Engine reads a bare port as tcp).
    for expose in service.option_strings("expose") {
        if !exposed.contains(&expose) {
            exposed.push(expose);
        }
    }

    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for m in &service.volumes {
        let mut mode = if m.read_only { "ro" } else { "rw" }.to_owned();
        for extra in [&m.selinux, &m.propagation].into_iter().flatten() {
            mode.push(',');
            mode.push_str(extra);
        }
        let mode = mode.as_str();
        match m.kind {
            MountKind::Tmpfs => mounts.push(Mount {
                target: Some(m.target.clone()),
                typ: Some(MountType::TMPFS),
                read_only: Some(m.read_only),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: m.tmpfs_size,
                    mode: m.tmpfs_mode.map(i64::from),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // Anonymous: the Engine names a new volume, unless the old
            // container's is reattached.
            MountKind::Volume if m.source.is_empty() => mounts.push(Mount {
                target: Some(m.target.clone()),
                source: instance.anonymous.get(&m.target).cloned(),
                typ: Some(MountType::VOLUME),
                read_only: m.read_only.then_some(true),
                volume_options: m.volume_nocopy.map(|nocopy| MountVolumeOptions {
                    no_copy: nocopy.then_some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
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

    // File-backed secrets and configs are bind-mounted read-only, as
    // Compose does without Swarm.
    for (key, default_dir) in [("secrets", "/run/secrets/"), ("configs", "/")] {
        let defined = if key == "secrets" {
            &project.secrets
        } else {
            &project.configs
        };
        for r in service
            .options
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let Some(source) = r.get("source").and_then(|v| v.as_str()) else {
                continue;
            };
            let Some(FileSource::File(path)) = defined.get(source).map(|o| &o.source) else {
                continue;
            };
            // A relative target goes under the default directory, as
            // Compose places it.
            let target = match r.get("target").and_then(|v| v.as_str()) {
                None => format!("{default_dir}{source}"),
                Some(t) if t.starts_with('/') => t.to_owned(),
                Some(t) => format!("{default_dir}{t}"),
            };
            mounts.push(Mount {
                target: Some(target),
                source: Some(path.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
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
                let endpoint = endpoint(service, name, config.as_ref(), !instance.unannounced);
                (
                    Some(engine_name.clone()),
                    Some(HashMap::from([(engine_name, endpoint)])),
                )
            }
            None => (None, None),
        },
        (None, None) => (None, None),
    };

    let restart_policy = restart_policy.or_else(|| deploy_restart_policy(service));
    let o = |key: &str| service.option_str(key).map(str::to_owned);
    let list = |key: &str| Some(service.option_strings(key)).filter(|l| !l.is_empty());
    let int = |key: &str| service.options.get(key).and_then(serde_json::Value::as_i64);
    let flag = |key: &str| service.option_bool(key).then_some(true);
    let limit = |key: &str| service.deploy_value(&["resources", "limits", key]);
    let nano_cpus = service
        .options
        .get("cpus")
        .or_else(|| limit("cpus"))
        .and_then(serde_json::Value::as_f64)
        .map(|c| (c * 1e9).round() as i64);
    let memory = service.option_bytes("mem_limit").or_else(|| {
        limit("memory")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())
    });
    let memory_reservation = service.option_bytes("mem_reservation").or_else(|| {
        service
            .deploy_value(&["resources", "reservations", "memory"])
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())
    });
    let pids_limit = int("pids_limit").or_else(|| limit("pids").and_then(|v| v.as_i64()));
    let ulimits = service
        .options
        .get("ulimits")
        .and_then(|u| u.as_object())
        .map(|u| {
            u.iter()
                .map(|(name, v)| {
                    let (soft, hard) = match v.as_i64() {
                        Some(n) => (Some(n), Some(n)),
                        None => (
                            v.get("soft").and_then(|x| x.as_i64()),
                            v.get("hard").and_then(|x| x.as_i64()),
                        ),
                    };
                    ResourcesUlimits {
                        name: Some(name.clone()),
                        soft,
                        hard,
                    }
                })
                .collect()
        });
    let devices = service
        .options
        .get("devices")
        .and_then(|d| d.as_array())
        .map(|d| {
            d.iter()
                .map(|x| DeviceMapping {
                    path_on_host: x.get("source").and_then(|v| v.as_str()).map(str::to_owned),
                    path_in_container: x.get("target").and_then(|v| v.as_str()).map(str::to_owned),
                    cgroup_permissions: x
                        .get("permissions")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                })
                .collect()
        });
    let string_map = |key: &str| {
        service
            .options
            .get(key)
            .and_then(|m| m.as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect::<HashMap<String, String>>()
            })
    };
    // `tmpfs: /run:size=64m` becomes {"/run": "size=64m"}.
    let tmpfs = list("tmpfs").map(|entries| {
        entries
            .iter()
            .map(|t| match t.split_once(':') {
                Some((path, options)) => (path.to_owned(), options.to_owned()),
                None => (t.clone(), String::new()),
            })
            .collect::<HashMap<String, String>>()
    });
    let cgroupns_mode = o("cgroup").and_then(|c| match c.as_str() {
        "host" => Some(HostConfigCgroupnsModeEnum::HOST),
        "private" => Some(HostConfigCgroupnsModeEnum::PRIVATE),
        _ => None,
    });

    ContainerCreateBody {
        hostname: o("hostname"),
        domainname: o("domainname"),
        tty: flag("tty"),
        open_stdin: flag("stdin_open"),
        stop_signal: o("stop_signal"),
        image: Some(service.image.clone()),
        cmd: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        env: Some(env),
        user: service.user.clone(),
        working_dir: service.working_dir.clone(),
        labels: Some(
            container_labels(project, service, image_id, instance.number)
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
            cap_add: list("cap_add"),
            cap_drop: list("cap_drop"),
            cgroup_parent: o("cgroup_parent"),
            cgroupns_mode,
            cpu_count: int("cpu_count"),
            cpu_percent: service
                .options
                .get("cpu_percent")
                .and_then(serde_json::Value::as_f64)
                .map(|p| p as i64),
            cpu_period: int("cpu_period"),
            cpu_quota: int("cpu_quota"),
            cpu_realtime_period: int("cpu_rt_period"),
            cpu_realtime_runtime: int("cpu_rt_runtime"),
            cpu_shares: int("cpu_shares"),
            cpuset_cpus: o("cpuset"),
            nano_cpus,
            memory,
            memory_reservation,
            memory_swap: service.option_bytes("memswap_limit"),
            memory_swappiness: service.option_bytes("mem_swappiness"),
            oom_kill_disable: flag("oom_kill_disable"),
            oom_score_adj: int("oom_score_adj"),
            pids_limit,
            ulimits,
            devices,
            dns: list("dns"),
            dns_options: list("dns_opt"),
            dns_search: list("dns_search"),
            group_add: list("group_add"),
            init: service
                .options
                .get("init")
                .and_then(serde_json::Value::as_bool),
            ipc_mode: o("ipc"),
            pid_mode: o("pid"),
            privileged: flag("privileged"),
            readonly_rootfs: flag("read_only"),
            runtime: o("runtime"),
            security_opt: list("security_opt"),
            shm_size: service.option_bytes("shm_size"),
            storage_opt: string_map("storage_opt"),
            sysctls: string_map("sysctls"),
            annotations: string_map("annotations"),
            tmpfs,
            // `links: [db]` / `[db:alias]` name the target's container.
            links: list("links").map(|links| {
                links
                    .iter()
                    .map(|l| {
                        let (target, alias) = l.split_once(':').unwrap_or((l, l));
                        format!("{}:{alias}", project.container_name(target))
                    })
                    .collect()
            }),
            userns_mode: o("userns_mode"),
            uts_mode: o("uts"),
            ..Default::default()
        }),
        networking_config: endpoints.map(|e| NetworkingConfig {
            endpoints_config: Some(e),
        }),
        ..Default::default()
    }
}

pub(super) fn endpoint(
    service: &Service,
    container_name: &str,
    config: Option<&super::model::ServiceNetwork>,
    announced: bool,
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
    if !announced {
        aliases.clear();
    }
    let ipam = config
        .filter(|c| c.ipv4_address.is_some() || c.ipv6_address.is_some())
        .map(|c| EndpointIpamConfig {
            ipv4_address: c.ipv4_address.clone(),
            ipv6_address: c.ipv6_address.clone(),
            ..Default::default()
        });
    EndpointSettings {
        aliases: (!aliases.is_empty()).then_some(aliases),
        ipam_config: ipam,
        mac_address: service.option_str("mac_address").map(str::to_owned),
        ..Default::default()
    }
}

/// `deploy.restart_policy` when `restart` is not set, as Compose maps it.
fn deploy_restart_policy(service: &Service) -> Option<RestartPolicy> {
    let policy = service.deploy_value(&["restart_policy"])?;
    let name = match policy.get("condition").and_then(|c| c.as_str()) {
        Some("none") => RestartPolicyNameEnum::NO,
        Some("on-failure") => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    Some(RestartPolicy {
        name: Some(name),
        maximum_retry_count: policy.get("max_attempts").and_then(|m| m.as_i64()),
    })
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
        let body = create_body(
            &project,
            api,
            "sha256:img",
            "0123456789ab_unit-api-1",
            &Instance::new(1),
        );
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
        let body = create_body(&project, db, "sha256:db", "unit-db-1", &Instance::new(1));
        assert_eq!(body.healthcheck.unwrap().test, Some(vec!["NONE".into()]));
        assert_eq!(
            body.host_config.unwrap().network_mode.as_deref(),
            Some("unit_default")
        );
    }
}
