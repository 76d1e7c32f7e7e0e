//! `ory_permission_url`: validated once at configuration time into the check endpoint, which
//! each call then extends with the tuple as a query.

use reqwest::Url;

use super::tuple::{Subject, Tuple};

/// Keto's check route that always answers 200 `{"allowed": bool}`. The other one,
/// `/relation-tuples/check`, answers a denial with 403, which a gateway in front of Keto
/// (Ory Network refusing our API key, say) could send too; here a 403 is always an error.
pub const CHECK_PATH: &str = "/relation-tuples/check/openapi";

/// `base` is Keto's read API (`http://keto:4466`, an Ory Network project URL); a path prefix
/// (a reverse proxy's `/keto`) is kept. Errors are short phrases for `nginx -t`.
pub fn check_endpoint(base: &str) -> Result<Url, &'static str> {
    if base.is_empty() {
        return Err("the URL is empty");
    }
    let Ok(mut url) = Url::parse(base) else {
        // `127.0.0.1:4466`, `[::1]:4466`, `/keto`: nothing that reads as a scheme.
        return Err(if scheme_len(base).is_none() {
            "the scheme is missing"
        } else {
            "invalid URL"
        });
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        // `keto:4466` parses as scheme "keto" with path "4466": a host and port without a
        // scheme, not a scheme we do not speak.
        return Err(if looks_like_host_and_port(base) {
            "the scheme is missing"
        } else {
            "the scheme must be http or https"
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain a user name or password");
    }
    if url.query().is_some() {
        return Err("the URL must not contain a query");
    }
    if url.fragment().is_some() {
        return Err("the URL must not contain a fragment");
    }
    let prefix = url.path().trim_end_matches('/');
    // Given the endpoint itself, we would ask `…/check/openapi/relation-tuples/check/openapi`
    // and only learn of it from a 404 on the first request.
    if prefix.ends_with("/relation-tuples/check") || prefix.ends_with(CHECK_PATH) {
        return Err("the URL must be Keto's base URL, without /relation-tuples/check");
    }
    let path = format!("{prefix}{CHECK_PATH}");
    url.set_path(&path);
    Ok(url)
}

/// The length of a leading RFC 3986 scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`)
/// followed by `:`.
fn scheme_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let len = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .count();
    (bytes.get(len) == Some(&b':')).then_some(len)
}

/// `name:digits`, optionally followed by a path: what `host:port` looks like to a URL parser.
fn looks_like_host_and_port(text: &str) -> bool {
    let Some(rest) = scheme_len(text).map(|len| &text[len + 1..]) else {
        return false;
    };
    let port_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    port_len > 0 && matches!(rest.as_bytes().get(port_len), None | Some(b'/'))
}

/// The URL of one check: `endpoint` (from [`check_endpoint`]) with the tuple as a
/// form-urlencoded query, in the parameter names of Keto's check API. One clone of the endpoint
/// and one serialization, so it is cheap enough for every call; nothing is cached with it.
pub fn check_url(endpoint: &Url, tuple: &Tuple) -> Url {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("namespace", tuple.namespace())
            .append_pair("object", tuple.object())
            .append_pair("relation", tuple.relation());
        match tuple.subject() {
            Subject::Id(id) => {
                query.append_pair("subject_id", id);
            }
            Subject::Set {
                namespace,
                object,
                relation,
            } => {
                query
                    .append_pair("subject_set.namespace", namespace)
                    .append_pair("subject_set.object", object)
                    .append_pair("subject_set.relation", relation);
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(namespace: &str, object: &str, relation: &str, subject: Subject) -> Tuple {
        Tuple::new(
            namespace.as_bytes(),
            object.as_bytes(),
            relation.as_bytes(),
            subject,
        )
        .unwrap()
    }

    fn id(value: &str) -> Subject {
        Subject::id(value.as_bytes()).unwrap()
    }

    #[test]
    fn endpoints() {
        let ok = [
            (
                "http://keto:4466",
                "http://keto:4466/relation-tuples/check/openapi",
            ),
            (
                "http://keto:4466/",
                "http://keto:4466/relation-tuples/check/openapi",
            ),
            (
                "https://x.projects.oryapis.com",
                "https://x.projects.oryapis.com/relation-tuples/check/openapi",
            ),
            (
                "https://api.example.com/keto/",
                "https://api.example.com/keto/relation-tuples/check/openapi",
            ),
            (
                "http://127.0.0.1:4466//",
                "http://127.0.0.1:4466/relation-tuples/check/openapi",
            ),
            (
                "http://[::1]:4466/read",
                "http://[::1]:4466/read/relation-tuples/check/openapi",
            ),
            ("HTTP://Keto", "http://keto/relation-tuples/check/openapi"),
            (
                "https://keto:443",
                "https://keto/relation-tuples/check/openapi",
            ),
        ];
        for (base, want) in ok {
            assert_eq!(check_endpoint(base).unwrap().as_str(), want, "{base}");
        }
    }

    #[test]
    fn bad_endpoints() {
        let bad = [
            ("keto:4466", "the scheme is missing"),
            ("localhost:4466/keto", "the scheme is missing"),
            ("127.0.0.1:4466", "the scheme is missing"),
            ("[::1]:4466", "the scheme is missing"),
            ("keto", "the scheme is missing"),
            ("/relation-tuples", "the scheme is missing"),
            ("", "the URL is empty"),
            ("ftp://keto", "the scheme must be http or https"),
            ("unix:/run/keto.sock", "the scheme must be http or https"),
            ("keto:", "the scheme must be http or https"),
            ("keto:44a66", "the scheme must be http or https"),
            ("http://", "invalid URL"),
            ("http://keto:99999", "invalid URL"),
            ("http://keto:44x", "invalid URL"),
            ("http://exa mple.com", "invalid URL"),
            ("http://[::1", "invalid URL"),
            ("1http://keto", "the scheme is missing"),
            (
                "http://user:pw@keto",
                "the URL must not contain a user name or password",
            ),
            (
                "http://user@keto",
                "the URL must not contain a user name or password",
            ),
            ("http://keto/?a=b", "the URL must not contain a query"),
            ("http://keto/?", "the URL must not contain a query"),
            ("http://keto/#x", "the URL must not contain a fragment"),
            (
                "http://keto:4466/relation-tuples/check/openapi",
                "the URL must be Keto's base URL, without /relation-tuples/check",
            ),
            (
                "http://keto:4466/relation-tuples/check/",
                "the URL must be Keto's base URL, without /relation-tuples/check",
            ),
        ];
        for (base, want) in bad {
            assert_eq!(check_endpoint(base).unwrap_err(), want, "{base}");
        }
    }

    #[test]
    fn subject_id_query() {
        let endpoint = check_endpoint("http://keto:4466").unwrap();
        let url = check_url(
            &endpoint,
            &tuple(
                "documents",
                "readme",
                "viewer",
                id("bf32596a-f853-47c4-91e6-a3f41cf4949d"),
            ),
        );
        assert_eq!(
            url.as_str(),
            "http://keto:4466/relation-tuples/check/openapi?namespace=documents&object=readme\
             &relation=viewer&subject_id=bf32596a-f853-47c4-91e6-a3f41cf4949d"
        );
        // The endpoint itself is untouched, so the next call starts from it again.
        assert_eq!(endpoint.query(), None);
    }

    #[test]
    fn subject_set_query() {
        let endpoint = check_endpoint("https://x.projects.oryapis.com/").unwrap();
        let set = Subject::set(b"groups", b"eng", b"member").unwrap();
        let url = check_url(&endpoint, &tuple("documents", "readme", "viewer", set));
        assert_eq!(
            url.as_str(),
            "https://x.projects.oryapis.com/relation-tuples/check/openapi?namespace=documents\
             &object=readme&relation=viewer&subject_set.namespace=groups\
             &subject_set.object=eng&subject_set.relation=member"
        );
    }

    #[test]
    fn values_are_form_encoded() {
        let endpoint = check_endpoint("http://keto:4466/prefix").unwrap();
        let url = check_url(
            &endpoint,
            &tuple("files", "/a b/c&d=e?f#g+h%2F", "view", id("user:ä@x.com#1")),
        );
        assert_eq!(
            url.as_str(),
            "http://keto:4466/prefix/relation-tuples/check/openapi?namespace=files\
             &object=%2Fa+b%2Fc%26d%3De%3Ff%23g%2Bh%252F&relation=view\
             &subject_id=user%3A%C3%A4%40x.com%231"
        );
        assert_eq!(url.fragment(), None);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs[1], ("object".into(), "/a b/c&d=e?f#g+h%2F".into()));
        assert_eq!(pairs[3], ("subject_id".into(), "user:ä@x.com#1".into()));
    }
}
