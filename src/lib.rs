//! ngx_http_ory_session_module: checks Ory Kratos sessions in nginx's access phase.
//!
//! nginx glue lives in `module`, `conf`, `access`, `variables` and `bridge`; `credential`,
//! `kratos`, `cache` and `decision` are plain Rust with unit tests that run without nginx.
//! The glue refers to symbols that exist only inside an nginx binary, so it is left out of
//! the unit-test build.

pub mod browser;
pub mod cache;
pub mod credential;
pub mod decision;
pub mod kratos;
pub mod metrics;
pub mod oauth2;
#[cfg(test)]
mod proptests;

#[cfg(not(test))]
mod access;
#[cfg(not(test))]
mod bridge;
#[cfg(not(test))]
mod conf;
#[cfg(not(test))]
mod headers;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod status;
#[cfg(not(test))]
mod variables;

#[cfg(not(test))]
pub use module::{ngx_http_ory_session_module, HttpOrySessionModule};
