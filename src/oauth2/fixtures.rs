//! The tokens and JWKS made by PyJWT (`t/lib/make-jwt-fixtures`), for the unit tests.

use serde::Deserialize;
use serde_json::Value;

pub const JWKS: &str = include_str!("testdata/jwks.json");
const TOKENS: &str = include_str!("testdata/tokens.json");

#[derive(Deserialize)]
pub struct Fixtures {
    /// The `now` every fixture token is valid at (unix seconds).
    pub now: i64,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// The claims of the tokens that do not say otherwise.
    pub claims: Value,
    pub tokens: Vec<FixtureToken>,
}

#[derive(Clone, Deserialize)]
pub struct FixtureToken {
    pub name: String,
    /// "ok" or the name of the expected `JwtError` (see `JwtError::fixture_name`).
    pub verify: String,
    /// What the default rules say of a token that verifies, when not "ok".
    pub rules: Option<String>,
    pub token: String,
}

pub fn fixtures() -> Fixtures {
    serde_json::from_str(TOKENS).expect("tokens.json")
}

pub fn jwks() -> Value {
    serde_json::from_str(JWKS).expect("jwks.json")
}

pub fn token(name: &str) -> String {
    fixtures()
        .tokens
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fixture token {name}"))
        .token
}
