//! The deployed-pairs history: which image pairs ran, newest last.
//!
//! Why a file of its own: the current release names one pair and the
//! receipt another, the receipt history only recorded ones, and the
//! operation journal is rotated and has no image names for a rollback. A
//! prune that keeps "the most recent other deployed pairs" needs the order
//! in which pairs ran, so a successful deploy or rollback appends its pair
//! here (`state_dir/deployed-pairs.json`, 0644, written atomically). A pair
//! deployed again moves to the end instead of appearing twice; the list is
//! bounded to [`MAX_ENTRIES`]. Losing this file only makes prune keep fewer
//! older pairs: the current release and the receipt are always kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Stage};
use crate::fsutil;
use crate::release::Release;

/// Pairs remembered; `images.keep` may not exceed it.
pub const MAX_ENTRIES: usize = crate::config::IMAGES_HISTORY_MAX;
const SCHEMA_VERSION: u32 = 1;

/// One deployed pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedPair {
    pub backend_image: String,
    pub frontend_image: String,
    pub image_tag: String,
    pub deployed_at: String,
    /// `deploy` or `rollback`.
    pub deployed_by: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryFile {
    schema_version: u32,
    pairs: Vec<DeployedPair>,
}

fn path(config: &Config) -> PathBuf {
    config.agent.state_dir.join("deployed-pairs.json")
}

/// The pairs, oldest first. A missing or unreadable file is an empty
/// history (logged): prune then keeps only what else protects an image.
pub fn read(config: &Config) -> Vec<DeployedPair> {
    let path = path(config);
    match fsutil::read_owned(&path) {
        Ok(None) => Vec::new(),
        Ok(Some(bytes)) => match serde_json::from_slice::<HistoryFile>(&bytes) {
            Ok(file) if file.schema_version == SCHEMA_VERSION => file.pairs,
            Ok(file) => {
                log::warn!(
                    "{}: unknown schemaVersion {}; ignoring the deploy history",
                    path.display(),
                    file.schema_version
                );
                Vec::new()
            }
            Err(e) => {
                log::warn!(
                    "{}: unreadable ({e}); ignoring the deploy history",
                    path.display()
                );
                Vec::new()
            }
        },
        Err(e) => {
            log::warn!("cannot read the deploy history: {e}");
            Vec::new()
        }
    }
}

/// Append `release` as deployed by `deployed_by` (moving an earlier entry
/// of the same pair to the end), keeping the newest [`MAX_ENTRIES`].
pub fn record(config: &Config, release: &Release, deployed_by: &str) -> Result<(), Error> {
    let mut pairs = read(config);
    pairs.retain(|p| {
        !(p.backend_image == release.backend_image_uri
            && p.frontend_image == release.frontend_image_uri)
    });
    pairs.push(DeployedPair {
        backend_image: release.backend_image_uri.clone(),
        frontend_image: release.frontend_image_uri.clone(),
        image_tag: release.image_tag.clone(),
        deployed_at: crate::clock::now(),
        deployed_by: deployed_by.to_owned(),
    });
    let excess = pairs.len().saturating_sub(MAX_ENTRIES);
    pairs.drain(..excess);
    let file = HistoryFile {
        schema_version: SCHEMA_VERSION,
        pairs,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| {
        Error::failed(
            Stage::State,
            format!("cannot serialize the deploy history: {e}"),
        )
    })?;
    bytes.push(b'\n');
    fsutil::ensure_dir(config.agent.state_dir.as_path(), 0o755)?;
    Ok(fsutil::write_atomic(&path(config), &bytes, 0o644)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AbsPath;

    fn release(n: u8) -> Release {
        let sha = format!("{:040x}", n);
        Release {
            source_sha: sha.clone(),
            image_tag: format!("sha-{sha}"),
            backend_image_uri: format!("r/b:sha-{sha}"),
            frontend_image_uri: format!("r/f:sha-{sha}"),
            deployment_version: "v".into(),
            selected_ref: None,
            workflow_run: None,
            backend_digest: None,
            frontend_digest: None,
        }
    }

    #[test]
    fn a_redeploy_moves_to_the_end_and_the_list_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.agent.state_dir = AbsPath::new(dir.path().join("state"));
        assert!(read(&c).is_empty());
        record(&c, &release(1), "deploy").unwrap();
        record(&c, &release(2), "deploy").unwrap();
        record(&c, &release(1), "rollback").unwrap();
        let tags: Vec<String> = read(&c).into_iter().map(|p| p.image_tag).collect();
        assert_eq!(tags, [release(2).image_tag, release(1).image_tag]);
        for n in 0..60 {
            record(&c, &release(n), "deploy").unwrap();
        }
        let pairs = read(&c);
        assert_eq!(pairs.len(), MAX_ENTRIES);
        assert_eq!(pairs.last().unwrap().image_tag, release(59).image_tag);
        std::fs::write(path(&c), "{broken").unwrap();
        assert!(read(&c).is_empty());
    }
}
