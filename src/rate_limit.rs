//! Per-caller rate limits: token buckets keyed by the caller's address and, once proven, by
//! its identity, so that one workload (or one compromised credential) cannot crowd out the
//! renewals of everyone else.
//!
//! A bucket holds up to `burst` requests and refills at `per_second`. Memory is bounded: at
//! most `max_keys` buckets are kept; when the table is full, buckets that have refilled
//! completely (callers that went quiet) are dropped first, and if that frees nothing the
//! table starts over, which briefly forgets limits rather than growing or refusing callers
//! never seen. Time is passed in (a monotonic `Instant`), so tests need no sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One limit: sustained rate and burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, refilled continuously.
    pub per_second: f64,
    /// Most requests at once.
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for one kind of key.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Option<Rate>,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// A limiter; `None` (or a zero rate or burst) lets everything through.
    pub fn new(rate: Option<Rate>, max_keys: usize) -> Self {
        let rate = rate.filter(|r| r.per_second > 0.0 && r.burst > 0);
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let burst = f64::from(rate.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            buckets.retain(|_, b| refilled(b, rate, now) < burst);
            if buckets.len() >= self.max_keys {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = refilled(bucket, rate, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - bucket.tokens) / rate.per_second).min(3600.0),
            ))
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refilled(b: &Bucket, rate: Rate, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * rate.per_second).min(f64::from(rate.burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Option<Rate> {
        Some(Rate { per_second, burst })
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = Limiter::new(rate(2.0, 3), 16);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(&"a", t0).is_ok());
        }
        let wait = l.check(&"a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another caller is not affected.
        assert!(l.check(&"b", t0).is_ok());
        // Half a second later one more request is allowed, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check(&"a", t1).is_ok());
        assert!(l.check(&"a", t1).is_err());
        // Idle callers refill only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.check(&"a", t2).is_ok());
        }
        assert!(l.check(&"a", t2).is_err());
    }

    #[test]
    fn off_lets_everything_through() {
        let t0 = Instant::now();
        for r in [None, rate(0.0, 5), rate(5.0, 0)] {
            let l = Limiter::new(r, 4);
            for _ in 0..1000 {
                assert!(l.check(&1u32, t0).is_ok());
            }
            assert!(l.is_empty());
        }
    }

    #[test]
    fn memory_stays_bounded_and_quiet_callers_go_first() {
        let l = Limiter::new(rate(1.0, 2), 8);
        let t0 = Instant::now();
        // Caller 0 spends its whole burst; callers 1..8 one request each.
        assert!(l.check(&0u32, t0).is_ok());
        assert!(l.check(&0u32, t0).is_ok());
        for k in 1..8u32 {
            assert!(l.check(&k, t0).is_ok());
        }
        assert_eq!(l.len(), 8);
        // A second later callers 1..8 are full again (quiet) and make room; caller 0 is not,
        // and keeps its bucket: one request left, not a fresh burst of two.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.check(&100u32, t1).is_ok());
        assert_eq!(l.len(), 2);
        assert!(l.check(&0u32, t1).is_ok());
        assert!(l.check(&0u32, t1).is_err());
        // A flood of new keys never grows the table past its bound.
        for k in 1000..20_000u32 {
            let _ = l.check(&k, t1);
            assert!(l.len() <= 8);
        }
    }
}
