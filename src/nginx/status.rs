//! The shared-memory zone that holds the counters of all workers, and the
//! `ory_session_status` content handler that shows them.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::core::{Buffer, Pool};
use ngx::ffi::{
    ngx_chain_t, ngx_command_t, ngx_conf_t, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_alloc,
    ngx_slab_pool_t, ngx_str_t, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK, NGX_OK,
};
use ngx::http::Request;

use crate::check::metrics::Metrics;

/// The counters in shared memory. Set by the zone's init in the master before workers are
/// forked, so every worker sees the same mapping; kept across reloads (nginx hands the
/// previous zone's data to init when name and size are unchanged).
static mut METRICS: *mut Metrics = ptr::null_mut();

/// Large enough for the slab pool header and the counters.
const ZONE_SIZE: usize = 64 * 1024;

pub fn metrics() -> Option<&'static Metrics> {
    // SAFETY: written only during configuration, before any request or worker exists.
    unsafe { (*ptr::addr_of!(METRICS)).as_ref() }
}

/// Declares the zone; called from postconfiguration.
///
/// # Safety
/// `cf` is the configuration being parsed.
pub unsafe fn add_zone(cf: *mut ngx_conf_t) -> Result<(), ()> {
    let mut name = ngx_str_t {
        len: 11,
        data: c"ory_session".as_ptr().cast_mut().cast(),
    };
    let tag = ptr::addr_of!(crate::ngx_http_ory_session_module)
        .cast_mut()
        .cast();
    let zone = ngx_shared_memory_add(cf, &mut name, ZONE_SIZE, tag);
    if zone.is_null() {
        return Err(());
    }
    (*zone).init = Some(init_zone);
    Ok(())
}

unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, previous: *mut c_void) -> ngx_int_t {
    if !previous.is_null() {
        (*zone).data = previous;
        METRICS = previous.cast();
        return NGX_OK as ngx_int_t;
    }
    let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
    let metrics = ngx_slab_alloc(pool, core::mem::size_of::<Metrics>()).cast::<Metrics>();
    if metrics.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    ptr::write(metrics, Metrics::default());
    (*zone).data = metrics.cast();
    METRICS = metrics;
    NGX_OK as ngx_int_t
}

/// `ory_session_status;` makes the location answer with the counters.
pub extern "C" fn set_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls setters with a valid cf in a location context.
    unsafe { super::conf::set_content_handler(cf, status_handler) }
}

unsafe extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is the request nginx runs this content handler for; a panic must never
    // unwind into C.
    catch_unwind(AssertUnwindSafe(|| unsafe { answer(r) }))
        .unwrap_or(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
}

unsafe fn answer(r: *mut ngx_http_request_t) -> ngx_int_t {
    if (*r).method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    let request = Request::from_ngx_http_request(r);
    let rc = request.discard_request_body();
    if rc.0 != NGX_OK as ngx_int_t {
        return rc.0;
    }
    let Some(metrics) = metrics() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let mut text = metrics.render();
    super::zone::render_into(&mut text);

    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (*r).headers_out.status = NGX_HTTP_OK as usize;
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
    let Some(mut buf) = pool.create_buffer_from_str(&text) else {
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
