//! The OAuth2 access-token check (Ory Hydra), as the access driver runs it.
//!
//! The first visit of a request takes its bearer token and answers from the worker's cache
//! when it can. Otherwise a JWT is verified here with the keys of its issuer's JWKS, which
//! each worker fetches when it starts, refreshes in the background and refetches when a
//! token names an unknown `kid` (at most once per cooldown); a request that needs keys the
//! worker does not have yet waits for the fetch. Any other token is introspected, one call
//! per token shared by every request that carries it. `decide` answers a refusal with its
//! RFC 6750 `WWW-Authenticate` challenge.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ngx::ffi::{
    ngx_add_timer, ngx_cycle_t, ngx_del_timer, ngx_event_t, ngx_http_request_t, ngx_log_t,
    NGX_LOG_ERR, NGX_LOG_INFO,
};
use ngx::ngx_log_error;

use super::access::Check;
use super::answers::Answers;
use super::conf::{LocConf, OAuth2Conf};
use super::context::{now_ms, RequestCtx, Wait};
use super::log::{self, CHECKING_OAUTH2};
use super::zone::Shared;
use super::{bridge, headers, request, status};
use crate::check::cache::{CacheStatus, Lookup};
use crate::check::call::CallError;
use crate::check::decision::{Decision, Outcome};
use crate::check::front::{Front, ZoneAccess};
use crate::check::inflight::{CallId, JoinError, Joined};
use crate::check::key::{CacheKey, Scope, ScopeMap, Tag};
use crate::check::metrics::CheckMetrics;
use crate::check::zone::{Ids, Kind};
use crate::oauth2::challenge::{www_authenticate, Challenge};
use crate::oauth2::claims::Claims;
use crate::oauth2::client::{fetch_jwks, introspect};
use crate::oauth2::introspection::Introspection;
use crate::oauth2::jwks::KeySet;
use crate::oauth2::jwks_cache::{Fetch, FetchReport, JwksCache, KeysFor, KidDecision, Policy};
use crate::oauth2::jwt::{verify_timed, JwtError};
use crate::oauth2::outcome::Refusal;
use crate::oauth2::rules::Rules;
use crate::oauth2::stored;
use crate::oauth2::token::{bearer_of, is_session_token, BearerToken, TokenShape};
use crate::oauth2::{HYDRA, JWKS_ENDPOINT};

/// The cache key tag of access tokens, distinct from the other checks'.
const TAG_TOKEN: Tag = Tag(32);

/// A token that verified (or that Hydra says is active): its claims, and the scopes it
/// lacks here, if any (a 403, cached like an allowed token since the key holds the rules).
pub struct Verified {
    pub claims: Claims,
    missing_scope: Option<Box<str>>,
}

/// The OAuth2 check's part of a request's context.
#[derive(Default)]
pub struct OAuth2State {
    /// The verified token; the variables read it.
    pub verified: Option<Rc<Verified>>,
    pub cache_status: CacheStatus,
    /// The request carried a bearer token that is this check's to judge.
    pub took_token: bool,
    begun: bool,
    /// None until the check has ended.
    outcome: Option<Outcome>,
    challenge: Answer,
    /// What a request that missed the cache waits with. Boxed, so that a request answered
    /// from the cache carries nothing to release, and the wait's timer never moves.
    parked: Option<Box<Parked>>,
}

#[derive(Default)]
struct Parked {
    waiting: Waiting,
    /// While the request waits for keys: the JWT to verify when they come, its key and where
    /// its answer goes.
    pending_jwt: Option<(Box<str>, CacheKey, Place)>,
    wait: Wait,
}

/// What a refusal answers with.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Answer {
    #[default]
    NoToken,
    InvalidToken,
    InsufficientScope,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Waiting {
    #[default]
    Nothing,
    Introspection,
    Keys(Scope),
}

impl OAuth2State {
    fn set_waiting(&mut self, waiting: Waiting) {
        if let Some(parked) = self.parked.as_deref_mut() {
            parked.waiting = waiting;
        }
    }

    pub fn allowed(&self) -> bool {
        self.outcome == Some(Outcome::Allowed)
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let Some(call) = self.wait.call else { return };
        let waiter: *mut Wait = &mut self.wait;
        with_worker(|w| match self.waiting {
            Waiting::Introspection => w.tokens.table.detach(call, waiter),
            Waiting::Keys(scope) => {
                if let Some(slot) = w.key_sets.get_mut(&scope) {
                    slot.waiters.retain(|&p| p != waiter);
                }
            }
            Waiting::Nothing => {}
        });
    }
}

/// One JWKS in one worker: its keys and their fetches, the requests waiting for keys, and
/// the timer of the background refresh.
struct KeySlot {
    scope: Scope,
    /// The trusted certificates of the JWKS endpoint's HTTPS.
    trust: usize,
    url: Arc<reqwest::Url>,
    cache: JwksCache,
    running: Option<Fetch>,
    /// Why the last fetch failed, for requests that find no keys because of it.
    last_error: Option<CallError>,
    waiters: Vec<*mut Wait>,
    /// Cancelable: a worker shutting down does not wait for the next refresh.
    timer: ngx_event_t,
    log: *mut ngx_log_t,
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        if self.timer.timer_set() != 0 {
            // SAFETY: the timer lives in this slot and was armed by `arm_refresh` only.
            unsafe { ngx_del_timer(&mut self.timer) };
        }
    }
}

/// A worker's tokens: verified tokens and introspection answers, introspection calls in
/// flight, and a key set per JWKS URL.
struct Worker {
    tokens: Answers<Rc<Verified>>,
    /// Boxed: the refresh timer must not move.
    key_sets: ScopeMap<Box<KeySlot>>,
    fetch_timeout: Duration,
}

/// Where a location's answers are kept: this worker's cache (`zone` 0), or the shared zone
/// numbered `zone` with its revocation generation when the check began (an answer that a
/// revocation overtook is not stored).
#[derive(Clone, Copy)]
struct Place {
    zone: usize,
    generation: u64,
}

impl Place {
    fn of(lcf: &LocConf, tokens: &mut Answers<Rc<Verified>>) -> Place {
        match zoned(tokens, lcf.cache) {
            Some((_, shared)) => Place {
                zone: lcf.cache,
                generation: shared.generation(),
            },
            None => Place {
                zone: 0,
                generation: 0,
            },
        }
    }
}

/// This worker's front cache of zone number `zone`, and the zone.
fn zoned(
    tokens: &mut Answers<Rc<Verified>>,
    zone: usize,
) -> Option<&mut (Front<Rc<Verified>>, Shared)> {
    zone.checked_sub(1).and_then(|i| tokens.fronts.get_mut(i))
}

/// Keeps a verified token (or an active introspection answer) until `until_ms`.
fn remember(w: &mut Worker, place: Place, key: CacheKey, verified: &Rc<Verified>, until_ms: u64) {
    let now = now_ms();
    match zoned(&mut w.tokens, place.zone) {
        Some((front, shared)) => {
            let bytes = stored::encode(&verified.claims, verified.missing_scope.as_deref());
            // A purge by identity id drops the tokens of that subject too: Hydra's subject
            // is the Kratos identity id when Kratos logs users in.
            let ids = Ids {
                session: b"",
                identity: verified.claims.sub().unwrap_or("").as_bytes(),
            };
            let value = verified.clone();
            front.store(
                shared,
                key,
                place.generation,
                value,
                &bytes,
                ids,
                now,
                until_ms,
            );
        }
        None => w
            .tokens
            .table
            .cache
            .insert(key, verified.clone(), now, until_ms),
    }
    w.tokens.table.report_cache();
}

/// Keeps a refusal, for `ory_oauth2_cache_negative_ttl`.
fn remember_refusal(w: &mut Worker, place: Place, key: CacheKey) {
    let now = now_ms();
    match zoned(&mut w.tokens, place.zone) {
        Some((front, shared)) => front.store_negative(shared, key, now),
        None => w.tokens.table.cache.insert_negative(key, now),
    }
    w.tokens.table.report_cache();
}

/// A zone entry's bytes as the token they were.
fn decode(bytes: &[u8]) -> Option<Rc<Verified>> {
    let (claims, missing_scope) = stored::decode(bytes)?;
    Some(Rc::new(Verified {
        claims,
        missing_scope,
    }))
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

fn with_worker<T>(f: impl FnOnce(&mut Worker) -> T) -> Option<T> {
    WORKER.with(|w| w.borrow_mut().as_mut().map(f))
}

fn metrics() -> Option<&'static CheckMetrics> {
    status::metrics().map(|m| &m.oauth2)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Sets up the worker's tables and starts fetching every key set some location uses.
///
/// # Safety
/// `cycle` is the worker's cycle, on the nginx thread.
pub unsafe fn init_worker(
    cycle: *mut ngx_cycle_t,
    cache_size: usize,
    max_pending: usize,
    call_timeout_ms: u64,
    key_sets: &[(Scope, Arc<reqwest::Url>, Policy, usize)],
    zones: &[Shared],
) {
    let call_timeout = Duration::from_millis(call_timeout_ms);
    let worker = Worker {
        tokens: Answers::new(
            Kind::OAuth2,
            cache_size,
            max_pending,
            call_timeout_ms,
            metrics(),
            zones,
        ),
        key_sets: ScopeMap::default(),
        fetch_timeout: call_timeout,
    };
    WORKER.with(|w| *w.borrow_mut() = Some(worker));
    let now = Instant::now();
    for (scope, url, policy, trust) in key_sets {
        let mut slot = Box::new(KeySlot {
            scope: *scope,
            trust: *trust,
            url: url.clone(),
            cache: JwksCache::new(*policy, now),
            running: None,
            last_error: None,
            waiters: Vec::new(),
            // SAFETY: an all-zero event is an idle one, as ngx_pcalloc hands them out.
            timer: unsafe { core::mem::zeroed() },
            log: (*cycle).log,
        });
        let fetch = slot.cache.poll(now);
        with_worker(|w| {
            if let Some(fetch) = fetch {
                start_fetch(&mut slot, fetch, w.fetch_timeout);
            }
            arm_refresh(&mut slot);
            w.key_sets.insert(*scope, slot);
        });
    }
}

pub fn shutdown_worker() {
    WORKER.with(|w| {
        if let Some(mut w) = w.borrow_mut().take() {
            w.tokens.table.shut_down();
        }
    });
}

/// Arms the slot's timer for its next background fetch.
fn arm_refresh(slot: &mut KeySlot) {
    let data: *mut KeySlot = slot;
    let timer = &raw mut slot.timer;
    // SAFETY: the timer lives in the boxed slot, which never moves and outlives it (the
    // slot's drop removes it); its data is the slot.
    unsafe {
        if (*timer).timer_set() != 0 {
            ngx_del_timer(timer);
        }
        (*timer).handler = Some(on_refresh);
        (*timer).data = data.cast();
        (*timer).log = slot.log;
        (*timer).set_cancelable(1);
        let wait = slot
            .cache
            .next_poll()
            .saturating_duration_since(Instant::now());
        ngx_add_timer(timer, wait.as_millis().clamp(1, u32::MAX as u128) as _);
    }
}

/// The background refresh of one key set is due.
unsafe extern "C" fn on_refresh(ev: *mut ngx_event_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the timer's data is its slot, alive while the timer is set.
        let slot = unsafe { &mut *(*ev).data.cast::<KeySlot>() };
        let timeout = with_worker(|w| w.fetch_timeout).unwrap_or_default();
        if let Some(fetch) = slot.cache.poll(Instant::now()) {
            start_fetch(slot, fetch, timeout);
        }
        arm_refresh(slot);
    }));
}

/// What a key-set fetch returns, with the key set it is for.
type FetchResult = (Scope, Result<KeySet, CallError>);

fn start_fetch(slot: &mut KeySlot, fetch: Fetch, timeout: Duration) {
    let (scope, url) = (slot.scope, slot.url.clone());
    let started = bridge::spawn(
        fetch.id,
        slot.trust,
        move |client| async move { (scope, fetch_jwks(&client, &url, timeout).await) },
        on_fetch_done,
    );
    if started.is_some() {
        slot.running = Some(fetch);
    }
}

/// Called by the bridge, on the nginx thread, when a key-set fetch ends.
fn on_fetch_done(id: CallId, (scope, result): FetchResult) {
    let waiters = with_worker(|w| {
        let timeout = w.fetch_timeout;
        let slot = w.key_sets.get_mut(&scope)?;
        let fetch = slot.running.filter(|f| f.id == id)?;
        slot.running = None;
        let report = slot.cache.fetch_done(Instant::now(), fetch, result);
        log_fetch(slot, &report);
        slot.last_error = match report {
            FetchReport::Failed { error, .. } => Some(error),
            _ => None,
        };
        // A fetch for an unknown kid that failed may be retried for the waiters' sake.
        if let Some(next) = slot.cache.poll(Instant::now()) {
            start_fetch(slot, next, timeout);
        }
        arm_refresh(slot);
        Some(std::mem::take(&mut slot.waiters))
    })
    .flatten()
    .unwrap_or_default();
    // The worker is released: verifying may start other fetches.
    for waiter in waiters {
        // SAFETY: a wait is in a slot's waiter list only while its context is alive: the
        // context's drop removes it.
        unsafe { keys_arrived(waiter) };
    }
}

fn log_fetch(slot: &KeySlot, report: &FetchReport) {
    match report {
        FetchReport::Updated { skipped, .. } if *skipped > 0 => {
            ngx_log_error!(
                    NGX_LOG_INFO,
                    slot.log,
                    "ory_oauth2: {} keys of the JWKS cannot verify tokens and are skipped while fetching keys",
                    skipped
                );
        }
        FetchReport::Failed {
            error,
            kept_keys,
            retry_in,
            ..
        } => {
            let kept = if *kept_keys {
                "the previous keys stay in use"
            } else {
                "no keys yet"
            };
            ngx_log_error!(
                NGX_LOG_ERR,
                slot.log,
                "ory_oauth2: {} while fetching keys, {}, next try in {}s",
                error.describe(&JWKS_ENDPOINT),
                kept,
                retry_in.as_secs().max(1)
            );
        }
        FetchReport::Updated { .. } | FetchReport::Stale => {}
    }
}

pub struct OAuth2Check;

impl Check for OAuth2Check {
    #[inline]
    fn enabled(&self, lcf: &LocConf) -> bool {
        lcf.oauth2.enabled()
    }

    #[inline]
    fn begun(&self, ctx: &RequestCtx) -> bool {
        ctx.oauth2.begun
    }

    #[inline]
    fn counted_in(&self, _lcf: &LocConf, _ctx: &RequestCtx) -> Option<&'static CheckMetrics> {
        metrics()
    }

    #[inline]
    unsafe fn begin(&self, r: *mut ngx_http_request_t, lcf: &LocConf, ctx: *mut RequestCtx) {
        (*ctx).oauth2.begun = true;
        if let Some(call) = find_answer(r, lcf, ctx) {
            if let Some(parked) = (*ctx).oauth2.parked.as_deref_mut() {
                let wait = &raw mut parked.wait;
                Wait::park(wait, ctx, call, lcf.oauth2.timeout, on_timeout);
            }
        }
    }

    #[inline]
    unsafe fn decide(
        &self,
        r: *mut ngx_http_request_t,
        lcf: &LocConf,
        ctx: &mut RequestCtx,
    ) -> Decision {
        let state = &ctx.oauth2;
        let outcome = state.outcome.unwrap_or(Outcome::Internal);
        let challenge = match (outcome, state.challenge) {
            (Outcome::Unauthenticated, Answer::NoToken) => Challenge::NoToken,
            (Outcome::Unauthenticated, _) => Challenge::InvalidToken,
            (Outcome::Forbidden, _) => Challenge::InsufficientScope {
                scope: lcf.oauth2.rules.required_scope(),
            },
            _ => return Decision::of(outcome),
        };
        let value = www_authenticate(challenge, None);
        if headers::add_header_out(r, "WWW-Authenticate", value.as_bytes()).is_none() {
            return Decision::Refuse(Outcome::Internal);
        }
        Decision::of(outcome)
    }
}

/// Records the outcome of the check, logging why when it is not allowed.
unsafe fn conclude(
    r: *mut ngx_http_request_t,
    state: &mut OAuth2State,
    outcome: Outcome,
    answer: Answer,
    reason: &str,
) {
    if outcome != Outcome::Allowed {
        log::outcome(r, &CHECKING_OAUTH2, outcome, reason);
    }
    state.outcome = Some(outcome);
    state.challenge = answer;
}

/// The first look at the request's token: decides, or returns the call to wait for (an
/// introspection, or a key-set fetch).
unsafe fn find_answer(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    ctx: *mut RequestCtx,
) -> Option<CallId> {
    let conf = &lcf.oauth2;
    let state = &mut (*ctx).oauth2;
    let value = request::authorization(r).and_then(bearer_of).filter(|v| {
        // A Kratos session token is the session check's, when the location has one.
        !(lcf.session.enabled() && is_session_token(v))
    });
    let Some(value) = value else {
        // Where sessions are taken too, the driver logs when neither finds a credential.
        let reason = if lcf.session.enabled() {
            ""
        } else {
            "no bearer token in the request"
        };
        conclude(r, state, Outcome::Unauthenticated, Answer::NoToken, reason);
        return None;
    };
    state.took_token = true;
    let found = with_worker(|w| {
        let key = match zoned(&mut w.tokens, lcf.cache) {
            Some((front, _)) => front.hasher.key(conf.scope, TAG_TOKEN, b"", value),
            None => w.tokens.table.hasher.key(conf.scope, TAG_TOKEN, b"", value),
        };
        look_up(w, conf, state, lcf.cache, key).unwrap_or_else(|| {
            // Read on a miss only: what the answer is stored with.
            let place = Place::of(lcf, &mut w.tokens);
            check_token(r, w, conf, state, value, place, key)
        })
    });
    match found {
        Some(Found::Answer(outcome, answer, reason)) => {
            let state = &mut (*ctx).oauth2;
            conclude(r, state, outcome, answer, reason);
            None
        }
        Some(Found::Reason(outcome, answer, reason)) => {
            let state = &mut (*ctx).oauth2;
            conclude(r, state, outcome, answer, &reason);
            None
        }
        Some(Found::Waits(call, waiting)) => {
            if let Some(parked) = (*ctx).oauth2.parked.as_deref_mut() {
                parked.waiting = waiting;
            }
            Some(call)
        }
        None => {
            let state = &mut (*ctx).oauth2;
            conclude(
                r,
                state,
                Outcome::Internal,
                Answer::InvalidToken,
                "the OAuth2 client is not running in this worker",
            );
            None
        }
    }
}

/// The cache's answer for the token, if it has one; `zone` is the location's (`ory_cache`).
#[inline(always)]
fn look_up(
    w: &mut Worker,
    conf: &OAuth2Conf,
    state: &mut OAuth2State,
    zone: usize,
    key: CacheKey,
) -> Option<Found> {
    let in_zone = zoned(&mut w.tokens, zone).is_some();
    let bypass = !(in_zone || w.tokens.table.caching()) || conf.cache_ttl == 0;
    let (now, ttl, negative_ttl) = (now_ms(), conf.cache_ttl as u64, conf.negative_ttl as u64);
    let lookup = match zoned(&mut w.tokens, zone) {
        Some((front, shared)) => front.lookup(shared, key, now, ttl, negative_ttl, decode).0,
        None => {
            let lookup = w.tokens.table.cache.lookup(key, now, ttl, negative_ttl);
            if matches!(lookup, Lookup::Expired) {
                w.tokens.table.report_cache();
            }
            lookup
        }
    };
    let cached = matches!(lookup, Lookup::Hit(_) | Lookup::NegativeHit);
    if !bypass {
        if let Some(m) = w.tokens.table.metrics {
            m.cache_lookup(cached);
        }
    }
    state.cache_status = match lookup {
        Lookup::Hit(_) | Lookup::NegativeHit => CacheStatus::Hit,
        _ if bypass => CacheStatus::Bypass,
        Lookup::Expired => CacheStatus::Expired,
        Lookup::Miss => CacheStatus::Miss,
    };
    match lookup {
        Lookup::Hit(verified) => {
            let (outcome, answer) = verdict(&verified);
            state.verified = Some(verified);
            Some(Found::Answer(
                outcome,
                answer,
                "the token lacks a required scope (cached)",
            ))
        }
        Lookup::NegativeHit => Some(Found::Answer(
            Outcome::Unauthenticated,
            Answer::InvalidToken,
            "the token was refused (cached)",
        )),
        Lookup::Expired | Lookup::Miss => None,
    }
}

/// A token no entry knows: checked as a token can hold, then verified (a JWT) or
/// introspected.
#[cold]
#[inline(never)]
unsafe fn check_token(
    r: *mut ngx_http_request_t,
    w: &mut Worker,
    conf: &OAuth2Conf,
    state: &mut OAuth2State,
    value: &[u8],
    place: Place,
    key: CacheKey,
) -> Found {
    let token = match BearerToken::parse(value) {
        Ok(token) => token,
        Err(e) => return Found::Answer(Outcome::Unauthenticated, Answer::InvalidToken, e.as_str()),
    };
    if token.is_session_token() {
        // A Kratos session token (the location takes no sessions): never sent to Hydra, a
        // secret goes only to the service that checks it.
        return Found::Answer(
            Outcome::Unauthenticated,
            Answer::InvalidToken,
            "a Kratos session token is no OAuth2 access token",
        );
    }
    match (token.shape(), &conf.jwks_url, &conf.introspection_url) {
        (TokenShape::Jwt, Some(_), _) => {
            let waiter = parked_wait(state);
            verify_jwt(w, conf, token.as_str(), place, key, waiter, state)
        }
        (_, _, Some(_)) => {
            let waiter = parked_wait(state);
            start_introspection(r, w, conf, token.as_str(), place, key, waiter)
        }
        (TokenShape::Opaque, _, None) => Found::Answer(
            Outcome::Unauthenticated,
            Answer::InvalidToken,
            "the token is no JWT and no ory_oauth2_introspection_url is set",
        ),
        (TokenShape::Jwt, None, None) => Found::Answer(
            Outcome::Internal,
            Answer::InvalidToken,
            "no endpoint to check the token",
        ),
    }
}

/// The wait a request parks with, made on its first miss.
fn parked_wait(state: &mut OAuth2State) -> *mut Wait {
    &mut state.parked.get_or_insert_with(Default::default).wait
}

enum Found {
    Answer(Outcome, Answer, &'static str),
    Reason(Outcome, Answer, String),
    Waits(CallId, Waiting),
}

/// The outcome a verified token leads to here.
fn verdict(verified: &Verified) -> (Outcome, Answer) {
    match verified.missing_scope {
        None => (Outcome::Allowed, Answer::InvalidToken),
        Some(_) => (Outcome::Forbidden, Answer::InsufficientScope),
    }
}

/// Judges claims by the location's rules and caches the result until the token expires.
fn judge_claims(
    w: &mut Worker,
    rules: &Rules,
    place: Place,
    key: CacheKey,
    claims: Claims,
) -> (Outcome, Answer, String, Option<Rc<Verified>>) {
    match rules.check(&claims, unix_now()) {
        Err(Refusal::InvalidToken(reason)) => {
            remember_refusal(w, place, key);
            (
                Outcome::Unauthenticated,
                Answer::InvalidToken,
                reason.into(),
                None,
            )
        }
        result => {
            let missing_scope = match &result {
                Err(Refusal::InsufficientScope { missing }) => Some(missing.clone()),
                _ => None,
            };
            let reason = result.err().map_or(String::new(), |r| r.to_string());
            let until = claims.exp.map_or(0, |exp| {
                u64::try_from(exp).unwrap_or(0).saturating_mul(1000)
            });
            let verified = Rc::new(Verified {
                claims,
                missing_scope,
            });
            remember(w, place, key, &verified, until);
            let (outcome, answer) = verdict(&verified);
            (outcome, answer, reason, Some(verified))
        }
    }
}

/// A JWT: verified now if the worker has the keys, else the request waits for them.
unsafe fn verify_jwt(
    w: &mut Worker,
    conf: &OAuth2Conf,
    token: &str,
    place: Place,
    key: CacheKey,
    waiter: *mut Wait,
    state: &mut OAuth2State,
) -> Found {
    let timeout = w.fetch_timeout;
    let Some(slot) = w.key_sets.get_mut(&conf.jwks_scope) else {
        return Found::Answer(
            Outcome::Internal,
            Answer::InvalidToken,
            "the key set of ory_oauth2_jwks_url is not loaded in this worker",
        );
    };
    let now = Instant::now();
    let keys = match slot.cache.for_request(now) {
        KeysFor::Ready(keys) => keys,
        KeysFor::Wait => return wait_for_keys(conf, slot, token, place, key, waiter, state),
        KeysFor::Start(fetch) => {
            start_fetch(slot, fetch, timeout);
            return wait_for_keys(conf, slot, token, place, key, waiter, state);
        }
        KeysFor::Unavailable => {
            return Found::Reason(
                slot.last_error
                    .as_ref()
                    .map_or(Outcome::BadGateway, CallError::outcome),
                Answer::InvalidToken,
                format!(
                    "no keys to verify the token: {}",
                    slot.last_error
                        .as_ref()
                        .map_or("the JWKS endpoint has not answered".into(), |e| e
                            .describe(&JWKS_ENDPOINT))
                ),
            )
        }
    };
    let signatures = status::metrics().map(|m| &m.jwt_signatures);
    let result = verify_timed(token, &keys, |took| {
        if let Some(m) = signatures {
            m.checked(took);
        }
    });
    match result {
        Ok(claims) => {
            let (outcome, answer, reason, verified) =
                judge_claims(w, &conf.rules, place, key, claims);
            state.verified = verified;
            Found::Reason(outcome, answer, reason)
        }
        Err(JwtError::UnknownKid) => match slot.cache.on_unknown_kid(now) {
            KidDecision::Wait => wait_for_keys(conf, slot, token, place, key, waiter, state),
            KidDecision::Start(fetch) => {
                start_fetch(slot, fetch, timeout);
                wait_for_keys(conf, slot, token, place, key, waiter, state)
            }
            KidDecision::Refuse => Found::Answer(
                Outcome::Unauthenticated,
                Answer::InvalidToken,
                "the token's key is not in the JWKS",
            ),
            KidDecision::Unavailable => Found::Reason(
                slot.last_error
                    .as_ref()
                    .map_or(Outcome::BadGateway, CallError::outcome),
                Answer::InvalidToken,
                "the token's key is unknown and the JWKS endpoint failed".into(),
            ),
        },
        Err(e) => {
            remember_refusal(w, place, key);
            Found::Answer(Outcome::Unauthenticated, Answer::InvalidToken, e.as_str())
        }
    }
}

fn wait_for_keys(
    conf: &OAuth2Conf,
    slot: &mut KeySlot,
    token: &str,
    place: Place,
    key: CacheKey,
    waiter: *mut Wait,
    state: &mut OAuth2State,
) -> Found {
    let Some(fetch) = slot.running else {
        return Found::Answer(
            Outcome::Internal,
            Answer::InvalidToken,
            "the OAuth2 client is not running in this worker",
        );
    };
    slot.waiters.push(waiter);
    if let Some(parked) = state.parked.as_deref_mut() {
        parked.pending_jwt = Some((token.into(), key, place));
    }
    Found::Waits(fetch.id, Waiting::Keys(conf.jwks_scope))
}

/// The keys a request waited for have come (or the fetch failed): verify its token again.
unsafe fn keys_arrived(waiter: *mut Wait) {
    if (*waiter).call.is_none() {
        return;
    }
    let ctx = (*waiter).ctx;
    let r = (*ctx).request;
    let Some(lcf) = super::access::location_conf(r) else {
        return;
    };
    let conf = &lcf.oauth2;
    let state = &mut (*ctx).oauth2;
    let Some((token, key, place)) = state
        .parked
        .as_deref_mut()
        .and_then(|p| p.pending_jwt.take())
    else {
        return;
    };
    let found = with_worker(|w| verify_jwt(w, conf, &token, place, key, waiter, state));
    let state = &mut (*ctx).oauth2;
    match found {
        Some(Found::Waits(call, waiting)) => {
            // Waits again, on the refetch its unknown kid started: same wait, same timer.
            if let Some(parked) = state.parked.as_deref_mut() {
                parked.waiting = waiting;
            }
            (*waiter).call = Some(call);
        }
        Some(Found::Answer(outcome, answer, reason)) => {
            state.set_waiting(Waiting::Nothing);
            conclude(r, state, outcome, answer, reason);
            Wait::unpark(waiter);
        }
        Some(Found::Reason(outcome, answer, reason)) => {
            state.set_waiting(Waiting::Nothing);
            conclude(r, state, outcome, answer, &reason);
            Wait::unpark(waiter);
        }
        None => {
            state.set_waiting(Waiting::Nothing);
            conclude(
                r,
                state,
                Outcome::Internal,
                Answer::InvalidToken,
                "the OAuth2 client is not running in this worker",
            );
            Wait::unpark(waiter);
        }
    }
}

/// What one introspection returns, with the rules it is judged by.
type IntrospectionResult = (Arc<Rules>, Result<Introspection, CallError>);

/// Joins the introspection in flight for this token (under these rules), or starts one.
unsafe fn start_introspection(
    r: *mut ngx_http_request_t,
    w: &mut Worker,
    conf: &OAuth2Conf,
    token: &str,
    place: Place,
    key: CacheKey,
    waiter: *mut Wait,
) -> Found {
    let Some(url) = conf.introspection_url.clone() else {
        return Found::Answer(
            Outcome::Internal,
            Answer::InvalidToken,
            "no introspection URL",
        );
    };
    let headers = conf
        .introspection_headers
        .clone()
        .unwrap_or_else(|| Vec::new().into());
    let rules = conf.rules.clone();
    let timeout = w.tokens.table.call_timeout;
    let token = token.to_owned();
    let (zone, generation) = (place.zone, place.generation);
    let calls = &mut w.tokens.table.calls;
    let joined = calls.join_or_start_in(key, zone, generation, waiter, now_ms(), |id| {
        bridge::spawn(
            id,
            conf.trust,
            move |client| async move {
                let answer = introspect(&client, &url, &headers, &token, timeout).await;
                (rules, answer)
            },
            on_introspection_done,
        )
    });
    match joined {
        Ok(Joined::Started(id)) => {
            if let Some(m) = w.tokens.table.metrics {
                m.call_started();
            }
            log::debug!(r, "ory_oauth2: introspection call #{id} started");
            Found::Waits(id, Waiting::Introspection)
        }
        Ok(Joined::Shared(id)) => {
            log::debug!(r, "ory_oauth2: joined introspection call #{id}");
            Found::Waits(id, Waiting::Introspection)
        }
        Err(JoinError::Full) => {
            let reason = if w.tokens.table.log_shed(now_ms()) {
                format!(
                    "{} introspection calls already in flight (ory_session_max_pending), request refused",
                    w.tokens.table.calls.len()
                )
            } else {
                String::new()
            };
            Found::Reason(Outcome::Unavailable, Answer::InvalidToken, reason)
        }
        Err(JoinError::NotStarted) => Found::Answer(
            Outcome::Internal,
            Answer::InvalidToken,
            "the OAuth2 client is not running in this worker",
        ),
    }
}

/// Called by the bridge, on the nginx thread, for every finished introspection.
fn on_introspection_done(id: CallId, (rules, result): IntrospectionResult) {
    let concluded = with_worker(|w| {
        let call = w.tokens.table.calls.complete(id)?;
        let now = now_ms();
        if let Some(m) = w.tokens.table.metrics {
            m.call_ended(Some(now.saturating_sub(call.started_ms)));
        }
        let place = Place {
            zone: call.zone,
            generation: call.generation,
        };
        let judged = match result {
            Err(e) => (e.outcome(), Answer::InvalidToken, e.describe(&HYDRA), None),
            Ok(Introspection::Invalid { reason }) => {
                remember_refusal(w, place, call.key);
                (
                    Outcome::Unauthenticated,
                    Answer::InvalidToken,
                    reason.to_owned(),
                    None,
                )
            }
            Ok(Introspection::Active(claims)) => judge_claims(w, &rules, place, call.key, claims),
        };
        Some((call.waiters, judged))
    })
    .flatten();
    let Some((waiters, (outcome, answer, reason, verified))) = concluded else {
        return;
    };
    for waiter in waiters {
        // SAFETY: a wait is in a call's waiter list only while its context is alive: the
        // context's drop detaches it.
        unsafe {
            let ctx = (*waiter).ctx;
            let state = &mut (*ctx).oauth2;
            state.verified = verified.clone();
            state.set_waiting(Waiting::Nothing);
            conclude((*ctx).request, state, outcome, answer, &reason);
            Wait::unpark(waiter);
        }
    }
}

/// The request waited longer than `ory_oauth2_timeout`.
unsafe extern "C" fn on_timeout(ev: *mut ngx_event_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the timer's data is the wait `Wait::park` armed it for, which is alive:
        // dropping it removes the timer.
        unsafe {
            let wait = (*ev).data.cast::<Wait>();
            let Some(call) = (*wait).call else { return };
            let ctx = (*wait).ctx;
            let waiting = (*ctx)
                .oauth2
                .parked
                .as_ref()
                .map_or(Waiting::Nothing, |p| p.waiting);
            with_worker(|w| match waiting {
                Waiting::Introspection => w.tokens.table.detach(call, wait),
                Waiting::Keys(scope) => {
                    if let Some(slot) = w.key_sets.get_mut(&scope) {
                        slot.waiters.retain(|&p| p != wait);
                    }
                }
                Waiting::Nothing => {}
            });
            let state = &mut (*ctx).oauth2;
            state.set_waiting(Waiting::Nothing);
            let reason = match waiting {
                Waiting::Keys(_) => "the JWKS endpoint did not answer within ory_oauth2_timeout",
                _ => "Hydra did not answer within ory_oauth2_timeout",
            };
            conclude(
                (*ctx).request,
                state,
                Outcome::Timeout,
                Answer::InvalidToken,
                reason,
            );
            Wait::unpark(wait);
        }
    }));
}
