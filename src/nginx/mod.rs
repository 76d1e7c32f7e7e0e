//! The nginx glue: the only code that touches nginx types.
//!
//! `module` registers the module and starts each worker's runtime; `conf` holds the
//! directives; `access` is the access-phase driver, which runs every kind of check through
//! its glue (`session`, `permission`); `context` is a request's record of its checks and waits; `bridge`
//! carries calls to the runtime and their answers back; `variables`, `headers`, `request`,
//! `status` and `log` are what the checks read from and write to nginx.

mod access;
mod bridge;
mod conf;
mod context;
mod headers;
mod log;
pub mod module;
mod permission;
mod request;
mod session;
mod status;
mod variables;
