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
//!
//! # Layout
//! - [`section`]: key-by-key access to YAML mappings, with paths.
//! - [`project`]: the top-level sections and cross-references.
//! - [`service`]: one service's keys.
//! - [`ports`], [`mounts`]: the two short syntaxes with the most forms.
//! - [`gosyntax`]: durations, byte sizes and shell words as Go parses them.

mod extends;
mod gosyntax;
mod mounts;
mod options;
mod ports;
mod project;
mod section;
mod service;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

pub use gosyntax::{parse_duration, shell_split};

use super::interpolate::{parse_dotenv, substitute, TemplateError};
use super::model::Project;
use section::key_text;

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
    #[error("unknown key `{key}` at {at}: did you mean `{suggestion}`?")]
    Misspelled {
        key: String,
        at: String,
        suggestion: String,
    },
    #[error("{at}: {problem}")]
    Invalid { at: String, problem: String },
    #[error("{at}: {error}")]
    Interpolation { at: String, error: TemplateError },
    #[error("env file {path}: {problem}")]
    EnvFile { path: String, problem: String },
}

pub(super) fn invalid(at: &str, problem: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        at: at.to_owned(),
        problem: problem.into(),
    }
}

/// How strict a load is about files the host may not have yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Treat a missing required `env_file` as empty instead of an error:
    /// a dry run validates the compose file before the env files are ever
    /// rendered. The hashes of such a load are not the real ones.
    pub missing_env_files_are_empty: bool,
}

/// Load `path` as project `project_name`. Interpolation variables are the
/// `.env` file next to the compose file overlaid by `vars` (the agent's
/// own: the image pair, the env folder). The process environment is never
/// read, so the daemon under systemd and a command under the SSM Agent
/// compute the same project and the same hashes.
pub fn load(
    path: &Path,
    project_name: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Project, LoadError> {
    load_with(path, project_name, vars, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(
    path: &Path,
    project_name: &str,
    vars: &BTreeMap<String, String>,
    options: LoadOptions,
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
        let agent = |name: &str| vars.get(name).cloned();
        let parsed = parse_dotenv(&dotenv_text, &agent).map_err(|e| LoadError::EnvFile {
            path: dotenv_path.display().to_string(),
            problem: e.to_string(),
        })?;
        environment.extend(parsed);
    }
    environment.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    // compose-go sets COMPOSE_PROJECT_NAME for interpolation to the project
    // name unless the environment (here: `.env`, the agent's variables)
    // already has it. The project name is runtime.project_name, as `-p`.
    environment
        .entry("COMPOSE_PROJECT_NAME".to_owned())
        .or_insert_with(|| project_name.to_owned());

    let mut root: Value = serde_yaml_ng::from_str(&text).map_err(|e| LoadError::Yaml {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    merge_keys(&mut root, "").map_err(|message| LoadError::Yaml {
        path: file.display().to_string(),
        message,
    })?;
    let lookup = |name: &str| environment.get(name).cloned();
    interpolate(&mut root, "", &lookup)?;
    extends::resolve(&mut root)?;

    let ctx = Ctx {
        options,
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

pub(super) fn join_path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// Resolve YAML `<<` merge keys everywhere, innermost first, so a merged
/// anchor that itself merges another (`<<: *defaults` inside `&service`)
/// and a list of anchors (`<<: [*a, *b]`, earlier ones winning) both work.
/// Keys written in the mapping itself always win over merged ones.
fn merge_keys(value: &mut Value, at: &str) -> Result<(), String> {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                merge_keys(item, &format!("{at}[{i}]"))?;
            }
        }
        Value::Tagged(tagged) => merge_keys(&mut tagged.value, at)?,
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                merge_keys(v, &join_path(at, &key_text(k)))?;
            }
            let merge_key = Value::String("<<".into());
            if let Some(merged) = map.remove(&merge_key) {
                let sources: Vec<Value> = match merged {
                    Value::Mapping(_) => vec![merged],
                    Value::Sequence(items) => items,
                    _ => {
                        return Err(format!(
                            "{}: a `<<` merge key takes a mapping or a list of mappings",
                            join_path(at, "<<")
                        ))
                    }
                };
                for source in sources {
                    let Value::Mapping(source) = source else {
                        return Err(format!(
                            "{}: a `<<` merge key takes a mapping or a list of mappings",
                            join_path(at, "<<")
                        ));
                    };
                    for (k, v) in source {
                        if !map.contains_key(&k) {
                            map.insert(k, v);
                        }
                    }
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
    Ok(())
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

pub(super) struct Ctx<'a> {
    options: LoadOptions,
    project: &'a str,
    working_dir: &'a Path,
    environment: &'a BTreeMap<String, String>,
}

pub(super) const SERVICE_KEYS: &[&str] = &[
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
    "container_name",
    "deploy",
    "secrets",
    "configs",
    "profiles",
    "extends",
    "build",
    "scale",
];

pub(super) const HINT: &str = "remove it or move it under an `x-` extension field";
