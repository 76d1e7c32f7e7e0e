//! Directives, configuration structures, merging and validation.
//!
//! Directives that nginx has a setter for use it (`ngx_conf_set_flag_slot`,
//! `ngx_conf_set_msec_slot`, `ngx_conf_set_num_slot`, complex values), so their errors read
//! exactly like nginx's own; custom setters parse only what nginx cannot (URLs, cookie names,
//! template ids), or where nginx's error would not name the directive (`ory_session_aal`).
//! nginx appends the file and line to every error.

use core::ffi::{c_char, c_void, CStr};
use core::mem::offset_of;
use core::ptr;

use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_post_handler_pt, ngx_conf_post_t, ngx_conf_set_flag_slot,
    ngx_conf_set_msec_slot, ngx_conf_set_num_slot, ngx_conf_t, ngx_flag_t, ngx_http_request_t,
    ngx_http_set_complex_value_slot, ngx_int_t, ngx_msec_t, ngx_str_t, ngx_uint_t, NGX_CONF_1MORE,
    NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE2, NGX_CONF_TAKE3, NGX_CONF_TAKE4,
    NGX_CONF_UNSET, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF,
    NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::{ngx_conf_log_error, ngx_log_error, ngx_string};
use std::sync::Arc;

use crate::check::call::{extra_header, ExtraHeaders};
use crate::check::client::{read_trusted, Trust};
use crate::check::key::Scope;
use crate::oauth2::jwks_cache::Policy;

use crate::HttpOrySessionModule;

/// nginx's NGX_CONF_UNSET_UINT and NGX_CONF_UNSET_MSEC: `(type) -1`, which bindgen skips.
const NGX_CONF_UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
const NGX_CONF_UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
const NGX_CONF_UNSET_FLAG: ngx_flag_t = NGX_CONF_UNSET as ngx_flag_t;
const NGX_CONF_UNSET_INT: ngx_int_t = NGX_CONF_UNSET as ngx_int_t;
/// nginx's NGX_CONF_UNSET_PTR: `(void *) -1`.
const NGX_CONF_UNSET_PTR: *mut c_void = usize::MAX as *mut c_void;

const DEFAULT_CACHE_SIZE: ngx_int_t = 10_000;
const DEFAULT_MAX_PENDING: ngx_int_t = 1_024;

/// `http`-level settings: one cache and one set of limits per worker.
pub struct MainConf {
    /// `ory_session_cache_size`
    pub cache_size: ngx_int_t,
    /// `ory_permission_cache_size`
    pub permission_cache_size: ngx_int_t,
    /// `ory_oauth2_cache_size`
    pub oauth2_cache_size: ngx_int_t,
    /// The longest `ory_oauth2_timeout`.
    pub max_oauth2_timeout: ngx_msec_t,
    /// Every key set a location with `ory_oauth2 on` verifies JWTs with, by URL: each
    /// worker fetches them when it starts.
    pub jwks: Vec<(Scope, Arc<reqwest::Url>, Policy, usize)>,
    /// The certificate authorities each worker's clients trust, one set per
    /// `*_trusted_certificate` file (by its full name), after the system's store at 0.
    pub trusts: Vec<(String, Trust)>,
    /// `ory_session_max_pending`: the bound of every kind of check's calls in flight.
    pub max_pending: ngx_int_t,
    /// The longest `ory_session_timeout` of any location: how long one shared call may run.
    pub max_timeout: ngx_msec_t,
    /// The longest `ory_permission_timeout`.
    pub max_permission_timeout: ngx_msec_t,
    /// Set when a check is enabled anywhere: workers only start the client runtime when some
    /// location can use it.
    pub enabled_somewhere: bool,
    /// `ory_cache_zone`s, in the order declared; `ory_cache` refers to them by number.
    pub zones: Vec<super::zone::ZoneDecl>,
    /// The scope of every location that checks sessions, once each: a logout evicts the
    /// credential's entry under each.
    pub session_scopes: Vec<Scope>,
    /// Some location has `ory_session_logout on`: the module's header filter is installed.
    pub logout_somewhere: bool,
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            cache_size: NGX_CONF_UNSET_INT,
            permission_cache_size: NGX_CONF_UNSET_INT,
            oauth2_cache_size: NGX_CONF_UNSET_INT,
            max_oauth2_timeout: oauth2::DEFAULT_TIMEOUT_MS,
            jwks: Vec::new(),
            trusts: vec![(String::new(), Trust::System)],
            max_pending: NGX_CONF_UNSET_INT,
            max_timeout: session::DEFAULT_TIMEOUT_MS,
            max_permission_timeout: permission::DEFAULT_TIMEOUT_MS,
            enabled_somewhere: false,
            zones: Vec::new(),
            session_scopes: Vec::new(),
            logout_somewhere: false,
        }
    }
}

/// Where a directive was written, for errors reported after parsing (at merge time nginx's
/// own position points at the end of the block).
#[derive(Clone, Default)]
pub struct Source {
    file: String,
    line: ngx_uint_t,
}

impl Source {
    /// Where nginx is reading now.
    ///
    /// # Safety
    /// `cf` is the configuration being parsed.
    unsafe fn here(cf: *mut ngx_conf_t) -> Source {
        let file = &(*(*cf).conf_file).file;
        Source {
            file: String::from_utf8_lossy(file.name.as_bytes()).into_owned(),
            line: (*(*cf).conf_file).line,
        }
    }
}

impl core::fmt::Display for Source {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

mod oauth2;
mod permission;
mod session;

pub use oauth2::OAuth2Conf;
pub use permission::{Line, LineSubject, PermissionConf, Value};
pub use session::SessionConf;
use session::{set_aal, set_cookie, set_enable, set_kratos_url, set_tokenize_as};

// nginx pools align to 8 bytes (NGX_ALIGNMENT), and the configurations live there.
const _: () = assert!(core::mem::align_of::<LocConf>() <= 8);
const _: () = assert!(core::mem::align_of::<MainConf>() <= 8);

/// `http`, `server` and `location` settings, a part per kind of check.
#[derive(Default)]
pub struct LocConf {
    pub session: SessionConf,
    pub oauth2: OAuth2Conf,
    pub permission: PermissionConf,
    /// `ory_cache`: the number of the zone the checks store answers in, plus one; 0 for the
    /// worker's own cache (`off`, or no `ory_cache` anywhere above).
    pub cache: usize,
    /// The zone `ory_cache` names ("" for `off`) and where, until merge resolves it.
    cache_name: Option<(String, Source)>,
}

impl LocConf {
    /// Turns the zone `ory_cache` names into its number; the error names the directive's
    /// place. Done at merge, and for the `http` level (never merged into anything) in
    /// postconfiguration, so a zone may be declared after its first use.
    pub fn resolve_cache(&mut self, main: &MainConf) -> Result<(), String> {
        self.cache = match &self.cache_name {
            None => 0,
            Some((name, _)) if name.is_empty() => 0,
            Some((name, source)) => match main.zones.iter().position(|z| z.name == *name) {
                Some(i) => i + 1,
                None => {
                    return Err(format!(
                        "unknown ory_cache_zone \"{name}\" in \"ory_cache\" directive in {source}"
                    ))
                }
            },
        };
        Ok(())
    }
}

/// nginx's `ngx_conf_merge_*_value` macros, which bindgen cannot see.
fn merge<T: Copy + PartialEq>(conf: &mut T, prev: T, default: T, unset: T) {
    if *conf == unset {
        *conf = if prev == unset { default } else { prev };
    }
}

fn merge_msec(conf: &mut ngx_msec_t, prev: ngx_msec_t, default: ngx_msec_t) {
    merge(conf, prev, default, NGX_CONF_UNSET_MSEC);
}

fn merge_flag(conf: &mut ngx_flag_t, prev: ngx_flag_t, default: ngx_flag_t) {
    merge(conf, prev, default, NGX_CONF_UNSET_FLAG);
}

fn merge_uint(conf: &mut ngx_uint_t, prev: ngx_uint_t, default: ngx_uint_t) {
    merge(conf, prev, default, NGX_CONF_UNSET_UINT);
}

/// For a directive that makes its location answer requests itself, as nginx's
/// `stub_status` does (`ory_session_status`, `ory_cache_purge`): `handler` becomes the
/// location's content handler.
///
/// # Safety
/// `cf` is what nginx passed to the directive's setter, in a location context.
pub unsafe fn set_content_handler(
    cf: *mut ngx_conf_t,
    handler: unsafe extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t,
) -> *mut c_char {
    // SAFETY: the caller's contract: a valid cf in a location context.
    let Some(clcf) = (unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) }) else {
        return NGX_CONF_ERROR;
    };
    clcf.handler = Some(handler);
    NGX_CONF_OK
}

/// A value without a default, kept as an `Option`: unset takes the level above's.
fn inherit<T: Clone>(conf: &mut Option<T>, prev: &Option<T>) {
    if conf.is_none() {
        conf.clone_from(prev);
    }
}

/// # Safety
/// Called by nginx with a valid `cf` during configuration parsing.
pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    let pool = Pool::from_ngx_pool((*cf).pool);
    pool.allocate(MainConf::default()).cast()
}

/// # Safety
/// Called by nginx with a valid `cf` and the structure made by `create_main_conf`.
pub unsafe extern "C" fn init_main_conf(_cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    let conf = &mut *conf.cast::<MainConf>();
    if conf.cache_size == NGX_CONF_UNSET_INT {
        conf.cache_size = DEFAULT_CACHE_SIZE;
    }
    if conf.permission_cache_size == NGX_CONF_UNSET_INT {
        conf.permission_cache_size = DEFAULT_CACHE_SIZE;
    }
    if conf.oauth2_cache_size == NGX_CONF_UNSET_INT {
        conf.oauth2_cache_size = DEFAULT_CACHE_SIZE;
    }
    if conf.max_pending == NGX_CONF_UNSET_INT {
        conf.max_pending = DEFAULT_MAX_PENDING;
    }
    NGX_CONF_OK
}

/// # Safety
/// Called by nginx with a valid `cf` during configuration parsing.
pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    let pool = Pool::from_ngx_pool((*cf).pool);
    pool.allocate(LocConf::default()).cast()
}

/// # Safety
/// Called by nginx with a valid `cf` and two structures made by `create_loc_conf`.
pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    let prev = &*prev.cast::<LocConf>();
    let conf = &mut *conf.cast::<LocConf>();
    if conf.cache_name.is_none() {
        conf.cache_name = prev.cache_name.clone();
    }
    conf.session.merge(&prev.session);
    conf.permission.merge(&prev.permission);
    let oauth2 = conf.oauth2.merge(&prev.oauth2).err();
    let mut unknown_zone = None;
    if let Some(main) = HttpOrySessionModule::main_conf_mut(&*cf) {
        unknown_zone = conf.resolve_cache(main).err();
        conf.permission.zone = conf.cache;
        if conf.session.enabled() && !main.session_scopes.contains(&conf.session.scope) {
            main.session_scopes.push(conf.session.scope);
        }
        main.max_timeout = main.max_timeout.max(conf.session.timeout);
        main.max_permission_timeout = main.max_permission_timeout.max(conf.permission.timeout);
        main.max_oauth2_timeout = main.max_oauth2_timeout.max(conf.oauth2.timeout);
        if let Some((scope, url, policy, trust)) = oauth2::jwks_of(&conf.oauth2) {
            match main.jwks.iter_mut().find(|(s, _, _, _)| *s == scope) {
                // One key set per URL: the shortest TTL any location asks for.
                Some(known) if policy.ttl() < known.2.ttl() => known.2 = policy,
                Some(_) => {}
                None => main.jwks.push((scope, url, policy, trust)),
            }
        }
    }
    let problem = unknown_zone
        .or_else(|| conf.session.problem())
        .or_else(|| conf.permission.problem())
        .or(oauth2);
    if let Some(problem) = problem {
        ngx_log_error!(NGX_LOG_EMERG, (*cf).log, "{}", problem);
        return NGX_CONF_ERROR;
    }
    NGX_CONF_OK
}

/// The directive's arguments after its name.
pub(in crate::nginx) unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    let all: &[ngx_str_t] = (*(*cf).args).as_slice();
    &all[1..]
}

pub(in crate::nginx) unsafe fn invalid_value(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    value: &ngx_str_t,
    why: &str,
) -> *mut c_char {
    ngx_conf_log_error!(
        NGX_LOG_EMERG,
        cf,
        "invalid value \"{}\" in \"{}\" directive, {}",
        String::from_utf8_lossy(value.as_bytes()),
        (*cmd).name.to_str().unwrap_or("ory_session"),
        why
    );
    NGX_CONF_ERROR
}

const IS_DUPLICATE: *mut c_char = c"is duplicate".as_ptr().cast_mut();

/// Shared by the directives parsed into an `Option`: refuses a second occurrence, and
/// reports a value `parse` rejects with its reason.
unsafe fn set_once<T>(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    field: &mut Option<T>,
    parse: impl FnOnce(&[u8]) -> Result<T, &'static str>,
) -> *mut c_char {
    if field.is_some() {
        return IS_DUPLICATE;
    }
    let value = &args(cf)[0];
    match parse(value.as_bytes()) {
        Ok(parsed) => {
            *field = Some(parsed);
            NGX_CONF_OK
        }
        Err(why) => invalid_value(cf, cmd, value, why),
    }
}

/// Shared by the URL directives: one URL, checked by `parse`.
unsafe fn set_url(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    field: &mut Option<Arc<reqwest::Url>>,
    parse: impl FnOnce(&str) -> Result<reqwest::Url, &'static str>,
) -> *mut c_char {
    set_once(cf, cmd, field, |value| {
        let text = core::str::from_utf8(value).map_err(|_| "the URL is not valid UTF-8")?;
        parse(text).map(Arc::new)
    })
}

/// Shared by the header directives: `NAME VALUE`, added to the headers of the level (a level
/// without any inherits those above, as nginx does with `proxy_set_header`).
unsafe fn add_header(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    field: &mut Option<ExtraHeaders>,
) -> *mut c_char {
    let values = args(cf);
    let (Ok(name), Ok(value)) = (values[0].to_str(), values[1].to_str()) else {
        return invalid_value(cf, cmd, &values[0], "the header is not valid UTF-8");
    };
    let header = match extra_header(name, value) {
        Ok(header) => header,
        Err(why) => return invalid_value(cf, cmd, &values[0], why),
    };
    let mut headers: Vec<_> = field.as_deref().map(<[_]>::to_vec).unwrap_or_default();
    headers.push(header);
    *field = Some(headers.into());
    NGX_CONF_OK
}

/// Shared by `ory_session` and `ory_oauth2`: nginx's flag setter, then where the directive
/// was written (merge reports a missing URL there) and, when on, that the workers need their
/// client runtime. `part` picks the check's flag and place out of the configuration.
unsafe fn set_check_flag(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
    part: impl FnOnce(&mut LocConf) -> (ngx_flag_t, &mut Source),
) -> *mut c_char {
    let rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if rv != NGX_CONF_OK {
        return rv;
    }
    let (flag, source) = part(&mut *conf.cast::<LocConf>());
    *source = Source::here(cf);
    if flag == 1 {
        if let Some(main) = HttpOrySessionModule::main_conf_mut(&*cf) {
            main.enabled_somewhere = true;
        }
    }
    NGX_CONF_OK
}

/// `ory_cache NAME | off;`
unsafe extern "C" fn set_cache(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let conf = &mut *conf.cast::<LocConf>();
    if conf.cache_name.is_some() {
        return IS_DUPLICATE;
    }
    let value = args(cf)[0].as_bytes();
    let name = if value == b"off" {
        String::new()
    } else {
        String::from_utf8_lossy(value).into_owned()
    };
    conf.cache_name = Some((name, Source::here(cf)));
    NGX_CONF_OK
}

/// The index `*_trusted_certificate` fields hold before merge fills them in; 0 is the
/// system's store.
pub const TRUST_UNSET: ngx_uint_t = NGX_CONF_UNSET_UINT;

/// Shared by the `*_trusted_certificate` directives: the PEM file (relative to nginx's
/// configuration prefix, like `proxy_ssl_trusted_certificate`) is read now, so that
/// `nginx -t` reports a missing or bad file; its certificates become one trusted set of the
/// workers' clients, and `field` its index.
unsafe fn set_trust(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    field: &mut ngx_uint_t,
) -> *mut c_char {
    if *field != TRUST_UNSET {
        return IS_DUPLICATE;
    }
    let value = &args(cf)[0];
    let mut name = *value;
    if ngx::ffi::ngx_conf_full_name((*cf).cycle, &mut name, 1) != ngx::ffi::NGX_OK as ngx_int_t {
        return NGX_CONF_ERROR;
    }
    let path = String::from_utf8_lossy(name.as_bytes()).into_owned();
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) => {
            let why = format!("cannot read \"{path}\": {}", e.kind());
            return invalid_value(cf, cmd, value, &why);
        }
    };
    let certificates = match read_trusted(&pem) {
        Ok(certificates) => certificates,
        Err(why) => return invalid_value(cf, cmd, value, why),
    };
    let Some(main) = HttpOrySessionModule::main_conf_mut(&*cf) else {
        return NGX_CONF_ERROR;
    };
    let index = match main.trusts.iter().position(|(p, _)| *p == path) {
        Some(index) => index,
        None => {
            main.trusts.push((path, Trust::Only(certificates)));
            main.trusts.len() - 1
        }
    };
    *field = index as ngx_uint_t;
    NGX_CONF_OK
}

/// Post handler of `ory_session_timeout`: a zero timeout would fail every request.
unsafe extern "C" fn positive_msec(
    _cf: *mut ngx_conf_t,
    _post: *mut c_void,
    data: *mut c_void,
) -> *mut c_char {
    if *data.cast::<ngx_msec_t>() == 0 {
        return c"must be greater than zero".as_ptr().cast_mut();
    }
    NGX_CONF_OK
}

static POSITIVE_MSEC: ngx_conf_post_t = ngx_conf_post_t {
    post_handler: Some(positive_msec),
};

/// Post handler data of a number directive: nginx's own `ngx_conf_num_bounds_t` check does
/// not name the directive in its error, this one does (nginx prefixes the message with it).
#[repr(C)]
struct Bounds {
    post_handler: ngx_conf_post_handler_pt,
    low: ngx_int_t,
    high: ngx_int_t,
    message: &'static CStr,
}

unsafe extern "C" fn within_bounds(
    _cf: *mut ngx_conf_t,
    post: *mut c_void,
    data: *mut c_void,
) -> *mut c_char {
    let bounds = &*post.cast::<Bounds>();
    let value = *data.cast::<ngx_int_t>();
    if value < bounds.low || value > bounds.high {
        return bounds.message.as_ptr().cast_mut();
    }
    NGX_CONF_OK
}

static CACHE_SIZE_BOUNDS: Bounds = Bounds {
    post_handler: Some(within_bounds),
    low: 0,
    high: 10_000_000,
    message: c"must be between 0 and 10000000",
};

static MAX_PENDING_BOUNDS: Bounds = Bounds {
    post_handler: Some(within_bounds),
    low: 1,
    high: 10_000_000,
    message: c"must be between 1 and 10000000",
};

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

type Setter = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// A directive of `http`, `server` and `location`, set into the location configuration.
const fn loc(name: ngx_str_t, args: u32, set: Setter, offset: usize) -> ngx_command_t {
    directive(
        name,
        ANY_LEVEL | args,
        set,
        NGX_HTTP_LOC_CONF_OFFSET,
        offset,
        ptr::null_mut(),
    )
}

/// A directive of `http` only, set into the main configuration.
const fn main(name: ngx_str_t, set: Setter, offset: usize, post: *mut c_void) -> ngx_command_t {
    directive(
        name,
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        set,
        NGX_HTTP_MAIN_CONF_OFFSET,
        offset,
        post,
    )
}

const fn directive(
    name: ngx_str_t,
    type_: u32,
    set: Setter,
    conf: usize,
    offset: usize,
    post: *mut c_void,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset,
        post,
    }
}

const fn post_of<T>(post: *const T) -> *mut c_void {
    post.cast_mut().cast()
}

/// Offsets of the OAuth2 part of the location configuration.
macro_rules! oauth2 {
    ($field:ident) => {
        offset_of!(LocConf, oauth2) + offset_of!(OAuth2Conf, $field)
    };
}

static LEEWAY_BOUNDS: ngx_conf_post_t = ngx_conf_post_t {
    post_handler: Some(oauth2::leeway_bounds),
};

static JWKS_TTL_BOUNDS: ngx_conf_post_t = ngx_conf_post_t {
    post_handler: Some(oauth2::jwks_ttl_bounds),
};

/// Offsets of the permission part of the location configuration.
macro_rules! permission {
    ($field:ident) => {
        offset_of!(LocConf, permission) + offset_of!(PermissionConf, $field)
    };
}

/// Offsets of the session part of the location configuration.
macro_rules! session {
    ($field:ident) => {
        offset_of!(LocConf, session) + offset_of!(SessionConf, $field)
    };
}

pub static mut COMMANDS: [ngx_command_t; 42] = [
    loc(
        ngx_string!("ory_session"),
        NGX_CONF_FLAG,
        set_enable,
        session!(enable),
    ),
    loc(
        ngx_string!("ory_session_kratos_url"),
        NGX_CONF_TAKE1,
        set_kratos_url,
        0,
    ),
    loc(
        ngx_string!("ory_session_cookie"),
        NGX_CONF_TAKE1,
        set_cookie,
        0,
    ),
    ngx_command_t {
        post: post_of(&raw const POSITIVE_MSEC),
        ..loc(
            ngx_string!("ory_session_timeout"),
            NGX_CONF_TAKE1,
            ngx_conf_set_msec_slot,
            session!(timeout),
        )
    },
    loc(
        ngx_string!("ory_session_cache_ttl"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        session!(cache_ttl),
    ),
    loc(
        ngx_string!("ory_session_cache_negative_ttl"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        session!(negative_ttl),
    ),
    main(
        ngx_string!("ory_session_cache_size"),
        ngx_conf_set_num_slot,
        offset_of!(MainConf, cache_size),
        post_of(&raw const CACHE_SIZE_BOUNDS),
    ),
    main(
        ngx_string!("ory_session_max_pending"),
        ngx_conf_set_num_slot,
        offset_of!(MainConf, max_pending),
        post_of(&raw const MAX_PENDING_BOUNDS),
    ),
    loc(ngx_string!("ory_session_aal"), NGX_CONF_TAKE1, set_aal, 0),
    loc(
        ngx_string!("ory_session_tokenize_as"),
        NGX_CONF_TAKE1,
        set_tokenize_as,
        0,
    ),
    loc(
        ngx_string!("ory_session_hide_credentials"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        session!(hide_credentials),
    ),
    loc(
        ngx_string!("ory_session_login_url"),
        NGX_CONF_TAKE1,
        ngx_http_set_complex_value_slot,
        session!(login_url),
    ),
    loc(
        ngx_string!("ory_session_return_to"),
        NGX_CONF_TAKE1,
        ngx_http_set_complex_value_slot,
        session!(return_to),
    ),
    directive(
        ngx_string!("ory_session_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        super::status::set_status,
        NGX_HTTP_LOC_CONF_OFFSET,
        0,
        ptr::null_mut(),
    ),
    loc(
        ngx_string!("ory_permission_url"),
        NGX_CONF_TAKE1,
        permission::set_url,
        0,
    ),
    loc(
        ngx_string!("ory_permission"),
        NGX_CONF_TAKE3 | NGX_CONF_TAKE4,
        permission::set_permission,
        0,
    ),
    ngx_command_t {
        post: post_of(&raw const POSITIVE_MSEC),
        ..loc(
            ngx_string!("ory_permission_timeout"),
            NGX_CONF_TAKE1,
            ngx_conf_set_msec_slot,
            permission!(timeout),
        )
    },
    loc(
        ngx_string!("ory_permission_cache_ttl"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        permission!(cache_ttl),
    ),
    loc(
        ngx_string!("ory_permission_cache_negative_ttl"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        permission!(negative_ttl),
    ),
    loc(
        ngx_string!("ory_oauth2"),
        NGX_CONF_FLAG,
        oauth2::set_enable,
        oauth2!(enable),
    ),
    loc(
        ngx_string!("ory_oauth2_jwks_url"),
        NGX_CONF_TAKE1,
        oauth2::set_jwks_url,
        0,
    ),
    loc(
        ngx_string!("ory_oauth2_introspection_url"),
        NGX_CONF_TAKE1,
        oauth2::set_introspection_url,
        0,
    ),
    loc(
        ngx_string!("ory_oauth2_introspection_header"),
        NGX_CONF_TAKE2,
        oauth2::set_introspection_header,
        0,
    ),
    loc(
        ngx_string!("ory_oauth2_issuer"),
        NGX_CONF_1MORE,
        oauth2::set_issuer,
        0,
    ),
    loc(
        ngx_string!("ory_oauth2_audience"),
        NGX_CONF_1MORE,
        oauth2::set_audience,
        0,
    ),
    loc(
        ngx_string!("ory_oauth2_scope"),
        NGX_CONF_1MORE,
        oauth2::set_scope,
        0,
    ),
    ngx_command_t {
        post: post_of(&raw const LEEWAY_BOUNDS),
        ..loc(
            ngx_string!("ory_oauth2_leeway"),
            NGX_CONF_TAKE1,
            ngx_conf_set_msec_slot,
            oauth2!(leeway),
        )
    },
    ngx_command_t {
        post: post_of(&raw const POSITIVE_MSEC),
        ..loc(
            ngx_string!("ory_oauth2_timeout"),
            NGX_CONF_TAKE1,
            ngx_conf_set_msec_slot,
            oauth2!(timeout),
        )
    },
    loc(
        ngx_string!("ory_oauth2_cache_ttl"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        oauth2!(cache_ttl),
    ),
    loc(
        ngx_string!("ory_oauth2_cache_negative_ttl"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        oauth2!(negative_ttl),
    ),
    ngx_command_t {
        post: post_of(&raw const JWKS_TTL_BOUNDS),
        ..loc(
            ngx_string!("ory_oauth2_jwks_cache_ttl"),
            NGX_CONF_TAKE1,
            ngx_conf_set_msec_slot,
            oauth2!(jwks_cache_ttl),
        )
    },
    main(
        ngx_string!("ory_oauth2_cache_size"),
        ngx_conf_set_num_slot,
        offset_of!(MainConf, oauth2_cache_size),
        post_of(&raw const CACHE_SIZE_BOUNDS),
    ),
    loc(
        ngx_string!("ory_session_trusted_certificate"),
        NGX_CONF_TAKE1,
        session::set_trusted_certificate,
        0,
    ),
    loc(
        ngx_string!("ory_oauth2_trusted_certificate"),
        NGX_CONF_TAKE1,
        oauth2::set_trusted_certificate,
        0,
    ),
    loc(
        ngx_string!("ory_permission_header"),
        NGX_CONF_TAKE2,
        permission::set_header,
        0,
    ),
    loc(
        ngx_string!("ory_permission_trusted_certificate"),
        NGX_CONF_TAKE1,
        permission::set_trusted_certificate,
        0,
    ),
    main(
        ngx_string!("ory_permission_cache_size"),
        ngx_conf_set_num_slot,
        offset_of!(MainConf, permission_cache_size),
        post_of(&raw const CACHE_SIZE_BOUNDS),
    ),
    directive(
        ngx_string!("ory_cache_zone"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        super::zone::set_cache_zone,
        NGX_HTTP_MAIN_CONF_OFFSET,
        0,
        ptr::null_mut(),
    ),
    loc(ngx_string!("ory_cache"), NGX_CONF_TAKE1, set_cache, 0),
    loc(
        ngx_string!("ory_session_logout"),
        NGX_CONF_FLAG,
        session::set_logout,
        session!(logout),
    ),
    directive(
        ngx_string!("ory_cache_purge"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        super::logout::set_purge,
        NGX_HTTP_LOC_CONF_OFFSET,
        0,
        ptr::null_mut(),
    ),
    ngx_command_t::empty(),
];
