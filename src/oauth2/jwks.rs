//! A JWKS document (RFC 7517) read into the public keys JWT verification may use. Parsed
//! once per fetch, so a token costs a lookup by `kid` and one signature check.
//!
//! A key we cannot or must not use is skipped, not fatal: Hydra's set may well hold an
//! encryption key or an algorithm we do not implement beside the signing keys, and refusing
//! the whole set would refuse every token. What is skipped is remembered by `kid`, so a
//! token naming such a key is refused at once instead of triggering a refetch.

use std::collections::HashSet;
use std::fmt;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine;
use serde_json::{Map, Value};

use super::alg::{Algorithm, KeyFamily};
use crate::check::call::CallError;
use crate::check::call::{json_error_text, media_type_is};
use crate::check::text::header_safe;
use crate::check::MAX_ANSWER_LEN;

/// Hydra keeps every rotated key until it is deleted, so a set grows slowly; hundreds of
/// keys would mean a broken issuer, and each key costs a parse per fetch.
pub const MAX_KEYS: usize = 256;

/// RSA keys below 2048 bits are breakable (NIST SP 800-131A); aws-lc-rs verifies up to 8192.
pub const MIN_RSA_BITS: usize = 2048;
pub const MAX_RSA_BITS: usize = 8192;

/// The members that hold private or symmetric key material (RFC 7518 §6.2.2, §6.3.2,
/// §6.4.1, RFC 8037 §2). A public JWKS that carries them has leaked the key: anyone can sign
/// with it, so such a key is never trusted.
const SECRET_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// One public key, checked, decoded, and parsed for the algorithms it may verify.
#[derive(Clone)]
pub struct Key {
    kid: Option<Box<str>>,
    /// The JWK's `alg`: when present, the only algorithm that may use the key.
    alg: Option<Algorithm>,
    public: PublicKey,
    /// The key as aws-lc-rs verifies with it, once per algorithm that [fits](Key::fits): one,
    /// or the six RSA ones for an RSA key without `alg`. Parsed here, on the client thread
    /// at each fetch, so a token pays for the signature check alone; an RSA key also keeps
    /// its Montgomery constants from its first check on (ring 0.17 rebuilt the key for every
    /// check: a third of its instructions for an RSA-4096 one, callgrind).
    verifiers: Box<[(Algorithm, ParsedPublicKey)]>,
}

/// The key material is the key: the parsed forms are made from it.
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.public == other.public
    }
}

impl Eq for Key {}

#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    /// Big-endian, without leading zero bytes.
    Rsa {
        n: Box<[u8]>,
        e: Box<[u8]>,
        bits: usize,
    },
    /// Uncompressed SEC1 points: 0x04 || x || y.
    P256(Box<[u8]>),
    P384(Box<[u8]>),
    Ed25519(Box<[u8]>),
}

impl Key {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    pub fn family(&self) -> KeyFamily {
        match self.public {
            PublicKey::Rsa { .. } => KeyFamily::Rsa,
            PublicKey::P256(_) => KeyFamily::P256,
            PublicKey::P384(_) => KeyFamily::P384,
            PublicKey::Ed25519(_) => KeyFamily::Ed25519,
        }
    }

    /// The modulus size of an RSA key.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self.public {
            PublicKey::Rsa { bits, .. } => Some(bits),
            _ => None,
        }
    }

    /// The key's type is the one `alg` needs, and the JWK's own `alg`, if any, is `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.family() == alg.family() && self.alg.is_none_or(|own| own == alg)
    }

    /// Checks a JWS signature over `message`. A key that does not [`fit`](Self::fits) `alg`
    /// has no verifier for it, so it verifies nothing, whatever the caller checked before.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(own, _)| *own == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    /// Parses the key for each algorithm it fits. A key aws-lc refuses (an EC point off its
    /// curve, say) is skipped at fetch time, not failed on every token.
    fn with_verifiers(mut self) -> Result<Key, &'static str> {
        let encoded;
        let bytes: &[u8] = match &self.public {
            PublicKey::Rsa { n, e, .. } => {
                encoded = rsa_public_key_der(n, e);
                &encoded
            }
            PublicKey::P256(point) | PublicKey::P384(point) => point,
            PublicKey::Ed25519(x) => x,
        };
        let mut verifiers = Vec::new();
        for alg in Algorithm::ALL.into_iter().filter(|&alg| self.fits(alg)) {
            let parsed = ParsedPublicKey::new(alg.verification(), bytes).map_err(|_| match self
                .family()
            {
                KeyFamily::P256 | KeyFamily::P384 => "the EC point is not on its curve",
                KeyFamily::Rsa => "the RSA key is not a valid public key",
                KeyFamily::Ed25519 => "the Ed25519 key is not a valid public key",
            })?;
            verifiers.push((alg, parsed));
        }
        self.verifiers = verifiers.into_boxed_slice();
        Ok(self)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Key");
        d.field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family());
        if let Some(bits) = self.rsa_bits() {
            d.field("bits", &bits);
        }
        d.finish()
    }
}

/// A key of the document that is not used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub kid: Option<Box<str>>,
    pub reason: &'static str,
}

impl fmt::Display for Skipped {
    /// `key "abc": use is not sig`, for a log line; the kid is the issuer's text, so it is
    /// made header-safe and cut short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => {
                let kid = header_safe(kid);
                let mut end = kid.len().min(64);
                while !kid.is_char_boundary(end) {
                    end -= 1;
                }
                write!(f, "key \"{}\": {}", &kid[..end], self.reason)
            }
            None => write!(f, "key without kid: {}", self.reason),
        }
    }
}

/// The keys of one JWKS document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Box<[Key]>,
    skipped: Box<[Skipped]>,
}

/// What a `kid` names in a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KidLookup<'a> {
    Found(&'a Key),
    /// Published, but skipped: no refetch will make it usable.
    Skipped(&'static str),
    Unknown,
}

/// The document is not a JWKS at all. Texts never quote the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksError {
    Json(String),
    NotAJwks,
    TooManyKeys,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::Json(why) => write!(f, "the JWKS is not JSON ({why})"),
            JwksError::NotAJwks => f.write_str("the JWKS is not an object with a \"keys\" array"),
            JwksError::TooManyKeys => write!(f, "the JWKS has more than {MAX_KEYS} keys"),
        }
    }
}

impl std::error::Error for JwksError {}

impl KeySet {
    /// Reads a JWKS document: `{"keys": [JWK, ...]}`. Unusable keys are skipped (see
    /// [`skipped`](Self::skipped)); an empty set is a valid answer (every token then fails).
    pub fn parse(document: &[u8]) -> Result<KeySet, JwksError> {
        let value: Value =
            serde_json::from_slice(document).map_err(|e| JwksError::Json(json_error_text(&e)))?;
        let Some(Value::Array(entries)) = value.get("keys") else {
            return Err(JwksError::NotAJwks);
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        let mut kids = HashSet::new();
        for entry in entries {
            let Value::Object(jwk) = entry else {
                skipped.push(Skipped {
                    kid: None,
                    reason: "the key is not a JSON object",
                });
                continue;
            };
            match parse_key(jwk) {
                // Two usable keys under one kid would make the choice of key depend on
                // document order; RFC 7517 §4.5 lets kids repeat only across key types, and
                // Hydra never repeats them. The first one is kept.
                Ok(key)
                    if key
                        .kid
                        .as_ref()
                        .is_some_and(|kid| !kids.insert(kid.clone())) =>
                {
                    skipped.push(Skipped {
                        kid: key.kid,
                        reason: "another usable key has the same kid",
                    });
                }
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(Skipped {
                    kid: match jwk.get("kid") {
                        Some(Value::String(kid)) => Some(kid.as_str().into()),
                        _ => None,
                    },
                    reason,
                }),
            }
        }
        Ok(KeySet {
            keys: keys.into_boxed_slice(),
            skipped: skipped.into_boxed_slice(),
        })
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn lookup(&self, kid: &str) -> KidLookup<'_> {
        if let Some(key) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            return KidLookup::Found(key);
        }
        match self.skipped.iter().find(|s| s.kid.as_deref() == Some(kid)) {
            Some(s) => KidLookup::Skipped(s.reason),
            None => KidLookup::Unknown,
        }
    }

    /// The key for a token that names none: only when exactly one key of the set fits
    /// `alg`. With two candidates, trying both would let the document's order decide, and a
    /// key added by a rotation would silently change which key vouches for old tokens.
    pub(crate) fn sole_key_for(&self, alg: Algorithm) -> Option<&Key> {
        let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
        match (fitting.next(), fitting.next()) {
            (Some(key), None) => Some(key),
            _ => None,
        }
    }
}

/// The JWKS endpoint's answer: a 200 with a JSON JWKS, or an error. Pure, like
/// [`crate::oauth2::introspection::decode_answer`].
pub fn decode_answer(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<KeySet, CallError> {
    match status {
        200 => {}
        429 => return Err(CallError::RateLimited),
        other => return Err(CallError::Status(other)),
    }
    if body.len() > MAX_ANSWER_LEN {
        return Err(CallError::TooLarge);
    }
    // RFC 7517 §8.5 registers application/jwk-set+json; Hydra sends application/json.
    if !content_type
        .is_some_and(|t| media_type_is(t, &["application/json", "application/jwk-set+json"]))
    {
        return Err(CallError::Malformed(
            "content type is not application/json".into(),
        ));
    }
    KeySet::parse(body).map_err(|e| CallError::Malformed(e.to_string()))
}

fn parse_key(jwk: &Map<String, Value>) -> Result<Key, &'static str> {
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str().into()),
        Some(_) => return Err("kid is not a string"),
    };
    let kty = match jwk.get("kty") {
        Some(Value::String(kty)) => kty.as_str(),
        _ => return Err("kty is missing"),
    };
    if kty == "oct" {
        return Err("a symmetric key (kty oct) is never accepted");
    }
    if SECRET_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err("the key has private parts, so it has leaked");
    }
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("use is not sig"),
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|op| op == "verify") => {}
        Some(_) => return Err("key_ops does not allow verify"),
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            Some(Algorithm::from_name(name).ok_or("the key's alg is not one we accept")?)
        }
        Some(_) => return Err("alg is not a string"),
    };
    let public = match kty {
        "RSA" => rsa_key(jwk)?,
        "EC" => ec_key(jwk)?,
        "OKP" => okp_key(jwk)?,
        _ => return Err("kty is not RSA, EC or OKP"),
    };
    let key = Key {
        kid,
        alg,
        public,
        verifiers: Box::default(),
    };
    if alg.is_some_and(|alg| alg.family() != key.family()) {
        return Err("the key's alg does not fit its type");
    }
    key.with_verifiers()
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` in DER,
/// the form aws-lc-rs parses an RSA public key from. `n` and `e` are big-endian without
/// leading zeros; an INTEGER is signed, so one whose top bit is set gets a zero byte first.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn push_len(out: &mut Vec<u8>, len: usize) {
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend([0x81, len as u8]),
            _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
    }
    fn push_integer(out: &mut Vec<u8>, value: &[u8]) {
        let pad = value.first().is_some_and(|&b| b & 0x80 != 0);
        out.push(0x02);
        push_len(out, value.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(value);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 10);
    push_integer(&mut body, n);
    push_integer(&mut body, e);
    let mut der = Vec::with_capacity(body.len() + 4);
    der.push(0x30);
    push_len(&mut der, body.len());
    der.extend_from_slice(&body);
    der
}

fn rsa_key(jwk: &Map<String, Value>) -> Result<PublicKey, &'static str> {
    let n = member(jwk, "n").ok_or("n is missing or not base64url")?;
    let e = member(jwk, "e").ok_or("e is missing or not base64url")?;
    // RFC 7518 §6.3.1 says no leading zeros, but some encoders add one.
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err("the RSA key is shorter than 2048 bits");
    }
    if bits > MAX_RSA_BITS {
        return Err("the RSA key is longer than 8192 bits");
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err("the RSA modulus is even");
    }
    // aws-lc's bounds (BoringSSL's): odd, 3 <= e <= 2^33 - 1. Checked here, with its own
    // reason, so a bad key is reported once, at fetch time, not as a failed signature on
    // every token.
    if e.len() > 5 {
        return Err("the RSA exponent is out of range");
    }
    let e_value = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if !(3..=(1 << 33) - 1).contains(&e_value) || e_value & 1 == 0 {
        return Err("the RSA exponent is out of range");
    }
    Ok(PublicKey::Rsa {
        n: n.into(),
        e: e.into(),
        bits,
    })
}

fn ec_key(jwk: &Map<String, Value>) -> Result<PublicKey, &'static str> {
    let len = match jwk.get("crv").and_then(Value::as_str) {
        Some("P-256") => 32,
        Some("P-384") => 48,
        _ => return Err("the EC curve is not P-256 or P-384"),
    };
    let x = member(jwk, "x").ok_or("x is missing or not base64url")?;
    let y = member(jwk, "y").ok_or("y is missing or not base64url")?;
    // RFC 7518 §6.2.1.2: coordinates are full length, never shortened.
    if x.len() != len || y.len() != len {
        return Err("an EC coordinate has the wrong length");
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    // Whether the point is on the curve is checked when aws-lc parses it
    // (`Key::with_verifiers`): a point off the curve is a skipped key.
    Ok(if len == 32 {
        PublicKey::P256(point.into())
    } else {
        PublicKey::P384(point.into())
    })
}

fn okp_key(jwk: &Map<String, Value>) -> Result<PublicKey, &'static str> {
    if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
        return Err("the OKP curve is not Ed25519");
    }
    let x = member(jwk, "x").ok_or("x is missing or not base64url")?;
    if x.len() != 32 {
        return Err("the Ed25519 key is not 32 bytes");
    }
    Ok(PublicKey::Ed25519(x.into()))
}

/// A base64url member (RFC 7518 says unpadded; padding is tolerated, the key is the
/// issuer's and not an attacker's).
fn member(jwk: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    let text = jwk.get(name)?.as_str()?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    &bytes[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::fixtures;
    use serde_json::json;

    fn parse(doc: Value) -> KeySet {
        KeySet::parse(doc.to_string().as_bytes()).unwrap()
    }

    /// The JWK of one fixture key, by kid.
    fn fixture_jwk(kid: &str) -> Value {
        fixtures::jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    }

    fn reason(doc: Value) -> &'static str {
        let set = parse(json!({ "keys": [doc] }));
        assert!(set.is_empty(), "{set:?}");
        set.skipped()[0].reason
    }

    #[test]
    fn the_fixture_set() {
        let set = KeySet::parse(fixtures::JWKS.as_bytes()).unwrap();
        let usable: Vec<_> = set.keys().iter().map(|k| k.kid().unwrap()).collect();
        assert_eq!(
            usable,
            [
                "rsa-4096",
                "rsa-2048",
                "rsa-3072-ps",
                "ec-p256",
                "ec-p384",
                "ed25519"
            ]
        );
        assert_eq!(set.len(), 6);
        assert_eq!(set.keys()[0].rsa_bits(), Some(4096));
        assert_eq!(set.keys()[0].alg(), Some(Algorithm::Rs256));
        assert_eq!(set.keys()[1].rsa_bits(), Some(2048));
        assert_eq!(set.keys()[1].alg(), None);
        assert_eq!(set.keys()[2].rsa_bits(), Some(3072));
        assert_eq!(set.keys()[3].family(), KeyFamily::P256);
        assert_eq!(set.keys()[4].family(), KeyFamily::P384);
        assert_eq!(set.keys()[5].family(), KeyFamily::Ed25519);

        let skipped: Vec<_> = set.skipped().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            skipped,
            [
                "key \"rsa-1024\": the RSA key is shorter than 2048 bits",
                "key \"rsa-enc\": use is not sig",
                "key \"rsa-private\": the key has private parts, so it has leaked",
                "key \"rsa-encrypt-ops\": key_ops does not allow verify",
                "key \"ec-p521\": the key's alg is not one we accept",
                "key \"x25519\": the OKP curve is not Ed25519",
                "key \"oct-hs\": a symmetric key (kty oct) is never accepted",
                "key \"weird\": kty is not RSA, EC or OKP",
            ]
        );
        assert!(
            matches!(set.lookup("rsa-2048"), KidLookup::Found(k) if k.kid() == Some("rsa-2048"))
        );
        assert_eq!(set.lookup("rsa-enc"), KidLookup::Skipped("use is not sig"));
        assert_eq!(set.lookup("nope"), KidLookup::Unknown);
        assert_eq!(set.lookup(""), KidLookup::Unknown);
    }

    #[test]
    fn fits() {
        let set = KeySet::parse(fixtures::JWKS.as_bytes()).unwrap();
        let key = |kid| match set.lookup(kid) {
            KidLookup::Found(k) => k,
            other => panic!("{other:?}"),
        };
        use Algorithm::*;
        let fitting = |kid| -> Vec<Algorithm> {
            Algorithm::ALL
                .into_iter()
                .filter(|a| key(kid).fits(*a))
                .collect()
        };
        assert_eq!(fitting("rsa-4096"), [Rs256]);
        assert_eq!(
            fitting("rsa-2048"),
            [Rs256, Rs384, Rs512, Ps256, Ps384, Ps512]
        );
        assert_eq!(fitting("rsa-3072-ps"), [Ps256]);
        assert_eq!(fitting("ec-p256"), [Es256]);
        assert_eq!(fitting("ec-p384"), [Es384]);
        assert_eq!(fitting("ed25519"), [EdDsa]);
    }

    #[test]
    fn sole_key_for() {
        let set = KeySet::parse(fixtures::JWKS.as_bytes()).unwrap();
        use Algorithm::*;
        // Three RSA keys fit RS256/PS256; one each for the others.
        assert!(set.sole_key_for(Rs256).is_none());
        assert!(set.sole_key_for(Ps256).is_none());
        assert_eq!(set.sole_key_for(Rs384).unwrap().kid(), Some("rsa-2048"));
        assert_eq!(set.sole_key_for(Es256).unwrap().kid(), Some("ec-p256"));
        assert_eq!(set.sole_key_for(EdDsa).unwrap().kid(), Some("ed25519"));
        assert!(KeySet::default().sole_key_for(Es256).is_none());
    }

    #[test]
    fn documents_that_are_not_a_jwks() {
        for doc in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"{}",
            b"{\"keys\":{}}",
            b"{\"keys\":null}",
        ] {
            assert!(
                KeySet::parse(doc).is_err(),
                "{:?}",
                String::from_utf8_lossy(doc)
            );
        }
        assert_eq!(
            KeySet::parse(b"{\"keys\" 1}").unwrap_err().to_string(),
            "the JWKS is not JSON (syntax error at line 1 column 9)"
        );
        assert_eq!(
            KeySet::parse(b"{\"key\":[]}").unwrap_err().to_string(),
            "the JWKS is not an object with a \"keys\" array"
        );
        let many = json!({ "keys": vec![json!({}); MAX_KEYS + 1] });
        assert_eq!(
            KeySet::parse(many.to_string().as_bytes()).unwrap_err(),
            JwksError::TooManyKeys
        );
        let at_limit = json!({ "keys": vec![json!({}); MAX_KEYS] });
        let set = KeySet::parse(at_limit.to_string().as_bytes()).unwrap();
        assert_eq!(set.skipped().len(), MAX_KEYS);
        // An empty set is a JWKS.
        assert!(parse(json!({"keys": []})).is_empty());
        // Deep nesting is refused by serde_json's recursion limit, without a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(KeySet::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn skipped_keys() {
        let rsa = fixture_jwk("rsa-2048");
        let with = |changes: Value| {
            let mut k = rsa.clone();
            for (name, value) in changes.as_object().unwrap() {
                if value.is_null() {
                    k.as_object_mut().unwrap().remove(name);
                } else {
                    k[name] = value.clone();
                }
            }
            k
        };
        assert_eq!(reason(json!(7)), "the key is not a JSON object");
        assert_eq!(reason(with(json!({"kid": 7}))), "kid is not a string");
        assert_eq!(reason(with(json!({"kty": null}))), "kty is missing");
        assert_eq!(
            reason(with(json!({"kty": "rsa"}))),
            "kty is not RSA, EC or OKP"
        );
        assert_eq!(reason(with(json!({"use": "enc"}))), "use is not sig");
        assert_eq!(reason(with(json!({"use": ["sig"]}))), "use is not sig");
        assert_eq!(
            reason(with(json!({"key_ops": ["sign"]}))),
            "key_ops does not allow verify"
        );
        assert_eq!(
            reason(with(json!({"key_ops": "verify"}))),
            "key_ops does not allow verify"
        );
        assert_eq!(
            reason(with(json!({"alg": "HS256"}))),
            "the key's alg is not one we accept"
        );
        assert_eq!(
            reason(with(json!({"alg": "none"}))),
            "the key's alg is not one we accept"
        );
        assert_eq!(reason(with(json!({"alg": 1}))), "alg is not a string");
        assert_eq!(
            reason(with(json!({"alg": "ES256"}))),
            "the key's alg does not fit its type"
        );
        assert_eq!(
            reason(with(json!({"alg": "EdDSA"}))),
            "the key's alg does not fit its type"
        );
        for secret in SECRET_MEMBERS {
            assert_eq!(
                reason(with(json!({ secret: "AQAB" }))),
                "the key has private parts, so it has leaked",
                "{secret}"
            );
        }
        assert_eq!(
            reason(with(json!({"n": null}))),
            "n is missing or not base64url"
        );
        assert_eq!(
            reason(with(json!({"n": "a+b/"}))),
            "n is missing or not base64url"
        );
        assert_eq!(
            reason(with(json!({"e": 65537}))),
            "e is missing or not base64url"
        );
        assert_eq!(
            reason(with(json!({"e": "AAAAAAE"}))),
            "the RSA exponent is out of range"
        ); // 1
        assert_eq!(
            reason(with(json!({"e": "Ag"}))),
            "the RSA exponent is out of range"
        ); // 2
        assert_eq!(
            reason(with(json!({"e": "AQAAAAAB"}))),
            "the RSA exponent is out of range"
        );
        assert_eq!(
            reason(with(json!({"e": ""}))),
            "the RSA exponent is out of range"
        );
        assert_eq!(
            reason(with(json!({"n": "AQ"}))),
            "the RSA key is shorter than 2048 bits"
        );
        let huge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xffu8; 1025]);
        assert_eq!(
            reason(with(json!({ "n": huge }))),
            "the RSA key is longer than 8192 bits"
        );
        let even = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xfeu8; 256]);
        assert_eq!(
            reason(with(json!({ "n": even }))),
            "the RSA modulus is even"
        );

        let ec = fixture_jwk("ec-p256");
        let mut k = ec.clone();
        k["crv"] = json!("P-521");
        assert_eq!(reason(k), "the EC curve is not P-256 or P-384");
        let mut k = ec.clone();
        k["crv"] = json!("P-384");
        assert_eq!(reason(k), "an EC coordinate has the wrong length");
        let mut k = ec.clone();
        k["x"] = json!("AAAA");
        assert_eq!(reason(k), "an EC coordinate has the wrong length");
        let mut k = ec.clone();
        k.as_object_mut().unwrap().remove("y");
        assert_eq!(reason(k), "y is missing or not base64url");
        // A point off its curve verifies nothing: aws-lc refuses it when the set is read.
        for kid in ["ec-p256", "ec-p384"] {
            let mut k = fixture_jwk(kid);
            let mut y = member(k.as_object().unwrap(), "y").unwrap();
            *y.last_mut().unwrap() ^= 1;
            k["y"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&y));
            assert_eq!(reason(k), "the EC point is not on its curve", "{kid}");
        }

        let ed = fixture_jwk("ed25519");
        let mut k = ed.clone();
        k["crv"] = json!("Ed448");
        assert_eq!(reason(k), "the OKP curve is not Ed25519");
        let mut k = ed.clone();
        k["x"] = json!("AAAA");
        assert_eq!(reason(k), "the Ed25519 key is not 32 bytes");
    }

    #[test]
    fn rsa_public_keys_in_der() {
        // INTEGERs are signed: a top bit set takes a zero byte first, a clear one does not.
        assert_eq!(
            rsa_public_key_der(&[0x80, 0x01], &[0x01, 0x00, 0x01]),
            [0x30, 0x0a, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x03, 0x01, 0x00, 0x01]
        );
        assert_eq!(
            rsa_public_key_der(&[0x7f], &[0x03]),
            [0x30, 0x06, 0x02, 0x01, 0x7f, 0x02, 0x01, 0x03]
        );
        // RSA-4096: two-byte lengths, 513 bytes for the modulus.
        let der = rsa_public_key_der(&[0xff; 512], &[0x01, 0x00, 0x01]);
        assert_eq!(der[..8], [0x30, 0x82, 0x02, 0x0a, 0x02, 0x82, 0x02, 0x01]);
        assert_eq!(der[8], 0x00);
        assert_eq!(der.len(), 4 + 0x20a);
        assert_eq!(der[der.len() - 5..], [0x02, 0x03, 0x01, 0x00, 0x01]);

        // An exponent with its top bit set (2^31 + 1) is a valid key, not a negative one.
        let mut k = fixture_jwk("rsa-2048");
        k["e"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0x80, 0, 0, 1]));
        assert_eq!(parse(json!({ "keys": [k] })).len(), 1);
    }

    #[test]
    fn leading_zeros_and_padding_are_tolerated() {
        let mut k = fixture_jwk("rsa-2048");
        let n = member(k.as_object().unwrap(), "n").unwrap();
        let mut padded = vec![0u8, 0];
        padded.extend_from_slice(&n);
        k["n"] = json!(base64::engine::general_purpose::URL_SAFE.encode(&padded));
        k["e"] = json!("AAEAAQ==");
        let set = parse(json!({ "keys": [k] }));
        assert_eq!(set.keys()[0].rsa_bits(), Some(2048));
        assert_eq!(set, parse(json!({ "keys": [fixture_jwk("rsa-2048")] })));
    }

    #[test]
    fn duplicate_kids() {
        let a = fixture_jwk("rsa-2048");
        let mut b = fixture_jwk("ec-p256");
        b["kid"] = json!("rsa-2048");
        let set = parse(json!({ "keys": [a, b] }));
        assert_eq!(set.len(), 1);
        assert_eq!(set.keys()[0].family(), KeyFamily::Rsa);
        assert_eq!(
            set.skipped()[0].reason,
            "another usable key has the same kid"
        );
        assert!(matches!(set.lookup("rsa-2048"), KidLookup::Found(_)));

        // A skipped key and a usable one may share a kid (an encryption key beside its
        // signing twin): the usable one is found.
        let mut enc = fixture_jwk("rsa-enc");
        enc["kid"] = json!("shared");
        let mut sig = fixture_jwk("ec-p256");
        sig["kid"] = json!("shared");
        let set = parse(json!({ "keys": [enc, sig] }));
        assert!(
            matches!(set.lookup("shared"), KidLookup::Found(k) if k.family() == KeyFamily::P256)
        );
        // Keys without kid are no duplicates of each other.
        let mut x = fixture_jwk("ec-p256");
        x.as_object_mut().unwrap().remove("kid");
        let set = parse(json!({ "keys": [x.clone(), x] }));
        assert_eq!(set.len(), 2);
        assert!(set.sole_key_for(Algorithm::Es256).is_none());
    }

    #[test]
    fn unknown_members_are_ignored() {
        let mut k = fixture_jwk("ec-p256");
        k["x5c"] = json!(["MIIB..."]);
        k["x5t"] = json!("abc");
        k["ext"] = json!(true);
        k["key_ops"] = json!(["verify", "sign"]);
        assert_eq!(parse(json!({ "keys": [k], "extra": 1 })).len(), 1);
    }

    #[test]
    fn skipped_display_is_header_safe_and_short() {
        let s = Skipped {
            kid: Some("a\r\nb".repeat(40).into()),
            reason: "use is not sig",
        };
        let text = s.to_string();
        assert!(text.starts_with("key \"a%0D%0Ab"), "{text}");
        assert!(text.len() < 100, "{text}");
        assert!(!text.contains('\n'));
        let s = Skipped {
            kid: Some("é".repeat(40).into()),
            reason: "r",
        };
        assert!(s.to_string().ends_with("\": r"));
        assert_eq!(
            Skipped {
                kid: None,
                reason: "r"
            }
            .to_string(),
            "key without kid: r"
        );
    }

    #[test]
    fn answers() {
        let ok = decode_answer(200, Some("application/json"), fixtures::JWKS.as_bytes()).unwrap();
        assert_eq!(ok.len(), 6);
        let jwk_set = decode_answer(
            200,
            Some("application/jwk-set+json; charset=utf-8"),
            fixtures::JWKS.as_bytes(),
        );
        assert_eq!(jwk_set.unwrap(), ok);
        let body = fixtures::JWKS.as_bytes();
        assert_eq!(
            decode_answer(429, Some("application/json"), body),
            Err(CallError::RateLimited)
        );
        assert_eq!(
            decode_answer(500, Some("application/json"), body),
            Err(CallError::Status(500))
        );
        assert_eq!(decode_answer(304, None, b""), Err(CallError::Status(304)));
        assert_eq!(
            decode_answer(200, Some("text/html"), body),
            Err(CallError::Malformed(
                "content type is not application/json".into()
            ))
        );
        assert_eq!(
            decode_answer(200, None, body),
            Err(CallError::Malformed(
                "content type is not application/json".into()
            ))
        );
        assert_eq!(
            decode_answer(200, Some("application/json"), b"<html>"),
            Err(CallError::Malformed(
                "the JWKS is not JSON (syntax error at line 1 column 1)".into()
            ))
        );
        let mut big = fixtures::JWKS.as_bytes().to_vec();
        big.resize(MAX_ANSWER_LEN, b' ');
        assert!(decode_answer(200, Some("application/json"), &big).is_ok());
        big.push(b' ');
        assert_eq!(
            decode_answer(200, Some("application/json"), &big),
            Err(CallError::TooLarge)
        );
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let set = KeySet::parse(fixtures::JWKS.as_bytes()).unwrap();
        let text = format!("{:?}", set.keys()[0]);
        assert_eq!(
            text,
            "Key { kid: Some(\"rsa-4096\"), alg: Some(Rs256), family: Rsa, bits: 4096 }"
        );
    }
}
