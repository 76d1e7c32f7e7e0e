//! Ory Keto permission checks (`ory_permission`), as plain Rust: what is checked ([`tuple`]),
//! where it is asked ([`url`]), how the call is made ([`client`]), what the answer means
//! ([`answer`]) and what nginx does with it ([`decision`]). No nginx types, so every part runs
//! under `cargo test`.
//!
//! The nginx glue is expected to:
//! 1. at configuration time, validate `ory_permission_url` with [`url::check_endpoint`] and
//!    each `ory_permission` line with [`tuple::parse_args`], compiling the parts it returns
//!    into complex values;
//! 2. per request and per line, evaluate the parts and build a [`tuple::Tuple`] (a
//!    [`tuple::Refusal`] denies without a call), look the tuple up in the cache under a keyed
//!    hash of [`tuple::Tuple::write_key`], and on a miss call [`client::check`] with
//!    [`url::check_url`];
//! 3. map the result with [`decision`] and stop at the first line that does not allow.

pub mod answer;
pub mod client;
pub mod decision;
pub mod tuple;
pub mod url;

#[cfg(test)]
mod proptests;

pub use answer::decode_answer;
pub use client::check;
pub use tuple::{
    parse_args, CheckArgs, Part, Refusal, Subject, SubjectArg, SubjectRef, Tuple, TupleRef,
    MAX_VALUE_LEN,
};
pub use url::{check_endpoint, check_url};

use crate::check::call::{CallError, Service};

/// What one check call returns: allowed or not.
pub type CallResult = Result<bool, CallError>;

/// Keto, as log lines name it.
pub const KETO: Service = Service {
    name: "Keto",
    timeout_directive: "ory_permission_timeout",
};
