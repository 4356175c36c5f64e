//! Reading YAML mappings key by key, with the dotted path of every key for
//! error messages, and turning YAML scalars into the strings Compose uses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::gosyntax::parse_duration;
use super::{invalid, join_path, LoadError};

pub(super) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".into(),
    }
}

/// A YAML mapping with its path, for key-by-key reading.
pub(super) struct Section<'a> {
    pub(super) at: String,
    pub(super) entries: Vec<(String, &'a Value)>,
}

impl<'a> Section<'a> {
    pub(super) fn new(value: &'a Value, at: &str) -> Result<Self, LoadError> {
        let map = as_mapping(value, at)?;
        let entries = map
            .iter()
            .map(|(k, v)| (key_text(k), v))
            .filter(|(k, _)| !k.starts_with("x-"))
            .collect();
        Ok(Section {
            at: at.to_owned(),
            entries,
        })
    }

    pub(super) fn path(&self, key: &str) -> String {
        join_path(&self.at, key)
    }

    /// Refuse any key not in `known`, naming it and where it is.
    pub(super) fn only(&self, known: &[&str], hint: &'static str) -> Result<(), LoadError> {
        for (key, _) in &self.entries {
            if !known.contains(&key.as_str()) {
                if let Some(suggestion) = did_you_mean(key, known) {
                    return Err(LoadError::Misspelled {
                        key: key.clone(),
                        at: self.path(key),
                        suggestion: suggestion.to_owned(),
                    });
                }
                return Err(LoadError::Unsupported {
                    key: key.clone(),
                    at: self.path(key),
                    hint,
                });
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, LoadError> {
        self.get(key)
            .map(|v| scalar_string(v, &self.path(key)))
            .transpose()
    }

    pub(super) fn bool(&self, key: &str) -> Result<bool, LoadError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => parse_bool(s)
                .ok_or_else(|| invalid(&self.path(key), format!("{s:?}: expected true or false"))),
            Some(_) => Err(invalid(&self.path(key), "expected true or false")),
        }
    }

    /// `Some(flag)` when the key is present: compose-go keeps an explicit
    /// `false` for pointer fields (`init`, `attach`).
    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.bool(key).map(Some),
        }
    }

    pub(super) fn duration(&self, key: &str) -> Result<Option<Duration>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| {
                invalid(
                    &self.path(key),
                    format!("{s:?} is not a duration like 30s or 1m30s"),
                )
            }),
            Some(_) => Err(invalid(
                &self.path(key),
                "expected a duration like 30s or 1m30s",
            )),
        }
    }

    pub(super) fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, LoadError> {
        match self.get(key) {
            None => Ok(BTreeMap::new()),
            Some(v) => key_value_map(v, &self.path(key)),
        }
    }
}

pub(super) fn as_mapping<'a>(value: &'a Value, at: &str) -> Result<&'a Mapping, LoadError> {
    match value {
        Value::Mapping(m) => Ok(m),
        _ => Err(invalid(at, "expected a mapping")),
    }
}

pub(super) fn as_sequence<'a>(value: &'a Value, at: &str) -> Result<&'a [Value], LoadError> {
    match value {
        Value::Sequence(s) => Ok(s),
        _ => Err(invalid(at, "expected a list")),
    }
}

/// Strings, numbers and booleans as Compose turns them into strings.
pub(super) fn scalar_string(value: &Value, at: &str) -> Result<String, LoadError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(number_string(n)),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid(at, "expected a string")),
    }
}

/// A YAML number as Go's `fmt` prints it (`5.0` is `5`, `1e3` is `1000`),
/// since that text is what Compose hashes and passes on.
pub(super) fn number_string(n: &serde_yaml_ng::Number) -> String {
    if n.is_f64() {
        if let Some(f) = n.as_f64() {
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
                return format!("{f:.0}");
            }
            return f.to_string();
        }
    }
    n.to_string()
}

/// A mapping, or a list of `key=value` strings (labels, driver options).
pub(super) fn key_value_map(
    value: &Value,
    at: &str,
) -> Result<BTreeMap<String, String>, LoadError> {
    let mut out = BTreeMap::new();
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = key_text(k);
                let value = if v.is_null() {
                    String::new()
                } else {
                    scalar_string(v, &join_path(at, &key))?
                };
                out.insert(key, value);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let text = scalar_string(item, &format!("{at}[{i}]"))?;
                let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                out.insert(k.to_owned(), v.to_owned());
            }
        }
        _ => return Err(invalid(at, "expected a mapping or a list of key=value")),
    }
    Ok(out)
}

/// compose-go's boolean coercion after interpolation (YAML 1.1 words).
pub(super) fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "y" | "yes" | "on" => Some(true),
        "false" | "n" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The known key one edit (insert, delete, replace, swap) away from `key`.
pub(super) fn did_you_mean<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known.iter().copied().find(|k| within_one_edit(key, k))
}

fn within_one_edit(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a == b {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ra, rb) = (a.len() - prefix - suffix, b.len() - prefix - suffix);
    let swapped = ra == 2 && rb == 2 && a[prefix] == b[prefix + 1] && a[prefix + 1] == b[prefix];
    (ra <= 1 && rb <= 1) || swapped
}
