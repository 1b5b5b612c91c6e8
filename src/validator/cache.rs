//! A bounded cache of successful validations, so a sidecar that renews often (or many
//! replicas sharing one token) does not cost a TokenReview and a pod GET every time.
//!
//! Keys are SHA-256 digests over the token and the identity the request asked for; the
//! token itself is never stored. An entry lives until the earlier of the token's own expiry
//! and a configured TTL, so a revoked pod is believed for at most that TTL. Only successes
//! are stored: a refusal is always re-checked. The TTL is also kept on the monotonic clock:
//! a wall clock stepped back (NTP, a VM resumed) never makes an entry live longer.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::Identity;

/// Longest time an entry is kept, whatever the configuration says.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The digest an entry is stored under.
pub type CacheKey = [u8; 32];

/// SHA-256 over the token, the requested app id and namespace, length-prefixed so no two
/// different triples share an encoding.
pub fn cache_key(token: &str, id: &str, namespace: &str) -> CacheKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [token, id, namespace] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

struct Entry {
    identity: Identity,
    expires: OffsetDateTime,
    // The TTL on the monotonic clock.
    deadline: Instant,
    seq: u64,
}

struct Inner {
    entries: HashMap<CacheKey, Entry>,
    // Insertion order for eviction; a key whose `seq` no longer matches its entry is stale.
    order: VecDeque<(CacheKey, u64)>,
    next_seq: u64,
}

/// Successful validations, bounded in size and in age.
pub struct ValidationCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ValidationCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidationCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl ValidationCache {
    /// A cache keeping at most `capacity` entries for at most `ttl` each. A zero TTL or a
    /// zero capacity disables it.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                next_seq: 0,
            }),
        }
    }

    /// Whether the cache stores anything at all.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    /// Number of entries held (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity stored under `key`, if it is still valid at `now`.
    pub fn get(&self, key: &CacheKey, now: OffsetDateTime) -> Option<Identity> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some(e) if now < e.expires && Instant::now() < e.deadline => Some(e.identity.clone()),
            Some(_) => {
                inner.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores a success. `token_expiry` is the token's `exp`, when it has one; the entry
    /// never outlives it.
    pub fn insert(
        &self,
        key: CacheKey,
        identity: Identity,
        now: OffsetDateTime,
        token_expiry: Option<OffsetDateTime>,
    ) {
        if !self.enabled() {
            return;
        }
        // A day is far beyond any sensible TTL and keeps the arithmetic in range.
        let ttl = time::Duration::try_from(self.ttl.min(MAX_TTL)).unwrap_or(time::Duration::DAY);
        let Some(deadline) = Instant::now().checked_add(self.ttl.min(MAX_TTL)) else {
            return;
        };
        let mut expires = now.saturating_add(ttl);
        if let Some(exp) = token_expiry {
            expires = expires.min(exp);
        }
        if expires <= now {
            return;
        }
        let mut inner = self.lock();
        if !inner.entries.contains_key(&key) {
            while inner.entries.len() >= self.capacity {
                Self::evict_one(&mut inner, now);
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.insert(
            key,
            Entry {
                identity,
                expires,
                deadline,
                seq,
            },
        );
        inner.order.push_back((key, seq));
        // Re-inserted keys leave stale markers behind; keep the queue proportional.
        if inner.order.len() > self.capacity.saturating_mul(2).max(16) {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// Removes expired entries first; otherwise the oldest insertion.
    fn evict_one(inner: &mut Inner, now: OffsetDateTime) {
        let before = inner.entries.len();
        let mono = Instant::now();
        inner
            .entries
            .retain(|_, e| now < e.expires && mono < e.deadline);
        if inner.entries.len() < before {
            return;
        }
        while let Some((key, seq)) = inner.order.pop_front() {
            if inner.entries.get(&key).is_some_and(|e| e.seq == seq) {
                inner.entries.remove(&key);
                return;
            }
        }
        // The queue always covers every live entry; this only guards against a bug there.
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(app: &str) -> Identity {
        Identity {
            trust_domain: "public".parse().unwrap(),
            namespace: "default".parse().unwrap(),
            app_id: app.parse().unwrap(),
            authenticated_as: "system:serviceaccount:default:x".into(),
            container_images_json: None,
            control_plane: false,
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn key_depends_on_every_part_and_hides_the_token() {
        let k = cache_key("tok", "app", "ns");
        assert_ne!(k, cache_key("tok", "app", "ns2"));
        assert_ne!(k, cache_key("tok", "app2", "ns"));
        assert_ne!(k, cache_key("tok2", "app", "ns"));
        // Length prefixes: moving a character between fields changes the key.
        assert_ne!(cache_key("ab", "c", "ns"), cache_key("a", "bc", "ns"));
        assert!(!k.windows(3).any(|w| w == b"tok"));
    }

    #[test]
    fn entries_expire_at_ttl_or_token_expiry_whichever_first() {
        let c = ValidationCache::new(Duration::from_secs(60), 10);
        let k1 = cache_key("a", "x", "ns");
        c.insert(k1, ident("x"), t0(), None);
        assert_eq!(
            c.get(&k1, t0() + time::Duration::seconds(59)),
            Some(ident("x"))
        );
        assert_eq!(c.get(&k1, t0() + time::Duration::seconds(60)), None);

        let k2 = cache_key("b", "x", "ns");
        c.insert(
            k2,
            ident("x"),
            t0(),
            Some(t0() + time::Duration::seconds(10)),
        );
        assert!(c.get(&k2, t0() + time::Duration::seconds(9)).is_some());
        assert!(c.get(&k2, t0() + time::Duration::seconds(10)).is_none());

        // An already expired token is never stored.
        let k3 = cache_key("c", "x", "ns");
        c.insert(
            k3,
            ident("x"),
            t0(),
            Some(t0() - time::Duration::seconds(1)),
        );
        assert!(c.get(&k3, t0()).is_none());
    }

    #[test]
    fn capacity_is_bounded_and_oldest_goes_first() {
        let c = ValidationCache::new(Duration::from_secs(60), 3);
        let keys: Vec<_> = (0..5)
            .map(|i| cache_key(&i.to_string(), "x", "ns"))
            .collect();
        for k in &keys {
            c.insert(*k, ident("x"), t0(), None);
            assert!(c.len() <= 3);
        }
        assert!(c.get(&keys[0], t0()).is_none());
        assert!(c.get(&keys[1], t0()).is_none());
        assert!(c.get(&keys[4], t0()).is_some());
        // Re-inserting one key many times keeps the bookkeeping bounded.
        for _ in 0..1000 {
            c.insert(keys[4], ident("x"), t0(), None);
        }
        assert_eq!(c.len(), 3);
        assert!(c.lock().order.len() <= 16);
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let c = ValidationCache::new(Duration::from_secs(60), 2);
        let old = cache_key("old", "x", "ns");
        let live = cache_key("live", "x", "ns");
        c.insert(live, ident("x"), t0(), None);
        c.insert(
            old,
            ident("x"),
            t0(),
            Some(t0() + time::Duration::seconds(1)),
        );
        let later = t0() + time::Duration::seconds(5);
        c.insert(cache_key("new", "x", "ns"), ident("x"), later, None);
        assert!(
            c.get(&live, later).is_some(),
            "a live entry was evicted first"
        );
    }

    #[test]
    fn a_wall_clock_stepped_back_does_not_extend_an_entry() {
        let c = ValidationCache::new(Duration::from_millis(30), 8);
        let k = cache_key("t", "orders", "default");
        c.insert(k, ident("orders"), t0(), None);
        assert!(c.get(&k, t0()).is_some());
        std::thread::sleep(Duration::from_millis(60));
        // By the wall clock (stepped back an hour) the entry would still be young.
        let stepped_back = t0() - time::Duration::hours(1);
        assert!(c.get(&k, stepped_back).is_none());
    }

    #[test]
    fn zero_ttl_disables() {
        let c = ValidationCache::new(Duration::ZERO, 10);
        let k = cache_key("a", "x", "ns");
        c.insert(k, ident("x"), t0(), None);
        assert!(c.get(&k, t0()).is_none());
        assert!(c.is_empty());
    }
}
