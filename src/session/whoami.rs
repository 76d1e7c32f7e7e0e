//! The Kratos `/sessions/whoami` call: the URL, the client and one request with the
//! credential and nothing else. Runs on the worker's client thread and in unit tests alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, COOKIE, SET_COOKIE};

use super::credential::{CredentialKind, OwnedCredential};
use super::model::{decode_response, Answer};
use crate::check::call::{within, CallError};
use crate::check::client::{Client, Request};

/// `base` is the configured Kratos public URL; a path prefix (Ory Network's `/.ory`, a
/// reverse proxy's `/kratos/`) is kept. Errors are short phrases for `nginx -t`.
pub fn whoami_url(base: &str) -> Result<reqwest::Url, &'static str> {
    // "kratos:4433" parses as a URL of scheme "kratos", "127.0.0.1:4433" not at all.
    if !base.contains("://") {
        return Err("the scheme is missing (http:// or https://)");
    }
    let mut url = reqwest::Url::parse(base).map_err(|_| "invalid URL")?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not contain a user name or password");
    }
    if url.query().is_some() {
        return Err("URL must not contain a query");
    }
    if url.fragment().is_some() {
        return Err("URL must not contain a fragment");
    }
    let path = format!("{}/sessions/whoami", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// One whoami call with `credential` and nothing else from the client's request. `url` is
/// used as given, so a caller may add a query (e.g. `tokenize_as`). `timeout` bounds the
/// whole call, body included.
pub async fn whoami(
    client: &Client,
    url: &reqwest::Url,
    credential: &OwnedCredential,
    timeout: Duration,
) -> Result<Answer, CallError> {
    within(timeout, call(client, url, credential)).await
}

async fn call(
    client: &Client,
    url: &reqwest::Url,
    credential: &OwnedCredential,
) -> Result<Answer, CallError> {
    let (name, value) = match credential.kind {
        CredentialKind::SessionToken => (
            HeaderName::from_static("x-session-token"),
            credential.value.clone(),
        ),
        CredentialKind::Cookie => (
            COOKIE,
            format!("{}={}", credential.cookie_name, credential.value),
        ),
        CredentialKind::Bearer => (AUTHORIZATION, format!("Bearer {}", credential.value)),
    };
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| CallError::Unreachable("credential is not a valid header value".into()))?;
    // Keeps the value out of HTTP/2 header compression tables and reqwest's debug output.
    value.set_sensitive(true);

    let request = Request::get(url)
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .header(name, value);
    let response = client.send(&request).await?;
    let status = response.status;
    let set_cookie = if status == 200 {
        response
            .headers(SET_COOKIE.as_str())
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    // Only a 200 needs its body; for the others the status is the answer, and a body that
    // is too large or breaks off only costs the 403 its redirect hint.
    decode_response(
        status,
        response.content_type(),
        response.header("ory-session-cache-for"),
        set_cookie,
        response.body()?,
        now_unix_ms(),
    )
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::client::{build_client, Trust};
    use crate::check::MAX_ANSWER_LEN;
    use crate::session::model::tests::FULL_BODY;

    #[test]
    fn whoami_url_cases() {
        let ok = [
            ("http://kratos:4433", "http://kratos:4433/sessions/whoami"),
            ("http://kratos:4433/", "http://kratos:4433/sessions/whoami"),
            (
                "https://auth.example.com",
                "https://auth.example.com/sessions/whoami",
            ),
            (
                "https://x.projects.oryapis.com/.ory",
                "https://x.projects.oryapis.com/.ory/sessions/whoami",
            ),
            (
                "https://x.example.com/.ory/",
                "https://x.example.com/.ory/sessions/whoami",
            ),
            (
                "http://127.0.0.1:4433//",
                "http://127.0.0.1:4433/sessions/whoami",
            ),
            (
                "http://[::1]:4433/kratos/public",
                "http://[::1]:4433/kratos/public/sessions/whoami",
            ),
            ("HTTP://Kratos", "http://kratos/sessions/whoami"),
        ];
        for (base, want) in ok {
            assert_eq!(whoami_url(base).unwrap().as_str(), want, "{base}");
        }
        const MISSING: &str = "the scheme is missing (http:// or https://)";
        let bad = [
            ("", MISSING),
            ("kratos:4433", MISSING),
            ("127.0.0.1:4433", MISSING),
            ("kratos", MISSING),
            ("/sessions", MISSING),
            ("http://", "invalid URL"),
            ("http://exa mple.com", "invalid URL"),
            ("ftp://kratos", "scheme must be http or https"),
            ("unix:/run/kratos.sock", MISSING),
            ("unix:///run/kratos.sock", "scheme must be http or https"),
            (
                "http://user:pw@kratos",
                "URL must not contain a user name or password",
            ),
            (
                "http://user@kratos",
                "URL must not contain a user name or password",
            ),
            ("http://kratos/?a=b", "URL must not contain a query"),
            ("http://kratos/?", "URL must not contain a query"),
            ("http://kratos/#x", "URL must not contain a fragment"),
        ];
        for (base, want) in bad {
            assert_eq!(whoami_url(base).unwrap_err(), want, "{base}");
        }
    }

    mod client {
        use super::*;
        use tokio::net::TcpListener;

        const LONG: Duration = Duration::from_secs(10);

        fn future_body() -> String {
            FULL_BODY.replace("2026-07-30T09:30:36.741152Z", "2999-01-01T00:00:00Z")
        }

        fn token(value: &str) -> OwnedCredential {
            OwnedCredential {
                kind: CredentialKind::SessionToken,
                cookie_name: String::new(),
                value: value.into(),
            }
        }

        /// Serves one connection (see `check::testserver`), at whoami's URL.
        async fn serve(
            head: String,
            body: Vec<Vec<u8>>,
            pause: Duration,
        ) -> (reqwest::Url, tokio::task::JoinHandle<String>) {
            let (base, task) = crate::check::testserver::serve(head, body, pause).await;
            (whoami_url(&base).unwrap(), task)
        }

        fn head_200(len: usize) -> String {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\
                 Ory-Session-Cache-For: 30\r\nSet-Cookie: ory_kratos_session=new; Path=/\r\n\
                 Connection: close\r\n\r\n"
            )
        }

        /// Header names of a request head, lowercased, and the value of `want`.
        fn header_names(request: &str) -> Vec<String> {
            request
                .split("\r\n")
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
                .collect()
        }

        fn header<'a>(request: &'a str, want: &str) -> Option<&'a str> {
            request.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(want).then(|| v.trim())
            })
        }

        #[tokio::test]
        async fn sends_only_the_session_token() {
            let body = future_body();
            let (url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let client = build_client(&Trust::System).unwrap();
            let answer = whoami(&client, &url, &token("ory_st_abc"), LONG)
                .await
                .unwrap();
            let request = server.await.unwrap();

            assert!(
                request.starts_with("GET /sessions/whoami HTTP/1.1\r\n"),
                "{request}"
            );
            let mut names = header_names(&request);
            names.sort();
            assert_eq!(names, ["accept", "host", "x-session-token"], "{request}");
            assert_eq!(header(&request, "x-session-token"), Some("ory_st_abc"));
            assert_eq!(header(&request, "accept"), Some("application/json"));

            let Answer::Active {
                session,
                cache_for_ms,
                set_cookie,
            } = answer
            else {
                panic!("{answer:?}");
            };
            assert_eq!(&*session.user_id, "bf32596a-f853-47c4-91e6-a3f41cf4949d");
            assert_eq!(cache_for_ms, Some(30_000));
            assert_eq!(set_cookie, ["ory_kratos_session=new; Path=/"]);
        }

        #[tokio::test]
        async fn sends_only_the_session_cookie() {
            let body = future_body();
            let (url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let credential = OwnedCredential {
                kind: CredentialKind::Cookie,
                cookie_name: "ory_session_acme".into(),
                value: "MTY5abc==".into(),
            };
            let client = build_client(&Trust::System).unwrap();
            whoami(&client, &url, &credential, LONG).await.unwrap();
            let request = server.await.unwrap();
            let mut names = header_names(&request);
            names.sort();
            assert_eq!(names, ["accept", "cookie", "host"], "{request}");
            assert_eq!(
                header(&request, "cookie"),
                Some("ory_session_acme=MTY5abc==")
            );
        }

        #[tokio::test]
        async fn sends_only_the_bearer_token() {
            let body = future_body();
            let (url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let credential = OwnedCredential {
                kind: CredentialKind::Bearer,
                cookie_name: String::new(),
                value: "ory_st_xyz".into(),
            };
            let client = build_client(&Trust::System).unwrap();
            whoami(&client, &url, &credential, LONG).await.unwrap();
            let request = server.await.unwrap();
            let mut names = header_names(&request);
            names.sort();
            assert_eq!(names, ["accept", "authorization", "host"], "{request}");
            assert_eq!(header(&request, "authorization"), Some("Bearer ory_st_xyz"));
        }

        #[tokio::test]
        async fn keeps_the_url_path_and_query() {
            let body = future_body();
            let (mut url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let base = format!("{}/.ory", url.origin().ascii_serialization());
            url = whoami_url(&base).unwrap();
            url.query_pairs_mut()
                .append_pair("tokenize_as", "jwt_example");
            whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await
            .unwrap();
            let request = server.await.unwrap();
            assert!(
                request.starts_with("GET /.ory/sessions/whoami?tokenize_as=jwt_example HTTP/1.1"),
                "{request}"
            );
        }

        #[tokio::test]
        async fn unauthenticated_401() {
            let body = r#"{"error":{"code":401}}"#;
            let head = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nOry-Session-Cache-For: 60\r\n\r\n",
                body.len()
            );
            let (url, _server) = serve(head, vec![body.into()], Duration::ZERO).await;
            let answer = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            assert_eq!(
                answer.unwrap(),
                Answer::Unauthenticated {
                    reason: "Kratos rejected the session"
                }
            );
        }

        #[tokio::test]
        async fn rate_limited_and_server_error() {
            let head = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".to_string();
            let (url, _server) = serve(head, vec![], Duration::ZERO).await;
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            assert_eq!(r.unwrap_err(), CallError::RateLimited);

            let head = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\n".to_string();
            let (url, _server) = serve(head, vec![b"oops!".to_vec()], Duration::ZERO).await;
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            assert_eq!(r.unwrap_err(), CallError::Status(503));
        }

        #[tokio::test]
        async fn redirects_are_not_followed() {
            let head = "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/steal\r\n\
                        Content-Length: 0\r\n\r\n"
                .to_string();
            let (url, _server) = serve(head, vec![], Duration::ZERO).await;
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            assert_eq!(r.unwrap_err(), CallError::Status(302));
        }

        #[tokio::test]
        async fn oversize_content_length() {
            let (url, _server) = serve(head_200(MAX_ANSWER_LEN + 1), vec![], Duration::ZERO).await;
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            assert_eq!(r.unwrap_err(), CallError::TooLarge);
        }

        #[tokio::test]
        async fn oversize_chunked_body() {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
                .to_string();
            let chunk = vec![b' '; 64 * 1024];
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            let parts = vec![framed; MAX_ANSWER_LEN / chunk.len() + 2];
            let (url, _server) = serve(head, parts, Duration::ZERO).await;
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            assert_eq!(r.unwrap_err(), CallError::TooLarge);
        }

        #[tokio::test]
        async fn body_at_the_limit_is_read() {
            let mut body = future_body().into_bytes();
            body.resize(MAX_ANSWER_LEN, b' ');
            let (url, _server) = serve(head_200(body.len()), vec![body], Duration::ZERO).await;
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            assert!(matches!(r, Ok(Answer::Active { .. })), "{r:?}");
        }

        #[tokio::test]
        async fn slow_body_times_out() {
            let body = future_body();
            let (first, rest) = body.split_at(10);
            let (url, _server) = serve(
                head_200(body.len()),
                vec![first.into(), rest.into()],
                Duration::from_secs(5),
            )
            .await;
            let started = std::time::Instant::now();
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                Duration::from_millis(200),
            )
            .await;
            assert_eq!(r.unwrap_err(), CallError::Timeout);
            assert!(started.elapsed() < Duration::from_secs(3));
        }

        #[tokio::test]
        async fn refused_port_is_unreachable() {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            drop(listener);
            let mut url = whoami_url(&base).unwrap();
            url.query_pairs_mut().append_pair("tokenize_as", "tmpl");
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("s3cr3t"),
                LONG,
            )
            .await;
            let err = r.unwrap_err();
            assert_eq!(err, CallError::Unreachable("connection refused".into()));
            let text = err.describe(&crate::session::KRATOS);
            assert_eq!(text, "Kratos is unreachable (connection refused)");
            for leak in ["127.0.0.1", "whoami", "tmpl", "s3cr3t"] {
                assert!(!text.contains(leak), "{text}");
            }
        }

        #[tokio::test]
        async fn connection_closed_mid_body_is_unreachable() {
            let body = future_body();
            let (url, _server) = serve(
                head_200(body.len()),
                vec![body.as_bytes()[..20].to_vec()],
                Duration::ZERO,
            )
            .await;
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &token("t"),
                LONG,
            )
            .await;
            let Err(CallError::Unreachable(why)) = r else {
                panic!("{r:?}");
            };
            assert!(!why.contains("127.0.0.1"), "{why}");
        }

        #[tokio::test]
        async fn invalid_credential_is_not_sent() {
            let credential = token("bad\r\nvalue");
            let url = whoami_url("http://127.0.0.1:1").unwrap();
            let r = whoami(
                &build_client(&Trust::System).unwrap(),
                &url,
                &credential,
                LONG,
            )
            .await;
            let err = r.unwrap_err();
            assert!(matches!(err, CallError::Unreachable(_)));
            assert!(!err.describe(&crate::session::KRATOS).contains("bad"));
        }
    }
}
