//! The `ory_session*` directives: the Kratos session check's part of the configuration.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::sync::Arc;

use ngx::core::NGX_CONF_OK;
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_flag_t, ngx_http_complex_value_t, ngx_msec_t, ngx_uint_t,
};
use ngx::http::HttpModuleMainConf;

use super::{
    args, inherit, invalid_value, merge_flag, merge_msec, merge_uint, set_once, LocConf, Source,
    IS_DUPLICATE, NGX_CONF_UNSET_FLAG, NGX_CONF_UNSET_MSEC, NGX_CONF_UNSET_PTR,
    NGX_CONF_UNSET_UINT,
};
use crate::check::key::{scope_of, Scope};
use crate::session::credential::CookieMatch;
use crate::session::whoami::whoami_url;

pub const DEFAULT_COOKIE: &[u8] = b"ory_kratos_session";
pub const DEFAULT_TIMEOUT_MS: ngx_msec_t = 5_000;
const DEFAULT_CACHE_TTL_MS: ngx_msec_t = 60_000;
const DEFAULT_NEGATIVE_TTL_MS: ngx_msec_t = 10_000;

/// The `ory_session*` directives of one level.
pub struct SessionConf {
    /// The trusted certificates of the service's HTTPS, as an index into the main
    /// configuration's sets (0: the system's store).
    pub trust: ngx_uint_t,
    /// `ory_session`
    pub enable: ngx_flag_t,
    enable_source: Source,
    /// The whoami URL derived from `ory_session_kratos_url`.
    kratos_base: Option<Arc<reqwest::Url>>,
    /// What is called: the whoami URL with `tokenize_as` when set (filled in by merge).
    pub whoami: Option<Arc<reqwest::Url>>,
    /// `whoami` as it enters cache keys (filled in by merge).
    pub scope: Scope,
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
    /// `ory_session_logout`: the location proxies Kratos' public API, and a successful
    /// logout through it evicts the credential from the caches.
    pub logout: ngx_flag_t,
}

impl Default for SessionConf {
    fn default() -> Self {
        SessionConf {
            trust: super::TRUST_UNSET,
            enable: NGX_CONF_UNSET_FLAG,
            enable_source: Source::default(),
            kratos_base: None,
            whoami: None,
            scope: Scope::default(),
            cookie: None,
            timeout: NGX_CONF_UNSET_MSEC,
            cache_ttl: NGX_CONF_UNSET_MSEC,
            negative_ttl: NGX_CONF_UNSET_MSEC,
            login_url: NGX_CONF_UNSET_PTR.cast(),
            return_to: NGX_CONF_UNSET_PTR.cast(),
            aal: NGX_CONF_UNSET_UINT,
            tokenize_as: None,
            hide_credentials: NGX_CONF_UNSET_FLAG,
            logout: NGX_CONF_UNSET_FLAG,
        }
    }
}

impl SessionConf {
    /// What is wrong with the merged settings, worded like nginx's own `no
    /// "ssl_certificate" is defined ...` check.
    pub(super) fn problem(&self) -> Option<String> {
        (self.enabled() && self.whoami.is_none()).then(|| {
            format!(
                "no \"ory_session_kratos_url\" is defined for the \"ory_session\" directive in {}",
                self.enable_source
            )
        })
    }

    pub fn enabled(&self) -> bool {
        self.enable == 1
    }

    pub fn logout_on(&self) -> bool {
        self.logout == 1
    }

    pub fn cookie(&self) -> &CookieMatch {
        // merge_loc_conf always fills it in
        self.cookie.as_deref().expect("merged ory_session_cookie")
    }

    pub(super) fn merge(&mut self, prev: &SessionConf) {
        merge_uint(&mut self.trust, prev.trust, 0);
        if self.enable == NGX_CONF_UNSET_FLAG {
            self.enable_source = prev.enable_source.clone();
        }
        merge_flag(&mut self.enable, prev.enable, 0);
        inherit(&mut self.kratos_base, &prev.kratos_base);
        if self.cookie.is_none() {
            self.cookie = match &prev.cookie {
                Some(cookie) => Some(cookie.clone()),
                None => Some(Arc::new(
                    CookieMatch::parse(DEFAULT_COOKIE).expect("default cookie"),
                )),
            };
        }
        merge_ptr(&mut self.login_url, prev.login_url);
        merge_ptr(&mut self.return_to, prev.return_to);
        merge_uint(&mut self.aal, prev.aal, 1);
        merge_flag(&mut self.hide_credentials, prev.hide_credentials, 0);
        merge_flag(&mut self.logout, prev.logout, 0);
        inherit(&mut self.tokenize_as, &prev.tokenize_as);
        // The whoami URL carries the token template, so that the cache key (built from the
        // URL's scope) tells answers with and without a JWT apart.
        self.whoami = match (&self.kratos_base, &self.tokenize_as) {
            (Some(base), Some(template)) => {
                let mut url = (**base).clone();
                url.query_pairs_mut().append_pair("tokenize_as", template);
                Some(Arc::new(url))
            }
            (base, None) => base.clone(),
            (None, Some(_)) => None,
        };
        self.scope = self
            .whoami
            .as_ref()
            .map_or_else(Default::default, |url| scope_of(url.as_str()));
        merge_msec(&mut self.timeout, prev.timeout, DEFAULT_TIMEOUT_MS);
        merge_msec(&mut self.cache_ttl, prev.cache_ttl, DEFAULT_CACHE_TTL_MS);
        merge_msec(
            &mut self.negative_ttl,
            prev.negative_ttl,
            DEFAULT_NEGATIVE_TTL_MS,
        );
    }
}

fn merge_ptr(conf: &mut *mut ngx_http_complex_value_t, prev: *mut ngx_http_complex_value_t) {
    let unset: *mut ngx_http_complex_value_t = NGX_CONF_UNSET_PTR.cast();
    if *conf == unset {
        *conf = if prev == unset { ptr::null_mut() } else { prev };
    }
}

/// `ory_session on | off`.
pub(super) unsafe extern "C" fn set_enable(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    super::set_check_flag(cf, cmd, conf, |c| {
        (c.session.enable, &mut c.session.enable_source)
    })
}

/// `ory_session_logout on | off`: nginx's flag setter, and the header filter is installed.
pub(super) unsafe extern "C" fn set_logout(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let rv = ngx::ffi::ngx_conf_set_flag_slot(cf, cmd, conf);
    if rv != NGX_CONF_OK {
        return rv;
    }
    if (*conf.cast::<LocConf>()).session.logout == 1 {
        if let Some(main) = crate::HttpOrySessionModule::main_conf_mut(&*cf) {
            main.logout_somewhere = true;
        }
    }
    NGX_CONF_OK
}

pub(super) unsafe extern "C" fn set_kratos_url(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).session.kratos_base;
    super::set_url(cf, cmd, field, whoami_url)
}

pub(super) unsafe extern "C" fn set_cookie(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).session.cookie;
    set_once(cf, cmd, field, |value| {
        CookieMatch::parse(value).map(Arc::new)
    })
}

pub(super) unsafe extern "C" fn set_tokenize_as(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).session.tokenize_as;
    set_once(cf, cmd, field, |value| {
        // Kratos template ids are plain identifiers; anything else would only earn a 400.
        let valid = !value.is_empty()
            && value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
        if !valid {
            return Err("a template id has only letters, digits, \"-\", \"_\" and \".\"");
        }
        Ok(String::from_utf8_lossy(value).into_owned())
    })
}

/// `ory_session_aal aal1 | aal2`. nginx's enum setter does not name the directive in its
/// error, so this one parses the two words itself.
pub(super) unsafe extern "C" fn set_aal(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).session.aal;
    if *field != NGX_CONF_UNSET_UINT {
        return IS_DUPLICATE;
    }
    let value = &args(cf)[0];
    *field = match value.as_bytes() {
        b"aal1" => 1,
        b"aal2" => 2,
        _ => return invalid_value(cf, cmd, value, "it must be \"aal1\" or \"aal2\""),
    };
    NGX_CONF_OK
}

/// `ory_session_trusted_certificate FILE;`
pub(super) unsafe extern "C" fn set_trusted_certificate(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).session.trust;
    super::set_trust(cf, cmd, field)
}
