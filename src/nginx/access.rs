//! The access-phase driver, in the shape of nginx's auth_request module.
//!
//! A checked request gets a context on its first visit, where every check the location asks
//! for begins: it decides at once (a cache hit, no credential) or parks the request on a call.
//! While any call is awaited the handler answers `NGX_AGAIN`; the last answer (or a timer)
//! resumes the request, and the next visit turns the outcomes into one decision, applies it
//! and counts it. Everything here runs on the nginx thread of a worker.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, Request};

use super::authentication::Authentication;
use super::conf::LocConf;
use super::context::{self, RequestCtx};
use super::log::{self, CHECKING_SESSION};
use super::permission::PermissionCheck;
use crate::check::decision::{Decision, Outcome};
use crate::check::metrics::CheckMetrics;
use crate::HttpOrySessionModule;

/// The access-phase handler registered in postconfiguration.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: forwarded from nginx; a panic must never unwind into C.
    match catch_unwind(AssertUnwindSafe(|| unsafe { handle(r) })) {
        Ok(rc) => rc,
        Err(_) => {
            log::outcome(
                r,
                &CHECKING_SESSION,
                Outcome::Internal,
                "internal error (panic)",
            );
            NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
        }
    }
}

/// The module's configuration of the location a request is in.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn location_conf<'a>(r: *mut ngx_http_request_t) -> Option<&'a LocConf> {
    HttpOrySessionModule::location_conf(Request::from_ngx_http_request(r))
}

unsafe fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    let Some(lcf) = location_conf(r) else {
        return NGX_DECLINED as ngx_int_t;
    };
    // The checks run once per client request: subrequests inherit the main request's
    // decision, as nginx's own access modules do.
    if !(Authentication.enabled(lcf) || PermissionCheck.enabled(lcf)) || r != (*r).main {
        return NGX_DECLINED as ngx_int_t;
    }
    let ctx = match context::find(r) {
        Some(ctx) => ctx,
        None => match context::attach(r) {
            Some(ctx) => ctx,
            None => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        },
    };

    // In order: a check begins once every check before it has let the request through
    // (the permission check needs the authenticated subject). The first check that does
    // not let it through decides.
    if let Some(rc) = run(&Authentication, 0, r, lcf, ctx) {
        return rc;
    }
    if let Some(rc) = run(&PermissionCheck, 1, r, lcf, ctx) {
        return rc;
    }
    NGX_OK as ngx_int_t
}

/// One check of the request: begins it on the first visit, and once nothing is awaited,
/// decides. `None` lets the request go on to the next check.
#[inline(always)]
unsafe fn run<C: Check>(
    check: &C,
    index: usize,
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    ctx: &mut RequestCtx,
) -> Option<ngx_int_t> {
    if !check.enabled(lcf) {
        return None;
    }
    if !check.begun(ctx) {
        check.begin(r, lcf, ctx);
    }
    if ctx.is_waiting() {
        ctx.park();
        return Some(NGX_AGAIN as ngx_int_t);
    }
    let decision = check.decide(r, lcf, ctx);
    if ctx.first_decision(index) {
        if let Some(m) = check.counted_in(lcf, ctx) {
            m.decision(decision);
        }
    }
    match decision {
        Decision::Continue => None,
        refused => Some(refused.status() as ngx_int_t),
    }
}

/// What the driver asks of each kind of check. Each is implemented in its own file beside
/// this one, on the plain-Rust check of the same name.
pub trait Check {
    /// Whether the location asks for this check.
    fn enabled(&self, lcf: &LocConf) -> bool;

    /// Whether the check has begun for this request (its outcome may still be awaited).
    fn begun(&self, ctx: &RequestCtx) -> bool;

    /// Where its decision for this request is counted.
    fn counted_in(&self, lcf: &LocConf, ctx: &RequestCtx) -> Option<&'static CheckMetrics>;

    /// The first visit of a request: records an outcome at once (a cache hit, no credential)
    /// or parks the request on a call through a `Wait` of its context.
    ///
    /// # Safety
    /// `r` is the live main request and `ctx` its context.
    unsafe fn begin(&self, r: *mut ngx_http_request_t, lcf: &LocConf, ctx: *mut RequestCtx);

    /// Once nothing is awaited any more: what nginx does with the request, under the rules of
    /// the current location (after an internal redirect, another location's).
    ///
    /// # Safety
    /// `r` is the live main request and `ctx` its context.
    unsafe fn decide(
        &self,
        r: *mut ngx_http_request_t,
        lcf: &LocConf,
        ctx: &mut RequestCtx,
    ) -> Decision;
}
