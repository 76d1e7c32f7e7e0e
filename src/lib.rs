//! ngx_http_ory_session_module: the Ory stack checked in nginx's access phase.
//!
//! - `nginx/` is the only code that touches nginx: the module, its directives, the
//!   access-phase driver, variables, headers, the status page, and the bridge to the
//!   per-worker runtime that makes the calls.
//! - `check/` is what every kind of check shares, in plain Rust: the cache and its keys, the
//!   calls in flight, outcomes and decisions, the counters.
//! - `session/` is the Kratos session check, `oauth2/` the Hydra access-token check and
//!   `permission/` the Keto permission check,
//!   in plain Rust.
//!
//! The glue refers to symbols that exist only inside an nginx binary, so it is left out of
//! the unit-test build: `cargo test` runs without nginx.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod check;
pub mod oauth2;
pub mod permission;
pub mod session;

#[cfg(not(test))]
mod nginx;

#[cfg(not(test))]
pub use nginx::module::{ngx_http_ory_session_module, HttpOrySessionModule};
