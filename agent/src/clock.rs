//! The time, in the two kinds the agent needs.
//!
//! - Wall-clock timestamps ([`now`], [`unix_secs`]) for what people and
//!   files read: journal entries, the receipt, the heartbeat. RFC 3339 with
//!   milliseconds, UTC.
//! - A monotonic clock ([`Monotonic`]) for anything that measures an
//!   interval: the daemon's liveness check and backoff. A host woken from
//!   a stop (or with NTP stepping the clock at boot) can jump the wall
//!   clock by hours; an interval measured with it would withhold a watchdog
//!   ping or skip a retry.
//!
//! This module depends on nothing else in the crate, so every other module
//! can ask it the time without a cycle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Now, as RFC 3339 UTC with milliseconds (`2026-11-25T02:27:06.692Z`).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A shared "last seen alive" mark on the monotonic clock: one task
/// [`touch`](Monotonic::touch)es it, another asks its [`age`](Monotonic::age).
#[derive(Debug, Clone)]
pub struct Monotonic {
    origin: Instant,
    /// Milliseconds after `origin` of the last touch.
    last: Arc<AtomicU64>,
}

impl Default for Monotonic {
    fn default() -> Self {
        Monotonic {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Monotonic {
    pub fn touch(&self) {
        self.last
            .store(millis(self.origin.elapsed()), Ordering::Relaxed);
    }

    /// Time since the last touch (since creation when never touched).
    pub fn age(&self) -> Duration {
        let now = millis(self.origin.elapsed());
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_rfc3339_utc_with_millis() {
        let t = now();
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        assert!(t.ends_with('Z') && t.len() == 24, "{t}");
    }

    #[test]
    fn monotonic_age_grows_and_touch_resets_it() {
        let m = Monotonic::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(m.age() >= Duration::from_millis(30));
        m.touch();
        assert!(m.age() < Duration::from_millis(30));
        let clone = m.clone();
        std::thread::sleep(Duration::from_millis(20));
        clone.touch();
        assert!(m.age() < Duration::from_millis(20), "clones share the mark");
    }
}
