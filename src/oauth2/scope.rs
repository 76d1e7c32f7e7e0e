//! OAuth2 scopes (RFC 6749 §3.3): the syntax a configured scope must have, and which of the
//! required scopes a token lacks. Matching is exact and case-sensitive, as RFC 6749 says;
//! Hydra's `wildcard` scope strategy applies when it issues a token, not here.

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`: visible ASCII but `"` and `\`, which is
/// also what lets a scope go unescaped inside the quoted `scope="..."` of a challenge.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// For configuration: a short phrase in the style of `nginx -t`.
pub fn check_scope_token(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err("scope is empty")
    } else if is_scope_token(s) {
        Ok(())
    } else {
        Err("scope contains a character RFC 6749 does not allow (space, quote, backslash or non-ASCII)")
    }
}

/// The required scopes that are not granted, in configuration order.
pub fn missing<'a, 'g>(
    required: &'a [Box<str>],
    granted: impl Iterator<Item = &'g str> + Clone,
) -> Vec<&'a str> {
    required
        .iter()
        .filter(|r| !granted.clone().any(|g| g == &***r))
        .map(|r| &**r)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens() {
        for ok in [
            "openid",
            "read:photos",
            "offline_access",
            "a",
            "!",
            "#[]~",
            "https://x/y?z=1",
        ] {
            assert!(is_scope_token(ok), "{ok}");
            assert_eq!(check_scope_token(ok), Ok(()));
        }
        for bad in [
            "",
            "a b",
            "a\"b",
            "a\\b",
            "a\tb",
            "caf\u{e9}",
            "a\u{7f}",
            "a\u{0}",
        ] {
            assert!(!is_scope_token(bad), "{bad:?}");
            assert!(check_scope_token(bad).is_err());
        }
        assert_eq!(check_scope_token(""), Err("scope is empty"));
        for b in 0u8..=0x7f {
            let ok = matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e);
            assert_eq!(is_scope_token(&char::from(b).to_string()), ok, "{b:#x}");
        }
    }

    #[test]
    fn missing_scopes() {
        let list = |s: &[&str]| s.iter().map(|s| Box::from(*s)).collect::<Vec<Box<str>>>();
        let granted = |s: &'static [&'static str]| s.iter().copied();
        let required = list(&["read", "write", "admin"]);
        assert_eq!(
            missing(&required, granted(&["write", "other"])),
            ["read", "admin"]
        );
        assert!(missing(&required, granted(&["admin", "read", "write"])).is_empty());
        assert!(missing(&[], granted(&["a"])).is_empty());
        assert_eq!(missing(&list(&["a"]), granted(&[])), ["a"]);
        // case-sensitive, no prefixes, no wildcards
        assert_eq!(missing(&list(&["Read"]), granted(&["read"])), ["Read"]);
        assert_eq!(
            missing(&list(&["read"]), granted(&["read:all", "*"])),
            ["read"]
        );
    }
}
