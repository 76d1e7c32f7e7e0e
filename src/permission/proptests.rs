//! Property tests of what handles arbitrary input in a permission check: the values a
//! request's variables produce, the SUBJECT text of the configuration, the URL written for
//! `ory_permission_url` and the answer Keto sends. Each property runs on 512 generated inputs
//! (`PROPTEST_CASES=N` for more):
//!
//!     cargo test --release --lib permission::proptests

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use super::answer::decode_answer;
use super::tuple::{parse_subject, tests::decode_key, Subject, SubjectArg, Tuple, MAX_VALUE_LEN};
use super::url::{check_endpoint, check_url, CHECK_PATH};
use crate::check::call::CallError;
use crate::check::proptest_config as config;

/// Text that stresses query encoding and the subject syntax: its delimiters, percent signs,
/// controls, non-ASCII, and any other character.
fn value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => select(vec![
            ":", "#", "@", "&", "=", "+", "%", "%2F", "%zz", "?", "/", " ", ";", "\0", "\r\n",
            "\u{7f}", "é", "✓", "\u{feff}", "subject_id=x", "&relation=owner",
        ])
        .prop_map(str::to_owned),
        2 => "[a-z0-9-]{1,8}",
        1 => any::<char>().prop_map(String::from),
    ];
    vec(piece, 1..8).prop_map(|parts| parts.concat())
}

fn subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        value().prop_map(Subject::Id),
        (value(), value(), value()).prop_map(|(namespace, object, relation)| Subject::Set {
            namespace,
            object,
            relation
        }),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    (value(), value(), value(), subject()).prop_map(|(n, o, r, s)| {
        Tuple::new(n.as_bytes(), o.as_bytes(), r.as_bytes(), s).expect("values are valid")
    })
}

fn base_url() -> impl Strategy<Value = String> {
    (
        select(vec!["http", "https"]),
        select(vec!["keto", "127.0.0.1", "[::1]", "x.projects.oryapis.com"]),
        select(vec!["", ":4466", ":1"]),
        select(vec!["", "/", "/keto", "/a/b/", "/%7Ekto", "/sp%20ace"]),
    )
        .prop_map(|(s, h, p, path)| format!("{s}://{h}{p}{path}"))
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the values, Keto reads back exactly the tuple: same parameters, same order,
    /// same values, nothing added, and the endpoint's path untouched.
    #[test]
    fn check_url_round_trips(base in base_url(), t in tuple()) {
        let endpoint = check_endpoint(&base).unwrap();
        let url = check_url(&endpoint, &t);
        prop_assert_eq!(url.path(), endpoint.path());
        prop_assert!(url.path().ends_with(CHECK_PATH));
        prop_assert_eq!(url.fragment(), None);
        prop_assert_eq!(url.host_str(), endpoint.host_str());
        let got: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let mut want = vec![
            ("namespace".to_owned(), t.namespace().to_owned()),
            ("object".to_owned(), t.object().to_owned()),
            ("relation".to_owned(), t.relation().to_owned()),
        ];
        match t.subject() {
            Subject::Id(id) => want.push(("subject_id".into(), id.clone())),
            Subject::Set { namespace, object, relation } => {
                want.push(("subject_set.namespace".into(), namespace.clone()));
                want.push(("subject_set.object".into(), object.clone()));
                want.push(("subject_set.relation".into(), relation.clone()));
            }
        }
        prop_assert_eq!(got, want);
        // Only unreserved bytes and the encoding's own delimiters appear raw.
        let query = url.query().unwrap();
        prop_assert!(query.bytes().all(|b| b.is_ascii_alphanumeric()
            || b"-._*+%=&".contains(&b)), "{}", query);
    }

    /// The key bytes give back scope and tuple exactly, so two different pairs never share
    /// them.
    #[test]
    fn key_bytes_round_trip(scope in vec(any::<u8>(), 0..64), t in tuple()) {
        let mut out = Vec::new();
        t.write_key(&scope, &mut out);
        prop_assert_eq!(out.len(), t.key_len(scope.len()));
        prop_assert_eq!(decode_key(&out), Some((scope, t)));
    }

    /// SUBJECT text is an id exactly when it has no `#`; a set gives back its text and has
    /// three non-empty parts; anything else is an error. Never a panic.
    #[test]
    fn subject_text_is_classified(text in value()) {
        match parse_subject(&text) {
            Ok(SubjectArg::Id(id)) => {
                prop_assert_eq!(id, text.as_str());
                prop_assert!(!text.contains('#'));
            }
            Ok(SubjectArg::Set { namespace, object, relation }) => {
                prop_assert_eq!(format!("{namespace}:{object}#{relation}"), text.clone());
                prop_assert!(!namespace.is_empty() && !object.is_empty() && !relation.is_empty());
                prop_assert!(!namespace.contains(':') && !namespace.contains('#'));
                prop_assert!(!object.contains('#') && !relation.contains('#'));
            }
            Ok(SubjectArg::Authenticated) => prop_assert!(false, "never from text"),
            Err(why) => {
                prop_assert!(text.contains('#'));
                prop_assert!(why.ends_with("expected namespace:object#relation"));
            }
        }
    }

    /// Every well-formed set is read back as the parts it was written from.
    #[test]
    fn well_formed_sets_parse(
        namespace in "[^:#]{1,12}",
        object in "[^#]{1,12}",
        relation in "[^#]{1,12}",
    ) {
        let text = format!("{namespace}:{object}#{relation}");
        prop_assert_eq!(
            parse_subject(&text),
            Ok(SubjectArg::Set {
                namespace: &namespace,
                object: &object,
                relation: &relation
            })
        );
    }

    /// Any bytes of any length become a tuple part or a refusal, never a panic; accepted ones
    /// are kept byte for byte.
    #[test]
    fn values_are_kept_or_refused(bytes in prop_oneof![
        vec(any::<u8>(), 0..64),
        any::<String>().prop_map(String::into_bytes),
        "[a-zé✓]{4090,4100}".prop_map(String::into_bytes),
        vec(any::<u8>(), (MAX_VALUE_LEN - 4)..(MAX_VALUE_LEN + 4)),
    ]) {
        match Subject::id(&bytes) {
            Ok(Subject::Id(id)) => prop_assert_eq!(id.as_bytes(), &bytes[..]),
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(_) => prop_assert!(
                bytes.is_empty()
                    || bytes.len() > MAX_VALUE_LEN
                    || std::str::from_utf8(&bytes).is_err()
            ),
        }
    }

    /// `check_endpoint` never panics, and what it accepts is a plain http(s) endpoint.
    #[test]
    fn endpoints_are_plain(text in prop_oneof![base_url(), value(), "[ -~]{0,40}"]) {
        if let Ok(url) = check_endpoint(&text) {
            prop_assert!(url.scheme() == "http" || url.scheme() == "https");
            prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()));
            prop_assert_eq!(url.query(), None);
            prop_assert_eq!(url.fragment(), None);
            prop_assert_eq!(url.username(), "");
            prop_assert!(url.path().ends_with(CHECK_PATH));
        }
    }

    /// Any answer decodes without a panic, and "allowed" comes only from a 200 JSON object
    /// whose one `allowed` is that boolean.
    #[test]
    fn answers_never_allow_by_accident(
        status in prop_oneof![Just(200u16), Just(429u16), any::<u16>()],
        content_type in prop_oneof![
            Just(Some("application/json".to_owned())),
            Just(None),
            ".{0,24}".prop_map(Some),
        ],
        body in prop_oneof![
            vec(any::<u8>(), 0..64),
            select(vec![
                r#"{"allowed":true}"#, r#"{"allowed":false}"#, r#"{"allowed":"true"}"#,
                r#"{"allowed":true,"allowed":false}"#, r#"{"allowed":1}"#, "true", "[true]",
                r#"{"allowed":true"#, r#"{"x":{"allowed":true}}"#,
            ]).prop_map(|s| s.as_bytes().to_vec()),
        ],
    ) {
        let got = decode_answer(status, content_type.as_deref(), &body);
        match got {
            Ok(allowed) => {
                prop_assert_eq!(status, 200);
                let v: Value = serde_json::from_slice(&body).unwrap();
                prop_assert_eq!(v.get("allowed"), Some(&Value::Bool(allowed)));
            }
            Err(CallError::RateLimited) => prop_assert_eq!(status, 429),
            Err(CallError::Status(s)) => prop_assert!(s == status && s != 200 && s != 429),
            Err(CallError::Malformed(why)) => {
                prop_assert_eq!(status, 200);
                prop_assert!(why.len() < 80, "{}", why);
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }
}
