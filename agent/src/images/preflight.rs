//! `pull-preflight`: refuse a pull that would leave Docker's data root
//! with less than `images.min_free_mb`.
//!
//! Why before the pull: a pull that fills the disk fails half way, and on
//! the deployed host PostgreSQL shares that disk and can stop. The check
//! needs only the missing images' compressed sizes (their manifests) and the
//! data root's free space; a pull takes about twice the compressed size
//! (blobs downloaded, then unpacked). Refused: exit 3, nothing pulled,
//! nothing changed. Boot recovery only warns: bringing the recorded release
//! back up matters more than the margin, and it never prunes.

use bollard::Docker;

use super::disk::{self, mib};
use super::manifest;
use crate::config::Config;
use crate::error::Error;
use crate::image::ImageRef;
use crate::registry::RegistryAuth;

/// Whether a short margin refuses the pull or only warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deploy and rollback.
    Refuse,
    /// Boot recovery and the daemon's heals.
    Warn,
}

/// Whether `free` bytes leave at least `min` after a pull of `compressed`
/// bytes (which takes about twice that).
fn enough(free: u64, compressed: u64, min: u64) -> bool {
    let needed = compressed.saturating_mul(2);
    free >= needed && free - needed >= min
}

/// Check the pull of `missing` (with `auths`, index for index; fewer auths
/// read manifests anonymously). `Err(Error::Gate)` only in [`Mode::Refuse`].
pub async fn check(
    config: &Config,
    docker: &Docker,
    missing: &[ImageRef],
    auths: &[Option<RegistryAuth>],
    mode: Mode,
) -> Result<(), Error> {
    if missing.is_empty() {
        return Ok(());
    }
    let root = disk::docker_root_remembered(config, docker).await;
    let space = match root.space {
        Ok(space) => space,
        Err(why) => {
            log::warn!(stage = "pull-preflight"; "{why}; free space not checked before the pull");
            return Ok(());
        }
    };
    let mut compressed = 0u64;
    let mut unknown = Vec::new();
    for (i, image) in missing.iter().enumerate() {
        match manifest::compressed_size(image, auths.get(i).and_then(Option::as_ref)).await {
            Ok(size) => {
                log::info!(stage = "pull-preflight"; "{image}: {} MiB compressed", mib(size));
                compressed += size;
            }
            Err(why) => {
                log::warn!(stage = "pull-preflight"; "size unknown ({why}); counting it as 0");
                unknown.push(image.to_string());
            }
        }
    }
    let needed = compressed.saturating_mul(2);
    let min = disk::min_free_bytes(config);
    let root_path = root.path.as_deref().unwrap_or("?");
    if enough(space.free_bytes, compressed, min) {
        log::info!(stage = "pull-preflight"; "{} MiB free on {root_path}; the pull needs about {} MiB and images.min_free_mb is {}", mib(space.free_bytes), mib(needed), config.images.min_free_mb);
        return Ok(());
    }
    let unknown_note = if unknown.is_empty() {
        String::new()
    } else {
        format!(" (size unknown, counted as 0: {})", unknown.join(", "))
    };
    let detail = format!(
        "not enough disk to pull: {} MiB free on Docker's data root {root_path}, the pull needs about {} MiB \
         (twice {} MiB compressed{unknown_note}), and images.min_free_mb = {} MiB must stay free",
        mib(space.free_bytes),
        mib(needed),
        mib(compressed),
        config.images.min_free_mb
    );
    match mode {
        Mode::Refuse => Err(Error::Gate {
            reason: format!(
                "{detail}; run `wavemap-agent runtime prune --execute` to remove unused release images \
                 (or grow the volume); nothing was pulled or changed"
            ),
        }),
        Mode::Warn => {
            log::warn!(stage = "pull-preflight"; "{detail}; pulling anyway (boot recovery only warns)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::enough;

    #[test]
    fn free_less_twice_the_compressed_size_must_stay_above_the_minimum() {
        let mib = 1024 * 1024;
        assert!(enough(3000 * mib, 400 * mib, 2048 * mib));
        assert!(!enough(3000 * mib, 600 * mib, 2048 * mib));
        assert!(!enough(100 * mib, 0, 2048 * mib));
        assert!(!enough(100, u64::MAX, 0));
        assert!(enough(0, 0, 0));
    }
}
