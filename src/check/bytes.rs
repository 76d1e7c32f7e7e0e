//! The byte layout of zone values: little-endian lengths before each string, so that any
//! worker reads back what another wrote. Plain Rust; each check lays out its own answer with
//! these (`crate::session::stored`, `crate::oauth2::stored`).

/// Appends `s`, its length first.
pub fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads what `put` and the integer writes laid out; every read is `None` past the end.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub fn string(&mut self) -> Option<Box<str>> {
        let n = self.u32()? as usize;
        let b = self.bytes(n)?;
        core::str::from_utf8(b).ok().map(Into::into)
    }
    /// True when everything was read: bytes left over were not written by us.
    pub fn is_done(&self) -> bool {
        self.0.is_empty()
    }
    /// How many bytes are left, to bound a count read before a list.
    pub fn left(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_put_and_stops_at_the_end() {
        let mut out = vec![7];
        put(&mut out, "ab");
        out.extend_from_slice(&42u64.to_le_bytes());
        let mut r = Reader(&out);
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.string().as_deref(), Some("ab"));
        assert_eq!(r.u64(), Some(42));
        assert!(r.is_done());
        assert_eq!(r.u8(), None);
        // A length longer than what follows.
        let mut r = Reader(&[9, 0, 0, 0, b'x']);
        assert_eq!(r.string(), None);
    }

    #[test]
    fn refuses_bytes_that_are_not_utf8() {
        let mut r = Reader(&[1, 0, 0, 0, 0xff]);
        assert_eq!(r.string(), None);
    }
}
