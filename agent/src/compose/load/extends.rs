//! `extends` within the same file: a service starts from another service's
//! definition and overrides parts of it, merged as compose-go merges
//! (mappings key by key, `command`/`entrypoint`/`healthcheck.test`
//! replaced, lists of ports and mounts merged by what they bind, other
//! lists appended without duplicates).
//!
//! `extends.file` (another file) is not supported: the agent loads one
//! file.

use serde_yaml_ng::{Mapping, Value};

use super::section::key_text;
use super::{invalid, join_path, LoadError};

/// Resolve every service's `extends` in the `services` mapping of `root`.
pub(super) fn resolve(root: &mut Value) -> Result<(), LoadError> {
    let Some(Value::Mapping(services)) = root.get_mut("services") else {
        return Ok(());
    };
    let names: Vec<Value> = services.keys().cloned().collect();
    for name in names {
        let mut chain = Vec::new();
        let resolved = resolved_service(services, &name, &mut chain)?;
        services.insert(name, resolved);
    }
    Ok(())
}

/// The service `name` with its `extends` chain applied.
fn resolved_service(
    services: &Mapping,
    name: &Value,
    chain: &mut Vec<String>,
) -> Result<Value, LoadError> {
    let text = key_text(name);
    let at = join_path("services", &text);
    let Some(service) = services.get(name) else {
        return Err(invalid(
            &chain
                .last()
                .map_or(at.clone(), |c| format!("services.{c}.extends")),
            format!("extends undefined service {text:?}"),
        ));
    };
    if chain.contains(&text) {
        return Err(invalid(
            &format!("{at}.extends"),
            format!("extends cycle: {} -> {text}", chain.join(" -> ")),
        ));
    }
    let Value::Mapping(map) = service else {
        return Ok(service.clone());
    };
    let Some(extends) = map.get("extends") else {
        return Ok(service.clone());
    };
    let base_name = match extends {
        Value::String(s) => s.clone(),
        Value::Mapping(m) => {
            for (k, _) in m {
                let key = key_text(k);
                if key == "file" {
                    return Err(LoadError::Unsupported {
                        key: "file".into(),
                        at: format!("{at}.extends.file"),
                        hint: "the agent loads one file; extend a service of the same file",
                    });
                }
                if key != "service" {
                    return Err(LoadError::Unsupported {
                        key: key.clone(),
                        at: format!("{at}.extends.{key}"),
                        hint: "extends takes `service`",
                    });
                }
            }
            match m.get("service") {
                Some(Value::String(s)) => s.clone(),
                _ => {
                    return Err(invalid(
                        &format!("{at}.extends.service"),
                        "expected the name of a service",
                    ))
                }
            }
        }
        _ => {
            return Err(invalid(
                &format!("{at}.extends"),
                "expected a service name or {service: NAME}",
            ))
        }
    };
    chain.push(text);
    let base = resolved_service(services, &Value::String(base_name), chain)?;
    chain.pop();
    let mut own = map.clone();
    own.remove("extends");
    Ok(merge_service(base, Value::Mapping(own)))
}

/// Keys whose list form (`- KEY=value`) is a mapping in disguise.
const MAPPING_KEYS: &[&str] = &["environment", "labels", "sysctls", "annotations"];
/// Keys replaced, never merged.
const REPLACED: &[&str] = &["command", "entrypoint"];

fn merge_service(base: Value, over: Value) -> Value {
    let (Value::Mapping(mut base), Value::Mapping(over)) = (base, over) else {
        return Value::Null;
    };
    for (k, v) in over {
        let key = key_text(&k);
        let merged = match base.remove(&k) {
            None => v,
            Some(_) if REPLACED.contains(&key.as_str()) => v,
            Some(old) if MAPPING_KEYS.contains(&key.as_str()) => {
                merge_mapping(as_mapping_form(old), as_mapping_form(v))
            }
            Some(old) if key == "volumes" => merge_list_by(old, v, mount_target),
            Some(old) if key == "ports" => merge_list_by(old, v, |p| Some(format!("{p:?}"))),
            Some(old) if key == "healthcheck" => merge_mapping(old, v),
            Some(old @ Value::Mapping(_)) => merge_mapping(old, v),
            Some(old @ Value::Sequence(_)) => append_unique(old, v),
            Some(_) => v,
        };
        base.insert(k, merged);
    }
    Value::Mapping(base)
}

fn merge_mapping(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Mapping(mut base), Value::Mapping(over)) => {
            for (k, v) in over {
                let merged = match base.remove(&k) {
                    Some(old @ Value::Mapping(_)) if v.is_mapping() => merge_mapping(old, v),
                    _ => v,
                };
                base.insert(k, merged);
            }
            Value::Mapping(base)
        }
        (_, over) => over,
    }
}

/// `[A=1, B]` as `{A: "1", B: null}`; a mapping as is.
fn as_mapping_form(value: Value) -> Value {
    match value {
        Value::Sequence(items) => {
            let mut map = Mapping::new();
            for item in items {
                let text = match &item {
                    Value::String(s) => s.clone(),
                    other => key_text(other),
                };
                match text.split_once('=') {
                    Some((k, v)) => map.insert(Value::String(k.into()), Value::String(v.into())),
                    None => map.insert(Value::String(text), Value::Null),
                };
            }
            Value::Mapping(map)
        }
        other => other,
    }
}

fn append_unique(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Sequence(mut base), Value::Sequence(over)) => {
            for item in over {
                if !base.contains(&item) {
                    base.push(item);
                }
            }
            Value::Sequence(base)
        }
        (_, over) => over,
    }
}

/// Merge two lists whose entries are identified by `key` (an entry of
/// `over` replaces the one of `base` with the same key).
fn merge_list_by(base: Value, over: Value, key: impl Fn(&Value) -> Option<String>) -> Value {
    match (base, over) {
        (Value::Sequence(mut base), Value::Sequence(over)) => {
            for item in over {
                let k = key(&item);
                match base.iter().position(|b| k.is_some() && key(b) == k) {
                    Some(i) => base[i] = item,
                    None => base.push(item),
                }
            }
            Value::Sequence(base)
        }
        (_, over) => over,
    }
}

/// The container path a `volumes` entry mounts at.
fn mount_target(entry: &Value) -> Option<String> {
    match entry {
        Value::String(spec) => spec.split(':').nth(1).map(str::to_owned),
        Value::Mapping(m) => m.get("target").map(key_text),
        _ => None,
    }
}
