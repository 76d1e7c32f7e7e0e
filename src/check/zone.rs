//! The answer cache that all workers share (`ory_cache_zone`), as plain Rust over memory it is
//! handed: nginx's slab pool in a shared-memory zone, or in unit tests the system allocator.
//!
//! Entries are found by key through a table of buckets, and kept in two LRU lists, one for
//! answers and one for refusals; a full zone evicts the oldest refusals first, then the oldest
//! answers. Every answer also hangs in a chain by its session id and one by its identity id
//! (64-bit hashes under the zone's secret; the ids themselves are in the session the entry
//! holds), so that a purge or a logout finds every entry of a session or an identity without
//! a scan. Two ids with the same keyed hash would only evict each other's entries.
//!
//! Workers keep a front cache of their own in front of the zone (`crate::check::cache`),
//! entries tagged with the zone's *generation* when they were read. Every revocation (a logout
//! through nginx, a purge) removes the zone's entries, writes a record to a ring and then
//! bumps the generation: a front hit costs one atomic load to learn that nothing was revoked
//! since, and otherwise looks up the ring ([`Zone::revoked_since`]) or the zone.
//!
//! Every pointer in here points into memory the zone's heap gave out. nginx maps a zone at the
//! same address in every process of a cycle, and keeps it there across a reload when the zone
//! keeps its name and size, so pointers stored in the zone stay valid for as long as the zone
//! does. Everything but the generation is read and written with the zone's lock held (the
//! caller's `&mut Zone`).

use core::mem::{align_of, size_of};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::xxh3_64_with_secret;

use super::key::{CacheKey, SECRET_LEN};

/// Where the zone's memory comes from.
///
/// # Safety
/// `alloc` returns null or memory of at least `size` bytes, aligned to 8, that stays valid
/// (and mapped at the same address in every process using the zone) until it is given to
/// `free`.
pub unsafe trait Heap {
    fn alloc(&self, size: usize) -> *mut u8;
    /// # Safety
    /// `p` came from `alloc` with this `size` and is not used afterwards.
    unsafe fn free(&self, p: *mut u8, size: usize);
}

/// Revocations remembered for front caches that are behind: a front entry read more than this
/// many revocations ago is checked against the zone itself.
pub const RING: usize = 1024;

/// Evictions tried before an answer is left uncached: a slab pool frees whole pages only, so
/// more than one may be needed, but never an unbounded number while the lock is held.
const MAX_EVICTIONS: usize = 64;

/// Changes whenever the layout below does: a zone kept across a reload by a module of
/// another layout is refused, not misread.
const MAGIC: u64 = u64::from_le_bytes(*b"oryzone1");

/// The longest session or identity id kept: Kratos' are UUIDs (36 bytes).
pub const MAX_ID_LEN: usize = 255;

/// What kind of check an entry answers; keys already keep them apart, this only counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Session = 1,
    Permission = 2,
    OAuth2 = 3,
}

const POSITIVE: usize = 0;
const NEGATIVE: usize = 1;

#[repr(C)]
struct List {
    head: *mut Entry,
    tail: *mut Entry,
}

#[repr(C)]
struct Entry {
    lru_prev: *mut Entry,
    lru_next: *mut Entry,
    key_next: *mut Entry,
    session_next: *mut Entry,
    identity_next: *mut Entry,
    key: [u64; 2],
    /// `Zone::id_hash` of the ids, 0 for none.
    session_hash: u64,
    identity_hash: u64,
    stored_at_ms: u64,
    /// The answer's own end; the location's TTL limits it further at lookup.
    deadline_ms: u64,
    /// The whole allocation, this header included.
    size: u32,
    value_len: u32,
    kind: u8,
    list: u8,
    // Followed by the value.
}

const ENTRY: usize = size_of::<Entry>();
const _: () = assert!(align_of::<Entry>() == 8 && ENTRY.is_multiple_of(8));

/// One revocation, for front caches to compare their entries with.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Revocation {
    generation: u64,
    what: u64,
    /// A key, or a session / identity hash in the first word.
    a: [u64; 2],
    /// For an identity: the session hash that was spared, or 0.
    except: u64,
}

const REVOKED_KEY: u64 = 1;
const REVOKED_SESSION: u64 = 2;
const REVOKED_IDENTITY: u64 = 3;

/// The zone's figures, for the status page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneStats {
    /// Answers and refusals held.
    pub entries: u64,
    pub negative_entries: u64,
    /// Bytes of the entries held (what they asked the heap for).
    pub bytes: u64,
    /// Entries pushed out of a full zone.
    pub evictions: u64,
    /// Entries removed by logouts and purges.
    pub revoked: u64,
    /// Logouts and purges.
    pub revocations: u64,
    /// Answers left uncached because no room could be made.
    pub not_stored: u64,
}

#[repr(C)]
pub struct Zone {
    magic: u64,
    /// Revocations so far; the only field read without the lock.
    generation: AtomicU64,
    secret: [u8; SECRET_LEN],
    mask: usize,
    by_key: *mut *mut Entry,
    by_session: *mut *mut Entry,
    by_identity: *mut *mut Entry,
    lru: [List; 2],
    stats: ZoneStats,
    ring: [Revocation; RING],
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    Hit {
        stored_at_ms: u64,
        deadline_ms: u64,
        value: &'a [u8],
    },
    NegativeHit,
    /// There was an entry, past its end; it has been removed.
    Expired,
    Miss,
}

/// Whether something a front cache holds was revoked since it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    No,
    Yes,
    /// Too many revocations ago for the ring to tell.
    Unknown,
}

/// The ids an answer is filed under, for purges.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ids<'a> {
    pub session: &'a [u8],
    pub identity: &'a [u8],
}

impl Zone {
    /// The buckets of each table for a zone of `size` bytes: one per KiB, a power of two, so
    /// about one entry per bucket when the zone is full of 512-byte slots, and the three
    /// tables take 2-5% of the zone.
    fn buckets_for(size: usize) -> usize {
        (size / 1024).next_power_of_two().max(64)
    }

    /// Places a new, empty zone in `heap`, sized for a zone of `size` bytes, with a secret of
    /// its own. Null when the heap cannot hold it.
    ///
    /// # Safety
    /// `heap` is the heap every later call is given.
    pub unsafe fn create(heap: &impl Heap, size: usize, secret: [u8; SECRET_LEN]) -> *mut Zone {
        let n = Self::buckets_for(size);
        let zone = heap.alloc(size_of::<Zone>()).cast::<Zone>();
        let tables = heap
            .alloc(3 * n * size_of::<*mut Entry>())
            .cast::<*mut Entry>();
        if zone.is_null() || tables.is_null() {
            // SAFETY: each pointer came from alloc with this size.
            unsafe {
                if !zone.is_null() {
                    heap.free(zone.cast(), size_of::<Zone>());
                }
                if !tables.is_null() {
                    heap.free(tables.cast(), 3 * n * size_of::<*mut Entry>());
                }
            }
            return ptr::null_mut();
        }
        // SAFETY: both blocks are fresh, large enough and aligned (Heap's contract).
        unsafe {
            ptr::write_bytes(tables, 0, 3 * n);
            ptr::write(
                zone,
                Zone {
                    magic: MAGIC,
                    generation: AtomicU64::new(0),
                    secret,
                    mask: n - 1,
                    by_key: tables,
                    by_session: tables.add(n),
                    by_identity: tables.add(2 * n),
                    lru: [
                        List {
                            head: ptr::null_mut(),
                            tail: ptr::null_mut(),
                        },
                        List {
                            head: ptr::null_mut(),
                            tail: ptr::null_mut(),
                        },
                    ],
                    stats: ZoneStats::default(),
                    ring: [Revocation::default(); RING],
                },
            );
        }
        zone
    }

    /// Whether a zone found in memory (kept across a reload) has this module's layout.
    pub fn is_ours(&self) -> bool {
        self.magic == MAGIC
    }

    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }

    /// Revocations so far: one atomic load, no lock.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> ZoneStats {
        self.stats
    }

    /// The hash an id is filed under; never 0, which stands for "no id".
    pub fn id_hash(&self, id: &[u8]) -> u64 {
        xxh3_64_with_secret(id, &self.secret) | 1
    }

    fn bucket(&self, key: CacheKey) -> usize {
        key as usize & self.mask
    }

    fn find(&self, key: CacheKey) -> *mut Entry {
        let words = split(key);
        // SAFETY: buckets and chains hold live entries only (see `link` and `unlink`).
        unsafe {
            let mut e = *self.by_key.add(self.bucket(key));
            while !e.is_null() && (*e).key != words {
                e = (*e).key_next;
            }
            e
        }
    }

    /// Finds `key`: an answer still within `min(stored + ttl_ms, its end)` is a hit and
    /// becomes the most recently used; a refusal is a hit within `negative_ttl_ms`. An entry
    /// past that is removed. A TTL of 0 never hits.
    pub fn lookup(
        &mut self,
        heap: &impl Heap,
        key: CacheKey,
        now_ms: u64,
        ttl_ms: u64,
        negative_ttl_ms: u64,
    ) -> Found<'_> {
        let e = self.find(key);
        if e.is_null() {
            return Found::Miss;
        }
        // SAFETY: `find` returns a live entry.
        let (list, stored, deadline) =
            unsafe { ((*e).list as usize, (*e).stored_at_ms, (*e).deadline_ms) };
        let valid = if list == POSITIVE {
            ttl_ms > 0 && now_ms < stored.saturating_add(ttl_ms).min(deadline)
        } else {
            negative_ttl_ms > 0 && now_ms < stored.saturating_add(negative_ttl_ms)
        };
        if !valid {
            self.remove(heap, e);
            return Found::Expired;
        }
        self.touch(e);
        if list == NEGATIVE {
            return Found::NegativeHit;
        }
        // SAFETY: a live entry's value follows its ids inside its allocation.
        let value = unsafe { entry_value(e) };
        Found::Hit {
            stored_at_ms: stored,
            deadline_ms: deadline,
            value,
        }
    }

    /// The ids of the answer held for `key`, as the zone's hashes.
    pub fn ids_of(&self, key: CacheKey) -> Option<(u64, u64)> {
        let e = self.find(key);
        // SAFETY: `find` returns null or a live entry.
        unsafe { e.as_ref() }.map(|e| (e.session_hash, e.identity_hash))
    }

    /// Stores an answer until `until_ms` (its own end), replacing any entry of `key`, with the
    /// ids a purge finds it by. Makes room by evicting the least recently used entries
    /// (refusals first); returns false when it still could not, and the answer is not stored.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        heap: &impl Heap,
        key: CacheKey,
        kind: Kind,
        ids: Ids<'_>,
        value: &[u8],
        now_ms: u64,
        until_ms: u64,
    ) -> bool {
        self.store(heap, key, kind, POSITIVE, ids, value, now_ms, until_ms)
    }

    /// Remembers that the service refused the credential behind `key`.
    pub fn insert_negative(
        &mut self,
        heap: &impl Heap,
        key: CacheKey,
        kind: Kind,
        now_ms: u64,
    ) -> bool {
        let none = Ids::default();
        self.store(heap, key, kind, NEGATIVE, none, &[], now_ms, u64::MAX)
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        heap: &impl Heap,
        key: CacheKey,
        kind: Kind,
        list: usize,
        ids: Ids<'_>,
        value: &[u8],
        now_ms: u64,
        until_ms: u64,
    ) -> bool {
        let old = self.find(key);
        if !old.is_null() {
            self.remove(heap, old);
        }
        if until_ms <= now_ms {
            return false;
        }
        let (session, identity) = (ids.session, ids.identity);
        let size = ENTRY + value.len();
        let (Ok(size32), Ok(value_len)) = (u32::try_from(size), u32::try_from(value.len())) else {
            return false;
        };
        self.expire_tail(heap, list, now_ms);
        let e = self.alloc(heap, size).cast::<Entry>();
        if e.is_null() {
            self.stats.not_stored += 1;
            return false;
        }
        let hash = |id: &[u8]| if id.is_empty() { 0 } else { self.id_hash(id) };
        // SAFETY: `e` is a fresh block of `size` bytes, aligned to 8; the value goes right
        // after the header, within it.
        unsafe {
            ptr::write(
                e,
                Entry {
                    lru_prev: ptr::null_mut(),
                    lru_next: ptr::null_mut(),
                    key_next: ptr::null_mut(),
                    session_next: ptr::null_mut(),
                    identity_next: ptr::null_mut(),
                    key: split(key),
                    session_hash: hash(session),
                    identity_hash: hash(identity),
                    stored_at_ms: now_ms,
                    deadline_ms: until_ms,
                    size: size32,
                    value_len,
                    kind: kind as u8,
                    list: list as u8,
                },
            );
            ptr::copy_nonoverlapping(value.as_ptr(), e.cast::<u8>().add(ENTRY), value.len());
        }
        self.link(e);
        true
    }

    /// Drops up to two entries at the old end of `list` whose own end has passed, as nginx's
    /// zones do on every insert, so that dead entries do not wait to be evicted.
    fn expire_tail(&mut self, heap: &impl Heap, list: usize, now_ms: u64) {
        for _ in 0..2 {
            let tail = self.lru[list].tail;
            // SAFETY: list ends are null or live entries.
            if tail.is_null() || unsafe { (*tail).deadline_ms } > now_ms {
                return;
            }
            self.remove(heap, tail);
        }
    }

    fn alloc(&mut self, heap: &impl Heap, size: usize) -> *mut u8 {
        for _ in 0..MAX_EVICTIONS {
            let p = heap.alloc(size);
            if !p.is_null() {
                return p;
            }
            let victim = if self.lru[NEGATIVE].tail.is_null() {
                self.lru[POSITIVE].tail
            } else {
                self.lru[NEGATIVE].tail
            };
            if victim.is_null() {
                return ptr::null_mut();
            }
            self.remove(heap, victim);
            self.stats.evictions += 1;
        }
        ptr::null_mut()
    }

    /// Removes the entry of `key`; returns its session and identity hashes when it was an
    /// answer. Records nothing: see [`Zone::revoke_key`].
    pub fn remove_key(&mut self, heap: &impl Heap, key: CacheKey) -> Option<(u64, u64)> {
        let e = self.find(key);
        if e.is_null() {
            return None;
        }
        // SAFETY: `find` returns a live entry.
        let ids = unsafe { ((*e).session_hash, (*e).identity_hash) };
        self.remove(heap, e);
        Some(ids)
    }

    /// A credential was logged out: its entry goes, and so does every other entry of its
    /// session (the same credential under other settings). Front caches learn of it through
    /// the ring. Returns the entries removed.
    pub fn revoke_key(&mut self, heap: &impl Heap, key: CacheKey) -> usize {
        let mut removed = 0;
        let session = match self.remove_key(heap, key) {
            Some((session, _)) => {
                removed += 1;
                session
            }
            None => 0,
        };
        if session != 0 {
            removed += self.remove_chain(heap, Chain::Session, session, 0);
            self.record(REVOKED_SESSION, [session, 0], 0);
        } else {
            self.record(REVOKED_KEY, split(key), 0);
        }
        self.stats.revoked += removed as u64;
        removed
    }

    /// Every entry of session `id`. Returns the entries removed.
    pub fn revoke_session(&mut self, heap: &impl Heap, id: &[u8]) -> usize {
        let hash = self.id_hash(id);
        let removed = self.remove_chain(heap, Chain::Session, hash, 0);
        self.record(REVOKED_SESSION, [hash, 0], 0);
        self.stats.revoked += removed as u64;
        removed
    }

    /// Every entry of identity `id`, except those of session `except` (`DELETE /sessions`
    /// keeps the caller's own). Returns the entries removed.
    pub fn revoke_identity(&mut self, heap: &impl Heap, id: &[u8], except: Option<&[u8]>) -> usize {
        let hash = self.id_hash(id);
        let except = except.map_or(0, |s| self.id_hash(s));
        let removed = self.remove_chain(heap, Chain::Identity, hash, except);
        self.record(REVOKED_IDENTITY, [hash, 0], except);
        self.stats.revoked += removed as u64;
        removed
    }

    /// Same as [`Zone::revoke_identity`] with the identity and the spared session given as
    /// hashes (from [`Zone::ids_of`]).
    pub fn revoke_identity_hash(&mut self, heap: &impl Heap, hash: u64, except: u64) -> usize {
        let removed = self.remove_chain(heap, Chain::Identity, hash, except);
        self.record(REVOKED_IDENTITY, [hash, 0], except);
        self.stats.revoked += removed as u64;
        removed
    }

    fn remove_chain(&mut self, heap: &impl Heap, chain: Chain, hash: u64, except: u64) -> usize {
        let mut removed = 0;
        // SAFETY: chains hold live entries; the next entry is read before one is removed.
        unsafe {
            let mut e = *chain.table(self).add(hash as usize & self.mask);
            while !e.is_null() {
                let next = chain.next(e);
                let h = match chain {
                    Chain::Session => (*e).session_hash,
                    Chain::Identity => (*e).identity_hash,
                };
                let spared = except != 0 && (*e).session_hash == except;
                if h == hash && !spared {
                    self.remove(heap, e);
                    removed += 1;
                }
                e = next;
            }
        }
        removed
    }

    fn record(&mut self, what: u64, a: [u64; 2], except: u64) {
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        self.ring[generation as usize % RING] = Revocation {
            generation,
            what,
            a,
            except,
        };
        self.stats.revocations += 1;
        // Release: a front cache that sees the new generation and takes the lock sees the
        // record (the lock orders that anyway; this keeps the load alone meaningful too).
        self.generation.store(generation, Ordering::Release);
    }

    /// Whether an entry read at generation `since`, of `key`, session hash `session` and
    /// identity hash `identity` (0 when unknown) was revoked after that.
    pub fn revoked_since(&self, since: u64, key: CacheKey, session: u64, identity: u64) -> Revoked {
        let now = self.generation.load(Ordering::Relaxed);
        if now <= since {
            return Revoked::No;
        }
        if now - since > RING as u64 {
            return Revoked::Unknown;
        }
        let words = split(key);
        for g in since + 1..=now {
            let r = &self.ring[g as usize % RING];
            if r.generation != g {
                return Revoked::Unknown;
            }
            let hit = match r.what {
                REVOKED_KEY => r.a == words,
                REVOKED_SESSION => session != 0 && r.a[0] == session,
                REVOKED_IDENTITY => {
                    identity != 0 && r.a[0] == identity && (r.except == 0 || r.except != session)
                }
                _ => true,
            };
            if hit {
                return Revoked::Yes;
            }
        }
        Revoked::No
    }

    fn link(&mut self, e: *mut Entry) {
        // SAFETY: `e` is a live entry in no list or chain yet; the heads are live or null.
        unsafe {
            let list = &mut self.lru[(*e).list as usize];
            (*e).lru_next = list.head;
            if !list.head.is_null() {
                (*list.head).lru_prev = e;
            }
            list.head = e;
            if list.tail.is_null() {
                list.tail = e;
            }
            let key = ((*e).key[0] as usize) & self.mask;
            (*e).key_next = *self.by_key.add(key);
            *self.by_key.add(key) = e;
            if (*e).session_hash != 0 {
                let b = self.by_session.add((*e).session_hash as usize & self.mask);
                (*e).session_next = *b;
                *b = e;
            }
            if (*e).identity_hash != 0 {
                let b = self
                    .by_identity
                    .add((*e).identity_hash as usize & self.mask);
                (*e).identity_next = *b;
                *b = e;
            }
            let n = &mut self.stats;
            if (*e).list as usize == POSITIVE {
                n.entries += 1;
            } else {
                n.negative_entries += 1;
            }
            n.bytes += u64::from((*e).size);
        }
    }

    /// Makes `e` the most recently used of its list.
    fn touch(&mut self, e: *mut Entry) {
        // SAFETY: `e` is a live entry of its list.
        unsafe {
            let list = &mut self.lru[(*e).list as usize];
            if list.head == e {
                return;
            }
            lru_unlink(list, e);
            (*e).lru_next = list.head;
            (*list.head).lru_prev = e;
            list.head = e;
        }
    }

    fn remove(&mut self, heap: &impl Heap, e: *mut Entry) {
        // SAFETY: `e` is a live entry, linked as `link` left it; after unlinking it from
        // every list and chain nothing points to it, and it goes back to the heap.
        unsafe {
            lru_unlink(&mut self.lru[(*e).list as usize], e);
            unchain(self.by_key.add((*e).key[0] as usize & self.mask), e, |x| {
                &raw mut (*x).key_next
            });
            if (*e).session_hash != 0 {
                let b = self.by_session.add((*e).session_hash as usize & self.mask);
                unchain(b, e, |x| &raw mut (*x).session_next);
            }
            if (*e).identity_hash != 0 {
                let b = self
                    .by_identity
                    .add((*e).identity_hash as usize & self.mask);
                unchain(b, e, |x| &raw mut (*x).identity_next);
            }
            let n = &mut self.stats;
            if (*e).list as usize == POSITIVE {
                n.entries -= 1;
            } else {
                n.negative_entries -= 1;
            }
            n.bytes -= u64::from((*e).size);
            heap.free(e.cast(), (*e).size as usize);
        }
    }

    /// Keys from the most to the least recently used, answers then refusals: for tests.
    #[cfg(test)]
    fn order(&self) -> Vec<CacheKey> {
        let mut keys = Vec::new();
        for list in &self.lru {
            let mut e = list.head;
            while !e.is_null() {
                // SAFETY: lists hold live entries.
                unsafe {
                    keys.push(join((*e).key));
                    e = (*e).lru_next;
                }
            }
        }
        keys
    }
}

#[derive(Clone, Copy)]
enum Chain {
    Session,
    Identity,
}

impl Chain {
    fn table(self, zone: &Zone) -> *mut *mut Entry {
        match self {
            Chain::Session => zone.by_session,
            Chain::Identity => zone.by_identity,
        }
    }

    /// # Safety
    /// `e` is a live entry.
    unsafe fn next(self, e: *mut Entry) -> *mut Entry {
        // SAFETY: the caller's.
        unsafe {
            match self {
                Chain::Session => (*e).session_next,
                Chain::Identity => (*e).identity_next,
            }
        }
    }
}

/// # Safety
/// `e` is a live entry of `list`.
unsafe fn lru_unlink(list: &mut List, e: *mut Entry) {
    // SAFETY: the caller's; neighbours of a live entry are live or null.
    unsafe {
        let (prev, next) = ((*e).lru_prev, (*e).lru_next);
        if prev.is_null() {
            list.head = next;
        } else {
            (*prev).lru_next = next;
        }
        if next.is_null() {
            list.tail = prev;
        } else {
            (*next).lru_prev = prev;
        }
        (*e).lru_prev = ptr::null_mut();
        (*e).lru_next = ptr::null_mut();
    }
}

/// Removes `e` from the singly linked chain starting at `head`, linked through `next`.
///
/// # Safety
/// The chain holds live entries only.
unsafe fn unchain(
    head: *mut *mut Entry,
    e: *mut Entry,
    next: impl Fn(*mut Entry) -> *mut *mut Entry,
) {
    // SAFETY: the caller's.
    unsafe {
        let mut at = head;
        while !(*at).is_null() {
            if *at == e {
                *at = *next(e);
                return;
            }
            at = next(*at);
        }
    }
}

/// # Safety
/// `e` is a live entry.
unsafe fn entry_value<'a>(e: *const Entry) -> &'a [u8] {
    // SAFETY: `store` wrote the value right after the header, with this length.
    unsafe { core::slice::from_raw_parts(e.cast::<u8>().add(ENTRY), (*e).value_len as usize) }
}

fn split(key: CacheKey) -> [u64; 2] {
    [key as u64, (key >> 64) as u64]
}

#[cfg(test)]
fn join(words: [u64; 2]) -> CacheKey {
    words[0] as u128 | (words[1] as u128) << 64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::alloc::{alloc, dealloc, Layout};
    use std::cell::Cell;

    /// The system allocator with a budget of bytes, like a slab pool that fills up.
    pub struct Budget {
        left: Cell<usize>,
        pub blocks: Cell<usize>,
    }

    impl Budget {
        pub fn new(bytes: usize) -> Self {
            Budget {
                left: Cell::new(bytes),
                blocks: Cell::new(0),
            }
        }
    }

    // SAFETY: blocks come from the system allocator, aligned to 8, and are freed with the
    // layout they were made with.
    unsafe impl Heap for Budget {
        fn alloc(&self, size: usize) -> *mut u8 {
            if size > self.left.get() {
                return ptr::null_mut();
            }
            self.left.set(self.left.get() - size);
            self.blocks.set(self.blocks.get() + 1);
            // SAFETY: size > 0 for every caller here.
            unsafe { alloc(Layout::from_size_align(size, 8).unwrap()) }
        }
        unsafe fn free(&self, p: *mut u8, size: usize) {
            self.left.set(self.left.get() + size);
            self.blocks.set(self.blocks.get() - 1);
            // SAFETY: the caller's: p came from alloc with this size.
            unsafe { dealloc(p, Layout::from_size_align(size, 8).unwrap()) }
        }
    }

    pub fn zone(heap: &Budget) -> &'static mut Zone {
        // SAFETY: a fresh zone in a heap that outlives the test.
        unsafe { &mut *Zone::create(heap, 64 * 1024, [7; SECRET_LEN]) }
    }

    const TTL: u64 = 10_000;
    const NEG: u64 = 2_000;
    const FAR: u64 = u64::MAX;

    fn ids<'a>(s: &'a str, i: &'a str) -> Ids<'a> {
        Ids {
            session: s.as_bytes(),
            identity: i.as_bytes(),
        }
    }

    fn hit(z: &mut Zone, h: &Budget, key: CacheKey, now: u64) -> Option<Vec<u8>> {
        match z.lookup(h, key, now, TTL, NEG) {
            Found::Hit { value, .. } => Some(value.to_vec()),
            _ => None,
        }
    }

    #[test]
    fn hit_miss_and_replace() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        assert!(z.is_ours());
        assert_eq!(z.lookup(&h, 1, 0, TTL, NEG), Found::Miss);
        assert!(z.insert(&h, 1, Kind::Session, ids("s1", "i1"), b"one", 0, FAR));
        assert_eq!(hit(z, &h, 1, 5).as_deref(), Some(&b"one"[..]));
        assert!(z.insert(&h, 1, Kind::Session, ids("s1", "i1"), b"uno", 6, FAR));
        assert_eq!(hit(z, &h, 1, 7).as_deref(), Some(&b"uno"[..]));
        assert_eq!(z.stats().entries, 1);
        assert_eq!(z.stats().evictions, 0);
        let before = z.stats().bytes;
        assert_eq!(before as usize, ENTRY + 3);
        assert_eq!(
            z.lookup(&h, 1, 8, TTL, NEG),
            Found::Hit {
                stored_at_ms: 6,
                deadline_ms: FAR,
                value: b"uno"
            }
        );
    }

    #[test]
    fn ttl_and_deadline() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        z.insert(&h, 1, Kind::Session, ids("s", "i"), b"v", 1_000, 5_000);
        assert!(hit(z, &h, 1, 4_999).is_some());
        assert_eq!(z.lookup(&h, 1, 5_000, TTL, NEG), Found::Expired);
        assert_eq!(z.stats().entries, 0);
        z.insert(&h, 2, Kind::Session, ids("s", "i"), b"v", 1_000, FAR);
        assert_eq!(z.lookup(&h, 2, 1_500, 400, NEG), Found::Expired);
        z.insert(&h, 3, Kind::Session, ids("s", "i"), b"v", 1_000, FAR);
        assert_eq!(z.lookup(&h, 3, 1_000, 0, NEG), Found::Expired);
        assert!(!z.insert(&h, 4, Kind::Session, ids("s", "i"), b"v", 1_000, 1_000));
        assert_eq!(z.stats().entries, 0);
        assert_eq!(h.blocks.get(), 2, "only the zone and its tables are left");
    }

    #[test]
    fn negative_entries() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        z.insert_negative(&h, 9, Kind::Session, 100);
        assert_eq!(z.lookup(&h, 9, 100 + NEG - 1, TTL, NEG), Found::NegativeHit);
        assert_eq!(z.lookup(&h, 9, 100, TTL, 0), Found::Expired);
        z.insert_negative(&h, 9, Kind::Session, 100);
        z.insert(&h, 9, Kind::Session, ids("s", "i"), b"v", 200, FAR);
        assert_eq!(z.stats().negative_entries, 0);
        assert!(hit(z, &h, 9, 201).is_some());
    }

    #[test]
    fn a_full_zone_evicts_the_least_recently_used() {
        let per = ENTRY + 100;
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        // Room for exactly three entries.
        h.left.set(3 * per);
        let v = [b'x'; 100];
        for k in 1..=3 {
            assert!(z.insert(&h, k, Kind::Session, ids("ss", "ii"), &v, 0, FAR));
        }
        assert!(hit(z, &h, 1, 1).is_some(), "1 becomes the most recent");
        assert!(z.insert(&h, 4, Kind::Session, ids("ss", "ii"), &v, 2, FAR));
        assert_eq!(z.stats().evictions, 1);
        assert_eq!(
            z.lookup(&h, 2, 3, TTL, NEG),
            Found::Miss,
            "2 was the oldest"
        );
        assert_eq!(z.order(), vec![4, 1, 3]);
        assert!(z.insert(&h, 5, Kind::Session, ids("ss", "ii"), &v, 4, FAR));
        assert_eq!(z.order(), vec![5, 4, 1]);
        assert_eq!(z.stats().evictions, 2);
        assert_eq!(z.stats().entries, 3);
    }

    #[test]
    fn refusals_are_evicted_before_answers() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        let per = ENTRY + 10;
        h.left.set(2 * per + 2 * ENTRY);
        let v = [b'v'; 10];
        z.insert(&h, 1, Kind::Session, ids("s1", "i1"), &v, 0, FAR);
        z.insert(&h, 2, Kind::Session, ids("s2", "i2"), &v, 0, FAR);
        for k in 100..1_000 {
            assert!(z.insert_negative(&h, k, Kind::Session, 1));
        }
        assert_eq!(z.stats().entries, 2, "a flood of refusals evicts no answer");
        assert_eq!(z.stats().negative_entries, 2);
        assert!(z.insert(&h, 3, Kind::Session, ids("s3", "i3"), &v, 2, FAR));
        assert!(hit(z, &h, 1, 3).is_some() && hit(z, &h, 2, 3).is_some());
        assert!(hit(z, &h, 3, 3).is_some());
    }

    #[test]
    fn an_entry_too_large_for_the_zone_is_not_stored() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        h.left.set(1_000);
        z.insert(&h, 1, Kind::Session, ids("s", "i"), b"small", 0, FAR);
        assert!(!z.insert(&h, 2, Kind::Session, ids("s", "i"), &[0; 4_000], 0, FAR));
        assert_eq!(z.stats().not_stored, 1);
        assert_eq!(z.stats().entries, 0, "it evicted what it could first");
    }

    #[test]
    fn revoking_a_key_removes_its_whole_session() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        z.insert(&h, 1, Kind::Session, ids("sa", "ia"), b"a", 0, FAR);
        z.insert(&h, 2, Kind::Session, ids("sa", "ia"), b"a2", 0, FAR);
        z.insert(&h, 3, Kind::Session, ids("sb", "ia"), b"b", 0, FAR);
        let g = z.generation();
        assert_eq!(z.revoke_key(&h, 1), 2);
        assert_eq!(z.generation(), g + 1);
        assert_eq!(z.lookup(&h, 2, 1, TTL, NEG), Found::Miss);
        assert!(hit(z, &h, 3, 1).is_some());
        let (sa, ia) = (z.id_hash(b"sa"), z.id_hash(b"ia"));
        let sb = z.id_hash(b"sb");
        assert_eq!(z.revoked_since(g, 2, sa, ia), Revoked::Yes);
        assert_eq!(z.revoked_since(g, 3, sb, ia), Revoked::No);
        assert_eq!(z.revoked_since(g + 1, 2, sa, ia), Revoked::No);
        // A key that is not in the zone is remembered as a key.
        assert_eq!(z.revoke_key(&h, 77), 0);
        assert_eq!(z.revoked_since(g + 1, 77, 0, 0), Revoked::Yes);
        assert_eq!(z.revoked_since(g + 1, 78, sb, ia), Revoked::No);
        assert_eq!(z.stats().revocations, 2);
        assert_eq!(z.stats().revoked, 2);
    }

    #[test]
    fn purges_by_session_and_identity() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        for k in 0..50u128 {
            let s = format!("s{}", k % 10);
            let i = format!("i{}", k % 5);
            z.insert(&h, k, Kind::Session, ids(&s, &i), b"v", 0, FAR);
        }
        assert_eq!(z.revoke_session(&h, b"s3"), 5);
        assert_eq!(z.revoke_session(&h, b"s3"), 0);
        assert_eq!(z.stats().entries, 45);
        // Identity i1 holds sessions s1 and s6; keep s6.
        let g = z.generation();
        assert_eq!(z.revoke_identity(&h, b"i1", Some(b"s6")), 5);
        assert_eq!(z.stats().entries, 40);
        let (s1, s6, i1) = (z.id_hash(b"s1"), z.id_hash(b"s6"), z.id_hash(b"i1"));
        assert_eq!(z.revoked_since(g, 1, s1, i1), Revoked::Yes);
        assert_eq!(
            z.revoked_since(g, 6, s6, i1),
            Revoked::No,
            "the caller's own"
        );
        assert!(hit(z, &h, 6, 1).is_some());
        assert_eq!(z.revoke_identity(&h, b"i1", None), 5);
        assert_eq!(z.revoke_identity(&h, b"nobody", None), 0);
        assert_eq!(z.stats().entries, 35);
        let (hs, hi) = z.ids_of(2).unwrap();
        assert_eq!((hs, hi), (z.id_hash(b"s2"), z.id_hash(b"i2")));
        assert_eq!(
            z.revoke_identity_hash(&h, hi, hs),
            5,
            "i2 holds s2 and s7; s2 is spared"
        );
    }

    #[test]
    fn the_ring_forgets_old_revocations() {
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        let s = z.id_hash(b"s");
        for n in 0..RING as u128 + 1 {
            z.revoke_key(&h, 1_000 + n);
        }
        assert_eq!(z.revoked_since(0, 5, s, 0), Revoked::Unknown);
        assert_eq!(z.revoked_since(1, 5, s, 0), Revoked::No);
        assert_eq!(z.revoked_since(1, 1_001, s, 0), Revoked::Yes);
    }

    #[test]
    fn churn_keeps_the_structure_whole() {
        // Many inserts, lookups, expiries and purges over a small heap: the counts always
        // match what the lists hold, and every block is returned at the end.
        let h = Budget::new(1 << 20);
        let z = zone(&h);
        h.left.set(40 * (ENTRY + 64));
        let mut x: u64 = 0x1234_5678;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 300) as u128;
            let sid = format!("s{}", x % 37);
            let iid = format!("i{}", x % 11);
            match x % 7 {
                0 => {
                    z.insert_negative(&h, key, Kind::Session, step);
                }
                1 => {
                    z.lookup(&h, key, step, 50, 20);
                }
                2 if step % 97 == 0 => {
                    z.revoke_session(&h, sid.as_bytes());
                }
                3 if step % 89 == 0 => {
                    z.revoke_identity(&h, iid.as_bytes(), Some(sid.as_bytes()));
                }
                4 if step % 83 == 0 => {
                    z.revoke_key(&h, key);
                }
                _ => {
                    let len = (x % 40) as usize;
                    z.insert(
                        &h,
                        key,
                        Kind::Session,
                        ids(&sid, &iid),
                        &vec![1; len],
                        step,
                        step + 100,
                    );
                }
            }
            let s = z.stats();
            assert_eq!(z.order().len() as u64, s.entries + s.negative_entries);
        }
        let keys = z.order();
        for k in keys {
            z.remove_key(&h, k);
        }
        assert_eq!(z.stats().bytes, 0);
        assert_eq!(h.blocks.get(), 2);
    }
}
