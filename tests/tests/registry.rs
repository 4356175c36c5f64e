//! ECR-style login and pulls against the auth-protected local registry
//! (issue 6): 2.5 KB passwords go through the agent's URL-safe
//! `X-Registry-Auth`, bollard's own standard-base64 header is shown to fail,
//! and a registry that refuses the token fails the deploy at `pull`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wavemap_agent::image::ImageRef;
use wavemap_agent::registry::{self, RegistryAuth};
use wavemap_e2e::{docker, release_args, stack, unique_name, with_execute, TestDir};

/// Push a private copy of the busybox image under a unique repository and
/// remove it locally, so the next pull must go to the registry.
fn private_image(repo: &str) -> String {
    let s = stack();
    let source = s.require("WAVEMAP_TEST_BUSYBOX_IMAGE");
    let target = format!("{}/{repo}/busybox:sha-{}", s.registry, "ab".repeat(20));
    for args in [
        vec!["pull", source],
        vec!["tag", source, &target],
        vec!["push", &target],
        vec!["rmi", &target],
    ] {
        let out = Command::new("docker").args(&args).output().expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    target
}

async fn absent(image: &str) -> bool {
    docker().await.inspect_image(image).await.is_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn long_password_pull_needs_the_url_safe_header() {
    let s = stack();
    assert!(
        s.registry_long_password.len() >= 2048,
        "the long password is ECR-length"
    );
    let image_uri = private_image(&unique_name("longpw"));
    let image = ImageRef::parse("test", &image_uri).expect("valid ref");
    let d = docker().await;

    // bollard's header: standard base64, which the Engine cannot decode, so
    // the pull goes out anonymously and the registry refuses it.
    let creds = bollard::auth::DockerCredentials {
        username: Some(s.registry_long_user.clone()),
        password: Some(s.registry_long_password.clone()),
        serveraddress: Some(s.registry.clone()),
        ..Default::default()
    };
    let mut stream = d.create_image(
        Some(bollard::query_parameters::CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.tag_or_digest().to_owned()),
            ..Default::default()
        }),
        None,
        Some(creds),
    );
    let mut bollard_error = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            bollard_error = Some(e.to_string());
            break;
        }
    }
    let bollard_error =
        bollard_error.expect("bollard's standard-base64 header should not authenticate");
    assert!(
        bollard_error.to_lowercase().contains("auth") || bollard_error.contains("denied"),
        "{bollard_error}"
    );
    assert!(absent(&image_uri).await);

    // The agent's header: URL-safe base64; the same credentials work.
    let auth = RegistryAuth::new(
        &s.registry_long_user,
        &s.registry_long_password,
        &s.registry,
    );
    assert!(!auth.header_value().contains('+') && !auth.header_value().contains('/'));
    registry::pull(&d, "unix:///var/run/docker.sock", &image, Some(&auth))
        .await
        .expect("agent pull with 2.5 KB password");
    assert!(
        !absent(&image_uri).await,
        "image present after the agent's pull"
    );

    // A wrong password is refused with a clear message naming the stage.
    let _ = d
        .remove_image(
            &image_uri,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    let wrong = RegistryAuth::new(&s.registry_long_user, "wrong-password-0000", &s.registry);
    let err = registry::pull(&d, "unix:///var/run/docker.sock", &image, Some(&wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("pull failed"), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong-password-0000"), "{err}");
}

/// A second registry on the same storage whose htpasswd has no `AWS` user:
/// it refuses the token moto's ECR hands out.
struct RefusingRegistry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl RefusingRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let stack_dir = wavemap_e2e::repo_root().join(".stack/registry");
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(&htpasswd)
            .args(["someone-else", "not-the-token"])
            .output()
            .expect("htpasswd");
        assert!(out.status.success());
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: refusing\nauth:\n  htpasswd:\n    realm: refusing\n    path: {}\n",
            stack_dir.join("data").display(),
            htpasswd.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "refusing registry did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        RefusingRegistry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for RefusingRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_registry_that_refuses_the_token_fails_the_deploy_at_pull() {
    let s = stack();
    let refusing = RefusingRegistry::start();
    let mut td = TestDir::new("refused");
    // The refusing registry stands in for the host's ECR: it gets the token.
    td.set(
        "aws",
        "test_ecr_registry_alias",
        wavemap_e2e::toml_str(&refusing.addr),
    );
    std::fs::create_dir_all(td.compose_file().parent().unwrap()).unwrap();
    std::fs::write(td.compose_file(), "services:\n  api:\n    image: ${WAVEMAP_BACKEND_IMAGE}\n  frontend:\n    image: ${WAVEMAP_FRONTEND_IMAGE}\n").unwrap();
    let tag = format!("sha-{}", "cd".repeat(20));
    let backend = format!("{}/wavemap/backend:{tag}", refusing.addr);
    let frontend = format!("{}/wavemap/frontend:{tag}", refusing.addr);
    // No parameters for this test's prefix: empty env files are deliberate
    // here (the deploy is to fail later, at pull).
    let mut args = with_execute(release_args(
        "deploy",
        &backend,
        &frontend,
        &"cd".repeat(20),
        "v1",
    ));
    args.push("--allow-empty".into());
    let out = td.run(args);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("pull"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("refused the credentials"),
        "{}",
        out.dump()
    );
    assert!(!out.stderr.contains(&s.registry_password), "token leaked");
    // Nothing was converged: no container of the project exists.
    let listed = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", td.name),
        ])
        .output()
        .expect("docker ps");
    assert!(listed.stdout.is_empty(), "containers were created");
}
