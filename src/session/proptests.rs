//! Property tests of the session check's parts that handle untrusted bytes: the credential a
//! client sends and the answer Kratos sends. Each property
//! runs on 512 generated inputs (`PROPTEST_CASES=N` for more):
//!
//!     cargo test --release --lib proptests

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::credential::{
    choose_credential, find_credential, CookieMatch, Credential, CredentialError, CredentialKind,
    MAX_CREDENTIAL_LEN,
};
use super::model::{decode_response, Answer};
use crate::check::proptest_config as config;

const SESSION_COOKIE: &[u8] = b"ory_kratos_session";

/// RFC 6265 cookie-octet.
fn cookie_octets() -> Vec<u8> {
    (0x21u8..=0x7e)
        .filter(|b| !matches!(b, b'"' | b',' | b';' | b'\\'))
        .collect()
}

/// RFC 7230 tchar.
fn token_chars() -> Vec<u8> {
    (0x21u8..=0x7e)
        .filter(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        .collect()
}

/// Lengths from 1 to the limit, with the long end well represented.
fn credential_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1usize..=64,
        1 => (MAX_CREDENTIAL_LEN - 64)..=MAX_CREDENTIAL_LEN,
    ]
}

fn cookie_value() -> impl Strategy<Value = Vec<u8>> {
    credential_len().prop_flat_map(|n| vec(select(cookie_octets()), n))
}

/// X-Session-Token and bearer tokens: visible ASCII.
fn token_value() -> impl Strategy<Value = Vec<u8>> {
    credential_len().prop_flat_map(|n| vec(0x21u8..=0x7e, n))
}

/// Bytes shaped like header values, built from fragments that matter to the parser.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        vec(any::<u8>(), 0..12),
        vec(select(cookie_octets()), 0..12),
        select(vec![
            &b"ory_kratos_session"[..],
            b"ory_session_",
            b"=",
            b";",
            b"; ",
            b" ",
            b"\t",
            b"\"",
            b"Bearer ",
            b"bearer",
            b",",
            b"\\",
            b"\x00",
            b"\x7f",
            b"\xff",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    vec(fragment, 0..12).prop_map(|parts| parts.concat())
}

fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(vec![
            &b"Cookie"[..],
            b"cookie",
            b"COOKIE",
            b"X-Session-Token",
            b"x-session-token",
            b"Authorization",
            b"authorization",
            b"Host",
        ])
        .prop_map(<[u8]>::to_vec),
        vec(any::<u8>(), 0..20),
    ]
}

fn cookie_match() -> impl Strategy<Value = CookieMatch> {
    prop_oneof![
        Just(CookieMatch::parse(SESSION_COOKIE).unwrap()),
        Just(CookieMatch::parse(b"ory_session_*").unwrap()),
        vec(any::<u8>(), 0..12).prop_map(|name| {
            CookieMatch::parse(&name)
                .unwrap_or_else(|_| CookieMatch::parse(SESSION_COOKIE).unwrap())
        }),
    ]
}

/// One `;`-separated part of a Cookie header that is not the session cookie.
fn other_cookie() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // a well-formed pair
        (
            vec(select(token_chars()), 1..16),
            vec(select(cookie_octets()), 0..16)
        )
            .prop_map(|(n, v)| [&n[..], b"=", &v[..]].concat()),
        // anything without a separator
        vec(any::<u8>().prop_filter("no ;", |b| *b != b';'), 0..24),
        // near misses of the session cookie's name
        (
            select(vec![
                &b"ory_kratos_session_"[..],
                b"Ory_kratos_session",
                b"ory_kratos_sessio",
                b"xory_kratos_session",
                b"ory_kratos_session\"",
            ]),
            vec(select(cookie_octets()), 0..8)
        )
            .prop_map(|(n, v)| [n, b"=", &v[..]].concat()),
        // the session cookie without a value, which does not count
        select(vec![
            &b"ory_kratos_session="[..],
            b" ory_kratos_session = ",
            b"ory_kratos_session=\"\""
        ])
        .prop_map(<[u8]>::to_vec),
    ]
    .prop_filter("not the session cookie with a value", |part| {
        match part.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let name = trim(&part[..eq]);
                let value = trim(&part[eq + 1..]);
                name != SESSION_COOKIE || value.is_empty() || value == b"\"\""
            }
            None => true,
        }
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether `inner` lies inside one of `outers` (the credential is borrowed, never copied).
fn borrowed_from(inner: &[u8], outers: &[&[u8]]) -> bool {
    let start = inner.as_ptr() as usize;
    outers.iter().any(|outer| {
        let o = outer.as_ptr() as usize;
        start >= o && start + inner.len() <= o + outer.len()
    })
}

fn find<'a>(
    headers: &'a [(Vec<u8>, Vec<u8>)],
    cookie: &CookieMatch,
) -> Result<Option<Credential<'a>>, CredentialError> {
    find_credential(
        headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        cookie,
    )
}

proptest! {
    #![proptest_config(config())]

    /// Any headers at all: no panic, and whatever is returned is a valid credential taken
    /// from one of the header values.
    #[test]
    fn find_credential_never_panics(
        headers in vec((header_name(), header_value()), 0..12),
        cookie in cookie_match(),
    ) {
        let values: Vec<&[u8]> = headers.iter().map(|(_, v)| v.as_slice()).collect();
        match find(&headers, &cookie) {
            Ok(Some(c)) => {
                prop_assert!(!c.value.is_empty());
                prop_assert!(c.value.len() <= MAX_CREDENTIAL_LEN);
                prop_assert!(borrowed_from(c.value, &values), "the value comes from a header");
                match c.kind {
                    CredentialKind::Cookie => {
                        prop_assert!(c.value.iter().all(|b| cookie_octets().contains(b)));
                        prop_assert!(cookie.matches(c.cookie_name));
                        prop_assert!(borrowed_from(c.cookie_name, &values));
                    }
                    CredentialKind::SessionToken | CredentialKind::Bearer => {
                        prop_assert!(c.value.iter().all(|b| (0x21..=0x7e).contains(b)));
                        prop_assert!(c.cookie_name.is_empty());
                    }
                }
            }
            Ok(None) | Err(CredentialError::InvalidBytes(_)) => {}
            Err(CredentialError::TooLong(_)) => {
                prop_assert!(values.iter().any(|v| v.len() > MAX_CREDENTIAL_LEN));
            }
        }
    }

    /// A valid session cookie among arbitrary other cookies and headers is found exactly.
    #[test]
    fn session_cookie_found_among_others(
        before in vec(other_cookie(), 0..20),
        after in vec(other_cookie(), 0..20),
        value in cookie_value(),
        quoted in any::<bool>(),
        spaces in select(vec!["", " ", "  ", "\t"]),
        bearer in proptest::option::of(token_value()),
        others in vec((vec(select(token_chars()), 1..12), header_value()), 0..4),
    ) {
        let pair = [
            spaces.as_bytes(),
            SESSION_COOKIE,
            b"=",
            if quoted { b"\"" } else { b"" },
            &value,
            if quoted { b"\"" } else { b"" },
            spaces.as_bytes(),
        ]
        .concat();
        let parts: Vec<&[u8]> = before
            .iter()
            .map(Vec::as_slice)
            .chain([pair.as_slice()])
            .chain(after.iter().map(Vec::as_slice))
            .collect();
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = others
            .into_iter()
            .filter(|(n, _)| {
                !n.eq_ignore_ascii_case(b"x-session-token") && !n.eq_ignore_ascii_case(b"cookie")
            })
            .collect();
        if let Some(token) = bearer {
            headers.push((b"Authorization".to_vec(), [&b"Bearer "[..], &token].concat()));
        }
        headers.push((b"Cookie".to_vec(), parts.join(&b';')));
        let found = find(&headers, &CookieMatch::parse(SESSION_COOKIE).unwrap());
        let c = found.expect("valid").expect("found");
        prop_assert_eq!(c.kind, CredentialKind::Cookie);
        prop_assert_eq!(c.cookie_name, SESSION_COOKIE);
        prop_assert_eq!(c.value, &value[..]);
    }

    /// With a prefix, the first matching cookie that has a value is the one.
    #[test]
    fn prefixed_session_cookie_found(
        slug in vec(select(token_chars()), 0..16),
        value in cookie_value(),
        before in vec(other_cookie(), 0..10),
    ) {
        let name = [&b"ory_session_"[..], &slug].concat();
        let header = [before.join(&b';'), [&b";"[..], &name, b"=", &value].concat()].concat();
        let headers = vec![(b"cookie".to_vec(), header)];
        let c = find(&headers, &CookieMatch::parse(b"ory_session_*").unwrap())
            .expect("valid")
            .expect("found");
        prop_assert_eq!(c.cookie_name, &name[..]);
        prop_assert_eq!(c.value, &value[..]);
    }

    /// The one-pass Cookie scan finds what splitting the header on ';' and each pair on its
    /// first '=' finds, for any bytes at all.
    #[test]
    fn cookie_scan_matches_split_reference(
        parts in vec(prop_oneof![
            other_cookie(),
            vec(select(b"=; \t\"ab".to_vec()), 0..8),
            cookie_value().prop_map(|v| [SESSION_COOKIE, b"=", &v].concat()),
            cookie_value().prop_map(|v| [&b"ory_session_x="[..], &v].concat()),
        ], 0..8),
        cookie in cookie_match(),
    ) {
        let header = parts.join(&b';');
        let reference = header.split(|&b| b == b';').find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let name = trim(&pair[..eq]);
            let value = match trim(&pair[eq + 1..]) {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            };
            (cookie.matches(name) && !value.is_empty()).then_some((name, value))
        });
        let headers = [(&b"Cookie"[..], header.as_slice())];
        let found = choose_credential(headers, &cookie)
            .ok()
            .flatten()
            .map(|c| (c.cookie_name, c.value));
        let reference = reference.filter(|(_, v)| v.len() <= MAX_CREDENTIAL_LEN);
        prop_assert_eq!(found, reference);
    }

    /// Any valid credential comes back unchanged, whichever way it is sent; one byte more
    /// than the limit is refused.
    #[test]
    fn valid_credentials_round_trip(token in token_value(), cookie in cookie_value()) {
        let cases = [
            (b"X-Session-Token".to_vec(), token.clone(), CredentialKind::SessionToken, token.clone()),
            (b"Authorization".to_vec(), [&b"Bearer "[..], &token].concat(), CredentialKind::Bearer, token.clone()),
            (b"Cookie".to_vec(), [SESSION_COOKIE, b"=", &cookie].concat(), CredentialKind::Cookie, cookie.clone()),
        ];
        for (name, header, kind, want) in cases {
            let headers = vec![(name.clone(), header.clone())];
            let c = find(&headers, &CookieMatch::parse(SESSION_COOKIE).unwrap())
                .expect("valid")
                .expect("found");
            prop_assert_eq!(c.kind, kind);
            prop_assert_eq!(c.value, &want[..]);

            let longer = vec![(name, [&header[..], &want[..1]].concat())];
            if want.len() == MAX_CREDENTIAL_LEN {
                prop_assert_eq!(
                    find(&longer, &CookieMatch::parse(SESSION_COOKIE).unwrap()),
                    Err(CredentialError::TooLong(kind))
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kratos answers

/// A fixed "now", so that expiry is decided by the generated values alone.
const NOW_MS: u64 = 1_785_000_000_000;

fn json_leaf(floats: bool) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(move |f| match serde_json::Number::from_f64(f) {
            Some(n) if floats => Value::Number(n),
            _ => Value::Null,
        }),
        any::<String>().prop_map(Value::String),
    ]
}

/// Any JSON value.
fn json_value() -> impl Strategy<Value = Value> {
    json_values(true)
}

/// Any JSON value without fractional numbers: serde_json (without its `float_roundtrip`
/// feature) may read a float back one ULP off, so these are the values that survive a
/// decode and re-encode exactly.
fn exact_json_value() -> impl Strategy<Value = Value> {
    json_values(false)
}

fn json_values(floats: bool) -> impl Strategy<Value = Value> {
    json_leaf(floats).prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// A field of a session body: the right thing, something else, or absent (None).
fn field(right: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => right.prop_map(Some),
        1 => json_value().prop_map(Some),
        1 => Just(None),
    ]
}

fn timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..4_102_444_800_000).prop_map(|ms| Value::String(rfc3339(ms))),
        any::<String>().prop_map(Value::String),
    ]
}

/// Session bodies with every field sometimes wrong or missing.
fn session_like() -> impl Strategy<Value = Value> {
    let identity = (
        field(any::<String>().prop_map(Value::String)),
        field(any::<String>().prop_map(Value::String)),
        field(select(vec!["active", "inactive"]).prop_map(|s| json!(s))),
        field(json_value()),
        field(json_value()),
    )
        .prop_map(|(id, schema_id, state, traits, metadata)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("id", id),
                ("schema_id", schema_id),
                ("state", state),
                ("traits", traits),
                ("metadata_public", metadata),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        });
    (
        field(any::<String>().prop_map(Value::String)),
        field(any::<bool>().prop_map(Value::Bool)),
        field(timestamp()),
        field(timestamp()),
        field(select(vec!["aal1", "aal2", "aal3", ""]).prop_map(|s| json!(s))),
        field(identity),
    )
        .prop_map(
            |(id, active, expires_at, authenticated_at, aal, identity)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [
                    ("id", id),
                    ("active", active),
                    ("expires_at", expires_at),
                    ("authenticated_at", authenticated_at),
                    ("authenticator_assurance_level", aal),
                    ("identity", identity),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                Value::Object(m)
            },
        )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        session_like().prop_map(|v| v.to_string().into_bytes()),
        // a session body cut short or with bytes flipped
        (session_like(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, byte)| {
            let mut b = v.to_string().into_bytes();
            let i = at.index(b.len());
            if byte % 2 == 0 {
                b.truncate(i);
            } else {
                b[i] = byte;
            }
            b
        }),
    ]
}

fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// What the module promises for every value that may end up in a header.
fn percent_encode_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && ((c as u8) < 0x20 || c as u8 == 0x7f) {
                format!("%{:02X}", c as u8)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => select(vec![401u16, 403, 429, 500, 502, 503, 504, 302, 404, 0, 999]),
        1 => any::<u16>(),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(Some("application/json".to_string())),
        1 => select(vec![
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/html",
            "application/jsonx",
            "",
        ])
        .prop_map(|s| Some(s.to_string())),
        1 => any::<Option<String>>(),
    ]
}

/// A trait value and what `$ory_trait_<name>` must say for it.
fn trait_value() -> impl Strategy<Value = (Value, String)> {
    let text = any::<String>().prop_filter("no control byte", |s| !has_control(s));
    prop_oneof![
        text.clone().prop_map(|s| (Value::String(s.clone()), s)),
        any::<i64>().prop_map(|n| (json!(n), n.to_string())),
        any::<bool>().prop_map(|b| (json!(b), b.to_string())),
        Just((Value::Null, String::new())),
        vec(text, 0..4).prop_map(|v| {
            let value = json!(v);
            let s = value.to_string();
            (value, s)
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any status, content type, header and body: no panic; and an accepted session is
    /// unexpired and holds no byte that could break a header.
    #[test]
    fn decode_response_never_panics(
        status in status(),
        content_type in content_type(),
        cache_for in any::<Option<String>>(),
        set_cookie in vec(any::<String>(), 0..3),
        body in body(),
        now in prop_oneof![Just(NOW_MS), any::<u64>()],
    ) {
        let answer = decode_response(status, content_type.as_deref(), cache_for.as_deref(), set_cookie, &body, now);
        if let Ok(Answer::Active { session, .. }) = answer {
            prop_assert_eq!(status, 200);
            prop_assert!(session.expires_at_ms > now);
            for s in [
                &session.id, &session.user_id, &session.aal, &session.expires_at,
                &session.authenticated_at, &session.schema_id, &session.identity_state,
                &session.traits_json, &session.metadata_public_json,
            ] {
                prop_assert!(!has_control(s), "control byte in {:?}", s);
            }
            for (name, value) in session.traits.iter() {
                prop_assert!(!has_control(name) && !has_control(value));
            }
        }
    }

    /// A generated valid session decodes with every field intact; values that hold control
    /// bytes come out percent-encoded, and nothing else changes.
    #[test]
    fn valid_session_decodes_intact(
        id in any::<String>(),
        user_id in any::<String>(),
        schema_id in any::<String>(),
        authenticated_ms in 0u64..NOW_MS,
        expires_in_ms in 1u64..(10 * 365 * 86_400_000),
        aal in select(vec!["aal1", "aal2", "aal3"]),
        traits in proptest::collection::btree_map(
            any::<String>().prop_filter("no control byte", |s| !has_control(s)), trait_value(), 0..8),
        metadata in exact_json_value(),
        cache_for in proptest::option::of(any::<u64>()),
        set_cookie in vec("[a-z_]{1,20}=[a-zA-Z0-9]{1,40}", 0..3),
    ) {
        let expires_ms = NOW_MS + expires_in_ms;
        let traits_json: BTreeMap<&String, &Value> = traits.iter().map(|(k, (v, _))| (k, v)).collect();
        let body = json!({
            "id": id,
            "active": true,
            "expires_at": rfc3339(expires_ms),
            "authenticated_at": rfc3339(authenticated_ms),
            "authenticator_assurance_level": aal,
            "issued_at": rfc3339(authenticated_ms),
            "identity": {
                "id": user_id,
                "schema_id": schema_id,
                "state": "active",
                "traits": traits_json,
                "metadata_public": metadata,
                "verifiable_addresses": [],
            },
            "devices": [],
        });
        let cache_for_text = cache_for.map(|n| n.to_string());
        let answer = decode_response(
            200, Some("application/json; charset=utf-8"), cache_for_text.as_deref(),
            set_cookie.clone(), body.to_string().as_bytes(), NOW_MS,
        );
        let Ok(Answer::Active { session, cache_for_ms, set_cookie: cookies }) = answer else {
            return Err(TestCaseError::fail(format!("not accepted: {answer:?}")));
        };
        prop_assert_eq!(&*session.id, percent_encode_controls(&id));
        prop_assert_eq!(&*session.user_id, percent_encode_controls(&user_id));
        prop_assert_eq!(&*session.schema_id, percent_encode_controls(&schema_id));
        prop_assert_eq!(&*session.aal, aal);
        prop_assert_eq!(&*session.identity_state, "active");
        prop_assert_eq!(&*session.expires_at, rfc3339(expires_ms));
        prop_assert_eq!(session.expires_at_ms, expires_ms);
        prop_assert_eq!(&*session.authenticated_at, rfc3339(authenticated_ms));
        let decoded: Value = serde_json::from_str(&session.traits_json).expect("traits JSON");
        prop_assert_eq!(decoded, json!(traits_json));
        if metadata.is_null() {
            prop_assert_eq!(&*session.metadata_public_json, "");
        } else if !has_control(&metadata.to_string()) {
            let decoded: Value = serde_json::from_str(&session.metadata_public_json).expect("metadata JSON");
            prop_assert_eq!(decoded, metadata);
        }
        prop_assert_eq!(session.traits.len(), traits.len());
        for (name, (_, text)) in &traits {
            prop_assert_eq!(session.trait_value(name), Some(text.as_str()), "trait {:?}", name);
        }
        prop_assert_eq!(cache_for_ms, cache_for.map(|s| s.saturating_mul(1000)));
        prop_assert_eq!(cookies, set_cookie);
    }
}

// ---------------------------------------------------------------------------------------------
