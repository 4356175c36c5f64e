//! The `[smoke]` section: the endpoint checks `runtime smoke` and
//! `runtime record-release` run, and their validation. Why its own file: it
//! is the one section with a list of entries that need checking one by one.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Seconds};

/// The endpoint smoke `runtime smoke` and `runtime record-release` run:
/// GET requests through the frontend's published port on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmokeConfig {
    /// Address the published port is reached on.
    pub host: String,
    /// Host port; when unset, the port the running frontend container
    /// publishes (it must publish exactly one).
    pub port: Option<u16>,
    /// Seconds for one request.
    pub timeout: Seconds,
    /// Tries per check before it fails (one second apart).
    pub attempts: u32,
    /// The checks, in order; the runbook's three by default.
    pub checks: Vec<SmokeCheck>,
}

/// One smoke check: `GET path` must answer `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheck {
    /// Lowercase letters, digits and '-'; names the check in markers.
    pub name: String,
    pub path: String,
    pub status: u16,
}

impl Default for SmokeConfig {
    fn default() -> Self {
        let check = |name: &str, path: &str| SmokeCheck {
            name: name.into(),
            path: path.into(),
            status: 200,
        };
        SmokeConfig {
            host: "127.0.0.1".into(),
            port: None,
            timeout: Seconds::new(10),
            attempts: 3,
            checks: vec![
                // The frontend is reachable.
                check("ping", "/en/ping"),
                // The frontend's rewrite reaches the backend.
                check("health", "/api/v1/health"),
                // The backend reaches Postgres.
                check("ready", "/api/v1/ready"),
            ],
        }
    }
}

impl SmokeConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, problem: String, fix: &str| ConfigError::Invalid {
            key,
            problem,
            fix: fix.to_owned(),
        };
        let host_ok = !self.host.is_empty()
            && self.host.len() <= 253
            && self
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
        if !host_ok {
            return Err(invalid(
                "smoke.host".into(),
                format!("{:?} is not a host name or IP address", self.host),
                "use an address such as \"127.0.0.1\"",
            ));
        }
        if self.port == Some(0) {
            return Err(invalid(
                "smoke.port".into(),
                "0 is not a port".into(),
                "use the frontend's published host port (1 to 65535), or leave it unset",
            ));
        }
        if !(1..=10).contains(&self.attempts) {
            return Err(invalid(
                "smoke.attempts".into(),
                format!("{} is out of range", self.attempts),
                "use a number from 1 to 10",
            ));
        }
        if self.checks.is_empty() {
            return Err(invalid(
                "smoke.checks".into(),
                "there are no checks".into(),
                "list at least one [[smoke.checks]], or remove the key for the runbook's three",
            ));
        }
        for (i, c) in self.checks.iter().enumerate() {
            let key = format!("smoke.checks[{i}]");
            let name_ok = !c.name.is_empty()
                && c.name.len() <= 32
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} cannot name a check", c.name),
                    "use 1 to 32 lowercase letters, digits and '-'",
                ));
            }
            if self.checks[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} names two checks", c.name),
                    "give every check its own name",
                ));
            }
            let path_ok = c.path.starts_with('/')
                && c.path.len() <= 512
                && c.path.bytes().all(|b| b.is_ascii_graphic());
            if !path_ok {
                return Err(invalid(
                    format!("{key}.path"),
                    format!("{:?} is not a request path", c.path),
                    "use a path that starts with '/' and has no spaces, such as \"/en/ping\"",
                ));
            }
            if !(100..=599).contains(&c.status) {
                return Err(invalid(
                    format!("{key}.status"),
                    format!("{} is not an HTTP status", c.status),
                    "use the status the path answers when it works, such as 200",
                ));
            }
        }
        Ok(())
    }
}
