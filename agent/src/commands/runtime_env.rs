//! `runtime-env [--execute]`: render the env files from SSM Parameter Store.
//! The work is [`crate::envrender::render_env`], shared with `runtime
//! deploy` and the daemon; this file turns its outcome into markers.
//! On a failure `WAVEMAP_RUNTIME_ENV_RESULT` is `blocked` (exit 3, the
//! contract is not met, nothing written), `unavailable` (exit 69) or
//! `failed`.

use super::Invocation;
use crate::envrender;
use crate::error::{Error, Result};

pub async fn run(inv: &mut Invocation<'_>, execute: bool) -> Result<()> {
    match envrender::render_env(inv.config, execute).await {
        Ok(summary) => {
            summary.add_markers(inv.report);
            inv.report.set_data(summary.to_json());
            if !execute {
                log::info!(stage = "env-render"; "dry run: nothing was written; run with --execute to write the files");
            }
            Ok(())
        }
        Err(e) => {
            let result = match &e {
                Error::Gate { .. } => "blocked",
                Error::Unavailable { .. } => "unavailable",
                _ => "failed",
            };
            inv.report.marker("WAVEMAP_RUNTIME_ENV_RESULT", result);
            inv.report.marker(
                "WAVEMAP_RUNTIME_ENV_DIR",
                inv.config.runtime.env_dir.as_path().display(),
            );
            Err(e)
        }
    }
}
