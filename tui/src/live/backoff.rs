//! How long to wait before the next reconnection attempt.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Exponential backoff: `initial`, doubling per attempt, capped at `max`,
/// shortened by up to `jitter` (a fraction) so explorers that lost the same
/// relay do not all come back in the same instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// 0.0 (none, for tests) to 1.0.
    pub jitter: f64,
    /// A connection that lived this long counts as healthy: the next failure
    /// starts again from `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            jitter: 0.1,
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1 for the first retry), without
    /// jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`Self::base_delay`] minus a random share of up to `jitter` of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 - jitter * random_unit())
    }
}

/// A number in [0, 1) that differs between calls and processes; good enough to
/// spread retries, without a dependency on a random number crate.
fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_100ms_and_stops_at_5s() {
        let policy = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let delays: Vec<u64> = (1..=9)
            .map(|attempt| policy.delay(attempt).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(5));
        assert_eq!(policy.delay(0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_its_share() {
        let policy = Backoff::default();
        for attempt in 1..=20 {
            let base = policy.base_delay(attempt);
            let delay = policy.delay(attempt);
            assert!(delay <= base, "attempt {attempt}: {delay:?} > {base:?}");
            assert!(
                delay >= base.mul_f64(0.9),
                "attempt {attempt}: {delay:?} < 90% of {base:?}"
            );
        }
    }
}
