//! The pause between two recovery attempts: exponential from 2 s, capped at
//! `daemon.retry_max`, with "equal jitter" (each pause is uniformly random
//! in the upper half of its step).
//!
//! Why jitter: after a regional ECR or SSM outage, every host woken at the
//! same time would otherwise retry in lockstep. Why the lower bound of half
//! the step: a retry never comes sooner than half of what was announced in
//! `STATUS=... retrying in Ns`, so the status stays roughly true.

use std::time::Duration;

/// The first step; smaller `retry_max` values cap it.
const FIRST: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Backoff {
    max: Duration,
    /// Failures since the last success.
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff {
            max: max.max(Duration::from_secs(1)),
            failures: 0,
            rng: fastrand::Rng::new(),
        }
    }

    #[cfg(test)]
    fn seeded(max: Duration, seed: u64) -> Self {
        Backoff {
            rng: fastrand::Rng::with_seed(seed),
            ..Backoff::new(max)
        }
    }

    /// The step (upper bound) of the next pause, without jitter.
    pub fn step(&self) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        FIRST.saturating_mul(factor).min(self.max)
    }

    /// Count one failure and return how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step();
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(self.rng.u64(0..=spread))
    }

    /// A success: the next failure starts from the first step again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_from_two_seconds_up_to_the_cap() {
        let mut b = Backoff::seeded(Duration::from_secs(60), 1);
        let steps: Vec<u64> = (0..8)
            .map(|_| {
                let s = b.step().as_secs();
                b.next_delay();
                s
            })
            .collect();
        assert_eq!(steps, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn every_delay_is_within_the_upper_half_of_its_step() {
        let mut b = Backoff::seeded(Duration::from_secs(300), 7);
        for _ in 0..200 {
            let step = b.step();
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn delays_are_jittered_not_in_lockstep() {
        // Two hosts failing at the same moment must not retry together.
        let mut a = Backoff::seeded(Duration::from_secs(300), 1);
        let mut b = Backoff::seeded(Duration::from_secs(300), 2);
        let da: Vec<Duration> = (0..6).map(|_| a.next_delay()).collect();
        let db: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_ne!(da, db);
        let mut same = Backoff::seeded(Duration::from_secs(300), 3);
        let distinct: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| same.next_delay()).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }

    #[test]
    fn a_success_starts_over_and_a_tiny_cap_still_waits() {
        let mut b = Backoff::seeded(Duration::from_secs(300), 9);
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.failures(), 5);
        b.reset();
        assert_eq!(b.step(), Duration::from_secs(2));
        let mut tiny = Backoff::seeded(Duration::from_secs(1), 4);
        for _ in 0..10 {
            let d = tiny.next_delay();
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        // Never overflows, however long the outage.
        let mut long = Backoff::seeded(Duration::from_secs(300), 5);
        for _ in 0..10_000 {
            assert!(long.next_delay() <= Duration::from_secs(300));
        }
    }
}
