//! Compose v2's config-hash, byte for byte.
//!
//! `docker compose up` recreates a container whose
//! `com.docker.compose.config-hash` label differs from the hash it computes,
//! and offers to recreate (wipe) a volume or network whose label differs. So
//! the hand-over with operators' `docker compose up -d` only works if these
//! hashes are Compose's own: sha256 of Go's `json.Marshal` of compose-go's
//! normalized `ServiceConfig` (fields in struct order, `omitempty` honoured,
//! maps with sorted keys, `<`, `>`, `&` escaped as `\u003c`...), with
//! `build`, `pull_policy`, `scale`, `deploy.replicas`, `depends_on` and
//! `profiles` cleared. Volumes hash `VolumeConfig` with the driver defaulted
//! to `local`; networks hash `NetworkConfig` as is.
//!
//! Verified against Compose v2.40.3: the labels `docker compose create`
//! writes. Note that `docker compose config --hash` differs for services with
//! `env_file`: it hashes the file list, while `up` hashes the merged
//! environment (what we do, since `up` is what recreates).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::model::{MountKind, NetworkDef, Service, VolumeDef, VolumeMount};

/// The service's config-hash, as Compose v2 labels it.
pub fn service_hash(service: &Service) -> String {
    sha256_hex(&go_marshal(&service_json(service)))
}

/// The hash of the service without its environment: tells an environment
/// change from other config changes in the plan.
pub fn service_hash_without_env(service: &Service) -> String {
    let mut value = service_json(service);
    if let Value::Object(map) = &mut value {
        map.remove("environment");
    }
    sha256_hex(&go_marshal(&value))
}

/// Hash of the effective environment alone.
pub fn environment_hash(service: &Service) -> String {
    sha256_hex(&go_marshal(&json!(service.environment)))
}

pub fn volume_hash(volume: &VolumeDef) -> String {
    let mut map = Map::new();
    map.insert("name".into(), json!(volume.name));
    map.insert(
        "driver".into(),
        json!(volume.driver.as_deref().unwrap_or("local")),
    );
    insert_map(&mut map, "driver_opts", &volume.driver_opts);
    if volume.external {
        map.insert("external".into(), json!(true));
    }
    insert_map(&mut map, "labels", &volume.labels);
    sha256_hex(&go_marshal(&Value::Object(map)))
}

pub fn network_hash(network: &NetworkDef) -> String {
    let mut map = Map::new();
    map.insert("name".into(), json!(network.name));
    if let Some(driver) = &network.driver {
        map.insert("driver".into(), json!(driver));
    }
    insert_map(&mut map, "driver_opts", &network.driver_opts);
    map.insert("ipam".into(), network.ipam.clone());
    if network.external {
        map.insert("external".into(), json!(true));
    }
    if network.internal {
        map.insert("internal".into(), json!(true));
    }
    if network.attachable {
        map.insert("attachable".into(), json!(true));
    }
    insert_map(&mut map, "labels", &network.labels);
    if let Some(v6) = network.enable_ipv6 {
        map.insert("enable_ipv6".into(), json!(v6));
    }
    sha256_hex(&go_marshal(&Value::Object(map)))
}

/// compose-go's JSON of the normalized service, minus the fields Compose
/// clears before hashing. Field order is `types.ServiceConfig`'s.
pub fn service_json(s: &Service) -> Value {
    let mut m = Map::new();
    // `command` and `entrypoint` are never omitted (null when unset).
    m.insert("command".into(), json!(s.command));
    m.insert("entrypoint".into(), json!(s.entrypoint));
    if !s.environment.is_empty() {
        m.insert("environment".into(), json!(s.environment));
    }
    if !s.extra_hosts.is_empty() {
        m.insert("extra_hosts".into(), json!(s.extra_hosts));
    }
    if let Some(hc) = &s.healthcheck {
        let mut h = Map::new();
        if let Some(test) = &hc.test {
            h.insert("test".into(), json!(test));
        }
        for (key, value) in [("timeout", hc.timeout), ("interval", hc.interval)] {
            if let Some(d) = value {
                h.insert(key.into(), json!(go_duration(d)));
            }
        }
        if let Some(retries) = hc.retries {
            h.insert("retries".into(), json!(retries));
        }
        for (key, value) in [
            ("start_period", hc.start_period),
            ("start_interval", hc.start_interval),
        ] {
            if let Some(d) = value {
                h.insert(key.into(), json!(go_duration(d)));
            }
        }
        if hc.disable {
            h.insert("disable".into(), json!(true));
        }
        m.insert("healthcheck".into(), Value::Object(h));
    }
    m.insert("image".into(), json!(s.image));
    insert_map(&mut m, "labels", &s.labels);
    if let Some(logging) = &s.logging {
        let mut l = Map::new();
        if let Some(driver) = &logging.driver {
            l.insert("driver".into(), json!(driver));
        }
        insert_map(&mut l, "options", &logging.options);
        m.insert("logging".into(), Value::Object(l));
    }
    if let Some(mode) = &s.network_mode {
        m.insert("network_mode".into(), json!(mode));
    }
    if let Some(networks) = &s.networks {
        let mut n = Map::new();
        for (name, config) in networks {
            let value = match config {
                None => Value::Null,
                Some(c) => {
                    let mut o = Map::new();
                    if !c.aliases.is_empty() {
                        o.insert("aliases".into(), json!(c.aliases));
                    }
                    if let Some(ip) = &c.ipv4_address {
                        o.insert("ipv4_address".into(), json!(ip));
                    }
                    if let Some(ip) = &c.ipv6_address {
                        o.insert("ipv6_address".into(), json!(ip));
                    }
                    Value::Object(o)
                }
            };
            n.insert(name.clone(), value);
        }
        if !n.is_empty() {
            m.insert("networks".into(), Value::Object(n));
        }
    }
    if !s.ports.is_empty() {
        let ports: Vec<Value> = s
            .ports
            .iter()
            .map(|p| {
                let mut o = Map::new();
                o.insert("mode".into(), json!(p.mode));
                if let Some(ip) = &p.host_ip {
                    o.insert("host_ip".into(), json!(ip));
                }
                o.insert("target".into(), json!(p.target));
                if let Some(published) = &p.published {
                    o.insert("published".into(), json!(published));
                }
                o.insert("protocol".into(), json!(p.protocol));
                Value::Object(o)
            })
            .collect();
        m.insert("ports".into(), Value::Array(ports));
    }
    if let Some(restart) = &s.restart {
        m.insert("restart".into(), json!(restart));
    }
    if let Some(grace) = s.stop_grace_period {
        m.insert("stop_grace_period".into(), json!(go_duration(grace)));
    }
    if let Some(user) = &s.user {
        m.insert("user".into(), json!(user));
    }
    if !s.volumes.is_empty() {
        let volumes: Vec<Value> = s.volumes.iter().map(mount_json).collect();
        m.insert("volumes".into(), Value::Array(volumes));
    }
    if let Some(dir) = &s.working_dir {
        m.insert("working_dir".into(), json!(dir));
    }
    if let Some(name) = &s.container_name {
        m.insert("container_name".into(), json!(name));
    }
    for (key, value) in &s.options {
        m.insert(key.clone(), value.clone());
    }
    // Cleared by Compose before hashing.
    m.remove("profiles");
    m.remove("pull_policy");
    Value::Object(in_field_order(m))
}

/// compose-go's `ServiceConfig` fields in declaration order, which is the
/// order `encoding/json` writes them.
const SERVICE_FIELDS: &[&str] = &[
    "profiles",
    "annotations",
    "attach",
    "build",
    "develop",
    "blkio_config",
    "cap_add",
    "cap_drop",
    "cgroup_parent",
    "cgroup",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpus",
    "cpuset",
    "cpu_shares",
    "command",
    "configs",
    "container_name",
    "credential_spec",
    "depends_on",
    "deploy",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "dockerfile",
    "domainname",
    "entrypoint",
    "provider",
    "environment",
    "env_file",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "group_add",
    "gpus",
    "hostname",
    "healthcheck",
    "image",
    "init",
    "ipc",
    "isolation",
    "labels",
    "label_file",
    "links",
    "logging",
    "log_driver",
    "log_opt",
    "mem_limit",
    "mem_reservation",
    "memswap_limit",
    "mem_swappiness",
    "mac_address",
    "net",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "privileged",
    "pull_policy",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "user",
    "userns_mode",
    "uts",
    "volume_driver",
    "volumes",
    "volumes_from",
    "working_dir",
    "post_start",
    "pre_stop",
];

fn in_field_order(mut m: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for field in SERVICE_FIELDS {
        if let Some(v) = m.remove(*field) {
            out.insert((*field).to_owned(), v);
        }
    }
    // Anything unknown last (none today: the loader only emits known keys).
    out.extend(m);
    out
}

/// One `ServiceVolumeConfig`: type, source, target, read_only,
/// consistency, bind, volume, tmpfs.
fn mount_json(v: &VolumeMount) -> Value {
    let mut o = Map::new();
    let kind = match v.kind {
        MountKind::Volume => "volume",
        MountKind::Bind => "bind",
        MountKind::Tmpfs => "tmpfs",
    };
    o.insert("type".into(), json!(kind));
    if !v.source.is_empty() {
        o.insert("source".into(), json!(v.source));
    }
    o.insert("target".into(), json!(v.target));
    if v.read_only {
        o.insert("read_only".into(), json!(true));
    }
    if let Some(c) = &v.consistency {
        o.insert("consistency".into(), json!(c));
    }
    if v.bind.is_some() || v.selinux.is_some() || v.propagation.is_some() {
        let mut b = Map::new();
        if let Some(selinux) = &v.selinux {
            b.insert("selinux".into(), json!(selinux));
        }
        if let Some(propagation) = &v.propagation {
            b.insert("propagation".into(), json!(propagation));
        }
        if v.bind == Some(true) {
            b.insert("create_host_path".into(), json!(true));
        }
        o.insert("bind".into(), Value::Object(b));
    }
    if v.volume_nocopy.is_some() || v.subpath.is_some() {
        let mut b = Map::new();
        if v.volume_nocopy == Some(true) {
            b.insert("nocopy".into(), json!(true));
        }
        if let Some(subpath) = &v.subpath {
            b.insert("subpath".into(), json!(subpath));
        }
        o.insert("volume".into(), Value::Object(b));
    }
    if v.tmpfs_size.is_some() || v.tmpfs_mode.is_some() {
        let mut t = Map::new();
        if let Some(size) = v.tmpfs_size {
            t.insert("size".into(), json!(size.to_string()));
        }
        if let Some(mode) = v.tmpfs_mode {
            t.insert("mode".into(), json!(mode));
        }
        o.insert("tmpfs".into(), Value::Object(t));
    }
    Value::Object(o)
}

fn insert_map(target: &mut Map<String, Value>, key: &str, map: &BTreeMap<String, String>) {
    if !map.is_empty() {
        target.insert(key.into(), json!(map));
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Go's `json.Marshal` text for a value: compact, and with the HTML-safe
/// escapes Go applies by default. serde_json already matches Go for control
/// characters, quotes and backslashes; map key order comes from the
/// `preserve_order` maps built above (sorted where Go sorts).
pub fn go_marshal(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            other => out.push(other),
        }
    }
    out
}

/// Go's `time.Duration.String()`: `1m30s`, `1.5s`, `500ms`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", fraction(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", fraction(ns, 6));
    }
    let hours = ns / 3_600_000_000_000;
    let minutes = (ns / 60_000_000_000) % 60;
    let seconds = fraction(ns % 60_000_000_000, 9);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / 10^digits` with the fraction's trailing zeros trimmed.
fn fraction(value: u128, digits: u32) -> String {
    let unit = 10u128.pow(digits);
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::from_secs(0), "0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(15), "15ns"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3600 + 62), "1h1m2s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(30), "30s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want);
        }
    }

    #[test]
    fn marshal_escapes_html_like_go() {
        let v = json!({"a": "x<y>&z", "b": "line\nq\"\\"});
        assert_eq!(
            go_marshal(&v),
            r#"{"a":"x\u003cy\u003e\u0026z","b":"line\nq\"\\"}"#
        );
    }
}
