//! Logouts through nginx, and purges: what ends cached sessions before their TTL does.
//!
//! - `ory_session_logout on;` on the location that proxies Kratos' public API. Its
//!   precontent handler notes what a request would end (the credential it carries, or the
//!   session token in the JSON body of `DELETE /self-service/logout/api`, read before it is
//!   proxied), as keyed hashes only. The header filter sees Kratos' status before the response
//!   goes out; on success the entries go from every zone, which tells every worker's front
//!   cache (see `crate::check::front`), and from this worker's own cache.
//! - `ory_cache_purge;` answers `DELETE ?session_id=…` / `?identity_id=…` by removing every
//!   entry of that session or identity from every zone.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::core::{Buffer, Pool};
use ngx::ffi::{
    ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_http_arg, ngx_http_core_run_phases,
    ngx_http_finalize_request, ngx_http_output_filter, ngx_http_output_header_filter_pt,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_http_send_header, ngx_int_t,
    ngx_str_t, NGX_DECLINED, NGX_DONE, NGX_ERROR, NGX_HTTP_BAD_REQUEST, NGX_HTTP_DELETE,
    NGX_HTTP_GET, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::Request;
use ngx::ngx_log_error;

use super::access::location_conf;
use super::context;
use super::zone::{self, Attached};
use super::{request, session};
use crate::check::front::ZoneAccess;
use crate::check::key::{CacheKey, KeyHasher};
use crate::session::credential::{self, CredentialKind};
use crate::session::logout::{self, api_token, is_id, Method, Route};

/// What a request to the logout location would end, until Kratos has answered.
pub struct Logout {
    route: Route,
    /// The credential's keys in each zone (by the zone's number), under every session scope.
    zone_keys: Vec<(usize, CacheKey)>,
    /// Its keys in this worker's own cache.
    local_keys: Vec<CacheKey>,
}

impl Logout {
    /// Keys of a credential value as every kind it may be sent as: a session token works as
    /// `X-Session-Token` and as a bearer token alike.
    fn note_credential(&mut self, kind: CredentialKind, cookie_name: &[u8], value: &[u8]) {
        let kinds: Vec<(CredentialKind, &[u8], &[u8])> = match kind {
            CredentialKind::Cookie => vec![(kind, cookie_name, value)],
            CredentialKind::SessionToken | CredentialKind::Bearer => vec![
                (CredentialKind::SessionToken, b"", value),
                (CredentialKind::Bearer, b"", value),
            ],
        };
        let scopes = zone::session_scopes();
        zone::each(|i, a: &Attached| {
            let hasher = KeyHasher::with_secret(a.shared.secret());
            for scope in &scopes {
                for (kind, name, value) in &kinds {
                    let key = hasher.key(*scope, crate::session::tag(*kind), name, value);
                    self.zone_keys.push((i, key));
                }
            }
        });
        self.local_keys = session::local_keys(&scopes, &kinds);
    }
}

/// Precontent handler: notes what a logout request would end.
///
/// # Safety
/// Called by nginx with a valid request.
pub unsafe extern "C" fn precontent_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: forwarded from nginx; a panic must never unwind into C.
    catch_unwind(AssertUnwindSafe(|| unsafe { note(r) }))
        .unwrap_or(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
}

unsafe fn note(r: *mut ngx_http_request_t) -> ngx_int_t {
    let declined = NGX_DECLINED as ngx_int_t;
    let Some(lcf) = location_conf(r) else {
        return declined;
    };
    if !lcf.session.logout_on() || r != (*r).main {
        return declined;
    }
    let method = match (*r).method as u32 {
        m if m == NGX_HTTP_GET => Method::Get,
        m if m == NGX_HTTP_DELETE => Method::Delete,
        _ => Method::Other,
    };
    let Some(route) = logout::route(method, (*r).uri.as_bytes()) else {
        return declined;
    };
    let ctx = match context::find(r) {
        // Back after the body was read (or after an internal redirect): noted already.
        Some(ctx) if ctx.logout.is_some() => return declined,
        Some(ctx) => ctx,
        None => match context::attach(r) {
            Some(ctx) => ctx,
            None => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        },
    };
    let mut noted = Box::new(Logout {
        route,
        zone_keys: Vec::new(),
        local_keys: Vec::new(),
    });
    match noted.route {
        Route::BrowserLogout | Route::OtherSessions => {
            // The credential Kratos will take; an unusable one ends nothing we cached.
            if let Ok(Some(c)) =
                credential::find_credential(request::headers(r), lcf.session.cookie())
            {
                noted.note_credential(c.kind, c.cookie_name, c.value);
            }
        }
        Route::ApiLogout => {
            ctx.logout = Some(noted);
            // The token is in the body: read it before it is proxied (proxy_pass then sends
            // the body read here, as it does after nginx's mirror module read it).
            let rc = ngx_http_read_client_request_body(r, Some(body_read));
            if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                return rc;
            }
            ngx_http_finalize_request(r, NGX_DONE as ngx_int_t);
            return NGX_DONE as ngx_int_t;
        }
        Route::Session(_) | Route::Identity(_) => {}
    }
    ctx.logout = Some(noted);
    declined
}

/// The body of `DELETE /self-service/logout/api` is in: note its token, then go on with the
/// phases, which come back to `note` and from there to the proxy.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: nginx calls this with the request whose body it read.
        unsafe {
            if let Some(token) = body(r).as_deref().and_then(api_token) {
                if let Some(noted) = context::find(r).and_then(|ctx| ctx.logout.as_mut()) {
                    noted.note_credential(CredentialKind::SessionToken, b"", token.as_bytes());
                }
            }
            (*r).set_preserve_body(1);
        }
    }));
    // SAFETY: as nginx's mirror module does once the body is read.
    unsafe {
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}

/// The request body when it is all in memory (a logout body is a few dozen bytes; one that
/// went to a temporary file is not read here).
unsafe fn body(r: *mut ngx_http_request_t) -> Option<Vec<u8>> {
    let rb = (*r).request_body;
    if rb.is_null() {
        return None;
    }
    let mut out = Vec::new();
    let mut cl = (*rb).bufs;
    while !cl.is_null() {
        let b = (*cl).buf;
        if (*b).in_file() != 0 && (*b).memory() == 0 && (*b).temporary() == 0 {
            return None;
        }
        let len = (*b).last.offset_from((*b).pos) as usize;
        if len > 0 {
            out.extend_from_slice(core::slice::from_raw_parts((*b).pos, len));
        }
        if out.len() > 64 * 1024 {
            return None;
        }
        cl = (*cl).next;
    }
    Some(out)
}

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

/// Installs the header filter; from postconfiguration, when some location has
/// `ory_session_logout on`.
///
/// # Safety
/// Called once per configuration, while nginx builds its filter chain.
pub unsafe fn install_filter() {
    NEXT_HEADER_FILTER = ngx::ffi::ngx_http_top_header_filter;
    ngx::ffi::ngx_http_top_header_filter = Some(header_filter);
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: forwarded from nginx; a panic must never unwind into C (the response still
    // goes out: at worst the entries live until their TTL).
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { on_answer(r) }));
    match NEXT_HEADER_FILTER {
        Some(next) => next(r),
        None => NGX_ERROR as ngx_int_t,
    }
}

unsafe fn on_answer(r: *mut ngx_http_request_t) {
    if r != (*r).main || !location_conf(r).is_some_and(|l| l.session.logout_on()) {
        return;
    }
    let Some(ctx) = context::find(r) else { return };
    // Once per request, whatever the response (an error page comes through here too).
    let Some(noted) = ctx.logout.take() else {
        return;
    };
    let status = (*r).headers_out.status as u16;
    if !logout::succeeded(&noted.route, status) {
        return;
    }
    let removed = revoke(&noted);
    session::forget_locally(&noted.local_keys);
    ngx_log_error!(
        NGX_LOG_INFO,
        (*(*r).connection).log,
        "ory_session: logout answered {}, {} cached entries evicted",
        status,
        removed
    );
}

/// Ends in every zone what a successful logout ended.
fn revoke(noted: &Logout) -> usize {
    let mut removed = 0;
    zone::each(|i, a| {
        let keys = noted
            .zone_keys
            .iter()
            .filter(|(z, _)| *z == i)
            .map(|(_, k)| *k);
        removed += a.shared.with_locked(|z, heap| match &noted.route {
            Route::BrowserLogout | Route::ApiLogout => keys.map(|k| z.revoke_key(heap, k)).sum(),
            Route::Session(id) => z.revoke_session(heap, id),
            Route::Identity(id) => z.revoke_identity(heap, id, None),
            Route::OtherSessions => {
                // The caller's identity, from its own cached session: its other sessions go.
                let mut n = 0;
                for k in keys {
                    if let Some((session, identity)) = z.ids_of(k) {
                        n = z.revoke_identity_hash(heap, identity, session);
                        break;
                    }
                }
                n
            }
        });
    });
    removed
}

/// `ory_cache_purge;` makes the location answer `DELETE` with a purge.
pub extern "C" fn set_purge(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls setters with a valid cf in a location context.
    unsafe { super::conf::set_content_handler(cf, purge_handler) }
}

unsafe extern "C" fn purge_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is the request nginx runs this content handler for; a panic must never
    // unwind into C.
    catch_unwind(AssertUnwindSafe(|| unsafe { purge(r) }))
        .unwrap_or(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
}

unsafe fn arg(r: *mut ngx_http_request_t, name: &str) -> Option<Vec<u8>> {
    let mut value = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    let rc = ngx_http_arg(r, name.as_ptr().cast_mut(), name.len(), &mut value);
    (rc == NGX_OK as ngx_int_t).then(|| value.as_bytes().to_vec())
}

unsafe fn purge(r: *mut ngx_http_request_t) -> ngx_int_t {
    if (*r).method as u32 & NGX_HTTP_DELETE == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    let request = Request::from_ngx_http_request(r);
    let rc = request.discard_request_body();
    if rc.0 != NGX_OK as ngx_int_t {
        return rc.0;
    }
    let session_id = arg(r, "session_id");
    let identity_id = arg(r, "identity_id");
    let valid = |id: &Option<Vec<u8>>| id.as_deref().is_none_or(is_id);
    if (session_id.is_none() && identity_id.is_none())
        || !valid(&session_id)
        || !valid(&identity_id)
    {
        let body = "{\"error\":\"a session_id or an identity_id is required\"}\n";
        return send(r, NGX_HTTP_BAD_REQUEST as usize, body);
    }
    let mut purged = 0;
    zone::each(|_, a| {
        purged += a.shared.with_locked(|z, heap| {
            let mut n = 0;
            if let Some(id) = &session_id {
                n += z.revoke_session(heap, id);
            }
            if let Some(id) = &identity_id {
                n += z.revoke_identity(heap, id, None);
            }
            n
        });
    });
    ngx_log_error!(
        NGX_LOG_INFO,
        (*(*r).connection).log,
        "ory_cache_purge: {} cached entries purged",
        purged
    );
    send(
        r,
        NGX_HTTP_OK as usize,
        &format!("{{\"purged\":{purged}}}\n"),
    )
}

unsafe fn send(r: *mut ngx_http_request_t, status: usize, text: &str) -> ngx_int_t {
    let content_type = "application/json";
    (*r).headers_out.status = status;
    (*r).headers_out.content_length_n = text.len() as i64;
    (*r).headers_out.content_type = ngx_str_t {
        len: content_type.len(),
        data: content_type.as_ptr().cast_mut(),
    };
    (*r).headers_out.content_type_len = content_type.len();
    let rc = ngx_http_send_header(r);
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
        return rc;
    }
    let pool = Pool::from_ngx_pool((*r).pool);
    let Some(mut buf) = pool.create_buffer_from_str(text) else {
        return NGX_ERROR as ngx_int_t;
    };
    buf.set_last_buf(true);
    buf.set_last_in_chain(true);
    let mut out = ngx_chain_t {
        buf: buf.as_ngx_buf_mut(),
        next: ptr::null_mut(),
    };
    ngx_http_output_filter(r, &mut out)
}
