//! The `ory_permission*` directives: the Keto permission check's part of the configuration.

use core::ffi::{c_char, c_void};
use core::mem;
use std::sync::Arc;

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_int_t, ngx_msec_t, ngx_pcalloc, ngx_pnalloc, ngx_str_t,
    ngx_uint_t, NGX_OK,
};
use ngx::http::HttpModuleMainConf;

use super::{
    args, inherit, invalid_value, merge_msec, merge_uint, LocConf, Source, NGX_CONF_UNSET_MSEC,
};
use crate::check::call::ExtraHeaders;
use crate::check::key::{scope_of, Scope};
use crate::permission::{check_endpoint, parse_args, SubjectArg};
use crate::HttpOrySessionModule;

pub const DEFAULT_TIMEOUT_MS: ngx_msec_t = 5_000;
/// A permission revoked in Keto keeps working for at most this long: Keto sends no cache
/// headers, so the TTL is the only bound.
const DEFAULT_CACHE_TTL_MS: ngx_msec_t = 30_000;
/// A permission granted in Keto takes at most this long to work.
const DEFAULT_NEGATIVE_TTL_MS: ngx_msec_t = 5_000;

/// A directive argument compiled by nginx; it may hold variables.
#[derive(Clone, Copy)]
pub struct Value(pub *mut ngx_http_complex_value_t);

/// Who one `ory_permission` line asks about.
#[derive(Clone, Copy)]
pub enum LineSubject {
    /// No SUBJECT: the authenticated subject.
    Authenticated,
    Id(Value),
    Set {
        namespace: Value,
        object: Value,
        relation: Value,
    },
}

/// One `ory_permission NAMESPACE OBJECT RELATION [SUBJECT];` line.
#[derive(Clone, Copy)]
pub struct Line {
    pub namespace: Value,
    pub object: Value,
    pub relation: Value,
    pub subject: LineSubject,
}

/// The `ory_permission*` directives of one level.
pub struct PermissionConf {
    /// The trusted certificates of the service's HTTPS, as an index into the main
    /// configuration's sets (0: the system's store).
    pub trust: ngx_uint_t,
    /// `ory_permission_url`, as the check endpoint.
    pub endpoint: Option<Arc<reqwest::Url>>,
    /// The endpoint as it enters cache keys (filled in by merge).
    pub scope: Scope,
    /// The `ory_permission` lines of this level, or else of the level above (as nginx
    /// inherits `add_header`).
    pub lines: Vec<Line>,
    lines_source: Source,
    /// `ory_permission_header`, of this level or else of the level above.
    pub headers: Option<ExtraHeaders>,
    pub timeout: ngx_msec_t,
    pub cache_ttl: ngx_msec_t,
    pub negative_ttl: ngx_msec_t,
    /// The location's `ory_cache` zone (its number plus one; 0: the worker's own cache),
    /// copied here by merge.
    pub zone: usize,
}

impl Default for PermissionConf {
    fn default() -> Self {
        PermissionConf {
            trust: super::TRUST_UNSET,
            endpoint: None,
            scope: Scope::default(),
            lines: Vec::new(),
            lines_source: Source::default(),
            headers: None,
            timeout: NGX_CONF_UNSET_MSEC,
            cache_ttl: NGX_CONF_UNSET_MSEC,
            negative_ttl: NGX_CONF_UNSET_MSEC,
            zone: 0,
        }
    }
}

impl PermissionConf {
    pub fn enabled(&self) -> bool {
        !self.lines.is_empty()
    }

    pub(super) fn merge(&mut self, prev: &PermissionConf) {
        merge_uint(&mut self.trust, prev.trust, 0);
        inherit(&mut self.endpoint, &prev.endpoint);
        self.scope = self
            .endpoint
            .as_ref()
            .map_or_else(Default::default, |url| scope_of(url.as_str()));
        inherit(&mut self.headers, &prev.headers);
        if self.lines.is_empty() {
            self.lines = prev.lines.clone();
            self.lines_source = prev.lines_source.clone();
        }
        merge_msec(&mut self.timeout, prev.timeout, DEFAULT_TIMEOUT_MS);
        merge_msec(&mut self.cache_ttl, prev.cache_ttl, DEFAULT_CACHE_TTL_MS);
        merge_msec(
            &mut self.negative_ttl,
            prev.negative_ttl,
            DEFAULT_NEGATIVE_TTL_MS,
        );
    }

    pub(super) fn problem(&self) -> Option<String> {
        (self.enabled() && self.endpoint.is_none()).then(|| {
            format!(
                "no \"ory_permission_url\" is defined for the \"ory_permission\" directive in {}",
                self.lines_source
            )
        })
    }
}

pub(super) unsafe extern "C" fn set_url(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).permission.endpoint;
    super::set_url(cf, cmd, field, check_endpoint)
}

/// `ory_permission NAMESPACE OBJECT RELATION [SUBJECT];`, any number of times.
pub(super) unsafe extern "C" fn set_permission(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let conf = &mut (*conf.cast::<LocConf>()).permission;
    let values = args(cf);
    let words: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let parsed = match parse_args(&words) {
        Ok(parsed) => parsed,
        Err(why) => return invalid_value(cf, cmd, values.last().unwrap_or(&values[0]), why),
    };
    let compile = |text: &str| compile(cf, text);
    let (Some(namespace), Some(object), Some(relation)) = (
        compile(parsed.namespace),
        compile(parsed.object),
        compile(parsed.relation),
    ) else {
        return NGX_CONF_ERROR;
    };
    let subject = match parsed.subject {
        SubjectArg::Authenticated => LineSubject::Authenticated,
        SubjectArg::Id(id) => match compile(id) {
            Some(id) => LineSubject::Id(id),
            None => return NGX_CONF_ERROR,
        },
        SubjectArg::Set {
            namespace,
            object,
            relation,
        } => match (compile(namespace), compile(object), compile(relation)) {
            (Some(namespace), Some(object), Some(relation)) => LineSubject::Set {
                namespace,
                object,
                relation,
            },
            _ => return NGX_CONF_ERROR,
        },
    };
    if conf.lines.is_empty() {
        conf.lines_source = Source::here(cf);
    }
    conf.lines.push(Line {
        namespace,
        object,
        relation,
        subject,
    });
    if let Some(main) = HttpOrySessionModule::main_conf_mut(&*cf) {
        main.enabled_somewhere = true;
    }
    NGX_CONF_OK
}

/// Compiles one argument (or a part of one) that may hold variables; nginx reports its own
/// errors (an unknown variable, say).
unsafe fn compile(cf: *mut ngx_conf_t, text: &str) -> Option<Value> {
    // The compiled value may point at its text: keep a copy in the configuration's pool.
    let data = ngx_pnalloc((*cf).pool, text.len().max(1)).cast::<u8>();
    let cv = ngx_pcalloc((*cf).pool, mem::size_of::<ngx_http_complex_value_t>())
        .cast::<ngx_http_complex_value_t>();
    if data.is_null() || cv.is_null() {
        return None;
    }
    core::ptr::copy_nonoverlapping(text.as_ptr(), data, text.len());
    let mut value = ngx_str_t {
        len: text.len(),
        data,
    };
    let mut ccv: ngx_http_compile_complex_value_t = mem::zeroed();
    ccv.cf = cf;
    ccv.value = &mut value;
    ccv.complex_value = cv;
    if ngx_http_compile_complex_value(&mut ccv) != NGX_OK as ngx_int_t {
        return None;
    }
    Some(Value(cv))
}

/// `ory_permission_trusted_certificate FILE;`
pub(super) unsafe extern "C" fn set_trusted_certificate(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).permission.trust;
    super::set_trust(cf, cmd, field)
}

/// `ory_permission_header NAME VALUE;`, any number of times.
pub(super) unsafe extern "C" fn set_header(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).permission.headers;
    super::add_header(cf, cmd, field)
}
