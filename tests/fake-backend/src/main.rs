//! A stand-in for the Wavemap API image, used by the end-to-end tests.
//!
//! The agent never looks inside the API: it runs the image, probes its health,
//! and execs jobs in it (migrate, seeds, media report). This program behaves
//! like the real backend at exactly those seams, so the agent's database and
//! job code is tested against real Postgres and real containers without the
//! Node application.
//!
//! # Layout
//! - `http`: the tiny HTTP/1.1 responder behind `serve` (`/health`, `/ready`,
//!   also under `/api/v1/`) and `frontend` (`/health`, `/en/ping`, `/api/...`
//!   forwarded to `$API_ORIGIN`: the frontend's rewrite).
//! - `migrate`: Drizzle 0.x node-postgres migrator semantics.
//! - `jobs`: the seeds and the media discrepancy report.
//! - `probe`: availability of services during a deploy, from the project
//!   network (the zero-downtime tests).
//!
//! Knobs for tests are environment variables (see README.md); none of them is
//! needed in normal use.

mod http;
mod jobs;
mod migrate;
mod probe;

use std::process::ExitCode;

const USAGE: &str =
    "usage: fake-backend <serve|frontend|migrate|seed-base|seed-dev|media-report|probe>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        if command != "serve" && command != "frontend" && command != "probe" {
            jobs::maybe_sleep_and_print_env().await;
        }
        match command.as_str() {
            "serve" => http::serve_from_env(false).await,
            "frontend" => http::serve_from_env(true).await,
            "migrate" => migrate::run_from_env().await,
            "seed-base" => jobs::seed_base().await,
            "seed-dev" => jobs::seed_dev().await,
            "media-report" => jobs::media_report().await,
            "probe" => probe::run(&args[1..]).await,
            "--help" | "-h" | "help" => {
                println!("{USAGE}");
                Ok(())
            }
            other => Err(format!("unknown command {other:?}\n{USAGE}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// The connection string every database command uses, like the real backend.
pub(crate) fn database_url() -> Result<String, String> {
    std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set".to_string())
}

/// Connects without TLS and drives the connection on a background task.
pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("database connection error: {e}");
        }
    });
    Ok(client)
}
