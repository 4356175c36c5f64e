//! Writing a render's files together, and cleaning up after a crash.
//!
//! A render changes several env files; a crash must never leave some new and
//! some old, nor litter. So every changed file's temp file is written
//! (fsynced) first: that is the staged render ([`stage`]), and a deploy
//! stops there until its converge starts. Promotion ([`Staged::promote`])
//! then records the SecureString names in `state_dir`, writes the list of
//! pending renames, and renames.
//! The next executed render, under the agent lock, finishes a rename phase a
//! crash interrupted (every temp file in it was complete) and removes temp
//! files any earlier process left, and the operation journal records it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{name_list, FilePlan, ENV_DIR_MODE, ENV_FILE_MODE};
use crate::config::Config;
use crate::error::{Error, Stage};
use crate::fsutil;

/// The SecureString variable names per group, recorded by the render in
/// `state_dir` (never in the env files, which stay plain Compose env files
/// that an operator's edit must not be able to weaken redaction through).
pub(super) const SECURE_NAMES_FILE: &str = "env-secure-variables.json";
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
    secure_variables_checked(config).unwrap_or_default()
}

/// [`secure_variables`] for callers that must not go on without them (a job
/// whose output is redacted by them): empty only before the first executed
/// render (no record); a record that exists but cannot be read or parsed is
/// an error saying why and where.
pub fn secure_variables_checked(config: &Config) -> Result<BTreeSet<String>, String> {
    let path = secure_names_path(config);
    let bytes = match fsutil::read_owned(&path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(BTreeSet::new()),
        Err(e) => return Err(format!("the SecureString names cannot be read: {e}")),
    };
    serde_json::from_slice::<SecureNames>(&bytes)
        .map(|n| n.groups.into_values().flatten().collect())
        .map_err(|e| {
            format!(
                "the SecureString names in {} cannot be parsed ({e}); an executed render (`runtime-env --execute`) rewrites them",
                path.display()
            )
        })
}

/// What the crash recovery at the start of an executed render did.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// Files whose interrupted rename this run finished.
    pub(super) finished: Vec<String>,
    /// Temp files of earlier processes removed.
    pub(super) removed: Vec<String>,
}

/// Crash hygiene, under the agent lock: finish a rename phase that a killed
/// render left half done (every temp file in it was complete and fsynced
/// before the phase began), then remove temp files any earlier process left
/// in the env folder and beside the Compose file. The operation journal
/// records what was done.
pub(super) fn recover(config: &Config) -> Result<Recovered, Error> {
    let mut recovered = Recovered::default();
    let pending = pending_path(config);
    if let Some(bytes) = fsutil::read_owned(&pending)? {
        match serde_json::from_slice::<Pending>(&bytes) {
            Ok(p) => {
                check_pending(config, &pending, &p)?;
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

/// The pending file is read back from disk and names paths the agent renames
/// as root, so each pair must be one this agent could have written: the temp
/// file is a [`fsutil::write_temp`] name (`.wavemap-tmp-<group>.env-<pid>`)
/// directly in `env_dir`, and the target is that same `<group>.env` in
/// `env_dir`. Anything else is refused whole (exit 2) before any rename,
/// and the file is left for the operator to look at.
fn check_pending(config: &Config, path: &Path, pending: &Pending) -> Result<(), Error> {
    let env_dir = config.runtime.env_dir.as_path();
    let file_in_env_dir = |p: &Path| -> Option<String> {
        (p.parent() == Some(env_dir))
            .then(|| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .flatten()
    };
    for (temp, target) in &pending.renames {
        let target_name = file_in_env_dir(target).filter(|n| {
            n.strip_suffix(".env")
                .is_some_and(crate::config::is_group_name)
        });
        let temp_ok = target_name.as_deref().is_some_and(|target_name| {
            file_in_env_dir(temp)
                .and_then(|n| {
                    n.strip_prefix(&format!("{}{target_name}-", fsutil::TEMP_PREFIX))
                        .map(str::to_owned)
                })
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if !temp_ok {
            return Err(Error::invalid(
                path.display().to_string(),
                format!(
                    "it asks to rename {} over {}, which is not a temp file of this agent's renamed over a <group>.env in the env folder {}; nothing was renamed",
                    temp.display(),
                    target.display(),
                    env_dir.display()
                ),
                "the file was not written by this agent: find out who changed it, then remove it and rerun the render (it rewrites every env file)",
            ));
        }
    }
    Ok(())
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A render's changed files, written in full beside the live ones and not
/// yet renamed in. [`Staged::promote`] makes them live; dropping it
/// unpromoted removes them (nothing live changed).
#[derive(Debug)]
pub struct Staged {
    env_dir: PathBuf,
    names_path: PathBuf,
    pending_path: PathBuf,
    names: Vec<u8>,
    temps: Vec<(PathBuf, PathBuf)>,
}

/// Write every changed file's temp file (fsynced), and nothing else: the
/// live env files and the SecureString names stay as they are until
/// [`Staged::promote`]. A failure removes the temp files written so far.
pub(super) fn stage(
    config: &Config,
    plans: &[FilePlan],
    secure: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Staged, Error> {
    let writes: Vec<&FilePlan> = plans.iter().filter(|p| p.write).collect();
    if !writes.is_empty() {
        fsutil::ensure_dir(config.runtime.env_dir.as_path(), ENV_DIR_MODE)?;
    }
    let names = SecureNames {
        schema_version: 1,
        groups: secure.clone(),
    };
    let mut names_bytes =
        serde_json::to_vec_pretty(&names).map_err(|e| Error::caused(Stage::EnvRender, e))?;
    names_bytes.push(b'\n');
    let mut staged = Staged {
        env_dir: config.runtime.env_dir.as_path().to_path_buf(),
        names_path: secure_names_path(config),
        pending_path: pending_path(config),
        names: names_bytes,
        temps: Vec::new(),
    };
    for plan in &writes {
        // On error `staged` drops and removes what it holds.
        let temp = fsutil::write_temp(&plan.summary.path, &plan.bytes, ENV_FILE_MODE)?;
        staged.temps.push((temp, plan.summary.path.clone()));
    }
    Ok(staged)
}

impl Staged {
    /// Keep only the staged files that replace one of `targets`; the others
    /// are discarded (their live files stay as they are).
    pub fn retain(mut self, targets: &[PathBuf]) -> Staged {
        self.temps.retain(|(temp, target)| {
            let keep = targets.contains(target);
            if !keep {
                let _ = std::fs::remove_file(temp);
            }
            keep
        });
        self
    }

    /// Make the staged files live together: first the SecureString names
    /// (a job must never see new values whose names its redaction does not
    /// know yet), then the list of pending renames, then the renames. A
    /// failure before the renames removes the staged files and changes no
    /// env file; a crash during the renames is finished by the next
    /// executed render or boot recovery ([`recover`]).
    pub fn promote(mut self) -> Result<(), Error> {
        let temps = std::mem::take(&mut self.temps);
        let cleanup = |temps: &[(PathBuf, PathBuf)]| {
            for (temp, _) in temps {
                let _ = std::fs::remove_file(temp);
            }
        };
        let names_dir = self.names_path.parent().map(Path::to_path_buf);
        let result = names_dir
            .map_or(Ok(()), |d| fsutil::ensure_dir(&d, fsutil::AGENT_DIR_MODE))
            .and_then(|()| {
                if fsutil::read_owned(&self.names_path)?.as_deref() == Some(self.names.as_slice()) {
                    Ok(())
                } else {
                    fsutil::write_atomic(&self.names_path, &self.names, 0o600)
                }
            });
        if let Err(e) = result {
            cleanup(&temps);
            return Err(e.into());
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
            serde_json::to_vec_pretty(&pending).map_err(|e| Error::caused(Stage::EnvRender, e))?;
        if let Err(e) = fsutil::write_atomic(&self.pending_path, &pending_bytes, 0o600) {
            cleanup(&temps);
            return Err(e.into());
        }
        // Debug builds only: the crash test kills the agent here.
        crate::testpoint::delay_before_renames();
        for (temp, target) in &temps {
            fsutil::commit_temp(temp, target)?;
        }
        std::fs::remove_file(&self.pending_path)
            .map_err(|e| Error::io("remove", &self.pending_path, e))?;
        log::info!(stage = "env-render"; "promoted {} staged env files in {}", temps.len(), self.env_dir.display());
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.temps.is_empty() {
            log::info!(stage = "env-render"; "discarding {} staged env files (not promoted; the live ones are unchanged)", self.temps.len());
        }
        for (temp, _) in &self.temps {
            let _ = std::fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config::parse(
            &format!(
                "[agent]\nstate_dir = \"{0}/state\"\n\n[runtime]\nenv_dir = \"{0}/env\"\ncompose_file = \"{0}/compose.yaml\"\n",
                dir.display()
            ),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn a_killed_rename_phase_is_finished_and_stray_temps_removed() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(dir.path().join("env")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let backend = dir.path().join("env/backend.env");
        std::fs::write(&backend, b"A='old'\n").unwrap();
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

    #[test]
    fn a_pending_pair_outside_the_agents_naming_is_refused_before_any_rename() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(dir.path().join("env")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        let env = dir.path().join("env");
        let outside = dir.path().join("victim");
        std::fs::write(&outside, b"keep").unwrap();
        let evil = env.join(".wavemap-tmp-backend.env-12");
        std::fs::write(&evil, b"x").unwrap();
        let cases: Vec<(PathBuf, PathBuf)> = vec![
            // target outside env_dir
            (evil.clone(), outside.clone()),
            // target not <group>.env
            (evil.clone(), env.join("backend.conf")),
            // temp outside env_dir
            (outside.clone(), env.join("backend.env")),
            // temp not the agent's naming, or for another target
            (env.join("backend.env.new"), env.join("backend.env")),
            (
                env.join(".wavemap-tmp-frontend.env-12"),
                env.join("backend.env"),
            ),
            (
                env.join(".wavemap-tmp-backend.env-x"),
                env.join("backend.env"),
            ),
            // escape by `..`
            (evil.clone(), env.join("../victim.env")),
        ];
        for (temp, target) in cases {
            let pending = Pending {
                schema_version: 1,
                pid: 1,
                renames: vec![(temp.clone(), target.clone())],
            };
            std::fs::write(pending_path(&config), serde_json::to_vec(&pending).unwrap()).unwrap();
            let err = recover(&config).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit::INVALID, "{err}");
            let text = err.to_string();
            assert!(text.contains("env-render-pending.json"), "{text}");
            assert!(text.contains("nothing was renamed"), "{text}");
            assert!(pending_path(&config).exists(), "the evidence stays");
            assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        }
    }
}
