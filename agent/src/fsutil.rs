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
//! A target that is a symlink is refused, and so is a path with a symlink
//! in any folder above it ([`refuse_symlinked_parents`]): the agent runs as
//! root and must not be steered into writing elsewhere. Folders it creates
//! get their mode exactly, whatever the umask ([`ensure_dir`]:
//! [`AGENT_DIR_MODE`] for the folders tmpfiles.d also makes,
//! [`PRIVATE_DIR_MODE`] for the rest).
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

pub const TEMP_PREFIX: &str = ".wavemap-tmp-";

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
    refuse_symlinked_parents(path)?;
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
    let result = refuse_symlinked_parents(path)
        .and_then(|()| refuse_symlinked_parents(temp))
        .and_then(|()| refuse_symlink(path))
        .and_then(|()| {
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

/// The mode of the folders packaging/wavemap-agent.tmpfile creates
/// (`run_dir`, `state_dir`); the agent creates them the same way.
pub const AGENT_DIR_MODE: u32 = 0o750;
/// The mode of every other folder the agent creates (the env folder, the
/// receipt's folder, the receipt history, the job logs).
pub const PRIVATE_DIR_MODE: u32 = 0o700;

const SYMLINK_REFUSED: &str = "it is a symlink; the agent does not follow symlinks it did not make";

/// Create `dir` (and missing parents) with exactly `mode`, whatever the
/// umask; refuse a symlink anywhere in the path.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    refuse_symlinked_parents(dir)?;
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::io(
            "use directory",
            dir,
            io::Error::other(SYMLINK_REFUSED),
        )),
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::io(
            "use directory",
            dir,
            io::Error::other("it exists and is not a directory"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // One component at a time, so every folder made here gets the
            // mode exactly (DirBuilder's mode is narrowed by the umask).
            let mut missing = Vec::new();
            let mut at = Some(dir);
            while let Some(p) = at {
                if p.as_os_str().is_empty() || std::fs::symlink_metadata(p).is_ok() {
                    break;
                }
                missing.push(p);
                at = p.parent();
            }
            for p in missing.into_iter().rev() {
                match std::fs::DirBuilder::new().mode(mode).create(p) {
                    Ok(()) => std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| Error::io("create directory", p, e))?,
                    // Another process made it meanwhile: theirs to keep.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("create directory", dir, e)),
                }
            }
            Ok(())
        }
        Err(e) => Err(Error::io("inspect directory", dir, e)),
    }
}

/// Narrow an existing folder to `mode` when it grants more (group or other
/// bits `mode` lacks). Returns the mode it had when it was changed, so the
/// caller can say so in the journal; `None` when it was already as narrow or
/// does not exist.
pub fn tighten_dir(dir: &Path, mode: u32) -> Result<Option<u32>, Error> {
    refuse_symlinked_parents(dir)?;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect directory", dir, e)),
    };
    if meta.file_type().is_symlink() {
        return Err(Error::io(
            "use directory",
            dir,
            io::Error::other(SYMLINK_REFUSED),
        ));
    }
    let old = meta.permissions().mode() & 0o7777;
    if old & !mode == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("narrow the mode of", dir, e))?;
    Ok(Some(old))
}

/// Refuse a path whose folders include a symlink, at any depth: the agent
/// runs as root, and a symlinked folder (`/opt/wavemap/env -> /etc`) would
/// steer its writes and renames as surely as a symlinked file. The kernel
/// does the walk (`openat2` with `RESOLVE_NO_SYMLINKS` on the parent
/// folder); where `openat2` is missing (Linux before 5.6), each component is
/// checked with `lstat`. A parent that does not exist yet is not an error
/// (the caller creates it, or fails on it).
pub fn refuse_symlinked_parents(path: &Path) -> Result<(), Error> {
    let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    match open_no_symlinks(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(symlinked_component(path, dir)),
        // No openat2 (ENOSYS), a seccomp filter refusing it (EPERM), or a
        // folder that is missing or not a folder: walk it by hand, so the
        // check never fails open.
        Err(_) => walk_for_symlinks(path, dir),
    }
}

/// The `lstat` walk over every component of `dir` (the fallback of
/// [`refuse_symlinked_parents`]).
fn walk_for_symlinks(path: &Path, dir: &Path) -> Result<(), Error> {
    let mut at = PathBuf::new();
    for component in dir.components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(symlinked_component(path, &at))
            }
            Ok(_) => {}
            // Missing from here down: the operation itself reports it.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn symlinked_component(path: &Path, at: &Path) -> Error {
    Error::io(
        "use",
        path,
        io::Error::other(format!(
            "a folder on its path ({} or one above it) is a symlink; the agent does not follow symlinks it did not make",
            at.display()
        )),
    )
}

/// `openat2(AT_FDCWD, dir, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS)`, closed
/// at once: the kernel's own answer to "is any component a symlink".
fn open_no_symlinks(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers; all zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: c_path is a valid NUL-terminated string and `how` a valid
    // open_how of the size passed; the returned fd is closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor this function just opened and owns.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Read a file the agent owns, refusing to follow a symlink at its path.
/// `Ok(None)` when the file does not exist.
pub fn read_owned(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    refuse_symlinked_parents(path)?;
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
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Err(Error::io("read", path, io::Error::other(SYMLINK_REFUSED)))
        }
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
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(Error::io("write", path, io::Error::other(SYMLINK_REFUSED)))
        }
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

    #[test]
    fn refuses_a_symlink_in_any_folder_of_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("receipt.json"), b"keep").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let via = dir.path().join("link/receipt.json");
        let err = write_atomic(&via, b"evil", 0o644).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read(real.join("receipt.json")).unwrap(), b"keep");
        assert!(read_owned(&via).is_err());
        assert!(ensure_dir(&dir.path().join("link/sub"), 0o700).is_err());
        assert!(!real.join("sub").exists());
        // The fallback walk (no openat2) finds the same component.
        let err = walk_for_symlinks(&via, &dir.path().join("link"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("link") && err.contains("symlink"), "{err}");
        assert!(walk_for_symlinks(&real.join("receipt.json"), &real).is_ok());
    }

    #[test]
    fn created_folders_get_the_mode_exactly_and_looser_ones_are_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        ensure_dir(&deep, 0o750).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&deep), 0o750);
        assert_eq!(mode(&dir.path().join("a")), 0o750);
        assert_eq!(tighten_dir(&deep, 0o700).unwrap(), Some(0o750));
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(tighten_dir(&deep, 0o700).unwrap(), None);
    }
}
