//! Who is asking: a Kratos session, an OAuth2 access token, or either where a location takes
//! both. With both, each check looks for its own credential (`X-Session-Token`, the session
//! cookie and `Bearer ory_st_…` are the session's, any other bearer token the OAuth2
//! check's), both run at once, and the request passes when either passes.

use ngx::ffi::ngx_http_request_t;

use super::access::Check;
use super::conf::LocConf;
use super::context::RequestCtx;
use super::log::{self, CHECKING_SESSION};
use super::oauth2::OAuth2Check;
use super::session::SessionCheck;
use crate::check::decision::{Decision, Outcome};
use crate::check::metrics::CheckMetrics;

pub struct Authentication;

impl Check for Authentication {
    #[inline]
    fn enabled(&self, lcf: &LocConf) -> bool {
        SessionCheck.enabled(lcf) || OAuth2Check.enabled(lcf)
    }

    #[inline]
    fn begun(&self, ctx: &RequestCtx) -> bool {
        SessionCheck.begun(ctx) || OAuth2Check.begun(ctx)
    }

    #[inline]
    fn counted_in(&self, lcf: &LocConf, ctx: &RequestCtx) -> Option<&'static CheckMetrics> {
        match (SessionCheck.enabled(lcf), OAuth2Check.enabled(lcf)) {
            (true, false) => SessionCheck.counted_in(lcf, ctx),
            (false, true) => OAuth2Check.counted_in(lcf, ctx),
            _ if ctx.session.allowed() => SessionCheck.counted_in(lcf, ctx),
            _ if ctx.oauth2.allowed() => OAuth2Check.counted_in(lcf, ctx),
            // Neither let it through: the token's answer when the request carried one, else
            // the session's (a browser is sent to log in).
            _ if ctx.oauth2.took_token => OAuth2Check.counted_in(lcf, ctx),
            _ => SessionCheck.counted_in(lcf, ctx),
        }
    }

    #[inline]
    unsafe fn begin(&self, r: *mut ngx_http_request_t, lcf: &LocConf, ctx: *mut RequestCtx) {
        if SessionCheck.enabled(lcf) {
            SessionCheck.begin(r, lcf, ctx);
        }
        if OAuth2Check.enabled(lcf) {
            OAuth2Check.begin(r, lcf, ctx);
        }
        if SessionCheck.enabled(lcf)
            && OAuth2Check.enabled(lcf)
            && (*ctx).session.found_nothing()
            && !(*ctx).oauth2.took_token
        {
            // Each check kept quiet about the credential it did not find.
            log::outcome(
                r,
                &CHECKING_SESSION,
                Outcome::Unauthenticated,
                "no session credential and no bearer token in the request",
            );
        }
    }

    #[inline]
    unsafe fn decide(
        &self,
        r: *mut ngx_http_request_t,
        lcf: &LocConf,
        ctx: &mut RequestCtx,
    ) -> Decision {
        match (SessionCheck.enabled(lcf), OAuth2Check.enabled(lcf)) {
            (true, false) => SessionCheck.decide(r, lcf, ctx),
            (false, true) => OAuth2Check.decide(r, lcf, ctx),
            _ if ctx.session.allowed() => SessionCheck.decide(r, lcf, ctx),
            _ if ctx.oauth2.allowed() => OAuth2Check.decide(r, lcf, ctx),
            _ if ctx.oauth2.took_token => OAuth2Check.decide(r, lcf, ctx),
            _ => SessionCheck.decide(r, lcf, ctx),
        }
    }
}
