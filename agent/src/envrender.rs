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
use crate::error::Error;
use crate::fsutil;
use crate::output::Report;
use crate::ssm::{self, Contract};

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
            "env-read",
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

/// The empty-render guard: reading 0 parameters (a typo in
/// `parameter_prefix`, an IAM policy scoped elsewhere, a deleted tree) or
/// emptying a file that has variables would recreate the app with an empty
/// environment at the next deploy or boot. That is refused (exit 3, nothing
/// written) unless asked for with `--allow-empty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyGuard {
    pub prefix: String,
    /// Parameters read under the prefix.
    pub parameters: usize,
    /// Files (`backend.env`) that have variables now and would have none.
    pub emptied: Vec<String>,
}

impl EmptyGuard {
    /// `empty-prefix` (0 parameters read) or `empty-file`.
    pub fn reason(&self) -> &'static str {
        if self.parameters == 0 {
            "empty-prefix"
        } else {
            "empty-file"
        }
    }

    /// `WAVEMAP_RUNTIME_ENV_RESULT=blocked`, `_BLOCKED_REASON`, `_PREFIX`,
    /// `_PARAMETERS`, `_EMPTIED_FILES`.
    pub fn add_markers(&self, report: &mut Report) {
        const P: &str = "WAVEMAP_RUNTIME_ENV";
        report.marker(&format!("{P}_RESULT"), "blocked");
        report.marker(&format!("{P}_BLOCKED_REASON"), self.reason());
        report.marker(&format!("{P}_PREFIX"), &self.prefix);
        report.marker(&format!("{P}_PARAMETERS"), self.parameters);
        report.marker(&format!("{P}_EMPTIED_FILES"), self.emptied.join(","));
    }
}

impl std::fmt::Display for EmptyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files = if self.emptied.is_empty() {
            String::new()
        } else {
            format!(
                "; it would leave {} with no variable",
                self.emptied.join(", ")
            )
        };
        if self.parameters == 0 {
            write!(
                f,
                "read 0 parameters under {}{files}; check runtime.parameter_prefix and the instance's SSM permissions; nothing was written (pass --allow-empty to render empty files on purpose)",
                self.prefix
            )
        } else {
            write!(
                f,
                "the parameters under {}{files}; nothing was written (pass --allow-empty to empty them on purpose)",
                self.prefix
            )
        }
    }
}

/// A render that did not happen: the empty-render guard, or any other error.
#[derive(Debug)]
pub enum RenderError {
    Empty(EmptyGuard),
    Other(Error),
}

impl From<Error> for RenderError {
    fn from(e: Error) -> Self {
        RenderError::Other(e)
    }
}

impl From<RenderError> for Error {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Empty(guard) => Error::Gate {
                reason: guard.to_string(),
            },
            RenderError::Other(e) => e,
        }
    }
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
    let recovered = if options.execute {
        recover(config)?
    } else {
        Recovered::default()
    };
    let contract = Contract::from_config(config);
    let sdk = aws::sdk_config(config).await;
    let client = aws::ssm_client(&sdk, config);
    log::info!(stage = "env-render"; "reading parameters under {} from SSM Parameter Store", contract.prefix);
    let live = ssm::fetch(&client, &contract.prefix).await?;
    log::info!(stage = "env-render"; "read {} parameters", live.len());
    let mut summary = render_fetched(config, &contract, &live, options)?;
    summary.recovered = recovered.finished;
    Ok(summary)
}

/// The SecureString variable names per group, recorded by the render in
/// `state_dir` (never in the env files, which stay plain Compose env files
/// that an operator's edit must not be able to weaken redaction through).
const SECURE_NAMES_FILE: &str = "env-secure-variables.json";
/// The rename phase in progress: present only between the last temp write
/// and the last rename of a render.
const PENDING_FILE: &str = "env-render-pending.json";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecureNames {
    schema_version: u32,
    groups: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    schema_version: u32,
    pid: u32,
    renames: Vec<(PathBuf, PathBuf)>,
}

fn secure_names_path(config: &Config) -> PathBuf {
    config.agent.state_dir.join(SECURE_NAMES_FILE)
}

fn pending_path(config: &Config) -> PathBuf {
    config.agent.state_dir.join(PENDING_FILE)
}

/// The names of the variables that came from SecureString parameters, over
/// every group, as the last executed render recorded them (empty before the
/// first one, or when the record cannot be read).
pub fn secure_variables(config: &Config) -> BTreeSet<String> {
    let path = secure_names_path(config);
    let names = fsutil::read_owned(&path)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<SecureNames>(&bytes).ok());
    names
        .map(|n| n.groups.into_values().flatten().collect())
        .unwrap_or_default()
}

/// What the crash recovery at the start of an executed render did.
#[derive(Debug, Default)]
struct Recovered {
    /// Files whose interrupted rename this run finished.
    finished: Vec<String>,
    /// Temp files of earlier processes removed.
    removed: Vec<String>,
}

/// Crash hygiene, under the agent lock: finish a rename phase that a killed
/// render left half done (every temp file in it was complete and fsynced
/// before the phase began), then remove temp files any earlier process left
/// in the env folder and beside the Compose file. The operation journal
/// records what was done.
fn recover(config: &Config) -> Result<Recovered, Error> {
    let mut recovered = Recovered::default();
    let pending = pending_path(config);
    if let Some(bytes) = fsutil::read_owned(&pending)? {
        match serde_json::from_slice::<Pending>(&bytes) {
            Ok(p) => {
                for (temp, target) in &p.renames {
                    if std::fs::symlink_metadata(temp).is_ok() {
                        fsutil::commit_temp(temp, target)?;
                        recovered.finished.push(display_name(target));
                    }
                }
                log::warn!(stage = "env-render"; "finished the rename phase that an interrupted render (pid {}) left: {}", p.pid, name_list(&recovered.finished));
            }
            Err(e) => {
                log::warn!(stage = "env-render"; "{} cannot be read ({e}); its temp files are removed instead", pending.display());
            }
        }
        std::fs::remove_file(&pending).map_err(|e| Error::io("remove", &pending, e))?;
    }
    let mut dirs = vec![config.runtime.env_dir.as_path().to_path_buf()];
    if let Some(compose_dir) = config.runtime.compose_file.as_path().parent() {
        if !dirs.iter().any(|d| d == compose_dir) {
            dirs.push(compose_dir.to_path_buf());
        }
    }
    for dir in dirs {
        recovered.removed.extend(fsutil::remove_temps(&dir)?);
    }
    if !recovered.removed.is_empty() {
        log::warn!(stage = "env-render"; "removed {} temp files left by an earlier process: {}", recovered.removed.len(), name_list(&recovered.removed));
    }
    if !recovered.finished.is_empty() || !recovered.removed.is_empty() {
        let mut details = serde_json::Map::new();
        details.insert("finishedRenames".into(), recovered.finished.clone().into());
        details.insert("removedTempFiles".into(), recovered.removed.clone().into());
        crate::journal::append(
            &config.journal_path(),
            &crate::journal::Entry {
                event: "recovered".into(),
                command: "env-render".into(),
                args: Vec::new(),
                pid: std::process::id(),
                started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                ended_at: None,
                outcome: None,
                exit_code: None,
                duration_ms: None,
                details,
            },
        );
    }
    Ok(recovered)
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Test seam (end-to-end crash test only): sleep this many milliseconds
/// between the temp writes and the renames, so a test can SIGKILL the agent
/// exactly there.
const PAUSE_BEFORE_RENAME_ENV: &str = "WAVEMAP_AGENT_TEST_PAUSE_BEFORE_RENAME_MS";

/// Everything after the fetch; separate so unit tests need no SSM.
fn render_fetched(
    config: &Config,
    contract: &Contract,
    live: &[ssm::LiveParameter],
    options: RenderOptions,
) -> Result<RenderSummary, RenderError> {
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
        let text = envfile::render(&header, vars).map_err(|e| Error::failed("env-render", e))?;
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

    if execute {
        write_all(config, &plans, &secure)?;
    }
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
    Ok(summary)
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

/// Write every changed file together: all temp files first, then the
/// SecureString names, then the list of pending renames, then the renames.
/// A failure before the renames removes the temp files and changes no env
/// file; a crash during the renames is finished by the next render
/// ([`recover`]).
fn write_all(
    config: &Config,
    plans: &[FilePlan],
    secure: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), Error> {
    let writes: Vec<&FilePlan> = plans.iter().filter(|p| p.write).collect();
    if !writes.is_empty() {
        fsutil::ensure_dir(config.runtime.env_dir.as_path(), ENV_DIR_MODE)?;
    }
    let mut temps: Vec<(PathBuf, PathBuf)> = Vec::new();
    for plan in &writes {
        match fsutil::write_temp(&plan.summary.path, &plan.bytes, ENV_FILE_MODE) {
            Ok(temp) => temps.push((temp, plan.summary.path.clone())),
            Err(e) => {
                for (temp, _) in &temps {
                    let _ = std::fs::remove_file(temp);
                }
                return Err(e);
            }
        }
    }
    // The names go first: a job must never see new values whose names its
    // redaction does not know yet.
    let names = SecureNames {
        schema_version: 1,
        groups: secure.clone(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&names).map_err(|e| Error::failed("env-render", e))?;
    bytes.push(b'\n');
    let names_path = secure_names_path(config);
    let result = fsutil::ensure_dir(config.agent.state_dir.as_path(), 0o755).and_then(|()| {
        if fsutil::read_owned(&names_path)?.as_deref() == Some(bytes.as_slice()) {
            Ok(())
        } else {
            fsutil::write_atomic(&names_path, &bytes, 0o600)
        }
    });
    if let Err(e) = result {
        for (temp, _) in &temps {
            let _ = std::fs::remove_file(temp);
        }
        return Err(e);
    }
    if temps.is_empty() {
        return Ok(());
    }
    let pending = Pending {
        schema_version: 1,
        pid: std::process::id(),
        renames: temps.clone(),
    };
    let pending_bytes =
        serde_json::to_vec_pretty(&pending).map_err(|e| Error::failed("env-render", e))?;
    if let Err(e) = fsutil::write_atomic(&pending_path(config), &pending_bytes, 0o600) {
        for (temp, _) in &temps {
            let _ = std::fs::remove_file(temp);
        }
        return Err(e);
    }
    if let Some(ms) = std::env::var(PAUSE_BEFORE_RENAME_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        log::info!(stage = "env-render"; "{PAUSE_BEFORE_RENAME_ENV}: pausing {ms} ms before the renames");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    for (temp, target) in &temps {
        fsutil::commit_temp(temp, target)?;
    }
    let pending = pending_path(config);
    std::fs::remove_file(&pending).map_err(|e| Error::io("remove", &pending, e))?;
    Ok(())
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

struct FilePlan {
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
mod tests {
    use super::*;
    use crate::ssm::{LiveParameter, LiveType, SecretValue};

    fn config(dir: &Path) -> Config {
        Config::parse(
            &format!(
                r#"
[agent]
state_dir = "{0}/state"

[runtime]
env_dir = "{0}/env"
compose_file = "{0}/compose.yaml"
parameter_prefix = "/app/dev/"
groups = ["backend", "frontend"]

[[runtime.parameters]]
name = "backend/DATABASE_URL"
type = "SecureString"

[[runtime.parameters]]
name = "backend/OPTIONAL"
type = "String"
required = false
"#,
                dir.display()
            ),
            "t",
        )
        .unwrap()
    }

    fn live(name: &str, kind: LiveType, value: &str) -> LiveParameter {
        LiveParameter {
            name: name.into(),
            kind,
            value: Some(SecretValue::new(value.into())),
        }
    }

    fn params(db: &str) -> Vec<LiveParameter> {
        vec![
            live("/app/dev/backend/DATABASE_URL", LiveType::SecureString, db),
            live(
                "/app/dev/frontend/PUBLIC_URL",
                LiveType::String,
                "https://x.example/",
            ),
        ]
    }

    #[test]
    fn securestring_names_are_recorded_in_state_not_in_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut live_params = params("postgres://u:hunter2-value@db/x");
        live_params.push(live(
            "/app/dev/backend/AWKWARD",
            LiveType::SecureString,
            "plain-looking-secret",
        ));
        render(dir.path(), &live_params, true).unwrap();
        let text = std::fs::read_to_string(dir.path().join("env/backend.env")).unwrap();
        assert!(!text.contains("SecureString"), "{text}");
        let names = secure_variables(&config(dir.path()));
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["AWKWARD", "DATABASE_URL"]
        );
        let record =
            std::fs::read_to_string(dir.path().join("state").join(SECURE_NAMES_FILE)).unwrap();
        assert!(!record.contains("hunter2"), "{record}");
        let mode = std::fs::metadata(dir.path().join("state").join(SECURE_NAMES_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn zero_parameters_or_an_emptied_file_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
        let backend = dir.path().join("env/backend.env");
        let before = std::fs::read(&backend).unwrap();
        let Err(RenderError::Empty(guard)) = render_opts(dir.path(), &[], true, false) else {
            panic!("0 parameters must be refused");
        };
        assert_eq!(guard.reason(), "empty-prefix");
        assert_eq!(guard.emptied, vec!["backend.env", "frontend.env"]);
        assert_eq!(Error::from(RenderError::Empty(guard)).exit_code(), 3);
        let only_frontend = vec![live(
            "/app/dev/frontend/PUBLIC_URL",
            LiveType::String,
            "https://x.example/",
        )];
        // DATABASE_URL is required: make it optional for this case.
        let mut config = config(dir.path());
        config.runtime.parameters.clear();
        let contract = Contract::from_config(&config);
        let opts = |allow_empty| RenderOptions {
            execute: true,
            allow_empty,
        };
        let Err(RenderError::Empty(guard)) =
            render_fetched(&config, &contract, &only_frontend, opts(false))
        else {
            panic!("emptying backend.env must be refused");
        };
        assert_eq!(guard.reason(), "empty-file");
        assert_eq!(guard.emptied, vec!["backend.env"]);
        assert_eq!(std::fs::read(&backend).unwrap(), before);
        let summary = render_fetched(&config, &contract, &only_frontend, opts(true)).unwrap();
        assert_eq!(summary.files[0].variables, 0);
        assert!(envfile::parse_bytes(&std::fs::read(&backend).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn next_public_variables_need_allow_build_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut with_public = params("v");
        with_public.push(live(
            "/app/dev/frontend/NEXT_PUBLIC_API",
            LiveType::String,
            "https://api.example/",
        ));
        let err = render(dir.path(), &with_public, true).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert!(err.to_string().contains("NEXT_PUBLIC_API"), "{err}");
        assert!(!dir.path().join("env/backend.env").exists());
        let mut config = config(dir.path());
        config.runtime.parameters.push(
            toml::from_str(
                "name = \"frontend/NEXT_PUBLIC_API\"\ntype = \"String\"\nallow_build_time = true\n",
            )
            .unwrap(),
        );
        let contract = Contract::from_config(&config);
        let summary = render_fetched(
            &config,
            &contract,
            &with_public,
            RenderOptions {
                execute: true,
                allow_empty: false,
            },
        )
        .unwrap();
        assert_eq!(summary.result(), "rendered");
    }

    #[test]
    fn a_killed_rename_phase_is_finished_and_stray_temps_removed() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
        let backend = dir.path().join("env/backend.env");
        // What a SIGKILL after the temp writes leaves: a complete temp file
        // and the pending list; plus a stray temp of another process.
        let temp = fsutil::write_temp(&backend, b"A='new'\n", ENV_FILE_MODE).unwrap();
        let pending = Pending {
            schema_version: 1,
            pid: 1,
            renames: vec![(temp.clone(), backend.clone())],
        };
        std::fs::write(pending_path(&config), serde_json::to_vec(&pending).unwrap()).unwrap();
        let stray = dir.path().join("env/.wavemap-tmp-frontend.env-999999");
        std::fs::write(&stray, b"x").unwrap();
        let recovered = recover(&config).unwrap();
        assert_eq!(recovered.finished, vec!["backend.env"]);
        assert_eq!(recovered.removed, vec![".wavemap-tmp-frontend.env-999999"]);
        assert_eq!(std::fs::read(&backend).unwrap(), b"A='new'\n");
        assert!(!temp.exists() && !stray.exists());
        assert!(!pending_path(&config).exists());
    }

    fn render_opts(
        dir: &Path,
        live: &[LiveParameter],
        execute: bool,
        allow_empty: bool,
    ) -> Result<RenderSummary, RenderError> {
        let config = config(dir);
        render_fetched(
            &config,
            &Contract::from_config(&config),
            live,
            RenderOptions {
                execute,
                allow_empty,
            },
        )
    }

    fn render(dir: &Path, live: &[LiveParameter], execute: bool) -> Result<RenderSummary, Error> {
        render_opts(dir, live, execute, false).map_err(Error::from)
    }

    #[test]
    fn dry_run_plans_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let summary = render(dir.path(), &params("postgres://u:p@db/x"), false).unwrap();
        assert_eq!(summary.result(), "planned");
        assert_eq!(summary.files[0].state, FileState::WouldCreate);
        assert_eq!(summary.files[0].diff.added, vec!["DATABASE_URL"]);
        assert!(!dir.path().join("env").exists());
    }

    #[test]
    fn render_writes_0600_files_then_leaves_them_alone() {
        let dir = tempfile::tempdir().unwrap();
        let summary = render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
        assert_eq!(summary.result(), "rendered");
        assert_eq!(summary.undeclared, vec!["/app/dev/frontend/PUBLIC_URL"]);
        assert_eq!(summary.missing_optional, vec!["/app/dev/backend/OPTIONAL"]);
        let backend = dir.path().join("env/backend.env");
        let bytes = std::fs::read(&backend).unwrap();
        let vars = envfile::parse_bytes(&bytes).unwrap();
        assert_eq!(
            vars.get("DATABASE_URL").map(String::as_str),
            Some("postgres://u:p@db/x")
        );
        let mode = std::fs::metadata(&backend).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        let inode_before = std::fs::metadata(&backend)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let again = render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
        assert_eq!(again.result(), "unchanged");
        let inode_after = std::fs::metadata(&backend)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        assert_eq!(
            inode_before, inode_after,
            "an unchanged file is not replaced"
        );

        let changed = render(dir.path(), &params("postgres://u:q@db/x"), true).unwrap();
        assert_eq!(changed.files[0].state, FileState::Updated);
        assert_eq!(changed.files[0].diff.changed, vec!["DATABASE_URL"]);
        assert_eq!(changed.files[1].state, FileState::Unchanged);
    }

    #[test]
    fn a_contract_breach_writes_nothing_and_names_no_value() {
        let dir = tempfile::tempdir().unwrap();
        render(dir.path(), &params("first-secret-value"), true).unwrap();
        let backend = dir.path().join("env/backend.env");
        let before = std::fs::read(&backend).unwrap();
        let wrong = vec![
            live(
                "/app/dev/backend/DATABASE_URL",
                LiveType::String,
                "second-secret-value",
            ),
            live(
                "/app/dev/frontend/PUBLIC_URL",
                LiveType::String,
                "changed-public",
            ),
        ];
        let err = render(dir.path(), &wrong, true).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let text = err.to_string();
        assert!(text.contains("/app/dev/backend/DATABASE_URL"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
        assert_eq!(std::fs::read(&backend).unwrap(), before);
    }

    #[test]
    fn a_file_with_the_right_bytes_but_a_loose_mode_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
        let backend = dir.path().join("env/backend.env");
        std::fs::set_permissions(&backend, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
        assert_eq!(again.files[0].state, FileState::Updated);
        assert_eq!(again.files[1].state, FileState::Unchanged);
        let mode = std::fs::metadata(&backend).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn read_group_returns_the_rendered_values() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        assert_eq!(read_group(&config, "backend").unwrap(), None);
        render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
        let vars = read_group(&config, "backend").unwrap().unwrap();
        assert_eq!(vars["DATABASE_URL"], "postgres://u:p@db/x");
        let url = read_secret(&config, "backend", "DATABASE_URL").unwrap();
        assert_eq!(url.as_deref(), Some("postgres://u:p@db/x"));
        assert_eq!(read_secret(&config, "backend", "NOPE").unwrap(), None);
    }

    #[test]
    fn an_empty_group_still_gets_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let only_backend = vec![live(
            "/app/dev/backend/DATABASE_URL",
            LiveType::SecureString,
            "x",
        )];
        let summary = render(dir.path(), &only_backend, true).unwrap();
        assert_eq!(summary.files.len(), 2);
        let frontend = std::fs::read(dir.path().join("env/frontend.env")).unwrap();
        assert!(envfile::parse_bytes(&frontend).unwrap().is_empty());
    }

    #[test]
    fn markers_carry_counts_states_and_key_names() {
        let dir = tempfile::tempdir().unwrap();
        let summary = render(dir.path(), &params("v"), false).unwrap();
        let mut report = Report::new();
        summary.add_markers(&mut report);
        assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_RESULT"), Some("planned"));
        assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_FILES"), Some("2"));
        assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_PARAMETERS"), Some("2"));
        assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_CHANGED_FILES"), Some("2"));
        assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_UNDECLARED"), Some("1"));
        assert_eq!(
            report.get("WAVEMAP_RUNTIME_ENV_FILE_BACKEND"),
            Some("would-create")
        );
        assert_eq!(
            report.get("WAVEMAP_RUNTIME_ENV_FILE_BACKEND_ADDED"),
            Some("DATABASE_URL")
        );
    }
}
