//! The empty-render guard and the error a render returns.
//!
//! Reading 0 parameters (a typo in `parameter_prefix`, an IAM policy scoped
//! elsewhere, a deleted tree) or emptying a file that has variables would
//! recreate the app with an empty environment at the next deploy or boot.
//! The render refuses that (exit 3, nothing written) unless asked for with
//! `--allow-empty`; the daemon's boot render keeps the existing files.

use crate::error::Error;
use crate::output::Report;

/// The empty-render guard: reading 0 parameters (a typo in
/// `parameter_prefix`, an IAM policy scoped elsewhere, a deleted tree) or
/// emptying a file that has variables would recreate the app with an empty
/// environment at the next deploy or boot. That is refused (exit 3, nothing
/// written) unless asked for with `--allow-empty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmptyGuard {
    pub prefix: String,
    /// Parameters read under the prefix.
    pub parameters: usize,
    /// Files (`backend.env`) that have variables now and would have none.
    pub emptied: Vec<String>,
}

impl EmptyGuard {
    /// `empty-prefix` (0 parameters read) or `empty-file`.
    pub fn reason(&self) -> &'static str {
        if self.parameters == 0 {
            "empty-prefix"
        } else {
            "empty-file"
        }
    }

    /// `WAVEMAP_RUNTIME_ENV_RESULT=blocked`, `_BLOCKED_REASON`, `_PREFIX`,
    /// `_PARAMETERS`, `_EMPTIED_FILES`.
    pub fn add_markers(&self, report: &mut Report) {
        const P: &str = "WAVEMAP_RUNTIME_ENV";
        report.marker(&format!("{P}_RESULT"), "blocked");
        report.marker(&format!("{P}_BLOCKED_REASON"), self.reason());
        report.marker(&format!("{P}_PREFIX"), &self.prefix);
        report.marker(&format!("{P}_PARAMETERS"), self.parameters);
        report.marker(&format!("{P}_EMPTIED_FILES"), self.emptied.join(","));
    }
}

impl std::fmt::Display for EmptyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files = if self.emptied.is_empty() {
            String::new()
        } else {
            format!(
                "; it would leave {} with no variable",
                self.emptied.join(", ")
            )
        };
        if self.parameters == 0 {
            write!(
                f,
                "read 0 parameters under {}{files}; check runtime.parameter_prefix and the instance's SSM permissions; nothing was written (pass --allow-empty to render empty files on purpose)",
                self.prefix
            )
        } else {
            write!(
                f,
                "the parameters under {}{files}; nothing was written (pass --allow-empty to empty them on purpose)",
                self.prefix
            )
        }
    }
}

/// A render that did not happen: the empty-render guard, or any other error.
#[derive(Debug)]
pub enum RenderError {
    Empty(EmptyGuard),
    Other(Error),
}

impl From<Error> for RenderError {
    fn from(e: Error) -> Self {
        RenderError::Other(e)
    }
}

impl From<RenderError> for Error {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Empty(guard) => Error::Gate {
                reason: guard.to_string(),
            },
            RenderError::Other(e) => e,
        }
    }
}
