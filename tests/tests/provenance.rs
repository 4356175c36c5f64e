//! Provenance and registry authority (issue 24), end to end: another AWS
//! account's registry is refused (account from the config or from a
//! loopback IMDSv2), the ECR token never reaches a listed non-ECR registry
//! (a recording proxy in front of the stack registry proves it), and a tag
//! pushed again with other bytes is rolled back to the recorded bytes
//! (`docker inspect` of the container's image ID), said in
//! `WAVEMAP_RUNTIME_DEPLOY_TAG_MOVED`, with `status` showing the digests
//! and `docker compose` agreeing with the pinned containers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use wavemap_e2e::faultproxy::RecordingProxy;
use wavemap_e2e::{
    docker_cli, private_copy, registry_digest, release_args, stack, toml_str, with_execute,
    RuntimeProject, TestDir,
};

const SHA: &str = "abababababababababababababababababababab";

fn pair_in(registry: &str) -> (String, String) {
    (
        format!("{registry}/wavemap/backend:sha-{SHA}"),
        format!("{registry}/wavemap/frontend:sha-{SHA}"),
    )
}

fn minimal_compose(td: &TestDir) {
    std::fs::create_dir_all(td.compose_file().parent().unwrap()).unwrap();
    std::fs::write(
        td.compose_file(),
        "services:\n  api:\n    image: ${WAVEMAP_BACKEND_IMAGE}\n  frontend:\n    image: ${WAVEMAP_FRONTEND_IMAGE}\n",
    )
    .unwrap();
}

/// A loopback IMDSv2: PUT /latest/api/token gives a token; the identity
/// document answers only with it. Records each request line and whether
/// it carried the token.
struct Imds {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Imds {
    fn start(account: &str) -> Imds {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind imds");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (log, account) = (seen.clone(), account.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let line = head.lines().next().unwrap_or("").to_owned();
                let with_token = head.contains("x-aws-ec2-metadata-token: tok-e2e");
                log.lock()
                    .unwrap()
                    .push(format!("{line} token={with_token}"));
                let (status, body) = if line.starts_with("put /latest/api/token") {
                    ("200 OK", "tok-e2e".to_owned())
                } else if line.starts_with("get /latest/dynamic/instance-identity/document")
                    && with_token
                {
                    (
                        "200 OK",
                        format!(
                            r#"{{"accountId":"{account}","region":"us-east-2","instanceId":"i-0e2e"}}"#
                        ),
                    )
                } else {
                    ("401 Unauthorized", String::new())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Imds { url, seen }
    }
}

#[test]
fn another_accounts_registry_is_refused_naming_it() {
    let mut td = TestDir::new("authority");
    minimal_compose(&td);
    td.set("aws", "account_id", toml_str("123456789012"));
    for (registry, needle) in [
        (
            "222222222222.dkr.ecr.us-east-2.amazonaws.com",
            "another AWS account",
        ),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "not allowed",
        ),
        ("ghcr.io", "not allowed"),
    ] {
        let (backend, frontend) = pair_in(registry);
        let out = td.run(with_execute(release_args(
            "deploy", &backend, &frontend, SHA, "v1",
        )));
        assert_eq!(out.code, 2, "{registry}: {}", out.dump());
        for text in [
            registry,
            needle,
            "docker.allowed_registries",
            "--backend-image",
        ] {
            assert!(
                out.stderr.contains(text),
                "{registry}: no {text:?}: {}",
                out.dump()
            );
        }
        assert!(!td.env_dir().exists(), "{registry}: env files were written");
        assert!(
            !td.state_dir().join("current-release.json").exists(),
            "{registry}: state written"
        );
    }
}

#[test]
fn without_account_id_the_account_comes_from_imdsv2() {
    let td = TestDir::new("imds");
    minimal_compose(&td);
    let imds = Imds::start("333333333333");
    let env = [
        ("AWS_EC2_METADATA_DISABLED", "false"),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url.as_str()),
    ];
    let run = |registry: &str| {
        let (backend, frontend) = pair_in(registry);
        let mut args = release_args("deploy", &backend, &frontend, SHA, "v1");
        args.push("--allow-empty".into());
        wavemap_e2e::run_agent(args, Some(&td.config_path()), &env)
    };
    // Another account: refused, naming the registry and the host's account.
    let out = run("222222222222.dkr.ecr.us-east-2.amazonaws.com");
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(
        out.stderr
            .contains("222222222222.dkr.ecr.us-east-2.amazonaws.com")
            && out.stderr.contains("333333333333"),
        "{}",
        out.dump()
    );
    let seen = imds.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.starts_with("put /latest/api/token")),
        "no IMDSv2 token request: {seen:?}"
    );
    assert!(
        seen.iter().any(
            |l| l.starts_with("get /latest/dynamic/instance-identity/document")
                && l.ends_with("token=true")
        ),
        "no identity document read with the token: {seen:?}"
    );
    // The host's own ECR passes the authority check (a dry run plans).
    let out = run("333333333333.dkr.ecr.us-east-2.amazonaws.com");
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("planned"));

    // Instance metadata switched off and no account_id: exit 69, saying so.
    let (backend, frontend) = pair_in("333333333333.dkr.ecr.us-east-2.amazonaws.com");
    let out = td.run(release_args("deploy", &backend, &frontend, SHA, "v1"));
    assert_eq!(out.code, 69, "{}", out.dump());
    assert!(out.stderr.contains("aws.account_id"), "{}", out.dump());
}

/// The `user:password` an `Authorization: Basic ...` header carries.
fn basic_user(header: &str) -> String {
    let b64 = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .unwrap_or(header);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&decoded).into_owned();
    text.split_once(':')
        .map_or(text.clone(), |(user, _)| user.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ecr_token_never_reaches_a_listed_registry() {
    let s = stack();
    let mut td = TestDir::new("token");
    let _project = RuntimeProject::new(&td).await;
    let repo = td.name.replace('_', "-");
    // Backend from the host's "ECR" (the stack registry, by the test alias),
    // frontend from a listed registry: the proxy in front of the same one.
    let backend = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"), &repo);
    let frontend_ecr = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"), &repo);
    let proxy = RecordingProxy::start(&s.registry);
    let frontend = frontend_ecr.replacen(&s.registry, &proxy.addr, 1);
    td.set(
        "docker",
        "allowed_registries",
        format!("[{}]", toml_str(&proxy.addr)),
    );
    let token_basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", s.registry_user, s.registry_password));
    let no_ecr_token = |what: &str| {
        let recorded = proxy.recorded();
        assert!(
            !recorded.is_empty(),
            "{what}: the listed registry saw no request"
        );
        for r in &recorded {
            let auth = r.authorization.clone().unwrap_or_default();
            assert!(
                !auth.contains(&token_basic)
                    && !auth.contains(&s.registry_password)
                    && basic_user(&auth) != s.registry_user,
                "{what}: the ECR token reached the listed registry: {} with {auth}",
                r.request_line
            );
        }
        recorded
    };

    // No credentials configured for it: pulled anonymously, so refused.
    let args = with_execute(release_args("deploy", &backend, &frontend, &s.sha_a, "v1"));
    let out = td.run(&args);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("pull"),
        "{}",
        out.dump()
    );
    let recorded = no_ecr_token("anonymous");
    assert!(
        recorded.iter().all(|r| r.authorization.is_none()),
        "{recorded:?}"
    );

    // With its own credentials in a Docker config.json: it pulls with those.
    let auth_file = td.path().join("registry-auth.json");
    let own = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        s.registry_long_user, s.registry_long_password
    ));
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths": {{"{}": {{"auth": "{own}"}}}}}}"#, proxy.addr),
    )
    .unwrap();
    td.set(
        "docker",
        "auth_config",
        toml_str(&auth_file.display().to_string()),
    );
    let out = td.run(&args);
    assert_eq!(out.code, 0, "{}", out.dump());
    let recorded = no_ecr_token("with docker.auth_config");
    assert!(
        recorded
            .iter()
            .filter_map(|r| r.authorization.as_deref())
            .any(|a| basic_user(a) == s.registry_long_user),
        "the listed registry never saw its own credentials: {recorded:?}"
    );
    let (_, digest) = registry_digest(&frontend_ecr);
    let running = docker_inspect(&format!("{}-frontend-1", td.name), "{{.Config.Image}}");
    assert_eq!(
        running,
        format!("{}/{repo}/frontend@{digest}", proxy.addr),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains(&s.registry_long_password));
    assert!(!out.stdout.contains(&s.registry_long_password));
}

fn docker_inspect(object: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, object])
        .output()
        .expect("docker inspect");
    assert!(
        out.status.success(),
        "docker inspect {object}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_is_rolled_back_to_the_recorded_bytes() {
    let s = stack();
    let td = TestDir::new("moved");
    let project = RuntimeProject::new(&td).await;
    let repo = td.name.replace('_', "-");
    let backend_a = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"), &repo);
    let frontend_a = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"), &repo);
    let backend_b = private_copy(s.require("WAVEMAP_TEST_BACKEND_IMAGE_B"), &repo);
    let frontend_b = private_copy(s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B"), &repo);
    let id_a = docker_inspect(&s.backend_image_a, "{{.Id}}");
    let id_b = docker_inspect(&s.backend_image_b, "{{.Id}}");
    assert_ne!(id_a, id_b);
    let api = format!("{}-api-1", td.name);

    // Deploy and record A: both files name A's digest.
    let deploy_a = with_execute(release_args(
        "deploy",
        &backend_a,
        &frontend_a,
        &s.sha_a,
        "a",
    ));
    let out = td.run(&deploy_a);
    assert_eq!(out.code, 0, "{}", out.dump());
    let (repo_a, digest_a) = registry_digest(&backend_a);
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_BACKEND_DIGEST"),
        Some(digest_a.as_str())
    );
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_TAG_MOVED"), None);
    let out = td.run(with_execute(release_args(
        "record-release",
        &backend_a,
        &frontend_a,
        &s.sha_a,
        "a",
    )));
    assert_eq!(out.code, 0, "{}", out.dump());
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(td.receipt_path()).unwrap()).unwrap();
    assert_eq!(receipt["schemaVersion"], 2);
    assert_eq!(receipt["backendDigest"], digest_a.as_str(), "{receipt}");

    // `docker compose` agrees with the pinned containers: `up -d` in the
    // project's folder (it reads the agent's .env) changes nothing.
    let before = docker_inspect(&api, "{{.Id}}");
    let compose = Command::new(&s.compose_v2)
        .args(["-p", &td.name, "-f"])
        .arg(td.compose_file())
        .args(["up", "-d", "--no-build", "--pull", "never"])
        .current_dir(td.compose_file().parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .expect("docker compose");
    let said = String::from_utf8_lossy(&compose.stderr).into_owned();
    assert!(compose.status.success(), "docker compose up -d: {said}");
    assert_eq!(
        docker_inspect(&api, "{{.Id}}"),
        before,
        "docker compose recreated the pinned api container: {said}"
    );
    assert_eq!(
        docker_inspect(&api, "{{.Config.Image}}"),
        format!("{repo_a}@{digest_a}")
    );

    // Someone pushes other bytes (B's) under A's tag.
    docker_cli(&["tag", &s.backend_image_b, &backend_a], None);
    docker_cli(&["push", &backend_a], None);
    docker_cli(&["rmi", &backend_a], None);
    let (_, moved_digest) = registry_digest(&backend_a);
    assert_ne!(moved_digest, digest_a);

    // Deploy B, and drop A's digest reference from the host, so the
    // rollback must pull A by digest from the registry.
    let out = td.run(with_execute(release_args(
        "deploy",
        &backend_b,
        &frontend_b,
        &s.sha_b,
        "b",
    )));
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(docker_inspect(&api, "{{.Image}}"), id_b);
    docker_cli(&["rmi", &format!("{repo_a}@{digest_a}")], None);

    // Rollback runs the recorded bytes, not what the tag names now.
    let out = td.run(["runtime", "rollback", "--execute"]);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_ROLLBACK_BACKEND_DIGEST"),
        Some(digest_a.as_str())
    );
    assert_eq!(
        docker_inspect(&api, "{{.Image}}"),
        id_a,
        "the rollback ran other bytes than the recorded ones"
    );
    assert_eq!(
        docker_inspect(&api, "{{.Config.Image}}"),
        format!("{repo_a}@{digest_a}")
    );
    assert_eq!(
        project.container("api").await.0,
        format!("{repo_a}@{digest_a}")
    );

    // status shows the short digests of what is recorded.
    let status = td.run(["status"]);
    assert_eq!(status.code, 0, "{}", status.dump());
    let short_a = &digest_a["sha256:".len().."sha256:".len() + 12];
    assert!(
        status.stdout.contains(&format!("backend {short_a}")),
        "{}",
        status.stdout
    );
    let json = td.run(["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("json");
    assert_eq!(
        json["data"]["current_release"]["backend_digest"],
        digest_a.as_str()
    );
    assert_eq!(json["data"]["receipt_matches_running"], "matches");

    // Deploying A's tag again proceeds with the new bytes, and says so.
    let out = td.run(&deploy_a);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_TAG_MOVED"),
        Some(format!("backend:{}->{}", &digest_a[7..19], &moved_digest[7..19]).as_str()),
        "{}",
        out.dump()
    );
    assert!(out.stderr.contains("tag moved"), "{}", out.dump());
    assert_eq!(docker_inspect(&api, "{{.Image}}"), id_b);
    let journal = std::fs::read_to_string(td.journal_path()).unwrap();
    assert!(
        journal.contains("WAVEMAP_RUNTIME_DEPLOY_TAG_MOVED"),
        "{journal}"
    );
}
