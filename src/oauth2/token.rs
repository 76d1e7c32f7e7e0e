//! Finding the OAuth2 access token in a request: `Authorization: Bearer <token>` (RFC 6750
//! §2.1), and telling a JWT from an opaque token. No nginx types: the caller hands over the
//! request headers as plain pairs.

use std::fmt;

/// Hydra's JWT access tokens are 1-2 KiB (more with many scopes or `ext` claims); this bounds
/// what a client can make us decode, hash and forward to introspection.
pub const MAX_TOKEN_LEN: usize = 8192;

/// Kratos session tokens: the session check takes a bearer token with this prefix, not us.
pub const SESSION_TOKEN_PREFIX: &[u8] = b"ory_st_";

/// Hydra's opaque access tokens.
pub const ACCESS_TOKEN_PREFIX: &[u8] = b"ory_at_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenShape {
    /// JWS compact serialization: three base64url parts, header and payload non-empty.
    Jwt,
    /// Anything else: asked of the introspection endpoint.
    Opaque,
}

/// The bearer token of a request, borrowed from its headers. Only bytes RFC 6750 allows
/// (so plain ASCII), at most [`MAX_TOKEN_LEN`] of them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BearerToken<'a> {
    value: &'a str,
    shape: TokenShape,
}

impl<'a> BearerToken<'a> {
    /// Checks the bytes [`bearer_of`] found: a `Bearer` header whose token is empty, too
    /// long or not a b64token is an error, not "no token": the client did send a bearer
    /// credential, and it is not a valid one.
    pub fn parse(value: &'a [u8]) -> Result<Self, TokenError> {
        if value.is_empty() {
            return Err(TokenError::Empty);
        }
        if value.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let padding = value.iter().rev().take_while(|&&b| b == b'=').count();
        let body = &value[..value.len() - padding];
        let classes = Classes::of(body);
        if body.is_empty() || !classes.b64token {
            return Err(TokenError::InvalidBytes);
        }
        // SAFETY: every byte of a b64token and its padding is ASCII.
        let value = unsafe { std::str::from_utf8_unchecked(value) };
        let shape =
            if padding == 0 && classes.jws && classes.dots == 2 && jws_parts(value).is_some() {
                TokenShape::Jwt
            } else {
                TokenShape::Opaque
            };
        Ok(BearerToken { value, shape })
    }

    pub fn as_str(&self) -> &'a str {
        self.value
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.value.as_bytes()
    }

    pub fn shape(&self) -> TokenShape {
        self.shape
    }

    /// A Kratos session token sent as a bearer token: the session check's, not ours. Hydra
    /// never issues an access token with this prefix.
    pub fn is_session_token(&self) -> bool {
        is_session_token(self.as_bytes())
    }
}

impl fmt::Debug for BearerToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is the credential: its length and shape only.
        f.debug_struct("BearerToken")
            .field("shape", &self.shape)
            .field("len", &self.value.len())
            .finish()
    }
}

/// See [`BearerToken::is_session_token`].
pub fn is_session_token(value: &[u8]) -> bool {
    value.starts_with(SESSION_TOKEN_PREFIX)
}

/// The bearer token cannot be used. No variant carries the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// `Authorization: Bearer` with nothing after it.
    Empty,
    TooLong,
    /// A byte outside RFC 6750's b64token, a second space-separated part included.
    InvalidBytes,
}

impl TokenError {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Empty => "the bearer token is empty",
            TokenError::TooLong => "the bearer token is longer than 8192 bytes",
            TokenError::InvalidBytes => "the bearer token contains bytes a token cannot hold",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TokenError {}

/// The bytes after `Bearer ` in the value of an Authorization header, unchecked, or `None`
/// for another scheme: what a cache lookup hashes. An entry exists only for a token that
/// passed [`BearerToken::parse`], so a hit needs no check; a miss parses the same bytes.
/// nginx keeps a request's one Authorization header apart (it refuses a second), so the
/// glue reads it from there instead of searching the header list.
pub fn bearer_of(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], &value[space + 1..]),
        None => (value, &b""[..]),
    };
    scheme.eq_ignore_ascii_case(b"bearer").then_some(token)
}

/// What one pass over a token's bytes (its `=` padding left off) learns. A token is read on
/// every miss, and JWTs are over a kilobyte: the pass has no table lookup and no early exit,
/// so the compiler turns it into vector compares.
struct Classes {
    /// RFC 6750 b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )`.
    b64token: bool,
    /// Only base64url bytes and dots: JWS compact serialization (no padding).
    jws: bool,
    dots: usize,
}

/// The pass reads blocks of this many bytes: a loop over a fixed-size array becomes straight
/// vector code, where one over a slice of any length leaves its tail to a byte-by-byte loop.
const BLOCK: usize = 128;

impl Classes {
    fn of(body: &[u8]) -> Classes {
        // The baseline x86_64 target has 16-byte vectors only; with AVX2 the same pass takes
        // 32 bytes at a time (about half the instructions for a 1.1 kB JWT; callgrind). The
        // answer to the CPU question is cached by the standard library after the first ask.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { Classes::of_avx2(body) };
        }
        Classes::of_any_cpu(body)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn of_avx2(body: &[u8]) -> Classes {
        Classes::of_any_cpu(body)
    }

    /// Inlined into each caller, so that [`Classes::of_avx2`] compiles it with AVX2.
    #[inline(always)]
    fn of_any_cpu(body: &[u8]) -> Classes {
        let (blocks, tail) = body.as_chunks::<BLOCK>();
        // The tail, filled up with a byte of every class but dot, is one more block.
        let mut last = [b'A'; BLOCK];
        last[..tail.len()].copy_from_slice(tail);
        let mut classes = Classes {
            b64token: true,
            jws: true,
            dots: 0,
        };
        for block in blocks.iter().chain([&last]) {
            let (mut not_b64token, mut not_jws, mut dots) = (0u8, 0u8, 0u8);
            for &b in block {
                let alnum = (b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 26);
                let base64url = alnum | (b == b'-') | (b == b'_');
                let dot = b == b'.';
                let b64token = base64url | dot | (b == b'~') | (b == b'+') | (b == b'/');
                not_b64token |= u8::from(!b64token);
                not_jws |= u8::from(!(base64url | dot));
                // At most BLOCK (128) dots: a byte-wide counter keeps every lane a byte.
                dots += u8::from(dot);
            }
            classes.b64token &= not_b64token == 0;
            classes.jws &= not_jws == 0;
            classes.dots += usize::from(dots);
        }
        classes
    }
}

/// The three dot-separated parts of a JWS compact serialization, or `None` unless the header
/// and payload are not empty: what makes a bearer token a JWT, and what the verifier splits.
/// An empty signature still makes a JWT (an unsecured one, `alg: none`): the verifier refuses
/// it, where introspecting it would only ask Hydra in vain.
///
/// `memchr`, not a split: it finds a dot 32 bytes at a time, where `str::split` goes by words
/// and a byte slice's split byte by byte (1,500 and 1,800 instructions over a 1.1 kB token;
/// callgrind).
pub fn jws_parts(token: &str) -> Option<(&str, &str, &str)> {
    let bytes = token.as_bytes();
    let first = memchr::memchr(b'.', bytes)?;
    let second = first + 1 + memchr::memchr(b'.', &bytes[first + 1..])?;
    if first == 0 || second == first + 1 || memchr::memchr(b'.', &bytes[second + 1..]).is_some() {
        return None;
    }
    // Dots are ASCII, so each cut falls on a character boundary.
    Some((
        &token[..first],
        &token[first + 1..second],
        &token[second + 1..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one pass classifies every byte as RFC 6750 and RFC 7515 say, without a table.
    #[test]
    fn every_byte_is_classified() {
        for (b, of) in (0..=255u8).flat_map(|b| {
            [Classes::of, Classes::of_any_cpu].map(|of: fn(&[u8]) -> Classes| (b, of))
        }) {
            let alnum = b.is_ascii_alphanumeric();
            let classes = of(&[b]);
            assert_eq!(
                classes.b64token,
                alnum || b"-._~+/".contains(&b),
                "byte {b}"
            );
            assert_eq!(classes.jws, alnum || b"-_.".contains(&b), "byte {b}");
            assert_eq!(classes.dots, usize::from(b == b'.'), "byte {b}");
        }
    }

    #[test]
    fn three_parts_header_and_payload_not_empty() {
        assert_eq!(jws_parts("a.b.c"), Some(("a", "b", "c")));
        assert_eq!(jws_parts("a.b."), Some(("a", "b", "")));
        assert_eq!(jws_parts("ab.cd.ef"), Some(("ab", "cd", "ef")));
        for token in [
            "", ".", "..", "a.b", "ab", ".b.c", "a..c", "a.b.c.d", "a.b.c.", "a.b..",
        ] {
            assert_eq!(jws_parts(token), None, "{token:?}");
        }
    }

    /// Both builds of the pass agree across blocks and tails of every length.
    #[test]
    fn both_passes_agree() {
        let all = b"aZ9-_.~+/=\x00 \xff";
        let bytes: Vec<u8> = (0..700).map(|i| all[i * 7 % all.len()]).collect();
        let clean: Vec<u8> = (0..700).map(|i| all[i % 6]).collect();
        for input in [&bytes, &clean] {
            for len in 0..input.len() {
                let (a, b) = (
                    Classes::of(&input[..len]),
                    Classes::of_any_cpu(&input[..len]),
                );
                assert_eq!(
                    (a.b64token, a.jws, a.dots),
                    (b.b64token, b.jws, b.dots),
                    "{len}"
                );
            }
        }
    }

    /// What the glue does with a request's Authorization header: [`bearer_of`], then
    /// [`BearerToken::parse`] on a cache miss.
    fn find(header: &str) -> Result<Option<(TokenShape, String)>, TokenError> {
        bearer_of(header.as_bytes())
            .map(BearerToken::parse)
            .transpose()
            .map(|t| t.map(|t| (t.shape(), t.as_str().to_string())))
    }

    fn opaque(v: &str) -> Result<Option<(TokenShape, String)>, TokenError> {
        Ok(Some((TokenShape::Opaque, v.into())))
    }

    fn jwt(v: &str) -> Result<Option<(TokenShape, String)>, TokenError> {
        Ok(Some((TokenShape::Jwt, v.into())))
    }

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

    #[test]
    fn scheme_is_case_insensitive() {
        for header in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR tok"] {
            assert_eq!(find(header), opaque("tok"), "{header}");
        }
    }

    #[test]
    fn no_bearer_token() {
        for header in [
            "Basic dXNlcjpwYXNz",
            "Token tok",
            "Bearertok",
            " Bearer tok",
            "",
        ] {
            assert_eq!(find(header), Ok(None), "{header:?}");
        }
    }

    #[test]
    fn a_bearer_header_without_a_valid_token_is_an_error() {
        assert_eq!(find("Bearer"), Err(TokenError::Empty));
        assert_eq!(find("Bearer "), Err(TokenError::Empty));
        for header in [
            "Bearer  tok",
            "Bearer tok ",
            "Bearer tok extra",
            "Bearer a\tb",
            "Bearer tok\r\nX-Injected: 1",
            "Bearer caf\u{e9}",
            "Bearer a=b",
            "Bearer ===",
            "Bearer a,b",
            "Bearer \"tok\"",
        ] {
            assert_eq!(find(header), Err(TokenError::InvalidBytes), "{header:?}");
        }
    }

    #[test]
    fn every_b64token_byte_is_accepted() {
        let all = "ABCXYZabcxyz0189-._~+/";
        assert_eq!(BearerToken::parse(all.as_bytes()).unwrap().as_str(), all);
        for padded in ["a=", "a==", "a+/=="] {
            assert!(BearerToken::parse(padded.as_bytes()).is_ok(), "{padded}");
        }
        for b in 0u8..=255 {
            let ok = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(BearerToken::parse(&[b'a', b, b'a']).is_ok(), ok, "{b:#x}");
        }
        // bytes that are not ASCII never make a token, even as valid UTF-8
        assert!(BearerToken::parse("tök".as_bytes()).is_err());
        assert!(BearerToken::parse(b"\xff").is_err());
    }

    #[test]
    fn length_limit() {
        let max = "a".repeat(MAX_TOKEN_LEN);
        assert_eq!(
            BearerToken::parse(max.as_bytes()).unwrap().as_str().len(),
            8192
        );
        let over = format!("Bearer {max}a");
        assert_eq!(find(&over), Err(TokenError::TooLong));
        // Length is checked before bytes: a long value is not scanned.
        let over_bad = format!("Bearer {max}\u{1}");
        assert_eq!(find(&over_bad), Err(TokenError::TooLong));
    }

    #[test]
    fn shapes() {
        assert_eq!(find(&format!("Bearer {JWT}")), jwt(JWT));
        for token in [
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            "a.b.c",
            "a-_.b_-.c-_",
        ] {
            assert_eq!(
                BearerToken::parse(token.as_bytes()).unwrap().shape(),
                TokenShape::Jwt
            );
        }
        for token in [
            "ory_at_k3Ymb0ZkZQ.Vq8pDqzE8lBbTZ3MEZ1j2",
            "plain",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "a.b.c=",
            "a+.b.c",
            "a.b/.c",
            "a.b.c~",
            "...",
        ] {
            assert_eq!(
                BearerToken::parse(token.as_bytes()).unwrap().shape(),
                TokenShape::Opaque,
                "{token}"
            );
        }
    }

    #[test]
    fn session_tokens_are_not_ours() {
        let t = BearerToken::parse(b"ory_st_abcDEF123").unwrap();
        assert!(t.is_session_token());
        assert!(!BearerToken::parse(b"ory_at_abc")
            .unwrap()
            .is_session_token());
        assert!(!BearerToken::parse(JWT.as_bytes())
            .unwrap()
            .is_session_token());
        assert!(!is_session_token(b"ory_st"));
        assert!(!is_session_token(b"ORY_ST_abc"));
    }

    #[test]
    fn error_texts() {
        assert_eq!(TokenError::Empty.to_string(), "the bearer token is empty");
        assert_eq!(
            TokenError::TooLong.to_string(),
            format!("the bearer token is longer than {MAX_TOKEN_LEN} bytes")
        );
        assert_eq!(
            TokenError::InvalidBytes.to_string(),
            "the bearer token contains bytes a token cannot hold"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = BearerToken::parse(b"ory_at_s3cr3tvalue").unwrap();
        let text = format!("{t:?} {t:#?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("18") && text.contains("Opaque"), "{text}");
    }
}
