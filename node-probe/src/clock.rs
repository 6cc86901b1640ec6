//! The kernel's clock and the wall clock. Event timestamps are
//! `bpf_ktime_get_ns()`, CLOCK_MONOTONIC; flows carry Unix time.

use nix::time::{ClockId, clock_gettime};

/// Why a clock could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("reading CLOCK_MONOTONIC: {0}")]
    Monotonic(#[from] nix::Error),
    #[error("the system clock is before 1970")]
    BeforeEpoch,
}

/// CLOCK_MONOTONIC now, the clock of the kernel's event timestamps.
pub fn monotonic_ns() -> Result<u64, ClockError> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    let seconds = u64::try_from(now.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
    Ok(seconds.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Unix time minus monotonic time: added to a kernel timestamp, it gives the
/// wall-clock time of the event.
pub fn boot_to_unix_ns() -> Result<i64, ClockError> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ClockError::BeforeEpoch)?
        .as_nanos();
    let unix = i64::try_from(unix).unwrap_or(i64::MAX);
    let monotonic = i64::try_from(monotonic_ns()?).unwrap_or(i64::MAX);
    Ok(unix - monotonic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_turns_now_into_now() {
        let offset = boot_to_unix_ns().expect("clocks");
        let mono = monotonic_ns().expect("monotonic") as i64;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as i64;
        assert!(
            (offset + mono - unix).abs() < 1_000_000_000,
            "within a second"
        );
        assert!(
            monotonic_ns().expect("monotonic") >= mono as u64,
            "monotonic"
        );
    }
}
