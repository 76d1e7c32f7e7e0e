//! The claims of an access token, read from a verified JWT payload or from an introspection
//! answer: one model, so rules and variables do not care how the token was checked.
//!
//! The typed fields are raw (rules compare them with configured values); the texts for the
//! `$ory_oauth2_claim_<name>` variables are header-safe copies of every top-level member,
//! made from a JWT's payload when a variable first asks for one.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::fmt;

use serde_json::{Map, Value};

use super::flat_json;
use crate::check::text::{header_safe, is_control, push_header_safe};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Unix seconds. A fractional `exp` is rounded down, `nbf` and `iat` up: each rounding
    /// makes the token valid for less time, never for more.
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    /// `sub`, `client_id`, `iss`, `token_use`, `token_type`, the scopes, the audiences and
    /// the scope text: see the accessors.
    strings: Strings,
    /// Every top-level member as header-safe text, sorted by name: strings as is, numbers
    /// and booleans as text, null as "", objects and arrays as compact JSON.
    texts: LazyTexts,
}

/// The texts, built when first read. A first-seen JWT is judged without them (building
/// them was about a sixth of the module's own work on one, callgrind), most configurations
/// never read a claim variable, and once built they stay with the cached claims. The JSON is
/// dropped when they are built, so claims never hold both.
enum LazyTexts {
    Built(Texts),
    /// The JSON object to read them from until they are read, then what it gave.
    Json(Cell<Option<Box<[u8]>>>, OnceCell<Texts>),
}

impl LazyTexts {
    fn of_json(json: &[u8]) -> LazyTexts {
        LazyTexts::Json(Cell::new(Some(json.into())), OnceCell::new())
    }

    fn get(&self) -> &Texts {
        match self {
            LazyTexts::Built(texts) => texts,
            LazyTexts::Json(json, built) => built.get_or_init(|| {
                // These bytes were read as an object before the claims were made of them,
                // so the empty answer is never given.
                let json = json.take().unwrap_or_default();
                Members::parse(&json).map_or_else(|_| Texts::default(), |m| texts_of(&m))
            }),
        }
    }

    /// The JSON not read yet, put back after `f` has seen it.
    fn with_json<R>(json: &Cell<Option<Box<[u8]>>>, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let held = json.take();
        let r = f(held.as_deref());
        json.set(held);
        r
    }

    fn heap_bytes(&self) -> usize {
        match self {
            LazyTexts::Built(texts) => texts.heap_bytes(),
            LazyTexts::Json(json, built) => {
                LazyTexts::with_json(json, |j| j.map_or(0, <[u8]>::len))
                    + built.get().map_or(0, Texts::heap_bytes)
            }
        }
    }
}

impl Clone for LazyTexts {
    fn clone(&self) -> LazyTexts {
        match self {
            LazyTexts::Built(texts) => LazyTexts::Built(texts.clone()),
            LazyTexts::Json(json, built) => match built.get() {
                Some(texts) => LazyTexts::Built(texts.clone()),
                None => LazyTexts::with_json(json, |j| {
                    LazyTexts::Json(Cell::new(j.map(Box::from)), OnceCell::new())
                }),
            },
        }
    }
}

/// Shows the texts if they are built; never builds them.
impl fmt::Debug for LazyTexts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LazyTexts::Built(texts) => texts.fmt(f),
            LazyTexts::Json(_, built) => match built.get() {
                Some(texts) => texts.fmt(f),
                None => f.write_str("(not read yet)"),
            },
        }
    }
}

/// Equal when their texts are: whether either was built yet does not matter.
impl PartialEq for LazyTexts {
    fn eq(&self, other: &LazyTexts) -> bool {
        self.get() == other.get()
    }
}

impl Eq for LazyTexts {}

/// The string claims (raw: rules compare them byte for byte), the granted scopes, the
/// audiences and `$ory_oauth2_scope`'s text, end to end in one buffer: two allocations,
/// where a string each made ten for a Hydra JWT (callgrind), paid again where the claims
/// are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Strings {
    buf: Box<str>,
    /// Where each string ends in `buf`; each starts where the one before ends. In order:
    /// the [`SINGLES`] (empty when absent), the scopes, the audiences, the scope text.
    ends: Box<[u32]>,
    /// Bit `i`: single string `i` is present.
    present: u8,
    scopes: u32,
}

/// The single strings, in their order in [`Strings`].
const SINGLES: usize = 5;
const SUB: usize = 0;
const CLIENT_ID: usize = 1;
const ISS: usize = 2;
const TOKEN_USE: usize = 3;
const TOKEN_TYPE: usize = 4;

impl Strings {
    fn new<'s>(
        singles: [Option<&str>; SINGLES],
        scopes: impl Iterator<Item = &'s str> + Clone,
        audiences: impl Iterator<Item = &'s str> + Clone,
    ) -> Strings {
        let (mut count, mut len) = (SINGLES + 1, 0);
        for s in singles.iter().flatten() {
            len += s.len();
        }
        let mut scope_count = 0;
        for s in scopes.clone() {
            // Twice: once raw, once in the text (as long unless it escapes), space-separated.
            (scope_count, len) = (scope_count + 1, len + 2 * s.len() + 1);
        }
        if scope_count > 0 {
            len -= 1;
        }
        for s in audiences.clone() {
            (count, len) = (count + 1, len + s.len());
        }
        let mut buf = String::with_capacity(len);
        let mut ends = Vec::with_capacity(count + scope_count);
        let mut present = 0;
        for (i, s) in singles.iter().enumerate() {
            if let Some(s) = s {
                present |= 1 << i;
                buf.push_str(s);
            }
            ends.push(offset(buf.len()));
        }
        for s in scopes.clone().chain(audiences) {
            buf.push_str(s);
            ends.push(offset(buf.len()));
        }
        for (i, s) in scopes.enumerate() {
            if i > 0 {
                buf.push(' ');
            }
            push_header_safe(&mut buf, s);
        }
        ends.push(offset(buf.len()));
        Strings {
            buf: buf.into(),
            ends: ends.into(),
            present,
            scopes: scope_count as u32,
        }
    }

    fn get(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        &self.buf[start..self.ends[i] as usize]
    }

    fn single(&self, i: usize) -> Option<&str> {
        (self.present & (1 << i) != 0).then(|| self.get(i))
    }

    fn range(&self, range: std::ops::Range<usize>) -> impl ExactSizeIterator<Item = &str> + Clone {
        range.map(|i| self.get(i))
    }

    fn scopes(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.range(SINGLES..SINGLES + self.scopes as usize)
    }

    fn audiences(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.range(SINGLES + self.scopes as usize..self.ends.len() - 1)
    }

    fn scope_text(&self) -> &str {
        self.get(self.ends.len() - 1)
    }

    fn heap_bytes(&self) -> usize {
        self.buf.len() + std::mem::size_of_val(&*self.ends)
    }
}

/// Names and texts, sorted by name, in one buffer: two allocations for any number of
/// members, where a pair of strings each would cost two per member (an introspection answer
/// has fifteen), on the client thread that makes them and again on the nginx thread that
/// drops them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Texts {
    buf: Box<str>,
    /// Per member: where its name ends and where its text ends in `buf`; its name starts
    /// where the previous text ends.
    ends: Box<[(u32, u32)]>,
}

impl Texts {
    /// From (name, text) pairs in any order, both already header-safe.
    pub fn from_pairs<N: AsRef<str>, T: AsRef<str>>(pairs: Vec<(N, T)>) -> Texts {
        let mut pairs = pairs;
        pairs.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let len = pairs
            .iter()
            .map(|(n, t)| n.as_ref().len() + t.as_ref().len())
            .sum();
        let mut texts = TextsWriter::with_capacity(pairs.len(), len);
        for (name, text) in &pairs {
            texts.member(name.as_ref(), |buf| buf.push_str(text.as_ref()));
        }
        texts.finish()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn pair(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1].1 as usize
        };
        let (name_end, end) = (self.ends[i].0 as usize, self.ends[i].1 as usize);
        (&self.buf[start..name_end], &self.buf[name_end..end])
    }

    /// The text of member `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = (low + high) / 2;
            let (n, text) = self.pair(middle);
            match n.cmp(name) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(text),
            }
        }
        None
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.len()).map(|i| self.pair(i))
    }

    pub fn heap_bytes(&self) -> usize {
        self.buf.len() + std::mem::size_of_val(&*self.ends)
    }
}

/// Builds [`Texts`] from members that come sorted by name.
struct TextsWriter {
    buf: String,
    ends: Vec<(u32, u32)>,
}

impl TextsWriter {
    fn with_capacity(members: usize, bytes: usize) -> TextsWriter {
        TextsWriter {
            buf: String::with_capacity(bytes),
            ends: Vec::with_capacity(members),
        }
    }

    /// Appends member `name`; `write_text` appends its text after the name.
    fn member(&mut self, name: &str, write_text: impl FnOnce(&mut String)) {
        self.buf.push_str(name);
        let name_end = self.buf.len();
        write_text(&mut self.buf);
        self.ends.push((offset(name_end), offset(self.buf.len())));
    }

    fn finish(self) -> Texts {
        Texts {
            buf: self.buf.into(),
            ends: self.ends.into(),
        }
    }
}

/// The top-level members of a JSON object, sorted by name, as parsed: names and string
/// values borrowed from the JSON text where they hold no escape (nearly always), other
/// values as `Value`s. Parsing an answer into a `Map<String, Value>` instead costs an
/// allocation per name and per string, only to copy them again into the claims.
#[derive(Debug, PartialEq)]
pub struct Members<'a>(Vec<(Cow<'a, str>, Member<'a>)>);

#[derive(Debug, PartialEq)]
pub enum Member<'a> {
    Str(Cow<'a, str>),
    /// A list of strings only (`aud`, `scp`; `[]` too), its items borrowed as strings are.
    Strs(Vec<Cow<'a, str>>),
    /// Anything else.
    Other(Value),
}

impl<'a> Member<'a> {
    /// A list as serde_json reads it: [`Strs`](Member::Strs) when every item is a string.
    fn list(items: Vec<Value>) -> Member<'a> {
        if !items.iter().all(Value::is_string) {
            return Member::Other(Value::Array(items));
        }
        Member::Strs(
            items
                .into_iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(Cow::Owned(s)),
                    _ => None,
                })
                .collect(),
        )
    }
}

impl<'a> Members<'a> {
    /// Parses `json`, which must be one JSON object. A member named twice keeps its last
    /// value, as `serde_json::Map` does.
    pub fn parse(json: &'a [u8]) -> serde_json::Result<Members<'a>> {
        match flat_json::members(json) {
            Some(members) => Ok(Members::sorted(members)),
            None => serde_json::from_slice(json),
        }
    }

    pub fn from_map(map: &'a Map<String, Value>) -> Members<'a> {
        Members::sorted(
            map.iter()
                .map(|(name, value)| {
                    let member = match value {
                        Value::String(s) => Member::Str(Cow::Borrowed(s.as_str())),
                        Value::Array(items) if items.iter().all(Value::is_string) => Member::Strs(
                            items
                                .iter()
                                .filter_map(Value::as_str)
                                .map(Cow::Borrowed)
                                .collect(),
                        ),
                        other => Member::Other(other.clone()),
                    };
                    (Cow::Borrowed(name.as_str()), member)
                })
                .collect(),
        )
    }

    pub(super) fn sorted(mut members: Vec<(Cow<'a, str>, Member<'a>)>) -> Members<'a> {
        // Stable: of the members with one name, the last parsed stays last, and is kept.
        // Claim names nearly always differ in their first byte: comparing it first saves
        // a `memcmp` call on most comparisons, and orders exactly as comparing the names.
        members.sort_by(|a, b| {
            let (a, b) = (a.0.as_bytes(), b.0.as_bytes());
            a.first().cmp(&b.first()).then_with(|| a.cmp(b))
        });
        // In place: `dedup_by` drops the later of two equal neighbours, so the later's value
        // is first swapped into the one that stays.
        members.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        Members(members)
    }

    pub fn get(&self, name: &str) -> Option<&Member<'a>> {
        let i = self.0.binary_search_by(|(n, _)| (**n).cmp(name)).ok()?;
        Some(&self.0[i].1)
    }

    /// The members named `names`, found in one pass (see [`pick`]).
    #[inline(always)]
    pub fn pick<const N: usize>(&self, names: [&str; N]) -> [Option<&Member<'a>>; N] {
        pick(&self.0, names)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Member<'a>)> + '_ {
        self.0.iter().map(|(n, m)| (&**n, m))
    }
}

/// The members of a JSON object in the order written, a name given twice kept twice: all
/// that [`pick`](InOrder::pick) needs, which keeps the last of a name as `Members` does. A
/// JWT's header and payload are read this way, without sorting their members by name.
pub struct InOrder<'a>(Vec<(Cow<'a, str>, Member<'a>)>);

impl<'a> InOrder<'a> {
    /// Parses `json`, which must be one JSON object, as [`Members::parse`] does.
    pub fn parse(json: &'a [u8]) -> serde_json::Result<InOrder<'a>> {
        match flat_json::members(json) {
            Some(members) => Ok(InOrder(members)),
            None => serde_json::from_slice(json).map(|members: Members| InOrder(members.0)),
        }
    }

    /// The members named `names`, found in one pass (see [`pick`]).
    #[inline(always)]
    pub fn pick<const N: usize>(&self, names: [&str; N]) -> [Option<&Member<'a>>; N] {
        pick(&self.0, names)
    }
}

/// The last of `members` named each of `names`, found in one pass. Inlined, comparing with
/// constant names becomes a length switch and inline compares; one [`Members::get`] per name
/// would call `memcmp` at each step of each search.
#[inline(always)]
fn pick<'m, 'a, const N: usize>(
    members: &'m [(Cow<'a, str>, Member<'a>)],
    names: [&str; N],
) -> [Option<&'m Member<'a>>; N] {
    let mut found = [None; N];
    for (name, member) in members {
        if let Some(i) = names.iter().position(|n| *n == &**name) {
            found[i] = Some(member);
        }
    }
    found
}

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Text(name)) = map.next_key::<Text>()? {
                    members.push((name, map.next_value::<Member>()?));
                }
                Ok(Members::sorted(members))
            }
        }
        d.deserialize_map(Object)
    }
}

/// A JSON string, borrowed when it holds no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl<'de> serde::Deserialize<'de> for Member<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Member::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Member::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Member::Other(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                Ok(Member::Other(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(Member::Other(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
                Ok(Member::Other(Value::from(n)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Member::Other(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::Deserialize;
                let d = serde::de::value::SeqAccessDeserializer::new(seq);
                Ok(Member::list(Vec::deserialize(d)?))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::Deserialize;
                let d = serde::de::value::MapAccessDeserializer::new(map);
                Ok(Member::Other(Value::deserialize(d)?))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Offsets within a text of at most a few MiB (an answer is at most 1 MiB, and escaping at
/// most triples it).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The claims [`Claims::read`] takes, in the order it takes them.
const CLAIMS: [&str; 11] = [
    "scp",
    "scope",
    "client_id",
    "sub",
    "exp",
    "iat",
    "nbf",
    "iss",
    "aud",
    "token_use",
    "token_type",
];

/// Where the claims come from: the two write scopes differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Hydra writes `scp` (a list), `scope` (a string) or both (`strategies.jwt.scope_claim`).
    Jwt,
    /// RFC 7662 `scope`, a space-separated string.
    Introspection,
}

impl Claims {
    /// Reads the claims of `object` (tests and callers that hold a parsed map).
    pub fn from_object(
        object: &Map<String, Value>,
        source: Source,
    ) -> Result<Claims, &'static str> {
        Claims::from_members(&Members::from_map(object), source)
    }

    /// Reads the claims of `object`. Errors are short phrases; a claim of the wrong type is
    /// an error rather than absent, so a rule never passes because a claim was unreadable.
    pub fn from_members(object: &Members<'_>, source: Source) -> Result<Claims, &'static str> {
        Claims::read(object.pick(CLAIMS), source, || {
            LazyTexts::Built(texts_of(object))
        })
    }

    /// Reads the claims of `object`, parsed from `json`, leaving its texts to be built from
    /// `json` when first read.
    pub fn from_json_members(
        object: &InOrder<'_>,
        source: Source,
        json: &[u8],
    ) -> Result<Claims, &'static str> {
        Claims::read(object.pick(CLAIMS), source, || LazyTexts::of_json(json))
    }

    /// Reads the claims from the members named [`CLAIMS`], in that order.
    fn read(
        picked: [Option<&Member>; CLAIMS.len()],
        source: Source,
        texts: impl FnOnce() -> LazyTexts,
    ) -> Result<Claims, &'static str> {
        let [scp, scope, client_id, sub, exp, iat, nbf, iss, aud, token_use, token_type] = picked;
        let scopes = match source {
            Source::Jwt => jwt_scopes(scp, scope)?,
            Source::Introspection => {
                scope_string(scope).ok_or("the claim scope is not a string")?
            }
        };
        let client_id = string(client_id, "the claim client_id is not a string")?;
        if source == Source::Jwt && client_id.is_none() {
            // RFC 9068 §2.2 requires client_id in a JWT access token, and Hydra writes it.
            // Hydra's ID tokens are signed by keys in the same public JWKS and carry no
            // client_id: without this, an ID token would pass for an access token.
            return Err("the token has no client_id, so it is not an access token");
        }
        let sub = string(sub, "the claim sub is not a string")?;
        let exp = numeric_date(exp, f64::floor).ok_or("the claim exp is not a number")?;
        let iat = numeric_date(iat, f64::ceil).ok_or("the claim iat is not a number")?;
        let nbf = numeric_date(nbf, f64::ceil).ok_or("the claim nbf is not a number")?;
        let iss = string(iss, "the claim iss is not a string")?;
        let aud =
            audiences(aud).ok_or("the claim aud is neither a string nor a list of strings")?;
        let token_use = string(token_use, "the claim token_use is not a string")?;
        let token_type = string(token_type, "the claim token_type is not a string")?;
        let mut singles = [None; SINGLES];
        singles[SUB] = sub;
        singles[CLIENT_ID] = client_id;
        singles[ISS] = iss;
        singles[TOKEN_USE] = token_use;
        singles[TOKEN_TYPE] = token_type;
        Ok(Claims {
            exp,
            iat,
            nbf,
            strings: Strings::new(singles, scopes.iter(), aud.iter()),
            texts: texts(),
        })
    }

    /// Claims as [`crate::oauth2::stored`] keeps them.
    pub(super) fn from_parts<'s>(
        singles: [Option<&str>; SINGLES],
        times: [Option<i64>; 3],
        scopes: impl Iterator<Item = &'s str> + Clone,
        audiences: impl Iterator<Item = &'s str> + Clone,
        texts: Texts,
    ) -> Claims {
        let [exp, iat, nbf] = times;
        Claims {
            exp,
            iat,
            nbf,
            strings: Strings::new(singles, scopes, audiences),
            texts: LazyTexts::Built(texts),
        }
    }

    /// The single string claims, in the order [`from_parts`](Self::from_parts) takes them.
    pub(super) fn singles(&self) -> [Option<&str>; SINGLES] {
        std::array::from_fn(|i| self.strings.single(i))
    }

    pub fn sub(&self) -> Option<&str> {
        self.strings.single(SUB)
    }

    pub fn client_id(&self) -> Option<&str> {
        self.strings.single(CLIENT_ID)
    }

    pub fn iss(&self) -> Option<&str> {
        self.strings.single(ISS)
    }

    /// Introspection only: `access_token` or `refresh_token` (Hydra).
    pub fn token_use(&self) -> Option<&str> {
        self.strings.single(TOKEN_USE)
    }

    /// Introspection only: `Bearer` (Hydra).
    pub fn token_type(&self) -> Option<&str> {
        self.strings.single(TOKEN_TYPE)
    }

    /// Granted scopes, in the token's order.
    pub fn scopes(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.strings.scopes()
    }

    /// A string `aud` is a list of one.
    pub fn aud(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.strings.audiences()
    }

    /// The granted scopes, space-separated and header-safe, for `$ory_oauth2_scope`.
    pub fn scope_text(&self) -> &str {
        self.strings.scope_text()
    }

    /// The text of a top-level claim, for `$ory_oauth2_claim_<name>`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.texts.get().get(name)
    }

    /// Every claim as (name, text), sorted by name.
    pub fn texts(&self) -> &Texts {
        self.texts.get()
    }

    /// Heap bytes held, so a cache can bound memory, not only entries.
    pub fn heap_bytes(&self) -> usize {
        self.strings.heap_bytes() + self.texts.heap_bytes()
    }
}

/// `None` (the outer) when the member has the wrong type; null is absent.
fn string<'m>(
    value: Option<&'m Member>,
    wrong_type: &'static str,
) -> Result<Option<&'m str>, &'static str> {
    match value {
        None | Some(Member::Other(Value::Null)) => Ok(None),
        Some(Member::Str(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type),
    }
}

/// RFC 7519 NumericDate: seconds, possibly fractional. `None` for a value that is not a
/// number; `Some(None)` for absent or null.
fn numeric_date(value: Option<&Member>, round: fn(f64) -> f64) -> Option<Option<i64>> {
    match value {
        None | Some(Member::Other(Value::Null)) => Some(None),
        Some(Member::Other(Value::Number(n))) => Some(Some(if let Some(i) = n.as_i64() {
            i
        } else if n.is_u64() {
            i64::MAX
        } else {
            // `as` saturates at the i64 bounds; serde_json never yields NaN or infinity.
            round(n.as_f64()?) as i64
        })),
        Some(_) => None,
    }
}

fn audiences<'m>(value: Option<&'m Member>) -> Option<List<'m>> {
    match value {
        None | Some(Member::Other(Value::Null)) => Some(List::Absent),
        Some(Member::Str(s)) => Some(List::One(s)),
        Some(Member::Strs(items)) => Some(List::Items(items)),
        Some(_) => None,
    }
}

/// A list claim as the token wrote it, read in place.
#[derive(Clone, Copy)]
enum List<'m> {
    Absent,
    /// A string that is one item (`aud`).
    One(&'m str),
    /// A string of space-separated items (a scope string).
    Words(&'m str),
    Items(&'m [Cow<'m, str>]),
}

impl<'m> List<'m> {
    fn iter(self) -> ListItems<'m> {
        match self {
            List::Absent => ListItems::One(None),
            List::One(s) => ListItems::One(Some(s)),
            List::Words(words) => ListItems::Words(words.split(' ')),
            List::Items(items) => ListItems::Items(items.iter()),
        }
    }

    /// The same items, in any order and counted once.
    fn same_set(self, other: List) -> bool {
        self.iter().all(|s| other.iter().any(|t| t == s))
            && other.iter().all(|s| self.iter().any(|t| t == s))
    }
}

/// The items of a [`List`]: one `match` a step, where a chain of the three kinds cost a
/// walk through each (callgrind).
#[derive(Clone)]
enum ListItems<'m> {
    One(Option<&'m str>),
    Words(std::str::Split<'m, char>),
    Items(std::slice::Iter<'m, Cow<'m, str>>),
}

impl<'m> Iterator for ListItems<'m> {
    type Item = &'m str;

    fn next(&mut self) -> Option<&'m str> {
        match self {
            ListItems::One(one) => one.take(),
            ListItems::Words(words) => words.find(|w| !w.is_empty()),
            ListItems::Items(items) => items.next().map(|s| &**s),
        }
    }
}

/// A space-separated scope string; `None` for another type than string or null.
fn scope_string<'m>(value: Option<&'m Member>) -> Option<List<'m>> {
    match value {
        None | Some(Member::Other(Value::Null)) => Some(List::Absent),
        Some(Member::Str(s)) => Some(List::Words(s)),
        Some(_) => None,
    }
}

/// `scp` (a list, or a string as some issuers write it) and `scope` (a string). When both
/// are there they must grant the same set: the one a rule reads must not be the one an
/// issuer forgot to update.
fn jwt_scopes<'m>(
    scp: Option<&'m Member>,
    scope: Option<&'m Member>,
) -> Result<List<'m>, &'static str> {
    let scp = match scp {
        None | Some(Member::Other(Value::Null)) => None,
        Some(Member::Str(s)) => Some(List::Words(s)),
        Some(Member::Strs(items)) => Some(List::Items(items)),
        Some(_) => return Err("the claim scp is not a list of strings"),
    };
    let scope = scope_string(scope).ok_or("the claim scope is not a string")?;
    match (scp, scope) {
        (None, scope) => Ok(scope),
        (Some(scp), List::Absent) => Ok(scp),
        (Some(scp), scope) if scp.same_set(scope) => Ok(scp),
        (Some(_), _) => Err("the claims scp and scope grant different scopes"),
    }
}

/// The members' texts, written straight into one buffer. Only names with control bytes
/// (which no issuer sends) cost a copy of their own.
fn texts_of(object: &Members<'_>) -> Texts {
    let bytes = object.iter().map(|(n, v)| n.len() + text_len(v)).sum();
    let mut texts = TextsWriter::with_capacity(object.0.len(), bytes);
    let mut json = Vec::new();
    if !object.iter().any(|(name, _)| name.bytes().any(is_control)) {
        // The members are sorted by name already.
        for (name, value) in object.iter() {
            texts.member(name, |buf| push_text(buf, value, &mut json));
        }
        return texts.finish();
    }
    let mut members: Vec<(Cow<str>, &Member)> = object
        .iter()
        .map(|(name, value)| (Cow::Owned(header_safe(name).into()), value))
        .collect();
    // Escaping may change the order of names: sort again so lookups can bisect.
    members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in &members {
        texts.member(name, |buf| push_text(buf, value, &mut json));
    }
    texts.finish()
}

/// The length of `value`'s text, exact for what [`push_text`] writes without escaping (so
/// the buffer is allocated once and never moved or shrunk), a guess for the rest.
fn text_len(value: &Member) -> usize {
    match value {
        Member::Str(s) => s.len(),
        Member::Strs(items) => items.iter().map(|s| s.len() + 3).sum::<usize>().max(1) + 1,
        Member::Other(Value::Null) => 0,
        Member::Other(Value::Bool(b)) => 5 - usize::from(*b),
        Member::Other(Value::Number(n)) => match n.as_i64() {
            Some(i) => digits(i),
            None => 24,
        },
        Member::Other(Value::Object(map)) if map.is_empty() => 2,
        Member::Other(_) => 16,
    }
}

/// How many bytes `i` takes in decimal, without writing it (every JWT has three dates).
fn digits(i: i64) -> usize {
    usize::from(i < 0)
        + i.unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1)
}

/// A string JSON writes between quotes unchanged: no quote, backslash or control byte (the
/// bytes JSON escapes), and no DEL (which a header-safe text escapes).
fn is_plain_string(s: &str) -> bool {
    !s.bytes().fold(false, |any, b| {
        any | is_control(b) | (b == b'"') | (b == b'\\')
    })
}

/// Appends the header-safe text of `value`; `json` is scratch space for arrays and objects.
fn push_text(buf: &mut String, value: &Member, json: &mut Vec<u8>) {
    match value {
        Member::Str(s) => push_header_safe(buf, s),
        Member::Other(Value::Null) => {}
        Member::Other(Value::Bool(b)) => buf.push_str(if *b { "true" } else { "false" }),
        // Integers (every date, most numbers) without the formatting machinery.
        Member::Other(Value::Number(n)) if n.as_i64().is_some() => {
            buf.push_str(itoa::Buffer::new().format(n.as_i64().unwrap_or_default()));
        }
        Member::Strs(items) if items.iter().all(|s| is_plain_string(s)) => {
            // A list of strings JSON writes as they are (scp, aud): quoted and joined here.
            buf.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(',');
                }
                buf.push('"');
                buf.push_str(item);
                buf.push('"');
            }
            buf.push(']');
        }
        Member::Strs(items) => {
            json.clear();
            let _ = serde_json::to_writer(&mut *json, items);
            push_header_safe(buf, std::str::from_utf8(json).unwrap_or_default());
        }
        Member::Other(Value::Object(map)) if map.is_empty() => buf.push_str("{}"),
        Member::Other(other) => {
            json.clear();
            // Writing to a Vec cannot fail, and serde_json writes UTF-8.
            let _ = serde_json::to_writer(&mut *json, other);
            push_header_safe(buf, std::str::from_utf8(json).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn claims_read_in_order_are_the_claims_read_sorted() {
        use super::{Claims, InOrder, LazyTexts, Members, Source};
        for json in [
            r#"{"iss":"http://127.0.0.1:4444","sub":"5b4e3a59","aud":["api"],"exp":4070908800,"client_id":"c","scp":["openid","offline"],"ext":{}}"#,
            r#"{"client_id":"c","sub":"a\u0041\"b","ext":{"tenant":"acme","n":[1,2.5]},"x":null}"#,
            "{\"client_id\":\"c\",\"na\\u0001me\":\"v\u{7f}\",\"b\":true}",
            // A name given twice: the last counts, read in order or sorted.
            r#"{"client_id":"a","sub":"x","client_id":"c","sub":"y"}"#,
            r#"{"client_id":"a","sub":"x\u0041","client_id":"c"}"#,
        ] {
            let in_order = InOrder::parse(json.as_bytes()).unwrap();
            let later = Claims::from_json_members(&in_order, Source::Jwt, json.as_bytes()).unwrap();
            let members = Members::parse(json.as_bytes()).unwrap();
            let at_once = Claims::from_members(&members, Source::Jwt).unwrap();
            assert!(
                matches!(&later.texts, LazyTexts::Json(_, built) if built.get().is_none()),
                "{json}"
            );
            let copy = later.clone();
            assert_eq!(
                later.heap_bytes(),
                later.strings.heap_bytes() + json.len(),
                "until read, the JSON is held"
            );
            let pairs = |c: &Claims| -> Vec<(String, String)> {
                c.texts()
                    .iter()
                    .map(|(n, t)| (n.to_owned(), t.to_owned()))
                    .collect()
            };
            assert_eq!(pairs(&later), pairs(&at_once), "{json}");
            let dropped = match &later.texts {
                LazyTexts::Json(json, built) => {
                    built.get().is_some() && LazyTexts::with_json(json, |j| j.is_none())
                }
                LazyTexts::Built(_) => false,
            };
            assert!(dropped, "the JSON is dropped once read");
            assert_eq!(later.heap_bytes(), at_once.heap_bytes(), "{json}");
            assert_eq!(later, at_once, "{json}");
            assert_eq!(
                copy, at_once,
                "a copy made before they were read reads them too"
            );
            assert_eq!(later.text("client_id"), Some("c"));
        }
    }

    #[test]
    fn digits_count_what_itoa_writes() {
        for i in [
            0,
            1,
            9,
            10,
            99,
            100,
            4070908800,
            -1,
            -9,
            -10,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(super::digits(i), itoa::Buffer::new().format(i).len(), "{i}");
        }
    }

    use super::*;
    use serde_json::json;

    fn jwt(v: Value) -> Result<Claims, &'static str> {
        Claims::from_object(v.as_object().unwrap(), Source::Jwt)
    }

    fn introspected(v: Value) -> Result<Claims, &'static str> {
        Claims::from_object(v.as_object().unwrap(), Source::Introspection)
    }

    fn hydra_jwt() -> Value {
        json!({
            "iss": "https://hydra.example.com",
            "sub": "user-1234",
            "aud": ["api.example.com", "other"],
            "exp": 1767229200,
            "iat": 1767225600,
            "nbf": 1767225600,
            "jti": "6e6bd1c3",
            "client_id": "client-abc",
            "scp": ["openid", "offline", "read:photos"],
            "ext": {"tenant": "acme", "roles": ["admin"]}
        })
    }

    #[test]
    fn a_hydra_jwt() {
        let c = jwt(hydra_jwt()).unwrap();
        assert_eq!(c.sub(), Some("user-1234"));
        assert_eq!(c.client_id(), Some("client-abc"));
        assert_eq!(c.iss(), Some("https://hydra.example.com"));
        assert_eq!(c.aud().collect::<Vec<_>>(), ["api.example.com", "other"]);
        assert_eq!(c.exp, Some(1767229200));
        assert_eq!(c.iat, Some(1767225600));
        assert_eq!(c.nbf, Some(1767225600));
        let scopes: Vec<&str> = c.scopes().collect();
        assert_eq!(scopes, ["openid", "offline", "read:photos"]);
        assert_eq!(c.scope_text(), "openid offline read:photos");
        assert_eq!(c.token_use(), None);
        assert_eq!(c.text("sub"), Some("user-1234"));
        assert_eq!(c.text("exp"), Some("1767229200"));
        assert_eq!(c.text("aud"), Some(r#"["api.example.com","other"]"#));
        assert_eq!(c.text("scp"), Some(r#"["openid","offline","read:photos"]"#));
        assert_eq!(
            c.text("ext"),
            Some(r#"{"roles":["admin"],"tenant":"acme"}"#)
        );
        assert_eq!(c.text("missing"), None);
        let names: Vec<&str> = c.texts().iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "aud",
                "client_id",
                "exp",
                "ext",
                "iat",
                "iss",
                "jti",
                "nbf",
                "scp",
                "sub"
            ]
        );
        assert!(c.heap_bytes() > 200);
    }

    #[test]
    fn a_hydra_introspection_answer() {
        let c = introspected(json!({
            "active": true,
            "scope": "openid  read:photos",
            "client_id": "client-abc",
            "sub": "user-1234",
            "exp": 1767229200,
            "iat": 1767225600,
            "nbf": 1767225600,
            "aud": [],
            "iss": "https://hydra.example.com",
            "token_type": "Bearer",
            "token_use": "access_token",
            "ext": {"tenant": "acme"},
            "scp": ["ignored"]
        }))
        .unwrap();
        let scopes: Vec<&str> = c.scopes().collect();
        assert_eq!(scopes, ["openid", "read:photos"]);
        assert_eq!(c.token_use(), Some("access_token"));
        assert_eq!(c.token_type(), Some("Bearer"));
        assert_eq!(c.aud().len(), 0);
        assert_eq!(c.text("active"), Some("true"));
        assert_eq!(c.text("ext"), Some(r#"{"tenant":"acme"}"#));
        assert_eq!(c.text("aud"), Some("[]"));
        // Introspection needs no client_id (RFC 7662 makes it optional).
        assert!(introspected(json!({"active": true})).is_ok());
    }

    #[test]
    fn texts_of_every_type() {
        let c = jwt(json!({
            "client_id": "c",
            "s": "text",
            "i": -5,
            "f": 1.5,
            "t": true,
            "n": null,
            "o": {"b": 1, "a": [null]},
            "crlf": "a\r\nSet-Cookie: x",
            "del": "a\u{7f}",
            "na\nme": "v",
            "json": {"k": "a\u{7f}\n"}
        }))
        .unwrap();
        assert_eq!(c.text("s"), Some("text"));
        assert_eq!(c.text("i"), Some("-5"));
        assert_eq!(c.text("f"), Some("1.5"));
        assert_eq!(c.text("t"), Some("true"));
        assert_eq!(c.text("n"), Some(""));
        assert_eq!(c.text("o"), Some(r#"{"a":[null],"b":1}"#));
        assert_eq!(c.text("crlf"), Some("a%0D%0ASet-Cookie: x"));
        assert_eq!(c.text("del"), Some("a%7F"));
        assert_eq!(c.text("na%0Ame"), Some("v"));
        // serde_json escapes \n itself, not DEL.
        assert_eq!(c.text("json"), Some(r#"{"k":"a%7F\n"}"#));
        for (_, v) in c.texts().iter() {
            assert!(!v.bytes().any(|b| b < 0x20 || b == 0x7f), "{v:?}");
        }
    }

    /// The short ways to write integers, lists of strings and `{}` give what JSON writes.
    #[test]
    fn texts_written_directly_are_the_json_text() {
        let c = jwt(json!({
            "client_id": "c",
            "u": u64::MAX,
            "min": i64::MIN,
            "scp": ["a", "b c", "Zoë"],
            "one": ["x"],
            "none": [],
            "quote": ["a\"b", "c"],
            "backslash": ["a\\b"],
            "newline": ["a\nb"],
            "del": ["a\u{7f}"],
            "mixed": ["a", 1],
            "ext": {}
        }))
        .unwrap();
        assert_eq!(c.text("u"), Some("18446744073709551615"));
        assert_eq!(c.text("min"), Some("-9223372036854775808"));
        assert_eq!(c.text("scp"), Some(r#"["a","b c","Zoë"]"#));
        assert_eq!(c.text("one"), Some(r#"["x"]"#));
        assert_eq!(c.text("none"), Some("[]"));
        assert_eq!(c.text("quote"), Some(r#"["a\"b","c"]"#));
        assert_eq!(c.text("backslash"), Some(r#"["a\\b"]"#));
        assert_eq!(c.text("newline"), Some(r#"["a\nb"]"#));
        assert_eq!(c.text("del"), Some(r#"["a%7F"]"#));
        assert_eq!(c.text("mixed"), Some(r#"["a",1]"#));
        assert_eq!(c.text("ext"), Some("{}"));
    }

    #[test]
    fn members_borrow_what_they_can_and_keep_the_last_of_a_name() {
        let json = br#"{"b":"x","a":"esc\u0041ped","n":1.5,"b":"last","o":{"k":[1]},"z":null}"#;
        let m = Members::parse(json).unwrap();
        let names: Vec<&str> = m.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "n", "o", "z"]);
        assert!(matches!(
            m.get("b"),
            Some(Member::Str(Cow::Borrowed("last")))
        ));
        assert!(matches!(m.get("a"), Some(Member::Str(Cow::Owned(s))) if s == "escAped"));
        assert!(matches!(m.get("n"), Some(Member::Other(Value::Number(_)))));
        assert!(matches!(m.get("o"), Some(Member::Other(Value::Object(_)))));
        assert!(matches!(m.get("z"), Some(Member::Other(Value::Null))));
        assert!(m.get("c").is_none());
        for not_an_object in [&b"[1]"[..], b"\"s\"", b"1", b"null"] {
            let e = Members::parse(not_an_object).err().unwrap();
            assert_eq!(e.classify(), serde_json::error::Category::Data);
        }
        let e = Members::parse(br#"{"a":}"#).err().unwrap();
        assert_eq!(e.classify(), serde_json::error::Category::Syntax);
    }

    #[test]
    fn texts_are_found_by_name_in_one_buffer() {
        let t = Texts::from_pairs(vec![("sub", "jane"), ("aud", ""), ("exp", "1"), ("a", "x")]);
        assert_eq!(t.len(), 4);
        let all: Vec<(&str, &str)> = t.iter().collect();
        assert_eq!(
            all,
            [("a", "x"), ("aud", ""), ("exp", "1"), ("sub", "jane")]
        );
        for (name, text) in &all {
            assert_eq!(t.get(name), Some(*text));
        }
        for missing in ["", "b", "au", "zzz"] {
            assert_eq!(t.get(missing), None);
        }
        assert!(Texts::default().is_empty());
        assert_eq!(Texts::default().get("a"), None);
    }

    #[test]
    fn scopes_as_hydra_writes_them() {
        let scopes = |v: Value| -> Result<Vec<String>, &'static str> {
            let mut o = json!({"client_id": "c"});
            for (k, x) in v.as_object().unwrap() {
                o[k] = x.clone();
            }
            jwt(o).map(|c| c.scopes().map(str::to_string).collect())
        };
        assert_eq!(scopes(json!({"scp": ["a", "b"]})).unwrap(), ["a", "b"]);
        assert_eq!(scopes(json!({"scope": "a b"})).unwrap(), ["a", "b"]);
        assert_eq!(scopes(json!({"scp": "a b"})).unwrap(), ["a", "b"]);
        assert_eq!(
            scopes(json!({"scp": ["a", "b"], "scope": "b a"})).unwrap(),
            ["a", "b"]
        );
        assert_eq!(scopes(json!({})).unwrap(), Vec::<String>::new());
        assert_eq!(
            scopes(json!({"scp": null, "scope": null})).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(scopes(json!({"scp": []})).unwrap(), Vec::<String>::new());
        assert_eq!(
            scopes(json!({"scp": ["a"], "scope": "a b"})).unwrap_err(),
            "the claims scp and scope grant different scopes"
        );
        assert_eq!(
            scopes(json!({"scp": ["a", "b"], "scope": "a"})).unwrap_err(),
            "the claims scp and scope grant different scopes"
        );
        assert_eq!(
            scopes(json!({"scp": ["a", 1]})).unwrap_err(),
            "the claim scp is not a list of strings"
        );
        assert_eq!(
            scopes(json!({"scp": {"a": 1}})).unwrap_err(),
            "the claim scp is not a list of strings"
        );
        assert_eq!(
            scopes(json!({"scope": ["a"]})).unwrap_err(),
            "the claim scope is not a string"
        );
        assert_eq!(
            introspected(json!({"scope": ["a"]})).unwrap_err(),
            "the claim scope is not a string"
        );
    }

    #[test]
    fn a_jwt_without_client_id_is_not_an_access_token() {
        // What a Hydra ID token carries.
        let id_token = json!({
            "iss": "https://hydra.example.com", "sub": "user-1234", "aud": ["client-abc"],
            "exp": 1767229200, "iat": 1767225600, "auth_time": 1767225500,
            "at_hash": "x", "sid": "y", "jti": "z"
        });
        assert_eq!(
            jwt(id_token).unwrap_err(),
            "the token has no client_id, so it is not an access token"
        );
        assert_eq!(
            jwt(json!({"client_id": null})).unwrap_err(),
            "the token has no client_id, so it is not an access token"
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let err = |k: &str, v: Value| {
            let mut o = json!({"client_id": "c"});
            o[k] = v;
            jwt(o).unwrap_err()
        };
        assert_eq!(err("sub", json!(1)), "the claim sub is not a string");
        assert_eq!(
            err("client_id", json!(["c"])),
            "the claim client_id is not a string"
        );
        assert_eq!(err("iss", json!({})), "the claim iss is not a string");
        assert_eq!(
            err("exp", json!("1767229200")),
            "the claim exp is not a number"
        );
        assert_eq!(err("iat", json!(true)), "the claim iat is not a number");
        assert_eq!(err("nbf", json!([1])), "the claim nbf is not a number");
        assert_eq!(
            err("aud", json!(1)),
            "the claim aud is neither a string nor a list of strings"
        );
        assert_eq!(
            err("aud", json!(["a", null])),
            "the claim aud is neither a string nor a list of strings"
        );
        assert_eq!(
            err("token_use", json!(1)),
            "the claim token_use is not a string"
        );
        assert_eq!(
            err("token_type", json!(false)),
            "the claim token_type is not a string"
        );
    }

    #[test]
    fn numeric_dates() {
        let times = |v: Value| {
            let c = jwt(json!({"client_id": "c", "exp": v, "nbf": v, "iat": v})).unwrap();
            (c.exp, c.nbf, c.iat)
        };
        assert_eq!(times(json!(10)), (Some(10), Some(10), Some(10)));
        assert_eq!(times(json!(10.5)), (Some(10), Some(11), Some(11)));
        assert_eq!(times(json!(-10.5)), (Some(-11), Some(-10), Some(-10)));
        assert_eq!(
            times(json!(1e300)),
            (Some(i64::MAX), Some(i64::MAX), Some(i64::MAX))
        );
        assert_eq!(
            times(json!(-1e300)),
            (Some(i64::MIN), Some(i64::MIN), Some(i64::MIN))
        );
        assert_eq!(
            times(json!(u64::MAX)),
            (Some(i64::MAX), Some(i64::MAX), Some(i64::MAX))
        );
        assert_eq!(times(json!(null)), (None, None, None));
        let c = jwt(json!({"client_id": "c"})).unwrap();
        assert_eq!((c.exp, c.nbf, c.iat), (None, None, None));
    }

    #[test]
    fn strings_share_one_buffer_and_keep_their_places() {
        let c = introspected(
            json!({"client_id": "c", "token_type": "Bearer", "scope": " x  y",
                                    "aud": ["p", "", "q"], "iss": ""}),
        )
        .unwrap();
        assert_eq!(c.sub(), None);
        assert_eq!(c.client_id(), Some("c"));
        assert_eq!(c.iss(), Some(""), "present though empty");
        assert_eq!(c.token_use(), None);
        assert_eq!(c.token_type(), Some("Bearer"));
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(c.aud().collect::<Vec<_>>(), ["p", "", "q"]);
        assert_eq!(c.scope_text(), "x y");
        let none = introspected(json!({"aud": "only"})).unwrap();
        assert_eq!(none.singles(), [None; SINGLES]);
        assert_eq!(none.scopes().len(), 0);
        assert_eq!(none.aud().collect::<Vec<_>>(), ["only"]);
        assert_eq!(none.scope_text(), "");
    }

    #[test]
    fn audiences() {
        let aud = |v: Value| {
            let c = jwt(json!({"client_id": "c", "aud": v})).unwrap();
            c.aud().map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(aud(json!("a")), ["a"]);
        assert_eq!(aud(json!(["a", "b"])), ["a", "b"]);
        assert!(aud(json!([])).is_empty());
        assert!(aud(json!(null)).is_empty());
        assert!(jwt(json!({"client_id": "c", "aud": ["a", 1]})).is_err());
    }

    #[test]
    fn the_scope_text_is_header_safe() {
        let c = jwt(json!({"client_id": "c", "scp": ["a\r\n", "b"]})).unwrap();
        assert_eq!(c.scope_text(), "a%0D%0A b");
        // The raw value is kept for comparisons.
        assert_eq!(c.scopes().next(), Some("a\r\n"));
    }
}
