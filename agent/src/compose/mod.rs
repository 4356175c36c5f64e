//! The Compose engine: load a compose file, plan, converge through the
//! Docker Engine API, wait for health.
//!
//! Why not shell out to `docker compose`: the agent must plan a change
//! before making it (dry runs), report each stage precisely, bound every
//! wait, and stay fast on a no-op. Why Compose's own labels, names and
//! config-hash: operators keep running `docker compose ps/logs/up` on the
//! same project, and neither side may recreate what the other just made.
//!
//! # Layout
//! - [`model`]: the normalized, typed project.
//! - [`load`]: YAML, merge keys, interpolation, the supported subset.
//! - [`interpolate`]: `${VAR}` forms and the dotenv format.
//! - [`hash`]: Compose v2's config-hash, byte for byte.
//! - [`labels`]: the label keys Compose reads.
//! - [`plan`]: create / recreate (why) / keep / remove, from one list call.
//! - [`create`]: the Engine create body and labels for one service.
//! - [`converge`]: applying a plan in dependency order.
//! - [`replace`]: replacing a container, stop-first or start-first.
//! - [`container`]: create/start/stop/remove/rename of one container, used
//!   by both (below them, so neither imports the other's internals).
//! - [`health`]: bounded waits for health and one-shot completion.
//! - [`status`]: what runs now, for `status` and the release receipt.

pub mod container;
pub mod converge;
pub mod create;
pub mod hash;
pub mod health;
pub mod interpolate;
pub mod labels;
pub mod load;
pub mod model;
pub mod plan;
pub mod replace;
pub mod status;

#[cfg(test)]
mod parity_tests;

use std::collections::BTreeMap;
use std::path::Path;

pub use converge::{converge, ConvergeSummary};
pub use health::{wait_healthy, HealthReport, ServiceHealth};
pub use load::{LoadError, LoadOptions};
pub use model::Project;
pub use plan::{plan, Action, Plan, Reason, ServicePlan};
pub use status::{service_states, ServiceState};

use crate::error::Error;

impl Project {
    /// Load a compose file as project `project_name`; see [`load::load`].
    pub fn load(
        path: &Path,
        project_name: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Project, Error> {
        load::load(path, project_name, vars).map_err(Error::from)
    }

    /// [`Project::load`] with [`load::LoadOptions`].
    pub fn load_with(
        path: &Path,
        project_name: &str,
        vars: &BTreeMap<String, String>,
        options: load::LoadOptions,
    ) -> Result<Project, Error> {
        load::load_with(path, project_name, vars, options).map_err(Error::from)
    }
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Self {
        match e {
            // No file where the config points: a configuration error (exit 2)
            // naming the key, not a failed operation.
            LoadError::Read { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::invalid(
                    "runtime.compose_file",
                    format!("{path} does not exist"),
                    "point runtime.compose_file at the project's Compose file \
                     (host bootstrap writes /opt/wavemap/runtime/compose.yaml)",
                )
            }
            LoadError::Read { path, source } => Error::Io {
                action: "read compose file",
                path,
                source,
            },
            other => Error::invalid(
                "compose file",
                other.to_string(),
                "fix the compose file; nothing was changed",
            ),
        }
    }
}
