//! Log lines of the checks, worded like nginx's own: "<what failed> while <doing what>",
//! followed by nginx's own context (client, server, request, host).

use ngx::ffi::{ngx_http_request_t, NGX_LOG_ERR, NGX_LOG_INFO};
use ngx::ngx_log_error;

use crate::check::decision::Outcome;

/// What a check is doing when it logs: its directive and the object it checks.
pub struct Doing {
    pub directive: &'static str,
    pub checking: &'static str,
}

pub const CHECKING_SESSION: Doing = Doing {
    directive: "ory_session",
    checking: "session",
};

pub const CHECKING_OAUTH2: Doing = Doing {
    directive: "ory_oauth2",
    checking: "OAuth2 token",
};

pub const CHECKING_PERMISSION: Doing = Doing {
    directive: "ory_permission",
    checking: "permission",
};

/// Logs why a request was refused or failed: refusals are the client's business and go to
/// `info`, like nginx's own access-control modules; failures of a service or of the module
/// are errors. `reason` never holds a credential; an empty one is a line already written
/// (rate-limited), and nothing is logged.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn outcome(r: *mut ngx_http_request_t, doing: &Doing, outcome: Outcome, reason: &str) {
    if reason.is_empty() {
        return;
    }
    let level = if outcome.is_failure() {
        NGX_LOG_ERR
    } else {
        NGX_LOG_INFO
    };
    ngx_log_error!(
        level,
        (*(*r).connection).log,
        "{}: {} while checking {}",
        doing.directive,
        reason,
        doing.checking
    );
}

/// Debug-level trace (nginx built `--with-debug`, `error_log ... debug`) of request `$r`.
/// Never given a credential value. The arguments are only evaluated when the level is on,
/// so a trace costs a request nothing otherwise.
macro_rules! debug {
    ($r:expr, $($arg:tt)+) => {
        ngx::ngx_log_debug_mask!(DebugMask::Http, (*(*$r).connection).log, $($arg)+)
    };
}
pub(crate) use debug;
