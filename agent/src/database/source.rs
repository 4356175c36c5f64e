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
//! The database is one for everything a command does (the gate, the
//! advisory lock and the jobs): `--database-url` / `DATABASE_URL`, then
//! `database.url` (both also handed to the jobs), else the `DATABASE_URL`
//! (`database.url_env_variable`) the running API container runs with, the
//! one its jobs use. Only when no API container runs is the rendered env
//! file (`<runtime.env_dir>/<database.url_env_group>.env`) read. A container
//! URL other than the env file's (a standalone `runtime-env` since the last
//! converge) is reported, not followed. That URL names the host `postgres`,
//! a Compose service the host cannot resolve and must not ask its own DNS
//! about: single-label hosts are resolved through Docker to the service
//! container's address ([`route_service`]).

use std::path::Path;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::dsn::Dsn;
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
    /// `--database-url` (or `DATABASE_URL` in the agent's environment).
    Flag,
    /// `database.url`.
    Config,
    /// The running API container's own environment (what its jobs use).
    Container,
    /// The rendered env file (no API container runs).
    EnvFile,
}

impl UrlOrigin {
    /// The `WAVEMAP_DATABASE_URL_SOURCE` value.
    pub fn name(self) -> &'static str {
        match self {
            UrlOrigin::Flag => "flag",
            UrlOrigin::Config => "config",
            UrlOrigin::Container => "container",
            UrlOrigin::EnvFile => "env-file",
        }
    }

    /// Whether the operator named the database: the jobs then get it as
    /// their `DATABASE_URL`, so they work on the one the gate read.
    pub fn explicit(self) -> bool {
        matches!(self, UrlOrigin::Flag | UrlOrigin::Config)
    }
}

/// The one database a command works on.
#[derive(Debug)]
pub struct Resolved {
    pub dsn: Dsn,
    pub origin: UrlOrigin,
    /// The parts (`host`, `dbname`, `password`, ...) in which the rendered
    /// env file's URL differs from the API container's; empty when they
    /// agree or were not compared.
    pub mismatch: Vec<&'static str>,
}

/// The database the gate, the advisory lock and the jobs use: the
/// operator's (`--database-url`, then `database.url`), else the one the
/// running API container runs with, else (no API container) the rendered
/// env file's. A container URL that differs from the env file's is
/// reported (a `runtime-env` since the last converge): the container's is
/// the one the jobs use, so it is the one used. A Compose service name in
/// the host is then resolved through Docker ([`route_service`]).
pub async fn resolve(config: &Config, flag: Option<&str>) -> Result<Resolved, Error> {
    match resolve_if_any(config, flag).await? {
        Some(resolved) => Ok(resolved),
        None => Err(Error::invalid(
            "database URL",
            format!(
                "no --database-url, no database.url, no running `{}` container and no {} in the rendered env file {}",
                config.runtime.backend_service,
                config.database.url_env_variable,
                env_file_path(config).display()
            ),
            "deploy, render the env (`runtime-env --execute`) or pass --database-url",
        )),
    }
}

/// [`resolve`], with `None` when no source names a database at all (the
/// jobs then have no API container to run in either, and say so).
pub async fn resolve_if_any(
    config: &Config,
    flag: Option<&str>,
) -> Result<Option<Resolved>, Error> {
    let Some(mut resolved) = pick(config, flag).await? else {
        return Ok(None);
    };
    route_service(config, &mut resolved.dsn).await?;
    log::info!(stage = "database"; "database: {} from {}, {}", resolved.dsn.endpoint(), resolved.origin.name(), resolved.dsn.tls().describe());
    Ok(Some(resolved))
}

async fn pick(config: &Config, flag: Option<&str>) -> Result<Option<Resolved>, Error> {
    let explicit = |dsn, origin| Resolved {
        dsn,
        origin,
        mismatch: Vec::new(),
    };
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        return Ok(Some(explicit(
            parse(url, "--database-url")?,
            UrlOrigin::Flag,
        )));
    }
    if let Some(url) = config.database.url.as_deref().filter(|u| !u.is_empty()) {
        return Ok(Some(explicit(
            parse(url, "database.url")?,
            UrlOrigin::Config,
        )));
    }
    let variable = &config.database.url_env_variable;
    let container = match container_database_url(config).await {
        Ok(found) => found,
        Err(e) => {
            // No Engine, no jobs: status can still read the env file.
            log::warn!(stage = "database"; "cannot ask Docker for the API container's {variable} ({e}); using the rendered env file");
            None
        }
    };
    let env_file = env_file_url(config)?;
    let Some((url, docker, id)) = container else {
        return match env_file {
            Some((url, path)) => Ok(Some(explicit(
                parse(&url, &format!("{variable} in {}", path.display()))?,
                UrlOrigin::EnvFile,
            ))),
            None => Ok(None),
        };
    };
    let mut dsn = parse(&url, &format!("{variable} of the API container"))?;
    if let Some(path) = dsn.tls().root_cert.clone() {
        // The container's URL names the container's own CA file.
        let pem = file_from_container(&docker, &id, &path).await?;
        dsn.set_root_pem(pem, "in the API container");
    }
    let mismatch = match env_file {
        Some((file_url, path)) => match Dsn::parse(&file_url) {
            Ok(file) => {
                let parts = dsn.differences(&file);
                if !parts.is_empty() {
                    log::warn!(stage = "database"; "the API container runs with another {variable} than {} (differs in: {}; container: {}, env file: {}); the gate, the advisory lock and the jobs use the container's, the database the jobs work on. Converge (`deploy` or `runtime compose up`) to apply the env file", path.display(), parts.join(", "), dsn.endpoint(), file.endpoint());
                }
                parts
            }
            Err(e) => {
                log::warn!(stage = "database"; "{variable} in {} does not parse ({e}); the API container's is used", path.display());
                vec!["unparsable"]
            }
        },
        None => Vec::new(),
    };
    Ok(Some(Resolved {
        dsn,
        origin: UrlOrigin::Container,
        mismatch,
    }))
}

/// Parse a connection string; bad text is exit 2 naming where it came from.
fn parse(url: &str, field: &str) -> Result<Dsn, Error> {
    Dsn::parse(url).map_err(|e| {
        Error::invalid(
            field,
            e.to_string(),
            "use postgres://user:password@host:port/db[?sslmode=...&sslrootcert=/path/ca.pem]",
        )
    })
}

/// The connection string in the running API container's environment
/// (`database.url_env_variable`): the database its jobs work on. `Ok(None)`
/// when no API container runs or it has no such variable (warned).
async fn container_database_url(
    config: &Config,
) -> Result<Option<(String, Docker, String)>, Error> {
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
            Ok(Some((url, docker, id)))
        }
        None => {
            log::warn!(stage = "database"; "the running `{}` container has no {variable}; its jobs name no database", config.runtime.backend_service);
            Ok(None)
        }
    }
}

/// A Compose service name in the host is resolved only through Docker,
/// never host DNS: whatever a host resolver answers for `postgres` must not
/// get the password. A single-label host (not `localhost`) must be a
/// service of the project: the connection goes to its container's address
/// on the project network (the host routes to its own bridge networks),
/// while the name stays the TLS server name.
pub async fn route_service(config: &Config, dsn: &mut Dsn) -> Result<(), Error> {
    let Some(host) = dsn.service_host().map(str::to_owned) else {
        return Ok(());
    };
    let project = &config.runtime.project_name;
    let docker = crate::docker::connect(config).await?;
    let filters: std::collections::HashMap<String, Vec<String>> = [(
        "label".to_string(),
        vec![
            format!("com.docker.compose.project={project}"),
            format!("com.docker.compose.service={host}"),
        ],
    )]
    .into_iter()
    .collect();
    let list = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| Error::unavailable(Dependency::Docker, e))?;
    if list.is_empty() {
        // Unreachable, like a host that does not resolve (exit 69): the
        // service may be defined and gone; the fix is in the message.
        return Err(Error::unavailable(
            Dependency::Postgres,
            format!("`{host}` in the database URL is a single-label name, which the agent resolves only as a service of Compose project `{project}` (never through host DNS), and the project has no `{host}` container; start that service, or pass --database-url with an IP address or a fully qualified host name"),
        ));
    }
    let running = list
        .iter()
        .filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
        .max_by_key(|c| c.created.unwrap_or(0));
    let not_running = || {
        Error::unavailable(
            Dependency::Postgres,
            format!("the `{host}` service of project `{project}` has no running container with an address; its name is resolved only through Docker"),
        )
    };
    let id = running.and_then(|c| c.id.clone()).ok_or_else(not_running)?;
    let inspect = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| Error::unavailable(Dependency::Docker, e))?;
    let networks = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
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
        .find_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .ok_or_else(not_running)?;
    log::info!(stage = "database"; "`{host}` is the project's `{host}` service: connecting to its container address {ip} (Compose service names are resolved through Docker, never host DNS)");
    dsn.route(ip);
    Ok(())
}

/// Bytes accepted for a CA file read from a container.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// The bytes of the regular file `path` in container `id` (archive API).
async fn file_from_container(docker: &Docker, id: &str, path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let shown = path.display().to_string();
    let missing = |problem: String| {
        Error::invalid(
            "sslrootcert",
            format!("the API container's DATABASE_URL names {shown}: {problem}"),
            "put the CA bundle into the API image (or a mount) at that path, or fix sslrootcert",
        )
    };
    let mut stream = docker.download_from_container(
        id,
        Some(
            DownloadFromContainerOptionsBuilder::new()
                .path(&shown)
                .build(),
        ),
    );
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => missing("no such file in the container".into()),
            other => Error::unavailable(Dependency::Docker, other),
        })?;
        tar.extend_from_slice(&chunk);
        if tar.len() as u64 > MAX_CA_FILE_BYTES + 64 * 1024 {
            return Err(missing(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
        }
    }
    let mut archive = tar::Archive::new(&tar[..]);
    let entries = archive
        .entries()
        .map_err(|e| missing(format!("unreadable archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| missing(format!("unreadable archive ({e})")))?;
        if entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_CA_FILE_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| missing(format!("unreadable archive ({e})")))?;
            return Ok(bytes);
        }
    }
    Err(missing("not a regular file (a symlink or a folder)".into()))
}

fn env_file_path(config: &Config) -> std::path::PathBuf {
    config
        .runtime
        .env_dir
        .join(format!("{}.env", config.database.url_env_group))
}

/// The URL in the rendered env file and the file, `None` when the file or
/// the variable is absent.
fn env_file_url(config: &Config) -> Result<Option<(String, std::path::PathBuf)>, Error> {
    let path = env_file_path(config);
    let variable = &config.database.url_env_variable;
    let Some(bytes) = crate::fsutil::read_owned(&path)? else {
        return Ok(None);
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
            Ok(Some((url.clone(), path)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_from_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.runtime.env_dir = crate::config::AbsPath::new(dir.path());
        std::fs::write(
            dir.path().join("backend.env"),
            "# rendered\nAPP_NAME='wavemap'\nDATABASE_URL='postgres://app:pw-in-env-file@postgres/app'\n",
        )
        .unwrap();
        let (url, path) = env_file_url(&config).unwrap().unwrap();
        assert_eq!(url, "postgres://app:pw-in-env-file@postgres/app");
        assert_eq!(path, dir.path().join("backend.env"));
        std::fs::remove_file(&path).unwrap();
        assert!(env_file_url(&config).unwrap().is_none());
    }
}
