//! The service keys that pass through to the Engine one to one
//! (`hostname`, `shm_size`, `ulimits`, `deploy.resources`...), read into
//! compose-go's normalized JSON form.
//!
//! Each key has a kind saying which forms compose-go accepts and how it
//! normalizes them (a byte size becomes a decimal string of bytes, a string
//! `dns` becomes a list, `"3"` becomes `3` where a number is expected). The
//! result is what the config-hash serializes and what the create body reads.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};
use serde_yaml_ng::Value;

use super::gosyntax::parse_bytes;
use super::section::{as_sequence, key_value_map, parse_bool, scalar_string, Section};
use super::{invalid, LoadError, HINT};
use crate::compose::hash::go_duration;
use crate::compose::model::UpdateOrder;

#[derive(Clone, Copy)]
enum Kind {
    /// A string, omitted when empty.
    Str,
    /// A boolean, omitted when false.
    Flag,
    /// A pointer boolean: kept when written, `false` included.
    OptFlag,
    /// A list of strings.
    List,
    /// A string or a list of strings.
    StrOrList,
    /// Strings or numbers, as strings (`expose`).
    StrOrNumList,
    /// A whole number (or its text), omitted when zero.
    Int,
    /// A float32 (or its text), omitted when zero.
    Float,
    /// A byte size (`512m`, `1g`, or a number of bytes).
    Bytes,
    /// A mapping or a list of `key=value`, values as strings.
    Map,
    Ulimits,
    Devices,
}

/// Supported pass-through keys and their kinds.
const OPTIONS: &[(&str, Kind)] = &[
    ("annotations", Kind::Map),
    ("attach", Kind::OptFlag),
    ("cap_add", Kind::List),
    ("cap_drop", Kind::List),
    ("cgroup", Kind::Str),
    ("cgroup_parent", Kind::Str),
    ("cpu_count", Kind::Int),
    ("cpu_percent", Kind::Float),
    ("cpu_period", Kind::Int),
    ("cpu_quota", Kind::Int),
    ("cpu_rt_period", Kind::Int),
    ("cpu_rt_runtime", Kind::Int),
    ("cpu_shares", Kind::Int),
    ("cpus", Kind::Float),
    ("cpuset", Kind::Str),
    ("devices", Kind::Devices),
    ("dns", Kind::StrOrList),
    ("dns_opt", Kind::List),
    ("dns_search", Kind::StrOrList),
    ("domainname", Kind::Str),
    ("expose", Kind::StrOrNumList),
    ("group_add", Kind::StrOrNumList),
    ("hostname", Kind::Str),
    ("init", Kind::OptFlag),
    ("ipc", Kind::Str),
    ("links", Kind::List),
    ("mac_address", Kind::Str),
    ("mem_limit", Kind::Bytes),
    ("mem_reservation", Kind::Bytes),
    ("mem_swappiness", Kind::Bytes),
    ("memswap_limit", Kind::Bytes),
    ("oom_kill_disable", Kind::Flag),
    ("oom_score_adj", Kind::Int),
    ("pid", Kind::Str),
    ("pids_limit", Kind::Int),
    ("platform", Kind::Str),
    ("privileged", Kind::Flag),
    ("pull_policy", Kind::Str),
    ("read_only", Kind::Flag),
    ("runtime", Kind::Str),
    ("security_opt", Kind::List),
    ("shm_size", Kind::Bytes),
    ("stdin_open", Kind::Flag),
    ("stop_signal", Kind::Str),
    ("storage_opt", Kind::Map),
    ("sysctls", Kind::Map),
    ("tmpfs", Kind::StrOrList),
    ("tty", Kind::Flag),
    ("ulimits", Kind::Ulimits),
    ("userns_mode", Kind::Str),
    ("uts", Kind::Str),
];

/// Names of the pass-through keys (for the list of supported keys).
pub(super) fn option_keys() -> impl Iterator<Item = &'static str> {
    OPTIONS.iter().map(|(k, _)| *k)
}

/// Read every pass-through key present in `s`.
pub(super) fn read_options(s: &Section<'_>) -> Result<BTreeMap<String, Json>, LoadError> {
    let mut out = BTreeMap::new();
    for (key, kind) in OPTIONS {
        let Some(value) = s.get(key) else { continue };
        let at = s.path(key);
        if let Some(json) = normalize(*kind, value, &at)? {
            out.insert((*key).to_owned(), json);
        }
    }
    Ok(out)
}

fn normalize(kind: Kind, value: &Value, at: &str) -> Result<Option<Json>, LoadError> {
    Ok(match kind {
        Kind::Str => Some(scalar_string(value, at)?)
            .filter(|s| !s.is_empty())
            .map(Json::String),
        Kind::Flag => boolean(value, at)?.then_some(Json::Bool(true)),
        Kind::OptFlag => Some(Json::Bool(boolean(value, at)?)),
        Kind::List => {
            let items = strings(value, at)?;
            (!items.is_empty()).then(|| json!(items))
        }
        Kind::StrOrList | Kind::StrOrNumList => {
            let items = match value {
                Value::Sequence(_) => strings(value, at)?,
                _ => vec![scalar_string(value, at)?],
            };
            (!items.is_empty()).then(|| json!(items))
        }
        Kind::Int => Some(integer(value, at)?)
            .filter(|n| *n != 0)
            .map(|n| json!(n)),
        Kind::Float => float32(value, at)?,
        Kind::Bytes => Some(json!(bytes(value, at)?.to_string())),
        Kind::Map => {
            let map = key_value_map(value, at)?;
            (!map.is_empty()).then(|| json!(map))
        }
        Kind::Ulimits => ulimits(value, at)?,
        Kind::Devices => devices(value, at)?,
    })
}

pub(super) fn boolean(value: &Value, at: &str) -> Result<bool, LoadError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => {
            parse_bool(s).ok_or_else(|| invalid(at, format!("{s:?}: expected true or false")))
        }
        _ => Err(invalid(at, "expected true or false")),
    }
}

fn strings(value: &Value, at: &str) -> Result<Vec<String>, LoadError> {
    as_sequence(value, at)?
        .iter()
        .enumerate()
        .map(|(i, item)| scalar_string(item, &format!("{at}[{i}]")))
        .collect()
}

/// A whole number, or its text after interpolation (`"3"`).
pub(super) fn integer(value: &Value, at: &str) -> Result<i64, LoadError> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid(at, format!("{n}: expected a whole number"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| invalid(at, format!("{s:?}: expected a whole number"))),
        _ => Err(invalid(at, "expected a whole number")),
    }
}

/// A Go `float32` as `encoding/json` writes it (shortest text that reads
/// back as the same float32: `0.1`, not `0.10000000149`); `None` for zero.
fn float32(value: &Value, at: &str) -> Result<Option<Json>, LoadError> {
    let f: f32 = match value {
        Value::Number(n) => n.as_f64().map(|f| f as f32),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
    .ok_or_else(|| invalid(at, "expected a number"))?;
    if f == 0.0 {
        return Ok(None);
    }
    Ok(float32_json(f))
}

fn float32_json(f: f32) -> Option<Json> {
    let text = f.to_string();
    let value: f64 = text.parse().ok()?;
    if value.fract() == 0.0 && value.abs() < 9e15 {
        return Some(json!(value as i64));
    }
    serde_json::Number::from_f64(value).map(Json::Number)
}

/// A byte size as compose-go's `UnitBytes`: a number of bytes, or text
/// like `512m`/`1.5GB` in powers of 1024.
pub(super) fn bytes(value: &Value, at: &str) -> Result<i64, LoadError> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid(at, format!("{n}: expected a byte size"))),
        Value::String(s) => parse_bytes(s)
            .ok_or_else(|| invalid(at, format!("{s:?}: expected a byte size like 512m or 1g"))),
        _ => Err(invalid(at, "expected a byte size like 512m or 1g")),
    }
}

fn ulimits(value: &Value, at: &str) -> Result<Option<Json>, LoadError> {
    let s = Section::new(value, at)?;
    let mut out = BTreeMap::new();
    for (name, v) in &s.entries {
        let item_at = s.path(name);
        let json = match v {
            Value::Mapping(_) => {
                let l = Section::new(v, &item_at)?;
                l.only(&["soft", "hard"], HINT)?;
                let soft = l
                    .get("soft")
                    .map(|x| integer(x, &l.path("soft")))
                    .transpose()?;
                let hard = l
                    .get("hard")
                    .map(|x| integer(x, &l.path("hard")))
                    .transpose()?;
                let mut o = Map::new();
                if let Some(soft) = soft.filter(|n| *n != 0) {
                    o.insert("soft".into(), json!(soft));
                }
                if let Some(hard) = hard.filter(|n| *n != 0) {
                    o.insert("hard".into(), json!(hard));
                }
                Json::Object(o)
            }
            _ => json!(integer(v, &item_at)?),
        };
        out.insert(name.clone(), json);
    }
    Ok((!out.is_empty()).then(|| json!(out)))
}

/// `devices`: `HOST[:CONTAINER[:PERMISSIONS]]` or the long form.
fn devices(value: &Value, at: &str) -> Result<Option<Json>, LoadError> {
    let mut out = Vec::new();
    for (i, item) in as_sequence(value, at)?.iter().enumerate() {
        let item_at = format!("{at}[{i}]");
        let (source, target, permissions) = match item {
            Value::Mapping(_) => {
                let d = Section::new(item, &item_at)?;
                d.only(&["source", "target", "permissions"], HINT)?;
                let source = d
                    .string("source")?
                    .ok_or_else(|| invalid(&item_at, "`source` is required"))?;
                let target = d.string("target")?.unwrap_or_else(|| source.clone());
                (source, target, d.string("permissions")?)
            }
            _ => {
                let text = scalar_string(item, &item_at)?;
                let parts: Vec<&str> = text.split(':').collect();
                match parts.as_slice() {
                    [source] => ((*source).to_owned(), (*source).to_owned(), None),
                    [source, target] => ((*source).to_owned(), (*target).to_owned(), None),
                    [source, target, perms] => (
                        (*source).to_owned(),
                        (*target).to_owned(),
                        Some((*perms).to_owned()),
                    ),
                    _ => {
                        return Err(invalid(
                            &item_at,
                            format!("{text:?}: expected HOST[:CONTAINER[:PERMISSIONS]]"),
                        ))
                    }
                }
            }
        };
        out.push(json!({
            "source": source,
            "target": target,
            "permissions": permissions.unwrap_or_else(|| "rwm".into()),
        }));
    }
    Ok((!out.is_empty()).then(|| Json::Array(out)))
}

/// `deploy`, normalized; also returns `replicas` and the update order.
pub(super) fn deploy(
    value: &Value,
    at: &str,
) -> Result<(Json, Option<u32>, UpdateOrder), LoadError> {
    let s = Section::new(value, at)?;
    s.only(
        &[
            "mode",
            "replicas",
            "labels",
            "update_config",
            "rollback_config",
            "resources",
            "restart_policy",
            "placement",
            "endpoint_mode",
        ],
        HINT,
    )?;
    let mut o = Map::new();
    if let Some(mode) = s.string("mode")? {
        if mode != "replicated" && mode != "global" {
            return Err(invalid(
                &s.path("mode"),
                format!("{mode:?}: expected replicated or global"),
            ));
        }
        o.insert("mode".into(), json!(mode));
    }
    let replicas = match s.get("replicas") {
        None => None,
        Some(v) => {
            let n = integer(v, &s.path("replicas"))?;
            Some(u32::try_from(n).map_err(|_| {
                invalid(&s.path("replicas"), "expected a whole number of containers")
            })?)
        }
    };
    let labels = s.string_map("labels")?;
    if !labels.is_empty() {
        o.insert("labels".into(), json!(labels));
    }
    let mut order = UpdateOrder::StopFirst;
    for key in ["update_config", "rollback_config"] {
        if let Some(v) = s.get(key) {
            let (json, o_order) = update_config(v, &s.path(key))?;
            if key == "update_config" {
                order = o_order;
            }
            o.insert(key.into(), json);
        }
    }
    let mut resources = Map::new();
    if let Some(v) = s.get("resources") {
        let r = Section::new(v, &s.path("resources"))?;
        r.only(&["limits", "reservations"], HINT)?;
        for key in ["limits", "reservations"] {
            if let Some(v) = r.get(key) {
                resources.insert(key.into(), resource(v, &r.path(key))?);
            }
        }
    }
    o.insert("resources".into(), Json::Object(resources));
    if let Some(v) = s.get("restart_policy") {
        let r = Section::new(v, &s.path("restart_policy"))?;
        r.only(&["condition", "delay", "max_attempts", "window"], HINT)?;
        let mut p = Map::new();
        if let Some(c) = r.string("condition")? {
            if !matches!(c.as_str(), "none" | "on-failure" | "any") {
                return Err(invalid(
                    &r.path("condition"),
                    format!("{c:?}: expected none, on-failure or any"),
                ));
            }
            p.insert("condition".into(), json!(c));
        }
        if let Some(d) = r.duration("delay")? {
            p.insert("delay".into(), json!(go_duration(d)));
        }
        if let Some(v) = r.get("max_attempts") {
            p.insert(
                "max_attempts".into(),
                json!(integer(v, &r.path("max_attempts"))?),
            );
        }
        if let Some(d) = r.duration("window")? {
            p.insert("window".into(), json!(go_duration(d)));
        }
        o.insert("restart_policy".into(), Json::Object(p));
    }
    let mut placement = Map::new();
    if let Some(v) = s.get("placement") {
        let p = Section::new(v, &s.path("placement"))?;
        p.only(
            &["constraints", "preferences", "max_replicas_per_node"],
            HINT,
        )?;
        if let Some(c) = p.get("constraints") {
            let items = strings(c, &p.path("constraints"))?;
            if !items.is_empty() {
                placement.insert("constraints".into(), json!(items));
            }
        }
        if p.get("preferences").is_some() {
            return Err(LoadError::Unsupported {
                key: "preferences".into(),
                at: p.path("preferences"),
                hint: "placement preferences only apply to Swarm; remove them",
            });
        }
        if let Some(v) = p.get("max_replicas_per_node") {
            let n = integer(v, &p.path("max_replicas_per_node"))?;
            if n != 0 {
                placement.insert("max_replicas_per_node".into(), json!(n));
            }
        }
    }
    o.insert("placement".into(), Json::Object(placement));
    if let Some(mode) = s.string("endpoint_mode")? {
        o.insert("endpoint_mode".into(), json!(mode));
    }
    Ok((Json::Object(o), replicas, order))
}

fn update_config(value: &Value, at: &str) -> Result<(Json, UpdateOrder), LoadError> {
    let s = Section::new(value, at)?;
    s.only(
        &[
            "parallelism",
            "delay",
            "failure_action",
            "monitor",
            "max_failure_ratio",
            "order",
        ],
        HINT,
    )?;
    let mut o = Map::new();
    if let Some(v) = s.get("parallelism") {
        o.insert(
            "parallelism".into(),
            json!(integer(v, &s.path("parallelism"))?),
        );
    }
    if let Some(d) = s.duration("delay")? {
        if !d.is_zero() {
            o.insert("delay".into(), json!(go_duration(d)));
        }
    }
    if let Some(a) = s.string("failure_action")? {
        o.insert("failure_action".into(), json!(a));
    }
    if let Some(d) = s.duration("monitor")? {
        if !d.is_zero() {
            o.insert("monitor".into(), json!(go_duration(d)));
        }
    }
    if let Some(v) = s.get("max_failure_ratio") {
        if let Some(f) = float32(v, &s.path("max_failure_ratio"))? {
            o.insert("max_failure_ratio".into(), f);
        }
    }
    let order = match s.string("order")?.as_deref() {
        None => UpdateOrder::StopFirst,
        Some("stop-first") => UpdateOrder::StopFirst,
        Some("start-first") => UpdateOrder::StartFirst,
        Some(other) => {
            return Err(invalid(
                &s.path("order"),
                format!("{other:?}: expected stop-first or start-first"),
            ))
        }
    };
    if let Some(text) = s.string("order")? {
        o.insert("order".into(), json!(text));
    }
    Ok((Json::Object(o), order))
}

fn resource(value: &Value, at: &str) -> Result<Json, LoadError> {
    let s = Section::new(value, at)?;
    s.only(&["cpus", "memory", "pids", "devices"], HINT)?;
    let mut o = Map::new();
    if let Some(v) = s.get("cpus") {
        if let Some(f) = float32(v, &s.path("cpus"))? {
            o.insert("cpus".into(), f);
        }
    }
    if let Some(v) = s.get("memory") {
        let n = bytes(v, &s.path("memory"))?;
        if n != 0 {
            o.insert("memory".into(), json!(n.to_string()));
        }
    }
    if let Some(v) = s.get("pids") {
        let n = integer(v, &s.path("pids"))?;
        if n != 0 {
            o.insert("pids".into(), json!(n));
        }
    }
    if s.get("devices").is_some() {
        return Err(LoadError::Unsupported {
            key: "devices".into(),
            at: s.path("devices"),
            hint: "GPU device reservations are not implemented; remove them",
        });
    }
    Ok(Json::Object(o))
}
