//! What identifies a release, and the two files that remember one.
//!
//! - The **last-good receipt** (`receipt.path`, mode 0644): written only by
//!   `runtime record-release`, for a pair that runs and passed endpoint
//!   smoke. Rollback's input. Earlier receipts are kept, bounded, under
//!   `state_dir/receipts/`.
//! - The **current release** (`state_dir/current-release.json`): written by
//!   a successful deploy or rollback. Boot recovery brings it back up.
//!
//! A release made by hand (the runbook's local repair runs) has no workflow
//! run: it is recorded as absent (no `workflowRun` field, no workflow
//! markers), never with invented CI metadata; `status` shows it as manual.
//!
//! Both record, besides the image URIs CI named, the repo digest each image
//! resolved to when it was pulled (`backendDigest`, `frontendDigest`):
//! a `sha-` tag can be pushed again with other bytes, so what runs is named
//! by digest. [`Release::backend`] and [`Release::frontend`] give the pinned
//! `repo@sha256:...` reference whenever a digest is recorded, so rollback,
//! the daemon and boot recovery run the recorded bytes. Files of schema
//! version 1 (no digests) are still read.
//!
//! Both are written atomically ([`crate::fsutil::write_atomic`]), so a reader
//! sees the old file or the new one, never half of either. Both carry a
//! schema version; a reader refuses a file it does not understand (exit 2)
//! instead of guessing what to deploy.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Stage};
use crate::fsutil;
use crate::image::{is_digest, ImageRef, Reference};
use crate::output::Report;

pub const RECEIPT_SCHEMA_VERSION: u32 = 2;
/// 2 added `backendDigest`/`frontendDigest` (both files) and `configHashes`
/// (current release); a reader accepts 1 (none of them recorded) and 2.
pub const CURRENT_SCHEMA_VERSION: u32 = 2;
/// Versions readers accept.
const READABLE_VERSIONS: [u32; 2] = [1, 2];

/// CI's workflow run that produced the release. Absent (not empty) for a
/// release made by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowRun {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_attempt: Option<String>,
}

/// A validated image pair and its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Release {
    pub source_sha: String,
    /// The immutable tag shared by the pair (`sha-<source sha>`), or the
    /// backend's digest when the pair is pinned by digest.
    pub image_tag: String,
    pub backend_image_uri: String,
    pub frontend_image_uri: String,
    pub deployment_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_ref: Option<String>,
    /// `None` for a manual release (a local repair run): nothing invented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_run: Option<WorkflowRun>,
    /// The backend's repo digest (`sha256:<64 hex>`) as pulled; `None`
    /// before the pull resolved it (or in a schema 1 file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_digest: Option<String>,
}

/// The last-good receipt file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receipt {
    pub schema_version: u32,
    #[serde(flatten)]
    pub release: Release,
    pub recorded_at: String,
}

/// The current-release state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CurrentRelease {
    pub schema_version: u32,
    #[serde(flatten)]
    pub release: Release,
    pub deployed_at: String,
    /// `deploy` or `rollback`.
    pub deployed_by: String,
    /// Service name -> the Compose config hash the converge applied. The
    /// daemon recreates a crashed container only with this config (empty
    /// for a schema 1 file: nothing recorded, so nothing is recreated).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config_hashes: std::collections::BTreeMap<String, String>,
}

impl WorkflowRun {
    /// The run from its three optional parts; `None` when none is given
    /// (an empty value counts as not given: SSM passes empty defaults).
    pub fn from_parts(
        name: Option<&str>,
        run_id: Option<&str>,
        run_attempt: Option<&str>,
    ) -> Option<WorkflowRun> {
        let part = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
        let run = WorkflowRun {
            name: part(name),
            run_id: part(run_id),
            run_attempt: part(run_attempt),
        };
        (run != WorkflowRun::default()).then_some(run)
    }
}

impl Release {
    /// Whether a person made this release by hand (no workflow run).
    pub fn is_manual(&self) -> bool {
        self.workflow_run.is_none()
    }

    /// Check every field and derive `image_tag`; `source` words the errors.
    /// Empty optional fields become absent ones.
    pub fn validated(mut self, config: &Config, source: Source) -> Result<Release, Error> {
        self.selected_ref = self.selected_ref.filter(|r| !r.is_empty());
        self.workflow_run = self.workflow_run.and_then(|w| {
            WorkflowRun::from_parts(
                w.name.as_deref(),
                w.run_id.as_deref(),
                w.run_attempt.as_deref(),
            )
        });
        let backend = ImageRef::parse(source.field("backend-image"), &self.backend_image_uri)?;
        let frontend = ImageRef::parse(source.field("frontend-image"), &self.frontend_image_uri)?;
        crate::authority::precheck(config, source.field("backend-image"), &backend)?;
        crate::authority::precheck(config, source.field("frontend-image"), &frontend)?;
        for (field, image, digest) in [
            ("backend-image", &backend, &self.backend_digest),
            ("frontend-image", &frontend, &self.frontend_digest),
        ] {
            let Some(digest) = digest else { continue };
            let named = match &image.reference {
                Reference::Digest(d) => Some(d),
                Reference::Tag(_) => None,
            };
            if !is_digest(digest) || named.is_some_and(|d| d != digest) {
                return Err(Error::invalid(
                    source.field(field),
                    format!("recorded digest {digest:?} is not sha256:<64 hex> of {image}"),
                    "deploy the release again to record its digests",
                ));
            }
        }
        if !is_lower_hex(&self.source_sha, 40) {
            return Err(Error::invalid(
                source.field("source-sha"),
                "expected the full 40-character lowercase git SHA",
                "pass the commit SHA the images were built from",
            ));
        }
        check_text(
            source.field("deployment-version"),
            &self.deployment_version,
            false,
        )?;
        if let Some(r) = &self.selected_ref {
            check_text(source.field("selected-ref"), r, true)?;
        }
        if let Some(run) = &self.workflow_run {
            for (field, value) in [
                ("workflow-name", &run.name),
                ("workflow-run-id", &run.run_id),
                ("workflow-run-attempt", &run.run_attempt),
            ] {
                if let Some(v) = value {
                    check_text(source.field(field), v, false)?;
                }
            }
        }
        // The pair must come from one build: same immutable tag, and that
        // tag must be the source SHA's.
        match (backend.tag(), frontend.tag()) {
            (Some(b), Some(f)) => {
                if b != f {
                    return Err(Error::invalid(
                        source.field("frontend-image"),
                        format!("tag {f} differs from the backend's {b}"),
                        "deploy a backend and frontend built from the same commit",
                    ));
                }
                if b != format!("sha-{}", self.source_sha) {
                    return Err(Error::invalid(
                        source.field("source-sha"),
                        format!("the images are tagged {b}, not sha-{}", self.source_sha),
                        "pass the SHA the images were built from",
                    ));
                }
                self.image_tag = b.to_owned();
            }
            _ => self.image_tag = backend.tag_or_digest().to_owned(),
        }
        Ok(self)
    }

    /// The backend image as it is to run: pinned to the recorded digest
    /// (`repo@sha256:...`) when there is one, else the URI CI named.
    pub fn backend(&self, config: &Config) -> Result<ImageRef, Error> {
        image(
            "backend image",
            &self.backend_image_uri,
            self.backend_digest.as_deref(),
            config,
        )
    }

    /// The frontend image as it is to run (see [`Release::backend`]).
    pub fn frontend(&self, config: &Config) -> Result<ImageRef, Error> {
        image(
            "frontend image",
            &self.frontend_image_uri,
            self.frontend_digest.as_deref(),
            config,
        )
    }

    /// [`Release::backend`] as text: what the Compose file's image variable
    /// gets and what the container's `Config.Image` then is.
    pub fn backend_ref(&self) -> String {
        pinned_text(&self.backend_image_uri, self.backend_digest.as_deref())
    }

    /// [`Release::frontend`] as text (see [`Release::backend_ref`]).
    pub fn frontend_ref(&self) -> String {
        pinned_text(&self.frontend_image_uri, self.frontend_digest.as_deref())
    }

    /// This release with the digests its images resolved to.
    pub fn with_digests(&self, backend: Option<String>, frontend: Option<String>) -> Release {
        Release {
            backend_digest: backend,
            frontend_digest: frontend,
            ..self.clone()
        }
    }

    /// Markers `<prefix>_SOURCE_SHA`, `_IMAGE_TAG`, ... for this release.
    pub fn add_markers(&self, report: &mut Report, prefix: &str) {
        report.marker(&format!("{prefix}_SOURCE_SHA"), &self.source_sha);
        report.marker(&format!("{prefix}_IMAGE_TAG"), &self.image_tag);
        report.marker(&format!("{prefix}_BACKEND_IMAGE"), &self.backend_image_uri);
        report.marker(
            &format!("{prefix}_FRONTEND_IMAGE"),
            &self.frontend_image_uri,
        );
        report.marker(
            &format!("{prefix}_DEPLOYMENT_VERSION"),
            &self.deployment_version,
        );
        if let Some(r) = &self.selected_ref {
            report.marker(&format!("{prefix}_SELECTED_REF"), r);
        }
        self.add_digest_markers(report, prefix);
        // Only what was given: a manual release gets no workflow markers.
        if let Some(run) = &self.workflow_run {
            for (field, value) in [
                ("WORKFLOW_NAME", &run.name),
                ("WORKFLOW_RUN_ID", &run.run_id),
                ("WORKFLOW_RUN_ATTEMPT", &run.run_attempt),
            ] {
                if let Some(v) = value {
                    report.marker(&format!("{prefix}_{field}"), v);
                }
            }
        }
    }
}

impl Release {
    /// `<prefix>_BACKEND_DIGEST` / `_FRONTEND_DIGEST` for recorded digests.
    pub fn add_digest_markers(&self, report: &mut Report, prefix: &str) {
        if let Some(d) = &self.backend_digest {
            report.marker(&format!("{prefix}_BACKEND_DIGEST"), d);
        }
        if let Some(d) = &self.frontend_digest {
            report.marker(&format!("{prefix}_FRONTEND_DIGEST"), d);
        }
    }
}

/// The one place a release's image becomes a reference to run.
fn image(field: &str, uri: &str, digest: Option<&str>, config: &Config) -> Result<ImageRef, Error> {
    let image = ImageRef::parse(field, uri)?;
    crate::authority::precheck(config, field, &image)?;
    Ok(match digest {
        Some(d) => image.pinned(d),
        None => image,
    })
}

/// `uri` pinned to `digest`: `registry/repository@digest`.
fn pinned_text(uri: &str, digest: Option<&str>) -> String {
    let Some(digest) = digest else {
        return uri.to_owned();
    };
    let name = match uri.split_once('@') {
        Some((name, _)) => name,
        // The tag follows the last ':' after the last '/' (a port is before it).
        None => match uri.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => uri,
        },
    };
    format!("{name}@{digest}")
}

/// Where release fields came from, so errors name the flag or the file.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Flags,
    Receipt,
    CurrentRelease,
}

impl Source {
    fn field(self, flag: &'static str) -> &'static str {
        match (self, flag) {
            (Source::Flags, "backend-image") => "--backend-image",
            (Source::Flags, "frontend-image") => "--frontend-image",
            (Source::Flags, "source-sha") => "--source-sha",
            (Source::Flags, "deployment-version") => "--deployment-version",
            (Source::Flags, "selected-ref") => "--selected-ref",
            (Source::Flags, "workflow-name") => "--workflow-name",
            (Source::Flags, "workflow-run-id") => "--workflow-run-id",
            (Source::Flags, "workflow-run-attempt") => "--workflow-run-attempt",
            (Source::Receipt, _) => "receipt",
            (Source::CurrentRelease, _) => "current release state",
            (Source::Flags, other) => other,
        }
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Short printable text: `[A-Za-z0-9._/+-]`, what versions, refs and run
/// ids use. Nothing that could break a marker line or a shell.
fn check_text(field: &str, value: &str, allow_empty: bool) -> Result<(), Error> {
    if value.is_empty() && allow_empty {
        return Ok(());
    }
    let ok = !value.is_empty()
        && value.len() <= 200
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "expected 1 to 200 characters of letters, digits and . _ / + -",
            "pass the value CI produced, without spaces or quotes",
        ))
    }
}

/// Read the last-good receipt. `Ok(None)` when there is none; a file that
/// is not a receipt this agent understands is exit 2 (nothing touched).
pub fn read_receipt(config: &Config) -> Result<Option<Receipt>, Error> {
    let path = config.receipt.path.as_path();
    let Some(bytes) = fsutil::read_owned(path)? else {
        return Ok(None);
    };
    let receipt = parse_receipt(&bytes, path)?;
    let release = receipt.release.clone().validated(config, Source::Receipt)?;
    Ok(Some(Receipt { release, ..receipt }))
}

/// Parse receipt bytes; errors say what is wrong and what to do.
pub fn parse_receipt(bytes: &[u8], path: &Path) -> Result<Receipt, Error> {
    let corrupt = |problem: String| {
        Error::invalid(
            format!("receipt {}", path.display()),
            problem,
            "record a fresh receipt with `runtime record-release --execute` after a known-good deploy, \
             or restore one from the receipt history",
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON ({e})")))?;
    match value.get("schemaVersion").and_then(|v| v.as_u64()) {
        Some(v) if READABLE_VERSIONS.iter().any(|r| u64::from(*r) == v) => {}
        Some(v) => {
            return Err(corrupt(format!(
                "unknown schemaVersion {v} (this agent reads 1 to {RECEIPT_SCHEMA_VERSION})"
            )))
        }
        None => return Err(corrupt("no schemaVersion".into())),
    }
    serde_json::from_value(value).map_err(|e| corrupt(format!("unexpected content ({e})")))
}

/// Write the receipt atomically (0644), first copying the previous one into
/// the bounded history.
pub fn write_receipt(config: &Config, release: &Release) -> Result<Receipt, Error> {
    let receipt = Receipt {
        schema_version: RECEIPT_SCHEMA_VERSION,
        release: release.clone(),
        recorded_at: crate::clock::now(),
    };
    let path = config.receipt.path.as_path();
    if let Some(dir) = path.parent() {
        fsutil::ensure_dir(dir, fsutil::PRIVATE_DIR_MODE)?;
    }
    if let Some(previous) = fsutil::read_owned(path)? {
        keep_in_history(config, &previous)?;
    }
    let mut bytes = serde_json::to_vec_pretty(&receipt).map_err(|e| {
        Error::failed(
            Stage::RecordRelease,
            format!("cannot serialize the receipt: {e}"),
        )
    })?;
    bytes.push(b'\n');
    fsutil::write_atomic(path, &bytes, 0o644)?;
    Ok(receipt)
}

fn keep_in_history(config: &Config, previous: &[u8]) -> Result<(), Error> {
    let dir = config.receipt_history_dir();
    fsutil::ensure_dir(&dir, fsutil::PRIVATE_DIR_MODE)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    fsutil::write_atomic(&dir.join(format!("receipt-{stamp}.json")), previous, 0o644)?;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io("list", &dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("receipt-"))
        })
        .collect();
    entries.sort();
    let excess = entries.len().saturating_sub(config.receipt.history_limit);
    for old in &entries[..excess] {
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}

/// Read the current release. `Ok(None)` when nothing was deployed yet.
pub fn read_current(config: &Config) -> Result<Option<CurrentRelease>, Error> {
    let path = config.current_release_path();
    let Some(bytes) = fsutil::read_owned(&path)? else {
        return Ok(None);
    };
    let current: CurrentRelease = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(
            format!("current release state {}", path.display()),
            format!("unreadable ({e})"),
            "run `runtime deploy --execute` (or `runtime rollback --execute`) to write it again",
        )
    })?;
    if !READABLE_VERSIONS.contains(&current.schema_version) {
        return Err(Error::invalid(
            format!("current release state {}", path.display()),
            format!("unknown schemaVersion {}", current.schema_version),
            "run `runtime deploy --execute` to write it again",
        ));
    }
    let release = current
        .release
        .clone()
        .validated(config, Source::CurrentRelease)?;
    Ok(Some(CurrentRelease { release, ..current }))
}

/// Record a successful deploy as the release boot recovery restores.
pub fn write_current(
    config: &Config,
    release: &Release,
    deployed_by: &str,
    config_hashes: &std::collections::BTreeMap<String, String>,
) -> Result<CurrentRelease, Error> {
    let current = CurrentRelease {
        schema_version: CURRENT_SCHEMA_VERSION,
        release: release.clone(),
        deployed_at: crate::clock::now(),
        deployed_by: deployed_by.to_owned(),
        config_hashes: config_hashes.clone(),
    };
    fsutil::ensure_dir(config.agent.state_dir.as_path(), fsutil::AGENT_DIR_MODE)?;
    let mut bytes = serde_json::to_vec_pretty(&current).map_err(|e| {
        Error::failed(
            Stage::Deploy,
            format!("cannot serialize the current release: {e}"),
        )
    })?;
    bytes.push(b'\n');
    fsutil::write_atomic(&config.current_release_path(), &bytes, 0o644)?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AbsPath;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn config(dir: &Path) -> Config {
        let mut c = Config::default();
        c.agent.state_dir = AbsPath::new(dir.join("state"));
        c.receipt.path = AbsPath::new(dir.join("deployment/receipt.json"));
        c.receipt.history_limit = 2;
        c.aws.test_ecr_registry_alias = Some("127.0.0.1:5000".into());
        c
    }

    fn release() -> Release {
        Release {
            source_sha: SHA.into(),
            image_tag: String::new(),
            backend_image_uri: format!("127.0.0.1:5000/wavemap/backend:sha-{SHA}"),
            frontend_image_uri: format!("127.0.0.1:5000/wavemap/frontend:sha-{SHA}"),
            deployment_version: "2026.11.25-1".into(),
            selected_ref: Some("develop".into()),
            workflow_run: None,
            backend_digest: None,
            frontend_digest: None,
        }
    }

    #[test]
    fn current_release_records_config_hashes_and_a_schema_1_file_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let hashes = std::collections::BTreeMap::from([("api".to_owned(), "abc".to_owned())]);
        write_current(&config, &release(), "deploy", &hashes).unwrap();
        let text = std::fs::read_to_string(config.current_release_path()).unwrap();
        assert!(
            text.contains("\"schemaVersion\": 2") && text.contains("\"configHashes\""),
            "{text}"
        );
        assert_eq!(
            read_current(&config).unwrap().unwrap().config_hashes,
            hashes
        );
        let v1 = text
            .replace("\"schemaVersion\": 2", "\"schemaVersion\": 1")
            .replace("\"configHashes\": {\n    \"api\": \"abc\"\n  },\n", "")
            .replace(",\n  \"configHashes\": {\n    \"api\": \"abc\"\n  }", "");
        assert!(!v1.contains("configHashes"), "{v1}");
        std::fs::write(config.current_release_path(), v1).unwrap();
        let old = read_current(&config).unwrap().unwrap();
        assert_eq!((old.schema_version, old.config_hashes.len()), (1, 0));
    }

    #[test]
    fn a_manual_release_records_no_workflow_field() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        // Empty values (SSM's defaults for a repair run) are absent values.
        let mut r = release();
        r.workflow_run = WorkflowRun::from_parts(Some(""), Some(""), None);
        assert_eq!(r.workflow_run, None);
        r.workflow_run = Some(WorkflowRun::default());
        let r = r.validated(&c, Source::Flags).unwrap();
        assert!(r.is_manual());
        write_receipt(&c, &r).unwrap();
        let text = std::fs::read_to_string(c.receipt.path.as_path()).unwrap();
        assert!(!text.contains("workflow"), "{text}");
        let mut report = Report::new();
        r.add_markers(&mut report, "WAVEMAP_T");
        assert!(
            report
                .markers()
                .iter()
                .all(|(k, _)| !k.contains("WORKFLOW")),
            "{:?}",
            report.markers()
        );

        // A CI release keeps what CI gave, and nothing more.
        let mut ci = release();
        ci.workflow_run = WorkflowRun::from_parts(Some("deploy-dev.yml"), Some("412"), None);
        let ci = ci.validated(&c, Source::Flags).unwrap();
        assert!(!ci.is_manual());
        let json = serde_json::to_value(&ci).unwrap();
        assert_eq!(
            json["workflowRun"],
            serde_json::json!({"name": "deploy-dev.yml", "runId": "412"})
        );
        let mut report = Report::new();
        ci.add_markers(&mut report, "WAVEMAP_T");
        assert_eq!(report.get("WAVEMAP_T_WORKFLOW_RUN_ID"), Some("412"));
        assert_eq!(report.get("WAVEMAP_T_WORKFLOW_RUN_ATTEMPT"), None);
    }

    #[test]
    fn receipt_round_trips_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        assert!(read_receipt(&c).unwrap().is_none());
        let r = release().validated(&c, Source::Flags).unwrap();
        assert_eq!(r.image_tag, format!("sha-{SHA}"));
        for _ in 0..4 {
            write_receipt(&c, &r).unwrap();
        }
        let back = read_receipt(&c).unwrap().unwrap();
        assert_eq!(back.release, r);
        let history = std::fs::read_dir(c.receipt_history_dir()).unwrap().count();
        assert_eq!(history, 2);
        let text = std::fs::read_to_string(c.receipt.path.as_path()).unwrap();
        assert!(text.contains("\"sourceSha\""), "{text}");
        assert!(text.contains("\"schemaVersion\": 2"), "{text}");
        assert!(!text.contains("Digest"), "no digest recorded yet: {text}");
    }

    #[test]
    fn a_recorded_digest_pins_the_image_and_version_1_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let d = format!("sha256:{}", "e".repeat(64));
        let r = release()
            .validated(&c, Source::Flags)
            .unwrap()
            .with_digests(Some(d.clone()), None);
        let r = r.validated(&c, Source::Receipt).unwrap();
        assert_eq!(
            r.backend_ref(),
            format!("127.0.0.1:5000/wavemap/backend@{d}")
        );
        assert_eq!(r.backend(&c).unwrap().to_string(), r.backend_ref());
        assert_eq!(r.frontend_ref(), r.frontend_image_uri);
        write_receipt(&c, &r).unwrap();
        let text = std::fs::read_to_string(c.receipt.path.as_path()).unwrap();
        assert!(
            text.contains(&format!("\"backendDigest\": \"{d}\"")),
            "{text}"
        );
        assert_eq!(read_receipt(&c).unwrap().unwrap().release, r);
        let mut report = Report::new();
        r.add_markers(&mut report, "WAVEMAP_T");
        assert_eq!(report.get("WAVEMAP_T_BACKEND_DIGEST"), Some(d.as_str()));

        // Version 1 (no digests) is read.
        let v1 = text
            .replace("\"schemaVersion\": 2", "\"schemaVersion\": 1")
            .replace(&format!("  \"backendDigest\": \"{d}\",\n"), "");
        std::fs::write(c.receipt.path.as_path(), &v1).unwrap();
        let back = read_receipt(&c).unwrap().unwrap();
        assert_eq!(back.schema_version, 1);
        assert_eq!(back.release.backend_digest, None);

        // A digest that is not one is refused, naming the file.
        std::fs::write(c.receipt.path.as_path(), text.replace(&d, "sha256:zz")).unwrap();
        let err = read_receipt(&c).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("receipt"), "{err}");
    }

    #[test]
    fn corrupt_or_unknown_receipt_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        std::fs::create_dir_all(dir.path().join("deployment")).unwrap();
        for (content, needle) in [
            ("{not json", "not JSON"),
            ("{\"schemaVersion\": 9}", "unknown schemaVersion 9"),
            (
                "{\"schemaVersion\": 1, \"sourceSha\": 3}",
                "unexpected content",
            ),
        ] {
            std::fs::write(c.receipt.path.as_path(), content).unwrap();
            let err = read_receipt(&c).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn mismatched_pair_or_sha_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let mut r = release();
        r.source_sha = "f".repeat(40);
        let err = r.validated(&c, Source::Flags).unwrap_err().to_string();
        assert!(err.contains("--source-sha"), "{err}");
        let mut r = release();
        r.deployment_version = "1; rm -rf /".into();
        let err = r.validated(&c, Source::Flags).unwrap_err().to_string();
        assert!(err.contains("--deployment-version"), "{err}");
    }
}
