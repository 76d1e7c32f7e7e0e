//! What Keto's answer to one check means. Pure, so every status and body shape is tested
//! without a network.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::check::call::{is_json, json_error, CallError};

/// The answer's `allowed`, as any JSON value so that a wrong type gets its own message.
struct WireAnswer {
    allowed: Option<Value>,
}

/// By hand rather than derived: a derived struct also accepts a JSON array read by position,
/// so `[true]` would allow. Only an object is an answer, and a second `allowed` key is an
/// error, since parsers disagree on which one wins.
impl<'de> Deserialize<'de> for WireAnswer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = WireAnswer;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireAnswer, A::Error> {
                let mut allowed = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "allowed" {
                        map.next_value::<IgnoredAny>()?;
                    } else if allowed.is_some() {
                        return Err(de::Error::duplicate_field("allowed"));
                    } else {
                        allowed = Some(map.next_value::<Value>()?);
                    }
                }
                Ok(WireAnswer { allowed })
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// Turns the answer of `GET /relation-tuples/check/openapi` into "allowed or not". Only a 200
/// with a JSON object holding a boolean `allowed` is a verdict; Keto denies with 200
/// `{"allowed": false}`. Unknown fields are ignored, as Keto may add some.
pub fn decode_answer(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<bool, CallError> {
    match status {
        200 => {}
        429 => return Err(CallError::RateLimited),
        other => return Err(CallError::Status(other)),
    }
    if !content_type.is_some_and(is_json) {
        return Err(CallError::Malformed(
            "content type is not application/json".into(),
        ));
    }
    let wire: WireAnswer = serde_json::from_slice(body).map_err(json_error)?;
    match wire.allowed {
        Some(Value::Bool(allowed)) => Ok(allowed),
        None | Some(Value::Null) => Err(CallError::Malformed("the answer has no allowed".into())),
        Some(_) => Err(CallError::Malformed("allowed is not a boolean".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    fn decode_200(body: &str) -> Result<bool, CallError> {
        decode_answer(200, JSON, body.as_bytes())
    }

    fn malformed(r: Result<bool, CallError>) -> String {
        match r {
            Err(CallError::Malformed(why)) => why,
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(decode_200(r#"{"allowed":true}"#), Ok(true));
        assert_eq!(decode_200(r#"{"allowed":false}"#), Ok(false));
        // Keto's own spacing and a trailing newline (Go's json.Encoder adds one).
        assert_eq!(decode_200("{\"allowed\": true}\n"), Ok(true));
        assert_eq!(
            decode_answer(
                200,
                Some("application/json; charset=utf-8"),
                b"{\"allowed\":false}\n"
            ),
            Ok(false)
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            decode_200(r#"{"snaptoken":"x","allowed":true,"future":{"a":[1,{"b":null}]}}"#),
            Ok(true)
        );
    }

    #[test]
    fn allowed_must_be_a_boolean() {
        for body in [r#"{}"#, r#"{"allowed":null}"#, r#"{"Allowed":true}"#] {
            assert_eq!(
                malformed(decode_200(body)),
                "the answer has no allowed",
                "{body}"
            );
        }
        for body in [
            r#"{"allowed":"true"}"#,
            r#"{"allowed":1}"#,
            r#"{"allowed":[true]}"#,
            r#"{"allowed":{"value":true}}"#,
        ] {
            assert_eq!(
                malformed(decode_200(body)),
                "allowed is not a boolean",
                "{body}"
            );
        }
    }

    #[test]
    fn a_duplicate_allowed_is_malformed() {
        // Parsers disagree on which one wins; neither may be believed.
        for body in [
            r#"{"allowed":true,"allowed":false}"#,
            r#"{"allowed":false,"allowed":true}"#,
            r#"{"allowed":true,"allowed":true}"#,
        ] {
            let why = malformed(decode_200(body));
            assert!(
                why.starts_with("unexpected value at line 1"),
                "{body}: {why}"
            );
        }
    }

    #[test]
    fn not_json() {
        assert!(malformed(decode_200("")).starts_with("unexpected end of input"));
        assert!(malformed(decode_200(r#"{"allowed":tr"#)).starts_with("unexpected end of input"));
        assert!(malformed(decode_200("<html>not json")).starts_with("syntax error"));
        assert!(malformed(decode_200("true")).starts_with("unexpected value"));
        // A derived struct would read these by position.
        assert!(malformed(decode_200("[true]")).starts_with("unexpected value"));
        assert!(malformed(decode_200("[false]")).starts_with("unexpected value"));
        assert!(malformed(decode_200(r#""allowed""#)).starts_with("unexpected value"));
        assert!(malformed(decode_200("null")).starts_with("unexpected value"));
        let why = malformed(decode_200(r#"{"allowed":true} {"allowed":false}"#));
        assert!(why.starts_with("syntax error"), "{why}");
        let why = malformed(decode_answer(200, JSON, b"{\"allowed\":\xff}"));
        assert!(why.starts_with("syntax error"), "{why}");
    }

    #[test]
    fn errors_do_not_echo_the_body() {
        let why = malformed(decode_200(r#"{"allowed":"sekrit-looking"}"#));
        assert!(!why.contains("sekrit"), "{why}");
        let why = malformed(decode_200(r#"{"allowed":true,"allowed":"sekrit"}"#));
        assert!(!why.contains("sekrit"), "{why}");
        let why = malformed(decode_200(r#"["sekrit"]"#));
        assert!(!why.contains("sekrit"), "{why}");
    }

    #[test]
    fn content_type_must_be_json() {
        let body = br#"{"allowed":true}"#;
        for ct in [
            "application/json",
            "Application/JSON",
            "application/json;charset=utf-8",
            " application/json ; charset=UTF-8",
        ] {
            assert_eq!(decode_answer(200, Some(ct), body), Ok(true), "{ct}");
        }
        for ct in [
            None,
            Some("text/html"),
            Some("text/plain; charset=utf-8"),
            Some("application/jsonp"),
            Some("application/problem+json"),
            Some(""),
        ] {
            assert_eq!(
                malformed(decode_answer(200, ct, body)),
                "content type is not application/json",
                "{ct:?}"
            );
        }
    }

    #[test]
    fn statuses() {
        let allowed = br#"{"allowed":true}"#;
        assert_eq!(
            decode_answer(429, JSON, allowed),
            Err(CallError::RateLimited)
        );
        // A 403 with Keto's own denial body is still not a verdict on this route, and a body
        // saying "allowed" on an error status is never believed.
        for status in [
            400, 401, 403, 404, 405, 500, 502, 503, 504, 201, 204, 301, 302, 304, 100, 0, 999,
        ] {
            assert_eq!(
                decode_answer(status, JSON, allowed),
                Err(CallError::Status(status)),
                "{status}"
            );
        }
        let bad_request = br#"{"error":{"code":400,"status":"Bad Request","message":"incomplete tuple, provide \"namespace\", \"object\", \"relation\", and a subject"}}"#;
        assert_eq!(
            decode_answer(400, JSON, bad_request),
            Err(CallError::Status(400))
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            CallError::Status(500).describe(&super::super::KETO),
            "Keto answered 500"
        );
        assert_eq!(
            CallError::Unreachable("connection refused".into()).describe(&super::super::KETO),
            "Keto is unreachable (connection refused)"
        );
        assert_eq!(
            CallError::Timeout.describe(&super::super::KETO),
            "Keto did not answer within ory_permission_timeout"
        );
        assert_eq!(
            CallError::RateLimited.describe(&super::super::KETO),
            "Keto rate-limited the request (429)"
        );
        assert_eq!(
            CallError::Malformed("allowed is not a boolean".into()).describe(&super::super::KETO),
            "Keto sent a malformed answer: allowed is not a boolean"
        );
        assert_eq!(
            CallError::TooLarge.describe(&super::super::KETO),
            "Keto response body is larger than 1048576 bytes"
        );
    }
}
