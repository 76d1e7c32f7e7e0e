//! The Kratos session check, in plain Rust: which credential a request carries
//! (`credential`), the whoami call (`whoami`), what its answer holds (`model`), browser
//! redirects and assurance levels (`browser`), and here what an answer means for the request
//! and the cache. The nginx side is `crate::nginx::session`.

pub mod browser;
pub mod credential;
pub mod logout;
pub mod model;
pub mod stored;
pub mod whoami;

#[cfg(test)]
mod proptests;

use crate::check::call::{CallError, Service};
use crate::check::decision::Outcome;
use crate::check::key::Tag;
use credential::CredentialKind;
use model::{Answer, Session};

/// What one whoami call returns.
pub type WhoamiResult = Result<Answer, CallError>;

/// Kratos, as log lines name it.
pub const KRATOS: Service = Service {
    name: "Kratos",
    timeout_directive: "ory_session_timeout",
};

/// The cache key tag of each kind of session credential.
pub fn tag(kind: CredentialKind) -> Tag {
    match kind {
        CredentialKind::SessionToken => Tag(1),
        CredentialKind::Cookie => Tag(2),
        CredentialKind::Bearer => Tag(3),
    }
}

/// The outcome of a whoami call for the requests that waited for it, and the reason their
/// log line gives (empty when allowed).
pub fn judge(result: &WhoamiResult) -> (Outcome, String) {
    match result {
        Ok(Answer::Active { .. }) => (Outcome::Allowed, String::new()),
        Ok(Answer::Unauthenticated { reason }) => (Outcome::Unauthenticated, (*reason).to_owned()),
        Ok(Answer::AalRequired { .. }) => (
            Outcome::Forbidden,
            "Kratos requires a higher authenticator assurance level".to_owned(),
        ),
        Err(err) => (err.outcome(), err.describe(&KRATOS)),
    }
}

/// The end of a session's cache entry: its `expires_at`, the JWT handed upstream with it
/// (never handed out past its `exp`), and Kratos' `Ory-Session-Cache-For`, whichever comes
/// first. The configured TTL limits it further at lookup.
pub fn cache_until(session: &Session, cache_for_ms: Option<u64>, now_ms: u64) -> u64 {
    let mut until = session
        .expires_at_ms
        .min(session.tokenized_exp_ms.unwrap_or(u64::MAX));
    if let Some(cache_for) = cache_for_ms {
        until = until.min(now_ms.saturating_add(cache_for));
    }
    until
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: WhoamiResult) -> Outcome {
        judge(&result).0
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
    }

    #[test]
    fn kratos_failures_map_to_gateway_errors() {
        assert_eq!(outcome(Err(CallError::RateLimited)), Outcome::Unavailable);
        assert_eq!(outcome(Err(CallError::Timeout)), Outcome::Timeout);
        assert_eq!(outcome(Err(CallError::Status(500))), Outcome::BadGateway);
        assert_eq!(outcome(Err(CallError::Status(404))), Outcome::BadGateway);
        assert_eq!(outcome(Err(CallError::TooLarge)), Outcome::BadGateway);
        assert_eq!(
            outcome(Err(CallError::Malformed("x".into()))),
            Outcome::BadGateway
        );
        assert_eq!(
            outcome(Err(CallError::Unreachable("refused".into()))),
            Outcome::BadGateway
        );
    }

    #[test]
    fn a_rate_limit_is_never_a_401() {
        assert_ne!(
            outcome(Err(CallError::RateLimited)),
            Outcome::Unauthenticated
        );
    }

    #[test]
    fn the_reason_is_what_failed() {
        assert_eq!(judge(&Err(CallError::Status(500))).1, "Kratos answered 500");
        assert_eq!(judge(&Ok(Answer::Unauthenticated { reason: "x" })).1, "x");
    }

    fn session(expires_at_ms: u64, tokenized_exp_ms: Option<u64>) -> Session {
        Session {
            id: "s".into(),
            user_id: "u".into(),
            aal: "aal1".into(),
            aal_rank: 1,
            expires_at: "".into(),
            expires_at_ms,
            authenticated_at: "".into(),
            schema_id: "".into(),
            identity_state: "".into(),
            traits_json: "{}".into(),
            metadata_public_json: "".into(),
            traits: Box::new([]),
            tokenized: None,
            tokenized_exp_ms,
        }
    }

    #[test]
    fn an_entry_ends_with_the_session() {
        assert_eq!(cache_until(&session(3_000, None), None, 0), 3_000);
    }

    #[test]
    fn cache_for_limits_the_entry() {
        assert_eq!(
            cache_until(&session(u64::MAX, None), Some(2_000), 1_000),
            3_000
        );
        // The session's own expiry still wins over a longer cache_for.
        assert_eq!(
            cache_until(&session(1_500, None), Some(60_000), 1_000),
            1_500
        );
        assert_eq!(cache_until(&session(5_000, None), Some(0), 1_000), 1_000);
        assert_eq!(
            cache_until(&session(5_000, None), Some(u64::MAX), 1_000),
            5_000
        );
    }

    #[test]
    fn the_jwt_ends_the_entry_first() {
        assert_eq!(cache_until(&session(9_000, Some(4_000)), None, 0), 4_000);
        assert_eq!(cache_until(&session(3_000, Some(4_000)), None, 0), 3_000);
    }

    #[test]
    fn tags_are_distinct() {
        let tags = [
            tag(CredentialKind::SessionToken),
            tag(CredentialKind::Cookie),
            tag(CredentialKind::Bearer),
        ];
        assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);
    }
}
