//! Token introspection (RFC 7662) as Hydra answers it at `POST /admin/oauth2/introspect`:
//! the request body we send and what Hydra's answer means. Pure, so every status and body
//! shape is tested without a network.

use serde_json::Value;

use super::claims::{Claims, Member, Members, Source};
use crate::check::call::CallError;
use crate::check::call::{json_error_text, media_type_is};
use crate::check::MAX_ANSWER_LEN;

pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Hydra's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
// Moved once per introspection call: boxing the claims would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Introspection {
    Active(Claims),
    /// Not active, or active but not an access token. The reason is for the log.
    Invalid {
        reason: &'static str,
    },
}

/// `token=<token>`, form-encoded. Only `token`: asking Hydra to check `scope` too would turn
/// a missing scope into "inactive" (401) where the rules answer 403 and name the scope.
pub fn request_body(token: &str) -> String {
    let mut body = String::with_capacity(6 + token.len() + token.len() / 4);
    body.push_str("token=");
    for &b in token.as_bytes() {
        // RFC 3986 unreserved bytes stay; everything else (`+`, `/` and `=` of a b64token
        // above all: `+` would be read as a space) is percent-encoded.
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            body.push(char::from(b));
        } else {
            body.push('%');
            body.push(char::from(HEX[usize::from(b >> 4)]));
            body.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    body
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Turns Hydra's answer into a verdict. A status other than 200, a body that is not a JSON
/// object, or an object without a boolean `active` is an error (the caller answers 502),
/// never a verdict on the token: Hydra answers every unknown, expired or revoked token with
/// a 200 `{"active": false}`, so anything else means Hydra could not judge it.
pub fn decode_answer(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Introspection, CallError> {
    match status {
        200 => {}
        429 => return Err(CallError::RateLimited),
        other => return Err(CallError::Status(other)),
    }
    if body.len() > MAX_ANSWER_LEN {
        return Err(CallError::TooLarge);
    }
    if !content_type.is_some_and(|t| media_type_is(t, &["application/json"])) {
        return Err(CallError::Malformed(
            "content type is not application/json".into(),
        ));
    }
    // Anything but an object is a type error, which no member can cause (a member may hold
    // any value).
    let answer = Members::parse(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            CallError::Malformed("the answer is not a JSON object".into())
        }
        _ => CallError::Malformed(json_error_text(&e)),
    })?;
    match answer.get("active") {
        Some(Member::Other(Value::Bool(true))) => {}
        Some(Member::Other(Value::Bool(false))) => {
            return Ok(Introspection::Invalid {
                reason: "Hydra says the token is not active",
            })
        }
        Some(_) => return Err(CallError::Malformed("active is not a boolean".into())),
        None => return Err(CallError::Malformed("the answer has no active".into())),
    }
    let claims = Claims::from_members(&answer, Source::Introspection)
        .map_err(|why| CallError::Malformed(why.into()))?;
    if let Some(reason) = not_an_access_token(&claims) {
        return Ok(Introspection::Invalid { reason });
    }
    Ok(Introspection::Active(claims))
}

/// Hydra introspects refresh tokens too (active, `token_use: refresh_token`). A missing
/// `token_use` is refused as well: Hydra always sends it, and without it an answer cannot
/// tell an access token from a refresh token. `token_type` is optional in RFC 7662; when
/// present it must be Bearer (token types are case-insensitive, RFC 6749 §5.1).
fn not_an_access_token(claims: &Claims) -> Option<&'static str> {
    if claims.token_use() != Some("access_token") {
        return Some("the token is not an access token (token_use)");
    }
    if claims
        .token_type()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Some("the token is not a Bearer token (token_type)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HYDRA: Option<&str> = Some("application/json;charset=UTF-8");

    /// An active answer as Hydra writes it (fosite's introspection response).
    pub(crate) fn hydra_active() -> Value {
        json!({
            "active": true,
            "scope": "openid offline read:photos",
            "client_id": "client-abc",
            "sub": "user-1234",
            "obfuscated_subject": "",
            "exp": 1767229200,
            "iat": 1767225600,
            "nbf": 1767225600,
            "username": "",
            "aud": ["api.example.com"],
            "iss": "https://hydra.example.com",
            "token_type": "Bearer",
            "token_use": "access_token",
            "ext": {"tenant": "acme"}
        })
    }

    fn decode(body: &Value) -> Result<Introspection, CallError> {
        decode_answer(200, HYDRA, body.to_string().as_bytes())
    }

    fn with(changes: Value) -> Value {
        let mut v = hydra_active();
        for (k, x) in changes.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    #[test]
    fn active() {
        let Introspection::Active(c) = decode(&hydra_active()).unwrap() else {
            panic!("not active");
        };
        assert_eq!(c.sub(), Some("user-1234"));
        assert_eq!(c.client_id(), Some("client-abc"));
        assert_eq!(c.scope_text(), "openid offline read:photos");
        assert_eq!(c.exp, Some(1767229200));
        assert_eq!(c.aud().collect::<Vec<_>>(), ["api.example.com"]);
        assert_eq!(c.text("ext"), Some(r#"{"tenant":"acme"}"#));
        assert_eq!(c.text("active"), Some("true"));
        assert_eq!(c.text("username"), Some(""));
    }

    #[test]
    fn inactive() {
        let inactive = Introspection::Invalid {
            reason: "Hydra says the token is not active",
        };
        assert_eq!(decode(&json!({"active": false})), Ok(inactive.clone()));
        // Whatever else an inactive answer says, it is inactive.
        assert_eq!(decode(&with(json!({"active": false}))), Ok(inactive));
    }

    #[test]
    fn not_access_tokens() {
        for (changes, reason) in [
            (
                json!({"token_use": "refresh_token"}),
                "the token is not an access token (token_use)",
            ),
            (
                json!({"token_use": null}),
                "the token is not an access token (token_use)",
            ),
            (
                json!({"token_use": "Access_Token"}),
                "the token is not an access token (token_use)",
            ),
            (
                json!({"token_type": "N_A"}),
                "the token is not a Bearer token (token_type)",
            ),
            (
                json!({"token_type": "DPoP"}),
                "the token is not a Bearer token (token_type)",
            ),
        ] {
            assert_eq!(
                decode(&with(changes.clone())),
                Ok(Introspection::Invalid { reason }),
                "{changes}"
            );
        }
        assert!(matches!(
            decode(&with(json!({"token_type": "bearer"}))),
            Ok(Introspection::Active(_))
        ));
        assert!(matches!(
            decode(&with(json!({"token_type": null}))),
            Ok(Introspection::Active(_))
        ));
    }

    #[test]
    fn statuses() {
        let body = hydra_active().to_string();
        assert_eq!(
            decode_answer(429, HYDRA, body.as_bytes()),
            Err(CallError::RateLimited)
        );
        for status in [201, 204, 301, 400, 401, 403, 404, 500, 502, 503] {
            assert_eq!(
                decode_answer(status, HYDRA, body.as_bytes()),
                Err(CallError::Status(status))
            );
        }
        // Hydra's answer to an empty body: an error, not an inactive token.
        let invalid_request = br#"{"error":"invalid_request","error_description":"..."}"#;
        assert_eq!(
            decode_answer(400, HYDRA, invalid_request),
            Err(CallError::Status(400))
        );
    }

    #[test]
    fn malformed_answers() {
        let m = |ct: Option<&str>, body: &[u8]| match decode_answer(200, ct, body) {
            Err(CallError::Malformed(why)) => why,
            other => panic!("{other:?}"),
        };
        let body = hydra_active().to_string();
        assert_eq!(
            m(None, body.as_bytes()),
            "content type is not application/json"
        );
        assert_eq!(
            m(Some("text/html"), body.as_bytes()),
            "content type is not application/json"
        );
        assert_eq!(m(HYDRA, b"<html>"), "syntax error at line 1 column 1");
        assert_eq!(m(HYDRA, b""), "unexpected end of input at line 1 column 0");
        assert_eq!(m(HYDRA, b"[]"), "the answer is not a JSON object");
        assert_eq!(m(HYDRA, b"null"), "the answer is not a JSON object");
        assert_eq!(m(HYDRA, b"{}"), "the answer has no active");
        assert_eq!(m(HYDRA, br#"{"active":"true"}"#), "active is not a boolean");
        assert_eq!(m(HYDRA, br#"{"active":1}"#), "active is not a boolean");
        assert_eq!(m(HYDRA, br#"{"active":null}"#), "active is not a boolean");
        assert_eq!(
            m(HYDRA, with(json!({"exp": "soon"})).to_string().as_bytes()),
            "the claim exp is not a number"
        );
        assert_eq!(
            m(HYDRA, with(json!({"scope": ["a"]})).to_string().as_bytes()),
            "the claim scope is not a string"
        );
    }

    #[test]
    fn size_limit() {
        let mut body = hydra_active().to_string().into_bytes();
        body.resize(MAX_ANSWER_LEN, b' ');
        assert!(matches!(
            decode_answer(200, HYDRA, &body),
            Ok(Introspection::Active(_))
        ));
        body.push(b' ');
        assert_eq!(decode_answer(200, HYDRA, &body), Err(CallError::TooLarge));
    }

    #[test]
    fn request_bodies() {
        assert_eq!(request_body("ory_at_abc.DEF-_~"), "token=ory_at_abc.DEF-_~");
        assert_eq!(request_body("a+b/c=="), "token=a%2Bb%2Fc%3D%3D");
        assert_eq!(request_body(""), "token=");
        assert_eq!(request_body("a b&c=d\u{e9}"), "token=a%20b%26c%3Dd%C3%A9");
    }
}
