//! Compose variable interpolation and the dotenv format.
//!
//! The deploy hands the image references to the compose file through
//! variables (`${WAVEMAP_BACKEND_IMAGE}`), so interpolation is on the path of
//! every release; it follows compose-go's template rules: `$$` is a literal
//! `$`, `${VAR}`, `$VAR`, defaults (`:-` unset or empty, `-` unset),
//! alternatives (`:+`, `+`) and required-with-message (`:?`, `?`); defaults
//! may nest further references. A `$` followed by neither `$`, a name nor
//! `{` stays literal, as in Compose; a malformed `${...}` is an error.
//!
//! Messages never include a variable's value (values come from SSM env
//! files); they name the variable and the place.

use std::collections::BTreeMap;

/// A failed substitution; `path` is filled by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// `${VAR:?message}` / `${VAR?message}` with VAR missing.
    Required { variable: String, message: String },
    /// A `$` that starts no valid reference.
    Invalid { near: String },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Required { variable, message } if message.is_empty() => {
                write!(f, "required variable {variable} is missing a value")
            }
            TemplateError::Required { variable, message } => {
                write!(
                    f,
                    "required variable {variable} is missing a value: {message}"
                )
            }
            TemplateError::Invalid { near } => {
                write!(
                    f,
                    "invalid interpolation format near {near:?}; write $$ for a literal $"
                )
            }
        }
    }
}

/// Substitute every reference in `input` using `lookup`.
pub fn substitute(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let close =
                    matching_brace(&chars, i + 2).ok_or_else(|| TemplateError::Invalid {
                        near: chars[i..].iter().take(40).collect(),
                    })?;
                let body: String = chars[i + 2..close].iter().collect();
                out.push_str(&braced(&body, lookup)?);
                i = close + 1;
            }
            Some(&n) if n == '_' || n.is_ascii_alphabetic() => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end] == '_' || chars[end].is_ascii_alphanumeric())
                {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                i = end;
            }
            // compose-go's pattern matches nothing here, so the `$` stays
            // literal: `$(seq 1 60)` in a shell command, `$2a$14$...` in a
            // bcrypt hash, a trailing `$`.
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Index of the `}` closing a `${` whose body starts at `from`, skipping
/// nested `${...}`.
fn matching_brace(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '$' if chars.get(i + 1) == Some(&'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            '$' if chars.get(i + 1) == Some(&'$') => {
                i += 2;
                continue;
            }
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn braced(body: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, TemplateError> {
    let name_end = body
        .char_indices()
        .find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric()))
        .map_or(body.len(), |(i, _)| i);
    let name = &body[..name_end];
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic());
    if !valid_name {
        return Err(TemplateError::Invalid {
            near: format!("${{{body}}}"),
        });
    }
    let rest = &body[name_end..];
    let value = lookup(name);
    let set = value.is_some();
    let set_non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let op = |prefix: &str| rest.strip_prefix(prefix);
    if rest.is_empty() {
        return Ok(value.unwrap_or_default());
    }
    if let Some(default) = op(":-") {
        return if set_non_empty {
            Ok(value.unwrap_or_default())
        } else {
            substitute(default, lookup)
        };
    }
    if let Some(default) = op("-") {
        return if set {
            Ok(value.unwrap_or_default())
        } else {
            substitute(default, lookup)
        };
    }
    if let Some(message) = op(":?") {
        return if set_non_empty {
            Ok(value.unwrap_or_default())
        } else {
            Err(TemplateError::Required {
                variable: name.to_owned(),
                message: substitute(message, lookup)?,
            })
        };
    }
    if let Some(message) = op("?") {
        return if set {
            Ok(value.unwrap_or_default())
        } else {
            Err(TemplateError::Required {
                variable: name.to_owned(),
                message: substitute(message, lookup)?,
            })
        };
    }
    if let Some(alternative) = op(":+") {
        return if set_non_empty {
            substitute(alternative, lookup)
        } else {
            Ok(String::new())
        };
    }
    if let Some(alternative) = op("+") {
        return if set {
            substitute(alternative, lookup)
        } else {
            Ok(String::new())
        };
    }
    Err(TemplateError::Invalid {
        near: format!("${{{body}}}"),
    })
}

/// A dotenv parse error (line number only: lines may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DotenvError {
    Syntax {
        line: usize,
        problem: &'static str,
    },
    /// Only the key and, for a required variable, its name: the text of
    /// the line may be secret.
    Template {
        line: usize,
        key: String,
        error: TemplateError,
    },
}

impl std::fmt::Display for DotenvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DotenvError::Syntax { line, problem } => write!(f, "line {line}: {problem}"),
            DotenvError::Template {
                line,
                key,
                error: TemplateError::Invalid { .. },
            } => write!(
                f,
                "line {line} ({key}): invalid interpolation format; quote the value in single quotes or write $$ for a literal $"
            ),
            DotenvError::Template { line, key, error } => {
                write!(f, "line {line} ({key}): {error}")
            }
        }
    }
}

/// Parse a dotenv file the way compose-go does: `KEY=value`, optional
/// `export `, `#` comments, single quotes literal, double quotes with
/// escapes, unquoted values trimmed with ` #` comments cut. Unquoted and
/// double-quoted values are interpolated with earlier keys of the same file
/// first, then `lookup`. A bare `KEY` takes its value from `lookup` and is
/// left out when that has none.
pub fn parse_dotenv(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, DotenvError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut idx = 0;
    while idx < lines.len() {
        let number = idx + 1;
        let raw = lines[idx];
        idx += 1;
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, rest) = match line.find(['=', ':']) {
            Some(pos) => (line[..pos].trim(), Some(line[pos + 1..].trim_start())),
            None => (line.trim(), None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(DotenvError::Syntax {
                line: number,
                problem: "expected KEY=value",
            });
        }
        let Some(rest) = rest else {
            if let Some(value) = lookup(key) {
                vars.insert(key.to_owned(), value);
            }
            continue;
        };
        let local = |name: &str| vars.get(name).cloned().or_else(|| lookup(name));
        let value = if let Some(body) = rest.strip_prefix('\'') {
            let mut body = body.to_owned();
            while closing_single_quote(&body).is_none() && idx < lines.len() {
                body.push('\n');
                body.push_str(lines[idx]);
                idx += 1;
            }
            let end = closing_single_quote(&body).ok_or(DotenvError::Syntax {
                line: number,
                problem: "unterminated single quote",
            })?;
            body[..end].replace("\\'", "'")
        } else if let Some(body) = rest.strip_prefix('"') {
            let mut body = body.to_owned();
            while closing_double_quote(&body).is_none() && idx < lines.len() {
                body.push('\n');
                body.push_str(lines[idx]);
                idx += 1;
            }
            let end = closing_double_quote(&body).ok_or(DotenvError::Syntax {
                line: number,
                problem: "unterminated double quote",
            })?;
            let unescaped = unescape_double(&body[..end]);
            substitute(&unescaped, &local).map_err(|error| DotenvError::Template {
                line: number,
                key: key.to_owned(),
                error,
            })?
        } else {
            let value = match rest.find(" #") {
                Some(pos) => &rest[..pos],
                None => rest,
            };
            substitute(value.trim(), &local).map_err(|error| DotenvError::Template {
                line: number,
                key: key.to_owned(),
                error,
            })?
        };
        vars.insert(key.to_owned(), value);
    }
    Ok(vars)
}

/// compose-go: `\'` inside single quotes is a quote, so the closing quote
/// is the first one without a backslash before it.
fn closing_single_quote(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'\'' && (i == 0 || bytes[i - 1] != b'\\'))
}

fn closing_double_quote(body: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape_double(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other @ ('"' | '\\')) => out.push(other),
            // A literal `$`: written as `$$` so the substitution after
            // unescaping keeps it.
            Some('$') => out.push_str("$$"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn every_form_substitutes_like_compose() {
        let lookup = env(&[("SET", "value"), ("EMPTY", "")]);
        let cases = [
            ("${SET}", "value"),
            ("$SET", "value"),
            ("a-$SET-b", "a-value-b"),
            ("${UNSET}", ""),
            ("$UNSET", ""),
            ("${SET:-d}", "value"),
            ("${EMPTY:-d}", "d"),
            ("${UNSET:-d}", "d"),
            ("${SET-d}", "value"),
            ("${EMPTY-d}", ""),
            ("${UNSET-d}", "d"),
            ("${SET:?msg}", "value"),
            ("${EMPTY?msg}", ""),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("$$", "$"),
            ("$${SET}", "${SET}"),
            ("$$SET", "$SET"),
            ("${UNSET:-${SET}}", "value"),
            ("${UNSET:-a ${UNSET2:-b} c}", "a b c"),
            ("no refs", "no refs"),
            ("${SET}${SET}", "valuevalue"),
        ];
        for (input, want) in cases {
            assert_eq!(substitute(input, &lookup).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn required_forms_fail_with_the_message_and_no_value() {
        let lookup = env(&[("EMPTY", "")]);
        assert_eq!(
            substitute("${UNSET:?set the image}", &lookup),
            Err(TemplateError::Required {
                variable: "UNSET".into(),
                message: "set the image".into()
            })
        );
        assert!(substitute("${EMPTY:?need it}", &lookup).is_err());
        assert!(substitute("${UNSET?need it}", &lookup).is_err());
        let text = substitute("${UNSET:?set the image}", &lookup)
            .unwrap_err()
            .to_string();
        assert_eq!(
            text,
            "required variable UNSET is missing a value: set the image"
        );
    }

    #[test]
    fn a_dollar_without_a_name_stays_literal_as_in_compose_go() {
        // Checked against `docker compose config` (v2.40.3).
        let lookup = env(&[("A", "a")]);
        for (input, want) in [
            ("cost $5", "cost $5"),
            ("end $", "end $"),
            ("for i in $(seq 1 60); do", "for i in $(seq 1 60); do"),
            ("$2a$14$/Xy", "$2a$14$/Xy"),
            ("$-x $ {", "$-x $ {"),
            ("${B:-$(x)}", "$(x)"),
            ("$A$", "a$"),
        ] {
            assert_eq!(substitute(input, &lookup).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn a_malformed_brace_reference_is_an_error() {
        let lookup = env(&[]);
        for input in ["${}", "${1X}", "${UNCLOSED", "${A!}"] {
            assert!(
                matches!(
                    substitute(input, &lookup),
                    Err(TemplateError::Invalid { .. })
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn dotenv_follows_compose_quoting() {
        let lookup = env(&[("OUTER", "o")]);
        let text = "# comment\n\
            A=1\n\
            export B = two words  \n\
            C='single $OUTER'\n\
            D=\"double $OUTER \\\"q\\\" \\n\"\n\
            E=\n\
            F=has=equals\n\
            G=unquoted # comment\n\
            H=${A}-${OUTER}\n\
            I='multi\nline'\n\
            OUTER\n\
            MISSING\n";
        let vars = parse_dotenv(text, &lookup).unwrap();
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("A", "1"),
                ("B", "two words"),
                ("C", "single $OUTER"),
                ("D", "double o \"q\" \n"),
                ("E", ""),
                ("F", "has=equals"),
                ("G", "unquoted"),
                ("H", "1-o"),
                ("I", "multi\nline"),
                ("OUTER", "o"),
            ]
        );
    }

    #[test]
    fn files_the_agent_renders_read_back_exactly() {
        let values = [
            "plain",
            "with space",
            "it's \"quoted\"",
            "dollar $HOME and ${PATH} and $$",
            "back\\slash \\$HOME",
            "multi\nline\r\n",
            "#hash =equals",
            " leading and trailing ",
            "",
            "ends with \\",
        ];
        let vars: BTreeMap<String, String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("V{i:02}"), v.to_string()))
            .collect();
        let text = crate::envfile::render(&["rendered"], &vars).unwrap();
        let read = parse_dotenv(&text, &|_| Some("WRONG".into())).unwrap();
        assert_eq!(read, vars);
    }

    #[test]
    fn a_bad_reference_in_an_env_file_does_not_echo_the_line() {
        // `$1` stays literal (as in compose-go); a malformed `${` does not.
        let read = parse_dotenv("PASSWORD=abc$1secret\n", &|_| None).unwrap();
        assert_eq!(read["PASSWORD"], "abc$1secret");
        let err = parse_dotenv("PASSWORD=abc${1secret}\n", &|_| None).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            "line 1 (PASSWORD): invalid interpolation format; quote the value in single quotes or write $$ for a literal $"
        );
    }

    #[test]
    fn dotenv_errors_name_the_line_not_the_value() {
        let err = parse_dotenv("A=1\nB='secret-value", &|_| None).unwrap_err();
        assert_eq!(err.to_string(), "line 2: unterminated single quote");
        assert!(!err.to_string().contains("secret"));
    }
}
