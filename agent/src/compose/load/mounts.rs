//! Service `volumes`: the short `SOURCE:TARGET[:MODE]` syntax and the long
//! syntax, normalized as compose-go does (bind sources made absolute).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::section::{as_sequence, Section};
use super::{invalid, Ctx, LoadError, HINT};
use crate::compose::model::*;

impl Ctx<'_> {
    pub(super) fn mounts(&self, value: &Value, at: &str) -> Result<Vec<VolumeMount>, LoadError> {
        let mut out = Vec::new();
        for (i, item) in as_sequence(value, at)?.iter().enumerate() {
            let item_at = format!("{at}[{i}]");
            out.push(match item {
                Value::String(spec) => self.short_mount(spec, &item_at)?,
                Value::Mapping(_) => self.long_mount(item, &item_at)?,
                _ => return Err(invalid(&item_at, "expected a volume string or mapping")),
            });
        }
        Ok(out)
    }

    pub(super) fn short_mount(&self, spec: &str, at: &str) -> Result<VolumeMount, LoadError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [source, target] => (*source, *target, None),
            [source, target, mode] => (*source, *target, Some(*mode)),
            _ => {
                return Err(invalid(
                    at,
                    format!("{spec:?}: expected SOURCE:TARGET[:ro|rw] (anonymous volumes are not supported)"),
                ))
            }
        };
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => {
                return Err(LoadError::Unsupported {
                    key: other.to_owned(),
                    at: at.to_owned(),
                    hint: "only the ro and rw volume modes are supported",
                })
            }
        };
        if source.is_empty() || !target.starts_with('/') {
            return Err(invalid(
                at,
                format!("{spec:?}: expected SOURCE:/absolute/target"),
            ));
        }
        let is_path = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        Ok(if is_path {
            VolumeMount {
                kind: MountKind::Bind,
                source: self.resolve_path(source).display().to_string(),
                target: target.to_owned(),
                read_only,
                bind: Some(true),
                volume_nocopy: None,
            }
        } else {
            VolumeMount {
                kind: MountKind::Volume,
                source: source.to_owned(),
                target: target.to_owned(),
                read_only,
                bind: None,
                volume_nocopy: Some(false),
            }
        })
    }

    pub(super) fn long_mount(&self, value: &Value, at: &str) -> Result<VolumeMount, LoadError> {
        let s = Section::new(value, at)?;
        s.only(
            &["type", "source", "target", "read_only", "bind", "volume"],
            HINT,
        )?;
        let kind = match s.string("type")?.as_deref() {
            Some("volume") => MountKind::Volume,
            Some("bind") => MountKind::Bind,
            Some(other) => {
                return Err(LoadError::Unsupported {
                    key: other.to_owned(),
                    at: s.path("type"),
                    hint: "only volume and bind mounts are supported",
                })
            }
            None => return Err(invalid(at, "`type` is required (volume or bind)")),
        };
        let source = s.string("source")?.ok_or_else(|| {
            invalid(
                at,
                "`source` is required (anonymous volumes are not supported)",
            )
        })?;
        let target = s
            .string("target")?
            .ok_or_else(|| invalid(at, "`target` is required"))?;
        let bind = match s.get("bind") {
            None => None,
            Some(v) => {
                let b = Section::new(v, &s.path("bind"))?;
                b.only(&["create_host_path"], HINT)?;
                Some(b.bool("create_host_path")?)
            }
        };
        let volume_nocopy = match s.get("volume") {
            None => None,
            Some(v) => {
                let b = Section::new(v, &s.path("volume"))?;
                b.only(&["nocopy"], HINT)?;
                Some(b.bool("nocopy")?)
            }
        };
        if kind == MountKind::Volume && bind.is_some() {
            return Err(invalid(
                &s.path("bind"),
                "a volume mount takes no `bind` options",
            ));
        }
        if kind == MountKind::Bind && volume_nocopy.is_some() {
            return Err(invalid(
                &s.path("volume"),
                "a bind mount takes no `volume` options",
            ));
        }
        Ok(VolumeMount {
            kind,
            source: match kind {
                MountKind::Bind => self.resolve_path(&source).display().to_string(),
                MountKind::Volume => source,
            },
            target,
            read_only: s.bool("read_only")?,
            bind,
            volume_nocopy,
        })
    }
}

/// Lexically drop `.` and resolve `..` (as Go's `filepath.Clean`).
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
