//! `ory_oauth2`: OAuth2 access tokens issued by Ory Hydra, checked in nginx. JWT access
//! tokens are verified here against the issuer's JWKS; opaque `ory_at_` tokens are sent to
//! Hydra's introspection endpoint. Plain Rust, no nginx types: the glue hands over header
//! pairs, answers and a clock, and gets decisions back.
//!
//! The flow the glue drives, one file per step:
//! - [`token`] finds `Authorization: Bearer` and tells a JWT from an opaque token (and from a
//!   Kratos session token, which is not ours);
//! - JWT: [`jwks_cache`] says whether keys are there (or a fetch must run first), [`jwt`]
//!   verifies the signature against a [`jwks::KeySet`] made by [`client::fetch_jwks`], an
//!   unknown `kid` goes back to [`jwks_cache`] (refetch at most once per cooldown);
//! - opaque: [`client::introspect`] asks Hydra, [`introspection`] reads its answer;
//! - both end in [`claims::Claims`], judged by [`rules::Rules`] into an [`outcome`], which
//!   [`challenge`] turns into the `WWW-Authenticate` value.
//!
//! Every error and refusal is a short phrase for a log line "<phrase> while checking OAuth2
//! token"; none carries a token, and none is sent to the client.

pub mod alg;
pub mod challenge;
pub mod claims;
pub mod client;
mod flat_json;
pub mod introspection;
pub mod jwks;
pub mod jwks_cache;
pub mod jwt;
pub mod outcome;
pub mod rules;
pub mod scope;
pub mod stored;
pub mod token;

use crate::check::call::Service;

/// The JWKS endpoint, as log lines name it: it may be served by any issuer.
pub const JWKS_ENDPOINT: Service = Service {
    name: "the JWKS endpoint",
    timeout_directive: "ory_oauth2_timeout",
};

/// Hydra's introspection endpoint, as log lines name it.
pub const HYDRA: Service = Service {
    name: "Hydra",
    timeout_directive: "ory_oauth2_timeout",
};

#[cfg(test)]
mod bench;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod proptests;
