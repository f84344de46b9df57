//! How watches retry. kube-runtime's default grows to 30 s and only forgets
//! after two quiet minutes: after an API server restart (403s while its RBAC
//! cache warms, then 410s while its watch cache catches up) a watch could sit
//! out half a minute while drift waits. Here: 250 ms doubling to at most 5 s,
//! back to 250 ms as soon as the watch delivers anything.

use std::time::Duration;

use kube::runtime::utils::Backoff;

const FIRST: Duration = Duration::from_millis(250);
const MAX: Duration = Duration::from_secs(5);

/// The watches' retry delays.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
    /// A little spread, so that many watches that failed together do not
    /// all retry in the same millisecond.
    salt: u32,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        Self { next: FIRST, salt }
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
        Some(delay + jitter)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
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
        backoff.reset();
        assert!(backoff.next().unwrap() < Duration::from_millis(301));
    }
}
