//! Property tests of everything in `oauth2` that reads untrusted bytes: the bearer token a
//! client sends, the JWKS and introspection answers an upstream sends, and the JWT verifier.
//! Nothing may panic, and nothing may be accepted that should not be. 512 cases per
//! property, or `PROPTEST_CASES`:
//!
//!     cargo test --release --lib oauth2::proptests

use std::time::{Duration, Instant};

use base64::Engine;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use super::claims::{Claims, Source};
use super::fixtures;
use super::introspection::{decode_answer, Introspection};
use super::jwks::{KeySet, MAX_KEYS};
use super::jwks_cache::{JwksCache, KeysFor, KidDecision, Policy};
use super::jwt::{verify, JwtError};
use super::token::{bearer_of, BearerToken, TokenShape, MAX_TOKEN_LEN};
use crate::check::text::header_safe;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn keys() -> KeySet {
    KeySet::parse(fixtures::JWKS.as_bytes()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The tokens that verify, one per algorithm.
const VALID: [&str; 11] = [
    "RS256-4096",
    "RS256-2048",
    "RS384-2048",
    "RS512-2048",
    "PS256-2048",
    "PS384-2048",
    "PS512-2048",
    "PS256-3072",
    "ES256",
    "ES384",
    "EdDSA",
];

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Bytes shaped like tokens: base64url runs, dots, and now and then anything.
fn token_like() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        6 => vec(select(B64URL.to_vec()), 0..40),
        1 => vec(any::<u8>(), 0..8),
        1 => select(vec![b"eyJhbGciOiJSUzI1NiJ9".to_vec(), b"ory_at_".to_vec(), b"=".to_vec()]),
    ];
    vec(prop_oneof![part, Just(b".".to_vec())], 0..8).prop_map(|v| v.concat())
}

/// JSON values of every type, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        select(vec![
            "access_token",
            "refresh_token",
            "Bearer",
            "a b",
            "RS256",
            "sig"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((field_name(), inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "active",
            "scope",
            "scp",
            "exp",
            "iat",
            "nbf",
            "sub",
            "client_id",
            "aud",
            "iss",
            "token_use",
            "token_type",
            "ext",
            "kty",
            "kid",
            "alg",
            "use",
            "n",
            "e",
            "x",
            "y",
            "crv",
            "d",
            "keys",
            "key_ops",
        ])
        .prop_map(String::from),
        "[a-z]{1,6}",
    ]
}

/// Objects that look like introspection answers, with every field possibly of a wrong type.
fn answer_object() -> impl Strategy<Value = Map<String, Value>> {
    vec((field_name(), json_value()), 0..12).prop_map(|fields| fields.into_iter().collect())
}

proptest! {
    #![proptest_config(config())]

    /// Whatever a client sends: a token comes out only when it is a b64token within the
    /// limit, and its shape says JWT only for three base64url parts.
    #[test]
    fn any_authorization_header(value in prop_oneof![
        vec(any::<u8>(), 0..64),
        token_like().prop_map(|t| [b"Bearer ".to_vec(), t].concat()),
    ]) {
        if let Some(Ok(token)) = bearer_of(&value).map(BearerToken::parse) {
            let bytes = token.as_bytes();
            prop_assert!(!bytes.is_empty() && bytes.len() <= MAX_TOKEN_LEN);
            let body = bytes.iter().rev().skip_while(|&&b| b == b'=').count();
            prop_assert!(body > 0);
            prop_assert!(bytes[..body].iter().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b)));
            prop_assert!(value[..7].eq_ignore_ascii_case(b"bearer "));
            if token.shape() == TokenShape::Jwt {
                prop_assert_eq!(bytes.iter().filter(|&&b| b == b'.').count(), 2);
            }
        }
    }

    /// A claim's text is the JSON text of its value (a string's own text, null's ""),
    /// header-safe: however it is written.
    #[test]
    fn claim_texts_are_the_json_text(value in prop_oneof![
        json_value(),
        vec(".{0,8}", 0..4).prop_map(|items| json!(items)),
    ]) {
        let claims = Claims::from_object(
            json!({"client_id": "c", "v": value}).as_object().unwrap(),
            Source::Jwt,
        );
        let text = match &value {
            Value::String(s) => header_safe(s),
            Value::Null => "".into(),
            other => header_safe(&other.to_string()),
        };
        // "v" is no claim with a type of its own: any value reads.
        let claims = claims.unwrap();
        prop_assert_eq!(claims.text("v"), Some(&*text));
    }

    /// Random tokens never verify, and verification never panics.
    #[test]
    fn random_tokens_never_verify(token in token_like()) {
        let keys = keys();
        if let Ok(token) = std::str::from_utf8(&token) {
            prop_assert!(verify(token, &keys).is_err());
        }
        if let Ok(t) = BearerToken::parse(&token) {
            prop_assert!(verify(t.as_str(), &keys).is_err());
        }
    }

    /// A real header and payload with a random signature: never accepted.
    #[test]
    fn random_signatures_never_verify(
        name in select(VALID.to_vec()),
        signature in vec(any::<u8>(), 0..600),
    ) {
        let token = fixtures::token(name);
        let (input, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{input}.{}", b64(&signature));
        prop_assert_eq!(verify(&forged, &keys()).unwrap_err(), JwtError::Signature);
    }

    /// Changing any one character of a valid token, header, payload or signature, makes it
    /// fail.
    #[test]
    fn any_flipped_character_fails(
        name in select(VALID.to_vec()),
        at in any::<prop::sample::Index>(),
        with in select(B64URL.to_vec()),
    ) {
        let token = fixtures::token(name);
        let i = at.index(token.len());
        prop_assume!(token.as_bytes()[i] != b'.' && token.as_bytes()[i] != with);
        let mut bytes = token.into_bytes();
        bytes[i] = with;
        let flipped = String::from_utf8(bytes).unwrap();
        prop_assert!(verify(&flipped, &keys()).is_err(), "{} at {}", name, i);
    }

    /// Any byte of the decoded payload or signature changed, the token re-encoded: fails.
    #[test]
    fn any_flipped_byte_fails(
        name in select(VALID.to_vec()),
        signature_part in any::<bool>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let token = fixtures::token(name);
        let parts: Vec<&str> = token.split('.').collect();
        let which = if signature_part { 2 } else { 1 };
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[which]).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        let mut parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        parts[which] = b64(&bytes);
        prop_assert!(verify(&parts.join("."), &keys()).is_err());
    }

    /// A valid token with another `alg` (any string, or another of ours) fails.
    #[test]
    fn an_altered_alg_fails(
        name in select(VALID.to_vec()),
        alg in prop_oneof![
            select(vec!["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                        "EdDSA", "none", "HS256", "HS512", "ES512", ""]).prop_map(String::from),
            ".{0,8}",
        ],
    ) {
        let token = fixtures::token(name);
        let (h, rest) = token.split_once('.').unwrap();
        let mut header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        prop_assume!(header["alg"] != alg.as_str());
        header["alg"] = json!(alg);
        let altered = format!("{}.{rest}", b64(header.to_string().as_bytes()));
        prop_assert!(verify(&altered, &keys()).is_err());
    }

    /// Arbitrary bytes as a JWKS: no panic; whatever parses never has more keys than the
    /// document had entries, and verifies none of our tokens unless it holds their key.
    #[test]
    fn any_jwks_document(doc in prop_oneof![
        vec(any::<u8>(), 0..256),
        vec(answer_object().prop_map(Value::Object), 0..6)
            .prop_map(|keys| json!({"keys": keys}).to_string().into_bytes()),
    ]) {
        if let Ok(set) = KeySet::parse(&doc) {
            prop_assert!(set.len() + set.skipped().len() <= MAX_KEYS);
            for name in VALID {
                prop_assert!(verify(&fixtures::token(name), &set).is_err());
            }
        }
    }

    /// The fixture set with one member of one key replaced: no panic, and a key only ever
    /// verifies a token if it is still the real key.
    #[test]
    fn mutated_jwks_keys(
        index in 0usize..14,
        field in field_name(),
        value in json_value(),
    ) {
        let mut doc = fixtures::jwks();
        let original = doc.clone();
        doc["keys"][index][field.as_str()] = value;
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        let real = KeySet::parse(original.to_string().as_bytes()).unwrap();
        for name in VALID {
            let token = fixtures::token(name);
            if verify(&token, &set).is_ok() {
                prop_assert!(verify(&token, &real).is_ok());
            }
        }
    }

    /// Arbitrary introspection answers: no panic; "active" only for a JSON object with
    /// `active: true` and `token_use: access_token`, from a 200 with a JSON content type.
    #[test]
    fn any_introspection_answer(
        status in prop_oneof![Just(200u16), 100u16..600],
        content_type in prop_oneof![
            Just(Some("application/json;charset=UTF-8".to_string())),
            Just(None),
            ".{0,24}".prop_map(Some),
        ],
        body in prop_oneof![
            vec(any::<u8>(), 0..128),
            answer_object().prop_map(|o| Value::Object(o).to_string().into_bytes()),
            answer_object().prop_map(|mut o| {
                o.insert("active".into(), json!(true));
                o.insert("token_use".into(), json!("access_token"));
                Value::Object(o).to_string().into_bytes()
            }),
        ],
    ) {
        let answer = decode_answer(status, content_type.as_deref(), &body);
        if let Ok(Introspection::Active(claims)) = &answer {
            prop_assert_eq!(status, 200);
            let object: Map<String, Value> = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(&object["active"], &json!(true));
            prop_assert_eq!(&object["token_use"], &json!("access_token"));
            prop_assert_eq!(claims.token_use(), Some("access_token"));
            for (_, text) in claims.texts().iter() {
                prop_assert!(!text.bytes().any(|b| b < 0x20 || b == 0x7f));
            }
        }
        if status != 200 {
            prop_assert!(answer.is_err());
        }
    }

    /// Any sequence of requests, unknown kids, polls and fetch results over time: at most
    /// one fetch runs, and unknown kids start at most one fetch per cooldown.
    #[test]
    fn jwks_cache_sequences(ops in vec((0u8..5, 0u64..3000), 1..200)) {
        let t0 = Instant::now();
        let mut cache = JwksCache::new(Policy::default(), t0);
        let mut now = t0;
        let mut running = None;
        let mut kid_fetches: Vec<Instant> = Vec::new();
        for (op, advance_ms) in ops {
            now += Duration::from_millis(advance_ms);
            let started = match op {
                0 => cache.poll(now),
                1 => match cache.for_request(now) {
                    KeysFor::Start(f) => Some(f),
                    _ => None,
                },
                2 => match cache.on_unknown_kid(now) {
                    KidDecision::Start(f) => {
                        kid_fetches.push(now);
                        Some(f)
                    }
                    _ => None,
                },
                _ => {
                    if let Some((f, _)) = running.take() {
                        let result = if op == 3 {
                            Ok(keys())
                        } else {
                            Err(crate::check::call::CallError::Timeout)
                        };
                        cache.fetch_done(now, f, result);
                    }
                    None
                }
            };
            if let Some(f) = started {
                // A new fetch only when none runs, or the last was taken as lost.
                if let Some((_, since)) = running {
                    prop_assert!(now.duration_since(since) >= Duration::from_secs(60));
                }
                running = Some((f, now));
            }
            prop_assert!(running.is_none() || cache.is_fetching() || cache.next_poll() <= now);
        }
        for pair in kid_fetches.windows(2) {
            prop_assert!(pair[1].duration_since(pair[0]) >= Duration::from_secs(10));
        }
    }
}
