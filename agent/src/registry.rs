//! ECR login, image pulls on the host, and the repo digest a pull resolved.
//!
//! Which credentials a pull carries is decided by [`crate::authority`]:
//! the ECR token for the host account's ECR only; for a listed registry,
//! the entry of `docker.auth_config` (a Docker `config.json`) or nothing.
//!
//! Why not bollard's `create_image` with credentials: bollard 0.21 encodes
//! `X-Registry-Auth` with *standard* base64, while the Engine decodes it as
//! URL-safe base64 and, on failure, silently pulls anonymously. Real ECR
//! passwords are 2 KB+ and encode to `+` and `/` almost surely, so those
//! pulls fail as "no basic auth credentials". The pull request is therefore
//! sent here with hyper over the Engine socket, header encoded URL-safe, and
//! the progress stream parsed with bollard's own types.
//!
//! Tokens: GetAuthorizationToken returns `base64("AWS:" + password)` with an
//! expiry. Each run of the deploy pipeline (a deploy, a rollback, a boot
//! recovery) makes one [`TokenCache`], so the two images of a pair from the
//! same registry share one login; the cache ends with that run, and the next
//! run logs in again. A token that expires within the refresh margin, or
//! already expired when received (clock skew, emulators answer with 2015),
//! is used for the image at hand and never cached, so there is never a
//! refresh loop.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bollard::Docker;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::error::{Dependency, Error, Stage};
use crate::image::ImageRef;
use crate::output::register_secret;

/// A token with less than this left is not reused from the cache.
const REFRESH_MARGIN: Duration = Duration::from_secs(30 * 60);

/// Credentials for one registry. `password` is a secret: never printed.
#[derive(Clone)]
pub struct RegistryAuth {
    pub username: String,
    password: String,
    pub server: String,
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("server", &self.server)
            .finish()
    }
}

impl RegistryAuth {
    pub fn new(username: &str, password: &str, server: &str) -> Self {
        register_secret(password);
        RegistryAuth {
            username: username.to_owned(),
            password: password.to_owned(),
            server: server.to_owned(),
            expires_at: None,
        }
    }

    /// Decode an ECR authorization token (`base64("AWS:" + password)`).
    pub fn from_ecr_token(
        token: &str,
        server: &str,
        expires_at: Option<SystemTime>,
    ) -> Result<Self, Error> {
        register_secret(token);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .map_err(|_| {
                Error::failed(
                    Stage::EcrLogin,
                    "ECR returned an authorization token that is not base64",
                )
            })?;
        let text = String::from_utf8(decoded).map_err(|_| {
            Error::failed(
                Stage::EcrLogin,
                "ECR returned an authorization token that is not UTF-8",
            )
        })?;
        let (user, password) = text.split_once(':').ok_or_else(|| {
            Error::failed(
                Stage::EcrLogin,
                "ECR returned an authorization token without user:password",
            )
        })?;
        let mut auth = RegistryAuth::new(user, password, server);
        auth.expires_at = expires_at;
        Ok(auth)
    }

    /// Whether a cached copy is still good for a pull starting now.
    pub fn fresh(&self, now: SystemTime) -> bool {
        match self.expires_at {
            Some(at) => at
                .duration_since(now)
                .map(|left| left > REFRESH_MARGIN)
                .unwrap_or(false),
            None => false,
        }
    }

    /// `Authorization: Basic ...` for the registry's own HTTP API (ECR and
    /// htpasswd registries take it directly); the pull preflight reads
    /// manifests with it. A secret, like the password.
    pub fn basic_authorization(&self) -> String {
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.password))
        );
        register_secret(&value);
        value
    }

    /// The `X-Registry-Auth` header value: URL-safe base64 of the JSON the
    /// Engine's `registry.AuthConfig` decodes.
    pub fn header_value(&self) -> String {
        let json = serde_json::json!({
            "username": self.username,
            "password": self.password,
            "serveraddress": self.server,
        });
        base64::engine::general_purpose::URL_SAFE.encode(json.to_string())
    }
}

/// The tokens of one run of the deploy pipeline (made per run, not kept).
#[derive(Debug, Default)]
pub struct TokenCache {
    cached: Option<RegistryAuth>,
}

impl TokenCache {
    /// Cached credentials for `server` if fresh, else a new login.
    pub async fn get(
        &mut self,
        ecr: &aws_sdk_ecr::Client,
        image: &ImageRef,
    ) -> Result<RegistryAuth, Error> {
        let now = SystemTime::now();
        if let Some(auth) = &self.cached {
            if auth.server == image.registry && auth.fresh(now) {
                return Ok(auth.clone());
            }
        }
        let auth = ecr_login(ecr, image).await?;
        // Already expired, or expiring inside the margin: use once, never cache.
        self.cached = auth.fresh(now).then(|| auth.clone());
        if !auth.fresh(now) {
            log::warn!(stage = "ecr-login"; "the ECR token expires within {} minutes or already expired (clock skew?); using it for this run only", REFRESH_MARGIN.as_secs() / 60);
        }
        Ok(auth)
    }
}

/// GetAuthorizationToken; the credentials are bound to the image's registry host.
pub async fn ecr_login(ecr: &aws_sdk_ecr::Client, image: &ImageRef) -> Result<RegistryAuth, Error> {
    // No registry id: AWS deprecated it, the token covers every registry
    // the host's role may read.
    let output = ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| Error::from_aws(Dependency::Ecr, "GetAuthorizationToken", &e))?;
    let data = output
        .authorization_data()
        .first()
        .ok_or_else(|| Error::failed(Stage::EcrLogin, "ECR returned no authorization data"))?;
    let token = data
        .authorization_token()
        .ok_or_else(|| Error::failed(Stage::EcrLogin, "ECR returned no authorization token"))?;
    let expires_at = data.expires_at().and_then(|t| {
        let secs = t.secs();
        (secs > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64))
    });
    RegistryAuth::from_ecr_token(token, &image.registry, expires_at)
}

/// Credentials for a listed (non-ECR) registry from the Docker
/// `config.json` at `docker.auth_config`: its `auths.<registry>` entry,
/// `auth` (base64 `user:password`) or `username` and `password`. `None`
/// when no file is configured or it has no entry: the pull is anonymous.
pub fn config_json_auth(
    path: Option<&std::path::Path>,
    registry: &str,
) -> Result<Option<RegistryAuth>, Error> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bad = |problem: String| {
        Error::invalid(
            "docker.auth_config",
            format!("{}: {problem}", path.display()),
            "give a Docker config.json with {\"auths\": {\"HOST\": {\"auth\": \"base64(user:password)\"}}}",
        )
    };
    let Some(bytes) = crate::fsutil::read_owned(path)? else {
        return Err(bad("the file does not exist".into()));
    };
    // Never the parser's message: it may quote a password.
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("not JSON".into()))?;
    let Some(entry) = value.get("auths").and_then(|a| a.get(registry)) else {
        return Ok(None);
    };
    let text = |key: &str| {
        entry
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(auth) = text("auth") {
        register_secret(auth);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                bad(format!(
                    "auths.{registry}.auth is not base64 of user:password"
                ))
            })?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            bad(format!(
                "auths.{registry}.auth is not base64 of user:password"
            ))
        })?;
        return Ok(Some(RegistryAuth::new(user, password, registry)));
    }
    match (text("username"), text("password")) {
        (Some(user), Some(password)) => Ok(Some(RegistryAuth::new(user, password, registry))),
        _ => Ok(None),
    }
}

/// Whether the image is present locally.
pub async fn is_present(docker: &Docker, image: &ImageRef) -> Result<bool, Error> {
    Ok(inspect(docker, image).await?.is_some())
}

async fn inspect(
    docker: &Docker,
    image: &ImageRef,
) -> Result<Option<bollard::models::ImageInspect>, Error> {
    match docker.inspect_image(&image.to_string()).await {
        Ok(info) => Ok(Some(info)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(Error::unavailable(
            Dependency::Docker,
            format!("inspect image {image}: {e}"),
        )),
    }
}

/// The repo digest (`sha256:...`) of the local image `image` names, for its
/// own repository: the one `pulled` (what the pull reported) when the Engine
/// lists it, else the only one listed. `None` when the image is absent or
/// has no digest for that repository (built here, never pushed or pulled).
pub async fn repo_digest(
    docker: &Docker,
    image: &ImageRef,
    pulled: Option<&str>,
) -> Result<Option<String>, Error> {
    let Some(info) = inspect(docker, image).await? else {
        return Ok(None);
    };
    let name = image.name();
    let digests: Vec<&str> = info
        .repo_digests
        .iter()
        .flatten()
        .filter_map(|d| d.split_once('@'))
        .filter(|(repo, digest)| *repo == name && crate::image::is_digest(digest))
        .map(|(_, digest)| digest)
        .collect();
    if let Some(pulled) = pulled.filter(|p| digests.contains(p)) {
        return Ok(Some(pulled.to_owned()));
    }
    if let crate::image::Reference::Digest(d) = &image.reference {
        if digests.contains(&d.as_str()) {
            return Ok(Some(d.clone()));
        }
    }
    Ok(match digests.as_slice() {
        [only] => Some((*only).to_owned()),
        _ => None,
    })
}

/// Pull one image through the Engine with `auth`. Progress goes to the log
/// every few seconds; a registry or Engine error fails stage `pull`.
/// Returns the manifest digest the Engine reported (`Digest: sha256:...`).
pub async fn pull(
    docker: &Docker,
    docker_host: &str,
    image: &ImageRef,
    auth: Option<&RegistryAuth>,
) -> Result<Option<String>, Error> {
    let version = docker.client_version();
    let mut query = format!(
        "/v{}.{}/images/create?fromImage={}",
        version.major_version,
        version.minor_version,
        query_escape(&image.name())
    );
    query.push_str("&tag=");
    query.push_str(&query_escape(image.tag_or_digest()));
    let mut request = hyper::Request::post(query).header("Host", "docker");
    if let Some(auth) = auth {
        request = request.header("X-Registry-Auth", auth.header_value());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::failed(Stage::Pull, format!("cannot build the pull request: {e}")))?;

    let unavailable = |e: &dyn std::fmt::Display| {
        Error::unavailable(Dependency::Docker, format!("pull {image}: {e}"))
    };
    let response = if let Some(path) = docker_host.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| unavailable(&e))?;
        send(TokioIo::new(stream), request).await
    } else {
        let addr = docker_host.strip_prefix("tcp://").unwrap_or(docker_host);
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unavailable(&e))?;
        send(TokioIo::new(stream), request).await
    }
    .map_err(|e| unavailable(&e))?;

    let status = response.status();
    let mut body = response.into_body();
    let bar = progress_bar(image);
    let mut buffer: Vec<u8> = Vec::new();
    let mut last_report = std::time::Instant::now();
    let mut last_status = String::new();
    let mut digest = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unavailable(&e))?;
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        buffer.extend_from_slice(chunk);
        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            if let Some(status_line) = progress_line(&line, image)? {
                if let Some(d) = status_line
                    .strip_prefix("Digest: ")
                    .filter(|d| crate::image::is_digest(d))
                {
                    digest = Some(d.to_owned());
                }
                last_status = status_line;
                if let Some(bar) = &bar {
                    bar.set_message(format!("{image}: {last_status}"));
                } else if last_report.elapsed() >= Duration::from_secs(3) {
                    log::info!(stage = "pull"; "{image}: {last_status}");
                    last_report = std::time::Instant::now();
                }
            }
        }
    }
    if !buffer.is_empty() {
        progress_line(&buffer, image)?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !status.is_success() {
        return Err(Error::failed(
            Stage::Pull,
            format!("{image}: the Engine answered {status}"),
        ));
    }
    log::info!(stage = "pull"; "{image}: pulled ({last_status})");
    Ok(digest)
}

/// A spinner per pull when stderr is a terminal (an operator at the host);
/// `None` under SSM or systemd, where a line every few seconds is kept.
fn progress_bar(image: &ImageRef) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    use std::sync::OnceLock;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    static BARS: OnceLock<indicatif::MultiProgress> = OnceLock::new();
    let bar = BARS
        .get_or_init(indicatif::MultiProgress::new)
        .add(indicatif::ProgressBar::new_spinner());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("{image}: starting"));
    Some(bar)
}

async fn send<T>(
    io: TokioIo<T>,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // The connection ends when the response body is done; its error,
        // if any, already surfaced through the body stream.
        let _ = connection.await;
    });
    sender.send_request(request).await
}

/// Parse one progress line; an `error`/`errorDetail` fails the pull, and
/// the Engine's own error message (free of credentials) is kept.
fn progress_line(line: &[u8], image: &ImageRef) -> Result<Option<String>, Error> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        // A plain-text error body (non-2xx answers are not JSON lines).
        Err(_) => return Err(Error::failed(Stage::Pull, format!("{image}: {text}"))),
    };
    if let Some(message) = value
        .get("errorDetail")
        .and_then(|d| d.get("message"))
        .or_else(|| value.get("error"))
        .or_else(|| value.get("message"))
        .and_then(|m| m.as_str())
    {
        return Err(pull_error(image, message));
    }
    Ok(value
        .get("status")
        .and_then(|s| s.as_str())
        .map(str::to_owned))
}

fn pull_error(image: &ImageRef, message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    let hint = if lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("no basic auth")
    {
        " (the registry refused the credentials: check the ECR token and the host's IAM role, or, for a registry in docker.allowed_registries, its entry in docker.auth_config)"
    } else if lower.contains("not found") || lower.contains("manifest unknown") {
        " (no such image or tag in the registry: check the image URI CI passed)"
    } else {
        ""
    };
    Error::failed(Stage::Pull, format!("{image}: {message}{hint}"))
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_url_safe_base64_of_the_auth_json() {
        // A password whose standard base64 has '+' and '/'.
        let password = "\u{fb}\u{ff}?>".repeat(700);
        let auth = RegistryAuth::new("AWS", &password, "127.0.0.1:5000");
        let header = auth.header_value();
        assert!(
            !header.contains('+') && !header.contains('/'),
            "URL-safe alphabet only"
        );
        let json = base64::engine::general_purpose::URL_SAFE
            .decode(&header)
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["password"], password);
        assert_eq!(value["username"], "AWS");
        assert!(!format!("{auth:?}").contains(&password));
    }

    #[test]
    fn ecr_token_decodes_and_expired_token_is_not_fresh() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:secret-password-123");
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_420_070_400); // 2015
        let auth = RegistryAuth::from_ecr_token(&token, "r", Some(past)).unwrap();
        assert_eq!(auth.username, "AWS");
        assert!(!auth.fresh(SystemTime::now()));
        let later = SystemTime::now() + Duration::from_secs(12 * 3600);
        let auth = RegistryAuth::from_ecr_token(&token, "r", Some(later)).unwrap();
        assert!(auth.fresh(SystemTime::now()));
        assert!(RegistryAuth::from_ecr_token("%%%", "r", None).is_err());
    }

    #[test]
    fn docker_config_json_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret-pw");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{auth}"}},"b.io":{{"username":"u","password":"p"}}}}}}"#),
        )
        .unwrap();
        let found = config_json_auth(Some(&path), "ghcr.io").unwrap().unwrap();
        assert_eq!(
            (found.username.as_str(), found.server.as_str()),
            ("bob", "ghcr.io")
        );
        assert!(found.header_value().len() > 10);
        assert_eq!(
            config_json_auth(Some(&path), "b.io")
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
        assert!(config_json_auth(Some(&path), "other.io").unwrap().is_none());
        assert!(config_json_auth(None, "ghcr.io").unwrap().is_none());
        std::fs::write(&path, "{\"auths\": s3cret").unwrap();
        let err = config_json_auth(Some(&path), "ghcr.io")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker.auth_config") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn progress_errors_fail_the_pull_with_a_hint() {
        let image =
            ImageRef::parse("f", &format!("127.0.0.1:5000/a:sha-{}", "1".repeat(40))).unwrap();
        let err = progress_line(
            br#"{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}"#,
            &image,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no such image"), "{err}");
        assert_eq!(
            progress_line(br#"{"status":"Downloading"}"#, &image)
                .unwrap()
                .as_deref(),
            Some("Downloading")
        );
    }
}
