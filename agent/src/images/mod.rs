//! Images and disk: a host that deploys every commit never fills up.
//!
//! Deployed dev gets a new image pair on every push, each image hundreds of
//! megabytes, on a volume PostgreSQL shares. This module keeps that in
//! bounds: [`history`] remembers which pairs ran, [`prune`] removes release
//! images nothing needs (`runtime prune`, and after `record-release`),
//! [`preflight`] refuses a pull that would leave too little free,
//! [`disk`] measures free space, [`manifest`] reads compressed sizes from
//! the registry. `status` shows [`DiskView`]; the daemon warns when space
//! runs low.

pub mod disk;
pub mod history;
pub mod manifest;
pub mod preflight;
pub mod prune;

use std::time::Duration;

use serde::Serialize;

use crate::config::Config;

/// `status`'s disk fields.
#[derive(Debug, Default, Serialize)]
pub struct DiskView {
    /// Docker's data root as the Engine reports it.
    pub docker_root: Option<String>,
    pub docker_root_free_bytes: Option<u64>,
    /// Why the data root's free space is unknown, when it is.
    pub docker_root_note: Option<String>,
    pub state_dir_free_bytes: Option<u64>,
    /// What `runtime prune --execute` would remove now (estimate).
    pub prune_reclaimable_bytes: Option<u64>,
    pub prune_images: Option<usize>,
    pub min_free_mb: u64,
    /// Docker's data root is below `images.min_free_mb`.
    pub low: bool,
}

/// Gather the disk view within a few seconds through `docker` (status's
/// connection; `None`: Docker did not answer); what does not answer stays
/// `None` (status never waits long).
pub async fn view(config: &Config, docker: Option<&bollard::Docker>) -> DiskView {
    let mut view = DiskView {
        min_free_mb: config.images.min_free_mb,
        state_dir_free_bytes: disk::statvfs(config.agent.state_dir.as_path())
            .ok()
            .map(|s| s.free_bytes),
        ..DiskView::default()
    };
    let engine = async {
        let docker = docker.ok_or_else(|| "no answer".to_owned())?;
        let (root, plan) = tokio::join!(
            disk::docker_root_for_status(config, docker),
            prune::plan(config, docker)
        );
        let plan = plan.ok();
        Ok::<_, String>((root, plan))
    };
    match tokio::time::timeout(Duration::from_secs(4), engine).await {
        Ok(Ok((root, plan))) => {
            view.docker_root = root.path;
            match root.space {
                Ok(space) => {
                    view.docker_root_free_bytes = Some(space.free_bytes);
                    view.low = space.free_bytes < disk::min_free_bytes(config);
                }
                Err(note) => view.docker_root_note = Some(note),
            }
            if let Some(plan) = plan {
                view.prune_reclaimable_bytes = Some(plan.bytes());
                view.prune_images = Some(plan.remove.len());
            }
        }
        Ok(Err(e)) => view.docker_root_note = Some(format!("Docker unavailable: {e}")),
        Err(_) => view.docker_root_note = Some("Docker did not answer within 4s".into()),
    }
    view
}
