//! When to renew, when to retry, and when the clocks disagree: pure functions of their
//! inputs (the random jitter is passed in), so every rule is unit-tested without sleeping.
//!
//! The rules, and why:
//! - Renew at a fraction of the lifetime (default 50%) plus or minus a jitter (default 10%
//!   of the lifetime), so that a fleet started together does not come back together.
//!   The lifetime is counted from when the certificate was *received* (or its NotBefore,
//!   whichever is later): Sentry backdates NotBefore by its allowed clock skew (15 min by
//!   default), which would otherwise shift renewal of a short-lived certificate to its
//!   very end.
//! - After a failure: exponential backoff (1 s, x2, capped at 3 min, each +-20%), but never
//!   scheduled past the expiry of the certificate still held, so the last try happens while
//!   it is valid.
//! - Sleeps are monotonic; wall-clock deadlines are re-checked at least every
//!   `check_interval`, and a divergence between wall and monotonic time (a suspend, an NTP
//!   step) triggers an immediate renewal.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// A retry is never scheduled sooner than this, even right before expiry.
pub const MIN_RETRY: Duration = Duration::from_millis(50);

/// Tunables of the renewal schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenewalPolicy {
    /// Share of the lifetime after which to renew (0 < f < 1). Default 0.5.
    pub renew_fraction: f64,
    /// Jitter as a share of the lifetime, applied both ways. Default 0.1.
    pub renew_jitter: f64,
    /// First retry delay after a failure. Default 1 s.
    pub backoff_initial: Duration,
    /// Growth factor per consecutive failure. Default 2.
    pub backoff_multiplier: f64,
    /// Largest retry delay. Default 180 s.
    pub backoff_max: Duration,
    /// Jitter of each retry delay, as a share of it, both ways. Default 0.2.
    pub backoff_jitter: f64,
    /// Longest single sleep: wall-clock deadlines and clock jumps are checked at least this
    /// often. Default 30 s.
    pub check_interval: Duration,
    /// Wall vs monotonic divergence that counts as a clock jump or a suspend. Default 5 s.
    pub clock_jump_threshold: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            renew_fraction: 0.5,
            renew_jitter: 0.1,
            backoff_initial: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(180),
            backoff_jitter: 0.2,
            check_interval: Duration::from_secs(30),
            clock_jump_threshold: Duration::from_secs(5),
        }
    }
}

impl RenewalPolicy {
    /// Checks that the numbers make sense together.
    pub fn validate(&self) -> Result<(), String> {
        let f = self.renew_fraction;
        let j = self.renew_jitter;
        if !(f > 0.0 && f < 1.0) {
            return Err(format!("renew fraction {f} must be between 0 and 1"));
        }
        if !(0.0..1.0).contains(&j) || f - j <= 0.0 || f + j >= 1.0 {
            return Err(format!(
                "renew jitter {j} must keep renewal inside the lifetime (fraction {f})"
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(
                "backoff must start above zero and its maximum be at least its start".into(),
            );
        }
        if !(self.backoff_multiplier >= 1.0 && self.backoff_multiplier.is_finite()) {
            return Err("backoff multiplier must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.backoff_jitter) {
            return Err("backoff jitter must be between 0 and 1".into());
        }
        if self.check_interval.is_zero() || self.clock_jump_threshold.is_zero() {
            return Err("check interval and clock jump threshold must be positive".into());
        }
        Ok(())
    }
}

fn std_duration(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Clamps a jitter sample into [-1, 1] (NaN counts as 0).
fn sample(jitter: f64) -> f64 {
    if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(-1.0, 1.0)
    }
}

/// How long after `received` to renew a certificate valid from `not_before` to `not_after`.
/// `jitter` is a uniform sample from [-1, 1]. Zero when the certificate is already spent.
pub fn renewal_delay(
    policy: &RenewalPolicy,
    received: OffsetDateTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> Duration {
    let start = received.max(not_before);
    if not_after <= start {
        return Duration::ZERO;
    }
    let life = std_duration(not_after - start).as_secs_f64();
    let share = (policy.renew_fraction + policy.renew_jitter * sample(jitter)).clamp(0.0, 1.0);
    Duration::try_from_secs_f64(life * share).unwrap_or(Duration::ZERO)
}

/// How long to wait before the next try after `consecutive_failures` (at least 1) failed
/// tries in a row. `until_expiry` is the time left on the certificate still held, if any:
/// the retry is never scheduled after it. `jitter` is a uniform sample from [-1, 1].
pub fn retry_delay(
    policy: &RenewalPolicy,
    consecutive_failures: u32,
    until_expiry: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(64) as i32;
    let max = policy.backoff_max.as_secs_f64();
    let base =
        (policy.backoff_initial.as_secs_f64() * policy.backoff_multiplier.powi(exponent)).min(max);
    let jittered = (base * (1.0 + policy.backoff_jitter * sample(jitter))).min(max);
    let mut delay = Duration::try_from_secs_f64(jittered).unwrap_or(policy.backoff_max);
    if let Some(left) = until_expiry {
        if !left.is_zero() {
            delay = delay.min(left);
        }
    }
    delay.max(MIN_RETRY)
}

/// A paired reading of the wall clock and the monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct ClockReading {
    /// Wall clock (UTC).
    pub wall: OffsetDateTime,
    /// Monotonic clock (does not advance during suspend on Linux).
    pub mono: Instant,
}

impl ClockReading {
    /// Reads both clocks now.
    pub fn now() -> Self {
        Self {
            wall: OffsetDateTime::now_utc(),
            mono: Instant::now(),
        }
    }
}

/// If the wall clock moved more (or less) than the monotonic clock between two readings by
/// more than `threshold`, returns the signed difference (wall minus monotonic): positive
/// after a suspend or a forward step, negative after a backward step.
pub fn clock_jump(
    before: ClockReading,
    after: ClockReading,
    threshold: Duration,
) -> Option<time::Duration> {
    let wall = after.wall - before.wall;
    let mono = time::Duration::try_from(after.mono.saturating_duration_since(before.mono))
        .unwrap_or(time::Duration::MAX);
    let diff = wall - mono;
    let threshold = time::Duration::try_from(threshold).unwrap_or(time::Duration::MAX);
    (diff.abs() > threshold).then_some(diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn renews_at_half_life_plus_minus_ten_percent() {
        let p = RenewalPolicy::default();
        let nb = t0();
        let na = nb + time::Duration::hours(24);
        assert_eq!(
            renewal_delay(&p, nb, nb, na, 0.0),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(
            renewal_delay(&p, nb, nb, na, 1.0),
            Duration::from_secs(14 * 3600 + 1440)
        );
        assert_eq!(
            renewal_delay(&p, nb, nb, na, -1.0),
            Duration::from_secs(9 * 3600 + 36 * 60)
        );
        // Out-of-range and NaN samples are clamped, never pushing past the window.
        assert_eq!(
            renewal_delay(&p, nb, nb, na, 7.0),
            renewal_delay(&p, nb, nb, na, 1.0)
        );
        assert_eq!(
            renewal_delay(&p, nb, nb, na, f64::NAN),
            renewal_delay(&p, nb, nb, na, 0.0)
        );
    }

    #[test]
    fn backdated_not_before_does_not_shift_renewal_to_the_end() {
        // Sentry backdates NotBefore by 15 minutes; a 4 s certificate would otherwise be
        // "past half life" on arrival and renewed in a tight loop.
        let p = RenewalPolicy::default();
        let received = t0();
        let nb = received - time::Duration::minutes(15);
        let na = received + time::Duration::seconds(4);
        assert_eq!(
            renewal_delay(&p, received, nb, na, 0.0),
            Duration::from_secs(2)
        );
        // Received late, or already expired: renew at once.
        assert_eq!(
            renewal_delay(&p, na + time::Duration::seconds(1), nb, na, 0.0),
            Duration::ZERO
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let p = RenewalPolicy::default();
        let d: Vec<_> = (1..=10).map(|n| retry_delay(&p, n, None, 0.0)).collect();
        assert_eq!(d[0], Duration::from_secs(1));
        assert_eq!(d[1], Duration::from_secs(2));
        assert_eq!(d[2], Duration::from_secs(4));
        assert_eq!(d[7], Duration::from_secs(128));
        assert_eq!(d[8], Duration::from_secs(180));
        assert_eq!(d[9], Duration::from_secs(180));
        assert_eq!(retry_delay(&p, 3, None, 1.0), Duration::from_secs_f64(4.8));
        assert_eq!(retry_delay(&p, 3, None, -1.0), Duration::from_secs_f64(3.2));
        // The cap holds after jitter too.
        assert_eq!(retry_delay(&p, 20, None, 1.0), Duration::from_secs(180));
        // Enormous failure counts do not overflow.
        assert_eq!(
            retry_delay(&p, u32::MAX, None, 0.0),
            Duration::from_secs(180)
        );
        // Zero failures behaves like the first.
        assert_eq!(retry_delay(&p, 0, None, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn retries_are_never_scheduled_past_expiry() {
        let p = RenewalPolicy::default();
        assert_eq!(
            retry_delay(&p, 9, Some(Duration::from_secs(30)), 0.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_delay(&p, 1, Some(Duration::from_secs(30)), 0.0),
            Duration::from_secs(1)
        );
        // Right at expiry: a short floor, not a busy loop.
        assert_eq!(
            retry_delay(&p, 9, Some(Duration::from_millis(1)), 0.0),
            MIN_RETRY
        );
        // Expired (nothing left): plain backoff.
        assert_eq!(
            retry_delay(&p, 3, Some(Duration::ZERO), 0.0),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn clock_jumps_and_suspends_are_detected() {
        let mono = Instant::now();
        let a = ClockReading { wall: t0(), mono };
        let steady = ClockReading {
            wall: t0() + time::Duration::seconds(30),
            mono: mono + Duration::from_secs(30),
        };
        assert_eq!(clock_jump(a, steady, Duration::from_secs(5)), None);
        let suspended = ClockReading {
            wall: t0() + time::Duration::hours(3),
            mono: mono + Duration::from_secs(30),
        };
        assert_eq!(
            clock_jump(a, suspended, Duration::from_secs(5)),
            Some(time::Duration::hours(3) - time::Duration::seconds(30))
        );
        let stepped_back = ClockReading {
            wall: t0() - time::Duration::minutes(10),
            mono: mono + Duration::from_secs(1),
        };
        assert!(
            clock_jump(a, stepped_back, Duration::from_secs(5)).unwrap() < time::Duration::ZERO
        );
    }

    #[test]
    fn policy_validation() {
        assert!(RenewalPolicy::default().validate().is_ok());
        let bad = [
            RenewalPolicy {
                renew_fraction: 1.0,
                ..Default::default()
            },
            RenewalPolicy {
                renew_fraction: 0.95,
                ..Default::default()
            },
            RenewalPolicy {
                backoff_initial: Duration::ZERO,
                ..Default::default()
            },
            RenewalPolicy {
                backoff_multiplier: 0.5,
                ..Default::default()
            },
            RenewalPolicy {
                check_interval: Duration::ZERO,
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?} accepted");
        }
    }
}
