//! One file per command group; this file dispatches and wraps every mutating
//! command in the lock and the operation journal.

mod compose;
mod database;
mod media;
mod runtime;
mod runtime_config;
mod runtime_env;

use std::time::{Duration, Instant};

use crate::cli::{Cli, Command, ConfigCommand, RuntimeCommand, RuntimeConfigCommand};
use crate::config::Config;
use crate::error::{Error, Result, Stage};
use crate::journal;
use crate::lock;
use crate::output::Report;

/// Everything a command needs from the invocation.
pub struct Invocation<'a> {
    pub config: &'a Config,
    pub config_path: &'a std::path::Path,
    pub report: &'a mut Report,
    /// `--json`: commands with a human view (status) print it as JSON.
    pub json: bool,
}

/// Run the parsed command. Mutating commands take the lock first and leave a
/// start and an end record in the operation journal.
pub async fn run(
    cli: &Cli,
    config: &Config,
    config_path: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    let command = &cli.command;
    let mut inv = Invocation {
        config,
        config_path,
        report,
        json: cli.json,
    };
    // Bad input is exit 2 before anything else, lock included.
    validate(command, config)?;
    let deadline = match (command, cli.deadline) {
        (Command::Daemon, Some(_)) => {
            return Err(Error::invalid(
                "--deadline",
                "the daemon runs until it is stopped; a deadline bounds one command",
                "drop --deadline from the daemon's command line",
            ));
        }
        (Command::Daemon, None) => {
            if env_deadline()?.is_some() {
                log::info!("{DEADLINE_ENV} bounds one command; the daemon runs until it is stopped and ignores it");
            }
            None
        }
        (_, Some(secs)) => Some(secs),
        (_, None) => env_deadline()?,
    };
    if let Some(secs) = deadline {
        crate::operation::set_deadline(Duration::from_secs(secs));
        crate::operation::arm_deadline();
    }
    if let Some(area) = stage_area(command) {
        crate::output::announce_stages(area, cli.json);
    }
    if !command.mutates() {
        if deadline.is_some() {
            return interruptible(dispatch(command, &mut inv)).await;
        }
        return dispatch(command, &mut inv).await;
    }
    let timeout = Duration::from_secs(
        cli.lock_timeout
            .unwrap_or_else(|| config.agent.lock_timeout.get()),
    );
    crate::operation::begin(timeout);
    // From here a signal no longer kills the process outright: a job in the
    // API container is stopped first and the operation recorded.
    crate::operation::listen()
        .map_err(|e| Error::failed(Stage::Start, format!("cannot handle signals: {e}")))?;
    let lock_path = config.lock_path();
    crate::output::stage(Stage::Lock);
    let lock_wait = crate::operation::wait_limit(
        "the operation lock wait (--lock-timeout, agent.lock_timeout)",
        timeout,
    )?;
    let _lock = tokio::select! {
        lock = lock::acquire(&lock_path, command.name(), lock_wait) => match lock {
            Err(e) if crate::operation::deadline_passed() => {
                return Err(crate::operation::out_of_time(format!(
                    "while waiting for the operation lock ({e}); nothing was started"
                )));
            }
            lock => lock?,
        },
        signal = crate::operation::wait() => {
            return Err(Error::Interrupted {
                signal,
                detail: "while waiting for the lock; nothing was started".into(),
            });
        }
    };
    let started_at = crate::clock::now();
    let started = Instant::now();
    let args = journal_args(command);
    let entry = |event: &str| {
        let mut details = serde_json::Map::new();
        details.insert("operationId".into(), crate::operation::id().into());
        journal::Entry {
            event: event.into(),
            command: command.name().into(),
            args: args.clone(),
            pid: std::process::id(),
            started_at: started_at.clone(),
            ended_at: None,
            outcome: None,
            exit_code: None,
            duration_ms: None,
            details,
        }
    };
    journal::append(&config.journal_path(), &entry("start"));
    let result = interruptible(dispatch(command, &mut inv)).await;
    if let Some(path) = crate::operation::job_log() {
        inv.report.marker("WAVEMAP_AGENT_JOB_LOG", path.display());
    }
    if let Err(Error::Interrupted { signal, .. }) = &result {
        inv.report.marker("WAVEMAP_AGENT_INTERRUPTED", signal);
    }
    let mut end = entry("end");
    end.ended_at = Some(crate::clock::now());
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    let code = result.as_ref().map_or_else(Error::exit_code, |_| 0);
    end.exit_code = Some(code);
    end.outcome = Some(match &result {
        Ok(()) => "success".into(),
        // A deadline stops the command the way a signal does, and is
        // recorded the same way (the marker says which).
        Err(Error::Interrupted { .. }) => "interrupted".into(),
        Err(e) => e.kind().into(),
    });
    for (k, v) in inv.report.markers() {
        if k.ends_with("_RESULT")
            || k.ends_with("_FAILED_STAGE")
            || k.ends_with("_STATE")
            || k.ends_with("_TAG_MOVED")
        {
            end.details.insert(k.clone(), v.clone().into());
        }
    }
    journal::append(&config.journal_path(), &end);
    result
}

/// How long a signalled command may take to stop its job and return.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Run `work` until it ends or a signal comes. On a signal a running job
/// stops itself (the job runner listens too) and `work` returns soon; if it
/// does not within [`STOP_GRACE`], it is dropped. The result is then
/// [`Error::Interrupted`], unless the work completed while stopping.
async fn interruptible(work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::pin!(work);
    let signal = tokio::select! {
        result = &mut work => return past_deadline(result),
        signal = crate::operation::wait() => signal,
    };
    log::warn!("{signal}: stopping");
    match tokio::time::timeout(STOP_GRACE, &mut work).await {
        Ok(Err(e @ Error::Interrupted { .. })) => Err(e),
        Ok(Err(e)) if signal == crate::operation::DEADLINE => Err(crate::operation::out_of_time(
            format!("the budget ran out; the operation ended with: {e}"),
        )),
        Ok(Err(e)) => Err(Error::Interrupted {
            signal,
            detail: format!("the operation ended with: {e}"),
        }),
        // It finished its work while stopping: that is its result.
        Ok(Ok(())) => Ok(()),
        Err(_) => Err(Error::Interrupted {
            signal,
            detail: format!(
                "the operation did not stop within {}s and was abandoned",
                STOP_GRACE.as_secs()
            ),
        }),
    }
}

/// The environment's default for `--deadline`.
const DEADLINE_ENV: &str = "WAVEMAP_AGENT_DEADLINE";

/// `WAVEMAP_AGENT_DEADLINE`, when set and not empty: whole seconds, at
/// least 1; anything else is exit 2 naming the variable.
fn env_deadline() -> Result<Option<u64>> {
    let Some(value) = std::env::var_os(DEADLINE_ENV) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(None);
    }
    match text.trim().parse::<u64>() {
        Ok(secs) if secs >= 1 => Ok(Some(secs)),
        _ => Err(Error::invalid(
            DEADLINE_ENV,
            format!(
                "`{}` is not a whole number of seconds of at least 1",
                text.trim()
            ),
            format!("set {DEADLINE_ENV} to the seconds the command may take, or unset it"),
        )),
    }
}

/// A step whose wait was cut to the budget ends a moment before or after
/// the deadline's timer: either way, the budget ended it, and the result
/// says so (the step's own error, its stage marker included, stays in the
/// detail).
fn past_deadline(result: Result<()>) -> Result<()> {
    match result {
        Err(e)
            if !matches!(e, Error::Interrupted { .. }) && crate::operation::deadline_passed() =>
        {
            Err(crate::operation::out_of_time(format!(
                "the budget ran out; the operation ended with: {e}"
            )))
        }
        other => other,
    }
}

/// The marker area of a command's stage markers (`<area>_STAGE=<stage>`):
/// the commands with stages, which are the ones SSM documents run.
fn stage_area(command: &Command) -> Option<&'static str> {
    use crate::cli::{DatabaseCommand, MediaCommand};
    Some(match command {
        Command::Runtime(RuntimeCommand::Deploy(_)) => "WAVEMAP_RUNTIME_DEPLOY",
        Command::Runtime(RuntimeCommand::Rollback(_)) => "WAVEMAP_RUNTIME_ROLLBACK",
        Command::Runtime(RuntimeCommand::RecordRelease(_)) => "WAVEMAP_RUNTIME_RECEIPT",
        Command::RuntimeEnv(_) => "WAVEMAP_RUNTIME_ENV",
        Command::Database(DatabaseCommand::Status { .. }) => "WAVEMAP_DATABASE_STATUS",
        Command::Database(DatabaseCommand::Migrate { .. }) => "WAVEMAP_DATABASE_MIGRATE",
        Command::Database(DatabaseCommand::Reset { .. }) => "WAVEMAP_DATABASE_RESET",
        Command::Media(MediaCommand::DiscrepancyReport(_)) => "WAVEMAP_MEDIA_REPORT",
        _ => return None,
    })
}

async fn dispatch(command: &Command, inv: &mut Invocation<'_>) -> Result<()> {
    match command {
        Command::Config(ConfigCommand::Check) => config_check(inv),
        Command::Daemon => crate::daemon::run(inv.config).await,
        Command::Status => crate::status::command(inv.config, inv.json, inv.report).await,
        Command::RuntimeConfig(RuntimeConfigCommand::Plan) => runtime_config::plan(inv),
        Command::RuntimeConfig(RuntimeConfigCommand::Live) => runtime_config::live(inv).await,
        Command::RuntimeEnv(e) => runtime_env::run(inv, *e).await,
        Command::Runtime(RuntimeCommand::Deploy(args)) => {
            runtime::deploy(inv.config, args, inv.report).await
        }
        Command::Runtime(RuntimeCommand::RecordRelease(args)) => {
            runtime::record_release(inv.config, args, inv.report).await
        }
        Command::Runtime(RuntimeCommand::Rollback(e)) => {
            runtime::rollback(inv.config, e.execute, inv.report).await
        }
        Command::Runtime(RuntimeCommand::Smoke) => runtime::smoke(inv.config, inv.report).await,
        Command::Runtime(RuntimeCommand::Receipt) => runtime::receipt(inv.config, inv.report),
        Command::Runtime(RuntimeCommand::Prune(e)) => {
            crate::images::prune::run(
                inv.config,
                e.execute,
                inv.report,
                crate::images::prune::PRUNE,
            )
            .await
        }
        Command::Database(c) => database::run(c, inv).await,
        Command::Media(crate::cli::MediaCommand::DiscrepancyReport(e)) => {
            media::discrepancy_report(inv, *e).await
        }
        Command::Compose(crate::cli::ComposeCommand::Config(args)) => compose::config(inv, args),
        // `main` runs it before loading the config; this arm keeps the
        // dispatch whole.
        Command::Generate { what } => crate::generate::write(*what, &mut std::io::stdout().lock())
            .map_err(|e| Error::failed(Stage::Start, format!("cannot write to stdout: {e}"))),
    }
}

/// Checks of the command line that need no system access.
fn validate(command: &Command, config: &Config) -> Result<()> {
    match command {
        Command::Runtime(RuntimeCommand::Deploy(args))
        | Command::Runtime(RuntimeCommand::RecordRelease(args)) => {
            runtime::release(args, config).map(|_| ())
        }
        _ => Ok(()),
    }
}

fn config_check(inv: &mut Invocation<'_>) -> Result<()> {
    // The install log (cloud-init) keeps this: never a password or token.
    eprint!("{}", crate::output::redacted_toml(&inv.config.to_toml()));
    inv.report
        .marker("WAVEMAP_CONFIG_PATH", inv.config_path.display());
    // The contract file is configuration too: a broken one is exit 2 here,
    // before a deploy trips over it.
    let contract = crate::ssm::Contract::load(inv.config)?;
    inv.report.marker(
        "WAVEMAP_CONFIG_CONTRACT_FILE",
        match &contract.contract_file {
            Some(_) => format!("loaded ({} entries)", contract.from_file_count()),
            None => "absent".to_owned(),
        },
    );
    inv.report.marker("WAVEMAP_CONFIG_VALID", "true");
    Ok(())
}

/// Arguments worth keeping in the journal: flag values that identify a
/// release. Nothing else (a database URL could carry a password).
fn journal_args(command: &Command) -> Vec<String> {
    use crate::cli::RuntimeCommand;
    match command {
        Command::Runtime(RuntimeCommand::Deploy(a))
        | Command::Runtime(RuntimeCommand::RecordRelease(a)) => vec![
            format!("--backend-image={}", a.backend_image),
            format!("--frontend-image={}", a.frontend_image),
            format!("--source-sha={}", a.source_sha),
            format!("--deployment-version={}", a.deployment_version),
            "--execute".into(),
        ],
        _ => vec!["--execute".into()],
    }
}
