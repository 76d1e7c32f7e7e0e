//! What nginx does with a Kratos answer: the outcome table of the module, in one place.

use crate::kratos::{Answer, KratosError};

/// The decision for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A usable session: the request goes on.
    Allowed,
    /// No credential, a bad one, or one Kratos does not accept.
    Unauthenticated,
    /// The session does not satisfy the required authenticator assurance level.
    Forbidden,
    /// Kratos rate-limited us, or too many calls are already in flight in this worker.
    Unavailable,
    /// Kratos failed or answered something we cannot trust.
    BadGateway,
    /// Kratos did not answer within `ory_session_timeout`.
    Timeout,
    /// A bug of ours (a caught panic): fail closed.
    Internal,
}

impl Outcome {
    /// The HTTP status nginx answers with; 0 for a request that goes on.
    pub fn status(self) -> u16 {
        match self {
            Outcome::Allowed => 0,
            Outcome::Unauthenticated => 401,
            Outcome::Forbidden => 403,
            Outcome::Unavailable => 503,
            Outcome::BadGateway => 502,
            Outcome::Timeout => 504,
            Outcome::Internal => 500,
        }
    }

    /// Refusals are the client's business and are logged at `info`, like nginx's own
    /// access-control modules; failures of Kratos or of the module are errors.
    pub fn is_failure(self) -> bool {
        self.status() >= 500
    }
}

/// Maps one whoami result to an outcome; the reason is what the log line says.
pub fn from_whoami(result: &Result<Answer, KratosError>) -> (Outcome, String) {
    match result {
        Ok(Answer::Active { .. }) => (Outcome::Allowed, String::new()),
        Ok(Answer::Unauthenticated { reason }) => (Outcome::Unauthenticated, (*reason).to_owned()),
        Ok(Answer::AalRequired { .. }) => (
            Outcome::Forbidden,
            "Kratos requires a higher authenticator assurance level".to_owned(),
        ),
        Err(err) => {
            let outcome = match err {
                KratosError::Timeout => Outcome::Timeout,
                KratosError::RateLimited => Outcome::Unavailable,
                KratosError::Unreachable(_)
                | KratosError::Status(_)
                | KratosError::Malformed(_)
                | KratosError::TooLarge => Outcome::BadGateway,
            };
            (outcome, err.to_string())
        }
    }
}

/// Whether the answer may be reused for other requests with the same credential. Errors
/// never are: the next request must get its own chance once Kratos is back.
pub fn is_cacheable(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Allowed | Outcome::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: Result<Answer, KratosError>) -> Outcome {
        from_whoami(&result).0
    }

    #[test]
    fn kratos_refusals_map_to_client_errors() {
        assert_eq!(
            outcome(Ok(Answer::Unauthenticated { reason: "x" })),
            Outcome::Unauthenticated
        );
        assert_eq!(
            outcome(Ok(Answer::AalRequired {
                redirect_browser_to: None
            })),
            Outcome::Forbidden
        );
        assert_eq!(Outcome::Unauthenticated.status(), 401);
        assert_eq!(Outcome::Forbidden.status(), 403);
    }

    #[test]
    fn kratos_failures_map_to_gateway_errors() {
        assert_eq!(outcome(Err(KratosError::RateLimited)), Outcome::Unavailable);
        assert_eq!(outcome(Err(KratosError::Timeout)), Outcome::Timeout);
        assert_eq!(outcome(Err(KratosError::Status(500))), Outcome::BadGateway);
        assert_eq!(outcome(Err(KratosError::Status(404))), Outcome::BadGateway);
        assert_eq!(outcome(Err(KratosError::TooLarge)), Outcome::BadGateway);
        assert_eq!(
            outcome(Err(KratosError::Malformed("x".into()))),
            Outcome::BadGateway
        );
        assert_eq!(
            outcome(Err(KratosError::Unreachable("refused".into()))),
            Outcome::BadGateway
        );
        assert_eq!(Outcome::Unavailable.status(), 503);
        assert_eq!(Outcome::BadGateway.status(), 502);
        assert_eq!(Outcome::Timeout.status(), 504);
    }

    #[test]
    fn a_rate_limit_is_never_a_401() {
        assert_ne!(outcome(Err(KratosError::RateLimited)).status(), 401);
    }

    #[test]
    fn only_answers_are_cached() {
        assert!(is_cacheable(Outcome::Allowed));
        assert!(is_cacheable(Outcome::Unauthenticated));
        for o in [
            Outcome::Forbidden,
            Outcome::Unavailable,
            Outcome::BadGateway,
            Outcome::Timeout,
        ] {
            assert!(!is_cacheable(o), "{o:?}");
        }
    }

    #[test]
    fn failures_are_errors_refusals_are_not() {
        assert!(Outcome::BadGateway.is_failure());
        assert!(!Outcome::Unauthenticated.is_failure());
        assert!(!Outcome::Allowed.is_failure());
    }
}
