//! `media discrepancy-report`: run the backend's read-only DB/S3 comparison
//! in the API container and turn its JSON into markers.
//!
//! The report document (schema version 1, written by the backend job; the
//! test stand-in documents it in `tests/fake-backend/README.md`):
//!
//! ```json
//! {"schemaVersion": 1, "scope": {"bucket": "...", "prefix": "..."},
//!  "rowsInspected": 128, "objectsInspected": 127,
//!  "discrepancies": {"missingObject": [{"mediaId": "...", "key": "..."}],
//!                    "orphanObject": [{"key": "..."}]},
//!  "totalDiscrepancies": 3}
//! ```
//!
//! The document is checked, not trusted: a total that disagrees with the
//! lists, a missing field or another schema version is a malformed report
//! (exit 1), because CI reads these markers as evidence. Discrepancies
//! themselves are findings, not failures: the command exits 0.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cli::Execute;
use crate::commands::Invocation;
use crate::error::{Error, Result, Stage};
use crate::jobs::{self, Job};

/// Ids or keys shown per kind.
const SAMPLES: usize = 3;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaReport {
    schema_version: u32,
    scope: Scope,
    rows_inspected: u64,
    objects_inspected: u64,
    discrepancies: BTreeMap<String, Vec<Discrepancy>>,
    total_discrepancies: u64,
}

#[derive(Debug, Deserialize)]
struct Scope {
    bucket: String,
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Discrepancy {
    #[serde(default)]
    media_id: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the report job printed no JSON document on stdout")]
    Empty,
    #[error("the report is not the expected JSON document: {0}")]
    Json(String),
    #[error("the report has schemaVersion {0}; this agent reads version 1")]
    Version(u32),
    #[error("totalDiscrepancies is {total} but the lists hold {counted}")]
    Total { total: u64, counted: u64 },
    #[error("a {kind} entry has neither mediaId nor key")]
    Entry { kind: String },
    #[error("discrepancy kind {kind:?} cannot be a marker name")]
    Kind { kind: String },
}

pub async fn discrepancy_report(inv: &mut Invocation<'_>, execute: Execute) -> Result<()> {
    let config = inv.config;
    let argv = &config.jobs.media_report_command;
    if !execute.execute {
        log::info!(stage = "media-report"; "dry run: would run `{}` in the API container of project `{}` (read-only: it deletes nothing) and turn its JSON into markers", argv.join(" "), config.runtime.project_name);
        inv.report.marker("WAVEMAP_MEDIA_REPORT_RESULT", "planned");
        return Ok(());
    }
    let job = Job {
        name: "media-report",
        argv,
        capture_stdout: true,
    };
    let outcome = match jobs::run(config, &job).await {
        Ok(outcome) => outcome,
        Err(e) => {
            inv.report.marker("WAVEMAP_MEDIA_REPORT_RESULT", "failed");
            return Err(e);
        }
    };
    if !outcome.success() {
        inv.report.marker("WAVEMAP_MEDIA_REPORT_RESULT", "failed");
        return Err(Error::failed(
            Stage::MediaReport,
            format!("`{}` exited {}", argv.join(" "), outcome.exit_code),
        ));
    }
    let report = match parse(&outcome.stdout) {
        Ok(report) => report,
        Err(e) => {
            inv.report.marker("WAVEMAP_MEDIA_REPORT_RESULT", "failed");
            return Err(Error::failed(
                Stage::MediaReport,
                format!("malformed report: {e}"),
            ));
        }
    };
    let scope = format!("s3://{}/{}", report.scope.bucket, report.scope.prefix);
    let r = &mut *inv.report;
    r.marker("WAVEMAP_MEDIA_REPORT_SCOPE", &scope);
    r.marker("WAVEMAP_MEDIA_REPORT_ROWS_INSPECTED", report.rows_inspected);
    r.marker(
        "WAVEMAP_MEDIA_REPORT_OBJECTS_INSPECTED",
        report.objects_inspected,
    );
    r.marker(
        "WAVEMAP_MEDIA_REPORT_TOTAL_DISCREPANCIES",
        report.total_discrepancies,
    );
    for (kind, list) in &report.discrepancies {
        let name = marker_kind(kind);
        r.marker(&format!("WAVEMAP_MEDIA_REPORT_{name}_COUNT"), list.len());
        let sample: Vec<&str> = list.iter().take(SAMPLES).filter_map(sample_id).collect();
        if !sample.is_empty() {
            r.marker(
                &format!("WAVEMAP_MEDIA_REPORT_SAMPLE_{name}"),
                sample.join(","),
            );
        }
        log::info!(stage = "media-report"; "{kind}: {}", list.len());
    }
    let result = if report.total_discrepancies == 0 {
        "clean"
    } else {
        "discrepancies"
    };
    r.marker("WAVEMAP_MEDIA_REPORT_RESULT", result);
    log::info!(stage = "media-report"; "{scope}: {} rows and {} objects inspected, {} discrepancies (nothing was changed)", report.rows_inspected, report.objects_inspected, report.total_discrepancies);
    Ok(())
}

/// The id a person looks up first: the media row for rows, else the key.
fn sample_id(d: &Discrepancy) -> Option<&str> {
    d.media_id.as_deref().or(d.key.as_deref())
}

/// `missingObject` -> `MISSING_OBJECT`.
fn marker_kind(kind: &str) -> String {
    let mut out = String::new();
    for (i, c) in kind.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn parse(stdout: &str) -> std::result::Result<MediaReport, ReportError> {
    let text = stdout.trim();
    if text.is_empty() {
        return Err(ReportError::Empty);
    }
    // The document is the whole stdout, or (when a job prints a line or two
    // before it) everything from the first line that opens an object.
    let report: MediaReport = match serde_json::from_str(text) {
        Ok(report) => report,
        Err(first) => {
            let start = text
                .match_indices('\n')
                .map(|(i, _)| i + 1)
                .find(|&i| text[i..].starts_with('{'));
            match start {
                Some(i) => serde_json::from_str(&text[i..])
                    .map_err(|e| ReportError::Json(e.to_string()))?,
                None => return Err(ReportError::Json(first.to_string())),
            }
        }
    };
    if report.schema_version != 1 {
        return Err(ReportError::Version(report.schema_version));
    }
    let counted: u64 = report.discrepancies.values().map(|l| l.len() as u64).sum();
    if counted != report.total_discrepancies {
        return Err(ReportError::Total {
            total: report.total_discrepancies,
            counted,
        });
    }
    for (kind, list) in &report.discrepancies {
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ReportError::Kind { kind: kind.clone() });
        }
        if list.iter().any(|d| sample_id(d).is_none()) {
            return Err(ReportError::Entry { kind: kind.clone() });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"schemaVersion":1,"scope":{"bucket":"b","prefix":"media/"},
        "rowsInspected":128,"objectsInspected":127,
        "discrepancies":{"missingObject":[{"mediaId":"m1","key":"media/a"},{"mediaId":"m2","key":"media/b"}],
                         "orphanObject":[{"key":"media/tmp/x"}]},
        "totalDiscrepancies":3}"#;

    #[test]
    fn good_report_parses() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.rows_inspected, 128);
        assert_eq!(r.discrepancies["missingObject"].len(), 2);
        assert_eq!(
            sample_id(&r.discrepancies["orphanObject"][0]),
            Some("media/tmp/x")
        );
    }

    #[test]
    fn leading_progress_line_is_skipped() {
        let text = format!("env X=1\n{GOOD}\n");
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn inconsistent_total_is_malformed() {
        let bad = GOOD.replace("\"totalDiscrepancies\":3", "\"totalDiscrepancies\":4");
        assert!(matches!(
            parse(&bad),
            Err(ReportError::Total {
                total: 4,
                counted: 3
            })
        ));
    }

    #[test]
    fn missing_field_and_other_version_are_malformed() {
        assert!(matches!(
            parse(&GOOD.replace("\"rowsInspected\":128,", "")),
            Err(ReportError::Json(_))
        ));
        assert!(matches!(
            parse(&GOOD.replace("\"schemaVersion\":1", "\"schemaVersion\":2")),
            Err(ReportError::Version(2))
        ));
        assert!(matches!(parse("  \n"), Err(ReportError::Empty)));
    }

    #[test]
    fn kinds_become_marker_names() {
        assert_eq!(marker_kind("missingObject"), "MISSING_OBJECT");
        assert_eq!(marker_kind("orphanObject"), "ORPHAN_OBJECT");
    }
}
