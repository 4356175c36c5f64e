//! Errors and the one place they become exit codes.
//!
//! Modules return their own typed errors; this file wraps them in [`Error`]
//! and [`Error::exit_code`] maps every variant to the contract's exit codes
//! (`docs/CONTRACT.md`, "Exit codes"). Keeping the mapping exhaustive and
//! in one match means a new failure mode cannot silently exit 1 when the
//! contract says 69 or 75.
//!
//! [`Stage`] names where an operation failed (deploy's `_FAILED_STAGE`
//! marker prints it); [`Error::Failed`] keeps the job name and the cause
//! apart; [`Chain`] is the one formatter of an error and its causes; and
//! [`Error::from_aws`] decides here what an AWS SDK error becomes (69 or 1).
//! Domain errors of modules that themselves return [`Error`] (jobs, the
//! compose loader, the ledger) convert where they are defined: naming them
//! here would make `error` and those modules depend on each other, which
//! `scripts/check-module-cycles` refuses.
//!
//! Messages never carry secret values: variants hold names, paths and
//! stages, and the final text still goes through [`crate::output::redact`].

use std::fmt;

use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::config::ConfigError;
use crate::lock::LockError;

/// Exit codes of the contract. The agent never exits with 137, 168, 169 or
/// 194 on purpose: SSM gives those meanings of its own.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const INVALID: i32 = 2;
    pub const GATE: i32 = 3;
    pub const NOTHING_TO_DO: i32 = 4;
    pub const UNAVAILABLE: i32 = 69;
    pub const LOCK_BUSY: i32 = 75;
}

/// An external service the agent depends on; named in exit-69 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Docker,
    Ssm,
    Ecr,
    Registry,
    Postgres,
    /// What a job's output must be redacted of: the API container's secret
    /// values (its env, and which names are SecureString). A job does not
    /// start without them.
    JobRedaction,
    /// The EC2 instance metadata service (the host's account id).
    InstanceMetadata,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::Docker => "Docker Engine",
            Dependency::Ssm => "SSM Parameter Store",
            Dependency::Ecr => "ECR",
            Dependency::Registry => "container registry",
            Dependency::Postgres => "PostgreSQL",
            Dependency::JobRedaction => "redaction of job output",
            Dependency::InstanceMetadata => "EC2 instance metadata (IMDSv2)",
        })
    }
}

/// Where an operation failed. The names are the contract's: deploy's
/// `<PREFIX>_FAILED_STAGE` marker prints them, and failure messages start
/// with them (`pull failed: ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Starting the process (async runtime, signal handlers).
    Start,
    /// Waiting for the operation lock.
    Lock,
    EnvRender,
    /// Reading rendered env files back.
    EnvRead,
    EcrLogin,
    /// Free space on Docker's data root checked against the pull's size.
    PullPreflight,
    Pull,
    Converge,
    Health,
    /// Writing the current-release state after a healthy converge.
    State,
    Deploy,
    RecordRelease,
    RuntimeConfig,
    /// The migration journal (in the image or a folder).
    Journal,
    /// The migration ledger in PostgreSQL.
    Ledger,
    Migrate,
    MediaReport,
    Status,
    StatusCache,
    Daemon,
    /// A job exec'd in the API container; [`Error::Failed`] names it.
    Job,
    /// `runtime prune`: listing and removing release images.
    Prune,
    /// The endpoint smoke through the frontend's port.
    Smoke,
    /// Waiting for the database's advisory lock.
    AdvisoryLock,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Start => "start",
            Stage::Lock => "lock",
            Stage::EnvRender => "env-render",
            Stage::EnvRead => "env-read",
            Stage::EcrLogin => "ecr-login",
            Stage::PullPreflight => "pull-preflight",
            Stage::Pull => "pull",
            Stage::Converge => "converge",
            Stage::Health => "health",
            Stage::State => "state",
            Stage::Deploy => "deploy",
            Stage::RecordRelease => "record-release",
            Stage::RuntimeConfig => "runtime-config",
            Stage::Journal => "journal",
            Stage::Ledger => "ledger",
            Stage::Migrate => "migrate",
            Stage::MediaReport => "media-report",
            Stage::Status => "status",
            Stage::StatusCache => "status cache",
            Stage::Daemon => "daemon",
            Stage::Job => "job",
            Stage::Prune => "prune",
            Stage::Smoke => "smoke",
            Stage::AdvisoryLock => "advisory-lock",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// So `log::info!(stage = Stage::Pull; ...)` tags the line like a literal.
impl log::kv::ToValue for Stage {
    fn to_value(&self) -> log::kv::Value<'_> {
        log::kv::Value::from(self.name())
    }
}

/// A cause kept whole, for [`Chain`] to print.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line input: names the flag and the fix; nothing changed.
    #[error("invalid {field}: {problem}; {fix}")]
    InvalidInput {
        field: String,
        problem: String,
        fix: String,
    },

    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Lock(#[from] LockError),

    /// A gate refused the operation (database gate `block`, unproven
    /// release, refused precondition).
    #[error("blocked: {reason}")]
    Gate { reason: String },

    /// Nothing to do by design (rollback with no receipt).
    #[error("nothing to do: {reason}")]
    NothingToDo { reason: String },

    /// A dependency stayed unavailable after retries.
    #[error("{dependency} stayed unavailable: {detail}")]
    Unavailable {
        dependency: Dependency,
        detail: String,
    },

    /// The operation ran and failed; `stage` names where, `job` which job
    /// (the message names the job when there is one), `source` the cause
    /// when there is an error value behind `detail`.
    #[error("{} failed: {detail}", job.as_deref().unwrap_or(stage.name()))]
    Failed {
        stage: Stage,
        job: Option<String>,
        detail: String,
        #[source]
        source: Option<Cause>,
    },

    /// SIGTERM, SIGINT or SIGHUP ended the operation, or its deadline did
    /// (`signal` is then `deadline`, and the kind `deadline`); `detail` says
    /// what became of its running job.
    #[error("interrupted by {signal}: {detail}")]
    Interrupted {
        signal: &'static str,
        detail: String,
    },

    /// A local file the agent owns could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn invalid(
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::InvalidInput {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub fn failed(stage: Stage, detail: impl fmt::Display) -> Self {
        Error::Failed {
            stage,
            job: None,
            detail: detail.to_string(),
            source: None,
        }
    }

    /// A failure whose detail is an error value: its text is the detail and
    /// the value stays the `source`.
    pub fn caused(stage: Stage, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Failed {
            stage,
            job: None,
            detail: cause.to_string(),
            source: Some(Box::new(cause)),
        }
    }

    /// A job exec'd in the API container failed.
    pub fn job_failed(job: impl Into<String>, detail: impl fmt::Display) -> Self {
        Error::Failed {
            stage: Stage::Job,
            job: Some(job.into()),
            detail: detail.to_string(),
            source: None,
        }
    }

    pub fn unavailable(dependency: Dependency, detail: impl fmt::Display) -> Self {
        Error::Unavailable {
            dependency,
            detail: detail.to_string(),
        }
    }

    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    /// The contract's exit code for this error. Exhaustive on purpose.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::InvalidInput { .. } | Error::Config(_) => exit::INVALID,
            Error::Lock(LockError::Busy { .. }) => exit::LOCK_BUSY,
            Error::Lock(LockError::Io { .. }) => exit::FAILED,
            Error::Gate { .. } => exit::GATE,
            Error::NothingToDo { .. } => exit::NOTHING_TO_DO,
            Error::Unavailable { .. } => exit::UNAVAILABLE,
            Error::Failed { .. } | Error::Io { .. } | Error::Interrupted { .. } => exit::FAILED,
        }
    }

    /// A short machine-readable kind for the `WAVEMAP_AGENT_ERROR` marker.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "invalid-input",
            Error::Config(_) => "invalid-config",
            Error::Lock(LockError::Busy { .. }) => "lock-busy",
            Error::Lock(LockError::Io { .. }) => "lock-io",
            Error::Gate { .. } => "gate-blocked",
            Error::NothingToDo { .. } => "nothing-to-do",
            Error::Unavailable { .. } => "dependency-unavailable",
            Error::Failed { .. } => "failed",
            Error::Io { .. } => "io",
            Error::Interrupted {
                signal: "deadline", ..
            } => "deadline",
            Error::Interrupted { .. } => "interrupted",
        }
    }
}

impl From<crate::fsutil::FsError> for Error {
    fn from(e: crate::fsutil::FsError) -> Self {
        Error::Io {
            action: e.action,
            path: e.path.display().to_string(),
            source: e.source,
        }
    }
}

// What an outside service's own errors become, decided here beside the
// exit-code map rather than at each call site.

/// Error codes that mean "the service is there but cannot answer now".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ThrottledException",
    "InternalServerError",
    "InternalFailure",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

impl Error {
    /// An AWS SDK error from `operation` on `dependency`: no answer, timeouts,
    /// throttling that outlived the retries and 5xx are [`Error::Unavailable`]
    /// (exit 69); access denied, validation and other refusals are
    /// [`Error::Failed`] at the dependency's stage (exit 1). Messages carry the
    /// operation and AWS's error code and message, never a parameter value (the
    /// agent only ever sends names and paths).
    pub fn from_aws<E>(
        dependency: Dependency,
        operation: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        let stage = match dependency {
            Dependency::Ecr => Stage::EcrLogin,
            _ => Stage::EnvRender,
        };
        match err {
        SdkError::TimeoutError(_) => Error::unavailable(
            dependency,
            format!("{operation} did not finish within the configured timeouts (aws.attempt_timeout, aws.operation_timeout)"),
        ),
        SdkError::DispatchFailure(failure) if failure.is_user() => Error::failed(
            stage,
            format!("{operation} could not be sent: {}", Chain(err)),
        ),
        SdkError::DispatchFailure(_) => Error::unavailable(
            dependency,
            format!(
                "{operation} got no answer after the configured retries (aws.max_attempts); check the endpoint, the network and the credentials: {}",
                Chain(err)
            ),
        ),
        SdkError::ResponseError(response) => {
            let status = response.raw().status().as_u16();
            Error::unavailable(
                dependency,
                format!("{operation} got an unreadable answer (HTTP {status}); the endpoint may not be {dependency}"),
            )
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown error");
            let message = service.err().message().unwrap_or("no message");
            let status = service.raw().status().as_u16();
            if status >= 500 || TRANSIENT_CODES.contains(&code) {
                Error::unavailable(
                    dependency,
                    format!("{operation} kept failing with {code} (HTTP {status}) after the configured retries: {message}"),
                )
            } else {
                Error::failed(
                    stage,
                    format!("{operation} was refused with {code} (HTTP {status}): {message}"),
                )
            }
        }
        // ConstructionFailure and anything a future SDK adds.
        _ => Error::failed(
            stage,
            format!("{operation} could not be built: {}", Chain(err)),
        ),
    }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, Display only (never Debug, which
/// could show field values an error type did not mean to show, and which the
/// AWS SDK fills with noise). A cause whose text the line already holds is
/// not repeated. The one chain formatter: the final error line, SDK and
/// PostgreSQL details all go through it.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_contract() {
        assert_eq!(Error::invalid("f", "p", "x").exit_code(), 2);
        assert_eq!(Error::Gate { reason: "x".into() }.exit_code(), 3);
        assert_eq!(Error::NothingToDo { reason: "x".into() }.exit_code(), 4);
        assert_eq!(
            Error::unavailable(Dependency::Docker, "down").exit_code(),
            69
        );
        assert_eq!(Error::failed(Stage::Pull, "no such image").exit_code(), 1);
        assert_eq!(
            Error::job_failed("base-seed", "`x` exited 1").to_string(),
            "base-seed failed: `x` exited 1"
        );
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let inner = std::io::Error::other("connection refused");
        let e = Error::io("read", std::path::Path::new("/x"), inner);
        // Display already holds the io error's text: it is not repeated.
        assert_eq!(Chain(&e).to_string(), "read /x: connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&e).to_string(), "outer: inner");
    }
}
