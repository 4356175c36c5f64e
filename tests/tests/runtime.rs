//! Runtime deploy, the last-good receipt, and rollback (issue 6), end to end:
//! moto for SSM and the ECR token, the auth-protected local registry, the
//! real dockerd, and the production-shaped Compose project.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use wavemap_e2e::{docker, ssm_client, stack, TestDir};

/// Push `image` under a repository unique to this test and drop the local
/// tag, so the agent must log in and pull it (layers stay cached: fast).
fn private_copy(image: &str, repo_prefix: &str) -> String {
    let s = stack();
    let (name, tag) = image.rsplit_once(':').expect("image has a tag");
    let service = name.rsplit('/').next().expect("repository name");
    let copy = format!("{}/{repo_prefix}/{service}:{tag}", s.registry);
    docker_cli(
        &[
            "login",
            "-u",
            &s.registry_user,
            "--password-stdin",
            &s.registry,
        ],
        Some(&s.registry_password),
    );
    docker_cli(&["pull", image], None);
    docker_cli(&["tag", image, &copy], None);
    docker_cli(&["push", &copy], None);
    docker_cli(&["rmi", &copy], None);
    copy
}

fn docker_cli(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run docker");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The production-shaped project, with the postgres image filled in (the
/// agent supplies the backend/frontend image variables).
fn write_project(td: &TestDir) {
    let fixture = wavemap_e2e::repo_root().join("tests/fixtures/runtime/compose.yaml");
    let text = std::fs::read_to_string(&fixture).expect("compose fixture");
    let text = text.replace("${WAVEMAP_POSTGRES_IMAGE}", &stack().postgres_image);
    std::fs::create_dir_all(td.compose_file().parent().expect("dir")).expect("mkdir");
    std::fs::write(td.compose_file(), text).expect("write compose file");
}

async fn seed_parameters(td: &TestDir, db_password: &str) {
    let ssm = ssm_client().await;
    let prefix = td.parameter_prefix();
    let params = [
        ("postgres/POSTGRES_USER", "wavemap", false),
        ("postgres/POSTGRES_DB", "wavemap", false),
        ("postgres/POSTGRES_PASSWORD", db_password, true),
        (
            "backend/DATABASE_URL",
            &format!("postgres://wavemap:{db_password}@postgres:5432/wavemap") as &str,
            true,
        ),
        ("backend/APP_ORIGIN", "https://dev.wavemap.app", false),
        (
            "frontend/PUBLIC_API_ORIGIN",
            "https://dev.wavemap.app/api",
            false,
        ),
    ];
    for (name, value, secure) in params {
        ssm.put_parameter()
            .name(format!("{prefix}{name}"))
            .value(value)
            .r#type(if secure {
                aws_sdk_ssm::types::ParameterType::SecureString
            } else {
                aws_sdk_ssm::types::ParameterType::String
            })
            .overwrite(true)
            .send()
            .await
            .expect("put parameter");
    }
}

/// `Config.Image` and id of the service's container.
async fn running(project: &str, service: &str) -> (String, String) {
    let d = docker().await;
    let info = d
        .inspect_container(
            &format!("{project}-{service}-1"),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("container {project}-{service}-1: {e}"));
    let image = info.config.and_then(|c| c.image).unwrap_or_default();
    (image, info.id.unwrap_or_default())
}

fn compose_down(project: &str) {
    let _ = Command::new("docker")
        .args([
            "compose",
            "-p",
            project,
            "down",
            "-v",
            "--remove-orphans",
            "-t",
            "1",
        ])
        .output();
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        compose_down(&self.0);
    }
}

fn release_args<'a>(
    backend: &'a str,
    frontend: &'a str,
    sha: &'a str,
    version: &'a str,
) -> Vec<&'a str> {
    vec![
        "--backend-image",
        backend,
        "--frontend-image",
        frontend,
        "--source-sha",
        sha,
        "--deployment-version",
        version,
        "--selected-ref",
        "develop",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_record_deploy_rollback_restores_the_recorded_pair() {
    let s = stack();
    let td = TestDir::new("runtime");
    let _cleanup = Cleanup(td.name.clone());
    write_project(&td);
    let secret = format!("pw-{}-Zq9", td.name);
    seed_parameters(&td, &secret).await;
    let repo = td.name.replace('_', "-");
    let backend_a = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"), &repo);
    let frontend_a = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"), &repo);
    let backend_b = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_B"), &repo);
    let frontend_b = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B"), &repo);

    // The dry run plans and changes nothing.
    let mut args = vec!["runtime", "deploy"];
    args.extend(release_args(&backend_a, &frontend_a, &s.sha_a, "v-a"));
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("planned"));
    assert!(
        !td.env_dir().join("backend.env").exists(),
        "dry run wrote env files"
    );

    // Deploy A.
    args.push("--execute");
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("success"));
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_SOURCE_SHA"),
        Some(s.sha_a.as_str())
    );
    assert_eq!(running(&td.name, "api").await.0, backend_a);
    assert_eq!(running(&td.name, "frontend").await.0, frontend_a);
    let env_mode = std::fs::metadata(td.env_dir().join("backend.env"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(env_mode, 0o600);
    let current = std::fs::read_to_string(td.state_dir().join("current-release.json")).unwrap();
    assert!(current.contains(&backend_a), "{current}");

    // Record A.
    let mut args = vec!["runtime", "record-release"];
    args.extend(release_args(&backend_a, &frontend_a, &s.sha_a, "v-a"));
    args.push("--execute");
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_RECEIPT_RESULT"),
        Some("recorded")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_RECEIPT_PATH"),
        Some(td.receipt_path().to_str().unwrap())
    );
    let receipt_a = std::fs::read(td.receipt_path()).unwrap();
    let mode = std::fs::metadata(td.receipt_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    let json: serde_json::Value = serde_json::from_slice(&receipt_a).unwrap();
    assert_eq!(json["sourceSha"], s.sha_a.as_str());
    assert_eq!(json["backendImageUri"], backend_a.as_str());
    assert_eq!(json["frontendImageUri"], frontend_a.as_str());
    assert_eq!(json["imageTag"], format!("sha-{}", s.sha_a));
    assert_eq!(json["deploymentVersion"], "v-a");
    assert_eq!(json["selectedRef"], "develop");
    assert_eq!(json["schemaVersion"], 1);

    // record-release for a pair that does not run: exit 3, nothing written.
    let mut args = vec!["runtime", "record-release"];
    args.extend(release_args(&backend_b, &frontend_b, &s.sha_b, "v-b"));
    args.push("--execute");
    let out = td.run(&args);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(std::fs::read(td.receipt_path()).unwrap(), receipt_a);

    // Deploy B.
    let postgres_before = running(&td.name, "postgres").await.1;
    let mut args = vec!["runtime", "deploy"];
    args.extend(release_args(&backend_b, &frontend_b, &s.sha_b, "v-b"));
    args.push("--execute");
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(running(&td.name, "api").await.0, backend_b);
    assert_eq!(running(&td.name, "frontend").await.0, frontend_b);
    assert_eq!(
        running(&td.name, "postgres").await.1,
        postgres_before,
        "postgres was recreated"
    );

    // A deploy naming an image that does not exist fails at pull; B runs on.
    let api_b = running(&td.name, "api").await.1;
    let missing_sha = "0000000000000000000000000000000000000001";
    let missing_backend = format!("{}/{repo}/backend:sha-{missing_sha}", s.registry);
    let missing_frontend = format!("{}/{repo}/frontend:sha-{missing_sha}", s.registry);
    let mut args = vec!["runtime", "deploy"];
    args.extend(release_args(
        &missing_backend,
        &missing_frontend,
        missing_sha,
        "v-x",
    ));
    args.push("--execute");
    let out = td.run(&args);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("pull"),
        "{}",
        out.dump()
    );
    assert_eq!(running(&td.name, "api").await, (backend_b.clone(), api_b));

    // Rollback restores A; the receipt is unchanged.
    let out = td.run(["runtime", "rollback"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ROLLBACK_RESULT"),
        Some("planned")
    );
    let out = td.run(["runtime", "rollback", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ROLLBACK_RESULT"),
        Some("success")
    );
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ROLLBACK_RESTORED_SHA"),
        Some(s.sha_a.as_str())
    );
    assert_eq!(running(&td.name, "api").await.0, backend_a);
    assert_eq!(running(&td.name, "frontend").await.0, frontend_a);
    assert_eq!(std::fs::read(td.receipt_path()).unwrap(), receipt_a);

    // No secret value reached any output or file the agent keeps.
    for text in [
        out.stdout.clone(),
        out.stderr.clone(),
        std::fs::read_to_string(td.journal_path()).unwrap_or_default(),
        String::from_utf8_lossy(&receipt_a).into_owned(),
    ] {
        assert!(!text.contains(&secret), "secret leaked: {text}");
    }
}

#[test]
fn rollback_without_receipt_is_skipped_and_changes_nothing() {
    let td = TestDir::new("rb-none");
    let out = td.run(["runtime", "rollback", "--execute"]);
    assert_eq!(out.code, 4, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ROLLBACK_RESULT"),
        Some("skipped-no-receipt")
    );
    assert!(!td.state_dir().join("current-release.json").exists());
    assert!(!td.env_dir().exists(), "rollback rendered env files");
}

#[test]
fn rollback_with_corrupt_receipt_exits_2_and_changes_nothing() {
    let td = TestDir::new("rb-corrupt");
    std::fs::create_dir_all(td.receipt_path().parent().unwrap()).unwrap();
    for content in [
        "{\"schemaVersion\": 1, \"sourceSha\": ",
        "{\"schemaVersion\": 7}",
    ] {
        std::fs::write(td.receipt_path(), content).unwrap();
        let out = td.run(["runtime", "rollback", "--execute"]);
        assert_eq!(out.code, 2, "{}", out.dump());
        assert!(out.stderr.contains("receipt"), "{}", out.dump());
        assert_eq!(std::fs::read_to_string(td.receipt_path()).unwrap(), content);
        assert!(!td.env_dir().exists());
    }
}

#[test]
fn invalid_release_input_exits_2_naming_the_flag() {
    let td = TestDir::new("rt-input");
    let s = stack();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let good = format!("{}/wavemap/backend:sha-{sha}", s.registry);
    for (backend, needle) in [
        (
            format!("{}/wavemap/backend:latest", s.registry),
            "--backend-image",
        ),
        (
            format!("evil.example.com/wavemap/backend:sha-{sha}"),
            "not allowed",
        ),
    ] {
        let out = td.run([
            "runtime",
            "deploy",
            "--backend-image",
            &backend,
            "--frontend-image",
            &good,
            "--source-sha",
            sha,
            "--deployment-version",
            "v1",
            "--execute",
        ]);
        assert_eq!(out.code, 2, "{}", out.dump());
        assert!(out.stderr.contains(needle), "{}", out.dump());
        assert!(!td.env_dir().exists());
    }
}
