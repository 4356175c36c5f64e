//! One service: its keys, their short and long forms, and the normalized
//! values compose-go gives them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::gosyntax::shell_split;
use super::mounts::normalize;
use super::options::{deploy, option_keys, read_options};
use super::ports::ports;
use super::section::{as_sequence, key_text, scalar_string, Section};
use super::{invalid, join_path, Ctx, LoadError, HINT, SERVICE_KEYS};
use crate::compose::interpolate::parse_dotenv;
use crate::compose::model::*;

/// One env file read: its absolute path and its variables.
type EnvFile = (PathBuf, BTreeMap<String, String>);

impl Ctx<'_> {
    pub(super) fn lookup(&self, name: &str) -> Option<String> {
        self.environment.get(name).cloned()
    }

    pub(super) fn service(
        &self,
        name: &str,
        value: &Value,
        at: &str,
    ) -> Result<Service, LoadError> {
        let s = Section::new(value, at)?;
        let known: Vec<&str> = SERVICE_KEYS.iter().copied().chain(option_keys()).collect();
        s.only(&known, HINT)?;
        // `build` next to `image` deploys the image (as `up --no-build`);
        // `build` is left out of the config-hash, as Compose leaves it out.
        let image = match (s.string("image")?.filter(|i| !i.is_empty()), s.get("build")) {
            (Some(image), _) => image,
            (None, Some(_)) => {
                return Err(invalid(
                    &s.path("build"),
                    "`build` without `image`: the agent never builds; add `image:` naming the image CI builds and pushes",
                ))
            }
            (None, None) => {
                return Err(invalid(at, "`image` is required (the agent never builds)"))
            }
        };

        let mut environment: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut env_files = Vec::new();
        if let Some(v) = s.get("env_file") {
            for (path, file) in self.env_files(v, &s.path("env_file"))? {
                env_files.push(path);
                environment.extend(file.into_iter().map(|(k, v)| (k, Some(v))));
            }
        }
        if let Some(v) = s.get("environment") {
            environment.extend(self.environment_entries(v, &s.path("environment"))?);
        }

        let network_mode = s.string("network_mode")?;
        let networks = match (s.get("networks"), &network_mode) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &s.path("networks"),
                    "`networks` and `network_mode` cannot be combined",
                ))
            }
            (None, Some(_)) => None,
            (None, None) => Some(BTreeMap::from([("default".to_owned(), None)])),
            (Some(v), None) => Some(self.service_networks(v, &s.path("networks"))?),
        };

        let mut options = read_options(&s)?;
        let (mut replicas, mut update_order) = (None, UpdateOrder::StopFirst);
        if let Some(v) = s.get("deploy") {
            let (json, r, order) = deploy(v, &s.path("deploy"))?;
            options.insert("deploy".into(), json);
            (replicas, update_order) = (r, order);
        }
        for key in ["secrets", "configs"] {
            if let Some(v) = s.get(key) {
                let refs = file_references(key, v, &s.path(key))?;
                if !refs.is_empty() {
                    options.insert(key.into(), serde_json::Value::Array(refs));
                }
            }
        }
        if let Some(p) = s.get("profiles") {
            let profiles: Vec<String> = as_sequence(p, &s.path("profiles"))?
                .iter()
                .map(|x| scalar_string(x, &s.path("profiles")))
                .collect::<Result<_, _>>()?;
            options.insert("profiles".into(), serde_json::json!(profiles));
        }
        if let Some(v) = s.get("scale") {
            let n = super::options::integer(v, &s.path("scale"))?;
            let n = u32::try_from(n)
                .map_err(|_| invalid(&s.path("scale"), "expected a whole number of containers"))?;
            if replicas.is_some_and(|r| r != n) {
                return Err(invalid(
                    &s.path("scale"),
                    "`scale` and `deploy.replicas` differ; set only one",
                ));
            }
            replicas = Some(n);
        }
        let container_name = s.string("container_name")?.filter(|n| !n.is_empty());
        if container_name.is_some() && replicas.is_some_and(|r| r > 1) {
            return Err(invalid(
                &s.path("container_name"),
                "`container_name` cannot be used with more than one replica (container names are unique); remove it or set replicas to 1",
            ));
        }
        let ports = match s.get("ports") {
            None => Vec::new(),
            Some(v) => ports(v, &s.path("ports"))?,
        };
        if update_order == UpdateOrder::StartFirst {
            // Old and new containers run side by side for a moment.
            let reason = if container_name.is_some() {
                Some("`container_name` (two containers cannot share one name)")
            } else if ports.iter().any(|p| p.published.is_some()) {
                Some("published host ports (two containers cannot bind the same host port)")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(invalid(
                    &format!("{}.update_config.order", s.path("deploy")),
                    format!(
                        "start-first cannot be used with {reason}; use stop-first or remove it"
                    ),
                ));
            }
        }

        Ok(Service {
            env_files,
            container_name,
            update_order,
            replicas,
            options,
            name: name.to_owned(),
            image,
            command: self.command(s.get("command"), &s.path("command"))?,
            entrypoint: self.command(s.get("entrypoint"), &s.path("entrypoint"))?,
            environment,
            extra_hosts: match s.get("extra_hosts") {
                None => Vec::new(),
                Some(v) => extra_hosts(v, &s.path("extra_hosts"))?,
            },
            healthcheck: s
                .get("healthcheck")
                .map(|v| healthcheck(v, &s.path("healthcheck")))
                .transpose()?,
            labels: s.string_map("labels")?,
            logging: s
                .get("logging")
                .map(|v| logging(v, &s.path("logging")))
                .transpose()?,
            networks,
            network_mode,
            ports,
            restart: s
                .string("restart")?
                .map(|r| validate_restart(&r, &s.path("restart")).map(|()| r))
                .transpose()?,
            stop_grace_period: s.duration("stop_grace_period")?,
            user: s.string("user")?,
            volumes: match s.get("volumes") {
                None => Vec::new(),
                Some(v) => self.mounts(v, &s.path("volumes"))?,
            },
            working_dir: s.string("working_dir")?,
            depends_on: match s.get("depends_on") {
                None => BTreeMap::new(),
                Some(v) => depends_on(v, &s.path("depends_on"))?,
            },
        })
    }

    pub(super) fn command(
        &self,
        value: Option<&Value>,
        at: &str,
    ) -> Result<Option<Vec<String>>, LoadError> {
        match value {
            None => Ok(None),
            Some(Value::String(text)) => shell_split(text)
                .map(Some)
                .map_err(|problem| invalid(at, problem)),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| scalar_string(item, &format!("{at}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid(at, "expected a string or a list of strings")),
        }
    }

    pub(super) fn env_files(&self, value: &Value, at: &str) -> Result<Vec<EnvFile>, LoadError> {
        let entries: Vec<(String, bool, String)> = match value {
            Value::String(p) => vec![(p.clone(), true, at.to_owned())],
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let item_at = format!("{at}[{i}]");
                    match item {
                        Value::String(p) => out.push((p.clone(), true, item_at)),
                        Value::Mapping(_) => {
                            let s = Section::new(item, &item_at)?;
                            s.only(&["path", "required"], HINT)?;
                            let path = s
                                .string("path")?
                                .ok_or_else(|| invalid(&item_at, "`path` is required"))?;
                            let required = match s.get("required") {
                                None => true,
                                Some(_) => s.bool("required")?,
                            };
                            out.push((path, required, item_at));
                        }
                        _ => return Err(invalid(&item_at, "expected a path")),
                    }
                }
                out
            }
            _ => return Err(invalid(at, "expected a path or a list of paths")),
        };
        let mut files = Vec::new();
        for (path, required, item_at) in entries {
            let full = self.resolve_path(&path);
            let text = match std::fs::read_to_string(&full) {
                Ok(text) => text,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && (!required || self.options.missing_env_files_are_empty) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(LoadError::EnvFile {
                        path: full.display().to_string(),
                        problem: format!("cannot read it ({e}), named at {item_at}"),
                    })
                }
            };
            let lookup = |name: &str| self.lookup(name);
            let vars = parse_dotenv(&text, &lookup).map_err(|e| LoadError::EnvFile {
                path: full.display().to_string(),
                problem: e.to_string(),
            })?;
            files.push((full, vars));
        }
        Ok(files)
    }

    pub(super) fn environment_entries(
        &self,
        value: &Value,
        at: &str,
    ) -> Result<BTreeMap<String, Option<String>>, LoadError> {
        let mut out = BTreeMap::new();
        match value {
            Value::Mapping(map) => {
                for (k, v) in map {
                    let key = key_text(k);
                    let value = if v.is_null() {
                        self.lookup(&key)
                    } else {
                        Some(scalar_string(v, &join_path(at, &key))?)
                    };
                    out.insert(key, value);
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let text = scalar_string(item, &format!("{at}[{i}]"))?;
                    match text.split_once('=') {
                        Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                        None => {
                            let value = self.lookup(&text);
                            out.insert(text, value)
                        }
                    };
                }
            }
            _ => return Err(invalid(at, "expected a mapping or a list of KEY=value")),
        }
        Ok(out)
    }

    pub(super) fn service_networks(
        &self,
        value: &Value,
        at: &str,
    ) -> Result<BTreeMap<String, Option<ServiceNetwork>>, LoadError> {
        let mut out = BTreeMap::new();
        match value {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    out.insert(scalar_string(item, &format!("{at}[{i}]"))?, None);
                }
            }
            Value::Mapping(map) => {
                for (k, v) in map {
                    let key = key_text(k);
                    let config = if v.is_null() {
                        None
                    } else {
                        let s = Section::new(v, &join_path(at, &key))?;
                        s.only(&["aliases", "ipv4_address", "ipv6_address"], HINT)?;
                        let aliases = match s.get("aliases") {
                            None => Vec::new(),
                            Some(a) => as_sequence(a, &s.path("aliases"))?
                                .iter()
                                .map(|x| scalar_string(x, &s.path("aliases")))
                                .collect::<Result<_, _>>()?,
                        };
                        Some(ServiceNetwork {
                            aliases,
                            ipv4_address: s.string("ipv4_address")?,
                            ipv6_address: s.string("ipv6_address")?,
                        })
                    };
                    out.insert(key, config);
                }
            }
            _ => return Err(invalid(at, "expected a list or a mapping of networks")),
        }
        Ok(out)
    }

    /// A host path from the file, absolute. `~` and `~/...` expand from
    /// the passwd home of the user the agent runs as, never from `HOME`:
    /// the daemon under systemd and a command under the SSM Agent run with
    /// different environments and must compute the same project.
    pub(super) fn resolve_path(&self, path: &str) -> PathBuf {
        let rest = if path == "~" {
            Some("")
        } else {
            path.strip_prefix("~/")
        };
        if let (Some(rest), Some(home)) = (rest, passwd_home()) {
            return normalize(&home.join(rest));
        }
        let p = Path::new(path);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.working_dir.join(p)
        };
        normalize(&joined)
    }
}

/// The home directory of the effective user, from the passwd database.
fn passwd_home() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buffer = vec![0u8; 16 * 1024];
    // SAFETY: `passwd` is plain data that getpwuid_r fills in; every
    // pointer it stores points into `buffer`, which outlives its use here.
    unsafe {
        let mut entry: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || entry.pw_dir.is_null() {
            return None;
        }
        let dir = CStr::from_ptr(entry.pw_dir).to_bytes();
        (!dir.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(dir)))
    }
}

pub(super) fn extra_hosts(value: &Value, at: &str) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::new();
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let text = scalar_string(item, &format!("{at}[{i}]"))?;
                let (host, ip) = text
                    .split_once('=')
                    .or_else(|| text.split_once(':'))
                    .ok_or_else(|| {
                        invalid(&format!("{at}[{i}]"), format!("{text:?}: expected HOST:IP"))
                    })?;
                out.push(format!("{host}={ip}"));
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                let host = key_text(k);
                out.push(format!(
                    "{host}={}",
                    scalar_string(v, &join_path(at, &host))?
                ));
            }
        }
        _ => return Err(invalid(at, "expected a list of HOST:IP or a mapping")),
    }
    out.sort();
    Ok(out)
}

pub(super) fn healthcheck(value: &Value, at: &str) -> Result<Healthcheck, LoadError> {
    let s = Section::new(value, at)?;
    s.only(
        &[
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
            "disable",
        ],
        HINT,
    )?;
    let test = match s.get("test") {
        None => None,
        Some(Value::String(cmd)) => Some(vec!["CMD-SHELL".to_owned(), cmd.clone()]),
        Some(Value::Sequence(items)) => Some(
            items
                .iter()
                .map(|x| scalar_string(x, &s.path("test")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(invalid(&s.path("test"), "expected a string or a list")),
    };
    // `"3"` is a valid `retries` after interpolation, as in compose-go.
    let retries = s
        .get("retries")
        .map(|v| {
            super::options::integer(v, &s.path("retries")).and_then(|n| {
                u64::try_from(n).map_err(|_| invalid(&s.path("retries"), "expected a whole number"))
            })
        })
        .transpose()?;
    Ok(Healthcheck {
        test,
        timeout: s.duration("timeout")?,
        interval: s.duration("interval")?,
        retries,
        start_period: s.duration("start_period")?,
        start_interval: s.duration("start_interval")?,
        disable: s.bool("disable")?,
    })
}

pub(super) fn logging(value: &Value, at: &str) -> Result<Logging, LoadError> {
    let s = Section::new(value, at)?;
    s.only(&["driver", "options"], HINT)?;
    Ok(Logging {
        driver: s.string("driver")?,
        options: s.string_map("options")?,
    })
}

pub(super) fn validate_restart(value: &str, at: &str) -> Result<(), LoadError> {
    let ok = matches!(value, "no" | "always" | "unless-stopped" | "on-failure")
        || value
            .strip_prefix("on-failure:")
            .is_some_and(|n| n.parse::<u32>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            at,
            format!("{value:?}: expected no, always, unless-stopped or on-failure[:N]"),
        ))
    }
}

pub(super) fn depends_on(
    value: &Value,
    at: &str,
) -> Result<BTreeMap<String, Dependency>, LoadError> {
    let mut out = BTreeMap::new();
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                out.insert(
                    scalar_string(item, &format!("{at}[{i}]"))?,
                    Dependency {
                        condition: Condition::ServiceStarted,
                        restart: false,
                        required: true,
                    },
                );
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                let name = key_text(k);
                let dep_at = join_path(at, &name);
                let s = Section::new(v, &dep_at)?;
                s.only(&["condition", "restart", "required"], HINT)?;
                let condition = match s.string("condition")?.as_deref() {
                    None | Some("service_started") => Condition::ServiceStarted,
                    Some("service_healthy") => Condition::ServiceHealthy,
                    Some("service_completed_successfully") => {
                        Condition::ServiceCompletedSuccessfully
                    }
                    Some(other) => {
                        return Err(invalid(
                            &s.path("condition"),
                            format!("{other:?}: expected service_started, service_healthy or service_completed_successfully"),
                        ))
                    }
                };
                let required = match s.get("required") {
                    None => true,
                    Some(_) => s.bool("required")?,
                };
                out.insert(
                    name,
                    Dependency {
                        condition,
                        restart: s.bool("restart")?,
                        required,
                    },
                );
            }
        }
        _ => return Err(invalid(at, "expected a list or a mapping of services")),
    }
    Ok(out)
}

/// A service's `secrets` or `configs` list, normalized as compose-go does:
/// a secret's target defaults to `/run/secrets/<source>`; a written target
/// (relative or not) and a config's target are kept as written.
pub(super) fn file_references(
    key: &str,
    value: &Value,
    at: &str,
) -> Result<Vec<serde_json::Value>, LoadError> {
    let mut out = Vec::new();
    for (i, item) in as_sequence(value, at)?.iter().enumerate() {
        let item_at = format!("{at}[{i}]");
        let mut o = serde_json::Map::new();
        let (source, target) = match item {
            Value::Mapping(_) => {
                let r = Section::new(item, &item_at)?;
                r.only(&["source", "target", "uid", "gid", "mode"], HINT)?;
                let source = r
                    .string("source")?
                    .ok_or_else(|| invalid(&item_at, "`source` is required"))?;
                (source, r.string("target")?)
            }
            _ => (scalar_string(item, &item_at)?, None),
        };
        let target = match (key, target) {
            ("secrets", None) => Some(format!("/run/secrets/{source}")),
            (_, t) => t,
        };
        o.insert("source".into(), serde_json::json!(source));
        if let Some(t) = target {
            o.insert("target".into(), serde_json::json!(t));
        }
        if let Value::Mapping(_) = item {
            let r = Section::new(item, &item_at)?;
            for k in ["uid", "gid"] {
                if let Some(v) = r.string(k)? {
                    o.insert(k.into(), serde_json::json!(v));
                }
            }
            if let Some(v) = r.get("mode") {
                let mode = match v {
                    Value::String(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
                        .map_err(|_| invalid(&r.path("mode"), "expected an octal file mode"))?,
                    _ => u32::try_from(super::options::integer(v, &r.path("mode"))?)
                        .map_err(|_| invalid(&r.path("mode"), "expected a file mode"))?,
                };
                o.insert("mode".into(), serde_json::json!(format!("0{mode:o}")));
            }
        }
        out.push(serde_json::Value::Object(o));
    }
    Ok(out)
}
