//! Migration status: does the live database match the migrations shipped in
//! the deployed API image, and may a deploy go on?
//!
//! Routine deploys gate endpoint smoke on this answer, so it must predict
//! what the real Drizzle migrator will do rather than count rows. The parts:
//!
//! - [`journal`]: the migrations folder (0.x journal or 1.0 folders) and the
//!   hash exactly as Node computes it;
//! - [`ledger`]: the rows in `drizzle.__drizzle_migrations`, read-only;
//! - [`dsn`]: one connection string, parsed once, and its connection;
//! - [`tls`]: `sslmode` / `sslrootcert` as libpq reads them, on rustls;
//! - [`advisory`]: the PostgreSQL advisory lock migrate and reset hold;
//! - [`classify`]: the runbook's states, counts and the gate decision;
//! - [`source`]: where the journal (image or local folder) and the
//!   database (flag, config, the API container's own URL, rendered env)
//!   come from, and a Compose service name resolved through Docker.
//!
//! `commands::database` turns a [`classify::Status`] into markers; migrate,
//! reset and the media report run through [`crate::jobs`].

pub mod advisory;
pub mod classify;
pub mod dsn;
pub mod journal;
pub mod ledger;
pub mod source;
pub mod tls;
