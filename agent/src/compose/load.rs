//! Reading a compose file into the typed [`Project`].
//!
//! Steps, in compose-go's order: parse YAML (anchors resolve here), apply
//! `<<` merge keys, interpolate every string value, then read the subset of
//! the Compose spec a small web runtime uses into the normalized model. Any
//! key outside that subset is an error naming the key and its path
//! (`services.api.deploy`): silently ignoring `deploy.resources` or `secrets`
//! would deploy something other than what the file says. `x-` extension
//! fields are accepted anywhere and dropped; the obsolete top-level
//! `version` is accepted with a warning, as Compose v2 does.
//!
//! Env files are read here, relative to the compose file, so their contents
//! are part of the effective config (and of the config-hash).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::interpolate::{parse_dotenv, substitute, TemplateError};
use super::model::*;

/// Why a compose file could not be loaded. Messages carry paths and key
/// names, never values (env files hold secrets).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("unsupported key `{key}` at {at}: wavemap-agent does not implement it; {hint}")]
    Unsupported {
        key: String,
        at: String,
        hint: &'static str,
    },
    #[error("{at}: {problem}")]
    Invalid { at: String, problem: String },
    #[error("{at}: {error}")]
    Interpolation { at: String, error: TemplateError },
    #[error("env file {path}: {problem}")]
    EnvFile { path: String, problem: String },
}

fn invalid(at: &str, problem: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        at: at.to_owned(),
        problem: problem.into(),
    }
}

/// Load `path` as project `project_name`. Interpolation variables are the
/// `.env` file next to the compose file, overlaid by the process
/// environment, overlaid by `vars`.
pub fn load(
    path: &Path,
    project_name: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Project, LoadError> {
    validate_project_name(project_name)?;
    let file = absolute(path);
    let working_dir = file
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
        path: file.display().to_string(),
        source,
    })?;

    let mut environment: BTreeMap<String, String> = BTreeMap::new();
    let dotenv_path = working_dir.join(".env");
    if dotenv_path.is_file() {
        let dotenv_text =
            std::fs::read_to_string(&dotenv_path).map_err(|source| LoadError::Read {
                path: dotenv_path.display().to_string(),
                source,
            })?;
        let process = |name: &str| std::env::var(name).ok();
        let parsed = parse_dotenv(&dotenv_text, &process).map_err(|e| LoadError::EnvFile {
            path: dotenv_path.display().to_string(),
            problem: e.to_string(),
        })?;
        environment.extend(parsed);
    }
    environment.extend(std::env::vars());
    environment.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));

    let mut root: Value = serde_yaml_ng::from_str(&text).map_err(|e| LoadError::Yaml {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    root.apply_merge().map_err(|e| LoadError::Yaml {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    let lookup = |name: &str| environment.get(name).cloned();
    interpolate(&mut root, "", &lookup)?;

    let ctx = Ctx {
        project: project_name,
        working_dir: &working_dir,
        environment: &environment,
    };
    let mut project = ctx.project_from(&root)?;
    project.config_files = vec![file];
    Ok(project)
}

/// Compose's rule: lowercase letters, digits, `-` and `_`, starting with a
/// letter or digit.
fn validate_project_name(name: &str) -> Result<(), LoadError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "project name",
            format!("{name:?} must be lowercase letters, digits, '-' or '_', starting with a letter or digit"),
        ))
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

fn join_path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// Interpolate every string value (keys are left alone, as in Compose).
fn interpolate(
    value: &mut Value,
    at: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), LoadError> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                *s = substitute(s, lookup).map_err(|error| LoadError::Interpolation {
                    at: at.to_owned(),
                    error,
                })?;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{at}[{i}]"), lookup)?;
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = key_text(k);
                interpolate(v, &join_path(at, &key), lookup)?;
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, at, lookup)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".into(),
    }
}

/// A YAML mapping with its path, for key-by-key reading.
struct Section<'a> {
    at: String,
    entries: Vec<(String, &'a Value)>,
}

impl<'a> Section<'a> {
    fn new(value: &'a Value, at: &str) -> Result<Self, LoadError> {
        let map = as_mapping(value, at)?;
        let entries = map
            .iter()
            .map(|(k, v)| (key_text(k), v))
            .filter(|(k, _)| !k.starts_with("x-"))
            .collect();
        Ok(Section {
            at: at.to_owned(),
            entries,
        })
    }

    fn path(&self, key: &str) -> String {
        join_path(&self.at, key)
    }

    /// Refuse any key not in `known`, naming it and where it is.
    fn only(&self, known: &[&str], hint: &'static str) -> Result<(), LoadError> {
        for (key, _) in &self.entries {
            if !known.contains(&key.as_str()) {
                return Err(LoadError::Unsupported {
                    key: key.clone(),
                    at: self.path(key),
                    hint,
                });
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>, LoadError> {
        self.get(key)
            .map(|v| scalar_string(v, &self.path(key)))
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<bool, LoadError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
            Some(_) => Err(invalid(&self.path(key), "expected true or false")),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| {
                invalid(
                    &self.path(key),
                    format!("{s:?} is not a duration like 30s or 1m30s"),
                )
            }),
            Some(_) => Err(invalid(
                &self.path(key),
                "expected a duration like 30s or 1m30s",
            )),
        }
    }

    fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, LoadError> {
        match self.get(key) {
            None => Ok(BTreeMap::new()),
            Some(v) => key_value_map(v, &self.path(key)),
        }
    }
}

fn as_mapping<'a>(value: &'a Value, at: &str) -> Result<&'a Mapping, LoadError> {
    match value {
        Value::Mapping(m) => Ok(m),
        _ => Err(invalid(at, "expected a mapping")),
    }
}

fn as_sequence<'a>(value: &'a Value, at: &str) -> Result<&'a [Value], LoadError> {
    match value {
        Value::Sequence(s) => Ok(s),
        _ => Err(invalid(at, "expected a list")),
    }
}

/// Strings, numbers and booleans as Compose turns them into strings.
fn scalar_string(value: &Value, at: &str) -> Result<String, LoadError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(number_string(n)),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid(at, "expected a string")),
    }
}

/// A YAML number as Go's `fmt` prints it (`5.0` is `5`, `1e3` is `1000`),
/// since that text is what Compose hashes and passes on.
fn number_string(n: &serde_yaml_ng::Number) -> String {
    if n.is_f64() {
        if let Some(f) = n.as_f64() {
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
                return format!("{f:.0}");
            }
            return f.to_string();
        }
    }
    n.to_string()
}

/// A mapping, or a list of `key=value` strings (labels, driver options).
fn key_value_map(value: &Value, at: &str) -> Result<BTreeMap<String, String>, LoadError> {
    let mut out = BTreeMap::new();
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = key_text(k);
                let value = if v.is_null() {
                    String::new()
                } else {
                    scalar_string(v, &join_path(at, &key))?
                };
                out.insert(key, value);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let text = scalar_string(item, &format!("{at}[{i}]"))?;
                let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                out.insert(k.to_owned(), v.to_owned());
            }
        }
        _ => return Err(invalid(at, "expected a mapping or a list of key=value")),
    }
    Ok(out)
}

/// compose-go accepts Go durations plus days and weeks.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_end == 0 {
            return None;
        }
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            _ => return None,
        };
        total += number * nanos_per_unit;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_nanos(total.round() as u64))
}

/// Split a command string like compose-go (go-shellwords): whitespace
/// separates words, quotes group, backslash escapes; no expansion.
pub fn shell_split(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

struct Ctx<'a> {
    project: &'a str,
    working_dir: &'a Path,
    environment: &'a BTreeMap<String, String>,
}

const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "networks",
    "network_mode",
    "depends_on",
    "healthcheck",
    "restart",
    "labels",
    "user",
    "working_dir",
    "stop_grace_period",
    "logging",
    "extra_hosts",
];

const HINT: &str = "remove it or move it under an `x-` extension field";

impl Ctx<'_> {
    fn project_from(&self, root: &Value) -> Result<Project, LoadError> {
        let top = Section::new(root, "")?;
        top.only(
            &["version", "name", "services", "volumes", "networks"],
            HINT,
        )?;
        if top.get("version").is_some() {
            log::warn!(stage = "compose"; "the top-level `version` key is obsolete and ignored");
        }

        let mut volumes = BTreeMap::new();
        if let Some(v) = top.get("volumes") {
            let section = Section::new(v, "volumes")?;
            for (key, value) in &section.entries {
                volumes.insert(
                    key.clone(),
                    self.volume_def(key, value, &section.path(key))?,
                );
            }
        }
        let mut networks = BTreeMap::new();
        if let Some(v) = top.get("networks") {
            let section = Section::new(v, "networks")?;
            for (key, value) in &section.entries {
                networks.insert(
                    key.clone(),
                    self.network_def(key, value, &section.path(key))?,
                );
            }
        }

        let services_value = top
            .get("services")
            .ok_or_else(|| invalid("services", "the file defines no services"))?;
        let section = Section::new(services_value, "services")?;
        let mut services = Vec::new();
        for (name, value) in &section.entries {
            services.push(self.service(name, value, &section.path(name))?);
        }
        if services.is_empty() {
            return Err(invalid("services", "the file defines no services"));
        }

        // References must resolve, as in Compose.
        let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let mut uses_default = false;
        for service in &services {
            for dep in service.depends_on.keys() {
                if !names.contains(dep.as_str()) {
                    return Err(invalid(
                        &format!("services.{}.depends_on", service.name),
                        format!("depends on undefined service {dep:?}"),
                    ));
                }
            }
            for mount in &service.volumes {
                if mount.kind == MountKind::Volume && !volumes.contains_key(&mount.source) {
                    return Err(invalid(
                        &format!("services.{}.volumes", service.name),
                        format!(
                            "refers to undefined volume {:?}; declare it under top-level `volumes`",
                            mount.source
                        ),
                    ));
                }
            }
            for network in service.networks.iter().flat_map(|n| n.keys()) {
                if network == "default" {
                    uses_default = true;
                } else if !networks.contains_key(network) {
                    return Err(invalid(
                        &format!("services.{}.networks", service.name),
                        format!("refers to undefined network {network:?}; declare it under top-level `networks`"),
                    ));
                }
            }
        }
        if uses_default && !networks.contains_key("default") {
            networks.insert(
                "default".into(),
                NetworkDef {
                    name: format!("{}_default", self.project),
                    driver: None,
                    driver_opts: BTreeMap::new(),
                    internal: false,
                    attachable: false,
                    labels: BTreeMap::new(),
                    external: false,
                },
            );
        }
        let project = Project {
            name: self.project.to_owned(),
            working_dir: self.working_dir.to_path_buf(),
            config_files: Vec::new(),
            services,
            volumes,
            networks,
            dependency_wait: Duration::from_secs(300),
        };
        super::plan::dependency_order(&project)
            .map_err(|cycle| invalid("services", format!("dependency cycle: {cycle}")))?;
        Ok(project)
    }

    fn volume_def(&self, key: &str, value: &Value, at: &str) -> Result<VolumeDef, LoadError> {
        let mut def = VolumeDef {
            name: format!("{}_{key}", self.project),
            driver: None,
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
            external: false,
        };
        if value.is_null() {
            return Ok(def);
        }
        let s = Section::new(value, at)?;
        s.only(
            &["name", "driver", "driver_opts", "labels", "external"],
            HINT,
        )?;
        def.external = s.bool("external")?;
        if let Some(name) = s.string("name")? {
            def.name = name;
        } else if def.external {
            def.name = key.to_owned();
        }
        def.driver = s.string("driver")?;
        def.driver_opts = s.string_map("driver_opts")?;
        def.labels = s.string_map("labels")?;
        Ok(def)
    }

    fn network_def(&self, key: &str, value: &Value, at: &str) -> Result<NetworkDef, LoadError> {
        let mut def = NetworkDef {
            name: format!("{}_{key}", self.project),
            driver: None,
            driver_opts: BTreeMap::new(),
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            external: false,
        };
        if value.is_null() {
            return Ok(def);
        }
        let s = Section::new(value, at)?;
        s.only(
            &[
                "name",
                "driver",
                "driver_opts",
                "labels",
                "internal",
                "attachable",
                "external",
            ],
            HINT,
        )?;
        def.external = s.bool("external")?;
        if let Some(name) = s.string("name")? {
            def.name = name;
        } else if def.external {
            def.name = key.to_owned();
        }
        def.driver = s.string("driver")?;
        def.driver_opts = s.string_map("driver_opts")?;
        def.labels = s.string_map("labels")?;
        def.internal = s.bool("internal")?;
        def.attachable = s.bool("attachable")?;
        Ok(def)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.environment.get(name).cloned()
    }

    fn service(&self, name: &str, value: &Value, at: &str) -> Result<Service, LoadError> {
        let s = Section::new(value, at)?;
        s.only(SERVICE_KEYS, HINT)?;
        let image = s
            .string("image")?
            .filter(|i| !i.is_empty())
            .ok_or_else(|| invalid(at, "`image` is required (the agent never builds)"))?;

        let mut environment: BTreeMap<String, Option<String>> = BTreeMap::new();
        if let Some(v) = s.get("env_file") {
            for file in self.env_files(v, &s.path("env_file"))? {
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

        Ok(Service {
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
            ports: match s.get("ports") {
                None => Vec::new(),
                Some(v) => ports(v, &s.path("ports"))?,
            },
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

    fn command(&self, value: Option<&Value>, at: &str) -> Result<Option<Vec<String>>, LoadError> {
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

    fn env_files(
        &self,
        value: &Value,
        at: &str,
    ) -> Result<Vec<BTreeMap<String, String>>, LoadError> {
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
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
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
            files.push(vars);
        }
        Ok(files)
    }

    fn environment_entries(
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

    fn service_networks(
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
                        s.only(&["aliases"], HINT)?;
                        let aliases = match s.get("aliases") {
                            None => Vec::new(),
                            Some(a) => as_sequence(a, &s.path("aliases"))?
                                .iter()
                                .map(|x| scalar_string(x, &s.path("aliases")))
                                .collect::<Result<_, _>>()?,
                        };
                        Some(ServiceNetwork { aliases })
                    };
                    out.insert(key, config);
                }
            }
            _ => return Err(invalid(at, "expected a list or a mapping of networks")),
        }
        Ok(out)
    }

    fn resolve_path(&self, path: &str) -> PathBuf {
        if let Some(rest) = path.strip_prefix("~/") {
            if let Ok(home) = std::env::var("HOME") {
                return PathBuf::from(home).join(rest);
            }
        }
        let p = Path::new(path);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.working_dir.join(p)
        };
        normalize(&joined)
    }

    fn mounts(&self, value: &Value, at: &str) -> Result<Vec<VolumeMount>, LoadError> {
        let mut out = Vec::new();
        for (i, item) in as_sequence(value, at)?.iter().enumerate() {
            let item_at = format!("{at}[{i}]");
            out.push(match item {
                Value::String(spec) => self.short_mount(spec, &item_at)?,
                Value::Mapping(_) => self.long_mount(item, &item_at)?,
                _ => return Err(invalid(&item_at, "expected a volume string or mapping")),
            });
        }
        Ok(out)
    }

    fn short_mount(&self, spec: &str, at: &str) -> Result<VolumeMount, LoadError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [source, target] => (*source, *target, None),
            [source, target, mode] => (*source, *target, Some(*mode)),
            _ => {
                return Err(invalid(
                    at,
                    format!("{spec:?}: expected SOURCE:TARGET[:ro|rw] (anonymous volumes are not supported)"),
                ))
            }
        };
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => {
                return Err(LoadError::Unsupported {
                    key: other.to_owned(),
                    at: at.to_owned(),
                    hint: "only the ro and rw volume modes are supported",
                })
            }
        };
        if source.is_empty() || !target.starts_with('/') {
            return Err(invalid(
                at,
                format!("{spec:?}: expected SOURCE:/absolute/target"),
            ));
        }
        let is_path = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        Ok(if is_path {
            VolumeMount {
                kind: MountKind::Bind,
                source: self.resolve_path(source).display().to_string(),
                target: target.to_owned(),
                read_only,
                bind: Some(true),
                volume_nocopy: None,
            }
        } else {
            VolumeMount {
                kind: MountKind::Volume,
                source: source.to_owned(),
                target: target.to_owned(),
                read_only,
                bind: None,
                volume_nocopy: Some(false),
            }
        })
    }

    fn long_mount(&self, value: &Value, at: &str) -> Result<VolumeMount, LoadError> {
        let s = Section::new(value, at)?;
        s.only(
            &["type", "source", "target", "read_only", "bind", "volume"],
            HINT,
        )?;
        let kind = match s.string("type")?.as_deref() {
            Some("volume") => MountKind::Volume,
            Some("bind") => MountKind::Bind,
            Some(other) => {
                return Err(LoadError::Unsupported {
                    key: other.to_owned(),
                    at: s.path("type"),
                    hint: "only volume and bind mounts are supported",
                })
            }
            None => return Err(invalid(at, "`type` is required (volume or bind)")),
        };
        let source = s.string("source")?.ok_or_else(|| {
            invalid(
                at,
                "`source` is required (anonymous volumes are not supported)",
            )
        })?;
        let target = s
            .string("target")?
            .ok_or_else(|| invalid(at, "`target` is required"))?;
        let bind = match s.get("bind") {
            None => None,
            Some(v) => {
                let b = Section::new(v, &s.path("bind"))?;
                b.only(&["create_host_path"], HINT)?;
                Some(b.bool("create_host_path")?)
            }
        };
        let volume_nocopy = match s.get("volume") {
            None => None,
            Some(v) => {
                let b = Section::new(v, &s.path("volume"))?;
                b.only(&["nocopy"], HINT)?;
                Some(b.bool("nocopy")?)
            }
        };
        if kind == MountKind::Volume && bind.is_some() {
            return Err(invalid(
                &s.path("bind"),
                "a volume mount takes no `bind` options",
            ));
        }
        if kind == MountKind::Bind && volume_nocopy.is_some() {
            return Err(invalid(
                &s.path("volume"),
                "a bind mount takes no `volume` options",
            ));
        }
        Ok(VolumeMount {
            kind,
            source: match kind {
                MountKind::Bind => self.resolve_path(&source).display().to_string(),
                MountKind::Volume => source,
            },
            target,
            read_only: s.bool("read_only")?,
            bind,
            volume_nocopy,
        })
    }
}

/// Lexically drop `.` and resolve `..` (as Go's `filepath.Clean`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn extra_hosts(value: &Value, at: &str) -> Result<Vec<String>, LoadError> {
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

fn healthcheck(value: &Value, at: &str) -> Result<Healthcheck, LoadError> {
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
    let retries = match s.get("retries") {
        None => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or_else(|| invalid(&s.path("retries"), "expected a whole number"))?,
        ),
        Some(_) => return Err(invalid(&s.path("retries"), "expected a whole number")),
    };
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

fn logging(value: &Value, at: &str) -> Result<Logging, LoadError> {
    let s = Section::new(value, at)?;
    s.only(&["driver", "options"], HINT)?;
    Ok(Logging {
        driver: s.string("driver")?,
        options: s.string_map("options")?,
    })
}

fn validate_restart(value: &str, at: &str) -> Result<(), LoadError> {
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

fn ports(value: &Value, at: &str) -> Result<Vec<Port>, LoadError> {
    let mut out = Vec::new();
    for (i, item) in as_sequence(value, at)?.iter().enumerate() {
        let item_at = format!("{at}[{i}]");
        out.push(match item {
            Value::String(_) | Value::Number(_) => {
                short_port(&scalar_string(item, &item_at)?, &item_at)?
            }
            Value::Mapping(_) => {
                let s = Section::new(item, &item_at)?;
                s.only(
                    &["target", "published", "host_ip", "protocol", "mode"],
                    HINT,
                )?;
                if let Some(mode) = s.string("mode")? {
                    if mode != "ingress" {
                        return Err(LoadError::Unsupported {
                            key: mode,
                            at: s.path("mode"),
                            hint: "only the default ingress port mode is supported",
                        });
                    }
                }
                let target = s
                    .string("target")?
                    .ok_or_else(|| invalid(&item_at, "`target` is required"))?;
                Port {
                    host_ip: s.string("host_ip")?,
                    target: port_number(&target, &s.path("target"))?,
                    published: s.string("published")?,
                    protocol: protocol(s.string("protocol")?.as_deref(), &s.path("protocol"))?,
                }
            }
            _ => return Err(invalid(&item_at, "expected a port string or mapping")),
        });
    }
    Ok(out)
}

fn protocol(value: Option<&str>, at: &str) -> Result<String, LoadError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => Ok("tcp".into()),
        Some("udp") => Ok("udp".into()),
        Some(other) => Err(invalid(at, format!("{other:?}: expected tcp or udp"))),
    }
}

fn port_number(text: &str, at: &str) -> Result<u16, LoadError> {
    match text.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ if text.contains('-') => Err(LoadError::Unsupported {
            key: text.to_owned(),
            at: at.to_owned(),
            hint: "port ranges are not supported; list each port",
        }),
        _ => Err(invalid(at, format!("{text:?} is not a port number"))),
    }
}

/// `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`, as Docker's nat.ParsePortSpec.
fn short_port(spec: &str, at: &str) -> Result<Port, LoadError> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((body, proto)) => (body, Some(proto)),
        None => (spec, None),
    };
    let protocol = protocol(proto, at)?;
    let parts: Vec<&str> = body.split(':').collect();
    let (host_ip, published, target) = match parts.as_slice() {
        [target] => (None, None, *target),
        [published, target] => (None, Some(*published), *target),
        [ip, published, target] => (Some(*ip), Some(*published), *target),
        _ => {
            return Err(invalid(
                at,
                format!("{spec:?}: expected [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]"),
            ))
        }
    };
    let target = port_number(target, at)?;
    let published = match published {
        None | Some("") => None,
        Some(p) => Some(port_number(p, at)?.to_string()),
    };
    Ok(Port {
        host_ip: host_ip.filter(|ip| !ip.is_empty()).map(str::to_owned),
        target,
        published,
        protocol,
    })
}

fn depends_on(value: &Value, at: &str) -> Result<BTreeMap<String, Dependency>, LoadError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load_text(text: &str) -> Result<Project, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "compose.yaml", text);
        load(&path, "unit", &BTreeMap::new())
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_supported_service_key_lands_in_the_model() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.env", "FROM_FILE=1\nSHARED=file\n");
        let path = write(
            dir.path(),
            "compose.yaml",
            r#"
services:
  db:
    image: postgres:15
  api:
    image: registry.example/api:sha-1
    command: /app/server --port "80 80"
    entrypoint: ["/sbin/tini", "--"]
    environment:
      SHARED: env
      NUM: 5
    env_file: app.env
    ports: ["127.0.0.1:8080:80", "9000/udp"]
    volumes:
      - data:/data:ro
      - ./conf:/conf
    networks:
      back:
        aliases: [api-alias]
    depends_on:
      db:
        condition: service_healthy
        restart: true
    healthcheck:
      test: wget -q http://localhost/health
      interval: 5s
      timeout: 2s
      retries: 3
      start_period: 1m
    restart: on-failure:5
    labels: [team=web]
    user: "1000"
    working_dir: /app
    stop_grace_period: 1m30s
    logging:
      driver: json-file
      options: {max-size: 10m}
    extra_hosts: ["db.internal:10.0.0.5"]
  host:
    image: busybox
    network_mode: host
volumes:
  data:
    labels: {purpose: db}
networks:
  back:
    driver: bridge
    internal: true
"#,
        );
        let project = load(&path, "unit", &BTreeMap::new()).unwrap();
        let api = project.service("api").unwrap();
        assert_eq!(api.image, "registry.example/api:sha-1");
        assert_eq!(
            api.command.as_deref(),
            Some(&["/app/server".to_owned(), "--port".into(), "80 80".into()][..])
        );
        assert_eq!(
            api.entrypoint.as_deref(),
            Some(&["/sbin/tini".to_owned(), "--".into()][..])
        );
        assert_eq!(api.environment.get("SHARED"), Some(&Some("env".into())));
        assert_eq!(api.environment.get("FROM_FILE"), Some(&Some("1".into())));
        assert_eq!(api.environment.get("NUM"), Some(&Some("5".into())));
        assert_eq!(
            api.ports,
            vec![
                Port {
                    host_ip: Some("127.0.0.1".into()),
                    target: 80,
                    published: Some("8080".into()),
                    protocol: "tcp".into()
                },
                Port {
                    host_ip: None,
                    target: 9000,
                    published: None,
                    protocol: "udp".into()
                },
            ]
        );
        assert_eq!(api.volumes[0].kind, MountKind::Volume);
        assert!(api.volumes[0].read_only);
        assert_eq!(api.volumes[1].kind, MountKind::Bind);
        assert_eq!(
            api.volumes[1].source,
            dir.path().join("conf").display().to_string()
        );
        let networks = api.networks.as_ref().unwrap();
        assert_eq!(
            networks.get("back"),
            Some(&Some(ServiceNetwork {
                aliases: vec!["api-alias".into()]
            }))
        );
        assert_eq!(
            api.depends_on.get("db"),
            Some(&Dependency {
                condition: Condition::ServiceHealthy,
                restart: true,
                required: true
            })
        );
        let hc = api.healthcheck.as_ref().unwrap();
        assert_eq!(
            hc.test.as_deref(),
            Some(
                &[
                    "CMD-SHELL".to_owned(),
                    "wget -q http://localhost/health".into()
                ][..]
            )
        );
        assert_eq!(hc.interval, Some(Duration::from_secs(5)));
        assert_eq!(hc.timeout, Some(Duration::from_secs(2)));
        assert_eq!(hc.retries, Some(3));
        assert_eq!(hc.start_period, Some(Duration::from_secs(60)));
        assert_eq!(api.restart.as_deref(), Some("on-failure:5"));
        assert_eq!(api.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(api.user.as_deref(), Some("1000"));
        assert_eq!(api.working_dir.as_deref(), Some("/app"));
        assert_eq!(api.stop_grace_period, Some(Duration::from_secs(90)));
        let logging = api.logging.as_ref().unwrap();
        assert_eq!(logging.driver.as_deref(), Some("json-file"));
        assert_eq!(
            logging.options.get("max-size").map(String::as_str),
            Some("10m")
        );
        assert_eq!(api.extra_hosts, vec!["db.internal=10.0.0.5".to_owned()]);

        let host = project.service("host").unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert!(host.networks.is_none());
        // db uses the implicit default network; api only `back`.
        assert_eq!(project.networks["default"].name, "unit_default");
        assert_eq!(project.networks["back"].name, "unit_back");
        assert!(project.networks["back"].internal);
        assert_eq!(project.volumes["data"].name, "unit_data");
        assert_eq!(project.volumes["data"].labels["purpose"], "db");
        assert_eq!(project.config_files, vec![path.clone()]);
        assert_eq!(project.working_dir, dir.path());
        let order = super::super::plan::dependency_order(&project).unwrap();
        assert!(order.iter().position(|s| s == "db") < order.iter().position(|s| s == "api"));
    }

    #[test]
    fn an_unsupported_key_is_an_error_naming_key_and_path() {
        let cases = [
            (
                "services:\n  api:\n    image: x\n    deploy:\n      replicas: 2\n",
                "deploy",
                "services.api.deploy",
            ),
            ("services:\n  api:\n    image: x\nsecrets: {}\n", "secrets", "secrets"),
            (
                "services:\n  api:\n    image: x\n    healthcheck:\n      test: [CMD, 'true']\n      bogus: 1\n",
                "bogus",
                "services.api.healthcheck.bogus",
            ),
            (
                "services:\n  api:\n    image: x\nvolumes:\n  data:\n    driver_opt: {}\n",
                "driver_opt",
                "volumes.data.driver_opt",
            ),
            (
                "services:\n  api:\n    image: x\n    build: .\n",
                "build",
                "services.api.build",
            ),
        ];
        for (text, key, at) in cases {
            match load_text(text) {
                Err(LoadError::Unsupported { key: k, at: a, .. }) => {
                    assert_eq!((k.as_str(), a.as_str()), (key, at));
                }
                other => panic!("{at}: expected Unsupported, got {other:?}"),
            }
            let message = load_text(text).unwrap_err().to_string();
            assert!(
                message.contains(&format!("`{key}`")) && message.contains(at),
                "{message}"
            );
        }
    }

    #[test]
    fn extension_fields_and_the_obsolete_version_are_accepted() {
        let project = load_text(
            "version: '3.8'\nx-top: {a: 1}\nservices:\n  api:\n    image: x\n    x-note: hi\n    healthcheck:\n      test: [CMD, 'true']\n      x-inner: 1\n",
        )
        .unwrap();
        assert_eq!(project.services.len(), 1);
    }

    #[test]
    fn anchors_and_merge_keys_resolve_with_local_keys_winning() {
        let project = load_text(
            "x-base: &base\n  image: base-image\n  restart: always\n  labels: {a: '1'}\nservices:\n  one:\n    <<: *base\n  two:\n    <<: *base\n    restart: 'no'\n",
        )
        .unwrap();
        let one = project.service("one").unwrap();
        let two = project.service("two").unwrap();
        assert_eq!(one.image, "base-image");
        assert_eq!(one.restart.as_deref(), Some("always"));
        assert_eq!(two.restart.as_deref(), Some("no"));
        assert_eq!(two.labels.get("a").map(String::as_str), Some("1"));
    }

    #[test]
    fn interpolation_priority_is_vars_then_process_env_then_dotenv() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            ".env",
            "C5_UNIT_ONLY_DOTENV=dotenv\nC5_UNIT_OVERRIDDEN=dotenv\nPATH=from-dotenv\n",
        );
        let path = write(
            dir.path(),
            "compose.yaml",
            "services:\n  api:\n    image: ${C5_UNIT_OVERRIDDEN}\n    labels:\n      a: ${C5_UNIT_ONLY_DOTENV}\n      path: ${PATH}\n      lit: $$HOME\n",
        );
        let project = load(&path, "unit", &vars(&[("C5_UNIT_OVERRIDDEN", "from-vars")])).unwrap();
        let api = project.service("api").unwrap();
        assert_eq!(api.image, "from-vars");
        assert_eq!(api.labels["a"], "dotenv");
        assert_eq!(api.labels["path"], std::env::var("PATH").unwrap());
        assert_eq!(api.labels["lit"], "$HOME");
    }

    #[test]
    fn a_required_variable_names_itself_and_where() {
        let err = load_text(
            "services:\n  api:\n    image: ${C5_UNIT_NEVER_SET:?pass the backend image}\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "services.api.image: required variable C5_UNIT_NEVER_SET is missing a value: pass the backend image"
        );
    }

    #[test]
    fn env_files_merge_in_order_under_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("env")).unwrap();
        write(&dir.path().join("env"), "a.env", "X=a\nY=a\nZ=a\n");
        write(&dir.path().join("env"), "b.env", "Y=b\nZ=b\n");
        let path = write(
            dir.path(),
            "compose.yaml",
            "services:\n  api:\n    image: x\n    env_file: [env/a.env, ./env/b.env, {path: env/none.env, required: false}]\n    environment: {Z: compose, BARE: null}\n",
        );
        let project = load(&path, "unit", &vars(&[("BARE", "from-vars")])).unwrap();
        let env = &project.service("api").unwrap().environment;
        let got: Vec<(&str, Option<&str>)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("BARE", Some("from-vars")),
                ("X", Some("a")),
                ("Y", Some("b")),
                ("Z", Some("compose"))
            ]
        );
    }

    #[test]
    fn a_missing_required_env_file_is_an_error_with_its_path() {
        let err =
            load_text("services:\n  api:\n    image: x\n    env_file: nope.env\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("nope.env") && text.contains("services.api.env_file"),
            "{text}"
        );
    }

    #[test]
    fn references_must_resolve() {
        let undefined_dep =
            load_text("services:\n  api:\n    image: x\n    depends_on: [db]\n").unwrap_err();
        assert!(
            undefined_dep
                .to_string()
                .contains("undefined service \"db\""),
            "{undefined_dep}"
        );
        let undefined_volume =
            load_text("services:\n  api:\n    image: x\n    volumes: [data:/data]\n").unwrap_err();
        assert!(undefined_volume
            .to_string()
            .contains("undefined volume \"data\""));
        let undefined_network =
            load_text("services:\n  api:\n    image: x\n    networks: [back]\n").unwrap_err();
        assert!(undefined_network
            .to_string()
            .contains("undefined network \"back\""));
        let cycle = load_text("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n").unwrap_err();
        assert!(cycle.to_string().contains("dependency cycle"), "{cycle}");
        let no_image = load_text("services:\n  a:\n    command: x\n").unwrap_err();
        assert!(no_image.to_string().contains("`image` is required"));
    }

    #[test]
    fn bad_values_are_errors_with_their_path() {
        for (text, at) in [
            (
                "services:\n  a:\n    image: x\n    restart: sometimes\n",
                "services.a.restart",
            ),
            (
                "services:\n  a:\n    image: x\n    stop_grace_period: soon\n",
                "services.a.stop_grace_period",
            ),
            (
                "services:\n  a:\n    image: x\n    ports: ['8000-8001:80']\n",
                "services.a.ports[0]",
            ),
            (
                "services:\n  a:\n    image: x\n    volumes: ['/x:/y:z']\n",
                "services.a.volumes[0]",
            ),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(at), "{at}: {err}");
        }
    }

    #[test]
    fn yaml_scalars_become_the_strings_compose_uses() {
        // Compose v2.40 `config` prints these for the same YAML. (Known
        // gap: an unquoted `007` stays "007" here, Compose reads 7.)
        let project = load_text(
            "services:\n  s:\n    image: x\n    environment:\n      F1: 5.0\n      F2: 1.10\n      F3: 1e3\n      I: 0x1F\n      O: 0o17\n      B: yes\n      T: True\n",
        )
        .unwrap();
        let env = &project.service("s").unwrap().environment;
        let got: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or("<none>")))
            .collect();
        assert_eq!(
            got,
            vec![
                ("B", "yes"),
                ("F1", "5"),
                ("F2", "1.1"),
                ("F3", "1000"),
                ("I", "31"),
                ("O", "15"),
                ("T", "true"),
            ]
        );
    }

    #[test]
    fn durations_parse_like_compose_go() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn commands_split_like_a_shell_without_expansion() {
        assert_eq!(
            shell_split(r#"sh -c 'echo "$HOME"' a\ b "c \"d\"""#).unwrap(),
            vec!["sh", "-c", "echo \"$HOME\"", "a b", "c \"d\""]
        );
        assert_eq!(shell_split("").unwrap(), Vec::<String>::new());
        assert!(shell_split("'open").is_err());
    }

    #[test]
    fn project_names_follow_compose_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "compose.yaml",
            "services:\n  a:\n    image: x\n",
        );
        assert!(load(&path, "Wavemap", &BTreeMap::new()).is_err());
        assert!(load(&path, "-x", &BTreeMap::new()).is_err());
        assert!(load(&path, "wavemap-dev_1", &BTreeMap::new()).is_ok());
    }
}
