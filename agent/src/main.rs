//! `wavemap-agent`: parse, load config, run one command, print the report,
//! exit with the contract's code. All the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use wavemap_agent::cli::{Cli, Command};
use wavemap_agent::commands;
use wavemap_agent::config::{Config, DEFAULT_CONFIG_PATH};
use wavemap_agent::error::{exit, Chain, Error, Stage};
use wavemap_agent::logging;
use wavemap_agent::output::{redact, Report};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are successes; bad flags are exit 2.
            let code = if e.use_stderr() {
                exit::INVALID
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    // Packaging's man page and completions: no config, no markers.
    if let Command::Generate { what } = cli.command {
        return match wavemap_agent::generate::write(what, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wavemap-agent: cannot write to stdout: {e}");
                ExitCode::from(exit::FAILED as u8)
            }
        };
    }
    logging::init(cli.verbose);
    let code = run(&cli);
    ExitCode::from(code as u8)
}

fn run(cli: &Cli) -> i32 {
    let mut report = Report::new();
    let (config_path, explicit) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let result = Config::load(&config_path, explicit)
        .map_err(Error::from)
        .and_then(|config| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| {
                    Error::failed(Stage::Start, format!("cannot start the async runtime: {e}"))
                })?;
            runtime.block_on(commands::run(cli, &config, &config_path, &mut report))
        });
    let code = match &result {
        Ok(()) => exit::OK,
        Err(e) => e.exit_code(),
    };
    if let Err(e) = &result {
        report.marker("WAVEMAP_AGENT_ERROR", e.kind());
        log::error!("{}", redact(&Chain(e).to_string()));
    }
    report.marker("WAVEMAP_AGENT_EXIT_CODE", code);
    if let Err(e) = report.print(cli.json, code) {
        // A closed stdout (the reader went away) is not worth a second error.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            log::error!("cannot write markers to stdout: {e}");
        }
    }
    code
}
