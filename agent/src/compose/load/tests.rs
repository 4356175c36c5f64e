//! The loader's unit tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::compose::model::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load_text(text: &str) -> Result<Project, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "compose.yaml", text);
    load(&path, "unit", &BTreeMap::new())
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_supported_service_key_lands_in_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.env", "FROM_FILE=1\nSHARED=file\n");
    let path = write(
        dir.path(),
        "compose.yaml",
        r#"
services:
  db:
    image: postgres:15
  api:
    image: registry.example/api:sha-1
    command: /app/server --port "80 80"
    entrypoint: ["/sbin/tini", "--"]
    environment:
      SHARED: env
      NUM: 5
    env_file: app.env
    ports: ["127.0.0.1:8080:80", "9000/udp"]
    volumes:
      - data:/data:ro
      - ./conf:/conf
    networks:
      back:
        aliases: [api-alias]
    depends_on:
      db:
        condition: service_healthy
        restart: true
    healthcheck:
      test: wget -q http://localhost/health
      interval: 5s
      timeout: 2s
      retries: 3
      start_period: 1m
    restart: on-failure:5
    labels: [team=web]
    user: "1000"
    working_dir: /app
    stop_grace_period: 1m30s
    logging:
      driver: json-file
      options: {max-size: 10m}
    extra_hosts: ["db.internal:10.0.0.5"]
  host:
    image: busybox
    network_mode: host
volumes:
  data:
    labels: {purpose: db}
networks:
  back:
    driver: bridge
    internal: true
"#,
    );
    let project = load(&path, "unit", &BTreeMap::new()).unwrap();
    let api = project.service("api").unwrap();
    assert_eq!(api.image, "registry.example/api:sha-1");
    assert_eq!(
        api.command.as_deref(),
        Some(&["/app/server".to_owned(), "--port".into(), "80 80".into()][..])
    );
    assert_eq!(
        api.entrypoint.as_deref(),
        Some(&["/sbin/tini".to_owned(), "--".into()][..])
    );
    assert_eq!(api.environment.get("SHARED"), Some(&Some("env".into())));
    assert_eq!(api.environment.get("FROM_FILE"), Some(&Some("1".into())));
    assert_eq!(api.environment.get("NUM"), Some(&Some("5".into())));
    assert_eq!(
        api.ports,
        vec![
            Port {
                host_ip: Some("127.0.0.1".into()),
                target: 80,
                published: Some("8080".into()),
                protocol: "tcp".into(),
                mode: "ingress".into(),
            },
            Port {
                host_ip: None,
                target: 9000,
                published: None,
                protocol: "udp".into(),
                mode: "ingress".into(),
            },
        ]
    );
    assert_eq!(api.volumes[0].kind, MountKind::Volume);
    assert!(api.volumes[0].read_only);
    assert_eq!(api.volumes[1].kind, MountKind::Bind);
    assert_eq!(
        api.volumes[1].source,
        dir.path().join("conf").display().to_string()
    );
    let networks = api.networks.as_ref().unwrap();
    assert_eq!(
        networks.get("back"),
        Some(&Some(ServiceNetwork {
            aliases: vec!["api-alias".into()],
            ..Default::default()
        }))
    );
    assert_eq!(
        api.depends_on.get("db"),
        Some(&Dependency {
            condition: Condition::ServiceHealthy,
            restart: true,
            required: true
        })
    );
    let hc = api.healthcheck.as_ref().unwrap();
    assert_eq!(
        hc.test.as_deref(),
        Some(
            &[
                "CMD-SHELL".to_owned(),
                "wget -q http://localhost/health".into()
            ][..]
        )
    );
    assert_eq!(hc.interval, Some(Duration::from_secs(5)));
    assert_eq!(hc.timeout, Some(Duration::from_secs(2)));
    assert_eq!(hc.retries, Some(3));
    assert_eq!(hc.start_period, Some(Duration::from_secs(60)));
    assert_eq!(api.restart.as_deref(), Some("on-failure:5"));
    assert_eq!(api.labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(api.user.as_deref(), Some("1000"));
    assert_eq!(api.working_dir.as_deref(), Some("/app"));
    assert_eq!(api.stop_grace_period, Some(Duration::from_secs(90)));
    let logging = api.logging.as_ref().unwrap();
    assert_eq!(logging.driver.as_deref(), Some("json-file"));
    assert_eq!(
        logging.options.get("max-size").map(String::as_str),
        Some("10m")
    );
    assert_eq!(api.extra_hosts, vec!["db.internal=10.0.0.5".to_owned()]);

    let host = project.service("host").unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert!(host.networks.is_none());
    // db uses the implicit default network; api only `back`.
    assert_eq!(project.networks["default"].name, "unit_default");
    assert_eq!(project.networks["back"].name, "unit_back");
    assert!(project.networks["back"].internal);
    assert_eq!(project.volumes["data"].name, "unit_data");
    assert_eq!(project.volumes["data"].labels["purpose"], "db");
    assert_eq!(project.config_files, vec![path.clone()]);
    assert_eq!(project.working_dir, dir.path());
    let order = super::super::plan::dependency_order(&project).unwrap();
    assert!(order.iter().position(|s| s == "db") < order.iter().position(|s| s == "api"));
}

#[test]
fn an_unsupported_key_is_an_error_naming_key_and_path() {
    let cases = [
            ("include: [other.yaml]\nservices:\n  api:\n    image: x\n", "include", "include"),
            (
                "services:\n  api:\n    image: x\n    healthcheck:\n      test: [CMD, 'true']\n      bogus: 1\n",
                "bogus",
                "services.api.healthcheck.bogus",
            ),
            (
                "services:\n  api:\n    image: x\nvolumes:\n  data:\n    cluster: {}\n",
                "cluster",
                "volumes.data.cluster",
            ),
        ];
    for (text, key, at) in cases {
        match load_text(text) {
            Err(LoadError::Unsupported { key: k, at: a, .. }) => {
                assert_eq!((k.as_str(), a.as_str()), (key, at));
            }
            other => panic!("{at}: expected Unsupported, got {other:?}"),
        }
        let message = load_text(text).unwrap_err().to_string();
        assert!(
            message.contains(&format!("`{key}`")) && message.contains(at),
            "{message}"
        );
    }
}

#[test]
fn extension_fields_and_the_obsolete_version_are_accepted() {
    let project = load_text(
            "version: '3.8'\nx-top: {a: 1}\nservices:\n  api:\n    image: x\n    x-note: hi\n    healthcheck:\n      test: [CMD, 'true']\n      x-inner: 1\n",
        )
        .unwrap();
    assert_eq!(project.services.len(), 1);
}

#[test]
fn anchors_and_merge_keys_resolve_with_local_keys_winning() {
    let project = load_text(
            "x-base: &base\n  image: base-image\n  restart: always\n  labels: {a: '1'}\nservices:\n  one:\n    <<: *base\n  two:\n    <<: *base\n    restart: 'no'\n",
        )
        .unwrap();
    let one = project.service("one").unwrap();
    let two = project.service("two").unwrap();
    assert_eq!(one.image, "base-image");
    assert_eq!(one.restart.as_deref(), Some("always"));
    assert_eq!(two.restart.as_deref(), Some("no"));
    assert_eq!(two.labels.get("a").map(String::as_str), Some("1"));
}

#[test]
fn interpolation_reads_vars_over_dotenv_and_never_the_process_environment() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        ".env",
        "C5_UNIT_ONLY_DOTENV=dotenv\nC5_UNIT_OVERRIDDEN=dotenv\nPATH=from-dotenv\n",
    );
    let path = write(
            dir.path(),
            "compose.yaml",
            "services:\n  api:\n    image: ${C5_UNIT_OVERRIDDEN}\n    labels:\n      a: ${C5_UNIT_ONLY_DOTENV}\n      path: ${PATH}\n      lit: $$HOME\n",
        );
    let project = load(&path, "unit", &vars(&[("C5_UNIT_OVERRIDDEN", "from-vars")])).unwrap();
    let api = project.service("api").unwrap();
    assert_eq!(api.image, "from-vars");
    assert_eq!(api.labels["a"], "dotenv");
    // PATH is set in the test process; only `.env` counts.
    assert!(std::env::var("PATH").is_ok());
    assert_eq!(api.labels["path"], "from-dotenv");
    assert_eq!(api.labels["lit"], "$HOME");
}

#[test]
fn a_required_variable_names_itself_and_where() {
    let err =
        load_text("services:\n  api:\n    image: ${C5_UNIT_NEVER_SET:?pass the backend image}\n")
            .unwrap_err();
    assert_eq!(
            err.to_string(),
            "services.api.image: required variable C5_UNIT_NEVER_SET is missing a value: pass the backend image"
        );
}

#[test]
fn env_files_merge_in_order_under_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("env")).unwrap();
    write(&dir.path().join("env"), "a.env", "X=a\nY=a\nZ=a\n");
    write(&dir.path().join("env"), "b.env", "Y=b\nZ=b\n");
    let path = write(
            dir.path(),
            "compose.yaml",
            "services:\n  api:\n    image: x\n    env_file: [env/a.env, ./env/b.env, {path: env/none.env, required: false}]\n    environment: {Z: compose, BARE: null}\n",
        );
    let project = load(&path, "unit", &vars(&[("BARE", "from-vars")])).unwrap();
    let env = &project.service("api").unwrap().environment;
    let got: Vec<(&str, Option<&str>)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("BARE", Some("from-vars")),
            ("X", Some("a")),
            ("Y", Some("b")),
            ("Z", Some("compose"))
        ]
    );
}

#[test]
fn a_missing_required_env_file_is_an_error_with_its_path() {
    let err = load_text("services:\n  api:\n    image: x\n    env_file: nope.env\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("nope.env") && text.contains("services.api.env_file"),
        "{text}"
    );
}

#[test]
fn references_must_resolve() {
    let undefined_dep =
        load_text("services:\n  api:\n    image: x\n    depends_on: [db]\n").unwrap_err();
    assert!(
        undefined_dep
            .to_string()
            .contains("undefined service \"db\""),
        "{undefined_dep}"
    );
    let undefined_volume =
        load_text("services:\n  api:\n    image: x\n    volumes: [data:/data]\n").unwrap_err();
    assert!(undefined_volume
        .to_string()
        .contains("undefined volume \"data\""));
    let undefined_network =
        load_text("services:\n  api:\n    image: x\n    networks: [back]\n").unwrap_err();
    assert!(undefined_network
        .to_string()
        .contains("undefined network \"back\""));
    let cycle = load_text("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n").unwrap_err();
    assert!(cycle.to_string().contains("dependency cycle"), "{cycle}");
    let no_image = load_text("services:\n  a:\n    command: x\n").unwrap_err();
    assert!(no_image.to_string().contains("`image` is required"));
}

#[test]
fn bad_values_are_errors_with_their_path() {
    for (text, at) in [
        (
            "services:\n  a:\n    image: x\n    restart: sometimes\n",
            "services.a.restart",
        ),
        (
            "services:\n  a:\n    image: x\n    stop_grace_period: soon\n",
            "services.a.stop_grace_period",
        ),
        (
            "services:\n  a:\n    image: x\n    ports: ['8000-8002:80-81']\n",
            "services.a.ports[0]",
        ),
        (
            "services:\n  a:\n    image: x\n    volumes: ['/x:/y:bogus']\n",
            "services.a.volumes[0]",
        ),
        ("services:\n  a:\n    build: .\n", "services.a.build"),
        (
            "services:\n  a:\n    image: x\n    container_name: one\n    deploy: {replicas: 2}\n",
            "services.a.container_name",
        ),
        (
            "services:\n  a:\n    image: x\n    scale: 2\n    deploy: {replicas: 3}\n",
            "services.a.scale",
        ),
        (
            "services:\n  a:\n    image: x\n    ports: [{target: 80, mode: overlay}]\n",
            "services.a.ports[0].mode",
        ),
    ] {
        let err = load_text(text).unwrap_err().to_string();
        assert!(err.contains(at), "{at}: {err}");
    }
}

#[test]
fn yaml_scalars_become_the_strings_compose_uses() {
    // Compose v2.40 `config` prints these for the same YAML. (Known
    // gap: an unquoted `007` stays "007" here, Compose reads 7.)
    let project = load_text(
            "services:\n  s:\n    image: x\n    environment:\n      F1: 5.0\n      F2: 1.10\n      F3: 1e3\n      I: 0x1F\n      O: 0o17\n      B: yes\n      T: True\n",
        )
        .unwrap();
    let env = &project.service("s").unwrap().environment;
    let got: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or("<none>")))
        .collect();
    assert_eq!(
        got,
        vec![
            ("B", "yes"),
            ("F1", "5"),
            ("F2", "1.1"),
            ("F3", "1000"),
            ("I", "31"),
            ("O", "15"),
            ("T", "true"),
        ]
    );
}

#[test]
fn durations_parse_like_compose_go() {
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration("s"), None);
}

#[test]
fn commands_split_like_a_shell_without_expansion() {
    assert_eq!(
        shell_split(r#"sh -c 'echo "$HOME"' a\ b "c \"d\"""#).unwrap(),
        vec!["sh", "-c", "echo \"$HOME\"", "a b", "c \"d\""]
    );
    assert_eq!(shell_split("").unwrap(), Vec::<String>::new());
    assert!(shell_split("'open").is_err());
}

#[test]
fn project_names_follow_compose_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "compose.yaml",
        "services:\n  a:\n    image: x\n",
    );
    assert!(load(&path, "Wavemap", &BTreeMap::new()).is_err());
    assert!(load(&path, "-x", &BTreeMap::new()).is_err());
    assert!(load(&path, "wavemap-dev_1", &BTreeMap::new()).is_ok());
}

#[test]
fn a_key_one_edit_from_a_known_key_gets_a_suggestion() {
    for (text, key, suggestion) in [
        (
            "services:\n  api:\n    image: x\n    enviroment: {A: b}\n",
            "enviroment",
            "environment",
        ),
        (
            "services:\n  api:\n    image: x\n    contianer_name: y\n",
            "contianer_name",
            "container_name",
        ),
        (
            "services:\n  api:\n    image: x\nvolumes:\n  data:\n    driver_opt: {}\n",
            "driver_opt",
            "driver_opts",
        ),
    ] {
        let message = load_text(text).unwrap_err().to_string();
        assert!(
            message.contains(&format!("unknown key `{key}`"))
                && message.contains(&format!("did you mean `{suggestion}`?")),
            "{message}"
        );
    }
}

#[test]
fn update_order_reads_stop_first_by_default_and_start_first_when_asked() {
    let project = load_text(
        "services:\n  a:\n    image: x\n  b:\n    image: x\n    deploy:\n      update_config:\n        order: start-first\n    ports: ['80']\n  c:\n    image: x\n    deploy:\n      update_config: {order: stop-first}\n",
    )
    .unwrap();
    assert_eq!(
        project.service("a").unwrap().update_order,
        UpdateOrder::StopFirst
    );
    assert_eq!(
        project.service("b").unwrap().update_order,
        UpdateOrder::StartFirst
    );
    assert_eq!(
        project.service("c").unwrap().update_order,
        UpdateOrder::StopFirst
    );
    let bad = load_text(
        "services:\n  a:\n    image: x\n    deploy:\n      update_config: {order: sideways}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("services.a.deploy.update_config.order"),
        "{bad}"
    );
}

#[test]
fn start_first_refuses_a_fixed_host_port_or_container_name() {
    for (extra, reason) in [
        ("    ports: ['8080:80']\n", "published host ports"),
        ("    container_name: fixed\n", "`container_name`"),
    ] {
        let text = format!(
            "services:\n  a:\n    image: x\n    deploy:\n      update_config:\n        order: start-first\n{extra}"
        );
        let message = load_text(&text).unwrap_err().to_string();
        assert!(
            message.contains("services.a.deploy.update_config.order")
                && message.contains("start-first")
                && message.contains(reason),
            "{message}"
        );
    }
}

#[test]
fn extends_within_the_file_merges_like_compose() {
    let project = load_text(
        "services:\n  base:\n    image: x\n    environment: {A: '1', B: '2'}\n    volumes: ['/a:/data', '/b:/b']\n    command: [one]\n  child:\n    extends: base\n    environment: [B=3, C=4]\n    volumes: ['/c:/data']\n    command: [two]\n  grandchild:\n    extends: {service: child}\n    user: '1000'\n",
    )
    .unwrap();
    let child = project.service("child").unwrap();
    let env: Vec<(&str, Option<&str>)> = child
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    assert_eq!(
        env,
        vec![("A", Some("1")), ("B", Some("3")), ("C", Some("4"))]
    );
    let sources: Vec<&str> = child.volumes.iter().map(|v| v.source.as_str()).collect();
    assert_eq!(sources, vec!["/c", "/b"]);
    assert_eq!(child.command, Some(vec!["two".to_owned()]));
    let grandchild = project.service("grandchild").unwrap();
    assert_eq!(grandchild.user.as_deref(), Some("1000"));
    assert_eq!(grandchild.command, Some(vec!["two".to_owned()]));
    for (text, needle) in [
        (
            "services:\n  a:\n    extends: b\n    image: x\n",
            "extends undefined service \"b\"",
        ),
        (
            "services:\n  a:\n    image: x\n    extends: b\n  b:\n    image: x\n    extends: a\n",
            "extends cycle",
        ),
        (
            "services:\n  a:\n    image: x\n    extends: {file: other.yaml, service: b}\n",
            "`file` at services.a.extends.file",
        ),
    ] {
        let message = load_text(text).unwrap_err().to_string();
        assert!(message.contains(needle), "{message}");
    }
}

#[test]
fn merge_keys_take_lists_of_anchors_and_nest() {
    let project = load_text(
        "x-a: &a\n  restart: always\n  labels: {from: a}\nx-b: &b\n  restart: 'no'\n  user: '1'\n  labels: {from: b, only_b: 'yes'}\nx-hc: &hc\n  interval: 5s\n  retries: 3\nx-svc: &svc\n  <<: [*a, *b]\n  image: x\n  healthcheck:\n    <<: *hc\n    test: [CMD, 'true']\nservices:\n  one:\n    <<: *svc\n    depends_on:\n      two:\n        <<: {condition: service_healthy}\n  two:\n    <<: *svc\n    user: '2'\n",
    )
    .unwrap();
    let one = project.service("one").unwrap();
    // Earlier anchors in the list win; the mapping's own keys win over all.
    assert_eq!(one.restart.as_deref(), Some("always"));
    assert_eq!(one.labels.get("from").map(String::as_str), Some("a"));
    assert!(!one.labels.contains_key("only_b"));
    assert_eq!(one.user.as_deref(), Some("1"));
    let hc = one.healthcheck.as_ref().unwrap();
    assert_eq!(
        (hc.interval, hc.retries),
        (Some(Duration::from_secs(5)), Some(3))
    );
    assert_eq!(one.depends_on["two"].condition, Condition::ServiceHealthy);
    assert_eq!(project.service("two").unwrap().user.as_deref(), Some("2"));
}

#[test]
fn values_are_coerced_after_interpolation_like_compose_go() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        ".env",
        "RETRIES=3\nRO=false\nINIT=yes\nPIDS=100\nSHM=1g\nCPUS=0.5\n",
    );
    let path = write(
        dir.path(),
        "compose.yaml",
        "services:\n  a:\n    image: x\n    healthcheck:\n      test: [CMD, 'true']\n      retries: ${RETRIES}\n    read_only: ${RO}\n    init: ${INIT}\n    pids_limit: ${PIDS}\n    shm_size: ${SHM}\n    cpus: ${CPUS}\n",
    );
    let project = load(&path, "unit", &BTreeMap::new()).unwrap();
    let a = project.service("a").unwrap();
    assert_eq!(a.healthcheck.as_ref().unwrap().retries, Some(3));
    assert!(!a.options.contains_key("read_only"));
    assert_eq!(a.options["init"], serde_json::json!(true));
    assert_eq!(a.options["pids_limit"], serde_json::json!(100));
    assert_eq!(a.options["shm_size"], serde_json::json!("1073741824"));
    assert_eq!(a.options["cpus"], serde_json::json!(0.5));
    let bad = load_text("services:\n  a:\n    image: x\n    pids_limit: many\n")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("services.a.pids_limit"), "{bad}");
}

#[test]
fn profiles_switch_services_and_optional_dependencies_off() {
    let text = "services:\n  a:\n    image: x\n    depends_on:\n      debug:\n        condition: service_started\n        required: false\n  debug:\n    image: x\n    profiles: [debug]\n  always:\n    image: x\n    profiles: ['']\n";
    let project = load_text(text).unwrap();
    let names: Vec<&str> = project.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["a", "always"]);
    assert!(project.service("a").unwrap().depends_on.is_empty());

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".env", "COMPOSE_PROFILES=debug\n");
    let path = write(dir.path(), "compose.yaml", text);
    let project = load(&path, "unit", &BTreeMap::new()).unwrap();
    let names: Vec<&str> = project.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["a", "debug"]);
    assert!(project
        .service("a")
        .unwrap()
        .depends_on
        .contains_key("debug"));

    let required = text.replace("required: false", "required: true");
    let message = load_text(&required).unwrap_err().to_string();
    assert!(message.contains("undefined service \"debug\""), "{message}");
}

#[test]
fn replicas_and_scale_set_the_number_of_containers() {
    let project = load_text(
        "services:\n  w:\n    image: x\n    deploy: {replicas: 3}\n  s:\n    image: x\n    scale: 2\n  one:\n    image: x\n",
    )
    .unwrap();
    assert_eq!(project.service("w").unwrap().scale(), 3);
    assert_eq!(project.service("s").unwrap().scale(), 2);
    assert_eq!(project.service("one").unwrap().scale(), 1);
    assert_eq!(project.replica_name("w", 3), "unit-w-3");
}

#[test]
fn port_ranges_and_host_mode_read_as_compose_go_reads_them() {
    let project = load_text(
        "services:\n  a:\n    image: x\n    ports:\n      - '127.0.0.1:8009-8010:9009-9010'\n      - '7000-7002:80'\n      - {target: 53, published: '5353', protocol: udp, mode: host}\n",
    )
    .unwrap();
    let ports: Vec<(u16, Option<&str>, &str)> = project.services[0]
        .ports
        .iter()
        .map(|p| (p.target, p.published.as_deref(), p.mode.as_str()))
        .collect();
    assert_eq!(
        ports,
        vec![
            (9009, Some("8009"), "ingress"),
            (9010, Some("8010"), "ingress"),
            (80, Some("7000-7002"), "ingress"),
            (53, Some("5353"), "host"),
        ]
    );
}

#[test]
fn anonymous_volumes_need_no_top_level_entry() {
    let project = load_text(
        "services:\n  a:\n    image: x\n    volumes:\n      - /app/node_modules\n      - {type: volume, target: /cache}\n",
    )
    .unwrap();
    let v = &project.services[0].volumes;
    assert_eq!(
        (v[0].kind, v[0].source.as_str(), v[0].target.as_str()),
        (MountKind::Volume, "", "/app/node_modules")
    );
    assert_eq!(v[0].volume_nocopy, Some(false));
    assert_eq!((v[1].source.as_str(), v[1].volume_nocopy), ("", None));
}

#[test]
fn build_beside_image_deploys_the_image_and_an_inactive_build_is_ignored() {
    let project = load_text(
        "services:\n  a:\n    image: reg/a:1\n    build: {context: .}\n  b:\n    build: .\n    profiles: [analytics]\n",
    )
    .unwrap();
    assert_eq!(project.services.len(), 1);
    assert_eq!(project.services[0].image, "reg/a:1");
    let without_build = load_text("services:\n  a:\n    image: reg/a:1\n").unwrap();
    assert_eq!(
        crate::compose::hash::service_hash(&project.services[0]),
        crate::compose::hash::service_hash(&without_build.services[0])
    );
}

#[test]
fn the_project_name_is_interpolated_and_wins_over_the_files_name() {
    let project = load_text(
        "name: other\nservices:\n  a:\n    image: x\n    labels: {p: '${COMPOSE_PROJECT_NAME}'}\n",
    )
    .unwrap();
    assert_eq!(project.name, "unit");
    assert_eq!(project.file_name.as_deref(), Some("other"));
    assert_eq!(project.services[0].labels["p"], "unit");
}

#[test]
fn a_tilde_expands_from_the_passwd_home_not_home() {
    let text = "services:\n  a:\n    image: x\n    volumes: ['~/data:/data']\n";
    let before = load_text(text).unwrap();
    // Another HOME must change nothing (the daemon and a command under the
    // SSM Agent run with different environments).
    let saved = std::env::var_os("HOME");
    std::env::set_var("HOME", "/elsewhere");
    let after = load_text(text);
    match saved {
        Some(h) => std::env::set_var("HOME", h),
        None => std::env::remove_var("HOME"),
    }
    let after = after.unwrap();
    assert_eq!(
        before.services[0].volumes[0].source,
        after.services[0].volumes[0].source
    );
    assert!(!before.services[0].volumes[0]
        .source
        .starts_with("/elsewhere"));
    assert!(before.services[0].volumes[0].source.ends_with("/data"));
}
