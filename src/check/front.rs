//! A worker's front cache before a shared zone: today's per-worker [`Cache`], whose entries
//! remember the zone's generation when they were read. A hit whose generation is the zone's
//! costs one atomic load more than a per-worker hit: no lock, no system call, no allocation.
//! When the zone has revoked anything since, the entry is checked against the zone's ring of
//! revocations under the zone's lock, and dropped if it was revoked (or the ring no longer
//! reaches back that far and the zone does not hold it any more). A front miss asks the zone.
//! Plain Rust: the nginx glue supplies the zone and its lock through [`ZoneAccess`].

use super::cache::{Cache, Lookup};
use super::key::{CacheKey, KeyHasher};
use super::zone::{Found, Heap, Ids, Kind, Revoked, Zone};

/// A shared zone and the way to hold its lock.
pub trait ZoneAccess {
    type Heap: Heap;
    /// The zone's revocations so far: one atomic load.
    fn generation(&self) -> u64;
    /// Runs `f` with the zone's lock held. `f` must not wait for anything.
    fn with_locked<T>(&self, f: impl FnOnce(&mut Zone, &Self::Heap) -> T) -> T;
}

/// A front cache entry: the answer and what revocations are compared with.
#[derive(Clone)]
pub struct Fronted<V> {
    pub value: V,
    /// The zone's generation when the entry was read or last checked.
    pub generation: u64,
    /// The zone's hashes of the answer's session and identity ids.
    pub session: u64,
    pub identity: u64,
}

/// One worker's front cache of one zone, for one kind of check.
pub struct Front<V: Clone> {
    pub cache: Cache<Fronted<V>>,
    /// Keys under the zone's secret, so that every worker computes the same ones.
    pub hasher: KeyHasher,
    pub kind: Kind,
}

/// Where a lookup was answered, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    Front,
    Zone,
}

impl<V: Clone> Front<V> {
    pub fn new(capacity: usize, hasher: KeyHasher, kind: Kind) -> Self {
        Front {
            cache: Cache::new(capacity),
            hasher,
            kind,
        }
    }

    /// Finds `key` in the front cache, then in the zone. `decode` reads a zone entry's value
    /// (`None` for bytes it cannot read: the entry is dropped).
    #[inline]
    pub fn lookup<Z: ZoneAccess>(
        &mut self,
        zone: &Z,
        key: CacheKey,
        now_ms: u64,
        ttl_ms: u64,
        negative_ttl_ms: u64,
        decode: impl FnOnce(&[u8]) -> Option<V>,
    ) -> (Lookup<V>, From) {
        let generation = zone.generation();
        match self.cache.lookup(key, now_ms, ttl_ms, negative_ttl_ms) {
            Lookup::Hit(f) if f.generation == generation => (Lookup::Hit(f.value), From::Front),
            Lookup::Hit(f) => zone.with_locked(|z, heap| {
                let now_generation = z.generation();
                if z.revoked_since(f.generation, key, f.session, f.identity) == Revoked::No {
                    if let Some(e) = self.cache.value_mut(key) {
                        e.generation = now_generation;
                    }
                    return (Lookup::Hit(f.value), From::Front);
                }
                // Revoked, or too long ago to tell: whatever the zone holds now is the truth
                // (a revocation removes the zone's entries; only an answer that came after
                // it can have been stored since).
                self.cache.remove(key);
                let found = self.ask_zone(z, heap, key, now_ms, ttl_ms, negative_ttl_ms, decode);
                (found, From::Zone)
            }),
            Lookup::NegativeHit => (Lookup::NegativeHit, From::Front),
            front @ (Lookup::Expired | Lookup::Miss) => zone.with_locked(|z, heap| {
                let found = self.ask_zone(z, heap, key, now_ms, ttl_ms, negative_ttl_ms, decode);
                match (found, front) {
                    (Lookup::Miss, Lookup::Expired) => (Lookup::Expired, From::Zone),
                    (found, _) => (found, From::Zone),
                }
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ask_zone<H: Heap>(
        &mut self,
        z: &mut Zone,
        heap: &H,
        key: CacheKey,
        now_ms: u64,
        ttl_ms: u64,
        negative_ttl_ms: u64,
        decode: impl FnOnce(&[u8]) -> Option<V>,
    ) -> Lookup<V> {
        let generation = z.generation();
        let (stored_at, deadline, value) =
            match z.lookup(heap, key, now_ms, ttl_ms, negative_ttl_ms) {
                Found::Hit {
                    stored_at_ms,
                    deadline_ms,
                    value,
                } => (stored_at_ms, deadline_ms, decode(value)),
                Found::NegativeHit => {
                    self.cache.insert_negative(key, now_ms);
                    return Lookup::NegativeHit;
                }
                Found::Expired => return Lookup::Expired,
                Found::Miss => return Lookup::Miss,
            };
        let Some(value) = value else {
            z.remove_key(heap, key);
            return Lookup::Miss;
        };
        let (session, identity) = z.ids_of(key).unwrap_or((0, 0));
        let fronted = Fronted {
            value: value.clone(),
            generation,
            session,
            identity,
        };
        // The entry keeps the age it has in the zone: reading it does not stretch its TTL.
        self.cache.insert(key, fronted, stored_at, deadline);
        Lookup::Hit(value)
    }

    /// Stores the answer of a call that started at zone generation `since`, in the zone and
    /// in front. Returns false, storing nothing, when a revocation since then matches it:
    /// the answer may predate a logout.
    #[allow(clippy::too_many_arguments)]
    pub fn store<Z: ZoneAccess>(
        &mut self,
        zone: &Z,
        key: CacheKey,
        since: u64,
        value: V,
        bytes: &[u8],
        ids: Ids<'_>,
        now_ms: u64,
        until_ms: u64,
    ) -> bool {
        let kind = self.kind;
        zone.with_locked(|z, heap| {
            let generation = z.generation();
            let hash = |id: &[u8]| if id.is_empty() { 0 } else { z.id_hash(id) };
            let (session, identity) = (hash(ids.session), hash(ids.identity));
            if generation != since && z.revoked_since(since, key, session, identity) != Revoked::No
            {
                z.remove_key(heap, key);
                self.cache.remove(key);
                return false;
            }
            // A zone that cannot make room leaves the answer to the front cache alone.
            z.insert(heap, key, kind, ids, bytes, now_ms, until_ms);
            let fronted = Fronted {
                value,
                generation,
                session,
                identity,
            };
            self.cache.insert(key, fronted, now_ms, until_ms);
            true
        })
    }

    /// Remembers a refusal in the zone and in front.
    pub fn store_negative<Z: ZoneAccess>(&mut self, zone: &Z, key: CacheKey, now_ms: u64) {
        let kind = self.kind;
        zone.with_locked(|z, heap| z.insert_negative(heap, key, kind, now_ms));
        self.cache.insert_negative(key, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::key::SECRET_LEN;
    use crate::check::zone::tests::{zone, Budget};
    use std::cell::{Cell, RefCell};

    /// One zone for several fronts (workers), counting how often its lock is taken.
    struct Shared {
        zone: RefCell<&'static mut Zone>,
        heap: Budget,
        locks: Cell<u32>,
    }

    impl ZoneAccess for Shared {
        type Heap = Budget;
        fn generation(&self) -> u64 {
            self.zone.borrow().generation()
        }
        fn with_locked<T>(&self, f: impl FnOnce(&mut Zone, &Budget) -> T) -> T {
            self.locks.set(self.locks.get() + 1);
            f(&mut self.zone.borrow_mut(), &self.heap)
        }
    }

    fn shared() -> Shared {
        let heap = Budget::new(1 << 20);
        let z = zone(&heap);
        Shared {
            zone: RefCell::new(z),
            heap,
            locks: Cell::new(0),
        }
    }

    fn front(z: &Shared) -> Front<String> {
        let secret: [u8; SECRET_LEN] = *z.zone.borrow().secret();
        Front::new(100, KeyHasher::with_secret(secret), Kind::Session)
    }

    const TTL: u64 = 10_000;
    const NEG: u64 = 2_000;

    fn decode(b: &[u8]) -> Option<String> {
        String::from_utf8(b.to_vec()).ok()
    }

    fn ids<'a>(s: &'a str, i: &'a str) -> Ids<'a> {
        Ids {
            session: s.as_bytes(),
            identity: i.as_bytes(),
        }
    }

    fn get(f: &mut Front<String>, z: &Shared, key: CacheKey, now: u64) -> (Lookup<String>, From) {
        f.lookup(z, key, now, TTL, NEG, decode)
    }

    #[test]
    fn an_answer_stored_by_one_worker_hits_in_another() {
        let z = shared();
        let (mut a, mut b) = (front(&z), front(&z));
        assert_eq!(
            a.hasher
                .key(Default::default(), crate::check::key::Tag(1), b"", b"t"),
            b.hasher
                .key(Default::default(), crate::check::key::Tag(1), b"", b"t"),
            "the zone's secret gives every worker the same keys"
        );
        assert_eq!(get(&mut b, &z, 1, 0), (Lookup::Miss, From::Zone));
        assert!(a.store(&z, 1, 0, "jane".into(), b"jane", ids("s", "i"), 0, u64::MAX));
        assert_eq!(
            get(&mut b, &z, 1, 1),
            (Lookup::Hit("jane".into()), From::Zone)
        );
        let locks = z.locks.get();
        for now in 2..100 {
            assert_eq!(
                get(&mut b, &z, 1, now),
                (Lookup::Hit("jane".into()), From::Front)
            );
            assert_eq!(
                get(&mut a, &z, 1, now),
                (Lookup::Hit("jane".into()), From::Front)
            );
        }
        assert_eq!(z.locks.get(), locks, "front hits take no lock");
    }

    #[test]
    fn a_front_entry_keeps_its_age_in_the_zone() {
        let z = shared();
        let (mut a, mut b) = (front(&z), front(&z));
        a.store(
            &z,
            1,
            0,
            "jane".into(),
            b"jane",
            ids("s", "i"),
            1_000,
            u64::MAX,
        );
        assert_eq!(get(&mut b, &z, 1, 5_000).0, Lookup::Hit("jane".into()));
        assert_eq!(get(&mut b, &z, 1, 1_000 + TTL).0, Lookup::Expired);
    }

    #[test]
    fn a_revocation_reaches_every_front() {
        let z = shared();
        let (mut a, mut b) = (front(&z), front(&z));
        a.store(
            &z,
            1,
            0,
            "jane".into(),
            b"jane",
            ids("s1", "i1"),
            0,
            u64::MAX,
        );
        a.store(
            &z,
            2,
            0,
            "john".into(),
            b"john",
            ids("s2", "i2"),
            0,
            u64::MAX,
        );
        for f in [&mut a, &mut b] {
            assert!(matches!(get(f, &z, 1, 1).0, Lookup::Hit(_)));
            assert!(matches!(get(f, &z, 2, 1).0, Lookup::Hit(_)));
        }
        let removed = z.with_locked(|zone, heap| zone.revoke_key(heap, 1));
        assert_eq!(removed, 1);
        for f in [&mut a, &mut b] {
            assert_eq!(get(f, &z, 1, 2), (Lookup::Miss, From::Zone), "revoked");
            // The other entry is checked once against the ring, then hits without a lock.
            assert_eq!(get(f, &z, 2, 2), (Lookup::Hit("john".into()), From::Front));
            let locks = z.locks.get();
            assert_eq!(get(f, &z, 2, 3), (Lookup::Hit("john".into()), From::Front));
            assert_eq!(z.locks.get(), locks);
        }
        z.with_locked(|zone, heap| zone.revoke_identity(heap, b"i2", None));
        assert_eq!(get(&mut b, &z, 2, 4).0, Lookup::Miss);
    }

    #[test]
    fn a_front_entry_the_ring_forgot_is_checked_against_the_zone() {
        let z = shared();
        let (mut a, mut b) = (front(&z), front(&z));
        a.store(
            &z,
            1,
            0,
            "jane".into(),
            b"jane",
            ids("s1", "i1"),
            0,
            u64::MAX,
        );
        assert!(matches!(get(&mut b, &z, 1, 1).0, Lookup::Hit(_)));
        z.with_locked(|zone, heap| {
            for k in 0..crate::check::zone::RING as u128 + 5 {
                zone.revoke_key(heap, 1_000 + k);
            }
        });
        // Still in the zone: a hit, served from the zone's copy.
        assert_eq!(
            get(&mut b, &z, 1, 2),
            (Lookup::Hit("jane".into()), From::Zone)
        );
        assert_eq!(
            get(&mut b, &z, 1, 3),
            (Lookup::Hit("jane".into()), From::Front)
        );
    }

    #[test]
    fn an_answer_overtaken_by_a_revocation_is_not_stored() {
        let z = shared();
        let mut a = front(&z);
        let since = z.generation();
        z.with_locked(|zone, heap| zone.revoke_session(heap, b"s1"));
        assert!(!a.store(
            &z,
            1,
            since,
            "jane".into(),
            b"jane",
            ids("s1", "i1"),
            0,
            u64::MAX
        ));
        assert_eq!(get(&mut a, &z, 1, 1).0, Lookup::Miss);
        // Another session's answer is stored all the same.
        assert!(a.store(
            &z,
            2,
            since,
            "john".into(),
            b"john",
            ids("s2", "i2"),
            0,
            u64::MAX
        ));
        assert!(matches!(get(&mut a, &z, 2, 1).0, Lookup::Hit(_)));
    }

    #[test]
    fn refusals_are_shared_too() {
        let z = shared();
        let (mut a, mut b) = (front(&z), front(&z));
        a.store_negative(&z, 5, 0);
        assert_eq!(get(&mut b, &z, 5, 1), (Lookup::NegativeHit, From::Zone));
        assert_eq!(get(&mut b, &z, 5, 2), (Lookup::NegativeHit, From::Front));
    }

    #[test]
    fn a_front_of_size_zero_asks_the_zone_every_time() {
        let z = shared();
        let mut a = front(&z);
        let secret: [u8; SECRET_LEN] = *z.zone.borrow().secret();
        let mut b = Front::new(0, KeyHasher::with_secret(secret), Kind::Session);
        a.store(&z, 1, 0, "jane".into(), b"jane", ids("s", "i"), 0, u64::MAX);
        for now in 1..5 {
            assert_eq!(
                get(&mut b, &z, 1, now),
                (Lookup::Hit("jane".into()), From::Zone)
            );
        }
    }

    #[test]
    fn unreadable_zone_bytes_are_a_miss() {
        let z = shared();
        let mut a = front(&z);
        a.store(
            &z,
            1,
            0,
            "x".into(),
            &[0xff, 0xfe],
            ids("s", "i"),
            0,
            u64::MAX,
        );
        let mut b = front(&z);
        assert_eq!(get(&mut b, &z, 1, 1).0, Lookup::Miss);
        assert_eq!(z.zone.borrow().stats().entries, 0);
    }
}
