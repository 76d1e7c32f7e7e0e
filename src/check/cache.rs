//! The per-worker answer cache, the same for every kind of check: entries are found by a
//! [`CacheKey`], positive entries hold what the answer left for the request, negative ones
//! remember a refusal. It lives on the nginx thread only, so it needs no locks; each worker
//! warms its own copy.

use lru::LruCache;

use super::key::CacheKey;

/// How the cache took part in a check, for the `$ory_*_cache_status` variables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheStatus {
    /// Nothing to look up (no credential).
    #[default]
    None,
    Hit,
    Miss,
    Expired,
    /// Caching is off for this request (a cache size or a TTL of 0).
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::None => "",
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<V> {
    Hit(V),
    /// The service recently refused this credential.
    NegativeHit,
    /// There was an entry, but it is no longer valid; it has been removed.
    Expired,
    Miss,
}

struct Positive<V> {
    value: V,
    stored_at_ms: u64,
    /// The answer's own end (a session's `expires_at`, a token's `exp`, what the service said
    /// it may be cached for): no configured TTL may stretch an entry past it.
    hard_deadline_ms: u64,
}

/// Positive entries map a key to what the answer left; negative entries remember a recent
/// refusal. The two have separate LRU bounds so that a flood of random credentials, which can
/// only ever create negative entries, never evicts a real user's entry.
pub struct Cache<V: Clone> {
    /// Bound of each map; 0 disables the cache. Enforced here rather than by `LruCache::new`,
    /// which would allocate both maps at full size in every worker up front.
    capacity: usize,
    positive: LruCache<CacheKey, Positive<V>>,
    negative: LruCache<CacheKey, u64>,
    evictions: u64,
}

impl<V: Clone> Cache<V> {
    /// `capacity` bounds positive and negative entries separately; 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        Cache {
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

    /// Stores an answer until `until_ms`, its own end, further limited by the TTL given to
    /// `lookup`. An answer already past its end is not stored, and any older entry for `key`
    /// is dropped either way.
    pub fn insert(&mut self, key: CacheKey, value: V, now_ms: u64, until_ms: u64) {
        if self.capacity == 0 {
            return;
        }
        self.negative.pop(&key);
        if until_ms <= now_ms {
            self.positive.pop(&key);
            return;
        }
        let entry = Positive {
            value,
            stored_at_ms: now_ms,
            hard_deadline_ms: until_ms,
        };
        self.positive.push(key, entry);
        while self.positive.len() > self.capacity {
            self.positive.pop_lru();
            self.evictions += 1;
        }
    }

    /// Remembers that the service refused the credential behind `key`, replacing any answer
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

    /// The answer held for `key`, to change in place: neither its age nor its place in the
    /// LRU order changes.
    pub fn value_mut(&mut self, key: CacheKey) -> Option<&mut V> {
        self.positive.peek_mut(&key).map(|e| &mut e.value)
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
    /// Negative evictions are not counted, since a flood of bad credentials would drown it.
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

    fn cache(capacity: usize) -> Cache<&'static str> {
        Cache::new(capacity)
    }

    #[test]
    fn hit_and_miss() {
        let mut c = cache(4);
        assert_eq!(c.lookup(1, 0, TTL, NEG_TTL), Lookup::Miss);
        c.insert(1, "a", 0, FAR);
        assert_eq!(c.lookup(1, 5, TTL, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(2, 5, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!(c.len(), 1);
        assert!(!c.is_empty());
        assert_eq!(c.capacity(), 4);
    }

    #[test]
    fn lru_order() {
        let mut c = cache(3);
        c.insert(1, "a", 0, FAR);
        c.insert(2, "b", 0, FAR);
        c.insert(3, "c", 0, FAR);
        // Touch 1 so that 2 becomes the oldest.
        assert_eq!(c.lookup(1, 1, TTL, NEG_TTL), Lookup::Hit("a"));
        c.insert(4, "d", 1, FAR);
        assert_eq!(c.evictions(), 1);
        assert_eq!(c.lookup(2, 2, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!(c.lookup(1, 2, TTL, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(3, 2, TTL, NEG_TTL), Lookup::Hit("c"));
        assert_eq!(c.lookup(4, 2, TTL, NEG_TTL), Lookup::Hit("d"));
        // Now 1 is the oldest.
        c.insert(5, "e", 3, FAR);
        assert_eq!(c.lookup(1, 4, TTL, NEG_TTL), Lookup::Miss);
        assert_eq!(c.len(), 3);
        assert_eq!(c.evictions(), 2);
    }

    #[test]
    fn replacing_an_entry_is_not_an_eviction() {
        let mut c = cache(2);
        c.insert(1, "a", 0, FAR);
        c.insert(1, "b", 1, FAR);
        assert_eq!(c.evictions(), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(1, 2, TTL, NEG_TTL), Lookup::Hit("b"));
    }

    #[test]
    fn ttl() {
        let mut c = cache(4);
        c.insert(1, "a", 1_000, FAR);
        assert_eq!(c.lookup(1, 1_000 + TTL - 1, TTL, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(1, 1_000 + TTL, TTL, NEG_TTL), Lookup::Expired);
        assert_eq!(c.len(), 0, "expired entries are removed");
        assert_eq!(c.lookup(1, 1_000 + TTL, TTL, NEG_TTL), Lookup::Miss);
    }

    #[test]
    fn ttl_applies_at_lookup_time() {
        let mut c = cache(4);
        c.insert(1, "a", 0, FAR);
        assert_eq!(c.lookup(1, 500, 1_000, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(1, 500, 400, NEG_TTL), Lookup::Expired);
    }

    #[test]
    fn ttl_zero_never_hits() {
        let mut c = cache(4);
        c.insert(1, "a", 0, FAR);
        assert_eq!(c.lookup(1, 0, 0, NEG_TTL), Lookup::Expired);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_answers_own_end_beats_a_long_ttl() {
        let mut c = cache(4);
        c.insert(1, "a", 0, 3_000);
        assert_eq!(c.lookup(1, 2_999, 3_600_000, NEG_TTL), Lookup::Hit("a"));
        assert_eq!(c.lookup(1, 3_000, 3_600_000, NEG_TTL), Lookup::Expired);
    }

    #[test]
    fn a_later_end_does_not_stretch_the_ttl() {
        let mut c = cache(4);
        c.insert(3, "c", 0, FAR);
        assert_eq!(c.lookup(3, TTL - 1, TTL, NEG_TTL), Lookup::Hit("c"));
        assert_eq!(c.lookup(3, TTL, TTL, NEG_TTL), Lookup::Expired);
    }

    #[test]
    fn nothing_to_cache() {
        let mut c = cache(4);
        c.insert(1, "old", 0, FAR);
        c.insert(1, "a", 1_000, 1_000);
        assert_eq!(
            c.len(),
            0,
            "an answer that ends now stores nothing and drops the old entry"
        );
        c.insert(3, "c", 1_000, 10);
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
        c.insert(7, "a", 1, FAR);
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
            c.insert(k, "session", 0, FAR);
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
        c.insert(1, "a", 0, FAR);
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
        c.insert(1, "a", 0, FAR);
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
        let mut c: Cache<std::sync::Arc<String>> = Cache::new(2);
        let v = std::sync::Arc::new("session".to_string());
        c.insert(1, v.clone(), 0, FAR);
        let Lookup::Hit(got) = c.lookup(1, 1, TTL, NEG_TTL) else {
            panic!("miss");
        };
        assert!(std::sync::Arc::ptr_eq(&got, &v));
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
                // SAFETY: the caller upholds alloc's contract, which System.alloc shares.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                let _ = NET.try_with(|n| n.set(n.get() - layout.size() as isize));
                // SAFETY: ptr came from System.alloc with this layout (see alloc above).
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
        use crate::session::model::{decode_response, tests::FULL_BODY, Answer};
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
        let mut cache = Cache::new(n);
        for i in 0..n {
            cache.insert(i as u128, Rc::new(session.clone()), now, u64::MAX);
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
