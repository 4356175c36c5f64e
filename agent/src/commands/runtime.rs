//! `runtime deploy`, `runtime record-release`, `runtime rollback`,
//! `runtime smoke`, `runtime receipt`.
//!
//! Deploy and rollback both go through [`crate::deploy::run`]; this file
//! adds what is specific to each: turning the flags into a validated
//! [`Release`] (here, on the command side, so `release` knows nothing of
//! clap), the receipt gates of record-release (the pair runs, is healthy
//! and passes endpoint smoke), and rollback's reading of the receipt.
//! `runtime receipt` prints that receipt as markers, so CI can run the
//! runbook's rollback itself: read the pair here, then send it through the
//! deploy document.

use crate::cli::ReleaseArgs;
use crate::compose;
use crate::config::Config;
use crate::deploy::{self, EnvPolicy, Options};
use crate::error::Error;
use crate::output::Report;
use crate::release::{self, Release, Source, WorkflowRun};
use crate::smoke;

/// The release the flags name, validated; every problem names the flag.
/// Workflow flags left out (or empty) stay absent: a repair run by hand
/// has no workflow run, and none is invented.
pub fn release(args: &ReleaseArgs, config: &Config) -> Result<Release, Error> {
    Release {
        source_sha: args.source_sha.clone(),
        image_tag: String::new(),
        backend_image_uri: args.backend_image.clone(),
        frontend_image_uri: args.frontend_image.clone(),
        deployment_version: args.deployment_version.clone(),
        selected_ref: args.selected_ref.clone(),
        workflow_run: WorkflowRun::from_parts(
            args.workflow_name.as_deref(),
            args.workflow_run_id.as_deref(),
            args.workflow_run_attempt.as_deref(),
        ),
        // Resolved by the pull (deploy) or taken from what runs (record-release).
        backend_digest: None,
        frontend_digest: None,
    }
    .validated(config, Source::Flags)
}

const DEPLOY: &str = "WAVEMAP_RUNTIME_DEPLOY";
const RECEIPT: &str = "WAVEMAP_RUNTIME_RECEIPT";
const ROLLBACK: &str = "WAVEMAP_RUNTIME_ROLLBACK";

pub async fn deploy(config: &Config, args: &ReleaseArgs, report: &mut Report) -> Result<(), Error> {
    let release = release(args, config)?;
    release.add_markers(report, DEPLOY);
    let execute = args.execute.execute;
    deploy::run(
        config,
        &release,
        Options {
            execute,
            env: if args.allow_empty {
                EnvPolicy::RequiredAllowEmpty
            } else {
                EnvPolicy::Required
            },
            record_as: Some("deploy"),
        },
        report,
        DEPLOY,
    )
    .await?;
    if execute {
        log::info!(
            "deployed {} ({})",
            release.image_tag,
            release.deployment_version
        );
    } else {
        log::info!("dry run: nothing was changed; rerun with --execute to deploy");
    }
    Ok(())
}

/// `runtime smoke`: the endpoint smoke alone, read-only; exit 3 when a
/// check fails.
pub async fn smoke(config: &Config, report: &mut Report) -> Result<(), Error> {
    let docker = crate::docker::connect(config).await?;
    smoke::run(config, &docker, report).await?.gate()
}

/// `runtime receipt`: the last-good receipt as `WAVEMAP_RUNTIME_RECEIPT_*`
/// markers, the same names record-release prints. Read-only and lock-free:
/// the receipt is written atomically, so a reader sees a whole file. No
/// receipt: `_RESULT=none`, exit 4.
pub fn receipt(config: &Config, report: &mut Report) -> Result<(), Error> {
    report.marker(&format!("{RECEIPT}_PATH"), config.receipt.path.to_string());
    let receipt = match release::read_receipt(config) {
        Ok(Some(receipt)) => receipt,
        Ok(None) => {
            report.marker(&format!("{RECEIPT}_RESULT"), "none");
            return Err(Error::NothingToDo {
                reason: format!(
                    "no last-good receipt at {}; record one after a known-good deploy",
                    config.receipt.path
                ),
            });
        }
        Err(e) => {
            let result = if e.exit_code() == crate::error::exit::INVALID {
                "invalid"
            } else {
                "failed"
            };
            report.marker(&format!("{RECEIPT}_RESULT"), result);
            return Err(e);
        }
    };
    receipt.release.add_markers(report, RECEIPT);
    for (name, value) in extra_fields(&receipt.release) {
        report.marker(&format!("{RECEIPT}_{name}"), value);
    }
    report.marker(&format!("{RECEIPT}_RECORDED_AT"), &receipt.recorded_at);
    report.marker(&format!("{RECEIPT}_SCHEMA_VERSION"), receipt.schema_version);
    report.marker(&format!("{RECEIPT}_RESULT"), "found");
    Ok(())
}

/// Release fields that [`Release::add_markers`] does not name (such as
/// recorded image digests), as `(SCREAMING_NAME, value)`: a field added to
/// the receipt reaches CI without a change here. Only plain strings.
fn extra_fields(release: &Release) -> Vec<(String, String)> {
    const NAMED: &[&str] = &[
        "sourceSha",
        "imageTag",
        "backendImageUri",
        "frontendImageUri",
        "deploymentVersion",
        "selectedRef",
        "workflowRun",
    ];
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(release) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter(|(key, _)| !NAMED.contains(&key.as_str()))
        .filter_map(|(key, value)| match value {
            serde_json::Value::String(v) => Some((screaming(&key), v)),
            _ => None,
        })
        .collect()
}

/// `backendDigest` -> `BACKEND_DIGEST`.
fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() && !out.is_empty() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Write the receipt, but only for the pair that runs, is healthy and
/// passes endpoint smoke: a receipt for an unproven pair would teach
/// rollback to restore it. The dry run checks the same, so its answer is
/// the one `--execute` would give.
pub async fn record_release(
    config: &Config,
    args: &ReleaseArgs,
    report: &mut Report,
) -> Result<(), Error> {
    if args.allow_empty {
        // A flag a command does not honour is refused, never ignored.
        return Err(Error::invalid(
            "--allow-empty",
            "record-release renders no env file",
            "drop --allow-empty (it belongs to runtime deploy and runtime-env)",
        ));
    }
    let mut release = release(args, config)?;
    // The digests are those the deploy of this pair resolved and runs: the
    // receipt then names the bytes that passed smoke, not just the tag.
    if let Ok(Some(current)) = release::read_current(config) {
        let current = current.release;
        if current.backend_image_uri == release.backend_image_uri
            && current.frontend_image_uri == release.frontend_image_uri
        {
            release = release.with_digests(current.backend_digest, current.frontend_digest);
        }
    }
    report.marker(&format!("{RECEIPT}_PATH"), config.receipt.path.to_string());
    release.add_markers(report, RECEIPT);
    let docker = crate::docker::connect(config).await?;
    let states = compose::service_states(&docker, &config.runtime.project_name).await?;
    for (service, uri) in [
        (&config.runtime.backend_service, release.backend_ref()),
        (&config.runtime.frontend_service, release.frontend_ref()),
    ] {
        let problem = match states.iter().find(|s| &s.service == service) {
            None => Some(format!("service {service} has no container")),
            Some(s) if s.image != uri => {
                Some(format!("service {service} runs {}, not {uri}", s.image))
            }
            Some(s)
                if !(s.health.as_deref() == Some("healthy")
                    || (s.health.is_none() && s.state == "running")) =>
            {
                Some(format!(
                    "service {service} is {} (health: {}), not running and healthy",
                    s.state,
                    s.health.as_deref().unwrap_or("none")
                ))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            report.marker(&format!("{RECEIPT}_RESULT"), "refused");
            return Err(Error::Gate {
                reason: format!(
                    "{problem}; a receipt is recorded only for the pair that runs and passed smoke; nothing was written"
                ),
            });
        }
    }
    crate::output::stage(crate::error::Stage::Smoke);
    let smoked = smoke::run(config, &docker, report)
        .await
        .and_then(|outcome| outcome.gate());
    match smoked {
        Ok(()) => {}
        Err(Error::Gate { reason }) => {
            report.marker(&format!("{RECEIPT}_RESULT"), "refused");
            return Err(Error::Gate {
                reason: format!("{reason}; a receipt is recorded only for a pair that passed endpoint smoke; nothing was written"),
            });
        }
        // Docker stopped answering between the checks: not a refusal.
        Err(other) => {
            report.marker(&format!("{RECEIPT}_RESULT"), "failed");
            return Err(other);
        }
    }
    if !args.execute.execute {
        report.marker(&format!("{RECEIPT}_RESULT"), "planned");
        log::info!(
            "dry run: the receipt would be written to {}; rerun with --execute",
            config.receipt.path
        );
        return Ok(());
    }
    crate::output::stage(crate::error::Stage::RecordRelease);
    let receipt = release::write_receipt(config, &release)?;
    report.marker(&format!("{RECEIPT}_RECORDED_AT"), &receipt.recorded_at);
    report.marker(&format!("{RECEIPT}_SCHEMA_VERSION"), receipt.schema_version);
    report.marker(&format!("{RECEIPT}_RESULT"), "recorded");
    log::info!(
        "recorded the last-good receipt for {} at {}",
        release.image_tag,
        config.receipt.path
    );
    // Never changes this command's outcome: the receipt is written.
    crate::images::prune::after_record(config, report).await;
    Ok(())
}

/// Redeploy the receipt's pair. Never touches the database, SSM parameters
/// or media: it is a deploy of known-good images and nothing else.
pub async fn rollback(config: &Config, execute: bool, report: &mut Report) -> Result<(), Error> {
    report.marker(
        &format!("{ROLLBACK}_RECEIPT_PATH"),
        config.receipt.path.to_string(),
    );
    let receipt = match release::read_receipt(config) {
        Ok(Some(receipt)) => receipt,
        Ok(None) => {
            report.marker(&format!("{ROLLBACK}_RESULT"), "skipped-no-receipt");
            return Err(Error::NothingToDo {
                reason: format!(
                    "no last-good receipt at {}; record one after a known-good deploy",
                    config.receipt.path
                ),
            });
        }
        Err(e) => {
            report.marker(&format!("{ROLLBACK}_RESULT"), "failed");
            return Err(e);
        }
    };
    let release = receipt.release;
    report.marker(&format!("{ROLLBACK}_RESTORED_SHA"), &release.source_sha);
    report.marker(&format!("{ROLLBACK}_IMAGE_TAG"), &release.image_tag);
    report.marker(
        &format!("{ROLLBACK}_DEPLOYMENT_VERSION"),
        &release.deployment_version,
    );
    report.marker(
        &format!("{ROLLBACK}_BACKEND_IMAGE"),
        &release.backend_image_uri,
    );
    report.marker(
        &format!("{ROLLBACK}_FRONTEND_IMAGE"),
        &release.frontend_image_uri,
    );
    release.add_digest_markers(report, ROLLBACK);
    report.marker(&format!("{ROLLBACK}_RECORDED_AT"), &receipt.recorded_at);
    log::info!(
        "rolling back to {} ({}, recorded {})",
        release.image_tag,
        release.deployment_version,
        receipt.recorded_at
    );
    deploy::run(
        config,
        &release,
        Options {
            execute,
            env: EnvPolicy::Required,
            record_as: Some("rollback"),
        },
        report,
        ROLLBACK,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_become_marker_names() {
        assert_eq!(screaming("backendDigest"), "BACKEND_DIGEST");
        assert_eq!(screaming("frontendDigest"), "FRONTEND_DIGEST");
        assert_eq!(screaming("x"), "X");
    }

    #[test]
    fn named_fields_are_not_printed_twice() {
        // From JSON, not a struct literal: fields added later default.
        let release: Release = serde_json::from_value(serde_json::json!({
            "sourceSha": "a".repeat(40),
            "imageTag": format!("sha-{}", "a".repeat(40)),
            "backendImageUri": "r/b:t",
            "frontendImageUri": "r/f:t",
            "deploymentVersion": "1",
            "selectedRef": "develop",
            "workflowRun": {"name": "deploy-dev.yml"}
        }))
        .expect("a release");
        assert_eq!(extra_fields(&release), Vec::new());
    }
}
