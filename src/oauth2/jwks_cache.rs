//! When to fetch the JWKS: a plain state machine, one per worker and JWKS URL, driven by
//! the caller with its clock. No threads, no timers, no I/O: the caller starts the fetch
//! this says to start, reports its result, and arms a timer for [`JwksCache::next_poll`].
//!
//! - The first fetch starts at worker start ([`poll`](JwksCache::poll)); requests that
//!   arrive before it ends wait for it ([`KeysFor::Wait`]).
//! - The set is refetched in the background at 85% of the TTL, so a request never waits for
//!   a routine refresh.
//! - A failed fetch keeps the old keys (a JWKS endpoint that is down must not refuse every
//!   token signed by a key we already have) and is retried with exponential backoff,
//!   1 s doubling to at most 60 s.
//! - An unknown `kid` refetches at most once per [`KID_COOLDOWN`]: a key rotation is picked up
//!   by the first token that uses the new key, and a client sending made-up kids costs Hydra
//!   at most one fetch per cooldown and worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jwks::KeySet;
use crate::check::call::CallError;

/// `ory_oauth2_jwks_cache_ttl` default: Envoy's and heimdall's choice; a rotation by Hydra
/// is met at once anyway through the unknown-kid refetch, so the TTL only bounds how long a
/// *removed* key keeps being trusted.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Shorter would fetch more often than the cooldown lets an unknown kid fetch.
pub const MIN_TTL: Duration = Duration::from_secs(30);
/// Longer would trust a key Hydra deleted (after a leak, say) for more than a day.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// 10 s: Hydra publishes a new key before it signs with it, so the first token with the new
/// kid finds it with one fetch, and a cooldown only matters when a kid stays unknown (a
/// forged or foreign token). Per worker, 10 s means at most 0.1 fetches a second against
/// Hydra whatever clients send; a race where a fetch misses a key published a moment later
/// costs that key's tokens 401s for at most 10 s. 5 s would double the first, 30 s triple
/// the second.
pub const KID_COOLDOWN: Duration = Duration::from_secs(10);

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    ttl: Duration,
    kid_cooldown: Duration,
    /// A fetch that has not reported after this long is taken as failed (the caller lost
    /// it); well above any sensible fetch timeout.
    fetch_deadline: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ttl: DEFAULT_TTL,
            kid_cooldown: KID_COOLDOWN,
            fetch_deadline: Duration::from_secs(60),
        }
    }
}

impl Policy {
    /// For `ory_oauth2_jwks_cache_ttl`.
    pub fn with_ttl(ttl: Duration) -> Result<Policy, &'static str> {
        if ttl < MIN_TTL {
            return Err("the JWKS cache TTL must be at least 30 seconds");
        }
        if ttl > MAX_TTL {
            return Err("the JWKS cache TTL must not be more than 24 hours");
        }
        Ok(Policy {
            ttl,
            ..Policy::default()
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn kid_cooldown(&self) -> Duration {
        self.kid_cooldown
    }

    /// 85% of the TTL: early enough for a few retries before the keys turn stale.
    fn refresh_after(&self) -> Duration {
        self.ttl * 17 / 20
    }

    /// 1 s, 2 s, 4 s ... for the n-th failure in a row, at most 60 s and never later than a
    /// routine refresh would be.
    fn retry_after(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        (RETRY_MIN * (1u32 << exp))
            .min(RETRY_MAX)
            .min(self.refresh_after())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchReason {
    /// The first fetch of the worker.
    Initial,
    /// The routine refresh before the TTL ends.
    Refresh,
    /// After a failure.
    Retry,
    /// A token named a kid the set does not have.
    UnknownKid,
}

/// A fetch the caller must start now, and report with [`JwksCache::fetch_done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub id: u64,
    pub reason: FetchReason,
}

/// What a JWT request does with the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeysFor {
    Ready(Arc<KeySet>),
    /// No keys yet, a fetch is running: park the request until it ends.
    Wait,
    /// No keys yet: start this fetch and park the request.
    Start(Fetch),
    /// No keys, the last fetch failed and the retry is not due: a gateway error (502, or 503
    /// for a 429, 504 for a timeout), not a 401.
    Unavailable,
}

/// What a request whose token named an unknown kid does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KidDecision {
    /// A fetch is running: park, then verify again with its keys.
    Wait,
    /// Start this fetch, park, then verify again.
    Start(Fetch),
    /// A fetch for an unknown kid ran within the cooldown and brought no such key: 401.
    Refuse,
    /// The cooldown is on and the last fetch failed: whether the kid exists is not known,
    /// so a gateway error (502/503/504), not a verdict on the token.
    Unavailable,
}

/// What a finished fetch did, for the caller's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchReport {
    Updated {
        reason: FetchReason,
        keys: usize,
        skipped: usize,
    },
    Failed {
        reason: FetchReason,
        error: CallError,
        /// The previous keys stay in use.
        kept_keys: bool,
        retry_in: Duration,
    },
    /// Not the fetch this state waits for (it was taken as lost): ignored.
    Stale,
}

#[derive(Debug)]
pub struct JwksCache {
    policy: Policy,
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    running: Option<(Fetch, Instant)>,
    /// When the next background fetch (first, retry or refresh) is due.
    next_fetch: Instant,
    failures: u32,
    /// The start of the last fetch made for an unknown kid.
    kid_fetch_at: Option<Instant>,
    next_id: u64,
}

impl JwksCache {
    /// No keys yet; the first fetch is due at `now`.
    pub fn new(policy: Policy, now: Instant) -> Self {
        JwksCache {
            policy,
            keys: None,
            fetched_at: None,
            running: None,
            next_fetch: now,
            failures: 0,
            kid_fetch_at: None,
            next_id: 1,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current keys, if a fetch ever succeeded.
    pub fn keys(&self) -> Option<&Arc<KeySet>> {
        self.keys.as_ref()
    }

    /// The keys are older than the TTL (refreshes have been failing), or there are none.
    pub fn is_stale(&self, now: Instant) -> bool {
        self.fetched_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.policy.ttl)
    }

    pub fn is_fetching(&self) -> bool {
        self.running.is_some()
    }

    /// The fetch to start now, if one is due: at worker start, on the caller's timer, or
    /// whenever convenient (it is cheap). At most one fetch runs at a time.
    pub fn poll(&mut self, now: Instant) -> Option<Fetch> {
        self.forget_lost_fetch(now);
        if self.running.is_some() || now < self.next_fetch {
            return None;
        }
        let reason = if self.failures > 0 {
            FetchReason::Retry
        } else if self.keys.is_some() {
            FetchReason::Refresh
        } else {
            FetchReason::Initial
        };
        Some(self.start(reason, now))
    }

    /// When the caller should [`poll`](Self::poll) next: the next fetch, or while one runs,
    /// the moment it would be taken as lost.
    pub fn next_poll(&self) -> Instant {
        match self.running {
            Some((_, started)) => started + self.policy.fetch_deadline,
            None => self.next_fetch,
        }
    }

    /// For each JWT request, before verifying.
    pub fn for_request(&mut self, now: Instant) -> KeysFor {
        if let Some(keys) = &self.keys {
            return KeysFor::Ready(keys.clone());
        }
        if self.running.is_some() {
            self.forget_lost_fetch(now);
        }
        if self.running.is_some() {
            return KeysFor::Wait;
        }
        match self.poll(now) {
            Some(fetch) => KeysFor::Start(fetch),
            None => KeysFor::Unavailable,
        }
    }

    /// After [`crate::oauth2::jwt::verify`] said the kid is unknown.
    pub fn on_unknown_kid(&mut self, now: Instant) -> KidDecision {
        self.forget_lost_fetch(now);
        if self.running.is_some() {
            return KidDecision::Wait;
        }
        let cooling = self
            .kid_fetch_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.policy.kid_cooldown);
        if !cooling {
            self.kid_fetch_at = Some(now);
            return KidDecision::Start(self.start(FetchReason::UnknownKid, now));
        }
        if self.failures > 0 {
            KidDecision::Unavailable
        } else {
            KidDecision::Refuse
        }
    }

    /// The result of `fetch`. Then resume the parked requests: each asks again.
    pub fn fetch_done(
        &mut self,
        now: Instant,
        fetch: Fetch,
        result: Result<KeySet, CallError>,
    ) -> FetchReport {
        if self.running.is_none_or(|(running, _)| running != fetch) {
            return FetchReport::Stale;
        }
        self.running = None;
        match result {
            Ok(keys) => {
                let report = FetchReport::Updated {
                    reason: fetch.reason,
                    keys: keys.len(),
                    skipped: keys.skipped().len(),
                };
                self.keys = Some(Arc::new(keys));
                self.fetched_at = Some(now);
                self.failures = 0;
                self.next_fetch = now + self.policy.refresh_after();
                report
            }
            Err(error) => FetchReport::Failed {
                reason: fetch.reason,
                error,
                kept_keys: self.keys.is_some(),
                retry_in: self.failed(now),
            },
        }
    }

    fn start(&mut self, reason: FetchReason, now: Instant) -> Fetch {
        let fetch = Fetch {
            id: self.next_id,
            reason,
        };
        self.next_id += 1;
        self.running = Some((fetch, now));
        fetch
    }

    fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let retry_in = self.policy.retry_after(self.failures);
        self.next_fetch = now + retry_in;
        retry_in
    }

    /// A fetch that never reported must not block every later one.
    fn forget_lost_fetch(&mut self, now: Instant) {
        if let Some((_, started)) = self.running {
            if now.saturating_duration_since(started) >= self.policy.fetch_deadline {
                self.running = None;
                self.failed(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::fixtures;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn set() -> KeySet {
        KeySet::parse(fixtures::JWKS.as_bytes()).unwrap()
    }

    fn down() -> Result<KeySet, CallError> {
        Err(CallError::Unreachable("connection refused".into()))
    }

    fn start(decision: KeysFor) -> Fetch {
        match decision {
            KeysFor::Start(f) => f,
            other => panic!("{other:?}"),
        }
    }

    /// A cache whose first fetch succeeded at t0.
    fn ready(t0: Instant) -> JwksCache {
        let mut c = JwksCache::new(Policy::default(), t0);
        let f = c.poll(t0).unwrap();
        c.fetch_done(t0, f, Ok(set()));
        c
    }

    #[test]
    fn the_first_fetch_starts_at_worker_start() {
        let t0 = Instant::now();
        let mut c = JwksCache::new(Policy::default(), t0);
        assert!(c.keys().is_none());
        assert!(c.is_stale(t0));
        assert_eq!(c.next_poll(), t0);
        let f = c.poll(t0).unwrap();
        assert_eq!(f.reason, FetchReason::Initial);
        assert!(c.is_fetching());
        assert_eq!(c.poll(t0), None, "one fetch at a time");
        assert_eq!(c.next_poll(), t0 + secs(60));
        // Requests before it ends wait for it.
        assert_eq!(c.for_request(t0 + secs(1)), KeysFor::Wait);
        assert_eq!(c.for_request(t0 + secs(2)), KeysFor::Wait);
        let report = c.fetch_done(t0 + secs(2), f, Ok(set()));
        assert_eq!(
            report,
            FetchReport::Updated {
                reason: FetchReason::Initial,
                keys: 6,
                skipped: 8
            }
        );
        assert!(matches!(c.for_request(t0 + secs(2)), KeysFor::Ready(k) if k.len() == 6));
        assert!(!c.is_stale(t0 + secs(2)));
    }

    #[test]
    fn a_request_before_any_poll_starts_the_first_fetch() {
        let t0 = Instant::now();
        let mut c = JwksCache::new(Policy::default(), t0);
        let f = start(c.for_request(t0));
        assert_eq!(f.reason, FetchReason::Initial);
        assert_eq!(c.for_request(t0), KeysFor::Wait);
    }

    #[test]
    fn background_refresh_at_85_percent_of_the_ttl() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let due = t0 + secs(510);
        assert_eq!(c.next_poll(), due);
        assert_eq!(c.poll(due - Duration::from_millis(1)), None);
        let f = c.poll(due).unwrap();
        assert_eq!(f.reason, FetchReason::Refresh);
        // Requests keep the old keys while it runs.
        assert!(matches!(c.for_request(due), KeysFor::Ready(_)));
        c.fetch_done(due + secs(1), f, Ok(KeySet::default()));
        assert!(matches!(c.for_request(due), KeysFor::Ready(k) if k.is_empty()));
        assert_eq!(c.next_poll(), due + secs(1) + secs(510));

        let mut short = JwksCache::new(Policy::with_ttl(secs(60)).unwrap(), t0);
        let f = short.poll(t0).unwrap();
        short.fetch_done(t0, f, Ok(set()));
        assert_eq!(short.next_poll(), t0 + secs(51));
    }

    #[test]
    fn a_failed_refresh_keeps_the_keys_and_backs_off() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let mut now = t0 + secs(510);
        let mut waits = Vec::new();
        for _ in 0..9 {
            let f = c.poll(now).unwrap();
            let FetchReport::Failed {
                kept_keys,
                retry_in,
                reason,
                error,
            } = c.fetch_done(now, f, down())
            else {
                panic!("not failed");
            };
            assert!(kept_keys);
            assert_eq!(
                error.describe(&crate::oauth2::JWKS_ENDPOINT),
                "the JWKS endpoint is unreachable (connection refused)"
            );
            waits.push((reason, retry_in.as_secs()));
            assert!(matches!(c.for_request(now), KeysFor::Ready(k) if k.len() == 6));
            assert_eq!(c.poll(now + retry_in - Duration::from_millis(1)), None);
            now += retry_in;
        }
        use FetchReason::{Refresh, Retry};
        assert_eq!(
            waits,
            [
                (Refresh, 1),
                (Retry, 2),
                (Retry, 4),
                (Retry, 8),
                (Retry, 16),
                (Retry, 32),
                (Retry, 60),
                (Retry, 60),
                (Retry, 60)
            ]
        );
        assert!(c.is_stale(now));
        // Back to routine refreshes after a success.
        let f = c.poll(now).unwrap();
        c.fetch_done(now, f, Ok(set()));
        assert!(!c.is_stale(now));
        assert_eq!(c.next_poll(), now + secs(510));
        assert_eq!(c.poll(now + secs(509)), None);
        assert_eq!(
            c.poll(now + secs(510)).unwrap().reason,
            FetchReason::Refresh
        );
    }

    #[test]
    fn a_failed_first_fetch_leaves_requests_unavailable_until_the_retry() {
        let t0 = Instant::now();
        let mut c = JwksCache::new(Policy::default(), t0);
        let f = c.poll(t0).unwrap();
        assert_eq!(c.for_request(t0), KeysFor::Wait);
        let report = c.fetch_done(t0, f, down());
        assert!(matches!(
            report,
            FetchReport::Failed { kept_keys: false, retry_in, .. } if retry_in == secs(1)
        ));
        // The parked requests ask again: no keys, retry not due.
        assert_eq!(c.for_request(t0), KeysFor::Unavailable);
        assert_eq!(
            c.for_request(t0 + Duration::from_millis(999)),
            KeysFor::Unavailable
        );
        // A request once the retry is due starts it.
        let f = start(c.for_request(t0 + secs(1)));
        assert_eq!(f.reason, FetchReason::Retry);
        assert_eq!(c.for_request(t0 + secs(1)), KeysFor::Wait);
        c.fetch_done(t0 + secs(2), f, Ok(set()));
        assert!(matches!(c.for_request(t0 + secs(2)), KeysFor::Ready(_)));
    }

    #[test]
    fn an_unknown_kid_fetches_then_refuses_during_the_cooldown() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let t = t0 + secs(100);
        let KidDecision::Start(f) = c.on_unknown_kid(t) else {
            panic!("no fetch");
        };
        assert_eq!(f.reason, FetchReason::UnknownKid);
        // Other tokens with unknown kids wait for the same fetch.
        assert_eq!(c.on_unknown_kid(t), KidDecision::Wait);
        assert_eq!(c.on_unknown_kid(t + secs(1)), KidDecision::Wait);
        assert!(matches!(c.for_request(t), KeysFor::Ready(_)));
        c.fetch_done(t + secs(1), f, Ok(set()));
        // Still unknown after the fetch: refused until the cooldown ends.
        assert_eq!(c.on_unknown_kid(t + secs(1)), KidDecision::Refuse);
        assert_eq!(
            c.on_unknown_kid(t + Duration::from_millis(9999)),
            KidDecision::Refuse
        );
        assert!(matches!(
            c.on_unknown_kid(t + secs(10)),
            KidDecision::Start(_)
        ));
    }

    #[test]
    fn a_thousand_unknown_kids_in_a_cooldown_cost_one_fetch() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let t = t0 + secs(60);
        let mut fetches = Vec::new();
        let mut refused = 0;
        let mut waited = 0;
        for i in 0..1000u64 {
            // Every request carries another made-up kid; the state does not care which.
            let now = t + Duration::from_millis(i * 9);
            match c.on_unknown_kid(now) {
                KidDecision::Start(f) => fetches.push(f),
                KidDecision::Wait => waited += 1,
                KidDecision::Refuse => refused += 1,
                KidDecision::Unavailable => panic!("unavailable"),
            }
            // The fetch ends after 50 ms; each waiting request then asks again.
            if i == 5 {
                c.fetch_done(now, fetches[0], Ok(set()));
                for _ in 0..waited {
                    assert_eq!(c.on_unknown_kid(now), KidDecision::Refuse);
                }
            }
        }
        assert_eq!(fetches.len(), 1);
        assert_eq!(waited, 5);
        assert_eq!(refused, 994);
        // The whole run took 9 s: within one cooldown.
        assert!(c.poll(t + secs(9)).is_none());
    }

    #[test]
    fn a_kid_waiting_on_a_routine_refresh_may_fetch_once_more() {
        // The refresh may have started before the new key was published.
        let t0 = Instant::now();
        let mut c = ready(t0);
        let t = t0 + secs(510);
        let refresh = c.poll(t).unwrap();
        assert_eq!(c.on_unknown_kid(t), KidDecision::Wait);
        c.fetch_done(t + secs(1), refresh, Ok(set()));
        let KidDecision::Start(f) = c.on_unknown_kid(t + secs(1)) else {
            panic!("no second fetch");
        };
        assert_eq!(f.reason, FetchReason::UnknownKid);
        c.fetch_done(t + secs(2), f, Ok(set()));
        assert_eq!(c.on_unknown_kid(t + secs(2)), KidDecision::Refuse);
    }

    #[test]
    fn a_failed_kid_fetch_is_unavailable_not_refused() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let t = t0 + secs(30);
        let KidDecision::Start(f) = c.on_unknown_kid(t) else {
            panic!("no fetch");
        };
        let report = c.fetch_done(t, f, down());
        assert!(matches!(
            report,
            FetchReport::Failed {
                kept_keys: true,
                ..
            }
        ));
        assert_eq!(c.on_unknown_kid(t + secs(1)), KidDecision::Unavailable);
        // Known kids still verify with the kept keys.
        assert!(matches!(c.for_request(t + secs(1)), KeysFor::Ready(_)));
        // The retry (1 s later) succeeds: the kid is then known not to exist.
        let retry = c.poll(t + secs(1)).unwrap();
        assert_eq!(retry.reason, FetchReason::Retry);
        c.fetch_done(t + secs(2), retry, Ok(set()));
        assert_eq!(c.on_unknown_kid(t + secs(2)), KidDecision::Refuse);
        assert!(matches!(
            c.on_unknown_kid(t + secs(10)),
            KidDecision::Start(_)
        ));
    }

    #[test]
    fn a_lost_fetch_is_taken_as_failed() {
        let t0 = Instant::now();
        let mut c = JwksCache::new(Policy::default(), t0);
        let lost = c.poll(t0).unwrap();
        assert_eq!(c.for_request(t0 + secs(59)), KeysFor::Wait);
        // 60 s without a report: failed; the retry is due 1 s later.
        assert_eq!(c.for_request(t0 + secs(60)), KeysFor::Unavailable);
        assert!(!c.is_fetching());
        let retry = c.poll(t0 + secs(61)).unwrap();
        assert_eq!(retry.reason, FetchReason::Retry);
        // The lost fetch reporting late changes nothing.
        assert_eq!(
            c.fetch_done(t0 + secs(62), lost, Ok(set())),
            FetchReport::Stale
        );
        assert!(c.keys().is_none());
        assert!(c.is_fetching());
        c.fetch_done(t0 + secs(62), retry, Ok(set()));
        assert!(c.keys().is_some());
        // A report for no running fetch is stale too.
        assert_eq!(
            c.fetch_done(t0 + secs(63), retry, down()),
            FetchReport::Stale
        );
        assert!(c.keys().is_some());
    }

    #[test]
    fn lost_kid_fetches_do_not_block_kid_lookups() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let KidDecision::Start(_) = c.on_unknown_kid(t0) else {
            panic!();
        };
        assert_eq!(c.on_unknown_kid(t0 + secs(59)), KidDecision::Wait);
        // Lost: failed, cooldown long over → a new fetch.
        assert!(matches!(
            c.on_unknown_kid(t0 + secs(60)),
            KidDecision::Start(_)
        ));
    }

    #[test]
    fn fetch_ids_are_distinct() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let KidDecision::Start(a) = c.on_unknown_kid(t0) else {
            panic!();
        };
        c.fetch_done(t0, a, Ok(set()));
        let KidDecision::Start(b) = c.on_unknown_kid(t0 + secs(10)) else {
            panic!();
        };
        assert_ne!(a.id, b.id);
        assert_eq!(c.fetch_done(t0 + secs(10), a, down()), FetchReport::Stale);
        assert!(c.is_fetching());
    }

    #[test]
    fn policy_bounds() {
        assert_eq!(Policy::default().ttl(), secs(600));
        assert_eq!(Policy::default().kid_cooldown(), KID_COOLDOWN);
        assert!(Policy::with_ttl(secs(30)).is_ok());
        assert!(Policy::with_ttl(secs(86400)).is_ok());
        assert_eq!(
            Policy::with_ttl(secs(29)).unwrap_err(),
            "the JWKS cache TTL must be at least 30 seconds"
        );
        assert_eq!(
            Policy::with_ttl(secs(86401)).unwrap_err(),
            "the JWKS cache TTL must not be more than 24 hours"
        );
        let p = Policy::with_ttl(secs(30)).unwrap();
        // retries never wait longer than a routine refresh would
        assert_eq!(p.retry_after(10), Duration::from_millis(25_500));
        assert_eq!(Policy::default().retry_after(u32::MAX), secs(60));
        assert_eq!(Policy::default().retry_after(1), secs(1));
    }
}
