//! The Compose engine against the real dockerd and the real Compose CLIs.
//!
//! The engine is driven through the library (`wavemap_agent::compose`), the
//! way `runtime deploy` and the daemon call it, and every check is what an
//! operator would look at: container IDs and start times, `docker compose
//! ps` (v2) and `docker-compose ps` (v1), a file in the Postgres volume,
//! the config-hash labels Compose itself writes. Each test has its own
//! project name and removes it at the end (`docker compose down -v`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bollard::Docker;
use wavemap_agent::compose::{self, Action, Plan, Project, Reason};
use wavemap_e2e::{
    docker, registry_credentials, release_args, repo_root, stack, unique_name, with_execute,
};

/// Removes the project (containers, network, volumes) when the test ends,
/// pass or fail.
struct Cleanup {
    project: String,
    file: PathBuf,
    vars: BTreeMap<String, String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = compose_v2(
            &self.project,
            &self.file,
            &self.vars,
            &["down", "-v", "-t", "1"],
        );
    }
}

/// Run the Compose v2 CLI on the project; returns (success, stdout+stderr).
fn compose_v2(
    project: &str,
    file: &Path,
    vars: &BTreeMap<String, String>,
    args: &[&str],
) -> (bool, String) {
    let out = Command::new(&stack().compose_v2)
        .arg("-p")
        .arg(project)
        .arg("-f")
        .arg(file)
        .args(args)
        .envs(vars)
        .stdin(Stdio::null())
        .output()
        .expect("run docker compose v2");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Make sure the stack's image is on dockerd (the deploy pulls; here the
/// harness does, so the engine's "never pull" rule holds).
async fn ensure_image(docker: &Docker, reference: &str) {
    use futures_util::StreamExt;
    if docker.inspect_image(reference).await.is_ok() {
        return;
    }
    let (repo, tag) = reference.rsplit_once(':').expect("reference has a tag");
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(repo.to_owned()),
        tag: Some(tag.to_owned()),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, Some(registry_credentials()));
    while let Some(item) = stream.next().await {
        item.unwrap_or_else(|e| panic!("pull {reference}: {e}"));
    }
}

/// The production-shaped fixture in a temp dir with the sample env files.
struct Production {
    _dir: tempfile::TempDir,
    file: PathBuf,
    vars: BTreeMap<String, String>,
}

async fn production(docker: &Docker) -> Production {
    let s = stack();
    for image in [
        &s.postgres_image,
        &s.backend_image_a,
        &s.backend_image_b,
        &s.frontend_image_a,
    ] {
        ensure_image(docker, image).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let fixture = repo_root().join("tests/fixtures/runtime");
    let file = dir.path().join("compose.yaml");
    std::fs::copy(fixture.join("compose.yaml"), &file).expect("copy compose file");
    let env_dir = dir.path().join("env");
    std::fs::create_dir(&env_dir).expect("env dir");
    for name in ["backend.env", "frontend.env", "postgres.env"] {
        std::fs::copy(fixture.join("env-sample").join(name), env_dir.join(name))
            .expect("copy env file");
    }
    let vars: BTreeMap<String, String> = [
        ("WAVEMAP_POSTGRES_IMAGE", s.postgres_image.clone()),
        ("WAVEMAP_BACKEND_IMAGE", s.backend_image_a.clone()),
        ("WAVEMAP_FRONTEND_IMAGE", s.frontend_image_a.clone()),
        ("WAVEMAP_ENV_DIR", env_dir.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Production {
        _dir: dir,
        file,
        vars,
    }
}

fn actions(plan: &Plan) -> Vec<(String, Action)> {
    plan.services
        .iter()
        .map(|s| (s.service.clone(), s.action.clone()))
        .collect()
}

/// (service -> (container id, StartedAt)) of the project now.
async fn snapshot(docker: &Docker, project: &str) -> BTreeMap<String, (String, String)> {
    compose::service_states(docker, project)
        .await
        .expect("service states")
        .into_iter()
        .map(|s| {
            (
                s.service,
                (s.container_id, s.started_at.unwrap_or_default()),
            )
        })
        .collect()
}

/// An Engine timestamp (RFC 3339, Go trims the fraction's trailing zeros)
/// as text that sorts in time order: the fraction padded to 9 digits.
fn time_key(stamp: &str) -> String {
    let body = stamp.trim_end_matches('Z');
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    format!("{whole}.{fraction:0<9}")
}

fn exec(container: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "docker exec {container} {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn production_project_converges_hands_over_and_changes_only_what_changed() {
    let docker = docker().await;
    let p = production(&docker).await;
    let project_name = unique_name("compose-prod");
    let _cleanup = Cleanup {
        project: project_name.clone(),
        file: p.file.clone(),
        vars: p.vars.clone(),
    };
    let s = stack();

    // First converge: all three created, in dependency order, then healthy.
    let project = Project::load(&p.file, &project_name, &p.vars).expect("load");
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert_eq!(
        actions(&plan),
        vec![
            ("postgres".into(), Action::Create),
            ("api".into(), Action::Create),
            ("frontend".into(), Action::Create)
        ],
        "{plan}"
    );
    let summary = compose::converge(&docker, &project, &plan)
        .await
        .expect("first converge");
    assert_eq!(summary.created, vec!["postgres", "api", "frontend"]);
    let health = compose::wait_healthy(&docker, &project, Duration::from_secs(120))
        .await
        .expect("healthy");
    assert!(health.services.iter().all(|h| h.ready), "{health:?}");

    let states = compose::service_states(&docker, &project_name)
        .await
        .expect("states");
    let by_service: BTreeMap<&str, &compose::ServiceState> =
        states.iter().map(|s| (s.service.as_str(), s)).collect();
    assert_eq!(by_service.len(), 3);
    for (service, image) in [
        ("postgres", &s.postgres_image),
        ("api", &s.backend_image_a),
        ("frontend", &s.frontend_image_a),
    ] {
        let st = by_service[service];
        assert_eq!(st.container_name, format!("{project_name}-{service}-1"));
        assert_eq!(&st.image, image);
        assert_eq!(st.state, "running");
        assert_eq!(st.health.as_deref(), Some("healthy"));
    }
    // The API was started only after Postgres was healthy, the frontend
    // after the API: start times are in that order.
    let started = |svc: &str| time_key(by_service[svc].started_at.as_deref().unwrap_or_default());
    assert!(started("postgres") < started("api"), "{states:?}");
    assert!(started("api") < started("frontend"), "{states:?}");

    // The real Compose CLIs list the project as their own.
    let (ok, ps) = compose_v2(
        &project_name,
        &p.file,
        &p.vars,
        &["ps", "--format", "{{.Service}} {{.State}} {{.Health}}"],
    );
    assert!(ok, "{ps}");
    for service in ["postgres", "api", "frontend"] {
        assert!(
            ps.lines()
                .any(|l| l.trim() == format!("{service} running healthy")),
            "docker compose ps:\n{ps}"
        );
    }
    let v1 = Command::new(&s.compose_v1)
        .args(["-p", &project_name, "-f"])
        .arg(&p.file)
        .arg("ps")
        .envs(&p.vars)
        .output()
        .expect("docker-compose v1");
    let v1_text = String::from_utf8_lossy(&v1.stdout);
    assert!(
        v1.status.success(),
        "{}",
        String::from_utf8_lossy(&v1.stderr)
    );
    for service in ["postgres", "api", "frontend"] {
        let line = v1_text
            .lines()
            .find(|l| l.starts_with(&format!("{project_name}-{service}-1")))
            .unwrap_or_else(|| panic!("docker-compose ps lists no {service}:\n{v1_text}"));
        assert!(line.contains("Up (healthy)"), "{line}");
    }

    // A second converge touches nothing: same IDs and start times.
    let before = snapshot(&docker, &project_name).await;
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert!(plan.is_noop(), "{plan}");
    let summary = compose::converge(&docker, &project, &plan)
        .await
        .expect("no-op converge");
    assert_eq!(summary.kept, vec!["postgres", "api", "frontend"]);
    assert!(summary.created.is_empty() && summary.recreated.is_empty());
    assert_eq!(snapshot(&docker, &project_name).await, before);

    // Operators' `docker compose up -d` right after: nothing recreated, no
    // volume or network offered for recreation.
    let (ok, up) = compose_v2(&project_name, &p.file, &p.vars, &["up", "-d"]);
    assert!(ok, "{up}");
    assert!(!up.contains("Recreate"), "docker compose up -d:\n{up}");
    // A volume whose config-hash differs makes Compose ask "Volume ...
    // exists but doesn't match configuration ... Recreate (data will be
    // lost)?"; a network's makes it remove and recreate the network.
    assert!(!up.contains("exists but"), "{up}");
    assert!(!up.contains("Removed") && !up.contains("Network"), "{up}");
    assert_eq!(snapshot(&docker, &project_name).await, before, "{up}");

    // Data in the Postgres volume, to prove it survives the API change.
    let pg = format!("{project_name}-postgres-1");
    exec(
        &pg,
        "echo kept > /var/lib/postgresql/data/wavemap-e2e-marker",
    );

    // Changing the API image recreates the API only.
    let mut vars_b = p.vars.clone();
    vars_b.insert("WAVEMAP_BACKEND_IMAGE".into(), s.backend_image_b.clone());
    let project_b = Project::load(&p.file, &project_name, &vars_b).expect("load B");
    let plan = compose::plan(&docker, &project_b).await.expect("plan B");
    assert_eq!(
        actions(&plan),
        vec![
            ("postgres".into(), Action::Keep { running: true }),
            (
                "api".into(),
                Action::Recreate {
                    reason: Reason::Image
                }
            ),
            ("frontend".into(), Action::Keep { running: true })
        ],
        "{plan}"
    );
    let summary = compose::converge(&docker, &project_b, &plan)
        .await
        .expect("converge B");
    assert_eq!(summary.recreated, vec!["api"]);
    compose::wait_healthy(&docker, &project_b, Duration::from_secs(120))
        .await
        .expect("healthy after B");
    let after = snapshot(&docker, &project_name).await;
    assert_eq!(after["postgres"], before["postgres"]);
    assert_eq!(after["frontend"], before["frontend"]);
    assert_ne!(after["api"].0, before["api"].0);
    let api_state = compose::service_states(&docker, &project_name)
        .await
        .expect("states")
        .into_iter()
        .find(|s| s.service == "api")
        .expect("api");
    assert_eq!(api_state.image, s.backend_image_b);
    assert_eq!(
        exec(&pg, "cat /var/lib/postgresql/data/wavemap-e2e-marker").trim(),
        "kept"
    );

    // Compose agrees with the recreated API too.
    let (ok, up) = compose_v2(&project_name, &p.file, &vars_b, &["up", "-d"]);
    assert!(ok, "{up}");
    assert_eq!(snapshot(&docker, &project_name).await, after, "{up}");

    // A service removed from the file is removed as an orphan.
    let text = std::fs::read_to_string(&p.file).expect("read compose file");
    let start = text.find("\n  frontend:").expect("frontend in fixture");
    let end = text[start..].find("\nvolumes:").expect("volumes after") + start;
    let without_frontend = format!("{}{}", &text[..start], &text[end..]);
    let smaller = p.file.with_file_name("compose.smaller.yaml");
    std::fs::write(&smaller, without_frontend).expect("write smaller file");
    let project_small = Project::load(&smaller, &project_name, &vars_b).expect("load smaller");
    let plan = compose::plan(&docker, &project_small).await.expect("plan");
    assert_eq!(
        actions(&plan),
        vec![
            ("postgres".into(), Action::Keep { running: true }),
            ("api".into(), Action::Keep { running: true }),
            ("frontend".into(), Action::Remove)
        ],
        "{plan}"
    );
    let summary = compose::converge(&docker, &project_small, &plan)
        .await
        .expect("converge smaller");
    assert_eq!(summary.removed, vec!["frontend"]);
    let left = snapshot(&docker, &project_name).await;
    assert_eq!(
        left.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["api", "postgres"]
    );
    assert_eq!(left["postgres"], before["postgres"]);
}

#[tokio::test]
async fn the_agent_adopts_a_project_compose_created_as_a_no_op() {
    let docker = docker().await;
    let p = production(&docker).await;
    let project_name = unique_name("compose-adopt");
    let _cleanup = Cleanup {
        project: project_name.clone(),
        file: p.file.clone(),
        vars: p.vars.clone(),
    };
    let (ok, up) = compose_v2(
        &project_name,
        &p.file,
        &p.vars,
        &["up", "-d", "--wait", "--wait-timeout", "120"],
    );
    assert!(ok, "docker compose up:\n{up}");
    let before = snapshot(&docker, &project_name).await;

    let project = Project::load(&p.file, &project_name, &p.vars).expect("load");
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert!(plan.is_noop(), "{plan}");
    let summary = compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    assert_eq!(summary.kept.len(), 3);
    compose::wait_healthy(&docker, &project, Duration::from_secs(60))
        .await
        .expect("healthy");
    assert_eq!(snapshot(&docker, &project_name).await, before);

    // And Compose's labels are what the agent computes.
    for state in compose::service_states(&docker, &project_name)
        .await
        .expect("states")
    {
        let info = docker
            .inspect_container(&state.container_id, None)
            .await
            .expect("inspect");
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        let service = project.service(&state.service).expect("service");
        assert_eq!(
            labels.get("com.docker.compose.config-hash"),
            Some(&compose::hash::service_hash(service)),
            "{}",
            state.service
        );
    }
    let volume = docker
        .inspect_volume(&format!("{project_name}_pgdata"))
        .await
        .expect("volume");
    assert_eq!(
        volume.labels.get("com.docker.compose.config-hash"),
        Some(&compose::hash::volume_hash(&project.volumes["pgdata"]))
    );
}

/// A small project on the stack's busybox image.
struct Small {
    dir: tempfile::TempDir,
    file: PathBuf,
    project: String,
    vars: BTreeMap<String, String>,
}

async fn small(prefix: &str, services_yaml: &str) -> Small {
    let docker = docker().await;
    let image = stack().busybox_image.clone();
    ensure_image(&docker, &image).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, services_yaml).expect("write compose file");
    let vars = BTreeMap::from([("E2E_BUSYBOX".to_owned(), image)]);
    Small {
        dir,
        file,
        project: unique_name(prefix),
        vars,
    }
}

impl Small {
    fn cleanup(&self) -> Cleanup {
        Cleanup {
            project: self.project.clone(),
            file: self.file.clone(),
            vars: self.vars.clone(),
        }
    }
    fn load(&self) -> Project {
        Project::load(&self.file, &self.project, &self.vars).expect("load")
    }
}

#[tokio::test]
async fn config_hash_equals_compose_for_env_files_anchors_interpolation_and_binds() {
    let docker = docker().await;
    let s = small(
        "compose-hash",
        r#"
x-base: &base
  image: ${E2E_BUSYBOX}
  restart: unless-stopped
  logging:
    driver: json-file
    options: {max-size: 1m}
services:
  api:
    <<: *base
    command: sleep 3600
    env_file: [app.env]
    environment:
      - FROM_COMPOSE=${E2E_UNSET:-default}
      - LITERAL=$${HOME}
    volumes:
      - ./conf:/conf:ro
      - data:/data
    healthcheck:
      test: ["CMD-SHELL", "test -d /conf"]
      interval: 1s
      timeout: 2s
      start_period: 1s
    ports: ["127.0.0.1::8080"]
    extra_hosts: ["db.internal:10.1.2.3"]
    stop_grace_period: 3s
  worker:
    <<: *base
    command: ["sh", "-c", "sleep 3600"]
    depends_on:
      api:
        condition: service_healthy
    labels: [role=worker]
volumes:
  data:
"#,
    )
    .await;
    std::fs::write(
        s.dir.path().join("app.env"),
        "A=1\nQUOTED=\"two words\"\nSINGLE='$NOT'\n",
    )
    .expect("env file");
    let _cleanup = s.cleanup();
    let (ok, out) = compose_v2(&s.project, &s.file, &s.vars, &["create"]);
    assert!(ok, "{out}");
    let project = s.load();
    for service in &project.services {
        let info = docker
            .inspect_container(&project.container_name(&service.name), None)
            .await
            .expect("inspect");
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        assert_eq!(
            labels.get("com.docker.compose.config-hash"),
            Some(&compose::hash::service_hash(service)),
            "service {}",
            service.name
        );
    }
    // `config --hash` agrees for the service without env_file; for env_file
    // services it hashes the file list, not the contents `up` hashes.
    let (ok, hashes) = compose_v2(&s.project, &s.file, &s.vars, &["config", "--hash", "*"]);
    assert!(ok, "{hashes}");
    let worker = project.service("worker").expect("worker");
    assert!(
        hashes.contains(&format!("worker {}", compose::hash::service_hash(worker))),
        "{hashes}"
    );
    // With Compose's containers in place, the agent keeps them (created,
    // not running: it would only start them).
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert_eq!(
        actions(&plan),
        vec![
            ("api".into(), Action::Keep { running: false }),
            ("worker".into(), Action::Keep { running: false })
        ]
    );
}

#[tokio::test]
async fn a_failing_healthcheck_fails_at_the_deadline_with_its_output() {
    let docker = docker().await;
    let s = small(
        "compose-unhealthy",
        r#"
services:
  sick:
    image: ${E2E_BUSYBOX}
    command: sleep 3600
    healthcheck:
      test: ["CMD-SHELL", "echo database-not-reachable; exit 1"]
      interval: 1s
      retries: 1
  recovers:
    image: ${E2E_BUSYBOX}
    command: sh -c 'sleep 4; touch /tmp/ok; sleep 3600'
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ok"]
      interval: 1s
      retries: 1
"#,
    )
    .await;
    let _cleanup = s.cleanup();
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    let err = compose::wait_healthy(&docker, &project, Duration::from_secs(12))
        .await
        .expect_err("sick never becomes healthy");
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with("health failed: not healthy after 12s"),
        "{text}"
    );
    assert!(text.contains("sick: running, unhealthy"), "{text}");
    assert!(text.contains("database-not-reachable"), "{text}");
    // `recovers` was unhealthy for a while and then passed: not named.
    assert!(!text.contains("recovers"), "{text}");
}

#[tokio::test]
async fn one_shot_dependencies_run_to_completion_before_their_dependents() {
    let docker = docker().await;
    let s = small(
        "compose-oneshot",
        r#"
services:
  migrate:
    image: ${E2E_BUSYBOX}
    command: sh -c 'sleep 1; echo migrated'
  app:
    image: ${E2E_BUSYBOX}
    command: sleep 3600
    depends_on:
      migrate:
        condition: service_completed_successfully
"#,
    )
    .await;
    let _cleanup = s.cleanup();
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    let report = compose::wait_healthy(&docker, &project, Duration::from_secs(30))
        .await
        .expect("ready");
    let migrate = report
        .services
        .iter()
        .find(|h| h.service == "migrate")
        .expect("migrate");
    assert_eq!(
        (migrate.state.as_str(), migrate.exit_code),
        ("exited", Some(0))
    );
    let states = compose::service_states(&docker, &s.project)
        .await
        .expect("states");
    let started = |svc: &str| {
        states
            .iter()
            .find(|x| x.service == svc)
            .and_then(|x| x.started_at.as_deref().map(time_key))
            .unwrap_or_default()
    };
    assert!(started("migrate") < started("app"));

    // A failing one-shot stops the converge with its exit status.
    let failing = s.dir.path().join("failing.yaml");
    std::fs::write(
        &failing,
        std::fs::read_to_string(&s.file)
            .expect("read")
            .replace("echo migrated", "exit 3"),
    )
    .expect("write");
    let project = Project::load(&failing, &s.project, &s.vars).expect("load failing");
    let plan = compose::plan(&docker, &project).await.expect("plan");
    let err = compose::converge(&docker, &project, &plan)
        .await
        .expect_err("migrate fails");
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().starts_with(
            "converge failed: app waits on migrate: service migrate exited with status 3"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_image_fails_the_converge_before_anything_changes() {
    let docker = docker().await;
    let s = small(
        "compose-noimage",
        "services:\n  ghost:\n    image: 127.0.0.1:5000/wavemap/never-pushed:sha-0\n  real:\n    image: ${E2E_BUSYBOX}\n    command: sleep 3600\n",
    )
    .await;
    let _cleanup = s.cleanup();
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert!(
        plan.to_string().contains("image not present locally"),
        "{plan}"
    );
    let err = compose::converge(&docker, &project, &plan)
        .await
        .expect_err("missing image");
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(text.starts_with("converge failed:"), "{text}");
    assert!(
        text.contains("ghost (127.0.0.1:5000/wavemap/never-pushed:sha-0)"),
        "{text}"
    );
    assert!(snapshot(&docker, &s.project).await.is_empty());
}

#[tokio::test]
async fn a_replacement_that_cannot_be_created_leaves_the_old_container_running() {
    let docker = docker().await;
    let s = small(
        "compose-safe",
        "services:\n  app:\n    image: ${E2E_BUSYBOX}\n    command: sleep 3600\n",
    )
    .await;
    let _cleanup = s.cleanup();
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    let before = snapshot(&docker, &s.project).await;

    // A bind mount of a host path that does not exist, with
    // create_host_path off: the Engine refuses to create the replacement.
    let broken = s.dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "services:\n  app:\n    image: ${E2E_BUSYBOX}\n    command: sleep 3600\n    volumes:\n      - type: bind\n        source: /nonexistent/wavemap-e2e\n        target: /x\n        bind:\n          create_host_path: false\n",
    )
    .expect("write");
    let project = Project::load(&broken, &s.project, &s.vars).expect("load broken");
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert_eq!(
        actions(&plan),
        vec![(
            "app".into(),
            Action::Recreate {
                reason: Reason::Config
            }
        )]
    );
    let err = compose::converge(&docker, &project, &plan)
        .await
        .expect_err("create fails");
    assert!(
        err.to_string()
            .starts_with("converge failed: create container"),
        "{err}"
    );
    // The old container still runs under its name; no temporary one is left
    // behind as the service's container.
    assert_eq!(snapshot(&docker, &s.project).await, before);
    let states = compose::service_states(&docker, &s.project)
        .await
        .expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].container_name, format!("{}-app-1", s.project));
    assert_eq!(states[0].state, "running");
}

#[tokio::test]
async fn changing_an_env_file_recreates_only_its_service_and_compose_agrees() {
    let docker = docker().await;
    let s = small(
        "compose-env",
        "services:\n  api:\n    image: ${E2E_BUSYBOX}\n    command: sleep 3600\n    env_file: api.env\n  other:\n    image: ${E2E_BUSYBOX}\n    command: sleep 3600\n",
    )
    .await;
    std::fs::write(s.dir.path().join("api.env"), "TOKEN='first'\n").expect("env");
    let _cleanup = s.cleanup();
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    let before = snapshot(&docker, &s.project).await;

    std::fs::write(s.dir.path().join("api.env"), "TOKEN='second $value'\n").expect("env");
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert_eq!(
        actions(&plan),
        vec![
            (
                "api".into(),
                Action::Recreate {
                    reason: Reason::Env
                }
            ),
            ("other".into(), Action::Keep { running: true })
        ]
    );
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    let after = snapshot(&docker, &s.project).await;
    assert_ne!(after["api"].0, before["api"].0);
    assert_eq!(after["other"], before["other"]);
    let env = docker
        .inspect_container(&after["api"].0, None)
        .await
        .expect("inspect")
        .config
        .and_then(|c| c.env)
        .unwrap_or_default();
    assert!(env.contains(&"TOKEN=second $value".to_owned()), "{env:?}");

    // Compose computes the same hash from the new file contents.
    let (ok, up) = compose_v2(&s.project, &s.file, &s.vars, &["up", "-d"]);
    assert!(ok, "{up}");
    assert_eq!(snapshot(&docker, &s.project).await, after, "{up}");
}

/// Removes an external volume the test created (Compose never removes one).
struct ExternalVolume(String);

impl Drop for ExternalVolume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

/// What an operator compares between two containers of one service: the
/// settings the production keys map to.
async fn runtime_settings(docker: &Docker, container: &str) -> serde_json::Value {
    let info = docker
        .inspect_container(container, None)
        .await
        .unwrap_or_else(|e| panic!("inspect {container}: {e}"));
    let host = info.host_config.unwrap_or_default();
    let config = info.config.unwrap_or_default();
    let mut mounts: Vec<(String, String, String, bool)> = info
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.destination.unwrap_or_default(),
                m.typ.map(|t| t.to_string()).unwrap_or_default(),
                m.name.or(m.source).unwrap_or_default(),
                m.rw.unwrap_or(true),
            )
        })
        .collect();
    mounts.sort();
    let mut exposed = config.exposed_ports.unwrap_or_default();
    exposed.sort();
    let mut tmpfs: Vec<(String, String)> = host.tmpfs.unwrap_or_default().into_iter().collect();
    tmpfs.sort();
    serde_json::json!({
        "image": config.image,
        "cmd": config.cmd,
        "env": config.env.map(|mut e| { e.sort(); e }),
        "exposed": exposed,
        "shm_size": host.shm_size,
        // Compose walks a Go map: its ulimits come in any order.
        "ulimits": host.ulimits.map(|u| {
            let mut u: Vec<_> = u.into_iter().map(|l| (l.name, l.soft, l.hard)).collect();
            u.sort();
            u
        }),
        "init": host.init,
        "tmpfs": tmpfs,
        "memory": host.memory,
        "memory_reservation": host.memory_reservation,
        "nano_cpus": host.nano_cpus,
        "security_opt": host.security_opt,
        "readonly_rootfs": host.readonly_rootfs,
        "mounts": mounts,
        "name": info.name,
    })
}

#[tokio::test]
async fn a_production_shaped_file_hands_over_both_ways_with_container_name_secrets_and_limits() {
    let docker = docker().await;
    let image = stack().busybox_image.clone();
    ensure_image(&docker, &image).await;
    let corpus = repo_root().join("tests/fixtures/compose-corpus");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("compose.yaml");
    std::fs::copy(corpus.join("23-production-api.yaml"), &file).expect("copy the fixture");
    std::fs::create_dir(dir.path().join("secrets")).expect("secrets dir");
    for secret in ["db_password.txt", "api_key.txt"] {
        std::fs::copy(
            corpus.join("secrets").join(secret),
            dir.path().join("secrets").join(secret),
        )
        .expect("copy a secret");
    }
    let prefix = unique_name("handover");
    let vars: BTreeMap<String, String> = [
        ("WAVEMAP_DB_IMAGE", image.clone()),
        ("WAVEMAP_BACKEND_IMAGE", image.clone()),
        ("CORPUS_PREFIX", prefix.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let _volume = ExternalVolume(format!("{prefix}-db-data"));
    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(format!("{prefix}-db-data")),
            ..Default::default()
        })
        .await
        .expect("create the external volume");
    let _cleanup = Cleanup {
        project: prefix.clone(),
        file: file.clone(),
        vars: vars.clone(),
    };

    // Agent first.
    let project = Project::load(&file, &prefix, &vars).expect("load");
    assert_eq!(project.container_name("api"), format!("{prefix}-api"));
    let plan = compose::plan(&docker, &project).await.expect("plan");
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    compose::wait_healthy(&docker, &project, Duration::from_secs(60))
        .await
        .expect("running");
    let agent_made = snapshot(&docker, &prefix).await;
    assert_eq!(agent_made.len(), 2, "{agent_made:?}");
    let agent_api = runtime_settings(&docker, &format!("{prefix}-api")).await;
    let agent_db = runtime_settings(&docker, &format!("{prefix}-db")).await;

    // What the keys asked for is what runs.
    assert_eq!(agent_db["shm_size"], 268_435_456);
    assert_eq!(
        agent_db["ulimits"],
        serde_json::json!([["nofile", 4096, 8192], ["nproc", 4096, 4096]])
    );
    assert_eq!(agent_db["exposed"], serde_json::json!(["5432"]));
    assert_eq!(agent_api["init"], true);
    assert_eq!(agent_api["readonly_rootfs"], true);
    assert_eq!(
        agent_api["tmpfs"],
        serde_json::json!([["/tmp", "size=64m"]])
    );
    assert_eq!(agent_api["memory"], 268_435_456);
    assert_eq!(agent_api["memory_reservation"], 67_108_864);
    assert_eq!(agent_api["nano_cpus"], 500_000_000);
    assert_eq!(
        agent_api["security_opt"],
        serde_json::json!(["no-new-privileges:true"])
    );
    assert_eq!(
        exec(&format!("{prefix}-db"), "cat /run/secrets/db_password"),
        "corpus-not-a-real-password\n"
    );
    assert_eq!(
        exec(&format!("{prefix}-api"), "cat /run/secrets/api_key"),
        "corpus-api-key\n"
    );
    let db_volume = agent_db["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m[0] == "/var/lib/postgresql/data")
        .cloned()
        .expect("the data volume is mounted");
    assert_eq!(db_volume[2], format!("{prefix}-db-data"));

    // Compose takes over and recreates nothing.
    let (ok, up) = compose_v2(&prefix, &file, &vars, &["up", "-d"]);
    assert!(ok, "docker compose up:\n{up}");
    assert_eq!(
        snapshot(&docker, &prefix).await,
        agent_made,
        "docker compose up -d recreated or restarted a container the agent made:\n{up}"
    );

    // The reverse: Compose creates, the agent keeps everything.
    let (ok, down) = compose_v2(&prefix, &file, &vars, &["down", "-t", "1"]);
    assert!(ok, "docker compose down:\n{down}");
    let (ok, up) = compose_v2(&prefix, &file, &vars, &["up", "-d"]);
    assert!(ok, "docker compose up:\n{up}");
    let compose_made = snapshot(&docker, &prefix).await;
    assert_eq!(compose_made.len(), 2, "{compose_made:?}");
    assert_ne!(compose_made, agent_made);
    // Compose's containers carry the same settings as the agent's.
    assert_eq!(
        runtime_settings(&docker, &format!("{prefix}-api")).await,
        agent_api
    );
    assert_eq!(
        runtime_settings(&docker, &format!("{prefix}-db")).await,
        agent_db
    );
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert!(
        plan.is_noop(),
        "the agent would change Compose's project:\n{plan}"
    );
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    assert_eq!(snapshot(&docker, &prefix).await, compose_made);
}

/// `runtime deploy` arguments for a release of the stack's registry (the
/// images need not exist: these runs stop before any pull).
fn deploy_args(execute: bool) -> Vec<String> {
    let s = stack();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let args = release_args(
        "deploy",
        &format!("{}/wavemap/backend:sha-{sha}", s.registry),
        &format!("{}/wavemap/frontend:sha-{sha}", s.registry),
        sha,
        "v-compose-check",
    );
    if execute {
        with_execute(args)
    } else {
        args
    }
}

/// Nothing of the project exists on the host: no env dir, no `.env` beside
/// the Compose file, no container, no recorded release.
fn assert_host_untouched(td: &wavemap_e2e::TestDir) {
    assert!(!td.env_dir().exists(), "env files were written");
    let dotenv = td.compose_file().with_file_name(".env");
    assert!(!dotenv.exists(), "{} was written", dotenv.display());
    assert!(!td.state_dir().join("current-release.json").exists());
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", td.name),
        ])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "containers were created"
    );
}

#[test]
fn a_dry_run_with_a_typo_key_exits_2_naming_it_before_env_files_exist() {
    let td = wavemap_e2e::TestDir::new("compose-typo");
    std::fs::create_dir_all(td.compose_file().parent().expect("dir")).expect("mkdir");
    std::fs::write(
        td.compose_file(),
        "services:\n  api:\n    image: ${WAVEMAP_BACKEND_IMAGE}\n    env_file: ${WAVEMAP_ENV_DIR}/backend.env\n    enviroment:\n      PORT: \"8080\"\n  frontend:\n    image: ${WAVEMAP_FRONTEND_IMAGE}\n    env_file: ${WAVEMAP_ENV_DIR}/frontend.env\n",
    )
    .expect("write compose file");
    for execute in [false, true] {
        let out = td.run(deploy_args(execute));
        assert_eq!(out.code, 2, "execute={execute}: {}", out.dump());
        assert!(
            out.stderr
                .contains("unknown key `enviroment` at services.api.enviroment")
                && out.stderr.contains("did you mean `environment`?"),
            "{}",
            out.dump()
        );
        assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("failed"));
        assert_eq!(
            out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
            Some("converge")
        );
        assert_host_untouched(&td);
    }

    // Fixed, the same dry run plans (the env files still do not exist; the
    // SSM prefix is empty here, which the render allows only when asked).
    let text = std::fs::read_to_string(td.compose_file()).expect("read");
    std::fs::write(td.compose_file(), text.replace("enviroment", "environment")).expect("write");
    let mut args = deploy_args(false);
    args.push("--allow-empty".into());
    let out = td.run(args);
    assert_eq!(out.code, 0, "{}", out.dump());
    assert_eq!(out.marker("WAVEMAP_RUNTIME_DEPLOY_RESULT"), Some("planned"));
    assert_host_untouched(&td);
}

#[test]
fn a_deploy_whose_compose_file_lacks_the_frontend_service_exits_2_and_changes_nothing() {
    let td = wavemap_e2e::TestDir::new("compose-nofront");
    std::fs::create_dir_all(td.compose_file().parent().expect("dir")).expect("mkdir");
    std::fs::write(
        td.compose_file(),
        "services:\n  api:\n    image: ${WAVEMAP_BACKEND_IMAGE}\n  web:\n    image: ${WAVEMAP_FRONTEND_IMAGE}\n",
    )
    .expect("write compose file");
    for execute in [false, true] {
        let out = td.run(deploy_args(execute));
        assert_eq!(out.code, 2, "execute={execute}: {}", out.dump());
        assert!(
            out.stderr.contains("runtime.frontend_service")
                && out.stderr.contains("service `frontend` is not in")
                && out.stderr.contains("api, web"),
            "{}",
            out.dump()
        );
        assert_host_untouched(&td);
    }

    // A frontend that does not take its image from the variable is refused too.
    std::fs::write(
        td.compose_file(),
        "services:\n  api:\n    image: ${WAVEMAP_BACKEND_IMAGE}\n  frontend:\n    image: nginx:1.27\n",
    )
    .expect("write compose file");
    let out = td.run(deploy_args(true));
    assert_eq!(out.code, 2, "{}", out.dump());
    assert!(
        out.stderr.contains("services.frontend.image")
            && out.stderr.contains("${WAVEMAP_FRONTEND_IMAGE}"),
        "{}",
        out.dump()
    );
    assert_host_untouched(&td);
}

#[tokio::test]
async fn inline_secrets_and_configs_are_copied_in_as_compose_does_and_hand_over() {
    let docker = docker().await;
    let mut s = small(
        "compose-inline",
        r#"
services:
  app:
    image: ${E2E_BUSYBOX}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    secrets:
      - token
      - source: token
        target: token-ro
        mode: 0400
    configs:
      - source: site
        target: /etc/site.conf
secrets:
  token:
    environment: E2E_TOKEN
configs:
  site:
    content: |
      listen 80
      host ${E2E_HOST}
"#,
    )
    .await;
    s.vars
        .insert("E2E_TOKEN".into(), "inline-token-9c1f2e".into());
    s.vars.insert("E2E_HOST".into(), "app.example.test".into());
    let _cleanup = s.cleanup();
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    let container = format!("{}-app-1", s.project);
    let read = |path: &str| exec(&container, &format!("cat {path}"));
    let listing = |path: &str| exec(&container, &format!("stat -c '%a %u' {path}"));
    assert_eq!(read("/run/secrets/token"), "inline-token-9c1f2e");
    assert_eq!(listing("/run/secrets/token").trim(), "444 0");
    assert_eq!(read("/run/secrets/token-ro"), "inline-token-9c1f2e");
    assert_eq!(listing("/run/secrets/token-ro").trim(), "400 0");
    assert_eq!(read("/etc/site.conf"), "listen 80\nhost app.example.test\n");
    let agent_made = snapshot(&docker, &s.project).await;

    // Compose keeps the agent's container, and makes the same files.
    let (ok, up) = compose_v2(&s.project, &s.file, &s.vars, &["up", "-d"]);
    assert!(ok, "{up}");
    assert_eq!(snapshot(&docker, &s.project).await, agent_made, "{up}");
    let (ok, out) = compose_v2(
        &s.project,
        &s.file,
        &s.vars,
        &["up", "-d", "--force-recreate"],
    );
    assert!(ok, "{out}");
    assert_ne!(snapshot(&docker, &s.project).await, agent_made);
    assert_eq!(read("/run/secrets/token"), "inline-token-9c1f2e");
    assert_eq!(listing("/run/secrets/token").trim(), "444 0");
    assert_eq!(listing("/run/secrets/token-ro").trim(), "400 0");
    assert_eq!(read("/etc/site.conf"), "listen 80\nhost app.example.test\n");
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert!(plan.is_noop(), "{plan}");
}

#[tokio::test]
async fn a_static_address_on_an_ipam_network_hands_over_both_ways() {
    let docker = docker().await;
    // A subnet of its own: other tests' networks must not overlap it.
    let octet = 64 + std::process::id() % 128;
    let yaml = format!(
        r#"
services:
  app:
    image: ${{E2E_BUSYBOX}}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    networks:
      back:
        ipv4_address: 10.231.{octet}.20
        aliases: [app.internal]
networks:
  back:
    enable_ipv6: false
    ipam:
      config:
        - subnet: 10.231.{octet}.0/24
          gateway: 10.231.{octet}.1
    labels:
      purpose: e2e
"#
    );
    let s = small("compose-ipam", &yaml).await;
    let _cleanup = s.cleanup();
    let project = s.load();
    let plan = compose::plan(&docker, &project).await.expect("plan");
    compose::converge(&docker, &project, &plan)
        .await
        .expect("converge");
    let container = format!("{}-app-1", s.project);
    let address = || exec(&container, "ip -4 -o addr show eth0 | awk '{print $4}'");
    assert_eq!(address().trim(), format!("10.231.{octet}.20/24"));
    let agent_made = snapshot(&docker, &s.project).await;
    let (ok, up) = compose_v2(&s.project, &s.file, &s.vars, &["up", "-d"]);
    assert!(ok, "{up}");
    assert_eq!(snapshot(&docker, &s.project).await, agent_made, "{up}");

    // Compose from scratch; the agent keeps it all.
    let (ok, down) = compose_v2(&s.project, &s.file, &s.vars, &["down", "-t", "1"]);
    assert!(ok, "{down}");
    let (ok, up) = compose_v2(&s.project, &s.file, &s.vars, &["up", "-d"]);
    assert!(ok, "{up}");
    assert_eq!(address().trim(), format!("10.231.{octet}.20/24"));
    let plan = compose::plan(&docker, &project).await.expect("plan");
    assert!(plan.is_noop(), "{plan}");
    let network = docker
        .inspect_network(
            &format!("{}_back", s.project),
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("network");
    assert_eq!(
        network
            .labels
            .unwrap_or_default()
            .get("com.docker.compose.config-hash"),
        Some(&compose::hash::network_hash(&project.networks["back"]))
    );
}

/// The project's containers as `docker ps` (not the agent) lists them:
/// name -> (id, container-number label).
fn listed_by_docker(project: &str) -> BTreeMap<String, (String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--format",
            "{{.Names}}\t{{.ID}}\t{{.Label \"com.docker.compose.container-number\"}}",
        ])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.to_owned(),
                (f.next()?.to_owned(), f.next()?.to_owned()),
            ))
        })
        .collect()
}

async fn converge_file(docker: &Docker, s: &Small) -> Plan {
    let project = s.load();
    let plan = compose::plan(docker, &project).await.expect("plan");
    compose::converge(docker, &project, &plan)
        .await
        .expect("converge");
    plan
}

/// `docker compose up -d --no-build` after the agent: Compose must find
/// every container current (same ids before and after).
fn compose_recreates_nothing(s: &Small, when: &str) {
    let before = listed_by_docker(&s.project);
    let (ok, out) = compose_v2(
        &s.project,
        &s.file,
        &s.vars,
        &["up", "-d", "--no-build", "--pull", "never"],
    );
    assert!(ok, "{when}: docker compose up: {out}");
    assert_eq!(
        listed_by_docker(&s.project),
        before,
        "{when}: Compose v2 recreated, added or removed containers: {out}"
    );
}

fn replicas_file(n: u32) -> String {
    format!(
        r#"
services:
  api:
    image: ${{E2E_BUSYBOX}}
    command: ["sh", "-c", "sleep 3600"]
  worker:
    image: ${{E2E_BUSYBOX}}
    command: ["sh", "-c", "touch /tmp/ready; sleep 3600"]
    deploy:
      replicas: {n}
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
"#
    )
}

#[tokio::test]
async fn a_worker_scales_3_to_1_to_3_with_compose_names_and_compose_agrees() {
    let docker = docker().await;
    let text = replicas_file(3);
    let s = small("compose-scale", &text).await;
    let _cleanup = s.cleanup();
    let p = &s.project;
    let names = |numbers: &[u32]| -> Vec<String> {
        let mut v: Vec<String> = numbers
            .iter()
            .map(|n| format!("{p}-worker-{n}"))
            .chain([format!("{p}-api-1")])
            .collect();
        v.sort();
        v
    };

    converge_file(&docker, &s).await;
    let three = listed_by_docker(p);
    assert_eq!(three.keys().cloned().collect::<Vec<_>>(), names(&[1, 2, 3]));
    for n in 1..=3 {
        assert_eq!(three[&format!("{p}-worker-{n}")].1, n.to_string());
    }
    // Health gating waits for every replica.
    let health = compose::wait_healthy(&docker, &s.load(), Duration::from_secs(60))
        .await
        .expect("every replica healthy");
    let workers: Vec<_> = health
        .services
        .iter()
        .filter(|h| h.service == "worker")
        .collect();
    assert_eq!(workers.len(), 3, "{health:?}");
    assert!(workers
        .iter()
        .all(|h| h.ready && h.health.as_deref() == Some("healthy")));
    compose_recreates_nothing(&s, "at 3 replicas");

    // 3 -> 1: the highest numbers go, first 3 then 2; worker-1 is kept.
    std::fs::write(&s.file, text.replace("replicas: 3", "replicas: 1")).expect("write");
    let plan = converge_file(&docker, &s).await;
    let removed: Vec<String> = plan
        .services
        .iter()
        .filter(|e| e.action == Action::Remove)
        .filter_map(|e| e.container.as_ref().map(|c| c.name.clone()))
        .collect();
    assert_eq!(
        removed,
        vec![format!("{p}-worker-3"), format!("{p}-worker-2")]
    );
    let one = listed_by_docker(p);
    assert_eq!(one.keys().cloned().collect::<Vec<_>>(), names(&[1]));
    assert_eq!(
        one[&format!("{p}-worker-1")],
        three[&format!("{p}-worker-1")],
        "worker-1 was recreated"
    );
    compose_recreates_nothing(&s, "after scaling to 1");

    // 1 -> 3: replicas 2 and 3 are created, worker-1 and api are kept.
    std::fs::write(&s.file, &text).expect("write");
    converge_file(&docker, &s).await;
    let again = listed_by_docker(p);
    assert_eq!(again.keys().cloned().collect::<Vec<_>>(), names(&[1, 2, 3]));
    assert_eq!(
        again[&format!("{p}-worker-1")],
        three[&format!("{p}-worker-1")]
    );
    assert_eq!(again[&format!("{p}-api-1")], three[&format!("{p}-api-1")]);
    compose_recreates_nothing(&s, "after scaling back to 3");
    // And the agent, after Compose's `up`, has nothing to do.
    let plan = compose::plan(&docker, &s.load()).await.expect("plan");
    assert!(plan.is_noop(), "{plan}");
}

#[tokio::test]
async fn an_anonymous_volume_keeps_its_data_across_an_image_change() {
    let docker = docker().await;
    let s = small(
        "compose-anon",
        r#"
services:
  app:
    image: ${E2E_APP_IMAGE}
    command: ["sh", "-c", "sleep 3600"]
    volumes:
      - /app/node_modules
      - type: volume
        target: /app/cache
"#,
    )
    .await;
    let _cleanup = s.cleanup();
    let base = stack().busybox_image.clone();
    let second = format!("wavemap-e2e/{}:v2", s.project);
    let second_id =
        wavemap_e2e::build_image(&second, &format!("FROM {base}\nLABEL v=2\n"), &[]).await;
    let with_image = |image: &str| -> Small {
        let mut vars = s.vars.clone();
        vars.insert("E2E_APP_IMAGE".into(), image.to_owned());
        Small {
            dir: tempfile::tempdir().expect("dir"),
            file: s.file.clone(),
            project: s.project.clone(),
            vars,
        }
    };
    let first = with_image(&base);
    let _first_cleanup = first.cleanup();
    converge_file(&docker, &first).await;
    let name = format!("{}-app-1", s.project);
    exec(
        &name,
        "echo kept-1 > /app/node_modules/marker; echo kept-2 > /app/cache/marker",
    );
    let mounts = |id: &str| -> BTreeMap<String, String> {
        let out = Command::new("docker")
            .args([
                "inspect",
                id,
                "--format",
                "{{range .Mounts}}{{.Destination}}={{.Name}}\n{{end}}",
            ])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    };
    let before = mounts(&name);
    assert_eq!(before.len(), 2, "{before:?}");

    // The image changes: the container is recreated, the anonymous volumes
    // are the old container's (Compose reattaches them the same way).
    let upgraded = with_image(&second);
    let plan = converge_file(&docker, &upgraded).await;
    assert_eq!(
        actions(&plan),
        vec![(
            "app".into(),
            Action::Recreate {
                reason: Reason::Image
            }
        )]
    );
    let info = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect");
    assert_eq!(info.image.as_deref(), Some(second_id.as_str()));
    assert_eq!(
        mounts(&name),
        before,
        "the anonymous volumes were not reattached"
    );
    assert_eq!(
        exec(&name, "cat /app/node_modules/marker /app/cache/marker"),
        "kept-1\nkept-2\n"
    );
    // Compose v2 finds the recreated container current.
    compose_recreates_nothing(&upgraded, "after the image change");
    let _ = Command::new("docker").args(["rmi", &second]).output();
}
