//! Which requests to Kratos' API end sessions, and when they did: what `ory_session_logout`
//! watches for. Plain Rust: the nginx glue hands over the method, the path and the status.

/// A request that ends sessions when Kratos answers it with success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET …/self-service/logout?token=…`: the session of the credential the request
    /// carries (the browser's cookie).
    BrowserLogout,
    /// `DELETE …/self-service/logout/api` with `{"session_token": "…"}`: that token's session.
    ApiLogout,
    /// `DELETE …/sessions/{id}` (also the admin API's `/admin/sessions/{id}`): that session.
    Session(Vec<u8>),
    /// `DELETE …/sessions`: every other session of the caller's identity.
    OtherSessions,
    /// `DELETE …/identities/{id}/sessions` (admin API): every session of the identity.
    Identity(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Delete,
    Other,
}

/// The route of a request, by its method and its path (nginx's normalized URI, without the
/// query), wherever the API is mounted (`/.ory/kratos/public/...`).
pub fn route(method: Method, path: &[u8]) -> Option<Route> {
    let path = path.strip_suffix(b"/").unwrap_or(path);
    match method {
        Method::Get if path.ends_with(b"/self-service/logout") => Some(Route::BrowserLogout),
        Method::Delete if path.ends_with(b"/self-service/logout/api") => Some(Route::ApiLogout),
        Method::Delete if path.ends_with(b"/sessions") => {
            let before = &path[..path.len() - b"/sessions".len()];
            match last_segment(before) {
                Some((rest, id)) if rest.ends_with(b"/identities") && is_id(id) => {
                    Some(Route::Identity(id.to_vec()))
                }
                _ => Some(Route::OtherSessions),
            }
        }
        Method::Delete => {
            let (rest, id) = last_segment(path)?;
            (rest.ends_with(b"/sessions") && id != b"whoami" && is_id(id))
                .then(|| Route::Session(id.to_vec()))
        }
        _ => None,
    }
}

fn last_segment(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let slash = path.iter().rposition(|&b| b == b'/')?;
    Some((&path[..slash], &path[slash + 1..]))
}

/// What session and identity ids look like: Kratos' are UUIDs. Anything else is not purged
/// by, nor logged.
pub fn is_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= crate::check::zone::MAX_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether Kratos' answer says the sessions ended: a browser logout redirects (303) or, for
/// AJAX, answers 2xx; the API's routes answer 2xx (204 mostly).
pub fn succeeded(route: &Route, status: u16) -> bool {
    match route {
        Route::BrowserLogout => (200..300).contains(&status) || status == 303 || status == 302,
        _ => (200..300).contains(&status),
    }
}

/// The session token of `DELETE /self-service/logout/api`'s JSON body.
pub fn api_token(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        session_token: String,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let t = body.session_token;
    (!t.is_empty() && t.len() <= crate::session::credential::MAX_CREDENTIAL_LEN).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8f660ce3-69ec-4aeb-9fda-f9230dc3243f";

    #[test]
    fn routes() {
        use Method::*;
        let r = |m, p: &str| route(m, p.as_bytes());
        assert_eq!(r(Get, "/self-service/logout"), Some(Route::BrowserLogout));
        assert_eq!(
            r(Get, "/.ory/kratos/public/self-service/logout"),
            Some(Route::BrowserLogout)
        );
        assert_eq!(
            r(Get, "/self-service/logout/browser"),
            None,
            "only makes the URL"
        );
        assert_eq!(r(Delete, "/self-service/logout"), None);
        assert_eq!(
            r(Delete, "/self-service/logout/api"),
            Some(Route::ApiLogout)
        );
        assert_eq!(r(Get, "/self-service/logout/api"), None);
        assert_eq!(r(Delete, "/sessions"), Some(Route::OtherSessions));
        assert_eq!(r(Delete, "/kratos/sessions/"), Some(Route::OtherSessions));
        assert_eq!(
            r(Delete, &format!("/sessions/{ID}")),
            Some(Route::Session(ID.into()))
        );
        assert_eq!(
            r(Delete, &format!("/admin/sessions/{ID}")),
            Some(Route::Session(ID.into()))
        );
        assert_eq!(
            r(Delete, &format!("/admin/identities/{ID}/sessions")),
            Some(Route::Identity(ID.into()))
        );
        assert_eq!(r(Delete, "/sessions/whoami"), None);
        assert_eq!(r(Delete, "/sessions/a%20b"), None);
        assert_eq!(r(Get, &format!("/sessions/{ID}")), None);
        assert_eq!(r(Other, "/self-service/logout"), None);
        assert_eq!(r(Delete, "/"), None);
        assert_eq!(r(Delete, ""), None);
    }

    #[test]
    fn success() {
        assert!(succeeded(&Route::BrowserLogout, 303));
        assert!(succeeded(&Route::BrowserLogout, 200));
        assert!(succeeded(&Route::BrowserLogout, 204));
        assert!(!succeeded(&Route::BrowserLogout, 401));
        assert!(!succeeded(&Route::BrowserLogout, 500));
        assert!(succeeded(&Route::ApiLogout, 204));
        assert!(!succeeded(&Route::ApiLogout, 303));
        assert!(!succeeded(&Route::OtherSessions, 401));
        assert!(!succeeded(&Route::Session(vec![]), 404));
    }

    #[test]
    fn api_bodies() {
        assert_eq!(
            api_token(br#"{"session_token":"ory_st_x"}"#).as_deref(),
            Some("ory_st_x")
        );
        assert_eq!(api_token(br#"{"session_token":""}"#), None);
        assert_eq!(api_token(br#"{"session_token":1}"#), None);
        assert_eq!(api_token(b"session_token=x"), None);
        assert_eq!(api_token(b""), None);
        let long = format!(r#"{{"session_token":"{}"}}"#, "x".repeat(5000));
        assert_eq!(api_token(long.as_bytes()), None);
    }

    #[test]
    fn ids() {
        assert!(is_id(ID.as_bytes()));
        assert!(!is_id(b""));
        assert!(!is_id(b"a b"));
        assert!(!is_id(b"a\"b"));
        assert!(!is_id(&[b'a'; 256]));
    }
}
