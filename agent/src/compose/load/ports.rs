//! Service `ports`: Docker's `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]` and
//! the long syntax.

use serde_yaml_ng::Value;

use super::section::{as_sequence, scalar_string, Section};
use super::{invalid, LoadError, HINT};
use crate::compose::model::*;

pub(super) fn ports(value: &Value, at: &str) -> Result<Vec<Port>, LoadError> {
    let mut out = Vec::new();
    for (i, item) in as_sequence(value, at)?.iter().enumerate() {
        let item_at = format!("{at}[{i}]");
        out.push(match item {
            Value::String(_) | Value::Number(_) => {
                short_port(&scalar_string(item, &item_at)?, &item_at)?
            }
            Value::Mapping(_) => {
                let s = Section::new(item, &item_at)?;
                s.only(
                    &["target", "published", "host_ip", "protocol", "mode"],
                    HINT,
                )?;
                if let Some(mode) = s.string("mode")? {
                    if mode != "ingress" {
                        return Err(LoadError::Unsupported {
                            key: mode,
                            at: s.path("mode"),
                            hint: "only the default ingress port mode is supported",
                        });
                    }
                }
                let target = s
                    .string("target")?
                    .ok_or_else(|| invalid(&item_at, "`target` is required"))?;
                Port {
                    host_ip: s.string("host_ip")?,
                    target: port_number(&target, &s.path("target"))?,
                    published: s.string("published")?,
                    protocol: protocol(s.string("protocol")?.as_deref(), &s.path("protocol"))?,
                }
            }
            _ => return Err(invalid(&item_at, "expected a port string or mapping")),
        });
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
        _ if text.contains('-') => Err(LoadError::Unsupported {
            key: text.to_owned(),
            at: at.to_owned(),
            hint: "port ranges are not supported; list each port",
        }),
        _ => Err(invalid(at, format!("{text:?} is not a port number"))),
    }
}

/// `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`, as Docker's nat.ParsePortSpec.
pub(super) fn short_port(spec: &str, at: &str) -> Result<Port, LoadError> {
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
    let target = port_number(target, at)?;
    let published = match published {
        None | Some("") => None,
        Some(p) => Some(port_number(p, at)?.to_string()),
    };
    Ok(Port {
        host_ip: host_ip.filter(|ip| !ip.is_empty()).map(str::to_owned),
        target,
        published,
        protocol,
    })
}
