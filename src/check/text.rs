//! Values taken from a service's answer and handed to nginx variables: safe to put in a
//! header sent upstream, whatever the service sent.

/// Percent-encodes control bytes (0x00-0x1F, 0x7F) only, so that `"\r\n"` becomes `"%0D%0A"`
/// and nothing else changes: a value cannot split or forge a header. serde_json already
/// escapes most control bytes inside JSON strings, but not DEL, and plain strings are not
/// escaped at all.
pub fn header_safe(s: &str) -> Box<str> {
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

pub fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_encoded_and_nothing_else() {
        assert_eq!(&*header_safe("a\r\nb"), "a%0D%0Ab");
        assert_eq!(&*header_safe("\u{7f}\t\0"), "%7F%09%00");
        assert_eq!(&*header_safe("100% Zoë ✓"), "100% Zoë ✓");
        assert_eq!(&*header_safe(""), "");
    }
}
