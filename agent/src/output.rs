//! What the agent prints: markers on stdout, progress on stderr, and the one
//! redaction layer every line passes through.
//!
//! SSM keeps only the first 24,000 characters of stdout and 8,000 of stderr,
//! so stdout carries nothing but `WAVEMAP_<AREA>_<FIELD>=<value>` markers (or
//! one JSON object with `--json`) and every value is bounded in length.
//! Progress for people goes through `log` to stderr or the journal.
//!
//! Stage markers are the exception to "markers at the end": a command
//! killed by SSM's timeout prints nothing at exit, so each stage says
//! `WAVEMAP_<AREA>_STAGE=<stage>` on stdout when it starts ([`stage`]),
//! flushed, and the last one printed is the stage it was in. They are few
//! (one per stage), so stdout stays far below SSM's window.
//!
//! Redaction is defence in depth: the code never formats a secret value on
//! purpose, and every secret value the agent handles is registered with
//! [`register_secret`] so that, if one slipped into a message anyway, it is
//! replaced before it reaches any output.

use std::io::Write;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::error::Stage;

/// Longest marker value printed; longer values are cut with a `...` suffix.
const MAX_MARKER_VALUE: usize = 400;

/// Secrets shorter than this are not registered: replacing every "1" or "ab"
/// in the output would corrupt markers without protecting anything real.
const MIN_SECRET_LEN: usize = 4;

pub const REDACTED: &str = "[redacted]";

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remember a secret value so that [`redact`] removes it from any text.
pub fn register_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_owned());
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
    // Inside JSON (`--json`, the journal, Engine API bodies) a value with
    // quotes, backslashes or newlines appears escaped.
    if let Ok(quoted) = serde_json::to_string(value) {
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != value && !secrets.iter().any(|s| s == escaped) {
            secrets.push(escaped.to_owned());
        }
    }
    // Multi-line secrets (PEM keys) also leak line by line.
    for line in value.lines() {
        let line = line.trim();
        if line.len() >= 16 && !secrets.iter().any(|s| s == line) {
            secrets.push(line.to_owned());
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Replace every registered secret value in `text`.
pub fn redact(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = text.to_owned();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// `text` with every C0 and C1 control character (and DEL) replaced by a
/// visible escape (`\x1b`, `\u{9b}`; a tab by a space), so no line the
/// agent logs can move a terminal's cursor, forge a second line, or hide
/// text from an operator reading the journal. Applied once, where lines
/// leave: the logger ([`crate::logging`]) and the job output file.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(' '),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Text the agent prints in place of a user name or password in a URL.
const URL_REDACTED: &str = "REDACTED";

/// `value` with the user name and password of a URL replaced, when it is a
/// URL that has either (`postgres://REDACTED:REDACTED@db:5432/app`).
/// `None` when there is nothing to hide or it is not a URL.
pub fn redact_url_userinfo(value: &str) -> Option<String> {
    let mut url = url::Url::parse(value).ok()?;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let had_password = url.password().is_some();
    url.set_username(URL_REDACTED).ok()?;
    url.set_password(had_password.then_some(URL_REDACTED))
        .ok()?;
    Some(url.to_string())
}

/// A PostgreSQL connection string (`database.url`) with its password
/// removed, in each form tokio-postgres accepts: a URL with `user:pass@`, a
/// URL with `?password=`, and the libpq keyword form `password=...`. The
/// user name of a URL is hidden as before. tokio-postgres parses the value
/// to learn the password it would use; if that password still appears in
/// the result, or the value cannot be taken apart, the whole value is
/// withheld. `None` when `value` is not a connection string at all.
pub fn redact_database_url(value: &str) -> Option<String> {
    let trimmed = value.trim();
    let is_url = trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://");
    let parsed = trimmed.parse::<tokio_postgres::Config>().ok();
    if !is_url && parsed.is_none() && !trimmed.contains('=') {
        return None;
    }
    let shown = if is_url {
        redact_postgres_url(trimmed)
    } else {
        redact_keyword_form(trimmed)
    };
    let leaks = |shown: &str| {
        parsed
            .as_ref()
            .and_then(|p| p.get_password())
            .and_then(|p| std::str::from_utf8(p).ok())
            .is_some_and(|p| !p.is_empty() && shown.contains(p))
    };
    match shown {
        Some(shown) if !leaks(&shown) => Some(shown),
        _ => Some(REDACTED.to_owned()),
    }
}

/// A PostgreSQL URL, or text in libpq's keyword form (`key=value ...`, no
/// scheme): what [`redact_database_url`] takes apart. Other URLs (endpoints,
/// smoke checks) keep the plain URL treatment.
fn is_connection_string(value: &str) -> bool {
    let value = value.trim();
    value.starts_with("postgres://")
        || value.starts_with("postgresql://")
        || (!value.contains("://") && value.contains('='))
}

/// `postgres://REDACTED:REDACTED@host/db?password=REDACTED`.
fn redact_postgres_url(value: &str) -> Option<String> {
    let mut url = url::Url::parse(value).ok()?;
    if let Some(hidden) = redact_url_userinfo(url.as_str()) {
        url = url::Url::parse(&hidden).ok()?;
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_key(&k) {
                    URL_REDACTED.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(url.to_string())
}

/// `host=db user=app password=REDACTED dbname=app`: libpq's keyword form,
/// each `key = value` taken apart by libpq's rules (a value may be
/// single-quoted, with `\` escapes) and written back.
fn redact_keyword_form(value: &str) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let mut val = String::new();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => val.push(chars.next()?.1),
                    '\'' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => val.push(c),
                }
            }
            rest = &quoted[end?..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let mut chars = rest[..end].chars();
            while let Some(c) = chars.next() {
                val.push(if c == '\\' { chars.next()? } else { c });
            }
            rest = &rest[end..];
        }
        rest = rest.trim_start();
        if secret_key(key) {
            out.push(format!("{key}={URL_REDACTED}"));
        } else if val.is_empty()
            || val.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\')
        {
            let escaped = val.replace('\\', "\\\\").replace('\'', "\\'");
            out.push(format!("{key}='{escaped}'"));
        } else {
            out.push(format!("{key}={val}"));
        }
    }
    Some(out.join(" "))
}

/// Key names whose values are secret whatever they look like.
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|m| key.contains(m))
}

/// The effective configuration (TOML text) with every secret-bearing value
/// hidden, for `config check`: the user and password of any URL
/// (`database.url`, endpoints, the Docker host), registered secrets, and any
/// value under a key named like a password or token. Text that does not
/// parse is withheld whole rather than printed unchecked.
pub fn redacted_toml(text: &str) -> String {
    fn walk(key: &str, value: &mut toml::Value) {
        match value {
            toml::Value::String(s) => {
                if key == "url" && is_connection_string(s) {
                    // `database.url` in any of its forms.
                    if let Some(hidden) = redact_database_url(s) {
                        *s = hidden;
                    }
                } else if key == "url" || secret_key(key) {
                    if let Some(hidden) = redact_url_userinfo(s) {
                        *s = hidden;
                    } else if secret_key(key) || (key == "url" && s.contains('@')) {
                        *s = REDACTED.to_owned();
                    }
                } else if let Some(hidden) = redact_url_userinfo(s) {
                    *s = hidden;
                }
                *s = redact(s);
            }
            toml::Value::Array(items) => items.iter_mut().for_each(|v| walk(key, v)),
            toml::Value::Table(table) => table.iter_mut().for_each(|(k, v)| walk(k, v)),
            _ => {}
        }
    }
    let Ok(mut value) = text.parse::<toml::Table>().map(toml::Value::Table) else {
        return "# the effective configuration cannot be shown safely\n".to_owned();
    };
    walk("", &mut value);
    toml::to_string_pretty(&value)
        .unwrap_or_else(|_| "# the effective configuration cannot be shown safely\n".to_owned())
}

/// Where stage markers go: the command's marker area, and whether stdout
/// is one JSON object (`--json`: no live lines; the last stage is a marker
/// of that object).
struct StageArea {
    area: &'static str,
    json: bool,
}

static STAGE_AREA: OnceLock<StageArea> = OnceLock::new();
static LAST_STAGE: Mutex<Option<Stage>> = Mutex::new(None);

/// From now on [`stage`] prints `<area>_STAGE=<stage>` (`area` is the
/// command's marker area, `WAVEMAP_RUNTIME_DEPLOY`). Set once, by the
/// command; the daemon sets nothing and its stages print nothing.
pub fn announce_stages(area: &'static str, json: bool) {
    let _ = STAGE_AREA.set(StageArea { area, json });
}

/// A stage starts: print its marker now and flush, so a command killed in it
/// has said where it was; then the test pause point of the same name
/// ([`crate::testpoint`]), so the crash tests kill it right after.
pub fn stage(stage: Stage) {
    *LAST_STAGE.lock().unwrap_or_else(PoisonError::into_inner) = Some(stage);
    if let Some(StageArea { area, json: false }) = STAGE_AREA.get() {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        // A closed stdout is not worth failing a deploy over; the final
        // markers report it if it matters.
        let _ = writeln!(out, "{area}_STAGE={}", stage.name()).and_then(|()| out.flush());
    }
    crate::testpoint::pause(stage.name());
}

/// The `<area>_STAGE` marker of the last stage started, for `--json`.
fn last_stage_marker() -> Option<(String, String)> {
    let area = STAGE_AREA.get()?;
    let stage = (*LAST_STAGE.lock().unwrap_or_else(PoisonError::into_inner))?;
    Some((format!("{}_STAGE", area.area), stage.name().to_owned()))
}

/// The machine-readable result of one command: ordered markers plus optional
/// structured data for `--json`.
#[derive(Debug, Default)]
pub struct Report {
    markers: Vec<(String, String)>,
    data: Option<serde_json::Value>,
}

impl Report {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a marker. `key` is the full name (`WAVEMAP_DATABASE_STATUS_STATE`);
    /// setting the same key again replaces its value in place.
    pub fn marker(&mut self, key: &str, value: impl std::fmt::Display) {
        debug_assert!(
            key.starts_with("WAVEMAP_")
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "marker names are WAVEMAP_<AREA>_<FIELD>: {key}"
        );
        let value = clean_value(&value.to_string());
        if let Some(slot) = self.markers.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.markers.push((key.to_owned(), value));
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.markers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn markers(&self) -> &[(String, String)] {
        &self.markers
    }

    /// Structured data printed under `"data"` with `--json` (status uses it).
    pub fn set_data(&mut self, data: serde_json::Value) {
        self.data = Some(data);
    }

    /// Print the report on stdout, as markers or as one JSON object.
    pub fn print(&self, json: bool, exit_code: i32) -> std::io::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if json {
            let mut markers = serde_json::Map::new();
            for (k, v) in &self.markers {
                markers.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
            if let Some((k, v)) = last_stage_marker() {
                markers.entry(k).or_insert(serde_json::Value::String(v));
            }
            let mut object = serde_json::Map::new();
            object.insert("exit_code".into(), exit_code.into());
            object.insert("markers".into(), serde_json::Value::Object(markers));
            if let Some(data) = &self.data {
                object.insert("data".into(), data.clone());
            }
            let text = serde_json::to_string(&serde_json::Value::Object(object))
                .map_err(std::io::Error::other)?;
            writeln!(out, "{}", redact(&text))?;
        } else {
            for (k, v) in &self.markers {
                writeln!(out, "{k}={v}")?;
            }
        }
        out.flush()
    }
}

/// One line, bounded, redacted: a marker value can never break the
/// `KEY=value` line format or flood SSM's output window.
fn clean_value(value: &str) -> String {
    let one_line: String = redact(value)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.len() <= MAX_MARKER_VALUE {
        return one_line;
    }
    let mut cut = MAX_MARKER_VALUE;
    while !one_line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &one_line[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_redacted_everywhere() {
        register_secret("hunter2-super-secret");
        let text = redact("password=hunter2-super-secret; again hunter2-super-secret");
        assert!(!text.contains("hunter2"));
        assert_eq!(text.matches(REDACTED).count(), 2);
    }

    #[test]
    fn pem_lines_are_redacted_one_by_one() {
        let pem = "-----BEGIN KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEF\n-----END KEY-----";
        register_secret(pem);
        let text = redact("got MIIBVQIBADANBgkqhkiG9w0BAQEF in a log");
        assert!(!text.contains("MIIBVQ"));
    }

    #[test]
    fn secrets_are_redacted_inside_json_too() {
        let secret = "it's \"q-secret\" \\ x";
        register_secret(secret);
        let json = serde_json::json!({ "Env": [format!("A={secret}")] }).to_string();
        assert!(!redact(&json).contains("q-secret"), "{}", redact(&json));
    }

    #[test]
    fn config_text_hides_url_credentials_and_secret_keys() {
        let text = "[database]\nurl = \"postgres://app:s3cr3t-pw@db:5432/app\"\n\n[aws]\nssm_endpoint = \"http://k:v-secret@127.0.0.1:5055/\"\nregion = \"us-east-2\"\n";
        let shown = redacted_toml(text);
        assert!(
            !shown.contains("s3cr3t-pw") && !shown.contains("app:"),
            "{shown}"
        );
        assert!(!shown.contains("v-secret"), "{shown}");
        assert!(
            shown.contains("postgres://REDACTED:REDACTED@db:5432/app"),
            "{shown}"
        );
        assert!(shown.contains("us-east-2"), "{shown}");
        assert_eq!(redact_url_userinfo("https://example.com/a@b"), None);
    }

    #[test]
    fn database_urls_lose_the_password_in_every_form() {
        let pw = "Pw-7yq'x\\z";
        for (value, shown) in [
            (
                "postgres://app:S3cretPw@db:5432/app".to_owned(),
                "postgres://REDACTED:REDACTED@db:5432/app",
            ),
            (
                "postgres://db:5432/app?user=app&password=S3cretPw&sslmode=require".to_owned(),
                "postgres://db:5432/app?user=app&password=REDACTED&sslmode=require",
            ),
            (
                "host=db port=5432 user=app password=S3cretPw dbname=app".to_owned(),
                "host=db port=5432 user=app password=REDACTED dbname=app",
            ),
            (
                format!(
                    "host=db password = '{}' dbname='my app'",
                    pw.replace('\\', "\\\\").replace('\'', "\\'")
                ),
                "host=db password=REDACTED dbname='my app'",
            ),
        ] {
            let text = format!("[database]\nurl = {}\n", toml::Value::String(value.clone()));
            let out = redacted_toml(&text);
            assert!(
                !out.contains("S3cretPw") && !out.contains("Pw-7yq"),
                "{out}"
            );
            assert_eq!(
                redact_database_url(&value).as_deref(),
                Some(shown),
                "{value}"
            );
        }
        // Other URLs keep the URL treatment, `=` in the query or not.
        let out = redacted_toml("[smoke]\nurl = \"http://u:S3cretPw@h/?a=b\"\n");
        assert!(!out.contains("S3cretPw"), "{out}");
        // Not taken apart: withheld whole.
        assert_eq!(
            redact_database_url("host=db password='unterminated").as_deref(),
            Some(REDACTED)
        );
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            printable("a\x1b[2Jb\nc\u{9b}31md\te\x7f"),
            "a\\x1b[2Jb\\x0ac\\u{9b}31md e\\x7f"
        );
        assert_eq!(printable("plain é"), "plain é");
    }

    #[test]
    fn marker_values_are_one_bounded_line() {
        let mut report = Report::new();
        report.marker("WAVEMAP_TEST_VALUE", "a\nb\r\nc");
        report.marker("WAVEMAP_TEST_LONG", "x".repeat(5000));
        assert_eq!(report.get("WAVEMAP_TEST_VALUE"), Some("a b  c"));
        assert!(report.get("WAVEMAP_TEST_LONG").map(str::len) < Some(410));
    }

    #[test]
    fn setting_a_marker_twice_replaces_it() {
        let mut report = Report::new();
        report.marker("WAVEMAP_A_B", 1);
        report.marker("WAVEMAP_A_C", 2);
        report.marker("WAVEMAP_A_B", 3);
        assert_eq!(
            report.markers(),
            &[
                ("WAVEMAP_A_B".to_string(), "3".to_string()),
                ("WAVEMAP_A_C".to_string(), "2".to_string())
            ]
        );
    }
}
