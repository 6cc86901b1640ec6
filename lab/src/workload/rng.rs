//! A tiny deterministic pseudo-random generator (SplitMix64) and the normal
//! draw built on it. The lab needs reproducible sequences from a seed, not
//! cryptographic quality, so a dependency would be more than the job needs.

use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: one 64-bit state word, a fixed increment and a mixing step.
/// The same seed always gives the same sequence.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator whose sequence differs between calls and processes, for
    /// things that must merely not repeat (DNS query IDs).
    pub fn from_clock() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static CALLS: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let mut mixer = Self::new(nanos ^ u64::from(std::process::id()).rotate_left(32));
        let base = mixer.next_u64();
        Self::new(base ^ call.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1): never exactly 0, so `ln` is safe.
    pub fn next_open01(&mut self) -> f64 {
        // 53 random bits are all an f64 mantissa holds; the half step keeps
        // the value off both ends.
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal draw (mean 0, deviation 1), by Box–Muller.
    pub fn next_standard_normal(&mut self) -> f64 {
        let u1 = self.next_open01();
        let u2 = self.next_open01();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn normal_draws_have_mean_zero_and_unit_deviation() {
        let mut rng = SplitMix64::new(42);
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|_| rng.next_standard_normal()).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
