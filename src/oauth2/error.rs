//! Why a call to the JWKS or introspection endpoint gave no usable answer. Like
//! `crate::kratos::KratosError`: no text contains a URL, a header value or a token, and a
//! 429 is never mistaken for a verdict on the token.

use std::fmt;

/// Hydra's answers are a few KiB (a JWKS of a dozen RSA-4096 keys is ~10 KiB); more is not
/// Hydra talking, and reading it would let a broken upstream make every worker buffer
/// without bound.
pub const MAX_ANSWER_LEN: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Jwks,
    Introspection,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Unreachable(String),
    Timeout,
    /// 429: not a verdict on the token, so it must never become a 401.
    RateLimited,
    Status(u16),
    Malformed(String),
    TooLarge,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub endpoint: Endpoint,
    pub failure: Failure,
}

impl CallError {
    pub fn jwks(failure: Failure) -> Self {
        CallError {
            endpoint: Endpoint::Jwks,
            failure,
        }
    }

    pub fn introspection(failure: Failure) -> Self {
        CallError {
            endpoint: Endpoint::Introspection,
            failure,
        }
    }
}

impl fmt::Display for CallError {
    /// `<what failed>` for "... while checking OAuth2 token". The JWKS may be served by any
    /// issuer, so it is named by its role; introspection is Hydra's admin API.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, what) = match self.endpoint {
            Endpoint::Jwks => ("the JWKS endpoint", "JWKS"),
            Endpoint::Introspection => ("Hydra", "introspection answer"),
        };
        match &self.failure {
            Failure::Unreachable(why) => write!(f, "{who} is unreachable ({why})"),
            Failure::Timeout => write!(f, "{who} did not answer in time"),
            Failure::RateLimited => write!(f, "{who} rate-limited the request (429)"),
            Failure::Status(status) => write!(f, "{who} answered {status}"),
            Failure::Malformed(why) => write!(f, "{who} sent a malformed {what}: {why}"),
            Failure::TooLarge => {
                write!(f, "{who} sent an answer larger than {MAX_ANSWER_LEN} bytes")
            }
        }
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let cases = [
            (
                CallError::jwks(Failure::Unreachable("connection refused".into())),
                "the JWKS endpoint is unreachable (connection refused)",
            ),
            (
                CallError::introspection(Failure::Unreachable("connection refused".into())),
                "Hydra is unreachable (connection refused)",
            ),
            (
                CallError::jwks(Failure::Timeout),
                "the JWKS endpoint did not answer in time",
            ),
            (
                CallError::introspection(Failure::Timeout),
                "Hydra did not answer in time",
            ),
            (
                CallError::introspection(Failure::RateLimited),
                "Hydra rate-limited the request (429)",
            ),
            (
                CallError::introspection(Failure::Status(500)),
                "Hydra answered 500",
            ),
            (
                CallError::jwks(Failure::Status(404)),
                "the JWKS endpoint answered 404",
            ),
            (
                CallError::jwks(Failure::Malformed("x".into())),
                "the JWKS endpoint sent a malformed JWKS: x",
            ),
            (
                CallError::introspection(Failure::Malformed("x".into())),
                "Hydra sent a malformed introspection answer: x",
            ),
            (
                CallError::introspection(Failure::TooLarge),
                "Hydra sent an answer larger than 1048576 bytes",
            ),
            (
                CallError::jwks(Failure::TooLarge),
                "the JWKS endpoint sent an answer larger than 1048576 bytes",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
