//! `probe`: availability as a client on the project network sees it.
//!
//! A deploy is judged by whether requests keep succeeding, not only by how
//! long it takes. The probe runs in a container on the Compose project's
//! network and requests each URL (a service name, resolved by Docker's
//! embedded DNS on every request) every `--interval-ms` until SIGTERM, then
//! prints one JSON line per URL: requests, failures, the longest gap between
//! two successful responses, and a few failure samples.
//!
//! Like Node's client (the frontend's fetch to `api`) and curl, a request
//! tries each address the name resolves to in turn, giving each
//! [`ATTEMPT_TIMEOUT`] to accept, until one connects: while two containers
//! hold a service alias, a refused or silent address is not a failure if
//! the other answers. A request fails when no address connects, when the
//! response is not `200`, or when it takes longer than `--timeout-ms`.
//!
//! `--once` requests each URL once and exits 0 only if all answered 200.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USAGE: &str =
    "usage: fake-backend probe [--interval-ms N] [--timeout-ms N] [--once] http://HOST:PORT/PATH...";

/// Failure samples kept per URL (the first ones: they show what broke).
const SAMPLES: usize = 5;

struct Options {
    interval: Duration,
    timeout: Duration,
    once: bool,
    urls: Vec<Target>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    url: String,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: {p:?} is not a port"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(Target {
        url: url.to_owned(),
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(1000),
        once: false,
        urls: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut millis = |name: &str| -> Result<Duration, String> {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("{name} needs a positive number of milliseconds"))
        };
        match arg.as_str() {
            "--interval-ms" => options.interval = millis("--interval-ms")?,
            "--timeout-ms" => options.timeout = millis("--timeout-ms")?,
            "--once" => options.once = true,
            url => options.urls.push(parse_url(url)?),
        }
    }
    if options.urls.is_empty() {
        return Err(USAGE.to_owned());
    }
    Ok(options)
}

/// How long one address may take to accept a connection before the next
/// address is tried: Node's `autoSelectFamilyAttemptTimeout` default (the
/// frontend's server-side fetch to `api` is Node's), close to curl's 200 ms
/// happy-eyeballs delay.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);

/// One GET; `Ok(())` on a `200`. Each phase says which one failed.
async fn request(target: &Target, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let within = |what: String| format!("{what}: no answer within {} ms", timeout.as_millis());
    let addresses: Vec<_> = tokio::time::timeout_at(
        deadline,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| within(format!("resolve {}", target.host)))?
    .map_err(|e| format!("resolve {}: {e}", target.host))?
    .collect();
    let mut last = format!("{} resolved to no address", target.host);
    let mut stream = None;
    for address in addresses {
        let attempt_until = deadline.min(tokio::time::Instant::now() + ATTEMPT_TIMEOUT);
        match tokio::time::timeout_at(attempt_until, TcpStream::connect(address)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last = format!("connect {address}: {e}"),
            Err(_) => last = format!("connect {address}: no answer within the attempt timeout"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let exchange = async {
        let head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: wavemap-probe\r\n\r\n",
            target.path, target.host
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("send to {peer}: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read from {peer}: {e}"))?;
        let line = String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        match line.split(' ').nth(1) {
            Some("200") => Ok(()),
            _ => Err(format!("{peer} answered {line:?}")),
        }
    };
    tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| within(format!("request to {peer}")))?
}

/// What one URL saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    failures: u64,
    /// Longest time without a successful response: between two successes,
    /// or from the start to the first one, or from the last one to the end.
    longest_gap: Duration,
    /// When the longest gap ended, from the start.
    longest_gap_end: Duration,
    last_success: Option<Instant>,
    samples: Vec<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, at: Instant, result: Result<(), String>) {
        self.requests += 1;
        match result {
            Ok(()) => {
                self.gap_until(started, at);
                self.last_success = Some(at);
            }
            Err(why) => {
                self.failures += 1;
                if self.samples.len() < SAMPLES {
                    let offset = at.duration_since(started).as_millis();
                    self.samples.push(format!("+{offset}ms {why}"));
                }
            }
        }
    }

    fn gap_until(&mut self, started: Instant, at: Instant) {
        let since = at - self.last_success.unwrap_or(started);
        if since > self.longest_gap {
            self.longest_gap = since;
            self.longest_gap_end = at - started;
        }
    }

    fn finish(&mut self, started: Instant, end: Instant) {
        self.gap_until(started, end);
    }

    fn json(&self, url: &str, interval: Duration, elapsed: Duration) -> String {
        serde_json::json!({
            "url": url,
            "interval_ms": interval.as_millis() as u64,
            "elapsed_ms": elapsed.as_millis() as u64,
            "requests": self.requests,
            "failures": self.failures,
            "longest_gap_ms": self.longest_gap.as_millis() as u64,
            "longest_gap_end_ms": self.longest_gap_end.as_millis() as u64,
            "failure_samples": self.samples,
        })
        .to_string()
    }
}

async fn probe_until_stopped(options: &Options) -> Vec<String> {
    let started = Instant::now();
    let stop = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for target in options.urls.clone() {
        let (interval, timeout) = (options.interval, options.timeout);
        let mut stopped = stop.1.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        let result = request(&target, timeout).await;
                        tally.record(started, Instant::now(), result);
                    }
                    _ = stopped.changed() => break,
                }
            }
            tally.finish(started, Instant::now());
            tally.json(&target.url, interval, started.elapsed())
        }));
    }
    eprintln!(
        "probe: requesting {} URL(s) every {} ms until SIGTERM",
        options.urls.len(),
        options.interval.as_millis()
    );
    wait_for_stop().await;
    let _ = stop.0.send(true);
    let mut lines = Vec::new();
    for task in tasks {
        match task.await {
            Ok(line) => lines.push(line),
            Err(e) => lines.push(serde_json::json!({ "error": e.to_string() }).to_string()),
        }
    }
    lines
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without handlers PID 1 would ignore SIGTERM; stop at once rather
        // than report nothing.
        _ => eprintln!("probe: cannot install signal handlers"),
    }
}

/// `fake-backend probe ARGS...`
pub async fn run(args: &[String]) -> Result<(), String> {
    let options = parse_args(args)?;
    if options.once {
        let started = Instant::now();
        let mut failed = 0;
        for target in &options.urls {
            let mut tally = Tally::default();
            let result = request(target, options.timeout).await;
            tally.record(started, Instant::now(), result);
            failed += tally.failures;
            println!(
                "{}",
                tally.json(&target.url, options.interval, started.elapsed())
            );
        }
        return match failed {
            0 => Ok(()),
            n => Err(format!("{n} URL(s) did not answer 200")),
        };
    }
    for line in probe_until_stopped(&options).await {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_options_parse() {
        let args: Vec<String> = [
            "--interval-ms",
            "20",
            "http://api:8080/health",
            "http://web",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_args(&args).unwrap();
        assert_eq!(o.interval, Duration::from_millis(20));
        assert_eq!(
            o.urls[0],
            Target {
                url: "http://api:8080/health".into(),
                host: "api".into(),
                port: 8080,
                path: "/health".into()
            }
        );
        assert_eq!((o.urls[1].port, o.urls[1].path.as_str()), (80, "/"));
        assert!(parse_args(&["https://x".to_string()]).is_err());
        assert!(parse_args(&["--interval-ms".to_string(), "0".into()]).is_err());
        assert!(parse_args(&[]).is_err());
    }

    #[test]
    fn the_gap_spans_failures_and_the_edges() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut tally = Tally::default();
        tally.record(t0, ms(10), Ok(()));
        tally.record(t0, ms(60), Err("refused".into()));
        tally.record(t0, ms(110), Err("refused".into()));
        tally.record(t0, ms(160), Ok(()));
        tally.record(t0, ms(210), Ok(()));
        tally.finish(t0, ms(230));
        assert_eq!(tally.requests, 5);
        assert_eq!(tally.failures, 2);
        assert_eq!(tally.longest_gap, Duration::from_millis(150));
        assert_eq!(tally.longest_gap_end, Duration::from_millis(160));
        assert_eq!(tally.samples, vec!["+60ms refused", "+110ms refused"]);

        // Never answered: the whole run is the gap.
        let mut none = Tally::default();
        none.record(t0, ms(50), Err("refused".into()));
        none.finish(t0, ms(400));
        assert_eq!(none.longest_gap, Duration::from_millis(400));
    }

    #[tokio::test]
    async fn a_request_to_a_closed_port_fails_and_an_answer_passes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        let up = parse_url(&format!("http://127.0.0.1:{port}/health")).unwrap();
        assert_eq!(request(&up, Duration::from_secs(2)).await, Ok(()));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let down = parse_url(&format!("http://127.0.0.1:{closed_port}/")).unwrap();
        assert!(request(&down, Duration::from_secs(2)).await.is_err());
    }
}
