//! The command surface of `docs/CONTRACT.md`, in clap.
//!
//! Names mirror the runbook's operator CLI (`runtime deploy`, `database
//! status`, ...). Every mutating command is a dry run unless given
//! `--execute`. This file only parses; `commands` validates and acts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wavemap-agent",
    version,
    about = "On-host deploy agent for the Wavemap runtime (Docker Compose on one EC2 host).",
    long_about = "On-host deploy agent for the Wavemap runtime (Docker Compose on one EC2 host).\n\n\
        Renders env files from SSM Parameter Store, pulls images from ECR, converges the \
        Compose project through the Docker Engine API, runs database and media jobs in the \
        API container, and owns the last-good release receipt that rollback reads.\n\n\
        Mutating commands are dry runs unless given --execute. Markers \
        (WAVEMAP_<AREA>_<FIELD>=value) go to stdout, progress to stderr.\n\n\
        Exit codes: 0 done or planned, 1 failed (markers name the stage), 2 invalid input or \
        config (nothing changed), 3 blocked by a gate, 4 nothing to do, 69 a dependency stayed \
        unavailable, 75 another operation holds the lock."
)]
pub struct Cli {
    /// Configuration file [default: /etc/wavemap-agent/agent.toml]
    #[arg(long, global = true, env = "WAVEMAP_AGENT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print one JSON object on stdout instead of markers
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds a mutating command waits for another one to finish before exit 75
    #[arg(long, global = true, value_name = "SECS")]
    pub lock_timeout: Option<u64>,

    /// Seconds the whole command may take: every wait comes out of this one
    /// budget, and when it runs out the command stops as on SIGTERM
    /// (WAVEMAP_AGENT_ERROR=deadline, exit 1) [env: WAVEMAP_AGENT_DEADLINE]
    // The variable is read in `commands`, not here: the daemon refuses the
    // flag but ignores the variable (it may sit in /etc/default/wavemap-agent,
    // which the daemon's unit reads too).
    #[arg(long, global = true, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub deadline: Option<u64>,

    /// More detail on stderr
    #[arg(long, short, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as the systemd service: boot-time recovery, watchdog, heartbeat
    Daemon,

    /// Operator view: release, receipt, containers, env age, last operations (read-only)
    Status,

    /// Validate the configuration file and print the effective config
    #[command(subcommand)]
    Config(ConfigCommand),

    /// The SSM parameter contract (read-only)
    #[command(subcommand, name = "runtime-config")]
    RuntimeConfig(RuntimeConfigCommand),

    /// Render the env files from SSM Parameter Store
    #[command(name = "runtime-env")]
    RuntimeEnv(RenderArgs),

    /// Deploy, record the last-good receipt, roll back
    #[command(subcommand)]
    Runtime(RuntimeCommand),

    /// Migration status, migrate, reset
    #[command(subcommand)]
    Database(DatabaseCommand),

    /// Media jobs
    #[command(subcommand)]
    Media(MediaCommand),

    /// Check the Compose file the way the agent reads it (read-only)
    #[command(subcommand)]
    Compose(ComposeCommand),

    /// Print the man page or a shell completion script (packaging; needs no config)
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

/// What `generate` prints (`scripts/build-deb` ships each at its Debian path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page, wavemap-agent(1), in roff
    Man,
    /// The bash completion script
    CompleteBash,
    /// The zsh completion script
    CompleteZsh,
}

#[derive(Debug, Subcommand)]
pub enum ComposeCommand {
    /// Load, interpolate and validate the Compose file; print the normalized
    /// project (env values hidden) or, with --hashes, each service's config-hash
    Config(ComposeConfigArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ComposeConfigArgs {
    /// Print each service's config-hash (as `docker compose config --hash '*'`)
    #[arg(long)]
    pub hashes: bool,
    /// The Compose file to check [default: runtime.compose_file from config]
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate the config file, then print the effective config on stderr
    Check,
}

#[derive(Debug, Subcommand)]
pub enum RuntimeConfigCommand {
    /// Print the parameter contract, grouped, with required/optional counts (no cloud call)
    Plan,
    /// Check live SSM metadata (never values): present, missing, wrong type, undeclared
    Live,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Execute {
    /// Make the change (without it: print the plan and change nothing)
    #[arg(long)]
    pub execute: bool,
}

/// `runtime-env`: write or plan, and whether emptying is deliberate.
#[derive(Debug, Clone, Copy, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub execute: Execute,
    /// Render even when the prefix holds 0 parameters or a file with variables would be left with none
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Render env, log into ECR, pull the image pair, converge, wait for health
    Deploy(ReleaseArgs),
    /// Write the last-good receipt for the image pair that runs and is healthy
    #[command(name = "record-release")]
    RecordRelease(ReleaseArgs),
    /// Redeploy the image pair of the last-good receipt
    Rollback(Execute),
    /// Print the last-good receipt as markers (read-only; exit 4 when there is none)
    Receipt,
    /// Endpoint smoke through the frontend's published port (read-only)
    Smoke,
    /// Remove release images no container, release, receipt or recent deploy needs
    Prune(Execute),
}

/// What identifies a release: the image pair and where it came from.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// Backend image URI with an immutable tag (sha-<40 hex>) or digest
    #[arg(long, value_name = "URI")]
    pub backend_image: String,
    /// Frontend image URI with an immutable tag (sha-<40 hex>) or digest
    #[arg(long, value_name = "URI")]
    pub frontend_image: String,
    /// Full git SHA the images were built from (40 hex)
    #[arg(long, value_name = "SHA")]
    pub source_sha: String,
    /// Deployment version (CI's run-derived version string)
    #[arg(long, value_name = "VERSION")]
    pub deployment_version: String,
    /// The ref CI selected (branch, tag or SHA)
    #[arg(long, value_name = "REF")]
    pub selected_ref: Option<String>,
    /// Workflow name that produced this release
    #[arg(long, value_name = "NAME")]
    pub workflow_name: Option<String>,
    /// Workflow run id
    #[arg(long, value_name = "ID")]
    pub workflow_run_id: Option<String>,
    /// Workflow run attempt
    #[arg(long, value_name = "N")]
    pub workflow_run_attempt: Option<String>,
    /// Deploy only: let the env render empty files (0 parameters under the prefix, or a file left with no variable)
    #[arg(long)]
    pub allow_empty: bool,
    #[command(flatten)]
    pub execute: Execute,
}

/// How to reach the journal and the ledger; overrides for operators and tests.
#[derive(Debug, Clone, Args)]
pub struct DatabaseTarget {
    /// Read the Drizzle migrations from this local folder instead of the API image
    #[arg(long, value_name = "DIR")]
    pub migrations_dir: Option<PathBuf>,
    /// Connection string (never printed); default: config, then the rendered backend env
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Schema of the migration ledger [default: from config, "drizzle"]
    #[arg(long, value_name = "SCHEMA")]
    pub migrations_schema: Option<String>,
    /// Table of the migration ledger [default: from config, "__drizzle_migrations"]
    #[arg(long, value_name = "TABLE")]
    pub migrations_table: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Compare the image's migration journal with the live ledger; print the gate (read-only)
    Status {
        /// A `behind` database gates to `migrate` instead of `block`
        #[arg(long)]
        allow_migrate: bool,
        #[command(flatten)]
        target: DatabaseTarget,
    },
    /// Apply pending migrations only, in the API container, when the state is `behind`
    Migrate {
        #[command(flatten)]
        execute: Execute,
        #[command(flatten)]
        target: DatabaseTarget,
    },
    /// Destructive: migrate, base seed and dev-data seed in the API container
    Reset {
        #[command(flatten)]
        execute: Execute,
        /// The environment name from config (agent.environment), typed to confirm
        #[arg(long, value_name = "ENV")]
        confirm: Option<String>,
        #[command(flatten)]
        target: DatabaseTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Run the read-only DB/S3 discrepancy report in the API container
    #[command(name = "discrepancy-report")]
    DiscrepancyReport(Execute),
}

impl Command {
    /// The operation name used in the lock, the journal and markers.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Daemon => "daemon",
            Command::Status => "status",
            Command::Config(ConfigCommand::Check) => "config check",
            Command::RuntimeConfig(RuntimeConfigCommand::Plan) => "runtime-config plan",
            Command::RuntimeConfig(RuntimeConfigCommand::Live) => "runtime-config live",
            Command::RuntimeEnv(_) => "runtime-env",
            Command::Runtime(RuntimeCommand::Deploy(_)) => "runtime deploy",
            Command::Runtime(RuntimeCommand::RecordRelease(_)) => "runtime record-release",
            Command::Runtime(RuntimeCommand::Rollback(_)) => "runtime rollback",
            Command::Runtime(RuntimeCommand::Smoke) => "runtime smoke",
            Command::Runtime(RuntimeCommand::Receipt) => "runtime receipt",
            Command::Runtime(RuntimeCommand::Prune(_)) => "runtime prune",
            Command::Database(DatabaseCommand::Status { .. }) => "database status",
            Command::Database(DatabaseCommand::Migrate { .. }) => "database migrate",
            Command::Database(DatabaseCommand::Reset { .. }) => "database reset",
            Command::Media(MediaCommand::DiscrepancyReport(_)) => "media discrepancy-report",
            Command::Compose(ComposeCommand::Config(_)) => "compose config",
            Command::Generate { .. } => "generate",
        }
    }

    /// Whether this invocation changes the host and so takes the lock.
    /// Dry runs and read-only commands never wait for a running deploy.
    pub fn mutates(&self) -> bool {
        match self {
            Command::Daemon => false, // boot recovery takes the lock itself
            Command::Status | Command::Config(_) | Command::RuntimeConfig(_) => false,
            Command::Compose(_) | Command::Generate { .. } => false,
            Command::RuntimeEnv(e) => e.execute.execute,
            Command::Runtime(RuntimeCommand::Deploy(a))
            | Command::Runtime(RuntimeCommand::RecordRelease(a)) => a.execute.execute,
            Command::Runtime(RuntimeCommand::Rollback(e))
            | Command::Runtime(RuntimeCommand::Prune(e)) => e.execute,
            Command::Runtime(RuntimeCommand::Smoke) => false,
            // Reads one atomically written file: never waits for the lock.
            Command::Runtime(RuntimeCommand::Receipt) => false,
            Command::Database(DatabaseCommand::Status { .. }) => false,
            Command::Database(DatabaseCommand::Migrate { execute, .. })
            | Command::Database(DatabaseCommand::Reset { execute, .. }) => execute.execute,
            // Read-only job, but it execs in the API container: keep it from
            // racing a deploy that is replacing that container.
            Command::Media(MediaCommand::DiscrepancyReport(e)) => e.execute,
        }
    }
}
