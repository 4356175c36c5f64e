//! The test images and the runtime Compose project, checked with the real
//! Docker Engine and Compose v2: if these break, every deploy test breaks
//! with a less helpful message. Needs `scripts/stack/up` (which runs
//! `scripts/stack/build-images`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stack_env() -> HashMap<String, String> {
    let path = repo_root().join(".stack/env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/stack/up first", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Compose project on the runtime fixture; `down -v` when dropped.
struct Project {
    name: String,
    env: Vec<(String, String)>,
    _env_dir: PathBuf,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("compose")
            .arg("-f")
            .arg(repo_root().join("tests/fixtures/runtime/compose.yaml"))
            .arg("-p")
            .arg(&self.name)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn exec(&self, service: &str, args: &[&str]) -> String {
        stdout(&run(self
            .compose()
            .args(["exec", "-T", service])
            .args(args)))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose().args(["down", "-v", "-t", "5"]).output();
        let _ = std::fs::remove_dir_all(&self._env_dir);
    }
}

#[test]
fn runtime_project_comes_up_healthy_on_the_test_images() {
    let stack = stack_env();
    let get = |k: &str| {
        stack
            .get(k)
            .unwrap_or_else(|| {
                panic!("{k} missing from .stack/env: run scripts/stack/build-images")
            })
            .clone()
    };
    let env_dir = std::env::temp_dir().join(format!("fb-images-{}", std::process::id()));
    std::fs::create_dir_all(&env_dir).unwrap();
    for f in ["postgres.env", "backend.env", "frontend.env"] {
        std::fs::copy(
            repo_root()
                .join("tests/fixtures/runtime/env-sample")
                .join(f),
            env_dir.join(f),
        )
        .unwrap();
    }
    let project = Project {
        name: format!("fbimages{}", std::process::id()),
        env: vec![
            (
                "WAVEMAP_POSTGRES_IMAGE".into(),
                get("WAVEMAP_TEST_POSTGRES_IMAGE"),
            ),
            (
                "WAVEMAP_BACKEND_IMAGE".into(),
                get("WAVEMAP_TEST_BACKEND_IMAGE_A"),
            ),
            (
                "WAVEMAP_FRONTEND_IMAGE".into(),
                get("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
            ),
            ("WAVEMAP_ENV_DIR".into(), env_dir.display().to_string()),
        ],
        _env_dir: env_dir,
    };
    run(project.compose().args(["up", "-d", "--wait"]));

    // Every container healthy, running the images asked for.
    let ids = stdout(&run(project.compose().args(["ps", "-q"])));
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let inspect = stdout(&run(Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"com.docker.compose.service\"}} {{.Config.Image}} {{.State.Health.Status}}",
        ])
        .args(&ids)));
    let mut lines: Vec<&str> = inspect.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("api {} healthy", get("WAVEMAP_TEST_BACKEND_IMAGE_A")),
            format!("frontend {} healthy", get("WAVEMAP_TEST_FRONTEND_IMAGE_A")),
            format!("postgres {} healthy", get("WAVEMAP_TEST_POSTGRES_IMAGE")),
        ]
    );

    // The API answers with its baked version and reaches the database over
    // the project network with the env file's password.
    let api = "http://127.0.0.1:8080";
    assert_eq!(
        project.exec("api", &["wget", "-q", "-O-", &format!("{api}/health")]),
        r#"{"status":"ok","version":"A"}"#
    );
    assert_eq!(
        project.exec("api", &["wget", "-q", "-O-", &format!("{api}/ready")]),
        r#"{"status":"ready","database":"ok"}"#
    );
    assert_eq!(
        project.exec("frontend", &["wget", "-q", "-O-", "http://api:8080/health"]),
        r#"{"status":"ok","version":"A"}"#
    );
    assert_eq!(
        project.exec("frontend", &["wget", "-q", "-O-", &format!("{api}/health")]),
        r#"{"status":"ok","version":"A"}"#
    );

    // The image's migrations apply through the container, with the hashes
    // the real migrator recorded for the same files.
    let out = project.exec("api", &["fake-backend", "migrate"]);
    assert!(out.contains("applied 4 migration(s)"), "{out}");
    let ledger = project.exec(
        "postgres",
        &[
            "psql",
            "-U",
            "wavemap",
            "-d",
            "wavemap",
            "-Atc",
            "SELECT hash || ' ' || created_at FROM drizzle.__drizzle_migrations ORDER BY id",
        ],
    );
    assert_eq!(
        ledger,
        "5fc31b3052306cb1d106079fe990e4993db39d0e8d67f3638143babea1ee18d4 1795478199059\n\
         8c528fb21dcfabab562f49d1a0478c80e616485295bb55bf2a8bc30af421a596 1795478212322\n\
         44022445b460ddc95c890c553fddfffd98cc8612d5845b9254eb644d1c417f95 1795478213582\n\
         d68f9c7ca5fc022c8482329a0661ab6ff0a34357a088960229ce8ffc1dc67b48 1795478214823\n"
    );

    // The seeds' output the reset command counts.
    let dev = project.exec("api", &["fake-backend", "seed-dev"]);
    assert_eq!(
        dev.lines().filter(|l| l.starts_with("warning:")).count(),
        3,
        "{dev}"
    );
}

#[test]
fn images_a_and_b_differ_and_ahead_ships_three_entries() {
    let stack = stack_env();
    let cat = |image: &str, path: &str| {
        stdout(&run(Command::new("docker").args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/cat",
            image,
            path,
        ])))
    };
    let a = &stack["WAVEMAP_TEST_BACKEND_IMAGE_A"];
    let b = &stack["WAVEMAP_TEST_BACKEND_IMAGE_B"];
    let ahead = &stack["WAVEMAP_TEST_BACKEND_AHEAD_IMAGE"];
    assert_eq!(cat(a, "/app/VERSION"), "A\n");
    assert_eq!(cat(b, "/app/VERSION"), "B\n");
    assert!(
        a.ends_with(&format!(":sha-{}", stack["WAVEMAP_TEST_SHA_A"])),
        "{a}"
    );
    assert!(
        b.ends_with(&format!(":sha-{}", stack["WAVEMAP_TEST_SHA_B"])),
        "{b}"
    );
    let journal: serde_json::Value =
        serde_json::from_str(&cat(ahead, "/app/drizzle/meta/_journal.json")).unwrap();
    assert_eq!(journal["entries"].as_array().unwrap().len(), 3);
    let fe_b = &stack["WAVEMAP_TEST_FRONTEND_IMAGE_B"];
    assert_eq!(
        cat(fe_b, "/www/health"),
        "{\"status\":\"ok\",\"version\":\"B\"}\n"
    );
}
