//! `database status | migrate | reset`.
//!
//! Status is read-only: journal from the image, ledger from the database,
//! classification, markers, exit 3 when the gate blocks. Migrate is status,
//! then the configured migrate job in the API container only when the state
//! is `behind`, then status again. Reset is destructive and asks for the
//! environment name; it runs migrate, base seed and dev seed as jobs and
//! counts warnings (the dev seed's known event-series warnings are not a
//! failure) and keeps evidence of them: the first three lines and a shape
//! fingerprint that changes only when the kind of warnings does.
//!
//! Every command works on one database ([`source::resolve`]): the
//! operator's `--database-url` / `database.url`, which the jobs then get as
//! their `DATABASE_URL`, else the URL the API container runs with, which
//! its jobs use anyway. The gate, the advisory lock and the jobs cannot
//! disagree; an env file that says otherwise is reported
//! (`WAVEMAP_DATABASE_URL_MISMATCH`).
//!
//! Both destructive commands are honest about their flags and exclusive on
//! their database: a flag the job cannot honour is refused with exit 2; a
//! job exec left running by a killed agent is waited for (or exit 75); and
//! the PostgreSQL advisory lock ([`crate::database::advisory`]) is held for
//! the jobs' whole run and checked before and after every job, so a dead
//! lock session stops the operation before the next step.

use serde::Serialize;

use crate::cli::{DatabaseCommand, DatabaseTarget};
use crate::commands::Invocation;
use crate::config::Config;
use crate::database::advisory;
use crate::database::classify::{self, Gate, State, Status};
use crate::database::journal::Journal;
use crate::database::ledger::{self, LedgerError, Target};
use crate::database::source;
use crate::error::{Dependency, Error, Result, Stage};
use crate::fsutil;
use crate::jobs::{self, Job};
use crate::output::Report;

pub async fn run(command: &DatabaseCommand, inv: &mut Invocation<'_>) -> Result<()> {
    match command {
        DatabaseCommand::Status {
            allow_migrate,
            target,
        } => status(inv, *allow_migrate, target).await,
        DatabaseCommand::Migrate { execute, target } => migrate(inv, execute.execute, target).await,
        DatabaseCommand::Reset {
            execute,
            confirm,
            target,
        } => reset(inv, execute.execute, confirm.as_deref(), target).await,
    }
}

/// The inputs of a status check, kept so migrate can re-read only the ledger.
struct Inputs {
    journal: Journal,
    journal_origin: String,
    database: source::Resolved,
    table: Target,
}

async fn inputs(config: &Config, target: &DatabaseTarget) -> Result<Inputs> {
    crate::output::stage(Stage::Journal);
    let table = Target {
        schema: target
            .migrations_schema
            .clone()
            .unwrap_or_else(|| config.database.migrations_schema.clone()),
        table: target
            .migrations_table
            .clone()
            .unwrap_or_else(|| config.database.migrations_table.clone()),
    };
    let database = source::resolve(config, target.database_url.as_deref()).await?;
    let loaded = load_journal(config, target.migrations_dir.as_deref()).await?;
    log::info!(stage = "database"; "journal: {} entries from {}", loaded.journal.migrations.len(), loaded.origin);
    Ok(Inputs {
        journal: loaded.journal,
        journal_origin: loaded.origin,
        database,
        table,
    })
}

/// The journal from `dir`, or from the API image (the current release's
/// when no API container runs).
async fn load_journal(config: &Config, dir: Option<&std::path::Path>) -> Result<source::Loaded> {
    let current = match dir {
        Some(_) => None,
        None => crate::release::read_current(config)?.map(|c| c.release),
    };
    source::load_journal(config, dir, current.as_ref()).await
}

/// `DATABASE_URL=<url>` for the job when the operator named the database
/// (`--database-url`, `database.url`): the job then works on the database
/// the gate read. The container's own URL needs nothing: it is the job's.
fn job_env(config: &Config, database: &source::Resolved) -> Vec<String> {
    match database.origin.explicit() {
        true => vec![format!(
            "{}={}",
            config.database.url_env_variable,
            database.dsn.text()
        )],
        false => Vec::new(),
    }
}

/// Which database, and whether the env file disagrees with the container.
fn url_markers(report: &mut Report, database: &source::Resolved) {
    report.marker("WAVEMAP_DATABASE_URL_SOURCE", database.origin.name());
    if !database.mismatch.is_empty() {
        report.marker("WAVEMAP_DATABASE_URL_MISMATCH", database.mismatch.join(","));
    }
}

/// Take the advisory lock on the database the jobs work on.
async fn advisory_lock(config: &Config, database: &source::Resolved) -> Result<advisory::Held> {
    crate::output::stage(Stage::AdvisoryLock);
    advisory::acquire(
        &database.dsn,
        config.database.connect_timeout.duration(),
        crate::operation::wait_limit(
            "the advisory lock wait (--lock-timeout, agent.lock_timeout)",
            crate::operation::lock_timeout(),
        )?,
        ledger_error,
    )
    .await
    .map_err(|e| match e {
        Error::Lock(_) if crate::operation::deadline_passed() => crate::operation::out_of_time(
            format!("while waiting for the advisory lock ({e}); no job was started"),
        ),
        e => e,
    })
}

async fn check(config: &Config, inputs: &Inputs, allow_migrate: bool) -> Result<Status> {
    crate::output::stage(Stage::Ledger);
    let ledger = ledger::read(
        &inputs.database.dsn,
        &inputs.table,
        config.database.connect_timeout.duration(),
    )
    .await
    .map_err(ledger_error)?;
    let status = classify::classify(&inputs.journal, &ledger, allow_migrate);
    for line in status.explain(&inputs.table.display()) {
        log::info!(stage = "database"; "{line}");
    }
    Ok(status)
}

fn ledger_error(e: LedgerError) -> Error {
    if e.is_unavailable() {
        return Error::unavailable(Dependency::Postgres, e);
    }
    match e {
        LedgerError::Dsn(e) => Error::invalid(
            "database URL",
            e.to_string(),
            "pass postgres://user:password@host:port/db[?sslmode=verify-full&sslrootcert=/path/ca.pem]",
        ),
        other => Error::caused(Stage::Ledger, other),
    }
}

fn status_markers(report: &mut Report, status: &Status, origin: &str) {
    report.marker("WAVEMAP_DATABASE_STATUS_STATE", status.state);
    report.marker(
        "WAVEMAP_DATABASE_STATUS_EXPECTED_COUNT",
        status.expected_count,
    );
    report.marker(
        "WAVEMAP_DATABASE_STATUS_APPLIED_COUNT",
        status.applied_count,
    );
    report.marker(
        "WAVEMAP_DATABASE_STATUS_PENDING_COUNT",
        status.pending_count,
    );
    report.marker("WAVEMAP_DATABASE_STATUS_GATE", status.gate);
    report.marker("WAVEMAP_DATABASE_STATUS_JOURNAL_SOURCE", origin);
}

/// The cache `status` shows: the last answer, not a live one.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cached<'a> {
    schema_version: u32,
    state: State,
    gate: Gate,
    expected_count: usize,
    applied_count: usize,
    pending_count: usize,
    journal_source: &'a str,
    checked_at: String,
}

fn save_status(config: &Config, status: &Status, origin: &str) {
    let cached = Cached {
        schema_version: 1,
        state: status.state,
        gate: status.gate,
        expected_count: status.expected_count,
        applied_count: status.applied_count,
        pending_count: status.pending_count,
        journal_source: origin,
        checked_at: crate::clock::now(),
    };
    let path = config.database_status_path();
    let result = serde_json::to_vec_pretty(&cached)
        .map_err(|e| Error::caused(Stage::StatusCache, e))
        .and_then(|mut bytes| {
            bytes.push(b'\n');
            fsutil::ensure_dir(config.agent.state_dir.as_path(), fsutil::AGENT_DIR_MODE)?;
            Ok(fsutil::write_atomic(&path, &bytes, 0o644)?)
        });
    if let Err(e) = result {
        log::warn!(stage = "database"; "cannot save the last status to {}: {e}", path.display());
    }
}

async fn status(
    inv: &mut Invocation<'_>,
    allow_migrate: bool,
    target: &DatabaseTarget,
) -> Result<()> {
    let inputs = inputs(inv.config, target).await?;
    url_markers(inv.report, &inputs.database);
    let status = check(inv.config, &inputs, allow_migrate).await?;
    status_markers(inv.report, &status, &inputs.journal_origin);
    inv.report.set_data(serde_json::json!({
        "status": status,
        "journal": {"source": inputs.journal_origin, "layout": inputs.journal.layout},
        "ledger": inputs.table.display(),
    }));
    save_status(inv.config, &status, &inputs.journal_origin);
    gate_result(&status)
}

fn gate_result(status: &Status) -> Result<()> {
    match status.gate {
        Gate::Pass | Gate::Migrate => Ok(()),
        Gate::Block => Err(Error::Gate {
            reason: format!(
                "database gate: state {} ({} expected, {} applied, {} pending)",
                status.state, status.expected_count, status.applied_count, status.pending_count
            ),
        }),
    }
}

/// `migrate --execute` refuses a ledger other than the migrator's: the job
/// writes the configured one, whatever status was pointed at.
fn migrate_flags(config: &Config, target: &DatabaseTarget) -> Result<()> {
    for (flag, given, configured) in [
        (
            "--migrations-schema",
            &target.migrations_schema,
            &config.database.migrations_schema,
        ),
        (
            "--migrations-table",
            &target.migrations_table,
            &config.database.migrations_table,
        ),
    ] {
        if given.as_ref().is_some_and(|g| g != configured) {
            return Err(Error::invalid(
                flag,
                format!("the migrate job writes the migrator's own ledger ({}.{}), not the one this flag names", config.database.migrations_schema, config.database.migrations_table),
                "drop the flag with --execute (status may read another ledger), or set database.migrations_schema / migrations_table",
            ));
        }
    }
    Ok(())
}

async fn migrate(inv: &mut Invocation<'_>, execute: bool, target: &DatabaseTarget) -> Result<()> {
    let config = inv.config;
    if execute {
        migrate_flags(config, target)?;
        // A migrator a killed agent left running must end first, so the
        // status below is what it left.
        jobs::wait_for_running_jobs(config).await?;
    }
    let inputs = inputs(config, target).await?;
    url_markers(inv.report, &inputs.database);
    // Held from the first look at the ledger to the last: no other host or
    // shell migrates this database in between.
    let lock = match execute {
        true => Some(advisory_lock(config, &inputs.database).await?),
        false => None,
    };
    let result = migrate_locked(inv, execute, target, &inputs, lock.as_ref()).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

async fn migrate_locked(
    inv: &mut Invocation<'_>,
    execute: bool,
    target: &DatabaseTarget,
    inputs: &Inputs,
    lock: Option<&advisory::Held>,
) -> Result<()> {
    let config = inv.config;
    let before = check(config, inputs, true).await?;
    status_markers(inv.report, &before, &inputs.journal_origin);
    inv.report
        .marker("WAVEMAP_DATABASE_MIGRATE_BEFORE_STATE", before.state);
    inv.report.marker(
        "WAVEMAP_DATABASE_MIGRATE_PENDING_COUNT",
        before.pending_count,
    );
    if before.state == State::UpToDate {
        // Rerunning a migrate that was killed after it applied everything
        // must succeed: nothing to apply is the state migrate aims for.
        save_status(config, &before, &inputs.journal_origin);
        log::info!(stage = "migrate"; "the database is up-to-date; nothing to apply, nothing run");
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "up-to-date");
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_AFTER_STATE", before.state);
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_APPLIED_COUNT", 0);
        return Ok(());
    }
    if before.state != State::Behind {
        save_status(config, &before, &inputs.journal_origin);
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "blocked");
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_APPLIED_COUNT", 0);
        let reason = format!(
            "the database is {}; migrate only applies pending entries to a `behind` database, and the migrator cannot repair this state",
            before.state
        );
        return Err(Error::Gate { reason });
    }
    let argv = &config.jobs.migrate_command;
    let names: Vec<&str> = before.pending.iter().map(|e| e.name.as_str()).collect();
    if !execute {
        log::info!(stage = "migrate"; "dry run: would run `{}` in the API container to apply {} entries: {}", argv.join(" "), names.len(), names.join(", "));
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "planned");
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_APPLIED_COUNT", 0);
        return Ok(());
    }
    if let Some(dir) = &target.migrations_dir {
        // The gate read a local folder; the job applies the image's journal.
        // Only the same journal makes that gate the job's gate.
        let image = load_journal(config, None).await?;
        let hashes = |j: &Journal| {
            j.migrations
                .iter()
                .map(|m| m.hash.clone())
                .collect::<Vec<_>>()
        };
        if hashes(&image.journal) != hashes(&inputs.journal) {
            inv.report
                .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "refused");
            return Err(Error::invalid(
                "--migrations-dir",
                format!(
                    "{} differs from the journal the migrate job applies ({})",
                    dir.display(),
                    image.origin
                ),
                "drop --migrations-dir with --execute so the gate reads the image's journal",
            ));
        }
    }
    log::info!(stage = "migrate"; "applying {} entries: {}", names.len(), names.join(", "));
    let job = Job {
        name: "migrate",
        argv,
        capture_stdout: false,
    };
    let env = job_env(config, &inputs.database);
    if let Some(lock) = lock {
        if let Err(e) = lock.check("the migrate job").await {
            inv.report
                .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "failed");
            return Err(e);
        }
    }
    let outcome = match jobs::run_with_env(config, &job, &env).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let result = match e {
                Error::Interrupted { .. } => "interrupted",
                _ => "failed",
            };
            inv.report.marker("WAVEMAP_DATABASE_MIGRATE_RESULT", result);
            return Err(e);
        }
    };
    let after = check(config, inputs, false).await;
    let after = match after {
        Ok(after) => after,
        Err(e) => {
            inv.report
                .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "failed");
            return Err(e);
        }
    };
    save_status(config, &after, &inputs.journal_origin);
    status_markers(inv.report, &after, &inputs.journal_origin);
    inv.report
        .marker("WAVEMAP_DATABASE_MIGRATE_AFTER_STATE", after.state);
    inv.report.marker(
        "WAVEMAP_DATABASE_MIGRATE_APPLIED_COUNT",
        after.applied_count.saturating_sub(before.applied_count),
    );
    if let Some(lock) = lock {
        // The job ran; whether it ran alone is what this says.
        if let Err(e) = lock.check("the status read after the migrate job").await {
            inv.report
                .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "failed");
            return Err(e);
        }
    }
    if !outcome.success() {
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "failed");
        return Err(Error::failed(
            Stage::Migrate,
            format!(
                "`{}` exited {}; the database is now {}",
                argv.join(" "),
                outcome.exit_code,
                after.state
            ),
        ));
    }
    if after.state != State::UpToDate {
        inv.report
            .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "failed");
        return Err(Error::failed(
            Stage::Migrate,
            format!(
                "the migrate job exited 0 but the database is {} afterwards, not up-to-date",
                after.state
            ),
        ));
    }
    inv.report
        .marker("WAVEMAP_DATABASE_MIGRATE_RESULT", "applied");
    Ok(())
}

/// One step of reset, in order, with its marker.
struct Step<'a> {
    name: &'static str,
    marker: &'static str,
    argv: &'a [String],
}

/// Reset runs the image's own migrator and seeds: a flag that would point
/// them at another journal or ledger cannot be honoured, so it is refused.
fn reset_flags(target: &DatabaseTarget) -> Result<()> {
    for (flag, given) in [
        ("--migrations-dir", target.migrations_dir.is_some()),
        ("--migrations-schema", target.migrations_schema.is_some()),
        ("--migrations-table", target.migrations_table.is_some()),
    ] {
        if given {
            return Err(Error::invalid(
                flag,
                "reset runs the API image's own migrator and seeds, which read neither a local folder nor another ledger",
                "drop the flag (`database status` takes it to read another journal or ledger)",
            ));
        }
    }
    Ok(())
}

async fn reset(
    inv: &mut Invocation<'_>,
    execute: bool,
    confirm: Option<&str>,
    target: &DatabaseTarget,
) -> Result<()> {
    let config = inv.config;
    let environment = &config.agent.environment;
    if let Err(e) = reset_flags(target) {
        inv.report
            .marker("WAVEMAP_DATABASE_RESET_RESULT", "refused");
        return Err(e);
    }
    let steps = [
        Step {
            name: "migrate",
            marker: "WAVEMAP_DATABASE_RESET_MIGRATE_RESULT",
            argv: &config.jobs.migrate_command,
        },
        Step {
            name: "base-seed",
            marker: "WAVEMAP_DATABASE_RESET_BASE_SEED_RESULT",
            argv: &config.jobs.base_seed_command,
        },
        Step {
            name: "dev-seed",
            marker: "WAVEMAP_DATABASE_RESET_DEV_SEED_RESULT",
            argv: &config.jobs.dev_seed_command,
        },
    ];
    inv.report
        .marker("WAVEMAP_DATABASE_RESET_ENVIRONMENT", environment);
    if !execute {
        log::info!(stage = "reset"; "dry run: `database reset --execute --confirm {environment}` would run in the API container of project `{}`:", config.runtime.project_name);
        for (i, step) in steps.iter().enumerate() {
            log::info!(stage = "reset"; "  {}. {}: `{}`", i + 1, step.name, step.argv.join(" "));
            inv.report.marker(step.marker, "planned");
        }
        if confirm.is_some_and(|c| c != environment) {
            log::warn!(stage = "reset"; "--confirm does not match the environment name; --execute would refuse it");
        }
        inv.report.marker("WAVEMAP_DATABASE_RESET_WARNING_COUNT", 0);
        inv.report
            .marker("WAVEMAP_DATABASE_RESET_RESULT", "planned");
        return Ok(());
    }
    if confirm != Some(environment.as_str()) {
        inv.report
            .marker("WAVEMAP_DATABASE_RESET_RESULT", "refused");
        let problem = match confirm {
            None => "destructive reset needs the environment name as confirmation".to_owned(),
            Some(_) => "the confirmation does not match the environment name".to_owned(),
        };
        return Err(Error::invalid(
            "--confirm",
            problem,
            format!("pass --confirm {environment} (agent.environment) to reset this database"),
        ));
    }
    jobs::wait_for_running_jobs(config).await?;
    // `None`: no database named anywhere and no API container; the first
    // job says so.
    let database = source::resolve_if_any(config, target.database_url.as_deref()).await?;
    let (lock, env) = match &database {
        Some(database) => {
            url_markers(inv.report, database);
            (
                Some(advisory_lock(config, database).await?),
                job_env(config, database),
            )
        }
        None => (None, Vec::new()),
    };
    let mut warnings = 0;
    let mut samples: Vec<String> = Vec::new();
    let mut shapes = std::collections::BTreeSet::new();
    let mut failure = None;
    for step in &steps {
        if failure.is_some() {
            inv.report.marker(step.marker, "skipped");
            continue;
        }
        if let Some(lock) = &lock {
            if let Err(e) = lock.check(&format!("the {} step", step.name)).await {
                inv.report.marker(step.marker, "skipped");
                failure = Some(e);
                continue;
            }
        }
        let job = Job {
            name: step.name,
            argv: step.argv,
            capture_stdout: false,
        };
        match jobs::run_with_env(config, &job, &env).await {
            Ok(outcome) => {
                warnings += outcome.warning_count;
                let success = outcome.success();
                samples.extend(outcome.warning_samples);
                shapes.extend(outcome.warning_shapes);
                if success {
                    inv.report.marker(step.marker, "success");
                } else {
                    inv.report.marker(step.marker, "failed");
                    failure = Some(Error::job_failed(
                        step.name,
                        format!("`{}` exited {}", step.argv.join(" "), outcome.exit_code),
                    ));
                }
            }
            Err(e) => {
                let result = match e {
                    Error::Interrupted { .. } => "interrupted",
                    _ => "failed",
                };
                inv.report.marker(step.marker, result);
                failure = Some(e);
            }
        }
    }
    if let Some(lock) = lock {
        if failure.is_none() {
            // The last job ran; whether it ran alone is what this says.
            if let Err(e) = lock.check("the end of reset").await {
                failure = Some(e);
            }
        }
        lock.release().await;
    }
    inv.report
        .marker("WAVEMAP_DATABASE_RESET_WARNING_COUNT", warnings);
    // Evidence, not a verdict: a changed shape is worth reading.
    for (i, sample) in samples.iter().take(3).enumerate() {
        inv.report.marker(
            &format!("WAVEMAP_DATABASE_RESET_WARNING_SAMPLE_{}", i + 1),
            sample,
        );
    }
    if !shapes.is_empty() {
        inv.report.marker(
            "WAVEMAP_DATABASE_RESET_WARNING_SHAPE",
            jobs::shape_fingerprint(&shapes),
        );
    }
    if warnings > 0 {
        log::warn!(stage = "reset"; "{warnings} warning lines (matching {:?}) in the job output, {} distinct kinds; warnings are not a failure", config.jobs.warning_pattern, shapes.len());
    }
    match failure {
        Some(e) => {
            let result = match e {
                Error::Interrupted { .. } => "interrupted",
                _ => "failed",
            };
            inv.report.marker("WAVEMAP_DATABASE_RESET_RESULT", result);
            Err(e)
        }
        None => {
            inv.report
                .marker("WAVEMAP_DATABASE_RESET_RESULT", "success");
            Ok(())
        }
    }
}
