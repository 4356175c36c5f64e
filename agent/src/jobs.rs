//! The one job runner: migrate, the seeds and the media report all run as
//! `docker exec` in the running API container.
//!
//! Running them there (not in a fresh container) is the point: the job sees
//! the exact image, network and rendered runtime env the API runs with, the
//! way the runbook's operators ran them. The container is found by the
//! labels Compose puts on it (project, service, `oneoff=False`), so a
//! `compose run` leftover is never picked.
//!
//! Output handling is shaped by SSM: stdout of the agent must stay markers
//! only, so the job's stdout and stderr both go to the agent's stderr, line by
//! line and redacted, while a bounded tail is kept for the summary. A broken
//! output stream is an error (`msg?`), never a silent early end that would
//! look like a finished job. The deadline (`jobs.timeout`) ends the wait; the
//! Engine API cannot kill an exec, so the message says so.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::Config;
use crate::error::{Dependency, Error};
use crate::output::{redact, register_secret};

/// Captured stdout beyond this is refused: a report is kilobytes.
const MAX_CAPTURED_STDOUT: usize = 16 * 1024 * 1024;

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
}

impl From<JobError> for Error {
    fn from(e: JobError) -> Self {
        match &e {
            JobError::Docker { .. } => Error::unavailable(Dependency::Docker, e.to_string()),
            // A refused precondition: nothing ran, nothing changed.
            JobError::NoContainer { .. } => Error::Gate {
                reason: e.to_string(),
            },
            JobError::Timeout { job, .. }
            | JobError::Exec { job, .. }
            | JobError::Stream { job, .. }
            | JobError::TooMuchOutput { job } => Error::failed(job.clone(), e.to_string()),
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
    /// The last `jobs.tail_lines` lines of stdout and stderr, redacted.
    pub tail: Vec<String>,
    /// Lines containing `jobs.warning_pattern` (case-insensitive).
    pub warning_count: usize,
    pub line_count: usize,
    /// The job's stdout when `capture_stdout` was set (not redacted: it is
    /// parsed, never printed as is).
    pub stdout: String,
    pub duration: Duration,
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
    let docker = crate::docker::connect(config).await?;
    let (container, _) =
        find_api_container(&docker, config)
            .await?
            .ok_or_else(|| JobError::NoContainer {
                project: config.runtime.project_name.clone(),
                service: config.runtime.backend_service.clone(),
            })?;
    let secure = crate::envrender::secure_variables(config);
    register_container_secrets(&docker, &container, &secure).await;
    Ok(run_in(&docker, &container, config, job).await?)
}

/// The job inherits the container's env, which holds SSM SecureString values
/// the agent never read itself in this run. Register the ones the rendered
/// env files name as SecureString (`secure`), and those that look like
/// secrets (by name, or a URL with a password), so a job that prints them is
/// redacted. Best effort: without the inspect, redaction of our own secrets
/// still applies.
async fn register_container_secrets(
    docker: &Docker,
    container: &str,
    secure: &std::collections::BTreeSet<String>,
) {
    let env = match docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(inspect) => inspect.config.and_then(|c| c.env).unwrap_or_default(),
        Err(e) => {
            log::debug!(stage = "job"; "cannot inspect the API container for its env: {e}");
            return;
        }
    };
    for entry in env {
        let Some((name, value)) = entry.split_once('=') else {
            continue;
        };
        if secure.contains(name) || looks_secret(name, value) {
            register_secret(value);
            if let Some(password) = url_password(value) {
                register_secret(password);
            }
        }
    }
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

/// The password of `scheme://user:password@host...`, if any.
fn url_password(value: &str) -> Option<&str> {
    let (_, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// Run in a given container (tests and callers that already found it).
pub async fn run_in(
    docker: &Docker,
    container: &str,
    config: &Config,
    job: &Job<'_>,
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
                ..Default::default()
            },
        )
        .await
        .map_err(|e| exec_err(e.to_string()))?;
    let mut sink = Sink::new(config, job);
    let streamed = tokio::time::timeout(deadline, async {
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
    })
    .await;
    match streamed {
        Err(_) => {
            sink.finish();
            return Err(JobError::Timeout {
                job: job.name.to_owned(),
                argv: argv_text,
                secs: deadline.as_secs(),
                fate: stop_exec(&docker, &exec.id, config).await,
            });
        }
        Ok(result) => result?,
    }
    sink.finish();
    // The stream ends when the process closes its output; the exit code can
    // lag a moment behind.
    let exit_code = loop {
        let inspect = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| exec_err(e.to_string()))?;
        if inspect.running != Some(true) {
            break inspect.exit_code.unwrap_or(-1);
        }
        if started.elapsed() > deadline {
            return Err(JobError::Timeout {
                job: job.name.to_owned(),
                argv: argv_text,
                secs: deadline.as_secs(),
                fate: stop_exec(&docker, &exec.id, config).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let outcome = Outcome {
        exit_code,
        duration: started.elapsed(),
        ..sink.into_outcome()
    };
    if outcome.success() {
        log::info!(stage = job.name; "`{argv_text}` exited 0 in {:.1}s ({} lines, {} warnings)", outcome.duration.as_secs_f64(), outcome.line_count, outcome.warning_count);
    } else {
        log::error!(stage = job.name; "`{argv_text}` exited {exit_code} after {:.1}s; last lines:", outcome.duration.as_secs_f64());
        for line in &outcome.tail {
            log::error!(stage = job.name; "  {line}");
        }
    }
    Ok(outcome)
}

/// End an exec past its deadline. The Engine API has no call for that, but
/// on a local Engine the exec's host PID is ours to signal (the agent runs as
/// root beside dockerd): SIGTERM, a grace period, then SIGKILL. A migration
/// runs in one transaction, so ending it rolls back rather than half-applies.
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
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        // SAFETY: kill(2) with a pid the Engine reported for this exec.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            return format!("{still} (cannot signal pid {pid}: {e})");
        }
        let until = Instant::now() + GRACE;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match docker.inspect_exec(exec_id).await.map(running_pid) {
                Ok(Some(_)) => continue,
                _ => return format!("the agent ended it with {name}"),
            }
        }
    }
    still
}

/// Splits the two streams into lines, logs them, counts warnings, keeps the
/// tail and (optionally) all of stdout.
struct Sink {
    job: String,
    pattern: String,
    tail_limit: usize,
    capture: bool,
    stdout_partial: Vec<u8>,
    stderr_partial: Vec<u8>,
    outcome: Outcome,
    tail: VecDeque<String>,
}

impl Sink {
    fn new(config: &Config, job: &Job<'_>) -> Self {
        Sink {
            job: job.name.to_owned(),
            pattern: config.jobs.warning_pattern.to_lowercase(),
            tail_limit: config.jobs.tail_lines,
            capture: job.capture_stdout,
            stdout_partial: Vec::new(),
            stderr_partial: Vec::new(),
            outcome: Outcome::default(),
            tail: VecDeque::new(),
        }
    }

    fn take(&mut self, msg: LogOutput) -> Result<(), JobError> {
        let (bytes, is_stdout) = match msg {
            LogOutput::StdOut { message } => (message, true),
            LogOutput::StdErr { message } | LogOutput::Console { message } => (message, false),
            LogOutput::StdIn { .. } => return Ok(()),
        };
        if is_stdout && self.capture {
            if self.outcome.stdout.len() + bytes.len() > MAX_CAPTURED_STDOUT {
                return Err(JobError::TooMuchOutput {
                    job: self.job.clone(),
                });
            }
            self.outcome
                .stdout
                .push_str(&String::from_utf8_lossy(&bytes));
        }
        let mut partial = std::mem::take(if is_stdout {
            &mut self.stdout_partial
        } else {
            &mut self.stderr_partial
        });
        partial.extend_from_slice(&bytes);
        let mut start = 0;
        while let Some(pos) = partial[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&partial[start..start + pos]).into_owned();
            self.line(&line);
            start += pos + 1;
        }
        partial.drain(..start);
        // A line longer than this is flushed in pieces rather than held.
        if partial.len() > 64 * 1024 {
            let line = String::from_utf8_lossy(&partial).into_owned();
            self.line(&line);
            partial.clear();
        }
        if is_stdout {
            self.stdout_partial = partial;
        } else {
            self.stderr_partial = partial;
        }
        Ok(())
    }

    fn line(&mut self, line: &str) {
        let line = redact(line.trim_end_matches('\r'));
        self.outcome.line_count += 1;
        if !self.pattern.is_empty() && line.to_lowercase().contains(&self.pattern) {
            self.outcome.warning_count += 1;
        }
        log::info!(stage = self.job.as_str(); "| {line}");
        if self.tail_limit > 0 {
            if self.tail.len() == self.tail_limit {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        }
    }

    /// Flush lines without a final newline.
    fn finish(&mut self) {
        for partial in [
            std::mem::take(&mut self.stdout_partial),
            std::mem::take(&mut self.stderr_partial),
        ] {
            if !partial.is_empty() {
                let line = String::from_utf8_lossy(&partial).into_owned();
                self.line(&line);
            }
        }
    }

    fn into_outcome(self) -> Outcome {
        Outcome {
            tail: self.tail.into_iter().collect(),
            ..self.outcome
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_env_are_recognised() {
        assert_eq!(url_password("postgres://app:pw@db:5432/x"), Some("pw"));
        assert_eq!(url_password("https://example.com/a@b"), None);
        assert!(looks_secret("DATABASE_URL", "postgres://app:pw@db/x"));
        assert!(looks_secret("JWT_SECRET", "abc"));
        assert!(!looks_secret("PORT", "8080"));
        assert!(!looks_secret("MEDIA_BUCKET", "wavemap-dev-media"));
    }

    #[test]
    fn lines_split_across_chunks_warnings_counted_tail_bounded() {
        let mut config = Config::default();
        config.jobs.tail_lines = 2;
        config.jobs.warning_pattern = "WARN".into();
        let argv = vec!["x".to_string()];
        let job = Job {
            name: "seed",
            argv: &argv,
            capture_stdout: true,
        };
        let mut sink = Sink::new(&config, &job);
        sink.take(LogOutput::StdOut {
            message: "one\ntw".into(),
        })
        .unwrap();
        sink.take(LogOutput::StdErr {
            message: "warning: x\n".into(),
        })
        .unwrap();
        sink.take(LogOutput::StdOut {
            message: "o\nthree".into(),
        })
        .unwrap();
        sink.finish();
        let out = sink.into_outcome();
        assert_eq!(out.line_count, 4);
        assert_eq!(out.warning_count, 1);
        assert_eq!(out.tail, ["two", "three"]);
        assert_eq!(out.stdout, "one\ntwo\nthree");
    }
}
