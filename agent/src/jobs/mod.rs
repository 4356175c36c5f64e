//! The one job runner: migrate, the seeds and the media report all run as
//! `docker exec` in the running API container.
//!
//! Running them there (not in a fresh container) is the point: the job sees
//! the exact image, network and rendered runtime env the API runs with, the
//! way the runbook's operators ran them. The container is found by the
//! labels Compose puts on it (project, service, `oneoff=False`), so a
//! `compose run` leftover is never picked.
//!
//! Output ([`output`]) is shaped by SSM, which keeps only the first 8,000
//! characters of a command's stderr: the full output goes to a 0600 file
//! `state_dir/jobs/<operation id>.log`, stderr gets a bounded head and tail,
//! and stdout stays markers only. A broken output stream is an error
//! (`msg?`), never a silent early end that would look like a finished job.
//!
//! A job must never outlive its owner unseen, nor run twice at once:
//! - before starting one, the runner looks for a job exec still running in
//!   the API container (a SIGKILLed agent leaves one) and waits for it
//!   within the lock timeout, or refuses with exit 75 naming it;
//! - on the deadline (`jobs.timeout`) or a signal (SIGTERM, SIGINT, SIGHUP;
//!   see [`crate::operation`]) it stops the exec through the exec's own
//!   process: a pidfd opened on the pid the Engine reports and confirmed to
//!   still be that exec's, so a reused pid is never signalled.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::Config;
use crate::error::{Dependency, Error};
use crate::lock::LockError;
use crate::operation;
use crate::output::register_secret;
use crate::retry::{Backoff, Retry};

mod output;

use output::Sink;
pub use output::{shape_fingerprint, warning_shape};

/// Captured stdout beyond this is refused: a report is kilobytes.
pub(crate) const MAX_CAPTURED_STDOUT: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot reach Docker at {host}: {detail}")]
    Docker { host: String, detail: String },
    #[error("no running `{service}` container in Compose project `{project}`; deploy first (`runtime deploy --execute`)")]
    NoContainer { project: String, service: String },
    #[error("job {job} ({argv}) did not finish within {secs}s (jobs.timeout); {fate}")]
    Timeout {
        job: String,
        argv: String,
        secs: u64,
        /// What became of the process: stopped, killed, or still running.
        fate: String,
    },
    #[error("job {job}: cannot exec {argv}: {detail}")]
    Exec {
        job: String,
        argv: String,
        detail: String,
    },
    #[error("job {job}: the output stream broke: {detail}")]
    Stream { job: String, detail: String },
    #[error("job {job}: stdout exceeded {MAX_CAPTURED_STDOUT} bytes")]
    TooMuchOutput { job: String },
    #[error("job {job} ({argv}): {fate}")]
    Interrupted {
        job: String,
        argv: String,
        signal: &'static str,
        fate: String,
    },
}

impl From<JobError> for Error {
    fn from(e: JobError) -> Self {
        match &e {
            JobError::Docker { .. } => Error::unavailable(Dependency::Docker, e.to_string()),
            // A refused precondition: nothing ran, nothing changed.
            JobError::NoContainer { .. } => Error::Gate {
                reason: e.to_string(),
            },
            JobError::Interrupted { signal, .. } => Error::Interrupted {
                signal,
                detail: e.to_string(),
            },
            JobError::Timeout { job, .. }
            | JobError::Exec { job, .. }
            | JobError::Stream { job, .. }
            | JobError::TooMuchOutput { job } => Error::job_failed(job.clone(), &e),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// Short name for logs, markers and errors (`migrate`, `base-seed`).
    pub name: &'a str,
    pub argv: &'a [String],
    /// Keep the whole stdout (the media report's JSON); otherwise only lines.
    pub capture_stdout: bool,
}

/// How it ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub exit_code: i64,
    /// Lines containing `jobs.warning_pattern` (case-insensitive).
    pub warning_count: usize,
    pub line_count: usize,
    /// The job's stdout when `capture_stdout` was set (not redacted: it is
    /// parsed, never printed as is).
    pub stdout: String,
    pub duration: Duration,
    /// The first warning lines, redacted, each at most 400 characters.
    pub warning_samples: Vec<String>,
    /// Every distinct warning line with numbers and ids masked
    /// ([`warning_shape`]).
    pub warning_shapes: BTreeSet<String>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// The running API container of the Compose project: its id and image id.
pub async fn find_api_container(
    docker: &Docker,
    config: &Config,
) -> Result<Option<(String, String)>, JobError> {
    let project = &config.runtime.project_name;
    let service = &config.runtime.backend_service;
    let filters: HashMap<String, Vec<String>> = HashMap::from([
        (
            "label".to_string(),
            vec![
                format!("com.docker.compose.project={project}"),
                format!("com.docker.compose.service={service}"),
                "com.docker.compose.oneoff=False".to_string(),
            ],
        ),
        ("status".to_string(), vec!["running".to_string()]),
    ]);
    let options = ListContainersOptionsBuilder::new()
        .all(false)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| JobError::Docker {
            host: config.docker.host.clone(),
            detail: e.to_string(),
        })?;
    if list.len() > 1 {
        log::warn!(stage = "job"; "{} running `{service}` containers in project `{project}`; using the newest", list.len());
    }
    let newest = list.into_iter().max_by_key(|c| c.created.unwrap_or(0));
    Ok(newest.and_then(|c| Some((c.id?, c.image_id.unwrap_or_default()))))
}

/// Run `job` in the API container and wait for it, streaming its output.
pub async fn run(config: &Config, job: &Job<'_>) -> Result<Outcome, Error> {
    run_with_env(config, job, &[]).await
}

/// [`run`] with `env` (`NAME=value`) set for the job on top of the
/// container's: `--database-url` reaches the job this way, so the job works
/// on the database the command was pointed at.
pub async fn run_with_env(
    config: &Config,
    job: &Job<'_>,
    env: &[String],
) -> Result<Outcome, Error> {
    crate::output::stage(crate::error::Stage::Job);
    let docker = crate::docker::connect(config).await?;
    let (container, _) =
        find_api_container(&docker, config)
            .await?
            .ok_or_else(|| JobError::NoContainer {
                project: config.runtime.project_name.clone(),
                service: config.runtime.backend_service.clone(),
            })?;
    wait_for_running_job(&docker, &container, config).await?;
    // A job is not cut in the middle by the budget: it starts only when
    // its whole deadline fits in what is left.
    operation::fits(
        &format!("job {} (jobs.timeout)", job.name),
        config.jobs.timeout.duration(),
    )?;
    // Fail closed: a job whose secrets the agent cannot know would print
    // them unredacted, so it does not start (exit 69, naming why).
    let secure = crate::envrender::secure_variables_checked(config).map_err(|why| {
        Error::unavailable(
            Dependency::JobRedaction,
            format!("{why}; the job was not started, since its output could not be redacted"),
        )
    })?;
    register_container_secrets(&docker, &container, &secure).await?;
    Ok(run_in(&docker, &container, config, job, env).await?)
}

/// Wait, within the lock timeout, until no job exec left by an earlier run
/// is running in the API container (none: at once). Exit 75 naming it when
/// it is still running at the end. Commands that check the database before
/// their job call this first, so they see the database as that job left it.
pub async fn wait_for_running_jobs(config: &Config) -> Result<(), Error> {
    crate::output::stage(crate::error::Stage::Job);
    let docker = crate::docker::connect(config).await?;
    let Some((container, _)) = find_api_container(&docker, config).await? else {
        return Ok(());
    };
    wait_for_running_job(&docker, &container, config).await
}

async fn wait_for_running_job(
    docker: &Docker,
    container: &str,
    config: &Config,
) -> Result<(), Error> {
    let timeout = operation::wait_limit(
        "the wait for a job left running (--lock-timeout, agent.lock_timeout)",
        operation::lock_timeout(),
    )?;
    let mut retry = Retry::for_time(timeout, Backoff::constant(Duration::from_millis(500)));
    let mut announced = false;
    loop {
        let running = running_job_execs(docker, container, config).await?;
        let Some((exec_id, argv)) = running.into_iter().next() else {
            if announced {
                log::info!(stage = "job"; "the earlier job has ended after {:.1}s", retry.elapsed().as_secs_f64());
            }
            return Ok(());
        };
        let short = &exec_id[..exec_id.len().min(12)];
        if let Some(signal) = operation::interrupted() {
            return Err(Error::Interrupted {
                signal,
                detail: format!("while waiting for job `{argv}` (exec {short}) to end"),
            });
        }
        if retry.exhausted() && operation::deadline_passed() {
            return Err(operation::out_of_time(format!(
                "while waiting for job `{argv}` (exec {short}) to end; nothing was started"
            )));
        }
        if retry.exhausted() {
            return Err(LockError::Busy {
                path: format!(
                    "exec {short} in the API container {}",
                    container.get(..12).unwrap_or(container)
                ),
                holder: format!("job `{argv}` is still running there, left by an earlier run; a second one is never started"),
                waited_secs: retry.elapsed().as_secs(),
            }
            .into());
        }
        if !announced {
            log::warn!(stage = "job"; "job `{argv}` (exec {short}) is still running in the API container, left by an earlier run; waiting up to {}s for it to end before starting another", timeout.as_secs());
            announced = true;
        }
        retry.pause().await;
    }
}

/// Running execs in `container` whose command is one of the configured jobs:
/// `(exec id, argv)`.
async fn running_job_execs(
    docker: &Docker,
    container: &str,
    config: &Config,
) -> Result<Vec<(String, String)>, JobError> {
    let inspect = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| JobError::Docker {
            host: config.docker.host.clone(),
            detail: e.to_string(),
        })?;
    let jobs = [
        &config.jobs.migrate_command,
        &config.jobs.base_seed_command,
        &config.jobs.dev_seed_command,
        &config.jobs.media_report_command,
    ];
    let mut running = Vec::new();
    for exec_id in inspect.exec_ids.unwrap_or_default() {
        // An exec that ended since the container was inspected is gone.
        let Ok(exec) = docker.inspect_exec(&exec_id).await else {
            continue;
        };
        if exec.running != Some(true) {
            continue;
        }
        let Some(process) = exec.process_config else {
            continue;
        };
        let argv: Vec<String> = process
            .entrypoint
            .into_iter()
            .chain(process.arguments.unwrap_or_default())
            .collect();
        if jobs.iter().any(|job| **job == argv) {
            running.push((exec_id, argv.join(" ")));
        }
    }
    Ok(running)
}

/// The job inherits the container's env, which holds SSM SecureString values
/// the agent never read itself in this run. Register the ones the rendered
/// env files name as SecureString (`secure`), and those that look like
/// secrets (by name, or a URL with a password), so a job that prints them is
/// redacted. Without the inspect the container's values are unknown, so
/// this fails (exit 69) and the job does not start.
async fn register_container_secrets(
    docker: &Docker,
    container: &str,
    secure: &std::collections::BTreeSet<String>,
) -> Result<(), Error> {
    let env = match docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(inspect) => inspect.config.and_then(|c| c.env).unwrap_or_default(),
        Err(e) => {
            return Err(Error::unavailable(
                Dependency::JobRedaction,
                format!("cannot inspect the API container {} for its env ({e}); the job was not started, since its output could not be redacted", container.get(..12).unwrap_or(container)),
            ));
        }
    };
    for entry in env {
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        if secure.contains(name) || looks_secret(name, value) {
            register_secret(value);
            for password in url_password(value).unwrap_or_default() {
                register_secret(&password);
            }
        }
    }
    Ok(())
}

/// Names that carry credentials by convention, or a URL with a password.
/// Deliberately not every `*KEY*` name: `MEDIA_KEY_PREFIX=media/` is not a
/// secret, and redacting it would blank the media report's scope marker.
fn looks_secret(name: &str, value: &str) -> bool {
    const MARKERS: [&str; 10] = [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "CREDENTIAL",
        "PRIVATE",
        "AUTH",
        "DSN",
        "API_KEY",
        "ACCESS_KEY",
    ];
    let upper = name.to_ascii_uppercase();
    MARKERS.iter().any(|m| upper.contains(m))
        || upper.ends_with("_KEY")
        || url_password(value).is_some()
}

/// The password of `scheme://user:password@host...`, if any, as written
/// in the URL (percent-encoded) and decoded: a job may print either.
fn url_password(value: &str) -> Option<Vec<String>> {
    let url = url::Url::parse(value).ok()?;
    let raw = url.password().filter(|p| !p.is_empty())?.to_owned();
    let mut forms = vec![raw.clone()];
    if let Ok(decoded) = percent_encoding::percent_decode_str(&raw).decode_utf8() {
        if decoded != raw {
            forms.push(decoded.into_owned());
        }
    }
    Some(forms)
}

/// Run in a given container (tests and callers that already found it).
pub async fn run_in(
    docker: &Docker,
    container: &str,
    config: &Config,
    job: &Job<'_>,
    env: &[String],
) -> Result<Outcome, JobError> {
    let argv_text = job.argv.join(" ");
    let exec_err = |detail: String| JobError::Exec {
        job: job.name.to_owned(),
        argv: argv_text.clone(),
        detail,
    };
    let deadline = config.jobs.timeout.duration();
    // The upgraded exec connection lives as long as the job: give the client
    // the job's deadline rather than the default request timeout.
    let docker = docker
        .clone()
        .with_timeout(deadline + Duration::from_secs(30));
    let started = Instant::now();
    log::info!(stage = job.name; "running `{argv_text}` in the API container");
    let exec = docker
        .create_exec(
            container,
            ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(job.argv.to_vec()),
                env: (!env.is_empty()).then(|| env.to_vec()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| exec_err(e.to_string()))?;
    let mut sink = Sink::new(config, job);
    let streamed = {
        let stream = tokio::time::timeout(deadline, async {
            match docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| exec_err(e.to_string()))?
            {
                StartExecResults::Attached { mut output, .. } => {
                    while let Some(msg) = output.next().await {
                        let msg = msg.map_err(|e| JobError::Stream {
                            job: job.name.to_owned(),
                            detail: e.to_string(),
                        })?;
                        sink.take(msg)?;
                    }
                    Ok(())
                }
                StartExecResults::Detached => {
                    Err(exec_err("the Engine started the exec detached".into()))
                }
            }
        });
        tokio::select! {
            result = stream => Ok(result),
            signal = operation::wait() => Err(signal),
        }
    };
    match streamed {
        Err(signal) => {
            sink.finish();
            log::warn!(stage = job.name; "{signal}: stopping `{argv_text}` in the API container");
            let fate = stop_exec(&docker, &exec.id, config).await;
            log::warn!(stage = job.name; "{fate}");
            return Err(JobError::Interrupted {
                job: job.name.to_owned(),
                argv: argv_text,
                signal,
                fate,
            });
        }
        Ok(Err(_)) => {
            sink.finish();
            return Err(JobError::Timeout {
                job: job.name.to_owned(),
                argv: argv_text,
                secs: deadline.as_secs(),
                fate: stop_exec(&docker, &exec.id, config).await,
            });
        }
        Ok(Ok(result)) => {
            if let Err(e) = result {
                sink.finish();
                return Err(e);
            }
        }
    }
    sink.finish();
    // The stream ends when the process closes its output; the exit code can
    // lag a moment behind.
    let mut retry = Retry::for_time(
        deadline.saturating_sub(started.elapsed()),
        Backoff::constant(Duration::from_millis(100)),
    );
    let exit_code = loop {
        let inspect = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| exec_err(e.to_string()))?;
        if inspect.running != Some(true) {
            break inspect.exit_code.unwrap_or(-1);
        }
        if retry.exhausted() {
            return Err(JobError::Timeout {
                job: job.name.to_owned(),
                argv: argv_text,
                secs: deadline.as_secs(),
                fate: stop_exec(&docker, &exec.id, config).await,
            });
        }
        retry.pause().await;
    };
    let outcome = Outcome {
        exit_code,
        duration: started.elapsed(),
        ..sink.into_outcome()
    };
    if outcome.success() {
        log::info!(stage = job.name; "`{argv_text}` exited 0 in {:.1}s ({} lines, {} warnings)", outcome.duration.as_secs_f64(), outcome.line_count, outcome.warning_count);
    } else {
        log::error!(stage = job.name; "`{argv_text}` exited {exit_code} after {:.1}s ({} lines; its last lines are above)", outcome.duration.as_secs_f64(), outcome.line_count);
    }
    Ok(outcome)
}

/// End an exec (deadline or signal). The Engine API has no call for that,
/// but on a local Engine the exec's process is ours to signal (the agent
/// runs as root beside dockerd): SIGTERM, a grace period, then SIGKILL. The
/// signal goes through a pidfd, not a bare pid: the pid the Engine reports
/// is opened, then the exec is inspected again, and only if it still runs
/// with that pid is the pidfd known to be the exec's own process (a pid
/// reused after the exec ended would show the exec as ended). A migration
/// runs in one transaction, so ending it rolls back rather than
/// half-applies.
async fn stop_exec(docker: &Docker, exec_id: &str, config: &Config) -> String {
    const GRACE: Duration = Duration::from_secs(5);
    let still = "the process may still run in the container".to_owned();
    if !config.docker.host.starts_with("unix://") {
        return format!("{still} (a remote Engine cannot be asked to stop an exec)");
    }
    let running_pid = |inspect: bollard::models::ExecInspectResponse| {
        (inspect.running == Some(true))
            .then_some(inspect.pid)
            .flatten()
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|&pid| pid > 1)
    };
    let Ok(Some(pid)) = docker.inspect_exec(exec_id).await.map(running_pid) else {
        return "it has ended since".to_owned();
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return "it has ended since".to_owned(),
        Err(e) => return format!("{still} (cannot open its process {pid}: {e})"),
    };
    match docker.inspect_exec(exec_id).await.map(running_pid) {
        Ok(Some(again)) if again == pid => {}
        _ => return "it has ended since".to_owned(),
    }
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        if let Err(e) = pidfd_signal(&pidfd, signal) {
            if e.raw_os_error() == Some(libc::ESRCH) {
                return "it has ended since".to_owned();
            }
            return format!("{still} (cannot signal its process {pid}: {e})");
        }
        let mut grace = Retry::for_time(GRACE, Backoff::constant(Duration::from_millis(200)));
        while !grace.exhausted() {
            grace.pause().await;
            match docker.inspect_exec(exec_id).await.map(running_pid) {
                Ok(Some(_)) => continue,
                _ => return format!("the agent ended it with {name}"),
            }
        }
    }
    still
}

/// A pidfd for `pid` (Linux 5.3+): a handle that names this process and
/// never another one that later gets the same pid.
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_inspect_stops_the_job_with_exit_69() {
        // A socket file nobody listens on (bound, then closed): the inspect
        // fails as when the Engine went away.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let docker = Docker::connect_with_unix(
            &socket.display().to_string(),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let err = register_container_secrets(&docker, "0123456789abcdef", &BTreeSet::new())
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::UNAVAILABLE, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("cannot inspect the API container 0123456789ab")
                && text.contains("the job was not started"),
            "{text}"
        );
    }

    #[test]
    fn credentials_in_env_are_recognised() {
        assert_eq!(
            url_password("postgres://app:pw%40x@db:5432/x"),
            Some(vec!["pw%40x".to_string(), "pw@x".to_string()])
        );
        assert_eq!(url_password("https://example.com/a@b"), None);
        assert!(looks_secret("DATABASE_URL", "postgres://app:pw@db/x"));
        assert!(looks_secret("JWT_SECRET", "abc"));
        assert!(!looks_secret("PORT", "8080"));
        assert!(!looks_secret("MEDIA_BUCKET", "wavemap-dev-media"));
    }
}
