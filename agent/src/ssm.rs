//! The runtime parameter contract and the two SSM Parameter Store reads the
//! agent makes.
//!
//! The contract (`runtime.parameters` in the config) says which parameters
//! under `runtime.parameter_prefix` must exist, with which type, and in
//! which env file (group) and variable each one lands. Parameters found
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

use std::collections::BTreeMap;
use std::fmt;

use crate::aws;
use crate::config::{is_env_name, is_group_name, Config, ParameterType};
use crate::error::{Dependency, Error};
use crate::output;

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

/// One declared parameter with its defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Full SSM name: prefix + the relative name.
    pub name: String,
    pub kind: ParameterType,
    pub required: bool,
    pub group: String,
    pub variable: String,
}

/// The parameter contract of one config: prefix, groups, declarations.
#[derive(Debug, Clone)]
pub struct Contract {
    pub prefix: String,
    pub groups: Vec<String>,
    pub declared: Vec<Declared>,
}

impl Contract {
    /// Resolve the config's declarations (group and variable default to the
    /// first and last path segments; `Config::parse` already checked them).
    pub fn from_config(config: &Config) -> Contract {
        let runtime = &config.runtime;
        let declared = runtime
            .parameters
            .iter()
            .map(|p| {
                let mut segments = p.name.split('/');
                let first = segments.next().unwrap_or_default();
                let last = p.name.rsplit('/').next().unwrap_or_default();
                Declared {
                    name: format!("{}{}", runtime.parameter_prefix, p.name),
                    kind: p.kind,
                    required: p.required,
                    group: p.group.clone().unwrap_or_else(|| first.to_owned()),
                    variable: p.variable.clone().unwrap_or_else(|| last.to_owned()),
                }
            })
            .collect();
        Contract {
            prefix: runtime.parameter_prefix.clone(),
            groups: runtime.groups.clone(),
            declared,
        }
    }

    pub fn required_count(&self) -> usize {
        self.declared.iter().filter(|d| d.required).count()
    }

    pub fn optional_count(&self) -> usize {
        self.declared.len() - self.required_count()
    }

    /// Every group a file is rendered for: the configured ones, then any
    /// group that only declarations name (config validation forbids that
    /// today, but the order stays stable if it changes).
    pub fn file_groups(&self) -> Vec<String> {
        let mut groups = self.groups.clone();
        for d in &self.declared {
            if !groups.contains(&d.group) {
                groups.push(d.group.clone());
            }
        }
        groups
    }

    /// Compare live parameters (described or fetched) with the contract.
    pub fn check(&self, live: &[LiveParameter]) -> Check {
        let by_name: BTreeMap<&str, &LiveParameter> =
            live.iter().map(|p| (p.name.as_str(), p)).collect();
        let mut check = Check::default();
        for d in &self.declared {
            match by_name.get(d.name.as_str()) {
                None => check.missing.push(d.clone()),
                Some(p) if !p.kind.matches(d.kind) => check.wrong_type.push(WrongType {
                    name: d.name.clone(),
                    expected: d.kind,
                    actual: p.kind.clone(),
                    required: d.required,
                }),
                Some(_) => check.present.push(d.name.clone()),
            }
        }
        for p in live {
            if self.declared.iter().any(|d| d.name == p.name) {
                continue;
            }
            match self.convention(&p.name) {
                Ok((group, variable)) => check.undeclared.push(Undeclared {
                    name: p.name.clone(),
                    group,
                    variable,
                }),
                Err(problem) => check.unmappable.push(Unmappable {
                    name: p.name.clone(),
                    problem: problem.to_owned(),
                }),
            }
        }
        // Two parameters landing on one variable: one would silently win.
        let mut targets: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        let declared_live = self
            .declared
            .iter()
            .filter(|d| by_name.contains_key(d.name.as_str()))
            .map(|d| (d.name.as_str(), d.group.as_str(), d.variable.as_str()));
        let undeclared = check
            .undeclared
            .iter()
            .map(|u| (u.name.as_str(), u.group.as_str(), u.variable.as_str()));
        let mut collisions = Vec::new();
        for (name, group, variable) in declared_live.chain(undeclared) {
            if let Some(first) = targets.insert((group, variable), name) {
                collisions.push(Unmappable {
                    name: name.to_owned(),
                    problem: format!("it lands on {variable} in {group}.env, as {first} does"),
                });
            }
        }
        check.unmappable.extend(collisions);
        check
    }

    /// Where an undeclared parameter lands by the documented convention.
    fn convention(&self, name: &str) -> Result<(String, String), &'static str> {
        let Some(relative) = name.strip_prefix(&self.prefix) else {
            return Err("it is not under the parameter prefix");
        };
        let segments: Vec<&str> = relative.split('/').collect();
        match segments.as_slice() {
            [group, variable] => {
                if !is_group_name(group) {
                    return Err("its group segment cannot name a file in the env folder (use letters, digits, '-' and '_')");
                }
                if !is_env_name(variable) {
                    return Err("its last segment cannot be an environment variable name (use letters, digits and '_', not starting with a digit)");
                }
                Ok(((*group).to_owned(), (*variable).to_owned()))
            }
            [_] => Err("it sits directly under the prefix, so it names no env file (use <prefix><group>/<VAR>)"),
            _ => Err("it is nested deeper than <prefix><group>/<VAR>; declare it in runtime.parameters with group and variable"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongType {
    pub name: String,
    pub expected: ParameterType,
    pub actual: LiveType,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undeclared {
    pub name: String,
    pub group: String,
    pub variable: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmappable {
    pub name: String,
    pub problem: String,
}

/// The contract against what SSM holds. Names only.
#[derive(Debug, Clone, Default)]
pub struct Check {
    /// Declared names that exist with the right type.
    pub present: Vec<String>,
    pub missing: Vec<Declared>,
    pub wrong_type: Vec<WrongType>,
    pub undeclared: Vec<Undeclared>,
    pub unmappable: Vec<Unmappable>,
}

impl Check {
    pub fn missing_required(&self) -> impl Iterator<Item = &Declared> {
        self.missing.iter().filter(|d| d.required)
    }

    /// What blocks using these parameters, one line each; empty when none.
    /// A missing optional parameter blocks nothing; a wrong type always
    /// does (a secret stored as plain String is a contract breach too).
    pub fn blockers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .missing_required()
            .map(|d| format!("required parameter {} ({}) is missing", d.name, d.kind))
            .collect();
        out.extend(self.wrong_type.iter().map(|w| {
            format!(
                "parameter {} is {} but the contract says {}",
                w.name, w.actual, w.expected
            )
        }));
        out.extend(
            self.unmappable
                .iter()
                .map(|u| format!("parameter {} cannot be rendered: {}", u.name, u.problem)),
        );
        out
    }

    /// The blockers as one gate error, or `Ok` when nothing blocks.
    pub fn gate(&self) -> Result<(), Error> {
        let blockers = self.blockers();
        if blockers.is_empty() {
            return Ok(());
        }
        Err(Error::Gate {
            reason: format!(
                "the SSM parameters do not meet the contract: {}; fix them in Parameter Store (or runtime.parameters) and run again",
                blockers.join("; ")
            ),
        })
    }
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
            .map_err(|e| aws::classify(Dependency::Ssm, "GetParametersByPath", &e))?;
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
        "env-render",
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
                "runtime-config",
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
            .map_err(|e| aws::classify(Dependency::Ssm, "DescribeParameters", &e))?;
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
        "runtime-config",
        format!(
            "DescribeParameters returned more than {MAX_PAGES} pages; refusing to loop forever"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        let config = Config::parse(
            r#"
[runtime]
parameter_prefix = "/app/dev/"
groups = ["backend", "frontend"]

[[runtime.parameters]]
name = "backend/DATABASE_URL"
type = "SecureString"

[[runtime.parameters]]
name = "backend/LOG_LEVEL"
type = "String"
required = false

[[runtime.parameters]]
name = "shared/nested/API_KEY"
type = "SecureString"
group = "frontend"
variable = "PUBLIC_API_KEY"
"#,
            "t",
        )
        .unwrap();
        Contract::from_config(&config)
    }

    fn live(name: &str, kind: LiveType) -> LiveParameter {
        LiveParameter {
            name: name.into(),
            kind,
            value: None,
        }
    }

    #[test]
    fn defaults_come_from_the_path_and_overrides_win() {
        let c = contract();
        assert_eq!(c.declared[0].group, "backend");
        assert_eq!(c.declared[0].variable, "DATABASE_URL");
        assert_eq!(c.declared[0].name, "/app/dev/backend/DATABASE_URL");
        assert_eq!(c.declared[2].group, "frontend");
        assert_eq!(c.declared[2].variable, "PUBLIC_API_KEY");
        assert_eq!((c.required_count(), c.optional_count()), (2, 1));
    }

    #[test]
    fn check_sorts_parameters_into_present_missing_wrong_and_undeclared() {
        let c = contract();
        let check = c.check(&[
            live("/app/dev/backend/DATABASE_URL", LiveType::SecureString),
            live("/app/dev/shared/nested/API_KEY", LiveType::String),
            live("/app/dev/frontend/EXTRA", LiveType::StringList),
            live("/app/dev/backend/bad-name", LiveType::String),
            live("/app/dev/a/b/c", LiveType::String),
            live("/app/dev/TOP", LiveType::String),
        ]);
        assert_eq!(check.present, vec!["/app/dev/backend/DATABASE_URL"]);
        assert_eq!(check.missing.len(), 1);
        assert!(!check.missing[0].required, "LOG_LEVEL is optional");
        assert_eq!(check.wrong_type.len(), 1);
        assert_eq!(check.undeclared[0].variable, "EXTRA");
        let unmappable: Vec<&str> = check.unmappable.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            unmappable,
            vec![
                "/app/dev/backend/bad-name",
                "/app/dev/a/b/c",
                "/app/dev/TOP"
            ]
        );
        let err = check.gate().unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let text = err.to_string();
        assert!(
            text.contains("/app/dev/shared/nested/API_KEY is String"),
            "{text}"
        );
        assert!(text.contains("/app/dev/backend/bad-name"), "{text}");
    }

    #[test]
    fn missing_required_blocks_missing_optional_does_not() {
        let c = contract();
        let check = c.check(&[
            live("/app/dev/backend/DATABASE_URL", LiveType::SecureString),
            live("/app/dev/shared/nested/API_KEY", LiveType::SecureString),
        ]);
        assert!(check.gate().is_ok());
        let check = c.check(&[live(
            "/app/dev/shared/nested/API_KEY",
            LiveType::SecureString,
        )]);
        let text = check.gate().unwrap_err().to_string();
        assert!(
            text.contains("required parameter /app/dev/backend/DATABASE_URL"),
            "{text}"
        );
    }

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
