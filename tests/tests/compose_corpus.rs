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

/// `docker compose config` prints every `$` as `$$`, in map keys too (a
/// label key that names `${COMPOSE_PROJECT_NAME}` is not interpolated);
/// the hash sees `$`.
fn unescape(value: &mut Value) {
    match value {
        Value::String(s) => *s = s.replace("$$", "$"),
        Value::Array(items) => items.iter_mut().for_each(unescape),
        Value::Object(map) => {
            let entries: Vec<(String, Value)> = std::mem::take(map)
                .into_iter()
                .map(|(k, mut v)| {
                    unescape(&mut v);
                    (k.replace("$$", "$"), v)
                })
                .collect();
            map.extend(entries);
        }
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
    let mut by_design = 0usize;
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
        let AgentView {
            hashes,
            with_env_files,
        } = match agent {
            Ok(view) => view,
            // The one refusal by design: a service to build with no image
            // to deploy (the agent never builds; issue 25 keeps it an
            // error naming the key).
            Err((_, message)) if message.contains(".build: `build` without `image`") => {
                report.push(format!(
                    "{name}: Compose v2 loads; the agent refuses by design (build without image)"
                ));
                by_design += 1;
                continue;
            }
            Err((_, message)) => panic!(
                "{name}: Compose v2 loads it, the agent refuses it: {}",
                message.trim()
            ),
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
        "corpus: {} files; Compose v2 loads {compose_loaded}; the agent loads {both_loaded} of those ({:.1}%; {by_design} refused by design: build without image); {services_compared} service hashes equal",
        files.len(),
        100.0 * both_loaded as f64 / compose_loaded.max(1) as f64
    );
    assert!(
        compose_loaded >= 28,
        "Compose v2 loads only {compose_loaded} files"
    );
    assert_eq!(
        both_loaded + by_design,
        compose_loaded,
        "the agent loads every file Compose v2 loads but those with a service to build and no image"
    );
    assert!(by_design <= 1, "{by_design} files refused for `build`");
}

/// Copy the corpus (files, `.env`, env files, config and secret files) to
/// `to`, so the binds `docker compose create` makes do not land in the
/// repository.
fn copy_corpus(to: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create the corpus copy");
        for entry in std::fs::read_dir(from).expect("read the corpus") {
            let entry = entry.expect("dir entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy a corpus file");
            }
        }
    }
    copy(&corpus_dir(), to);
}

/// Drops every `@sha256:<64 hex>` from a text.
fn regex_lite_digest() -> impl Fn(&str) -> String {
    |text: &str| {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("@sha256:") {
            let hex: String = rest[at + 8..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            out.push_str(&rest[..at]);
            if hex.len() == 64 {
                rest = &rest[at + 8 + 64..];
            } else {
                out.push_str("@sha256:");
                rest = &rest[at + 8..];
            }
        }
        out.push_str(rest);
        out
    }
}

fn docker_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Untags the image tags the test made and removes its projects, however
/// the test ends.
struct LiveCleanup {
    tags: Vec<String>,
    /// External volumes and networks the test made: ("volume"|"network", name).
    externals: Vec<(&'static str, String)>,
    projects: Vec<(String, PathBuf, PathBuf)>,
}

impl Drop for LiveCleanup {
    fn drop(&mut self) {
        for (project, dir, file) in &self.projects {
            let _ = Command::new(&stack().compose_v2)
                .current_dir(dir)
                .args(["-p", project, "-f"])
                .arg(file)
                .args(["down", "-v", "--remove-orphans", "-t", "0"])
                .output();
        }
        for tag in &self.tags {
            let _ = docker_cli(&["rmi", "--no-prune", tag]);
        }
        for (kind, name) in &self.externals {
            let _ = docker_cli(&[kind, "rm", name]);
        }
    }
}

/// Live parity: `docker compose create` (Compose v2, images tagged locally
/// from busybox, never pulled or built) labels every container it makes
/// with the config-hash the agent computes for its service, and names and
/// numbers replicas `<project>-<service>-<n>` as the agent does.
#[tokio::test]
async fn compose_create_labels_every_corpus_container_with_the_agents_hash() {
    let busybox = &stack().busybox_image;
    assert!(
        !busybox.is_empty(),
        "WAVEMAP_TEST_BUSYBOX_IMAGE is not in .stack/env; rerun scripts/stack/up"
    );
    {
        use futures_util::StreamExt;
        let docker = wavemap_e2e::docker().await;
        if docker.inspect_image(busybox).await.is_err() {
            let (repo, tag) = busybox.rsplit_once(':').expect("busybox tag");
            let options = bollard::query_parameters::CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            };
            let mut pull = docker.create_image(
                Some(options),
                None,
                Some(wavemap_e2e::registry_credentials()),
            );
            while let Some(item) = pull.next().await {
                item.unwrap_or_else(|e| panic!("pull {busybox}: {e}"));
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let corpus = dir.path().join("corpus");
    copy_corpus(&corpus);
    // A digest-pinned image (`repo:tag@sha256:...`) cannot be tagged
    // locally: the copy names it by tag (the agent loads the same copy).
    let digest = regex_lite_digest();
    for file in corpus_files() {
        let copy = corpus.join(file.file_name().expect("name"));
        let text = std::fs::read_to_string(&copy).expect("read the copy");
        std::fs::write(&copy, digest(&text)).expect("write the copy");
    }
    let home_uploads = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("corpus-uploads"))
        .filter(|p| !p.exists());
    let mut cleanup = LiveCleanup {
        tags: Vec::new(),
        externals: Vec::new(),
        projects: Vec::new(),
    };
    let mut containers = 0usize;
    let mut files_created = 0usize;
    let mut report = Vec::new();
    for file in corpus_files() {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let file = corpus.join(&name);
        let project = unique_name("live").replace('-', "_");
        let config = dir.path().join(format!("{project}.toml"));
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = {:?}\nrun_dir = {:?}\n\n[runtime]\nproject_name = {project:?}\ncompose_file = {:?}\nenv_dir = {:?}\n",
                dir.path().join("state").display().to_string(),
                dir.path().join("run").display().to_string(),
                file.display().to_string(),
                dir.path().join("env").display().to_string(),
            ),
        )
        .expect("write agent.toml");
        let Ok(view) = agent_hashes(&file, &config, &[]) else {
            continue; // refused: covered by the load test above
        };
        let run = |args: &[&str]| {
            let out = Command::new(&stack().compose_v2)
                .current_dir(&corpus)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", std::env::var("HOME").unwrap_or_default())
                .args(["-p", &project, "-f"])
                .arg(&file)
                .args(args)
                .output()
                .expect("run docker compose v2");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, images, err) = run(&["config", "--images"]);
        assert!(ok, "{name}: config --images: {err}");
        for image in images.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if docker_cli(&["image", "inspect", image]).0 {
                continue;
            }
            let (ok, _, err) = docker_cli(&["tag", busybox, image]);
            assert!(ok, "{name}: tag {image}: {err}");
            cleanup.tags.push(image.to_owned());
        }
        // External volumes and networks must exist for `create`, as on a
        // real host.
        let (ok, json, err) = run(&["config", "--format", "json"]);
        assert!(ok, "{name}: config: {err}");
        let normalized: Value = serde_json::from_str(&json).expect("config json");
        for (kind, section) in [("volume", "volumes"), ("network", "networks")] {
            for def in normalized[section]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                if def["external"].as_bool() != Some(true) {
                    continue;
                }
                let Some(ext) = def["name"].as_str() else {
                    continue;
                };
                if docker_cli(&[kind, "inspect", ext]).0 {
                    continue;
                }
                let (ok, _, err) = docker_cli(&[kind, "create", ext]);
                assert!(ok, "{name}: create external {kind} {ext}: {err}");
                cleanup.externals.push((kind, ext.to_owned()));
            }
        }
        cleanup
            .projects
            .push((project.clone(), corpus.clone(), file.clone()));
        let (ok, _, err) = run(&["create", "--no-build", "--pull", "never"]);
        // Compose itself refuses some keys on this host's Engine (20.10):
        // `healthcheck.start_interval` needs Engine 25. The containers it
        // made before refusing are still compared.
        let engine_too_old = !ok && err.contains("require Docker Engine");
        assert!(
            ok || engine_too_old,
            "{name}: docker compose create failed: {}",
            err.trim()
        );
        if engine_too_old {
            let why = err.lines().last().unwrap_or_default().trim().to_owned();
            report.push(format!(
                "{name}: Compose refuses part of it on this Engine: {why}"
            ));
        } else {
            files_created += 1;
        }
        let (ok, listed, err) = docker_cli(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--format",
            "{{.Names}}\t{{.Label \"com.docker.compose.service\"}}\t{{.Label \"com.docker.compose.config-hash\"}}\t{{.Label \"com.docker.compose.container-number\"}}",
        ]);
        assert!(ok, "{name}: docker ps: {err}");
        let mut seen = 0usize;
        for line in listed.lines().filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split('\t').collect();
            let [container, service, label, number] = fields[..] else {
                panic!("{name}: unexpected docker ps line {line:?}");
            };
            assert_eq!(
                view.hashes.get(service).map(String::as_str),
                Some(label),
                "{name}: container {container}: Compose's config-hash label is not the agent's hash for {service}"
            );
            if !container.starts_with('/') && container.starts_with(&project) {
                assert_eq!(
                    container,
                    format!("{project}-{service}-{number}"),
                    "{name}: Compose's replica name"
                );
            }
            seen += 1;
        }
        assert!(
            seen > 0 || engine_too_old,
            "{name}: docker compose create made no container"
        );
        containers += seen;
        report.push(format!("{name}: {seen} containers, labels equal"));
        let (ok, _, err) = run(&["down", "-v", "-t", "0"]);
        assert!(ok, "{name}: down: {err}");
        cleanup.projects.pop();
    }
    if let Some(path) = home_uploads {
        // The `~/` bind of 40-node-modules.yaml, made by the Engine.
        let _ = std::fs::remove_dir(path);
    }
    eprintln!("{}", report.join("\n"));
    let summary = format!(
        "live corpus parity: docker compose create on {files_created} files made {containers} containers; every config-hash label equals the agent's hash"
    );
    eprintln!("{summary}");
    wavemap_e2e::report_line("compose-corpus-live", &summary);
    assert!(files_created >= 30, "only {files_created} files created");
}
