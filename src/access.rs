//! The access-phase handler: a state machine over a per-request context, in the shape of
//! nginx's auth_request module. The first visit finds the credential and either answers from
//! the cache or parks the request on a whoami call; the call's result (or the request's
//! timer) records the decision and posts the request's write event, which runs the phases
//! again and brings us back here to return the decision.
//!
//! Everything in this file runs on the nginx thread of a worker.

use core::ffi::c_void;
use core::mem;
use core::ptr;
use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use ngx::ffi::{
    ngx_del_timer, ngx_delete_posted_event, ngx_event_t, ngx_http_complex_value,
    ngx_http_complex_value_t, ngx_http_request_t, ngx_int_t, ngx_pool_cleanup_add,
    ngx_pool_cleanup_t, ngx_post_event, ngx_posted_events, ngx_str_t, ngx_timeofday, NGX_AGAIN,
    NGX_DECLINED, NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SEE_OTHER,
    NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::ffi::{ngx_http_block_reading, ngx_http_test_reading};
use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleServerConf, NgxHttpCoreModule, Request,
};
use ngx::{ngx_log_debug_mask, ngx_log_error};

use crate::bridge::{self, CallId, CallParams, WhoamiResult};
use crate::cache::{CacheKey, KeyHasher, Lookup, SessionCache};
use crate::conf::LocConf;
use crate::credential::{self, CredentialKind, OwnedCredential};
use crate::decision::{self, Outcome};
use crate::kratos::{Answer, Session};
use crate::metrics::Decision;
use crate::HttpOrySessionModule;
use crate::{browser, headers, status};

type WaiterId = u64;

/// How the cache took part in a decision, for `$ory_session_cache_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// No credential, so nothing to look up.
    None,
    Hit,
    Miss,
    Expired,
    /// Caching is off for this request (`ory_session_cache_size 0` or a TTL of 0).
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

#[derive(Clone, Copy)]
enum State {
    Pending { call: CallId, waiter: WaiterId },
    Done(Outcome),
}

/// Per-request context. Lives in the request pool (see `attach_ctx`), so it is dropped when
/// the request is freed however that happens; its `Drop` unhooks it from the worker tables
/// and removes its timer, which is what makes aborted and timed-out requests safe.
pub struct RequestCtx {
    request: *mut ngx_http_request_t,
    state: State,
    pub session: Option<Rc<Session>>,
    pub cache_status: CacheStatus,
    /// Which credential the request carried, for `ory_session_hide_credentials`.
    kind: Option<CredentialKind>,
    /// `Set-Cookie` values from Kratos' answer (a refreshed session cookie).
    set_cookie: Option<Rc<[String]>>,
    /// Kratos' own step-up URL from a 403 answer.
    redirect_browser_to: Option<Rc<str>>,
    /// Credentials hidden and cookies added: done once, even if the phases run again.
    applied: bool,
    /// The decision was counted in the shared metrics.
    counted: bool,
    /// How long the whoami call took, for `$ory_session_kratos_time`; none on a cache hit.
    pub kratos_ms: Option<u64>,
    /// Bounds the wait for Kratos. Not cancelable: a worker shutting down gracefully waits
    /// for parked requests instead of dropping them.
    timer: ngx_event_t,
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        // SAFETY: the timer event lives inside this context and is only ever armed or posted
        // by this module; nginx's timer tree and posted queue must not keep pointing at it.
        unsafe {
            if self.timer.timer_set() != 0 {
                ngx_del_timer(&mut self.timer);
            }
            if self.timer.posted() != 0 {
                ngx_delete_posted_event(&mut self.timer);
            }
        }
        if let State::Pending { call, waiter } = self.state {
            WORKER.with(|w| {
                if let Some(w) = w.borrow_mut().as_mut() {
                    w.detach(call, waiter);
                }
            });
        }
    }
}

/// One whoami call in flight and the requests parked on it.
struct Call {
    key: CacheKey,
    waiters: Vec<WaiterId>,
    abort: tokio::task::AbortHandle,
    started_ms: u64,
}

/// Worker-local state: the cache, the calls in flight and the parked requests.
struct Worker {
    cache: SessionCache<Rc<Session>>,
    caching: bool,
    hasher: KeyHasher,
    calls: HashMap<CallId, Call>,
    by_key: HashMap<CacheKey, CallId>,
    waiters: HashMap<WaiterId, *mut RequestCtx>,
    next_id: u64,
    max_pending: usize,
    last_shed_log_ms: u64,
    reported_len: usize,
    reported_evictions: u64,
    call_timeout_ms: u64,
}

impl Worker {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Removes a parked request from its call; the last one gone cancels the call.
    fn detach(&mut self, call_id: CallId, waiter: WaiterId) {
        self.waiters.remove(&waiter);
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        call.waiters.retain(|w| *w != waiter);
        if call.waiters.is_empty() {
            call.abort.abort();
            let key = call.key;
            self.calls.remove(&call_id);
            self.by_key.remove(&key);
            if let Some(m) = status::metrics() {
                m.call_ended(None);
            }
        }
    }

    /// Reports this worker's cache size and evictions to the shared counters as changes.
    fn report_cache(&mut self) {
        let (len, evictions) = (self.cache.len(), self.cache.evictions());
        if let Some(m) = status::metrics() {
            m.cache_changed(
                len as i64 - self.reported_len as i64,
                evictions - self.reported_evictions,
            );
        }
        (self.reported_len, self.reported_evictions) = (len, evictions);
    }
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Sets up the worker's tables; called from `init_process` once the bridge runs.
pub fn init_worker(cache_size: usize, max_pending: usize, call_timeout_ms: u64) {
    let worker = Worker {
        cache: SessionCache::new(cache_size),
        caching: cache_size > 0,
        hasher: KeyHasher::new_random(),
        calls: HashMap::new(),
        by_key: HashMap::new(),
        waiters: HashMap::new(),
        next_id: 0,
        max_pending,
        last_shed_log_ms: 0,
        reported_len: 0,
        reported_evictions: 0,
        call_timeout_ms,
    };
    WORKER.with(|w| *w.borrow_mut() = Some(worker));
}

pub fn shutdown_worker() {
    WORKER.with(|w| {
        if let Some(mut w) = w.borrow_mut().take() {
            // This worker's entries leave the shared count with it.
            w.cache = SessionCache::new(0);
            w.report_cache();
        }
    });
}

fn now_ms() -> u64 {
    let tp = ngx_timeofday();
    tp.sec as u64 * 1000 + tp.msec as u64
}

/// The access-phase handler registered in postconfiguration.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: forwarded from nginx; a panic must never unwind into C.
    match catch_unwind(AssertUnwindSafe(|| unsafe { check(r) })) {
        Ok(rc) => rc,
        Err(_) => {
            // SAFETY: r is valid for the duration of the handler.
            unsafe { log(r, Outcome::Internal, "internal error (panic)") };
            NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
        }
    }
}

fn rc_of(outcome: Outcome) -> ngx_int_t {
    match outcome {
        Outcome::Allowed => NGX_OK as ngx_int_t,
        other => other.status() as ngx_int_t,
    }
}

unsafe fn check(r: *mut ngx_http_request_t) -> ngx_int_t {
    let request = Request::from_ngx_http_request(r);
    let Some(lcf) = HttpOrySessionModule::location_conf(request) else {
        return NGX_DECLINED as ngx_int_t;
    };
    if !lcf.enabled() || r != (*r).main {
        return NGX_DECLINED as ngx_int_t;
    }

    if let Some(ctx) = find_ctx(r) {
        return match ctx.state {
            State::Pending { .. } => NGX_AGAIN as ngx_int_t,
            State::Done(_) => finish(r, lcf, ctx),
        };
    }

    let headers = request
        .headers_in_iterator()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    // The bytes are checked on a cache miss only (see choose_credential).
    let credential = match credential::choose_credential(headers, lcf.cookie()) {
        Ok(Some(credential)) => credential,
        Ok(None) => {
            return refuse_locally(
                r,
                lcf,
                CacheStatus::None,
                "no session credential in the request",
            )
        }
        Err(err) => return refuse_locally(r, lcf, CacheStatus::None, &err.to_string()),
    };
    let Some(whoami) = lcf.kratos.as_ref() else {
        // merge_loc_conf refuses `ory_session on` without a URL
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };

    let step = WORKER.with(|w| {
        let mut w = w.borrow_mut();
        let Some(w) = w.as_mut() else {
            log(
                r,
                Outcome::Internal,
                "the Kratos client is not running in this worker",
            );
            return Step::Return(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
        };
        let key = w.hasher.key(
            credential.kind,
            credential.cookie_name,
            credential.value,
            lcf.kratos_scope,
        );

        let mut cache_status = CacheStatus::Miss;
        // BYPASS says that sessions are not reused here; rejections follow their own TTL.
        if !w.caching || lcf.cache_ttl == 0 {
            cache_status = CacheStatus::Bypass;
        }
        debug(
            r,
            format_args!(
                "ory_session: {} found, cache {}",
                credential.kind,
                if cache_status == CacheStatus::Bypass {
                    "off"
                } else {
                    "on"
                }
            ),
        );
        let lookup = w
            .cache
            .lookup(key, now_ms(), lcf.cache_ttl as u64, lcf.negative_ttl as u64);
        w.report_cache();
        let cached = matches!(lookup, Lookup::Hit(_) | Lookup::NegativeHit);
        if !cached {
            if let Err(err) = credential.check_bytes() {
                // Never cached, so this is no cache miss either.
                return Step::Invalid(err);
            }
        }
        if let Some(m) = status::metrics() {
            if cache_status != CacheStatus::Bypass {
                m.cache_lookup(cached);
            }
        }
        match lookup {
            Lookup::Hit(session) => {
                return match attach_ctx(r, State::Done(Outcome::Allowed), CacheStatus::Hit) {
                    Some(ctx) => {
                        (*ctx).session = Some(session);
                        (*ctx).kind = Some(credential.kind);
                        Step::Decided(ctx)
                    }
                    None => Step::Return(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t),
                };
            }
            Lookup::NegativeHit => {
                let Some(ctx) =
                    attach_ctx(r, State::Done(Outcome::Unauthenticated), CacheStatus::Hit)
                else {
                    return Step::Return(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
                };
                log(
                    r,
                    Outcome::Unauthenticated,
                    "Kratos rejected the session (cached)",
                );
                return Step::Decided(ctx);
            }
            Lookup::Expired if cache_status != CacheStatus::Bypass => {
                cache_status = CacheStatus::Expired
            }
            Lookup::Expired | Lookup::Miss => {}
        }

        // Join the call already in flight for this key, or start one.
        let call_id = match w.by_key.get(&key) {
            None => {
                if w.calls.len() >= w.max_pending {
                    return shed(w, r, cache_status);
                }
                let id = w.next_id();
                let params = CallParams {
                    url: whoami.clone(),
                    // Requests with longer timeouts may join this call: it runs for the
                    // longest one configured, and each request's timer ends its own wait.
                    timeout: Duration::from_millis(w.call_timeout_ms),
                };
                let owned = OwnedCredential::from(&credential);
                let Some(abort) = bridge::spawn_whoami(id, owned, params) else {
                    log(
                        r,
                        Outcome::Internal,
                        "the Kratos client is not running in this worker",
                    );
                    return Step::Return(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
                };
                w.calls.insert(
                    id,
                    Call {
                        key,
                        waiters: Vec::new(),
                        abort,
                        started_ms: now_ms(),
                    },
                );
                if let Some(m) = status::metrics() {
                    m.call_started();
                }
                w.by_key.insert(key, id);
                debug(r, format_args!("ory_session: whoami call #{id} started"));
                id
            }
            Some(&id) => {
                debug(r, format_args!("ory_session: joined whoami call #{id}"));
                id
            }
        };

        let waiter = w.next_id();
        let Some(ctx) = attach_ctx(
            r,
            State::Pending {
                call: call_id,
                waiter,
            },
            cache_status,
        ) else {
            if w.calls.get(&call_id).is_some_and(|c| c.waiters.is_empty()) {
                w.detach(call_id, waiter);
            }
            return Step::Return(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
        };
        w.calls
            .get_mut(&call_id)
            .expect("call just found or made")
            .waiters
            .push(waiter);
        w.waiters.insert(waiter, ctx);
        (*ctx).kind = Some(credential.kind);
        arm_timer(ctx, lcf);
        // Notice a client that goes away while parked (as upstream does), so its request is
        // finalized at once and, if it was the last one waiting, the call is cancelled.
        (*r).read_event_handler = Some(ngx_http_test_reading);
        Step::Return(NGX_AGAIN as ngx_int_t)
    });
    match step {
        Step::Return(rc) => rc,
        Step::Invalid(err) => refuse_locally(r, lcf, CacheStatus::None, &err.to_string()),
        // SAFETY: the context was just made in this request's pool.
        Step::Decided(ctx) => finish(r, lcf, &mut *ctx),
    }
}

/// What the first visit of a request leads to. The decision is applied after the worker
/// tables are released, since applying it calls back into nginx.
enum Step {
    Return(ngx_int_t),
    /// The credential holds bytes Kratos never issues.
    Invalid(credential::CredentialError),
    Decided(*mut RequestCtx),
}

/// Applies the decision and counts it, once per request.
unsafe fn finish(r: *mut ngx_http_request_t, lcf: &LocConf, ctx: &mut RequestCtx) -> ngx_int_t {
    let rc = apply(r, lcf, ctx);
    if !ctx.counted && rc != NGX_AGAIN as ngx_int_t {
        ctx.counted = true;
        if let Some(m) = status::metrics() {
            m.decision(match (rc, ctx.state) {
                (rc, _) if rc == NGX_HTTP_SEE_OTHER as ngx_int_t => Decision::Redirect,
                (rc, _) if rc == NGX_OK as ngx_int_t => Decision::Outcome(Outcome::Allowed),
                (rc, _) if rc == NGX_HTTP_FORBIDDEN as ngx_int_t => {
                    Decision::Outcome(Outcome::Forbidden)
                }
                (rc, _) if rc == NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t => {
                    Decision::Outcome(Outcome::Internal)
                }
                (_, State::Done(outcome)) => Decision::Outcome(outcome),
                (_, State::Pending { .. }) => Decision::Outcome(Outcome::Internal),
            });
        }
    }
    rc
}

/// Applies a recorded decision with the rules of the current location: the required AAL,
/// login redirects for browsers, hidden credentials and cookies from Kratos.
unsafe fn apply(r: *mut ngx_http_request_t, lcf: &LocConf, ctx: &mut RequestCtx) -> ngx_int_t {
    let State::Done(outcome) = ctx.state else {
        return NGX_AGAIN as ngx_int_t;
    };
    match outcome {
        Outcome::Allowed => {
            let aal = ctx.session.as_ref().map_or("", |s| &s.aal);
            if browser::aal_rank(aal).unwrap_or(0) < lcf.aal as u8 {
                if !ctx.applied {
                    ctx.applied = true;
                    let reason = format!(
                        "session authenticator assurance level \"{aal}\" is below the required \"aal{}\"",
                        lcf.aal
                    );
                    log(r, Outcome::Forbidden, &reason);
                }
                return redirect_or(r, lcf, Some("aal2"), None, Outcome::Forbidden);
            }
            if !ctx.applied {
                ctx.applied = true;
                if lcf.hide_credentials == 1 {
                    if let Some(kind) = ctx.kind {
                        headers::hide_credentials(r, kind, lcf.cookie());
                    }
                }
                for cookie in ctx.set_cookie.iter().flat_map(|c| c.iter()) {
                    if headers::add_header_out(r, "Set-Cookie", cookie.as_bytes()).is_none() {
                        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                    }
                }
            }
            NGX_OK as ngx_int_t
        }
        Outcome::Unauthenticated => redirect_or(r, lcf, None, None, outcome),
        Outcome::Forbidden => {
            let kratos_url = ctx.redirect_browser_to.clone();
            redirect_or(r, lcf, Some("aal2"), kratos_url.as_deref(), outcome)
        }
        other => rc_of(other),
    }
}

/// A browser navigation goes to the login page (`ory_session_login_url`, or for a step-up
/// the URL Kratos named), with `return_to` set; any other client gets the plain status.
unsafe fn redirect_or(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    aal: Option<&str>,
    kratos_url: Option<&str>,
    outcome: Outcome,
) -> ngx_int_t {
    let request = Request::from_ngx_http_request(r);
    let accept = request
        .headers_in_iterator()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(b"accept"))
        .map(|(_, v)| v.as_bytes());
    if !accept.is_some_and(browser::prefers_html) {
        return rc_of(outcome);
    }
    let login = if lcf.login_url.is_null() {
        match kratos_url {
            Some(url) => url.to_owned(),
            None => return rc_of(outcome),
        }
    } else {
        match complex_value(r, lcf.login_url) {
            Some(url) if !url.is_empty() => String::from_utf8_lossy(&url).into_owned(),
            _ => return rc_of(outcome),
        }
    };
    let return_to = if lcf.return_to.is_null() {
        own_url(r)
    } else {
        complex_value(r, lcf.return_to).unwrap_or_default()
    };
    let location = browser::login_location(&login, &return_to, aal);
    if headers::add_header_out(r, "Location", location.as_bytes()).is_none() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    NGX_HTTP_SEE_OTHER as ngx_int_t
}

unsafe fn complex_value(
    r: *mut ngx_http_request_t,
    cv: *mut ngx_http_complex_value_t,
) -> Option<Vec<u8>> {
    let mut value = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    if ngx_http_complex_value(r, cv, &mut value) != NGX_OK as ngx_int_t {
        return None;
    }
    Some(value.as_bytes().to_vec())
}

/// The absolute URL the client asked for, to come back to after logging in: the Host
/// header as sent (port included) and the request URI as sent, bytes kept.
unsafe fn own_url(r: *mut ngx_http_request_t) -> Vec<u8> {
    let scheme: &[u8] = if (*(*r).connection).ssl.is_null() {
        b"http"
    } else {
        b"https"
    };
    let host_header = (*r).headers_in.host;
    let host = if !host_header.is_null() && !(*host_header).value.is_empty() {
        (*host_header).value.as_bytes()
    } else if !(*r).headers_in.server.is_empty() {
        (*r).headers_in.server.as_bytes()
    } else {
        // HTTP/1.0 without Host: the server's own name is the best guess.
        let cscf = NgxHttpCoreModule::server_conf(&*r);
        cscf.map_or(&b"localhost"[..], |c| c.server_name.as_bytes())
    };
    [scheme, b"://", host, (*r).unparsed_uri.as_bytes()].concat()
}

/// A refusal decided without asking Kratos (no credential, or one that cannot be valid).
unsafe fn refuse_locally(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    status: CacheStatus,
    reason: &str,
) -> ngx_int_t {
    let Some(ctx) = attach_ctx(r, State::Done(Outcome::Unauthenticated), status) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    log(r, Outcome::Unauthenticated, reason);
    finish(r, lcf, &mut *ctx)
}

/// Too many calls in flight: answer 503 at once instead of queueing without bound. The log
/// line is limited to one a second, since a flood is exactly when it would repeat.
unsafe fn shed(w: &mut Worker, r: *mut ngx_http_request_t, status: CacheStatus) -> Step {
    let Some(ctx) = attach_ctx(r, State::Done(Outcome::Unavailable), status) else {
        return Step::Return(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
    };
    let now = now_ms();
    if now.saturating_sub(w.last_shed_log_ms) >= 1000 {
        w.last_shed_log_ms = now;
        let reason = format!(
            "{} whoami calls already in flight (ory_session_max_pending), request refused",
            w.calls.len()
        );
        log(r, Outcome::Unavailable, &reason);
    }
    Step::Decided(ctx)
}

/// Debug-level trace (nginx built `--with-debug`, `error_log ... debug`). Never given a
/// credential value.
unsafe fn debug(r: *mut ngx_http_request_t, args: core::fmt::Arguments) {
    let log = (*(*r).connection).log;
    ngx_log_debug_mask!(DebugMask::Http, log, "{}", args);
}

unsafe fn log(r: *mut ngx_http_request_t, outcome: Outcome, reason: &str) {
    let level = if outcome.is_failure() {
        NGX_LOG_ERR
    } else {
        NGX_LOG_INFO
    };
    ngx_log_error!(
        level,
        (*(*r).connection).log,
        "ory_session: {} while checking session with Kratos",
        reason
    );
}

type CleanupFn = unsafe extern "C" fn(*mut c_void);

/// Pool cleanup handler that owns the context's lifetime. Never inlined: `find_ctx`
/// recognises the context by this function's address.
#[inline(never)]
unsafe extern "C" fn drop_ctx(data: *mut c_void) {
    // SAFETY: data is the RequestCtx written by attach_ctx; the pool runs this once.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        ptr::drop_in_place(data.cast::<RequestCtx>())
    }));
}

/// Creates the context in the request pool and makes it the module's context.
unsafe fn attach_ctx(
    r: *mut ngx_http_request_t,
    state: State,
    cache_status: CacheStatus,
) -> Option<*mut RequestCtx> {
    let cln: *mut ngx_pool_cleanup_t =
        ngx_pool_cleanup_add((*r).pool, mem::size_of::<RequestCtx>());
    if cln.is_null() {
        return None;
    }
    let ctx = (*cln).data.cast::<RequestCtx>();
    debug_assert!(ctx.is_aligned());
    ptr::write(
        ctx,
        RequestCtx {
            request: r,
            state,
            session: None,
            cache_status,
            kind: None,
            set_cookie: None,
            redirect_browser_to: None,
            applied: false,
            counted: false,
            kratos_ms: None,
            timer: mem::zeroed(),
        },
    );
    (*cln).handler = Some(drop_ctx);
    let request = Request::from_ngx_http_request(r);
    request.set_module_ctx(ctx.cast(), HttpOrySessionModule::module());
    Some(ctx)
}

/// The request's context, also after an internal redirect (which clears `r->ctx`): like
/// nginx's realip module, find it again through the pool cleanup that owns it. This keeps
/// the decision and the variables of a request for its whole life.
pub unsafe fn find_ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
    let request = Request::from_ngx_http_request(r);
    let module = HttpOrySessionModule::module();
    let ctx = *(*r).ctx.add(module.ctx_index);
    if !ctx.is_null() {
        return Some(&mut *ctx.cast::<RequestCtx>());
    }
    let mut cln = (*(*r).pool).cleanup;
    while !cln.is_null() {
        if (*cln)
            .handler
            .is_some_and(|h| core::ptr::fn_addr_eq(h, drop_ctx as CleanupFn))
        {
            let ctx = (*cln).data;
            request.set_module_ctx(ctx, module);
            return Some(&mut *ctx.cast::<RequestCtx>());
        }
        cln = (*cln).next;
    }
    None
}

unsafe fn arm_timer(ctx: *mut RequestCtx, lcf: &LocConf) {
    let timer = &raw mut (*ctx).timer;
    (*timer).handler = Some(on_timeout);
    (*timer).data = ctx.cast();
    (*timer).log = (*(*(*ctx).request).connection).log;
    (*timer).set_cancelable(0);
    ngx::ffi::ngx_add_timer(timer, lcf.timeout);
}

/// Wakes a parked request up: its write event runs the phases again, from the event loop.
unsafe fn resume(r: *mut ngx_http_request_t) {
    (*r).read_event_handler = Some(ngx_http_block_reading);
    ngx_post_event((*(*r).connection).write, &raw mut ngx_posted_events);
}

/// The request waited longer than `ory_session_timeout`.
unsafe extern "C" fn on_timeout(ev: *mut ngx_event_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        let ctx = &mut *(*ev).data.cast::<RequestCtx>();
        let State::Pending { call, waiter } = ctx.state else {
            return;
        };
        let started = WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let w = w.as_mut()?;
            let started = w.calls.get(&call).map(|c| c.started_ms);
            w.detach(call, waiter);
            started
        });
        ctx.kratos_ms = started.map(|t| now_ms().saturating_sub(t));
        ctx.state = State::Done(Outcome::Timeout);
        log(
            ctx.request,
            Outcome::Timeout,
            "Kratos did not answer within ory_session_timeout",
        );
        resume(ctx.request);
    }));
}

/// Called by the bridge, on the nginx thread, for every finished whoami call.
pub fn on_whoami_done(id: CallId, result: WhoamiResult) {
    let (outcome, reason) = decision::from_whoami(&result);
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        let Some(w) = w.as_mut() else { return };
        // Gone when every waiter left first (and the call was cancelled).
        let Some(call) = w.calls.remove(&id) else {
            return;
        };
        w.by_key.remove(&call.key);

        let now = now_ms();
        let kratos_ms = now.saturating_sub(call.started_ms);
        if let Some(m) = status::metrics() {
            m.call_ended(Some(kratos_ms));
        }
        let mut set_cookie: Option<Rc<[String]>> = None;
        let mut redirect_browser_to: Option<Rc<str>> = None;
        let session = match result {
            Ok(Answer::Active {
                session,
                cache_for_ms,
                set_cookie: cookies,
            }) => {
                let session = Rc::new(session);
                // Reused until the session ends, and never past the JWT handed upstream.
                let deadline = session
                    .expires_at_ms
                    .min(session.tokenized_exp_ms.unwrap_or(u64::MAX));
                w.cache
                    .insert(call.key, session.clone(), now, deadline, cache_for_ms);
                if !cookies.is_empty() {
                    set_cookie = Some(cookies.into());
                }
                Some(session)
            }
            Ok(Answer::Unauthenticated { .. }) => {
                w.cache.insert_negative(call.key, now);
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
        w.report_cache();
        debug_assert!(decision::is_cacheable(outcome) || session.is_none());

        for waiter in call.waiters {
            let Some(ctx) = w.waiters.remove(&waiter) else {
                continue;
            };
            // SAFETY: a context is in `waiters` only while it is alive: its Drop removes it.
            unsafe {
                let ctx = &mut *ctx;
                debug(
                    ctx.request,
                    format_args!("ory_session: whoami call #{id} done: {outcome:?}"),
                );
                ctx.state = State::Done(outcome);
                ctx.session = session.clone();
                ctx.set_cookie = set_cookie.clone();
                ctx.kratos_ms = Some(kratos_ms);
                ctx.redirect_browser_to = redirect_browser_to.clone();
                if ctx.timer.timer_set() != 0 {
                    ngx_del_timer(&mut ctx.timer);
                }
                if outcome != Outcome::Allowed {
                    log(ctx.request, outcome, &reason);
                }
                resume(ctx.request);
            }
        }
    });
}
