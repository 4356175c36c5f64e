//! Service `volumes`: the short `SOURCE:TARGET[:MODE]` syntax and the long
//! syntax, normalized as compose-go does (bind sources made absolute).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::options::{bytes, integer};
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

    /// `SOURCE:TARGET[:MODES]`, MODES a comma list of `ro`/`rw`, `z`/`Z`,
    /// a propagation, `nocopy` and the Docker Desktop consistency words
    /// (which compose-go drops).
    pub(super) fn short_mount(&self, spec: &str, at: &str) -> Result<VolumeMount, LoadError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, modes) = match parts.as_slice() {
            [source, target] => (*source, *target, ""),
            [source, target, modes] => (*source, *target, *modes),
            // An anonymous volume: the Engine names it; compose-go gives it
            // the `volume: {}` options a named short-syntax volume gets.
            [target] if target.starts_with('/') => {
                let mut m =
                    VolumeMount::new(MountKind::Volume, String::new(), clean_target(target));
                m.volume_nocopy = Some(false);
                return Ok(m);
            }
            [_] => {
                return Err(invalid(
                    at,
                    format!("{spec:?}: expected SOURCE:TARGET[:MODES] or an absolute container path (an anonymous volume)"),
                ))
            }
            _ => {
                return Err(invalid(
                    at,
                    format!("{spec:?}: expected SOURCE:TARGET[:MODES]"),
                ))
            }
        };
        if source.is_empty() || !target.starts_with('/') {
            return Err(invalid(
                at,
                format!("{spec:?}: expected SOURCE:/absolute/target"),
            ));
        }
        let is_path = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        if source.len() == 1 && source.chars().all(|c| c.is_ascii_alphabetic()) {
            // compose-go reads `x:/path` as a Windows drive letter.
            return Err(invalid(
                at,
                format!("{spec:?}: Compose reads a one-letter volume name as a Windows drive; give the volume a longer name"),
            ));
        }
        let mut mount = if is_path {
            let mut m = VolumeMount::new(
                MountKind::Bind,
                self.resolve_path(source).display().to_string(),
                clean_target(target),
            );
            m.bind = Some(true);
            m
        } else {
            let mut m =
                VolumeMount::new(MountKind::Volume, source.to_owned(), clean_target(target));
            m.volume_nocopy = Some(false);
            m
        };
        for mode in modes.split(',').filter(|m| !m.is_empty()) {
            match mode {
                "ro" => mount.read_only = true,
                "rw" => {}
                "z" | "Z" => mount.selinux = Some(mode.to_owned()),
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                    mount.propagation = Some(mode.to_owned());
                }
                "nocopy" if !is_path => mount.volume_nocopy = Some(true),
                "cached" | "delegated" | "consistent" => {}
                other => {
                    return Err(LoadError::Unsupported {
                        key: other.to_owned(),
                        at: at.to_owned(),
                        hint: "volume modes are ro, rw, z, Z, nocopy, a propagation (rshared...) or cached/delegated/consistent",
                    })
                }
            }
        }
        Ok(mount)
    }

    pub(super) fn long_mount(&self, value: &Value, at: &str) -> Result<VolumeMount, LoadError> {
        let s = Section::new(value, at)?;
        s.only(
            &[
                "type",
                "source",
                "target",
                "read_only",
                "bind",
                "volume",
                "tmpfs",
                "consistency",
            ],
            HINT,
        )?;
        let kind = match s.string("type")?.as_deref() {
            Some("volume") => MountKind::Volume,
            Some("bind") => MountKind::Bind,
            Some("tmpfs") => MountKind::Tmpfs,
            Some(other) => {
                return Err(LoadError::Unsupported {
                    key: other.to_owned(),
                    at: s.path("type"),
                    hint: "only volume, bind and tmpfs mounts are supported",
                })
            }
            None => return Err(invalid(at, "`type` is required (volume, bind or tmpfs)")),
        };
        let target = s
            .string("target")?
            .ok_or_else(|| invalid(at, "`target` is required"))?;
        let source = match (kind, s.string("source")?) {
            (MountKind::Tmpfs, None) => String::new(),
            (MountKind::Tmpfs, Some(_)) => {
                return Err(invalid(
                    &s.path("source"),
                    "a tmpfs mount takes no `source`",
                ))
            }
            (MountKind::Bind, Some(source)) => self.resolve_path(&source).display().to_string(),
            (_, Some(source)) => source,
            // An anonymous volume.
            (MountKind::Volume, None) => String::new(),
            (_, None) => return Err(invalid(at, "`source` is required for a bind mount")),
        };
        let mut mount = VolumeMount::new(kind, source, clean_target(&target));
        mount.read_only = s.bool("read_only")?;
        mount.consistency = s.string("consistency")?;
        if let Some(v) = s.get("bind") {
            let b = Section::new(v, &s.path("bind"))?;
            b.only(&["create_host_path", "selinux", "propagation"], HINT)?;
            if kind != MountKind::Bind {
                return Err(invalid(
                    &s.path("bind"),
                    "only a bind mount takes `bind` options",
                ));
            }
            mount.bind = Some(b.bool("create_host_path")?);
            mount.selinux = b.string("selinux")?;
            mount.propagation = b.string("propagation")?;
        }
        if let Some(v) = s.get("volume") {
            let b = Section::new(v, &s.path("volume"))?;
            b.only(&["nocopy", "subpath"], HINT)?;
            if kind != MountKind::Volume {
                return Err(invalid(
                    &s.path("volume"),
                    "only a volume mount takes `volume` options",
                ));
            }
            mount.volume_nocopy = Some(b.bool("nocopy")?);
            mount.subpath = b.string("subpath")?;
        }
        if let Some(v) = s.get("tmpfs") {
            let t = Section::new(v, &s.path("tmpfs"))?;
            t.only(&["size", "mode"], HINT)?;
            if kind != MountKind::Tmpfs {
                return Err(invalid(
                    &s.path("tmpfs"),
                    "only a tmpfs mount takes `tmpfs` options",
                ));
            }
            mount.tmpfs_size = t
                .get("size")
                .map(|v| bytes(v, &t.path("size")))
                .transpose()?
                .filter(|n| *n != 0);
            mount.tmpfs_mode = t
                .get("mode")
                .map(|v| {
                    integer(v, &t.path("mode")).and_then(|n| {
                        u32::try_from(n)
                            .map_err(|_| invalid(&t.path("mode"), "expected a file mode"))
                    })
                })
                .transpose()?
                .filter(|n| *n != 0);
        }
        Ok(mount)
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

/// A container path as Go's `path.Clean` leaves it (`/opt/x/` is `/opt/x`),
/// which is what compose-go stores and hashes.
fn clean_target(target: &str) -> String {
    normalize(Path::new(target)).display().to_string()
}
