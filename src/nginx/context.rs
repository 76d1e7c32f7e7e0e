//! The per-request context: what the checks recorded for a request, and the waits of a
//! request parked on calls.
//!
//! The context lives in a request pool cleanup, so it is dropped when the request is freed
//! however that happens (finalized, aborted, reset, timed out, worker shutting down); the
//! drop unhooks every wait from its call and removes its timer. Nothing else ever frees it,
//! so a call's answer can only reach a request that still exists.

use core::ffi::c_void;
use core::mem::{self, MaybeUninit};
use core::ptr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_add_timer, ngx_del_timer, ngx_delete_posted_event, ngx_event_t, ngx_http_block_reading,
    ngx_http_request_t, ngx_http_test_reading, ngx_msec_t, ngx_pool_cleanup_add, ngx_post_event,
    ngx_posted_events,
};
use ngx::http::{HttpModule, Request};

use super::oauth2::OAuth2State;
use super::permission::PermissionState;
use super::session::SessionState;
use crate::check::inflight::CallId;
use crate::HttpOrySessionModule;

pub struct RequestCtx {
    pub request: *mut ngx_http_request_t,
    /// Calls the request waits for; it is resumed when the last one has answered.
    waiting: u32,
    /// The access handler answered `NGX_AGAIN`: the request needs its write event posted
    /// to run again. A wait that ends while the handler still runs (another line decided
    /// the request) must not post it.
    parked: bool,
    /// The checks whose decision was counted (once per request, whatever the internal
    /// redirects), by their index in the driver's list.
    counted: u32,
    pub session: SessionState,
    pub oauth2: OAuth2State,
    pub permission: PermissionState,
    /// What a request to an `ory_session_logout` location would end.
    pub logout: Option<Box<super::logout::Logout>>,
}

/// nginx's cached time in milliseconds, as its timers see it: updated once per event loop
/// iteration, so reading it costs no system call.
pub fn now_ms() -> u64 {
    let tp = ngx::ffi::ngx_timeofday();
    tp.sec as u64 * 1000 + tp.msec as u64
}

// nginx pools align to 8 bytes (NGX_ALIGNMENT): anything stricter in the context, such as a
// u128 cache key, would be misaligned.
const _: () = assert!(mem::align_of::<RequestCtx>() <= 8);

impl RequestCtx {
    pub fn is_waiting(&self) -> bool {
        self.waiting > 0
    }

    /// Whether this is the first decision of check `index` for the request: only that one
    /// is counted.
    pub fn first_decision(&mut self, index: usize) -> bool {
        let bit = 1 << index;
        let first = self.counted & bit == 0;
        self.counted |= bit;
        first
    }

    /// The access handler leaves the request waiting.
    pub fn park(&mut self) {
        self.parked = true;
    }
}

/// A request parked on one call: which call, and the timer that bounds the wait. Not
/// cancelable: a worker shutting down gracefully waits for parked requests instead of
/// dropping them.
pub struct Wait {
    /// The call waited for, while waiting.
    pub call: Option<CallId>,
    /// The context the wait is part of, set by `park`.
    pub ctx: *mut RequestCtx,
    /// Written by the first `park`: a request answered from the cache never pays for
    /// zeroing an event it does not use.
    timer: MaybeUninit<ngx_event_t>,
    /// `timer` is written.
    armed: bool,
}

impl Wait {
    pub fn new() -> Self {
        Wait {
            call: None,
            ctx: ptr::null_mut(),
            timer: MaybeUninit::uninit(),
            armed: false,
        }
    }

    /// Parks the request of `ctx` on call `call` through `wait`, for at most `timeout_ms`;
    /// `on_timeout` is the check's timer handler, which gets the wait as the event's data.
    ///
    /// # Safety
    /// `wait` is a field of `ctx`, which never moves (it lives in the request pool).
    pub unsafe fn park(
        wait: *mut Wait,
        ctx: *mut RequestCtx,
        call: CallId,
        timeout_ms: ngx_msec_t,
        on_timeout: unsafe extern "C" fn(*mut ngx_event_t),
    ) {
        let r = (*ctx).request;
        (*wait).call = Some(call);
        (*wait).ctx = ctx;
        if !(*wait).armed {
            // An all-zero event is what ngx_pcalloc hands out: no timer, not posted.
            (*wait).timer.write(mem::zeroed());
            (*wait).armed = true;
        }
        let timer = (*wait).timer.as_mut_ptr();
        (*timer).handler = Some(on_timeout);
        (*timer).data = wait.cast();
        (*timer).log = (*(*r).connection).log;
        (*timer).set_cancelable(0);
        ngx_add_timer(timer, timeout_ms);
        if (*ctx).waiting == 0 {
            // Notice a client that goes away while parked (as upstream does), so its
            // request is finalized at once and, if it was the last one waiting, the call
            // is cancelled.
            (*r).read_event_handler = Some(ngx_http_test_reading);
        }
        (*ctx).waiting += 1;
    }

    /// The wait has ended (its answer came, or its timer fired); the request's last wait to
    /// end resumes it from the event loop. Does nothing for a wait that is not parked.
    ///
    /// # Safety
    /// `wait` is alive (a field of a live context).
    pub unsafe fn unpark(wait: *mut Wait) {
        if (*wait).call.take().is_none() {
            return;
        }
        (*wait).disarm();
        let ctx = (*wait).ctx;
        (*ctx).waiting -= 1;
        if (*ctx).waiting == 0 && mem::replace(&mut (*ctx).parked, false) {
            let r = (*ctx).request;
            (*r).read_event_handler = Some(ngx_http_block_reading);
            // Its write event runs the phases again, which brings the request back to the
            // access handler with every answer recorded.
            ngx_post_event((*(*r).connection).write, &raw mut ngx_posted_events);
        }
    }

    fn disarm(&mut self) {
        if !self.armed {
            return;
        }
        // SAFETY: `armed` says `park` wrote the event, which lives inside this wait and is
        // only ever armed or posted by `park`; nginx's timer tree and posted queue must not
        // keep pointing at it.
        unsafe {
            let timer = self.timer.assume_init_mut();
            if timer.timer_set() != 0 {
                ngx_del_timer(timer);
            }
            if timer.posted() != 0 {
                ngx_delete_posted_event(timer);
            }
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.disarm();
    }
}

type CleanupFn = unsafe extern "C" fn(*mut c_void);

/// Pool cleanup handler that owns the context's lifetime. Never inlined: `find` recognises
/// the context by this function's address.
#[inline(never)]
unsafe extern "C" fn drop_ctx(data: *mut c_void) {
    // SAFETY: data is the RequestCtx written by `attach`; the pool runs this once.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
        ptr::drop_in_place(data.cast::<RequestCtx>())
    }));
}

/// Creates the request's context in its pool and makes it the module's context.
///
/// # Safety
/// `r` is a live main request.
pub unsafe fn attach<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
    let cln = ngx_pool_cleanup_add((*r).pool, mem::size_of::<RequestCtx>());
    if cln.is_null() {
        return None;
    }
    let ctx = (*cln).data.cast::<RequestCtx>();
    debug_assert!(ctx.is_aligned());
    ptr::write(
        ctx,
        RequestCtx {
            request: r,
            waiting: 0,
            parked: false,
            counted: 0,
            session: SessionState::default(),
            oauth2: OAuth2State::default(),
            permission: PermissionState::default(),
            logout: None,
        },
    );
    (*cln).handler = Some(drop_ctx);
    let request = Request::from_ngx_http_request(r);
    request.set_module_ctx(ctx.cast(), HttpOrySessionModule::module());
    Some(&mut *ctx)
}

/// The request's context, also after an internal redirect (which clears `r->ctx`): like
/// nginx's realip module, find it again through the pool cleanup that owns it. This keeps
/// the decision and the variables of a request for its whole life.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn find<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
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

impl Default for Wait {
    fn default() -> Self {
        Wait::new()
    }
}
