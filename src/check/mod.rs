//! What every kind of check shares, in plain Rust: the answer cache and its keys, the calls
//! in flight, outcomes and decisions, and the counters. The nginx glue (`crate::nginx`)
//! drives these for each check; the checks themselves (`crate::session`, ...) say how to
//! find a credential, whom to ask and what the answer means.

pub mod bytes;
pub mod cache;
pub mod call;
pub mod client;
pub mod decision;
pub mod front;
pub mod http1;
pub mod inflight;
pub mod key;
pub mod metrics;
pub mod table;
pub mod text;
pub mod zone;

#[cfg(test)]
pub(crate) mod testserver;

#[cfg(test)]
mod proptests;

/// The largest answer read from any service. Real answers are a few KiB; anything much
/// larger is not the service talking, and reading it would let a misbehaving service make
/// every worker buffer without bound.
pub const MAX_ANSWER_LEN: usize = 1024 * 1024;

/// The configuration of every property test: 512 cases per property, or `PROPTEST_CASES`.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    proptest::prelude::ProptestConfig {
        cases,
        // A failure prints its minimal input; no regression files are written to the tree.
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}
