//! The HTTP side of `serve` and `frontend`: just enough HTTP/1.1 for
//! healthchecks and the agent's endpoint smoke.
//!
//! `serve` is the backend: `/health` and `/ready`, also under `/api/v1/`
//! (the paths the frontend's rewrite forwards). `frontend` stands in for
//! the web frontend: its own `/health`, the page `/en/ping`, and every
//! `/api/...` request forwarded unchanged to `$API_ORIGIN` (default
//! `http://api:8080`), like the real frontend's rewrite. Pointing
//! `API_ORIGIN` at the wrong host gives what the runbook's smoke exists to
//! catch: a healthy frontend container whose `/api/v1/health` answers 502.
//!
//! Compose healthchecks (busybox `wget`) and the agent's endpoint smoke only
//! ever send a `GET` and read a status line and a small JSON body, so one
//! request per connection with `Connection: close` is all the real backend's
//! behaviour that matters here. A web framework would add nothing but build
//! time to every test run.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Request heads larger than this are refused: healthchecks send ~100 bytes.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed request line; headers are read and ignored.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The head has not ended yet: read more bytes.
    Incomplete,
    /// Not an HTTP/1.x request line.
    Malformed(String),
}

/// Parses the request line of a head that must end with an empty line.
pub fn parse_request(buf: &[u8]) -> Result<Request, ParseError> {
    let Some(end) = find_head_end(buf) else {
        return Err(ParseError::Incomplete);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| ParseError::Malformed("request head is not UTF-8".into()))?;
    let line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed(format!("bad request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ParseError::Malformed(format!(
            "unsupported version {version:?}"
        )));
    }
    if method.is_empty() || !target.starts_with('/') {
        return Err(ParseError::Malformed(format!("bad request line {line:?}")));
    }
    // The query string never matters to a health endpoint.
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Request {
        method: method.to_string(),
        path,
    })
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A complete response, always closing the connection.
pub fn format_response(status: u16, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What `/health` and `/ready` consult, read once at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    pub version: String,
    pub fail_health: bool,
    /// /health answers 503 "starting" until this instant.
    pub starting_until: Option<std::time::Instant>,
    pub unhealthy_file: Option<String>,
    pub database_url: Option<String>,
    /// `Some` in `frontend` mode: where `/api/...` is forwarded.
    pub api_origin: Option<Origin>,
}

/// `http://HOST[:PORT]`, the only form `API_ORIGIN` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn parse(text: &str) -> Result<Origin, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("API_ORIGIN must be http://HOST[:PORT], got {text:?}"))?
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("API_ORIGIN has a bad port: {text:?}"))?,
            ),
            None => (rest, 80),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "API_ORIGIN must be http://HOST[:PORT], got {text:?}"
            ));
        }
        Ok(Origin {
            host: host.to_string(),
            port,
        })
    }
}

impl Settings {
    fn from_env() -> Self {
        let version = std::env::var("WAVEMAP_BUILD_VERSION")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                option_env!("WAVEMAP_BUILD_VERSION")
                    .unwrap_or("dev")
                    .to_string()
            });
        Settings {
            version,
            fail_health: std::env::var("FAKE_FAIL_HEALTH").is_ok_and(|v| v == "1"),
            starting_until: std::env::var("FAKE_STARTUP_SECS")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|secs| std::time::Instant::now() + Duration::from_secs(secs)),
            unhealthy_file: std::env::var("FAKE_UNHEALTHY_FILE")
                .ok()
                .filter(|v| !v.is_empty()),
            database_url: std::env::var("DATABASE_URL").ok(),
            api_origin: None,
        }
    }

    fn healthy(&self) -> bool {
        !self.fail_health
            && !self
                .unhealthy_file
                .as_deref()
                .is_some_and(|f| Path::new(f).exists())
    }
}

/// Status and body for one request.
pub async fn route(req: &Request, settings: &Settings) -> (u16, String) {
    if req.method != "GET" && req.method != "HEAD" {
        return (405, r#"{"error":"method not allowed"}"#.into());
    }
    if let Some(origin) = &settings.api_origin {
        return match req.path.as_str() {
            "/health" => health(settings),
            "/en/ping" => (200, r#"{"status":"ok","page":"ping"}"#.into()),
            p if p.starts_with("/api/") => forward(origin, &req.method, p).await,
            _ => (404, r#"{"error":"not found"}"#.into()),
        };
    }
    match req.path.as_str() {
        "/health" | "/api/v1/health" => health(settings),
        "/ready" | "/api/v1/ready" => {
            match check_database(settings.database_url.as_deref()).await {
                Ok(()) => (200, r#"{"status":"ready","database":"ok"}"#.into()),
                Err(reason) => {
                    let body = serde_json::json!({"status": "not ready", "database": reason});
                    (503, body.to_string())
                }
            }
        }
        _ => (404, r#"{"error":"not found"}"#.into()),
    }
}

/// The container's own health (`FAKE_*` knobs), in either mode.
fn health(settings: &Settings) -> (u16, String) {
    if settings
        .starting_until
        .is_some_and(|t| std::time::Instant::now() < t)
    {
        let body = serde_json::json!({"status": "starting", "version": settings.version});
        (503, body.to_string())
    } else if settings.healthy() {
        let body = serde_json::json!({"status": "ok", "version": settings.version});
        (200, body.to_string())
    } else {
        let body = serde_json::json!({"status": "unhealthy", "version": settings.version});
        (500, body.to_string())
    }
}

/// The frontend's rewrite: `GET path` on the origin, its status and body
/// passed back; 502 when the origin cannot be reached (wrong host, down).
async fn forward(origin: &Origin, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut upstream = TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| format!("cannot reach {}:{}: {e}", origin.host, origin.port))?;
        upstream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
                    origin.host, origin.port
                )
                .as_bytes(),
            )
            .await
            .map_err(|e| format!("cannot send to {}: {e}", origin.host))?;
        let mut raw = Vec::new();
        (&mut upstream)
            .take(64 * 1024)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("cannot read from {}: {e}", origin.host))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("{} sent no HTTP status", origin.host))?;
        Ok::<_, String>((status, body.to_string()))
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(problem)) => (
            502,
            serde_json::json!({"error": "bad gateway", "detail": problem}).to_string(),
        ),
        Err(_) => (
            502,
            serde_json::json!({"error": "bad gateway", "detail": "upstream timed out"}).to_string(),
        ),
    }
}

async fn check_database(url: Option<&str>) -> Result<(), String> {
    let url = url.ok_or("DATABASE_URL is not set")?;
    let probe = async {
        let client = crate::connect(url).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| format!("SELECT 1 failed: {e}"))?;
        Ok::<(), String>(())
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .map_err(|_| "database did not answer within 3s".to_string())?
}

/// `serve` (backend) or, with `frontend`, the frontend stand-in.
pub async fn serve_from_env(frontend: bool) -> Result<(), String> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT is not a port number: {p:?}"))?,
        Err(_) => 8080,
    };
    let listener = TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    if std::env::var("FAKE_CRASH").is_ok_and(|v| v == "1") {
        return Err("serve: crashing on purpose (FAKE_CRASH=1)".into());
    }
    let mut settings = Settings::from_env();
    if frontend {
        let origin = std::env::var("API_ORIGIN").unwrap_or_else(|_| "http://api:8080".into());
        settings.api_origin = Some(Origin::parse(&origin)?);
    }
    println!(
        "fake-backend {} listening on 0.0.0.0:{port}",
        settings.version
    );
    serve(listener, settings, shutdown_signal()).await;
    println!("fake-backend: shutting down");
    Ok(())
}

/// Accepts connections until `shutdown` completes. Container stop sends
/// SIGTERM to PID 1; without this the engine waits its full grace period.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let settings = settings.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &settings).await {
                            eprintln!("connection error: {e}");
                        }
                    });
                }
                Err(e) => eprintln!("accept failed: {e}"),
            }
        }
    }
}

async fn handle(mut stream: TcpStream, settings: &Settings) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let request = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf) {
            Ok(r) => break Ok(r),
            Err(ParseError::Incomplete) if buf.len() < MAX_HEAD => continue,
            Err(ParseError::Incomplete) => break Err("request head too large".to_string()),
            Err(ParseError::Malformed(m)) => break Err(m),
        }
    };
    let (status, body, head_only) = match request {
        Ok(req) => {
            let (status, body) = route(&req, settings).await;
            (status, body, req.method == "HEAD")
        }
        Err(m) => (400, serde_json::json!({ "error": m }).to_string(), false),
    };
    let mut response = format_response(status, &body);
    if head_only {
        response.truncate(response.len() - body.len());
    }
    stream.write_all(&response).await?;
    stream.shutdown().await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            version: "A".into(),
            fail_health: false,
            starting_until: None,
            unhealthy_file: None,
            database_url: None,
            api_origin: None,
        }
    }

    #[test]
    fn parses_a_busybox_wget_request() {
        let raw = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Wget\r\nConnection: close\r\n\r\n";
        assert_eq!(
            parse_request(raw),
            Ok(Request {
                method: "GET".into(),
                path: "/health".into()
            })
        );
    }

    #[test]
    fn drops_the_query_string() {
        let req = parse_request(b"GET /ready?verbose=1 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(req.path, "/ready");
    }

    #[test]
    fn an_unfinished_head_asks_for_more() {
        assert_eq!(
            parse_request(b"GET /health HTTP/1.1\r\nHost: x\r\n"),
            Err(ParseError::Incomplete)
        );
    }

    #[test]
    fn rejects_garbage_and_other_protocols() {
        for raw in [
            &b"hello\r\n\r\n"[..],
            b"GET /health HTTP/2\r\n\r\n",
            b"GET health HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(raw), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn response_has_exact_length_and_closes() {
        let r = String::from_utf8(format_response(503, "{\"a\":1}")).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r.contains("Content-Length: 7\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n{\"a\":1}"));
    }

    #[tokio::test]
    async fn health_reports_version_and_can_be_made_to_fail() {
        let req = parse_request(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        let (status, body) = route(&req, &settings()).await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"status":"ok","version":"A"}"#);

        let failing = Settings {
            fail_health: true,
            ..settings()
        };
        assert_eq!(route(&req, &failing).await.0, 500);

        let dir = std::env::temp_dir().join(format!("fake-backend-{}", std::process::id()));
        let flag = dir.with_extension("unhealthy");
        let by_file = Settings {
            unhealthy_file: Some(flag.display().to_string()),
            ..settings()
        };
        assert_eq!(route(&req, &by_file).await.0, 200, "file absent: healthy");
        std::fs::write(&flag, b"").unwrap();
        assert_eq!(
            route(&req, &by_file).await.0,
            500,
            "file present: unhealthy"
        );
        std::fs::remove_file(&flag).unwrap();

        let starting = Settings {
            starting_until: Some(std::time::Instant::now() + Duration::from_secs(60)),
            ..settings()
        };
        let (status, body) = route(&req, &starting).await;
        assert_eq!(
            (status, body.as_str()),
            (503, r#"{"status":"starting","version":"A"}"#)
        );
        let started = Settings {
            starting_until: Some(std::time::Instant::now()),
            ..settings()
        };
        assert_eq!(route(&req, &started).await.0, 200);
    }

    #[tokio::test]
    async fn ready_without_a_database_is_503_and_unknown_paths_404() {
        let ready = parse_request(b"GET /ready HTTP/1.1\r\n\r\n").unwrap();
        let (status, body) = route(&ready, &settings()).await;
        assert_eq!(status, 503);
        assert!(body.contains("DATABASE_URL is not set"), "{body}");
        let other = parse_request(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&other, &settings()).await.0, 404);
        let post = parse_request(b"POST /health HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&post, &settings()).await.0, 405);
    }

    #[tokio::test]
    async fn the_frontend_forwards_api_paths_and_a_wrong_origin_is_502() {
        // A backend on a loopback port, and a frontend pointing at it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(listener, settings(), std::future::pending()));
        let frontend = Settings {
            api_origin: Some(Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap()),
            ..settings()
        };
        let get =
            |path: &str| parse_request(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(route(&get("/en/ping"), &frontend).await.0, 200);
        let (status, body) = route(&get("/api/v1/health"), &frontend).await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"ok","version":"A"}"#)
        );
        // The backend's /ready needs a database: its 503 comes through as is.
        assert_eq!(route(&get("/api/v1/ready"), &frontend).await.0, 503);
        assert_eq!(route(&get("/api/v1/nope"), &frontend).await.0, 404);

        // The broken rewrite: a healthy frontend, a 502 for the API.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let broken = Settings {
            api_origin: Some(Origin::parse(&format!("http://127.0.0.1:{closed_port}")).unwrap()),
            ..settings()
        };
        assert_eq!(route(&get("/health"), &broken).await.0, 200);
        assert_eq!(route(&get("/en/ping"), &broken).await.0, 200);
        let (status, body) = route(&get("/api/v1/health"), &broken).await;
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("bad gateway"), "{body}");
    }

    #[test]
    fn api_origin_is_http_host_and_port() {
        assert_eq!(
            Origin::parse("http://api:8080/").unwrap(),
            Origin {
                host: "api".into(),
                port: 8080
            }
        );
        assert_eq!(Origin::parse("http://api").unwrap().port, 80);
        for bad in [
            "api:8080",
            "https://api",
            "http://",
            "http://api:x",
            "http://a/b",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_over_tcp_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, settings(), async {
            let _ = rx.await;
        }));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with(r#"{"status":"ok","version":"A"}"#), "{out}");
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }
}
