//! How long a failed job waits before its next attempt: exponential backoff with full jitter
//! and a cap. The n-th failure (n from 1) waits a uniformly random time in
//! `[0, min(cap, base · 2^(n-1))]`, so that many jobs failing together (a downstream
//! service down) do not come back together.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The retry delays of a queue's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The first failure's ceiling, in milliseconds.
    pub base_ms: u64,
    /// The largest ceiling, in milliseconds.
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base_ms: 2_000, cap_ms: 3_600_000 }
    }
}

impl Backoff {
    /// The largest delay after the `failures`-th failure (from 1).
    pub fn ceiling(&self, failures: i64) -> Duration {
        let exponent = failures.clamp(1, 64) as u32 - 1;
        let ceiling = self.base_ms.checked_shl(exponent).filter(|c| c >> exponent == self.base_ms).unwrap_or(u64::MAX);
        Duration::from_millis(ceiling.min(self.cap_ms))
    }

    /// The delay after the `failures`-th failure: `unit` in `[0, 1]` picks where in the
    /// window (random in use; fixed in tests).
    pub fn delay(&self, failures: i64, unit: f64) -> Duration {
        let ceiling = self.ceiling(failures).as_millis() as f64;
        Duration::from_millis((ceiling * unit.clamp(0.0, 1.0)).round() as u64)
    }

    /// A random delay after the `failures`-th failure.
    pub fn random_delay(&self, failures: i64) -> Duration {
        self.delay(failures, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff { base_ms: 1000, cap_ms: 10_000 };
        let ceilings: Vec<u64> = (1..=6).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(b.ceiling(500).as_millis(), 10_000, "no overflow far out");
        assert_eq!(b.delay(3, 0.5).as_millis(), 2000);
        assert_eq!(b.delay(3, 0.0).as_millis(), 0, "full jitter reaches zero");
    }

    #[test]
    fn random_delays_stay_in_the_window() {
        let b = Backoff::default();
        for n in 1..30 {
            assert!(b.random_delay(n) <= b.ceiling(n));
        }
    }
}
