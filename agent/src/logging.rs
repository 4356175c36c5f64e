//! Progress logging: journald with structured fields under systemd, plain
//! stderr otherwise; every message and field value redacted on the way out.
//!
//! Call sites use `log` with key-values for the fields operators filter on:
//! `log::info!(stage = "pull"; "pulling {image}")`. Under journald those
//! become `STAGE=pull`; on stderr they prefix the line as `[pull]`.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

use crate::output::redact;

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
        self.0.push((key.to_string(), redact(&value.to_string())));
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
        let message = redact(&record.args().to_string());
        let mut fields = Fields::default();
        // A field that fails to format is dropped rather than the line.
        let _ = record.key_values().visit(&mut fields);
        match &self.sink {
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
