//! Typed config values: an absolute path, an http(s) URL, a number of
//! seconds. Why their own types: serde refuses a bad value while parsing,
//! so the TOML error names the key, the line and the expected form.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An absolute filesystem path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AbsPath(PathBuf);

impl AbsPath {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AbsPath(path.into())
    }
    pub fn as_path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, part: impl AsRef<Path>) -> PathBuf {
        self.0.join(part)
    }
}

impl TryFrom<String> for AbsPath {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let path = PathBuf::from(&value);
        if !path.is_absolute() {
            return Err(format!(
                "expected an absolute path (starting with /), got {value:?}"
            ));
        }
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!("expected a path without `..`, got {value:?}"));
        }
        Ok(AbsPath(path))
    }
}

impl From<AbsPath> for String {
    fn from(value: AbsPath) -> String {
        value.0.display().to_string()
    }
}

impl AsRef<Path> for AbsPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// An `http://` or `https://` URL (endpoints of SSM, ECR, Docker over TCP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .ok_or_else(|| format!("expected an http:// or https:// URL, got {value:?}"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("expected a URL with a host, got {value:?}"));
        }
        Ok(HttpUrl(value))
    }
}

impl From<HttpUrl> for String {
    fn from(value: HttpUrl) -> String {
        value.0
    }
}

/// A whole number of seconds, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Seconds(u64);

impl Seconds {
    pub const fn new(secs: u64) -> Self {
        Seconds(secs)
    }
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Seconds {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, String> {
        if value == 0 || value > 86_400 {
            return Err(format!(
                "expected a number of seconds from 1 to 86400, got {value}"
            ));
        }
        Ok(Seconds(value))
    }
}

impl From<Seconds> for u64 {
    fn from(value: Seconds) -> u64 {
        value.0
    }
}

/// `host[:port]` where host is DNS labels or an IPv4 address: a registry
/// host as image references and `docker.allowed_registries` name it.
pub fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    // Docker treats the first component as a registry only when it has a
    // dot or a port or is localhost; require the same so it is unambiguous.
    (host.contains('.') || port.is_some() || host == "localhost")
        && !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
