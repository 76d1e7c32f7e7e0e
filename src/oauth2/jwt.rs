//! Verifying a JWT access token (JWS compact serialization, RFC 7515 §7.1) with aws-lc-rs.
//!
//! The order is fixed and every step can only refuse:
//! 1. three base64url parts; the header is a JSON object;
//! 2. `alg` is one of ours ([`Algorithm`]): `none`, `HS*` and anything unknown are refused
//!    before any key is looked at;
//! 3. `crit` refused (we implement no extension), `typ` if present is `JWT`, `at+jwt` or
//!    `application/at+jwt`;
//! 4. the key: by `kid` from the set (never from the token: `jwk`, `jku`, `x5u`, `x5c` are
//!    ignored), and it must fit `alg` (type, curve, and the JWK's own `alg`); a token
//!    without `kid` uses the set's only key that fits, if there is exactly one;
//! 5. the signature over the first two parts, exactly as sent;
//! 6. only then the payload: a JSON object read into [`Claims`].
//!
//! Of a header name given twice, the last counts (what [`InOrder::pick`] finds), which
//! RFC 7515 §4 allows; and since the signature covers the header bytes as sent, no
//! reading of a duplicate can change which key must have signed them.

use std::fmt;
use std::time::{Duration, Instant};

use super::alg::Algorithm;
use super::claims::{Claims, InOrder, Member, Source};
use super::jwks::{KeySet, KidLookup};
use super::token::jws_parts;
use super::token::MAX_TOKEN_LEN;

/// Why a JWT is refused. [`UnknownKid`](JwtError::UnknownKid) is the one the caller may cure
/// by refetching the key set; every other is final for this token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts.
    Malformed,
    /// The header is not a JSON object, or `alg`, `kid` or `typ` has the wrong type.
    MalformedHeader,
    /// `alg` is not one we accept (`none`, `HS256`, `ES512`, ...).
    Algorithm,
    Crit,
    Typ,
    /// No `kid`, and not exactly one key in the set fits the algorithm.
    NoKid,
    UnknownKid,
    /// The kid names a key the set publishes but we skipped (too short, `use: enc`, ...).
    KeyUnusable,
    /// The kid names a key of another type, curve or `alg` than the token's algorithm.
    KeyMismatch,
    Signature,
    /// The signature verified but the payload is not a claims object we can read.
    Claims(&'static str),
}

impl JwtError {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtError::Malformed => "the token is not a well-formed JWS",
            JwtError::MalformedHeader => "the token's header is malformed",
            JwtError::Algorithm => "the token's algorithm is not accepted",
            JwtError::Crit => "the token has critical header parameters",
            JwtError::Typ => "the token's typ is not JWT or at+jwt",
            JwtError::NoKid => "the token names no key (kid) and the JWKS has not exactly one key for its algorithm",
            JwtError::UnknownKid => "the token's key (kid) is not in the JWKS",
            JwtError::KeyUnusable => "the token's key (kid) is in the JWKS but not usable",
            JwtError::KeyMismatch => "the token's key (kid) does not fit the token's algorithm",
            JwtError::Signature => "the token's signature does not verify",
            JwtError::Claims(reason) => reason,
        }
    }

    /// The names `t/lib/make-jwt-fixtures` writes into `verify`.
    #[cfg(test)]
    pub(crate) fn fixture_name(self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::MalformedHeader => "malformed_header",
            JwtError::Algorithm => "alg",
            JwtError::Crit => "crit",
            JwtError::Typ => "typ",
            JwtError::NoKid => "no_kid",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::KeyUnusable => "key_unusable",
            JwtError::KeyMismatch => "key_mismatch",
            JwtError::Signature => "signature",
            JwtError::Claims(_) => "claims",
        }
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for JwtError {}

/// Verifies `token` against `keys` and returns its claims. Time and the location's rules
/// are not checked here: see [`crate::oauth2::rules::Rules::check`].
pub fn verify(token: &str, keys: &KeySet) -> Result<Claims, JwtError> {
    verify_timed(token, keys, |_| {})
}

/// [`verify`], handing `signature_took` the time the signature check took, when one was
/// made: what the status counters report, and what the rest of a request is measured
/// against.
pub fn verify_timed(
    token: &str,
    keys: &KeySet,
    signature_took: impl FnOnce(Duration),
) -> Result<Claims, JwtError> {
    // A token from `BearerToken::parse` is within the limit; this keeps any other caller
    // from making us decode and parse without bound.
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let Some((header_b64, payload_b64, signature_b64)) = jws_parts(token) else {
        return Err(JwtError::Malformed);
    };
    // The three parts in one buffer (one allocation, not three), each decoded now; a part
    // that does not decode is refused where the checks below reach it, as if decoded there.
    let mut decoded = Vec::with_capacity(token.len() / 4 * 3 + 3);
    let header_len = decode_into(header_b64, &mut decoded).ok_or(JwtError::Malformed)?;
    let signature_len = decode_into(signature_b64, &mut decoded);
    let payload_len = decode_into(payload_b64, &mut decoded);
    let (header, rest) = decoded.split_at(header_len);
    let members = InOrder::parse(header).map_err(|_| JwtError::MalformedHeader)?;
    let [alg, crit, typ, kid] = members.pick(["alg", "crit", "typ", "kid"]);

    let alg = match alg {
        Some(Member::Str(name)) => Algorithm::from_name(name).ok_or(JwtError::Algorithm)?,
        _ => return Err(JwtError::MalformedHeader),
    };
    if crit.is_some() {
        return Err(JwtError::Crit);
    }
    match typ {
        None => {}
        Some(Member::Str(typ)) if is_access_token_typ(typ) => {}
        Some(Member::Str(_)) => return Err(JwtError::Typ),
        Some(_) => return Err(JwtError::MalformedHeader),
    }
    let key = match kid {
        Some(Member::Str(kid)) => match keys.lookup(kid) {
            KidLookup::Found(key) if key.fits(alg) => key,
            KidLookup::Found(_) => return Err(JwtError::KeyMismatch),
            KidLookup::Skipped(_) => return Err(JwtError::KeyUnusable),
            KidLookup::Unknown => return Err(JwtError::UnknownKid),
        },
        None => keys.sole_key_for(alg).ok_or(JwtError::NoKid)?,
        Some(_) => return Err(JwtError::MalformedHeader),
    };

    let signature_len = signature_len.ok_or(JwtError::Malformed)?;
    let (signature, payload) = rest.split_at(signature_len);
    // The signing input is the two parts as sent, not a re-encoding of what we decoded.
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    let started = Instant::now();
    let verified = key.verify(alg, signing_input, signature);
    signature_took(started.elapsed());
    if !verified {
        return Err(JwtError::Signature);
    }

    if payload_len.is_none() {
        return Err(JwtError::Claims("the token's payload is not base64url"));
    }
    let claims = InOrder::parse(payload)
        .map_err(|_| JwtError::Claims("the token's claims are not a JSON object"))?;
    Claims::from_json_members(&claims, Source::Jwt, payload).map_err(JwtError::Claims)
}

/// RFC 7519 §5.1 `JWT`, RFC 9068 §2.1 `at+jwt` (and its full media type); media types are
/// case-insensitive.
fn is_access_token_typ(typ: &str) -> bool {
    ["JWT", "at+jwt", "application/at+jwt"]
        .iter()
        .any(|t| typ.eq_ignore_ascii_case(t))
}

/// Unpadded base64url only; non-zero trailing bits are refused too, so each token has one
/// encoding. The SIMD decoder, not the `base64` crate's scalar one: a first-seen
/// RS256-4096 token is 1.1 kB of base64url, and decoding it was a fifth of the module's own
/// work on such a request (about 9,600 instructions, against 2,000; callgrind).
///
/// Appends the bytes of `part` to `buf` and returns how many; `None`, with `buf` as it was,
/// when `part` is not base64url.
fn decode_into(part: &str, buf: &mut Vec<u8>) -> Option<usize> {
    let start = buf.len();
    match base64_simd::URL_SAFE_NO_PAD.decode_append(part.as_bytes(), buf) {
        Ok(()) => Some(buf.len() - start),
        Err(_) => {
            buf.truncate(start);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::fixtures::{self, FixtureToken};
    use base64::Engine;
    use serde_json::{json, Value};

    fn keys() -> KeySet {
        KeySet::parse(fixtures::JWKS.as_bytes()).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// One part decoded after another's bytes, as the verifier decodes them.
    fn decode(part: &str) -> Option<Vec<u8>> {
        let mut buf = b"before".to_vec();
        let len = decode_into(part, &mut buf);
        assert_eq!(&buf[..6], b"before");
        assert_eq!(buf.len(), 6 + len.unwrap_or(0));
        len.map(|_| buf[6..].to_vec())
    }

    #[test]
    fn parts_have_one_encoding() {
        let bytes: Vec<u8> = (0..=255).collect();
        for len in 0..bytes.len() {
            assert_eq!(decode(&b64(&bytes[..len])).as_deref(), Some(&bytes[..len]));
        }
        // "QR" would be "A" with a non-zero trailing bit; "QQ" is "A" itself.
        assert_eq!(decode("QQ").as_deref(), Some(&b"A"[..]));
        for part in ["QR", "QQ==", "Q", "+/8", "-_8 ", "QQ\n", "Q.Q", "\u{e9}QQ"] {
            assert_eq!(decode(part), None, "{part:?}");
        }
    }

    fn outcome(token: &str, keys: &KeySet) -> &'static str {
        match verify(token, keys) {
            Ok(_) => "ok",
            Err(e) => e.fixture_name(),
        }
    }

    /// Every token PyJWT made verifies, or fails, as its fixture says.
    #[test]
    fn every_fixture_token() {
        let f = fixtures::fixtures();
        let keys = keys();
        assert!(f.tokens.len() >= 50);
        for FixtureToken {
            name,
            verify: want,
            token,
            ..
        } in f.tokens
        {
            assert_eq!(outcome(&token, &keys), want, "{name}");
        }
    }

    #[test]
    fn every_algorithm_verifies() {
        let keys = keys();
        for name in [
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
        ] {
            let claims =
                verify(&fixtures::token(name), &keys).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(claims.sub(), Some("user-1234"), "{name}");
            assert_eq!(claims.client_id(), Some("client-abc"));
            assert_eq!(
                claims.text("ext"),
                Some(r#"{"roles":["admin","dev"],"tenant":"acme"}"#)
            );
        }
    }

    #[test]
    fn claims_as_written() {
        let f = fixtures::fixtures();
        let c = verify(&fixtures::token("RS256-4096"), &keys()).unwrap();
        assert_eq!(c.exp, Some(f.exp));
        assert_eq!(c.iat, Some(f.iat));
        assert_eq!(c.nbf, Some(f.iat));
        assert_eq!(c.iss(), Some(f.iss.as_str()));
        assert_eq!(c.scope_text(), "openid offline read:photos");
        // Every claim PyJWT wrote is a variable text: strings as is, the rest as JSON.
        for (name, value) in f.claims.as_object().unwrap() {
            let want = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(c.text(name), Some(want.as_str()), "{name}");
        }
        assert_eq!(c.texts().len(), f.claims.as_object().unwrap().len());
        let c = verify(&fixtures::token("scope-string"), &keys()).unwrap();
        assert_eq!(c.scope_text(), "openid read:photos");
        let c = verify(&fixtures::token("aud-string"), &keys()).unwrap();
        assert_eq!(c.aud().collect::<Vec<_>>(), ["api.example.com"]);
    }

    #[test]
    fn a_token_without_kid_needs_a_sole_fitting_key() {
        // With only the 4096-bit key in the set, RS256 without kid verifies.
        let mut only = fixtures::jwks();
        only["keys"] = json!([only["keys"][0].clone()]);
        let only = KeySet::parse(only.to_string().as_bytes()).unwrap();
        assert_eq!(outcome(&fixtures::token("no-kid-RS256"), &only), "ok");
        assert_eq!(outcome(&fixtures::token("no-kid-RS256"), &keys()), "no_kid");
        assert_eq!(outcome(&fixtures::token("no-kid-EdDSA"), &only), "no_kid");
        assert_eq!(
            outcome(&fixtures::token("no-kid-EdDSA"), &KeySet::default()),
            "no_kid"
        );
    }

    #[test]
    fn an_empty_set_knows_no_kid() {
        let empty = KeySet::default();
        assert_eq!(
            outcome(&fixtures::token("RS256-4096"), &empty),
            "unknown_kid"
        );
        // ... but refused algorithms are refused before the key is looked up.
        assert_eq!(outcome(&fixtures::token("alg-none"), &empty), "alg");
    }

    #[test]
    fn malformed_tokens() {
        let keys = keys();
        let good = fixtures::token("ES256");
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for bad in [
            String::new(),
            "a".into(),
            "a.b".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!(".{p}.{s}"),
            format!("{h}..{s}"),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}!"),
            format!("{h}+.{p}.{s}"),
            format!(" {h}.{p}.{s}"),
            format!("{h}.{p}{}.{s}", "A".repeat(MAX_TOKEN_LEN)),
        ] {
            assert_eq!(outcome(&bad, &keys), "malformed", "{bad}");
        }
        // Headers that are not an object, or whose members have the wrong types.
        for header in [
            json!([]),
            json!("RS256"),
            json!({}),
            json!({"alg": null}),
            json!({"alg": "ES256", "kid": 1}),
            json!({"alg": "ES256", "kid": "ec-p256", "typ": null}),
        ] {
            let token = format!("{}.{p}.{s}", b64(header.to_string().as_bytes()));
            assert_eq!(outcome(&token, &keys), "malformed_header", "{header}");
        }
        let token = format!("{}.{p}.{s}", b64(b"not json"));
        assert_eq!(outcome(&token, &keys), "malformed_header");
    }

    #[test]
    fn the_signature_covers_the_header_as_sent() {
        // The same header re-encoded with other whitespace is another signing input.
        let keys = keys();
        let good = fixtures::token("ES256");
        let (h, rest) = good.split_once('.').unwrap();
        let header: Value = serde_json::from_slice(&decode(h).unwrap()).unwrap();
        let pretty = serde_json::to_vec_pretty(&header).unwrap();
        let token = format!("{}.{rest}", b64(&pretty));
        assert_eq!(outcome(&token, &keys), "signature");
    }

    #[test]
    fn an_altered_alg_fails() {
        let keys = keys();
        for (name, to) in [
            ("RS256-2048", "PS256"),
            ("RS256-2048", "RS512"),
            ("PS256-2048", "RS256"),
            ("RS256-4096", "HS256"),
            ("RS256-4096", "none"),
            ("RS256-4096", "PS256"),
            ("ES256", "ES384"),
            ("ES384", "ES256"),
            ("EdDSA", "ES256"),
        ] {
            let good = fixtures::token(name);
            let (h, rest) = good.split_once('.').unwrap();
            let mut header: Value = serde_json::from_slice(&decode(h).unwrap()).unwrap();
            header["alg"] = json!(to);
            let token = format!("{}.{rest}", b64(header.to_string().as_bytes()));
            let got = outcome(&token, &keys);
            assert!(
                ["signature", "alg", "key_mismatch"].contains(&got),
                "{name} as {to}: {got}"
            );
        }
    }

    #[test]
    fn typ_values() {
        for typ in [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(is_access_token_typ(typ), "{typ}");
        }
        for typ in [
            "",
            "JOSE",
            "JWS",
            "dpop+jwt",
            "application/jwt",
            "at+jwt ",
            "secevent+jwt",
        ] {
            assert!(!is_access_token_typ(typ), "{typ}");
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            JwtError::Signature.to_string(),
            "the token's signature does not verify"
        );
        assert_eq!(
            JwtError::UnknownKid.to_string(),
            "the token's key (kid) is not in the JWKS"
        );
        assert_eq!(JwtError::Claims("x").to_string(), "x");
        // The texts carry nothing from the token.
        let token = fixtures::token("payload-not-json");
        let e = verify(&token, &keys()).unwrap_err();
        assert_eq!(e.to_string(), "the token's claims are not a JSON object");
    }
}
