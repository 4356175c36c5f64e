//! Free space where it matters: Docker's data root (images, containers,
//! and on the deployed host PostgreSQL's volume too) and the agent's state
//! directory.
//!
//! The data root comes from the Engine (`GET /info`, `DockerRootDir`), the
//! free space from `statvfs(2)` on that path as this process sees it. When
//! the Engine is remote (`tcp://`) or runs in another mount namespace, the
//! path may not exist here: that is reported as "not reachable" with the
//! path and the reason, never guessed from some other directory.
//!
//! `GET /info` is slow (the Engine runs `runc --version` and more for it:
//! tens of milliseconds), too slow for `status`. So whoever asks the Engine
//! anyway (the daemon every health interval, a deploy's preflight, a prune)
//! remembers the answer in `run_dir/docker-root` (tmpfs: gone at reboot),
//! and `status` statvfs's that path, asking the Engine (and remembering)
//! only when nothing is remembered yet.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bollard::Docker;
use serde::Serialize;

use crate::config::Config;

const MIB: u64 = 1024 * 1024;

/// Free space of one filesystem, as an unprivileged writer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Space {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// `statvfs(2)` of `path`: blocks available to non-root times the fragment size.
pub fn statvfs(path: &Path) -> std::io::Result<Space> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `stat` is a plain C struct that statvfs fills; zeroed is a
    // valid value for it, and `c_path` is a NUL-terminated string that
    // outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The field types differ between platforms (u32 on 32-bit targets).
    #[allow(clippy::useless_conversion)]
    let frsize = u64::from(stat.f_frsize).max(1);
    #[allow(clippy::useless_conversion)]
    let (avail, blocks) = (u64::from(stat.f_bavail), u64::from(stat.f_blocks));
    Ok(Space {
        free_bytes: avail.saturating_mul(frsize),
        total_bytes: blocks.saturating_mul(frsize),
    })
}

/// Docker's data root and its free space, or why it is not known.
#[derive(Debug, Clone)]
pub struct DockerRoot {
    pub path: Option<String>,
    pub space: Result<Space, String>,
}

/// Ask the Engine for `DockerRootDir`, then statvfs it here.
pub async fn docker_root(docker: &Docker) -> DockerRoot {
    let path = match docker.info().await {
        Ok(info) => match info.docker_root_dir.filter(|p| !p.is_empty()) {
            Some(p) => p,
            None => {
                return DockerRoot {
                    path: None,
                    space: Err("the Engine did not report its data root (DockerRootDir)".into()),
                }
            }
        },
        Err(e) => {
            return DockerRoot {
                path: None,
                space: Err(format!("the Engine did not answer /info: {e}")),
            }
        }
    };
    let space = statvfs(Path::new(&path)).map_err(|e| {
        format!(
            "Docker's data root {path} is not reachable from this process ({e}); \
             is the Engine remote or in another mount namespace?"
        )
    });
    DockerRoot {
        path: Some(path),
        space,
    }
}

fn remembered_path(config: &Config) -> std::path::PathBuf {
    config.agent.run_dir.join("docker-root")
}

/// [`docker_root`], remembered for `status` (best effort: a cache).
pub async fn docker_root_remembered(config: &Config, docker: &Docker) -> DockerRoot {
    let root = docker_root(docker).await;
    if let Some(path) = &root.path {
        let file = remembered_path(config);
        let known = crate::fsutil::read_owned(&file).ok().flatten();
        if known.as_deref() != Some(path.as_bytes()) {
            let written = crate::fsutil::ensure_dir(config.agent.run_dir.as_path(), 0o755)
                .and_then(|()| crate::fsutil::write_atomic(&file, path.as_bytes(), 0o644));
            if let Err(e) = written {
                log::debug!(
                    "cannot remember Docker's data root in {}: {e}",
                    file.display()
                );
            }
        }
    }
    root
}

/// For `status`: the remembered data root (free space read now), else the
/// Engine's answer, then remembered.
pub async fn docker_root_for_status(config: &Config, docker: &Docker) -> DockerRoot {
    let remembered = crate::fsutil::read_owned(&remembered_path(config))
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|p| p.starts_with('/') && !p.contains('\n'));
    match remembered {
        Some(path) => {
            let space = statvfs(Path::new(&path)).map_err(|e| {
                format!("Docker's data root {path} is not reachable from this process ({e})")
            });
            DockerRoot {
                path: Some(path),
                space,
            }
        }
        // The first status without a remembered root pays for /info once.
        None => docker_root_remembered(config, docker).await,
    }
}

/// `n` bytes in whole MiB (rounded down), for messages and markers.
pub fn mib(n: u64) -> u64 {
    n / MIB
}

/// `images.min_free_mb` in bytes.
pub fn min_free_bytes(config: &Config) -> u64 {
    config.images.min_free_mb.saturating_mul(MIB)
}

/// The daemon's check: a warning when Docker's data root (or, if that is
/// not reachable, nothing: it is said once at start) has less free than
/// `images.min_free_mb`. `None` when there is room or it cannot be known.
pub async fn low_space_warning(config: &Config) -> Option<String> {
    let docker = crate::docker::connect_to(
        &config.docker.host,
        std::time::Duration::from_secs(3),
        std::time::Duration::ZERO,
    )
    .await
    .ok()?;
    let root = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        docker_root_remembered(config, &docker),
    )
    .await
    .ok()?;
    let space = root.space.ok()?;
    let min = min_free_bytes(config);
    (space.free_bytes < min).then(|| {
        format!(
            "low disk: {} MiB free on Docker's data root {}, below images.min_free_mb {}; run `wavemap-agent runtime prune --execute`",
            mib(space.free_bytes),
            root.path.as_deref().unwrap_or("?"),
            config.images.min_free_mb
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_reads_a_real_filesystem_and_names_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let space = statvfs(dir.path()).unwrap();
        assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes);
        let err = statvfs(&dir.path().join("absent")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
