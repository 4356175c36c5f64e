//! The runtime parameter contract and the two SSM Parameter Store reads the
//! agent makes.
//!
//! The contract says which parameters under `runtime.parameter_prefix` must
//! exist, with which type, and in which env file (group) and variable each
//! one lands. It has two sources, merged by [`Contract::load`]:
//! - the **contract file** (`runtime.contract_file`, JSON), which host
//!   bootstrap writes from the infrastructure outputs: the infrastructure
//!   owns the parameter names and kinds, so copying them into `agent.toml`
//!   by hand is how contracts drift;
//! - `runtime.parameters` in `agent.toml`, for what a host adds or relaxes.
//!
//! A name in both must have one type (else exit 2 naming both sources);
//! otherwise the `agent.toml` entry wins (required, group, variable), so an
//! operator can relax a requirement on one host without editing bootstrap. Parameters found
//! under the prefix but not declared follow the convention
//! `<prefix><group>/<VAR>` -> `<env_dir>/<group>.env` as `VAR`, and are
//! reported as undeclared. A name that fits neither (deeper paths, a group
//! that cannot be a file name, a segment that cannot be an env var) is an
//! error naming it: the agent never guesses where a secret should go.
//!
//! Two reads, two purposes:
//! - [`describe`] (DescribeParameters): metadata only, never values. This is
//!   `runtime-config live`, safe to run anywhere.
//! - [`fetch`] (GetParametersByPath, recursive, decrypted): the values, for
//!   rendering. Every value is held in a [`SecretValue`], whose `Debug`
//!   prints nothing, and every SecureString value is registered with
//!   [`crate::output::register_secret`] the moment it arrives. (Plain String
//!   values are not registered: redacting values such as `wavemap` or `dev`
//!   would cut them out of every path and marker.)
//!
//! Both read every page: GetParametersByPath returns at most 10 per page and
//! a page can be empty while a `NextToken` still follows, so the loop ends
//! only when no token comes back.
//!
//! The contract (what must exist, where it lands, how a live listing is
//! checked against it) lives in `contract.rs`; this file is the client side:
//! the values, the two reads and their paging.

use std::fmt;

use crate::config::ParameterType;
use crate::error::{Dependency, Error, Stage};
use crate::output;

mod contract;

pub use contract::*;

/// Pages read before the agent assumes the service is looping. 10 per page
/// makes this 100,000 parameters, far beyond Parameter Store's own quota.
const MAX_PAGES: usize = 10_000;

/// A parameter value: never printed, registered for redaction on creation.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> Self {
        output::register_secret(&value);
        SecretValue(value)
    }
    /// A String parameter's value: kept out of logs all the same, but not
    /// registered for redaction.
    pub fn plain(value: String) -> Self {
        SecretValue(value)
    }
    /// The value itself, for the env file writer only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// The type SSM reports; `Other` keeps what a future type calls itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveType {
    String,
    StringList,
    SecureString,
    Other(String),
}

impl LiveType {
    fn from_sdk(kind: Option<&aws_sdk_ssm::types::ParameterType>) -> LiveType {
        use aws_sdk_ssm::types::ParameterType as T;
        match kind {
            Some(T::String) => LiveType::String,
            Some(T::StringList) => LiveType::StringList,
            Some(T::SecureString) => LiveType::SecureString,
            Some(other) => LiveType::Other(other.as_str().to_owned()),
            None => LiveType::Other("unknown".into()),
        }
    }

    fn matches(&self, expected: ParameterType) -> bool {
        matches!(
            (self, expected),
            (LiveType::String, ParameterType::String)
                | (LiveType::SecureString, ParameterType::SecureString)
        )
    }
}

impl fmt::Display for LiveType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveType::String => f.write_str("String"),
            LiveType::StringList => f.write_str("StringList"),
            LiveType::SecureString => f.write_str("SecureString"),
            LiveType::Other(name) => f.write_str(name),
        }
    }
}

/// One parameter as SSM holds it (value only when fetched, not described).
#[derive(Debug, Clone)]
pub struct LiveParameter {
    /// Full name, starting with the prefix.
    pub name: String,
    pub kind: LiveType,
    pub value: Option<SecretValue>,
}

/// SSM wants a path without the trailing slash (except the root).
fn ssm_path(prefix: &str) -> &str {
    match prefix.trim_end_matches('/') {
        "" => "/",
        path => path,
    }
}

/// GetParametersByPath under `prefix`: recursive, decrypted, every page.
pub async fn fetch(
    client: &aws_sdk_ssm::Client,
    prefix: &str,
) -> Result<Vec<LiveParameter>, Error> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .get_parameters_by_path()
            .path(ssm_path(prefix))
            .recursive(true)
            .with_decryption(true)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| Error::from_aws(Dependency::Ssm, "GetParametersByPath", &e))?;
        for p in page.parameters() {
            // Register first: nothing below may see an unregistered value.
            // Only SecureString values are secrets: redacting plain String
            // values ("wavemap", "dev") would mangle paths and markers.
            let secure = matches!(
                p.r#type(),
                Some(aws_sdk_ssm::types::ParameterType::SecureString)
            );
            let value = p.value().map(|v| {
                if secure {
                    SecretValue::new(v.to_owned())
                } else {
                    SecretValue::plain(v.to_owned())
                }
            });
            let Some(name) = p.name() else { continue };
            out.push(LiveParameter {
                name: name.to_owned(),
                kind: LiveType::from_sdk(p.r#type()),
                value,
            });
        }
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(out),
        }
    }
    Err(Error::failed(
        Stage::EnvRender,
        format!(
            "GetParametersByPath returned more than {MAX_PAGES} pages; refusing to loop forever"
        ),
    ))
}

/// DescribeParameters under `prefix` (recursive): names and types only.
pub async fn describe(
    client: &aws_sdk_ssm::Client,
    prefix: &str,
) -> Result<Vec<LiveParameter>, Error> {
    let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
        .key("Path")
        .option("Recursive")
        .values(ssm_path(prefix))
        .build()
        .map_err(|e| {
            Error::failed(
                Stage::RuntimeConfig,
                format!("cannot build the DescribeParameters filter: {e}"),
            )
        })?;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .describe_parameters()
            .parameter_filters(filter.clone())
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| Error::from_aws(Dependency::Ssm, "DescribeParameters", &e))?;
        for p in page.parameters() {
            let Some(name) = p.name() else { continue };
            out.push(LiveParameter {
                name: name.to_owned(),
                kind: LiveType::from_sdk(p.r#type()),
                value: None,
            });
        }
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(out),
        }
    }
    Err(Error::failed(
        Stage::RuntimeConfig,
        format!(
            "DescribeParameters returned more than {MAX_PAGES} pages; refusing to loop forever"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_never_show_in_debug() {
        let p = LiveParameter {
            name: "/x".into(),
            kind: LiveType::SecureString,
            value: Some(SecretValue::new("debug-leak-canary".into())),
        };
        let text = format!("{p:?}");
        assert!(!text.contains("debug-leak-canary"), "{text}");
        assert!(text.contains("17 bytes"), "{text}");
    }
    #[test]
    fn ssm_paths_drop_the_trailing_slash() {
        assert_eq!(ssm_path("/wavemap/dev/runtime/"), "/wavemap/dev/runtime");
        assert_eq!(ssm_path("/"), "/");
    }
}
