//! A fast reader for the shape nearly every JWT header, JWT payload and introspection answer
//! has: one object whose members are strings without escapes, non-negative integers, `true`,
//! `false`, `null`, lists of such strings, or `{}`.
//!
//! It never refuses and never decides anything: on the first byte outside that shape it says
//! "not mine" (`None`) and serde_json reads the whole text, so every error, every escape,
//! every float and every nested value keeps serde_json's meaning. What it reads it reads as
//! serde_json would (the tests compare the two on generated texts); it is only faster, by
//! skipping serde's visitor machinery for the texts the verifier sees on every first-seen
//! token (a Hydra payload: about 6,000 instructions in serde_json, under 2,000 here).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::claims::Member;

/// The members of `json` in document order (duplicates kept; the caller sorts and keeps the
/// last), or `None` when `json` is not of the flat shape or not valid UTF-8.
pub fn members(json: &[u8]) -> Option<Vec<(Cow<'_, str>, Member<'_>)>> {
    // Validated once, so every string below is a slice of `text` between two ASCII quotes.
    let text = std::str::from_utf8(json).ok()?;
    let mut reader = Reader { text, at: 0 };
    let mut members = Vec::with_capacity(16);
    reader.skip_whitespace();
    reader.expect(b'{')?;
    reader.skip_whitespace();
    if reader.peek() == Some(b'}') {
        reader.at += 1;
    } else {
        loop {
            let name = reader.string()?;
            reader.skip_whitespace();
            reader.expect(b':')?;
            reader.skip_whitespace();
            let value = reader.value()?;
            members.push((Cow::Borrowed(name), value));
            reader.skip_whitespace();
            match reader.next()? {
                b',' => reader.skip_whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    reader.skip_whitespace();
    (reader.at == json.len()).then_some(members)
}

/// Where the first quote, backslash or control byte of `bytes` is: where a string without
/// escapes ends, or where it stops being one. Eight bytes at a time in a word: the strings
/// of a token are short (names, ids, URLs), where a `memchr2` call and a second pass for
/// control bytes cost more than the string.
#[inline(always)]
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Flags, in its high bit, each byte of `word` below `n` (for bytes below 0x80, the
    // only ones that can match). A flag can be wrong only above a right one, and only the
    // lowest flag is read.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * n as u64) & !word & HIGHS;
    let (words, tail) = bytes.as_chunks::<8>();
    for (i, chunk) in words.iter().enumerate() {
        let word = u64::from_le_bytes(*chunk);
        let flags = below(word ^ (ONES * b'"' as u64), 1)
            | below(word ^ (ONES * b'\\' as u64), 1)
            | below(word, 0x20);
        if flags != 0 {
            return Some(i * 8 + flags.trailing_zeros() as usize / 8);
        }
    }
    let at = words.len() * 8;
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

/// Digits of `u64::MAX`: a longer integer goes to serde_json (which reads it as a float), as
/// does one of 20 digits above `u64::MAX`.
const MAX_DIGITS: usize = 20;

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// JSON's whitespace: space, tab, line feed, carriage return.
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A string without escapes or control bytes (which serde_json refuses raw). Inlined
    /// into its three callers: most strings are a few words long, shorter than a call.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let rest = &self.text.as_bytes()[self.at..];
        let len = string_end(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        let start = self.at;
        self.at += len + 1;
        Some(&self.text[start..start + len])
    }

    fn value(&mut self) -> Option<Member<'a>> {
        match self.peek()? {
            b'"' => Some(Member::Str(Cow::Borrowed(self.string()?))),
            b'0'..=b'9' => Some(Member::Other(Value::from(self.integer()?))),
            b't' => self.word("true", Value::Bool(true)),
            b'f' => self.word("false", Value::Bool(false)),
            b'n' => self.word("null", Value::Null),
            b'[' => self.strings(),
            b'{' => {
                self.at += 1;
                self.skip_whitespace();
                self.expect(b'}')?;
                Some(Member::Other(Value::Object(Map::new())))
            }
            _ => None,
        }
    }

    /// `0` or digits without a leading zero; a fraction or exponent after them is not ours,
    /// which the caller finds when the next byte is not a separator.
    fn integer(&mut self) -> Option<u64> {
        let digits = self.text.as_bytes()[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let number = &self.text[self.at..self.at + digits];
        if digits > MAX_DIGITS || (digits > 1 && number.starts_with('0')) {
            return None;
        }
        self.at += digits;
        number.parse().ok()
    }

    fn word(&mut self, word: &str, value: Value) -> Option<Member<'a>> {
        if !self.text[self.at..].starts_with(word) {
            return None;
        }
        self.at += word.len();
        Some(Member::Other(value))
    }

    /// `[]` or a list of strings.
    fn strings(&mut self) -> Option<Member<'a>> {
        self.expect(b'[')?;
        self.skip_whitespace();
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.at += 1;
        } else {
            loop {
                items.push(Cow::Borrowed(self.string()?));
                self.skip_whitespace();
                match self.next()? {
                    b',' => self.skip_whitespace(),
                    b']' => break,
                    _ => return None,
                }
            }
        }
        Some(Member::Strs(items))
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;
    use crate::oauth2::claims::Members;

    /// What serde_json reads, through the same deserializer `Members::parse` falls back to.
    fn by_serde(json: &str) -> Option<Members<'_>> {
        serde_json::from_str(json).ok()
    }

    fn by_reader(json: &str) -> Option<Members<'_>> {
        members(json.as_bytes()).map(Members::sorted)
    }

    #[test]
    fn reads_what_hydra_writes() {
        for json in [
            r#"{"alg":"RS256","kid":"0ba055fb","typ":"JWT"}"#,
            r#"{"iss":"http://127.0.0.1:4444","sub":"5b4e3a59","aud":["api.example.com"],"exp":4070908800,"iat":1796238504,"nbf":1796238504,"jti":"6b55","client_id":"bench-client","scp":["openid","offline"],"ext":{}}"#,
            r#"{"active":true,"client_id":"c","scope":"a b","exp":0,"token_use":"access_token","aud":[],"ext":{ }}"#,
            " {\n\t\"a\" : null ,\r\"a\":false, \"b\" : [ \"x\" , \"\" ] } ",
            "{}",
            r#"{"émoji ✓":"ünïcode"}"#,
            r#"{"big":18446744073709551615}"#,
        ] {
            let read = by_reader(json).unwrap_or_else(|| panic!("not read: {json}"));
            assert_eq!(Some(read), by_serde(json), "{json}");
        }
    }

    #[test]
    fn a_name_given_thrice_keeps_its_last_value() {
        let read = by_reader(r#"{"a":1,"b":"x","a":2,"a":[]}"#).unwrap();
        assert_eq!(read.get("a"), Some(&Member::Strs(Vec::new())));
        assert_eq!(read.iter().count(), 2);
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for json in [
            // serde_json reads these differently from a plain string or integer.
            r#"{"a":"\u0041"}"#,
            r#"{"a\"b":1}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":-1}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":[1]}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[["b"]]}"#,
            // serde_json refuses these; its error is the answer.
            "",
            "[]",
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":"b"} x"#,
            r#"{"a":"b"}{}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":["b",]}"#,
            "{\"a\":1\u{a0}}",
            r#"{"a":"b""#,
        ] {
            assert_eq!(members(json.as_bytes()).map(|_| ()), None, "{json}");
        }
        assert_eq!(members(b"{\"a\":\"\xff\"}").map(|_| ()), None);
    }

    /// Pieces of JSON, well-formed and not, that the reader must read as serde_json does or
    /// leave alone.
    const PIECES: [&str; 30] = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\"a\"",
        "\"b\"",
        "\"\"",
        "\"é ✓\"",
        "\"\\u0041\"",
        "\"a\\\"\"",
        "\"\u{1}\"",
        "0",
        "1",
        "01",
        "-1",
        "1.5",
        "2e3",
        "4070908800",
        "18446744073709551615",
        "18446744073709551616",
        "true",
        "false",
        "null",
        "nul",
        "{}",
        "[]",
    ];

    fn soup() -> impl Strategy<Value = String> {
        vec(select(&PIECES[..]), 0..24).prop_map(|pieces| pieces.concat())
    }

    /// An object of members whose values are single pieces or lists of them: mostly
    /// well-formed, so most cases reach the comparison.
    fn object() -> impl Strategy<Value = String> {
        let space = select(&["", " ", "\t", "\r\n"][..]);
        let name = select(&["\"a\"", "\"b\"", "\"é ✓\"", "\"a\\\"\"", "\"\""][..]);
        let value = prop_oneof![
            select(&PIECES[8..]).prop_map(str::to_owned),
            vec(select(&PIECES[8..15]), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
        ];
        vec((space.clone(), name, space, value), 0..8).prop_map(|members| {
            let members: Vec<String> = members
                .into_iter()
                .map(|(s1, n, s2, v)| format!("{s1}{n}{s2}:{s1}{v}{s2}"))
                .collect();
            format!("{{{}}}", members.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn string_end_finds_the_first_special_byte(
            bytes in vec(prop_oneof![
                4 => 0x20u8..0x7f,
                1 => select(&[b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xa2, 0xdc, 0xff][..]),
            ], 0..40),
        ) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(string_end(&bytes), naive, "{:?}", bytes);
        }

        #[test]
        fn reads_as_serde_reads(json in prop_oneof![soup(), object()]) {
            if let Some(read) = by_reader(&json) {
                prop_assert_eq!(Some(read), by_serde(&json), "{}", json);
            }
        }
    }

    #[test]
    fn generated_objects_are_mostly_read() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let read = (0..1000)
            .filter(|_| by_reader(&object().new_tree(&mut runner).unwrap().current()).is_some())
            .count();
        // Not every one (escapes, floats, negatives go to serde), but enough that the
        // comparison above is not vacuous.
        assert!(read > 100, "{read} of 1000 read");
    }
}
