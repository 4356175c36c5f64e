//! The one job runner: migrate, the seeds and the media report all run as
//! `docker exec` in the running API container.
//!
//! Running them there (not in a fresh container) is the point: the job sees
//! the exact image, network and rendered runtime env the API runs with, the
//! way the runbook's operators ran them. The container is found by the
//! labels Compose puts on it (project, service, `oneoff=False`), so a
//! `compose run` leftover is never picked.
//!
//! Output handling is shaped by SSM, which keeps only the first 8,000
//! characters of a command's stderr: the job's stdout and stderr both go,
//! line by line and redacted, to a 0600 file `state_dir/jobs/<operation
//! id>.log` (and to the journal at debug), while the agent's stderr shows
//! only the first lines and the last `jobs.tail_lines` of each job with the
//! count skipped, within a budget that keeps the whole stderr under 7,000
//! characters; the summary and the error come last. A broken output stream is
//! an error (`msg?`), never a silent early end that would look like a
//! finished job.
//!
//! A job must never outlive its owner unseen, nor run twice at once:
//! - before starting one, the runner looks for a job exec still running in
//!   the API container (a SIGKILLed agent leaves one) and waits for it
//!   within the lock timeout, or refuses with exit 75 naming it;
//! - on the deadline (`jobs.timeout`) or a signal (SIGTERM, SIGINT, SIGHUP;
//!   see [`crate::operation`]) it stops the exec through the exec's own
//!   process: a pidfd opened on the pid the Engine reports and confirmed to
//!   still be that exec's, so a reused pid is never signalled.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::Config;
use crate::error::{Dependency, Error};
use crate::lock::LockError;
use crate::operation;
use crate::output::{redact, register_secret};

/// Characters of job output the agent's stderr may carry over the whole
/// operation (reset runs three jobs), and per job. With the agent's own
/// lines, the summary and the error, stderr stays under 7,000 characters.
const JOB_STDERR_BUDGET: usize = 4_200;
const JOB_STDERR_PER_JOB: usize = 1_800;
/// First lines of each job shown on stderr.
const HEAD_LINES: usize = 5;
/// A line shown on stderr is cut to this many characters (the file keeps it
/// whole).
const SHOWN_LINE_CHARS: usize = 160;
/// Overhead of one shown line: the `wavemap-agent: [job] | ` prefix.
const LINE_OVERHEAD: usize = 32;
/// A warning sample marker value is cut to this many characters.
const SAMPLE_CHARS: usize = 400;
/// Warning samples kept per job.
const SAMPLES: usize = 3;

static STDERR_LEFT: AtomicUsize = AtomicUsize::new(JOB_STDERR_BUDGET);

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

/// A warning line with every word (letters, digits, `_`, `-`) that holds a
/// digit (numbers, ids, uuids, dates, hashes) replaced by `#`, so the same warnings about other rows compare
/// equal.
pub fn warning_shape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A short stable fingerprint of a set of warning shapes: the first 12 hex
/// digits of the SHA-256 of the sorted distinct shapes, one per line.
pub fn shape_fingerprint(shapes: &BTreeSet<String>) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for shape in shapes {
        hasher.update(shape.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())[..12].to_owned()
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
    let docker = crate::docker::connect(config).await?;
    let (container, _) =
        find_api_container(&docker, config)
            .await?
            .ok_or_else(|| JobError::NoContainer {
                project: config.runtime.project_name.clone(),
                service: config.runtime.backend_service.clone(),
            })?;
    wait_for_running_job(&docker, &container, config).await?;
    let secure = crate::envrender::secure_variables(config);
    register_container_secrets(&docker, &container, &secure).await;
    Ok(run_in(&docker, &container, config, job, env).await?)
}

/// Wait, within the lock timeout, until no job exec left by an earlier run
/// is running in the API container (none: at once). Exit 75 naming it when
/// it is still running at the end. Commands that check the database before
/// their job call this first, so they see the database as that job left it.
pub async fn wait_for_running_jobs(config: &Config) -> Result<(), Error> {
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
    let timeout = operation::lock_timeout();
    let started = Instant::now();
    let mut announced = false;
    loop {
        let running = running_job_execs(docker, container, config).await?;
        let Some((exec_id, argv)) = running.into_iter().next() else {
            if announced {
                log::info!(stage = "job"; "the earlier job has ended after {:.1}s", started.elapsed().as_secs_f64());
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
        if started.elapsed() >= timeout {
            return Err(LockError::Busy {
                path: format!(
                    "exec {short} in the API container {}",
                    &container[..container.len().min(12)]
                ),
                holder: format!("job `{argv}` is still running there, left by an earlier run; a second one is never started"),
                waited_secs: started.elapsed().as_secs(),
            }
            .into());
        }
        if !announced {
            log::warn!(stage = "job"; "job `{argv}` (exec {short}) is still running in the API container, left by an earlier run; waiting up to {}s for it to end before starting another", timeout.as_secs());
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
            for password in url_password(value).unwrap_or_default() {
                register_secret(&password);
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

/// The full output file of this operation, `state_dir/jobs/<id>.log`, mode
/// 0600 (job output can hold what redaction does not know), opened for
/// append: the jobs of one operation share it.
fn open_job_log(config: &Config) -> Option<(std::io::BufWriter<std::fs::File>, PathBuf)> {
    let dir = config.agent.state_dir.join("jobs");
    let path = dir.join(format!("{}.log", operation::id()));
    let opened = crate::fsutil::ensure_dir(config.agent.state_dir.as_path(), 0o755)
        .and_then(|()| crate::fsutil::ensure_dir(&dir, 0o700))
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))
        });
    match opened {
        Ok(file) => {
            operation::set_job_log(path.clone());
            Some((std::io::BufWriter::new(file), path))
        }
        Err(e) => {
            log::warn!(stage = "job"; "cannot keep the full job output: {e}");
            None
        }
    }
}

/// The journal, when there is one: every job line goes there at debug.
fn journal() -> Option<systemd_journal_logger::JournalLog> {
    if !std::path::Path::new("/run/systemd/journal/socket").exists() {
        return None;
    }
    systemd_journal_logger::JournalLog::new()
        .ok()
        .map(|j| j.with_syslog_identifier("wavemap-agent".to_owned()))
}

/// `line` cut to `max` characters, marked when cut.
fn cut(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        None => line.to_owned(),
        Some((at, _)) => format!("{}...", &line[..at]),
    }
}

/// Splits the two streams into lines; writes every line to the job log and
/// the journal; shows the first lines and the last `jobs.tail_lines` on
/// stderr within the budget; counts warnings and keeps samples; keeps (if
/// asked) all of stdout.
struct Sink {
    job: String,
    pattern: String,
    tail_limit: usize,
    capture: bool,
    stdout_partial: Vec<u8>,
    stderr_partial: Vec<u8>,
    outcome: Outcome,
    /// The last `tail_limit` lines, with their 0-based numbers.
    tail: VecDeque<(usize, String)>,
    /// Lines shown on stderr as they came (the head).
    head_shown: usize,
    /// Characters of stderr this job may still use.
    budget: usize,
    log: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    journal: Option<systemd_journal_logger::JournalLog>,
}

impl Sink {
    fn new(config: &Config, job: &Job<'_>) -> Self {
        let budget = take_budget(JOB_STDERR_PER_JOB);
        let mut log = open_job_log(config);
        if let Some((file, path)) = &mut log {
            let header = format!(
                "=== {} `{}` at {}\n",
                job.name,
                job.argv.join(" "),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            if let Err(e) = file.write_all(header.as_bytes()) {
                log::warn!(stage = "job"; "cannot write {}: {e}", path.display());
            }
        }
        Sink {
            job: job.name.to_owned(),
            pattern: config.jobs.warning_pattern.to_lowercase(),
            tail_limit: config.jobs.tail_lines,
            capture: job.capture_stdout,
            stdout_partial: Vec::new(),
            stderr_partial: Vec::new(),
            outcome: Outcome::default(),
            tail: VecDeque::new(),
            head_shown: 0,
            budget,
            log,
            journal: journal(),
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
        let number = self.outcome.line_count;
        self.outcome.line_count += 1;
        if let Some((file, _)) = &mut self.log {
            // Best effort: a full disk must not fail the job.
            let _ = writeln!(file, "{line}");
        }
        if let Some(journal) = &self.journal {
            log::Log::log(
                journal,
                &log::Record::builder()
                    .args(format_args!("{line}"))
                    .level(log::Level::Debug)
                    .target("wavemap_agent::jobs")
                    .key_values(&[("stage", self.job.as_str())])
                    .build(),
            );
        }
        if !self.pattern.is_empty() && line.to_lowercase().contains(&self.pattern) {
            self.outcome.warning_count += 1;
            if self.outcome.warning_samples.len() < SAMPLES {
                self.outcome.warning_samples.push(cut(&line, SAMPLE_CHARS));
            }
            self.outcome.warning_shapes.insert(warning_shape(&line));
        }
        let shown = cut(&line, SHOWN_LINE_CHARS);
        let cost = shown.len() + LINE_OVERHEAD;
        if self.head_shown == number && number < HEAD_LINES && cost <= self.budget / 2 {
            self.budget -= cost;
            self.head_shown += 1;
            log::info!(stage = self.job.as_str(); "| {shown}");
            return;
        }
        if self.tail_limit > 0 {
            if self.tail.len() == self.tail_limit {
                self.tail.pop_front();
            }
            self.tail.push_back((number, line));
        }
    }

    /// Flush lines without a final newline, then show the skipped count and
    /// the tail that fits the budget.
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
        if let Some((file, path)) = &mut self.log {
            if let Err(e) = file.flush() {
                log::warn!(stage = "job"; "cannot write {}: {e}", path.display());
            }
        }
        // The tail that fits, newest first, then shown oldest first.
        let mut shown: Vec<String> = Vec::new();
        for (_, line) in self.tail.iter().rev() {
            let line = cut(line, SHOWN_LINE_CHARS);
            let cost = line.len() + LINE_OVERHEAD;
            if cost > self.budget {
                break;
            }
            self.budget -= cost;
            shown.push(line);
        }
        shown.reverse();
        let skipped = self.outcome.line_count - self.head_shown - shown.len();
        if skipped > 0 {
            let file = self
                .log
                .as_ref()
                .map(|(_, p)| {
                    format!(
                        "; all {} lines are in {}",
                        self.outcome.line_count,
                        p.display()
                    )
                })
                .unwrap_or_default();
            log::info!(stage = self.job.as_str(); "| ... {skipped} lines not shown here{file}");
        }
        for line in shown {
            log::info!(stage = self.job.as_str(); "| {line}");
        }
        self.tail_limit = 0;
        self.tail.clear();
        STDERR_LEFT.fetch_add(std::mem::take(&mut self.budget), Ordering::Relaxed);
    }

    fn into_outcome(self) -> Outcome {
        self.outcome
    }
}

/// Reserve up to `want` characters of the operation's job stderr budget.
fn take_budget(want: usize) -> usize {
    let mut taken = 0;
    let _ = STDERR_LEFT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        taken = left.min(want);
        Some(left - taken)
    });
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn warning_shapes_ignore_numbers_and_ids() {
        let a = warning_shape("warning: series \"Summer 2024\" id 4711 (8f14e45f-ceea) skipped");
        let b = warning_shape("warning: series \"Summer 2031\" id 12 (c9f0f895-fb98) skipped");
        assert_eq!(a, b);
        assert_eq!(a, "warning: series \"Summer #\" id # (#) skipped");
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let one = shape_fingerprint(&set(&[&a, "warning: other"]));
        assert_eq!(one.len(), 12);
        assert_eq!(one, shape_fingerprint(&set(&["warning: other", &b])));
        assert_ne!(one, shape_fingerprint(&set(&[&a])));
    }

    #[test]
    fn lines_split_across_chunks_warnings_counted_stderr_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.agent.state_dir = crate::config::AbsPath::new(dir.path());
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
            message: "warning: x 12\n".into(),
        })
        .unwrap();
        sink.take(LogOutput::StdOut {
            message: "o\nthree\n".into(),
        })
        .unwrap();
        for i in 0..20_000 {
            sink.take(LogOutput::StdOut {
                message: format!("progress {i} {}\n", "x".repeat(300)).into(),
            })
            .unwrap();
        }
        sink.take(LogOutput::StdErr {
            message: "error: final\n".into(),
        })
        .unwrap();
        let budget_before_finish = sink.budget;
        sink.finish();
        assert!(budget_before_finish <= JOB_STDERR_PER_JOB);
        let log_path = sink.log.as_ref().unwrap().1.clone();
        let out = sink.into_outcome();
        assert_eq!(out.line_count, 20_005);
        assert_eq!(out.warning_count, 1);
        assert_eq!(out.warning_samples, vec!["warning: x 12"]);
        assert!(out.stdout.starts_with("one\ntwo\nthree"));
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(text.lines().count(), 20_006, "header + every line");
        assert!(text.ends_with("error: final\n"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&log_path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
