//! `compose config`: the Compose file as the agent reads it, before an edit
//! goes live (and the same check the deploy's dry run runs).
//!
//! It loads, interpolates and validates the configured file (or `--file`)
//! with the agent's own interpolation environment: the `.env` beside the
//! file plus the agent's variables (the current release's image pair when
//! one is recorded, and the env folder), never the process environment.
//! Output follows `docker compose config` (the normalized project) and
//! `docker compose config --hash '*'` (`<service> <hash>` lines), on
//! stderr; markers and `--json` data on stdout. Environment values are
//! never printed: the normalized project shows their names only.
//!
//! Markers (`WAVEMAP_COMPOSE_CONFIG_*`): `_FILE`, `_PROJECT`, `_SERVICES`,
//! `_SERVICE_COUNT`, `_RESULT` (`valid`; an invalid file exits 2 with the
//! key path in the error).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::Invocation;
use crate::cli::ComposeConfigArgs;
use crate::compose::{hash, Project};
use crate::config::Config;
use crate::error::Result;

const P: &str = "WAVEMAP_COMPOSE_CONFIG";

/// Above this many characters the `--json` data keeps the hashes and drops
/// the normalized project, so stdout stays bounded.
const MAX_DATA_CHARS: usize = 18_000;

/// Above this many characters the normalized project is summarized on
/// stderr (one line per service), keeping stderr bounded.
const MAX_STDERR_CHARS: usize = 6_000;

pub fn config(inv: &mut Invocation<'_>, args: &ComposeConfigArgs) -> Result<()> {
    let path = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(inv.config.runtime.compose_file.as_path()));
    inv.report.marker(&format!("{P}_FILE"), path.display());
    let vars = agent_vars(inv.config)?;
    let project = match Project::load(&path, &inv.config.runtime.project_name, &vars) {
        Ok(project) => project,
        Err(e) => {
            inv.report.marker(&format!("{P}_RESULT"), "invalid");
            return Err(e);
        }
    };
    let names: Vec<&str> = project.services.iter().map(|s| s.name.as_str()).collect();
    inv.report.marker(&format!("{P}_PROJECT"), &project.name);
    // The file's own `name:` is shown beside the project name the agent
    // uses (runtime.project_name wins, as `docker compose -p` does).
    if let Some(in_file) = &project.file_name {
        inv.report.marker(&format!("{P}_NAME_IN_FILE"), in_file);
    }
    inv.report.marker(&format!("{P}_SERVICES"), names.join(","));
    inv.report
        .marker(&format!("{P}_SERVICE_COUNT"), project.services.len());

    let hashes: BTreeMap<&str, String> = project
        .services
        .iter()
        .map(|s| (s.name.as_str(), hash::service_hash(s)))
        .collect();
    let normalized = normalized_project(&project);
    if args.hashes {
        for service in &project.services {
            eprintln!("{} {}", service.name, hashes[service.name.as_str()]);
        }
    } else {
        let text = serde_json::to_string_pretty(&normalized).unwrap_or_default();
        if text.len() <= MAX_STDERR_CHARS {
            eprintln!("{text}");
        } else {
            // Bounded output: one line per service instead.
            for service in &project.services {
                eprintln!(
                    "{} image={} hash={}",
                    service.name,
                    service.image,
                    hashes[service.name.as_str()]
                );
            }
            eprintln!(
                "(the normalized project is {} characters; `--json` prints it on stdout when it fits)",
                text.len()
            );
        }
    }
    let env_files: BTreeMap<&str, Vec<String>> = project
        .services
        .iter()
        .filter(|s| !s.env_files.is_empty())
        .map(|s| {
            let files = s.env_files.iter().map(|p| p.display().to_string());
            (s.name.as_str(), files.collect())
        })
        .collect();
    let mut data = json!({
        "file": path.display().to_string(),
        "project": project.name,
        "name_in_file": project.file_name,
        "hashes": hashes,
        "env_files": env_files,
        "config": normalized,
    });
    if data.to_string().len() > MAX_DATA_CHARS {
        if let Value::Object(map) = &mut data {
            map.remove("config");
            map.insert(
                "config_omitted".into(),
                json!("too large for stdout; run without --json to see it on stderr"),
            );
        }
    }
    inv.report.set_data(data);
    inv.report.marker(&format!("{P}_RESULT"), "valid");
    Ok(())
}

/// The agent's interpolation variables outside a deploy: the env folder
/// and, when a release is recorded, its image pair (a deploy writes the
/// same pair to `.env`, so either way the file resolves the same).
pub fn agent_vars(config: &Config) -> Result<BTreeMap<String, String>> {
    match crate::release::read_current(config)? {
        Some(current) => Ok(crate::deploy::compose_vars(config, &current.release)),
        None => Ok(BTreeMap::from([(
            "WAVEMAP_ENV_DIR".to_owned(),
            config.runtime.env_dir.to_string(),
        )])),
    }
}

/// The normalized project as `docker compose config` shapes it, with every
/// environment value replaced by `<hidden>`.
fn normalized_project(project: &Project) -> Value {
    let mut services = serde_json::Map::new();
    for service in &project.services {
        let mut value = hash::service_json(service);
        if let Some(Value::Object(env)) = value.get_mut("environment") {
            for v in env.values_mut() {
                if !v.is_null() {
                    *v = json!("<hidden>");
                }
            }
        }
        services.insert(service.name.clone(), value);
    }
    let volumes: BTreeMap<&str, &str> = project
        .volumes
        .iter()
        .map(|(k, v)| (k.as_str(), v.name.as_str()))
        .collect();
    let networks: BTreeMap<&str, &str> = project
        .networks
        .iter()
        .map(|(k, v)| (k.as_str(), v.name.as_str()))
        .collect();
    let secrets: Vec<&str> = project.secrets.keys().map(String::as_str).collect();
    let configs: Vec<&str> = project.configs.keys().map(String::as_str).collect();
    json!({
        "name": project.name,
        "services": services,
        "volumes": volumes,
        "networks": networks,
        "secrets": secrets,
        "configs": configs,
    })
}
