//! The calls in flight of one kind of check in one worker, and the requests parked on them.
//!
//! Requests that miss the cache for the same key share one call: the first starts it, the
//! others join it. A request that leaves early (client gone, its own timer) detaches; when
//! the last one leaves, the call is cancelled, since nobody would read its answer. On the
//! nginx thread only, so no locks. Generic over what a waiter is (the glue uses a pointer to
//! the parked request's wait) and over the handle that cancels a call.

use std::collections::HashMap;

use super::key::CacheKey;

/// Names one call for as long as it is in flight; never reused within a worker.
pub type CallId = u64;

/// One call in flight and the requests waiting for it.
#[derive(Debug)]
pub struct Call<W, H> {
    pub key: CacheKey,
    pub waiters: Vec<W>,
    /// Cancels the call.
    pub handle: H,
    pub started_ms: u64,
    /// Where the answer is stored: 0 for the worker's own cache, else the shared zone's
    /// number (see `crate::check::zone`).
    pub zone: usize,
    /// The zone's generation when the call started: an answer to a call that a revocation
    /// overtook is not stored, and requests that come after the revocation do not join it.
    pub generation: u64,
}

/// How a request came to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// It started a new call.
    Started(CallId),
    /// It joined the call already in flight for its key.
    Shared(CallId),
}

impl Joined {
    pub fn call(self) -> CallId {
        match self {
            Joined::Started(id) | Joined::Shared(id) => id,
        }
    }
}

/// Why a request could not wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinError {
    /// As many calls as allowed are in flight already: shed the request.
    Full,
    /// The call could not be started (the client runtime is not running).
    NotStarted,
}

#[derive(Debug)]
pub struct InFlight<W, H> {
    calls: HashMap<CallId, Call<W, H>>,
    by_key: HashMap<CacheKey, CallId>,
    last_id: CallId,
    max_calls: usize,
}

impl<W: Copy + PartialEq, H> InFlight<W, H> {
    /// At most `max_calls` calls at once; requests for a key already in flight still join.
    pub fn new(max_calls: usize) -> Self {
        InFlight {
            calls: HashMap::new(),
            by_key: HashMap::new(),
            last_id: 0,
            max_calls,
        }
    }

    /// Parks `waiter` on the call for `key`, starting one with `start` when there is none.
    /// `start` gets the new call's id and returns its handle, or `None` when it could not
    /// start it.
    pub fn join_or_start(
        &mut self,
        key: CacheKey,
        waiter: W,
        now_ms: u64,
        start: impl FnOnce(CallId) -> Option<H>,
    ) -> Result<Joined, JoinError> {
        self.join_or_start_in(key, 0, 0, waiter, now_ms, start)
    }

    /// `join_or_start` for an answer stored in zone `zone` (0: the worker's cache), whose
    /// generation is `generation`: a call started before the zone's last revocation is not
    /// joined (it may answer for a session that is no more), a new one starts beside it.
    pub fn join_or_start_in(
        &mut self,
        key: CacheKey,
        zone: usize,
        generation: u64,
        waiter: W,
        now_ms: u64,
        start: impl FnOnce(CallId) -> Option<H>,
    ) -> Result<Joined, JoinError> {
        if let Some(&id) = self.by_key.get(&key) {
            let call = self
                .calls
                .get_mut(&id)
                .expect("by_key names calls in flight");
            if call.generation == generation {
                call.waiters.push(waiter);
                return Ok(Joined::Shared(id));
            }
        }
        if self.calls.len() >= self.max_calls {
            return Err(JoinError::Full);
        }
        let id = self.last_id + 1;
        let handle = start(id).ok_or(JoinError::NotStarted)?;
        self.last_id = id;
        self.calls.insert(
            id,
            Call {
                key,
                waiters: vec![waiter],
                handle,
                started_ms: now_ms,
                zone,
                generation,
            },
        );
        self.by_key.insert(key, id);
        Ok(Joined::Started(id))
    }

    /// Removes a parked request from its call. When it was the last one, the call leaves
    /// the table and is returned, so that the caller cancels it with its handle.
    pub fn detach(&mut self, id: CallId, waiter: W) -> Option<Call<W, H>> {
        let call = self.calls.get_mut(&id)?;
        call.waiters.retain(|w| *w != waiter);
        if !call.waiters.is_empty() {
            return None;
        }
        let call = self.calls.remove(&id)?;
        self.forget_key(&call);
        Some(call)
    }

    /// A newer call for the same key may have taken the key's place: leave that one.
    fn forget_key(&mut self, call: &Call<W, H>) {
        if self
            .by_key
            .get(&call.key)
            .is_some_and(|&id| !self.calls.contains_key(&id))
        {
            self.by_key.remove(&call.key);
        }
    }

    /// The call has answered: it leaves the table with the requests to resume. `None` when
    /// every waiter left first and the call was cancelled.
    pub fn complete(&mut self, id: CallId) -> Option<Call<W, H>> {
        let call = self.calls.remove(&id)?;
        self.forget_key(&call);
        Some(call)
    }

    pub fn get(&self, id: CallId) -> Option<&Call<W, H>> {
        self.calls.get(&id)
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Table = InFlight<u32, &'static str>;

    fn start(id: CallId) -> Option<&'static str> {
        let _ = id;
        Some("handle")
    }

    #[test]
    fn the_first_request_starts_the_others_join() {
        let mut t = Table::new(10);
        let first = t.join_or_start(7, 1, 100, start).unwrap();
        assert!(matches!(first, Joined::Started(_)));
        let mut started = 0;
        let second = t
            .join_or_start(7, 2, 101, |_| {
                started += 1;
                Some("another")
            })
            .unwrap();
        assert_eq!(second, Joined::Shared(first.call()));
        assert_eq!(started, 0, "a joiner starts nothing");
        let call = t.get(first.call()).unwrap();
        assert_eq!(call.waiters, vec![1, 2]);
        assert_eq!(call.started_ms, 100);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn different_keys_get_different_calls() {
        let mut t = Table::new(10);
        let a = t.join_or_start(1, 1, 0, start).unwrap().call();
        let b = t.join_or_start(2, 1, 0, start).unwrap().call();
        assert_ne!(a, b);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn complete_hands_over_every_waiter_once() {
        let mut t = Table::new(10);
        let id = t.join_or_start(7, 1, 0, start).unwrap().call();
        t.join_or_start(7, 2, 0, start).unwrap();
        let call = t.complete(id).unwrap();
        assert_eq!(call.waiters, vec![1, 2]);
        assert_eq!(call.key, 7);
        assert!(t.complete(id).is_none(), "an answer is delivered once");
        assert!(t.is_empty());
        // The key is free again: the next miss starts a new call.
        let next = t.join_or_start(7, 3, 0, start).unwrap();
        assert!(matches!(next, Joined::Started(n) if n != id));
    }

    #[test]
    fn the_last_waiter_to_leave_cancels_the_call() {
        let mut t = Table::new(10);
        let id = t.join_or_start(7, 1, 0, start).unwrap().call();
        t.join_or_start(7, 2, 0, start).unwrap();
        assert!(t.detach(id, 1).is_none(), "one waiter is left");
        assert_eq!(t.get(id).unwrap().waiters, vec![2]);
        let cancelled = t.detach(id, 2).expect("the last waiter leaves");
        assert_eq!(cancelled.handle, "handle");
        assert!(t.is_empty());
        assert!(
            t.complete(id).is_none(),
            "a cancelled call's answer is dropped"
        );
        assert!(t.detach(id, 2).is_none());
    }

    #[test]
    fn a_full_table_sheds_new_keys_but_not_joiners() {
        let mut t = Table::new(1);
        let id = t.join_or_start(1, 1, 0, start).unwrap().call();
        assert_eq!(t.join_or_start(2, 2, 0, start), Err(JoinError::Full));
        assert_eq!(t.join_or_start(1, 3, 0, start), Ok(Joined::Shared(id)));
    }

    #[test]
    fn a_call_that_cannot_start_leaves_nothing() {
        let mut t = Table::new(10);
        assert_eq!(
            t.join_or_start(1, 1, 0, |_| None),
            Err(JoinError::NotStarted)
        );
        assert!(t.is_empty());
        let next = t.join_or_start(1, 1, 0, start).unwrap();
        assert!(matches!(next, Joined::Started(_)));
    }

    #[test]
    fn a_revocation_splits_the_calls_of_a_key() {
        let mut t = Table::new(10);
        let old = t.join_or_start_in(7, 1, 4, 1, 0, start).unwrap().call();
        assert_eq!(
            t.join_or_start_in(7, 1, 4, 2, 0, start),
            Ok(Joined::Shared(old))
        );
        // The zone revoked something since: the next request starts a call of its own.
        let new = t.join_or_start_in(7, 1, 5, 3, 0, start).unwrap();
        assert!(matches!(new, Joined::Started(n) if n != old));
        assert_eq!(
            t.join_or_start_in(7, 1, 5, 4, 0, start),
            Ok(Joined::Shared(new.call()))
        );
        // The old call ending leaves the new one in place, and the other way round.
        let done = t.complete(old).unwrap();
        assert_eq!(
            (done.waiters, done.zone, done.generation),
            (vec![1, 2], 1, 4)
        );
        assert_eq!(
            t.join_or_start_in(7, 1, 5, 5, 0, start),
            Ok(Joined::Shared(new.call()))
        );
        t.detach(new.call(), 3);
        t.detach(new.call(), 4);
        assert!(t.detach(new.call(), 5).is_some());
        assert!(t.is_empty());
        assert!(matches!(
            t.join_or_start(7, 6, 0, start),
            Ok(Joined::Started(_))
        ));
    }

    #[test]
    fn ids_are_never_reused() {
        let mut t = Table::new(10);
        let mut seen = std::collections::HashSet::new();
        for i in 0..100 {
            let id = t.join_or_start(i % 3, 1, 0, start).unwrap().call();
            if i % 2 == 0 {
                t.complete(id);
            } else {
                t.detach(id, 1);
            }
            assert!(seen.insert(id), "id {id} reused");
        }
    }
}
