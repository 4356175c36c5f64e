//! `runtime-config plan|live` and `runtime-env [--execute]` against moto,
//! the real Compose v2 CLI and dockerd.
//!
//! Every parameter value these tests store contains the canary `cnry`,
//! and no parameter name does: any output containing `cnry` has leaked a
//! value. Each test has its own SSM prefix (TestDir) on the shared moto.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use futures_util::StreamExt;
use wavemap_agent::envfile;
use wavemap_e2e::faultproxy::{Fault, FaultProxy};
use wavemap_e2e::{
    build_image, busybox_binary, docker, mode, ssm_client, toml_str, unique_name, Output, TestDir,
};

const CANARY: &str = "cnry";
const GROUPS: [&str; 3] = ["backend", "frontend", "postgres"];

/// One parameter to store: relative name (`group/VAR`), type, value.
#[derive(Clone)]
struct Param {
    group: &'static str,
    var: String,
    kind: ParameterType,
    value: String,
}

fn param(group: &'static str, var: &str, kind: ParameterType, value: impl Into<String>) -> Param {
    Param {
        group,
        var: var.to_owned(),
        kind,
        value: value.into(),
    }
}

/// A multi-line PEM private key (the body is random-looking base64 with
/// the canary inside, 64 characters a line, as real keys are).
fn pem() -> String {
    let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7cnryPEMVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvuNMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZqgtzJ6GR3eqoYSW9b9UMvkBpZODSctWSNGj3P7jRFDO5VoTwCQAWbFnOjDfH5Ulgp2PKSQnSJP3AJLQNFNe7br1XbrhV//eO+t51mIpGSDCUv3E0DDFcWDTH9cXDTTlRZVEiR2BwpZOOkE/Z0/BVnhZYL71oZV34bKfWjQIt6V/isSMahdsAASACp4ZTGtwiVuNd9tybAgMBAAECggEBAKTmjaS6tkK8BlPXClTQ2vpz/N6uxDeS35mXpqasqskVlaAidgg/sWqpjXDbXr93otIMLlWsM+X0CqMDgSXKejLS2jx4GDjI1ZTXg++0AMJ8sJ74pWzVDOfmCEQ/7wXs3+cbnXhKriO8Z036q92Qc1+N87SI38nkGa0ABH9CN83HmQqt4fB7UdHzuIRe/me2PGhIq5ZBzj6h3BpoPGzEP+x3l9YmK8t/1cN0pqI+dQwYdgfGjackLu/2qH80MCF7IyQaseZUOJyKrCLtSD/Iixv/hzDEUPfOCjFDgTpzf3cwta8+oE4wHCo1iI1/4TlPkwmXx4qSXtmw4aQPz7IDQvECgYEA8KNThCO2gsC2I9PQDM/8Cw0O983WCDY+oi+7JPiNAJwv5DYBqEZB1QYdj06YD16XlC/HAZMsMku1na2TN0driwenQQWzoev3g2S7gRDoS/FCJSI3jJ+kjgtaA7Qmzlgk1TxODN+G1H91HW7t0l7VnL27IWyYo2qRRK3jzxqUiPUCgYEAx0oQs2reBQGMVZnApD1jeq7n4MvNLcPvt8b/eU9iUv6Y4Mj0Suo/AU8lYZXm8ubbqAlwz2VSVunD2tOplHyMUrtCtObAfVDUAhCndKaA9gApgfb3xw1IKbuQ1u4IF1FJl3VtumfQn//LiH1B3rXhcdyo3/vIttEk48RakUKClU8CgYEAzV7W3COOlDDcQd935DdtKBFRAPRPAlspQUnzMi5eSHMD/ISLDY5IiQHbIH83D4bvXq0X7qQoSBSNP7Dvv3HYuqMhf0DaegrlBuJllFVVq9qPVRnKxt1Il2HgxOBvbhOT+9in1BzA+YJ99UzC85O0Qz06A+CmtHEy4aZ2kj5hHjECgYEAmNS4+A8Fkss8Js1RieK2LniBxMgmYml3pfVLKGnzmng7H2+cwPLhPIzIuwytXywh2bzbsYEfYx3EoEVgMEpPhoarQnYPukrJO4gwE2o5Te6T5mJSZGlQJQj9q4ZB2Dfzet6INsK0oG8XVGXSpQvQh3RUYekCZQkBBFcpqWpbIEsCgYAnM3DQf3FJoSnXaMhrVBIovic5l0xFkEHskAjFTevO86Fsz1C2aSeRKSqGFoOQ0tmJzBEs1R6KqnHInicDTQrKhArgLXX4v3CddjfTRJkFWDbE/CkvKZNOrcf1nhaGCPspRJj2KUkj1Fhl9Cncdn/RsYEONbwQSjIfMPkvxF+8HQ==";
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Every awkward value the env file format promises to carry.
fn awkward() -> Vec<Param> {
    use ParameterType::{SecureString as Sec, String as Str};
    let max = {
        let unit = "=#$'\"\\ x€";
        let mut v = String::from("cnry-8kb ");
        while v.len() + unit.len() <= 8192 {
            v.push_str(unit);
        }
        while v.len() < 8192 {
            v.push('y');
        }
        v
    };
    vec![
        param(
            "backend",
            "DATABASE_URL",
            Sec,
            "postgres://app:p@ss#w0rd$cnry01@db:5432/app?sslmode=disable",
        ),
        param("backend", "TLS_KEY", Sec, pem()),
        param("backend", "UNICODE", Str, "héllo wörld — 日本語 🎉 cnry03"),
        param("backend", "EQUALS", Sec, "a=b==c=cnry04="),
        param(
            "backend",
            "HASH",
            Sec,
            "#cnry05 pass#word # not a comment #",
        ),
        param(
            "backend",
            "DOLLAR",
            Sec,
            "$HOME ${USER} $$ $(id) $1 cnry06 end$",
        ),
        param("backend", "SINGLE_QUOTE", Sec, "it's cnry07"),
        param("backend", "DOUBLE_QUOTE", Sec, "say \"cnry08\""),
        param("backend", "BOTH_QUOTES", Sec, "'\"mixed\"' \\' \\\" cnry09"),
        param("backend", "QUOTED_WHOLE", Str, "'cnry10'"),
        param("backend", "BACKSLASH", Sec, "C:\\new\\table\\\\cnry11"),
        param("backend", "TRAILING_BACKSLASH", Sec, "cnry12\\"),
        param(
            "backend",
            "ESCAPE_LOOKALIKES",
            Sec,
            "\\n \\r \\t \\$ \\\" \\0 \\x41 cnry13",
        ),
        param("backend", "SPACES", Sec, "  padded cnry14  "),
        param("backend", "ONLY_SPACE", Str, " "),
        param("backend", "TABS", Sec, "\tcnry15\t"),
        param("backend", "CRLF", Sec, "line1\r\nline2 cnry16\r\n"),
        param("backend", "EXPORT_LIKE", Sec, "export X=cnry17"),
        param(
            "backend",
            "exporter_URL",
            Str,
            "https://exporter.example/?a=1&b=cnry18",
        ),
        param("backend", "MAX_8KB", Sec, max),
        param("backend", "YAML_LIKE", Str, "key: value cnry20"),
        param(
            "backend",
            "JSON",
            Sec,
            "{\"a\": [1, \"cnry21\"], \"b\": null}",
        ),
        param("frontend", "PUBLIC_URL", Str, "https://dev.example/cnry22"),
        param(
            "frontend",
            "MULTILINE",
            Str,
            "first\nsecond cnry23\n\nfourth",
        ),
        param("postgres", "POSTGRES_PASSWORD", Sec, "p'w\"d$cnry24\\"),
        param("postgres", "POSTGRES_USER", Str, "wavemap_cnry25"),
    ]
}

/// `n` filler parameters per group, undeclared, alternating types.
fn filler(per_group: usize) -> Vec<Param> {
    let mut out = Vec::new();
    for group in GROUPS {
        for i in 0..per_group {
            let kind = if i % 2 == 0 {
                ParameterType::SecureString
            } else {
                ParameterType::String
            };
            out.push(param(
                group,
                &format!("FILL_{i:03}"),
                kind,
                format!("fill {group} cnry-{i} ' \" $ # = \\ value"),
            ));
        }
    }
    out
}

/// The contract the tests declare: the awkward parameters that matter,
/// plus one optional parameter SSM never has.
fn contract_toml() -> String {
    let declared = [
        ("backend/DATABASE_URL", "SecureString", true),
        ("backend/TLS_KEY", "SecureString", true),
        ("backend/UNICODE", "String", true),
        ("frontend/PUBLIC_URL", "String", true),
        ("postgres/POSTGRES_PASSWORD", "SecureString", true),
        ("postgres/POSTGRES_USER", "String", true),
        ("backend/SENTRY_DSN", "SecureString", false),
    ];
    let items: Vec<String> = declared
        .iter()
        .map(|(name, kind, required)| {
            format!(
                "{{ name = {}, type = {}, required = {required} }}",
                toml_str(name),
                toml_str(kind)
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

struct Fixture {
    td: TestDir,
    ssm: aws_sdk_ssm::Client,
    params: Vec<Param>,
}

impl Fixture {
    async fn new(prefix: &str, params: Vec<Param>) -> Fixture {
        let mut td = TestDir::new(prefix);
        td.set(
            "runtime",
            "groups",
            format!("[{}]", GROUPS.map(toml_str).join(", ")),
        );
        td.set("runtime", "parameters", contract_toml());
        // moto's DescribeParameters and GetParametersByPath iterate one
        // dict that concurrent PutParameter calls (other tests) resize: a
        // transient HTTP 500. Real SSM has no such race; give the standard
        // retries room so these tests do not inherit moto's.
        td.set("aws", "max_attempts", "10");
        td.set("aws", "operation_timeout", "90");
        let fixture = Fixture {
            td,
            ssm: ssm_client().await,
            params: Vec::new(),
        };
        let mut fixture = fixture;
        fixture.put_all(params).await;
        fixture
    }

    fn name(&self, group: &str, var: &str) -> String {
        format!("{}{group}/{var}", self.td.parameter_prefix())
    }

    async fn put_all(&mut self, params: Vec<Param>) {
        let ssm = &self.ssm;
        let prefix = self.td.parameter_prefix();
        futures_util::stream::iter(params.iter().cloned())
            .for_each_concurrent(8, |p| {
                let name = format!("{prefix}{}/{}", p.group, p.var);
                async move {
                    let tier = if p.value.len() > 4096 {
                        ParameterTier::Advanced
                    } else {
                        ParameterTier::Standard
                    };
                    ssm.put_parameter()
                        .name(&name)
                        .value(&p.value)
                        .r#type(p.kind.clone())
                        .tier(tier)
                        .overwrite(true)
                        .send()
                        .await
                        .unwrap_or_else(|e| {
                            panic!("put {name}: {}", aws_sdk_ssm::error::DisplayErrorContext(e))
                        });
                }
            })
            .await;
        for p in params {
            self.params
                .retain(|q| !(q.group == p.group && q.var == p.var));
            self.params.push(p);
        }
    }

    async fn delete(&mut self, group: &str, var: &str) {
        let name = self.name(group, var);
        self.ssm
            .delete_parameter()
            .name(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        self.params.retain(|q| !(q.group == group && q.var == var));
    }

    /// Delete every parameter under this test's prefix, so the shared
    /// moto stays small (its list operations scan every parameter).
    async fn cleanup(self) {
        let prefix = self.td.parameter_prefix();
        let mut names = Vec::new();
        let mut pages = self
            .ssm
            .get_parameters_by_path()
            .path(prefix.trim_end_matches('/'))
            .recursive(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else { break };
            names.extend(
                page.parameters()
                    .iter()
                    .filter_map(|p| p.name().map(str::to_owned)),
            );
        }
        for chunk in names.chunks(10) {
            let _ = self
                .ssm
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await;
        }
    }

    /// What each env file must parse to.
    fn expected(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = GROUPS
            .iter()
            .map(|g| (g.to_string(), BTreeMap::new()))
            .collect();
        for p in &self.params {
            out.entry(p.group.to_owned())
                .or_default()
                .insert(p.var.clone(), p.value.clone());
        }
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.td.run(args);
        assert_no_canary(&out, &args.join(" "));
        out
    }

    fn env_file(&self, group: &str) -> PathBuf {
        self.td.env_dir().join(format!("{group}.env"))
    }

    fn parsed(&self, group: &str) -> BTreeMap<String, String> {
        let path = self.env_file(group);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        envfile::parse_bytes(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    }

    /// Bytes, mtime and inode of every env file, to prove "untouched".
    fn snapshot(&self) -> BTreeMap<String, (Vec<u8>, SystemTime, u64)> {
        GROUPS
            .iter()
            .map(|g| {
                let path = self.env_file(g);
                let meta = std::fs::metadata(&path)
                    .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
                let bytes = std::fs::read(&path).expect("read env file");
                (
                    g.to_string(),
                    (bytes, meta.modified().expect("mtime"), meta.ino()),
                )
            })
            .collect()
    }
}

fn assert_no_canary(out: &Output, what: &str) {
    assert!(
        !out.stdout.contains(CANARY) && !out.stderr.contains(CANARY),
        "`{what}` printed a parameter value\n{}",
        out.dump()
    );
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(out.code, code, "`{what}`\n{}", out.dump());
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_300_parameters_exactly_and_a_second_render_rewrites_nothing() {
    let mut params = awkward();
    params.extend(filler(95));
    let total = params.len();
    assert!(total >= 300, "{total}");
    let mut f = Fixture::new("renv-300", params).await;
    // Through a recording proxy: GetParametersByPath pages hold at most 10,
    // and the render must follow every NextToken.
    let proxy = FaultProxy::start(&wavemap_e2e::stack().ssm_endpoint, Fault::Forward);
    f.td.set("aws", "ssm_endpoint", toml_str(&proxy.url));

    let plan = f.run(&["runtime-env"]);
    assert_exit(&plan, 0, "runtime-env");
    assert_eq!(plan.marker("WAVEMAP_RUNTIME_ENV_RESULT"), Some("planned"));
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND"),
        Some("would-create")
    );
    assert!(!f.td.env_dir().exists(), "a dry run created the env folder");

    let render = f.run(&["runtime-env", "--execute"]);
    assert_exit(&render, 0, "runtime-env --execute");
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_RESULT"),
        Some("rendered")
    );
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_PARAMETERS"),
        Some(total.to_string().as_str())
    );
    assert_eq!(render.marker("WAVEMAP_RUNTIME_ENV_FILES"), Some("3"));
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_CHANGED_FILES"),
        Some("3")
    );
    // Declared and present: 6 of the contract's 7 (SENTRY_DSN is optional and absent).
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_UNDECLARED"),
        Some((total - 6).to_string().as_str())
    );
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_MISSING_OPTIONAL"),
        Some("1")
    );
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND"),
        Some("created")
    );
    let pages = proxy
        .targets()
        .iter()
        .filter(|t| *t == "AmazonSSM.GetParametersByPath")
        .count();
    // Two renders so far (dry run and this one), each reading every page.
    assert!(
        pages >= 2 * total.div_ceil(10),
        "{pages} pages for {total} parameters"
    );

    let expected = f.expected();
    assert_eq!(mode(&f.td.env_dir()), 0o700);
    for group in GROUPS {
        assert_eq!(mode(&f.env_file(group)), 0o600, "{group}.env");
        let parsed = f.parsed(group);
        assert_eq!(parsed.len(), expected[group].len(), "{group}.env");
        for (key, value) in &expected[group] {
            assert!(
                parsed.get(key) == Some(value),
                "{group}.env: {key} does not round-trip"
            );
        }
    }
    let names: Vec<String> = std::fs::read_dir(f.td.env_dir())
        .expect("list env dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "only the three env files, no temp files: {names:?}"
    );

    let before = f.snapshot();
    let again = f.run(&["runtime-env", "--execute"]);
    assert_exit(&again, 0, "second runtime-env --execute");
    assert_eq!(
        again.marker("WAVEMAP_RUNTIME_ENV_RESULT"),
        Some("unchanged")
    );
    assert_eq!(again.marker("WAVEMAP_RUNTIME_ENV_CHANGED_FILES"), Some("0"));
    for group in ["BACKEND", "FRONTEND", "POSTGRES"] {
        assert_eq!(
            again.marker(&format!("WAVEMAP_RUNTIME_ENV_FILE_{group}")),
            Some("unchanged")
        );
    }
    assert!(
        again.stderr.contains("nothing was rewritten"),
        "{}",
        again.dump()
    );
    assert_eq!(
        f.snapshot(),
        before,
        "an unchanged render touched a file (bytes, mtime or inode)"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_names_added_changed_and_removed_keys_and_writes_nothing() {
    let mut params = awkward();
    params.extend(filler(3));
    let mut f = Fixture::new("renv-diff", params).await;
    assert_exit(&f.run(&["runtime-env", "--execute"]), 0, "first render");

    f.put_all(vec![
        param(
            "backend",
            "FILL_000",
            ParameterType::SecureString,
            "changed cnry-x",
        ),
        param("backend", "NEW_KEY", ParameterType::String, "new cnry-y"),
    ])
    .await;
    f.delete("backend", "FILL_001").await;
    let before = f.snapshot();

    let plan = f.run(&["runtime-env"]);
    assert_exit(&plan, 0, "runtime-env (dry run)");
    assert_eq!(plan.marker("WAVEMAP_RUNTIME_ENV_RESULT"), Some("planned"));
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND"),
        Some("would-update")
    );
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND_ADDED"),
        Some("NEW_KEY")
    );
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND_CHANGED"),
        Some("FILL_000")
    );
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND_REMOVED"),
        Some("FILL_001")
    );
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_ENV_FILE_FRONTEND"),
        Some("unchanged")
    );
    assert_eq!(plan.marker("WAVEMAP_RUNTIME_ENV_CHANGED_FILES"), Some("1"));
    assert_eq!(f.snapshot(), before, "a dry run touched a file");

    let render = f.run(&["runtime-env", "--execute"]);
    assert_exit(&render, 0, "runtime-env --execute");
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_FILE_BACKEND"),
        Some("updated")
    );
    assert_eq!(
        render.marker("WAVEMAP_RUNTIME_ENV_CHANGED_FILE_NAMES"),
        Some("backend.env")
    );
    assert_eq!(f.parsed("backend"), f.expected()["backend"]);
    let after = f.snapshot();
    assert_eq!(
        after["frontend"], before["frontend"],
        "frontend.env was rewritten"
    );
    assert_eq!(
        after["postgres"], before["postgres"],
        "postgres.env was rewritten"
    );
    f.cleanup().await;
}

/// The real Compose v2 parser and a real container both see exactly what
/// the agent's reader sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_v2_and_a_container_see_the_rendered_values_byte_for_byte() {
    let f = Fixture::new("renv-parity", awkward()).await;
    assert_exit(
        &f.run(&["runtime-env", "--execute"]),
        0,
        "runtime-env --execute",
    );
    let expected = f.expected();
    for group in GROUPS {
        assert_eq!(
            f.parsed(group),
            expected[group],
            "agent reader, {group}.env"
        );
    }

    // Compose v2: one service per env file, resolved by `config`.
    let compose_file = f.td.path().join("parity-compose.yaml");
    let mut yaml = String::from("services:\n");
    for group in GROUPS {
        yaml.push_str(&format!(
            "  {group}:\n    image: busybox\n    env_file:\n      - {}\n",
            toml_str(&f.env_file(group).display().to_string())
        ));
    }
    std::fs::write(&compose_file, yaml).expect("write compose file");
    let out = std::process::Command::new("docker")
        .args(["compose", "-p", &f.td.name, "-f"])
        .arg(&compose_file)
        .args(["config", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .output()
        .expect(
            "run docker compose (is the Compose v2 plugin installed? scripts/stack/up does it)",
        );
    assert!(
        out.status.success(),
        "docker compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("compose config is JSON");
    for group in GROUPS {
        let env = config["services"][group]["environment"]
            .as_object()
            .unwrap_or_else(|| panic!("no environment for {group} in compose config"));
        let mut seen = BTreeMap::new();
        for (key, value) in env {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("Compose resolved {group}/{key} to a non-string"));
            // `config` prints a Compose file, so it writes every `$` of a
            // value as `$$` (or a later load would interpolate it). Undo
            // exactly that: every `$` in the output comes in pairs.
            seen.insert(key.clone(), value.replace("$$", "$"));
        }
        assert_eq!(
            seen.len(),
            expected[group].len(),
            "Compose v2, {group}.env: key count"
        );
        for (key, value) in &expected[group] {
            assert!(
                seen.get(key) == Some(value),
                "Compose v2 reads {group}.env {key} differently"
            );
        }
    }

    // dockerd: a container created with the agent's parsed values (as the
    // agent does through the Engine API) sees identical bytes.
    let docker = docker().await;
    let tag = format!("{}:local", unique_name("renv-busybox"));
    build_image(
        &tag,
        "FROM scratch\nCOPY busybox /bin/busybox\n",
        &[("busybox", busybox_binary())],
    )
    .await;
    let out_dir = tempfile::tempdir().expect("out dir");
    let env: Vec<String> = f
        .parsed("backend")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let body = bollard::models::ContainerCreateBody {
        image: Some(tag.clone()),
        cmd: Some(vec![
            "/bin/busybox".into(),
            "sh".into(),
            "-c".into(),
            "/bin/busybox cat /proc/1/environ > /out/environ".into(),
        ]),
        env: Some(env),
        host_config: Some(bollard::models::HostConfig {
            binds: Some(vec![format!("{}:/out", out_dir.path().display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let name = unique_name("renv-env");
    let created = docker
        .create_container(
            Some(
                bollard::query_parameters::CreateContainerOptionsBuilder::default()
                    .name(&name)
                    .build(),
            ),
            body,
        )
        .await
        .expect("create container");
    docker
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start container");
    let mut wait = docker.wait_container(
        &created.id,
        None::<bollard::query_parameters::WaitContainerOptions>,
    );
    while wait.next().await.is_some() {}
    let environ =
        std::fs::read(out_dir.path().join("environ")).expect("the container wrote its environ");
    let _ = docker
        .remove_container(
            &created.id,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await;
    let _ = docker
        .remove_image(
            &tag,
            Some(
                bollard::query_parameters::RemoveImageOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
            None,
        )
        .await;
    let mut seen = BTreeMap::new();
    for entry in environ.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let text = String::from_utf8(entry.to_vec()).expect("environ is UTF-8");
        let (key, value) = text.split_once('=').expect("KEY=VALUE");
        seen.insert(key.to_owned(), value.to_owned());
    }
    for (key, value) in &expected["backend"] {
        assert!(
            seen.get(key) == Some(value),
            "the container sees {key} differently"
        );
    }
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_parameter_exits_3_naming_it_and_leaves_files_untouched() {
    let mut f = Fixture::new("renv-missing", awkward()).await;
    assert_exit(&f.run(&["runtime-env", "--execute"]), 0, "first render");
    let before = f.snapshot();
    f.delete("backend", "DATABASE_URL").await;
    f.put_all(vec![param(
        "backend",
        "NEW_KEY",
        ParameterType::String,
        "new cnry-z",
    )])
    .await;

    for args in [&["runtime-env", "--execute"][..], &["runtime-env"][..]] {
        let out = f.run(args);
        assert_exit(&out, 3, &args.join(" "));
        assert_eq!(out.marker("WAVEMAP_RUNTIME_ENV_RESULT"), Some("blocked"));
        assert_eq!(out.marker("WAVEMAP_AGENT_ERROR"), Some("gate-blocked"));
        let name = f.name("backend", "DATABASE_URL");
        assert!(
            out.stderr.contains(&format!("required parameter {name}")),
            "the message does not name the parameter\n{}",
            out.dump()
        );
    }
    assert_eq!(f.snapshot(), before, "a blocked render touched a file");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_exits_3_naming_it_and_leaves_files_untouched() {
    let mut f = Fixture::new("renv-type", awkward()).await;
    assert_exit(&f.run(&["runtime-env", "--execute"]), 0, "first render");
    let before = f.snapshot();
    // A secret stored as a plain String breaks the contract.
    f.delete("postgres", "POSTGRES_PASSWORD").await;
    f.put_all(vec![param(
        "postgres",
        "POSTGRES_PASSWORD",
        ParameterType::String,
        "plain cnry-w",
    )])
    .await;

    let out = f.run(&["runtime-env", "--execute"]);
    assert_exit(&out, 3, "runtime-env --execute");
    let name = f.name("postgres", "POSTGRES_PASSWORD");
    assert!(
        out.stderr.contains(&format!(
            "{name} is String but the contract says SecureString"
        )),
        "{}",
        out.dump()
    );
    assert_eq!(f.snapshot(), before, "a blocked render touched a file");

    let live = f.run(&["runtime-config", "live"]);
    assert_exit(&live, 3, "runtime-config live");
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_RESULT"),
        Some("blocked")
    );
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_WRONG_TYPE_COUNT"),
        Some("1")
    );
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_WRONG_TYPE"),
        Some(name.as_str())
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_cannot_be_env_vars_or_files_exit_3_naming_them() {
    let mut f = Fixture::new("renv-names", awkward()).await;
    assert_exit(&f.run(&["runtime-env", "--execute"]), 0, "first render");
    let before = f.snapshot();
    f.put_all(vec![
        param("backend", "BAD-NAME", ParameterType::String, "x cnry-a"),
        param("backend", "nested/DEEP", ParameterType::String, "x cnry-b"),
    ])
    .await;
    let out = f.run(&["runtime-env", "--execute"]);
    assert_exit(&out, 3, "runtime-env --execute");
    for var in ["BAD-NAME", "nested/DEEP"] {
        let name = f.name("backend", var);
        assert!(
            out.stderr.contains(&name),
            "{name} not named\n{}",
            out.dump()
        );
    }
    assert_eq!(f.snapshot(), before, "a blocked render touched a file");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_config_plan_makes_no_call_and_live_only_describes() {
    let mut params = awkward();
    params.extend(filler(2));
    let mut f = Fixture::new("renv-live", params).await;
    let proxy = FaultProxy::start(&wavemap_e2e::stack().ssm_endpoint, Fault::Forward);
    f.td.set("aws", "ssm_endpoint", toml_str(&proxy.url));

    let plan = f.run(&["runtime-config", "plan"]);
    assert_exit(&plan, 0, "runtime-config plan");
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_CONFIG_REQUIRED_COUNT"),
        Some("6")
    );
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_CONFIG_OPTIONAL_COUNT"),
        Some("1")
    );
    assert_eq!(
        plan.marker("WAVEMAP_RUNTIME_CONFIG_RESULT"),
        Some("planned")
    );
    assert!(
        plan.stderr.contains("backend.env") && plan.stderr.contains("DATABASE_URL"),
        "{}",
        plan.dump()
    );
    assert_eq!(proxy.targets(), Vec::<String>::new(), "plan called SSM");

    let live = f.run(&["runtime-config", "live"]);
    assert_exit(&live, 0, "runtime-config live");
    assert_eq!(live.marker("WAVEMAP_RUNTIME_CONFIG_RESULT"), Some("ready"));
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_PRESENT_COUNT"),
        Some("6")
    );
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_MISSING_COUNT"),
        Some("1")
    );
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_MISSING_REQUIRED_COUNT"),
        Some("0")
    );
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_WRONG_TYPE_COUNT"),
        Some("0")
    );
    let undeclared = f.params.len() - 6;
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_UNDECLARED_COUNT"),
        Some(undeclared.to_string().as_str())
    );
    let targets = proxy.targets();
    assert!(!targets.is_empty(), "live made no call");
    assert!(
        targets.iter().all(|t| t == "AmazonSSM.DescribeParameters"),
        "live made other calls than DescribeParameters: {targets:?}"
    );

    f.delete("backend", "TLS_KEY").await;
    let blocked = f.run(&["runtime-config", "live"]);
    assert_exit(
        &blocked,
        3,
        "runtime-config live with a required parameter missing",
    );
    assert_eq!(
        blocked.marker("WAVEMAP_RUNTIME_CONFIG_RESULT"),
        Some("blocked")
    );
    assert_eq!(
        blocked.marker("WAVEMAP_RUNTIME_CONFIG_MISSING_REQUIRED_COUNT"),
        Some("1")
    );
    let name = f.name("backend", "TLS_KEY");
    assert!(
        blocked
            .marker("WAVEMAP_RUNTIME_CONFIG_MISSING")
            .is_some_and(|m| m.contains(&name)),
        "{}",
        blocked.dump()
    );
    f.cleanup().await;
}

/// Throttling is retried with backoff; throttling that outlasts the
/// retries is exit 69 naming the error code; a refusal is exit 1 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_exit_69_when_it_lasts_and_access_denied_is_exit_1() {
    let mut f = Fixture::new("renv-throttle", awkward()).await;
    f.td.set("aws", "max_attempts", "4");
    let proxy = FaultProxy::start(&wavemap_e2e::stack().ssm_endpoint, Fault::ThrottleFirst(2));
    f.td.set("aws", "ssm_endpoint", toml_str(&proxy.url));
    let out = f.run(&["runtime-env", "--execute"]);
    assert_exit(&out, 0, "runtime-env --execute with two throttled requests");
    assert_eq!(out.marker("WAVEMAP_RUNTIME_ENV_RESULT"), Some("rendered"));
    assert!(proxy.targets().len() >= 3, "{:?}", proxy.targets());

    let always = FaultProxy::start(&wavemap_e2e::stack().ssm_endpoint, Fault::Throttle);
    f.td.set("aws", "max_attempts", "3");
    f.td.set("aws", "ssm_endpoint", toml_str(&always.url));
    let out = f.run(&["runtime-env", "--execute"]);
    assert_exit(&out, 69, "runtime-env --execute, always throttled");
    assert!(out.stderr.contains("ThrottlingException"), "{}", out.dump());
    assert_eq!(
        always.targets().len(),
        3,
        "max_attempts = 3: {:?}",
        always.targets()
    );
    f.cleanup().await;
}

fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_unreachable_or_stalled_exits_69_within_the_configured_timeouts() {
    let mut f = Fixture::new("renv-down", awkward()).await;
    assert_exit(&f.run(&["runtime-env", "--execute"]), 0, "first render");
    let before = f.snapshot();
    f.td.set("aws", "max_attempts", "3");
    f.td.set("aws", "operation_timeout", "6");
    f.td.set("aws", "attempt_timeout", "2");

    // Nothing listens: connection refused on every attempt.
    f.td.set("aws", "ssm_endpoint", toml_str(&closed_port_url()));
    for args in [
        &["runtime-env", "--execute"][..],
        &["runtime-config", "live"][..],
    ] {
        let started = Instant::now();
        let out = f.run(args);
        let took = started.elapsed();
        assert_exit(&out, 69, &args.join(" "));
        assert_eq!(
            out.marker("WAVEMAP_AGENT_ERROR"),
            Some("dependency-unavailable")
        );
        assert!(
            out.stderr
                .contains("SSM Parameter Store stayed unavailable"),
            "{}",
            out.dump()
        );
        // Bounded by aws.operation_timeout (6 s) plus start-up, not hung.
        assert!(took < Duration::from_secs(30), "took {took:?}");
    }

    // Something listens and never answers: the attempt timeout ends it.
    let stalled = TcpListener::bind("127.0.0.1:0").expect("bind stalled");
    let stalled_url = format!("http://{}", stalled.local_addr().expect("addr"));
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in stalled.incoming().take(16) {
            held.push(conn);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    f.td.set("aws", "ssm_endpoint", toml_str(&stalled_url));
    let started = Instant::now();
    let out = f.run(&["runtime-env", "--execute"]);
    let took = started.elapsed();
    assert_exit(&out, 69, "runtime-env --execute against a stalled endpoint");
    assert!(out.stderr.contains("timeout"), "{}", out.dump());
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(f.snapshot(), before, "an SSM outage touched a file");
    f.cleanup().await;
}

/// Without `aws.ssm_endpoint`, the SDK's own `AWS_ENDPOINT_URL_SSM` (set by
/// the harness to moto) is used; with it, the config wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_endpoint_url_ssm_works_and_the_config_key_wins() {
    let f = Fixture::new("renv-endpoint", awkward()).await;
    let config = std::fs::read_to_string(f.td.config_path()).expect("read config");
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("ssm_endpoint"))
        .map(|l| format!("{l}\n"))
        .collect();
    f.td.write_config(&without);
    let live = f.run(&["runtime-config", "live"]);
    assert_exit(&live, 0, "runtime-config live via AWS_ENDPOINT_URL_SSM");
    assert_eq!(
        live.marker("WAVEMAP_RUNTIME_CONFIG_PRESENT_COUNT"),
        Some("6")
    );

    let with_closed = without.replace(
        "[aws]\n",
        &format!("[aws]\nssm_endpoint = {}\n", toml_str(&closed_port_url())),
    );
    f.td.write_config(&with_closed);
    let out = f.run(&["runtime-config", "live"]);
    assert_exit(
        &out,
        69,
        "runtime-config live with aws.ssm_endpoint at a closed port",
    );
    f.cleanup().await;
}

/// Every command and failure path, scanned for any parameter value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_value_appears_in_any_output_or_the_journal() {
    let mut f = Fixture::new("renv-scan", awkward()).await;
    let mut runs: Vec<(Vec<&str>, i32)> = vec![
        (vec!["runtime-config", "plan"], 0),
        (vec!["runtime-config", "live"], 0),
        (vec!["--json", "runtime-config", "live"], 0),
        (vec!["runtime-env"], 0),
        (vec!["-v", "runtime-env", "--execute"], 0),
        (vec!["--json", "runtime-env", "--execute"], 0),
    ];
    let check = |f: &Fixture, runs: &mut Vec<(Vec<&str>, i32)>| {
        for (args, code) in runs.drain(..) {
            let out = f.run(&args); // asserts no canary
            assert_exit(&out, code, &args.join(" "));
        }
    };
    check(&f, &mut runs);

    // Each failure path.
    f.put_all(vec![param(
        "backend",
        "BAD-NAME",
        ParameterType::SecureString,
        "bad cnry-n",
    )])
    .await;
    runs.push((vec!["-v", "runtime-env", "--execute"], 3));
    check(&f, &mut runs);
    f.delete("backend", "BAD-NAME").await;
    f.delete("postgres", "POSTGRES_PASSWORD").await;
    f.put_all(vec![param(
        "postgres",
        "POSTGRES_PASSWORD",
        ParameterType::String,
        "plain cnry-p",
    )])
    .await;
    runs.push((vec!["-v", "runtime-env", "--execute"], 3));
    runs.push((vec!["--json", "runtime-config", "live"], 3));
    check(&f, &mut runs);
    f.delete("backend", "DATABASE_URL").await;
    runs.push((vec!["-v", "runtime-env"], 3));
    runs.push((vec!["runtime-config", "live"], 3));
    check(&f, &mut runs);

    let journal = std::fs::read_to_string(f.td.journal_path()).unwrap_or_default();
    assert!(!journal.is_empty(), "the mutating runs left no journal");
    assert!(
        !journal.contains(CANARY),
        "the operation journal holds a parameter value"
    );
    f.cleanup().await;
}
