//! The two calls to Hydra: fetching the JWKS and introspecting an opaque token, plus the
//! checks of the URLs the directives name. The client is built elsewhere
//! (`crate::check::client::build_client`: no redirects, no proxy), so a 3xx is an error and a
//! token is never handed to a host the configuration does not name.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT};
use reqwest::Url;

use super::introspection::{self, Introspection, FORM_CONTENT_TYPE};
use super::jwks::{self, KeySet};
use crate::check::call::{within, CallError};
use crate::check::client::{Client, Request};

/// For `ory_oauth2_jwks_url`: the full URL of the key set, e.g.
/// `http://hydra:4444/.well-known/jwks.json`.
pub fn jwks_url(text: &str) -> Result<Url, &'static str> {
    endpoint_url(text)
}

/// For `ory_oauth2_introspection_url`: the full URL, e.g.
/// `http://hydra:4445/admin/oauth2/introspect`.
pub fn introspection_url(text: &str) -> Result<Url, &'static str> {
    endpoint_url(text)
}

/// http or https with a host, and no user name, password or fragment (a credential in a
/// URL ends up in logs; an API key belongs in `ory_oauth2_introspection_header`). A query is
/// allowed: the URL is used as given. Errors are short phrases for `nginx -t`.
fn endpoint_url(text: &str) -> Result<Url, &'static str> {
    if text.is_empty() {
        return Err("the URL is empty");
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        let ours = |s: &str| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https");
        return Err(if text.split_once(':').is_some_and(|(s, _)| ours(s)) {
            "invalid URL"
        } else if has_other_scheme(text) {
            "the scheme must be http or https"
        } else if text.starts_with(['/', '.']) {
            "the URL must be absolute, with http:// or https://"
        } else {
            // `hydra:4444/...`, `127.0.0.1:4445`, `localhost`: a host, with the scheme
            // forgotten. The url crate would read `hydra:` as the scheme.
            "the scheme is missing"
        });
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err("the scheme must be http or https");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("the URL must not contain a user name or password");
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err("the URL has no host");
    }
    let url = Url::parse(text).map_err(|_| "invalid URL")?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    if url.fragment().is_some() {
        return Err("the URL must not contain a fragment");
    }
    Ok(url)
}

/// `mailto:x`, `unix:/run/hydra.sock`: a scheme, but not ours. `hydra:4444` is not one:
/// what follows the colon is a port.
fn has_other_scheme(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.starts_with(|c: char| c.is_ascii_digit())
        && !rest.is_empty()
}

/// For `ory_oauth2_introspection_header NAME VALUE` (e.g. Ory Network's `Authorization:
/// Bearer ory_pat_...`).
pub use crate::check::call::extra_header as introspection_header;

/// `GET` the JWKS. `timeout` bounds the whole call, body included.
pub async fn fetch_jwks(
    client: &Client,
    url: &Url,
    timeout: Duration,
) -> Result<KeySet, CallError> {
    let call = async {
        let request = Request::get(url).header(
            ACCEPT,
            HeaderValue::from_static("application/jwk-set+json, application/json"),
        );
        let response = client.send(&request).await?;
        jwks::decode_answer(response.status, response.content_type(), response.body()?)
    };
    within(timeout, call).await
}

/// `POST` the token to the introspection endpoint with `extra_headers` (from
/// [`introspection_header`]). `token` must be a checked bearer token.
pub async fn introspect(
    client: &Client,
    url: &Url,
    extra_headers: &[(HeaderName, HeaderValue)],
    token: &str,
    timeout: Duration,
) -> Result<Introspection, CallError> {
    let call = async {
        // The token is only ever in this body, which nothing logs, and is dropped with the
        // request.
        let body = introspection::request_body(token).into_bytes();
        let mut request = Request::post(url, FORM_CONTENT_TYPE, body)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in extra_headers {
            let mut value = value.clone();
            value.set_sensitive(true);
            request = request.header(name.clone(), value);
        }
        let response = client.send(&request).await?;
        introspection::decode_answer(response.status, response.content_type(), response.body()?)
    };
    within(timeout, call).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::fixtures;
    use tokio::net::TcpListener;

    #[test]
    fn urls() {
        for good in [
            "http://hydra:4444/.well-known/jwks.json",
            "https://auth.example.com/.well-known/jwks.json",
            "http://127.0.0.1:4445/admin/oauth2/introspect",
            "http://[::1]:4445/admin/oauth2/introspect",
            "HTTP://hydra/x",
            "https://project.projects.oryapis.com/admin/oauth2/introspect",
            "http://hydra:4444/jwks?tenant=acme",
            "http://hydra",
        ] {
            let url = jwks_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert!(url.scheme() == "http" || url.scheme() == "https");
            assert!(introspection_url(good).is_ok());
        }
        let bad = [
            ("", "the URL is empty"),
            ("hydra:4444/.well-known/jwks.json", "the scheme is missing"),
            ("127.0.0.1:4445", "the scheme is missing"),
            (
                "127.0.0.1:4445/admin/oauth2/introspect",
                "the scheme is missing",
            ),
            ("localhost:4445", "the scheme is missing"),
            ("hydra", "the scheme is missing"),
            ("hydra:", "the scheme is missing"),
            (
                "/admin/oauth2/introspect",
                "the URL must be absolute, with http:// or https://",
            ),
            ("ftp://hydra/jwks", "the scheme must be http or https"),
            ("mailto:admin@hydra", "the scheme must be http or https"),
            ("unix:/run/hydra.sock", "the scheme must be http or https"),
            ("http:/hydra/x", "invalid URL"),
            ("https:hydra", "invalid URL"),
            ("http://", "the URL has no host"),
            ("http:///x", "the URL has no host"),
            ("http://:4444/x", "the URL has no host"),
            (
                "http://user:pw@hydra/x",
                "the URL must not contain a user name or password",
            ),
            (
                "http://key@hydra/x",
                "the URL must not contain a user name or password",
            ),
            ("http://hydra/x#frag", "the URL must not contain a fragment"),
            ("http://hydra/x#", "the URL must not contain a fragment"),
            ("http://hy dra/x", "invalid URL"),
            ("http://hydra:99999/x", "invalid URL"),
        ];
        for (text, want) in bad {
            assert_eq!(jwks_url(text).unwrap_err(), want, "{text}");
            assert_eq!(introspection_url(text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn extra_headers() {
        let (name, value) = introspection_header("Authorization", "Bearer ory_pat_x").unwrap();
        assert_eq!(name.as_str(), "authorization");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("ory_pat"));
        assert!(introspection_header("X-Api-Key", "k").is_ok());
        assert_eq!(
            introspection_header("Bad Name", "v").unwrap_err(),
            "invalid header name"
        );
        assert_eq!(
            introspection_header("", "v").unwrap_err(),
            "invalid header name"
        );
        assert_eq!(
            introspection_header("X-A", "a\r\nb").unwrap_err(),
            "invalid header value"
        );
        for framing in [
            "Host",
            "Content-Type",
            "content-length",
            "Transfer-Encoding",
            "Connection",
        ] {
            assert_eq!(
                introspection_header(framing, "x").unwrap_err(),
                "the module sets this header itself"
            );
        }
    }

    const LONG: Duration = Duration::from_secs(10);

    fn client() -> crate::check::client::Client {
        crate::check::client::build_client(&crate::check::client::Trust::System).unwrap()
    }

    use crate::check::testserver::serve;

    fn head(status: &str, content_type: &str, len: usize) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
    }

    fn header<'a>(request: &'a str, want: &str) -> Option<&'a str> {
        request.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(want).then(|| v.trim())
        })
    }

    fn active_body() -> String {
        serde_json::json!({
            "active": true, "scope": "read", "client_id": "c", "sub": "u", "exp": 4102444800u64,
            "iat": 1, "nbf": 1, "aud": [], "iss": "https://hydra", "token_type": "Bearer",
            "token_use": "access_token", "ext": {}
        })
        .to_string()
    }

    #[tokio::test]
    async fn fetches_a_jwks() {
        let body = fixtures::JWKS;
        let (base, server) = serve(
            head("200 OK", "application/json", body.len()),
            vec![body.into()],
            Duration::ZERO,
        )
        .await;
        let url = jwks_url(&format!("{base}/.well-known/jwks.json")).unwrap();
        let keys = fetch_jwks(&client(), &url, LONG).await.unwrap();
        assert_eq!(keys.len(), 6);
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /.well-known/jwks.json HTTP/1.1\r\n"),
            "{request}"
        );
        assert_eq!(
            header(&request, "accept"),
            Some("application/jwk-set+json, application/json")
        );
    }

    #[tokio::test]
    async fn introspects_with_the_extra_headers() {
        let body = active_body();
        let (base, server) = serve(
            head("200 OK", "application/json;charset=UTF-8", body.len()),
            vec![body.into()],
            Duration::ZERO,
        )
        .await;
        let url = introspection_url(&format!("{base}/admin/oauth2/introspect")).unwrap();
        let extra = [introspection_header("Authorization", "Bearer ory_pat_key").unwrap()];
        let answer = introspect(&client(), &url, &extra, "ory_at_a+b/c=", LONG)
            .await
            .unwrap();
        assert!(matches!(answer, Introspection::Active(ref c) if c.sub() == Some("u")));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /admin/oauth2/introspect HTTP/1.1\r\n"),
            "{request}"
        );
        assert_eq!(header(&request, "content-type"), Some(FORM_CONTENT_TYPE));
        assert_eq!(header(&request, "accept"), Some("application/json"));
        assert_eq!(
            header(&request, "authorization"),
            Some("Bearer ory_pat_key")
        );
        assert!(
            request.ends_with("\r\n\r\ntoken=ory_at_a%2Bb%2Fc%3D"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn inactive_and_errors() {
        let body = r#"{"active":false}"#;
        let (base, _s) = serve(
            head("200 OK", "application/json", body.len()),
            vec![body.into()],
            Duration::ZERO,
        )
        .await;
        let url = introspection_url(&base).unwrap();
        let answer = introspect(&client(), &url, &[], "t", LONG).await.unwrap();
        assert!(matches!(answer, Introspection::Invalid { .. }));

        for (status, want) in [
            ("429 Too Many Requests", CallError::RateLimited),
            ("500 Internal Server Error", CallError::Status(500)),
            ("401 Unauthorized", CallError::Status(401)),
            ("302 Found", CallError::Status(302)),
        ] {
            let (base, _s) = serve(
                head(status, "application/json", 2),
                vec![b"{}".to_vec()],
                Duration::ZERO,
            )
            .await;
            let url = introspection_url(&base).unwrap();
            let err = introspect(&client(), &url, &[], "t", LONG)
                .await
                .unwrap_err();
            assert_eq!(err, want.clone(), "{status}");
            let (base, _s) = serve(
                head(status, "application/json", 2),
                vec![b"{}".to_vec()],
                Duration::ZERO,
            )
            .await;
            let err = fetch_jwks(&client(), &jwks_url(&base).unwrap(), LONG)
                .await
                .unwrap_err();
            assert_eq!(err, want, "{status}");
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let h = "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/steal\r\n\
                 Content-Length: 0\r\n\r\n";
        let (base, _s) = serve(h.into(), vec![], Duration::ZERO).await;
        let err = introspect(
            &client(),
            &introspection_url(&base).unwrap(),
            &[],
            "t",
            LONG,
        )
        .await;
        assert_eq!(err.unwrap_err(), CallError::Status(307));
    }

    #[tokio::test]
    async fn oversize_answers() {
        let (base, _s) = serve(
            head(
                "200 OK",
                "application/json",
                crate::check::MAX_ANSWER_LEN + 1,
            ),
            vec![],
            Duration::ZERO,
        )
        .await;
        let err = fetch_jwks(&client(), &jwks_url(&base).unwrap(), LONG)
            .await
            .unwrap_err();
        assert_eq!(err, CallError::TooLarge);

        // Chunked, with no length announced: cut off at the limit.
        let h = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n";
        let chunk = vec![b' '; 64 * 1024];
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        let parts = vec![framed; crate::check::MAX_ANSWER_LEN / chunk.len() + 2];
        let (base, _s) = serve(h.into(), parts, Duration::ZERO).await;
        let err = introspect(
            &client(),
            &introspection_url(&base).unwrap(),
            &[],
            "t",
            LONG,
        )
        .await;
        assert_eq!(err.unwrap_err(), CallError::TooLarge);
    }

    #[tokio::test]
    async fn slow_answers_time_out() {
        let body = active_body();
        let (first, rest) = body.split_at(10);
        let (base, _s) = serve(
            head("200 OK", "application/json", body.len()),
            vec![first.into(), rest.into()],
            Duration::from_secs(5),
        )
        .await;
        let started = std::time::Instant::now();
        let err = introspect(
            &client(),
            &introspection_url(&base).unwrap(),
            &[],
            "t",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert_eq!(err, CallError::Timeout);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_refused_port_names_no_url_and_no_token() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!(
            "http://{}/admin/oauth2/introspect?x=s3cr3tq",
            listener.local_addr().unwrap()
        );
        drop(listener);
        let url = introspection_url(&base).unwrap();
        let extra = [introspection_header("X-Api-Key", "s3cr3tkey").unwrap()];
        let err = introspect(&client(), &url, &extra, "ory_at_s3cr3ttoken", LONG)
            .await
            .unwrap_err();
        assert_eq!(err, CallError::Unreachable("connection refused".into()));
        let text = format!("{} {err:?}", err.describe(&crate::oauth2::HYDRA));
        assert_eq!(
            err.describe(&crate::oauth2::HYDRA),
            "Hydra is unreachable (connection refused)"
        );
        for leak in ["127.0.0.1", "introspect", "s3cr3t"] {
            assert!(!text.contains(leak), "{text}");
        }
        let err = fetch_jwks(&client(), &jwks_url(&base).unwrap(), LONG)
            .await
            .unwrap_err();
        assert_eq!(
            err.describe(&crate::oauth2::JWKS_ENDPOINT),
            "the JWKS endpoint is unreachable (connection refused)"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_mid_body_is_unreachable() {
        let body = fixtures::JWKS;
        let (base, _s) = serve(
            head("200 OK", "application/json", body.len()),
            vec![body.as_bytes()[..100].to_vec()],
            Duration::ZERO,
        )
        .await;
        let err = fetch_jwks(&client(), &jwks_url(&base).unwrap(), LONG)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Unreachable(_)), "{err:?}");
    }

    /// The core against the Hydra double: its JWKS and minted tokens verify here, its
    /// introspection answers decode. Needs python3-jwt (t/lib/make-jwt-fixtures' deps).
    #[tokio::test]
    #[ignore = "starts t/lib/hydra-double (needs /usr/bin/python3 with PyJWT)"]
    async fn against_the_hydra_double() {
        use crate::oauth2::outcome::{check_introspection, check_jwt};
        use crate::oauth2::rules::Rules;
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        /// Stops the double however the test ends.
        struct Double(std::process::Child);
        impl Drop for Double {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/t/lib/hydra-double");
        let mut child = Command::new(script)
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _double = Double(child);
        let base = format!("http://{}", line.trim().rsplit(' ').next().unwrap());
        let http = client();
        // The double's own control calls, outside the code under test.
        let plain = reqwest::Client::new();
        let control = |path: &str, body: serde_json::Value| {
            let plain = plain.clone();
            let url = format!("{base}{path}");
            async move {
                let r = plain.post(url).body(body.to_string()).send().await.unwrap();
                serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()
            }
        };

        let keys = fetch_jwks(
            &http,
            &jwks_url(&format!("{base}/.well-known/jwks.json")).unwrap(),
            LONG,
        )
        .await
        .unwrap();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert!(keys.skipped().is_empty());
        assert_eq!(keys.keys()[0].rsa_bits(), Some(4096));

        let mut rules = Rules::default();
        rules.add_issuer(&base).unwrap();
        rules.add_audience("api.example.com").unwrap();
        rules.add_scope("offline").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for alg in ["RS256", "ES256", "EdDSA", "PS256"] {
            let minted = control("/__double/jwt", serde_json::json!({ "alg": alg })).await;
            let token = minted["token"].as_str().unwrap();
            let claims =
                check_jwt(token, &keys, &rules, now).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!(claims.client_id(), Some("double-client"));
        }
        let rotated = control("/__double/rotate", serde_json::json!({"alg": "RS256"})).await;
        let minted = control("/__double/jwt", serde_json::json!({"alg": "RS256"})).await;
        assert_eq!(minted["kid"], rotated["kid"]);
        assert_eq!(
            check_jwt(minted["token"].as_str().unwrap(), &keys, &rules, now),
            Err(crate::oauth2::outcome::JwtDenial::UnknownKid)
        );

        let url = introspection_url(&format!("{base}/admin/oauth2/introspect")).unwrap();
        let made = control("/__double/opaque", serde_json::json!({})).await;
        let token = made["token"].as_str().unwrap();
        let answer = introspect(&http, &url, &[], token, LONG).await.unwrap();
        let claims = check_introspection(answer, &rules, now).unwrap();
        assert_eq!(claims.scope_text(), "openid offline");
        control("/__double/revoke", serde_json::json!({ "token": token })).await;
        let answer = introspect(&http, &url, &[], token, LONG).await.unwrap();
        assert!(check_introspection(answer, &rules, now).is_err());
        let refresh = control(
            "/__double/opaque",
            serde_json::json!({"token_use": "refresh_token"}),
        )
        .await;
        let answer = introspect(&http, &url, &[], refresh["token"].as_str().unwrap(), LONG)
            .await
            .unwrap();
        assert_eq!(
            answer,
            Introspection::Invalid {
                reason: "the token is not an access token (token_use)"
            }
        );
        for (mode, want) in [
            ("oversize", CallError::TooLarge),
            ("status", CallError::Status(500)),
            (
                "wrong_type",
                CallError::Malformed("content type is not application/json".into()),
            ),
        ] {
            control(
                "/__double/behaviour",
                serde_json::json!({"endpoint": "introspect", "mode": mode, "count": 1}),
            )
            .await;
            let err = introspect(&http, &url, &[], token, LONG).await.unwrap_err();
            assert_eq!(err, want, "{mode}");
        }
        control(
            "/__double/behaviour",
            serde_json::json!({"endpoint": "jwks", "mode": "stall", "count": 1}),
        )
        .await;
        let err = fetch_jwks(
            &http,
            &jwks_url(&format!("{base}/.well-known/jwks.json")).unwrap(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert_eq!(err, CallError::Timeout);
        let calls = plain
            .get(format!("{base}/__double/calls"))
            .send()
            .await
            .unwrap();
        let calls: serde_json::Value =
            serde_json::from_slice(&calls.bytes().await.unwrap()).unwrap();
        assert_eq!(
            calls["counts"],
            serde_json::json!({"jwks": 2, "introspect": 6})
        );
    }
}
