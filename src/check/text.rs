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
    push_header_safe(&mut out, s);
    out.into()
}

/// [`header_safe`], appended to `out`: no allocation of its own.
pub fn push_header_safe(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Nearly every text has no control byte: one pass without an early exit (vector
    // compares) decides, and the text is copied whole.
    if !s.bytes().fold(false, |any, b| any | is_control(b)) {
        out.push_str(s);
        return;
    }
    let mut rest = s;
    while let Some(i) = rest.bytes().position(is_control) {
        out.push_str(&rest[..i]);
        let b = rest.as_bytes()[i];
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
        // A control byte is ASCII: i + 1 is a character boundary.
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
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
        let mut out = String::from("x=");
        push_header_safe(&mut out, "a\r\nb\u{7f}");
        assert_eq!(out, "x=a%0D%0Ab%7F");
    }
}
