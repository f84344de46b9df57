//! How watches retry. kube-runtime's default grows to 30 s and only forgets
//! after two quiet minutes: after an API server restart (403s while its RBAC
//! cache warms, then 410s while its watch cache catches up) a watch could sit
//! out half a minute while drift waits. Here: 250 ms doubling to at most 5 s,
//! back to 250 ms once the watch delivers something after its retry.
//!
//! kube-runtime resets the backoff on every item the watcher yields, and a
//! relist starts with an `Init` item before its LIST is even sent: a watch
//! whose LIST keeps failing (RBAC forbids it) would retry every 250 ms for
//! ever. A reset that comes right after a retry began is that `Init`, and is
//! ignored.

use std::time::{Duration, Instant};

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(250);
const MAX: Duration = Duration::from_secs(5);
/// A reset within this long after a retry's delay ran out is the relist's
/// own `Init`, not a sign of health.
const SETTLE: Duration = Duration::from_millis(500);

/// The watches' retry delays.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
    /// When the last delay handed out ends (the retry's start).
    retry_at: Option<Instant>,
    /// A little spread, so that many watches that failed together do not
    /// all retry in the same millisecond.
    salt: u32,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        Self { next: FIRST, retry_at: None, salt }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        self.salt = self.salt.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        // Up to +20%.
        let jitter = delay.mul_f64(f64::from(self.salt % 1000) / 5000.0);
        self.retry_at = Some(Instant::now() + delay + jitter);
        Some(delay + jitter)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at + SETTLE) {
            return;
        }
        self.next = FIRST;
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_and_starts_over_on_reset() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = (&mut backoff).take(8).collect();
        let bases = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*delay >= base && *delay <= base.mul_f64(1.2), "{delay:?} for {base:?}");
        }
        backoff.retry_at = Some(Instant::now() - SETTLE - Duration::from_millis(1));
        backoff.reset();
        assert!(backoff.next().unwrap() < Duration::from_millis(301));
    }

    #[test]
    fn the_reset_of_a_relist_that_then_fails_does_not_start_over() {
        // The watcher yields `Init` as the retry begins, then its LIST fails.
        let mut backoff = WatchBackoff::default();
        let first = backoff.next().unwrap();
        backoff.reset();
        let second = backoff.next().unwrap();
        backoff.reset();
        let third = backoff.next().unwrap();
        assert!(first < Duration::from_millis(301), "{first:?}");
        assert!(second >= Duration::from_millis(500), "{second:?}");
        assert!(third >= Duration::from_millis(1000), "{third:?}");
    }
}
