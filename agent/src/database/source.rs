//! Where the journal and the connection string come from.
//!
//! The journal is the migrations folder inside the deployed API image, read
//! without running anything: a container is created from the image (never
//! started), the folder is downloaded through the Engine's archive API, and
//! the container is removed. The image is the one the running API container
//! uses, or else the backend image of the current release (which the caller
//! passes in: this module reads no release state). `--migrations-dir`
//! reads a local folder instead (operators debugging, tests).
//!
//! The connection string comes from `--database-url` / `DATABASE_URL`, then
//! `database.url`, then the rendered backend env file
//! (`<runtime.env_dir>/<database.url_env_group>.env`, variable
//! `database.url_env_variable`). Inside the Compose network that URL names the
//! host `postgres`, which the host itself cannot resolve. When the URL came
//! from the env file and its host does not resolve but is a running service
//! of the project, the agent connects to that container's address on the
//! project network instead (the host routes to its own bridge networks), so
//! `database status` works on a stock host. Otherwise an operator passes
//! `--database-url` (or sets `database.url`) with a reachable address.

use std::path::Path;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::journal::{self, Files, Journal};
use crate::config::Config;
use crate::error::{Dependency, Error, Stage};
use crate::jobs;
use crate::output::register_secret;
use crate::release::Release;

/// Bytes accepted from the archive API (the tar of the folder).
const MAX_ARCHIVE_BYTES: usize = 64 * 1024 * 1024;

/// The journal and a description of where it came from (for markers).
pub struct Loaded {
    pub journal: Journal,
    pub origin: String,
}

/// Read the journal from `dir`, or from the API image when `dir` is `None`
/// (the running API container's image, else `current`, the current
/// release's).
pub async fn load_journal(
    config: &Config,
    dir: Option<&Path>,
    current: Option<&Release>,
) -> Result<Loaded, Error> {
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return Err(Error::invalid(
                "--migrations-dir",
                format!("{} is not a directory", dir.display()),
                "pass the Drizzle migrations folder (the one holding meta/_journal.json or <timestamp>_<name>/ folders)",
            ));
        }
        let origin = dir.display().to_string();
        let files = Files::from_dir(dir).map_err(|e| Error::caused(Stage::Journal, e))?;
        let journal =
            journal::parse(&files, &origin).map_err(|e| Error::caused(Stage::Journal, e))?;
        return Ok(Loaded { journal, origin });
    }
    let docker = crate::docker::connect(config).await?;
    let image = api_image(&docker, config, current).await?;
    let path = config.database.migrations_path_in_image.to_string();
    let files = files_from_image(&docker, &image, &path).await?;
    let origin = format!("{image}:{path}");
    let journal = journal::parse(&files, &origin).map_err(|e| Error::caused(Stage::Journal, e))?;
    Ok(Loaded { journal, origin })
}

/// The image whose journal counts: the running API container's, else the
/// current release's backend image.
async fn api_image(
    docker: &Docker,
    config: &Config,
    current: Option<&Release>,
) -> Result<String, Error> {
    if let Some((_, image_id)) = jobs::find_api_container(docker, config).await? {
        if !image_id.is_empty() {
            return Ok(image_id);
        }
    }
    if let Some(current) = current {
        return Ok(current.backend_ref());
    }
    Err(Error::invalid(
        "journal source",
        format!(
            "no running `{}` container in project `{}` and no current release to take the API image from",
            config.runtime.backend_service, config.runtime.project_name
        ),
        "deploy first, or pass --migrations-dir DIR",
    ))
}

/// Create (never start) a container from `image`, download `path` from it,
/// remove it.
pub async fn files_from_image(docker: &Docker, image: &str, path: &str) -> Result<Files, Error> {
    let docker_err = |e: bollard::errors::Error| Error::unavailable(Dependency::Docker, e);
    let name = format!(
        "wavemap-agent-journal-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        // Never run; a command is only needed because images without one
        // (FROM scratch) cannot be created otherwise.
        cmd: Some(vec!["/wavemap-agent-never-started".into()]),
        entrypoint: Some(vec![]),
        labels: Some(
            [(
                "wavemap-agent.purpose".to_string(),
                "journal-read".to_string(),
            )]
            .into_iter()
            .collect(),
        ),
        network_disabled: Some(true),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => Error::failed(
                Stage::Journal,
                format!(
                    "image {image} is not present locally; pull it first or pass --migrations-dir"
                ),
            ),
            other => docker_err(other),
        })?;
    let result = download(docker, &created.id, path).await;
    if let Err(e) = docker
        .remove_container(
            &created.id,
            Some(
                RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
    {
        log::warn!(stage = "journal"; "cannot remove the helper container {name}: {e}");
    }
    let tar = result?;
    Files::from_tar(&tar[..], &format!("{image}:{path}"))
        .map_err(|e| Error::caused(Stage::Journal, e))
}

async fn download(docker: &Docker, container: &str, path: &str) -> Result<Vec<u8>, Error> {
    let mut stream = docker.download_from_container(
        container,
        Some(
            DownloadFromContainerOptionsBuilder::new()
                .path(path)
                .build(),
        ),
    );
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => Error::failed(
                Stage::Journal,
                format!("the API image has no {path} (database.migrations_path_in_image)"),
            ),
            other => Error::unavailable(Dependency::Docker, other),
        })?;
        if tar.len() + chunk.len() > MAX_ARCHIVE_BYTES {
            return Err(Error::failed(
                Stage::Journal,
                format!("{path} in the image is larger than {MAX_ARCHIVE_BYTES} bytes"),
            ));
        }
        tar.extend_from_slice(&chunk);
    }
    Ok(tar)
}

/// Where a connection string came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlOrigin {
    Flag,
    Config,
    EnvFile,
    /// The running API container's own environment (what its jobs use).
    Container,
}

/// The connection string in the running API container's environment
/// (`database.url_env_variable`): the database its jobs work on. `Ok(None)`
/// when no API container runs; exit 2 when it runs without that variable.
pub async fn container_database_url(config: &Config) -> Result<Option<String>, Error> {
    let docker = crate::docker::connect(config).await?;
    let Some((id, _)) = jobs::find_api_container(&docker, config).await? else {
        return Ok(None);
    };
    let inspect = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| Error::unavailable(Dependency::Docker, e))?;
    let variable = &config.database.url_env_variable;
    let url = inspect
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .into_iter()
        .find_map(|entry| {
            entry
                .split_once('=')
                .filter(|(name, value)| name == variable && !value.is_empty())
                .map(|(_, value)| value.to_owned())
        });
    match url {
        Some(url) => {
            register_secret(&url);
            Ok(Some(url))
        }
        None => Err(Error::invalid(
            "database URL",
            format!("no --database-url, no database.url, no rendered env file, and the API container has no {variable}"),
            "pass --database-url with the database the jobs work on",
        )),
    }
}

/// If `url` (from the env file) names a host the machine cannot resolve and
/// that is a running service of the Compose project, return the URL with the
/// container's address instead. Anything else returns `None` and the URL is
/// used as it is (the connection error then says what to do).
pub async fn route_compose_host(config: &Config, url: &str) -> Option<String> {
    let host = service_host(url)?;
    if tokio::net::lookup_host((host.as_str(), 5432)).await.is_ok() {
        return None;
    }
    let docker = crate::docker::connect(config).await.ok()?;
    let filters: std::collections::HashMap<String, Vec<String>> = [
        (
            "label".to_string(),
            vec![
                format!("com.docker.compose.project={}", config.runtime.project_name),
                format!("com.docker.compose.service={host}"),
            ],
        ),
        ("status".to_string(), vec!["running".to_string()]),
    ]
    .into_iter()
    .collect();
    let list = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .filters(&filters)
                .build(),
        ))
        .await
        .ok()?;
    let id = list.into_iter().find_map(|c| c.id)?;
    let inspect = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()?;
    let networks = inspect.network_settings?.networks?;
    // Prefer the network on which the service answers to that name.
    let mut endpoints: Vec<_> = networks.into_values().collect();
    endpoints.sort_by_key(|e| {
        let named = e
            .aliases
            .iter()
            .chain(e.dns_names.iter())
            .flatten()
            .any(|n| *n == host);
        !named
    });
    let ip = endpoints
        .into_iter()
        .filter_map(|e| e.ip_address)
        .find(|ip| !ip.is_empty())?;
    log::info!(stage = "database"; "`{host}` is the project's `{host}` service, which this host cannot resolve by name; connecting to its container address {ip}");
    let routed = with_host(url, &ip)?;
    register_secret(&routed);
    Some(routed)
}

/// The host of `url` when it can be a Compose service name: one label (no
/// dots: a domain or an IPv4 address; no brackets: IPv6; no commas: several
/// hosts), not `localhost`.
pub(crate) fn service_host(url: &str) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host_str()?.to_owned();
    (!host.contains(['.', ':', ',', '[']) && host != "localhost").then_some(host)
}

/// `url` with its host replaced by `ip`; user, password, port, database and
/// options kept.
fn with_host(url: &str, ip: &str) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    parsed.set_host(Some(ip)).ok()?;
    Some(parsed.to_string())
}

/// The connection string and where it came from (never the value itself).
pub fn database_url(config: &Config, flag: Option<&str>) -> Result<(String, UrlOrigin), Error> {
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        register_secret(url);
        return Ok((url.to_owned(), UrlOrigin::Flag));
    }
    if let Some(url) = config.database.url.as_deref().filter(|u| !u.is_empty()) {
        register_secret(url);
        return Ok((url.to_owned(), UrlOrigin::Config));
    }
    let path = config
        .runtime
        .env_dir
        .join(format!("{}.env", config.database.url_env_group));
    let variable = &config.database.url_env_variable;
    let Some(bytes) = crate::fsutil::read_owned(&path)? else {
        return Err(Error::invalid(
            "database URL",
            format!(
                "no --database-url, no database.url and no env file {}",
                path.display()
            ),
            "render the env (`runtime-env --execute`) or pass --database-url",
        ));
    };
    let vars = crate::envfile::parse_bytes(&bytes).map_err(|e| {
        Error::invalid(
            format!("env file {}", path.display()),
            e.to_string(),
            "render it again (`runtime-env --execute`) or pass --database-url",
        )
    })?;
    match vars.get(variable.as_str()) {
        Some(url) if !url.is_empty() => {
            register_secret(url);
            log::debug!(stage = "database"; "connection string from {variable} in {}", path.display());
            Ok((url.clone(), UrlOrigin::EnvFile))
        }
        _ => Err(Error::invalid(
            "database URL",
            format!("{} has no {variable}", path.display()),
            "check database.url_env_group / url_env_variable, or pass --database-url",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_hosts_are_found_and_replaced() {
        let url = "postgres://u:p%40ss@postgres:5432/db?x=1";
        assert_eq!(service_host(url).as_deref(), Some("postgres"));
        assert_eq!(
            with_host(url, "10.0.0.2").as_deref(),
            Some("postgres://u:p%40ss@10.0.0.2:5432/db?x=1")
        );
        assert_eq!(service_host("postgresql://db/app").as_deref(), Some("db"));
        assert_eq!(service_host("postgres://[::1]:5432/db"), None);
        assert_eq!(service_host("postgres://db.example.com/db"), None);
        assert_eq!(service_host("postgres://localhost/db"), None);
    }

    #[test]
    fn url_from_env_file_when_no_flag_or_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.runtime.env_dir = crate::config::AbsPath::new(dir.path());
        std::fs::write(
            dir.path().join("backend.env"),
            "# rendered\nAPP_NAME='wavemap'\nDATABASE_URL='postgres://app:pw-in-env-file@postgres/app'\n",
        )
        .unwrap();
        let (url, origin) = database_url(&config, None).unwrap();
        assert_eq!(url, "postgres://app:pw-in-env-file@postgres/app");
        assert_eq!(origin, UrlOrigin::EnvFile);
        let (url, _) = database_url(&config, Some("postgres://flag@h/db")).unwrap();
        assert_eq!(url, "postgres://flag@h/db");
    }
}
