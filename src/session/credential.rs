//! Finding the credential in a request, with the precedence Kratos itself applies
//! (`session/manager_http.go`): `X-Session-Token`, then the session cookie, then
//! `Authorization: Bearer`. No nginx types: the caller hands over the request headers.

use std::fmt;

use memchr::memmem;

/// Longer values are refused before Kratos is asked: real session cookies and tokens are a
/// few hundred bytes, and this bounds what a client can make us hash, copy and forward.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    SessionToken,
    Cookie,
    Bearer,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::SessionToken => "X-Session-Token",
            CredentialKind::Cookie => "cookie",
            CredentialKind::Bearer => "bearer token",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            CredentialKind::SessionToken => "X-Session-Token",
            CredentialKind::Cookie => "session cookie",
            CredentialKind::Bearer => "bearer token",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ory_session_cookie NAME;` — NAME exact, or `NAME*` = prefix match (Ory Network names the
/// cookie `ory_session_<project slug>`, which a configuration may not want to hard-code).
#[derive(Clone, Debug)]
pub struct CookieMatch {
    /// The whole name, or the prefix.
    name: Box<[u8]>,
    prefix: bool,
    /// Finds the name in a Cookie header at SIMD speed; built once, with the configuration.
    finder: memmem::Finder<'static>,
}

impl PartialEq for CookieMatch {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.prefix == other.prefix
    }
}

impl Eq for CookieMatch {}

impl CookieMatch {
    pub fn parse(arg: &[u8]) -> Result<Self, &'static str> {
        let (name, prefix) = match arg.split_last() {
            Some((b'*', rest)) => (rest, true),
            _ => (arg, false),
        };
        if name.is_empty() {
            return Err(if prefix {
                "cookie name prefix is empty"
            } else {
                "cookie name is empty"
            });
        }
        // '*' is a token character, but here it only means "prefix", so a name with '*'
        // elsewhere is almost certainly a typo.
        if !name.iter().all(|&b| is_token_char(b) && b != b'*') {
            return Err("invalid character in cookie name");
        }
        Ok(CookieMatch {
            name: name.into(),
            prefix,
            finder: memmem::Finder::new(name).into_owned(),
        })
    }

    /// The configured name, or the prefix when [`is_prefix`](Self::is_prefix).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        if self.prefix {
            // The matched name is forwarded to Kratos in a Cookie header, so with a prefix
            // the part we did not configure must be a valid cookie name as well.
            name.starts_with(&self.name)
                && name[self.name.len()..].iter().all(|&b| is_token_char(b))
        } else {
            name == &*self.name
        }
    }
}

/// The credential chosen for a request, borrowed from its headers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    pub kind: CredentialKind,
    /// Empty unless `kind` is `Cookie`.
    pub cookie_name: &'a [u8],
    pub value: &'a [u8],
}

impl Credential<'_> {
    /// An owned copy for the Kratos client thread, which outlives the request's memory.
    pub fn to_owned(&self) -> OwnedCredential {
        OwnedCredential::from(self)
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("len", &self.value.len())
            .finish()
    }
}

/// What crosses to the Kratos client thread. Both strings hold validated ASCII only.
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedCredential {
    pub kind: CredentialKind,
    pub cookie_name: String,
    pub value: String,
}

impl From<&Credential<'_>> for OwnedCredential {
    fn from(c: &Credential<'_>) -> Self {
        // Lossy conversion never alters what find_credential returns (ASCII only), and
        // cannot panic on a hand-built Credential.
        OwnedCredential {
            kind: c.kind,
            cookie_name: String::from_utf8_lossy(c.cookie_name).into_owned(),
            value: String::from_utf8_lossy(c.value).into_owned(),
        }
    }
}

impl fmt::Debug for OwnedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedCredential")
            .field("kind", &self.kind)
            .field("len", &self.value.len())
            .finish()
    }
}

/// The chosen credential cannot be used. Neither variant carries the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialError {
    TooLong(CredentialKind),
    InvalidBytes(CredentialKind),
}

impl CredentialError {
    pub fn kind(self) -> CredentialKind {
        match self {
            CredentialError::TooLong(kind) | CredentialError::InvalidBytes(kind) => kind,
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::TooLong(kind) => write!(
                f,
                "{} is longer than {MAX_CREDENTIAL_LEN} bytes",
                kind.noun()
            ),
            CredentialError::InvalidBytes(kind) => {
                write!(f, "{} contains invalid characters", kind.noun())
            }
        }
    }
}

impl std::error::Error for CredentialError {}

/// Returns the credential Kratos would use for a request with these headers, or `None` when
/// there is none. `headers` are `(name, value)` pairs in request order.
///
/// A chosen credential that is too long or holds bytes Kratos could never have issued is an
/// error rather than a reason to try the next kind: silently authenticating a request with a
/// different credential than the one Kratos would pick could attach it to another identity.
///
/// The same as [`choose_credential`] followed by [`Credential::check_bytes`].
pub fn find_credential<'a, I>(
    headers: I,
    cookie: &CookieMatch,
) -> Result<Option<Credential<'a>>, CredentialError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    match choose_credential(headers, cookie)? {
        Some(found) => found.check_bytes().map(|()| Some(found)),
        None => Ok(None),
    }
}

/// The credential Kratos would pick, bounded in length but with its bytes not yet checked.
///
/// The access handler checks the bytes only when the cache cannot answer: a cached entry is
/// only ever made for a credential that passed the check, and its key covers every byte, so
/// a hit needs no second pass over a value of a few hundred bytes.
pub fn choose_credential<'a, I>(
    headers: I,
    cookie: &CookieMatch,
) -> Result<Option<Credential<'a>>, CredentialError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut token_seen = false;
    let mut token = None;
    let mut session_cookie = None;
    let mut authorization = None;

    for (name, value) in headers {
        // The length first: most headers are none of the three, and that costs one compare.
        match name.len() {
            // Like Go's Header.Get, only the first header counts, even when it is empty.
            15 if !token_seen && name.eq_ignore_ascii_case(b"x-session-token") => {
                token_seen = true;
                let value = trim_ows(value);
                if !value.is_empty() {
                    token = Some(value);
                    break;
                }
            }
            6 if session_cookie.is_none() && name.eq_ignore_ascii_case(b"cookie") => {
                session_cookie = find_cookie(value, cookie);
            }
            13 if authorization.is_none() && name.eq_ignore_ascii_case(b"authorization") => {
                authorization = Some(value);
            }
            _ => {}
        }
    }

    let found = if let Some(value) = token {
        Credential {
            kind: CredentialKind::SessionToken,
            cookie_name: b"",
            value,
        }
    } else if let Some((cookie_name, value)) = session_cookie {
        Credential {
            kind: CredentialKind::Cookie,
            cookie_name,
            value,
        }
    } else if let Some(value) = authorization.and_then(bearer_token) {
        Credential {
            kind: CredentialKind::Bearer,
            cookie_name: b"",
            value,
        }
    } else {
        return Ok(None);
    };

    if found.value.len() > MAX_CREDENTIAL_LEN {
        return Err(CredentialError::TooLong(found.kind));
    }
    Ok(Some(found))
}

impl Credential<'_> {
    /// Refuses bytes Kratos could never have issued: they would only be forwarded to it.
    pub fn check_bytes(&self) -> Result<(), CredentialError> {
        let allowed = match self.kind {
            CredentialKind::Cookie => &COOKIE_OCTET,
            CredentialKind::SessionToken | CredentialKind::Bearer => &VISIBLE_ASCII,
        };
        if self.value.iter().all(|&b| allowed[b as usize]) {
            Ok(())
        } else {
            Err(CredentialError::InvalidBytes(self.kind))
        }
    }
}

/// The first pair in one Cookie header whose name matches and whose value is not empty:
/// what splitting the header on ';' and each pair on its first '=' would find, but without
/// looking at other cookies byte by byte. The name is searched for (memmem), and a match
/// counts only where a pair starts: after the header's start or a ';', and OWS.
///
/// Matches of the name are taken without overlap: a match that starts inside another one
/// follows a name byte, never a ';' or OWS, so it could not start a pair anyway. Linear in the
/// header's length.
fn find_cookie<'a>(header: &'a [u8], want: &CookieMatch) -> Option<(&'a [u8], &'a [u8])> {
    for start in want.finder.find_iter(header) {
        if !matches!(trim_ows(&header[..start]).last(), None | Some(b';')) {
            continue;
        }
        let mut end = start + want.name.len();
        if want.prefix {
            end += header[end..]
                .iter()
                .take_while(|&&b| is_token_char(b))
                .count();
        }
        let Some(rest) = trim_ows_start(&header[end..]).strip_prefix(b"=") else {
            continue;
        };
        let value = &rest[..memchr::memchr(b';', rest).unwrap_or(rest.len())];
        let value = unquote(trim_ows(value));
        if !value.is_empty() {
            return Some((&header[start..end], value));
        }
    }
    None
}

/// A Cookie header without the session cookie, for `ory_session_hide_credentials`: every
/// pair whose name matches is dropped, the other cookies stay as they were. `None` when
/// nothing matched (the header is left alone).
pub fn without_session_cookie(header: &[u8], want: &CookieMatch) -> Option<Vec<u8>> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut dropped = false;
    for pair in header.split(|&b| b == b';') {
        let name = pair
            .iter()
            .position(|&b| b == b'=')
            .map(|eq| trim_ows(&pair[..eq]));
        if name.is_some_and(|name| want.matches(name)) {
            dropped = true;
        } else if !trim_ows(pair).is_empty() {
            kept.push(trim_ows(pair));
        }
    }
    dropped.then(|| kept.join(&b"; "[..]))
}

/// RFC 6265 allows a cookie value in double quotes; the quotes are not part of the value.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// Kratos (Go) splits on single spaces and wants exactly "<scheme> <token>".
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let space = header.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&header[..space], &header[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.contains(&b' ') || token.is_empty() {
        return None;
    }
    Some(token)
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let mut s = trim_ows_start(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn trim_ows_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// RFC 7230 tchar, which RFC 6265 uses for cookie names.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6265 cookie-octet: visible ASCII except '"', ',', ';' and '\'.
const fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// Byte tables for `check_bytes`: one load per byte instead of a chain of range tests.
static COOKIE_OCTET: [bool; 256] = byte_table(false);
static VISIBLE_ASCII: [bool; 256] = byte_table(true);

const fn byte_table(any_visible: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = if any_visible {
            matches!(b, 0x21..=0x7e)
        } else {
            is_cookie_octet(b as u8)
        };
        b += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(name: &str) -> CookieMatch {
        CookieMatch::parse(name.as_bytes()).unwrap()
    }

    fn find<'a>(
        headers: &'a [(&'a str, &'a str)],
        cookie: &CookieMatch,
    ) -> Result<Option<Credential<'a>>, CredentialError> {
        find_credential(
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            cookie,
        )
    }

    /// (kind, cookie name, value) as strings, for terse assertions.
    fn found(
        headers: &[(&str, &str)],
        cookie: &CookieMatch,
    ) -> Option<(CredentialKind, String, String)> {
        find(headers, cookie).unwrap().map(|c| {
            (
                c.kind,
                String::from_utf8(c.cookie_name.to_vec()).unwrap(),
                String::from_utf8(c.value.to_vec()).unwrap(),
            )
        })
    }

    fn token(v: &str) -> Option<(CredentialKind, String, String)> {
        Some((CredentialKind::SessionToken, String::new(), v.into()))
    }

    fn cookie(name: &str, v: &str) -> Option<(CredentialKind, String, String)> {
        Some((CredentialKind::Cookie, name.into(), v.into()))
    }

    fn bearer(v: &str) -> Option<(CredentialKind, String, String)> {
        Some((CredentialKind::Bearer, String::new(), v.into()))
    }

    const SESSION: &str = "ory_kratos_session";

    #[test]
    fn kind_names() {
        assert_eq!(CredentialKind::SessionToken.as_str(), "X-Session-Token");
        assert_eq!(CredentialKind::Cookie.as_str(), "cookie");
        assert_eq!(CredentialKind::Bearer.as_str(), "bearer token");
        assert_eq!(CredentialKind::Bearer.to_string(), "bearer token");
    }

    #[test]
    fn cookie_match_parse() {
        let cookie = exact("ory_kratos_session");
        assert_eq!(
            (cookie.name(), cookie.is_prefix()),
            (&b"ory_kratos_session"[..], false)
        );
        let cookie = exact("ory_session_*");
        assert_eq!(
            (cookie.name(), cookie.is_prefix()),
            (&b"ory_session_"[..], true)
        );
        assert_eq!(CookieMatch::parse(b""), Err("cookie name is empty"));
        assert_eq!(CookieMatch::parse(b"*"), Err("cookie name prefix is empty"));
        for bad in [
            &b"a*b"[..],
            b"a**",
            b"*a",
            b"a b",
            b"a=b",
            b"a;b",
            b"a\"b",
            b"a,b",
            b"a(b)",
            b"a\x7f",
            b"caf\xc3\xa9",
            b"a\tb",
        ] {
            assert_eq!(
                CookieMatch::parse(bad),
                Err("invalid character in cookie name"),
                "{bad:?}"
            );
        }
        assert!(CookieMatch::parse(b"A-z_0.9!#$%&'+^`|~").is_ok());
    }

    #[test]
    fn cookie_match_matches() {
        let e = exact("sess");
        assert!(e.matches(b"sess"));
        assert!(!e.matches(b"Sess"), "names are case-sensitive");
        assert!(!e.matches(b"sess2"));
        assert!(!e.matches(b"ses"));

        let p = exact("ory_session_*");
        assert!(p.matches(b"ory_session_abc123"));
        assert!(p.matches(b"ory_session_"));
        assert!(!p.matches(b"ory_session"));
        assert!(!p.matches(b"Ory_session_x"));
        assert!(!p.matches(b"ory_session_a b"));
        assert!(!p.matches(b"ory_session_\x01"));
    }

    #[test]
    fn nothing_found() {
        assert_eq!(found(&[], &exact(SESSION)), None);
        assert_eq!(
            found(
                &[("Host", "example.com"), ("Cookie", "other=1; theme=dark")],
                &exact(SESSION)
            ),
            None
        );
    }

    #[test]
    fn session_token_has_precedence() {
        let h = [
            ("Authorization", "Bearer b"),
            ("Cookie", "ory_kratos_session=c"),
            ("X-Session-Token", "ory_st_t"),
        ];
        assert_eq!(found(&h, &exact(SESSION)), token("ory_st_t"));
    }

    #[test]
    fn session_token_name_is_case_insensitive_and_first_wins() {
        let h = [("x-SESSION-token", "one"), ("X-Session-Token", "two")];
        assert_eq!(found(&h, &exact(SESSION)), token("one"));
    }

    #[test]
    fn empty_session_token_is_absent() {
        let h = [("X-Session-Token", ""), ("Cookie", "ory_kratos_session=c")];
        assert_eq!(found(&h, &exact(SESSION)), cookie(SESSION, "c"));
        let h = [("X-Session-Token", "  "), ("Authorization", "bearer b")];
        assert_eq!(found(&h, &exact(SESSION)), bearer("b"));
        // Go's Header.Get looks at the first header only.
        let h = [("X-Session-Token", ""), ("X-Session-Token", "second")];
        assert_eq!(found(&h, &exact(SESSION)), None);
    }

    #[test]
    fn session_token_surrounding_whitespace_is_trimmed() {
        let h = [("X-Session-Token", " \tabc\t ")];
        assert_eq!(found(&h, &exact(SESSION)), token("abc"));
    }

    #[test]
    fn cookie_beats_bearer() {
        let h = [
            ("Authorization", "Bearer b"),
            ("Cookie", "a=1; ory_kratos_session=c; z=2"),
        ];
        assert_eq!(found(&h, &exact(SESSION)), cookie(SESSION, "c"));
    }

    #[test]
    fn cookie_pair_parsing() {
        let m = exact(SESSION);
        for header in [
            "ory_kratos_session=v",
            "a=1;ory_kratos_session=v",
            "a=1; ory_kratos_session=v;",
            "a=1 ;  ory_kratos_session = v ; b=2",
            "\tory_kratos_session=v\t",
            "flag; ory_kratos_session=v",
            "ory_kratos_session; ory_kratos_session=v",
            ";;ory_kratos_session=v",
            "ory_kratos_session=\"v\"",
        ] {
            assert_eq!(
                found(&[("Cookie", header)], &m),
                cookie(SESSION, "v"),
                "{header}"
            );
        }
        // Only the first '=' separates; base64 padding survives.
        assert_eq!(
            found(&[("Cookie", "ory_kratos_session=YWJj==")], &m),
            cookie(SESSION, "YWJj==")
        );
    }

    #[test]
    fn cookie_names_are_case_sensitive_and_header_name_is_not() {
        let m = exact(SESSION);
        assert_eq!(found(&[("Cookie", "ORY_KRATOS_SESSION=v")], &m), None);
        assert_eq!(
            found(&[("COOKIE", "ory_kratos_session=v")], &m),
            cookie(SESSION, "v")
        );
        assert_eq!(found(&[("Cookie2", "ory_kratos_session=v")], &m), None);
    }

    #[test]
    fn first_matching_cookie_wins() {
        let m = exact(SESSION);
        assert_eq!(
            found(
                &[(
                    "Cookie",
                    "ory_kratos_session=first; ory_kratos_session=second"
                )],
                &m
            ),
            cookie(SESSION, "first")
        );
        assert_eq!(
            found(
                &[
                    ("Cookie", "a=1"),
                    ("Cookie", "ory_kratos_session=first"),
                    ("Cookie", "ory_kratos_session=second"),
                ],
                &m
            ),
            cookie(SESSION, "first")
        );
    }

    #[test]
    fn empty_cookie_is_absent() {
        let m = exact(SESSION);
        assert_eq!(found(&[("Cookie", "ory_kratos_session=")], &m), None);
        assert_eq!(found(&[("Cookie", "ory_kratos_session=\"\"")], &m), None);
        assert_eq!(
            found(
                &[
                    ("Cookie", "ory_kratos_session="),
                    ("Authorization", "Bearer b")
                ],
                &m
            ),
            bearer("b")
        );
        assert_eq!(
            found(
                &[("Cookie", "ory_kratos_session=; ory_kratos_session=v")],
                &m
            ),
            cookie(SESSION, "v")
        );
    }

    #[test]
    fn quoted_cookie() {
        let m = exact(SESSION);
        assert_eq!(
            found(&[("Cookie", "ory_kratos_session=\"abc\"")], &m),
            cookie(SESSION, "abc")
        );
        for header in [
            "ory_kratos_session=\"abc",
            "ory_kratos_session=abc\"",
            "ory_kratos_session=\"",
            "ory_kratos_session=\"a\"b\"",
        ] {
            assert_eq!(
                find(&[("Cookie", header)], &m).unwrap_err(),
                CredentialError::InvalidBytes(CredentialKind::Cookie),
                "{header}"
            );
        }
    }

    #[test]
    fn prefix_cookie() {
        let m = exact("ory_session_*");
        assert_eq!(
            found(
                &[(
                    "Cookie",
                    "ory_session=x; ory_session_acme42=v; ory_session_b=w"
                )],
                &m
            ),
            cookie("ory_session_acme42", "v")
        );
    }

    #[test]
    fn many_cookies() {
        let mut header = String::new();
        for i in 0..20_000 {
            header.push_str(&format!("c{i}=value{i}; "));
        }
        header.push_str("ory_kratos_session=needle");
        let h = [("Cookie", header.as_str())];
        assert_eq!(found(&h, &exact(SESSION)), cookie(SESSION, "needle"));
        assert_eq!(found(&h, &exact("c19999")), cookie("c19999", "value19999"));
        assert_eq!(found(&h, &exact("absent")), None);

        let headers: Vec<(String, String)> = (0..5_000)
            .map(|i| ("Cookie".to_string(), format!("c{i}=v{i}")))
            .collect();
        let it = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let c = find_credential(it, &exact("c4999")).unwrap().unwrap();
        assert_eq!(c.value, b"v4999");
    }

    #[test]
    fn bearer_rules() {
        let m = exact(SESSION);
        for header in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR tok"] {
            assert_eq!(
                found(&[("Authorization", header)], &m),
                bearer("tok"),
                "{header}"
            );
        }
        assert_eq!(
            found(&[("authorization", "Bearer ory_st_abc.def")], &m),
            bearer("ory_st_abc.def")
        );
        for header in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer  tok",
            "Bearer tok extra",
            "Bearer tok ",
            " Bearer tok",
            "Bearertok",
            "Token tok",
            "",
        ] {
            assert_eq!(found(&[("Authorization", header)], &m), None, "{header:?}");
        }
        // Like Go's Header.Get, only the first Authorization header is read.
        assert_eq!(
            found(
                &[
                    ("Authorization", "Basic x"),
                    ("Authorization", "Bearer tok")
                ],
                &m
            ),
            None
        );
    }

    #[test]
    fn bearer_with_tab_is_invalid() {
        assert_eq!(
            find(&[("Authorization", "Bearer a\tb")], &exact(SESSION)).unwrap_err(),
            CredentialError::InvalidBytes(CredentialKind::Bearer)
        );
    }

    #[test]
    fn length_limit() {
        let m = exact(SESSION);
        let max = "a".repeat(MAX_CREDENTIAL_LEN);
        let over = "a".repeat(MAX_CREDENTIAL_LEN + 1);

        let h = [("X-Session-Token", max.as_str())];
        assert_eq!(
            find(&h, &m).unwrap().unwrap().value.len(),
            MAX_CREDENTIAL_LEN
        );
        let h = [("X-Session-Token", over.as_str())];
        assert_eq!(
            find(&h, &m).unwrap_err(),
            CredentialError::TooLong(CredentialKind::SessionToken)
        );

        let c = format!("ory_kratos_session={max}");
        assert!(find(&[("Cookie", c.as_str())], &m).unwrap().is_some());
        let c = format!("ory_kratos_session={over}");
        assert_eq!(
            find(&[("Cookie", c.as_str())], &m).unwrap_err(),
            CredentialError::TooLong(CredentialKind::Cookie)
        );

        let b = format!("Bearer {over}");
        assert_eq!(
            find(&[("Authorization", b.as_str())], &m).unwrap_err(),
            CredentialError::TooLong(CredentialKind::Bearer)
        );
    }

    #[test]
    fn invalid_chosen_credential_does_not_fall_through() {
        let m = exact(SESSION);
        let h = [
            ("X-Session-Token", "bad\x01token"),
            ("Cookie", "ory_kratos_session=good"),
        ];
        assert_eq!(
            find(&h, &m).unwrap_err(),
            CredentialError::InvalidBytes(CredentialKind::SessionToken)
        );
        let long = "a".repeat(MAX_CREDENTIAL_LEN + 1);
        let c = format!("ory_kratos_session={long}");
        let h = [("Cookie", c.as_str()), ("Authorization", "Bearer good")];
        assert_eq!(
            find(&h, &m).unwrap_err(),
            CredentialError::TooLong(CredentialKind::Cookie)
        );
    }

    #[test]
    fn cookie_octets() {
        let m = exact(SESSION);
        let good: String = (0x21u8..=0x7e)
            .filter(|b| !b"\",;\\".contains(b))
            .map(char::from)
            .collect();
        let c = format!("ory_kratos_session={good}");
        assert_eq!(found(&[("Cookie", c.as_str())], &m), cookie(SESSION, &good));

        for bad in [
            &b"a,b"[..],
            b"a\\b",
            b"a b",
            b"a\x7fb",
            b"a\x00b",
            b"caf\xc3\xa9",
        ] {
            let mut header = b"ory_kratos_session=".to_vec();
            header.extend_from_slice(bad);
            let h = [(&b"Cookie"[..], &header[..])];
            assert_eq!(
                find_credential(h, &m).unwrap_err(),
                CredentialError::InvalidBytes(CredentialKind::Cookie),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_bytes() {
        let m = exact(SESSION);
        let all_visible: String = (0x21u8..=0x7e).map(char::from).collect();
        let h = [("X-Session-Token", all_visible.as_str())];
        assert_eq!(found(&h, &m), token(&all_visible));
        for bad in [&b"a b"[..], b"a\x7f", b"\x00", b"\xff", b"a\rb"] {
            let h = [(&b"X-Session-Token"[..], bad)];
            assert_eq!(
                find_credential(h, &m).unwrap_err(),
                CredentialError::InvalidBytes(CredentialKind::SessionToken),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            CredentialError::TooLong(CredentialKind::Cookie).to_string(),
            "session cookie is longer than 4096 bytes"
        );
        assert_eq!(
            CredentialError::TooLong(CredentialKind::SessionToken).to_string(),
            "X-Session-Token is longer than 4096 bytes"
        );
        assert_eq!(
            CredentialError::InvalidBytes(CredentialKind::Bearer).to_string(),
            "bearer token contains invalid characters"
        );
        assert_eq!(
            CredentialError::InvalidBytes(CredentialKind::Cookie).kind(),
            CredentialKind::Cookie
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let h = [("Cookie", "ory_kratos_session=s3cr3tvalue")];
        let c = find(&h, &exact(SESSION)).unwrap().unwrap();
        let owned = c.to_owned();
        assert_eq!(owned.kind, CredentialKind::Cookie);
        assert_eq!(owned.cookie_name, SESSION);
        assert_eq!(owned.value, "s3cr3tvalue");
        assert_eq!(OwnedCredential::from(&c), owned);
        for text in [
            format!("{c:?}"),
            format!("{owned:?}"),
            format!("{owned:#?}"),
        ] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("11"), "{text}");
        }
    }

    #[test]
    fn hiding_the_session_cookie_keeps_the_others() {
        let exact = CookieMatch::parse(b"ory_kratos_session").unwrap();
        assert_eq!(
            without_session_cookie(b"a=1; ory_kratos_session=x; b=2", &exact).as_deref(),
            Some(&b"a=1; b=2"[..])
        );
        assert_eq!(
            without_session_cookie(b"ory_kratos_session=x", &exact).as_deref(),
            Some(&b""[..])
        );
        assert_eq!(
            without_session_cookie(b"ory_kratos_session=x;ory_kratos_session=y;c=3", &exact)
                .as_deref(),
            Some(&b"c=3"[..])
        );
        assert_eq!(without_session_cookie(b"a=1; b=2", &exact), None);
        let prefix = CookieMatch::parse(b"ory_session_*").unwrap();
        assert_eq!(
            without_session_cookie(b"ory_session_abc=x; theme=dark", &prefix).as_deref(),
            Some(&b"theme=dark"[..])
        );
    }
}
