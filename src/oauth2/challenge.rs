//! The `WWW-Authenticate` value of a refusal (RFC 6750 §3). No `error_description`: why a
//! token failed is written to the log, never told to the client.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge<'a> {
    /// The request had no bearer token (401; RFC 6750 §3.1 says no error code then).
    NoToken,
    /// 401.
    InvalidToken,
    /// 403; `scope` is the space-separated scope the resource needs.
    InsufficientScope { scope: &'a str },
}

/// `Bearer`, `Bearer realm="api"`, `Bearer error="invalid_token"`,
/// `Bearer realm="api", error="insufficient_scope", scope="a b"`.
pub fn www_authenticate(challenge: Challenge<'_>, realm: Option<&str>) -> String {
    let mut params = Vec::with_capacity(3);
    if let Some(realm) = realm {
        params.push(("realm", realm));
    }
    match challenge {
        Challenge::NoToken => {}
        Challenge::InvalidToken => params.push(("error", "invalid_token")),
        Challenge::InsufficientScope { scope } => {
            params.push(("error", "insufficient_scope"));
            params.push(("scope", scope));
        }
    }
    let mut out = String::from("Bearer");
    for (i, (name, value)) in params.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        out.push_str(name);
        out.push('=');
        quote_into(&mut out, value);
    }
    out
}

/// An RFC 9110 quoted-string: `"` and `\` get a backslash. Control bytes cannot be in a
/// quoted-string at all; they are percent-encoded like every other text we put in headers
/// (configuration validation should keep them out in the first place).
fn quote_into(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => {
                let _ = write!(out, "%{:02X}", c as u8);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_challenges() {
        assert_eq!(www_authenticate(Challenge::NoToken, None), "Bearer");
        assert_eq!(
            www_authenticate(Challenge::InvalidToken, None),
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(
            www_authenticate(Challenge::InsufficientScope { scope: "a b" }, None),
            r#"Bearer error="insufficient_scope", scope="a b""#
        );
    }

    #[test]
    fn with_a_realm() {
        assert_eq!(
            www_authenticate(Challenge::NoToken, Some("api")),
            r#"Bearer realm="api""#
        );
        assert_eq!(
            www_authenticate(Challenge::InvalidToken, Some("api")),
            r#"Bearer realm="api", error="invalid_token""#
        );
        assert_eq!(
            www_authenticate(
                Challenge::InsufficientScope {
                    scope: "read:photos"
                },
                Some("api")
            ),
            r#"Bearer realm="api", error="insufficient_scope", scope="read:photos""#
        );
    }

    #[test]
    fn values_are_quote_safe() {
        assert_eq!(
            www_authenticate(Challenge::NoToken, Some(r#"a"b\c"#)),
            r#"Bearer realm="a\"b\\c""#
        );
        assert_eq!(
            www_authenticate(Challenge::InsufficientScope { scope: "x\"\r\ny" }, None),
            r#"Bearer error="insufficient_scope", scope="x\"%0D%0Ay""#
        );
        assert_eq!(
            www_authenticate(Challenge::InsufficientScope { scope: "" }, None),
            r#"Bearer error="insufficient_scope", scope="""#
        );
        let v = www_authenticate(Challenge::NoToken, Some("\u{7f}\t\u{0}é"));
        assert_eq!(v, "Bearer realm=\"%7F%09%00é\"");
    }
}
