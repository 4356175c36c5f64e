//! The deploy path: env-render, ecr-login, pull, converge, health.
//!
//! `runtime deploy`, `runtime rollback` and the daemon's boot recovery all
//! run this one pipeline, so a rollback is exactly a deploy of the receipt's
//! pair and boot recovery is exactly a deploy of the current release. Each
//! stage is timed and logged; a failure names its stage in the
//! `<PREFIX>_FAILED_STAGE` marker and keeps its own exit code (69 for a
//! dependency that stayed down, 3 for a parameter gate, 1 otherwise).
//!
//! Provenance: the registry of each image is authorized first
//! ([`crate::authority`]); a `deploy` pulls its tags again so each resolves
//! to the digest the registry holds now, and the pipeline then runs and
//! records the images pinned to those digests (`repo@sha256:...`). A tag
//! that now resolves to another digest than the one this host recorded for
//! it proceeds, but says so (`<PREFIX>_TAG_MOVED`, and a warning in the
//! log). Rollback and boot recovery run the digests they read.
//!
//! Order matters for safety: everything that can fail without touching the
//! running project (env render checks, login, pulls) happens before
//! converge, so a bad image URI or a refused token leaves the running
//! release untouched. Env files are rendered (and checked) before login,
//! but into staged copies: they become the live files only when converge
//! starts, so a run that fails or is killed before converge leaves every
//! env file byte for byte as it was ([`crate::envrender::Staged`]).
//!
//! Each stage is one function ([`run_stages`] calls them in order) and
//! hands on what the next needs in [`Run`].

use std::collections::BTreeMap;
use std::time::Instant;

use crate::authority::Trust;
use crate::compose::{self, Project};
use crate::config::Config;
use crate::envrender::{RenderError, Staged};
use crate::error::Error;
pub use crate::error::Stage;
use crate::fsutil;
use crate::image::ImageRef;
use crate::output::Report;
use crate::registry::{self, TokenCache};
use crate::release::Release;
use crate::retry::{Backoff, Retry};

/// Where the env files of a run come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvPolicy {
    /// Deploys and rollbacks: render from SSM (it must answer, exit 69
    /// otherwise; the empty-render guard holds, exit 3), staged until
    /// converge starts.
    Required,
    /// `runtime deploy --allow-empty`: as `Required`, but emptying env
    /// files is deliberate.
    RequiredAllowEmpty,
    /// Boot recovery: the env files on disk, as the last deploy promoted
    /// them, with no SSM call. Only when a file the release needs is
    /// missing is it rendered, trying SSM for `daemon.ssm_wait`; a render
    /// SSM or the checks refuse then keeps what exists and says so.
    FromDisk,
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
    /// Service -> the config hash converge applied (empty unless it ran).
    pub config_hashes: BTreeMap<String, String>,
    /// `<role>:<recorded>-><resolved>` (short digests) per moved tag.
    pub tag_moved: Vec<String>,
    /// The release as it ran: with the digests its images resolved to.
    pub release: Option<Release>,
}

/// Why boot recovery used the env files on disk when they were all there.
pub const ENV_FROM_DISK: &str = "as on disk; no SSM call";

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
        release.backend_ref(),
    );
    vars.insert(
        config.runtime.frontend_image_variable.clone(),
        release.frontend_ref(),
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
    if let (Ok(resolved), true, Some(by)) = (&result, options.execute, options.record_as) {
        crate::output::stage(Stage::State);
        if let Err(e) = crate::release::write_current(config, resolved, by, &outcome.config_hashes)
        {
            result = Err((Stage::State, e));
        } else if let Err(e) = crate::images::history::record(config, resolved, by) {
            // For `runtime prune`'s "recent pairs"; losing it only makes a
            // prune keep less, so it never fails the deploy.
            log::warn!(stage = "state"; "cannot record the pair in the deploy history: {e}");
        }
    }
    report.marker(&format!("{prefix}_STAGE_MS"), outcome.timings());
    if let Ok(resolved) = &result {
        resolved.add_digest_markers(report, prefix);
    }
    if !outcome.tag_moved.is_empty() {
        report.marker(&format!("{prefix}_TAG_MOVED"), outcome.tag_moved.join(","));
    }
    if outcome.env_kept_existing {
        let why = match outcome.env_kept_reason.as_deref() {
            Some(r) if r.starts_with("render refused") => "kept-existing-render-refused",
            Some(ENV_FROM_DISK) => "from-disk",
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
        Ok(_) => {
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
    result
        .map(|resolved| {
            outcome.release = Some(resolved);
            outcome
        })
        .map_err(|(_, e)| e)
}

/// The stages in order; each is one function below. A stage returns the
/// stage it failed in with its error. The release that ran (pinned to the
/// digests its images resolved to) is the result.
async fn run_stages(
    config: &Config,
    release: &Release,
    options: Options,
    report: &mut Report,
    outcome: &mut Outcome,
) -> Result<Release, (Stage, Error)> {
    let mut run = preflight(config, release, options).await?;
    run.env_render(report, outcome).await?;
    run.ecr_login(outcome).await?;
    run.pull(outcome).await?;
    let Some(project) = run.converge(outcome).await? else {
        return Ok(run.release); // dry run: the plan is the result
    };
    run.health(&project, outcome).await?;
    Ok(run.release)
}

/// What the stages of one run hand on to the next.
struct Run<'a> {
    config: &'a Config,
    /// The release as given, then (after pull) pinned to what it resolved to.
    release: Release,
    options: Options,
    vars: BTreeMap<String, String>,
    images: [ImageRef; 2],
    /// Which registry each image may come from (same order as `images`).
    trust: [Trust; 2],
    /// The rendered env files, not live until converge promotes them.
    staged: Option<Staged>,
    docker: Option<bollard::Docker>,
    /// Images to pull, and the credentials to pull each (none for a
    /// listed registry without `docker.auth_config` credentials).
    missing: Vec<(ImageRef, Trust)>,
    auths: Vec<Option<registry::RegistryAuth>>,
}

type StageResult<T = ()> = Result<T, (Stage, Error)>;

/// Local input first, dry run or not, before anything is read or written:
/// the image pair, the parameter contract (when the render will read it),
/// then the Compose file; an invalid one or a missing service changes
/// nothing. Env files not rendered yet count as empty here (a first
/// deploy's dry run).
async fn preflight<'a>(
    config: &'a Config,
    release: &Release,
    options: Options,
) -> StageResult<Run<'a>> {
    let backend = release.backend(config).map_err(|e| (Stage::Pull, e))?;
    let frontend = release.frontend(config).map_err(|e| (Stage::Pull, e))?;
    // Which registry each image may come from, before anything is written
    // (may read the host's account from instance metadata).
    let mut trust = [Trust::Listed; 2];
    for (slot, (field, image)) in trust
        .iter_mut()
        .zip([("backend image", &backend), ("frontend image", &frontend)])
    {
        *slot = crate::authority::authorize(config, field, image)
            .await
            .map_err(|e| (Stage::Pull, e))?;
    }
    if options.env != EnvPolicy::FromDisk {
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
    Ok(Run {
        config,
        release: release.clone(),
        options,
        vars,
        images: [backend, frontend],
        trust,
        staged: None,
        docker: None,
        missing: Vec::new(),
        auths: Vec::new(),
    })
}

/// The env files the release needs (one per configured group) that do not
/// exist.
fn missing_env_files(config: &Config) -> Vec<std::path::PathBuf> {
    config
        .runtime
        .groups
        .iter()
        .map(|g| config.runtime.env_dir.join(format!("{g}.env")))
        .filter(|p| !p.exists())
        .collect()
}

fn path_list(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Run<'_> {
    fn docker(&self) -> StageResult<&bollard::Docker> {
        self.docker.as_ref().ok_or_else(|| {
            (
                Stage::Pull,
                Error::failed(Stage::Pull, "no Docker connection (a bug: stage order)"),
            )
        })
    }

    /// env-render: a deploy renders from SSM into staged copies; boot
    /// recovery uses the files on disk and renders only a missing one.
    async fn env_render(&mut self, report: &mut Report, outcome: &mut Outcome) -> StageResult {
        crate::output::stage(Stage::EnvRender);
        let started = Instant::now();
        let config = self.config;
        let from_disk = self.options.env == EnvPolicy::FromDisk;
        let missing = missing_env_files(config);
        if from_disk && missing.is_empty() {
            // Finish a promotion a crash interrupted: the files on disk are
            // then whole, the last deploy's.
            crate::envrender::recover_interrupted(config).map_err(|e| (Stage::EnvRender, e))?;
            log::info!(stage = "env-render"; "using the env files on disk as the last deploy left them (no SSM call)");
            outcome.env_kept_existing = true;
            outcome.env_kept_reason = Some(ENV_FROM_DISK.into());
        } else {
            if from_disk {
                log::warn!(stage = "env-render"; "env files missing ({}): rendering them, and only them, from SSM", path_list(&missing));
            }
            log::info!(stage = "env-render"; "rendering env files from SSM ({})", if self.options.execute { "execute, staged until converge" } else { "dry run" });
            match render_waiting_for_ssm(config, self.options).await {
                Ok((summary, staged)) => {
                    summary.add_markers(report);
                    // A wake writes only what is missing: the files on disk
                    // stay the last deploy's.
                    self.staged = match staged {
                        Some(staged) if from_disk => Some(staged.retain(&missing)),
                        other => other,
                    };
                }
                Err(RenderError::Empty(guard)) => {
                    guard.add_markers(report);
                    if !from_disk {
                        return Err((Stage::EnvRender, RenderError::Empty(guard).into()));
                    }
                    log::warn!(stage = "env-render"; "empty-render guard: {guard}; keeping the existing env files");
                    outcome.env_kept_existing = true;
                    outcome.env_kept_reason = Some(format!("render refused: {guard}"));
                }
                Err(RenderError::Other(Error::Unavailable { dependency, detail })) if from_disk => {
                    log::warn!(stage = "env-render"; "{dependency} unavailable ({detail}); keeping the existing env files");
                    outcome.env_kept_existing = true;
                    outcome.env_kept_reason = Some(format!("{dependency} unavailable"));
                }
                Err(RenderError::Other(Error::Gate { reason })) if from_disk => {
                    log::warn!(stage = "env-render"; "the render was refused ({reason}); keeping the existing env files");
                    outcome.env_kept_existing = true;
                    outcome.env_kept_reason = Some(format!("render refused: {reason}"));
                }
                Err(RenderError::Other(e)) => return Err((Stage::EnvRender, e)),
            }
        }
        outcome
            .stage_ms
            .push((Stage::EnvRender.name().into(), ms(started)));
        Ok(())
    }

    /// ecr-login. A deploy pulls its tags again (a tag can be pushed anew;
    /// the registry's answer now is what gets pinned); otherwise an image
    /// already on the host is not pulled (a pinned digest is exact). The
    /// ECR token goes only to the host's own ECR.
    async fn ecr_login(&mut self, outcome: &mut Outcome) -> StageResult {
        let docker = crate::docker::connect(self.config)
            .await
            .map_err(|e| (Stage::Pull, e))?;
        self.docker = Some(docker.clone());
        crate::output::stage(Stage::EcrLogin);
        let started = Instant::now();
        let fresh_tags = self.options.record_as == Some("deploy");
        for (image, trust) in self.images.iter().zip(self.trust) {
            let present = registry::is_present(&docker, image)
                .await
                .map_err(|e| (Stage::Pull, e))?;
            if !present || (fresh_tags && image.tag().is_some()) {
                self.missing.push((image.clone(), trust));
            }
        }
        if self.missing.is_empty() {
            log::info!(stage = "ecr-login"; "both images are present on the host; no login or pull needed");
        } else if self.options.execute {
            let mut ecr = None;
            let mut cache = TokenCache::default();
            for (image, trust) in &self.missing {
                let auth = match trust {
                    Trust::HostEcr => {
                        log::info!(stage = "ecr-login"; "getting ECR credentials for {}", image.registry);
                        let client = match &ecr {
                            Some(client) => client,
                            None => {
                                let sdk = crate::aws::sdk_config(self.config).await;
                                ecr.insert(crate::aws::ecr_client(&sdk, self.config))
                            }
                        };
                        Some(
                            cache
                                .get(client, image)
                                .await
                                .map_err(|e| (Stage::EcrLogin, e))?,
                        )
                    }
                    // Never the ECR token: this registry is not the host's ECR.
                    Trust::Listed => {
                        let auth = registry::config_json_auth(
                            self.config.docker.auth_config.as_ref().map(|p| p.as_path()),
                            &image.registry,
                        )
                        .map_err(|e| (Stage::EcrLogin, e))?;
                        log::info!(stage = "ecr-login"; "{} is a listed registry: pulling {}", image.registry, if auth.is_some() { "with its docker.auth_config credentials" } else { "anonymously" });
                        auth
                    }
                };
                self.auths.push(auth);
            }
        }
        outcome
            .stage_ms
            .push((Stage::EcrLogin.name().into(), ms(started)));
        Ok(())
    }

    /// pull the missing images, together, within `runtime.pull_timeout`;
    /// then pin the release to the digests its images resolved to.
    async fn pull(&mut self, outcome: &mut Outcome) -> StageResult {
        crate::output::stage(Stage::Pull);
        let started = Instant::now();
        let config = self.config;
        let docker = self.docker()?.clone();
        let mut reported: BTreeMap<String, String> = BTreeMap::new();
        self.preflight_disk(&docker, outcome).await?;
        if self.options.execute && !self.missing.is_empty() {
            let pulls = self
                .missing
                .iter()
                .zip(self.auths.iter())
                .map(|((image, _), auth)| {
                    log::info!(stage = "pull"; "pulling {image}");
                    registry::pull(&docker, &config.docker.host, image, auth.as_ref())
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
            for ((image, _), result) in self.missing.iter().zip(results) {
                if let Some(digest) = result.map_err(|e| (Stage::Pull, e))? {
                    reported.insert(image.to_string(), digest);
                }
            }
            outcome.pulled = self.missing.iter().map(|(i, _)| i.to_string()).collect();
        } else if self.missing.is_empty() {
            log::info!(stage = "pull"; "nothing to pull");
        } else {
            for (image, _) in &self.missing {
                log::info!(stage = "pull"; "would pull {image}");
            }
            log::info!(stage = "pull-preflight"; "the free-space check runs with --execute (it reads the manifests with the registry login)");
        }
        self.pin(&docker, &reported, outcome).await?;
        outcome
            .stage_ms
            .push((Stage::Pull.name().into(), ms(started)));
        Ok(())
    }

    /// pull-preflight: enough disk for the missing images, before any
    /// pull. Deploy and rollback refuse; boot recovery (which records
    /// nothing) only warns.
    async fn preflight_disk(&self, docker: &bollard::Docker, outcome: &mut Outcome) -> StageResult {
        if !self.options.execute || self.missing.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mode = if self.options.record_as.is_some() {
            crate::images::preflight::Mode::Refuse
        } else {
            crate::images::preflight::Mode::Warn
        };
        let images: Vec<ImageRef> = self.missing.iter().map(|(i, _)| i.clone()).collect();
        crate::images::preflight::check(self.config, docker, &images, &self.auths, mode)
            .await
            .map_err(|e| (Stage::PullPreflight, e))?;
        outcome
            .stage_ms
            .push((Stage::PullPreflight.name().into(), ms(started)));
        Ok(())
    }

    /// The digest each image resolved to (for a dry run: the local
    /// image's). A run that records (deploy, rollback) pins what it
    /// resolved. One that does not (boot recovery) runs the release as its
    /// file names it, so what runs stays what the drift check expects; a
    /// schema 1 state (no digests) keeps running by tag until the next
    /// deploy records.
    async fn pin(
        &mut self,
        docker: &bollard::Docker,
        reported: &BTreeMap<String, String>,
        outcome: &mut Outcome,
    ) -> StageResult {
        let mut digests = Vec::new();
        for image in &self.images {
            let digest = registry::repo_digest(
                docker,
                image,
                reported.get(&image.to_string()).map(String::as_str),
            )
            .await
            .map_err(|e| (Stage::Pull, e))?;
            if digest.is_none() && self.options.execute {
                log::warn!(stage = "pull"; "{image} has no repo digest for its repository on this host (never pulled from {}); it runs by tag", image.registry);
            }
            digests.push(digest);
        }
        if self.options.record_as.is_some() {
            let [backend_digest, frontend_digest] = [digests[0].clone(), digests[1].clone()];
            self.release = self.release.with_digests(
                self.release.backend_digest.clone().or(backend_digest),
                self.release.frontend_digest.clone().or(frontend_digest),
            );
            self.vars = compose_vars(self.config, &self.release);
        }
        if self.options.record_as == Some("deploy") {
            outcome.tag_moved = moved_tags(self.config, &self.release);
            for moved in &outcome.tag_moved {
                log::warn!(stage = "pull"; "tag moved: {moved} (the tag now names other bytes than the ones this host recorded for it; deploying the new digest)");
            }
        }
        Ok(())
    }

    /// converge: promote the staged env files, then bring the project to
    /// the release. `None` for a dry run (nothing more to do).
    async fn converge(&mut self, outcome: &mut Outcome) -> StageResult<Option<Project>> {
        crate::output::stage(Stage::Converge);
        let started = Instant::now();
        let config = self.config;
        let execute = self.options.execute;
        if execute {
            // From here on the run changes what runs: the rendered env files
            // become the live ones, all together.
            if let Some(staged) = self.staged.take() {
                staged.promote().map_err(|e| (Stage::Converge, e))?;
            }
            write_compose_dotenv(config, &self.vars).map_err(|e| (Stage::Converge, e))?;
        } else {
            let missing_env = missing_env_files(config);
            if !missing_env.is_empty() {
                // The Compose file reads them at load; a first deploy's dry
                // run cannot plan converge before they exist.
                log::info!(stage = "converge"; "no converge plan yet: env files not rendered ({}); the execute run renders them first", path_list(&missing_env));
                outcome
                    .stage_ms
                    .push((Stage::Converge.name().into(), ms(started)));
                return Ok(None);
            }
        }
        let mut project = Project::load(
            config.runtime.compose_file.as_path(),
            &config.runtime.project_name,
            &self.vars,
        )
        .map_err(|e| (Stage::Converge, e))?;
        // A dependency that never gets healthy fails the deploy within the
        // same deadline as the health stage, not Compose's default of
        // minutes more.
        project.dependency_wait = crate::operation::wait_limit(
            "the dependency health wait (runtime.health_timeout)",
            config.runtime.health_timeout.duration(),
        )
        .map_err(|e| (Stage::Converge, e))?;
        if !execute && !self.missing.is_empty() {
            // The plan compares image ids; images not pulled yet will be new.
            log::info!(stage = "converge"; "plan below assumes the missing images change their services");
        }
        let docker = self.docker()?;
        let plan = compose::plan(docker, &project)
            .await
            .map_err(|e| (Stage::Converge, e))?;
        log::info!(stage = "converge"; "plan:\n{plan}");
        outcome.changed_services = plan
            .services
            .iter()
            .filter(|s| !matches!(s.action, compose::Action::Keep { running: true }))
            .map(|s| format!("{}:{}", s.service, action_word(&s.action)))
            .collect();
        if !execute {
            outcome
                .stage_ms
                .push((Stage::Converge.name().into(), ms(started)));
            return Ok(None);
        }
        compose::converge(docker, &project, &plan)
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
        check_running_images(docker, config, &self.release)
            .await
            .map_err(|e| (Stage::Converge, e))?;
        // What converge applied: the daemon restores a crashed container
        // with exactly this config and nothing newer.
        outcome.config_hashes = plan
            .services
            .iter()
            .filter(|s| s.action != compose::Action::Remove)
            .filter_map(|s| Some((s.service.clone(), s.config_hash.clone()?)))
            .collect();
        outcome
            .stage_ms
            .push((Stage::Converge.name().into(), ms(started)));
        Ok(Some(project))
    }

    /// health: every service healthy (or running, without a healthcheck)
    /// within `runtime.health_timeout`.
    async fn health(&self, project: &Project, outcome: &mut Outcome) -> StageResult {
        crate::output::stage(Stage::Health);
        let started = Instant::now();
        let limit = crate::operation::wait_limit(
            "the health wait (runtime.health_timeout)",
            self.config.runtime.health_timeout.duration(),
        )
        .map_err(|e| (Stage::Health, e))?;
        log::info!(stage = "health"; "waiting up to {}s for the project to be healthy", limit.as_secs());
        let health = compose::wait_healthy(self.docker()?, project, limit)
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
            release.backend_ref(),
        ),
        (
            "runtime.frontend_service",
            &config.runtime.frontend_service,
            &config.runtime.frontend_image_variable,
            release.frontend_ref(),
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
        if found.image != image {
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
        (&config.runtime.backend_service, release.backend_ref()),
        (&config.runtime.frontend_service, release.frontend_ref()),
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

/// Tags whose resolved digest differs from the one this host recorded for
/// the same image URI (in the current release or the last-good receipt):
/// `<role>:<recorded>-><resolved>`, short digests. Unreadable state counts
/// as nothing recorded (the deploy itself is what rewrites it).
fn moved_tags(config: &Config, resolved: &Release) -> Vec<String> {
    let mut recorded: Vec<Release> = Vec::new();
    if let Ok(Some(current)) = crate::release::read_current(config) {
        recorded.push(current.release);
    }
    if let Ok(Some(receipt)) = crate::release::read_receipt(config) {
        recorded.push(receipt.release);
    }
    let mut moved = Vec::new();
    for (role, uri, digest) in [
        (
            "backend",
            &resolved.backend_image_uri,
            &resolved.backend_digest,
        ),
        (
            "frontend",
            &resolved.frontend_image_uri,
            &resolved.frontend_digest,
        ),
    ] {
        let Some(digest) = digest else { continue };
        let before = recorded.iter().find_map(|r| {
            let (u, d) = if role == "backend" {
                (&r.backend_image_uri, &r.backend_digest)
            } else {
                (&r.frontend_image_uri, &r.frontend_digest)
            };
            d.as_ref().filter(|d| u == uri && *d != digest)
        });
        if let Some(before) = before {
            moved.push(format!(
                "{role}:{}->{}",
                crate::image::short_digest(before),
                crate::image::short_digest(digest)
            ));
        }
    }
    moved
}

/// The render (staged when executed), retried while SSM is unreachable for
/// up to `daemon.ssm_wait` under [`EnvPolicy::FromDisk`] (at boot the
/// network may come up a little after the agent); once otherwise.
async fn render_waiting_for_ssm(
    config: &Config,
    options: Options,
) -> Result<(crate::envrender::RenderSummary, Option<Staged>), RenderError> {
    let wait = match options.env {
        EnvPolicy::FromDisk => config.daemon.ssm_wait.duration(),
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
        match crate::envrender::render_staged(config, render_options).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AbsPath;

    #[test]
    fn a_tag_recorded_under_another_digest_is_reported_as_moved() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.agent.state_dir = AbsPath::new(dir.path().join("state"));
        config.receipt.path = AbsPath::new(dir.path().join("receipt.json"));
        config.aws.test_ecr_registry_alias = Some("127.0.0.1:5000".into());
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let release = Release {
            source_sha: sha.into(),
            image_tag: String::new(),
            backend_image_uri: format!("127.0.0.1:5000/w/backend:sha-{sha}"),
            frontend_image_uri: format!("127.0.0.1:5000/w/frontend:sha-{sha}"),
            deployment_version: "v1".into(),
            selected_ref: None,
            workflow_run: None,
            backend_digest: None,
            frontend_digest: None,
        };
        let (old, new) = (
            format!("sha256:{}", "a".repeat(64)),
            format!("sha256:{}", "b".repeat(64)),
        );
        // Nothing recorded: nothing moved.
        let now = release.with_digests(Some(new.clone()), Some(new.clone()));
        assert!(moved_tags(&config, &now).is_empty());
        // The receipt recorded the same tags under `old` for the backend.
        crate::release::write_receipt(&config, &release.with_digests(Some(old), Some(new.clone())))
            .unwrap();
        assert_eq!(
            moved_tags(&config, &now),
            vec!["backend:aaaaaaaaaaaa->bbbbbbbbbbbb".to_owned()]
        );
        // Another image URI under another digest is not this tag moving.
        let mut other = now.clone();
        other.backend_image_uri = format!("127.0.0.1:5000/w/other:sha-{sha}");
        assert!(moved_tags(&config, &other).is_empty());
    }
}
