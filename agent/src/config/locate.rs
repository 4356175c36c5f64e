//! Where in the config file an error is, without the file's text.
//!
//! toml's own error `Display` quotes the offending source line, and a line
//! of the config file may hold a password (`database.url`). So a config
//! error is built here from the error's byte span: the line, the column and
//! the dotted key path at that line, and toml's message with every quoted
//! string value withheld. The line's text is never part of it.

/// Line and column (1-based; the column counts characters) of byte `offset`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A key or table name as written, when it is plainly one (bare or quoted
/// key characters only); anything else is not printed.
fn plain_key(raw: &str) -> Option<String> {
    let key: String = raw
        .split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\''))
        .collect::<Vec<_>>()
        .join(".");
    let plain = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    plain.then_some(key)
}

/// The table a `[header]` or `[[header]]` line opens, if `line` is one.
fn header(line: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner);
    plain_key(inner)
}

/// The dotted key path of line `line_no` (1-based): the table opened last
/// above it, and the key the line assigns (or the table it opens).
pub fn key_path_at(text: &str, line_no: usize) -> Option<String> {
    let mut table: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if i + 1 == line_no {
            if let Some(h) = header(line) {
                return Some(h);
            }
            let key = plain_key(line.split_once('=')?.0)?;
            return Some(match table {
                Some(t) => format!("{t}.{key}"),
                None => key,
            });
        }
        if let Some(h) = header(line) {
            table = Some(h);
        }
    }
    table
}

/// Where `key_path` (`database.url`) is assigned in `text`: line and column.
pub fn find_key(text: &str, key_path: &str) -> Option<(usize, usize)> {
    let mut table: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = header(line) {
            table = Some(h);
            continue;
        }
        let Some((raw, _)) = line.split_once('=') else {
            continue;
        };
        let Some(key) = plain_key(raw) else { continue };
        let full = match &table {
            Some(t) => format!("{t}.{key}"),
            None => key,
        };
        if full == key_path {
            let column = line.len() - line.trim_start().len() + 1;
            return Some((i + 1, column));
        }
    }
    None
}

/// toml's message (never its source excerpt) on one line, with every
/// double-quoted string in it withheld: serde quotes the value it could not
/// use (`invalid type: string "..."`), and that value may be a password.
pub fn safe_message(message: &str) -> String {
    let one_line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let mut out = String::with_capacity(one_line.len());
    let mut in_quotes = false;
    let mut escaped = false;
    for c in one_line.chars() {
        if in_quotes {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => {
                    in_quotes = false;
                    out.push_str("(value withheld)");
                }
                _ => escaped = false,
            }
        } else if c == '"' {
            in_quotes = true;
        } else if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    if in_quotes {
        out.push_str("(value withheld)");
    }
    out
}

/// The whole message of a TOML error: line, column, key path, what is wrong.
pub fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = safe_message(error.message());
    let Some(span) = error.span() else {
        return message;
    };
    let (line, column) = line_column(text, span.start);
    match key_path_at(text, line) {
        Some(key) => format!("line {line}, column {column}, key {key}: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_columns_and_key_paths() {
        let text = "[agent]\nstate_dir = \"/x\"\n\n[database]\n url = \"a\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, text.find("url").unwrap()), (5, 2));
        assert_eq!(key_path_at(text, 2).as_deref(), Some("agent.state_dir"));
        assert_eq!(key_path_at(text, 5).as_deref(), Some("database.url"));
        assert_eq!(key_path_at(text, 4).as_deref(), Some("database"));
        assert_eq!(find_key(text, "database.url"), Some((5, 2)));
        assert_eq!(find_key(text, "database.nope"), None);
    }

    #[test]
    fn quoted_values_are_withheld() {
        assert_eq!(
            safe_message("invalid type: string \"p@ss\\\"word\", expected u64\n"),
            "invalid type: string (value withheld), expected u64"
        );
        assert_eq!(
            safe_message("unknown field `bogus`, expected `a`"),
            "unknown field `bogus`, expected `a`"
        );
    }
}
