//! Zero-downtime API deploys without a proxy (issue 17), end to end: the
//! production-shaped project, whose API is replaced start-first and whose
//! frontend publishes a host port and is replaced stop-first.
//!
//! Availability is measured as a client sees it: a probe container on the
//! project network (`fake-backend probe`, the freshly built binary mounted
//! into the backend image, which carries its libraries) requests
//! `http://api:8080/health` and `http://frontend:8080/health` through the
//! service names every 50 ms during a deploy flip, and reports failed
//! requests and the longest gap between two successful answers.
//!
//! The crash sweep kills the agent at every step of a replacement (the
//! agent's debug-build pause points, `WAVEMAP_TEST_PAUSE_AT`) and checks
//! the API is served there, and during and after the rerun.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use wavemap_e2e::{
    docker, release_args, repo_root, stack, unique_name, with_execute, Output, RuntimeProject,
    TestDir,
};

/// Milliseconds between two probe requests to one URL.
const PROBE_INTERVAL_MS: u64 = 50;

const API_URL: &str = "http://api:8080/health";
const FRONTEND_URL: &str = "http://frontend:8080/health";

/// The fake-backend binary this checkout built (`probe` mode).
fn fake_backend_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug/fake-backend");
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build -p fake-backend` (scripts/test builds the workspace)",
        path.display()
    );
    path
}

fn docker_out(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

/// `docker run` arguments of a probe container on `network`.
fn probe_args(network: &str, name: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into()];
    match name {
        Some(name) => args.extend(["-d".into(), "--name".into(), name.into()]),
        None => args.push("--rm".into()),
    }
    args.extend([
        "--network".into(),
        network.into(),
        "-v".into(),
        format!("{}:/probe:ro", fake_backend_bin().display()),
        "--entrypoint".into(),
        "/probe".into(),
        stack().require("WAVEMAP_TEST_BACKEND_IMAGE_A").into(),
        "probe".into(),
    ]);
    args
}

/// One request to each URL from the project network; the JSON lines and
/// whether every URL answered 200.
fn probe_once(network: &str, urls: &[&str]) -> (bool, String) {
    let mut args = probe_args(network, None);
    args.push("--once".into());
    args.extend(urls.iter().map(|u| u.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker_out(&argv);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What the probe saw for one URL.
#[derive(Debug, Clone)]
struct Seen {
    requests: u64,
    failures: u64,
    longest_gap_ms: u64,
    /// When the longest gap ended, in ms from the probe's start.
    longest_gap_end_ms: u64,
    samples: Vec<String>,
}

/// A probe container running until [`Probe::finish`]; removed on drop.
struct Probe {
    name: String,
}

impl Probe {
    fn start(network: &str) -> Probe {
        let name = unique_name("probe");
        let mut args = probe_args(network, Some(&name));
        args.extend([
            "--interval-ms".into(),
            PROBE_INTERVAL_MS.to_string(),
            API_URL.into(),
            FRONTEND_URL.into(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = docker_out(&argv);
        assert!(
            out.status.success(),
            "docker run probe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe = Probe { name };
        // It has started probing once it says so (stderr, before the first tick).
        let started = Instant::now();
        while !probe.logs().contains("probe: requesting") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the probe container never started:\n{}",
                probe.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        probe
    }

    fn logs(&self) -> String {
        let out = docker_out(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// SIGTERM, wait for the summary, read it per URL.
    fn finish(self) -> BTreeMap<String, Seen> {
        let out = docker_out(&["stop", "-t", "20", &self.name]);
        assert!(out.status.success(), "docker stop probe");
        let out = docker_out(&["logs", &self.name]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut seen = BTreeMap::new();
        for line in stdout.lines().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).expect("probe JSON line");
            let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
            seen.insert(
                v["url"].as_str().expect("url").to_owned(),
                Seen {
                    requests: n("requests"),
                    failures: n("failures"),
                    longest_gap_ms: n("longest_gap_ms"),
                    longest_gap_end_ms: n("longest_gap_end_ms"),
                    samples: v["failure_samples"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                },
            );
        }
        assert_eq!(seen.len(), 2, "the probe reported:\n{}", self.logs());
        seen
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = docker_out(&["rm", "-f", &self.name]);
    }
}

/// The outside probe issue 25 names: busybox `wget` through the service
/// name on the project network, with a 1 s timeout (busybox `timeout`;
/// this busybox has no `wget -T`), every 50 ms. Not the project's code.
/// Each request is a line `START END ok|fail` in the host kernel's uptime
/// seconds (10 ms steps, the clock the Engine's event times can be mapped
/// to), so a failure can be placed against the Engine's events.
struct WgetProbe {
    name: String,
    /// Wall-clock ns minus uptime ns when the probe started.
    offset_ns: i64,
}

/// What the outside probe saw.
#[derive(Debug, Clone)]
struct WgetSeen {
    requests: u64,
    /// (start, end) of each failed request, wall-clock ns.
    failures: Vec<(i64, i64)>,
}

fn uptime_ns() -> i64 {
    let text = std::fs::read_to_string("/proc/uptime").expect("read /proc/uptime");
    let secs: f64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("uptime seconds");
    (secs * 1e9) as i64
}

async fn ensure_busybox() -> String {
    let busybox = stack().require("WAVEMAP_TEST_BUSYBOX_IMAGE").to_owned();
    let docker = docker().await;
    if docker.inspect_image(&busybox).await.is_err() {
        let (repo, tag) = busybox.rsplit_once(':').expect("busybox tag");
        let options = bollard::query_parameters::CreateImageOptions {
            from_image: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let mut pull = docker.create_image(
            Some(options),
            None,
            Some(wavemap_e2e::registry_credentials()),
        );
        while let Some(item) = pull.next().await {
            item.unwrap_or_else(|e| panic!("pull {busybox}: {e}"));
        }
    }
    busybox
}

impl WgetProbe {
    async fn start(network: &str, url: &str) -> WgetProbe {
        let busybox = ensure_busybox().await;
        let name = unique_name("wget-probe");
        let script = format!(
            "trap 'exit 0' TERM; echo started; while :; do \
             s=$(cut -d' ' -f1 /proc/uptime); \
             if timeout 1 wget -q -O /dev/null {url} 2>/dev/null; then r=ok; else r=fail; fi; \
             echo \"$s $(cut -d' ' -f1 /proc/uptime) $r\"; usleep {}; done",
            PROBE_INTERVAL_MS * 1000
        );
        let offset_ns = now_ns() - uptime_ns();
        let out = docker_out(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            &busybox,
            "sh",
            "-c",
            &script,
        ]);
        assert!(
            out.status.success(),
            "docker run the wget probe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe = WgetProbe { name, offset_ns };
        let started = Instant::now();
        while !probe.logs().contains(" ok") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the wget probe never got an answer:\n{}",
                probe.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        probe
    }

    fn logs(&self) -> String {
        String::from_utf8_lossy(&docker_out(&["logs", &self.name]).stdout).into_owned()
    }

    fn finish(self) -> WgetSeen {
        let out = docker_out(&["stop", "-t", "5", &self.name]);
        assert!(out.status.success(), "docker stop the wget probe");
        let mut seen = WgetSeen {
            requests: 0,
            failures: Vec::new(),
        };
        let ns = |v: &str| (v.parse::<f64>().expect("uptime") * 1e9) as i64;
        for line in self.logs().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [start, end, result] = f[..] {
                seen.requests += 1;
                if result == "fail" {
                    seen.failures
                        .push((ns(start) + self.offset_ns, ns(end) + self.offset_ns));
                }
            }
        }
        seen
    }
}

impl Drop for WgetProbe {
    fn drop(&mut self) {
        let _ = docker_out(&["rm", "-f", &self.name]);
    }
}

/// Network `connect` and `disconnect` events of `network`: (engine time in
/// ns, action, container id), collected in the background from now on.
#[derive(Clone, Default)]
struct Disconnects(Arc<Mutex<Vec<(i64, String, String)>>>);

impl Disconnects {
    async fn follow(network: &str) -> Disconnects {
        let found = Disconnects::default();
        let docker = docker().await;
        let filters = std::collections::HashMap::from([
            ("type".to_owned(), vec!["network".to_owned()]),
            ("network".to_owned(), vec![network.to_owned()]),
            (
                "event".to_owned(),
                vec!["disconnect".to_owned(), "connect".to_owned()],
            ),
        ]);
        let sink = found.0.clone();
        tokio::spawn(async move {
            let mut stream = docker.events(Some(bollard::query_parameters::EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            while let Some(Ok(event)) = stream.next().await {
                let container = event
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|a| a.get("container").cloned())
                    .unwrap_or_default();
                sink.lock().expect("disconnects").push((
                    event.time_nano.unwrap_or_default(),
                    event.action.unwrap_or_default(),
                    container,
                ));
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        found
    }

    fn all(&self) -> Vec<(i64, String, String)> {
        self.0.lock().expect("disconnects").clone()
    }
}

/// The floor without a proxy (see docs/compose-engine.md, "Start-first
/// drain"). The Engine's DNS gives out a container's address as soon as it
/// joins a network under the service name, before the endpoint is
/// reachable, and drops it only together with the address. So a request
/// can be lost at a join (it starts while the joined endpoint settles: from
/// 100 ms before the `connect` event, which the Engine sends when the join
/// ends, to 1 s after it) or at a
/// drain (it straddles a `disconnect`: started at most one step after it,
/// ended after it). Every failure the outside probe saw must be one of
/// those, and there is at most one per such event. Returns the report text.
fn check_wget_floor(label: &str, seen: &WgetSeen, events: &[(i64, String, String)]) -> String {
    const STEP_NS: i64 = 10_000_000;
    const SETTLE_NS: i64 = 1_000_000_000;
    const JOIN_NS: i64 = 100_000_000;
    let mut text = format!(
        "{label}: wget probe {} requests, {} failed",
        seen.requests,
        seen.failures.len()
    );
    let mut used: Vec<usize> = Vec::new();
    let mut unexplained = 0;
    for (start, end) in &seen.failures {
        let found = events.iter().enumerate().find(|(i, (t, action, _))| {
            !used.contains(i)
                && match action.as_str() {
                    "disconnect" => *start <= *t + STEP_NS && *end + STEP_NS >= *t,
                    // The event comes at the end of the join, and the
                    // Engine's DNS has the address from its start: a join
                    // took up to about 60 ms here.
                    "connect" => *start + JOIN_NS >= *t && *start <= *t + SETTLE_NS,
                    _ => false,
                }
        });
        let near: Vec<String> = events
            .iter()
            .filter(|(t, _, _)| (t - start).abs() < 2 * SETTLE_NS)
            .map(|(t, a, c)| {
                format!(
                    "{a} {} at {:+} ms",
                    &c[..c.len().min(12)],
                    (t - start) / 1_000_000
                )
            })
            .collect();
        match found {
            Some((i, (t, action, c))) => {
                used.push(i);
                text.push_str(&format!(
                    "; failure {} ms long, at the {action} of {} ({:+} ms from its start)",
                    (end - start) / 1_000_000,
                    &c[..c.len().min(12)],
                    (t - start) / 1_000_000
                ));
            }
            None => {
                unexplained += 1;
                text.push_str(&format!(
                    "; failure {} ms long at no join or drain (network events near it: {})",
                    (end - start) / 1_000_000,
                    near.join(", ")
                ));
            }
        }
    }
    assert_eq!(
        unexplained, 0,
        "{label}: a request failed that no network join or drain explains: {text}"
    );
    text
}

/// Container events of one project: (engine time in ns, action, container
/// id, service), collected in the background from now on.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

/// (engine time in ns, action, container id, service)
type Event = (i64, String, String, String);

impl Events {
    async fn follow(project: &str) -> Events {
        let events = Events::default();
        let docker = docker().await;
        let filters = std::collections::HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("com.docker.compose.project={project}")],
            ),
        ]);
        let sink = events.0.clone();
        tokio::spawn(async move {
            let mut stream = docker.events(Some(bollard::query_parameters::EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            while let Some(Ok(event)) = stream.next().await {
                let actor = event.actor.unwrap_or_default();
                let service = actor
                    .attributes
                    .unwrap_or_default()
                    .get("com.docker.compose.service")
                    .cloned()
                    .unwrap_or_default();
                sink.lock().expect("events").push((
                    event.time_nano.unwrap_or_default(),
                    event.action.unwrap_or_default(),
                    actor.id.unwrap_or_default(),
                    service,
                ));
            }
        });
        // The subscription is live once the engine answers it; give it a
        // moment so the first deploy's events are not missed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        events
    }

    fn all(&self) -> Vec<Event> {
        self.0.lock().expect("events").clone()
    }

    /// `service:action@+ms` for every event from `since_ns`, for the report.
    fn timeline(&self, since_ns: i64) -> String {
        self.all()
            .into_iter()
            .filter(|(t, a, _, _)| *t >= since_ns && !a.starts_with("exec_"))
            .map(|(t, a, id, s)| {
                let short: String = id.chars().take(6).collect();
                format!("{s}/{short}:{a}@+{}", (t - since_ns) / 1_000_000)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The engine's own measure of a stop-first replacement of `service`
    /// from `since_ns`: the old container's `die` to the new one's first
    /// `healthy`, in ms.
    fn die_to_healthy_ms(&self, service: &str, since_ns: i64) -> Option<u64> {
        let events: Vec<_> = self
            .all()
            .into_iter()
            .filter(|(t, _, _, s)| *t >= since_ns && s == service)
            .collect();
        let (die_at, old) = events
            .iter()
            .find(|(_, a, _, _)| a == "die")
            .map(|(t, _, id, _)| (*t, id.clone()))?;
        let healthy_at = events
            .iter()
            .find(|(t, a, id, _)| *t > die_at && a == "health_status: healthy" && *id != old)
            .map(|(t, _, _, _)| *t)?;
        Some(((healthy_at - die_at) / 1_000_000) as u64)
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

fn deploy_args(backend: &str, frontend: &str, sha: &str, verb: &str) -> Vec<String> {
    with_execute(release_args(verb, backend, frontend, sha, "zero-downtime"))
}

/// (name, image) of every container of the project.
fn project_containers(project: &str) -> Vec<(String, String)> {
    let out = docker_out(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--format",
        "{{.Names}} {{.Image}}",
    ]);
    let mut rows: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_owned(), i.to_owned()))
        .collect();
    rows.sort();
    rows
}

/// Exactly one container per service, each under Compose's name.
fn assert_one_container_per_service(project: &str, context: &str) {
    let names: Vec<String> = project_containers(project)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let expected: Vec<String> = ["api", "frontend", "postgres"]
        .iter()
        .map(|s| format!("{project}-{s}-1"))
        .collect();
    assert_eq!(
        names, expected,
        "{context}: the project's containers are not exactly one per service under its own name"
    );
}

fn describe(seen: &Seen) -> String {
    format!(
        "{} requests, {} failed, longest gap {} ms (ended at +{} ms){}",
        seen.requests,
        seen.failures,
        seen.longest_gap_ms,
        seen.longest_gap_end_ms,
        if seen.samples.is_empty() {
            String::new()
        } else {
            format!(" (first failures: {})", seen.samples.join("; "))
        }
    )
}

fn run_ok(td: &TestDir, args: &[String], what: &str) -> Output {
    let out = td.run(args);
    assert_eq!(out.code, 0, "{what}:\n{}", out.dump());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn start_first_flip_and_rollback_keep_the_api_serving() {
    let s = stack();
    let td = TestDir::new("zerodt");
    let project = RuntimeProject::new(&td).await;
    let network = format!("{}_default", project.name);
    let (ba, fa) = (
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A").to_owned(),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A").to_owned(),
    );
    let (bb, fb) = (
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_B").to_owned(),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B").to_owned(),
    );
    let events = Events::follow(&project.name).await;

    // Release A runs and is the last good one.
    run_ok(&td, &deploy_args(&ba, &fa, &s.sha_a, "deploy"), "deploy A");
    run_ok(
        &td,
        &deploy_args(&ba, &fa, &s.sha_a, "record-release"),
        "record A",
    );
    let frontend_url = format!("http://127.0.0.1:{}/health", project.frontend_port);
    let published = Command::new("/bin/busybox")
        .args(["wget", "-q", "-O-", &frontend_url])
        .output()
        .expect("busybox wget");
    assert!(
        String::from_utf8_lossy(&published.stdout).contains("\"version\":\"A\""),
        "the frontend does not answer on its published port {frontend_url}: {published:?}"
    );

    // The flip A -> B, then the rollback B -> A, each under a probe.
    let disconnects = Disconnects::follow(&network).await;
    let mut report = String::new();
    let mut flips = Vec::new();
    for (label, args, backend) in [
        (
            "deploy A->B",
            deploy_args(&bb, &fb, &s.sha_b, "deploy"),
            &bb,
        ),
        (
            "rollback B->A",
            vec!["runtime".into(), "rollback".into(), "--execute".into()],
            &ba,
        ),
    ] {
        let old_api = project.container("api").await.1;
        let probe = Probe::start(&network);
        let outside = WgetProbe::start(&network, API_URL).await;
        let since = now_ns();
        let started = Instant::now();
        let out = run_ok(&td, &args, label);
        let took = started.elapsed();
        let seen = probe.finish();
        let wget = outside.finish();
        eprintln!(
            "{label}: wget failures at {:?} ms; events {}",
            wget.failures
                .iter()
                .map(|(a, b)| ((a - since) / 1_000_000, (b - since) / 1_000_000))
                .collect::<Vec<_>>(),
            events.timeline(since)
        );
        let wget_text = check_wget_floor(label, &wget, &disconnects.all());
        let (api_image, new_api) = project.container("api").await;
        assert_eq!(
            api_image,
            wavemap_e2e::pinned(backend).await,
            "{label}: the API runs the wrong image"
        );
        assert_ne!(new_api, old_api, "{label}: the API was not replaced");
        assert!(
            out.stderr.contains("start-first"),
            "{label}: the API was not replaced start-first:\n{}",
            out.stderr
        );
        assert_one_container_per_service(&project.name, label);
        // The engine logs events asynchronously; they are all in by now
        // (the probe's stop took longer than that).
        let bound = events.die_to_healthy_ms("frontend", since);
        report.push_str(&format!(
            "{label} ({} ms): api {}; {wget_text}; frontend {}; frontend die->healthy {:?} ms\n  engine events from the probe's start: {}\n",
            took.as_millis(),
            describe(&seen[API_URL]),
            describe(&seen[FRONTEND_URL]),
            bound,
            events.timeline(since)
        ));
        flips.push((label, seen, bound));
    }
    eprintln!("zero downtime:\n{report}");
    wavemap_e2e::report_line("zero-downtime", &format!("zero downtime:\n{report}"));
    for (label, seen, bound) in &flips {
        let api = &seen[API_URL];
        assert!(api.requests > 0, "{label}: the probe made no request");
        // The floor without a proxy (docs/compose-engine.md, "Start-first
        // drain"): one request at the new container's join, one at the old
        // one's drain; the outside probe's losses were each matched to the
        // Engine's network events above.
        assert!(
            api.failures <= 2,
            "{label}: the API failed more probes than a join and a drain can lose\n{report}"
        );
        // The frontend (stop-first, a published port) is down from its old
        // container's stop to its new one's start: never longer than the
        // engine's die -> first healthy, give or take one probe interval on
        // each side of the gap.
        let frontend = &seen[FRONTEND_URL];
        let bound = bound.unwrap_or_else(|| {
            panic!("{label}: no frontend die/healthy events were seen\n{report}")
        });
        assert!(
            frontend.longest_gap_ms <= bound + 2 * PROBE_INTERVAL_MS,
            "{label}: the frontend's longest gap {} ms exceeds its start plus first health check ({bound} ms)\n{report}",
            frontend.longest_gap_ms
        );
    }

    // `docker compose up -d` on the same project afterwards changes nothing
    // (the .env beside the file holds the release that runs).
    let before = project_containers(&project.name);
    let ids_before: Vec<String> = before.iter().map(|(n, _)| n.clone()).collect();
    let id_of = |name: &str| {
        String::from_utf8_lossy(&docker_out(&["inspect", "-f", "{{.Id}}", name]).stdout)
            .trim()
            .to_owned()
    };
    let ids: Vec<String> = ids_before.iter().map(|n| id_of(n)).collect();
    let compose_file = td.compose_file();
    let compose_dir = compose_file.parent().expect("compose dir");
    let up = Command::new("docker")
        .current_dir(compose_dir)
        .args(["compose", "-p", &project.name, "up", "-d"])
        .output()
        .expect("docker compose up -d");
    let up_err = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(up.status.success(), "docker compose up -d: {up_err}");
    assert!(
        !up_err.contains("Recreate"),
        "docker compose up -d recreated after a start-first deploy:\n{up_err}"
    );
    let after: Vec<String> = ids_before.iter().map(|n| id_of(n)).collect();
    assert_eq!(
        ids, after,
        "docker compose up -d replaced containers:\n{up_err}"
    );
}

/// The points of a replacement, in order (agent/src/compose/replace.rs):
/// the API's start-first steps, then the frontend's stop-first ones (the
/// frontend is replaced after the API, so the API serves at all of them).
const REPLACE_POINTS: [&str; 13] = [
    "start-first:created",
    "start-first:started",
    "start-first:healthy",
    "start-first:announced",
    "start-first:drained",
    "start-first:stopped",
    "start-first:removed",
    "start-first:renamed",
    "stop-first:created",
    "stop-first:stopped",
    "stop-first:started",
    "stop-first:removed",
    "stop-first:renamed",
];

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_every_replacement_step_keeps_the_api_served_and_the_rerun_converges() {
    let s = stack();
    let td = TestDir::new("zerodt-crash");
    let project = RuntimeProject::new(&td).await;
    let network = format!("{}_default", project.name);
    let deploy_a = deploy_args(
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "deploy",
    );
    let bb = s.require("WAVEMAP_TEST_BACKEND_IMAGE_B").to_owned();
    let deploy_b = deploy_args(
        &bb,
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_B"),
        &s.sha_b,
        "deploy",
    );
    let pause_file = td.path().join("paused-at");
    run_ok(&td, &deploy_a, "deploy A");
    let disconnects = Disconnects::follow(&network).await;

    let mut report = String::new();
    let mut recovered = 0;
    for point in REPLACE_POINTS {
        run_ok(&td, &deploy_a, "deploy A");
        let _ = std::fs::remove_file(&pause_file);
        let mut child = td
            .command()
            .args(&deploy_b)
            .env("WAVEMAP_TEST_PAUSE_AT", point)
            .env("WAVEMAP_TEST_PAUSE_FILE", &pause_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the agent");
        // Wait for the agent to arrive at the point (or to end without it).
        let waited = Instant::now();
        let arrived = loop {
            if std::fs::read_to_string(&pause_file).is_ok_and(|p| p == point) {
                break true;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("deploy B ended ({status}) without reaching {point}");
            }
            if waited.elapsed() > Duration::from_secs(180) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Served by the old or the new container while the agent stands
        // at the point, and still after it is killed there.
        let (served, answer) = probe_once(&network, &[API_URL]);
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        assert!(arrived, "the agent did not reach {point} in time");
        assert!(
            served,
            "killed at {point}: the API was not served:\n{answer}"
        );
        let (served_after, answer_after) = probe_once(&network, &[API_URL]);
        assert!(
            served_after,
            "after the kill at {point}: the API was not served:\n{answer_after}"
        );
        let left = project_containers(&project.name);

        // The rerun keeps the API served as well (it resumes with a
        // replacement that already runs B, or leaves the old one serving
        // while it starts a new one).
        let probe = Probe::start(&network);
        let outside = WgetProbe::start(&network, API_URL).await;
        let out = run_ok(&td, &deploy_b, &format!("rerun after a kill at {point}"));
        let during = probe.finish();
        let wget = outside.finish();
        // The outside probe's failures are held to the floor a replacement
        // without a proxy has: each one at a join or a drain of the
        // project network, at most one per such event.
        let wget_text =
            check_wget_floor(&format!("rerun after {point}"), &wget, &disconnects.all());
        eprintln!(
            "rerun after {point}: api {}; {wget_text}",
            describe(&during[API_URL])
        );
        assert!(
            during[API_URL].failures <= 2,
            "rerun after {point}: the project's probe lost more than a join and a drain can lose: {}\n{}",
            describe(&during[API_URL]),
            out.stderr
        );
        assert_one_container_per_service(&project.name, &format!("rerun after {point}"));
        assert_eq!(
            project.container("api").await.0,
            wavemap_e2e::pinned(&bb).await,
            "rerun after {point}: the API does not run B\n{}",
            out.dump()
        );
        recovered += 1;
        report.push_str(&format!(
            "{point}: served; rerun: api {}; {wget_text}; left {} container(s): {}\n",
            describe(&during[API_URL]),
            left.len(),
            left.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let line = format!(
        "{recovered}/{} start-first replacement crash points reached and recovered\n{report}",
        REPLACE_POINTS.len()
    );
    eprintln!("{line}");
    wavemap_e2e::report_line("zero-downtime-crash", &line);
    assert_eq!(recovered, REPLACE_POINTS.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_first_replacement_that_never_gets_healthy_leaves_the_old_api_serving() {
    let s = stack();
    let mut td = TestDir::new("zerodt-fail");
    let project = RuntimeProject::new(&td).await;
    let network = format!("{}_default", project.name);
    let deploy_a = deploy_args(
        s.require("WAVEMAP_TEST_BACKEND_IMAGE_A"),
        s.require("WAVEMAP_TEST_FRONTEND_IMAGE_A"),
        &s.sha_a,
        "deploy",
    );
    run_ok(&td, &deploy_a, "deploy A");
    let (_, old_api) = project.container("api").await;
    // The first start of postgres takes longer than this; a replacement's
    // health wait is what it bounds now.
    td.set("runtime", "health_timeout", "8");

    // A new env value makes the API's replacement answer /health with 503.
    let ssm = wavemap_e2e::ssm_client().await;
    ssm.put_parameter()
        .name(format!("{}backend/FAKE_FAIL_HEALTH", td.parameter_prefix()))
        .value("1")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
    let out = td.run(&deploy_a);
    assert_eq!(out.code, 1, "{}", out.dump());
    assert_eq!(
        out.marker("WAVEMAP_RUNTIME_DEPLOY_FAILED_STAGE"),
        Some("health"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("keeps serving"),
        "the error does not say the old container keeps serving:\n{}",
        out.stderr
    );
    assert_eq!(
        project.container("api").await.1,
        old_api,
        "the old API container was replaced"
    );
    assert_one_container_per_service(&project.name, "after the failed replacement");
    let (served, answer) = probe_once(&network, &[API_URL]);
    assert!(served, "the old API does not serve:\n{answer}");
}
