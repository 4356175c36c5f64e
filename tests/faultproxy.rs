//! Fault injection for the end-to-end tests (issue 10): an HTTP proxy in
//! front of moto that records every call and fails, throttles or stalls on
//! demand, and a unix socket forwarder in front of dockerd that a test can
//! cut and restore. Also (issue 24) [`RecordingProxy`], a pass-through in
//! front of the registry that records each request's credentials. The one
//! home of the suite's test proxies: tests that only
//! need to see which AWS calls a command made use [`Fault::Forward`].
//!
//! Why in the test process and not iptables or a dockerd restart: the
//! machine (and CI) is shared by several test binaries at once; restarting
//! dockerd or dropping packets would break every other test. A loopback
//! proxy that only this test's agent is pointed at (`aws.ssm_endpoint`,
//! `aws.ecr_endpoint`, `docker.host`) gives the agent the same symptoms
//! (5xx, throttling, a connection that never answers, a socket that closes
//! mid-request) without touching anything shared.
//!
//! Plain threads, not tokio: the proxies must keep answering while a test
//! blocks on a child process, whatever runtime flavour the test uses.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the HTTP proxy does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every request: `503 Service Unavailable` (an AWS-shaped JSON body).
    Unavailable503,
    /// Every request: `400` with `ThrottlingException` (`x-amzn-ErrorType`).
    Throttle,
    /// The first `n` requests get the `ThrottlingException`, later ones are
    /// forwarded.
    ThrottleFirst(usize),
    /// Read the request, never answer (the connection stays open).
    Stall,
    /// The first `n` requests get a 503, later ones are forwarded.
    FailFirst(usize),
    /// Forward everything (a pass-through that still counts requests).
    Forward,
}

struct Shared {
    fault: Fault,
    upstream: String,
    requests: AtomicUsize,
    targets: Mutex<Vec<String>>,
    stopped: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

/// A loopback HTTP/1.1 proxy in front of `upstream` that injects `fault`.
/// Stops (and closes every connection) on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: put this in `aws.ssm_endpoint` / `aws.ecr_endpoint`.
    pub url: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    pub fn start(upstream: &str, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let shared = Arc::new(Shared {
            fault,
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            requests: AtomicUsize::new(0),
            targets: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if let Ok(clone) = client.try_clone() {
                    accept.open.lock().expect("open list").push(clone);
                }
                let shared = accept.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &shared);
                });
            }
        });
        FaultProxy {
            url: format!("http://{addr}"),
            shared,
        }
    }

    /// Requests received so far (answered, failed or stalled).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The `X-Amz-Target` of each request (SSM), or the request line.
    pub fn targets(&self) -> Vec<String> {
        self.shared.targets.lock().expect("targets").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for stream in self.shared.open.lock().expect("open list").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so its thread ends.
        if let Some(addr) = self.url.strip_prefix("http://") {
            let _ = TcpStream::connect(addr);
        }
    }
}

fn serve(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    while let Some((head, body)) = read_message(&mut client)? {
        let n = shared.requests.fetch_add(1, Ordering::SeqCst);
        let target = header(&head, "x-amz-target")
            .unwrap_or_else(|| head.lines().next().unwrap_or("").to_owned());
        shared.targets.lock().expect("targets").push(target);
        match shared.fault {
            Fault::Unavailable503 => respond_503(&mut client)?,
            Fault::FailFirst(k) if n < k => respond_503(&mut client)?,
            Fault::Throttle => respond_throttled(&mut client)?,
            Fault::ThrottleFirst(k) if n < k => respond_throttled(&mut client)?,
            Fault::Stall => {
                // Hold the connection open, answer nothing, until the client
                // gives up (its attempt timeout) or the proxy is dropped.
                let mut sink = [0u8; 1024];
                while !shared.stopped.load(Ordering::SeqCst) {
                    match client.read(&mut sink) {
                        Ok(0) | Err(_) => return Ok(()),
                        Ok(_) => {}
                    }
                }
                return Ok(());
            }
            Fault::FailFirst(_) | Fault::ThrottleFirst(_) | Fault::Forward => {
                let mut up = TcpStream::connect(&shared.upstream)?;
                up.write_all(head.as_bytes())?;
                up.write_all(&body)?;
                let Some((rhead, rbody)) = read_message(&mut up)? else {
                    return Ok(());
                };
                client.write_all(rhead.as_bytes())?;
                client.write_all(&rbody)?;
            }
        }
    }
    Ok(())
}

fn respond_503(client: &mut TcpStream) -> std::io::Result<()> {
    let body = r#"{"__type":"ServiceUnavailable","message":"injected by the e2e fault proxy"}"#;
    write!(
        client,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: ServiceUnavailable\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn respond_throttled(client: &mut TcpStream) -> std::io::Result<()> {
    let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    write!(
        client,
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: ThrottlingException\r\nx-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One HTTP/1.1 message (head + Content-Length body); `None` on EOF.
fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

struct SocketShared {
    upstream: PathBuf,
    cut: AtomicBool,
    stopped: AtomicBool,
    open: Mutex<Vec<UnixStream>>,
    connections: AtomicUsize,
}

/// A unix socket byte forwarder in front of dockerd's socket, for "dockerd
/// went away" without restarting the shared dockerd: [`SocketProxy::cut`]
/// closes every open connection and closes new ones at once (what a client
/// sees while dockerd restarts); [`SocketProxy::restore`] forwards again.
pub struct SocketProxy {
    pub path: PathBuf,
    shared: Arc<SocketShared>,
}

impl SocketProxy {
    /// Listen at `path`, forwarding to `upstream` (e.g. `/var/run/docker.sock`).
    pub fn start(path: &Path, upstream: &Path) -> SocketProxy {
        let listener = UnixListener::bind(path).expect("bind socket proxy");
        let shared = Arc::new(SocketShared {
            upstream: upstream.to_path_buf(),
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                accept.connections.fetch_add(1, Ordering::SeqCst);
                if accept.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = UnixStream::connect(&accept.upstream) else {
                    continue;
                };
                let pipes = (client.try_clone(), up.try_clone());
                let (Ok(client2), Ok(up2)) = pipes else {
                    continue;
                };
                {
                    let mut open = accept.open.lock().expect("open list");
                    for s in [&client, &up] {
                        if let Ok(c) = s.try_clone() {
                            open.push(c);
                        }
                    }
                }
                std::thread::spawn(move || pipe(client, up));
                std::thread::spawn(move || pipe(up2, client2));
            }
        });
        SocketProxy {
            path: path.to_path_buf(),
            shared,
        }
    }

    /// `unix://<path>`, for `docker.host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Close every connection and refuse new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for stream in self.shared.open.lock().expect("open list").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far (forwarded or refused).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut();
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One request a [`RecordingProxy`] forwarded: its request line and its
/// `Authorization` header, if any.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub request_line: String,
    pub authorization: Option<String>,
}

/// A loopback HTTP/1.1 proxy in front of a registry (issue 24) that records
/// every request's line and `Authorization` header and forwards it
/// unchanged, except `Connection: close`, so every request arrives on its own
/// connection and none passes unrecorded. Responses stream back as they
/// come (blobs are large). Stops on drop.
pub struct RecordingProxy {
    /// `127.0.0.1:<port>`: a registry host dockerd treats as insecure (HTTP).
    pub addr: String,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    stopped: Arc<AtomicBool>,
}

impl RecordingProxy {
    pub fn start(upstream: &str) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recording proxy");
        let addr = listener
            .local_addr()
            .expect("recording proxy address")
            .to_string();
        let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let (rec, stop, upstream) = (recorded.clone(), stopped.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let (rec, upstream) = (rec.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = record_and_forward(client, &upstream, &rec);
                });
            }
        });
        RecordingProxy {
            addr,
            recorded,
            stopped,
        }
    }

    /// Every request forwarded so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded").clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn record_and_forward(
    mut client: TcpStream,
    upstream: &str,
    recorded: &Mutex<Vec<Recorded>>,
) -> std::io::Result<()> {
    // dockerd tries TLS first even for an insecure registry: pass the
    // handshake through as the registry itself would see it (it fails, and
    // dockerd falls back to HTTP). No credentials precede a handshake.
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 1 && first[0] == 0x16 {
        let mut up = TcpStream::connect(upstream)?;
        let (mut client_read, mut up_write) = (client.try_clone()?, up.try_clone()?);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut client_read, &mut up_write);
            let _ = up_write.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut up, &mut client);
        return client.shutdown(Shutdown::Both);
    }
    let Some((head, body)) = read_message(&mut client)? else {
        return Ok(());
    };
    recorded.lock().expect("recorded").push(Recorded {
        request_line: head.lines().next().unwrap_or("").to_owned(),
        authorization: header(&head, "authorization"),
    });
    let mut rewritten = String::new();
    for line in head.trim_end().lines() {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(rewritten.as_bytes())?;
    up.write_all(&body)?;
    // The upstream closes after its answer (Connection: close).
    std::io::copy(&mut up, &mut client)?;
    client.shutdown(Shutdown::Both)
}
