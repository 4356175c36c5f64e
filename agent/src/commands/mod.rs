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
use crate::error::{Error, Result};
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
    if !command.mutates() {
        return dispatch(command, &mut inv).await;
    }
    let timeout = Duration::from_secs(
        cli.lock_timeout
            .unwrap_or_else(|| config.agent.lock_timeout.get()),
    );
    let _lock = lock::acquire(&config.lock_path(), command.name(), timeout).await?;
    let started_at = now();
    let started = Instant::now();
    let args = journal_args(command);
    let entry = |event: &str| journal::Entry {
        event: event.into(),
        command: command.name().into(),
        args: args.clone(),
        pid: std::process::id(),
        started_at: started_at.clone(),
        ended_at: None,
        outcome: None,
        exit_code: None,
        duration_ms: None,
        details: Default::default(),
    };
    journal::append(&config.journal_path(), &entry("start"));
    let result = dispatch(command, &mut inv).await;
    let mut end = entry("end");
    end.ended_at = Some(now());
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    let code = result.as_ref().map_or_else(Error::exit_code, |_| 0);
    end.exit_code = Some(code);
    end.outcome = Some(match &result {
        Ok(()) => "success".into(),
        Err(e) => e.kind().into(),
    });
    for (k, v) in inv.report.markers() {
        if k.ends_with("_RESULT") || k.ends_with("_FAILED_STAGE") || k.ends_with("_STATE") {
            end.details.insert(k.clone(), v.clone().into());
        }
    }
    journal::append(&config.journal_path(), &end);
    result
}

async fn dispatch(command: &Command, inv: &mut Invocation<'_>) -> Result<()> {
    match command {
        Command::Config(ConfigCommand::Check) => config_check(inv),
        Command::Daemon => crate::daemon::run(inv.config).await,
        Command::Status => crate::status::command(inv.config, inv.json, inv.report).await,
        Command::RuntimeConfig(RuntimeConfigCommand::Plan) => runtime_config::plan(inv),
        Command::RuntimeConfig(RuntimeConfigCommand::Live) => runtime_config::live(inv).await,
        Command::RuntimeEnv(e) => runtime_env::run(inv, e.execute).await,
        Command::Runtime(RuntimeCommand::Deploy(args)) => {
            runtime::deploy(inv.config, args, inv.report).await
        }
        Command::Runtime(RuntimeCommand::RecordRelease(args)) => {
            runtime::record_release(inv.config, args, inv.report).await
        }
        Command::Runtime(RuntimeCommand::Rollback(e)) => {
            runtime::rollback(inv.config, e.execute, inv.report).await
        }
        Command::Database(c) => database::run(c, inv).await,
        Command::Media(crate::cli::MediaCommand::DiscrepancyReport(e)) => {
            media::discrepancy_report(inv, *e).await
        }
        Command::Compose(crate::cli::ComposeCommand::Config(args)) => compose::config(inv, args),
    }
}

/// Checks of the command line that need no system access.
fn validate(command: &Command, config: &Config) -> Result<()> {
    match command {
        Command::Runtime(RuntimeCommand::Deploy(args))
        | Command::Runtime(RuntimeCommand::RecordRelease(args)) => {
            crate::release::Release::from_args(args, config).map(|_| ())
        }
        _ => Ok(()),
    }
}

fn config_check(inv: &mut Invocation<'_>) -> Result<()> {
    eprint!("{}", inv.config.to_toml());
    inv.report
        .marker("WAVEMAP_CONFIG_PATH", inv.config_path.display());
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

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
