//! Browser navigations and the login redirect built for them (no nginx types).

/// Whether a request's `Accept` header says it is a browser navigation: `text/html` (or
/// XHTML) is listed, and no other listed type is preferred over it. `fetch()` and API
/// clients send `*/*` or `application/json` and keep getting plain status codes.
pub fn prefers_html(accept: &[u8]) -> bool {
    let Ok(accept) = std::str::from_utf8(accept) else {
        return false;
    };
    let mut html_q: Option<f32> = None;
    let mut other_q: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html_q = Some(html_q.map_or(q, |h| h.max(q))),
            // Wildcards say what a client tolerates, not what it asks for.
            "*/*" | "text/*" | "" => {}
            _ => other_q = other_q.max(q),
        }
    }
    matches!(html_q, Some(q) if q > 0.0 && q >= other_q)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, as a query value.
pub fn percent_encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() * 3 / 2);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Location` of a login redirect: `login_url` with `aal=` (for a step-up) and
/// `return_to=` added as query parameters, unless the URL already has them.
pub fn login_location(login_url: &str, return_to: &[u8], aal: Option<&str>) -> String {
    let (base, fragment) = match login_url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (login_url, None),
    };
    let query = base.split_once('?').map_or("", |(_, q)| q);
    let has = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    let mut out = base.to_owned();
    let mut add = |name: &str, value: &[u8]| {
        let separator = if !out.contains('?') {
            "?"
        } else if out.ends_with('?') || out.ends_with('&') {
            ""
        } else {
            "&"
        };
        out.push_str(separator);
        out.push_str(name);
        out.push('=');
        out.push_str(&percent_encode(value));
    };
    if let Some(aal) = aal {
        if !has("aal") {
            add("aal", aal.as_bytes());
        }
    }
    if !has("return_to") && !return_to.is_empty() {
        add("return_to", return_to);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Authenticator assurance levels compare by their number: `aal1` < `aal2` < `aal3`.
pub fn aal_rank(aal: &str) -> Option<u8> {
    let digit = aal.strip_prefix("aal")?;
    match digit {
        "0" | "1" | "2" | "3" => digit.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_prefer_html() {
        let chrome =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(prefers_html(chrome.as_bytes()));
        assert!(prefers_html(b"text/html"));
        assert!(prefers_html(b"TEXT/HTML; charset=utf-8"));
        assert!(prefers_html(b"application/xhtml+xml, text/html;q=0.9"));
    }

    #[test]
    fn api_clients_do_not() {
        assert!(!prefers_html(b""));
        assert!(!prefers_html(b"*/*"));
        assert!(!prefers_html(b"application/json"));
        assert!(!prefers_html(b"application/json, text/html;q=0.5"));
        assert!(!prefers_html(b"text/html;q=0"));
        assert!(!prefers_html(b"text/*"));
        assert!(!prefers_html(&[0xff, 0xfe]));
    }

    #[test]
    fn return_to_is_appended_and_encoded() {
        assert_eq!(
            login_location("https://auth.example.com/login", "https://app.example.com/a b?x=1&y=é".as_bytes(), None),
            "https://auth.example.com/login?return_to=https%3A%2F%2Fapp.example.com%2Fa%20b%3Fx%3D1%26y%3D%C3%A9"
        );
        assert_eq!(
            login_location("https://auth/login?flow=1", "http://app/".as_bytes(), None),
            "https://auth/login?flow=1&return_to=http%3A%2F%2Fapp%2F"
        );
        assert_eq!(
            login_location("https://auth/login?", "http://a/".as_bytes(), None),
            "https://auth/login?return_to=http%3A%2F%2Fa%2F"
        );
    }

    #[test]
    fn an_existing_return_to_is_kept() {
        let url = "https://auth/login?return_to=https%3A%2F%2Fapp%2Fhome";
        assert_eq!(login_location(url, "http://other/".as_bytes(), None), url);
    }

    #[test]
    fn step_up_adds_aal_before_return_to() {
        assert_eq!(
            login_location(
                "https://auth/login",
                "http://app/x".as_bytes(),
                Some("aal2")
            ),
            "https://auth/login?aal=aal2&return_to=http%3A%2F%2Fapp%2Fx"
        );
        assert_eq!(
            login_location(
                "https://auth/login?aal=aal2",
                "http://app/".as_bytes(),
                Some("aal2")
            ),
            "https://auth/login?aal=aal2&return_to=http%3A%2F%2Fapp%2F"
        );
    }

    #[test]
    fn a_fragment_stays_last() {
        assert_eq!(
            login_location("https://auth/#/login", "http://a/".as_bytes(), None),
            "https://auth/?return_to=http%3A%2F%2Fa%2F#/login"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept_as_sent() {
        assert_eq!(
            login_location("https://auth/", b"http://a/caf\xe9", None),
            "https://auth/?return_to=http%3A%2F%2Fa%2Fcaf%E9"
        );
    }

    #[test]
    fn aal_ranks() {
        assert!(aal_rank("aal1") < aal_rank("aal2"));
        assert_eq!(aal_rank("aal3"), Some(3));
        assert_eq!(aal_rank("aal9"), None);
        assert_eq!(aal_rank(""), None);
    }
}
