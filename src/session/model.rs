//! The session model: what the cache and the variables keep of Kratos' whoami answer, and
//! how that answer (status, headers, body) is read. Pure: every status and body shape is
//! tested without a network.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::check::call::{is_json, json_error, CallError};
use crate::check::text::header_safe;

/// What the variables need. Every string is safe to put in an HTTP header: control bytes
/// (0x00-0x1F, 0x7F) are percent-encoded (`"\r\n"` -> `"%0D%0A"`) and nothing else changes,
/// so an identity trait cannot split or forge a header sent to the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: Box<str>,
    /// `identity.id`
    pub user_id: Box<str>,
    pub aal: Box<str>,
    /// `aal` as a number (`aal2` is 2), 0 when unknown: compared on every request.
    pub aal_rank: u8,
    /// As Kratos sent it.
    pub expires_at: Box<str>,
    /// `expires_at` in unix milliseconds.
    pub expires_at_ms: u64,
    pub authenticated_at: Box<str>,
    pub schema_id: Box<str>,
    pub identity_state: Box<str>,
    /// Compact JSON of `identity.traits`, `{}` when absent.
    pub traits_json: Box<str>,
    /// Compact JSON of `identity.metadata_public`, empty when null or absent.
    pub metadata_public_json: Box<str>,
    /// Top-level traits as text, sorted by name: strings as is, numbers and booleans as
    /// text, null as "", objects and arrays as compact JSON.
    pub traits: Box<[(Box<str>, Box<str>)]>,
    /// The session as a JWT (`tokenize_as`), when asked for.
    pub tokenized: Option<Box<str>>,
    /// The JWT's `exp` in unix milliseconds: a cached session never outlives its token.
    pub tokenized_exp_ms: Option<u64>,
}

impl Session {
    pub fn trait_value(&self, name: &str) -> Option<&str> {
        self.traits
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &*self.traits[i].1)
    }

    /// Heap bytes held, split into the part every session has and the part an identity
    /// schema controls (traits and metadata), so a cache can bound memory, not only entries.
    pub fn heap_bytes(&self) -> (usize, usize) {
        let fixed = self.id.len()
            + self.user_id.len()
            + self.aal.len()
            + self.expires_at.len()
            + self.authenticated_at.len()
            + self.schema_id.len()
            + self.identity_state.len();
        let variable = self.traits_json.len()
            + self.metadata_public_json.len()
            + std::mem::size_of_val(&*self.traits)
            + self
                .traits
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        (fixed, variable)
    }
}

/// Kratos' verdict on a credential.
#[derive(Clone, PartialEq, Eq)]
// One Answer is moved once per whoami call: boxing the session would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Active {
        session: Session,
        /// `Ory-Session-Cache-For` in milliseconds.
        cache_for_ms: Option<u64>,
        /// `Set-Cookie` values of the 200 (a refreshed session cookie after an admin extend).
        set_cookie: Vec<String>,
    },
    Unauthenticated {
        reason: &'static str,
    },
    /// 403: the session's authenticator assurance level is too low.
    AalRequired {
        redirect_browser_to: Option<String>,
    },
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Set-Cookie carries a session cookie value: show how many, never what.
            Answer::Active {
                session,
                cache_for_ms,
                set_cookie,
            } => f
                .debug_struct("Active")
                .field("session", session)
                .field("cache_for_ms", cache_for_ms)
                .field("set_cookie", &set_cookie.len())
                .finish(),
            Answer::Unauthenticated { reason } => f
                .debug_struct("Unauthenticated")
                .field("reason", reason)
                .finish(),
            Answer::AalRequired {
                redirect_browser_to,
            } => f
                .debug_struct("AalRequired")
                .field("redirect_browser_to", redirect_browser_to)
                .finish(),
        }
    }
}

#[derive(Deserialize)]
struct WireSession {
    id: Option<String>,
    active: Option<bool>,
    expires_at: Option<String>,
    authenticated_at: Option<String>,
    authenticator_assurance_level: Option<String>,
    identity: Option<WireIdentity>,
    tokenized: Option<String>,
}

#[derive(Deserialize)]
struct WireIdentity {
    id: Option<String>,
    schema_id: Option<String>,
    state: Option<String>,
    traits: Option<Value>,
    metadata_public: Option<Value>,
}

/// The `exp` claim of a JWT, read without checking the signature: it only bounds how long
/// the token is handed to the upstream from cache, the upstream verifies the token itself.
fn jwt_exp_ms(jwt: &str) -> Option<u64> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp > 0.0).then_some((exp * 1000.0) as u64)
}

/// Turns Kratos' response into an answer. Pure, so every status and body shape is tested
/// without a network.
pub fn decode_response(
    status: u16,
    content_type: Option<&str>,
    cache_for: Option<&str>,
    set_cookie: Vec<String>,
    body: &[u8],
    now_unix_ms: u64,
) -> Result<Answer, CallError> {
    match status {
        200 => {}
        401 => {
            return Ok(Answer::Unauthenticated {
                reason: "Kratos rejected the session",
            })
        }
        403 => {
            return Ok(Answer::AalRequired {
                redirect_browser_to: redirect_browser_to(body),
            })
        }
        429 => return Err(CallError::RateLimited),
        other => return Err(CallError::Status(other)),
    }

    if !content_type.is_some_and(is_json) {
        return Err(CallError::Malformed(
            "content type is not application/json".into(),
        ));
    }
    // A derived Deserialize also reads a struct from a JSON array, by position: a session is
    // an object, and anything else is not Kratos talking.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(CallError::Malformed(
            "the session is not a JSON object".into(),
        ));
    }
    let wire: WireSession = serde_json::from_slice(body).map_err(json_error)?;

    let id = wire.id.ok_or_else(|| missing("id"))?;
    let expires_at = wire.expires_at.ok_or_else(|| missing("expires_at"))?;
    let expires_at_ms = parse_unix_ms(&expires_at)
        .ok_or_else(|| CallError::Malformed("expires_at is not an RFC 3339 timestamp".into()))?;
    if wire.active != Some(true) {
        return Ok(Answer::Unauthenticated {
            reason: "session is not active",
        });
    }
    if expires_at_ms <= now_unix_ms {
        return Ok(Answer::Unauthenticated {
            reason: "session has expired",
        });
    }
    let identity = wire.identity.ok_or_else(|| missing("identity"))?;
    let user_id = identity.id.ok_or_else(|| missing("identity.id"))?;

    let traits = match &identity.traits {
        Some(Value::Object(map)) => {
            let mut traits: Vec<_> = map
                .iter()
                .map(|(name, value)| (header_safe(name), trait_text(value)))
                .collect();
            // serde_json's map order depends on its features; sort so lookups can bisect.
            traits.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            traits
        }
        _ => Vec::new(),
    };
    let traits_json = match &identity.traits {
        None | Some(Value::Null) => "{}".into(),
        Some(value) => header_safe(&value.to_string()),
    };
    let metadata_public_json = match &identity.metadata_public {
        None | Some(Value::Null) => "".into(),
        Some(value) => header_safe(&value.to_string()),
    };
    let text = |s: Option<String>| header_safe(s.as_deref().unwrap_or(""));

    Ok(Answer::Active {
        session: Session {
            id: header_safe(&id),
            user_id: header_safe(&user_id),
            aal_rank: wire
                .authenticator_assurance_level
                .as_deref()
                .and_then(crate::session::browser::aal_rank)
                .unwrap_or(0),
            aal: text(wire.authenticator_assurance_level),
            expires_at: header_safe(&expires_at),
            expires_at_ms,
            authenticated_at: text(wire.authenticated_at),
            schema_id: text(identity.schema_id),
            identity_state: text(identity.state),
            traits_json,
            metadata_public_json,
            traits: traits.into_boxed_slice(),
            tokenized_exp_ms: wire.tokenized.as_deref().and_then(jwt_exp_ms),
            tokenized: wire.tokenized.as_deref().map(header_safe),
        },
        cache_for_ms: cache_for.and_then(parse_cache_for),
        set_cookie,
    })
}

fn missing(field: &str) -> CallError {
    CallError::Malformed(format!("session has no {field}"))
}

fn parse_unix_ms(timestamp: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(timestamp, &Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    Some(u64::try_from(ms.max(0)).unwrap_or(u64::MAX))
}

/// Only plain digits: a header Kratos sends as a whole number of seconds.
fn parse_cache_for(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().map(|s| s.saturating_mul(1000))
}

/// The 403 body is only a hint; any body, or none, still means "AAL too low".
fn redirect_browser_to(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let url = value
        .pointer("/error/details/redirect_browser_to")
        .and_then(Value::as_str)
        .or_else(|| value.get("redirect_browser_to").and_then(Value::as_str))?;
    Some(header_safe(url).into())
}

fn trait_text(value: &Value) -> Box<str> {
    match value {
        Value::String(s) => header_safe(s),
        Value::Null => "".into(),
        other => header_safe(&other.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::check::text::is_control;

    /// The 200 body of Kratos' whoami contract, verbatim.
    pub(crate) const FULL_BODY: &str = r#"{
  "id": "8f660ce3-69ec-4aeb-9fda-f9230dc3243f",
  "active": true,
  "expires_at": "2026-07-30T09:30:36.741152Z",
  "authenticated_at": "2026-07-29T09:30:36.741152Z",
  "issued_at": "2026-07-29T09:29:58.112233Z",
  "authenticator_assurance_level": "aal2",
  "authentication_methods": [
    {"method": "password", "aal": "aal1", "completed_at": "2026-07-29T09:29:58.112233Z"},
    {"method": "totp", "aal": "aal2", "completed_at": "2026-07-29T09:30:36.741152Z"}
  ],
  "identity": {
    "id": "bf32596a-f853-47c4-91e6-a3f41cf4949d",
    "schema_id": "default",
    "schema_url": "https://auth.example.com/schemas/ZGVmYXVsdA",
    "state": "active",
    "traits": {"email": "jane@example.com", "name": {"first": "Jane", "last": "Doe"}},
    "verifiable_addresses": [{"id": "f5f4afde-697e-4e10-a6b6-f870dce927d6", "value": "jane@example.com",
      "verified": true, "via": "email", "status": "completed"}],
    "metadata_public": {"tenant": "acme"},
    "organization_id": null,
    "created_at": "2026-06-01T12:00:00Z",
    "updated_at": "2026-06-01T12:05:10Z"
  },
  "devices": [{"id": "592515ee-7b70-4e08-b4d7-fb0b1643cb48", "ip_address": "203.0.113.7",
    "user_agent": "Mozilla/5.0", "location": ""}]
}"#;

    /// 2026-07-30T09:30:36.741152Z
    const EXPIRES_MS: u64 = 1_785_403_836_741;
    /// One day earlier.
    const NOW: u64 = EXPIRES_MS - 86_400_000;

    const JSON: Option<&str> = Some("application/json");

    fn decode_200(body: &str) -> Result<Answer, CallError> {
        decode_response(200, JSON, None, Vec::new(), body.as_bytes(), NOW)
    }

    fn session_of(answer: Answer) -> Session {
        match answer {
            Answer::Active { session, .. } => session,
            other => panic!("not active: {other:?}"),
        }
    }

    fn minimal(extra_identity: &str) -> String {
        format!(
            r#"{{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z",
                "identity":{{"id":"u"{extra_identity}}}}}"#
        )
    }

    fn malformed(r: Result<Answer, CallError>) -> String {
        match r {
            Err(CallError::Malformed(why)) => why,
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn full_body() {
        let answer = decode_response(
            200,
            Some("application/json; charset=utf-8"),
            Some("120"),
            vec!["ory_kratos_session=new; Path=/; HttpOnly".into()],
            FULL_BODY.as_bytes(),
            NOW,
        )
        .unwrap();
        let Answer::Active {
            session,
            cache_for_ms,
            set_cookie,
        } = answer
        else {
            panic!("not active");
        };
        assert_eq!(cache_for_ms, Some(120_000));
        assert_eq!(set_cookie, ["ory_kratos_session=new; Path=/; HttpOnly"]);
        assert_eq!(&*session.id, "8f660ce3-69ec-4aeb-9fda-f9230dc3243f");
        assert_eq!(&*session.user_id, "bf32596a-f853-47c4-91e6-a3f41cf4949d");
        assert_eq!(&*session.aal, "aal2");
        assert_eq!(session.aal_rank, 2);
        assert_eq!(&*session.expires_at, "2026-07-30T09:30:36.741152Z");
        assert_eq!(session.expires_at_ms, EXPIRES_MS);
        assert_eq!(&*session.authenticated_at, "2026-07-29T09:30:36.741152Z");
        assert_eq!(&*session.schema_id, "default");
        assert_eq!(&*session.identity_state, "active");
        assert_eq!(
            &*session.traits_json,
            r#"{"email":"jane@example.com","name":{"first":"Jane","last":"Doe"}}"#
        );
        assert_eq!(&*session.metadata_public_json, r#"{"tenant":"acme"}"#);
        assert_eq!(session.trait_value("email"), Some("jane@example.com"));
        assert_eq!(
            session.trait_value("name"),
            Some(r#"{"first":"Jane","last":"Doe"}"#)
        );
        assert_eq!(session.trait_value("missing"), None);
        assert_eq!(session.traits.len(), 2);

        let (fixed, variable) = session.heap_bytes();
        assert_eq!(fixed, 36 + 36 + 4 + 27 + 27 + 7 + 6);
        assert!(variable > session.traits_json.len() + session.metadata_public_json.len());
    }

    #[test]
    fn minimal_body_defaults() {
        let s = session_of(decode_200(&minimal("")).unwrap());
        assert_eq!(&*s.id, "s");
        assert_eq!(&*s.user_id, "u");
        assert_eq!(&*s.aal, "");
        assert_eq!(&*s.authenticated_at, "");
        assert_eq!(&*s.schema_id, "");
        assert_eq!(&*s.identity_state, "");
        assert_eq!(&*s.traits_json, "{}");
        assert_eq!(&*s.metadata_public_json, "");
        assert!(s.traits.is_empty());
        assert_eq!(s.trait_value("email"), None);
    }

    #[test]
    fn null_metadata_and_traits() {
        let s =
            session_of(decode_200(&minimal(r#","metadata_public":null,"traits":null"#)).unwrap());
        assert_eq!(&*s.metadata_public_json, "");
        assert_eq!(&*s.traits_json, "{}");
        let s = session_of(decode_200(&minimal(r#","metadata_public":{}"#)).unwrap());
        assert_eq!(&*s.metadata_public_json, "{}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z",
            "tokenized":"eyJ.x.y","future":{"a":[1,2,{"b":null}]},
            "identity":{"id":"u","external_id":"e","credentials":{"password":{}}}}"#;
        assert_eq!(&*session_of(decode_200(body).unwrap()).user_id, "u");
    }

    #[test]
    fn trait_values_as_text() {
        let s = session_of(
            decode_200(&minimal(
                r#","traits":{"s":"x","i":42,"f":1.5,"neg":-3,"t":true,"b":false,"n":null,
                    "arr":["a",1],"obj":{"k":"v"},"empty":""}"#,
            ))
            .unwrap(),
        );
        assert_eq!(s.trait_value("s"), Some("x"));
        assert_eq!(s.trait_value("i"), Some("42"));
        assert_eq!(s.trait_value("f"), Some("1.5"));
        assert_eq!(s.trait_value("neg"), Some("-3"));
        assert_eq!(s.trait_value("t"), Some("true"));
        assert_eq!(s.trait_value("b"), Some("false"));
        assert_eq!(s.trait_value("n"), Some(""));
        assert_eq!(s.trait_value("arr"), Some(r#"["a",1]"#));
        assert_eq!(s.trait_value("obj"), Some(r#"{"k":"v"}"#));
        assert_eq!(s.trait_value("empty"), Some(""));
        for (i, (name, _)) in s.traits.iter().enumerate() {
            assert_eq!(s.trait_value(name), Some(&*s.traits[i].1));
        }
    }

    #[test]
    fn non_object_traits() {
        let s = session_of(decode_200(&minimal(r#","traits":"plain""#)).unwrap());
        assert_eq!(&*s.traits_json, r#""plain""#);
        assert!(s.traits.is_empty());
    }

    #[test]
    fn header_unsafe_values_are_encoded() {
        let s = session_of(
            decode_200(&minimal(
                r#","schema_id":"a\r\nX-Evil: 1","traits":{"name":"Jane\r\nSet-Cookie: x=y",
                    "tab":"a\tb","del":"a\u007fb","nul":"a\u0000b","pct":"100%","uni":"Zoë ✓",
                    "obj":{"k":"a\u007f\n"},"bad\nname":"v"}"#,
            ))
            .unwrap(),
        );
        assert_eq!(&*s.schema_id, "a%0D%0AX-Evil: 1");
        assert_eq!(s.trait_value("name"), Some("Jane%0D%0ASet-Cookie: x=y"));
        assert_eq!(s.trait_value("tab"), Some("a%09b"));
        assert_eq!(s.trait_value("del"), Some("a%7Fb"));
        assert_eq!(s.trait_value("nul"), Some("a%00b"));
        assert_eq!(s.trait_value("pct"), Some("100%"));
        assert_eq!(s.trait_value("uni"), Some("Zoë ✓"));
        // serde_json escapes \n itself but leaves DEL raw.
        assert_eq!(s.trait_value("obj"), Some(r#"{"k":"a%7F\n"}"#));
        assert_eq!(s.trait_value("bad%0Aname"), Some("v"));
        for text in [&*s.traits_json, &*s.schema_id] {
            assert!(!text.bytes().any(is_control), "{text:?}");
        }
        for (n, v) in s.traits.iter() {
            assert!(!n.bytes().chain(v.bytes()).any(is_control), "{n:?}={v:?}");
        }
    }

    #[test]
    fn expired_and_inactive() {
        let body = FULL_BODY.replace("\"active\": true", "\"active\": false");
        assert_eq!(
            decode_200(&body).unwrap(),
            Answer::Unauthenticated {
                reason: "session is not active"
            }
        );
        let body = FULL_BODY.replace("\"active\": true,", "");
        assert_eq!(
            decode_200(&body).unwrap(),
            Answer::Unauthenticated {
                reason: "session is not active"
            }
        );
        let body = FULL_BODY.replace("\"active\": true", "\"active\": null");
        assert!(matches!(
            decode_200(&body).unwrap(),
            Answer::Unauthenticated { .. }
        ));
        let expired = Answer::Unauthenticated {
            reason: "session has expired",
        };
        for now in [EXPIRES_MS, EXPIRES_MS + 1, u64::MAX] {
            let r = decode_response(200, JSON, None, vec![], FULL_BODY.as_bytes(), now);
            assert_eq!(r.unwrap(), expired);
        }
        let r = decode_response(
            200,
            JSON,
            None,
            vec![],
            FULL_BODY.as_bytes(),
            EXPIRES_MS - 1,
        );
        assert!(matches!(r.unwrap(), Answer::Active { .. }));
    }

    #[test]
    fn missing_required_fields() {
        let no_identity = r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z"}"#;
        assert_eq!(
            malformed(decode_200(no_identity)),
            "session has no identity"
        );
        let null_identity =
            r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z","identity":null}"#;
        assert_eq!(
            malformed(decode_200(null_identity)),
            "session has no identity"
        );
        let no_user = r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z",
            "identity":{"traits":{}}}"#;
        assert_eq!(malformed(decode_200(no_user)), "session has no identity.id");
        let no_id = r#"{"active":true,"expires_at":"2026-07-30T09:30:36Z","identity":{"id":"u"}}"#;
        assert_eq!(malformed(decode_200(no_id)), "session has no id");
        let no_expiry = r#"{"id":"s","active":true,"identity":{"id":"u"}}"#;
        assert_eq!(
            malformed(decode_200(no_expiry)),
            "session has no expires_at"
        );
    }

    #[test]
    fn wrong_types_do_not_echo_values() {
        let body = r#"{"id":"s","active":"sekrit-looking","expires_at":"2026-07-30T09:30:36Z",
            "identity":{"id":"u"}}"#;
        let why = malformed(decode_200(body));
        assert!(why.starts_with("unexpected value at line"), "{why}");
        assert!(!why.contains("sekrit"), "{why}");
        let why = malformed(decode_200(r#"{"id":12}"#));
        assert!(!why.contains("12"), "{why}");
    }

    #[test]
    fn timestamps() {
        let cases = [
            ("2026-07-30T09:30:36Z", Some(1_785_403_836_000)),
            ("2026-07-30T09:30:36.741152Z", Some(EXPIRES_MS)),
            ("2026-07-30T09:30:36.741152123Z", Some(EXPIRES_MS)),
            ("2026-07-30T09:30:36.7Z", Some(1_785_403_836_700)),
            ("2026-07-30T11:30:36.741152+02:00", Some(EXPIRES_MS)),
            ("2026-07-30T04:30:36.741152-05:00", Some(EXPIRES_MS)),
            ("1960-01-01T00:00:00Z", Some(0)),
            // RFC 3339 (section 5.6, note) allows a space for the "T".
            ("2026-07-30 09:30:36Z", Some(1_785_403_836_000)),
            ("2026-07-30t09:30:36z", Some(1_785_403_836_000)),
            ("2026-07-30T09:30:36.7411521239Z", Some(EXPIRES_MS)),
            ("2026-07-30T09:30:36", None),
            ("2026-13-30T09:30:36Z", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_unix_ms(text), want, "{text}");
        }
        let body = FULL_BODY.replace("2026-07-30T09:30:36.741152Z", "tomorrow");
        assert_eq!(
            malformed(decode_200(&body)),
            "expires_at is not an RFC 3339 timestamp"
        );
    }

    #[test]
    fn content_type_must_be_json() {
        for ct in [
            Some("application/json"),
            Some("Application/JSON"),
            Some("application/json;charset=utf-8"),
            Some(" application/json ; charset=UTF-8"),
        ] {
            let r = decode_response(200, ct, None, vec![], FULL_BODY.as_bytes(), NOW);
            assert!(matches!(r, Ok(Answer::Active { .. })), "{ct:?}");
        }
        for ct in [
            None,
            Some("text/html"),
            Some("text/plain; charset=utf-8"),
            Some("application/jsonp"),
            Some("application/problem+json"),
            Some(""),
        ] {
            let r = decode_response(200, ct, None, vec![], FULL_BODY.as_bytes(), NOW);
            assert_eq!(
                malformed(r),
                "content type is not application/json",
                "{ct:?}"
            );
        }
    }

    #[test]
    fn a_session_must_be_an_object() {
        // Positional: id, active, expires_at, authenticated_at, aal, identity.
        let array = r#"["s", true, "2999-01-01T00:00:00Z", null, "aal1", ["u"]]"#;
        assert_eq!(
            malformed(decode_200(array)),
            "the session is not a JSON object"
        );
        assert_eq!(
            malformed(decode_200(" []")),
            "the session is not a JSON object"
        );
        assert!(decode_200(&format!("\n {}", minimal(""))).is_ok());
    }

    #[test]
    fn truncated_and_invalid_json() {
        let truncated = &FULL_BODY[..FULL_BODY.len() / 2];
        let why = malformed(decode_200(truncated));
        assert!(why.starts_with("unexpected end of input"), "{why}");
        assert!(malformed(decode_200("")).starts_with("unexpected end of input"));
        assert!(malformed(decode_200("<html>")).starts_with("syntax error"));
        assert!(malformed(decode_200("null")).starts_with("unexpected value"));
        let why = malformed(decode_200(&format!("{FULL_BODY} trailing")));
        assert!(why.starts_with("syntax error"), "{why}");
    }

    #[test]
    fn cache_for_header() {
        let cases = [
            (Some("0"), Some(0)),
            (Some("60"), Some(60_000)),
            (Some(" 60 "), Some(60_000)),
            (Some("18446744073709551615"), Some(u64::MAX)),
            (Some("18446744073709551616"), None),
            (Some("-1"), None),
            (Some("+5"), None),
            (Some("1.5"), None),
            (Some("60s"), None),
            (Some(""), None),
            (None, None),
        ];
        for (header, want) in cases {
            let r = decode_response(200, JSON, header, vec![], FULL_BODY.as_bytes(), NOW);
            let Ok(Answer::Active { cache_for_ms, .. }) = r else {
                panic!("{r:?}");
            };
            assert_eq!(cache_for_ms, want, "{header:?}");
        }
    }

    #[test]
    fn status_401() {
        let body = br#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#;
        let want = Answer::Unauthenticated {
            reason: "Kratos rejected the session",
        };
        assert_eq!(
            decode_response(401, JSON, Some("60"), vec!["x=y".into()], body, NOW).unwrap(),
            want
        );
        assert_eq!(
            decode_response(401, Some("text/html"), None, vec![], b"<h1>no</h1>", NOW).unwrap(),
            want
        );
    }

    #[test]
    fn status_403() {
        let body = br#"{"error":{"id":"session_aal2_required","code":403,"status":"Forbidden","reason":"...","details":{"redirect_browser_to":"https://auth.example.com/self-service/login/browser?aal=aal2"},"message":"Session does not fulfill the requested Authenticator Assurance Level"},"redirect_browser_to":"https://auth.example.com/self-service/login/browser?aal=aal2&top=1"}"#;
        let aal = |body: &[u8]| match decode_response(403, JSON, None, vec![], body, NOW) {
            Ok(Answer::AalRequired {
                redirect_browser_to,
            }) => redirect_browser_to,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            aal(body).as_deref(),
            Some("https://auth.example.com/self-service/login/browser?aal=aal2")
        );
        assert_eq!(
            aal(br#"{"redirect_browser_to":"https://a/x"}"#).as_deref(),
            Some("https://a/x")
        );
        assert_eq!(
            aal(br#"{"error":{"details":{}},"redirect_browser_to":"https://a/y"}"#).as_deref(),
            Some("https://a/y")
        );
        assert_eq!(
            aal(br#"{"redirect_browser_to":"https://a/\r\nx"}"#).as_deref(),
            Some("https://a/%0D%0Ax")
        );
        assert_eq!(aal(br#"{"redirect_browser_to":42}"#), None);
        assert_eq!(aal(b""), None);
        assert_eq!(aal(b"Forbidden"), None);
        assert_eq!(aal(br#"{"error":{"code":403}}"#), None);
    }

    #[test]
    fn other_statuses() {
        let r = decode_response(429, JSON, None, vec![], br#"{"error":{}}"#, NOW);
        assert_eq!(r.unwrap_err(), CallError::RateLimited);
        for status in [500, 502, 503, 504, 400, 404, 302, 204, 201] {
            let r = decode_response(status, JSON, None, vec![], b"<html>bad gateway</html>", NOW);
            assert_eq!(r.unwrap_err(), CallError::Status(status));
        }
    }

    #[test]
    fn answer_debug_hides_set_cookie() {
        let r = decode_response(
            200,
            JSON,
            None,
            vec!["ory_kratos_session=s3cr3t".into()],
            FULL_BODY.as_bytes(),
            NOW,
        );
        let text = format!("{:?}", r.unwrap());
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("set_cookie: 1"), "{text}");
    }

    #[test]
    fn the_jwt_and_its_expiry_are_kept() {
        use base64::Engine;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"x","exp":4102444800}"#);
        let jwt = format!("eyJhbGciOiJFUzI1NiJ9.{claims}.c2ln");
        let body = FULL_BODY.replacen("{", &format!("{{\"tokenized\":\"{jwt}\","), 1);
        let Ok(Answer::Active { session, .. }) = decode_response(
            200,
            Some("application/json"),
            None,
            vec![],
            body.as_bytes(),
            NOW,
        ) else {
            panic!("decodes");
        };
        assert_eq!(session.tokenized.as_deref(), Some(jwt.as_str()));
        assert_eq!(session.tokenized_exp_ms, Some(4_102_444_800_000));
    }

    #[test]
    fn a_jwt_without_a_readable_exp_has_no_expiry() {
        assert_eq!(jwt_exp_ms("not-a-jwt"), None);
        assert_eq!(jwt_exp_ms("a.!!!.c"), None);
        assert_eq!(jwt_exp_ms("a.e30.c"), None); // {}
    }
}
