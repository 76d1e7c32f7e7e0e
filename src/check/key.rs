//! Cache keys: a keyed hash of a credential and of what decides the answer to it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::mem::MaybeUninit;
use std::{ptr, slice};

use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_secret, Xxh3};

/// A keyed hash of a credential and of everything else that decides the answer to it. The
/// caches hold these instead of credentials, so a memory dump of a worker reveals no cookie
/// or token.
pub type CacheKey = u128;

/// XXH3's secret size: the whole key of the hash.
pub const SECRET_LEN: usize = 192;

/// Inputs up to this size are laid out in a stack buffer and hashed in one call; longer ones
/// go through XXH3's streaming state, which gives the same hash (it buffers what it is given
/// and copies its 192-byte secret: about twice the work of one call). A credential's value
/// is not laid out: [`KeyHasher::key`] hashes it where it lies and lays out its digest, so
/// this only has to hold the other fields: a permission's tuple, a cookie's name.
const INLINE_LEN: usize = 512;

/// A stack buffer for one input, never zeroed: an input is hashed on every request, and
/// only the bytes written are read.
type Buffer = [MaybeUninit<u8>; INLINE_LEN];

/// Lays out an input in a [`Buffer`]. It borrows the buffer rather than owning it: owning it
/// made the compiler zero the whole buffer on every call.
struct Input<'a> {
    buf: &'a mut Buffer,
    len: usize,
}

impl<'a> Input<'a> {
    fn new(buf: &'a mut Buffer) -> Self {
        Input { buf, len: 0 }
    }

    #[inline(always)]
    fn push(&mut self, bytes: &[u8]) {
        assert!(
            bytes.len() <= INLINE_LEN - self.len,
            "checked by the callers"
        );
        // SAFETY: the assertion keeps the copy inside the buffer, which this borrows
        // exclusively, so the two cannot overlap.
        unsafe {
            let at = self.buf.as_mut_ptr().cast::<u8>().add(self.len);
            ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        }
        self.len += bytes.len();
    }

    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes have been written by `push`.
        unsafe { slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
    }
}

/// Computes cache keys: XXH3-128 under a secret drawn at random for each worker.
///
/// Why not a cryptographic MAC: the hash runs on every request, over a value of a few hundred
/// bytes (SipHash-1-3 took 1,000 instructions for a 256-byte session cookie, half of what a
/// cache hit cost), and what the keys need is met without one. A client cannot compute keys
/// (the secret never leaves the worker), so it cannot aim a credential of its own at an entry;
/// and hitting someone else's entry would take a value whose 128-bit hash equals that of a
/// credential it has never seen. Two credentials of its own that collide would only share its
/// own session.
pub struct KeyHasher {
    secret: [u8; SECRET_LEN],
}

impl KeyHasher {
    pub fn new_random() -> Self {
        KeyHasher {
            secret: random_secret(),
        }
    }

    /// A hasher with the secret of a shared zone, so that every worker computes the same keys.
    pub fn with_secret(secret: [u8; SECRET_LEN]) -> Self {
        KeyHasher { secret }
    }

    /// The secret, for the entries' ids that a zone hashes with it.
    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }

    /// A fixed secret derived from two words, for tests.
    pub fn new_with_keys(k0: u64, k1: u64) -> Self {
        // splitmix64: distinct, well-mixed words from any seed.
        Self::with_words(|i| {
            let mut z =
                k0 ^ k1.rotate_left(32) ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    fn with_words(word: impl Fn(usize) -> u64) -> Self {
        let mut secret = [0u8; SECRET_LEN];
        for (i, chunk) in secret.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&word(i).to_le_bytes());
        }
        KeyHasher { secret }
    }

    /// The key of one answer. `scope` stands for the service and the location's settings that
    /// change its answer ([`scope_of`]); `tag` says what kind of credential `name` and
    /// `value` are (each check numbers its own, see [`Tag`]). The fields are laid out so
    /// that no two inputs give the same bytes: a word holding the tag and the name's length,
    /// the scope, the name, then the value's 128-bit digest under the same secret (a fixed
    /// length, at the end). The value, the long part (a JWT is a kilobyte or more), is hashed
    /// where it lies instead of being copied next to the rest (into a stack buffer that had
    /// to hold the longest token): on a cache hit of a 1.1 kB JWT that took about 1% off
    /// nginx's CPU per request (paired runs of scripts/bench). Two values share a key only
    /// if their digests collide, which takes the secret to aim at.
    pub fn key(&self, scope: Scope, tag: Tag, name: &[u8], value: &[u8]) -> CacheKey {
        let digest = xxh3_128_with_secret(value, &self.secret).to_le_bytes();
        self.hash_of(
            tag,
            name.len(),
            scope,
            NamedValue {
                name,
                value: &digest,
            },
        )
    }

    /// The key of an answer about several values at once (a permission's tuple): each field
    /// is preceded by its length, so that no bytes can move from one field to the next, and
    /// `tag` says how many fields there are and what they mean. Allocates nothing.
    pub fn key_of_fields(&self, scope: Scope, tag: Tag, fields: &[&[u8]]) -> CacheKey {
        self.hash_of(tag, fields.len(), scope, Fields(fields))
    }

    /// Hashes a key's input: three words (the tag with `count`, a name's length or the number
    /// of fields, then the scope), followed by what `input` lays out. In one call from a stack
    /// buffer when it fits, else through XXH3's streaming state, which gives the same hash.
    #[inline(always)]
    fn hash_of(&self, tag: Tag, count: usize, scope: Scope, input: impl KeyInput) -> CacheKey {
        let fixed = [tag.0 as u64 | (count as u64) << 8, scope.0[0], scope.0[1]];
        if 24 + input.len() <= INLINE_LEN {
            let mut buf = [MaybeUninit::uninit(); INLINE_LEN];
            let mut laid_out = Input::new(&mut buf);
            write_fixed(&mut laid_out, fixed);
            input.write_to(&mut laid_out);
            xxh3_128_with_secret(laid_out.bytes(), &self.secret)
        } else {
            let mut state = Xxh3::with_secret(self.secret);
            write_fixed(&mut state, fixed);
            input.write_to(&mut state);
            state.digest128()
        }
    }
}

/// The three words that begin every key's input.
#[inline(always)]
fn write_fixed(sink: &mut impl Sink, fixed: [u64; 3]) {
    for word in fixed {
        sink.push(&word.to_le_bytes());
    }
}

/// Where a key's input is written: the stack buffer, or XXH3's streaming state.
trait Sink {
    fn push(&mut self, bytes: &[u8]);
}

impl Sink for Input<'_> {
    #[inline(always)]
    fn push(&mut self, bytes: &[u8]) {
        Input::push(self, bytes)
    }
}

impl Sink for Xxh3 {
    fn push(&mut self, bytes: &[u8]) {
        self.update(bytes)
    }
}

/// A key's input after its three words, written once for either [`Sink`].
trait KeyInput {
    /// How many bytes `write_to` writes.
    fn len(&self) -> usize;
    fn write_to(&self, sink: &mut impl Sink);
}

/// The input of [`KeyHasher::key`].
struct NamedValue<'a> {
    name: &'a [u8],
    value: &'a [u8],
}

impl KeyInput for NamedValue<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.name.len() + self.value.len()
    }

    #[inline(always)]
    fn write_to(&self, sink: &mut impl Sink) {
        sink.push(self.name);
        sink.push(self.value);
    }
}

/// The input of [`KeyHasher::key_of_fields`].
struct Fields<'a>(&'a [&'a [u8]]);

impl KeyInput for Fields<'_> {
    fn len(&self) -> usize {
        self.0.iter().map(|f| 4 + f.len()).sum::<usize>()
    }

    fn write_to(&self, sink: &mut impl Sink) {
        for field in self.0 {
            let field_len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            sink.push(&field_len.to_le_bytes());
            sink.push(field);
        }
    }
}

/// A secret drawn at random: for each worker's own keys, and for each shared zone when it is
/// created.
pub fn random_secret() -> [u8; SECRET_LEN] {
    // RandomState is seeded from the OS once per thread and then varied per instance, which
    // is what std relies on against HashDoS; no extra dependency needed.
    let state = RandomState::new();
    let mut secret = [0u8; SECRET_LEN];
    for (i, chunk) in secret.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&state.hash_one(i).to_le_bytes());
    }
    secret
}

/// What kind of credential a key was made from. The numbers of all checks are distinct, so
/// that a cookie and a token with the same bytes never share an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag(pub u8);

/// Stands for the service a check asks and the settings that change its answer (for
/// sessions the whoami URL with its query, e.g. `tokenize_as`) in cache keys, so that
/// locations asking different services, or asking for different things, never share an
/// entry. Computed once per location when the configuration is read, so that a request does
/// not hash it again; none of it is secret, so no key is needed.
///
/// Two words rather than a `u128`: it is kept in location configurations, which nginx
/// allocates with 8-byte alignment, less than the 16 bytes a `u128` needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope([u64; 2]);

/// A scope is a hash already: a table keyed by scopes takes one of its words as is (see
/// [`ScopeHasher`]).
impl Hash for Scope {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

/// The hasher of tables keyed by [`Scope`]: the scope's word is its hash. SipHash, the
/// default, cost about 110 instructions a lookup, on every first-seen JWT (the worker's key
/// sets); a scope is an XXH3 of settings an operator wrote, which a client cannot choose.
#[derive(Default)]
pub struct ScopeHasher(u64);

impl Hasher for ScopeHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Scope`; this keeps any other input well-defined.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A table keyed by [`Scope`].
pub type ScopeMap<V> = HashMap<Scope, V, BuildHasherDefault<ScopeHasher>>;

pub fn scope_of(settings: &str) -> Scope {
    let hash = xxh3_128(settings.as_bytes());
    Scope([hash as u64, (hash >> 64) as u64])
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: Tag = Tag(1);
    const COOKIE: Tag = Tag(2);
    const BEARER: Tag = Tag(3);

    #[test]
    fn key_is_deterministic_per_hasher() {
        let h = KeyHasher::new_with_keys(1, 2);
        let url = scope_of("http://kratos/sessions/whoami");
        let k = h.key(url, COOKIE, b"c", b"v");
        assert_eq!(k, h.key(url, COOKIE, b"c", b"v"));
        assert_eq!(
            k,
            KeyHasher::new_with_keys(1, 2).key(url, COOKIE, b"c", b"v")
        );
        assert_ne!(
            k,
            KeyHasher::new_with_keys(1, 3).key(url, COOKIE, b"c", b"v")
        );
    }

    #[test]
    fn key_distinguishes_every_field() {
        let h = KeyHasher::new_with_keys(0x0123_4567, 0x89ab_cdef);
        let url = scope_of("http://kratos/sessions/whoami");
        let keys = [
            h.key(url, COOKIE, b"s", b"v"),
            h.key(url, TOKEN, b"s", b"v"),
            h.key(url, BEARER, b"s", b"v"),
            h.key(url, COOKIE, b"t", b"v"),
            h.key(url, COOKIE, b"s", b"w"),
            h.key(scope_of("http://other/sessions/whoami"), COOKIE, b"s", b"v"),
            h.key(
                scope_of("http://kratos/sessions/whoami?tokenize_as=t"),
                COOKIE,
                b"s",
                b"v",
            ),
            h.key(url, TOKEN, b"", b"v"),
            h.key(url, BEARER, b"", b"v"),
            // Field boundaries: moving bytes between name and value changes the key.
            h.key(url, COOKIE, b"sv", b""),
            h.key(url, COOKIE, b"", b"sv"),
            // Values that differ only in trailing zero bytes or by whole padding blocks.
            h.key(url, COOKIE, b"s", b"v\0"),
            h.key(url, COOKIE, b"s", b"v\0\0\0\0\0\0\0\0"),
            h.key(url, COOKIE, b"s", &[b'v'; 257]),
        ];
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                if i != j {
                    assert_ne!(a, b, "keys {i} and {j} collide");
                }
            }
        }
    }

    #[test]
    fn long_inputs_hash_like_short_ones() {
        // The key is one call over the fixed words, the name and the value's digest, whether
        // the name fits the stack buffer or goes through the streaming state: a key does not
        // depend on which path computed it.
        let h = KeyHasher::new_with_keys(7, 9);
        let scope = scope_of("http://kratos/sessions/whoami");
        let names = [
            0,
            4,
            INLINE_LEN - 24 - 16,
            INLINE_LEN - 24 - 15,
            INLINE_LEN,
            3000,
        ];
        for (name_len, value_len) in names
            .into_iter()
            .flat_map(|n| [0, 1, 200, 1133, 9000].map(|v| (n, v)))
        {
            let name = vec![b'n'; name_len];
            let value = vec![b'v'; value_len];
            let mut whole = Vec::new();
            whole.extend_from_slice(&(2u64 | (name_len as u64) << 8).to_le_bytes());
            whole.extend_from_slice(&scope.0[0].to_le_bytes());
            whole.extend_from_slice(&scope.0[1].to_le_bytes());
            whole.extend_from_slice(&name);
            whole.extend_from_slice(&xxh3_128_with_secret(&value, &h.secret).to_le_bytes());
            assert_eq!(
                h.key(scope, COOKIE, &name, &value),
                xxh3_128_with_secret(&whole, &h.secret),
                "name of {name_len} bytes, value of {value_len} bytes"
            );
        }
    }

    #[test]
    fn fields_cannot_trade_bytes() {
        let h = KeyHasher::new_with_keys(3, 4);
        let scope = scope_of("http://keto/relation-tuples/check/openapi");
        let keys = [
            h.key_of_fields(scope, COOKIE, &[b"ab", b"c"]),
            h.key_of_fields(scope, COOKIE, &[b"a", b"bc"]),
            h.key_of_fields(scope, COOKIE, &[b"abc"]),
            h.key_of_fields(scope, COOKIE, &[b"abc", b""]),
            h.key_of_fields(scope, TOKEN, &[b"ab", b"c"]),
            h.key_of_fields(scope_of("http://other/"), COOKIE, &[b"ab", b"c"]),
        ];
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                if i != j {
                    assert_ne!(a, b, "keys {i} and {j} collide");
                }
            }
        }
        assert_eq!(keys[0], h.key_of_fields(scope, COOKIE, &[b"ab", b"c"]));
    }

    #[test]
    fn long_fields_hash_like_short_ones() {
        let h = KeyHasher::new_with_keys(5, 6);
        let scope = scope_of("k");
        for len in [0, 100, INLINE_LEN - 34, INLINE_LEN - 33, INLINE_LEN, 4096] {
            let long = vec![b'x'; len];
            let fields: [&[u8]; 2] = [b"ns", &long];
            let mut whole = Vec::new();
            whole.extend_from_slice(&(2u64 | 2 << 8).to_le_bytes());
            whole.extend_from_slice(&scope.0[0].to_le_bytes());
            whole.extend_from_slice(&scope.0[1].to_le_bytes());
            for f in fields {
                whole.extend_from_slice(&(f.len() as u32).to_le_bytes());
                whole.extend_from_slice(f);
            }
            assert_eq!(
                h.key_of_fields(scope, COOKIE, &fields),
                xxh3_128_with_secret(&whole, &h.secret),
                "field of {len} bytes"
            );
        }
    }

    #[test]
    fn scope_depends_on_the_whole_url() {
        assert_eq!(
            scope_of("http://kratos/sessions/whoami"),
            scope_of("http://kratos/sessions/whoami")
        );
        assert_ne!(
            scope_of("http://kratos/sessions/whoami"),
            scope_of("http://kratos/sessions/whoami?tokenize_as=t")
        );
    }

    #[test]
    fn random_hashers_differ() {
        let url = scope_of("http://kratos/sessions/whoami");
        let a = KeyHasher::new_random().key(url, COOKIE, b"c", b"v");
        let b = KeyHasher::new_random().key(url, COOKIE, b"c", b"v");
        assert_ne!(a, b);
    }

    #[test]
    fn hasher_debug_hides_keys() {
        let text = format!("{:?}", KeyHasher::new_with_keys(123_456_789, 987_654_321));
        assert!(
            !text.contains("123456789") && !text.contains("987654321"),
            "{text}"
        );
    }
}
