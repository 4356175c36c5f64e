//! On-host endpoint smoke: the runbook's proof that a running pair serves.
//!
//! Containers that run and report healthy are not enough: a frontend whose
//! API rewrite points at the wrong host is healthy and still serves nothing.
//! The runbook records the last-good receipt only after endpoint smoke
//! passed, with three checks (the `[smoke]` defaults):
//! - `ping`   `/en/ping`: the frontend is reachable;
//! - `health` `/api/v1/health`: the frontend's rewrite reaches the backend;
//! - `ready`  `/api/v1/ready`: the backend reaches Postgres.
//!
//! Each is one `GET` through the frontend's published port on this host
//! (`smoke.port`, or the one port the running frontend container publishes),
//! so it goes the way a visitor's request goes after the load balancer.
//! Read-only: nothing is written, no lock is taken. `runtime smoke` runs it
//! alone; `runtime record-release` runs it before it writes a receipt.
//!
//! Markers (`WAVEMAP_SMOKE_*`): `_RESULT` (`passed`, `failed`), `_BASE_URL`,
//! `_CHECKS` (names, in order), `_FAILED_CHECKS`, and per check
//! `_CHECK_<NAME>_PATH`, `_STATUS` (the HTTP status, or `none` when no
//! answer came), `_EXPECTED`, `_MS` (latency of the deciding attempt),
//! `_RESULT` (`pass`, `fail`) and, on failure, `_DETAIL`.

use std::time::{Duration, Instant};

use bollard::Docker;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::{Config, SmokeCheck};
use crate::error::Error;
use crate::output::Report;
use crate::retry::{Backoff, Retry};

const P: &str = "WAVEMAP_SMOKE";

/// Pause between two attempts of one check.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The address the checks are sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn base_url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// What one check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub path: String,
    pub expected: u16,
    /// The HTTP status of the deciding attempt; `None` when nothing answered.
    pub status: Option<u16>,
    /// Latency of the deciding attempt, in milliseconds.
    pub ms: u64,
    /// Why it failed (connection refused, timeout, other status).
    pub detail: Option<String>,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.status == Some(self.expected)
    }
}

/// The smoke of one run: where it went and what each check saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub target: Target,
    pub checks: Vec<CheckResult>,
}

impl Outcome {
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed())
    }

    pub fn add_markers(&self, report: &mut Report) {
        let failed: Vec<&str> = self.failed().map(|c| c.name.as_str()).collect();
        report.marker(
            &format!("{P}_RESULT"),
            if failed.is_empty() {
                "passed"
            } else {
                "failed"
            },
        );
        report.marker(&format!("{P}_BASE_URL"), self.target.base_url());
        let names: Vec<&str> = self.checks.iter().map(|c| c.name.as_str()).collect();
        report.marker(&format!("{P}_CHECKS"), names.join(","));
        report.marker(&format!("{P}_FAILED_CHECKS"), failed.join(","));
        for c in &self.checks {
            let key = format!(
                "{P}_CHECK_{}",
                c.name.to_ascii_uppercase().replace('-', "_")
            );
            report.marker(&format!("{key}_PATH"), &c.path);
            report.marker(
                &format!("{key}_STATUS"),
                c.status
                    .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            );
            report.marker(&format!("{key}_EXPECTED"), c.expected);
            report.marker(&format!("{key}_MS"), c.ms);
            report.marker(
                &format!("{key}_RESULT"),
                if c.passed() { "pass" } else { "fail" },
            );
            if let Some(detail) = &c.detail {
                report.marker(&format!("{key}_DETAIL"), detail);
            }
        }
    }

    /// Exit 3 naming every failed check, or `Ok` when all passed.
    pub fn gate(&self) -> Result<(), Error> {
        let failed: Vec<String> = self
            .failed()
            .map(|c| {
                format!(
                    "check {} (GET {}) {}",
                    c.name,
                    c.path,
                    c.detail.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::Gate {
            reason: format!(
                "endpoint smoke through {} failed: {}",
                self.target.base_url(),
                failed.join("; ")
            ),
        })
    }
}

/// Find the target, run every check, print a line per check on stderr.
/// A smoke that cannot start (no running frontend, no published port) is
/// a gate error (exit 3) with `WAVEMAP_SMOKE_RESULT=failed`.
pub async fn run(config: &Config, docker: &Docker, report: &mut Report) -> Result<Outcome, Error> {
    let target = match target(config, docker).await {
        Ok(target) => target,
        Err(e) => {
            report.marker(&format!("{P}_RESULT"), "failed");
            return Err(e);
        }
    };
    log::info!(stage = "smoke"; "endpoint smoke through {}", target.base_url());
    let mut checks = Vec::with_capacity(config.smoke.checks.len());
    for check in &config.smoke.checks {
        let result = run_check(config, &target, check).await;
        let status = result
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        if result.passed() {
            log::info!(stage = "smoke"; "  {:<8} GET {:<24} {} in {} ms", result.name, result.path, status, result.ms);
        } else {
            log::warn!(stage = "smoke"; "  {:<8} GET {:<24} FAILED: {}", result.name, result.path, result.detail.as_deref().unwrap_or(&status));
        }
        checks.push(result);
    }
    let outcome = Outcome { target, checks };
    outcome.add_markers(report);
    Ok(outcome)
}

/// Where the checks go: `smoke.port` on `smoke.host`, or the one host port
/// the running frontend container publishes (on its bound address when it
/// is a specific one, else on `smoke.host`).
async fn target(config: &Config, docker: &Docker) -> Result<Target, Error> {
    if let Some(port) = config.smoke.port {
        return Ok(Target {
            host: config.smoke.host.clone(),
            port,
        });
    }
    let service = &config.runtime.frontend_service;
    let states = crate::compose::service_states(docker, &config.runtime.project_name).await?;
    let Some(frontend) = states
        .iter()
        .find(|s| &s.service == service && s.state == "running")
    else {
        return Err(Error::Gate {
            reason: format!(
                "endpoint smoke needs the {service} service running, and it has no running container"
            ),
        });
    };
    let info = docker
        .inspect_container(&frontend.container_id, None)
        .await
        .map_err(|e| crate::compose::plan::docker_error("inspect the frontend container", e))?;
    let mut published: Vec<(String, u16)> = Vec::new();
    let ports = info
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    for (container_port, bindings) in ports {
        if !container_port.ends_with("/tcp") {
            continue;
        }
        for b in bindings.unwrap_or_default() {
            let Some(port) = b.host_port.and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            let ip = b.host_ip.unwrap_or_default();
            if !published.iter().any(|(_, p)| *p == port) {
                published.push((ip, port));
            }
        }
    }
    match published.as_slice() {
        [(ip, port)] => {
            let host = if ip.is_empty() || ip == "0.0.0.0" || ip == "::" {
                config.smoke.host.clone()
            } else {
                ip.clone()
            };
            Ok(Target { host, port: *port })
        }
        [] => Err(Error::Gate {
            reason: format!(
                "endpoint smoke goes through the {service} service's published port, and its container {} publishes none; publish one in the Compose file or set smoke.port",
                frontend.container_name
            ),
        }),
        _ => Err(Error::Gate {
            reason: format!(
                "the {service} container {} publishes several host ports ({}); set smoke.port to the one visitors reach",
                frontend.container_name,
                published
                    .iter()
                    .map(|(_, p)| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// One check: up to `smoke.attempts` tries, one second apart, until the
/// expected status comes back.
async fn run_check(config: &Config, target: &Target, check: &SmokeCheck) -> CheckResult {
    let attempts = config.smoke.attempts.max(1);
    let mut result = CheckResult {
        name: check.name.clone(),
        path: check.path.clone(),
        expected: check.status,
        status: None,
        ms: 0,
        detail: None,
    };
    let mut retry = Retry::tries(attempts, Backoff::constant(RETRY_PAUSE));
    loop {
        // Each try fits in what is left of the command's budget (--deadline).
        let timeout = match crate::operation::wait_limit(
            "the smoke check (smoke.timeout)",
            config.smoke.timeout.duration(),
        ) {
            Ok(timeout) => timeout,
            Err(e) => {
                result.detail = Some(e.to_string());
                break;
            }
        };
        let started = Instant::now();
        let answer = get(target, &check.path, timeout).await;
        result.ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match answer {
            Ok(status) if status == check.status => {
                result.status = Some(status);
                result.detail = None;
                return result;
            }
            Ok(status) => {
                result.status = Some(status);
                result.detail = Some(format!("answered {status}, expected {}", check.status));
            }
            Err(problem) => {
                result.status = None;
                result.detail = Some(problem);
            }
        }
        if retry.exhausted() {
            break;
        }
        retry.pause().await;
    }
    if let Some(detail) = &mut result.detail {
        if attempts > 1 {
            detail.push_str(&format!(" ({attempts} attempts)"));
        }
    }
    result
}

/// `GET path` on the target; the status, or why there was none. The body
/// is never read: it is the app's, and nothing of it reaches the output.
async fn get(target: &Target, path: &str, timeout: Duration) -> Result<u16, String> {
    let request = async {
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", target.base_url()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {} failed: {e}", target.base_url()))?;
        tokio::spawn(async move {
            // Ends when the response is dropped; its error, if any, already
            // surfaced through send_request.
            let _ = connection.await;
        });
        let authority = target.base_url().trim_start_matches("http://").to_owned();
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, "wavemap-agent-smoke")
            .header(hyper::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request for {path}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("no answer from {}: {e}", target.base_url()))?;
        Ok(response.status().as_u16())
    };
    match tokio::time::timeout(timeout, request).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route HTTP server on 127.0.0.1: `path` answers `status`,
    /// everything else 404.
    async fn server(routes: Vec<(&'static str, u16)>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let status = routes
                        .iter()
                        .find(|(p, _)| *p == path)
                        .map_or(404, |(_, s)| *s);
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes(),
                        )
                        .await;
                });
            }
        });
        port
    }

    fn config(port: u16) -> Config {
        let mut c = Config::default();
        c.smoke.port = Some(port);
        c.smoke.attempts = 1;
        c.smoke.timeout = crate::config::Seconds::new(2);
        c
    }

    #[tokio::test]
    async fn every_check_reports_status_and_latency_and_failures_gate() {
        let port = server(vec![
            ("/en/ping", 200),
            ("/api/v1/health", 502),
            ("/api/v1/ready", 200),
        ])
        .await;
        let c = config(port);
        let target = Target {
            host: "127.0.0.1".into(),
            port,
        };
        let mut checks = Vec::new();
        for check in &c.smoke.checks {
            checks.push(run_check(&c, &target, check).await);
        }
        let outcome = Outcome { target, checks };
        let failed: Vec<&str> = outcome.failed().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["health"]);
        let mut report = Report::new();
        outcome.add_markers(&mut report);
        assert_eq!(report.get("WAVEMAP_SMOKE_RESULT"), Some("failed"));
        assert_eq!(report.get("WAVEMAP_SMOKE_FAILED_CHECKS"), Some("health"));
        assert_eq!(report.get("WAVEMAP_SMOKE_CHECK_PING_STATUS"), Some("200"));
        assert_eq!(report.get("WAVEMAP_SMOKE_CHECK_HEALTH_STATUS"), Some("502"));
        assert_eq!(
            report.get("WAVEMAP_SMOKE_CHECK_HEALTH_RESULT"),
            Some("fail")
        );
        assert!(report
            .get("WAVEMAP_SMOKE_CHECK_READY_MS")
            .is_some_and(|ms| ms.parse::<u64>().is_ok()));
        let err = outcome.gate().unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let text = err.to_string();
        assert!(
            text.contains("check health (GET /api/v1/health) answered 502"),
            "{text}"
        );
        assert!(!text.contains("check ping"), "{text}");
    }

    #[tokio::test]
    async fn a_closed_port_is_no_answer_not_a_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let c = config(port);
        let target = Target {
            host: "127.0.0.1".into(),
            port,
        };
        let r = run_check(&c, &target, &c.smoke.checks[0]).await;
        assert_eq!(r.status, None);
        assert!(!r.passed());
        assert!(r.detail.unwrap().contains("cannot connect"));
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_urls() {
        let t = Target {
            host: "::1".into(),
            port: 8080,
        };
        assert_eq!(t.base_url(), "http://[::1]:8080");
    }
}
