//! What one `ory_permission` line asks Keto: does SUBJECT have RELATION on OBJECT in NAMESPACE?
//!
//! # Subject id or subject set
//!
//! The shape of SUBJECT is decided once, from the text written in the configuration, and never
//! from a value seen at request time:
//!
//! - no SUBJECT: the authenticated subject (the session's identity id, else the token's `sub`),
//!   always a subject **id**, whatever characters it holds;
//! - a SUBJECT whose text contains `#` is a subject **set** and must read
//!   `namespace:object#relation`: exactly one `#`, a `:` before it, and none of the three parts
//!   empty. The namespace ends at the first `:`, so the object may hold further colons
//!   (`files:/a:b#owner`). Anything else containing `#` is a configuration error;
//! - any other SUBJECT is a subject **id** (`user:42` too, as in Keto's own notation).
//!
//! nginx variable references (`$name`, `${name}`, `$1`) never contain `:` or `#`, so the text
//! can be split before the variables in it are compiled: `groups:$arg_group#member` is a set
//! whose object is `$arg_group`. A variable's value is used verbatim as the part it stands for
//! and is never parsed again: `$arg_subject` is a subject id even when its value reads
//! `groups:admins#member`. Otherwise a client, or anyone who can choose a user name that ends
//! up in a token's `sub`, could turn a check on themselves into a check on a group they are not
//! in. (A literal `#` inside a word is no comment for nginx; only a `#` that starts a word is.)
//!
//! # Values at request time
//!
//! Each evaluated part must be non-empty UTF-8 of at most [`MAX_VALUE_LEN`] bytes; otherwise
//! the line is refused with a [`Refusal`] (403) and Keto is not asked. An empty value is what an
//! absent argument or capture evaluates to, and no tuple is about nothing. The bound is what a
//! client can make us send and cache: six parts of 4 KiB are at most 72 KiB percent-encoded,
//! well within the 1 MiB of headers Go's server (Keto) reads. Ids are UUIDs, namespaces and
//! relations identifiers, and objects rarely longer than a path, so it leaves ample room.

use std::fmt;

use crate::check::key::{CacheKey, KeyHasher, Scope, Tag};

/// The longest value, in bytes, of any part of a tuple.
pub const MAX_VALUE_LEN: usize = 4096;

/// Who the check is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `subject_id`: an identity id, a token's `sub`, or any opaque id.
    Id(String),
    /// `subject_set.*`: everyone who has `relation` on `namespace:object`.
    Set {
        namespace: String,
        object: String,
        relation: String,
    },
}

impl Subject {
    /// A subject id from an evaluated value (the authenticated subject, or a SUBJECT written
    /// without `#`).
    pub fn id(value: &[u8]) -> Result<Subject, Refusal> {
        Ok(Subject::Id(text(value, Part::Subject)?))
    }

    /// A subject set from the three evaluated parts of a SUBJECT written
    /// `namespace:object#relation`.
    pub fn set(namespace: &[u8], object: &[u8], relation: &[u8]) -> Result<Subject, Refusal> {
        Ok(Subject::Set {
            namespace: text(namespace, Part::SetNamespace)?,
            object: text(object, Part::SetObject)?,
            relation: text(relation, Part::SetRelation)?,
        })
    }

    /// The same checks for a subject built directly from its variants.
    fn validate(&self) -> Result<(), Refusal> {
        match self {
            Subject::Id(id) => check(id.as_bytes(), Part::Subject),
            Subject::Set {
                namespace,
                object,
                relation,
            } => {
                check(namespace.as_bytes(), Part::SetNamespace)?;
                check(object.as_bytes(), Part::SetObject)?;
                check(relation.as_bytes(), Part::SetRelation)
            }
        }
    }
}

/// One question for Keto. Only built through [`Tuple::new`], so every part is non-empty UTF-8
/// of at most [`MAX_VALUE_LEN`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    namespace: String,
    object: String,
    relation: String,
    subject: Subject,
}

/// Tags of the key encoding. `KEY_TAG` is never the first byte of a session key (cache.rs
/// starts those with the credential kind, 1 to 3), so the two kinds of key cannot share bytes
/// even under one hasher.
const KEY_TAG: u8 = b'P';
const SUBJECT_ID_TAG: u8 = b'I';
const SUBJECT_SET_TAG: u8 = b'S';

impl Tuple {
    pub fn new(
        namespace: &[u8],
        object: &[u8],
        relation: &[u8],
        subject: Subject,
    ) -> Result<Tuple, Refusal> {
        let tuple = Tuple {
            namespace: text(namespace, Part::Namespace)?,
            object: text(object, Part::Object)?,
            relation: text(relation, Part::Relation)?,
            subject,
        };
        tuple.subject.validate()?;
        Ok(tuple)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn object(&self) -> &str {
        &self.object
    }

    pub fn relation(&self) -> &str {
        &self.relation
    }

    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Appends the bytes a cache key is hashed from: `scope` (what identifies the Keto
    /// instance, e.g. the check endpoint URL or a hash of it) and the tuple. Every field is
    /// preceded by its length (u32, little-endian) and the subject by a tag saying which kind
    /// follows, so no two (scope, tuple) pairs give the same bytes: an id `a:b#c` and the set
    /// `a:b#c` differ, and no bytes can move from one field to the next.
    ///
    /// Hash these with a keyed hash (like cache.rs' `KeyHasher`), never a plain one: objects
    /// often come from the client (`$arg_doc`), and with a public hash a client could search
    /// for a tuple of its own whose key equals that of an allowed one.
    pub fn write_key(&self, scope: &[u8], out: &mut Vec<u8>) {
        out.reserve(self.key_len(scope.len()));
        out.push(KEY_TAG);
        field(out, scope);
        field(out, self.namespace.as_bytes());
        field(out, self.object.as_bytes());
        field(out, self.relation.as_bytes());
        match &self.subject {
            Subject::Id(id) => {
                out.push(SUBJECT_ID_TAG);
                field(out, id.as_bytes());
            }
            Subject::Set {
                namespace,
                object,
                relation,
            } => {
                out.push(SUBJECT_SET_TAG);
                field(out, namespace.as_bytes());
                field(out, object.as_bytes());
                field(out, relation.as_bytes());
            }
        }
    }

    /// How many bytes [`Tuple::write_key`] appends.
    pub fn key_len(&self, scope_len: usize) -> usize {
        let subject = match &self.subject {
            Subject::Id(id) => 4 + id.len(),
            Subject::Set {
                namespace,
                object,
                relation,
            } => 12 + namespace.len() + object.len() + relation.len(),
        };
        2 + 16
            + scope_len
            + self.namespace.len()
            + self.object.len()
            + self.relation.len()
            + subject
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Parts are at most MAX_VALUE_LEN and a scope is a configured URL or a hash of one, so a
    // length always fits; saturating only keeps a worker from panicking over it.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A tuple as evaluated for one request, borrowing the values: all a cache lookup needs.
/// Only a call needs an owned [`Tuple`], so a cache hit copies nothing and checks nothing
/// (an entry exists only for a tuple that passed [`TupleRef::to_tuple`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TupleRef<'a> {
    pub namespace: &'a [u8],
    pub object: &'a [u8],
    pub relation: &'a [u8],
    pub subject: SubjectRef<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectRef<'a> {
    Id(&'a [u8]),
    Set {
        namespace: &'a [u8],
        object: &'a [u8],
        relation: &'a [u8],
    },
}

/// Cache key tags of tuples, one per kind of subject; distinct from the session check's.
const KEY_TAG_SUBJECT_ID: Tag = Tag(16);
const KEY_TAG_SUBJECT_SET: Tag = Tag(17);

impl TupleRef<'_> {
    /// The keyed hash of the tuple; `scope` stands for the Keto endpoint.
    pub fn key(&self, hasher: &KeyHasher, scope: Scope) -> CacheKey {
        let (namespace, object, relation) = (self.namespace, self.object, self.relation);
        match self.subject {
            SubjectRef::Id(id) => hasher.key_of_fields(
                scope,
                KEY_TAG_SUBJECT_ID,
                &[namespace, object, relation, id],
            ),
            SubjectRef::Set {
                namespace: set_namespace,
                object: set_object,
                relation: set_relation,
            } => hasher.key_of_fields(
                scope,
                KEY_TAG_SUBJECT_SET,
                &[
                    namespace,
                    object,
                    relation,
                    set_namespace,
                    set_object,
                    set_relation,
                ],
            ),
        }
    }

    /// The owned tuple a call sends, or why the values cannot make one.
    pub fn to_tuple(&self) -> Result<Tuple, Refusal> {
        let subject = match self.subject {
            SubjectRef::Id(id) => Subject::id(id)?,
            SubjectRef::Set {
                namespace,
                object,
                relation,
            } => Subject::set(namespace, object, relation)?,
        };
        Tuple::new(self.namespace, self.object, self.relation, subject)
    }
}

/// Keto's text notation, `namespace:object#relation@subject`, for debug logs. Not an
/// encoding: parts that contain `:`, `#` or `@` make it ambiguous.
impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}#{}@", self.namespace, self.object, self.relation)?;
        match &self.subject {
            Subject::Id(id) => f.write_str(id),
            Subject::Set {
                namespace,
                object,
                relation,
            } => write!(f, "{namespace}:{object}#{relation}"),
        }
    }
}

/// Which part of a tuple a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Namespace,
    Object,
    Relation,
    Subject,
    SetNamespace,
    SetObject,
    SetRelation,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Namespace => "namespace",
            Part::Object => "object",
            Part::Relation => "relation",
            Part::Subject => "subject",
            Part::SetNamespace => "subject set's namespace",
            Part::SetObject => "subject set's object",
            Part::SetRelation => "subject set's relation",
        }
    }
}

/// Why a line is denied without asking Keto. The texts name the part, never its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Empty(Part),
    TooLong(Part),
    NotUtf8(Part),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Empty(part) => write!(f, "the {} is empty", part.name()),
            Refusal::TooLong(part) => write!(
                f,
                "the {} is longer than {MAX_VALUE_LEN} bytes",
                part.name()
            ),
            Refusal::NotUtf8(part) => write!(f, "the {} is not UTF-8", part.name()),
        }
    }
}

impl std::error::Error for Refusal {}

fn check(value: &[u8], part: Part) -> Result<(), Refusal> {
    if value.is_empty() {
        return Err(Refusal::Empty(part));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(Refusal::TooLong(part));
    }
    Ok(())
}

fn text(value: &[u8], part: Part) -> Result<String, Refusal> {
    check(value, part)?;
    // Keto's parts are strings; replacing bytes would make two values one tuple.
    let value = std::str::from_utf8(value).map_err(|_| Refusal::NotUtf8(part))?;
    Ok(value.to_owned())
}

/// The arguments of one `ory_permission` line, as written: each part is still text that may
/// hold variables, to be compiled by the glue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckArgs<'a> {
    pub namespace: &'a str,
    pub object: &'a str,
    pub relation: &'a str,
    pub subject: SubjectArg<'a>,
}

/// How SUBJECT is written; see the module documentation for the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectArg<'a> {
    /// No SUBJECT: the authenticated subject, as a subject id.
    Authenticated,
    Id(&'a str),
    Set {
        namespace: &'a str,
        object: &'a str,
        relation: &'a str,
    },
}

/// Parses `NAMESPACE OBJECT RELATION [SUBJECT]` (the arguments after the directive name).
/// Errors are short phrases for `nginx -t`, which adds the directive, file and line; none
/// quotes an argument, so the glue decides how to show it.
pub fn parse_args<'a>(args: &[&'a [u8]]) -> Result<CheckArgs<'a>, &'static str> {
    let (namespace, object, relation, subject) = match *args {
        [n, o, r] => (n, o, r, None),
        [n, o, r, s] => (n, o, r, Some(s)),
        _ => {
            return Err("invalid number of arguments, expected NAMESPACE OBJECT RELATION [SUBJECT]")
        }
    };
    // In the order written, so the first wrong argument is the one reported.
    Ok(CheckArgs {
        namespace: arg(namespace, Arg::Namespace)?,
        object: arg(object, Arg::Object)?,
        relation: arg(relation, Arg::Relation)?,
        subject: match subject {
            None => SubjectArg::Authenticated,
            Some(s) => parse_subject(arg(s, Arg::Subject)?)?,
        },
    })
}

#[derive(Clone, Copy)]
enum Arg {
    Namespace,
    Object,
    Relation,
    Subject,
}

/// A written argument. Its text is bounded like a value: a longer template is a mistake, and
/// would only ever produce refused values.
fn arg(text: &[u8], which: Arg) -> Result<&str, &'static str> {
    let [empty, too_long, not_utf8] = match which {
        Arg::Namespace => [
            "NAMESPACE is empty",
            "NAMESPACE is longer than 4096 bytes",
            "NAMESPACE is not UTF-8",
        ],
        Arg::Object => [
            "OBJECT is empty",
            "OBJECT is longer than 4096 bytes",
            "OBJECT is not UTF-8",
        ],
        Arg::Relation => [
            "RELATION is empty",
            "RELATION is longer than 4096 bytes",
            "RELATION is not UTF-8",
        ],
        Arg::Subject => [
            "SUBJECT is empty",
            "SUBJECT is longer than 4096 bytes",
            "SUBJECT is not UTF-8",
        ],
    };
    if text.is_empty() {
        return Err(empty);
    }
    if text.len() > MAX_VALUE_LEN {
        return Err(too_long);
    }
    std::str::from_utf8(text).map_err(|_| not_utf8)
}

/// The subject rule of the module documentation, applied to the written text.
pub fn parse_subject(text: &str) -> Result<SubjectArg<'_>, &'static str> {
    let Some((namespace_object, relation)) = text.split_once('#') else {
        return Ok(SubjectArg::Id(text));
    };
    let Some((namespace, object)) = namespace_object.split_once(':') else {
        return Err(
            "the subject set has no \":\" before \"#\", expected namespace:object#relation",
        );
    };
    if relation.contains('#') {
        return Err("the subject set has more than one \"#\", expected namespace:object#relation");
    }
    if namespace.is_empty() {
        return Err("the subject set has no namespace, expected namespace:object#relation");
    }
    if object.is_empty() {
        return Err("the subject set has no object, expected namespace:object#relation");
    }
    if relation.is_empty() {
        return Err("the subject set has no relation, expected namespace:object#relation");
    }
    Ok(SubjectArg::Set {
        namespace,
        object,
        relation,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_borrowed_tuple_keys_and_converts() {
        let hasher = KeyHasher::new_with_keys(1, 2);
        let scope = crate::check::key::scope_of("http://keto/relation-tuples/check/openapi");
        let id = TupleRef {
            namespace: b"documents",
            object: b"readme",
            relation: b"viewer",
            subject: SubjectRef::Id(b"groups:eng#member"),
        };
        let set = TupleRef {
            subject: SubjectRef::Set {
                namespace: b"groups",
                object: b"eng",
                relation: b"member",
            },
            ..id
        };
        assert_ne!(id.key(&hasher, scope), set.key(&hasher, scope));
        assert_eq!(id.key(&hasher, scope), id.key(&hasher, scope));
        let moved = TupleRef {
            object: b"readmeviewer",
            relation: b"",
            ..id
        };
        assert_ne!(id.key(&hasher, scope), moved.key(&hasher, scope));
        assert_eq!(
            id.to_tuple().unwrap().subject(),
            &Subject::Id("groups:eng#member".into())
        );
        assert!(matches!(
            set.to_tuple().unwrap().subject(),
            Subject::Set { .. }
        ));
        assert_eq!(moved.to_tuple(), Err(Refusal::Empty(Part::Relation)));
        let bad = TupleRef {
            object: b"\xff",
            ..id
        };
        assert_eq!(bad.to_tuple(), Err(Refusal::NotUtf8(Part::Object)));
    }

    fn args<'a>(list: &[&'a str]) -> Vec<&'a [u8]> {
        list.iter().map(|s| s.as_bytes()).collect()
    }

    fn parse<'a>(list: &[&'a str]) -> Result<CheckArgs<'a>, &'static str> {
        parse_args(&args(list))
    }

    fn tuple(subject: Subject) -> Tuple {
        Tuple::new(b"documents", b"readme", b"viewer", subject).unwrap()
    }

    fn id(value: &str) -> Subject {
        Subject::id(value.as_bytes()).unwrap()
    }

    fn set(namespace: &str, object: &str, relation: &str) -> Subject {
        Subject::set(namespace.as_bytes(), object.as_bytes(), relation.as_bytes()).unwrap()
    }

    /// Reads back what `write_key` wrote, so tests can prove nothing is lost or ambiguous.
    pub(crate) fn decode_key(mut bytes: &[u8]) -> Option<(Vec<u8>, Tuple)> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = rest;
            Some(head)
        }
        fn field(bytes: &mut &[u8]) -> Option<Vec<u8>> {
            let len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?) as usize;
            Some(take(bytes, len)?.to_vec())
        }
        let string = |bytes: &mut &[u8]| String::from_utf8(field(bytes)?).ok();
        if take(&mut bytes, 1)? != [KEY_TAG] {
            return None;
        }
        let scope = field(&mut bytes)?;
        let namespace = string(&mut bytes)?;
        let object = string(&mut bytes)?;
        let relation = string(&mut bytes)?;
        let subject = match take(&mut bytes, 1)? {
            [SUBJECT_ID_TAG] => Subject::Id(string(&mut bytes)?),
            [SUBJECT_SET_TAG] => Subject::Set {
                namespace: string(&mut bytes)?,
                object: string(&mut bytes)?,
                relation: string(&mut bytes)?,
            },
            _ => return None,
        };
        bytes.is_empty().then_some((
            scope,
            Tuple {
                namespace,
                object,
                relation,
                subject,
            },
        ))
    }

    #[test]
    fn three_or_four_arguments() {
        let three = parse(&["documents", "$arg_doc", "viewer"]).unwrap();
        assert_eq!(
            three,
            CheckArgs {
                namespace: "documents",
                object: "$arg_doc",
                relation: "viewer",
                subject: SubjectArg::Authenticated,
            }
        );
        let four = parse(&["documents", "$1", "viewer", "$ory_user_id"]).unwrap();
        assert_eq!(four.subject, SubjectArg::Id("$ory_user_id"));
        let wrong = "invalid number of arguments, expected NAMESPACE OBJECT RELATION [SUBJECT]";
        for list in [&[][..], &["a"], &["a", "b"], &["a", "b", "c", "d", "e"]] {
            assert_eq!(parse(list).unwrap_err(), wrong, "{list:?}");
        }
    }

    #[test]
    fn empty_long_and_non_utf8_arguments() {
        assert_eq!(parse(&["", "o", "r"]).unwrap_err(), "NAMESPACE is empty");
        assert_eq!(parse(&["n", "", "r"]).unwrap_err(), "OBJECT is empty");
        assert_eq!(parse(&["n", "o", ""]).unwrap_err(), "RELATION is empty");
        assert_eq!(parse(&["n", "o", "r", ""]).unwrap_err(), "SUBJECT is empty");
        // The first wrong argument is the one reported.
        assert_eq!(parse(&["", "", "", ""]).unwrap_err(), "NAMESPACE is empty");

        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let at_limit = "x".repeat(MAX_VALUE_LEN);
        assert_eq!(
            parse(&[&long, "o", "r"]).unwrap_err(),
            "NAMESPACE is longer than 4096 bytes"
        );
        assert_eq!(
            parse(&["n", "o", "r", &long]).unwrap_err(),
            "SUBJECT is longer than 4096 bytes"
        );
        assert!(parse(&[&at_limit, &at_limit, &at_limit, &at_limit]).is_ok());
        assert_eq!(MAX_VALUE_LEN, 4096, "the phrases say 4096");

        let bad: &[u8] = b"doc\xff";
        assert_eq!(
            parse_args(&[b"n", bad, b"r"]).unwrap_err(),
            "OBJECT is not UTF-8"
        );
        assert_eq!(
            parse_args(&[b"n", b"o", b"r", bad]).unwrap_err(),
            "SUBJECT is not UTF-8"
        );
    }

    #[test]
    fn subject_sets_as_written() {
        let cases = [
            ("groups:eng#member", ("groups", "eng", "member")),
            (
                "groups:$arg_group#member",
                ("groups", "$arg_group", "member"),
            ),
            ("$ns:$obj#$rel", ("$ns", "$obj", "$rel")),
            ("${ns}:${obj}#${rel}", ("${ns}", "${obj}", "${rel}")),
            ("files:/a:b#owner", ("files", "/a:b", "owner")),
            ("files::#owner", ("files", ":", "owner")),
            ("n:o#...", ("n", "o", "...")),
        ];
        for (text, (namespace, object, relation)) in cases {
            assert_eq!(
                parse_subject(text),
                Ok(SubjectArg::Set {
                    namespace,
                    object,
                    relation
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn subject_ids_as_written() {
        for text in [
            "$ory_user_id",
            "bf32596a-f853-47c4-91e6-a3f41cf4949d",
            "user:42",
            "groups:eng",
            "a@b.c",
            "$arg_subject",
            ":",
            "@",
        ] {
            assert_eq!(parse_subject(text), Ok(SubjectArg::Id(text)), "{text}");
        }
    }

    #[test]
    fn malformed_subject_sets() {
        let cases = [
            ("ns:#rel", "the subject set has no object"),
            (":obj#rel", "the subject set has no namespace"),
            ("ns:obj#", "the subject set has no relation"),
            (":#", "the subject set has no namespace"),
            ("ns#rel", "the subject set has no \":\" before \"#\""),
            ("#rel", "the subject set has no \":\" before \"#\""),
            ("#", "the subject set has no \":\" before \"#\""),
            ("ns#obj:rel", "the subject set has no \":\" before \"#\""),
            ("ns:obj#rel#x", "the subject set has more than one \"#\""),
            ("ns:obj##", "the subject set has more than one \"#\""),
            ("$arg_a#$arg_b", "the subject set has no \":\" before \"#\""),
        ];
        for (text, want) in cases {
            let err = parse_subject(text).unwrap_err();
            assert_eq!(
                err,
                format!("{want}, expected namespace:object#relation"),
                "{text}"
            );
            assert_eq!(
                parse(&["documents", "readme", "viewer", text]).unwrap_err(),
                err
            );
        }
    }

    #[test]
    fn values_build_tuples() {
        let t = Tuple::new(b"documents", b"readme", b"viewer", id("u-1")).unwrap();
        assert_eq!(t.namespace(), "documents");
        assert_eq!(t.object(), "readme");
        assert_eq!(t.relation(), "viewer");
        assert_eq!(t.subject(), &Subject::Id("u-1".into()));
        assert_eq!(t.to_string(), "documents:readme#viewer@u-1");
        let t = tuple(set("groups", "eng", "member"));
        assert_eq!(t.to_string(), "documents:readme#viewer@groups:eng#member");
    }

    #[test]
    fn a_value_that_reads_like_a_set_stays_an_id() {
        // What `$arg_subject` evaluating to "groups:admins#member" becomes.
        let subject = Subject::id(b"groups:admins#member").unwrap();
        assert_eq!(subject, Subject::Id("groups:admins#member".into()));
    }

    #[test]
    fn refusals() {
        let long = vec![b'x'; MAX_VALUE_LEN + 1];
        let at_limit = vec![b'x'; MAX_VALUE_LEN];
        let cases: [(Result<Tuple, Refusal>, Refusal); 10] = [
            (
                Tuple::new(b"", b"o", b"r", id("s")),
                Refusal::Empty(Part::Namespace),
            ),
            (
                Tuple::new(b"n", b"", b"r", id("s")),
                Refusal::Empty(Part::Object),
            ),
            (
                Tuple::new(b"n", b"o", b"", id("s")),
                Refusal::Empty(Part::Relation),
            ),
            (
                Tuple::new(b"n", &long, b"r", id("s")),
                Refusal::TooLong(Part::Object),
            ),
            (
                Tuple::new(b"n", b"\xc3", b"r", id("s")),
                Refusal::NotUtf8(Part::Object),
            ),
            (
                Subject::id(b"").and_then(|s| Tuple::new(b"n", b"o", b"r", s)),
                Refusal::Empty(Part::Subject),
            ),
            (
                Subject::id(&long).and_then(|s| Tuple::new(b"n", b"o", b"r", s)),
                Refusal::TooLong(Part::Subject),
            ),
            (
                Subject::set(b"g", b"", b"m").and_then(|s| Tuple::new(b"n", b"o", b"r", s)),
                Refusal::Empty(Part::SetObject),
            ),
            (
                Subject::set(b"g", b"o", b"\xff").and_then(|s| Tuple::new(b"n", b"o", b"r", s)),
                Refusal::NotUtf8(Part::SetRelation),
            ),
            // Built from the variant directly, the subject is still checked.
            (
                Tuple::new(b"n", b"o", b"r", Subject::Id(String::new())),
                Refusal::Empty(Part::Subject),
            ),
        ];
        for (result, want) in cases {
            assert_eq!(result, Err(want));
        }
        assert!(Tuple::new(
            &at_limit,
            &at_limit,
            &at_limit,
            Subject::id(&at_limit).unwrap()
        )
        .is_ok());
        let set_too_long = Subject::Set {
            namespace: "g".into(),
            object: "o".into(),
            relation: "x".repeat(MAX_VALUE_LEN + 1),
        };
        assert_eq!(
            Tuple::new(b"n", b"o", b"r", set_too_long),
            Err(Refusal::TooLong(Part::SetRelation))
        );
    }

    #[test]
    fn refusal_texts() {
        assert_eq!(
            Refusal::Empty(Part::Object).to_string(),
            "the object is empty"
        );
        assert_eq!(
            Refusal::TooLong(Part::Subject).to_string(),
            "the subject is longer than 4096 bytes"
        );
        assert_eq!(
            Refusal::NotUtf8(Part::SetNamespace).to_string(),
            "the subject set's namespace is not UTF-8"
        );
    }

    #[test]
    fn key_bytes_are_laid_out_as_documented() {
        let mut out = vec![0xee];
        let t = Tuple::new(b"ns", b"obj", b"r", id("u")).unwrap();
        t.write_key(b"K", &mut out);
        let want: &[u8] = b"\xeeP\x01\0\0\0K\x02\0\0\0ns\x03\0\0\0obj\x01\0\0\0rI\x01\0\0\0u";
        assert_eq!(out, want, "appends after what was there");
        assert_eq!(out.len() - 1, t.key_len(1));
        let mut out = Vec::new();
        let t = tuple(set("g", "e", "m"));
        t.write_key(b"", &mut out);
        assert_eq!(out.len(), t.key_len(0));
        assert!(out.ends_with(b"S\x01\0\0\0g\x01\0\0\0e\x01\0\0\0m"));
        assert_eq!(decode_key(&out), Some((Vec::new(), t)));
    }

    #[test]
    fn keys_distinguish_every_field() {
        let keys = [
            (b"k".as_slice(), tuple(id("u"))),
            (b"k2", tuple(id("u"))),
            (b"", tuple(id("u"))),
            (b"k", tuple(id("v"))),
            // The id that reads like a set, and the set.
            (b"k", tuple(id("g:e#m"))),
            (b"k", tuple(set("g", "e", "m"))),
            (b"k", tuple(set("g", "e", "n"))),
            (b"k", tuple(set("g", "f", "m"))),
            (b"k", tuple(set("h", "e", "m"))),
            // Bytes moved across field boundaries.
            (b"k", tuple(set("ge", "e", "m"))),
            (b"k", tuple(set("g", "ee", "m"))),
            (
                b"k",
                Tuple::new(b"documentsr", b"eadme", b"viewer", id("u")).unwrap(),
            ),
            (
                b"k",
                Tuple::new(b"documents", b"readmev", b"iewer", id("u")).unwrap(),
            ),
            (
                b"k",
                Tuple::new(b"documents", b"readme", b"vieweru", id("x")).unwrap(),
            ),
            (
                b"kd",
                Tuple::new(b"ocuments", b"readme", b"viewer", id("u")).unwrap(),
            ),
        ];
        let encoded: Vec<Vec<u8>> = keys
            .iter()
            .map(|(scope, t)| {
                let mut out = Vec::new();
                t.write_key(scope, &mut out);
                out
            })
            .collect();
        for (i, a) in encoded.iter().enumerate() {
            for (j, b) in encoded.iter().enumerate() {
                if i != j {
                    assert_ne!(a, b, "keys {i} and {j} collide");
                }
            }
        }
    }
}
