//! What nginx does with a permission check: the outcome table of `ory_permission`.
//!
//! | check                                               | outcome       | status |
//! |-----------------------------------------------------|---------------|--------|
//! | `allowed: true`                                     | `Allowed`     | –      |
//! | `allowed: false`                                    | `Forbidden`   | 403    |
//! | a part empty, too long or not UTF-8 (no call)       | `Forbidden`   | 403    |
//! | unreachable, reset, 3xx/4xx/5xx, garbage, too large | `BadGateway`  | 502    |
//! | 429                                                 | `Unavailable` | 503    |
//! | no answer within `ory_permission_timeout`           | `Timeout`     | 504    |
//!
//! With several lines in a location, the first one that is not `Allowed` decides.

use super::tuple::Refusal;
use super::KETO;
use crate::check::call::CallError;
use crate::check::decision::Outcome;

/// Maps one check result to an outcome; the reason is what the log line says before
/// "while checking permission".
pub fn from_check(result: &Result<bool, CallError>) -> (Outcome, String) {
    match result {
        Ok(true) => (Outcome::Allowed, String::new()),
        Ok(false) => (Outcome::Forbidden, "Keto denied the permission".to_owned()),
        Err(err) => (err.outcome(), err.describe(&KETO)),
    }
}

/// A line whose values cannot form a tuple is denied without asking Keto.
pub fn from_refusal(refusal: &Refusal) -> (Outcome, String) {
    (Outcome::Forbidden, refusal.to_string())
}

/// Whether the result may be reused for other requests asking the same tuple, under
/// `ory_permission_cache_ttl` (true) or `ory_permission_cache_negative_ttl` (false). Errors
/// never are: the next request must get its own chance once Keto is back.
pub fn is_cacheable(result: &Result<bool, CallError>) -> bool {
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::decision::Decision;
    use crate::permission::tuple::Part;

    #[test]
    fn outcomes() {
        let cases = [
            (Ok(true), Outcome::Allowed, 0),
            (Ok(false), Outcome::Forbidden, 403),
            (Err(CallError::Timeout), Outcome::Timeout, 504),
            (Err(CallError::RateLimited), Outcome::Unavailable, 503),
            (Err(CallError::Status(500)), Outcome::BadGateway, 502),
            (Err(CallError::Status(400)), Outcome::BadGateway, 502),
            (Err(CallError::Status(403)), Outcome::BadGateway, 502),
            (Err(CallError::Status(302)), Outcome::BadGateway, 502),
            (
                Err(CallError::Unreachable("connection reset".into())),
                Outcome::BadGateway,
                502,
            ),
            (
                Err(CallError::Malformed("syntax error".into())),
                Outcome::BadGateway,
                502,
            ),
            (Err(CallError::TooLarge), Outcome::BadGateway, 502),
        ];
        for (result, want, status) in cases {
            let (outcome, _) = from_check(&result);
            assert_eq!(outcome, want, "{result:?}");
            assert_eq!(Decision::of(outcome).status(), status, "{result:?}");
            assert_eq!(is_cacheable(&result), result.is_ok(), "{result:?}");
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(from_check(&Ok(true)).1, "");
        assert_eq!(from_check(&Ok(false)).1, "Keto denied the permission");
        assert_eq!(
            from_check(&Err(CallError::Status(500))).1,
            "Keto answered 500"
        );
        assert_eq!(
            from_refusal(&Refusal::Empty(Part::Object)),
            (Outcome::Forbidden, "the object is empty".to_owned())
        );
    }
}
