//! Editing request and response headers: hiding the credential from the upstream, adding
//! `Location` and `Set-Cookie` to the response.

use core::mem::{offset_of, size_of};
use core::ptr;

use ngx::ffi::{
    ngx_http_headers_in_t, ngx_http_request_t, ngx_list_part_t, ngx_list_push, ngx_list_t,
    ngx_pnalloc, ngx_str_t, ngx_table_elt_t,
};

use crate::session::credential::{self, CookieMatch, CredentialKind};

/// Copies bytes into the request pool.
unsafe fn pool_str(r: *mut ngx_http_request_t, bytes: &[u8]) -> Option<ngx_str_t> {
    let data = ngx_pnalloc((*r).pool, bytes.len().max(1)).cast::<u8>();
    if data.is_null() {
        return None;
    }
    ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
    Some(ngx_str_t {
        len: bytes.len(),
        data,
    })
}

/// Adds a response header. `Location` is also recorded where nginx looks for it when it
/// makes the 3xx response.
pub unsafe fn add_header_out(
    r: *mut ngx_http_request_t,
    name: &'static str,
    value: &[u8],
) -> Option<()> {
    let h = ngx_list_push(&raw mut (*r).headers_out.headers).cast::<ngx_table_elt_t>();
    if h.is_null() {
        return None;
    }
    let value = pool_str(r, value)?;
    ptr::write(
        h,
        ngx_table_elt_t {
            hash: 1,
            key: ngx_str_t {
                len: name.len(),
                data: name.as_ptr().cast_mut(),
            },
            value,
            lowcase_key: ptr::null_mut(),
            #[cfg(ngx_header_chains)]
            next: ptr::null_mut(),
        },
    );
    if name.eq_ignore_ascii_case("location") {
        (*r).headers_out.location = h;
    }
    Some(())
}

/// `ory_session_hide_credentials`: the upstream gets no session credential. The session
/// cookie is cut out of every Cookie header (other cookies stay); the token headers go.
pub unsafe fn hide_credentials(
    r: *mut ngx_http_request_t,
    kind: CredentialKind,
    cookie: &CookieMatch,
) {
    let mut hidden: Vec<*mut ngx_table_elt_t> = Vec::new();
    for h in headers_in(r) {
        let name = (*h).key.as_bytes();
        if name.eq_ignore_ascii_case(b"x-session-token") {
            hidden.push(h);
        } else if name.eq_ignore_ascii_case(b"authorization") && kind == CredentialKind::Bearer {
            // Only the Authorization that carried the session token; Basic and others stay.
            let value = (*h).value.as_bytes();
            if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
                hidden.push(h);
            }
        } else if name.eq_ignore_ascii_case(b"cookie") {
            match credential::without_session_cookie((*h).value.as_bytes(), cookie) {
                Some(rest) if rest.is_empty() => hidden.push(h),
                Some(rest) => {
                    if let Some(value) = pool_str(r, &rest) {
                        (*h).value = value;
                    } else {
                        hidden.push(h); // no memory to rewrite it: drop it rather than leak
                    }
                }
                None => {}
            }
        }
    }
    // From the last: removing an element moves the ones after it.
    for h in hidden.into_iter().rev() {
        remove_header_in(r, h);
    }
}

/// Every element of the request's header list, in order.
unsafe fn headers_in(r: *mut ngx_http_request_t) -> Vec<*mut ngx_table_elt_t> {
    let mut out = Vec::new();
    let mut part: *mut ngx_list_part_t = &raw mut (*r).headers_in.headers.part;
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_table_elt_t>();
        for i in 0..(*part).nelts {
            out.push(elts.add(i));
        }
        part = (*part).next;
    }
    out
}

/// Removes one element from `r->headers_in.headers`, keeping the order of the others.
///
/// nginx lists have no removal, and `r->headers_in` keeps pointers to elements (`host`,
/// `authorization`, the `cookie` chain linked through `next`, ...). The elements after the
/// removed one move down by one slot, so every such pointer into the moved range is
/// adjusted, and a pointer to the removed element is replaced by its successor in its chain.
unsafe fn remove_header_in(r: *mut ngx_http_request_t, target: *mut ngx_table_elt_t) {
    let hin: *mut ngx_http_headers_in_t = &raw mut (*r).headers_in;
    let mut part: *mut ngx_list_part_t = &raw mut (*hin).headers.part;
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_table_elt_t>();
        let n = (*part).nelts;
        if target >= elts && target < elts.add(n) {
            let idx = target.offset_from(elts) as usize;
            let shifted = |p: *mut ngx_table_elt_t| -> *mut ngx_table_elt_t {
                if p > target && p < elts.add(n) {
                    p.wrapping_sub(1)
                } else {
                    p
                }
            };
            #[cfg(ngx_header_chains)]
            let successor = shifted((*target).next);
            #[cfg(not(ngx_header_chains))]
            let successor = ptr::null_mut();
            let fix = |p: *mut ngx_table_elt_t| if p == target { successor } else { shifted(p) };

            // Pointers held in headers_in after the list itself. Its other fields are
            // strings, numbers and bit fields: only a word that points exactly at an element
            // of this part can be one of the header pointers.
            let start = offset_of!(ngx_http_headers_in_t, headers) + size_of::<ngx_list_t>();
            let base = hin.cast::<u8>();
            let mut off = start.next_multiple_of(size_of::<usize>());
            while off + size_of::<usize>() <= size_of::<ngx_http_headers_in_t>() {
                let word = base.add(off).cast::<*mut ngx_table_elt_t>();
                let p = *word;
                let inside = p >= elts && p < elts.add(n);
                if inside
                    && (p as usize - elts as usize).is_multiple_of(size_of::<ngx_table_elt_t>())
                {
                    *word = fix(p);
                }
                off += size_of::<usize>();
            }
            // Chains of repeated headers (`next`), in every part.
            #[cfg(ngx_header_chains)]
            for h in headers_in(r) {
                if h != target {
                    (*h).next = fix((*h).next);
                }
            }
            // Before nginx 1.23, arrays of pointers to repeated headers.
            #[cfg(not(ngx_header_chains))]
            {
                fix_header_array(&raw mut (*hin).cookies, target, &fix);
                #[cfg(ngx_feature = "http_x_forwarded_for")]
                fix_header_array(&raw mut (*hin).x_forwarded_for, target, &fix);
            }
            ptr::copy(elts.add(idx + 1), elts.add(idx), n - idx - 1);
            (*part).nelts = n - 1;
            return;
        }
        part = (*part).next;
    }
}

/// Before nginx 1.23: drops `target` from an array of header pointers and adjusts the others.
#[cfg(not(ngx_header_chains))]
unsafe fn fix_header_array(
    a: *mut ngx::ffi::ngx_array_t,
    target: *mut ngx_table_elt_t,
    fix: &dyn Fn(*mut ngx_table_elt_t) -> *mut ngx_table_elt_t,
) {
    if (*a).elts.is_null() {
        return;
    }
    let elts = (*a).elts.cast::<*mut ngx_table_elt_t>();
    let mut kept = 0;
    for i in 0..(*a).nelts {
        let p = *elts.add(i);
        if p != target {
            *elts.add(kept) = fix(p);
            kept += 1;
        }
    }
    (*a).nelts = kept;
}
