//! What a location demands of a token: issuer, audience, scopes, and how much clock skew to
//! forgive. Built and validated at configuration time; checking is allocation-free unless a
//! scope is missing.

use super::claims::Claims;
use super::outcome::Refusal;
use super::scope::{check_scope_token, missing};

/// Forgiven clock skew for `exp`, `nbf` and `iat`. Hydra sets `iat` = `nbf` = the time it
/// issues, so a verifier whose clock is a little behind Hydra's would refuse fresh tokens
/// without any; 30 s covers NTP-synchronised hosts with a wide margin and lengthens a 1 h
/// token's life by under 1%.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// More than this is not skew but a broken clock, and would keep expired tokens alive.
pub const MAX_LEEWAY_SECS: u64 = 300;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    issuers: Vec<Box<str>>,
    audiences: Vec<Box<str>>,
    scopes: Vec<Box<str>>,
    /// `scopes` space-separated, for the challenge.
    required_scope: String,
    leeway: i64,
}

impl Default for Rules {
    /// Any issuer, any audience, no scope, the default leeway. A token must still verify
    /// (or be active) and must not have expired.
    fn default() -> Self {
        Rules {
            issuers: Vec::new(),
            audiences: Vec::new(),
            scopes: Vec::new(),
            required_scope: String::new(),
            leeway: DEFAULT_LEEWAY_SECS as i64,
        }
    }
}

impl Rules {
    /// An accepted issuer (`iss`, compared exactly: `https://hydra/` is not `https://hydra`).
    /// The token's issuer must be one of those added; none added means any.
    pub fn add_issuer(&mut self, issuer: &str) -> Result<(), &'static str> {
        check_text(
            issuer,
            "issuer is empty",
            "issuer contains control characters",
        )?;
        if !self.issuers.iter().any(|i| **i == *issuer) {
            self.issuers.push(issuer.into());
        }
        Ok(())
    }

    /// An accepted audience: at least one of the token's `aud` must be one of those added;
    /// none added means no check.
    pub fn add_audience(&mut self, audience: &str) -> Result<(), &'static str> {
        check_text(
            audience,
            "audience is empty",
            "audience contains control characters",
        )?;
        if !self.audiences.iter().any(|a| **a == *audience) {
            self.audiences.push(audience.into());
        }
        Ok(())
    }

    /// A required scope: the token must grant every one added.
    pub fn add_scope(&mut self, scope: &str) -> Result<(), &'static str> {
        check_scope_token(scope)?;
        if !self.scopes.iter().any(|s| **s == *scope) {
            if !self.required_scope.is_empty() {
                self.required_scope.push(' ');
            }
            self.required_scope.push_str(scope);
            self.scopes.push(scope.into());
        }
        Ok(())
    }

    pub fn set_leeway(&mut self, seconds: u64) -> Result<(), &'static str> {
        if seconds > MAX_LEEWAY_SECS {
            return Err("leeway must not be more than 300 seconds");
        }
        self.leeway = seconds as i64;
        Ok(())
    }

    pub fn leeway_secs(&self) -> u64 {
        self.leeway as u64
    }

    pub fn issuers(&self) -> &[Box<str>] {
        &self.issuers
    }

    pub fn audiences(&self) -> &[Box<str>] {
        &self.audiences
    }

    pub fn scopes(&self) -> &[Box<str>] {
        &self.scopes
    }

    /// The required scopes, space-separated (empty when none), for `scope="..."`.
    pub fn required_scope(&self) -> &str {
        &self.required_scope
    }

    /// `now` in unix seconds. Every failure but a missing scope is an invalid token (401);
    /// scopes are checked last, so a token that is invalid for any other reason is never
    /// answered with a 403 that would tell the client it was otherwise fine.
    ///
    /// A token without `exp` is refused: Hydra always sets it, and a token that never
    /// expires could only be revoked by rotating the signing key.
    pub fn check(&self, claims: &Claims, now: i64) -> Result<(), Refusal> {
        let invalid = |reason| Err(Refusal::InvalidToken(reason));
        let Some(exp) = claims.exp else {
            return invalid("the token has no exp");
        };
        // exp is "on or after which the token MUST NOT be accepted" (RFC 7519 §4.1.4).
        if now >= exp.saturating_add(self.leeway) {
            return invalid("the token has expired");
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(self.leeway) < nbf)
        {
            return invalid("the token is not valid yet (nbf)");
        }
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.leeway))
        {
            return invalid("the token was issued in the future (iat)");
        }
        if !self.issuers.is_empty()
            && !claims
                .iss()
                .is_some_and(|iss| self.issuers.iter().any(|i| **i == *iss))
        {
            return invalid("the token's issuer is not accepted");
        }
        if !self.audiences.is_empty()
            && !claims
                .aud()
                .any(|a| self.audiences.iter().any(|b| **b == *a))
        {
            return invalid("the token's audience is not accepted");
        }
        let missing = missing(&self.scopes, claims.scopes());
        if !missing.is_empty() {
            return Err(Refusal::InsufficientScope {
                missing: missing.join(" ").into(),
            });
        }
        Ok(())
    }
}

/// Configured values are compared with claims byte for byte; a control byte could only be a
/// typo, and would make the value impossible to log or match.
fn check_text(s: &str, empty: &'static str, control: &'static str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err(empty)
    } else if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        Err(control)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::claims::Source;
    use serde_json::{json, Value};

    const NOW: i64 = 1_767_225_660;

    fn claims(v: Value) -> Claims {
        let mut base = json!({
            "client_id": "c", "iss": "https://hydra.example.com", "aud": ["api", "other"],
            "exp": NOW + 3540, "iat": NOW - 60, "nbf": NOW - 60, "scp": ["read", "write"]
        });
        for (k, x) in v.as_object().unwrap() {
            if x.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = x.clone();
            }
        }
        Claims::from_object(base.as_object().unwrap(), Source::Jwt).unwrap()
    }

    fn invalid(reason: &'static str) -> Result<(), Refusal> {
        Err(Refusal::InvalidToken(reason))
    }

    #[test]
    fn defaults_only_need_an_unexpired_token() {
        let r = Rules::default();
        assert_eq!(r.leeway_secs(), DEFAULT_LEEWAY_SECS);
        assert_eq!(r.check(&claims(json!({})), NOW), Ok(()));
        assert_eq!(
            r.check(&claims(json!({"iss": null, "aud": null, "scp": null})), NOW),
            Ok(())
        );
        assert_eq!(
            r.check(&claims(json!({"exp": null})), NOW),
            invalid("the token has no exp")
        );
    }

    #[test]
    fn expiry_with_leeway() {
        let mut r = Rules::default();
        let exp = |t: i64| claims(json!({ "exp": t }));
        // within the leeway: still valid; at exp + leeway: expired
        assert_eq!(r.check(&exp(NOW - 29), NOW), Ok(()));
        assert_eq!(
            r.check(&exp(NOW - 30), NOW),
            invalid("the token has expired")
        );
        r.set_leeway(0).unwrap();
        assert_eq!(r.check(&exp(NOW + 1), NOW), Ok(()));
        assert_eq!(r.check(&exp(NOW), NOW), invalid("the token has expired"));
        assert_eq!(
            r.check(&exp(i64::MIN), NOW),
            invalid("the token has expired")
        );
        assert_eq!(r.check(&exp(i64::MAX), NOW), Ok(()));
        r.set_leeway(MAX_LEEWAY_SECS).unwrap();
        assert_eq!(r.check(&exp(i64::MAX), i64::MAX - 1), Ok(()));
        assert_eq!(
            r.check(&exp(i64::MAX), i64::MAX),
            invalid("the token has expired")
        );
    }

    #[test]
    fn not_before_and_issued_at() {
        let r = Rules::default();
        assert_eq!(r.check(&claims(json!({"nbf": NOW + 30})), NOW), Ok(()));
        assert_eq!(
            r.check(&claims(json!({"nbf": NOW + 31})), NOW),
            invalid("the token is not valid yet (nbf)")
        );
        assert_eq!(r.check(&claims(json!({"iat": NOW + 30})), NOW), Ok(()));
        assert_eq!(
            r.check(&claims(json!({"iat": NOW + 31, "nbf": null})), NOW),
            invalid("the token was issued in the future (iat)")
        );
        assert_eq!(
            r.check(&claims(json!({"iat": null, "nbf": null})), NOW),
            Ok(())
        );
        assert_eq!(
            r.check(&claims(json!({"iat": i64::MIN, "nbf": i64::MIN})), NOW),
            Ok(())
        );
        assert_eq!(
            r.check(&claims(json!({"iat": NOW, "nbf": NOW})), i64::MAX - 10),
            invalid("the token has expired")
        );
    }

    #[test]
    fn issuers() {
        let mut r = Rules::default();
        r.add_issuer("https://other").unwrap();
        r.add_issuer("https://hydra.example.com").unwrap();
        r.add_issuer("https://hydra.example.com").unwrap();
        assert_eq!(r.issuers().len(), 2);
        assert_eq!(r.check(&claims(json!({})), NOW), Ok(()));
        for iss in [
            json!("https://hydra.example.com/"),
            json!("HTTPS://hydra.example.com"),
            json!(null),
            json!(""),
        ] {
            assert_eq!(
                r.check(&claims(json!({ "iss": iss })), NOW),
                invalid("the token's issuer is not accepted"),
                "{iss}"
            );
        }
    }

    #[test]
    fn audiences() {
        let mut r = Rules::default();
        r.add_audience("api").unwrap();
        r.add_audience("web").unwrap();
        assert_eq!(r.check(&claims(json!({})), NOW), Ok(()));
        assert_eq!(r.check(&claims(json!({"aud": "web"})), NOW), Ok(()));
        for aud in [
            json!("API"),
            json!([]),
            json!(null),
            json!(["x", "y"]),
            json!("ap"),
        ] {
            assert_eq!(
                r.check(&claims(json!({ "aud": aud })), NOW),
                invalid("the token's audience is not accepted"),
                "{aud}"
            );
        }
    }

    #[test]
    fn scopes() {
        let mut r = Rules::default();
        r.add_scope("read").unwrap();
        assert_eq!(r.check(&claims(json!({})), NOW), Ok(()));
        r.add_scope("admin").unwrap();
        r.add_scope("delete").unwrap();
        r.add_scope("admin").unwrap();
        assert_eq!(r.required_scope(), "read admin delete");
        assert_eq!(r.scopes().len(), 3);
        let refusal = r.check(&claims(json!({})), NOW).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::InsufficientScope {
                missing: "admin delete".into()
            }
        );
        assert_eq!(refusal.status(), 403);
        assert_eq!(
            r.check(&claims(json!({"scp": ["delete", "admin", "read"]})), NOW),
            Ok(())
        );
    }

    #[test]
    fn an_invalid_token_is_never_a_scope_failure() {
        let mut r = Rules::default();
        r.add_scope("admin").unwrap();
        r.add_issuer("https://hydra.example.com").unwrap();
        r.add_audience("api").unwrap();
        for (changes, reason) in [
            (json!({"exp": NOW - 3600}), "the token has expired"),
            (
                json!({"iss": "https://evil"}),
                "the token's issuer is not accepted",
            ),
            (
                json!({"aud": "evil"}),
                "the token's audience is not accepted",
            ),
            (json!({"exp": null}), "the token has no exp"),
        ] {
            assert_eq!(r.check(&claims(changes), NOW), invalid(reason));
        }
    }

    #[test]
    fn configuration_errors() {
        let mut r = Rules::default();
        assert_eq!(r.add_issuer(""), Err("issuer is empty"));
        assert_eq!(
            r.add_issuer("a\nb"),
            Err("issuer contains control characters")
        );
        assert_eq!(r.add_audience(""), Err("audience is empty"));
        assert_eq!(
            r.add_audience("\u{7f}"),
            Err("audience contains control characters")
        );
        assert_eq!(r.add_scope(""), Err("scope is empty"));
        assert!(r.add_scope("a b").is_err());
        assert!(r.add_scope("a\"").is_err());
        assert_eq!(
            r.set_leeway(301),
            Err("leeway must not be more than 300 seconds")
        );
        assert_eq!(r, Rules::default());
        r.set_leeway(300).unwrap();
        assert_eq!(r.leeway_secs(), 300);
    }
}
