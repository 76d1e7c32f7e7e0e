//! Turning untrusted text into something safe for a header, a variable or a log line.
//! The same rules as `crate::kratos`, so a claim and a trait read alike.

/// Percent-encodes control bytes (0x00-0x1F, 0x7F) only: `"\r\n"` -> `"%0D%0A"`, nothing
/// else changes, so a claim cannot split or forge a header sent to the upstream.
pub(crate) fn header_safe(s: &str) -> Box<str> {
    if !s.bytes().any(is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii() && is_control(c as u8) {
            out.push_str(&format!("%{:02X}", c as u8));
        } else {
            out.push(c);
        }
    }
    out.into()
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// serde_json's own messages can quote the offending value (a claim, a key); say only where
/// the text broke.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected value",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// The media type of a Content-Type value (before any parameter) is one of `types`.
pub(crate) fn media_type_is(content_type: &str, types: &[&str]) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    types.iter().any(|t| essence.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_percent_encoded() {
        assert_eq!(&*header_safe("plain é text"), "plain é text");
        assert_eq!(&*header_safe("a\r\nb"), "a%0D%0Ab");
        assert_eq!(&*header_safe("\u{0}\u{1f}\u{7f}"), "%00%1F%7F");
        assert_eq!(&*header_safe("tab\there"), "tab%09here");
        // Non-ASCII control characters (C1) are left alone, as in kratos.rs.
        assert_eq!(&*header_safe("\u{85}"), "\u{85}");
    }

    #[test]
    fn json_errors_do_not_quote_the_input() {
        let e = serde_json::from_str::<serde_json::Value>(r#"{"s3cr3t" 1}"#).unwrap_err();
        let text = json_error(&e);
        assert_eq!(text, "syntax error at line 1 column 11");
        assert!(!text.contains("s3cr3t"));
        let e = serde_json::from_str::<serde_json::Value>("[").unwrap_err();
        assert_eq!(json_error(&e), "unexpected end of input at line 1 column 1");
    }

    #[test]
    fn media_types() {
        let json = ["application/json"];
        assert!(media_type_is("application/json", &json));
        assert!(media_type_is("application/json;charset=UTF-8", &json));
        assert!(media_type_is(" Application/JSON ; charset=utf-8", &json));
        assert!(!media_type_is("application/jsonx", &json));
        assert!(!media_type_is("text/html", &json));
        assert!(!media_type_is("", &json));
        assert!(media_type_is(
            "application/jwk-set+json",
            &["application/json", "application/jwk-set+json"]
        ));
    }
}
