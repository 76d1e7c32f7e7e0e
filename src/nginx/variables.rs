//! `$ory_*` variables: views of the decision recorded in the request's context.
//!
//! Values point into the session kept alive by the context (which lives as long as the
//! request), so evaluating a variable copies nothing. They are not cacheable: a variable
//! read before the decision (say in the rewrite phase) must not freeze an empty value.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use ngx::ffi::{
    __BindgenBitfieldUnit, ngx_conf_t, ngx_http_add_variable, ngx_http_request_t,
    ngx_http_variable_t, ngx_int_t, ngx_pnalloc, ngx_str_t, ngx_uint_t, ngx_variable_value_t,
    NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_HTTP_VAR_PREFIX, NGX_OK,
};

use super::context;
use crate::oauth2::claims::Claims;
use crate::session::model::Session;

type Field = fn(&Session) -> &str;

/// Variables taken straight from the session.
const SESSION_FIELDS: [(&str, Field); 10] = [
    ("ory_user_id", |s| &s.user_id),
    ("ory_session_id", |s| &s.id),
    ("ory_session_aal", |s| &s.aal),
    ("ory_session_expires_at", |s| &s.expires_at),
    ("ory_session_authenticated_at", |s| &s.authenticated_at),
    ("ory_identity_schema_id", |s| &s.schema_id),
    ("ory_identity_state", |s| &s.identity_state),
    ("ory_identity_traits", |s| &s.traits_json),
    ("ory_identity_metadata_public", |s| &s.metadata_public_json),
    ("ory_session_jwt", |s| s.tokenized.as_deref().unwrap_or("")),
];

const TRAIT_PREFIX: &str = "ory_trait_";

type ClaimField = fn(&Claims) -> &str;

/// Variables taken straight from the access token's claims (header-safe texts).
const TOKEN_FIELDS: [(&str, ClaimField); 3] = [
    ("ory_oauth2_subject", |c| c.text("sub").unwrap_or("")),
    ("ory_oauth2_client_id", |c| {
        c.text("client_id").unwrap_or("")
    }),
    ("ory_oauth2_scope", |c| c.scope_text()),
];

const CLAIM_PREFIX: &str = "ory_oauth2_claim_";

/// Registers every variable; called from preconfiguration.
///
/// # Safety
/// `cf` is the configuration being parsed.
pub unsafe fn register(cf: *mut ngx_conf_t) -> Result<(), ()> {
    ONE_STORE.store(one_store_matches_setters(), Ordering::Relaxed);
    for (index, (name, _)) in SESSION_FIELDS.iter().enumerate() {
        add(cf, name, session_field, index, 0)?;
    }
    add(cf, TRAIT_PREFIX, session_trait, 0, NGX_HTTP_VAR_PREFIX)?;
    for (index, (name, _)) in TOKEN_FIELDS.iter().enumerate() {
        add(cf, name, token_field, index, 0)?;
    }
    add(cf, CLAIM_PREFIX, token_claim, 0, NGX_HTTP_VAR_PREFIX)?;
    add(cf, "ory_oauth2_expires_at", token_expires_at, 0, 0)?;
    add(cf, "ory_session_cache_status", cache_status, 0, 0)?;
    add(cf, "ory_oauth2_cache_status", cache_status, 2, 0)?;
    add(cf, "ory_permission_cache_status", cache_status, 1, 0)?;
    add(cf, "ory_session_kratos_time", kratos_time, 0, 0)?;
    Ok(())
}

unsafe fn add(
    cf: *mut ngx_conf_t,
    name: &'static str,
    get: unsafe extern "C" fn(
        *mut ngx_http_request_t,
        *mut ngx_variable_value_t,
        usize,
    ) -> ngx_int_t,
    data: usize,
    flags: u32,
) -> Result<(), ()> {
    let mut name = ngx_str_t {
        len: name.len(),
        data: name.as_ptr().cast_mut(),
    };
    let var: *mut ngx_http_variable_t = ngx_http_add_variable(
        cf,
        &mut name,
        (flags | NGX_HTTP_VAR_NOCACHEABLE) as ngx_uint_t,
    );
    if var.is_null() {
        return Err(());
    }
    (*var).get_handler = Some(get);
    // Every getter runs its body through `guarded`, so a panic never unwinds into nginx.
    (*var).data = data;
    Ok(())
}

unsafe fn set(v: *mut ngx_variable_value_t, value: &str) -> ngx_int_t {
    let v = &mut *v;
    // Values are never written through this pointer: nginx copies them where it needs to.
    v.data = value.as_ptr().cast_mut();
    if ONE_STORE.load(Ordering::Relaxed) {
        v._bitfield_1 = __BindgenBitfieldUnit::new(found_bits(value.len()));
    } else {
        v.set_len(value.len() as u32);
        v.set_valid(1);
        v.set_no_cacheable(1);
        v.set_not_found(0);
        v.set_escape(0);
    }
    NGX_OK as ngx_int_t
}

/// Whether `set` may write the bit-fields with one store. bindgen's setters write them one
/// bit at a time, about 120 instructions for a value, and nginx reads a variable twice each
/// time it is used (its length, then its bytes).
static ONE_STORE: AtomicBool = AtomicBool::new(false);

/// `len:28 valid:1 no_cacheable:1 not_found:0 escape:0`, from the lowest bit up, as C
/// compilers lay out bit-fields on little-endian machines. Values are parts of a whoami
/// answer, which is capped far below 2^28 bytes.
fn found_bits(len: usize) -> [u8; 4] {
    ((len as u32 & 0x0fff_ffff) | 1 << 28 | 1 << 29).to_le_bytes()
}

/// Checked once, when the configuration is read, against the setters bindgen generated from
/// nginx's own header: where the layout differs, `set` keeps using the setters.
fn one_store_matches_setters() -> bool {
    let mut v = ngx_variable_value_t {
        _bitfield_align_1: [],
        _bitfield_1: __BindgenBitfieldUnit::new([0xff; 4]),
        data: std::ptr::null_mut(),
    };
    let len = 0x0a5c_3e69;
    v.set_len(len);
    v.set_valid(1);
    v.set_no_cacheable(1);
    v.set_not_found(0);
    v.set_escape(0);
    let by_setters = v._bitfield_1;
    v._bitfield_1 = __BindgenBitfieldUnit::new(found_bits(len as usize));
    by_setters == v._bitfield_1
        && v.len() == len
        && v.valid() == 1
        && v.no_cacheable() == 1
        && v.not_found() == 0
        && v.escape() == 0
}

/// Runs a getter; a panic makes the variable fail (nginx then logs and fails the request)
/// instead of unwinding into C.
fn guarded(get: impl FnOnce() -> ngx_int_t) -> ngx_int_t {
    catch_unwind(AssertUnwindSafe(get)).unwrap_or(NGX_ERROR as ngx_int_t)
}

unsafe fn session<'a>(r: *mut ngx_http_request_t) -> Option<&'a Session> {
    context::find((*r).main)?.session.session.as_deref()
}

unsafe extern "C" fn session_field(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guarded(|| {
        let Some((_, field)) = SESSION_FIELDS.get(data) else {
            return NGX_ERROR as ngx_int_t;
        };
        match session(r) {
            Some(s) => set(v, field(s)),
            None => set(v, ""),
        }
    })
}

/// `$ory_trait_<name>`: nginx passes the full variable name as `data`.
unsafe extern "C" fn session_trait(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guarded(|| {
        let name = &*(data as *const ngx_str_t);
        let trait_name = name
            .as_bytes()
            .get(TRAIT_PREFIX.len()..)
            .unwrap_or_default();
        let value = core::str::from_utf8(trait_name)
            .ok()
            .and_then(|t| trait_value(session(r)?, t))
            .unwrap_or("");
        set(v, value)
    })
}

unsafe fn claims<'a>(r: *mut ngx_http_request_t) -> Option<&'a Claims> {
    Some(&context::find((*r).main)?.oauth2.verified.as_deref()?.claims)
}

unsafe extern "C" fn token_field(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guarded(|| {
        let Some((_, field)) = TOKEN_FIELDS.get(data) else {
            return NGX_ERROR as ngx_int_t;
        };
        set(v, claims(r).map_or("", field))
    })
}

/// `$ory_oauth2_claim_<name>`: a top-level claim (for introspection, a field of the
/// answer) as text, objects and arrays as JSON. Claim names match without regard to ASCII
/// case, since nginx lowercases variable names.
unsafe extern "C" fn token_claim(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guarded(|| {
        let name = &*(data as *const ngx_str_t);
        let claim = name
            .as_bytes()
            .get(CLAIM_PREFIX.len()..)
            .unwrap_or_default();
        let value = core::str::from_utf8(claim)
            .ok()
            .and_then(|name| {
                let claims = claims(r)?;
                claims.text(name).or_else(|| {
                    let (_, value) = claims
                        .texts()
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))?;
                    Some(value)
                })
            })
            .unwrap_or("");
        set(v, value)
    })
}

/// `$ory_oauth2_expires_at`: the token's `exp` as an RFC 3339 time, like
/// `$ory_session_expires_at`.
unsafe extern "C" fn token_expires_at(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    guarded(|| {
        let Some(text) = claims(r)
            .and_then(|c| c.exp)
            .and_then(|exp| time::OffsetDateTime::from_unix_timestamp(exp).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
        else {
            return set(v, "");
        };
        set_pool_copy(r, v, &text)
    })
}

/// Sets a value made for this request, copied into its pool.
unsafe fn set_pool_copy(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    text: &str,
) -> ngx_int_t {
    let data = ngx_pnalloc((*r).pool, text.len().max(1)).cast::<u8>();
    if data.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    core::ptr::copy_nonoverlapping(text.as_ptr(), data, text.len());
    set(
        v,
        core::str::from_utf8_unchecked(core::slice::from_raw_parts(data, text.len())),
    )
}

/// nginx lowercases variable names, so `$ory_trait_firstName` arrives as `firstname`:
/// match trait names without regard to ASCII case.
fn trait_value<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.trait_value(name).or_else(|| {
        let (_, value) = session
            .traits
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        Some(&**value)
    })
}

/// `$ory_session_cache_status` (data 0), `$ory_permission_cache_status` (1) and
/// `$ory_oauth2_cache_status` (2).
unsafe extern "C" fn cache_status(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guarded(|| {
        let status = context::find((*r).main).map_or("", |ctx| match data {
            0 => ctx.session.cache_status.as_str(),
            1 => ctx.permission.cache_status.as_str(),
            _ => ctx.oauth2.cache_status.as_str(),
        });
        set(v, status)
    })
}

/// `$ory_session_kratos_time`: seconds with millisecond resolution, like
/// `$upstream_response_time`; empty when no whoami call was made for the request.
unsafe extern "C" fn kratos_time(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    guarded(|| {
        let Some(ms) = context::find((*r).main).and_then(|ctx| ctx.session.kratos_ms) else {
            return set(v, "");
        };
        set_pool_copy(r, v, &format!("{}.{:03}", ms / 1000, ms % 1000))
    })
}
