//! wavemap-agent: the on-host half of Wavemap's deploy system.
//!
//! CI drives one sleepable EC2 host through SSM Run Command documents that
//! call this binary. It renders env files from SSM Parameter Store, logs into
//! ECR, pulls the selected image pair, converges the Docker Compose project
//! through the Engine API, runs database and media jobs in the API container,
//! and owns the last-good receipt that rollback reads. The outside of the
//! agent is `docs/CONTRACT.md`.
//!
//! # Layout
//!
//! - [`cli`]: the command tree (clap); parsing only.
//! - [`generate`]: the man page and shell completions, from that tree.
//! - [`commands`]: one file per command group; the lock and the operation
//!   journal wrap every mutating command.
//! - [`clock`]: wall-clock timestamps and the monotonic clock for intervals.
//! - [`config`]: the TOML file, strict parsing, deployed-dev defaults.
//! - [`error`]: typed errors, what outside services' errors become (AWS
//!   SDK), and the one map to exit codes.
//! - [`output`]: stdout markers / JSON and secret redaction.
//! - [`logging`]: journald or stderr, redacted.
//! - [`lock`]: one mutating operation at a time (flock).
//! - [`journal`]: the append-only operation journal.
//! - [`operation`]: the running operation's id, its interruption by SIGTERM/SIGINT/SIGHUP,
//!   and its deadline (`--deadline`: one budget every wait comes out of).
//! - [`fsutil`]: atomic, symlink-refusing writes.
//! - [`retry`]: the one backoff and retry budget every wait uses.
//! - [`aws`]: the one AWS SDK set-up (region, credentials, retries, timeouts).
//! - [`ssm`]: the parameter contract; DescribeParameters and GetParametersByPath.
//! - [`envfile`]: the env file format (writer and reader, Compose v2 compatible).
//! - [`envrender`]: `render`, SSM -> checked -> guarded -> env files written together.
//! - [`image`]: immutable image references (shape only).
//! - [`authority`]: which registries may be pulled from; the ECR token only
//!   for the host account's ECR.
//! - [`registry`]: ECR login, authenticated pulls, repo digests.
//! - [`images`]: deploy history, `runtime prune`, the pull preflight, free space.
//! - [`release`]: the image pair, the last-good receipt, the current release.
//! - [`deploy`]: the stages env-render, ecr-login, pull, converge, health;
//!   shared by deploy, rollback and boot recovery.
//! - [`daemon`]: the systemd service: boot recovery, a reconciler that
//!   retries and heals drift, watchdog, heartbeat.
//! - [`status`]: the operator's read-only view.
//! - [`smoke`]: the runbook's endpoint smoke through the frontend's port.
//! - [`database`]: migration status (journal vs ledger) and the gate.
//! - [`docker`]: connecting to the Engine (bounded wait, version negotiation).
//! - [`compose`]: load a compose file, plan, converge, wait for health.
//! - [`jobs`]: migrate, seeds and the media report, exec'd in the API container.
//! - [`testpoint`]: pause points the crash test kills at (debug builds only).

pub mod authority;
pub mod aws;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod database;
pub mod deploy;
pub mod docker;
pub mod envfile;
pub mod envrender;
pub mod error;
pub mod fsutil;
pub mod generate;
pub mod image;
pub mod images;
pub mod jobs;
pub mod journal;
pub mod lock;
pub mod logging;
pub mod operation;
pub mod output;
pub mod registry;
pub mod release;
pub mod retry;
pub mod smoke;
pub mod ssm;
pub mod status;
pub mod testpoint;
