//! The per-worker session cache. It lives on the nginx thread only, so it needs no locks;
//! each worker warms its own copy.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use lru::LruCache;
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_secret, Xxh3};

use crate::credential::CredentialKind;

/// A keyed hash of the credential and everything that changes Kratos' answer. The cache
/// holds these instead of credentials, so a memory dump of a worker reveals no cookie.
pub type CacheKey = u128;

/// XXH3's secret size: the whole key of the hash.
const SECRET_LEN: usize = 192;

/// Inputs up to this size are hashed in one call from a stack buffer; longer ones (a
/// credential near the 4096-byte limit) through XXH3's streaming state, which gives the same
/// hash.
const INLINE_LEN: usize = 512;

/// Computes cache keys: XXH3-128 under a secret drawn at random for each worker.
///
/// Why not a cryptographic MAC: the hash runs on every request, over a value of a few hundred
/// bytes (SipHash-1-3 took 1,000 instructions for a 256-byte session cookie, half of what a
/// cache hit cost), and what the keys need is met without one. A client cannot compute keys
/// (the secret never leaves the worker), so it cannot aim a credential of its own at an entry;
/// and hitting someone else's entry would take a value whose 128-bit hash equals that of a
/// credential it has never seen. Two credentials of its own that collide would only share its
/// own session.
pub struct KeyHasher {
    secret: [u8; SECRET_LEN],
}

impl KeyHasher {
    pub fn new_random() -> Self {
        // RandomState is seeded from the OS once per thread and then varied per instance,
        // which is what std relies on against HashDoS; no extra dependency needed.
        let state = RandomState::new();
        Self::with_words(|i| state.hash_one(i))
    }

    /// A fixed secret derived from two words, for tests.
    pub fn new_with_keys(k0: u64, k1: u64) -> Self {
        // splitmix64: distinct, well-mixed words from any seed.
        Self::with_words(|i| {
            let mut z =
                k0 ^ k1.rotate_left(32) ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    fn with_words(word: impl Fn(usize) -> u64) -> Self {
        let mut secret = [0u8; SECRET_LEN];
        for (i, chunk) in secret.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&word(i).to_le_bytes());
        }
        KeyHasher { secret }
    }

    /// `scope` is [`scope_of`] the whoami URL. The fields are laid out so that no two
    /// inputs give the same bytes: a word holding the kind and the cookie name's length, the
    /// scope, the name, then the value up to the end (XXH3 covers the length too).
    pub fn key(
        &self,
        kind: CredentialKind,
        cookie_name: &[u8],
        value: &[u8],
        scope: Scope,
    ) -> CacheKey {
        let kind: u64 = match kind {
            CredentialKind::SessionToken => 1,
            CredentialKind::Cookie => 2,
            CredentialKind::Bearer => 3,
        };
        let fixed = [
            kind | (cookie_name.len() as u64) << 8,
            scope.0[0],
            scope.0[1],
        ];
        let len = 24 + cookie_name.len() + value.len();
        if len <= INLINE_LEN {
            let mut buf = [0u8; INLINE_LEN];
            for (chunk, word) in buf.chunks_exact_mut(8).zip(fixed) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            buf[24..24 + cookie_name.len()].copy_from_slice(cookie_name);
            buf[24 + cookie_name.len()..len].copy_from_slice(value);
            xxh3_128_with_secret(&buf[..len], &self.secret)
        } else {
            let mut h = Xxh3::with_secret(self.secret);
            for word in fixed {
                h.update(&word.to_le_bytes());
            }
            h.update(cookie_name);
            h.update(value);
            h.digest128()
        }
    }
}

/// Stands for a whoami URL (with its query, e.g. `tokenize_as`) in cache keys, so that
/// locations asking different Kratos instances, or asking for a JWT and not, never share an
/// entry. Computed once per location when the configuration is read, so that a request does
/// not hash the URL again; the URL is no secret, so no key is needed.
///
/// Two words rather than a `u128`: it is kept in location configurations, which nginx
/// allocates with 8-byte alignment, less than the 16 bytes a `u128` needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope([u64; 2]);

pub fn scope_of(whoami_url: &str) -> Scope {
    let hash = xxh3_128(whoami_url.as_bytes());
    Scope([hash as u64, (hash >> 64) as u64])
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher { .. }")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<V> {
    Hit(V),
    /// Kratos recently rejected this credential.
    NegativeHit,
    /// There was an entry, but it is no longer valid; it has been removed.
    Expired,
    Miss,
}

struct Positive<V> {
    value: V,
    stored_at_ms: u64,
    /// The session's `expires_at`, or Kratos' `Ory-Session-Cache-For`, whichever is sooner:
    /// no configured TTL may stretch an entry past either.
    hard_deadline_ms: u64,
}

/// Positive entries map a credential to its session; negative entries remember a recent
/// rejection. The two have separate LRU bounds so that a flood of random cookies, which can
/// only ever create negative entries, never evicts a real user's session.
pub struct SessionCache<V: Clone> {
    /// Bound of each map; 0 disables the cache. Enforced here rather than by `LruCache::new`,
    /// which would allocate both maps at full size in every worker up front.
    capacity: usize,
    positive: LruCache<CacheKey, Positive<V>>,
    negative: LruCache<CacheKey, u64>,
    evictions: u64,
}

impl<V: Clone> SessionCache<V> {
    /// `capacity` bounds positive and negative entries separately; 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        SessionCache {
            capacity,
            positive: LruCache::unbounded(),
            negative: LruCache::unbounded(),
            evictions: 0,
        }
    }

    /// A positive entry is valid while `now < min(stored + ttl, hard deadline)`, and never
    /// when `ttl_ms` is 0; an invalid one is removed and reported `Expired`. A negative entry
    /// is valid while `now < stored + negative_ttl`; `negative_ttl_ms` 0 ignores them.
    pub fn lookup(
        &mut self,
        key: CacheKey,
        now_ms: u64,
        ttl_ms: u64,
        negative_ttl_ms: u64,
    ) -> Lookup<V> {
        if self.capacity == 0 {
            return Lookup::Miss;
        }
        if let Some(entry) = self.positive.get(&key) {
            let deadline = entry
                .stored_at_ms
                .saturating_add(ttl_ms)
                .min(entry.hard_deadline_ms);
            if ttl_ms > 0 && now_ms < deadline {
                return Lookup::Hit(entry.value.clone());
            }
            self.positive.pop(&key);
            return Lookup::Expired;
        }
        if negative_ttl_ms == 0 {
            return Lookup::Miss;
        }
        if let Some(&stored_at_ms) = self.negative.get(&key) {
            if now_ms < stored_at_ms.saturating_add(negative_ttl_ms) {
                return Lookup::NegativeHit;
            }
            self.negative.pop(&key);
            return Lookup::Expired;
        }
        Lookup::Miss
    }

    /// Stores a session until `min(session_expires_ms, now + cache_for)`, further limited by
    /// the TTL given to `lookup`. A session already past that deadline is not stored, and any
    /// older entry for `key` is dropped either way.
    pub fn insert(
        &mut self,
        key: CacheKey,
        value: V,
        now_ms: u64,
        session_expires_ms: u64,
        cache_for_ms: Option<u64>,
    ) {
        if self.capacity == 0 {
            return;
        }
        self.negative.pop(&key);
        let hard_deadline_ms = match cache_for_ms {
            Some(cache_for) => session_expires_ms.min(now_ms.saturating_add(cache_for)),
            None => session_expires_ms,
        };
        if hard_deadline_ms <= now_ms {
            self.positive.pop(&key);
            return;
        }
        let entry = Positive {
            value,
            stored_at_ms: now_ms,
            hard_deadline_ms,
        };
        self.positive.push(key, entry);
        while self.positive.len() > self.capacity {
            self.positive.pop_lru();
            self.evictions += 1;
        }
    }

    /// Remembers that Kratos rejected the credential behind `key`, replacing any session
    /// cached for it.
    pub fn insert_negative(&mut self, key: CacheKey, now_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        self.positive.pop(&key);
        self.negative.push(key, now_ms);
        while self.negative.len() > self.capacity {
            self.negative.pop_lru();
        }
    }

    pub fn remove(&mut self, key: CacheKey) {
        self.positive.pop(&key);
        self.negative.pop(&key);
    }

    /// Positive entries.
    pub fn len(&self) -> usize {
        self.positive.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn negative_len(&self) -> usize {
        self.negative.len()
    }

    /// Positive entries pushed out by newer ones: the sign that the cache is too small.
    /// Negative evictions are not counted, since a flood of bad cookies would drown it.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 10_000;
    const NEG_TTL: u64 = 2_000;
    const FAR: u64 = u64::MAX;

    fn cache(capacity: usize) -> SessionCache<&'static str> {
        SessionCache::new(capacity)
    }

    #[test]
    fn hit_and_miss() {
        let mut c = cache(4);
        assert_eq!(c.lookup(1, 0, TTL, NEG_TTL), Lookup::Miss);
        c.insert(1, "a", 0, FAR, None);
        assert_eq!(c.lookup(1, 5, TTL, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(2, 5, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!(c.len(), 1);
        assert!(!c.is_empty());
        assert_eq!(c.capacity(), 4);
    }

    #[test]
    fn lru_order() {
        let mut c = cache(3);
        c.insert(1, "a", 0, FAR, None);
        c.insert(2, "b", 0, FAR, None);
        c.insert(3, "c", 0, FAR, None);
        // Touch 1 so that 2 becomes the oldest.
        assert_eq!(c.lookup(1, 1, TTL, NEG_TTL), Lookup::Hit("a"));
        c.insert(4, "d", 1, FAR, None);
        assert_eq!(c.evictions(), 1);
        assert_eq!(c.lookup(2, 2, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!(c.lookup(1, 2, TTL, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(3, 2, TTL, NEG_TTL), Lookup::Hit("c"));
        assert_eq!(c.lookup(4, 2, TTL, NEG_TTL), Lookup::Hit("d"));
        // Now 1 is the oldest.
        c.insert(5, "e", 3, FAR, None);
        assert_eq!(c.lookup(1, 4, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!(c.len(), 3);
        assert_eq!(c.evictions(), 2);
    }

    #[test]
    fn replacing_an_entry_is_not_an_eviction() {
        let mut c = cache(2);
        c.insert(1, "a", 0, FAR, None);
        c.insert(1, "b", 1, FAR, None);
        assert_eq!(c.evictions(), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(1, 2, TTL, NEG_TTL), Lookup::Hit("b"));
    }

    #[test]
    fn ttl() {
        let mut c = cache(4);
        c.insert(1, "a", 1_000, FAR, None);
        assert_eq!(c.lookup(1, 1_000 + TTL - 1, TTL, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(1, 1_000 + TTL, TTL, NEG_TTL), Lookup::Expired);
        assert_eq!(c.len(), 0, "expired entries are removed");
        assert_eq!(c.lookup(1, 1_000 + TTL, TTL, NEG_TTL), Lookup::Miss);
    }

    #[test]
    fn ttl_applies_at_lookup_time() {
        let mut c = cache(4);
        c.insert(1, "a", 0, FAR, None);
        assert_eq!(c.lookup(1, 500, 1_000, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(1, 500, 400, NEG_TTL), Lookup::Expired);
    }

    #[test]
    fn ttl_zero_never_hits() {
        let mut c = cache(4);
        c.insert(1, "a", 0, FAR, None);
        assert_eq!(c.lookup(1, 0, 0, NEG_TTL), Lookup::Expired);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn session_expiry_beats_long_ttl() {
        let mut c = cache(4);
        c.insert(1, "a", 0, 3_000, None);
        assert_eq!(c.lookup(1, 2_999, 3_600_000, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(1, 3_000, 3_600_000, NEG_TTL), Lookup::Expired);
    }

    #[test]
    fn cache_for_limits_the_entry() {
        let mut c = cache(4);
        c.insert(1, "a", 1_000, FAR, Some(2_000));
        assert_eq!(c.lookup(1, 2_999, TTL, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(1, 3_000, TTL, NEG_TTL), Lookup::Expired);

        // The session's own expiry still wins over a longer cache_for.
        c.insert(2, "b", 1_000, 1_500, Some(60_000));
        assert_eq!(c.lookup(2, 1_500, TTL, NEG_TTL), Lookup::Expired);

        // A longer cache_for does not stretch the configured TTL.
        c.insert(3, "c", 0, FAR, Some(u64::MAX));
        assert_eq!(c.lookup(3, TTL, TTL, NEG_TTL), Lookup::Expired);
    }

    #[test]
    fn nothing_to_cache() {
        let mut c = cache(4);
        c.insert(1, "old", 0, FAR, None);
        c.insert(1, "a", 1_000, FAR, Some(0));
        assert_eq!(
            c.len(),
            0,
            "cache_for 0 stores nothing and drops the old entry"
        );
        c.insert(2, "b", 1_000, 1_000, None);
        c.insert(3, "c", 1_000, 10, None);
        assert_eq!(c.len(), 0);
        assert_eq!(c.lookup(2, 1_000, TTL, NEG_TTL), Lookup::Miss);
    }

    #[test]
    fn negative_entries() {
        let mut c = cache(4);
        c.insert_negative(7, 1_000);
        assert_eq!(c.negative_len(), 1);
        assert_eq!(c.lookup(7, 1_000, TTL, NEG_TTL), Lookup::NegativeHit);
        assert_eq!(
            c.lookup(7, 1_000 + NEG_TTL - 1, TTL, NEG_TTL),
            Lookup::NegativeHit
        );
        assert_eq!(c.lookup(7, 1_000 + NEG_TTL, TTL, NEG_TTL), Lookup::Expired);
        assert_eq!(c.negative_len(), 0, "stale negative entries are removed");
        assert_eq!(c.lookup(7, 1_000 + NEG_TTL, TTL, NEG_TTL), Lookup::Miss);
    }

    #[test]
    fn negative_ttl_zero_is_off() {
        let mut c = cache(4);
        c.insert_negative(7, 1_000);
        assert_eq!(c.lookup(7, 1_000, TTL, 0), Lookup::Miss);
    }

    #[test]
    fn positive_and_negative_replace_each_other() {
        let mut c = cache(4);
        c.insert_negative(7, 0);
        c.insert(7, "a", 1, FAR, None);
        assert_eq!(c.negative_len(), 0);
        assert_eq!(c.lookup(7, 2, TTL, NEG_TTL), Lookup::Hit("a"));
        c.insert_negative(7, 3);
        assert_eq!(c.len(), 0);
        assert_eq!(c.lookup(7, 4, TTL, NEG_TTL), Lookup::NegativeHit);
    }

    #[test]
    fn negative_flood_does_not_evict_sessions() {
        let mut c = cache(8);
        for k in 0..8 {
            c.insert(k, "session", 0, FAR, None);
        }
        for k in 1_000..101_000 {
            c.insert_negative(k, 1);
        }
        assert_eq!(c.negative_len(), 8);
        assert_eq!(c.len(), 8);
        assert_eq!(c.evictions(), 0);
        for k in 0..8 {
            assert_eq!(c.lookup(k, 2, TTL, NEG_TTL), Lookup::Hit("session"));
        }
        assert_eq!(c.lookup(100_999, 2, TTL, NEG_TTL), Lookup::NegativeHit);
        assert_eq!(c.lookup(1_000, 2, TTL, NEG_TTL), Lookup::Miss);
    }

    #[test]
    fn remove() {
        let mut c = cache(4);
        c.insert(1, "a", 0, FAR, None);
        c.insert_negative(2, 0);
        c.remove(1);
        c.remove(2);
        c.remove(3);
        assert_eq!(c.len(), 0);
        assert_eq!(c.negative_len(), 0);
        assert_eq!(c.lookup(1, 1, TTL, NEG_TTL), Lookup::Miss);
    }

    #[test]
    fn capacity_zero_disables() {
        let mut c = cache(0);
        c.insert(1, "a", 0, FAR, None);
        c.insert_negative(2, 0);
        c.remove(1);
        assert_eq!(c.lookup(1, 1, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!(c.lookup(2, 1, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!((c.len(), c.negative_len(), c.evictions()), (0, 0, 0));
        assert!(c.is_empty());
        assert_eq!(c.capacity(), 0);
    }

    #[test]
    fn values_are_cloned_out() {
        let mut c: SessionCache<std::sync::Arc<String>> = SessionCache::new(2);
        let v = std::sync::Arc::new("session".to_string());
        c.insert(1, v.clone(), 0, FAR, None);
        let Lookup::Hit(got) = c.lookup(1, 1, TTL, NEG_TTL) else {
            panic!("miss");
        };
        assert!(std::sync::Arc::ptr_eq(&got, &v));
    }

    #[test]
    fn key_is_deterministic_per_hasher() {
        let h = KeyHasher::new_with_keys(1, 2);
        let url = scope_of("http://kratos/sessions/whoami");
        let k = h.key(CredentialKind::Cookie, b"c", b"v", url);
        assert_eq!(k, h.key(CredentialKind::Cookie, b"c", b"v", url));
        assert_eq!(
            k,
            KeyHasher::new_with_keys(1, 2).key(CredentialKind::Cookie, b"c", b"v", url)
        );
        assert_ne!(
            k,
            KeyHasher::new_with_keys(1, 3).key(CredentialKind::Cookie, b"c", b"v", url)
        );
    }

    #[test]
    fn key_distinguishes_every_field() {
        let h = KeyHasher::new_with_keys(0x0123_4567, 0x89ab_cdef);
        let url = scope_of("http://kratos/sessions/whoami");
        let keys = [
            h.key(CredentialKind::Cookie, b"s", b"v", url),
            h.key(CredentialKind::SessionToken, b"s", b"v", url),
            h.key(CredentialKind::Bearer, b"s", b"v", url),
            h.key(CredentialKind::Cookie, b"t", b"v", url),
            h.key(CredentialKind::Cookie, b"s", b"w", url),
            h.key(
                CredentialKind::Cookie,
                b"s",
                b"v",
                scope_of("http://other/sessions/whoami"),
            ),
            h.key(
                CredentialKind::Cookie,
                b"s",
                b"v",
                scope_of("http://kratos/sessions/whoami?tokenize_as=t"),
            ),
            h.key(CredentialKind::SessionToken, b"", b"v", url),
            h.key(CredentialKind::Bearer, b"", b"v", url),
            // Field boundaries: moving bytes between name and value changes the key.
            h.key(CredentialKind::Cookie, b"sv", b"", url),
            h.key(CredentialKind::Cookie, b"", b"sv", url),
            // Values that differ only in trailing zero bytes or by whole padding blocks.
            h.key(CredentialKind::Cookie, b"s", b"v\0", url),
            h.key(CredentialKind::Cookie, b"s", b"v\0\0\0\0\0\0\0\0", url),
            h.key(CredentialKind::Cookie, b"s", &[b'v'; 257], url),
        ];
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                if i != j {
                    assert_ne!(a, b, "keys {i} and {j} collide");
                }
            }
        }
    }

    #[test]
    fn long_inputs_hash_like_short_ones() {
        // The streaming path must give what one call over the whole input gives, so a key does
        // not depend on which path computed it.
        let h = KeyHasher::new_with_keys(7, 9);
        let scope = scope_of("http://kratos/sessions/whoami");
        for len in [
            0,
            1,
            200,
            INLINE_LEN - 24 - 4,
            INLINE_LEN - 24 - 3,
            INLINE_LEN,
            4096,
        ] {
            let value = vec![b'v'; len];
            let mut whole = Vec::new();
            whole.extend_from_slice(&(2u64 | 4 << 8).to_le_bytes());
            whole.extend_from_slice(&scope.0[0].to_le_bytes());
            whole.extend_from_slice(&scope.0[1].to_le_bytes());
            whole.extend_from_slice(b"name");
            whole.extend_from_slice(&value);
            assert_eq!(
                h.key(CredentialKind::Cookie, b"name", &value, scope),
                xxh3_128_with_secret(&whole, &h.secret),
                "value of {len} bytes"
            );
        }
    }

    #[test]
    fn scope_depends_on_the_whole_url() {
        assert_eq!(
            scope_of("http://kratos/sessions/whoami"),
            scope_of("http://kratos/sessions/whoami")
        );
        assert_ne!(
            scope_of("http://kratos/sessions/whoami"),
            scope_of("http://kratos/sessions/whoami?tokenize_as=t")
        );
    }

    #[test]
    fn random_hashers_differ() {
        let url = scope_of("http://kratos/sessions/whoami");
        let a = KeyHasher::new_random().key(CredentialKind::Cookie, b"c", b"v", url);
        let b = KeyHasher::new_random().key(CredentialKind::Cookie, b"c", b"v", url);
        assert_ne!(a, b);
    }

    #[test]
    fn hasher_debug_hides_keys() {
        let text = format!("{:?}", KeyHasher::new_with_keys(123_456_789, 987_654_321));
        assert!(
            !text.contains("123456789") && !text.contains("987654321"),
            "{text}"
        );
    }

    /// Counts the bytes this thread allocates, so that one test can measure what a cache
    /// entry costs without seeing other tests' allocations.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! { static NET: Cell<isize> = const { Cell::new(0) }; }

        pub struct Counting;

        // SAFETY: forwards to the system allocator; only adds bookkeeping.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = NET.try_with(|n| n.set(n.get() + layout.size() as isize));
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                let _ = NET.try_with(|n| n.set(n.get() - layout.size() as isize));
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn net() -> isize {
            NET.with(|n| n.get())
        }
    }

    /// What one cached session costs (allocator overhead not included), reported by
    /// `cargo test -- --nocapture bytes_per_entry`.
    #[test]
    fn bytes_per_entry() {
        use crate::kratos::{decode_response, tests::FULL_BODY, Answer};
        use std::rc::Rc;

        let now = 1_785_000_000_000;
        let Ok(Answer::Active { session, .. }) = decode_response(
            200,
            Some("application/json"),
            None,
            vec![],
            FULL_BODY.as_bytes(),
            now,
        ) else {
            panic!("the contract body decodes");
        };
        let (_, json_bytes) = session.heap_bytes();
        let n = 2_000;
        let before = counting::net();
        let mut cache = SessionCache::new(n);
        for i in 0..n {
            cache.insert(i as u128, Rc::new(session.clone()), now, u64::MAX, None);
        }
        let per_entry = (counting::net() - before) as usize / n;
        let without_json = per_entry - json_bytes;
        println!(
            "bytes per cached session: {per_entry} ({without_json} without the {json_bytes} bytes \
             of trait and metadata JSON kept for variables)"
        );
        assert_eq!(cache.len(), n);
        assert!(
            without_json <= 512,
            "{without_json} bytes per entry without JSON"
        );
    }
}
