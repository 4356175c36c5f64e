//! Rendering the env files from SSM Parameter Store: the `env-render` stage
//! of `runtime deploy`, boot recovery in the daemon, and `runtime-env`.
//!
//! The order is what keeps a deploy from half-applying configuration:
//! fetch every parameter, check all of them against the contract, and only
//! then touch files. A missing required parameter, a wrong type or a name
//! that cannot be rendered is a gate (exit 3) before anything is written, so
//! every existing env file stays byte for byte as it was. Each changed file
//! is then written atomically (temp file, fsync, rename, fsync dir; mode
//! 0600) and a file whose bytes would not change is not touched at all, so
//! its mtime says when its content last changed.
//!
//! Entry points: [`render_env`]; [`read_group`] and [`read_secret`] read a
//! rendered file back. The caller holds the agent lock when
//! `execute` is true (`commands` does that for every mutating command).
//!
//! Markers ([`RenderSummary::add_markers`]):
//! - `WAVEMAP_RUNTIME_ENV_RESULT`: `rendered` (files written), `unchanged`
//!   (executed, nothing to write) or `planned` (dry run)
//! - `WAVEMAP_RUNTIME_ENV_DIR`, `_FILES`, `_PARAMETERS`, `_CHANGED_FILES`
//!   (count), `_CHANGED_FILE_NAMES`, `_UNDECLARED` (count),
//!   `_UNDECLARED_NAMES`, `_MISSING_OPTIONAL` (count)
//! - per file, with `<G>` the group upper-cased and `-` as `_`:
//!   `WAVEMAP_RUNTIME_ENV_FILE_<G>` = `created|updated|unchanged|would-create|would-update`,
//!   `_VARIABLES`, and `_ADDED`, `_CHANGED`, `_REMOVED` (key names only).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::aws;
use crate::config::Config;
use crate::envfile::{self, EnvMap, KeyDiff};
use crate::error::{Error, Stage};
use crate::fsutil;
use crate::output::Report;
use crate::ssm::{self, Contract};

mod commit;
mod guard;

pub use commit::{secure_variables, secure_variables_checked, Staged};
pub use guard::{EmptyGuard, RenderError};

/// Env files hold secrets: owner read/write only, folder owner only.
pub const ENV_FILE_MODE: u32 = 0o600;
pub const ENV_DIR_MODE: u32 = 0o700;

/// What happened (or would happen) to one env file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    Created,
    Updated,
    Unchanged,
    WouldCreate,
    WouldUpdate,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Created => "created",
            FileState::Updated => "updated",
            FileState::Unchanged => "unchanged",
            FileState::WouldCreate => "would-create",
            FileState::WouldUpdate => "would-update",
        }
    }

    pub fn changes(self) -> bool {
        self != FileState::Unchanged
    }
}

/// One env file: where, how many variables, which keys differ.
#[derive(Debug, Clone)]
pub struct FileSummary {
    pub group: String,
    pub path: PathBuf,
    pub variables: usize,
    pub diff: KeyDiff,
    pub state: FileState,
}

/// The result of one render. Names and counts only; no values.
#[derive(Debug, Clone)]
pub struct RenderSummary {
    pub executed: bool,
    pub env_dir: PathBuf,
    /// Parameters rendered into files.
    pub parameters: usize,
    /// Full names of parameters rendered by the convention, not declared.
    pub undeclared: Vec<String>,
    /// Full names of optional parameters that SSM does not have.
    pub missing_optional: Vec<String>,
    pub files: Vec<FileSummary>,
    /// Files whose rename an interrupted earlier render left and this one
    /// finished.
    pub recovered: Vec<String>,
}

impl RenderSummary {
    pub fn changed_files(&self) -> impl Iterator<Item = &FileSummary> {
        self.files.iter().filter(|f| f.state.changes())
    }

    /// `rendered`, `unchanged` or `planned`.
    pub fn result(&self) -> &'static str {
        match (self.executed, self.changed_files().next().is_some()) {
            (false, _) => "planned",
            (true, true) => "rendered",
            (true, false) => "unchanged",
        }
    }

    /// Names, counts and states for `--json` (no values).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "result": self.result(),
            "env_dir": self.env_dir.display().to_string(),
            "parameters": self.parameters,
            "undeclared": self.undeclared,
            "missing_optional": self.missing_optional,
            "files": self.files.iter().map(|f| serde_json::json!({
                "group": f.group,
                "path": f.path.display().to_string(),
                "state": f.state.as_str(),
                "variables": f.variables,
                "added": f.diff.added,
                "changed": f.diff.changed,
                "removed": f.diff.removed,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn add_markers(&self, report: &mut Report) {
        const P: &str = "WAVEMAP_RUNTIME_ENV";
        report.marker(&format!("{P}_RESULT"), self.result());
        report.marker(&format!("{P}_DIR"), self.env_dir.display());
        report.marker(&format!("{P}_FILES"), self.files.len());
        report.marker(&format!("{P}_PARAMETERS"), self.parameters);
        let changed: Vec<String> = self
            .changed_files()
            .map(|f| format!("{}.env", f.group))
            .collect();
        report.marker(&format!("{P}_CHANGED_FILES"), changed.len());
        report.marker(&format!("{P}_CHANGED_FILE_NAMES"), changed.join(","));
        report.marker(&format!("{P}_UNDECLARED"), self.undeclared.len());
        report.marker(&format!("{P}_UNDECLARED_NAMES"), self.undeclared.join(","));
        report.marker(
            &format!("{P}_MISSING_OPTIONAL"),
            self.missing_optional.len(),
        );
        if !self.recovered.is_empty() {
            report.marker(&format!("{P}_RECOVERED_FILES"), self.recovered.join(","));
        }
        for f in &self.files {
            let g = marker_part(&f.group);
            report.marker(&format!("{P}_FILE_{g}"), f.state.as_str());
            report.marker(&format!("{P}_FILE_{g}_VARIABLES"), f.variables);
            report.marker(&format!("{P}_FILE_{g}_ADDED"), f.diff.added.join(","));
            report.marker(&format!("{P}_FILE_{g}_CHANGED"), f.diff.changed.join(","));
            report.marker(&format!("{P}_FILE_{g}_REMOVED"), f.diff.removed.join(","));
        }
    }
}

/// Names for a log line, bounded: SSM keeps only 8,000 characters of a
/// command's stderr, and 300 names would push everything else out.
pub(crate) fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    if text.is_empty() {
        text.push('-');
    }
    text
}

/// A group name as part of a marker name (`my-group` -> `MY_GROUP`).
fn marker_part(group: &str) -> String {
    group
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect()
}

/// The env file of `group` under the configured env folder.
pub fn env_file_path(config: &Config, group: &str) -> PathBuf {
    config.runtime.env_dir.join(format!("{group}.env"))
}

/// Read the rendered env file of `group`. `Ok(None)` when it does not
/// exist yet. The values are not registered for redaction (plain values
/// such as `wavemap` would then vanish from every path in the output):
/// register what you use, or use [`read_secret`].
pub fn read_group(config: &Config, group: &str) -> Result<Option<EnvMap>, Error> {
    let path = env_file_path(config, group);
    let Some(bytes) = fsutil::read_owned(&path)? else {
        return Ok(None);
    };
    let vars = envfile::parse_bytes(&bytes).map_err(|e| {
        Error::failed(
            Stage::EnvRead,
            format!("{} is not a valid env file: {e}", path.display()),
        )
    })?;
    Ok(Some(vars))
}

/// One variable of a rendered env file (for example `DATABASE_URL` in
/// `backend`), registered as a secret before it is returned. `Ok(None)`
/// when the file or the variable does not exist.
pub fn read_secret(config: &Config, group: &str, variable: &str) -> Result<Option<String>, Error> {
    let value = read_group(config, group)?.and_then(|mut vars| vars.remove(variable));
    if let Some(value) = &value {
        crate::output::register_secret(value);
    }
    Ok(value)
}

/// How to render: write or only plan, and whether emptying is deliberate.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    pub execute: bool,
    /// `--allow-empty`: render even when the prefix holds no parameter or a
    /// file that has variables now would be left with none.
    pub allow_empty: bool,
}

/// [`render`] with the empty-render guard on: what the daemon's boot
/// render and every caller without `--allow-empty` get.
pub async fn render_env(config: &Config, execute: bool) -> Result<RenderSummary, Error> {
    render(
        config,
        RenderOptions {
            execute,
            allow_empty: false,
        },
    )
    .await
    .map_err(Error::from)
}

/// Fetch every parameter under the prefix, check the contract, and render
/// one file per group; with `execute`, write the files that change.
///
/// Errors: [`RenderError::Empty`] (exit 3) from the empty-render guard;
/// [`Error::Gate`] (exit 3) when the contract is not met, naming the
/// parameters and never a value, with nothing written;
/// [`Error::Unavailable`] (exit 69) when SSM does not answer within the
/// configured retries and timeouts; [`Error::Io`] when a file cannot be
/// read or written.
pub async fn render(config: &Config, options: RenderOptions) -> Result<RenderSummary, RenderError> {
    let (summary, staged) = render_staged(config, options).await?;
    if let Some(staged) = staged {
        staged.promote()?;
    }
    Ok(summary)
}

/// [`render`], but an executed render leaves the changed files staged
/// (complete temp files beside the live ones) instead of renaming them in:
/// the live env files change only when the caller calls
/// [`Staged::promote`]. A deploy promotes when its converge starts, so a
/// deploy that fails or is killed before converge changes no env file.
/// Dropping the [`Staged`] unpromoted removes the copies; a killed process
/// leaves them for the next executed render's crash hygiene.
pub async fn render_staged(
    config: &Config,
    options: RenderOptions,
) -> Result<(RenderSummary, Option<Staged>), RenderError> {
    let recovered = if options.execute {
        tighten_env_dir(config)?;
        commit::recover(config)?
    } else {
        commit::Recovered::default()
    };
    let contract = Contract::load(config)?;
    let sdk = aws::sdk_config(config).await;
    let client = aws::ssm_client(&sdk, config);
    log::info!(stage = "env-render"; "reading parameters under {} from SSM Parameter Store", contract.prefix);
    let live = ssm::fetch(&client, &contract.prefix).await?;
    log::info!(stage = "env-render"; "read {} parameters", live.len());
    let (mut summary, staged) = stage_fetched(config, &contract, &live, options)?;
    summary.recovered = recovered.finished;
    Ok((summary, staged))
}

/// An env folder looser than 0700 (made by hand, or by an older agent) is
/// narrowed at every executed render, and the journal says what it was.
fn tighten_env_dir(config: &Config) -> Result<(), Error> {
    let dir = config.runtime.env_dir.as_path();
    if let Some(old) = crate::fsutil::tighten_dir(dir, ENV_DIR_MODE)? {
        log::warn!(stage = "env-render"; "the env folder {} had mode {old:04o}; narrowed to {ENV_DIR_MODE:04o}", dir.display());
    }
    Ok(())
}

/// Finish a promotion (or a render's rename phase) that a killed process
/// left half done, and remove stale staged copies, without reading SSM:
/// what boot recovery does before it converges with the files on disk.
/// The caller holds the operation lock.
pub fn recover_interrupted(config: &Config) -> Result<Vec<String>, Error> {
    Ok(commit::recover(config)?.finished)
}

/// Everything after the fetch, written at once; separate so unit tests
/// need no SSM.
#[cfg(test)]
fn render_fetched(
    config: &Config,
    contract: &Contract,
    live: &[ssm::LiveParameter],
    options: RenderOptions,
) -> Result<RenderSummary, RenderError> {
    let (summary, staged) = stage_fetched(config, contract, live, options)?;
    if let Some(staged) = staged {
        staged.promote()?;
    }
    Ok(summary)
}

/// Everything after the fetch; an executed render returns its files staged.
fn stage_fetched(
    config: &Config,
    contract: &Contract,
    live: &[ssm::LiveParameter],
    options: RenderOptions,
) -> Result<(RenderSummary, Option<Staged>), RenderError> {
    let execute = options.execute;
    if live.is_empty() && !options.allow_empty {
        return Err(RenderError::Empty(EmptyGuard {
            prefix: contract.prefix.clone(),
            parameters: 0,
            emptied: files_with_variables(config, contract)?,
        }));
    }
    let check = contract.check(live);
    check.gate()?;
    let (groups, secure) = group_values(config, contract, &check, live)?;

    let mut plans = Vec::new();
    for (group, vars) in &groups {
        let path = env_file_path(config, group);
        let header = [
            format!(
                "Rendered by wavemap-agent from SSM Parameter Store ({}{group}/ and runtime.parameters).",
                contract.prefix
            ),
            "Do not edit: the next `wavemap-agent runtime-env --execute` replaces this file.".to_owned(),
        ];
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        // Values were checked for NUL in group_values; a failure here is a bug.
        let text =
            envfile::render(&header, vars).map_err(|e| Error::caused(Stage::EnvRender, e))?;
        plans.push(plan_file(group, &path, vars, text.into_bytes())?);
    }
    let emptied: Vec<String> = plans
        .iter()
        .filter(|p| p.old_variables > 0 && p.summary.variables == 0)
        .map(|p| format!("{}.env", p.summary.group))
        .collect();
    if !emptied.is_empty() && !options.allow_empty {
        return Err(RenderError::Empty(EmptyGuard {
            prefix: contract.prefix.clone(),
            parameters: live.len(),
            emptied,
        }));
    }
    if options.allow_empty && (live.is_empty() || !emptied.is_empty()) {
        log::warn!(stage = "env-render"; "--allow-empty: rendering {} parameters under {}; emptied on purpose: {}", live.len(), contract.prefix, name_list(&emptied));
    }

    let staged = if execute {
        Some(commit::stage(config, &plans, &secure)?)
    } else {
        None
    };
    let mut files = Vec::new();
    for plan in plans {
        let state = match (plan.write, plan.exists, execute) {
            (false, _, _) => FileState::Unchanged,
            (true, false, false) => FileState::WouldCreate,
            (true, true, false) => FileState::WouldUpdate,
            (true, false, true) => FileState::Created,
            (true, true, true) => FileState::Updated,
        };
        let mut summary = plan.summary;
        summary.state = state;
        log::info!(
            stage = "env-render";
            "{}: {} ({} variables; added {}: {}; changed {}: {}; removed {}: {})",
            summary.path.display(),
            state.as_str(),
            summary.variables,
            summary.diff.added.len(),
            name_list(&summary.diff.added),
            summary.diff.changed.len(),
            name_list(&summary.diff.changed),
            summary.diff.removed.len(),
            name_list(&summary.diff.removed),
        );
        files.push(summary);
    }
    let summary = RenderSummary {
        executed: execute,
        env_dir: config.runtime.env_dir.as_path().to_path_buf(),
        parameters: groups.values().map(BTreeMap::len).sum(),
        undeclared: {
            let mut names: Vec<String> = check.undeclared.iter().map(|u| u.name.clone()).collect();
            names.sort();
            names
        },
        missing_optional: check.missing.iter().map(|d| d.name.clone()).collect(),
        files,
        recovered: Vec::new(),
    };
    if !summary.undeclared.is_empty() {
        log::warn!(
            stage = "env-render";
            "{} parameters are not declared in runtime.parameters and were rendered by the <group>/<VAR> convention: {}",
            summary.undeclared.len(),
            name_list(&summary.undeclared)
        );
    }
    if !summary.missing_optional.is_empty() {
        log::info!(stage = "env-render"; "optional parameters not in SSM: {}", name_list(&summary.missing_optional));
    }
    if execute && summary.changed_files().next().is_none() {
        log::info!(stage = "env-render"; "every env file is already up to date; nothing was rewritten");
    }
    Ok((summary, staged))
}

/// The env files of the contract's groups that hold at least one variable
/// now (for the guard's message and markers).
fn files_with_variables(config: &Config, contract: &Contract) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for group in contract.file_groups() {
        let Some(bytes) = fsutil::read_owned(&env_file_path(config, &group))? else {
            continue;
        };
        if envfile::parse_bytes(&bytes).is_ok_and(|vars| !vars.is_empty()) {
            names.push(format!("{group}.env"));
        }
    }
    Ok(names)
}

/// Variables per group, every configured group present (Compose fails on
/// an `env_file` that does not exist, so an empty group still gets a file).
/// The env files' contents by group, and per group the names of the
/// variables that came from SecureString parameters.
type Grouped = (BTreeMap<String, EnvMap>, BTreeMap<String, BTreeSet<String>>);

/// Build-time inputs of the frontend image: rendering one into an env file
/// changes nothing at runtime and misleads whoever set it.
const BUILD_TIME_PREFIX: &str = "NEXT_PUBLIC_";

fn group_values(
    config: &Config,
    contract: &Contract,
    check: &ssm::Check,
    live: &[ssm::LiveParameter],
) -> Result<Grouped, Error> {
    let by_name: BTreeMap<&str, &ssm::LiveParameter> =
        live.iter().map(|p| (p.name.as_str(), p)).collect();
    let build_time_allowed: BTreeSet<String> = config
        .runtime
        .parameters
        .iter()
        .filter(|p| p.allow_build_time)
        .map(|p| format!("{}{}", contract.prefix, p.name))
        .collect();
    let mut groups: BTreeMap<String, EnvMap> = contract
        .file_groups()
        .into_iter()
        .map(|g| (g, EnvMap::new()))
        .collect();
    let targets = contract
        .declared
        .iter()
        .map(|d| (d.name.as_str(), d.group.as_str(), d.variable.as_str()))
        .chain(
            check
                .undeclared
                .iter()
                .map(|u| (u.name.as_str(), u.group.as_str(), u.variable.as_str())),
        );
    let mut secure: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut bad = Vec::new();
    for (name, group, variable) in targets {
        let Some(parameter) = by_name.get(name) else {
            continue; // a missing optional parameter
        };
        if variable.starts_with(BUILD_TIME_PREFIX) && !build_time_allowed.contains(name) {
            bad.push(format!(
                "parameter {name} renders to {variable}, a build-time input of the frontend image that changes nothing at runtime (declare it with allow_build_time = true in runtime.parameters to render it on purpose)"
            ));
            continue;
        }
        let Some(value) = &parameter.value else {
            bad.push(format!("parameter {name} came back without a value"));
            continue;
        };
        if value.expose().contains('\0') {
            bad.push(format!(
                "parameter {name} contains a NUL character, which no environment variable can hold"
            ));
            continue;
        }
        groups
            .entry(group.to_owned())
            .or_default()
            .insert(variable.to_owned(), value.expose().to_owned());
        if parameter.kind == ssm::LiveType::SecureString {
            secure
                .entry(group.to_owned())
                .or_default()
                .insert(variable.to_owned());
        }
    }
    if !bad.is_empty() {
        return Err(Error::Gate {
            reason: format!("{}; nothing was written", bad.join("; ")),
        });
    }
    Ok((groups, secure))
}

pub(crate) struct FilePlan {
    summary: FileSummary,
    bytes: Vec<u8>,
    exists: bool,
    write: bool,
    /// Variables the file holds now.
    old_variables: usize,
}

/// Compare the rendered bytes with the file on disk.
fn plan_file(group: &str, path: &Path, vars: &EnvMap, bytes: Vec<u8>) -> Result<FilePlan, Error> {
    let current = fsutil::read_owned(path)?;
    let exists = current.is_some();
    let old = match &current {
        None => EnvMap::new(),
        Some(old_bytes) => envfile::parse_bytes(old_bytes).unwrap_or_else(|e| {
            log::warn!(
                stage = "env-render";
                "{} cannot be read as an env file ({e}); it will be replaced whole",
                path.display()
            );
            EnvMap::new()
        }),
    };
    let same_bytes = current.as_deref() == Some(bytes.as_slice());
    let mode_ok = std::fs::symlink_metadata(path)
        .map(|m| m.permissions().mode() & 0o7777 == ENV_FILE_MODE)
        .unwrap_or(false);
    if same_bytes && !mode_ok {
        log::warn!(
            stage = "env-render";
            "{} has the right content but not mode 0600; it will be rewritten",
            path.display()
        );
    }
    Ok(FilePlan {
        old_variables: old.len(),
        summary: FileSummary {
            group: group.to_owned(),
            path: path.to_path_buf(),
            variables: vars.len(),
            diff: KeyDiff::between(&old, vars),
            state: FileState::Unchanged,
        },
        bytes,
        exists,
        write: !(same_bytes && mode_ok),
    })
}

#[cfg(test)]
mod tests;
