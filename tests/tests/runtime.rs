//! Runtime deploy, the last-good receipt, and rollback (issue 6), end to end:
//! moto for SSM and the ECR token, the auth-protected local registry, the
//! real dockerd, and the production-shaped Compose project.

use wavemap_e2e::{
    mode, pinned, private_copy, release_args, stack, with_execute, RuntimeProject, TestDir,
};

#[tokio::test(flavor = "multi_thread")]
async fn deploy_record_deploy_rollback_restores_the_recorded_pair() {
    let s = stack();
    let td = TestDir::new("runtime");
    let project = RuntimeProject::new(&td).await;
    let secret = project.db_password.clone();
    let repo = td.name.replace('_', "-");
    let backend_a = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"), &repo);
    let frontend_a = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"), &repo);
    let backend_b = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_B"), &repo);
    let frontend_b = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B"), &repo);

    // The dry run plans and changes nothing.
    let mut args = release_args("deploy", &backend_a, &frontend_a, &s.sha_a, "v-a");
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("planned"));
    assert!(
        !td.env_dir().join("backend.env").exists(),
        "dry run wrote env files"
    );

    // Deploy A.
    args.push("--execute".into());
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("success"));
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_SOURCE_SHA"),
        Some(s.sha_a.as_str())
    );
    assert_eq!(project.container("api").await.0, pinned(&backend_a).await);
    assert_eq!(
        project.container("frontend").await.0,
        pinned(&frontend_a).await
    );
    assert_eq!(mode(&td.env_dir().join("backend.env")), 0o600);
    let current = std::fs::read_to_string(td.state_dir().join("current-release.json")).unwrap();
    assert!(current.contains(&backend_a), "{current}");
    // The state names the bytes: the digest the registry holds for A's tag.
    let digest_a = pinned(&backend_a).await;
    let digest_a = digest_a.split_once('@').unwrap().1;
    assert!(
        current.contains(&format!("\"backendDigest\": \"{digest_a}\"")),
        "{current}"
    );

    // Record A.
    let args = with_execute(release_args(
        "record-release",
        &backend_a,
        &frontend_a,
        &s.sha_a,
        "v-a",
    ));
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
    assert_eq!(mode(&td.receipt_path()), 0o644);
    // The folder the agent made for it is 0700 (issue 24).
    assert_eq!(mode(td.receipt_path().parent().unwrap()) & 0o777, 0o700);
    let json: serde_json::Value = serde_json::from_slice(&receipt_a).unwrap();
    assert_eq!(json["sourceSha"], s.sha_a.as_str());
    assert_eq!(json["backendImageUri"], backend_a.as_str());
    assert_eq!(json["frontendImageUri"], frontend_a.as_str());
    assert_eq!(json["imageTag"], format!("sha-{}", s.sha_a));
    assert_eq!(json["deploymentVersion"], "v-a");
    assert_eq!(json["selectedRef"], "develop");
    assert_eq!(json["schemaVersion"], 2);
    assert_eq!(json["backendDigest"], digest_a, "{json}");
    assert!(
        json["frontendDigest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{json}"
    );

    // record-release for a pair that does not run: exit 3, nothing written.
    let args = with_execute(release_args(
        "record-release",
        &backend_b,
        &frontend_b,
        &s.sha_b,
        "v-b",
    ));
    let out = td.run(&args);
    assert_eq!(out.code, 3, "{}", out.dump());
    assert_eq!(std::fs::read(td.receipt_path()).unwrap(), receipt_a);

    // Deploy B.
    let postgres_before = project.container("postgres").await.1;
    let args = with_execute(release_args(
        "deploy",
        &backend_b,
        &frontend_b,
        &s.sha_b,
        "v-b",
    ));
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(project.container("api").await.0, pinned(&backend_b).await);
    assert_eq!(
        project.container("frontend").await.0,
        pinned(&frontend_b).await
    );
    assert_eq!(
        project.container("postgres").await.1,
        postgres_before,
        "postgres was recreated"
    );

    // A deploy naming an image that does not exist fails at pull; B runs on.
    let api_b = project.container("api").await.1;
    let missing_sha = "0000000000000000000000000000000000000001";
    let missing_backend = format!("{}/{repo}/backend:sha-{missing_sha}", s.registry);
    let missing_frontend = format!("{}/{repo}/frontend:sha-{missing_sha}", s.registry);
    let args = with_execute(release_args(
        "deploy",
        &missing_backend,
        &missing_frontend,
        missing_sha,
        "v-x",
    ));
    let out = td.run(&args);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("pull"),
        "{}",
        out.dump()
    );
    assert_eq!(
        project.container("api").await,
        (pinned(&backend_b).await, api_b)
    );

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
    assert_eq!(project.container("api").await.0, pinned(&backend_a).await);
    assert_eq!(
        project.container("frontend").await.0,
        pinned(&frontend_a).await
    );
    assert_eq!(std::fs::read(td.receipt_path()).unwrap(), receipt_a);

    // status --json shows what runs, the receipt matching it, and the env files.
    let status = td.run(["status", "--json"]);
    assert_eq!(status.code, 0, "{}", status.dump());
    let json: serde_json::Value =
        serde_json::from_str(status.stdout.trim()).expect("one JSON object");
    let data = &json["data"];
    assert_eq!(
        data["current_release"]["source_sha"],
        s.sha_a.as_str(),
        "{data}"
    );
    assert_eq!(data["receipt"]["source_sha"], s.sha_a.as_str(), "{data}");
    assert_eq!(data["receipt_matches_running"], "matches", "{data}");
    let services = data["services"].as_array().expect("services");
    assert_eq!(services.len(), 3, "{data}");
    for svc in services {
        assert_eq!(svc["state"], "running", "{svc}");
        assert_eq!(svc["health"], "healthy", "{svc}");
    }
    let api = services
        .iter()
        .find(|v| v["service"] == "api")
        .expect("api row");
    assert_eq!(api["image"], pinned(&backend_a).await.as_str());
    for file in data["env_files"].as_array().expect("env files") {
        assert_eq!(file["mode"], "600", "{file}");
        assert!(file["keys"].as_u64().unwrap_or(0) >= 1, "{file}");
    }
    let last = &data["operations"][0];
    assert_eq!(last["command"], "runtime rollback", "{data}");
    assert_eq!(last["exit_code"], 0, "{data}");

    // No secret value reached any output or file the agent keeps.
    for text in [
        status.stdout.clone(),
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
        let out = td.run(with_execute(release_args(
            "deploy", &backend, &good, sha, "v1",
        )));
        assert_eq!(out.code, 2, "{}", out.dump());
        assert!(out.stderr.contains(needle), "{}", out.dump());
        assert!(!td.env_dir().exists());
    }
}
