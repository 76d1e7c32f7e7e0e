//! One check call to Keto. No nginx types: this runs on the worker's client thread and in unit
//! tests alike.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, ACCEPT};

use super::answer::decode_answer;
use crate::check::call::{within, CallError};
use crate::check::client::{Client, Request};

/// Asks Keto whether the tuple in `url` (from [`super::url::check_url`]) is allowed. Sends
/// nothing from the client's request, only `Accept`. `client` is the worker's client, built
/// without redirects: a 3xx is an error, and following it would send the tuple where the
/// `Location` says. `timeout` bounds the whole call, body included.
pub async fn check(
    client: &Client,
    url: &reqwest::Url,
    extra_headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<bool, CallError> {
    within(timeout, call(client, url, extra_headers)).await
}

async fn call(
    client: &Client,
    url: &reqwest::Url,
    extra_headers: &[(HeaderName, HeaderValue)],
) -> Result<bool, CallError> {
    let mut request =
        Request::get(url).header(ACCEPT, HeaderValue::from_static("application/json"));
    for (name, value) in extra_headers {
        request = request.header(name.clone(), value.clone());
    }
    let response = client.send(&request).await?;
    // Only a 200 needs its body. The others are read too, so the connection can be reused,
    // but a body that is too large or breaks off does not change their status.
    decode_answer(response.status, response.content_type(), response.body()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::client::{build_client, Trust};
    use crate::permission::tuple::{Subject, Tuple};
    use crate::permission::url::{check_endpoint, check_url};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const LONG: Duration = Duration::from_secs(10);
    const USER: &str = "bf32596a-f853-47c4-91e6-a3f41cf4949d";

    fn readme_viewer() -> Tuple {
        Tuple::new(
            b"documents",
            b"readme",
            b"viewer",
            Subject::id(USER.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// Serves one connection (see `check::testserver`), at the service's URL.
    async fn serve(
        head: String,
        body: Vec<Vec<u8>>,
        pause: Duration,
    ) -> (reqwest::Url, tokio::task::JoinHandle<String>) {
        let (base, task) = crate::check::testserver::serve(head, body, pause).await;
        (check_endpoint(&base).unwrap(), task)
    }

    fn head(status: &str, content_type: &str, len: usize) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
             Connection: close\r\n\r\n"
        )
    }

    /// Keto's answer, as its Go server writes it.
    fn keto_200(body: &str) -> (String, Vec<Vec<u8>>) {
        (
            head("200 OK", "application/json; charset=utf-8", body.len()),
            vec![body.into()],
        )
    }

    async fn check_once(head: String, body: Vec<Vec<u8>>) -> Result<bool, CallError> {
        let (endpoint, _server) = serve(head, body, Duration::ZERO).await;
        let url = check_url(&endpoint, &readme_viewer());
        check(&build_client(&Trust::System).unwrap(), &url, &[], LONG).await
    }

    #[tokio::test]
    async fn asks_with_the_tuple_and_nothing_else() {
        let (head, body) = keto_200("{\"allowed\":true}\n");
        let (endpoint, server) = serve(head, body, Duration::ZERO).await;
        let url = check_url(&endpoint, &readme_viewer());
        let allowed = check(&build_client(&Trust::System).unwrap(), &url, &[], LONG).await;
        let request = server.await.unwrap();
        assert_eq!(allowed, Ok(true));
        let want = format!(
            "GET /relation-tuples/check/openapi?namespace=documents&object=readme\
             &relation=viewer&subject_id={USER} HTTP/1.1\r\n"
        );
        assert!(request.starts_with(&want), "{request}");
        let mut names: Vec<String> = request
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
            .collect();
        names.sort();
        assert_eq!(names, ["accept", "host"], "{request}");
        assert!(
            request.contains("\r\naccept: application/json\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn keeps_the_path_prefix_and_sends_subject_sets() {
        let (head, body) = keto_200(r#"{"allowed":false}"#);
        let (endpoint, server) = serve(head, body, Duration::ZERO).await;
        let base = format!("{}/keto/", endpoint.origin().ascii_serialization());
        let endpoint = check_endpoint(&base).unwrap();
        let set = Subject::set(b"groups", b"eng team", b"member").unwrap();
        let tuple = Tuple::new(b"documents", b"readme", b"viewer", set).unwrap();
        let allowed = check(
            &build_client(&Trust::System).unwrap(),
            &check_url(&endpoint, &tuple),
            &[],
            LONG,
        )
        .await;
        assert_eq!(allowed, Ok(false));
        let request = server.await.unwrap();
        assert!(
            request.starts_with(
                "GET /keto/relation-tuples/check/openapi?namespace=documents&object=readme\
                 &relation=viewer&subject_set.namespace=groups&subject_set.object=eng+team\
                 &subject_set.relation=member HTTP/1.1\r\n"
            ),
            "{request}"
        );
    }

    #[tokio::test]
    async fn denial_is_a_verdict() {
        let (head, body) = keto_200(r#"{"allowed":false}"#);
        assert_eq!(check_once(head, body).await, Ok(false));
    }

    #[tokio::test]
    async fn chunked_answer() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\n\r\n"
            .to_string();
        let parts = vec![
            b"5\r\n{\"all\r\n".to_vec(),
            b"b\r\nowed\":true}\r\n0\r\n\r\n".to_vec(),
        ];
        assert_eq!(check_once(head, parts).await, Ok(true));
    }

    #[tokio::test]
    async fn statuses() {
        let cases = [
            ("429 Too Many Requests", Err(CallError::RateLimited)),
            ("500 Internal Server Error", Err(CallError::Status(500))),
            ("503 Service Unavailable", Err(CallError::Status(503))),
            ("400 Bad Request", Err(CallError::Status(400))),
            ("403 Forbidden", Err(CallError::Status(403))),
            ("404 Not Found", Err(CallError::Status(404))),
        ];
        for (status, want) in cases {
            // Every body says "allowed"; none may be believed.
            let body = r#"{"allowed":true}"#;
            let got = check_once(
                head(status, "application/json", body.len()),
                vec![body.into()],
            )
            .await;
            assert_eq!(got, want, "{status}");
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let head = "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/steal\r\n\
                    Content-Length: 0\r\n\r\n"
            .to_string();
        assert_eq!(check_once(head, vec![]).await, Err(CallError::Status(307)));
    }

    #[tokio::test]
    async fn garbage_and_wrong_type() {
        let body = "<html>not json";
        let got = check_once(
            head("200 OK", "application/json", body.len()),
            vec![body.into()],
        );
        assert!(matches!(got.await, Err(CallError::Malformed(_))));
        let body = r#"{"allowed":true}"#;
        let got = check_once(head("200 OK", "text/html", body.len()), vec![body.into()]).await;
        assert_eq!(
            got,
            Err(CallError::Malformed(
                "content type is not application/json".into()
            ))
        );
    }

    #[tokio::test]
    async fn oversize_content_length() {
        let got = check_once(
            head(
                "200 OK",
                "application/json",
                crate::check::MAX_ANSWER_LEN + 1,
            ),
            vec![],
        );
        assert_eq!(got.await, Err(CallError::TooLarge));
    }

    #[tokio::test]
    async fn oversize_chunked_body() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\n\r\n"
            .to_string();
        // Starts like a grant, so a client that ignored the limit would say "allowed".
        let mut first = b"{\"allowed\":true,\"padding\":\"".to_vec();
        first.resize(64 * 1024, b'x');
        let mut framed = format!("{:x}\r\n", first.len()).into_bytes();
        framed.extend_from_slice(&first);
        framed.extend_from_slice(b"\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        let mut more = format!("{:x}\r\n", chunk.len()).into_bytes();
        more.extend_from_slice(&chunk);
        more.extend_from_slice(b"\r\n");
        let mut parts = vec![framed];
        parts.extend(std::iter::repeat_n(
            more,
            crate::check::MAX_ANSWER_LEN / chunk.len() + 1,
        ));
        assert_eq!(check_once(head, parts).await, Err(CallError::TooLarge));
    }

    #[tokio::test]
    async fn body_at_the_limit_is_read() {
        let mut body = br#"{"allowed":true}"#.to_vec();
        body.resize(crate::check::MAX_ANSWER_LEN, b' ');
        let got = check_once(head("200 OK", "application/json", body.len()), vec![body]);
        assert_eq!(got.await, Ok(true));
    }

    #[tokio::test]
    async fn an_error_status_with_an_oversize_body_keeps_its_status() {
        let got = check_once(
            head(
                "502 Bad Gateway",
                "text/html",
                crate::check::MAX_ANSWER_LEN + 1,
            ),
            vec![],
        );
        assert_eq!(got.await, Err(CallError::Status(502)));
    }

    #[tokio::test]
    async fn slow_answer_times_out() {
        let body = r#"{"allowed":true}"#;
        let (endpoint, _server) = serve(
            head("200 OK", "application/json", body.len()),
            vec![body[..5].into(), body[5..].into()],
            Duration::from_secs(5),
        )
        .await;
        let url = check_url(&endpoint, &readme_viewer());
        let started = std::time::Instant::now();
        let got = check(
            &build_client(&Trust::System).unwrap(),
            &url,
            &[],
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(got, Err(CallError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn no_answer_times_out() {
        // Accepts and reads, never answers: the server task stays parked until the test ends.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let _server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        let url = check_url(&check_endpoint(&base).unwrap(), &readme_viewer());
        let got = check(
            &build_client(&Trust::System).unwrap(),
            &url,
            &[],
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(got, Err(CallError::Timeout));
    }

    #[tokio::test]
    async fn refused_port_is_unreachable_and_names_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let url = check_url(&check_endpoint(&base).unwrap(), &readme_viewer());
        let err = check(&build_client(&Trust::System).unwrap(), &url, &[], LONG)
            .await
            .unwrap_err();
        assert_eq!(err, CallError::Unreachable("connection refused".into()));
        let text = err.describe(&crate::permission::KETO);
        assert_eq!(text, "Keto is unreachable (connection refused)");
        for leak in ["127.0.0.1", "relation-tuples", "readme", USER] {
            assert!(!text.contains(leak), "{text}");
        }
    }

    #[tokio::test]
    async fn connection_closed_before_answering_is_unreachable() {
        let (endpoint, _server) = serve(String::new(), vec![], Duration::ZERO).await;
        let url = check_url(&endpoint, &readme_viewer());
        let got = check(&build_client(&Trust::System).unwrap(), &url, &[], LONG).await;
        let Err(CallError::Unreachable(why)) = got else {
            panic!("{got:?}");
        };
        assert!(!why.contains("127.0.0.1") && !why.contains(USER), "{why}");
    }

    #[tokio::test]
    async fn connection_closed_mid_body_is_unreachable() {
        let body = r#"{"allowed":true}"#;
        let got = check_once(
            head("200 OK", "application/json", body.len()),
            vec![body[..8].into()],
        )
        .await;
        assert!(matches!(got, Err(CallError::Unreachable(_))), "{got:?}");
    }
}
