//! The Compose corpus (`tests/fixtures/compose-corpus/`) against the pinned
//! Compose v2 CLI, live.
//!
//! Each file follows the shape of a real public project's compose file
//! (its header names the project). For every file:
//! - Compose v2 loads it or refuses it (`docker compose config`);
//! - `wavemap-agent compose config --json` loads it or refuses it, and a
//!   refusal names a key;
//! - for a file both load, every service's config-hash is the one Compose
//!   v2 would label the container with. Compose's normalized service JSON
//!   comes from `docker compose config --format json`; the label hash is
//!   sha256 of that JSON with the fields Compose clears before hashing
//!   removed (`build`, `pull_policy`, `scale`, `depends_on`, `profiles`,
//!   `deploy.replicas`) and, as `docker compose up` does, `env_file` merged
//!   into `environment` (it already is) and dropped. For services without
//!   `env_file` the hash must also equal `docker compose config --hash`.
//!
//! The agent runs twice per file under two different process environments
//! (one sets variables the files read); its hashes must not change, since
//! interpolation reads only the `.env` beside the file and the agent's own
//! variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};
use wavemap_agent::compose::hash::go_marshal;
use wavemap_e2e::{repo_root, run_agent, stack, unique_name};

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/fixtures/compose-corpus")
}

fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("read the corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Compose v2 with a bare process environment (PATH and HOME only), so
/// only the `.env` beside the file feeds interpolation, as for the agent.
fn compose(project: &str, file: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(&stack().compose_v2)
        .current_dir(corpus_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .arg("-p")
        .arg(project)
        .arg("-f")
        .arg(file)
        .args(args)
        .output()
        .expect("run docker compose v2");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `docker compose config` prints every `$` as `$$`; the hash sees `$`.
fn unescape(value: &mut Value) {
    match value {
        Value::String(s) => *s = s.replace("$$", "$"),
        Value::Array(items) => items.iter_mut().for_each(unescape),
        Value::Object(map) => map.values_mut().for_each(unescape),
        _ => {}
    }
}

/// The label hash `docker compose up` writes for `service` (see the
/// module doc), from Compose's own normalized JSON.
fn compose_label_hash(service: &Value) -> String {
    let mut service = service.clone();
    if let Value::Object(map) = &mut service {
        for key in [
            "build",
            "pull_policy",
            "scale",
            "depends_on",
            "profiles",
            "env_file",
        ] {
            map.shift_remove(key);
        }
        if let Some(Value::Object(deploy)) = map.get_mut("deploy") {
            deploy.shift_remove("replicas");
        }
    }
    unescape(&mut service);
    hex::encode(Sha256::digest(go_marshal(&service).as_bytes()))
}

/// What the agent reports for one file.
#[derive(Debug, PartialEq)]
struct AgentView {
    hashes: BTreeMap<String, String>,
    /// Services that read an `env_file`.
    with_env_files: Vec<String>,
}

/// The agent's view of `file`, or its exit code and stderr when it refuses it.
fn agent_hashes(
    file: &Path,
    config: &Path,
    env: &[(&str, &str)],
) -> Result<AgentView, (i32, String)> {
    let out = run_agent(
        [
            "--json",
            "compose",
            "config",
            "--file",
            &file.display().to_string(),
        ],
        Some(config),
        env,
    );
    if out.code != 0 {
        return Err((out.code, out.stderr));
    }
    // Environment values never reach stdout (these are values the corpus
    // passes in `environment`, from `.env`, env files and the file itself).
    for value in [
        "corpus-db-pass",
        "corpus-idp-secret",
        "corpus-pg-pass",
        "corpus-flow-pass",
    ] {
        assert!(
            !out.stdout.contains(value) && !out.stderr.contains(value),
            "{}: an environment value was printed",
            file.display()
        );
    }
    let json: Value = serde_json::from_str(&out.stdout).expect("agent --json output");
    let hashes = json["data"]["hashes"]
        .as_object()
        .expect("hashes in the data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let with_env_files = json["data"]["env_files"]
        .as_object()
        .expect("env_files in the data")
        .keys()
        .cloned()
        .collect();
    Ok(AgentView {
        hashes,
        with_env_files,
    })
}

#[test]
fn the_corpus_loads_like_compose_v2_with_equal_hashes() {
    let files = corpus_files();
    assert!(files.len() >= 30, "only {} corpus files", files.len());
    for file in &files {
        let head = std::fs::read_to_string(file).expect("read corpus file");
        assert!(
            head.starts_with("# Shape: "),
            "{} must start with a `# Shape:` comment naming the project it follows",
            file.display()
        );
    }

    let project = unique_name("corpus").replace('-', "_");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\nrun_dir = {:?}\n\n[runtime]\nproject_name = {project:?}\ncompose_file = {:?}\nenv_dir = {:?}\n",
            dir.path().join("state").display().to_string(),
            dir.path().join("run").display().to_string(),
            corpus_dir().join("01-photo-library.yaml").display().to_string(),
            dir.path().join("env").display().to_string(),
        ),
    )
    .expect("write agent.toml");
    // Variables the corpus reads, set to other values in the process
    // environment: they must change nothing.
    let hostile: &[(&str, &str)] = &[
        ("CORPUS_TAG", "from-the-process"),
        ("POSTGRES_PASSWORD", "from-the-process"),
        ("COMPOSE_PROFILES", "feature-complete"),
        ("STACK_VERSION", "0.0.0"),
        ("PHOTO_UPLOAD_DIR", "/elsewhere"),
    ];

    let mut compose_loaded = 0usize;
    let mut both_loaded = 0usize;
    let mut services_compared = 0usize;
    let mut report = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (ok, stdout, stderr) = compose(&project, file, &["config", "--format", "json"]);
        let agent = agent_hashes(file, &config, &[]);
        let agent_again = agent_hashes(file, &config, hostile);
        match (&agent, &agent_again) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{name}: the process environment changed the hashes")
            }
            (Err((ca, _)), Err((cb, _))) => assert_eq!(ca, cb, "{name}"),
            _ => panic!("{name}: the process environment changed whether the file loads"),
        }
        if let Err((code, message)) = &agent {
            // A refusal is exit 2 and names a key with its path.
            assert_eq!(*code, 2, "{name}: {message}");
            assert!(
                [
                    "services.",
                    "volumes.",
                    "networks.",
                    "`include`",
                    "secrets.",
                    "configs."
                ]
                .iter()
                .any(|k| message.contains(k)),
                "{name}: the error names no key: {message}"
            );
        }
        if !ok {
            report.push(format!(
                "{name}: Compose v2 refuses; agent refuses too: {}",
                agent.is_err()
            ));
            assert!(
                agent.is_err(),
                "{name}: Compose v2 refuses it ({}), the agent loads it",
                stderr.trim()
            );
            continue;
        }
        compose_loaded += 1;
        let Ok(AgentView {
            hashes,
            with_env_files,
        }) = agent
        else {
            report.push(format!("{name}: Compose v2 loads; the agent refuses"));
            continue;
        };
        both_loaded += 1;
        let normalized: Value = serde_json::from_str(&stdout).expect("compose config json");
        let services = normalized["services"].as_object().expect("services");
        let (_, hash_out, hash_err) = compose(&project, file, &["config", "--hash", "*"]);
        let config_hash: BTreeMap<&str, &str> =
            hash_out.lines().filter_map(|l| l.split_once(' ')).collect();
        assert_eq!(
            services.keys().collect::<Vec<_>>(),
            hashes.keys().collect::<Vec<_>>(),
            "{name}: the services differ ({hash_err})"
        );
        for (service, value) in services {
            let want = compose_label_hash(value);
            assert_eq!(
                hashes.get(service),
                Some(&want),
                "{name}: service {service}: the agent's hash is not Compose v2's"
            );
            // `config --hash` hashes the env_file list, `up` the merged
            // environment: they agree only without env files.
            if !with_env_files.contains(service) {
                assert_eq!(
                    config_hash.get(service.as_str()),
                    Some(&want.as_str()),
                    "{name}: service {service}: the recomputed hash is not `config --hash`"
                );
            }
            services_compared += 1;
        }
        report.push(format!(
            "{name}: both load; {} services, hashes equal",
            services.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
    eprintln!(
        "corpus: {} files; Compose v2 loads {compose_loaded}; the agent loads {both_loaded} of those ({:.1}%); {services_compared} service hashes equal",
        files.len(),
        100.0 * both_loaded as f64 / compose_loaded.max(1) as f64
    );
    assert!(
        compose_loaded >= 28,
        "Compose v2 loads only {compose_loaded} files"
    );
    assert!(
        both_loaded * 100 >= compose_loaded * 95,
        "the agent loads {both_loaded} of the {compose_loaded} files Compose v2 loads (< 95%)"
    );
}
