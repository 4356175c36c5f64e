//! The top level of a compose file: which sections exist, the top-level
//! `volumes` and `networks`, and the references between them and services.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_yaml_ng::Value;

use super::section::Section;
use super::{invalid, Ctx, LoadError, HINT};
use crate::compose::model::*;

impl Ctx<'_> {
    pub(super) fn project_from(&self, root: &Value) -> Result<Project, LoadError> {
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

    pub(super) fn network_def(
        &self,
        key: &str,
        value: &Value,
        at: &str,
    ) -> Result<NetworkDef, LoadError> {
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
}
