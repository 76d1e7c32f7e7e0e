//! A verified token as a shared zone holds it: its claims and the scope it lacks in the
//! location whose rules judged it, laid out as bytes so that any worker reads back what
//! another stored. Plain Rust; the zone never holds the token, only its keyed hash.

use super::claims::{Claims, Texts};
use crate::check::bytes::{put, Reader};

/// 2: the scope text is no longer stored; the claims rebuild it from the scopes.
const VERSION: u8 = 2;

/// The bytes of claims and the missing scope, for a zone entry.
pub fn encode(claims: &Claims, missing_scope: Option<&str>) -> Vec<u8> {
    let texts: usize = claims
        .texts()
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len())
        .sum::<usize>();
    let lists: usize = claims
        .scopes()
        .chain(claims.aud())
        .map(|s| 4 + s.len())
        .sum();
    let mut out = Vec::with_capacity(64 + texts + lists);
    out.push(VERSION);
    for s in claims.singles() {
        put_option(&mut out, s);
    }
    put_option(&mut out, missing_scope);
    for t in [claims.exp, claims.iat, claims.nbf] {
        match t {
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.to_le_bytes());
            }
            None => out.push(0),
        }
    }
    put_list(&mut out, claims.scopes());
    put_list(&mut out, claims.aud());
    out.extend_from_slice(&(claims.texts().len() as u32).to_le_bytes());
    for (n, v) in claims.texts().iter() {
        put(&mut out, n);
        put(&mut out, v);
    }
    out
}

fn put_option(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put(out, s);
        }
        None => out.push(0),
    }
}

fn put_list<'s>(out: &mut Vec<u8>, list: impl ExactSizeIterator<Item = &'s str>) {
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for s in list {
        put(out, s);
    }
}

fn option(r: &mut Reader) -> Option<Option<Box<str>>> {
    match r.u8()? {
        0 => Some(None),
        1 => Some(Some(r.string()?)),
        _ => None,
    }
}

fn time(r: &mut Reader) -> Option<Option<i64>> {
    match r.u8()? {
        0 => Some(None),
        1 => Some(Some(r.u64()? as i64)),
        _ => None,
    }
}

/// Each string takes at least 4 bytes: a count larger than what is left is not ours.
fn list(r: &mut Reader, per_item: usize) -> Option<usize> {
    let n = r.u32()? as usize;
    (n <= r.left() / per_item).then_some(n)
}

/// What `encode` made: the claims and the missing scope; `None` for bytes it did not make.
pub fn decode(bytes: &[u8]) -> Option<(Claims, Option<Box<str>>)> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return None;
    }
    let singles: [Option<Box<str>>; 5] = [
        option(&mut r)?,
        option(&mut r)?,
        option(&mut r)?,
        option(&mut r)?,
        option(&mut r)?,
    ];
    let missing_scope = option(&mut r)?;
    let times = [time(&mut r)?, time(&mut r)?, time(&mut r)?];
    let mut lists = [Vec::new(), Vec::new()];
    for l in &mut lists {
        let n = list(&mut r, 4)?;
        for _ in 0..n {
            l.push(r.string()?);
        }
    }
    let [scopes, aud] = lists;
    let n = list(&mut r, 8)?;
    let mut texts = Vec::with_capacity(n);
    for _ in 0..n {
        texts.push((r.string()?, r.string()?));
    }
    if !r.is_done() {
        return None;
    }
    let claims = Claims::from_parts(
        singles.each_ref().map(|s| s.as_deref()),
        times,
        scopes.iter().map(|s| &**s),
        aud.iter().map(|s| &**s),
        Texts::from_pairs(texts),
    );
    Some((claims, missing_scope))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::claims::Source;
    use serde_json::json;

    fn claims(v: serde_json::Value, source: Source) -> Claims {
        Claims::from_object(v.as_object().unwrap(), source).unwrap()
    }

    #[test]
    fn a_jwt_and_an_introspection_answer_come_back_as_they_were() {
        let jwt = claims(
            json!({"sub": "u-1", "client_id": "c", "iss": "https://hydra/", "aud": ["a", "b"],
                   "scp": ["read", "write"], "exp": 2_000_000_000, "iat": 1_000, "nbf": 999,
                   "ext": {"tenant": "acme"}, "jti": "x"}),
            Source::Jwt,
        );
        let introspected = claims(
            json!({"active": true, "sub": "u-2", "scope": "read", "token_use": "access_token",
                   "token_type": "Bearer", "aud": "api"}),
            Source::Introspection,
        );
        for (c, missing) in [(jwt, None), (introspected, Some("admin"))] {
            let bytes = encode(&c, missing);
            let (back, back_missing) = decode(&bytes).expect("decodes");
            assert_eq!(back, c);
            assert_eq!(back_missing.as_deref(), missing);
            assert_eq!(back.texts(), c.texts());
        }
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        let c = claims(json!({"sub": "u", "client_id": "c"}), Source::Jwt);
        let bytes = encode(&c, None);
        assert!(decode(&[]).is_none());
        assert!(decode(&[VERSION + 1]).is_none(), "another version");
        assert!(decode(&encode(&c, None)[..1]).is_none());
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_none(), "bytes left over");
        // A list count far beyond what follows is refused before anything is allocated.
        let mut huge = vec![VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_none());
    }
}
