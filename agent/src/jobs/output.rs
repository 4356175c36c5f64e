//! What a job prints, and where it goes.
//!
//! SSM keeps only the first 8,000 characters of a command's stderr, so a
//! job that prints 20,000 lines must not push the final error out of it.
//! Every line, redacted and with its control characters replaced, goes to a
//! 0600 file `state_dir/jobs/<operation id>.log` (and to the journal at
//! debug, only with `-v`, when journald runs); stderr shows
//! the first lines and the last `jobs.tail_lines` of each job, with the count
//! skipped, within a budget shared by the jobs of one command. Warning lines
//! are counted, sampled and reduced to a shape whose fingerprint changes only
//! when the kind of warnings does.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bollard::container::LogOutput;

use super::{Job, JobError, Outcome, MAX_CAPTURED_STDOUT};
use crate::config::Config;
use crate::error::Error;
use crate::operation;
use crate::output::redact;

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

/// The full output file of this operation, `state_dir/jobs/<id>.log`, mode
/// 0600 (job output can hold what redaction does not know), opened for
/// append: the jobs of one operation share it.
///
/// Unbuffered: each line is one write, so a write that fails (a full disk)
/// is known to be that line, and the summary can name it.
fn open_job_log(config: &Config) -> Option<(std::fs::File, PathBuf)> {
    let dir = config.agent.state_dir.join("jobs");
    let path = dir.join(format!("{}.log", operation::id()));
    let opened = crate::fsutil::ensure_dir(
        config.agent.state_dir.as_path(),
        crate::fsutil::AGENT_DIR_MODE,
    )
    .and_then(|()| crate::fsutil::ensure_dir(&dir, crate::fsutil::PRIVATE_DIR_MODE))
    .map_err(Error::from)
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
            Some((file, path))
        }
        Err(e) => {
            log::warn!(stage = "job"; "cannot keep the full job output: {e}");
            None
        }
    }
}

/// The journal, when there is one and `-v` was given: every job line goes
/// there at debug. Without `-v` job output stays out of the journal, which
/// more people can read than the job log file.
fn journal() -> Option<systemd_journal_logger::JournalLog> {
    if !crate::logging::verbose() || !std::path::Path::new("/run/systemd/journal/socket").exists() {
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
pub(super) struct Sink {
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
    log: Option<(std::fs::File, PathBuf)>,
    /// 1-based numbers of the lines the job log did not take, as ranges.
    lost: Vec<(usize, usize)>,
    journal: Option<systemd_journal_logger::JournalLog>,
}

impl Sink {
    pub(super) fn new(config: &Config, job: &Job<'_>) -> Self {
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
            lost: Vec::new(),
            journal: journal(),
        }
    }

    pub(super) fn take(&mut self, msg: LogOutput) -> Result<(), JobError> {
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
        let line = crate::output::printable(&redact(line.trim_end_matches('\r')));
        let number = self.outcome.line_count;
        self.outcome.line_count += 1;
        if let Some((file, _)) = &mut self.log {
            // Best effort: a full disk must not fail the job, but the
            // summary names every line the file did not take.
            if file.write_all(format!("{line}\n").as_bytes()).is_err() {
                let n = number + 1;
                match self.lost.last_mut() {
                    Some((_, end)) if *end + 1 == n => *end = n,
                    _ => self.lost.push((n, n)),
                }
            }
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
            log::info!(stage = self.job.as_str(), job_output = true; "| {shown}");
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
    pub(super) fn finish(&mut self) {
        for partial in [
            std::mem::take(&mut self.stdout_partial),
            std::mem::take(&mut self.stderr_partial),
        ] {
            if !partial.is_empty() {
                let line = String::from_utf8_lossy(&partial).into_owned();
                self.line(&line);
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
                .map(|(_, p)| format!("; {}", self.where_lines_are(p)))
                .unwrap_or_default();
            log::info!(stage = self.job.as_str(); "| ... {skipped} lines not shown here{file}");
        } else if let (Some((_, p)), false) = (&self.log, self.lost.is_empty()) {
            log::warn!(stage = self.job.as_str(); "{}", self.where_lines_are(p));
        }
        for line in shown {
            log::info!(stage = self.job.as_str(), job_output = true; "| {line}");
        }
        self.tail_limit = 0;
        self.tail.clear();
        STDERR_LEFT.fetch_add(std::mem::take(&mut self.budget), Ordering::Relaxed);
    }

    /// "all N lines are in <path>", or which lines are not when a write
    /// to the job log failed (never "all" when some are missing).
    fn where_lines_are(&self, path: &std::path::Path) -> String {
        let total = self.outcome.line_count;
        if self.lost.is_empty() {
            return format!("all {total} lines are in {}", path.display());
        }
        let lost: usize = self.lost.iter().map(|(a, b)| b - a + 1).sum();
        const NAMED: usize = 5;
        let mut ranges: Vec<String> = self
            .lost
            .iter()
            .take(NAMED)
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        if self.lost.len() > NAMED {
            ranges.push(format!("and {} more ranges", self.lost.len() - NAMED));
        }
        format!(
            "{} of {total} lines are in {}; lines {} could not be written to it ({lost} in all)",
            total - lost,
            path.display(),
            ranges.join(", ")
        )
    }

    pub(super) fn into_outcome(self) -> Outcome {
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

    #[test]
    fn the_summary_names_lines_the_job_log_did_not_take() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.agent.state_dir = crate::config::AbsPath::new(dir.path());
        let argv = vec!["x".to_string()];
        let job = Job {
            name: "seed",
            argv: &argv,
            capture_stdout: false,
        };
        let mut sink = Sink::new(&config, &job);
        let path = sink.log.as_ref().unwrap().1.clone();
        assert_eq!(
            sink.where_lines_are(&path),
            format!("all 0 lines are in {}", path.display())
        );
        sink.take(LogOutput::StdOut {
            message: "one\ntwo\n".into(),
        })
        .unwrap();
        // The disk fills up: every write fails (ENOSPC) from line 3 to 5.
        let good = std::mem::replace(
            &mut sink.log.as_mut().unwrap().0,
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        sink.take(LogOutput::StdOut {
            message: "three\nfour\nfive\n".into(),
        })
        .unwrap();
        sink.log.as_mut().unwrap().0 = good;
        sink.take(LogOutput::StdOut {
            message: "six\n".into(),
        })
        .unwrap();
        sink.finish();
        assert_eq!(
            sink.where_lines_are(&path),
            format!(
                "3 of 6 lines are in {}; lines 3-5 could not be written to it (3 in all)",
                path.display()
            )
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("one\ntwo\nsix\n"), "{text}");
    }
}
