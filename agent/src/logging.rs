//! Progress logging: journald with structured fields under systemd, plain
//! stderr otherwise; every message and field value redacted on the way out.
//!
//! Call sites use `log` with key-values for the fields operators filter on:
//! `log::info!(stage = "pull"; "pulling {image}")`. Under journald those
//! become `STAGE=pull`; on stderr they prefix the line as `[pull]`.
//!
//! Every message and field value also has its control characters replaced
//! ([`crate::output::printable`]): job output and error texts from outside
//! must not carry terminal escapes or forge lines into the journal.
//!
//! Job output (lines with the field [`JOB_OUTPUT`]) can hold what redaction
//! does not know, and the journal is readable by the `adm` and
//! `systemd-journal` groups, so it goes to the journal only with `-v`
//! ([`verbose`]); on stderr (the SSM command output) it is always shown.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

use crate::output::{printable, redact};

/// The field that marks a line as a job's output (its value is ignored).
pub const JOB_OUTPUT: &str = "job_output";

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Whether `-v` was given: job output may then reach the journal.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

enum Sink {
    Journal(JournalLog),
    Stderr,
}

struct RedactingLogger {
    sink: Sink,
    level: LevelFilter,
}

/// Install the logger once, at start. `verbose` lowers the level to debug.
pub fn init(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    let level = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let sink = match systemd_journal_logger::connected_to_journal() {
        true => match JournalLog::new() {
            Ok(journal) => {
                Sink::Journal(journal.with_syslog_identifier("wavemap-agent".to_owned()))
            }
            Err(_) => Sink::Stderr,
        },
        false => Sink::Stderr,
    };
    let logger = RedactingLogger { sink, level };
    // A second init (tests) keeps the first logger; that is fine.
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

/// Collects a record's key-values as redacted strings.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0
            .push((key.to_string(), printable(&redact(&value.to_string()))));
        Ok(())
    }
}

impl Log for RedactingLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // `-v` is for the agent's own debug lines. Dependencies log whole
        // wire bodies at debug (bollard: Engine API JSON with container env,
        // escaped so redaction cannot match it): they get info at most.
        let limit = if metadata.target().starts_with("wavemap_agent") {
            self.level
        } else {
            self.level.min(LevelFilter::Info)
        };
        metadata.level() <= limit
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = printable(&redact(&record.args().to_string()));
        let mut fields = Fields::default();
        // A field that fails to format is dropped rather than the line.
        let _ = record.key_values().visit(&mut fields);
        let job_output = fields.0.iter().any(|(k, _)| k == JOB_OUTPUT);
        fields.0.retain(|(k, _)| k != JOB_OUTPUT);
        match &self.sink {
            Sink::Journal(_) if job_output && !verbose() => {}
            Sink::Journal(journal) => {
                let pairs: Vec<(&str, &str)> = fields
                    .0
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                journal.log(
                    &Record::builder()
                        .args(format_args!("{message}"))
                        .level(record.level())
                        .target(record.target())
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .key_values(&pairs)
                        .build(),
                );
            }
            Sink::Stderr => {
                let mut line = String::from("wavemap-agent: ");
                if record.level() <= Level::Warn {
                    line.push_str(&record.level().to_string().to_lowercase());
                    line.push_str(": ");
                }
                for (key, value) in &fields.0 {
                    if key == "stage" || key == "service" || key == "operation" {
                        line.push_str(&format!("[{value}] "));
                    }
                }
                line.push_str(&message);
                let stderr = std::io::stderr();
                let mut err = stderr.lock();
                // stderr gone (SSM killed the reader): nothing else to do.
                let _ = writeln!(err, "{line}");
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}
