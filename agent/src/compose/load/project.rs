//! The top level of a compose file: which sections exist, the top-level
//! `volumes` and `networks`, and the references between them and services.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_yaml_ng::Value;

use super::section::{as_sequence, Section};
use super::{invalid, Ctx, LoadError, HINT};
use crate::compose::model::*;

impl Ctx<'_> {
    pub(super) fn project_from(&self, root: &Value) -> Result<Project, LoadError> {
        let top = Section::new(root, "")?;
        if top.get("include").is_some() {
            return Err(LoadError::Unsupported {
                key: "include".into(),
                at: "include".into(),
                hint: "the agent loads one file; paste the included services into it",
            });
        }
        top.only(
            &[
                "version", "name", "services", "volumes", "networks", "secrets", "configs",
            ],
            HINT,
        )?;
        let mut secrets = BTreeMap::new();
        let mut configs = BTreeMap::new();
        for (section_key, target) in [("secrets", &mut secrets), ("configs", &mut configs)] {
            if let Some(v) = top.get(section_key) {
                let section = Section::new(v, section_key)?;
                for (key, value) in &section.entries {
                    target.insert(
                        key.clone(),
                        self.file_object(section_key, key, value, &section.path(key))?,
                    );
                }
            }
        }
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
        // compose-go splits the variable as is: unset or empty activates
        // the profile named "" (which some files use as "on by default").
        let profiles_var = self
            .environment
            .get("COMPOSE_PROFILES")
            .map_or("", String::as_str);
        let active: Vec<&str> = profiles_var.split(',').map(str::trim).collect();
        for (name, value) in &section.entries {
            // A service with profiles runs only when one of them is active
            // (`COMPOSE_PROFILES` in `.env` or the agent's variables). An
            // inactive one is never created, so, as in Compose, it is not
            // read beyond its `profiles` (its `build` is no error).
            let profiles = service_profiles(value, &section.path(name))?;
            if profiles.is_empty()
                || profiles
                    .iter()
                    .any(|p| active.contains(&p.as_str()) || active.contains(&"*"))
            {
                services.push(self.service(name, value, &section.path(name))?);
            }
        }
        if services.is_empty() {
            return Err(invalid("services", "the file defines no services"));
        }

        // References must resolve, as in Compose.
        // A `required: false` dependency switched off by its profiles is
        // skipped, as Compose skips it (one not in the file at all is an
        // error, as in Compose).
        let in_file: BTreeSet<&str> = section.entries.iter().map(|(k, _)| k.as_str()).collect();
        let enabled: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
        for service in &mut services {
            service.depends_on.retain(|dep, d| {
                d.required || enabled.contains(dep) || !in_file.contains(dep.as_str())
            });
        }
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
                if mount.kind == MountKind::Volume
                    && !mount.source.is_empty()
                    && !volumes.contains_key(&mount.source)
                {
                    return Err(invalid(
                        &format!("services.{}.volumes", service.name),
                        format!(
                            "refers to undefined volume {:?}; declare it under top-level `volumes`",
                            mount.source
                        ),
                    ));
                }
            }
            for (key, defined) in [("secrets", &secrets), ("configs", &configs)] {
                if let Some(refs) = service.options.get(key).and_then(|v| v.as_array()) {
                    for source in refs.iter().filter_map(|r| r.get("source")?.as_str()) {
                        if !defined.contains_key(source) {
                            return Err(invalid(
                                &format!("services.{}.{key}", service.name),
                                format!("refers to undefined {key} entry {source:?}; declare it under top-level `{key}`"),
                            ));
                        }
                    }
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
                    enable_ipv6: None,
                    ipam: serde_json::json!({}),
                },
            );
        }
        let file_name = top.string("name")?.filter(|n| !n.is_empty());
        if let Some(file_name) = file_name.as_deref().filter(|n| *n != self.project) {
            log::warn!(stage = "compose"; "the file's `name: {file_name}` differs from runtime.project_name {:?}; the project is {:?}, as `docker compose -p` would make it", self.project, self.project);
        }
        let project = Project {
            name: self.project.to_owned(),
            file_name,
            working_dir: self.working_dir.to_path_buf(),
            config_files: Vec::new(),
            services,
            volumes,
            networks,
            secrets,
            configs,
            dependency_wait: Duration::from_secs(300),
        };
        crate::compose::plan::dependency_order(&project)
            .map_err(|cycle| invalid("services", format!("dependency cycle: {cycle}")))?;
        Ok(project)
    }

    pub(super) fn volume_def(
        &self,
        key: &str,
        value: &Value,
        at: &str,
    ) -> Result<VolumeDef, LoadError> {
        let (common, _) = self.definition(key, value, at, &[])?;
        Ok(VolumeDef {
            name: common.name,
            driver: common.driver,
            driver_opts: common.driver_opts,
            labels: common.labels,
            external: common.external,
        })
    }

    pub(super) fn network_def(
        &self,
        key: &str,
        value: &Value,
        at: &str,
    ) -> Result<NetworkDef, LoadError> {
        let (common, section) = self.definition(
            key,
            value,
            at,
            &["enable_ipv6", "ipam", "internal", "attachable"],
        )?;
        let mut def = NetworkDef {
            name: common.name,
            driver: common.driver,
            driver_opts: common.driver_opts,
            internal: false,
            attachable: false,
            labels: common.labels,
            external: common.external,
            enable_ipv6: None,
            ipam: serde_json::json!({}),
        };
        if let Some(s) = section {
            def.internal = s.bool("internal")?;
            def.attachable = s.bool("attachable")?;
            def.enable_ipv6 = s.opt_bool("enable_ipv6")?;
            if let Some(v) = s.get("ipam") {
                def.ipam = ipam(v, &s.path("ipam"))?;
            }
        }
        Ok(def)
    }

    /// The one reader of a top-level volume or network: the keys both have
    /// (`name`, `driver`, `driver_opts`, `labels`, `external`), read the same
    /// way, plus the section (`None` for an empty entry) for the `extra` keys
    /// the caller reads itself. The Engine name is `<project>_<key>`, or
    /// `name:`, or the key itself for an external one without a name.
    fn definition<'v>(
        &self,
        key: &str,
        value: &'v Value,
        at: &str,
        extra: &[&str],
    ) -> Result<(Definition, Option<Section<'v>>), LoadError> {
        let mut def = Definition {
            name: format!("{}_{key}", self.project),
            driver: None,
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
            external: false,
        };
        if value.is_null() {
            return Ok((def, None));
        }
        let s = Section::new(value, at)?;
        let known: Vec<&str> = ["name", "driver", "driver_opts", "labels", "external"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        s.only(&known, HINT)?;
        def.external = s.bool("external")?;
        if let Some(name) = s.string("name")? {
            def.name = name;
        } else if def.external {
            def.name = key.to_owned();
        }
        def.driver = s.string("driver")?;
        def.driver_opts = s.string_map("driver_opts")?;
        def.labels = s.string_map("labels")?;
        Ok((def, Some(s)))
    }

    /// A top-level secret or config.
    fn file_object(
        &self,
        section: &str,
        key: &str,
        value: &Value,
        at: &str,
    ) -> Result<FileObject, LoadError> {
        let s = Section::new(value, at)?;
        s.only(
            &["name", "file", "environment", "content", "external"],
            HINT,
        )?;
        if s.bool("external")? {
            return Err(LoadError::Unsupported {
                key: "external".into(),
                at: s.path("external"),
                hint: "external secrets and configs need Swarm; use `file:` instead",
            });
        }
        let name = s
            .string("name")?
            .unwrap_or_else(|| format!("{}_{key}", self.project));
        let source = match (
            s.string("file")?,
            s.string("environment")?,
            s.get("content"),
        ) {
            (Some(file), None, None) => FileSource::File(self.resolve_path(&file)),
            (None, Some(variable), None) => {
                let value = self.environment.get(&variable).ok_or_else(|| {
                    invalid(
                        &s.path("environment"),
                        format!("variable {variable} is not set (in .env beside the file or the agent's variables)"),
                    )
                })?;
                crate::output::register_secret(value);
                FileSource::Inline(SecretText(value.clone()))
            }
            (None, None, Some(_)) if section == "configs" => {
                let content = s.string("content")?.unwrap_or_default();
                FileSource::Inline(SecretText(content))
            }
            _ => {
                return Err(invalid(
                    at,
                    "set exactly one of `file` or `environment` (configs may use `content`)",
                ))
            }
        };
        Ok(FileObject { name, source })
    }
}

/// A service's `profiles`, read before anything else about it.
fn service_profiles(value: &Value, at: &str) -> Result<Vec<String>, LoadError> {
    let s = Section::new(value, at)?;
    match s.get("profiles") {
        None => Ok(Vec::new()),
        Some(p) => as_sequence(p, &s.path("profiles"))?
            .iter()
            .map(|x| super::section::scalar_string(x, &s.path("profiles")))
            .collect(),
    }
}

/// `ipam` in compose-go's JSON form: `driver`, then `config` entries with
/// `subnet`, `ip_range`, `gateway`, `aux_addresses`, then `options`.
fn ipam(value: &Value, at: &str) -> Result<serde_json::Value, LoadError> {
    let s = Section::new(value, at)?;
    s.only(&["driver", "config", "options"], HINT)?;
    let mut o = serde_json::Map::new();
    if let Some(d) = s.string("driver")? {
        o.insert("driver".into(), serde_json::json!(d));
    }
    if let Some(c) = s.get("config") {
        let mut list = Vec::new();
        for (i, item) in as_sequence(c, &s.path("config"))?.iter().enumerate() {
            let p = Section::new(item, &format!("{}[{i}]", s.path("config")))?;
            p.only(&["subnet", "ip_range", "gateway", "aux_addresses"], HINT)?;
            let mut e = serde_json::Map::new();
            for key in ["subnet", "ip_range", "gateway"] {
                if let Some(v) = p.string(key)? {
                    e.insert(key.into(), serde_json::json!(v));
                }
            }
            let aux = p.string_map("aux_addresses")?;
            if !aux.is_empty() {
                e.insert("aux_addresses".into(), serde_json::json!(aux));
            }
            list.push(serde_json::Value::Object(e));
        }
        o.insert("config".into(), serde_json::Value::Array(list));
    }
    let options = s.string_map("options")?;
    if !options.is_empty() {
        o.insert("options".into(), serde_json::json!(options));
    }
    Ok(serde_json::Value::Object(o))
}

/// What a top-level volume and network have in common.
struct Definition {
    name: String,
    driver: Option<String>,
    driver_opts: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    external: bool,
}
