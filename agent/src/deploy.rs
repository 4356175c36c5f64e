//! The deploy path: env-render, ecr-login, pull, converge, health.
//!
//! `runtime deploy`, `runtime rollback` and the daemon's boot recovery all
//! run this one pipeline, so a rollback is exactly a deploy of the receipt's
//! pair and boot recovery is exactly a deploy of the current release. Each
//! stage is timed and logged; a failure names its stage in the
//! `<PREFIX>_FAILED_STAGE` marker and keeps its own exit code (69 for a
//! dependency that stayed down, 3 for a parameter gate, 1 otherwise).
//!
//! Order matters for safety: everything that can fail without touching the
//! running project (env render checks, login, pulls) happens before
//! converge, so a bad image URI or a refused token leaves the running
//! release untouched. Env files are rendered before converge because the
//! containers read them at creation.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::compose::{self, Project};
use crate::config::Config;
use crate::envrender::RenderError;
use crate::error::Error;
pub use crate::error::Stage;
use crate::fsutil;
use crate::output::Report;
use crate::registry::{self, TokenCache};
use crate::release::Release;
use crate::retry::{Backoff, Retry};

/// What to do when SSM cannot be reached during env-render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvPolicy {
    /// Deploys: SSM must answer (exit 69 otherwise), and the empty-render
    /// guard holds (exit 3).
    Required,
    /// `runtime deploy --allow-empty`: as `Required`, but emptying env
    /// files is deliberate.
    RequiredAllowEmpty,
    /// Boot recovery: keep trying SSM for `daemon.ssm_wait`, then keep the
    /// existing env files and say so. A render the checks refuse (the
    /// empty-render guard, a missing required parameter) also keeps them:
    /// the files on disk are what the last good render wrote.
    KeepExistingIfUnavailable,
    /// The daemon's heals: no render at all. A heal restores what the last
    /// deploy made; new SSM values arrive with the next deploy.
    KeepExisting,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub execute: bool,
    pub env: EnvPolicy,
    /// On success, record the release as the current one, deployed by this
    /// command (`deploy`, `rollback`). Boot recovery restores the current
    /// release and records nothing.
    pub record_as: Option<&'static str>,
}

/// Timings and facts of one run of the pipeline.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Outcome {
    /// Milliseconds per stage, in order.
    pub stage_ms: Vec<(String, u64)>,
    pub env_kept_existing: bool,
    /// Why the existing env files were kept (SSM unreachable, the render
    /// refused, or a heal that never renders).
    pub env_kept_reason: Option<String>,
    pub pulled: Vec<String>,
    pub changed_services: Vec<String>,
}

impl Outcome {
    fn timings(&self) -> String {
        self.stage_ms
            .iter()
            .map(|(s, ms)| format!("{s}:{ms}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Interpolation variables the Compose file reads: the image pair and the
/// env folder. They are also written to `.env` beside the Compose file so
/// an operator's `docker compose up -d` there sees the same project.
pub fn compose_vars(config: &Config, release: &Release) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert(
        config.runtime.backend_image_variable.clone(),
        release.backend_image_uri.clone(),
    );
    vars.insert(
        config.runtime.frontend_image_variable.clone(),
        release.frontend_image_uri.clone(),
    );
    vars.insert("WAVEMAP_ENV_DIR".into(), config.runtime.env_dir.to_string());
    vars
}

/// Run the pipeline for `release`. `prefix` is the marker area
/// (`WAVEMAP_RUNTIME_DEPLOY`, `WAVEMAP_RUNTIME_ROLLBACK`, ...).
pub async fn run(
    config: &Config,
    release: &Release,
    options: Options,
    report: &mut Report,
    prefix: &str,
) -> Result<Outcome, Error> {
    let mut outcome = Outcome::default();
    let mut result = run_stages(config, release, options, report, &mut outcome).await;
    if let (Ok(()), true, Some(by)) = (&result, options.execute, options.record_as) {
        crate::output::stage(Stage::State);
        result = crate::release::write_current(config, release, by)
            .map(|_| ())
            .map_err(|e| (Stage::State, e));
    }
    report.marker(&format!("{prefix}_STAGE_MS"), outcome.timings());
    if outcome.env_kept_existing {
        let why = match outcome.env_kept_reason.as_deref() {
            Some(r) if r.starts_with("render refused") => "kept-existing-render-refused",
            Some("not re-rendered") => "kept-existing",
            _ => "kept-existing-ssm-unavailable",
        };
        report.marker(&format!("{prefix}_ENV"), why);
    }
    if !outcome.changed_services.is_empty() {
        report.marker(
            &format!("{prefix}_CHANGED_SERVICES"),
            outcome.changed_services.join(","),
        );
    }
    match &result {
        Ok(()) => {
            report.marker(
                &format!("{prefix}_RESULT"),
                if options.execute {
                    "success"
                } else {
                    "planned"
                },
            );
        }
        Err((stage, _)) => {
            report.marker(&format!("{prefix}_RESULT"), "failed");
            report.marker(&format!("{prefix}_FAILED_STAGE"), stage.name());
        }
    }
    result.map(|()| outcome).map_err(|(_, e)| e)
}

async fn run_stages(
    config: &Config,
    release: &Release,
    options: Options,
    report: &mut Report,
    outcome: &mut Outcome,
) -> Result<(), (Stage, Error)> {
    let backend = release.backend(config).map_err(|e| (Stage::Pull, e))?;
    let frontend = release.frontend(config).map_err(|e| (Stage::Pull, e))?;

    // Local input first, dry run or not, before any env file is written:
    // the parameter contract (when the render will read it), then the
    // Compose file; an invalid one or a missing service changes nothing.
    // Env files not rendered yet count as empty here (a first deploy's dry
    // run).
    if options.env != EnvPolicy::KeepExisting {
        crate::ssm::Contract::load(config).map_err(|e| (Stage::EnvRender, e))?;
    }
    let started = Instant::now();
    let vars = compose_vars(config, release);
    let checked = Project::load_with(
        config.runtime.compose_file.as_path(),
        &config.runtime.project_name,
        &vars,
        compose::LoadOptions {
            missing_env_files_are_empty: true,
        },
    )
    .and_then(|project| check_services(config, release, &project))
    .map_err(|e| (Stage::Converge, e));
    log::info!(stage = "converge"; "compose file {} checked in {}ms", config.runtime.compose_file, ms(started));
    checked?;

    // env-render
    crate::output::stage(Stage::EnvRender);
    let started = Instant::now();
    let keep_existing = options.env == EnvPolicy::KeepExistingIfUnavailable;
    match options.env {
        EnvPolicy::KeepExisting => {
            log::info!(stage = "env-render"; "keeping the existing env files (no render)");
            outcome.env_kept_existing = true;
            outcome.env_kept_reason = Some("not re-rendered".into());
        }
        EnvPolicy::Required
        | EnvPolicy::RequiredAllowEmpty
        | EnvPolicy::KeepExistingIfUnavailable => {
            log::info!(stage = "env-render"; "rendering env files from SSM ({})", if options.execute { "execute" } else { "dry run" });
            match render_waiting_for_ssm(config, options).await {
                Ok(summary) => summary.add_markers(report),
                Err(RenderError::Empty(guard)) => {
                    guard.add_markers(report);
                    if !keep_existing {
                        return Err((Stage::EnvRender, RenderError::Empty(guard).into()));
                    }
                    log::warn!(stage = "env-render"; "empty-render guard: {guard}; keeping the existing env files");
                    outcome.env_kept_existing = true;
                    outcome.env_kept_reason = Some(format!("render refused: {guard}"));
                }
                Err(RenderError::Other(Error::Unavailable { dependency, detail }))
                    if keep_existing =>
                {
                    log::warn!(stage = "env-render"; "{dependency} unavailable ({detail}); keeping the existing env files");
                    outcome.env_kept_existing = true;
                    outcome.env_kept_reason = Some(format!("{dependency} unavailable"));
                }
                Err(RenderError::Other(Error::Gate { reason })) if keep_existing => {
                    log::warn!(stage = "env-render"; "the render was refused ({reason}); keeping the existing env files");
                    outcome.env_kept_existing = true;
                    outcome.env_kept_reason = Some(format!("render refused: {reason}"));
                }
                Err(RenderError::Other(e)) => return Err((Stage::EnvRender, e)),
            }
        }
    }
    outcome
        .stage_ms
        .push((Stage::EnvRender.name().into(), ms(started)));

    let docker = crate::docker::connect(config)
        .await
        .map_err(|e| (Stage::Pull, e))?;

    // ecr-login + pull, only for images not present (tags are immutable).
    crate::output::stage(Stage::EcrLogin);
    let started = Instant::now();
    let mut missing = Vec::new();
    for image in [&backend, &frontend] {
        if !registry::is_present(&docker, image)
            .await
            .map_err(|e| (Stage::Pull, e))?
        {
            missing.push(image.clone());
        }
    }
    let mut auths = Vec::new();
    if missing.is_empty() {
        log::info!(stage = "ecr-login"; "both images are present on the host; no login or pull needed");
    } else if options.execute {
        let sdk = crate::aws::sdk_config(config).await;
        let ecr = crate::aws::ecr_client(&sdk, config);
        let mut cache = TokenCache::default();
        for image in &missing {
            log::info!(stage = "ecr-login"; "getting registry credentials for {}", image.registry);
            auths.push(
                cache
                    .get(&ecr, image)
                    .await
                    .map_err(|e| (Stage::EcrLogin, e))?,
            );
        }
    }
    outcome
        .stage_ms
        .push((Stage::EcrLogin.name().into(), ms(started)));

    crate::output::stage(Stage::Pull);
    let started = Instant::now();
    if options.execute && !missing.is_empty() {
        let pulls = missing.iter().zip(auths.iter()).map(|(image, auth)| {
            log::info!(stage = "pull"; "pulling {image}");
            registry::pull(&docker, &config.docker.host, image, Some(auth))
        });
        let deadline = crate::operation::wait_limit(
            "the pull (runtime.pull_timeout)",
            config.runtime.pull_timeout.duration(),
        )
        .map_err(|e| (Stage::Pull, e))?;
        let results = tokio::time::timeout(deadline, futures_util::future::join_all(pulls))
            .await
            .map_err(|_| {
                (
                    Stage::Pull,
                    Error::failed(
                        Stage::Pull,
                        format!("pulls did not finish within {}s", deadline.as_secs()),
                    ),
                )
            })?;
        for result in results {
            result.map_err(|e| (Stage::Pull, e))?;
        }
        outcome.pulled = missing.iter().map(ToString::to_string).collect();
    } else if missing.is_empty() {
        log::info!(stage = "pull"; "nothing to pull");
    } else {
        for image in &missing {
            log::info!(stage = "pull"; "would pull {image}");
        }
    }
    outcome
        .stage_ms
        .push((Stage::Pull.name().into(), ms(started)));

    // converge
    crate::output::stage(Stage::Converge);
    let started = Instant::now();
    if options.execute {
        write_compose_dotenv(config, &vars).map_err(|e| (Stage::Converge, e))?;
    }
    if !options.execute {
        let missing_env: Vec<String> = config
            .runtime
            .groups
            .iter()
            .map(|g| config.runtime.env_dir.join(format!("{g}.env")))
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !missing_env.is_empty() {
            // The Compose file reads them at load; a first deploy's dry run
            // cannot plan converge before they exist.
            log::info!(stage = "converge"; "no converge plan yet: env files not rendered ({}); the execute run renders them first", missing_env.join(", "));
            outcome
                .stage_ms
                .push((Stage::Converge.name().into(), ms(started)));
            return Ok(());
        }
    }
    let mut project = Project::load(
        config.runtime.compose_file.as_path(),
        &config.runtime.project_name,
        &vars,
    )
    .map_err(|e| (Stage::Converge, e))?;
    // A dependency that never gets healthy fails the deploy within the same
    // deadline as the health stage, not Compose's default of minutes more.
    project.dependency_wait = crate::operation::wait_limit(
        "the dependency health wait (runtime.health_timeout)",
        config.runtime.health_timeout.duration(),
    )
    .map_err(|e| (Stage::Converge, e))?;
    if !options.execute && !missing.is_empty() {
        // The plan compares image ids; images not pulled yet will be new.
        log::info!(stage = "converge"; "plan below assumes the missing images change their services");
    }
    let plan = compose::plan(&docker, &project)
        .await
        .map_err(|e| (Stage::Converge, e))?;
    log::info!(stage = "converge"; "plan:\n{plan}");
    outcome.changed_services = plan
        .services
        .iter()
        .filter(|s| !matches!(s.action, compose::Action::Keep { running: true }))
        .map(|s| format!("{}:{}", s.service, action_word(&s.action)))
        .collect();
    if !options.execute {
        outcome
            .stage_ms
            .push((Stage::Converge.name().into(), ms(started)));
        return Ok(());
    }
    compose::converge(&docker, &project, &plan)
        .await
        .map_err(|e| match &e {
            // A start-first replacement that never got healthy: the old
            // container still serves, and the deploy failed at health.
            Error::Failed {
                stage: Stage::Health,
                ..
            } => (Stage::Health, e),
            _ => (Stage::Converge, e),
        })?;
    check_running_images(&docker, config, release)
        .await
        .map_err(|e| (Stage::Converge, e))?;
    outcome
        .stage_ms
        .push((Stage::Converge.name().into(), ms(started)));

    // health
    crate::output::stage(Stage::Health);
    let started = Instant::now();
    let limit = crate::operation::wait_limit(
        "the health wait (runtime.health_timeout)",
        config.runtime.health_timeout.duration(),
    )
    .map_err(|e| (Stage::Health, e))?;
    log::info!(stage = "health"; "waiting up to {}s for the project to be healthy", limit.as_secs());
    let health = compose::wait_healthy(&docker, &project, limit)
        .await
        .map_err(|e| (Stage::Health, e))?;
    let summary: Vec<String> = health
        .services
        .iter()
        .map(|s| format!("{}={}", s.service, s.health.as_deref().unwrap_or(&s.state)))
        .collect();
    log::info!(stage = "health"; "healthy after {}ms: {}", health.waited_ms, summary.join(" "));
    outcome
        .stage_ms
        .push((Stage::Health.name().into(), ms(started)));
    Ok(())
}

/// `runtime.backend_service` and `runtime.frontend_service` exist in the
/// Compose file and take their image from the image variables (their image
/// is exactly the release's), so the release a receipt names is the one
/// that runs.
pub fn check_services(config: &Config, release: &Release, project: &Project) -> Result<(), Error> {
    let file = config.runtime.compose_file.to_string();
    for (key, service, variable, image) in [
        (
            "runtime.backend_service",
            &config.runtime.backend_service,
            &config.runtime.backend_image_variable,
            &release.backend_image_uri,
        ),
        (
            "runtime.frontend_service",
            &config.runtime.frontend_service,
            &config.runtime.frontend_image_variable,
            &release.frontend_image_uri,
        ),
    ] {
        let Some(found) = project.service(service) else {
            let names: Vec<&str> = project.services.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(
                key,
                format!(
                    "service `{service}` is not in {file} (its services: {})",
                    names.join(", ")
                ),
                format!("add `{service}` to the Compose file or set {key} to one of its services"),
            ));
        };
        if found.image != *image {
            return Err(Error::invalid(
                format!("services.{service}.image in {file}"),
                format!(
                    "is `{}`, which does not come from ${{{variable}}} (the release's image is `{image}`)",
                    found.image
                ),
                format!("write `image: ${{{variable}}}` for service `{service}`"),
            ));
        }
    }
    Ok(())
}

/// After converge: the configured services run exactly the release's
/// images, so a receipt can never name an image that is not running.
async fn check_running_images(
    docker: &bollard::Docker,
    config: &Config,
    release: &Release,
) -> Result<(), Error> {
    let states = compose::service_states(docker, &config.runtime.project_name).await?;
    for (service, image) in [
        (&config.runtime.backend_service, &release.backend_image_uri),
        (
            &config.runtime.frontend_service,
            &release.frontend_image_uri,
        ),
    ] {
        let running: Vec<&str> = states
            .iter()
            .filter(|s| &s.service == service)
            .map(|s| s.image.as_str())
            .collect();
        if running != [image.as_str()] {
            return Err(Error::failed(
                Stage::Converge,
                format!(
                    "service {service} runs [{}] after converge, not exactly {image}",
                    running.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The render, retried while SSM is unreachable for up to `daemon.ssm_wait`
/// under [`EnvPolicy::KeepExistingIfUnavailable`] (at boot the network may
/// come up a little after the agent); once otherwise.
async fn render_waiting_for_ssm(
    config: &Config,
    options: Options,
) -> Result<crate::envrender::RenderSummary, RenderError> {
    let wait = match options.env {
        EnvPolicy::KeepExistingIfUnavailable => config.daemon.ssm_wait.duration(),
        _ => std::time::Duration::ZERO,
    };
    // Another try only when it can start (a pause from now) before `wait`.
    let pause = std::time::Duration::from_secs(2);
    let mut retry = Retry::for_time(wait.saturating_sub(pause), Backoff::constant(pause));
    loop {
        let render_options = crate::envrender::RenderOptions {
            execute: options.execute,
            allow_empty: options.env == EnvPolicy::RequiredAllowEmpty,
        };
        match crate::envrender::render(config, render_options).await {
            Err(RenderError::Other(Error::Unavailable { dependency, detail }))
                if !retry.exhausted() =>
            {
                log::info!(stage = "env-render"; "{dependency} unavailable ({detail}); trying again for up to {}s (daemon.ssm_wait)", wait.saturating_sub(retry.elapsed()).as_secs());
                retry.pause().await;
            }
            other => return other,
        }
    }
}

const DOTENV_HEADER: &str =
    "# wavemap-agent: the release that runs (the lines below are rewritten on deploy)";

/// `.env` beside the Compose file: the interpolation variables of the
/// release that runs, so a manual `docker compose up -d` agrees with us.
fn write_compose_dotenv(config: &Config, vars: &BTreeMap<String, String>) -> Result<(), Error> {
    let compose_file = config.runtime.compose_file.as_path();
    let dir = compose_file.parent().unwrap_or(compose_file);
    let path = dir.join(".env");
    let ours = |line: &str| {
        let key = line.split_once('=').map_or("", |(k, _)| k.trim());
        key == "COMPOSE_PROJECT_NAME" || vars.contains_key(key) || line.starts_with(DOTENV_HEADER)
    };
    // Keep whatever else an operator put in .env; replace only our keys.
    let existing = fsutil::read_owned(&path)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut text = String::new();
    for line in existing.lines().filter(|l| !ours(l)) {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(DOTENV_HEADER);
    text.push('\n');
    text.push_str(&format!(
        "COMPOSE_PROJECT_NAME={}\n",
        config.runtime.project_name
    ));
    for (key, value) in vars {
        // Image URIs and paths only: validated, no quoting needed.
        text.push_str(&format!("{key}={value}\n"));
    }
    if fsutil::read_owned(&path)?.as_deref() == Some(text.as_bytes()) {
        return Ok(());
    }
    // Keep the mode the operator gave the file; a new one is owner-only
    // (an operator may add credentials to it).
    let mode = std::fs::symlink_metadata(&path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o600);
    Ok(fsutil::write_atomic(&path, text.as_bytes(), mode)?)
}

fn action_word(action: &compose::Action) -> String {
    match action {
        compose::Action::Create => "create".into(),
        compose::Action::Recreate { reason } => format!("recreate-{reason}"),
        compose::Action::Keep { .. } => "start".into(),
        compose::Action::Remove => "remove".into(),
    }
}

fn ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
