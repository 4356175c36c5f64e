//! The one-shot jobs the agent execs in the API container: the two seeds of
//! `database reset` and the read-only media discrepancy report.
//!
//! Their output imitates what the runbook describes (the dev seed's known
//! event-series import warnings, the report's JSON on stdout with progress on
//! stderr), so the agent's counting and parsing is tested on realistic text.

use std::time::Duration;

/// How many `warning:` lines `seed-dev` prints; tests assert this count.
pub const SEED_DEV_WARNINGS: usize = 3;

const SEED_TABLE: &str = "CREATE TABLE IF NOT EXISTS seed_marker (
    id serial PRIMARY KEY,
    kind text NOT NULL,
    label text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// Test knobs shared by every job: `FAKE_JOB_SLEEP_SECS` makes a job slow
/// (timeout tests), `FAKE_PRINT_ENV=A,B` prints those variables (redaction
/// tests: the agent must mask them).
pub async fn maybe_sleep_and_print_env() {
    if let Ok(names) = std::env::var("FAKE_PRINT_ENV") {
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let value = std::env::var(name).unwrap_or_default();
            println!("env {name}={value}");
        }
    }
    if let Some(secs) = std::env::var("FAKE_JOB_SLEEP_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        eprintln!("sleeping {secs}s (FAKE_JOB_SLEEP_SECS)");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

fn fail_requested(step: &str) -> bool {
    std::env::var("FAKE_SEED_FAIL").is_ok_and(|v| match step {
        "dev" => v == "1" || v == "dev",
        _ => v == step,
    })
}

async fn insert_rows(kind: &str, labels: &[&str]) -> Result<u64, String> {
    let client = crate::connect(&crate::database_url()?).await?;
    client
        .batch_execute(SEED_TABLE)
        .await
        .map_err(|e| format!("cannot create seed_marker: {e}"))?;
    let mut inserted = 0;
    for label in labels {
        inserted += client
            .execute(
                "INSERT INTO seed_marker (kind, label) VALUES ($1, $2)",
                &[&kind, label],
            )
            .await
            .map_err(|e| format!("cannot insert into seed_marker: {e}"))?;
    }
    Ok(inserted)
}

pub async fn seed_base() -> Result<(), String> {
    println!("seed-base: seeding reference data");
    if fail_requested("base") {
        return Err("seed-base: failing on purpose (FAKE_SEED_FAIL=base)".into());
    }
    let n = insert_rows("base", &["genres", "countries", "venue-types"]).await?;
    println!("seed-base: inserted {n} rows into seed_marker");
    println!("seed-base: done");
    Ok(())
}

pub async fn seed_dev() -> Result<(), String> {
    println!("seed-dev: importing development data");
    let n = insert_rows("dev", &["artists", "events", "event-series"]).await?;
    println!("seed-dev: inserted {n} rows into seed_marker");
    let warnings = [
        "warning: event series \"Summer Sessions 2024\" has no venue; imported without one",
        "warning: event series \"Jazz Brunch\" recurrence rule RRULE:FREQ=MONTHLY;BYDAY=5SU skipped (no fifth Sunday)",
        "warning: event series \"Open Mic\" references unknown artist id 4711; link dropped",
    ];
    debug_assert_eq!(warnings.len(), SEED_DEV_WARNINGS);
    for w in warnings {
        println!("{w}");
    }
    if fail_requested("dev") {
        return Err("seed-dev: import aborted (FAKE_SEED_FAIL=1)".into());
    }
    println!("seed-dev: done with {} warnings", SEED_DEV_WARNINGS);
    Ok(())
}

/// The report document (schema version 1, see README.md). Deterministic so
/// tests can assert the agent's markers against fixed numbers.
pub fn default_report(bucket: &str, prefix: &str, clean: bool) -> serde_json::Value {
    let (missing, orphans) = if clean {
        (vec![], vec![])
    } else {
        (
            vec![
                serde_json::json!({"mediaId": "8f14e45f-ceea-467f-a0e6-6b1c0e1d2c01", "key": format!("{prefix}events/8f14e45f/cover.jpg")}),
                serde_json::json!({"mediaId": "c9f0f895-fb98-4b91-9f54-2a1e0c4d3e02", "key": format!("{prefix}artists/c9f0f895/portrait.png")}),
            ],
            vec![serde_json::json!({"key": format!("{prefix}tmp/upload-1716200000000.jpg")})],
        )
    };
    let total = missing.len() + orphans.len();
    serde_json::json!({
        "schemaVersion": 1,
        "scope": {"bucket": bucket, "prefix": prefix},
        "rowsInspected": 128,
        "objectsInspected": 127,
        "discrepancies": {"missingObject": missing, "orphanObject": orphans},
        "totalDiscrepancies": total,
    })
}

pub async fn media_report() -> Result<(), String> {
    if let Ok(text) = std::env::var("FAKE_MEDIA_REPORT_JSON") {
        eprintln!("media-report: printing FAKE_MEDIA_REPORT_JSON verbatim");
        print!("{text}");
        return Ok(());
    }
    if let Ok(path) = std::env::var("FAKE_MEDIA_REPORT_FILE") {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read FAKE_MEDIA_REPORT_FILE {path}: {e}"))?;
        eprintln!("media-report: printing {path} verbatim");
        print!("{text}");
        return Ok(());
    }
    let bucket = std::env::var("MEDIA_BUCKET").unwrap_or_else(|_| "wavemap-dev-media".into());
    let prefix = std::env::var("MEDIA_PREFIX").unwrap_or_else(|_| "media/".into());
    let clean = std::env::var("FAKE_MEDIA_CLEAN").is_ok_and(|v| v == "1");
    if std::env::var("FAKE_MEDIA_FAIL").is_ok_and(|v| v == "1") {
        return Err("media-report: cannot list the bucket (FAKE_MEDIA_FAIL=1)".into());
    }
    eprintln!("media-report: listing s3://{bucket}/{prefix}");
    eprintln!("media-report: inspected 128 media rows and 127 objects");
    let report = default_report(&bucket, &prefix, clean);
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{text}");
    eprintln!(
        "media-report: {} discrepancies",
        report["totalDiscrepancies"]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_add_up() {
        let r = default_report("b", "media/", false);
        assert_eq!(r["schemaVersion"], 1);
        assert_eq!(r["scope"]["bucket"], "b");
        let missing = r["discrepancies"]["missingObject"].as_array().unwrap();
        let orphan = r["discrepancies"]["orphanObject"].as_array().unwrap();
        assert_eq!((missing.len(), orphan.len()), (2, 1));
        assert_eq!(r["totalDiscrepancies"], 3);
        assert!(missing[0]["key"].as_str().unwrap().starts_with("media/"));
        let clean = default_report("b", "media/", true);
        assert_eq!(clean["totalDiscrepancies"], 0);
    }
}
