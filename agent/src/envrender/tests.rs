//! Unit tests of the render: planning, writing, the guards.

use super::*;
use crate::ssm::{LiveParameter, LiveType, SecretValue};

fn config(dir: &Path) -> Config {
    Config::parse(
        &format!(
            r#"
[agent]
state_dir = "{0}/state"

[runtime]
env_dir = "{0}/env"
compose_file = "{0}/compose.yaml"
parameter_prefix = "/app/dev/"
groups = ["backend", "frontend"]

[[runtime.parameters]]
name = "backend/DATABASE_URL"
type = "SecureString"

[[runtime.parameters]]
name = "backend/OPTIONAL"
type = "String"
required = false
"#,
            dir.display()
        ),
        "t",
    )
    .unwrap()
}

fn live(name: &str, kind: LiveType, value: &str) -> LiveParameter {
    LiveParameter {
        name: name.into(),
        kind,
        value: Some(SecretValue::new(value.into())),
    }
}

fn params(db: &str) -> Vec<LiveParameter> {
    vec![
        live("/app/dev/backend/DATABASE_URL", LiveType::SecureString, db),
        live(
            "/app/dev/frontend/PUBLIC_URL",
            LiveType::String,
            "https://x.example/",
        ),
    ]
}

#[test]
fn securestring_names_are_recorded_in_state_not_in_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut live_params = params("postgres://u:hunter2-value@db/x");
    live_params.push(live(
        "/app/dev/backend/AWKWARD",
        LiveType::SecureString,
        "plain-looking-secret",
    ));
    render(dir.path(), &live_params, true).unwrap();
    let text = std::fs::read_to_string(dir.path().join("env/backend.env")).unwrap();
    assert!(!text.contains("SecureString"), "{text}");
    let names = secure_variables(&config(dir.path()));
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["AWKWARD", "DATABASE_URL"]
    );
    let record =
        std::fs::read_to_string(dir.path().join("state").join(commit::SECURE_NAMES_FILE)).unwrap();
    assert!(!record.contains("hunter2"), "{record}");
    let mode = std::fs::metadata(dir.path().join("state").join(commit::SECURE_NAMES_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn zero_parameters_or_an_emptied_file_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
    let backend = dir.path().join("env/backend.env");
    let before = std::fs::read(&backend).unwrap();
    let Err(RenderError::Empty(guard)) = render_opts(dir.path(), &[], true, false) else {
        panic!("0 parameters must be refused");
    };
    assert_eq!(guard.reason(), "empty-prefix");
    assert_eq!(guard.emptied, vec!["backend.env", "frontend.env"]);
    assert_eq!(Error::from(RenderError::Empty(guard)).exit_code(), 3);
    let only_frontend = vec![live(
        "/app/dev/frontend/PUBLIC_URL",
        LiveType::String,
        "https://x.example/",
    )];
    // DATABASE_URL is required: make it optional for this case.
    let mut config = config(dir.path());
    config.runtime.parameters.clear();
    let contract = Contract::from_config(&config);
    let opts = |allow_empty| RenderOptions {
        execute: true,
        allow_empty,
    };
    let Err(RenderError::Empty(guard)) =
        render_fetched(&config, &contract, &only_frontend, opts(false))
    else {
        panic!("emptying backend.env must be refused");
    };
    assert_eq!(guard.reason(), "empty-file");
    assert_eq!(guard.emptied, vec!["backend.env"]);
    assert_eq!(std::fs::read(&backend).unwrap(), before);
    let summary = render_fetched(&config, &contract, &only_frontend, opts(true)).unwrap();
    assert_eq!(summary.files[0].variables, 0);
    assert!(envfile::parse_bytes(&std::fs::read(&backend).unwrap())
        .unwrap()
        .is_empty());
}

#[test]
fn next_public_variables_need_allow_build_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut with_public = params("v");
    with_public.push(live(
        "/app/dev/frontend/NEXT_PUBLIC_API",
        LiveType::String,
        "https://api.example/",
    ));
    let err = render(dir.path(), &with_public, true).unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains("NEXT_PUBLIC_API"), "{err}");
    assert!(!dir.path().join("env/backend.env").exists());
    let mut config = config(dir.path());
    config.runtime.parameters.push(
        toml::from_str(
            "name = \"frontend/NEXT_PUBLIC_API\"\ntype = \"String\"\nallow_build_time = true\n",
        )
        .unwrap(),
    );
    let contract = Contract::from_config(&config);
    let summary = render_fetched(
        &config,
        &contract,
        &with_public,
        RenderOptions {
            execute: true,
            allow_empty: false,
        },
    )
    .unwrap();
    assert_eq!(summary.result(), "rendered");
}

fn render_opts(
    dir: &Path,
    live: &[LiveParameter],
    execute: bool,
    allow_empty: bool,
) -> Result<RenderSummary, RenderError> {
    let config = config(dir);
    render_fetched(
        &config,
        &Contract::from_config(&config),
        live,
        RenderOptions {
            execute,
            allow_empty,
        },
    )
}

fn render(dir: &Path, live: &[LiveParameter], execute: bool) -> Result<RenderSummary, Error> {
    render_opts(dir, live, execute, false).map_err(Error::from)
}

#[test]
fn dry_run_plans_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let summary = render(dir.path(), &params("postgres://u:p@db/x"), false).unwrap();
    assert_eq!(summary.result(), "planned");
    assert_eq!(summary.files[0].state, FileState::WouldCreate);
    assert_eq!(summary.files[0].diff.added, vec!["DATABASE_URL"]);
    assert!(!dir.path().join("env").exists());
}

#[test]
fn render_writes_0600_files_then_leaves_them_alone() {
    let dir = tempfile::tempdir().unwrap();
    let summary = render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
    assert_eq!(summary.result(), "rendered");
    assert_eq!(summary.undeclared, vec!["/app/dev/frontend/PUBLIC_URL"]);
    assert_eq!(summary.missing_optional, vec!["/app/dev/backend/OPTIONAL"]);
    let backend = dir.path().join("env/backend.env");
    let bytes = std::fs::read(&backend).unwrap();
    let vars = envfile::parse_bytes(&bytes).unwrap();
    assert_eq!(
        vars.get("DATABASE_URL").map(String::as_str),
        Some("postgres://u:p@db/x")
    );
    let mode = std::fs::metadata(&backend).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(dir.path().join("env"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    let inode_before = std::fs::metadata(&backend)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let again = render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
    assert_eq!(again.result(), "unchanged");
    let inode_after = std::fs::metadata(&backend)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(
        inode_before, inode_after,
        "an unchanged file is not replaced"
    );

    let changed = render(dir.path(), &params("postgres://u:q@db/x"), true).unwrap();
    assert_eq!(changed.files[0].state, FileState::Updated);
    assert_eq!(changed.files[0].diff.changed, vec!["DATABASE_URL"]);
    assert_eq!(changed.files[1].state, FileState::Unchanged);
}

#[test]
fn a_contract_breach_writes_nothing_and_names_no_value() {
    let dir = tempfile::tempdir().unwrap();
    render(dir.path(), &params("first-secret-value"), true).unwrap();
    let backend = dir.path().join("env/backend.env");
    let before = std::fs::read(&backend).unwrap();
    let wrong = vec![
        live(
            "/app/dev/backend/DATABASE_URL",
            LiveType::String,
            "second-secret-value",
        ),
        live(
            "/app/dev/frontend/PUBLIC_URL",
            LiveType::String,
            "changed-public",
        ),
    ];
    let err = render(dir.path(), &wrong, true).unwrap_err();
    assert_eq!(err.exit_code(), 3);
    let text = err.to_string();
    assert!(text.contains("/app/dev/backend/DATABASE_URL"), "{text}");
    assert!(!text.contains("secret-value"), "{text}");
    assert_eq!(std::fs::read(&backend).unwrap(), before);
}

#[test]
fn a_file_with_the_right_bytes_but_a_loose_mode_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
    let backend = dir.path().join("env/backend.env");
    std::fs::set_permissions(&backend, std::fs::Permissions::from_mode(0o644)).unwrap();
    let again = render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
    assert_eq!(again.files[0].state, FileState::Updated);
    assert_eq!(again.files[1].state, FileState::Unchanged);
    let mode = std::fs::metadata(&backend).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn read_group_returns_the_rendered_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    assert_eq!(read_group(&config, "backend").unwrap(), None);
    render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
    let vars = read_group(&config, "backend").unwrap().unwrap();
    assert_eq!(vars["DATABASE_URL"], "postgres://u:p@db/x");
    let url = read_secret(&config, "backend", "DATABASE_URL").unwrap();
    assert_eq!(url.as_deref(), Some("postgres://u:p@db/x"));
    assert_eq!(read_secret(&config, "backend", "NOPE").unwrap(), None);
}

#[test]
fn an_empty_group_still_gets_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let only_backend = vec![live(
        "/app/dev/backend/DATABASE_URL",
        LiveType::SecureString,
        "x",
    )];
    let summary = render(dir.path(), &only_backend, true).unwrap();
    assert_eq!(summary.files.len(), 2);
    let frontend = std::fs::read(dir.path().join("env/frontend.env")).unwrap();
    assert!(envfile::parse_bytes(&frontend).unwrap().is_empty());
}

#[test]
fn markers_carry_counts_states_and_key_names() {
    let dir = tempfile::tempdir().unwrap();
    let summary = render(dir.path(), &params("v"), false).unwrap();
    let mut report = Report::new();
    summary.add_markers(&mut report);
    assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_RESULT"), Some("planned"));
    assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_FILES"), Some("2"));
    assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_PARAMETERS"), Some("2"));
    assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_CHANGED_FILES"), Some("2"));
    assert_eq!(report.get("WAVEMAP_RUNTIME_ENV_UNDECLARED"), Some("1"));
    assert_eq!(
        report.get("WAVEMAP_RUNTIME_ENV_FILE_BACKEND"),
        Some("would-create")
    );
    assert_eq!(
        report.get("WAVEMAP_RUNTIME_ENV_FILE_BACKEND_ADDED"),
        Some("DATABASE_URL")
    );
}

#[test]
fn a_staged_render_changes_no_live_file_until_promoted_and_a_dropped_one_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    render(dir.path(), &params("postgres://u:p@db/x"), true).unwrap();
    let backend = dir.path().join("env/backend.env");
    let names = dir.path().join("state").join(commit::SECURE_NAMES_FILE);
    let before = std::fs::read(&backend).unwrap();
    let names_before = std::fs::read(&names).unwrap();
    let config = config(dir.path());
    let contract = Contract::load(&config).unwrap();
    let mut changed = params("postgres://u:NEW@db/x");
    changed.push(live("/app/dev/backend/EXTRA", LiveType::SecureString, "x"));
    let opts = RenderOptions {
        execute: true,
        allow_empty: false,
    };
    let entries = |d: &Path| std::fs::read_dir(d).unwrap().count();

    // Staged, then dropped (a deploy that failed before converge).
    let (summary, staged) = stage_fetched(&config, &contract, &changed, opts).unwrap();
    assert_eq!(summary.files[0].state, FileState::Updated);
    assert_eq!(std::fs::read(&backend).unwrap(), before);
    assert_eq!(
        entries(&dir.path().join("env")),
        3,
        "one staged copy beside two files"
    );
    drop(staged);
    assert_eq!(std::fs::read(&backend).unwrap(), before);
    assert_eq!(std::fs::read(&names).unwrap(), names_before);
    assert_eq!(
        entries(&dir.path().join("env")),
        2,
        "the staged copy is gone"
    );

    // Staged, then promoted (converge started).
    let (_, staged) = stage_fetched(&config, &contract, &changed, opts).unwrap();
    assert_eq!(std::fs::read(&backend).unwrap(), before);
    staged.expect("executed").promote().unwrap();
    let vars = envfile::parse_bytes(&std::fs::read(&backend).unwrap()).unwrap();
    assert_eq!(vars["DATABASE_URL"], "postgres://u:NEW@db/x");
    assert!(std::fs::read_to_string(&names).unwrap().contains("EXTRA"));
    assert_eq!(entries(&dir.path().join("env")), 2);
}
