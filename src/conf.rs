//! Directives, configuration structures, merging and validation.
//!
//! Errors read like nginx's own: `invalid value "x" in "ory_session_timeout" directive`, and
//! nginx appends the file and line.

use core::ffi::{c_char, c_void};
use core::mem::offset_of;
use core::ptr;
use std::sync::Arc;

use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_flag_t, ngx_http_complex_value_t,
    ngx_http_set_complex_value_slot, ngx_int_t, ngx_msec_t, ngx_parse_time, ngx_str_t, ngx_uint_t,
    NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_UNSET, NGX_ERROR, NGX_HTTP_LOC_CONF,
    NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF,
    NGX_LOG_EMERG,
};
use ngx::http::HttpModuleMainConf;
use ngx::{ngx_conf_log_error, ngx_log_error, ngx_string};

use crate::credential::CookieMatch;
use crate::HttpOrySessionModule;

/// nginx's NGX_CONF_UNSET_UINT and NGX_CONF_UNSET_MSEC: `(type) -1`, which bindgen skips.
const NGX_CONF_UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
const NGX_CONF_UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
/// nginx's NGX_CONF_UNSET_PTR: `(void *) -1`.
const NGX_CONF_UNSET_PTR: *mut c_void = usize::MAX as *mut c_void;

pub const DEFAULT_COOKIE: &[u8] = b"ory_kratos_session";
const DEFAULT_TIMEOUT_MS: ngx_msec_t = 5_000;
const DEFAULT_CACHE_SIZE: ngx_uint_t = 10_000;
const DEFAULT_CACHE_TTL_MS: ngx_msec_t = 60_000;
const DEFAULT_NEGATIVE_TTL_MS: ngx_msec_t = 10_000;
const DEFAULT_MAX_PENDING: ngx_uint_t = 1_024;

/// `http`-level settings: one cache and one set of limits per worker.
pub struct MainConf {
    pub cache_size: ngx_uint_t,
    pub max_pending: ngx_uint_t,
    /// The longest `ory_session_timeout` of any location: how long one shared call may run.
    pub max_timeout: ngx_msec_t,
    /// Set when `ory_session on` appears anywhere: workers only start the Kratos client when
    /// some location can use it.
    pub enabled_somewhere: bool,
}

impl Default for MainConf {
    fn default() -> Self {
        MainConf {
            cache_size: NGX_CONF_UNSET_UINT,
            max_pending: NGX_CONF_UNSET_UINT,
            max_timeout: DEFAULT_TIMEOUT_MS,
            enabled_somewhere: false,
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

/// `http`, `server` and `location` settings.
pub struct LocConf {
    pub enable: ngx_flag_t,
    enable_source: Source,
    /// The whoami URL derived from `ory_session_kratos_url`.
    kratos_base: Option<Arc<reqwest::Url>>,
    /// What is called: the whoami URL with `tokenize_as` when set (filled in by merge).
    pub kratos: Option<Arc<reqwest::Url>>,
    /// `kratos` as it enters cache keys (filled in by merge).
    pub kratos_scope: crate::cache::Scope,
    pub cookie: Option<Arc<CookieMatch>>,
    pub timeout: ngx_msec_t,
    pub cache_ttl: ngx_msec_t,
    pub negative_ttl: ngx_msec_t,
    /// `ory_session_login_url`; null when unset.
    pub login_url: *mut ngx_http_complex_value_t,
    /// `ory_session_return_to`; null means "the request's own absolute URL".
    pub return_to: *mut ngx_http_complex_value_t,
    /// `ory_session_aal`: the least authenticator assurance level, 1 or 2.
    pub aal: ngx_uint_t,
    tokenize_as: Option<String>,
    pub hide_credentials: ngx_flag_t,
}

impl Default for LocConf {
    fn default() -> Self {
        LocConf {
            enable: NGX_CONF_UNSET as ngx_flag_t,
            enable_source: Source::default(),
            kratos_base: None,
            kratos: None,
            kratos_scope: crate::cache::Scope::default(),
            cookie: None,
            timeout: NGX_CONF_UNSET_MSEC,
            cache_ttl: NGX_CONF_UNSET_MSEC,
            negative_ttl: NGX_CONF_UNSET_MSEC,
            login_url: NGX_CONF_UNSET_PTR.cast(),
            return_to: NGX_CONF_UNSET_PTR.cast(),
            aal: NGX_CONF_UNSET_UINT,
            tokenize_as: None,
            hide_credentials: NGX_CONF_UNSET as ngx_flag_t,
        }
    }
}

impl LocConf {
    pub fn enabled(&self) -> bool {
        self.enable == 1
    }

    pub fn cookie(&self) -> &CookieMatch {
        // merge_loc_conf always fills it in
        self.cookie.as_deref().expect("merged ory_session_cookie")
    }
}

fn merge_ptr(conf: &mut *mut ngx_http_complex_value_t, prev: *mut ngx_http_complex_value_t) {
    let unset: *mut ngx_http_complex_value_t = NGX_CONF_UNSET_PTR.cast();
    if *conf == unset {
        *conf = if prev == unset { ptr::null_mut() } else { prev };
    }
}

fn merge_msec(conf: &mut ngx_msec_t, prev: ngx_msec_t, default: ngx_msec_t) {
    if *conf == NGX_CONF_UNSET_MSEC {
        *conf = if prev == NGX_CONF_UNSET_MSEC {
            default
        } else {
            prev
        };
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
    if conf.cache_size == NGX_CONF_UNSET_UINT {
        conf.cache_size = DEFAULT_CACHE_SIZE;
    }
    if conf.max_pending == NGX_CONF_UNSET_UINT {
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

    if conf.enable == NGX_CONF_UNSET as ngx_flag_t {
        conf.enable = if prev.enable == NGX_CONF_UNSET as ngx_flag_t {
            0
        } else {
            prev.enable
        };
        conf.enable_source = prev.enable_source.clone();
    }
    if conf.kratos_base.is_none() {
        conf.kratos_base = prev.kratos_base.clone();
    }
    if conf.cookie.is_none() {
        conf.cookie = match &prev.cookie {
            Some(cookie) => Some(cookie.clone()),
            None => Some(Arc::new(
                CookieMatch::parse(DEFAULT_COOKIE).expect("default cookie"),
            )),
        };
    }
    merge_ptr(&mut conf.login_url, prev.login_url);
    merge_ptr(&mut conf.return_to, prev.return_to);
    if conf.aal == NGX_CONF_UNSET_UINT {
        conf.aal = if prev.aal == NGX_CONF_UNSET_UINT {
            1
        } else {
            prev.aal
        };
    }
    if conf.hide_credentials == NGX_CONF_UNSET as ngx_flag_t {
        conf.hide_credentials = if prev.hide_credentials == NGX_CONF_UNSET as ngx_flag_t {
            0
        } else {
            prev.hide_credentials
        };
    }
    if conf.tokenize_as.is_none() {
        conf.tokenize_as = prev.tokenize_as.clone();
    }
    // The whoami URL carries the token template, so that the cache key (built from the URL's
    // scope) tells answers with and without a JWT apart.
    conf.kratos = match (&conf.kratos_base, &conf.tokenize_as) {
        (Some(base), Some(template)) => {
            let mut url = (**base).clone();
            url.query_pairs_mut().append_pair("tokenize_as", template);
            Some(Arc::new(url))
        }
        (base, None) => base.clone(),
        (None, Some(_)) => None,
    };
    conf.kratos_scope = conf
        .kratos
        .as_ref()
        .map_or_else(Default::default, |url| crate::cache::scope_of(url.as_str()));
    merge_msec(&mut conf.timeout, prev.timeout, DEFAULT_TIMEOUT_MS);
    if let Some(main) = HttpOrySessionModule::main_conf_mut(&*cf) {
        main.max_timeout = main.max_timeout.max(conf.timeout);
    }
    merge_msec(&mut conf.cache_ttl, prev.cache_ttl, DEFAULT_CACHE_TTL_MS);
    merge_msec(
        &mut conf.negative_ttl,
        prev.negative_ttl,
        DEFAULT_NEGATIVE_TTL_MS,
    );

    if conf.enabled() && conf.kratos.is_none() {
        // Worded like nginx's own `no "ssl_certificate" is defined ...` check.
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cf).log,
            "no \"ory_session_kratos_url\" is defined for the \"ory_session\" directive in {}:{}",
            conf.enable_source.file,
            conf.enable_source.line
        );
        return NGX_CONF_ERROR;
    }
    NGX_CONF_OK
}

/// The directive's arguments after its name.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    let all: &[ngx_str_t] = (*(*cf).args).as_slice();
    &all[1..]
}

unsafe fn directive_name<'a>(cmd: *mut ngx_command_t) -> &'a str {
    (*cmd).name.to_str().unwrap_or("ory_session")
}

unsafe fn invalid_value(
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
        directive_name(cmd),
        why
    );
    NGX_CONF_ERROR
}

const IS_DUPLICATE: *mut c_char = c"is duplicate".as_ptr().cast_mut();

/// Shared by the on/off directives.
unsafe fn set_flag(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    field: &mut ngx_flag_t,
) -> *mut c_char {
    if *field != NGX_CONF_UNSET as ngx_flag_t {
        return IS_DUPLICATE;
    }
    let value = &args(cf)[0];
    *field = match value.as_bytes() {
        v if v.eq_ignore_ascii_case(b"on") => 1,
        v if v.eq_ignore_ascii_case(b"off") => 0,
        _ => return invalid_value(cf, cmd, value, "it must be \"on\" or \"off\""),
    };
    NGX_CONF_OK
}

extern "C" fn set_enable(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe {
        let conf = &mut *conf.cast::<LocConf>();
        let rv = set_flag(cf, cmd, &mut conf.enable);
        if rv != NGX_CONF_OK {
            return rv;
        }
        let file = &(*(*cf).conf_file).file;
        conf.enable_source = Source {
            file: String::from_utf8_lossy(file.name.as_bytes()).into_owned(),
            line: (*(*cf).conf_file).line,
        };
        if conf.enable == 1 {
            if let Some(main) = HttpOrySessionModule::main_conf_mut(&*cf) {
                main.enabled_somewhere = true;
            }
        }
    }
    NGX_CONF_OK
}

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

extern "C" fn set_kratos_url(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe {
        set_once(
            cf,
            cmd,
            &mut (*conf.cast::<LocConf>()).kratos_base,
            |value| {
                let text = core::str::from_utf8(value).map_err(|_| "the URL is not valid UTF-8")?;
                crate::kratos::whoami_url(text).map(Arc::new)
            },
        )
    }
}

extern "C" fn set_cookie(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe {
        set_once(cf, cmd, &mut (*conf.cast::<LocConf>()).cookie, |value| {
            CookieMatch::parse(value).map(Arc::new)
        })
    }
}

extern "C" fn set_aal(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe {
        let conf = &mut *conf.cast::<LocConf>();
        if conf.aal != NGX_CONF_UNSET_UINT {
            return IS_DUPLICATE;
        }
        let value = &args(cf)[0];
        conf.aal = match value.as_bytes() {
            b"aal1" => 1,
            b"aal2" => 2,
            _ => return invalid_value(cf, cmd, value, "it must be \"aal1\" or \"aal2\""),
        };
    }
    NGX_CONF_OK
}

extern "C" fn set_tokenize_as(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe {
        set_once(
            cf,
            cmd,
            &mut (*conf.cast::<LocConf>()).tokenize_as,
            |value| {
                // Kratos template ids are plain identifiers; anything else would only earn a 400.
                let valid = !value.is_empty()
                    && value
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
                if !valid {
                    return Err("a template id has only letters, digits, \"-\", \"_\" and \".\"");
                }
                Ok(String::from_utf8_lossy(value).into_owned())
            },
        )
    }
}

extern "C" fn set_hide_credentials(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe { set_flag(cf, cmd, &mut (*conf.cast::<LocConf>()).hide_credentials) }
}

/// Parses an nginx time ("5s", "500ms", "1m") into milliseconds.
unsafe fn parse_msec(value: &ngx_str_t) -> Option<ngx_msec_t> {
    let mut copy = *value;
    let ms = ngx_parse_time(&mut copy, 0);
    (ms != NGX_ERROR as ngx_int_t).then_some(ms as ngx_msec_t)
}

/// Shared by every time directive; `min_ms` rejects values that make no sense (a zero
/// timeout would fail every request).
unsafe fn set_time(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    field: &mut ngx_msec_t,
    min_ms: ngx_msec_t,
) -> *mut c_char {
    if *field != NGX_CONF_UNSET_MSEC {
        return IS_DUPLICATE;
    }
    let value = &args(cf)[0];
    match parse_msec(value) {
        Some(ms) if ms >= min_ms => {
            *field = ms;
            NGX_CONF_OK
        }
        Some(_) => invalid_value(cf, cmd, value, "it must be greater than zero"),
        None => invalid_value(cf, cmd, value, "expected a time such as 500ms, 5s or 1m"),
    }
}

extern "C" fn set_timeout(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe { set_time(cf, cmd, &mut (*conf.cast::<LocConf>()).timeout, 1) }
}

extern "C" fn set_cache_ttl(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe { set_time(cf, cmd, &mut (*conf.cast::<LocConf>()).cache_ttl, 0) }
}

extern "C" fn set_negative_ttl(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the loc conf made by create_loc_conf and a valid cf.
    unsafe { set_time(cf, cmd, &mut (*conf.cast::<LocConf>()).negative_ttl, 0) }
}

/// Shared by the count directives of the main conf.
unsafe fn set_count(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    field: &mut ngx_uint_t,
    min: usize,
) -> *mut c_char {
    if *field != NGX_CONF_UNSET_UINT {
        return IS_DUPLICATE;
    }
    let value = &args(cf)[0];
    let parsed = value.to_str().ok().and_then(|s| s.parse::<usize>().ok());
    match parsed {
        Some(n) if n >= min && n <= 10_000_000 => {
            *field = n as ngx_uint_t;
            NGX_CONF_OK
        }
        _ if min == 0 => invalid_value(cf, cmd, value, "expected a number from 0 to 10000000"),
        _ => invalid_value(cf, cmd, value, "expected a number from 1 to 10000000"),
    }
}

extern "C" fn set_cache_size(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the main conf made by create_main_conf and a valid cf.
    unsafe { set_count(cf, cmd, &mut (*conf.cast::<MainConf>()).cache_size, 0) }
}

extern "C" fn set_max_pending(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the main conf made by create_main_conf and a valid cf.
    unsafe { set_count(cf, cmd, &mut (*conf.cast::<MainConf>()).max_pending, 1) }
}

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

const fn command(
    name: ngx_str_t,
    type_: u32,
    set: extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    conf: usize,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset: 0,
        post: ptr::null_mut(),
    }
}

pub static mut COMMANDS: [ngx_command_t; 15] = [
    command(
        ngx_string!("ory_session"),
        ANY_LEVEL | NGX_CONF_FLAG,
        set_enable,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_kratos_url"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_kratos_url,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_cookie"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_cookie,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_timeout"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_timeout,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_cache_ttl"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_cache_ttl,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_cache_negative_ttl"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_negative_ttl,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_cache_size"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        set_cache_size,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_max_pending"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        set_max_pending,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_aal"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_aal,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_tokenize_as"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_tokenize_as,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("ory_session_hide_credentials"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_hide_credentials,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    complex_value_command(
        ngx_string!("ory_session_login_url"),
        offset_of!(LocConf, login_url),
    ),
    complex_value_command(
        ngx_string!("ory_session_return_to"),
        offset_of!(LocConf, return_to),
    ),
    command(
        ngx_string!("ory_session_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        crate::status::set_status,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    ngx_command_t::empty(),
];

/// A directive whose one argument may hold variables, parsed by nginx's own slot setter.
const fn complex_value_command(name: ngx_str_t, offset: usize) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(ngx_http_set_complex_value_slot),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset,
        post: ptr::null_mut(),
    }
}
