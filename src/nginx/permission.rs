//! The Keto permission check, as the access driver runs it.
//!
//! It runs once the request is authenticated (the session check before it has let it
//! through), since its subject is by default the authenticated one. The first visit
//! evaluates the location's `ory_permission` lines in order: each is answered from the
//! worker's cache or parks the request on a check call (shared by every request asking the
//! same tuple). Evaluation stops at the first line known to deny; the calls of the lines
//! before it run at once. The request resumes as soon as the first line that does not allow
//! is known (or every line allowed), and `decide` answers with it.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{ngx_event_t, ngx_http_request_t};
use tokio::task::AbortHandle;

use super::access::Check;
use super::answers::{self, Answers, Slot};
use super::conf::{Line, LineSubject, LocConf, PermissionConf, Value};
use super::context::{now_ms, RequestCtx, Wait};
use super::log::{self, CHECKING_PERMISSION};
use super::zone::Shared;
use super::{bridge, request, status};
use crate::check::cache::{CacheStatus, Lookup};
use crate::check::decision::{Decision, Outcome};
use crate::check::front::ZoneAccess;
use crate::check::inflight::{CallId, JoinError, Joined};
use crate::check::key::CacheKey;
use crate::check::metrics::CheckMetrics;
use crate::check::table::Table;
use crate::check::zone::{Ids, Kind};
use crate::permission::decision::{from_check, from_refusal};
use crate::permission::{self, check_url, CallResult, SubjectRef, TupleRef};

/// The permission check's part of a request's context.
#[derive(Default)]
pub struct PermissionState {
    pub cache_status: CacheStatus,
    begun: bool,
    /// None until the first line that does not allow (or the last line) has answered.
    outcome: Option<Outcome>,
    /// The lines evaluated, in order; only made when some line has to wait for Keto, so a
    /// request answered from the cache allocates nothing.
    lines: Box<[LineState]>,
}

#[derive(Default)]
struct LineState {
    /// None while its call is awaited.
    outcome: Option<Outcome>,
    reason: String,
    wait: Wait,
}

impl Drop for LineState {
    fn drop(&mut self) {
        if let Some(call) = self.wait.call {
            let waiter: *mut Wait = &mut self.wait;
            with_permissions(|p| p.table.detach(call, waiter));
        }
    }
}

/// A worker's permission answers (`()` for allowed; a negative entry is a denial) and the
/// check calls in flight.
type Permissions = Answers<()>;

thread_local! {
    static PERMISSIONS: Slot<()> = const { RefCell::new(None) };
}

fn with_permissions<T>(f: impl FnOnce(&mut Permissions) -> T) -> Option<T> {
    answers::with(&PERMISSIONS, f)
}

fn metrics() -> Option<&'static CheckMetrics> {
    status::metrics().map(|m| &m.permission)
}

pub fn init_worker(cache_size: usize, max_pending: usize, call_timeout_ms: u64, zones: &[Shared]) {
    answers::start(
        &PERMISSIONS,
        Kind::Permission,
        cache_size,
        max_pending,
        call_timeout_ms,
        metrics(),
        zones,
    );
}

pub fn shutdown_worker() {
    answers::stop(&PERMISSIONS);
}

pub struct PermissionCheck;

impl Check for PermissionCheck {
    #[inline]
    fn enabled(&self, lcf: &LocConf) -> bool {
        lcf.permission.enabled()
    }

    #[inline]
    fn begun(&self, ctx: &RequestCtx) -> bool {
        ctx.permission.begun
    }

    #[inline]
    fn counted_in(&self, _lcf: &LocConf, _ctx: &RequestCtx) -> Option<&'static CheckMetrics> {
        metrics()
    }

    #[inline]
    unsafe fn begin(&self, r: *mut ngx_http_request_t, lcf: &LocConf, ctx: *mut RequestCtx) {
        (*ctx).permission.begun = true;
        // The session's identity, else the access token's subject. evaluate() takes the
        // context mutably, so the subject is borrowed from clones of the Rcs holding it, not
        // copied: a request answered from the cache allocates nothing.
        let session = (*ctx)
            .session
            .session
            .clone()
            .filter(|_| (*ctx).session.allowed());
        let token = (*ctx)
            .oauth2
            .verified
            .clone()
            .filter(|_| (*ctx).oauth2.allowed());
        let subject = match (&session, &token) {
            (Some(session), _) => Some(session.user_id.as_bytes()),
            (_, Some(token)) => token.claims.sub().map(str::as_bytes),
            _ => None,
        };
        evaluate(r, &lcf.permission, subject, ctx);
        settle(&mut (*ctx).permission);
    }

    #[inline]
    unsafe fn decide(
        &self,
        _r: *mut ngx_http_request_t,
        _lcf: &LocConf,
        ctx: &mut RequestCtx,
    ) -> Decision {
        Decision::of(ctx.permission.outcome.unwrap_or(Outcome::Internal))
    }
}

/// What one line's first look found.
enum Found {
    Answer(Outcome, String),
    /// The line's wait is parked on a call.
    Waits,
}

/// Evaluates the lines in order until one is known not to allow. A line that misses the
/// cache parks the request on its call; the first one to do so makes the lines' states.
unsafe fn evaluate(
    r: *mut ngx_http_request_t,
    conf: &PermissionConf,
    subject: Option<&[u8]>,
    ctx: *mut RequestCtx,
) {
    let mut statuses = CacheStatus::None;
    for (index, line) in conf.lines.iter().enumerate() {
        let (found, status) = look_up(r, conf, line, index, subject, ctx);
        statuses = worst(statuses, status);
        let state = &mut (*ctx).permission;
        let Found::Answer(outcome, reason) = found else {
            continue;
        };
        if state.lines.is_empty() {
            if outcome == Outcome::Allowed {
                continue; // from the cache, and nothing before it waits
            }
            log::outcome(r, &CHECKING_PERMISSION, outcome, &reason);
            state.outcome = Some(outcome);
            break;
        }
        let line = &mut state.lines[index];
        line.outcome = Some(outcome);
        line.reason = reason;
        if outcome != Outcome::Allowed {
            break;
        }
    }
    let state = &mut (*ctx).permission;
    state.cache_status = statuses;
    if state.lines.is_empty() && state.outcome.is_none() {
        state.outcome = Some(Outcome::Allowed);
    }
}

/// The lines' states, made when the first line has to wait: the lines before it allowed.
unsafe fn lines(state: &mut PermissionState, count: usize, waiting: usize) {
    if state.lines.is_empty() {
        state.lines = (0..count).map(|_| LineState::default()).collect();
        for line in &mut state.lines[..waiting] {
            line.outcome = Some(Outcome::Allowed);
        }
    }
}

/// The more telling of two cache statuses, for `$ory_permission_cache_status`: a request
/// that needed Keto for any line is a miss.
fn worst(a: CacheStatus, b: CacheStatus) -> CacheStatus {
    let rank = |s| match s {
        CacheStatus::None => 0,
        CacheStatus::Hit => 1,
        CacheStatus::Bypass => 2,
        CacheStatus::Expired => 3,
        CacheStatus::Miss => 4,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The value of one argument; a failed evaluation is an empty value, which is refused.
unsafe fn value<'a>(r: *mut ngx_http_request_t, v: Value) -> &'a [u8] {
    request::complex_value(r, v.0).unwrap_or_default()
}

/// One line: its tuple, a cache lookup, and on a miss the call it waits for.
unsafe fn look_up(
    r: *mut ngx_http_request_t,
    conf: &PermissionConf,
    line: &Line,
    index: usize,
    authenticated: Option<&[u8]>,
    ctx: *mut RequestCtx,
) -> (Found, CacheStatus) {
    let Some(tuple) = tuple_of(r, line, authenticated) else {
        return (
            Found::Answer(
                Outcome::Unauthenticated,
                "no authenticated subject for the permission".into(),
            ),
            CacheStatus::None,
        );
    };
    let looked = with_permissions(|permissions| {
        let Permissions { table, fronts } = permissions;
        let mut zoned = match conf.zone {
            0 => None,
            n => fronts.get_mut(n - 1),
        };
        let key = match &zoned {
            Some((front, _)) => tuple.key(&front.hasher, conf.scope),
            None => tuple.key(&table.hasher, conf.scope),
        };
        let bypass = !(zoned.is_some() || table.caching()) || conf.cache_ttl == 0;
        let (now, ttl, negative_ttl) = (now_ms(), conf.cache_ttl as u64, conf.negative_ttl as u64);
        let lookup = match &mut zoned {
            // An allowed tuple is stored with no bytes; anything else is not ours.
            Some((front, shared)) => {
                let decode = |bytes: &[u8]| bytes.is_empty().then_some(());
                front.lookup(shared, key, now, ttl, negative_ttl, decode).0
            }
            None => {
                let lookup = table.cache.lookup(key, now, ttl, negative_ttl);
                if matches!(lookup, Lookup::Expired) {
                    table.report_cache();
                }
                lookup
            }
        };
        let (zone, generation) = match &zoned {
            Some((_, shared)) => (conf.zone, shared.generation()),
            None => (0, 0),
        };
        let cached = matches!(lookup, Lookup::Hit(_) | Lookup::NegativeHit);
        let status = match lookup {
            Lookup::Hit(_) | Lookup::NegativeHit => CacheStatus::Hit,
            _ if bypass => CacheStatus::Bypass,
            Lookup::Expired => CacheStatus::Expired,
            Lookup::Miss => CacheStatus::Miss,
        };
        let found = match lookup {
            Lookup::Hit(()) => Found::Answer(Outcome::Allowed, String::new()),
            Lookup::NegativeHit => Found::Answer(
                Outcome::Forbidden,
                format!("Keto denied permission {} (cached)", index + 1),
            ),
            Lookup::Expired | Lookup::Miss => match tuple.to_tuple() {
                Err(refusal) => {
                    let (outcome, reason) = from_refusal(&refusal);
                    return (
                        Found::Answer(outcome, format!("{reason} in permission {}", index + 1)),
                        CacheStatus::None,
                    );
                }
                Ok(owned) => park(r, table, conf, (key, zone, generation), owned, index, ctx),
            },
        };
        if !bypass && (cached || matches!(found, Found::Waits)) {
            if let Some(m) = table.metrics {
                m.cache_lookup(cached);
            }
        }
        (found, status)
    });
    looked.unwrap_or_else(|| {
        (
            Found::Answer(
                Outcome::Internal,
                "the Keto client is not running in this worker".into(),
            ),
            CacheStatus::None,
        )
    })
}

/// The line's tuple as this request evaluates it; `None` when it names the authenticated
/// subject and there is none.
unsafe fn tuple_of<'a>(
    r: *mut ngx_http_request_t,
    line: &Line,
    authenticated: Option<&'a [u8]>,
) -> Option<TupleRef<'a>> {
    let subject = match line.subject {
        LineSubject::Authenticated => SubjectRef::Id(authenticated?),
        LineSubject::Id(id) => SubjectRef::Id(value(r, id)),
        LineSubject::Set {
            namespace,
            object,
            relation,
        } => SubjectRef::Set {
            namespace: value(r, namespace),
            object: value(r, object),
            relation: value(r, relation),
        },
    };
    Some(TupleRef {
        namespace: value(r, line.namespace),
        object: value(r, line.object),
        relation: value(r, line.relation),
        subject,
    })
}

/// A line that missed the cache: its request parks on the call for its tuple.
unsafe fn park(
    r: *mut ngx_http_request_t,
    table: &mut Table<(), *mut Wait, AbortHandle>,
    conf: &PermissionConf,
    call_key: (CacheKey, usize, u64),
    tuple: permission::Tuple,
    index: usize,
    ctx: *mut RequestCtx,
) -> Found {
    let state = &mut (*ctx).permission;
    lines(state, conf.lines.len(), index);
    let wait = &raw mut state.lines[index].wait;
    match start(r, table, conf, call_key, tuple, wait) {
        Ok(call) => {
            Wait::park(wait, ctx, call, conf.timeout, on_timeout);
            Found::Waits
        }
        Err(refused) => refused,
    }
}

/// Joins the call in flight for `key` with `wait`, or starts one.
unsafe fn start(
    r: *mut ngx_http_request_t,
    table: &mut Table<(), *mut Wait, AbortHandle>,
    conf: &PermissionConf,
    (key, zone, generation): (CacheKey, usize, u64),
    tuple: permission::Tuple,
    wait: *mut Wait,
) -> Result<CallId, Found> {
    let Some(endpoint) = conf.endpoint.as_deref() else {
        // merge_loc_conf refuses `ory_permission` without a URL
        return Err(Found::Answer(
            Outcome::Internal,
            "no ory_permission_url".into(),
        ));
    };
    let url = check_url(endpoint, &tuple);
    let headers = conf.headers.clone().unwrap_or_else(|| Vec::new().into());
    let timeout = table.call_timeout;
    let joined =
        table
            .calls
            .join_or_start_in(key, zone, generation, wait, now_ms(), |id| {
                bridge::spawn(
                    id,
                    conf.trust,
                    move |client| async move {
                        permission::check(&client, &url, &headers, timeout).await
                    },
                    on_check_done,
                )
            });
    match joined {
        Ok(Joined::Started(id)) => {
            if let Some(m) = table.metrics {
                m.call_started();
            }
            log::debug!(r, "ory_permission: check call #{id} started");
            Ok(id)
        }
        Ok(Joined::Shared(id)) => {
            log::debug!(r, "ory_permission: joined check call #{id}");
            Ok(id)
        }
        Err(JoinError::Full) => {
            let reason = if table.log_shed(now_ms()) {
                format!(
                    "{} check calls already in flight (ory_session_max_pending), request refused",
                    table.calls.len()
                )
            } else {
                String::new()
            };
            Err(Found::Answer(Outcome::Unavailable, reason))
        }
        Err(JoinError::NotStarted) => Err(Found::Answer(
            Outcome::Internal,
            "the Keto client is not running in this worker".into(),
        )),
    }
}

/// Decides the request as soon as its lines allow it: the first line that does not allow,
/// once every line before it has allowed; or allowed, once every line has. Lines still
/// waiting then stop waiting (their calls go on for other requests, or are cancelled).
unsafe fn settle(state: &mut PermissionState) {
    if state.outcome.is_some() {
        return;
    }
    let mut decided = Some(Outcome::Allowed);
    for line in state.lines.iter() {
        match line.outcome {
            None => {
                decided = None;
                break;
            }
            Some(Outcome::Allowed) => {}
            Some(outcome) => {
                decided = Some(outcome);
                break;
            }
        }
    }
    let Some(outcome) = decided else { return };
    state.outcome = Some(outcome);
    for line in state.lines.iter_mut() {
        if let Some(call) = line.wait.call {
            let waiter: *mut Wait = &mut line.wait;
            with_permissions(|p| p.table.detach(call, waiter));
            Wait::unpark(waiter);
        }
    }
}

/// The line whose wait this is, and the request's state.
unsafe fn line_of<'a>(wait: *mut Wait) -> (&'a mut PermissionState, usize) {
    let ctx = (*wait).ctx;
    let state = &mut (*ctx).permission;
    let index = state
        .lines
        .iter()
        .position(|l| core::ptr::eq(&l.wait, wait))
        .expect("a parked wait belongs to a line");
    (state, index)
}

/// Called by the bridge, on the nginx thread, for every finished check call.
fn on_check_done(id: CallId, result: CallResult) {
    let (outcome, reason) = from_check(&result);
    let waiters = with_permissions(|permissions| {
        let Permissions { table, fronts } = permissions;
        let Some(call) = table.calls.complete(id) else {
            return Vec::new();
        };
        let now = now_ms();
        if let Some(m) = table.metrics {
            m.call_ended(Some(now.saturating_sub(call.started_ms)));
        }
        let zoned = match call.zone {
            0 => None,
            n => fronts.get_mut(n - 1),
        };
        match (result, zoned) {
            (Ok(true), Some((front, shared))) => {
                let none = Ids::default();
                front.store(
                    shared,
                    call.key,
                    call.generation,
                    (),
                    &[],
                    none,
                    now,
                    u64::MAX,
                );
            }
            (Ok(false), Some((front, shared))) => front.store_negative(shared, call.key, now),
            (Ok(true), None) => table.cache.insert(call.key, (), now, u64::MAX),
            (Ok(false), None) => table.cache.insert_negative(call.key, now),
            (Err(_), _) => {}
        }
        table.report_cache();
        call.waiters
    });
    // The table is released: settling a request detaches its other waits from it.
    for waiter in waiters.into_iter().flatten() {
        // SAFETY: a wait is in a call's waiter list only while its context is alive: the
        // context's drop detaches it. A wait that already stopped waiting (its request was
        // decided by another line) has no call any more and is skipped.
        unsafe {
            if (*waiter).call != Some(id) {
                continue;
            }
            let (state, index) = line_of(waiter);
            let line = &mut state.lines[index];
            line.outcome = Some(outcome);
            line.reason = match outcome {
                Outcome::Forbidden => format!("Keto denied permission {}", index + 1),
                _ => format!("{reason} for permission {}", index + 1),
            };
            Wait::unpark(waiter);
            finish_line(waiter);
        }
    }
}

/// After a line's answer: decide the request if it can be, and log the line that decided.
unsafe fn finish_line(wait: *mut Wait) {
    let ctx = (*wait).ctx;
    let state = &mut (*ctx).permission;
    let before = state.outcome;
    settle(state);
    if before.is_none() {
        if let Some(outcome) = state.outcome {
            if outcome != Outcome::Allowed {
                if let Some(line) = state.lines.iter().find(|l| l.outcome == Some(outcome)) {
                    log::outcome((*ctx).request, &CHECKING_PERMISSION, outcome, &line.reason);
                }
            }
        }
    }
}

/// A line waited longer than `ory_permission_timeout`.
unsafe extern "C" fn on_timeout(ev: *mut ngx_event_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the timer's data is the wait `Wait::park` armed it for, which is alive:
        // dropping it removes the timer.
        unsafe {
            let wait = (*ev).data.cast::<Wait>();
            let Some(call) = (*wait).call else { return };
            with_permissions(|p| p.table.detach(call, wait));
            let (state, index) = line_of(wait);
            let line = &mut state.lines[index];
            line.outcome = Some(Outcome::Timeout);
            line.reason = format!(
                "Keto did not answer within ory_permission_timeout for permission {}",
                index + 1
            );
            Wait::unpark(wait);
            finish_line(wait);
        }
    }));
}
