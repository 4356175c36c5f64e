//! Service `ports`: Docker's `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]` and
//! the long syntax, with ranges expanded as Docker's `nat.ParsePortSpec`
//! expands them (compose-go calls it): `8000-8002:9000-9002` is three
//! ports, `8000-8010:80` is one target with a host range the Engine picks
//! from.

use serde_yaml_ng::Value;

use super::section::{as_sequence, scalar_string, Section};
use super::{invalid, LoadError, HINT};
use crate::compose::model::*;

pub(super) fn ports(value: &Value, at: &str) -> Result<Vec<Port>, LoadError> {
    let mut out = Vec::new();
    for (i, item) in as_sequence(value, at)?.iter().enumerate() {
        let item_at = format!("{at}[{i}]");
        match item {
            Value::String(_) | Value::Number(_) => {
                out.extend(short_port(&scalar_string(item, &item_at)?, &item_at)?)
            }
            Value::Mapping(_) => {
                let s = Section::new(item, &item_at)?;
                s.only(
                    &[
                        "target",
                        "published",
                        "host_ip",
                        "protocol",
                        "mode",
                        "name",
                        "app_protocol",
                    ],
                    HINT,
                )?;
                // `host` mode binds the port on the host the container runs
                // on: on one host that is what `ingress` does too.
                let mode = match s.string("mode")?.as_deref() {
                    None | Some("ingress") => "ingress".to_owned(),
                    Some("host") => "host".to_owned(),
                    Some(other) => {
                        return Err(invalid(
                            &s.path("mode"),
                            format!("{other:?}: expected ingress or host"),
                        ))
                    }
                };
                if s.get("name").is_some() || s.get("app_protocol").is_some() {
                    return Err(LoadError::Unsupported {
                        key: "name/app_protocol".into(),
                        at: item_at.clone(),
                        hint: "port names and app_protocol are not supported; remove them",
                    });
                }
                let target = s
                    .string("target")?
                    .ok_or_else(|| invalid(&item_at, "`target` is required"))?;
                let published = match s.string("published")?.filter(|p| !p.is_empty()) {
                    None => None,
                    Some(p) => {
                        let (low, high) = port_range(&p, &s.path("published"))?;
                        Some(range_text(low, high))
                    }
                };
                out.push(Port {
                    host_ip: s.string("host_ip")?,
                    target: port_number(&target, &s.path("target"))?,
                    published,
                    protocol: protocol(s.string("protocol")?.as_deref(), &s.path("protocol"))?,
                    mode,
                });
            }
            _ => return Err(invalid(&item_at, "expected a port string or mapping")),
        }
    }
    Ok(out)
}

pub(super) fn protocol(value: Option<&str>, at: &str) -> Result<String, LoadError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => Ok("tcp".into()),
        Some("udp") => Ok("udp".into()),
        Some(other) => Err(invalid(at, format!("{other:?}: expected tcp or udp"))),
    }
}

pub(super) fn port_number(text: &str, at: &str) -> Result<u16, LoadError> {
    match text.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid(at, format!("{text:?} is not a port number"))),
    }
}

/// `N` or `LOW-HIGH`.
fn port_range(text: &str, at: &str) -> Result<(u16, u16), LoadError> {
    match text.split_once('-') {
        None => {
            let n = port_number(text, at)?;
            Ok((n, n))
        }
        Some((low, high)) => {
            let (low, high) = (port_number(low, at)?, port_number(high, at)?);
            if high < low {
                return Err(invalid(
                    at,
                    format!("{text:?}: the range ends before it starts"),
                ));
            }
            Ok((low, high))
        }
    }
}

fn range_text(low: u16, high: u16) -> String {
    if low == high {
        low.to_string()
    } else {
        format!("{low}-{high}")
    }
}

/// `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`, as Docker's nat.ParsePortSpec:
/// a target range gives one port per target (with the matching host port
/// when the host range has the same length); a single target with a host
/// range keeps the range.
pub(super) fn short_port(spec: &str, at: &str) -> Result<Vec<Port>, LoadError> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((body, proto)) => (body, Some(proto)),
        None => (spec, None),
    };
    let protocol = protocol(proto, at)?;
    let parts: Vec<&str> = body.split(':').collect();
    let (host_ip, published, target) = match parts.as_slice() {
        [target] => (None, None, *target),
        [published, target] => (None, Some(*published), *target),
        [ip, published, target] => (Some(*ip), Some(*published), *target),
        _ => {
            return Err(invalid(
                at,
                format!("{spec:?}: expected [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]"),
            ))
        }
    };
    let (low, high) = port_range(target, at)?;
    let host = match published {
        None | Some("") => None,
        Some(p) => Some(port_range(p, at)?),
    };
    let host_ip = host_ip.filter(|ip| !ip.is_empty()).map(str::to_owned);
    let mut out = Vec::new();
    for (i, target) in (low..=high).enumerate() {
        let published = match host {
            None => None,
            Some((h_low, h_high)) if low == high => Some(range_text(h_low, h_high)),
            Some((h_low, h_high)) if h_high - h_low == high - low => {
                // h_low + i never passes h_high: the ranges have one length.
                Some((h_low + u16::try_from(i).unwrap_or(0)).to_string())
            }
            Some(_) => {
                return Err(invalid(
                    at,
                    format!("{spec:?}: the host and container port ranges differ in length"),
                ))
            }
        };
        out.push(Port {
            host_ip: host_ip.clone(),
            target,
            published,
            protocol: protocol.clone(),
            mode: "ingress".into(),
        });
    }
    // compose-go orders the ports of one entry by their `PORT/PROTO` text.
    out.sort_by_key(|p| format!("{}/{}", p.target, p.protocol));
    Ok(out)
}
