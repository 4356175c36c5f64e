//! Atomic, symlink-safe file writes for every file that matters (env files,
//! the receipt, the current-release state).
//!
//! The recipe: create a temp file beside the target with `O_EXCL |
//! O_NOFOLLOW` and the final mode from the start, write, fsync, rename over
//! the target, fsync the directory. A crash at any point leaves either the old
//! file or the new one, never half of either. A write that fails cleans up
//! its temp file; one killed between write and rename leaves a
//! `.wavemap-tmp-<name>-<pid>` beside the target, harmless (no reader opens
//! it). The env render sweeps its folder's leftovers under the lock
//! ([`remove_temps`]); beside the receipt and the state, a leftover stays
//! until a later write from a process with the same pid replaces it.
//! A target that is a symlink is refused: the agent runs as root and must
//! not be steered into writing elsewhere.
//!
//! This module sits at the bottom of the crate: it depends on nothing in it
//! but [`crate::testpoint`], and its [`FsError`] becomes
//! [`crate::error::Error::Io`] where callers meet the exit codes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file operation on a path the agent owns failed: what, where, why.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        FsError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

type Error = FsError;

const TEMP_PREFIX: &str = ".wavemap-tmp-";

/// Write `contents` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let temp = write_temp(path, contents, mode)?;
    commit_temp(&temp, path)
}

/// The first half of [`write_atomic`]: write `contents` to a temp file beside
/// `path` (mode `mode`, fsynced) and return its path. Callers that must
/// change several files together write every temp file first and only then
/// [`commit_temp`] each, so a failure before the renames changes no file.
pub fn write_temp(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, Error> {
    let dir = parent(path)?;
    refuse_symlink(path)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::io("write", path, io::Error::other("path has no file name")))?;
    let temp = dir.join(format!("{TEMP_PREFIX}{file_name}-{}", std::process::id()));
    // A temp file left by a killed run of this same pid is ours to replace.
    let _ = std::fs::remove_file(&temp);
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io("write", path, source));
    }
    Ok(temp)
}

/// The second half of [`write_atomic`]: rename `temp` over `path`, then
/// fsync the folder so the rename survives a power cut.
pub fn commit_temp(temp: &Path, path: &Path) -> Result<(), Error> {
    let dir = parent(path)?;
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        // Test builds only: the crash test kills the agent here, mid-write.
        crate::testpoint::pause(&format!("write:{name}"));
    }
    let result = refuse_symlink(path).and_then(|()| {
        std::fs::rename(temp, path)
            .and_then(|()| sync_dir(&dir))
            .map_err(|e| Error::io("write", path, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

/// Whether `name` is a temp file name of [`write_temp`].
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// Remove every temp file of [`write_temp`] in `dir`, whichever process left
/// it (call under the agent lock, so no live writer owns one). Returns the
/// names removed. A missing folder has none.
pub fn remove_temps(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            std::fs::remove_file(entry.path())
                .map_err(|e| Error::io("remove", &entry.path(), e))?;
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Create `dir` (and parents) with `mode` if missing; refuse a symlink.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::io(
            "use directory",
            dir,
            io::Error::other("it is a symlink; the agent does not follow symlinks it did not make"),
        )),
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::io(
            "use directory",
            dir,
            io::Error::other("it exists and is not a directory"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(|e| Error::io("create directory", dir, e))?;
            Ok(())
        }
        Err(e) => Err(Error::io("inspect directory", dir, e)),
    }
}

/// Read a file the agent owns, refusing to follow a symlink at its path.
/// `Ok(None)` when the file does not exist.
pub fn read_owned(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match file {
        Ok(mut file) => {
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut file, &mut buf).map_err(|e| Error::io("read", path, e))?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(Error::io(
            "read",
            path,
            io::Error::other("it is a symlink; the agent does not follow symlinks it did not make"),
        )),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Modification time in seconds since the epoch, if the file exists.
pub fn mtime(path: &Path) -> Option<i64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.mtime())
}

fn parent(path: &Path) -> Result<PathBuf, Error> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.to_path_buf()),
        _ => Ok(PathBuf::from(".")),
    }
}

fn refuse_symlink(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::io(
            "write",
            path,
            io::Error::other("it is a symlink; the agent does not follow symlinks it did not make"),
        )),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_bytes_with_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.env");
        write_atomic(&path, b"A=1\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"A=1\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomic(&path, b"A=2\n", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"A=2\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn refuses_to_write_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("receipt.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = write_atomic(&link, b"evil", 0o644).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(read_owned(&link).is_err());
    }
}
