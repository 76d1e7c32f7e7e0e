//! The `ory_oauth2*` directives: the OAuth2 access-token check's part of the configuration.

use core::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_flag_t, ngx_msec_t, ngx_uint_t};

use super::{
    args, inherit, invalid_value, merge_flag, merge_msec, merge_uint, LocConf, Source,
    NGX_CONF_UNSET_FLAG, NGX_CONF_UNSET_MSEC,
};
use crate::check::call::ExtraHeaders;
use crate::check::key::{scope_of, Scope};
use crate::oauth2::client::{introspection_url, jwks_url};
use crate::oauth2::jwks_cache::{Policy, DEFAULT_TTL};
use crate::oauth2::rules::{Rules, DEFAULT_LEEWAY_SECS};

pub const DEFAULT_TIMEOUT_MS: ngx_msec_t = 5_000;
/// How long a verified token or an introspection answer is reused; never past the token's
/// `exp`. Revoking a token in Hydra takes effect within this bound (for JWTs, which cannot be
/// revoked, only `exp` counts anyway).
const DEFAULT_CACHE_TTL_MS: ngx_msec_t = 60_000;
/// How long a refused token stays refused without asking again.
const DEFAULT_NEGATIVE_TTL_MS: ngx_msec_t = 10_000;

/// The `ory_oauth2*` directives of one level.
pub struct OAuth2Conf {
    /// The trusted certificates of the service's HTTPS, as an index into the main
    /// configuration's sets (0: the system's store).
    pub trust: ngx_uint_t,
    /// `ory_oauth2`
    pub enable: ngx_flag_t,
    enable_source: Source,
    pub jwks_url: Option<Arc<reqwest::Url>>,
    pub introspection_url: Option<Arc<reqwest::Url>>,
    /// `ory_oauth2_introspection_header`, of this level or else of the level above.
    pub introspection_headers: Option<ExtraHeaders>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    scopes: Vec<String>,
    pub leeway: ngx_msec_t,
    pub timeout: ngx_msec_t,
    pub cache_ttl: ngx_msec_t,
    pub negative_ttl: ngx_msec_t,
    pub jwks_cache_ttl: ngx_msec_t,
    /// What a token must satisfy here (filled in by merge).
    pub rules: Arc<Rules>,
    /// The endpoints and the rules as they enter cache keys (filled in by merge): a token
    /// verified against other endpoints or other rules is another entry (oathkeeper#743).
    pub scope: Scope,
    /// The JWKS URL as it names the worker's key set (filled in by merge).
    pub jwks_scope: Scope,
}

impl Default for OAuth2Conf {
    fn default() -> Self {
        OAuth2Conf {
            trust: super::TRUST_UNSET,
            enable: NGX_CONF_UNSET_FLAG,
            enable_source: Source::default(),
            jwks_url: None,
            introspection_url: None,
            introspection_headers: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            scopes: Vec::new(),
            leeway: NGX_CONF_UNSET_MSEC,
            timeout: NGX_CONF_UNSET_MSEC,
            cache_ttl: NGX_CONF_UNSET_MSEC,
            negative_ttl: NGX_CONF_UNSET_MSEC,
            jwks_cache_ttl: NGX_CONF_UNSET_MSEC,
            rules: Arc::new(Rules::default()),
            scope: Scope::default(),
            jwks_scope: Scope::default(),
        }
    }
}

impl OAuth2Conf {
    pub fn enabled(&self) -> bool {
        self.enable == 1
    }

    /// Merges with the level above; errors name what is wrong (the directive's own place is
    /// added by the caller where it has one).
    pub(super) fn merge(&mut self, prev: &OAuth2Conf) -> Result<(), String> {
        merge_uint(&mut self.trust, prev.trust, 0);
        if self.enable == NGX_CONF_UNSET_FLAG {
            self.enable_source = prev.enable_source.clone();
        }
        merge_flag(&mut self.enable, prev.enable, 0);
        inherit(&mut self.jwks_url, &prev.jwks_url);
        inherit(&mut self.introspection_url, &prev.introspection_url);
        inherit(&mut self.introspection_headers, &prev.introspection_headers);
        for (list, prev) in [
            (&mut self.issuers, &prev.issuers),
            (&mut self.audiences, &prev.audiences),
            (&mut self.scopes, &prev.scopes),
        ] {
            if list.is_empty() {
                list.clone_from(prev);
            }
        }
        merge_msec(
            &mut self.leeway,
            prev.leeway,
            DEFAULT_LEEWAY_SECS as ngx_msec_t * 1000,
        );
        merge_msec(&mut self.timeout, prev.timeout, DEFAULT_TIMEOUT_MS);
        merge_msec(&mut self.cache_ttl, prev.cache_ttl, DEFAULT_CACHE_TTL_MS);
        merge_msec(
            &mut self.negative_ttl,
            prev.negative_ttl,
            DEFAULT_NEGATIVE_TTL_MS,
        );
        merge_msec(
            &mut self.jwks_cache_ttl,
            prev.jwks_cache_ttl,
            DEFAULT_TTL.as_millis() as ngx_msec_t,
        );

        let mut rules = Rules::default();
        for issuer in &self.issuers {
            rules.add_issuer(issuer).map_err(str::to_owned)?;
        }
        for audience in &self.audiences {
            rules.add_audience(audience).map_err(str::to_owned)?;
        }
        for scope in &self.scopes {
            rules.add_scope(scope).map_err(str::to_owned)?;
        }
        rules
            .set_leeway(self.leeway as u64 / 1000)
            .map_err(|why| format!("\"ory_oauth2_leeway\": {why}"))?;
        self.jwks_policy()
            .map_err(|why| format!("\"ory_oauth2_jwks_cache_ttl\": {why}"))?;
        let url = |u: &Option<Arc<reqwest::Url>>| u.as_ref().map_or("", |u| u.as_str()).to_owned();
        self.scope = scope_of(&format!(
            "{}\n{}\n{:?}\n{:?}\n{:?}\n{}",
            url(&self.jwks_url),
            url(&self.introspection_url),
            rules.issuers(),
            rules.audiences(),
            rules.scopes(),
            rules.leeway_secs()
        ));
        self.jwks_scope = scope_of(&url(&self.jwks_url));
        self.rules = Arc::new(rules);
        if self.enabled() && self.jwks_url.is_none() && self.introspection_url.is_none() {
            return Err(format!(
                "neither \"ory_oauth2_jwks_url\" nor \"ory_oauth2_introspection_url\" is defined \
                 for the \"ory_oauth2\" directive in {}",
                self.enable_source
            ));
        }
        Ok(())
    }

    pub fn jwks_policy(&self) -> Result<Policy, &'static str> {
        Policy::with_ttl(Duration::from_millis(self.jwks_cache_ttl as u64))
    }
}

/// `ory_oauth2 on | off`.
pub(super) unsafe extern "C" fn set_enable(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    super::set_check_flag(cf, cmd, conf, |c| {
        (c.oauth2.enable, &mut c.oauth2.enable_source)
    })
}

pub(super) unsafe extern "C" fn set_jwks_url(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).oauth2.jwks_url;
    super::set_url(cf, cmd, field, jwks_url)
}

pub(super) unsafe extern "C" fn set_introspection_url(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).oauth2.introspection_url;
    super::set_url(cf, cmd, field, introspection_url)
}

/// `ory_oauth2_introspection_header NAME VALUE;`, any number of times.
pub(super) unsafe extern "C" fn set_introspection_header(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).oauth2.introspection_headers;
    super::add_header(cf, cmd, field)
}

/// Shared by `ory_oauth2_issuer`, `_audience` and `_scope`: one or more values, checked now
/// so that `nginx -t` reports a bad one at its line.
unsafe fn set_list(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    list: &mut Vec<String>,
    check: impl Fn(&mut Rules, &str) -> Result<(), &'static str>,
) -> *mut c_char {
    if !list.is_empty() {
        return super::IS_DUPLICATE;
    }
    for value in args(cf) {
        let Ok(text) = value.to_str() else {
            return invalid_value(cf, cmd, value, "it is not valid UTF-8");
        };
        if let Err(why) = check(&mut Rules::default(), text) {
            return invalid_value(cf, cmd, value, why);
        }
        list.push(text.to_owned());
    }
    if list.is_empty() {
        return NGX_CONF_ERROR;
    }
    NGX_CONF_OK
}

pub(super) unsafe extern "C" fn set_issuer(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let list = &mut (*conf.cast::<LocConf>()).oauth2.issuers;
    set_list(cf, cmd, list, Rules::add_issuer)
}

pub(super) unsafe extern "C" fn set_audience(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let list = &mut (*conf.cast::<LocConf>()).oauth2.audiences;
    set_list(cf, cmd, list, Rules::add_audience)
}

pub(super) unsafe extern "C" fn set_scope(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let list = &mut (*conf.cast::<LocConf>()).oauth2.scopes;
    set_list(cf, cmd, list, Rules::add_scope)
}

/// `ory_oauth2_leeway`: more than 300 seconds is no clock skew but a broken clock.
pub(super) unsafe extern "C" fn leeway_bounds(
    _cf: *mut ngx_conf_t,
    _post: *mut c_void,
    data: *mut c_void,
) -> *mut c_char {
    if *data.cast::<ngx_msec_t>() > 300_000 {
        return c"must not be more than 300s".as_ptr().cast_mut();
    }
    NGX_CONF_OK
}

/// `ory_oauth2_jwks_cache_ttl`: from 30 seconds to a day.
pub(super) unsafe extern "C" fn jwks_ttl_bounds(
    _cf: *mut ngx_conf_t,
    _post: *mut c_void,
    data: *mut c_void,
) -> *mut c_char {
    let ttl = *data.cast::<ngx_msec_t>();
    if Policy::with_ttl(Duration::from_millis(ttl as u64)).is_err() {
        return c"must be from 30s to 24h".as_ptr().cast_mut();
    }
    NGX_CONF_OK
}

/// The merged configuration of a level with `ory_oauth2 on` that names a JWKS: what the
/// workers fetch when they start.
pub fn jwks_of(conf: &OAuth2Conf) -> Option<(Scope, Arc<reqwest::Url>, Policy, usize)> {
    let url = conf.jwks_url.clone()?;
    let policy = conf.jwks_policy().ok()?;
    conf.enabled()
        .then_some((conf.jwks_scope, url, policy, conf.trust))
}

/// `ory_oauth2_trusted_certificate FILE;`
pub(super) unsafe extern "C" fn set_trusted_certificate(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let field = &mut (*conf.cast::<LocConf>()).oauth2.trust;
    super::set_trust(cf, cmd, field)
}
