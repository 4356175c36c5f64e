//! The runtime parameter contract: which parameters must exist under the
//! prefix, with which type, in which env file and variable; merged from the
//! contract file and `runtime.parameters` ([`Contract::load`]), and checked
//! against a live listing ([`Contract::check`]). Why apart from the client:
//! it is pure (no AWS), so its rules are read and unit-tested on their own.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::config::{
    is_env_name, is_group_name, Config, ConfigError, ParameterSpec, ParameterType,
};
use crate::error::Error;
use crate::fsutil;

use super::{LiveParameter, LiveType};

/// The contract file's schema version this agent reads.
pub const CONTRACT_FILE_SCHEMA_VERSION: u32 = 1;

/// Contract files larger than this are refused: a real one is a few KB.
const MAX_CONTRACT_FILE: usize = 1024 * 1024;

/// Where a declared parameter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Only the contract file (`runtime.contract_file`).
    ContractFile,
    /// Only `runtime.parameters` in `agent.toml`.
    Config,
    /// Both, with one type; the `agent.toml` entry's other fields win.
    Both,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::ContractFile => "contract-file",
            Origin::Config => "agent.toml",
            Origin::Both => "both",
        })
    }
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
    pub origin: Origin,
}

/// The contract file as host bootstrap writes it (see docs/configuration.md,
/// "The parameter contract from infrastructure"). Entries use the keys of
/// `runtime.parameters`; a name may be relative to the prefix or the full
/// SSM name under it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContractFile {
    schema_version: u32,
    parameters: Vec<ParameterSpec>,
}

/// The parameter contract of one config: prefix, groups, declarations.
#[derive(Debug, Clone)]
pub struct Contract {
    pub prefix: String,
    pub groups: Vec<String>,
    pub declared: Vec<Declared>,
    /// The contract file, when one was read.
    pub contract_file: Option<String>,
}

impl Contract {
    /// Resolve the config's own declarations (group and variable default to
    /// the first and last path segments; `Config::parse` already checked
    /// them). Without the contract file: see [`Contract::load`].
    pub fn from_config(config: &Config) -> Contract {
        let runtime = &config.runtime;
        let declared = runtime
            .parameters
            .iter()
            .map(|p| resolve(config, p, Origin::Config))
            .collect();
        Contract {
            prefix: runtime.parameter_prefix.clone(),
            groups: runtime.groups.clone(),
            declared,
            contract_file: None,
        }
    }

    /// The whole contract: the contract file's entries (when the file
    /// exists) merged with `runtime.parameters`. A file that cannot be read
    /// or parsed, an entry that cannot be rendered, or a name with two
    /// types is exit 2 naming the file (and `agent.toml` for a conflict).
    pub fn load(config: &Config) -> Result<Contract, Error> {
        let mut contract = Contract::from_config(config);
        let path = config.runtime.contract_file.as_path();
        let shown = path.display().to_string();
        let invalid = |problem: String, fix: &str| {
            Error::Config(ConfigError::Invalid {
                key: format!("runtime.contract_file {shown}"),
                problem,
                fix: fix.to_owned(),
            })
        };
        const REWRITE: &str = "rewrite it from the infrastructure outputs (see docs/configuration.md, \
             \"The parameter contract from infrastructure\"), or remove it to use runtime.parameters only";
        // A file that is there but cannot be read (a symlink, a folder, no
        // permission) is a configuration problem, not a failed operation.
        let bytes = match fsutil::read_owned(path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(contract),
            Err(fsutil::FsError { source, .. }) => {
                return Err(invalid(format!("it cannot be read ({source})"), REWRITE))
            }
        };
        if bytes.len() > MAX_CONTRACT_FILE {
            return Err(invalid(
                format!("it is {} bytes, more than {MAX_CONTRACT_FILE}", bytes.len()),
                REWRITE,
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("it is not JSON ({e})"), REWRITE))?;
        match value.get("schemaVersion").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(CONTRACT_FILE_SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(invalid(
                    format!(
                    "unknown schemaVersion {v} (this agent reads {CONTRACT_FILE_SCHEMA_VERSION})"
                ),
                    REWRITE,
                ))
            }
            None => return Err(invalid("it has no schemaVersion".into(), REWRITE)),
        }
        let file: ContractFile = serde_json::from_value(value)
            .map_err(|e| invalid(format!("unexpected content ({e})"), REWRITE))?;
        debug_assert_eq!(file.schema_version, CONTRACT_FILE_SCHEMA_VERSION);

        let prefix = &config.runtime.parameter_prefix;
        let mut from_file: Vec<Declared> = Vec::new();
        for (i, entry) in file.parameters.iter().enumerate() {
            let at = format!("parameters[{i}] ({})", entry.name);
            let mut spec = entry.clone();
            if spec.name.starts_with('/') {
                let Some(relative) = spec.name.strip_prefix(prefix.as_str()) else {
                    return Err(invalid(
                        format!("{at} is not under runtime.parameter_prefix {prefix}"),
                        "name it relative to the prefix (GROUP/VARIABLE) or by its full name under the prefix",
                    ));
                };
                spec.name = relative.to_owned();
            }
            check_spec(config, &spec)
                .map_err(|(problem, fix)| invalid(format!("{at}: {problem}"), fix))?;
            let declared = resolve(config, &spec, Origin::ContractFile);
            if from_file.iter().any(|d| d.name == declared.name) {
                return Err(invalid(
                    format!("{at} is listed twice"),
                    "list each parameter once",
                ));
            }
            from_file.push(declared);
        }

        // Merge: the file's entries in its order, then agent.toml's own.
        let mut merged = Vec::with_capacity(from_file.len() + contract.declared.len());
        for mut entry in from_file {
            let local = contract.declared.iter().position(|d| d.name == entry.name);
            if let Some(index) = local {
                let local = contract.declared.remove(index);
                if local.kind != entry.kind {
                    let i = config
                        .runtime
                        .parameters
                        .iter()
                        .position(|p| format!("{prefix}{}", p.name) == local.name)
                        .unwrap_or(0);
                    return Err(Error::Config(ConfigError::Invalid {
                        key: format!("parameter {}", local.name),
                        problem: format!(
                            "the contract file {shown} says {} but runtime.parameters[{i}] in agent.toml says {}",
                            entry.kind, local.kind
                        ),
                        fix: "make the two agree (the infrastructure outputs own the type), \
                              or remove the entry from agent.toml"
                            .to_owned(),
                    }));
                }
                entry = Declared {
                    origin: Origin::Both,
                    ..local
                };
            }
            merged.push(entry);
        }
        merged.append(&mut contract.declared);
        contract.declared = merged;
        contract.contract_file = Some(shown);
        Ok(contract)
    }

    /// How many entries come (at least partly) from the contract file.
    pub fn from_file_count(&self) -> usize {
        self.declared
            .iter()
            .filter(|d| d.origin != Origin::Config)
            .count()
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

/// One entry with group and variable resolved from its path by default.
fn resolve(config: &Config, p: &ParameterSpec, origin: Origin) -> Declared {
    let first = p.name.split('/').next().unwrap_or_default();
    let last = p.name.rsplit('/').next().unwrap_or_default();
    Declared {
        name: format!("{}{}", config.runtime.parameter_prefix, p.name),
        kind: p.kind,
        required: p.required,
        group: p.group.clone().unwrap_or_else(|| first.to_owned()),
        variable: p.variable.clone().unwrap_or_else(|| last.to_owned()),
        origin,
    }
}

/// The checks `Config::parse` makes on `runtime.parameters`, for a contract
/// file entry (its name already relative): problem and fix.
fn check_spec(config: &Config, p: &ParameterSpec) -> Result<(), (String, &'static str)> {
    let segments: Vec<&str> = p.name.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "..") {
        return Err((
            "the name is not GROUP/VARIABLE under the prefix".into(),
            "write it as GROUP/VARIABLE, for example \"backend/DATABASE_URL\"",
        ));
    }
    let group = p.group.as_deref().unwrap_or(segments[0]);
    if !is_group_name(group) || !config.runtime.groups.iter().any(|g| g == group) {
        return Err((
            format!("group {group:?} is not in runtime.groups"),
            "add the group to runtime.groups in agent.toml, or set the entry's group",
        ));
    }
    let variable = p
        .variable
        .as_deref()
        .unwrap_or(segments.last().copied().unwrap_or_default());
    if !is_env_name(variable) {
        return Err((
            format!("{variable:?} cannot be an environment variable name"),
            "set the entry's variable to a name of letters, digits and '_'",
        ));
    }
    Ok(())
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
                "the SSM parameters do not meet the contract: {}; fix them in Parameter Store (or the contract file / runtime.parameters) and run again",
                blockers.join("; ")
            ),
        })
    }
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
    fn with_file(toml: &str, json: Option<&str>) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runtime-contract.json");
        if let Some(json) = json {
            std::fs::write(&file, json).unwrap();
        }
        let text = format!(
            "[runtime]\nparameter_prefix = \"/app/dev/\"\ncontract_file = {file:?}\n{toml}"
        );
        let config = Config::parse(&text, "t").unwrap();
        (dir, config)
    }
    #[test]
    fn a_missing_contract_file_is_the_config_alone() {
        let (_dir, config) = with_file(
            "[[runtime.parameters]]\nname = \"backend/A\"\ntype = \"String\"\n",
            None,
        );
        let c = Contract::load(&config).unwrap();
        assert_eq!(c.contract_file, None);
        assert_eq!(c.declared.len(), 1);
        assert_eq!(c.declared[0].origin, Origin::Config);
    }
    #[test]
    fn the_contract_file_merges_with_the_config() {
        let json = r#"{"schemaVersion": 1, "parameters": [
            {"name": "/app/dev/backend/DATABASE_URL", "type": "SecureString"},
            {"name": "backend/LOG_LEVEL", "type": "String", "required": true},
            {"name": "shared/KEY", "type": "SecureString", "group": "frontend", "variable": "PUBLIC_KEY"}
        ]}"#;
        let toml = "[[runtime.parameters]]\nname = \"backend/LOG_LEVEL\"\ntype = \"String\"\nrequired = false\n\
                    [[runtime.parameters]]\nname = \"postgres/EXTRA\"\ntype = \"String\"\n";
        let (_dir, config) = with_file(toml, Some(json));
        let c = Contract::load(&config).unwrap();
        let got: Vec<(&str, Origin, bool)> = c
            .declared
            .iter()
            .map(|d| (d.name.as_str(), d.origin, d.required))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/app/dev/backend/DATABASE_URL", Origin::ContractFile, true),
                // agent.toml relaxes what the file requires.
                ("/app/dev/backend/LOG_LEVEL", Origin::Both, false),
                ("/app/dev/shared/KEY", Origin::ContractFile, true),
                ("/app/dev/postgres/EXTRA", Origin::Config, true),
            ]
        );
        assert_eq!(c.declared[2].group, "frontend");
        assert_eq!(c.declared[2].variable, "PUBLIC_KEY");
        assert_eq!(c.from_file_count(), 3);
        assert!(c.contract_file.is_some());
    }
    #[test]
    fn a_type_conflict_names_both_sources() {
        let json = r#"{"schemaVersion": 1, "parameters": [{"name": "backend/A", "type": "SecureString"}]}"#;
        let (dir, config) = with_file(
            "[[runtime.parameters]]\nname = \"backend/A\"\ntype = \"String\"\n",
            Some(json),
        );
        let err = Contract::load(&config).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.contains("/app/dev/backend/A"), "{text}");
        assert!(
            text.contains(
                &dir.path()
                    .join("runtime-contract.json")
                    .display()
                    .to_string()
            ),
            "{text}"
        );
        assert!(
            text.contains("runtime.parameters[0] in agent.toml says String"),
            "{text}"
        );
    }
    #[test]
    fn a_bad_contract_file_is_invalid_config_naming_it() {
        for (json, needle) in [
            ("{not json", "not JSON"),
            (r#"{"parameters": []}"#, "no schemaVersion"),
            (
                r#"{"schemaVersion": 2, "parameters": []}"#,
                "unknown schemaVersion 2",
            ),
            (
                r#"{"schemaVersion": 1, "parameters": [], "extra": 1}"#,
                "unexpected content",
            ),
            (
                r#"{"schemaVersion": 1, "parameters": [{"name": "backend/A", "type": "Number"}]}"#,
                "unexpected content",
            ),
            (
                r#"{"schemaVersion": 1, "parameters": [{"name": "/other/backend/A", "type": "String"}]}"#,
                "not under runtime.parameter_prefix",
            ),
            (
                r#"{"schemaVersion": 1, "parameters": [{"name": "nogroup/A", "type": "String"}]}"#,
                "not in runtime.groups",
            ),
            (
                r#"{"schemaVersion": 1, "parameters": [{"name": "backend/BAD-NAME", "type": "String"}]}"#,
                "cannot be an environment variable",
            ),
            (
                r#"{"schemaVersion": 1, "parameters": [{"name": "backend/../A", "type": "String"}]}"#,
                "GROUP/VARIABLE",
            ),
            (
                r#"{"schemaVersion": 1, "parameters": [{"name": "backend/A", "type": "String"}, {"name": "backend/A", "type": "String"}]}"#,
                "listed twice",
            ),
            ("symlink", "does not follow symlinks"),
        ] {
            let (_dir, config) = if json == "symlink" {
                let (dir, config) = with_file("", None);
                let target = dir.path().join("elsewhere.json");
                std::fs::write(&target, r#"{"schemaVersion": 1, "parameters": []}"#).unwrap();
                std::os::unix::fs::symlink(&target, config.runtime.contract_file.as_path())
                    .unwrap();
                (dir, config)
            } else {
                with_file("", Some(json))
            };
            let err = Contract::load(&config).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{json}");
            let text = err.to_string();
            assert!(text.contains("runtime.contract_file"), "{text}");
            assert!(text.contains(needle), "{json}: {text}");
        }
    }
}
