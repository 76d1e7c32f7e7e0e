//! The JWS algorithms we accept (RFC 7518 §3, RFC 8037) and the kind of key each one needs.
//! Asymmetric only: an HMAC "key" would be the JWKS entry itself, which is public, so `HS*`
//! (and `none`) can never authenticate a token here.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    /// Ed25519 only: Ed448 is not implemented.
    EdDsa,
}

/// The kind of public key an algorithm verifies with. Two algorithms of one family share
/// keys (RS256 and PS512 both take an RSA key); across families a key never fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    Rsa,
    /// EC on P-256: ES256 only.
    P256,
    /// EC on P-384: ES384 only.
    P384,
    /// OKP Ed25519: EdDSA only.
    Ed25519,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::EdDsa,
    ];

    /// Exact and case-sensitive, as RFC 7515 §4.1.1 says: `none`, `None`, `HS256`, `ES512`
    /// and everything else are `None`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Algorithm::Rs256
            | Algorithm::Rs384
            | Algorithm::Rs512
            | Algorithm::Ps256
            | Algorithm::Ps384
            | Algorithm::Ps512 => KeyFamily::Rsa,
            Algorithm::Es256 => KeyFamily::P256,
            Algorithm::Es384 => KeyFamily::P384,
            Algorithm::EdDsa => KeyFamily::Ed25519,
        }
    }

    /// aws-lc-rs' verification algorithm; its RSA ones take keys of 2048 to 8192 bits only.
    pub(crate) fn verification(self) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as s;
        match self {
            Algorithm::Rs256 => &s::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Rs384 => &s::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::Rs512 => &s::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::Ps256 => &s::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &s::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &s::RSA_PSS_2048_8192_SHA512,
            // JWS carries ECDSA signatures as fixed-size r || s (RFC 7518 §3.4), not DER.
            Algorithm::Es256 => &s::ECDSA_P256_SHA256_FIXED,
            Algorithm::Es384 => &s::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDsa => &s::ED25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
            assert_eq!(alg.to_string(), alg.name());
        }
    }

    #[test]
    fn refused_names() {
        for name in [
            "none", "None", "NONE", "", "HS256", "HS384", "HS512", "ES512", "ES256K", "EdDSA ",
            "rs256", "Rs256", "eddsa", "ED25519", "Ed25519", "RSA-OAEP", "dir", "PS256\0",
        ] {
            assert_eq!(Algorithm::from_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn families() {
        use Algorithm::*;
        for alg in [Rs256, Rs384, Rs512, Ps256, Ps384, Ps512] {
            assert_eq!(alg.family(), KeyFamily::Rsa);
        }
        assert_eq!(Es256.family(), KeyFamily::P256);
        assert_eq!(Es384.family(), KeyFamily::P384);
        assert_eq!(EdDsa.family(), KeyFamily::Ed25519);
    }

    /// Nine algorithms, nine verification algorithms: none maps to another's.
    #[test]
    fn each_algorithm_verifies_its_own_way() {
        for (i, a) in Algorithm::ALL.iter().enumerate() {
            for b in &Algorithm::ALL[i + 1..] {
                assert!(
                    !std::ptr::addr_eq(a.verification(), b.verification()),
                    "{a} and {b}"
                );
            }
        }
    }
}
