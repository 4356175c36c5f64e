//! The one way the agent reaches the Docker Engine.
//!
//! At boot the daemon may start before dockerd answers, so connecting is a
//! bounded wait (`docker.connect_wait`), not a single try; past it the
//! contract wants exit 69 ("a dependency stayed unavailable"). The API
//! version is negotiated so the same binary drives Engine 20.10 (API 1.41)
//! and current engines.

use std::time::Duration;

use bollard::Docker;

use crate::config::Config;
use crate::error::{Dependency, Error};
use crate::retry::{Backoff, Retry};

/// Connect to `config.docker.host`, wait up to `config.docker.connect_wait`
/// for the Engine to answer, and negotiate the API version.
pub async fn connect(config: &Config) -> Result<Docker, Error> {
    let wait = crate::operation::wait_limit(
        "the Docker Engine wait (docker.connect_wait)",
        config.docker.connect_wait.duration(),
    )?;
    connect_to(
        &config.docker.host,
        config.docker.request_timeout.duration(),
        wait,
    )
    .await
}

/// [`connect`] without a whole config (tests, tools).
pub async fn connect_to(
    host: &str,
    request_timeout: Duration,
    wait: Duration,
) -> Result<Docker, Error> {
    let backoff = Backoff::exponential(Duration::from_millis(250), Duration::from_secs(2));
    connect_waiting(
        host,
        request_timeout,
        Retry::for_time(wait, backoff),
        |failure, _| {
            log::info!(stage = "docker"; "waiting for the Docker Engine at {host}: {failure}");
        },
    )
    .await
    .map_err(|failure| {
        Error::unavailable(
            Dependency::Docker,
            format!(
                "{host} did not answer within {}s: {failure}",
                wait.as_secs()
            ),
        )
    })
}

/// Try `host` until it answers or `retry` is spent, calling `waiting` with
/// each failure (and the time waited so far) before the pause. The error is
/// what the last try said. The daemon's boot wait uses this with its own
/// policy and STATUS lines.
pub async fn connect_waiting(
    host: &str,
    request_timeout: Duration,
    mut retry: Retry,
    mut waiting: impl FnMut(&str, Duration),
) -> Result<Docker, String> {
    loop {
        // Inside the loop: bollard refuses a unix socket path that does not
        // exist yet, which is exactly dockerd still starting at boot.
        let failure = match Docker::connect_with_host(host) {
            Err(e) => e.to_string(),
            Ok(docker) => {
                // A short per-attempt timeout so a hung socket cannot eat the wait.
                let attempt = tokio::time::timeout(
                    Duration::from_secs(10).min(request_timeout),
                    docker.with_timeout(request_timeout).negotiate_version(),
                )
                .await;
                match attempt {
                    Ok(Ok(negotiated)) => return Ok(negotiated),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer within 10s".to_owned(),
                }
            }
        };
        if retry.exhausted() {
            return Err(failure);
        }
        waiting(&failure, retry.elapsed());
        retry.pause().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn an_absent_engine_is_unavailable_exit_69_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("unix://{}/none.sock", dir.path().display());
        let started = Instant::now();
        let err = connect_to(&host, Duration::from_secs(5), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 69);
        assert!(err.to_string().contains("Docker Engine"), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(1));
    }
}
