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

use crate::decision::Outcome;

use super::answer::KetoError;
use super::tuple::Refusal;

/// Maps one check result to an outcome; the reason is what the log line says before
/// "while checking permission".
pub fn from_check(result: &Result<bool, KetoError>) -> (Outcome, String) {
    match result {
        Ok(true) => (Outcome::Allowed, String::new()),
        Ok(false) => (Outcome::Forbidden, "Keto denied the permission".to_owned()),
        Err(err) => {
            let outcome = match err {
                KetoError::Timeout => Outcome::Timeout,
                KetoError::RateLimited => Outcome::Unavailable,
                KetoError::Unreachable(_)
                | KetoError::Status(_)
                | KetoError::Malformed(_)
                | KetoError::TooLarge => Outcome::BadGateway,
            };
            (outcome, err.to_string())
        }
    }
}

/// A line whose values cannot form a tuple is denied without asking Keto.
pub fn from_refusal(refusal: &Refusal) -> (Outcome, String) {
    (Outcome::Forbidden, refusal.to_string())
}

/// Whether the result may be reused for other requests asking the same tuple, under
/// `ory_permission_cache_ttl` (true) or `ory_permission_cache_negative_ttl` (false). Errors
/// never are: the next request must get its own chance once Keto is back.
pub fn is_cacheable(result: &Result<bool, KetoError>) -> bool {
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::tuple::Part;

    #[test]
    fn outcomes() {
        let cases = [
            (Ok(true), Outcome::Allowed, 0),
            (Ok(false), Outcome::Forbidden, 403),
            (Err(KetoError::Timeout), Outcome::Timeout, 504),
            (Err(KetoError::RateLimited), Outcome::Unavailable, 503),
            (Err(KetoError::Status(500)), Outcome::BadGateway, 502),
            (Err(KetoError::Status(400)), Outcome::BadGateway, 502),
            (Err(KetoError::Status(403)), Outcome::BadGateway, 502),
            (Err(KetoError::Status(302)), Outcome::BadGateway, 502),
            (
                Err(KetoError::Unreachable("connection reset".into())),
                Outcome::BadGateway,
                502,
            ),
            (
                Err(KetoError::Malformed("syntax error".into())),
                Outcome::BadGateway,
                502,
            ),
            (Err(KetoError::TooLarge), Outcome::BadGateway, 502),
        ];
        for (result, want, status) in cases {
            let (outcome, _) = from_check(&result);
            assert_eq!(outcome, want, "{result:?}");
            assert_eq!(outcome.status(), status, "{result:?}");
            assert_eq!(is_cacheable(&result), result.is_ok(), "{result:?}");
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(from_check(&Ok(true)).1, "");
        assert_eq!(from_check(&Ok(false)).1, "Keto denied the permission");
        assert_eq!(
            from_check(&Err(KetoError::Status(500))).1,
            "Keto answered 500"
        );
        assert_eq!(
            from_refusal(&Refusal::Empty(Part::Object)),
            (Outcome::Forbidden, "the object is empty".to_owned())
        );
    }
}
