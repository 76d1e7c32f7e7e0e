//! The Kratos session check, as the access driver runs it.
//!
//! The first visit of a request finds its credential and either answers from the worker's
//! cache or parks the request on a whoami call, shared with every request that missed the
//! cache for the same key. The call's answer (or the request's timer) records the outcome and
//! resumes the request; `decide` then applies the rules of the location: the required
//! assurance level, login redirects for browsers, hidden credentials and the cookies Kratos
//! sent.

use std::cell::RefCell;
use std::rc::Rc;

use ngx::ffi::{ngx_event_t, ngx_http_request_t};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tokio::task::AbortHandle;

use super::access::Check;
use super::answers::{self, Answers, Slot};
use super::conf::{LocConf, SessionConf};
use super::context::{now_ms, RequestCtx, Wait};
use super::log::{self, CHECKING_SESSION};
use super::zone::Shared;
use super::{bridge, headers, request, status};
use crate::check::cache::{CacheStatus, Lookup};
use crate::check::decision::{Decision, Outcome};
use crate::check::front::{Front, ZoneAccess};
use crate::check::inflight::{CallId, JoinError, Joined};
use crate::check::key::CacheKey;
use crate::check::metrics::CheckMetrics;
use crate::check::table::Table;
use crate::check::zone::{Ids, Kind};
use crate::oauth2::token::is_session_token;
use crate::session::credential::{self, Credential, CredentialKind, OwnedCredential};
use crate::session::model::{Answer, Session};
use crate::session::{self, browser, stored, whoami, WhoamiResult};

/// The session check's part of a request's context.
#[derive(Default)]
pub struct SessionState {
    /// The session behind the credential; the variables read it.
    pub session: Option<Rc<Session>>,
    pub cache_status: CacheStatus,
    /// How long the whoami call took, for `$ory_session_kratos_time`; none on a cache hit.
    pub kratos_ms: Option<u64>,
    /// None until the check has ended.
    outcome: Option<Outcome>,
    /// Which credential the request carried, for `ory_session_hide_credentials`.
    credential: Option<CredentialKind>,
    /// `Set-Cookie` values from Kratos' answer (a refreshed session cookie).
    set_cookie: Option<Rc<[String]>>,
    /// Kratos' own step-up URL from a 403 answer.
    redirect_browser_to: Option<Rc<str>>,
    /// Credentials hidden and cookies added: done once, even if the phases run again.
    applied: bool,
    wait: Wait,
}

impl SessionState {
    /// The check began: the state may hold a session, or wait for a call.
    pub fn begun(&self) -> bool {
        self.outcome.is_some() || self.wait.call.is_some()
    }

    pub fn allowed(&self) -> bool {
        self.outcome == Some(Outcome::Allowed)
    }

    /// The request carried no session credential.
    pub fn found_nothing(&self) -> bool {
        self.credential.is_none() && self.outcome == Some(Outcome::Unauthenticated)
    }
}

impl Drop for SessionState {
    fn drop(&mut self) {
        if let Some(call) = self.wait.call {
            let waiter: *mut Wait = &mut self.wait;
            with_sessions(|s| s.table.detach(call, waiter));
        }
    }
}

/// The worker's sessions and whoami calls in flight.
type Sessions = Answers<Rc<Session>>;
type SessionTable = Table<Rc<Session>, *mut Wait, AbortHandle>;

thread_local! {
    static SESSIONS: Slot<Rc<Session>> = const { RefCell::new(None) };
}

fn with_sessions<T>(f: impl FnOnce(&mut Sessions) -> T) -> Option<T> {
    answers::with(&SESSIONS, f)
}

fn metrics() -> Option<&'static CheckMetrics> {
    status::metrics().map(|m| &m.session)
}

pub fn init_worker(cache_size: usize, max_pending: usize, call_timeout_ms: u64, zones: &[Shared]) {
    answers::start(
        &SESSIONS,
        Kind::Session,
        cache_size,
        max_pending,
        call_timeout_ms,
        metrics(),
        zones,
    );
}

pub fn shutdown_worker() {
    answers::stop(&SESSIONS);
}

/// The worker's own keys of a credential under every scope in `scopes`, for a logout.
pub fn local_keys(
    scopes: &[crate::check::key::Scope],
    kinds: &[(CredentialKind, &[u8], &[u8])],
) -> Vec<CacheKey> {
    with_sessions(|sessions| {
        let mut keys = Vec::new();
        for scope in scopes {
            for (kind, name, value) in kinds {
                keys.push(
                    sessions
                        .table
                        .hasher
                        .key(*scope, session::tag(*kind), name, value),
                );
            }
        }
        keys
    })
    .unwrap_or_default()
}

/// A logout through this worker: its own cache forgets the credential at once (the zones'
/// front caches learn of it through their zone).
pub fn forget_locally(keys: &[CacheKey]) {
    with_sessions(|sessions| {
        for key in keys {
            sessions.table.cache.remove(*key);
        }
        sessions.table.report_cache();
    });
}

pub struct SessionCheck;

impl Check for SessionCheck {
    #[inline]
    fn enabled(&self, lcf: &LocConf) -> bool {
        lcf.session.enabled()
    }

    #[inline]
    fn begun(&self, ctx: &RequestCtx) -> bool {
        ctx.session.begun()
    }

    #[inline]
    fn counted_in(&self, _lcf: &LocConf, _ctx: &RequestCtx) -> Option<&'static CheckMetrics> {
        metrics()
    }

    #[inline]
    unsafe fn begin(&self, r: *mut ngx_http_request_t, lcf: &LocConf, ctx: *mut RequestCtx) {
        begin(r, lcf, ctx)
    }

    #[inline]
    unsafe fn decide(
        &self,
        r: *mut ngx_http_request_t,
        lcf: &LocConf,
        ctx: &mut RequestCtx,
    ) -> Decision {
        decide(r, lcf, &mut ctx.session)
    }
}

/// How the first visit of a request ended.
enum Begun {
    Decided,
    /// Waits for this whoami call.
    Waits(CallId),
}

/// The first visit of a request: decides at once (no credential, a cache hit, too many calls
/// in flight) or parks the request on a whoami call.
unsafe fn begin(r: *mut ngx_http_request_t, lcf: &LocConf, ctx: *mut RequestCtx) {
    let conf = &lcf.session;
    let begun = find_answer(r, lcf, &mut (*ctx).session);
    if let Begun::Waits(call) = begun {
        let wait = &raw mut (*ctx).session.wait;
        Wait::park(wait, ctx, call, conf.timeout, on_timeout);
    }
}

unsafe fn find_answer(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    state: &mut SessionState,
) -> Begun {
    let Some(credential) = session_credential(r, lcf, state) else {
        return Begun::Decided;
    };
    let conf = &lcf.session;
    let waiter: *mut Wait = &mut state.wait;
    let found = with_sessions(|sessions| -> Result<Begun, String> {
        let Sessions { table, fronts } = sessions;
        // The location's shared zone, when it has one: a front cache of this worker before it.
        let mut zoned = match lcf.cache {
            0 => None,
            n => fronts.get_mut(n - 1),
        };
        let (tag, name, value) = (
            session::tag(credential.kind),
            credential.cookie_name,
            credential.value,
        );
        let key = match &zoned {
            Some((front, _)) => front.hasher.key(conf.scope, tag, name, value),
            None => table.hasher.key(conf.scope, tag, name, value),
        };
        if let Some(answered) = look_up(r, conf, table, &mut zoned, state, &credential, key)? {
            return Ok(answered);
        }
        // A call started before the zone's latest revocation is not joined.
        let zone = match &zoned {
            Some((_, shared)) => (lcf.cache, shared.generation()),
            None => (0, 0),
        };
        Ok(join_call(
            r,
            conf,
            table,
            state,
            &credential,
            key,
            zone,
            waiter,
        ))
    });
    match found {
        Some(Ok(begun)) => begun,
        Some(Err(invalid)) => refuse(r, state, &invalid),
        None => not_running(r, state),
    }
}

/// The request's session credential, or `None` when the check is decided without one.
#[inline(always)]
unsafe fn session_credential<'r>(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    state: &mut SessionState,
) -> Option<Credential<'r>> {
    let tokens_too = lcf.oauth2.enabled();
    // The bytes are checked on a cache miss only (see choose_credential).
    let found = match credential::choose_credential(request::headers(r), lcf.session.cookie()) {
        // Where OAuth2 tokens are taken too, a bearer token is a session's only with
        // Kratos' prefix.
        Ok(Some(c))
            if tokens_too && c.kind == CredentialKind::Bearer && !is_session_token(c.value) =>
        {
            None
        }
        Ok(found) => found,
        Err(err) => {
            refuse(r, state, &err.to_string());
            return None;
        }
    };
    let Some(credential) = found else {
        if tokens_too {
            // The OAuth2 check may find a token; the driver logs when neither finds one.
            state.outcome = Some(Outcome::Unauthenticated);
        } else {
            refuse(r, state, "no session credential in the request");
        }
        return None;
    };
    state.credential = Some(credential.kind);
    Some(credential)
}

/// A location's shared zone and this worker's front cache before it.
type Zoned<'a> = Option<&'a mut (Front<Rc<Session>>, Shared)>;

/// The cache's answer for the credential, if it has one; an error when the credential,
/// which no entry knows, cannot be a credential at all.
#[inline(always)]
unsafe fn look_up(
    r: *mut ngx_http_request_t,
    conf: &SessionConf,
    table: &mut SessionTable,
    zoned: &mut Zoned,
    state: &mut SessionState,
    credential: &Credential,
    key: CacheKey,
) -> Result<Option<Begun>, String> {
    // BYPASS says that sessions are not reused here; rejections follow their own TTL.
    let bypass = !(zoned.is_some() || table.caching()) || conf.cache_ttl == 0;
    log::debug!(
        r,
        "ory_session: {} found, cache {}",
        credential.kind,
        if bypass { "off" } else { "on" }
    );
    let (now, ttl, negative_ttl) = (now_ms(), conf.cache_ttl as u64, conf.negative_ttl as u64);
    let lookup = match zoned {
        Some((front, shared)) => {
            let decode = |bytes: &[u8]| stored::decode(bytes).map(Rc::new);
            front.lookup(shared, key, now, ttl, negative_ttl, decode).0
        }
        None => {
            let lookup = table.cache.lookup(key, now, ttl, negative_ttl);
            if matches!(lookup, Lookup::Expired) {
                // The only lookup that changes the cache: it drops the entry.
                table.report_cache();
            }
            lookup
        }
    };
    let cached = matches!(lookup, Lookup::Hit(_) | Lookup::NegativeHit);
    if !cached {
        // Never cached, so this is no cache miss either.
        credential.check_bytes().map_err(|e| e.to_string())?;
    }
    if !bypass {
        if let Some(m) = table.metrics {
            m.cache_lookup(cached);
        }
    }
    state.cache_status = match lookup {
        Lookup::Hit(_) | Lookup::NegativeHit => CacheStatus::Hit,
        _ if bypass => CacheStatus::Bypass,
        Lookup::Expired => CacheStatus::Expired,
        Lookup::Miss => CacheStatus::Miss,
    };
    Ok(match lookup {
        Lookup::Hit(session) => {
            state.session = Some(session);
            state.outcome = Some(Outcome::Allowed);
            Some(Begun::Decided)
        }
        Lookup::NegativeHit => Some(decided(
            r,
            state,
            Outcome::Unauthenticated,
            "Kratos rejected the session (cached)",
        )),
        Lookup::Expired | Lookup::Miss => None,
    })
}

/// Joins the whoami call in flight for `key`, or starts one: the miss path, kept out of
/// the hit path's code. `(zone, generation)` is the location's zone and its revocation
/// generation now (0 without a zone).
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn join_call(
    r: *mut ngx_http_request_t,
    conf: &SessionConf,
    table: &mut SessionTable,
    state: &mut SessionState,
    credential: &Credential,
    key: CacheKey,
    (zone, generation): (usize, u64),
    waiter: *mut Wait,
) -> Begun {
    let call_timeout = table.call_timeout;
    let joined = table
        .calls
        .join_or_start_in(key, zone, generation, waiter, now_ms(), |id| {
            let Some(url) = conf.whoami.clone() else {
                return None; // merge_loc_conf refuses `ory_session on` without a URL
            };
            let credential = OwnedCredential::from(credential);
            bridge::spawn(
                id,
                conf.trust,
                move |client| async move {
                    whoami::whoami(&client, &url, &credential, call_timeout).await
                },
                on_whoami_done,
            )
        });
    match joined {
        Ok(Joined::Started(id)) => {
            if let Some(m) = table.metrics {
                m.call_started();
            }
            log::debug!(r, "ory_session: whoami call #{id} started");
            Begun::Waits(id)
        }
        Ok(Joined::Shared(id)) => {
            log::debug!(r, "ory_session: joined whoami call #{id}");
            Begun::Waits(id)
        }
        Err(JoinError::Full) => shed(r, table, state),
        Err(JoinError::NotStarted) => not_running(r, state),
    }
}

unsafe fn decided(
    r: *mut ngx_http_request_t,
    state: &mut SessionState,
    outcome: Outcome,
    reason: &str,
) -> Begun {
    log::outcome(r, &CHECKING_SESSION, outcome, reason);
    state.outcome = Some(outcome);
    Begun::Decided
}

/// A refusal decided without asking Kratos (no credential, or one that cannot be valid).
unsafe fn refuse(r: *mut ngx_http_request_t, state: &mut SessionState, reason: &str) -> Begun {
    decided(r, state, Outcome::Unauthenticated, reason)
}

unsafe fn not_running(r: *mut ngx_http_request_t, state: &mut SessionState) -> Begun {
    decided(
        r,
        state,
        Outcome::Internal,
        "the Kratos client is not running in this worker",
    )
}

/// Too many calls in flight: answer 503 at once instead of queueing without bound. The log
/// line is limited to one a second, since a flood is exactly when it would repeat.
unsafe fn shed(
    r: *mut ngx_http_request_t,
    sessions: &mut Table<Rc<Session>, *mut Wait, AbortHandle>,
    state: &mut SessionState,
) -> Begun {
    if sessions.log_shed(now_ms()) {
        let reason = format!(
            "{} whoami calls already in flight (ory_session_max_pending), request refused",
            sessions.calls.len()
        );
        log::outcome(r, &CHECKING_SESSION, Outcome::Unavailable, &reason);
    }
    state.outcome = Some(Outcome::Unavailable);
    Begun::Decided
}

/// Called by the bridge, on the nginx thread, for every finished whoami call.
fn on_whoami_done(id: CallId, result: WhoamiResult) {
    let (outcome, reason) = session::judge(&result);
    with_sessions(|sessions| {
        let Sessions { table, fronts } = sessions;
        // Gone when every waiter left first (and the call was cancelled).
        let Some(call) = table.calls.complete(id) else {
            return;
        };
        let now = now_ms();
        let kratos_ms = now.saturating_sub(call.started_ms);
        if let Some(m) = table.metrics {
            m.call_ended(Some(kratos_ms));
        }
        let mut zoned = match call.zone {
            0 => None,
            n => fronts.get_mut(n - 1),
        };
        let mut set_cookie: Option<Rc<[String]>> = None;
        let mut redirect_browser_to: Option<Rc<str>> = None;
        let session = match result {
            Ok(Answer::Active {
                session,
                cache_for_ms,
                set_cookie: cookies,
            }) => {
                let until = session::cache_until(&session, cache_for_ms, now);
                let session = Rc::new(session);
                match &mut zoned {
                    Some((front, shared)) => {
                        let bytes = stored::encode(&session);
                        let ids = Ids {
                            session: session.id.as_bytes(),
                            identity: session.user_id.as_bytes(),
                        };
                        // Not stored when a revocation since the call started matches the
                        // session: its waiters all came before the revocation, and later
                        // requests ask Kratos again.
                        front.store(
                            shared,
                            call.key,
                            call.generation,
                            session.clone(),
                            &bytes,
                            ids,
                            now,
                            until,
                        );
                    }
                    None => table.cache.insert(call.key, session.clone(), now, until),
                }
                if !cookies.is_empty() {
                    set_cookie = Some(cookies.into());
                }
                Some(session)
            }
            Ok(Answer::Unauthenticated { .. }) => {
                match &mut zoned {
                    Some((front, shared)) => front.store_negative(shared, call.key, now),
                    None => table.cache.insert_negative(call.key, now),
                }
                None
            }
            Ok(Answer::AalRequired {
                redirect_browser_to: url,
            }) => {
                redirect_browser_to = url.map(Into::into);
                None
            }
            Err(_) => None,
        };
        table.report_cache();

        for waiter in call.waiters {
            // SAFETY: a wait is in a call's waiter list only while its context is alive: the
            // context's drop detaches it.
            unsafe {
                let ctx = (*waiter).ctx;
                let r = (*ctx).request;
                log::debug!(r, "ory_session: whoami call #{id} done: {outcome:?}");
                let state = &mut (*ctx).session;
                state.outcome = Some(outcome);
                state.session = session.clone();
                state.set_cookie = set_cookie.clone();
                state.kratos_ms = Some(kratos_ms);
                state.redirect_browser_to = redirect_browser_to.clone();
                if outcome != Outcome::Allowed {
                    log::outcome(r, &CHECKING_SESSION, outcome, &reason);
                }
                Wait::unpark(waiter);
            }
        }
    });
}

/// The request waited longer than `ory_session_timeout`.
unsafe extern "C" fn on_timeout(ev: *mut ngx_event_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the timer's data is the wait `Wait::park` armed it for, which is alive:
        // dropping it removes the timer.
        unsafe {
            let wait = (*ev).data.cast::<Wait>();
            let Some(call) = (*wait).call else { return };
            let started = with_sessions(|sessions| {
                let started = sessions.table.calls.get(call).map(|c| c.started_ms);
                sessions.table.detach(call, wait);
                started
            })
            .flatten();
            let ctx = (*wait).ctx;
            (*ctx).session.kratos_ms = started.map(|t| now_ms().saturating_sub(t));
            (*ctx).session.outcome = Some(Outcome::Timeout);
            log::outcome(
                (*ctx).request,
                &CHECKING_SESSION,
                Outcome::Timeout,
                "Kratos did not answer within ory_session_timeout",
            );
            Wait::unpark(wait);
        }
    }));
}

/// What nginx does with the request once the check has ended, under the rules of the
/// current location (after an internal redirect, another location's).
///
unsafe fn decide(r: *mut ngx_http_request_t, lcf: &LocConf, state: &mut SessionState) -> Decision {
    let conf = &lcf.session;
    let Some(outcome) = state.outcome else {
        return Decision::Refuse(Outcome::Internal);
    };
    match outcome {
        Outcome::Allowed => {
            let rank = state.session.as_ref().map_or(0, |s| s.aal_rank);
            if rank < conf.aal as u8 {
                if !state.applied {
                    state.applied = true;
                    let aal = state.session.as_ref().map_or("", |s| &s.aal);
                    let reason = format!(
                        "session authenticator assurance level \"{aal}\" is below the required \"aal{}\"",
                        conf.aal
                    );
                    log::outcome(r, &CHECKING_SESSION, Outcome::Forbidden, &reason);
                }
                return redirect_or(r, conf, Some("aal2"), None, Outcome::Forbidden);
            }
            if !state.applied {
                state.applied = true;
                if conf.hide_credentials == 1 {
                    if let Some(kind) = state.credential {
                        headers::hide_credentials(r, kind, conf.cookie());
                    }
                }
                for cookie in state.set_cookie.iter().flat_map(|c| c.iter()) {
                    if headers::add_header_out(r, "Set-Cookie", cookie.as_bytes()).is_none() {
                        return Decision::Refuse(Outcome::Internal);
                    }
                }
            }
            Decision::Continue
        }
        Outcome::Unauthenticated => redirect_or(r, conf, None, None, outcome),
        Outcome::Forbidden => {
            let kratos_url = state.redirect_browser_to.clone();
            redirect_or(r, conf, Some("aal2"), kratos_url.as_deref(), outcome)
        }
        other => Decision::Refuse(other),
    }
}

/// A browser navigation goes to the login page (`ory_session_login_url`, or for a step-up
/// the URL Kratos named), with `return_to` set; any other client gets the plain refusal.
unsafe fn redirect_or(
    r: *mut ngx_http_request_t,
    conf: &SessionConf,
    aal: Option<&str>,
    kratos_url: Option<&str>,
    outcome: Outcome,
) -> Decision {
    let refused = Decision::Refuse(outcome);
    if !request::header(r, b"accept").is_some_and(browser::prefers_html) {
        return refused;
    }
    let login = if conf.login_url.is_null() {
        match kratos_url {
            Some(url) => url.to_owned(),
            None => return refused,
        }
    } else {
        match request::complex_value(r, conf.login_url) {
            Some(url) if !url.is_empty() => String::from_utf8_lossy(url).into_owned(),
            _ => return refused,
        }
    };
    let return_to = if conf.return_to.is_null() {
        request::own_url(r)
    } else {
        request::complex_value(r, conf.return_to)
            .unwrap_or_default()
            .to_vec()
    };
    let location = browser::login_location(&login, &return_to, aal);
    if headers::add_header_out(r, "Location", location.as_bytes()).is_none() {
        return Decision::Refuse(Outcome::Internal);
    }
    Decision::Redirect
}
