//! Outcomes and decisions, the same for every kind of check.
//!
//! A check ends in an [`Outcome`]: what it concluded about the request. The access driver
//! turns the outcomes of a request's checks into one [`Decision`]: what nginx does with it.
//! A decision is mapped once to the status nginx answers with ([`Decision::status`]) and
//! once to the counter it is reported under ([`Decision::counter`]).

/// What one check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The credential is good and satisfies what the location asks: the request may go on.
    Allowed,
    /// No credential, a bad one, or one the service does not accept.
    Unauthenticated,
    /// A good credential that is not enough here (a session below the required assurance
    /// level, a token without a required scope, a permission denied).
    Forbidden,
    /// The service rate-limited us, or too many calls are already in flight in this worker.
    Unavailable,
    /// The service failed or answered something we cannot trust.
    BadGateway,
    /// The service did not answer in time.
    Timeout,
    /// A bug of ours (a caught panic, no memory): fail closed.
    Internal,
}

impl Outcome {
    /// Refusals are the client's business and are logged at `info`, like nginx's own
    /// access-control modules; failures of a service or of the module are errors.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Unavailable | Outcome::BadGateway | Outcome::Timeout | Outcome::Internal
        )
    }

    /// Whether the answer behind this outcome may be reused for other requests with the same
    /// credential. Failures never are: the next request must get its own chance once the
    /// service is back.
    pub fn is_cacheable(self) -> bool {
        matches!(self, Outcome::Allowed | Outcome::Unauthenticated)
    }
}

/// What nginx does with a request once its checks have ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request goes on to the next handler of the access phase.
    Continue,
    /// A browser is sent to log in: 303 with the `Location` the check set.
    Redirect,
    /// The request ends with the status of this outcome (never `Allowed`).
    Refuse(Outcome),
}

/// The counters decisions are reported under, in the order of [`Counter::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Allowed,
    Unauthenticated,
    Forbidden,
    Redirect,
    BadGateway,
    Unavailable,
    Timeout,
    Internal,
}

impl Counter {
    pub const ALL: [Counter; 8] = [
        Counter::Allowed,
        Counter::Unauthenticated,
        Counter::Forbidden,
        Counter::Redirect,
        Counter::BadGateway,
        Counter::Unavailable,
        Counter::Timeout,
        Counter::Internal,
    ];

    /// The `outcome` label of the Prometheus series.
    pub fn label(self) -> &'static str {
        match self {
            Counter::Allowed => "allowed",
            Counter::Unauthenticated => "unauthenticated",
            Counter::Forbidden => "forbidden",
            Counter::Redirect => "redirect",
            Counter::BadGateway => "bad_gateway",
            Counter::Unavailable => "unavailable",
            Counter::Timeout => "timeout",
            Counter::Internal => "internal_error",
        }
    }
}

impl Decision {
    /// The decision a single outcome leads to when nothing redirects it.
    pub fn of(outcome: Outcome) -> Decision {
        match outcome {
            Outcome::Allowed => Decision::Continue,
            refused => Decision::Refuse(refused),
        }
    }

    /// The HTTP status nginx answers with; 0 for a request that goes on.
    pub fn status(self) -> u16 {
        match self {
            Decision::Continue => 0,
            Decision::Redirect => 303,
            Decision::Refuse(outcome) => match outcome {
                // A refusal built from `Allowed` is a bug; fail closed.
                Outcome::Allowed | Outcome::Internal => 500,
                Outcome::Unauthenticated => 401,
                Outcome::Forbidden => 403,
                Outcome::Unavailable => 503,
                Outcome::BadGateway => 502,
                Outcome::Timeout => 504,
            },
        }
    }

    pub fn counter(self) -> Counter {
        match self {
            Decision::Continue => Counter::Allowed,
            Decision::Redirect => Counter::Redirect,
            Decision::Refuse(outcome) => match outcome {
                Outcome::Allowed | Outcome::Internal => Counter::Internal,
                Outcome::Unauthenticated => Counter::Unauthenticated,
                Outcome::Forbidden => Counter::Forbidden,
                Outcome::Unavailable => Counter::Unavailable,
                Outcome::BadGateway => Counter::BadGateway,
                Outcome::Timeout => Counter::Timeout,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Outcome; 7] = [
        Outcome::Allowed,
        Outcome::Unauthenticated,
        Outcome::Forbidden,
        Outcome::Unavailable,
        Outcome::BadGateway,
        Outcome::Timeout,
        Outcome::Internal,
    ];

    #[test]
    fn statuses() {
        let status = |o| Decision::of(o).status();
        assert_eq!(status(Outcome::Allowed), 0);
        assert_eq!(status(Outcome::Unauthenticated), 401);
        assert_eq!(status(Outcome::Forbidden), 403);
        assert_eq!(status(Outcome::Unavailable), 503);
        assert_eq!(status(Outcome::BadGateway), 502);
        assert_eq!(status(Outcome::Timeout), 504);
        assert_eq!(status(Outcome::Internal), 500);
        assert_eq!(Decision::Redirect.status(), 303);
    }

    #[test]
    fn a_refusal_never_lets_the_request_through() {
        for o in ALL {
            assert_ne!(Decision::Refuse(o).status(), 0, "{o:?}");
            assert_ne!(Decision::Refuse(o).counter(), Counter::Allowed, "{o:?}");
        }
        assert_eq!(Decision::Refuse(Outcome::Allowed).status(), 500);
    }

    #[test]
    fn every_decision_has_its_own_counter() {
        let mut seen: Vec<Counter> = ALL.iter().map(|&o| Decision::of(o).counter()).collect();
        seen.push(Decision::Redirect.counter());
        seen.sort_by_key(|c| Counter::ALL.iter().position(|a| a == c));
        assert_eq!(seen, Counter::ALL);
        let labels: std::collections::HashSet<_> = Counter::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), Counter::ALL.len());
    }

    #[test]
    fn only_answers_are_cached() {
        assert!(Outcome::Allowed.is_cacheable());
        assert!(Outcome::Unauthenticated.is_cacheable());
        for o in [
            Outcome::Forbidden,
            Outcome::Unavailable,
            Outcome::BadGateway,
            Outcome::Timeout,
            Outcome::Internal,
        ] {
            assert!(!o.is_cacheable(), "{o:?}");
        }
    }

    #[test]
    fn failures_are_errors_refusals_are_not() {
        assert!(Outcome::BadGateway.is_failure());
        assert!(Outcome::Timeout.is_failure());
        assert!(!Outcome::Unauthenticated.is_failure());
        assert!(!Outcome::Forbidden.is_failure());
        assert!(!Outcome::Allowed.is_failure());
    }
}
