//! The SSM Command documents in `ssm-documents/`: the agent's public API and
//! its injection surface.
//!
//! Three layers, each tested here:
//! 1. The document rules (schema 2.2, one `aws:runShellScript` step, every
//!    parameter a `String` with a description, a strict anchored
//!    `allowedPattern`, `maxChars` and `interpolationType: ENV_VAR`; no
//!    `{{ }}` anywhere, so no parameter text is ever pasted into the shell).
//! 2. The patterns reject hostile values and accept real ones. SSM checks
//!    them with Java regex; they keep to the subset Java and Rust agree on.
//! 3. The script, run the way the SSM Agent runs it (`/bin/sh`, parameters as
//!    `SSM_<name>` environment variables) against a recording stub of the
//!    agent: exact argv, exit codes passed through, hostile values that got
//!    past the pattern still arrive as one literal argument, a missing
//!    `SSM_` variable (an SSM Agent older than 3.3.2746.0) fails and says so.
//!    Then once more against the real agent, in dry-run mode, to prove it
//!    parses every argv the documents build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;

const MIN_SSM_AGENT: &str = "3.3.2746.0";

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const ECR_BACKEND: &str = "123456789012.dkr.ecr.us-east-2.amazonaws.com/wavemap/backend";
const ECR_FRONTEND: &str = "123456789012.dkr.ecr.us-east-2.amazonaws.com/wavemap/frontend";

/// What each document must be: the operation it runs, its parameters, and
/// the timeout window that fits the operation (SSM kills the whole process
/// group at the timeout).
struct Spec {
    file: &'static str,
    /// The agent subcommand words.
    command: &'static [&'static str],
    params: &'static [&'static str],
    timeout: std::ops::RangeInclusive<u64>,
}

const RELEASE_PARAMS: &[&str] = &[
    "BackendImage",
    "FrontendImage",
    "SourceSha",
    "DeploymentVersion",
    "SelectedRef",
    "WorkflowName",
    "WorkflowRunId",
    "WorkflowRunAttempt",
    "Execute",
];

/// Release metadata a manual repair run (the runbook's local deploy and
/// release-record by hand) does not have: optional, default empty, and
/// passed to the agent only when given.
const OPTIONAL_PARAMS: &[&str] = &[
    "SelectedRef",
    "WorkflowName",
    "WorkflowRunId",
    "WorkflowRunAttempt",
];

const SPECS: &[Spec] = &[
    Spec {
        file: "wavemap-runtime-deploy.json",
        command: &["runtime", "deploy"],
        params: RELEASE_PARAMS,
        // lock wait 600 + pull 900 + health 300 + render and converge
        timeout: 1800..=3600,
    },
    Spec {
        file: "wavemap-runtime-record-release.json",
        command: &["runtime", "record-release"],
        params: RELEASE_PARAMS,
        timeout: 600..=1800,
    },
    Spec {
        file: "wavemap-runtime-rollback.json",
        command: &["runtime", "rollback"],
        params: &["Execute"],
        // the same path as deploy
        timeout: 1800..=3600,
    },
    Spec {
        file: "wavemap-runtime-receipt.json",
        command: &["runtime", "receipt"],
        params: &[],
        // read-only, takes no lock, reads one file
        timeout: 60..=600,
    },
    Spec {
        file: "wavemap-runtime-prune.json",
        command: &["runtime", "prune"],
        params: &["Execute"],
        // lock wait 600 + image removals
        timeout: 900..=1800,
    },
    Spec {
        file: "wavemap-runtime-env.json",
        command: &["runtime-env"],
        params: &["Execute"],
        timeout: 600..=1800,
    },
    Spec {
        file: "wavemap-database-status.json",
        command: &["database", "status"],
        params: &["AllowMigrate"],
        // read-only, takes no lock
        timeout: 120..=600,
    },
    Spec {
        file: "wavemap-database-migrate.json",
        command: &["database", "migrate"],
        params: &["Execute"],
        // lock wait 600 + one job 900
        timeout: 1500..=3600,
    },
    Spec {
        file: "wavemap-database-reset.json",
        command: &["database", "reset"],
        params: &["ConfirmEnvironment", "Execute"],
        // lock wait 600 + three jobs (migrate, base seed, dev seed)
        timeout: 3300..=7200,
    },
    Spec {
        file: "wavemap-media-discrepancy-report.json",
        command: &["media", "discrepancy-report"],
        params: &["Execute"],
        timeout: 1500..=3600,
    },
];

fn docs_dir() -> PathBuf {
    wavemap_e2e::repo_root().join("ssm-documents")
}

fn load(spec: &Spec) -> Value {
    let path = docs_dir().join(spec.file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn param<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["parameters"][name]
}

fn pattern(doc: &Value, name: &str) -> Regex {
    let p = param(doc, name)["allowedPattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no allowedPattern"));
    Regex::new(p).unwrap_or_else(|e| panic!("{name}: allowedPattern {p:?} does not compile: {e}"))
}

fn run_command(doc: &Value) -> Vec<String> {
    doc["mainSteps"][0]["inputs"]["runCommand"]
        .as_array()
        .expect("runCommand is a list")
        .iter()
        .map(|l| l.as_str().expect("runCommand lines are strings").to_owned())
        .collect()
}

/// Values the parameters must accept: what CI and operators really send.
fn valid_values(name: &str) -> Vec<String> {
    let v = |s: &str| s.to_owned();
    match name {
        "BackendImage" => vec![
            format!("{ECR_BACKEND}:sha-{SHA}"),
            format!("{ECR_BACKEND}@sha256:{}", "ab".repeat(32)),
            format!("127.0.0.1:5000/wavemap/api:sha-{SHA}"),
            format!("registry.example.com/team_a/wavemap-api__x/v2:sha-{SHA}"),
        ],
        "FrontendImage" => vec![
            format!("{ECR_FRONTEND}:sha-{SHA}"),
            format!("{ECR_FRONTEND}@sha256:{}", "0f".repeat(32)),
            format!("127.0.0.1:5000/wavemap/frontend:sha-{SHA}"),
        ],
        "SourceSha" => vec![v(SHA), "f".repeat(40)],
        "DeploymentVersion" => vec![v("2026.11.25-412.1"), v("v1.2.3+build.7"), v("412")],
        "SelectedRef" => vec![
            v("develop"),
            v("release/2026-11"),
            v("refs/heads/main"),
            v("v1.2.3"),
            v(SHA),
            v("feature/JIRA-12_fix.v2"),
        ],
        "WorkflowName" => vec![v("deploy-dev.yml"), v("deploy_dev"), v("Deploy-Dev")],
        "WorkflowRunId" => vec![v("12345678901"), v("1")],
        "WorkflowRunAttempt" => vec![v("1"), v("12")],
        "Execute" | "AllowMigrate" => vec![v("true"), v("false")],
        "ConfirmEnvironment" => vec![v("dev"), v("staging-2")],
        other => panic!("no valid values for parameter {other}: add them to this test"),
    }
}

/// Values that must never pass: shell metacharacters, traversal, control
/// characters, whitespace, empty and huge; alone and glued to a valid value
/// (so an unanchored or half-anchored pattern shows).
fn hostile_values(name: &str) -> Vec<String> {
    let fragments = [
        ";", "; reboot", "$(id)", "`id`", "${IFS}", "\n", "\nreboot", "\r", "\t", "'", "\"", "\\",
        "../", "/../", "/..", " ", "|", "&", "&&", ">", "<", "*", "?", "#", "!", "~", "%", "\u{0}",
        "\u{a0}", "é", "{{", "}}",
    ];
    let mut out = vec![
        String::new(),
        " ".into(),
        "-".into(),
        "--execute".into(),
        "-x".into(),
        "..".into(),
        "../../etc/passwd".into(),
        "a".repeat(5000),
        "1".repeat(5000),
    ];
    for f in fragments {
        out.push(f.to_owned());
    }
    for valid in valid_values(name) {
        for f in fragments {
            out.push(format!("{valid}{f}"));
            out.push(format!("{f}{valid}"));
            let mid = valid.len() / 2;
            if valid.is_char_boundary(mid) {
                out.push(format!("{}{f}{}", &valid[..mid], &valid[mid..]));
            }
        }
        out.push(format!("{valid} {valid}"));
        out.push(format!("{valid}\n{valid}"));
        out.push(valid.repeat(5000 / valid.len().max(1) + 1));
        out.push(format!("{valid}{}", "a".repeat(5000)));
        out.push(format!("{}{valid}", "1".repeat(5000)));
        out.push(valid.to_uppercase());
    }
    // Case matters only where the value is lowercase by definition.
    out.retain(|h| !valid_values(name).contains(h));
    // Empty is how a repair run leaves out what it does not have.
    if OPTIONAL_PARAMS.contains(&name) {
        out.retain(|h| !h.is_empty());
    }
    if matches!(name, "DeploymentVersion" | "SelectedRef" | "WorkflowName") {
        out.retain(|h| {
            !h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-/".contains(c))
                || h.is_empty()
                || h.len() > 255
                || h.contains("..")
                || h.starts_with(['-', '.', '/'])
        });
    }
    out
}

#[test]
fn every_operation_has_exactly_one_document() {
    let mut files: Vec<String> = std::fs::read_dir(docs_dir())
        .expect("ssm-documents/ exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let mut expected: Vec<String> = SPECS.iter().map(|s| s.file.to_owned()).collect();
    expected.sort();
    assert_eq!(files, expected);
}

#[test]
fn documents_follow_the_rules() {
    let ssm_var = Regex::new(r"SSM_([A-Za-z0-9]+)").expect("regex");
    for spec in SPECS {
        let doc = load(spec);
        let f = spec.file;
        assert_eq!(doc["schemaVersion"], "2.2", "{f}");
        assert!(
            doc["description"].as_str().is_some_and(|d| d.len() > 20),
            "{f}: needs a description"
        );
        assert!(
            doc["description"]
                .as_str()
                .is_some_and(|d| d.contains(MIN_SSM_AGENT)),
            "{f}: the description names the SSM Agent it needs"
        );
        let raw = std::fs::read_to_string(docs_dir().join(f)).expect("read");
        assert!(
            !raw.contains("{{"),
            "{f}: no {{{{ }}}} interpolation anywhere"
        );

        let params = doc["parameters"].as_object().expect("parameters object");
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        assert_eq!(names, spec.params, "{f}: parameters");
        for (name, p) in params {
            let at = format!("{f}: parameter {name}");
            assert_eq!(p["type"], "String", "{at}: type");
            assert!(
                p["description"].as_str().is_some_and(|d| d.len() >= 15),
                "{at}: needs a description"
            );
            assert_eq!(p["interpolationType"], "ENV_VAR", "{at}: interpolationType");
            let max = p["maxChars"]
                .as_u64()
                .unwrap_or_else(|| panic!("{at}: maxChars"));
            assert!((1..=1024).contains(&max), "{at}: maxChars {max}");
            let pat = p["allowedPattern"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: allowedPattern"));
            assert_anchored_common_subset(pat, &at);
            if let Some(default) = p.get("default") {
                let default = default
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: default is a string"));
                assert!(
                    pattern(&doc, name).is_match(default),
                    "{at}: default must match the pattern"
                );
            }
            if OPTIONAL_PARAMS.contains(&name.as_str()) {
                assert_eq!(
                    p.get("default"),
                    Some(&serde_json::json!("")),
                    "{at}: optional, default empty (a repair run has no workflow run)"
                );
            }
            // A parameter name is also a shell variable name (SSM_<name>).
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{at}: name must be a valid part of a shell variable name"
            );
        }

        let steps = doc["mainSteps"].as_array().expect("mainSteps list");
        assert_eq!(steps.len(), 1, "{f}: one step");
        let step = &steps[0];
        assert_eq!(step["action"], "aws:runShellScript", "{f}");
        assert_eq!(
            step["precondition"]["StringEquals"],
            serde_json::json!(["platformType", "Linux"]),
            "{f}"
        );
        let timeout: u64 = step["inputs"]["timeoutSeconds"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{f}: timeoutSeconds is a number in a string"));
        assert!(
            spec.timeout.contains(&timeout),
            "{f}: timeoutSeconds {timeout} outside {:?}",
            spec.timeout
        );

        let script = run_command(&doc).join("\n");
        let code: Vec<String> = run_command(&doc)
            .into_iter()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert!(code.iter().any(|l| l == "set -u"), "{f}: set -u");
        assert!(
            !code
                .iter()
                .any(|l| l.contains("set -e") || l.contains("set -o errexit")),
            "{f}: no set -e: the exit code is passed through"
        );
        assert!(
            script.contains(MIN_SSM_AGENT),
            "{f}: names the minimum SSM Agent"
        );
        assert!(
            script.contains("WAVEMAP_AGENT_BIN=\"${WAVEMAP_AGENT_BIN:-/usr/bin/wavemap-agent}\""),
            "{f}: calls the agent through WAVEMAP_AGENT_BIN"
        );
        assert!(
            script.contains(
                "WAVEMAP_AGENT_SANDBOX=\"${WAVEMAP_AGENT_SANDBOX:-/usr/lib/wavemap-agent/sandbox}\""
            ),
            "{f}: the sandbox is the packaged one unless a test names another"
        );
        let calls: Vec<&String> = code
            .iter()
            .filter(|l| l.contains("\"$WAVEMAP_AGENT_BIN\" ") && !l.starts_with("if "))
            .collect();
        assert!(
            calls.len() == 1
                && calls[0].starts_with("\"$WAVEMAP_AGENT_SANDBOX\" \"$WAVEMAP_AGENT_BIN\" "),
            "{f}: the agent runs once, through the sandbox: {calls:?}"
        );
        // Every SSM_ variable the script reads is a parameter, and every
        // parameter is read.
        let used: std::collections::BTreeSet<String> = ssm_var
            .captures_iter(&script)
            .map(|c| c[1].to_owned())
            .collect();
        let declared: std::collections::BTreeSet<String> =
            spec.params.iter().map(|s| s.to_string()).collect();
        assert_eq!(used, declared, "{f}: SSM_ variables used vs parameters");
        // Expansions are always inside double quotes: strip the quoted
        // parts of each line and no SSM_ reference may be left.
        for line in run_command(&doc) {
            if line.trim_start().starts_with('#') {
                continue;
            }
            assert!(
                !outside_double_quotes(&line).contains("SSM_"),
                "{f}: unquoted expansion in {line:?}"
            );
        }
    }
}

/// The parts of a shell line outside double quotes (backslash escapes kept
/// in mind; the documents use no single-quoted expansions).
fn outside_double_quotes(line: &str) -> String {
    let (mut out, mut quoted, mut escaped) = (String::new(), false, false);
    for c in line.chars() {
        if escaped {
            escaped = false;
            if !quoted {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            _ if !quoted => out.push(c),
            _ => {}
        }
    }
    out
}

/// `^...$` around the whole pattern (no top-level `|` that would anchor only
/// one side), and nothing outside what Java and Rust regex read the same way.
fn assert_anchored_common_subset(pat: &str, at: &str) {
    assert!(
        pat.starts_with('^') && pat.ends_with('$') && !pat.ends_with("\\$"),
        "{at}: {pat:?} must be anchored ^...$"
    );
    for bad in [
        "(?=", "(?!", "(?<", "(?P", "(?i", "\\z", "\\Z", "\\A", "\\p", "\\b", "++", "*+", "?+",
        "}+", "\\1", "[[", "&&",
    ] {
        assert!(
            !pat.contains(bad),
            "{at}: {pat:?} uses {bad:?}, outside the Java/Rust common subset"
        );
    }
    let inner = &pat[1..pat.len() - 1];
    let (mut depth, mut class, mut escaped) = (0i32, false, false);
    for c in inner.chars() {
        match (escaped, class, c) {
            (true, _, _) => escaped = false,
            (false, _, '\\') => escaped = true,
            (false, false, '[') => class = true,
            (false, true, ']') => class = false,
            (false, false, '(') => depth += 1,
            (false, false, ')') => depth -= 1,
            (false, false, '|') => assert!(
                depth > 0,
                "{at}: top-level | in {pat:?} escapes the anchors"
            ),
            (false, false, '.') => panic!("{at}: unescaped . in {pat:?} matches anything"),
            _ => {}
        }
    }
    assert_eq!(depth, 0, "{at}: unbalanced groups in {pat:?}");
}

#[test]
fn patterns_accept_real_values() {
    for spec in SPECS {
        let doc = load(spec);
        for name in spec.params {
            let re = pattern(&doc, name);
            let max = param(&doc, name)["maxChars"].as_u64().expect("maxChars") as usize;
            for value in valid_values(name) {
                assert!(
                    re.is_match(&value),
                    "{}: {name} must accept {value:?}",
                    spec.file
                );
                assert!(
                    value.len() <= max,
                    "{}: {name} maxChars {max} < {}",
                    spec.file,
                    value.len()
                );
            }
        }
    }
}

#[test]
fn patterns_reject_hostile_values() {
    let mut checked = 0;
    for spec in SPECS {
        let doc = load(spec);
        for name in spec.params {
            let re = pattern(&doc, name);
            for value in hostile_values(name) {
                assert!(
                    !re.is_match(&value),
                    "{}: {name} accepted hostile value {:?}",
                    spec.file,
                    truncate(&value)
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} hostile values checked");
}

#[test]
fn image_patterns_reject_mutable_tags_and_bare_names() {
    for spec in SPECS.iter().filter(|s| s.params.contains(&"BackendImage")) {
        let doc = load(spec);
        for name in ["BackendImage", "FrontendImage"] {
            let re = pattern(&doc, name);
            for bad in [
                format!("{ECR_BACKEND}:latest"),
                format!("{ECR_BACKEND}:sha-{}", &SHA[..39]),
                format!("{ECR_BACKEND}:sha-{}", SHA.to_uppercase()),
                format!("{ECR_BACKEND}:sha-{SHA}@sha256:{}", "a".repeat(64)),
                format!("{ECR_BACKEND}@sha256:{}", "a".repeat(63)),
                format!("{ECR_BACKEND}@sha512:{}", "a".repeat(64)),
                ECR_BACKEND.to_owned(),
                format!("wavemap/backend:sha-{SHA}"),
                format!("backend:sha-{SHA}"),
                format!("https://{ECR_BACKEND}:sha-{SHA}"),
                format!("127.0.0.1:5000/wavemap/../api:sha-{SHA}"),
                format!("127.0.0.1:5000//api:sha-{SHA}"),
                format!("127.0.0.1:5000/Wavemap/api:sha-{SHA}"),
                format!("127.0.0.1:5000/wavemap/api-:sha-{SHA}"),
                format!("-registry.example.com/wavemap/api:sha-{SHA}"),
                format!("127.0.0.1:123456/wavemap/api:sha-{SHA}"),
            ] {
                assert!(!re.is_match(&bad), "{}: {name} accepted {bad:?}", spec.file);
            }
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 80 {
        format!(
            "{}... ({} bytes)",
            &s[..s.char_indices().nth(60).map_or(s.len(), |(i, _)| i)],
            s.len()
        )
    } else {
        s.to_owned()
    }
}

// ---------------------------------------------------------------------------
// Running the scripts the way the SSM Agent does.

/// The shells a host may have as /bin/sh: dash (Debian, Ubuntu) and bash
/// (Amazon Linux). Each one runs every script; both are essential packages
/// on Debian, so a missing one fails the test rather than shrinking it.
fn shells() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/bin/sh")];
    for extra in ["/bin/dash", "/bin/bash"] {
        assert!(
            Path::new(extra).exists(),
            "{extra} is missing: the documents' scripts must be run with it (apt-get install dash bash)"
        );
        out.push(PathBuf::from(extra));
    }
    out
}

/// A stand-in for the agent that records its argv (NUL-separated, so a
/// newline inside an argument stays visible) and exits with a chosen code.
struct Stub {
    dir: tempfile::TempDir,
}

impl Stub {
    fn new() -> Stub {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("wavemap-agent");
        std::fs::write(
            &bin,
            "#!/bin/sh\n\
             printf '%s\\0' \"$@\" > \"$WAVEMAP_STUB_ARGV\"\n\
             echo WAVEMAP_STUB_CALLED=1\n\
             echo 'stub: progress goes to stderr' >&2\n\
             exit \"${WAVEMAP_STUB_EXIT:-0}\"\n",
        )
        .expect("write stub");
        set_mode(&bin, 0o755);
        // The sandbox the documents run the agent through, as a recording
        // pass-through: the real one (packaging/wavemap-agent-sandbox, a
        // transient systemd unit) is tested under systemd in systemd.rs.
        let sandbox = dir.path().join("sandbox");
        std::fs::write(
            &sandbox,
            "#!/bin/sh\n\
             if [ -n \"${WAVEMAP_STUB_SANDBOX_ARGV:-}\" ]; then printf '%s\\0' \"$@\" > \"$WAVEMAP_STUB_SANDBOX_ARGV\"; fi\n\
             exec \"$@\"\n",
        )
        .expect("write sandbox stub");
        set_mode(&sandbox, 0o755);
        Stub { dir }
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("wavemap-agent")
    }
    fn sandbox(&self) -> PathBuf {
        self.dir.path().join("sandbox")
    }
    /// The argv the sandbox got: the agent, then the agent's argv.
    fn sandbox_argv(&self) -> Option<Vec<String>> {
        let raw = std::fs::read(self.dir.path().join("sandbox-argv")).ok()?;
        let text = String::from_utf8(raw).expect("argv is UTF-8");
        Some(
            text.strip_suffix('\0')
                .map(|t| t.split('\0').map(str::to_owned).collect())
                .unwrap_or_default(),
        )
    }
    fn argv_file(&self) -> PathBuf {
        self.dir.path().join("argv")
    }
    fn argv(&self) -> Option<Vec<String>> {
        let raw = std::fs::read(self.argv_file()).ok()?;
        let text = String::from_utf8(raw).expect("argv is UTF-8");
        Some(
            text.strip_suffix('\0')
                .map(|t| t.split('\0').map(str::to_owned).collect())
                .unwrap_or_default(),
        )
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

struct ScriptRun {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Write the runCommand lines into `_script.sh` (as the SSM Agent does) and
/// run it with `shell`, a clean environment plus `env`.
fn run_script(doc: &Value, shell: &Path, env: &BTreeMap<String, String>) -> ScriptRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("_script.sh");
    std::fs::write(&script, run_command(doc).join("\n") + "\n").expect("write script");
    let mut cmd = Command::new(shell);
    cmd.arg(&script)
        .current_dir(dir.path())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run script");
    ScriptRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `SSM_<name>` for the given values, plus the stub wiring.
fn ssm_env(values: &[(&str, String)], stub: &Stub, exit: i32) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = values
        .iter()
        .map(|(k, v)| (format!("SSM_{k}"), v.clone()))
        .collect();
    env.insert("WAVEMAP_AGENT_BIN".into(), stub.bin().display().to_string());
    env.insert(
        "WAVEMAP_AGENT_SANDBOX".into(),
        stub.sandbox().display().to_string(),
    );
    env.insert(
        "WAVEMAP_STUB_SANDBOX_ARGV".into(),
        stub.dir.path().join("sandbox-argv").display().to_string(),
    );
    env.insert(
        "WAVEMAP_STUB_ARGV".into(),
        stub.argv_file().display().to_string(),
    );
    env.insert("WAVEMAP_STUB_EXIT".into(), exit.to_string());
    env
}

/// One valid value per parameter, with the toggles set as given.
fn sample_values(spec: &Spec, execute: bool) -> Vec<(&'static str, String)> {
    spec.params
        .iter()
        .map(|&name| {
            let value = match name {
                "Execute" | "AllowMigrate" => execute.to_string(),
                _ => valid_values(name).remove(0),
            };
            (name, value)
        })
        .collect()
}

/// The argv the agent must get: the subcommand, `--flag=value` per
/// parameter, then the toggle flag. This is the contract with cli.rs.
fn expected_argv(spec: &Spec, values: &[(&str, String)]) -> Vec<String> {
    let mut argv: Vec<String> = vec!["--deadline".into(), deadline_of(spec).to_string()];
    argv.extend(spec.command.iter().map(|s| s.to_string()));
    let flag = |name: &str| -> Option<&'static str> {
        Some(match name {
            "BackendImage" => "--backend-image",
            "FrontendImage" => "--frontend-image",
            "SourceSha" => "--source-sha",
            "DeploymentVersion" => "--deployment-version",
            "SelectedRef" => "--selected-ref",
            "WorkflowName" => "--workflow-name",
            "WorkflowRunId" => "--workflow-run-id",
            "WorkflowRunAttempt" => "--workflow-run-attempt",
            "ConfirmEnvironment" => "--confirm",
            _ => return None,
        })
    };
    for (name, value) in values {
        if let Some(flag) = flag(name) {
            // Optional metadata left empty is not passed at all.
            if value.is_empty() && OPTIONAL_PARAMS.contains(name) {
                continue;
            }
            argv.push(format!("{flag}={value}"));
        }
    }
    for (name, value) in values {
        match (*name, value.as_str()) {
            ("Execute", "true") => argv.push("--execute".into()),
            ("AllowMigrate", "true") => argv.push("--allow-migrate".into()),
            _ => {}
        }
    }
    argv
}

#[test]
fn scripts_pass_exactly_the_intended_arguments() {
    for shell in shells() {
        for spec in SPECS {
            let doc = load(spec);
            for toggle in [true, false] {
                let stub = Stub::new();
                let values = sample_values(spec, toggle);
                let run = run_script(&doc, &shell, &ssm_env(&values, &stub, 0));
                let at = format!("{} under {} (toggle {toggle})", spec.file, shell.display());
                assert_eq!(run.code, 0, "{at}: {}", run.stderr);
                assert_eq!(stub.argv(), Some(expected_argv(spec, &values)), "{at}");
                // Through the sandbox, never around it: the sandbox runs the
                // agent with exactly that argv.
                let mut sandboxed = vec![stub.bin().display().to_string()];
                sandboxed.extend(expected_argv(spec, &values));
                assert_eq!(stub.sandbox_argv(), Some(sandboxed), "{at}");
                // The script adds nothing to stdout: what SSM keeps is the
                // agent's markers and nothing else.
                assert_eq!(run.stdout, "WAVEMAP_STUB_CALLED=1\n", "{at}");
                assert_eq!(run.stderr, "stub: progress goes to stderr\n", "{at}");
            }
        }
    }
}

#[test]
fn scripts_pass_every_valid_value_unchanged() {
    for spec in SPECS {
        let doc = load(spec);
        for name in spec.params {
            for value in valid_values(name) {
                let stub = Stub::new();
                let mut values = sample_values(spec, true);
                for v in values.iter_mut().filter(|(n, _)| n == name) {
                    v.1 = value.clone();
                }
                let run = run_script(&doc, Path::new("/bin/sh"), &ssm_env(&values, &stub, 0));
                assert_eq!(run.code, 0, "{}: {name}={value}: {}", spec.file, run.stderr);
                assert_eq!(
                    stub.argv(),
                    Some(expected_argv(spec, &values)),
                    "{}: {name}={value}",
                    spec.file
                );
            }
        }
    }
}

#[test]
fn scripts_pass_the_agent_exit_code_through() {
    // 137 is what a SIGKILL looks like; 126/127 what a shell says itself.
    for spec in SPECS {
        let doc = load(spec);
        for code in [0, 1, 2, 3, 4, 69, 75, 137, 255] {
            let stub = Stub::new();
            let run = run_script(
                &doc,
                Path::new("/bin/sh"),
                &ssm_env(&sample_values(spec, true), &stub, code),
            );
            assert_eq!(
                run.code, code,
                "{}: stub exited {code}: {}",
                spec.file, run.stderr
            );
        }
    }
}

#[test]
fn scripts_never_exit_with_a_code_ssm_reserves() {
    // 194 would make SSM reboot the host; 168 and 169 are SSM's own statuses.
    for spec in SPECS {
        let doc = load(spec);
        for code in [168, 169, 194] {
            let stub = Stub::new();
            let run = run_script(
                &doc,
                Path::new("/bin/sh"),
                &ssm_env(&sample_values(spec, true), &stub, code),
            );
            assert_eq!(run.code, 1, "{}: stub exited {code}", spec.file);
            assert!(
                run.stderr.contains(&format!("exited {code}")),
                "{}: {}",
                spec.file,
                run.stderr
            );
        }
    }
}

#[test]
fn missing_ssm_variable_names_the_minimum_ssm_agent() {
    // An SSM Agent older than 3.3.2746.0 ignores interpolationType and sets
    // no SSM_ variables: the script must stop before calling the agent.
    for shell in shells() {
        for spec in SPECS {
            let doc = load(spec);
            for missing in spec.params.iter().filter(|p| !OPTIONAL_PARAMS.contains(p)) {
                for how in ["unset", "empty"] {
                    let stub = Stub::new();
                    let mut env = ssm_env(&sample_values(spec, true), &stub, 0);
                    let key = format!("SSM_{missing}");
                    if how == "unset" {
                        env.remove(&key);
                    } else {
                        env.insert(key.clone(), String::new());
                    }
                    let run = run_script(&doc, &shell, &env);
                    let at = format!("{} under {}: {key} {how}", spec.file, shell.display());
                    assert_eq!(run.code, 2, "{at}: {}", run.stderr);
                    assert!(run.stderr.contains(MIN_SSM_AGENT), "{at}: {}", run.stderr);
                    assert!(run.stderr.contains(&key), "{at}: {}", run.stderr);
                    assert!(stub.argv().is_none(), "{at}: the agent must not run");
                    assert_eq!(
                        run.stdout,
                        "WAVEMAP_AGENT_ERROR=invalid-input\nWAVEMAP_AGENT_EXIT_CODE=2\n",
                        "{at}"
                    );
                }
            }
        }
    }
}

#[test]
fn optional_metadata_left_out_or_empty_is_not_passed() {
    // A repair run sends no workflow metadata (SSM fills in the empty
    // defaults): the agent gets no flag for it, so it records nothing.
    for shell in shells() {
        for spec in SPECS.iter().filter(|s| s.params.contains(&"WorkflowName")) {
            let doc = load(spec);
            for how in ["unset", "empty"] {
                let stub = Stub::new();
                let mut values = sample_values(spec, true);
                let mut env = ssm_env(&values, &stub, 0);
                for name in OPTIONAL_PARAMS {
                    let key = format!("SSM_{name}");
                    if how == "unset" {
                        env.remove(&key);
                    } else {
                        env.insert(key, String::new());
                    }
                }
                values.retain(|(n, _)| !OPTIONAL_PARAMS.contains(n));
                let run = run_script(&doc, &shell, &env);
                let at = format!("{} under {}: metadata {how}", spec.file, shell.display());
                assert_eq!(run.code, 0, "{at}: {}", run.stderr);
                let argv = stub.argv().unwrap_or_else(|| panic!("{at}: agent not run"));
                assert_eq!(argv, expected_argv(spec, &values), "{at}");
                assert!(
                    argv.iter()
                        .all(|a| !a.starts_with("--workflow") && !a.starts_with("--selected-ref")),
                    "{at}: {argv:?}"
                );
            }
            // One given, the others empty: only that one is passed.
            let stub = Stub::new();
            let mut values = sample_values(spec, false);
            for v in values.iter_mut() {
                if OPTIONAL_PARAMS.contains(&v.0) && v.0 != "WorkflowRunId" {
                    v.1 = String::new();
                }
            }
            let run = run_script(&doc, &shell, &ssm_env(&values, &stub, 0));
            assert_eq!(run.code, 0, "{}: {}", spec.file, run.stderr);
            let argv = stub.argv().expect("agent ran");
            assert_eq!(argv, expected_argv(spec, &values), "{}", spec.file);
            assert!(
                argv.contains(&"--workflow-run-id=12345678901".to_owned()),
                "{argv:?}"
            );
        }
    }
}

#[test]
fn hostile_values_that_got_past_ssm_stay_data() {
    // Defence in depth: even if a pattern let something through, the value
    // reaches the agent as one literal argument and the shell runs nothing.
    let canary_dir = tempfile::tempdir().expect("temp dir");
    let canary = canary_dir.path().join("pwned");
    let c = canary.display().to_string();
    let payloads = [
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("x; touch {c}"),
        format!("x\ntouch {c}"),
        format!("x' ; touch {c} ; '"),
        format!("x\" ; touch {c} ; \""),
        "*".to_owned(),
        "a b  c".to_owned(),
        "${HOME}".to_owned(),
        "-x".to_owned(),
        "../../etc/passwd".to_owned(),
    ];
    for spec in SPECS {
        let doc = load(spec);
        for name in spec
            .params
            .iter()
            .filter(|n| !matches!(**n, "Execute" | "AllowMigrate"))
        {
            for payload in &payloads {
                let stub = Stub::new();
                let mut values = sample_values(spec, true);
                for v in values.iter_mut().filter(|(n, _)| n == name) {
                    v.1 = payload.clone();
                }
                let run = run_script(&doc, Path::new("/bin/sh"), &ssm_env(&values, &stub, 0));
                assert_eq!(
                    run.code, 0,
                    "{}: {name}={payload:?}: {}",
                    spec.file, run.stderr
                );
                assert_eq!(
                    stub.argv(),
                    Some(expected_argv(spec, &values)),
                    "{}: {name}={payload:?}",
                    spec.file
                );
                assert!(
                    !canary.exists(),
                    "{}: {name}={payload:?} ran a command",
                    spec.file
                );
            }
        }
    }
}

#[test]
fn toggles_accept_only_true_or_false() {
    // The receipt document has no parameter, so no toggle to test.
    for spec in SPECS.iter().filter(|s| !s.params.is_empty()) {
        let doc = load(spec);
        let toggle = if spec.params.contains(&"AllowMigrate") {
            "AllowMigrate"
        } else {
            "Execute"
        };
        for bad in ["TRUE", "yes", "1", "true;reboot", "--execute"] {
            let stub = Stub::new();
            let mut values = sample_values(spec, true);
            for v in values.iter_mut().filter(|(n, _)| *n == toggle) {
                v.1 = bad.to_owned();
            }
            let run = run_script(&doc, Path::new("/bin/sh"), &ssm_env(&values, &stub, 0));
            assert_eq!(run.code, 2, "{}: {toggle}={bad}", spec.file);
            assert!(
                stub.argv().is_none(),
                "{}: {toggle}={bad}: the agent must not run",
                spec.file
            );
        }
    }
}

#[test]
fn missing_sandbox_is_named_and_the_agent_never_runs_around_it() {
    for spec in SPECS {
        let doc = load(spec);
        let stub = Stub::new();
        let mut env = ssm_env(&sample_values(spec, true), &stub, 0);
        env.insert(
            "WAVEMAP_AGENT_SANDBOX".into(),
            "/nonexistent/sandbox".into(),
        );
        let run = run_script(&doc, Path::new("/bin/sh"), &env);
        assert_eq!(run.code, 127, "{}", spec.file);
        assert!(
            run.stderr.contains("/nonexistent/sandbox"),
            "{}: {}",
            spec.file,
            run.stderr
        );
        assert!(
            stub.argv().is_none(),
            "{}: the agent ran unsandboxed",
            spec.file
        );
    }
}

#[test]
fn missing_agent_binary_is_named() {
    for spec in SPECS {
        let doc = load(spec);
        let stub = Stub::new();
        let mut env = ssm_env(&sample_values(spec, true), &stub, 0);
        env.insert(
            "WAVEMAP_AGENT_BIN".into(),
            "/nonexistent/wavemap-agent".into(),
        );
        let run = run_script(&doc, Path::new("/bin/sh"), &env);
        assert_eq!(run.code, 127, "{}", spec.file);
        assert!(
            run.stderr.contains("/nonexistent/wavemap-agent"),
            "{}: {}",
            spec.file,
            run.stderr
        );
    }
}

/// The real agent parses every argv the documents build: each script runs
/// in dry-run mode against `target/debug/wavemap-agent` with a config whose
/// paths are temp dirs and whose endpoints are closed loopback ports. What
/// the dry run then reports is the commands' business; a clap usage error
/// (a flag the agent does not know) is this test's.
#[test]
fn real_agent_accepts_every_document_in_dry_run() {
    let marker = Regex::new(r"^WAVEMAP_[A-Z0-9_]+=").expect("regex");
    // The pass-through sandbox (the real one needs systemd: systemd.rs).
    let sandbox = Stub::new();
    let agent = wavemap_e2e::agent_bin();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let config = root.join("agent.toml");
    let p = |rel: &str| root.join(rel).display().to_string();
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\nrun_dir = {:?}\nlock_timeout = 5\n\
             [aws]\nssm_endpoint = \"http://127.0.0.1:9\"\necr_endpoint = \"http://127.0.0.1:9\"\n\
             max_attempts = 1\noperation_timeout = 3\nattempt_timeout = 1\n\
             test_ecr_registry_alias = \"127.0.0.1:5000\"\n\
             [docker]\nhost = \"tcp://127.0.0.1:9\"\nconnect_wait = 1\nrequest_timeout = 2\n\
             [runtime]\ncompose_file = {:?}\nenv_dir = {:?}\nhealth_timeout = 3\npull_timeout = 3\n\
             [receipt]\npath = {:?}\n\
             [database]\nconnect_timeout = 1\n\
             [daemon]\ndocker_wait = 1\nssm_wait = 1\n",
            p("state"),
            p("run"),
            p("runtime/compose.yaml"),
            p("runtime/env"),
            p("deployment/last-successful-runtime-release.json"),
        ),
    )
    .expect("write config");
    for spec in SPECS {
        let doc = load(spec);
        let values = sample_values(spec, false);
        let mut env: BTreeMap<String, String> = values
            .iter()
            .map(|(k, v)| (format!("SSM_{k}"), v.clone()))
            .collect();
        env.insert("WAVEMAP_AGENT_BIN".into(), agent.display().to_string());
        env.insert(
            "WAVEMAP_AGENT_SANDBOX".into(),
            sandbox.sandbox().display().to_string(),
        );
        env.insert("WAVEMAP_AGENT_CONFIG".into(), config.display().to_string());
        env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
        env.insert("AWS_ACCESS_KEY_ID".into(), "testing".into());
        env.insert("AWS_SECRET_ACCESS_KEY".into(), "testing".into());
        env.insert("AWS_REGION".into(), "us-east-2".into());
        let started = Instant::now();
        let run = run_script(&doc, Path::new("/bin/sh"), &env);
        let at = format!("{} (dry run, {:?})", spec.file, started.elapsed());
        assert!(
            !run.stderr.contains("Usage:") && !run.stderr.contains("unexpected argument"),
            "{at}: the agent refused the document's arguments:\n{}",
            run.stderr
        );
        assert!(
            run.stdout.lines().all(|l| marker.is_match(l)),
            "{at}: stdout must be markers only:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.len() < 24_000,
            "{at}: stdout {} bytes",
            run.stdout.len()
        );
        assert!(
            run.stdout
                .contains(&format!("WAVEMAP_AGENT_EXIT_CODE={}\n", run.code)),
            "{at}: exit code marker matches the exit code:\n{}",
            run.stdout
        );
        assert!(started.elapsed() < Duration::from_secs(120), "{at}: hung");
    }
}

// ---------------------------------------------------------------------------
// The documents driving the real agent on the local stack.

/// Image of the running container of `service` in `project`.
async fn running_image(project: &str, service: &str) -> String {
    wavemap_e2e::docker()
        .await
        .inspect_container(
            &format!("{project}-{service}-1"),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("container {project}-{service}-1: {e}"))
        .config
        .and_then(|c| c.image)
        .unwrap_or_default()
}

fn spec(file: &str) -> &'static Spec {
    SPECS
        .iter()
        .find(|s| s.file == file)
        .unwrap_or_else(|| panic!("no spec for {file}"))
}

/// Run a document's script as the SSM Agent would, against the real agent
/// with the test's config and the stack's AWS endpoints.
fn run_document(
    file: &str,
    values: &[(&str, String)],
    td: &wavemap_e2e::TestDir,
    secret: &str,
) -> ScriptRun {
    let doc = load(spec(file));
    let mut env: BTreeMap<String, String> = values
        .iter()
        .map(|(k, v)| (format!("SSM_{k}"), v.clone()))
        .collect();
    for (k, v) in &wavemap_e2e::stack().vars {
        if k.starts_with("AWS_") {
            env.insert(k.clone(), v.clone());
        }
    }
    env.insert(
        "WAVEMAP_AGENT_BIN".into(),
        wavemap_e2e::agent_bin().display().to_string(),
    );
    // The pass-through sandbox: the real one needs systemd (systemd.rs runs
    // a deploy through it).
    let sandbox = Stub::new();
    env.insert(
        "WAVEMAP_AGENT_SANDBOX".into(),
        sandbox.sandbox().display().to_string(),
    );
    env.insert(
        "WAVEMAP_AGENT_CONFIG".into(),
        td.config_path().display().to_string(),
    );
    let run = run_script(&doc, Path::new("/bin/sh"), &env);
    let marker = Regex::new(r"^WAVEMAP_[A-Z0-9_]+=").expect("regex");
    let dump = format!(
        "{file}: exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
        run.code, run.stdout, run.stderr
    );
    assert!(
        run.stdout.lines().all(|l| marker.is_match(l)),
        "stdout is markers only: {dump}"
    );
    assert!(
        run.stdout.len() < 24_000,
        "SSM keeps 24,000 characters of stdout: {dump}"
    );
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "secret leaked: {dump}"
    );
    run
}

fn marker<'a>(run: &'a ScriptRun, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    run.stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// The release cycle CI runs, every step sent as its document: render env,
/// deploy A, read the (absent) receipt, record A, deploy B, roll back to A,
/// then CI's rollback (deploy B, read the receipt, deploy its pair), media
/// report.
#[tokio::test(flavor = "multi_thread")]
async fn documents_drive_a_release_cycle_on_the_local_stack() {
    let s = wavemap_e2e::stack();
    let mut td = wavemap_e2e::TestDir::new("ssmdoc");
    td.set(
        "jobs",
        "media_report_command",
        r#"["/app/fake-backend", "media-report"]"#,
    );

    // The host as bootstrap leaves it: the Compose file and the parameters.
    // record-release runs endpoint smoke, so the frontend publishes its port
    // and the pairs serve the smoke paths (tests/tests/runbook.rs).
    let (project, _port) = crate::runbook::smoke_host(&td, "http://api:8080").await;
    let secret = project.db_password.clone();
    let repo = td.name.replace('_', "-");
    let pair_a = crate::runbook::SmokePair::build(&repo, &s.sha_a, "A").await;
    let pair_b = crate::runbook::SmokePair::build(&repo, &s.sha_b, "B").await;

    let release = |backend: &str, frontend: &str, sha: &str, version: &str| {
        vec![
            ("BackendImage", backend.to_owned()),
            ("FrontendImage", frontend.to_owned()),
            ("SourceSha", sha.to_owned()),
            ("DeploymentVersion", version.to_owned()),
            ("SelectedRef", "develop".to_owned()),
            ("WorkflowName", "deploy-dev.yml".to_owned()),
            ("WorkflowRunId", "12345678901".to_owned()),
            ("WorkflowRunAttempt", "2".to_owned()),
            ("Execute", "true".to_owned()),
        ]
    };
    let (backend_a, frontend_a) = (pair_a.backend.clone(), pair_a.frontend.clone());
    let (backend_b, frontend_b) = (pair_b.backend.clone(), pair_b.frontend.clone());
    let execute = vec![("Execute", "true".to_owned())];

    let run = run_document("wavemap-runtime-env.json", &execute, &td, &secret);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(wavemap_e2e::mode(&td.env_dir().join("backend.env")), 0o600);

    let rel_a = release(&backend_a, &frontend_a, &s.sha_a, "2026.11.25-1");
    let run = run_document("wavemap-runtime-deploy.json", &rel_a, &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        marker(&run, "WAVEMAP_RUNTIME_DEPLOY_RESULT"),
        Some("success")
    );
    assert_eq!(
        running_image(&td.name, "api").await,
        wavemap_e2e::pinned(&backend_a).await
    );
    assert_eq!(
        running_image(&td.name, "frontend").await,
        wavemap_e2e::pinned(&frontend_a).await
    );

    // No receipt yet: CI reads "none" and exit 4, and nothing to roll back to.
    let run = run_document("wavemap-runtime-receipt.json", &[], &td, &secret);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(marker(&run, "WAVEMAP_RUNTIME_RECEIPT_RESULT"), Some("none"));

    let run = run_document("wavemap-runtime-record-release.json", &rel_a, &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let receipt: Value =
        serde_json::from_str(&read_text(&td.receipt_path())).expect("receipt is JSON");
    assert_eq!(receipt["sourceSha"], s.sha_a.as_str());
    assert_eq!(receipt["backendImageUri"], backend_a.as_str());
    assert_eq!(receipt["deploymentVersion"], "2026.11.25-1");
    // CI's metadata, recorded exactly as given.
    assert_eq!(receipt["selectedRef"], "develop");
    assert_eq!(
        receipt["workflowRun"],
        serde_json::json!({"name": "deploy-dev.yml", "runId": "12345678901", "runAttempt": "2"})
    );
    assert_eq!(marker(&run, "WAVEMAP_SMOKE_RESULT"), Some("passed"));
    assert_eq!(
        marker(&run, "WAVEMAP_RUNTIME_RECEIPT_WORKFLOW_RUN_ID"),
        Some("12345678901")
    );

    let rel_b = release(&backend_b, &frontend_b, &s.sha_b, "2026.11.25-2");
    let run = run_document("wavemap-runtime-deploy.json", &rel_b, &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        running_image(&td.name, "api").await,
        wavemap_e2e::pinned(&backend_b).await
    );

    // A dry run through the document changes nothing.
    let dry = vec![("Execute", "false".to_owned())];
    let run = run_document("wavemap-runtime-rollback.json", &dry, &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        marker(&run, "WAVEMAP_RUNTIME_ROLLBACK_RESULT"),
        Some("planned")
    );
    assert_eq!(
        running_image(&td.name, "api").await,
        wavemap_e2e::pinned(&backend_b).await
    );

    let run = run_document("wavemap-runtime-rollback.json", &execute, &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        marker(&run, "WAVEMAP_RUNTIME_ROLLBACK_RESULT"),
        Some("success")
    );
    assert_eq!(
        marker(&run, "WAVEMAP_RUNTIME_ROLLBACK_RESTORED_SHA"),
        Some(s.sha_a.as_str())
    );
    assert_eq!(
        running_image(&td.name, "api").await,
        wavemap_e2e::pinned(&backend_a).await
    );
    assert_eq!(
        running_image(&td.name, "frontend").await,
        wavemap_e2e::pinned(&frontend_a).await
    );

    // The runbook's rollback driven from CI: read the receipt through its
    // document, then send that pair through the deploy document.
    let run = run_document("wavemap-runtime-deploy.json", &rel_b, &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        running_image(&td.name, "api").await,
        wavemap_e2e::pinned(&backend_b).await
    );
    let run = run_document("wavemap-runtime-receipt.json", &[], &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        marker(&run, "WAVEMAP_RUNTIME_RECEIPT_RESULT"),
        Some("found")
    );
    let field = |key: &str| {
        marker(&run, &format!("WAVEMAP_RUNTIME_RECEIPT_{key}"))
            .unwrap_or_else(|| panic!("no WAVEMAP_RUNTIME_RECEIPT_{key}:\n{}", run.stdout))
            .to_owned()
    };
    assert_eq!(field("BACKEND_IMAGE"), receipt["backendImageUri"]);
    assert_eq!(field("FRONTEND_IMAGE"), receipt["frontendImageUri"]);
    assert_eq!(field("SOURCE_SHA"), s.sha_a);
    assert_eq!(field("DEPLOYMENT_VERSION"), "2026.11.25-1");
    assert_eq!(field("RECORDED_AT"), receipt["recordedAt"]);
    assert_eq!(field("WORKFLOW_RUN_ID"), "12345678901");
    let from_receipt = vec![
        ("BackendImage", field("BACKEND_IMAGE")),
        ("FrontendImage", field("FRONTEND_IMAGE")),
        ("SourceSha", field("SOURCE_SHA")),
        ("DeploymentVersion", field("DEPLOYMENT_VERSION")),
        ("SelectedRef", field("SELECTED_REF")),
        ("WorkflowName", "rollback-dev.yml".to_owned()),
        ("WorkflowRunId", "12345678902".to_owned()),
        ("WorkflowRunAttempt", "1".to_owned()),
        ("Execute", "true".to_owned()),
    ];
    let run = run_document("wavemap-runtime-deploy.json", &from_receipt, &td, &secret);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        running_image(&td.name, "api").await,
        wavemap_e2e::pinned(&backend_a).await
    );
    assert_eq!(
        running_image(&td.name, "frontend").await,
        wavemap_e2e::pinned(&frontend_a).await
    );

    let run = run_document(
        "wavemap-media-discrepancy-report.json",
        &execute,
        &td,
        &secret,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        marker(&run, "WAVEMAP_MEDIA_REPORT_TOTAL_DISCREPANCIES").is_some(),
        "{}",
        run.stdout
    );
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every document registers through the SSM API (moto's CreateDocument
/// parses the content and lists the parameters) with the parameters the
/// spec names, in order.
#[tokio::test(flavor = "multi_thread")]
async fn documents_register_through_the_ssm_api() {
    let ssm = wavemap_e2e::ssm_client().await;
    for spec in SPECS {
        let name = wavemap_e2e::unique_name(spec.file.trim_end_matches(".json"));
        let content = read_text(&docs_dir().join(spec.file));
        let created = ssm
            .create_document()
            .name(&name)
            .content(content)
            .document_type(aws_sdk_ssm::types::DocumentType::Command)
            .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: CreateDocument refused it: {e:?}", spec.file));
        let description = created.document_description().expect("description");
        let params: Vec<&str> = description
            .parameters()
            .iter()
            .filter_map(|p| p.name())
            .collect();
        assert_eq!(params, spec.params, "{}", spec.file);
        assert_eq!(description.schema_version(), Some("2.2"), "{}", spec.file);
        ssm.delete_document()
            .name(&name)
            .send()
            .await
            .expect("delete document");
    }
}

/// A number from the agent's effective default config (`config check`).
fn default_seconds(config_text: &str, section: &str, key: &str) -> u64 {
    let mut current = "";
    for line in config_text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name;
        } else if current == section {
            if let Some(value) = line.strip_prefix(&format!("{key} = ")) {
                return value
                    .parse()
                    .unwrap_or_else(|e| panic!("[{section}] {key} = {value}: {e}"));
            }
        }
    }
    panic!("[{section}] {key} is not in the effective config:\n{config_text}")
}

/// SSM's kill margin: the agent's own deadline ends this long before
/// `timeoutSeconds`, so its final markers come first.
const DEADLINE_MARGIN: u64 = 60;

fn timeout_of(spec: &Spec) -> u64 {
    load(spec)["mainSteps"][0]["inputs"]["timeoutSeconds"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("timeoutSeconds")
}

/// The `--deadline` each document must pass: the margin below its timeout.
fn deadline_of(spec: &Spec) -> u64 {
    timeout_of(spec) - DEADLINE_MARGIN
}

/// SSM kills the command at `timeoutSeconds` and keeps nothing the agent
/// would print at exit: every document passes `--deadline` the margin
/// below it (the scripts' argv tests check it reaches the agent), and
/// ssm-documents/README.md states, per document, the sum of the agent's
/// default waits (recomputed here from `config check`) and the deadline.
#[test]
fn documents_pass_a_deadline_below_their_timeout_and_the_readme_states_the_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("agent.toml");
    std::fs::write(&empty, "").expect("write");
    let out = Command::new(wavemap_e2e::agent_bin())
        .arg("--config")
        .arg(&empty)
        .args(["config", "check"])
        .output()
        .expect("run agent");
    assert!(out.status.success());
    let config = String::from_utf8_lossy(&out.stderr).into_owned();
    let d = |section: &str, key: &str| default_seconds(&config, section, key);
    let lock = d("agent", "lock_timeout");
    let aws = d("aws", "operation_timeout");
    let docker = d("docker", "connect_wait");
    let job = d("jobs", "timeout");
    let health = d("runtime", "health_timeout");
    // lock, Docker, SSM render, ECR login, pull, dependency health, health
    let deploy = lock + docker + aws + aws + d("runtime", "pull_timeout") + health + health;
    // three default smoke checks, each tried `attempts` times, 1 s apart
    let smoke = 3 * d("smoke", "attempts") * (d("smoke", "timeout") + 1);
    // ledger: 3 connection tries of connect_timeout + 1 s, 2 s apart
    let ledger = 3 * (d("database", "connect_timeout") + 1) + 2 * 2;
    for (file, sum) in [
        ("wavemap-runtime-deploy.json", deploy),
        ("wavemap-runtime-rollback.json", deploy),
        ("wavemap-runtime-record-release.json", lock + docker + smoke),
        ("wavemap-runtime-env.json", lock + aws),
        // lock, Docker (each image removal is one Engine request)
        ("wavemap-runtime-prune.json", lock + docker),
        // reads one file: no lock, no Docker, no AWS
        ("wavemap-runtime-receipt.json", 0),
        (
            "wavemap-database-status.json",
            docker + d("docker", "request_timeout") + ledger,
        ),
        // lock, left-over job, Docker, advisory lock, job(s)
        ("wavemap-database-migrate.json", lock * 3 + docker + job),
        ("wavemap-database-reset.json", lock * 3 + docker + 3 * job),
        (
            "wavemap-media-discrepancy-report.json",
            lock * 2 + docker + job,
        ),
    ] {
        let spec = spec(file);
        let deadline = deadline_of(spec);
        let script = run_command(&load(spec)).join("\n");
        assert!(
            script.contains(&format!("\"$WAVEMAP_AGENT_BIN\" --deadline {deadline} ")),
            "{file}: the agent gets --deadline {deadline} ({DEADLINE_MARGIN} s below timeoutSeconds)"
        );
        let name = file.trim_end_matches(".json");
        let readme = read_text(&docs_dir().join("README.md"));
        let row = readme
            .lines()
            .filter(|l| l.starts_with(&format!("| `{name}` | ")))
            // the waits table's row: document, waits, sum, deadline
            .find(|l| l.split('|').count() == 6)
            .unwrap_or_else(|| panic!("README.md has no row of waits for {name}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            cells.get(3..5),
            Some(&[sum.to_string().as_str(), deadline.to_string().as_str()][..]),
            "README.md: {name}: the sum of the default waits and the deadline: {row}"
        );
        let first = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` | ")))
            .expect("document row");
        assert!(
            first.ends_with(&format!("| {} | {deadline} |", timeout_of(spec))),
            "README.md: {name}: timeoutSeconds and --deadline: {first}"
        );
    }
}
