//! What a token check decides, for JWTs and introspected tokens alike: allowed (with the
//! claims), or refused as an invalid token (401) or for lacking scope (403).

use std::fmt;

use super::challenge::Challenge;
use super::claims::Claims;
use super::introspection::Introspection;
use super::jwks::KeySet;
use super::jwt::{verify, JwtError};
use super::rules::Rules;
use super::token::TokenError;

/// Why a token is refused. The reason is for the log; the client learns only the RFC 6750
/// error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401 `error="invalid_token"`.
    InvalidToken(&'static str),
    /// 403 `error="insufficient_scope"`. `missing` is space-separated, for the log.
    InsufficientScope { missing: Box<str> },
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::InvalidToken(_) => 401,
            Refusal::InsufficientScope { .. } => 403,
        }
    }

    /// The challenge to answer with; `required_scope` is [`Rules::required_scope`]
    /// (RFC 6750 §3.1: the scope necessary to access the resource).
    pub fn challenge<'a>(&self, required_scope: &'a str) -> Challenge<'a> {
        match self {
            Refusal::InvalidToken(_) => Challenge::InvalidToken,
            Refusal::InsufficientScope { .. } => Challenge::InsufficientScope {
                scope: required_scope,
            },
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::InvalidToken(reason) => f.write_str(reason),
            Refusal::InsufficientScope { missing } if missing.contains(' ') => {
                write!(f, "the token lacks the scopes \"{missing}\"")
            }
            Refusal::InsufficientScope { missing } => {
                write!(f, "the token lacks the scope \"{missing}\"")
            }
        }
    }
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Self {
        Refusal::InvalidToken(e.as_str())
    }
}

/// A JWT that is not allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtDenial {
    /// The key set has no key with the token's `kid`: ask the JWKS cache whether to refetch
    /// ([`crate::oauth2::jwks_cache::JwksCache::on_unknown_kid`]) and check again, or refuse.
    UnknownKid,
    Refused(Refusal),
}

/// A JWT: signature, header, then the rules.
pub fn check_jwt(token: &str, keys: &KeySet, rules: &Rules, now: i64) -> Result<Claims, JwtDenial> {
    let claims = verify(token, keys).map_err(|e| match e {
        JwtError::UnknownKid => JwtDenial::UnknownKid,
        other => JwtDenial::Refused(Refusal::InvalidToken(other.as_str())),
    })?;
    rules.check(&claims, now).map_err(JwtDenial::Refused)?;
    Ok(claims)
}

/// An introspected token: Hydra's verdict, then the rules (Hydra checks expiry too; the
/// rules check it again with our clock and leeway).
pub fn check_introspection(
    answer: Introspection,
    rules: &Rules,
    now: i64,
) -> Result<Claims, Refusal> {
    match answer {
        Introspection::Invalid { reason } => Err(Refusal::InvalidToken(reason)),
        Introspection::Active(claims) => rules.check(&claims, now).map(|()| claims),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::fixtures;
    use serde_json::json;

    fn keys() -> KeySet {
        KeySet::parse(fixtures::JWKS.as_bytes()).unwrap()
    }

    fn rules() -> Rules {
        let mut r = Rules::default();
        r.add_issuer("https://hydra.example.com").unwrap();
        r.add_audience("api.example.com").unwrap();
        r.add_scope("read:photos").unwrap();
        r
    }

    /// Every fixture token that verifies ends as its fixture says under the default rules.
    #[test]
    fn every_fixture_token_by_the_default_rules() {
        let f = fixtures::fixtures();
        let mut judged = 0;
        for t in f.tokens.iter().filter(|t| t.verify == "ok") {
            let got = match check_jwt(&t.token, &keys(), &Rules::default(), f.now) {
                Ok(_) => "ok",
                Err(JwtDenial::Refused(Refusal::InvalidToken("the token has expired"))) => {
                    "expired"
                }
                Err(JwtDenial::Refused(Refusal::InvalidToken("the token has no exp"))) => "no_exp",
                Err(other) => panic!("{}: {other:?}", t.name),
            };
            assert_eq!(got, t.rules.as_deref().unwrap_or("ok"), "{}", t.name);
            judged += 1;
        }
        assert!(judged >= 20);
    }

    #[test]
    fn jwts() {
        let now = fixtures::fixtures().now;
        let ok = check_jwt(&fixtures::token("RS256-4096"), &keys(), &rules(), now).unwrap();
        assert_eq!(ok.sub(), Some("user-1234"));

        assert_eq!(
            check_jwt(&fixtures::token("unknown-kid"), &keys(), &rules(), now),
            Err(JwtDenial::UnknownKid)
        );
        assert_eq!(
            check_jwt(&fixtures::token("alg-none"), &keys(), &rules(), now),
            Err(JwtDenial::Refused(Refusal::InvalidToken(
                "the token's algorithm is not accepted"
            )))
        );
        assert_eq!(
            check_jwt(&fixtures::token("expired"), &keys(), &rules(), now),
            Err(JwtDenial::Refused(Refusal::InvalidToken(
                "the token has expired"
            )))
        );
        let mut admin = rules();
        admin.add_scope("admin").unwrap();
        admin.add_scope("write").unwrap();
        let denied = check_jwt(&fixtures::token("ES256"), &keys(), &admin, now).unwrap_err();
        let JwtDenial::Refused(refusal) = denied else {
            panic!("{denied:?}");
        };
        assert_eq!(refusal.status(), 403);
        assert_eq!(
            refusal.to_string(),
            "the token lacks the scopes \"admin write\""
        );
        let one = Refusal::InsufficientScope {
            missing: "admin".into(),
        };
        assert_eq!(one.to_string(), "the token lacks the scope \"admin\"");
        assert_eq!(
            refusal.challenge(admin.required_scope()),
            Challenge::InsufficientScope {
                scope: "read:photos admin write"
            }
        );
    }

    #[test]
    fn introspections() {
        let now = fixtures::fixtures().now;
        let claims = |v: Value| {
            crate::oauth2::claims::Claims::from_object(
                v.as_object().unwrap(),
                crate::oauth2::claims::Source::Introspection,
            )
            .unwrap()
        };
        use serde_json::Value;
        let active = claims(json!({
            "active": true, "iss": "https://hydra.example.com", "aud": ["api.example.com"],
            "scope": "read:photos", "exp": now + 60, "token_use": "access_token"
        }));
        assert!(check_introspection(Introspection::Active(active.clone()), &rules(), now).is_ok());
        assert_eq!(
            check_introspection(Introspection::Active(active), &rules(), now + 90),
            Err(Refusal::InvalidToken("the token has expired"))
        );
        let inactive = Introspection::Invalid {
            reason: "Hydra says the token is not active",
        };
        let refusal = check_introspection(inactive, &rules(), now).unwrap_err();
        assert_eq!(refusal.status(), 401);
        assert_eq!(refusal.challenge("x"), Challenge::InvalidToken);
        assert_eq!(refusal.to_string(), "Hydra says the token is not active");
    }

    #[test]
    fn token_errors_are_invalid_tokens() {
        let r = Refusal::from(TokenError::TooLong);
        assert_eq!(r.status(), 401);
        assert_eq!(r.to_string(), "the bearer token is longer than 8192 bytes");
    }
}
