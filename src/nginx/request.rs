//! Reading what a check needs from a request: its headers as plain byte pairs, the URL the
//! client asked for, and the value of a directive that holds variables.

use core::ptr;

use ngx::ffi::{
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_request_t, ngx_int_t, ngx_str_t,
    NGX_OK,
};
use ngx::http::{HttpModuleServerConf, NgxHttpCoreModule, Request};

/// The request headers as `(name, value)` pairs, in the order the client sent them.
///
/// # Safety
/// `r` is a live request; the slices borrow its header list.
pub unsafe fn headers<'a>(
    r: *mut ngx_http_request_t,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let request = Request::from_ngx_http_request(r);
    request
        .headers_in_iterator()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
}

/// The first header called `name` (ASCII case-insensitive).
///
/// # Safety
/// `r` is a live request.
pub unsafe fn header<'a>(r: *mut ngx_http_request_t, name: &[u8]) -> Option<&'a [u8]> {
    headers(r)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The value of the request's Authorization header. nginx refuses a request with two of
/// them and keeps the one apart from the header list, so no search is needed.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn authorization<'a>(r: *mut ngx_http_request_t) -> Option<&'a [u8]> {
    let header = (*r).headers_in.authorization;
    (!header.is_null()).then(|| (*header).value.as_bytes())
}

/// The value of a directive argument that may hold variables, in the request's pool (or
/// the configuration's, for a value without variables).
///
/// # Safety
/// `r` is a live request and `cv` was compiled for its configuration.
pub unsafe fn complex_value<'a>(
    r: *mut ngx_http_request_t,
    cv: *mut ngx_http_complex_value_t,
) -> Option<&'a [u8]> {
    let mut value = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    if ngx_http_complex_value(r, cv, &mut value) != NGX_OK as ngx_int_t {
        return None;
    }
    if value.len == 0 {
        return Some(&[]);
    }
    Some(core::slice::from_raw_parts(value.data, value.len))
}

/// The absolute URL the client asked for, to come back to after logging in: the Host
/// header as sent (port included) and the request URI as sent, bytes kept.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn own_url(r: *mut ngx_http_request_t) -> Vec<u8> {
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
