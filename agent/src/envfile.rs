//! The env file format: the writer the renderer uses and the reader that
//! turns a rendered file back into the exact values.
//!
//! Two programs read these files and both must see the same bytes: the agent
//! itself (it parses the files and hands the values to the Engine API when it
//! creates containers) and Docker Compose v2, whose `env_file:` parser
//! (compose-go's `dotenv` package) an operator gets with a manual
//! `docker compose up` on the host. So the writer only emits forms whose
//! meaning in compose-go is simple and certain, and the reader implements
//! compose-go's rules for those forms (and refuses, with the key name, what
//! it would read differently, such as `$NAME` interpolation).
//!
//! # What the writer emits
//!
//! One `KEY=<quoted value>` per variable, sorted by key, after a comment
//! header. Every value is quoted; which quotes depends on the value:
//!
//! - **Single quotes** when the value has no `'`, no `\` and no carriage
//!   return. compose-go keeps single-quoted text literally (no escapes, no
//!   `$` interpolation, raw newlines kept), so a multi-line PEM key stays
//!   readable as it is.
//! - **Double quotes** otherwise, with exactly four escapes: `\\` for `\`,
//!   `\"` for `"`, `\$` for `$`, `\n` for a newline and `\r` for a carriage
//!   return. Inside single quotes a backslash before `'` is eaten and a value
//!   ending in `\` escapes the closing quote, so those values cannot be
//!   single-quoted; double quotes with escapes can hold any text.
//!
//! Keys are `[A-Za-z_][A-Za-z0-9_]*`. A value containing NUL cannot be an
//! environment variable at all (the kernel's environment is NUL-separated),
//! so [`render`] refuses it, naming the key. Every other value SSM Parameter
//! Store can hold (UTF-8 text up to 8 KB, newlines, `=`, `#`, `$`, quotes,
//! backslashes, leading and trailing spaces) round-trips exactly, through
//! this reader and through Compose v2 (checked against the real CLI by the
//! `runtime_env` end-to-end tests). docs/env-file-format.md has the table.
//!
//! # What the reader accepts
//!
//! Blank lines, `#` comment lines, an optional `export ` prefix, and
//! `KEY=value` with an unquoted, single-quoted or double-quoted value, read
//! the way compose-go reads them (inline ` #` comments end an unquoted value;
//! `\'` inside single quotes is a quote; double quotes process `\\ \" \$ \n
//! \r \t` and friends; `$$` is a literal `$`). A `$NAME` or `${...}` outside
//! single quotes is refused: Compose would substitute it from the shell that
//! runs it, the agent has no such shell, and silently differing is worse than
//! an error. Errors name the line and the key, never the value.

use std::collections::BTreeMap;
use std::fmt;

/// Parsed variables, sorted by name. A key given twice keeps the last value,
/// as in Compose.
pub type EnvMap = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    /// Only names and line numbers: the text around an error may be secret.
    #[error("line {line}{}: {problem}", key_suffix(.key))]
    Syntax {
        line: usize,
        key: Option<String>,
        problem: &'static str,
    },
    #[error("{key:?} is not an environment variable name (use letters, digits and '_', not starting with a digit)")]
    BadKey { key: String },
    #[error("the value of {key} contains a NUL byte, which no environment variable can hold")]
    NulInValue { key: String },
    #[error("the file is not UTF-8 text")]
    NotUtf8,
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" ({k})")).unwrap_or_default()
}

/// Render variables as an env file: `header` lines as comments, then one
/// quoted `KEY=value` per variable in key order.
pub fn render(header: &[&str], vars: &EnvMap) -> Result<String, EnvFileError> {
    let mut out = String::new();
    for line in header {
        out.push_str("# ");
        // A newline in a header line would start an unquoted statement.
        out.push_str(&line.replace(['\n', '\r'], " "));
        out.push('\n');
    }
    for (key, value) in vars {
        if !crate::config::is_env_name(key) {
            return Err(EnvFileError::BadKey { key: key.clone() });
        }
        if value.contains('\0') {
            return Err(EnvFileError::NulInValue { key: key.clone() });
        }
        out.push_str(key);
        out.push('=');
        quote_into(value, &mut out);
        out.push('\n');
    }
    Ok(out)
}

/// Append `value` quoted so compose-go and [`parse`] both read it back
/// exactly (see the module doc for why these two forms).
fn quote_into(value: &str, out: &mut String) {
    if !value.contains(['\'', '\\', '\r']) {
        out.push('\'');
        out.push_str(value);
        out.push('\'');
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parse env file bytes (see the module doc for the accepted forms).
pub fn parse_bytes(bytes: &[u8]) -> Result<EnvMap, EnvFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EnvFileError::NotUtf8)?;
    parse(text)
}

/// Parse env file text the way compose-go's `dotenv` parser reads it.
pub fn parse(text: &str) -> Result<EnvMap, EnvFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser {
        src: text,
        pos: 0,
        line: 1,
    };
    let mut vars = EnvMap::new();
    while parser.statement_start() {
        let key = parser.key()?;
        let value = parser.value(&key)?;
        vars.insert(key, value);
    }
    Ok(vars)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
}

/// compose-go's "space": blanks that are not a line break.
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn syntax(&self, key: Option<&str>, problem: &'static str) -> EnvFileError {
        EnvFileError::Syntax {
            line: self.line,
            key: key.map(str::to_owned),
            problem,
        }
    }

    /// Skip whitespace and comment lines; false at the end of the input.
    fn statement_start(&mut self) -> bool {
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            }
            match self.peek() {
                None => return false,
                Some('#') => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                Some(_) => return true,
            }
        }
    }

    /// The key up to `=` (or compose-go's YAML-ish `:`), after an optional
    /// `export ` prefix.
    fn key(&mut self) -> Result<String, EnvFileError> {
        if let Some(after) = self.rest().strip_prefix("export") {
            if after.starts_with(is_space) {
                self.pos += "export".len();
                while self.peek().is_some_and(is_space) {
                    self.bump();
                }
            }
        }
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.syntax(None, "a variable name without '=' at the end")),
                Some('=') | Some(':') => break,
                Some('\n') => {
                    return Err(self.syntax(
                        None,
                        "a variable name without '=' (the agent does not inherit values from its own environment)",
                    ))
                }
                Some(c) if is_space(c) || c.is_alphanumeric() || c == '_' || c == '.' => {
                    self.bump();
                }
                Some(_) => return Err(self.syntax(None, "an unexpected character in a variable name")),
            }
        }
        let key = self.src[start..self.pos].trim_end().to_owned();
        self.bump(); // the '=' or ':'
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(self.syntax(None, "an empty variable name or one with a space in it"));
        }
        while self.peek().is_some_and(is_space) {
            self.bump();
        }
        Ok(key)
    }

    fn value(&mut self, key: &str) -> Result<String, EnvFileError> {
        match self.peek() {
            Some(quote @ ('\'' | '"')) => {
                self.bump();
                let raw = self.quoted(key, quote)?;
                self.after_quote(key)?;
                if quote == '"' {
                    expand_dollars(&expand_escapes(&raw)).map_err(|p| self.syntax(Some(key), p))
                } else {
                    Ok(raw)
                }
            }
            _ => {
                let end = self.rest().find('\n').unwrap_or(self.rest().len());
                let line = &self.rest()[..end];
                let value = line.split(" #").next().unwrap_or_default();
                let value = value.trim_end().to_owned();
                self.pos += end;
                expand_dollars(&value).map_err(|p| self.syntax(Some(key), p))
            }
        }
    }

    /// The text up to the closing `quote`. A backslash before the quote
    /// character yields the quote; before anything else it stays, for
    /// [`expand_escapes`] to handle (compose-go's two passes).
    fn quoted(&mut self, key: &str, quote: char) -> Result<String, EnvFileError> {
        let start_line = self.line;
        let mut raw = String::new();
        let mut escaped = false;
        while let Some(c) = self.bump() {
            if c == quote {
                if escaped {
                    escaped = false;
                    raw.push(c);
                    continue;
                }
                return Ok(raw);
            }
            if !escaped && c == '\\' {
                escaped = true;
                continue;
            }
            if escaped {
                escaped = false;
                raw.push('\\');
            }
            raw.push(c);
        }
        Err(EnvFileError::Syntax {
            line: start_line,
            key: Some(key.to_owned()),
            problem: "a quoted value that never ends",
        })
    }

    /// After a closing quote only blanks and a comment may follow on the
    /// line. (compose-go would start a new statement there; the agent's
    /// files never do that, so anything else is a hand edit gone wrong.)
    fn after_quote(&mut self, key: &str) -> Result<(), EnvFileError> {
        while self.peek().is_some_and(is_space) {
            self.bump();
        }
        match self.peek() {
            None | Some('\n') => Ok(()),
            Some('#') => {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
                Ok(())
            }
            Some(_) => Err(self.syntax(Some(key), "text after the closing quote")),
        }
    }
}

/// compose-go's escape pass over double-quoted text. `\$` becomes `$$` so
/// the `$` pass that follows keeps it literal.
fn expand_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => out.push('\\'),
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('v') => out.push('\u{b}'),
            Some('$') => out.push_str("$$"),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

/// compose-go's `$` pass: `$$` is a literal `$`; `$` before anything that
/// cannot start a name stays; `$NAME` and `${...}` would be substituted from
/// the environment of whoever runs Compose, which the agent refuses.
fn expand_dollars(text: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some(&n) if n == '{' || n == '_' || n.is_ascii_alphabetic() => {
                return Err(
                    "a `$NAME` or `${...}` substitution, which the agent does not perform; write `$$` for a literal `$` or single-quote the value",
                );
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

/// Which keys differ between two versions of a file: names only, so the
/// result can be printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl KeyDiff {
    pub fn between(old: &EnvMap, new: &EnvMap) -> KeyDiff {
        let mut diff = KeyDiff::default();
        for (key, value) in new {
            match old.get(key) {
                None => diff.added.push(key.clone()),
                Some(old_value) if old_value != value => diff.changed.push(key.clone()),
                Some(_) => {}
            }
        }
        diff.removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Display for KeyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "-".to_owned()
            } else {
                names.join(",")
            }
        };
        write!(
            f,
            "added {} ({}), changed {} ({}), removed {} ({})",
            self.added.len(),
            list(&self.added),
            self.changed.len(),
            list(&self.changed),
            self.removed.len(),
            list(&self.removed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every awkward value the format promises to carry.
    pub(crate) fn awkward_values() -> Vec<(&'static str, String)> {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNb\n-----END PRIVATE KEY-----\n";
        vec![
            ("PLAIN", "hello".into()),
            ("UNICODE", "héllo wörld — 日本語 🎉".into()),
            ("EQUALS", "a=b==c=".into()),
            ("HASH", "pass#word # not a comment #".into()),
            ("DOLLAR", "$HOME ${USER} $$ $(id) $1 end$".into()),
            ("SINGLE_QUOTE", "it's".into()),
            ("DOUBLE_QUOTE", "say \"hi\"".into()),
            ("BOTH_QUOTES", "'\"mixed\"' and \\' and \\\"".into()),
            ("QUOTED_WHOLE", "'single'".into()),
            ("BACKSLASH", "C:\\new\\table\\\\x".into()),
            ("TRAILING_BACKSLASH", "abc\\".into()),
            ("ESCAPE_LOOKALIKES", "\\n \\r \\t \\$ \\\" \\0 \\x41".into()),
            ("SPACES", "  padded both ends  ".into()),
            ("ONLY_SPACE", " ".into()),
            ("TAB", "\tlead and trail\t".into()),
            ("PEM", pem.into()),
            ("CRLF", "line1\r\nline2\r\n".into()),
            ("CR_ONLY", "a\rb".into()),
            ("EXPORT_LIKE", "export X=1".into()),
            ("exporter_URL", "https://exporter.example/?a=1&b=2".into()),
            ("COLON", "key: value".into()),
            ("EMPTY", String::new()),
            ("LONG", "x=#$'\"\\ ".repeat(1024)),
            ("_UNDERSCORE9", "9".into()),
        ]
    }

    fn map(pairs: Vec<(&str, String)>) -> EnvMap {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn every_awkward_value_round_trips() {
        let vars = map(awkward_values());
        let text = render(&["header"], &vars).unwrap();
        assert_eq!(parse(&text).unwrap(), vars);
    }

    #[test]
    fn quoting_is_single_when_possible_double_otherwise() {
        let text = render(
            &[],
            &map(vec![
                ("A", "plain $x #y".into()),
                ("B", "it's".into()),
                ("C", "a\\b".into()),
            ]),
        )
        .unwrap();
        assert_eq!(text, "A='plain $x #y'\nB=\"it's\"\nC=\"a\\\\b\"\n");
    }

    #[test]
    fn double_quotes_escape_exactly_five_characters() {
        let text = render(&[], &map(vec![("A", "\\\"$\n\r\t'".into())])).unwrap();
        assert_eq!(text, "A=\"\\\\\\\"\\$\\n\\r\t'\"\n");
    }

    #[test]
    fn compose_go_forms_parse_like_compose() {
        // Expected values observed from `docker compose config` (v2.40).
        let text = "A='it\\'s'\nB=\"a\\\\b\\$c\\\"d\\ne\\rf\"\nC='x\\y\\\\z'\nE=\"$$x\"\n\
                    export  F=unq # comment\nG=unq#nocomment\nH=a$-b\nI='#hash' # c\nJ: yaml\n";
        let vars = parse(text).unwrap();
        let expect = map(vec![
            ("A", "it's".into()),
            ("B", "a\\b$c\"d\ne\rf".into()),
            ("C", "x\\y\\\\z".into()),
            ("E", "$x".into()),
            ("F", "unq".into()),
            ("G", "unq#nocomment".into()),
            ("H", "a$-b".into()),
            ("I", "#hash".into()),
            ("J", "yaml".into()),
        ]);
        assert_eq!(vars, expect);
    }

    #[test]
    fn interpolation_is_refused_naming_the_key_not_the_value() {
        let err = parse("SECRET=\"hunter2${HOME}\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("SECRET") && err.contains("line 1"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(parse("A=$HOME\n").is_err());
        assert!(parse("A='$HOME'\n").is_ok());
    }

    #[test]
    fn unterminated_quote_names_the_key_and_its_line() {
        let err = parse("# c\nOK=1\nBAD='secret-value\nMORE=2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("BAD"), "{err}");
        assert!(!err.contains("secret-value"), "{err}");
    }

    #[test]
    fn text_after_a_closing_quote_is_refused() {
        assert!(parse("A='x' B='y'\n").is_err());
        assert!(parse("A='x'   # fine\n").is_ok());
    }

    #[test]
    fn nul_and_bad_keys_are_refused_by_the_writer() {
        let err = render(&[], &map(vec![("K", "a\0b".into())])).unwrap_err();
        assert_eq!(err, EnvFileError::NulInValue { key: "K".into() });
        assert!(render(&[], &map(vec![("1BAD", "x".into())])).is_err());
        assert!(render(&[], &map(vec![("BAD-NAME", "x".into())])).is_err());
    }

    #[test]
    fn diff_names_keys_only() {
        let old = map(vec![
            ("A", "1".into()),
            ("B", "2".into()),
            ("C", "3".into()),
        ]);
        let new = map(vec![
            ("A", "1".into()),
            ("B", "22".into()),
            ("D", "4".into()),
        ]);
        let diff = KeyDiff::between(&old, &new);
        assert_eq!(diff.added, vec!["D"]);
        assert_eq!(diff.changed, vec!["B"]);
        assert_eq!(diff.removed, vec!["C"]);
        assert!(KeyDiff::between(&new, &new).is_empty());
    }
}
