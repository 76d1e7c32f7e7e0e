//! A session as a shared zone holds it: the fields the variables read, laid out as bytes
//! (little-endian lengths before each string), so that any worker can read back what another
//! stored. Plain Rust; the zone never holds the credential, only its keyed hash.

use super::model::Session;
use crate::check::bytes::{put, Reader};

const VERSION: u8 = 1;

/// The bytes of a session, for a zone entry.
pub fn encode(s: &Session) -> Vec<u8> {
    let strings = [
        &s.id,
        &s.user_id,
        &s.aal,
        &s.expires_at,
        &s.authenticated_at,
        &s.schema_id,
        &s.identity_state,
        &s.traits_json,
        &s.metadata_public_json,
    ];
    let traits: usize = s.traits.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut out = Vec::with_capacity(
        32 + strings.iter().map(|t| 4 + t.len()).sum::<usize>()
            + traits
            + s.tokenized.as_ref().map_or(0, |t| t.len()),
    );
    out.push(VERSION);
    out.push(s.aal_rank);
    out.push(s.tokenized.is_some() as u8);
    out.extend_from_slice(&s.expires_at_ms.to_le_bytes());
    out.extend_from_slice(&s.tokenized_exp_ms.unwrap_or(u64::MAX).to_le_bytes());
    for t in strings {
        put(&mut out, t);
    }
    if let Some(t) = &s.tokenized {
        put(&mut out, t);
    }
    out.extend_from_slice(&(s.traits.len() as u32).to_le_bytes());
    for (n, v) in s.traits.iter() {
        put(&mut out, n);
        put(&mut out, v);
    }
    out
}

/// The session `encode` made; `None` for bytes it did not make (a zone kept across a reload
/// by another version of the module is refused when it is attached, this is the backstop).
pub fn decode(bytes: &[u8]) -> Option<Session> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return None;
    }
    let aal_rank = r.u8()?;
    let has_token = r.u8()? != 0;
    let expires_at_ms = r.u64()?;
    let tokenized_exp_ms = Some(r.u64()?).filter(|&t| t != u64::MAX);
    let id = r.string()?;
    let user_id = r.string()?;
    let aal = r.string()?;
    let expires_at = r.string()?;
    let authenticated_at = r.string()?;
    let schema_id = r.string()?;
    let identity_state = r.string()?;
    let traits_json = r.string()?;
    let metadata_public_json = r.string()?;
    let tokenized = if has_token { Some(r.string()?) } else { None };
    let n = r.u32()? as usize;
    // Each trait takes at least 8 bytes: a count larger than what is left is not ours.
    if n > r.left() / 8 {
        return None;
    }
    let mut traits = Vec::with_capacity(n);
    for _ in 0..n {
        traits.push((r.string()?, r.string()?));
    }
    if !r.is_done() {
        return None;
    }
    Some(Session {
        id,
        user_id,
        aal,
        aal_rank,
        expires_at,
        expires_at_ms,
        authenticated_at,
        schema_id,
        identity_state,
        traits_json,
        metadata_public_json,
        traits: traits.into_boxed_slice(),
        tokenized,
        tokenized_exp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::model::{decode_response, tests::FULL_BODY, Answer};

    fn full() -> Session {
        let Ok(Answer::Active { session, .. }) = decode_response(
            200,
            Some("application/json"),
            None,
            vec![],
            FULL_BODY.as_bytes(),
            1_785_000_000_000,
        ) else {
            panic!("the contract body decodes");
        };
        session
    }

    #[test]
    fn round_trip() {
        let s = full();
        assert!(!s.traits.is_empty());
        let bytes = encode(&s);
        assert_eq!(decode(&bytes), Some(s.clone()));
        let mut t = s;
        t.tokenized = Some("a.b.c".into());
        t.tokenized_exp_ms = Some(42);
        t.traits = Box::new([]);
        assert_eq!(decode(&encode(&t)), Some(t));
    }

    #[test]
    fn foreign_bytes_are_refused() {
        let bytes = encode(&full());
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[2]), None);
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
    }

    #[test]
    fn bytes_per_session() {
        let s = full();
        let (fixed, variable) = s.heap_bytes();
        let n = encode(&s).len();
        println!(
            "a session takes {n} bytes in a zone ({fixed} of ids and times, {variable} of traits)"
        );
        assert!(n <= fixed + variable + 128, "{n} bytes");
    }
}
