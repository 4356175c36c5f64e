//! `runtime-env [--execute] [--allow-empty]`: render the env files from SSM
//! Parameter Store. The work is [`crate::envrender::render`], shared with
//! `runtime deploy` and the daemon; this file turns its outcome into
//! markers. On a failure `WAVEMAP_RUNTIME_ENV_RESULT` is `blocked` (exit 3:
//! the contract is not met, or the empty-render guard held, with
//! `_BLOCKED_REASON`, `_PREFIX` and `_EMPTIED_FILES`; nothing written),
//! `unavailable` (exit 69) or `failed`.
//!
//! It writes the live env files and stops there: nothing rolls them out.
//! The containers keep the config they were deployed with until the next
//! deploy, and the daemon reports the difference without acting on it.

use super::Invocation;
use crate::cli::RenderArgs;
use crate::envrender::{self, RenderError, RenderOptions};
use crate::error::{Error, Result};

pub async fn run(inv: &mut Invocation<'_>, args: RenderArgs) -> Result<()> {
    let execute = args.execute.execute;
    let options = RenderOptions {
        execute,
        allow_empty: args.allow_empty,
    };
    crate::output::stage(crate::error::Stage::EnvRender);
    match envrender::render(inv.config, options).await {
        Ok(summary) => {
            summary.add_markers(inv.report);
            inv.report.set_data(summary.to_json());
            if !execute {
                log::info!(stage = "env-render"; "dry run: nothing was written; run with --execute to write the files");
            }
            Ok(())
        }
        Err(e) => {
            inv.report.marker(
                "WAVEMAP_RUNTIME_ENV_DIR",
                inv.config.runtime.env_dir.as_path().display(),
            );
            let e = match e {
                RenderError::Empty(guard) => {
                    guard.add_markers(inv.report);
                    return Err(RenderError::Empty(guard).into());
                }
                RenderError::Other(e) => e,
            };
            let result = match &e {
                Error::Gate { .. } => "blocked",
                Error::Unavailable { .. } => "unavailable",
                _ => "failed",
            };
            inv.report.marker("WAVEMAP_RUNTIME_ENV_RESULT", result);
            Err(e)
        }
    }
}
