//! The nginx glue: the only code that touches nginx types.
//!
//! `module` registers the module and starts each worker's runtime; `conf` holds the
//! directives; `access` is the access-phase driver, which runs every kind of check through
//! its glue (`authentication` over `session` and `oauth2`, then `permission`); `context` is a request's record of its checks and waits; `bridge`
//! carries calls to the runtime and their answers back; `variables`, `headers`, `request`,
//! `status` and `log` are what the checks read from and write to nginx.

mod access;
mod answers;
mod authentication;
mod bridge;
mod conf;
mod context;
mod headers;
mod log;
mod logout;
pub mod module;
mod oauth2;
mod permission;
mod request;
mod session;
mod status;
mod variables;
mod zone;
