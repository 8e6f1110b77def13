//! When the daemon does things: pure functions of (interval, failures, randomness), tested with
//! literals. The loop turns their answers into tokio sleeps.

use std::time::Duration;

/// The longest wait between upstream attempts after failures, however many.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

/// How long to wait before the next upstream sync.
///
/// After a success (`failures == 0`) it is `interval` with up to ±10% jitter, so a fleet that
/// booted together does not fetch in lockstep. After failures it doubles per failure from a
/// minute (or from `interval`, when that is shorter), jittered the same way, capped at the
/// larger of `interval` and [`MAX_BACKOFF`]: an unreachable upstream is tried less and less
/// often, never less than once an hour (or once an interval, when that is longer). `unit` is a
/// random number in `[0, 1)`.
pub fn next_sync(interval: Duration, failures: u32, unit: f64) -> Duration {
    let base = if failures == 0 {
        interval
    } else {
        let shift = (failures - 1).min(20);
        let first = interval.min(Duration::from_secs(60));
        let backoff = first.saturating_mul(1 << shift);
        backoff.min(interval.max(MAX_BACKOFF))
    };
    jitter(base, unit)
}

/// `base` scaled by a factor in `[0.9, 1.1)` chosen by `unit` in `[0, 1)`.
pub fn jitter(base: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    base.mul_f64(0.9 + 0.2 * unit)
}

/// A random number in `[0, 1)` from the OS, for jitter (no need for a crypto RNG crate).
pub fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS for every instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    // 53 bits make an exact f64 fraction.
    let bits = h.finish() >> 11;
    #[allow(clippy::cast_precision_loss)] // 53 bits fit an f64 exactly
    let value = bits as f64 / (1u64 << 53) as f64;
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn success_waits_the_interval_jittered() {
        assert_eq!(next_sync(FIVE_MIN, 0, 0.5), FIVE_MIN);
        assert_eq!(next_sync(FIVE_MIN, 0, 0.0), Duration::from_secs(270));
        assert_eq!(next_sync(FIVE_MIN, 0, 1.0), Duration::from_secs(330));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let waits: Vec<u64> = (1..=9)
            .map(|f| next_sync(FIVE_MIN, f, 0.5).as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(next_sync(FIVE_MIN, u32::MAX, 0.5), MAX_BACKOFF);
    }

    #[test]
    fn a_short_interval_starts_the_backoff_lower() {
        let second = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=4)
            .map(|f| next_sync(second, f, 0.5).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8]);
    }

    #[test]
    fn a_long_interval_caps_the_backoff_instead() {
        let day = Duration::from_secs(86_400);
        assert_eq!(next_sync(day, 30, 0.5), day);
    }

    #[test]
    fn jitter_is_total() {
        assert_eq!(jitter(FIVE_MIN, f64::NAN), FIVE_MIN);
        assert_eq!(jitter(FIVE_MIN, -3.0), Duration::from_secs(270));
        let u = random_unit();
        assert!((0.0..1.0).contains(&u), "{u}");
    }
}
