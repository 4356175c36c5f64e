//! `runtime prune`: remove release images nothing needs any more.
//!
//! Only the two release repositories (the current release's backend and
//! frontend repositories) are looked at. An image there is kept when any
//! container (running or stopped) uses it, or it is the current release's,
//! the last-good receipt's, or one of the `images.keep` most recent other
//! pairs in the deploy history. Everything else in those repositories is
//! removed by its references in them, without force: the Engine then
//! deletes the image and its own untagged parent layers, refuses one a
//! container took meanwhile, and leaves an image that another repository
//! also names (only our name goes). Other repositories and dangling layers
//! that are not one of these images' own are never touched.
//!
//! Sizes: an image's size less what it shares with other images, where the
//! Engine reports sharing (API 1.42+), else its whole size: an estimate.
//! `--execute` also reports the free space the data root actually gained.

use std::collections::{BTreeSet, HashSet};

use bollard::Docker;

use super::{disk, history};
use crate::config::Config;
use crate::error::{Dependency, Error, Stage};
use crate::output::Report;
use crate::release::{self, Release};

/// Marker area of `runtime prune`.
pub const PRUNE: &str = "WAVEMAP_RUNTIME_PRUNE";
/// Marker area of the prune after `record-release` (its own markers, so a
/// reader never mistakes it for the receipt's result).
pub const AUTO_PRUNE: &str = "WAVEMAP_RUNTIME_AUTO_PRUNE";
/// References listed in a marker at most (stdout stays small).
const MAX_LISTED: usize = 40;

/// One image to remove, by its references in the release repositories.
#[derive(Debug, Clone)]
pub struct Removal {
    pub id: String,
    pub refs: Vec<String>,
    /// Estimated bytes freed; 0 when another repository keeps the image.
    pub bytes: u64,
    pub created: i64,
}

/// What a prune would do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `registry/repository` of the backend and the frontend.
    pub repositories: Vec<String>,
    pub remove: Vec<Removal>,
    /// Images in the release repositories that stay.
    pub kept: usize,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.remove.iter().map(|r| r.bytes).sum()
    }
}

/// The repository (`registry/repo`) of a `RepoTags` or `RepoDigests` entry.
fn repository_of(reference: &str) -> Option<&str> {
    if let Some((name, _)) = reference.split_once('@') {
        return (name != "<none>").then_some(name);
    }
    let (name, tag) = reference.rsplit_once(':')?;
    (!tag.contains('/') && name != "<none>").then_some(name)
}

/// The pair's references: the URIs as given and, where they differ, the
/// references the deploy runs (a release pinned by digest runs
/// `repo@sha256:...`).
fn pair_refs(config: &Config, release: &Release) -> Vec<String> {
    let mut refs = vec![
        release.backend_image_uri.clone(),
        release.frontend_image_uri.clone(),
    ];
    refs.extend(release.backend(config).ok().map(|r| r.to_string()));
    refs.extend(release.frontend(config).ok().map(|r| r.to_string()));
    refs
}

/// Add the `keep` most recent pairs of `history` (oldest first) that are
/// not already in `protected` (the current release, the receipt).
fn keep_recent(protected: &mut BTreeSet<String>, history: &[history::DeployedPair], keep: usize) {
    let mut others = 0;
    for pair in history.iter().rev() {
        if others >= keep {
            break;
        }
        if protected.contains(&pair.backend_image) && protected.contains(&pair.frontend_image) {
            continue;
        }
        protected.insert(pair.backend_image.clone());
        protected.insert(pair.frontend_image.clone());
        others += 1;
    }
}

/// Decide what to remove. Read-only.
pub async fn plan(config: &Config, docker: &Docker) -> Result<Plan, Error> {
    let current = release::read_current(config)?;
    let receipt = release::read_receipt(config)?;
    let Some(anchor) = current
        .as_ref()
        .map(|c| &c.release)
        .or(receipt.as_ref().map(|r| &r.release))
    else {
        return Ok(Plan::default());
    };
    let repositories: Vec<String> = vec![
        anchor.backend(config)?.name(),
        anchor.frontend(config)?.name(),
    ];

    let mut protected_refs: BTreeSet<String> = BTreeSet::new();
    if let Some(c) = &current {
        protected_refs.extend(pair_refs(config, &c.release));
    }
    if let Some(r) = &receipt {
        protected_refs.extend(pair_refs(config, &r.release));
    }
    keep_recent(
        &mut protected_refs,
        &history::read(config),
        config.images.keep,
    );

    let unavailable = |what: &str, e: bollard::errors::Error| {
        Error::unavailable(Dependency::Docker, format!("{what}: {e}"))
    };
    // Independent Engine calls, side by side (status runs this too).
    let (containers, images, inspected) =
        tokio::join!(
            docker.list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .all(true)
                    .build(),
            )),
            docker.list_images(Some(
                bollard::query_parameters::ListImagesOptionsBuilder::default()
                    .shared_size(true)
                    .build(),
            )),
            futures_util::future::join_all(protected_refs.iter().map(|reference| async move {
                (reference, docker.inspect_image(reference).await)
            }))
        );
    let mut protected_ids: HashSet<String> = HashSet::new();
    let containers = containers.map_err(|e| unavailable("list containers", e))?;
    protected_ids.extend(containers.into_iter().filter_map(|c| c.image_id));
    for (reference, result) in inspected {
        match result {
            Ok(info) => protected_ids.extend(info.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(unavailable(&format!("inspect image {reference}"), e)),
        }
    }
    let images = images.map_err(|e| unavailable("list images", e))?;
    let ours =
        |r: &String| repository_of(r).is_some_and(|name| repositories.iter().any(|n| n == name));
    let mut result = Plan {
        repositories: repositories.clone(),
        ..Plan::default()
    };
    for image in images {
        let all_refs: Vec<&String> = image
            .repo_tags
            .iter()
            .chain(image.repo_digests.iter())
            .filter(|r| repository_of(r).is_some())
            .collect();
        let refs: Vec<String> = all_refs
            .iter()
            .filter(|r| ours(r))
            .map(|r| (*r).clone())
            .collect();
        if refs.is_empty() {
            continue;
        }
        if protected_ids.contains(&image.id) {
            result.kept += 1;
            continue;
        }
        let shared_elsewhere = all_refs.len() > refs.len();
        let size = u64::try_from(image.size).unwrap_or(0);
        let shared = u64::try_from(image.shared_size).unwrap_or(0);
        // Tags first: removing the last tag deletes the image; digests then
        // only remain for an image pulled by digest.
        let mut refs = refs;
        refs.sort_by_key(|r| r.contains('@'));
        result.remove.push(Removal {
            id: image.id,
            refs,
            bytes: if shared_elsewhere {
                0
            } else {
                size.saturating_sub(shared)
            },
            created: image.created,
        });
    }
    result.remove.sort_by_key(|r| r.created);
    Ok(result)
}

/// What `--execute` did.
#[derive(Debug, Default)]
pub struct Done {
    /// One name per image whose references all went (its tag when it has
    /// one; its digest references went with it).
    pub removed: Vec<String>,
    pub bytes: u64,
    /// `ref: why` for references the Engine refused (a container took the
    /// image meanwhile).
    pub refused: Vec<String>,
    pub disk_freed: Option<u64>,
}

/// Remove what `plan` lists, without force.
pub async fn remove(config: &Config, docker: &Docker, plan: &Plan) -> Done {
    let root = disk::docker_root_remembered(config, docker).await;
    let before = root.space.ok();
    let mut done = Done::default();
    for removal in &plan.remove {
        let mut all_gone = true;
        for reference in &removal.refs {
            let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(false)
                .noprune(false)
                .build();
            match docker.remove_image(reference, Some(options), None).await {
                Ok(_)
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    log::info!(stage = "prune"; "removed {reference}");
                }
                Err(e) => {
                    all_gone = false;
                    log::warn!(stage = "prune"; "{reference} not removed: {e}");
                    done.refused.push(format!("{reference}: {e}"));
                }
            }
        }
        if all_gone {
            done.bytes += removal.bytes;
            done.removed.extend(removal.refs.first().cloned());
        }
    }
    let after = root
        .path
        .and_then(|p| disk::statvfs(std::path::Path::new(&p)).ok());
    if let (Some(b), Some(a)) = (before, after) {
        done.disk_freed = Some(a.free_bytes.saturating_sub(b.free_bytes));
    }
    done
}

fn listed(refs: &[String]) -> String {
    let mut text = refs
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if refs.len() > MAX_LISTED {
        text.push_str(&format!(",(+{} more)", refs.len() - MAX_LISTED));
    }
    text
}

/// Plan (and with `execute`, remove), with markers under `prefix`.
pub async fn run(
    config: &Config,
    execute: bool,
    report: &mut Report,
    prefix: &str,
) -> Result<(), Error> {
    let docker = crate::docker::connect(config).await?;
    let plan = match plan(config, &docker).await {
        Ok(plan) => plan,
        Err(e) => {
            report.marker(&format!("{prefix}_RESULT"), "failed");
            return Err(e);
        }
    };
    if plan.repositories.is_empty() {
        report.marker(&format!("{prefix}_RESULT"), "nothing-to-prune");
        log::info!(stage = "prune"; "no current release and no receipt: no release repositories to prune");
        return Ok(());
    }
    let refs: Vec<String> = plan.remove.iter().flat_map(|r| r.refs.clone()).collect();
    // One name per image in the markers (tags sort first); the log names
    // every reference removed.
    let names: Vec<String> = plan
        .remove
        .iter()
        .filter_map(|r| r.refs.first().cloned())
        .collect();
    report.marker(
        &format!("{prefix}_REPOSITORIES"),
        plan.repositories.join(","),
    );
    report.marker(&format!("{prefix}_KEPT"), plan.kept);
    report.marker(&format!("{prefix}_COUNT"), plan.remove.len());
    report.marker(&format!("{prefix}_IMAGES"), listed(&names));
    if plan.remove.is_empty() {
        report.marker(&format!("{prefix}_BYTES"), 0);
        report.marker(&format!("{prefix}_RESULT"), "nothing-to-prune");
        log::info!(stage = "prune"; "nothing to prune in {} ({} images kept)", plan.repositories.join(", "), plan.kept);
        return Ok(());
    }
    if !execute {
        report.marker(&format!("{prefix}_BYTES"), plan.bytes());
        report.marker(&format!("{prefix}_RESULT"), "planned");
        for r in &plan.remove {
            log::info!(stage = "prune"; "would remove {} (~{} MiB)", r.refs.join(" "), disk::mib(r.bytes));
        }
        log::info!(stage = "prune"; "dry run: nothing was removed; rerun with --execute");
        return Ok(());
    }
    let done = remove(config, &docker, &plan).await;
    report.marker(&format!("{prefix}_REMOVED"), listed(&done.removed));
    report.marker(&format!("{prefix}_BYTES"), done.bytes);
    if let Some(freed) = done.disk_freed {
        report.marker(&format!("{prefix}_DISK_FREED_BYTES"), freed);
    }
    if done.refused.is_empty() {
        report.marker(&format!("{prefix}_RESULT"), "pruned");
        log::info!(stage = "prune"; "removed {} images (~{} MiB)", plan.remove.len(), disk::mib(done.bytes));
        Ok(())
    } else {
        report.marker(&format!("{prefix}_RESULT"), "partial");
        Err(Error::failed(
            Stage::Prune,
            format!(
                "{} of {} references not removed: {}",
                done.refused.len(),
                refs.len(),
                listed(&done.refused)
            ),
        ))
    }
}

/// After a successful `record-release --execute`: prune under
/// [`AUTO_PRUNE`] markers when `images.prune_after_record`; its outcome is
/// logged and marked, never returned.
pub async fn after_record(config: &Config, report: &mut Report) {
    if !config.images.prune_after_record {
        report.marker(&format!("{AUTO_PRUNE}_RESULT"), "disabled");
        return;
    }
    if let Err(e) = run(config, true, report, AUTO_PRUNE).await {
        log::warn!(stage = "prune"; "the prune after record-release failed (the receipt is recorded): {e}");
        if report.get(&format!("{AUTO_PRUNE}_RESULT")).is_none() {
            report.marker(&format!("{AUTO_PRUNE}_RESULT"), "failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_repository() {
        assert_eq!(
            repository_of("127.0.0.1:5000/x/backend:sha-1"),
            Some("127.0.0.1:5000/x/backend")
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/x/backend@sha256:ab"),
            Some("127.0.0.1:5000/x/backend")
        );
        assert_eq!(repository_of("<none>:<none>"), None);
        assert_eq!(repository_of("<none>@<none>"), None);
        let refs = vec!["a".to_string(); 45];
        assert!(listed(&refs).ends_with("(+5 more)"));
    }

    #[test]
    fn keep_counts_pairs_other_than_the_current_release_and_the_receipt() {
        let pair = |n: u8| history::DeployedPair {
            backend_image: format!("b:{n}"),
            frontend_image: format!("f:{n}"),
            image_tag: format!("{n}"),
            deployed_at: String::new(),
            deployed_by: "deploy".into(),
        };
        // The case: pairs 0..4 deployed, 1 recorded, 4 current.
        let history: Vec<_> = (0..5).map(pair).collect();
        let base: BTreeSet<String> = ["b:4", "f:4", "b:1", "f:1"].map(String::from).into();
        let mut kept = base.clone();
        keep_recent(&mut kept, &history, 1);
        let added: Vec<&String> = kept.difference(&base).collect();
        assert_eq!(added, ["b:3", "f:3"]);
        let mut kept = base.clone();
        keep_recent(&mut kept, &history, 0);
        assert_eq!(kept, base);
        let mut kept = base.clone();
        keep_recent(&mut kept, &history, 3);
        assert_eq!(kept.len(), 10, "{kept:?}");
    }
}
