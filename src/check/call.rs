//! What every call to a service shares: why it can fail, and reading an answer without
//! trusting it (bounded, no URL or credential in any error text).

use std::future::Future;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use super::decision::Outcome;
use super::text::header_safe;
use super::MAX_ANSWER_LEN;

/// A service a check asks, as log lines name it.
pub struct Service {
    pub name: &'static str,
    /// The directive that bounds a call to it.
    pub timeout_directive: &'static str,
}

/// Why there is no answer from a service. None of the texts contains a URL or a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    Unreachable(String),
    Timeout,
    /// 429: not a verdict on the credential, so it must never become a 401 or a 403.
    RateLimited,
    Status(u16),
    Malformed(String),
    TooLarge,
}

impl CallError {
    /// Failures of a service are gateway errors: the request is never let through, and never
    /// blamed on the client either.
    pub fn outcome(&self) -> Outcome {
        match self {
            CallError::Timeout => Outcome::Timeout,
            CallError::RateLimited => Outcome::Unavailable,
            CallError::Unreachable(_)
            | CallError::Status(_)
            | CallError::Malformed(_)
            | CallError::TooLarge => Outcome::BadGateway,
        }
    }

    /// What failed, for the log line: "Kratos answered 500".
    pub fn describe(&self, service: &Service) -> String {
        let name = service.name;
        match self {
            CallError::Unreachable(why) => format!("{name} is unreachable ({why})"),
            CallError::Timeout => {
                format!("{name} did not answer within {}", service.timeout_directive)
            }
            CallError::RateLimited => format!("{name} rate-limited the request (429)"),
            CallError::Status(status) => format!("{name} answered {status}"),
            CallError::Malformed(why) => format!("{name} sent a malformed answer: {why}"),
            CallError::TooLarge => {
                format!("{name} response body is larger than {MAX_ANSWER_LEN} bytes")
            }
        }
    }
}

/// Headers a directive adds to every call to a service (an API key, say).
pub type ExtraHeaders = std::sync::Arc<[(HeaderName, HeaderValue)]>;

/// Checks a header for `ory_oauth2_introspection_header` and `ory_permission_header`. Headers
/// that frame the request are the client's to set. The value is marked sensitive: an API key
/// is kept out of HTTP/2 header compression tables and debug output.
pub fn extra_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), &'static str> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid header name")?;
    const FRAMING: [&str; 7] = [
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
    ];
    if FRAMING.contains(&name.as_str()) {
        return Err("the module sets this header itself");
    }
    let mut value = HeaderValue::from_str(value).map_err(|_| "invalid header value")?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Runs a whole call, body included, within `timeout`.
pub async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(CallError::Timeout))
}

/// Reads a response body of at most [`MAX_ANSWER_LEN`] bytes.
pub async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, CallError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_ANSWER_LEN as u64)
    {
        return Err(CallError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_ANSWER_LEN {
            return Err(CallError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's own Display names the URL, which may carry what is checked; describe the
/// innermost cause instead, in at most 200 bytes.
pub fn transport_error(e: reqwest::Error) -> CallError {
    if e.is_timeout() {
        return CallError::Timeout;
    }
    let e = e.without_url();
    let mut why = None;
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // An OS error is best described by its kind ("connection refused"); a custom
            // one (TLS, DNS) by its message.
            why = Some(match io.raw_os_error() {
                Some(_) => io.kind().to_string(),
                None => io.to_string(),
            });
            break;
        }
        why = Some(err.to_string());
        source = err.source();
    }
    unreachable(why.unwrap_or_else(|| e.to_string()))
}

/// A socket's error, described as [`transport_error`] describes reqwest's.
pub fn io_error(e: std::io::Error) -> CallError {
    unreachable(match e.raw_os_error() {
        Some(_) => e.kind().to_string(),
        None => e.to_string(),
    })
}

/// At most 200 bytes, safe in a log line.
fn unreachable(mut why: String) -> CallError {
    if why.len() > 200 {
        let mut end = 200;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
    }
    CallError::Unreachable(header_safe(&why).into())
}

/// An answer that is not the JSON it should be.
pub fn json_error(e: serde_json::Error) -> CallError {
    CallError::Malformed(json_error_text(&e))
}

/// serde_json's own messages can quote the offending value (a claim, a key); say only where
/// the text broke.
pub fn json_error_text(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected value",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Whether a `Content-Type` is JSON (`application/json`, any parameters).
pub fn is_json(content_type: &str) -> bool {
    media_type_is(content_type, &["application/json"])
}

/// Whether the media type of a `Content-Type` (before any parameter) is one of `types`.
pub fn media_type_is(content_type: &str, types: &[&str]) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    types.iter().any(|t| essence.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: Service = Service {
        name: "Kratos",
        timeout_directive: "ory_session_timeout",
    };

    #[test]
    fn descriptions_name_the_service_and_what_failed() {
        let cases = [
            (CallError::Status(500), "Kratos answered 500"),
            (
                CallError::Unreachable("connection refused".into()),
                "Kratos is unreachable (connection refused)",
            ),
            (
                CallError::Timeout,
                "Kratos did not answer within ory_session_timeout",
            ),
            (
                CallError::Malformed("syntax error at line 1 column 1".into()),
                "Kratos sent a malformed answer: syntax error at line 1 column 1",
            ),
            (
                CallError::TooLarge,
                "Kratos response body is larger than 1048576 bytes",
            ),
            (
                CallError::RateLimited,
                "Kratos rate-limited the request (429)",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.describe(&SERVICE), want);
        }
    }

    #[test]
    fn failures_are_gateway_errors() {
        assert_eq!(CallError::RateLimited.outcome(), Outcome::Unavailable);
        assert_eq!(CallError::Timeout.outcome(), Outcome::Timeout);
        for err in [
            CallError::Status(500),
            CallError::Status(404),
            CallError::Status(400),
            CallError::Status(302),
            CallError::TooLarge,
            CallError::Malformed("x".into()),
            CallError::Unreachable("refused".into()),
        ] {
            assert_eq!(err.outcome(), Outcome::BadGateway, "{err:?}");
        }
    }

    #[test]
    fn json_errors_do_not_quote_the_input() {
        let e = serde_json::from_str::<serde_json::Value>(r#"{"s3cr3t" 1}"#).unwrap_err();
        let text = json_error_text(&e);
        assert_eq!(text, "syntax error at line 1 column 11");
        assert!(!text.contains("s3cr3t"));
    }

    #[test]
    fn media_types() {
        assert!(media_type_is(
            "application/jwk-set+json; charset=utf-8",
            &["application/json", "application/jwk-set+json"]
        ));
        assert!(!media_type_is(
            "application/jwk-set",
            &["application/jwk-set+json"]
        ));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/json"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json(""));
    }
}
