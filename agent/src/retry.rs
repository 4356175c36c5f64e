//! One way to wait and try again: the pause between tries ([`Backoff`]) and
//! the budget that ends them ([`Retry`]).
//!
//! Why one module: the Docker wait (commands and the daemon's boot), the
//! ledger connection, the advisory and file locks, the job runner, the
//! health waits, the smoke checks, the daemon's render and recovery retries
//! all poll something until it answers or a limit passes. Written by hand each time, the loops drifted (one forgot to bound
//! its last sleep by the deadline, one doubled without a cap). Each caller
//! now says only what it tries, how it logs, and which policy it wants.
//!
//! Why not a crate such as `backon`: every caller here does something
//! between tries (a STATUS line, a watchdog touch, an interrupt check, a
//! log line announced once), which fits a loop with an explicit pause
//! better than a closure handed to a retry combinator.

use std::time::{Duration, Instant};

/// The pause between two tries: exponential from `first`, doubling up to
/// `max`, optionally with "equal jitter" (each pause uniformly random in the
/// upper half of its step). A constant pause is `first == max`.
///
/// Why jitter (the daemon): after a regional ECR or SSM outage every host
/// woken at the same time would otherwise retry in lockstep. Why the lower
/// bound of half the step: a retry never comes sooner than half of what was
/// announced, so a `retrying in Ns` status stays roughly true.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: bool,
    /// Failures since the last success.
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// The same pause every time.
    pub fn constant(pause: Duration) -> Self {
        Self::exponential(pause, pause)
    }

    /// Doubling from `first` up to `max`, no jitter.
    pub fn exponential(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            jitter: false,
            failures: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// Doubling from `first` up to `max` (at least 1 s), with equal jitter.
    pub fn jittered(first: Duration, max: Duration) -> Self {
        let max = max.max(Duration::from_secs(1));
        Backoff {
            first: first.min(max),
            max,
            jitter: true,
            failures: 0,
            rng: fastrand::Rng::new(),
        }
    }

    #[cfg(test)]
    fn seeded(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The step (upper bound) of the next pause, without jitter.
    pub fn step(&self) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// Count one failure and return how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step();
        self.failures = self.failures.saturating_add(1);
        if !self.jitter {
            return step;
        }
        let half = step / 2;
        let spread = u64::try_from((step - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(self.rng.u64(0..=spread))
    }

    /// A success: the next failure starts from the first step again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success (or since the start).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// When to stop trying.
#[derive(Debug, Clone, Copy)]
enum Budget {
    /// Until this much time has passed since the first try.
    Time(Duration),
    /// At most this many tries in all.
    Tries(u32),
}

/// A backoff with a budget. The caller's loop: try; on success return; if
/// [`Retry::exhausted`], fail with what the last try said; else log and
/// [`Retry::pause`].
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    budget: Budget,
    started: Instant,
}

impl Retry {
    /// Keep trying until `limit` has passed; the last pause never sleeps
    /// past it.
    pub fn for_time(limit: Duration, backoff: Backoff) -> Self {
        Retry {
            backoff,
            budget: Budget::Time(limit),
            started: Instant::now(),
        }
    }

    /// At most `tries` tries in all (at least one).
    pub fn tries(tries: u32, backoff: Backoff) -> Self {
        Retry {
            backoff,
            budget: Budget::Tries(tries.max(1)),
            started: Instant::now(),
        }
    }

    /// The try under way, from 1.
    pub fn attempt(&self) -> u32 {
        self.backoff.failures().saturating_add(1)
    }

    /// Time since the first try.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The budget is spent: the try that just failed was the last.
    pub fn exhausted(&self) -> bool {
        match self.budget {
            Budget::Time(limit) => self.started.elapsed() >= limit,
            Budget::Tries(tries) => self.attempt() >= tries,
        }
    }

    /// The pause before the next try, counted as one failure, and never
    /// past a time budget.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.backoff.next_delay();
        match self.budget {
            Budget::Time(limit) => delay.min(limit.saturating_sub(self.started.elapsed())),
            Budget::Tries(_) => delay,
        }
    }

    /// Sleep for [`Retry::next_delay`].
    pub async fn pause(&mut self) {
        let delay = self.next_delay();
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jittered(max_secs: u64, seed: u64) -> Backoff {
        Backoff::jittered(Duration::from_secs(2), Duration::from_secs(max_secs)).seeded(seed)
    }

    #[test]
    fn steps_double_from_the_first_up_to_the_cap() {
        let mut b = jittered(60, 1);
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
    fn without_jitter_the_delay_is_the_step() {
        let mut b = Backoff::exponential(Duration::from_millis(250), Duration::from_secs(2));
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 2000, 2000]);
        let mut c = Backoff::constant(Duration::from_millis(100));
        assert!((0..5).all(|_| c.next_delay() == Duration::from_millis(100)));
    }

    #[test]
    fn every_jittered_delay_is_within_the_upper_half_of_its_step() {
        let mut b = jittered(300, 7);
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
        let mut a = jittered(300, 1);
        let mut b = jittered(300, 2);
        let da: Vec<Duration> = (0..6).map(|_| a.next_delay()).collect();
        let db: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_ne!(da, db);
        let mut same = jittered(300, 3);
        let distinct: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| same.next_delay()).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }

    #[test]
    fn a_success_starts_over_and_a_tiny_cap_still_waits() {
        let mut b = jittered(300, 9);
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.failures(), 5);
        b.reset();
        assert_eq!(b.step(), Duration::from_secs(2));
        let mut tiny = jittered(1, 4);
        for _ in 0..10 {
            let d = tiny.next_delay();
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        // Never overflows, however long the outage.
        let mut long = jittered(300, 5);
        for _ in 0..10_000 {
            assert!(long.next_delay() <= Duration::from_secs(300));
        }
    }

    #[test]
    fn a_try_budget_counts_tries() {
        let mut r = Retry::tries(3, Backoff::constant(Duration::from_secs(2)));
        assert_eq!(r.attempt(), 1);
        assert!(!r.exhausted());
        r.next_delay();
        assert_eq!(r.attempt(), 2);
        assert!(!r.exhausted());
        r.next_delay();
        assert_eq!(r.attempt(), 3);
        assert!(r.exhausted());
    }

    #[test]
    fn a_time_budget_never_sleeps_past_its_end() {
        let mut r = Retry::for_time(
            Duration::from_millis(300),
            Backoff::constant(Duration::from_secs(5)),
        );
        assert!(!r.exhausted());
        assert!(r.next_delay() <= Duration::from_millis(300));
        let spent = Retry::for_time(Duration::ZERO, Backoff::constant(Duration::from_secs(1)));
        assert!(spent.exhausted());
    }
}
