//! The Kratos `/sessions/whoami` client and the session model the variables are built from.
//! No nginx types: this runs on the worker's client thread and in unit tests alike.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE};
use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::credential::{CredentialKind, OwnedCredential};

/// A session is a few KiB; anything much larger is not Kratos talking, and reading it would
/// let a misbehaving upstream make every worker buffer without bound.
pub const MAX_BODY_LEN: usize = 1024 * 1024;

/// The whole call has its own deadline; this only keeps a dead address from holding a
/// pooled connection attempt longer than any sensible per-request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the variables need. Every string is safe to put in an HTTP header: control bytes
/// (0x00-0x1F, 0x7F) are percent-encoded (`"\r\n"` -> `"%0D%0A"`) and nothing else changes,
/// so an identity trait cannot split or forge a header sent to the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: Box<str>,
    /// `identity.id`
    pub user_id: Box<str>,
    pub aal: Box<str>,
    /// As Kratos sent it.
    pub expires_at: Box<str>,
    /// `expires_at` in unix milliseconds.
    pub expires_at_ms: u64,
    pub authenticated_at: Box<str>,
    pub schema_id: Box<str>,
    pub identity_state: Box<str>,
    /// Compact JSON of `identity.traits`, `{}` when absent.
    pub traits_json: Box<str>,
    /// Compact JSON of `identity.metadata_public`, empty when null or absent.
    pub metadata_public_json: Box<str>,
    /// Top-level traits as text, sorted by name: strings as is, numbers and booleans as
    /// text, null as "", objects and arrays as compact JSON.
    pub traits: Box<[(Box<str>, Box<str>)]>,
    /// The session as a JWT (`tokenize_as`), when asked for.
    pub tokenized: Option<Box<str>>,
    /// The JWT's `exp` in unix milliseconds: a cached session never outlives its token.
    pub tokenized_exp_ms: Option<u64>,
}

impl Session {
    pub fn trait_value(&self, name: &str) -> Option<&str> {
        self.traits
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &*self.traits[i].1)
    }

    /// Heap bytes held, split into the part every session has and the part an identity
    /// schema controls (traits and metadata), so a cache can bound memory, not only entries.
    pub fn heap_bytes(&self) -> (usize, usize) {
        let fixed = self.id.len()
            + self.user_id.len()
            + self.aal.len()
            + self.expires_at.len()
            + self.authenticated_at.len()
            + self.schema_id.len()
            + self.identity_state.len();
        let variable = self.traits_json.len()
            + self.metadata_public_json.len()
            + std::mem::size_of_val(&*self.traits)
            + self
                .traits
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        (fixed, variable)
    }
}

/// Kratos' verdict on a credential.
#[derive(Clone, PartialEq, Eq)]
// One Answer is moved once per whoami call: boxing the session would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Active {
        session: Session,
        /// `Ory-Session-Cache-For` in milliseconds.
        cache_for_ms: Option<u64>,
        /// `Set-Cookie` values of the 200 (a refreshed session cookie after an admin extend).
        set_cookie: Vec<String>,
    },
    Unauthenticated {
        reason: &'static str,
    },
    /// 403: the session's authenticator assurance level is too low.
    AalRequired {
        redirect_browser_to: Option<String>,
    },
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Set-Cookie carries a session cookie value: show how many, never what.
            Answer::Active {
                session,
                cache_for_ms,
                set_cookie,
            } => f
                .debug_struct("Active")
                .field("session", session)
                .field("cache_for_ms", cache_for_ms)
                .field("set_cookie", &set_cookie.len())
                .finish(),
            Answer::Unauthenticated { reason } => f
                .debug_struct("Unauthenticated")
                .field("reason", reason)
                .finish(),
            Answer::AalRequired {
                redirect_browser_to,
            } => f
                .debug_struct("AalRequired")
                .field("redirect_browser_to", redirect_browser_to)
                .finish(),
        }
    }
}

/// Why there is no answer. None of the texts contains a URL or a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KratosError {
    Unreachable(String),
    Timeout,
    /// 429: not a verdict on the credential, so it must never become a 401.
    RateLimited,
    Status(u16),
    Malformed(String),
    TooLarge,
}

impl fmt::Display for KratosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KratosError::Unreachable(why) => write!(f, "Kratos is unreachable ({why})"),
            KratosError::Timeout => f.write_str("Kratos did not answer within ory_session_timeout"),
            KratosError::RateLimited => f.write_str("Kratos rate-limited the request (429)"),
            KratosError::Status(status) => write!(f, "Kratos answered {status}"),
            KratosError::Malformed(why) => write!(f, "Kratos sent a malformed answer: {why}"),
            KratosError::TooLarge => write!(
                f,
                "Kratos response body is larger than {MAX_BODY_LEN} bytes"
            ),
        }
    }
}

impl std::error::Error for KratosError {}

#[derive(Deserialize)]
struct WireSession {
    id: Option<String>,
    active: Option<bool>,
    expires_at: Option<String>,
    authenticated_at: Option<String>,
    authenticator_assurance_level: Option<String>,
    identity: Option<WireIdentity>,
    tokenized: Option<String>,
}

#[derive(Deserialize)]
struct WireIdentity {
    id: Option<String>,
    schema_id: Option<String>,
    state: Option<String>,
    traits: Option<Value>,
    metadata_public: Option<Value>,
}

/// The `exp` claim of a JWT, read without checking the signature: it only bounds how long
/// the token is handed to the upstream from cache, the upstream verifies the token itself.
fn jwt_exp_ms(jwt: &str) -> Option<u64> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp.is_finite() && exp > 0.0).then_some((exp * 1000.0) as u64)
}

/// Turns Kratos' response into an answer. Pure, so every status and body shape is tested
/// without a network.
pub fn decode_response(
    status: u16,
    content_type: Option<&str>,
    cache_for: Option<&str>,
    set_cookie: Vec<String>,
    body: &[u8],
    now_unix_ms: u64,
) -> Result<Answer, KratosError> {
    match status {
        200 => {}
        401 => {
            return Ok(Answer::Unauthenticated {
                reason: "Kratos rejected the session",
            })
        }
        403 => {
            return Ok(Answer::AalRequired {
                redirect_browser_to: redirect_browser_to(body),
            })
        }
        429 => return Err(KratosError::RateLimited),
        other => return Err(KratosError::Status(other)),
    }

    if !content_type.is_some_and(is_json) {
        return Err(KratosError::Malformed(
            "content type is not application/json".into(),
        ));
    }
    let wire: WireSession = serde_json::from_slice(body).map_err(json_error)?;

    let id = wire.id.ok_or_else(|| missing("id"))?;
    let expires_at = wire.expires_at.ok_or_else(|| missing("expires_at"))?;
    let expires_at_ms = parse_unix_ms(&expires_at)
        .ok_or_else(|| KratosError::Malformed("expires_at is not an RFC 3339 timestamp".into()))?;
    if wire.active != Some(true) {
        return Ok(Answer::Unauthenticated {
            reason: "session is not active",
        });
    }
    if expires_at_ms <= now_unix_ms {
        return Ok(Answer::Unauthenticated {
            reason: "session has expired",
        });
    }
    let identity = wire.identity.ok_or_else(|| missing("identity"))?;
    let user_id = identity.id.ok_or_else(|| missing("identity.id"))?;

    let traits = match &identity.traits {
        Some(Value::Object(map)) => {
            let mut traits: Vec<_> = map
                .iter()
                .map(|(name, value)| (header_safe(name), trait_text(value)))
                .collect();
            // serde_json's map order depends on its features; sort so lookups can bisect.
            traits.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            traits
        }
        _ => Vec::new(),
    };
    let traits_json = match &identity.traits {
        None | Some(Value::Null) => "{}".into(),
        Some(value) => header_safe(&value.to_string()),
    };
    let metadata_public_json = match &identity.metadata_public {
        None | Some(Value::Null) => "".into(),
        Some(value) => header_safe(&value.to_string()),
    };
    let text = |s: Option<String>| header_safe(s.as_deref().unwrap_or(""));

    Ok(Answer::Active {
        session: Session {
            id: header_safe(&id),
            user_id: header_safe(&user_id),
            aal: text(wire.authenticator_assurance_level),
            expires_at: header_safe(&expires_at),
            expires_at_ms,
            authenticated_at: text(wire.authenticated_at),
            schema_id: text(identity.schema_id),
            identity_state: text(identity.state),
            traits_json,
            metadata_public_json,
            traits: traits.into_boxed_slice(),
            tokenized_exp_ms: wire.tokenized.as_deref().and_then(jwt_exp_ms),
            tokenized: wire.tokenized.as_deref().map(header_safe),
        },
        cache_for_ms: cache_for.and_then(parse_cache_for),
        set_cookie,
    })
}

fn missing(field: &str) -> KratosError {
    KratosError::Malformed(format!("session has no {field}"))
}

/// serde_json's own messages can quote the offending value; report only where it broke.
fn json_error(e: serde_json::Error) -> KratosError {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected value",
        Category::Io => "read error",
    };
    KratosError::Malformed(format!("{what} at line {} column {}", e.line(), e.column()))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn parse_unix_ms(timestamp: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(timestamp, &Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    Some(u64::try_from(ms.max(0)).unwrap_or(u64::MAX))
}

/// Only plain digits: a header Kratos sends as a whole number of seconds.
fn parse_cache_for(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().map(|s| s.saturating_mul(1000))
}

/// The 403 body is only a hint; any body, or none, still means "AAL too low".
fn redirect_browser_to(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let url = value
        .pointer("/error/details/redirect_browser_to")
        .and_then(Value::as_str)
        .or_else(|| value.get("redirect_browser_to").and_then(Value::as_str))?;
    Some(header_safe(url).into())
}

fn trait_text(value: &Value) -> Box<str> {
    match value {
        Value::String(s) => header_safe(s),
        Value::Null => "".into(),
        other => header_safe(&other.to_string()),
    }
}

/// Percent-encodes control bytes only. serde_json already escapes most of them inside JSON
/// strings, but not DEL, and plain trait strings are not escaped at all.
fn header_safe(s: &str) -> Box<str> {
    if !s.bytes().any(is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii() && is_control(c as u8) {
            out.push_str(&format!("%{:02X}", c as u8));
        } else {
            out.push(c);
        }
    }
    out.into()
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// `base` is the configured Kratos public URL; a path prefix (Ory Network's `/.ory`, a
/// reverse proxy's `/kratos/`) is kept. Errors are short phrases for `nginx -t`.
pub fn whoami_url(base: &str) -> Result<reqwest::Url, &'static str> {
    let mut url = reqwest::Url::parse(base).map_err(|_| "invalid URL")?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not contain a user name or password");
    }
    if url.query().is_some() {
        return Err("URL must not contain a query");
    }
    if url.fragment().is_some() {
        return Err("URL must not contain a fragment");
    }
    let path = format!("{}/sessions/whoami", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// A client for one worker. Redirects are not followed: a 3xx from whoami is an error, and
/// following one would hand the credential to whatever host it names.
pub fn build_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .build()
}

/// One whoami call with `credential` and nothing else from the client's request. `url` is
/// used as given, so a caller may add a query (e.g. `tokenize_as`). `timeout` bounds the
/// whole call, body included.
pub async fn whoami(
    client: &reqwest::Client,
    url: &reqwest::Url,
    credential: &OwnedCredential,
    timeout: Duration,
) -> Result<Answer, KratosError> {
    tokio::time::timeout(timeout, call(client, url, credential))
        .await
        .unwrap_or(Err(KratosError::Timeout))
}

async fn call(
    client: &reqwest::Client,
    url: &reqwest::Url,
    credential: &OwnedCredential,
) -> Result<Answer, KratosError> {
    let (name, value) = match credential.kind {
        CredentialKind::SessionToken => (
            HeaderName::from_static("x-session-token"),
            credential.value.clone(),
        ),
        CredentialKind::Cookie => (
            COOKIE,
            format!("{}={}", credential.cookie_name, credential.value),
        ),
        CredentialKind::Bearer => (AUTHORIZATION, format!("Bearer {}", credential.value)),
    };
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| KratosError::Unreachable("credential is not a valid header value".into()))?;
    // Keeps the value out of HTTP/2 header compression tables and reqwest's debug output.
    value.set_sensitive(true);

    let mut response = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .header(name, value)
        .send()
        .await
        .map_err(transport_error)?;

    let status = response.status().as_u16();
    let headers = response.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = text(CONTENT_TYPE.as_str());
    let cache_for = text("ory-session-cache-for");
    let set_cookie = if status == 200 {
        headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    } else {
        Vec::new()
    };

    // Only a 200 needs its body; for the others the status is the answer, and a body that
    // is too large or breaks off only costs the 403 its redirect hint.
    let body = match read_body(&mut response).await {
        Ok(body) => body,
        Err(e) if status == 200 => return Err(e),
        Err(_) => Vec::new(),
    };
    decode_response(
        status,
        content_type.as_deref(),
        cache_for.as_deref(),
        set_cookie,
        &body,
        now_unix_ms(),
    )
}

async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, KratosError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_LEN as u64)
    {
        return Err(KratosError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY_LEN {
            return Err(KratosError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// reqwest's own Display names the URL; describe the innermost cause instead.
fn transport_error(e: reqwest::Error) -> KratosError {
    if e.is_timeout() {
        return KratosError::Timeout;
    }
    let e = e.without_url();
    let mut why = None;
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // An OS error is best described by its kind ("connection refused"); a custom
            // one (TLS, DNS) by its message.
            why = Some(match io.raw_os_error() {
                Some(_) => io.kind().to_string(),
                None => io.to_string(),
            });
            break;
        }
        why = Some(err.to_string());
        source = err.source();
    }
    let mut why = why.unwrap_or_else(|| e.to_string());
    if why.len() > 200 {
        let mut end = 200;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
    }
    KratosError::Unreachable(header_safe(&why).into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The 200 body of Kratos' whoami contract, verbatim.
    pub(crate) const FULL_BODY: &str = r#"{
  "id": "8f660ce3-69ec-4aeb-9fda-f9230dc3243f",
  "active": true,
  "expires_at": "2026-07-30T09:30:36.741152Z",
  "authenticated_at": "2026-07-29T09:30:36.741152Z",
  "issued_at": "2026-07-29T09:29:58.112233Z",
  "authenticator_assurance_level": "aal2",
  "authentication_methods": [
    {"method": "password", "aal": "aal1", "completed_at": "2026-07-29T09:29:58.112233Z"},
    {"method": "totp", "aal": "aal2", "completed_at": "2026-07-29T09:30:36.741152Z"}
  ],
  "identity": {
    "id": "bf32596a-f853-47c4-91e6-a3f41cf4949d",
    "schema_id": "default",
    "schema_url": "https://auth.example.com/schemas/ZGVmYXVsdA",
    "state": "active",
    "traits": {"email": "jane@example.com", "name": {"first": "Jane", "last": "Doe"}},
    "verifiable_addresses": [{"id": "f5f4afde-697e-4e10-a6b6-f870dce927d6", "value": "jane@example.com",
      "verified": true, "via": "email", "status": "completed"}],
    "metadata_public": {"tenant": "acme"},
    "organization_id": null,
    "created_at": "2026-06-01T12:00:00Z",
    "updated_at": "2026-06-01T12:05:10Z"
  },
  "devices": [{"id": "592515ee-7b70-4e08-b4d7-fb0b1643cb48", "ip_address": "203.0.113.7",
    "user_agent": "Mozilla/5.0", "location": ""}]
}"#;

    /// 2026-07-30T09:30:36.741152Z
    const EXPIRES_MS: u64 = 1_785_403_836_741;
    /// One day earlier.
    const NOW: u64 = EXPIRES_MS - 86_400_000;

    const JSON: Option<&str> = Some("application/json");

    fn decode_200(body: &str) -> Result<Answer, KratosError> {
        decode_response(200, JSON, None, Vec::new(), body.as_bytes(), NOW)
    }

    fn session_of(answer: Answer) -> Session {
        match answer {
            Answer::Active { session, .. } => session,
            other => panic!("not active: {other:?}"),
        }
    }

    fn minimal(extra_identity: &str) -> String {
        format!(
            r#"{{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z",
                "identity":{{"id":"u"{extra_identity}}}}}"#
        )
    }

    fn malformed(r: Result<Answer, KratosError>) -> String {
        match r {
            Err(KratosError::Malformed(why)) => why,
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn full_body() {
        let answer = decode_response(
            200,
            Some("application/json; charset=utf-8"),
            Some("120"),
            vec!["ory_kratos_session=new; Path=/; HttpOnly".into()],
            FULL_BODY.as_bytes(),
            NOW,
        )
        .unwrap();
        let Answer::Active {
            session,
            cache_for_ms,
            set_cookie,
        } = answer
        else {
            panic!("not active");
        };
        assert_eq!(cache_for_ms, Some(120_000));
        assert_eq!(set_cookie, ["ory_kratos_session=new; Path=/; HttpOnly"]);
        assert_eq!(&*session.id, "8f660ce3-69ec-4aeb-9fda-f9230dc3243f");
        assert_eq!(&*session.user_id, "bf32596a-f853-47c4-91e6-a3f41cf4949d");
        assert_eq!(&*session.aal, "aal2");
        assert_eq!(&*session.expires_at, "2026-07-30T09:30:36.741152Z");
        assert_eq!(session.expires_at_ms, EXPIRES_MS);
        assert_eq!(&*session.authenticated_at, "2026-07-29T09:30:36.741152Z");
        assert_eq!(&*session.schema_id, "default");
        assert_eq!(&*session.identity_state, "active");
        assert_eq!(
            &*session.traits_json,
            r#"{"email":"jane@example.com","name":{"first":"Jane","last":"Doe"}}"#
        );
        assert_eq!(&*session.metadata_public_json, r#"{"tenant":"acme"}"#);
        assert_eq!(session.trait_value("email"), Some("jane@example.com"));
        assert_eq!(
            session.trait_value("name"),
            Some(r#"{"first":"Jane","last":"Doe"}"#)
        );
        assert_eq!(session.trait_value("missing"), None);
        assert_eq!(session.traits.len(), 2);

        let (fixed, variable) = session.heap_bytes();
        assert_eq!(fixed, 36 + 36 + 4 + 27 + 27 + 7 + 6);
        assert!(variable > session.traits_json.len() + session.metadata_public_json.len());
    }

    #[test]
    fn minimal_body_defaults() {
        let s = session_of(decode_200(&minimal("")).unwrap());
        assert_eq!(&*s.id, "s");
        assert_eq!(&*s.user_id, "u");
        assert_eq!(&*s.aal, "");
        assert_eq!(&*s.authenticated_at, "");
        assert_eq!(&*s.schema_id, "");
        assert_eq!(&*s.identity_state, "");
        assert_eq!(&*s.traits_json, "{}");
        assert_eq!(&*s.metadata_public_json, "");
        assert!(s.traits.is_empty());
        assert_eq!(s.trait_value("email"), None);
    }

    #[test]
    fn null_metadata_and_traits() {
        let s =
            session_of(decode_200(&minimal(r#","metadata_public":null,"traits":null"#)).unwrap());
        assert_eq!(&*s.metadata_public_json, "");
        assert_eq!(&*s.traits_json, "{}");
        let s = session_of(decode_200(&minimal(r#","metadata_public":{}"#)).unwrap());
        assert_eq!(&*s.metadata_public_json, "{}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z",
            "tokenized":"eyJ.x.y","future":{"a":[1,2,{"b":null}]},
            "identity":{"id":"u","external_id":"e","credentials":{"password":{}}}}"#;
        assert_eq!(&*session_of(decode_200(body).unwrap()).user_id, "u");
    }

    #[test]
    fn trait_values_as_text() {
        let s = session_of(
            decode_200(&minimal(
                r#","traits":{"s":"x","i":42,"f":1.5,"neg":-3,"t":true,"b":false,"n":null,
                    "arr":["a",1],"obj":{"k":"v"},"empty":""}"#,
            ))
            .unwrap(),
        );
        assert_eq!(s.trait_value("s"), Some("x"));
        assert_eq!(s.trait_value("i"), Some("42"));
        assert_eq!(s.trait_value("f"), Some("1.5"));
        assert_eq!(s.trait_value("neg"), Some("-3"));
        assert_eq!(s.trait_value("t"), Some("true"));
        assert_eq!(s.trait_value("b"), Some("false"));
        assert_eq!(s.trait_value("n"), Some(""));
        assert_eq!(s.trait_value("arr"), Some(r#"["a",1]"#));
        assert_eq!(s.trait_value("obj"), Some(r#"{"k":"v"}"#));
        assert_eq!(s.trait_value("empty"), Some(""));
        for (i, (name, _)) in s.traits.iter().enumerate() {
            assert_eq!(s.trait_value(name), Some(&*s.traits[i].1));
        }
    }

    #[test]
    fn non_object_traits() {
        let s = session_of(decode_200(&minimal(r#","traits":"plain""#)).unwrap());
        assert_eq!(&*s.traits_json, r#""plain""#);
        assert!(s.traits.is_empty());
    }

    #[test]
    fn header_unsafe_values_are_encoded() {
        let s = session_of(
            decode_200(&minimal(
                r#","schema_id":"a\r\nX-Evil: 1","traits":{"name":"Jane\r\nSet-Cookie: x=y",
                    "tab":"a\tb","del":"a\u007fb","nul":"a\u0000b","pct":"100%","uni":"Zoë ✓",
                    "obj":{"k":"a\u007f\n"},"bad\nname":"v"}"#,
            ))
            .unwrap(),
        );
        assert_eq!(&*s.schema_id, "a%0D%0AX-Evil: 1");
        assert_eq!(s.trait_value("name"), Some("Jane%0D%0ASet-Cookie: x=y"));
        assert_eq!(s.trait_value("tab"), Some("a%09b"));
        assert_eq!(s.trait_value("del"), Some("a%7Fb"));
        assert_eq!(s.trait_value("nul"), Some("a%00b"));
        assert_eq!(s.trait_value("pct"), Some("100%"));
        assert_eq!(s.trait_value("uni"), Some("Zoë ✓"));
        // serde_json escapes \n itself but leaves DEL raw.
        assert_eq!(s.trait_value("obj"), Some(r#"{"k":"a%7F\n"}"#));
        assert_eq!(s.trait_value("bad%0Aname"), Some("v"));
        for text in [&*s.traits_json, &*s.schema_id] {
            assert!(!text.bytes().any(is_control), "{text:?}");
        }
        for (n, v) in s.traits.iter() {
            assert!(!n.bytes().chain(v.bytes()).any(is_control), "{n:?}={v:?}");
        }
    }

    #[test]
    fn expired_and_inactive() {
        let body = FULL_BODY.replace("\"active\": true", "\"active\": false");
        assert_eq!(
            decode_200(&body).unwrap(),
            Answer::Unauthenticated {
                reason: "session is not active"
            }
        );
        let body = FULL_BODY.replace("\"active\": true,", "");
        assert_eq!(
            decode_200(&body).unwrap(),
            Answer::Unauthenticated {
                reason: "session is not active"
            }
        );
        let body = FULL_BODY.replace("\"active\": true", "\"active\": null");
        assert!(matches!(
            decode_200(&body).unwrap(),
            Answer::Unauthenticated { .. }
        ));
        let expired = Answer::Unauthenticated {
            reason: "session has expired",
        };
        for now in [EXPIRES_MS, EXPIRES_MS + 1, u64::MAX] {
            let r = decode_response(200, JSON, None, vec![], FULL_BODY.as_bytes(), now);
            assert_eq!(r.unwrap(), expired);
        }
        let r = decode_response(
            200,
            JSON,
            None,
            vec![],
            FULL_BODY.as_bytes(),
            EXPIRES_MS - 1,
        );
        assert!(matches!(r.unwrap(), Answer::Active { .. }));
    }

    #[test]
    fn missing_required_fields() {
        let no_identity = r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z"}"#;
        assert_eq!(
            malformed(decode_200(no_identity)),
            "session has no identity"
        );
        let null_identity =
            r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z","identity":null}"#;
        assert_eq!(
            malformed(decode_200(null_identity)),
            "session has no identity"
        );
        let no_user = r#"{"id":"s","active":true,"expires_at":"2026-07-30T09:30:36Z",
            "identity":{"traits":{}}}"#;
        assert_eq!(malformed(decode_200(no_user)), "session has no identity.id");
        let no_id = r#"{"active":true,"expires_at":"2026-07-30T09:30:36Z","identity":{"id":"u"}}"#;
        assert_eq!(malformed(decode_200(no_id)), "session has no id");
        let no_expiry = r#"{"id":"s","active":true,"identity":{"id":"u"}}"#;
        assert_eq!(
            malformed(decode_200(no_expiry)),
            "session has no expires_at"
        );
    }

    #[test]
    fn wrong_types_do_not_echo_values() {
        let body = r#"{"id":"s","active":"sekrit-looking","expires_at":"2026-07-30T09:30:36Z",
            "identity":{"id":"u"}}"#;
        let why = malformed(decode_200(body));
        assert!(why.starts_with("unexpected value at line"), "{why}");
        assert!(!why.contains("sekrit"), "{why}");
        let why = malformed(decode_200(r#"{"id":12}"#));
        assert!(!why.contains("12"), "{why}");
    }

    #[test]
    fn timestamps() {
        let cases = [
            ("2026-07-30T09:30:36Z", Some(1_785_403_836_000)),
            ("2026-07-30T09:30:36.741152Z", Some(EXPIRES_MS)),
            ("2026-07-30T09:30:36.741152123Z", Some(EXPIRES_MS)),
            ("2026-07-30T09:30:36.7Z", Some(1_785_403_836_700)),
            ("2026-07-30T11:30:36.741152+02:00", Some(EXPIRES_MS)),
            ("2026-07-30T04:30:36.741152-05:00", Some(EXPIRES_MS)),
            ("1960-01-01T00:00:00Z", Some(0)),
            // RFC 3339 (section 5.6, note) allows a space for the "T".
            ("2026-07-30 09:30:36Z", Some(1_785_403_836_000)),
            ("2026-07-30t09:30:36z", Some(1_785_403_836_000)),
            ("2026-07-30T09:30:36.7411521239Z", Some(EXPIRES_MS)),
            ("2026-07-30T09:30:36", None),
            ("2026-13-30T09:30:36Z", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_unix_ms(text), want, "{text}");
        }
        let body = FULL_BODY.replace("2026-07-30T09:30:36.741152Z", "tomorrow");
        assert_eq!(
            malformed(decode_200(&body)),
            "expires_at is not an RFC 3339 timestamp"
        );
    }

    #[test]
    fn content_type_must_be_json() {
        for ct in [
            Some("application/json"),
            Some("Application/JSON"),
            Some("application/json;charset=utf-8"),
            Some(" application/json ; charset=UTF-8"),
        ] {
            let r = decode_response(200, ct, None, vec![], FULL_BODY.as_bytes(), NOW);
            assert!(matches!(r, Ok(Answer::Active { .. })), "{ct:?}");
        }
        for ct in [
            None,
            Some("text/html"),
            Some("text/plain; charset=utf-8"),
            Some("application/jsonp"),
            Some("application/problem+json"),
            Some(""),
        ] {
            let r = decode_response(200, ct, None, vec![], FULL_BODY.as_bytes(), NOW);
            assert_eq!(
                malformed(r),
                "content type is not application/json",
                "{ct:?}"
            );
        }
    }

    #[test]
    fn truncated_and_invalid_json() {
        let truncated = &FULL_BODY[..FULL_BODY.len() / 2];
        let why = malformed(decode_200(truncated));
        assert!(why.starts_with("unexpected end of input"), "{why}");
        assert!(malformed(decode_200("")).starts_with("unexpected end of input"));
        assert!(malformed(decode_200("<html>")).starts_with("syntax error"));
        assert!(malformed(decode_200("[]")).starts_with("unexpected value"));
        assert!(malformed(decode_200("null")).starts_with("unexpected value"));
        let why = malformed(decode_200(&format!("{FULL_BODY} trailing")));
        assert!(why.starts_with("syntax error"), "{why}");
    }

    #[test]
    fn cache_for_header() {
        let cases = [
            (Some("0"), Some(0)),
            (Some("60"), Some(60_000)),
            (Some(" 60 "), Some(60_000)),
            (Some("18446744073709551615"), Some(u64::MAX)),
            (Some("18446744073709551616"), None),
            (Some("-1"), None),
            (Some("+5"), None),
            (Some("1.5"), None),
            (Some("60s"), None),
            (Some(""), None),
            (None, None),
        ];
        for (header, want) in cases {
            let r = decode_response(200, JSON, header, vec![], FULL_BODY.as_bytes(), NOW);
            let Ok(Answer::Active { cache_for_ms, .. }) = r else {
                panic!("{r:?}");
            };
            assert_eq!(cache_for_ms, want, "{header:?}");
        }
    }

    #[test]
    fn status_401() {
        let body = br#"{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found in the request.","message":"The request could not be authorized"}}"#;
        let want = Answer::Unauthenticated {
            reason: "Kratos rejected the session",
        };
        assert_eq!(
            decode_response(401, JSON, Some("60"), vec!["x=y".into()], body, NOW).unwrap(),
            want
        );
        assert_eq!(
            decode_response(401, Some("text/html"), None, vec![], b"<h1>no</h1>", NOW).unwrap(),
            want
        );
    }

    #[test]
    fn status_403() {
        let body = br#"{"error":{"id":"session_aal2_required","code":403,"status":"Forbidden","reason":"...","details":{"redirect_browser_to":"https://auth.example.com/self-service/login/browser?aal=aal2"},"message":"Session does not fulfill the requested Authenticator Assurance Level"},"redirect_browser_to":"https://auth.example.com/self-service/login/browser?aal=aal2&top=1"}"#;
        let aal = |body: &[u8]| match decode_response(403, JSON, None, vec![], body, NOW) {
            Ok(Answer::AalRequired {
                redirect_browser_to,
            }) => redirect_browser_to,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            aal(body).as_deref(),
            Some("https://auth.example.com/self-service/login/browser?aal=aal2")
        );
        assert_eq!(
            aal(br#"{"redirect_browser_to":"https://a/x"}"#).as_deref(),
            Some("https://a/x")
        );
        assert_eq!(
            aal(br#"{"error":{"details":{}},"redirect_browser_to":"https://a/y"}"#).as_deref(),
            Some("https://a/y")
        );
        assert_eq!(
            aal(br#"{"redirect_browser_to":"https://a/\r\nx"}"#).as_deref(),
            Some("https://a/%0D%0Ax")
        );
        assert_eq!(aal(br#"{"redirect_browser_to":42}"#), None);
        assert_eq!(aal(b""), None);
        assert_eq!(aal(b"Forbidden"), None);
        assert_eq!(aal(br#"{"error":{"code":403}}"#), None);
    }

    #[test]
    fn other_statuses() {
        let r = decode_response(429, JSON, None, vec![], br#"{"error":{}}"#, NOW);
        assert_eq!(r.unwrap_err(), KratosError::RateLimited);
        for status in [500, 502, 503, 504, 400, 404, 302, 204, 201] {
            let r = decode_response(status, JSON, None, vec![], b"<html>bad gateway</html>", NOW);
            assert_eq!(r.unwrap_err(), KratosError::Status(status));
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(KratosError::Status(500).to_string(), "Kratos answered 500");
        assert_eq!(
            KratosError::Unreachable("connection refused".into()).to_string(),
            "Kratos is unreachable (connection refused)"
        );
        assert_eq!(
            KratosError::Timeout.to_string(),
            "Kratos did not answer within ory_session_timeout"
        );
        assert_eq!(
            KratosError::Malformed("syntax error at line 1 column 1".into()).to_string(),
            "Kratos sent a malformed answer: syntax error at line 1 column 1"
        );
        assert_eq!(
            KratosError::TooLarge.to_string(),
            "Kratos response body is larger than 1048576 bytes"
        );
        assert_eq!(
            KratosError::RateLimited.to_string(),
            "Kratos rate-limited the request (429)"
        );
    }

    #[test]
    fn answer_debug_hides_set_cookie() {
        let r = decode_response(
            200,
            JSON,
            None,
            vec!["ory_kratos_session=s3cr3t".into()],
            FULL_BODY.as_bytes(),
            NOW,
        );
        let text = format!("{:?}", r.unwrap());
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("set_cookie: 1"), "{text}");
    }

    #[test]
    fn whoami_url_cases() {
        let ok = [
            ("http://kratos:4433", "http://kratos:4433/sessions/whoami"),
            ("http://kratos:4433/", "http://kratos:4433/sessions/whoami"),
            (
                "https://auth.example.com",
                "https://auth.example.com/sessions/whoami",
            ),
            (
                "https://x.projects.oryapis.com/.ory",
                "https://x.projects.oryapis.com/.ory/sessions/whoami",
            ),
            (
                "https://x.example.com/.ory/",
                "https://x.example.com/.ory/sessions/whoami",
            ),
            (
                "http://127.0.0.1:4433//",
                "http://127.0.0.1:4433/sessions/whoami",
            ),
            (
                "http://[::1]:4433/kratos/public",
                "http://[::1]:4433/kratos/public/sessions/whoami",
            ),
            ("HTTP://Kratos", "http://kratos/sessions/whoami"),
        ];
        for (base, want) in ok {
            assert_eq!(whoami_url(base).unwrap().as_str(), want, "{base}");
        }
        let bad = [
            ("", "invalid URL"),
            ("kratos:4433", "scheme must be http or https"),
            ("/sessions", "invalid URL"),
            ("http://", "invalid URL"),
            ("http://exa mple.com", "invalid URL"),
            ("ftp://kratos", "scheme must be http or https"),
            ("unix:/run/kratos.sock", "scheme must be http or https"),
            (
                "http://user:pw@kratos",
                "URL must not contain a user name or password",
            ),
            (
                "http://user@kratos",
                "URL must not contain a user name or password",
            ),
            ("http://kratos/?a=b", "URL must not contain a query"),
            ("http://kratos/?", "URL must not contain a query"),
            ("http://kratos/#x", "URL must not contain a fragment"),
        ];
        for (base, want) in bad {
            assert_eq!(whoami_url(base).unwrap_err(), want, "{base}");
        }
    }

    mod client {
        use super::*;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        const LONG: Duration = Duration::from_secs(10);

        fn future_body() -> String {
            FULL_BODY.replace("2026-07-30T09:30:36.741152Z", "2999-01-01T00:00:00Z")
        }

        fn token(value: &str) -> OwnedCredential {
            OwnedCredential {
                kind: CredentialKind::SessionToken,
                cookie_name: String::new(),
                value: value.into(),
            }
        }

        /// Serves one connection: reads the request head, answers with `head` followed by
        /// `body` parts written `pause` apart, and returns the request head it read.
        async fn serve(
            head: String,
            body: Vec<Vec<u8>>,
            pause: Duration,
        ) -> (reqwest::Url, tokio::task::JoinHandle<String>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                socket.write_all(head.as_bytes()).await.unwrap();
                for part in body {
                    tokio::time::sleep(pause).await;
                    if socket.write_all(&part).await.is_err() {
                        break;
                    }
                }
                let _ = socket.shutdown().await;
                String::from_utf8(request).unwrap()
            });
            (whoami_url(&base).unwrap(), task)
        }

        fn head_200(len: usize) -> String {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\
                 Ory-Session-Cache-For: 30\r\nSet-Cookie: ory_kratos_session=new; Path=/\r\n\
                 Connection: close\r\n\r\n"
            )
        }

        /// Header names of a request head, lowercased, and the value of `want`.
        fn header_names(request: &str) -> Vec<String> {
            request
                .split("\r\n")
                .skip(1)
                .filter(|l| !l.is_empty())
                .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
                .collect()
        }

        fn header<'a>(request: &'a str, want: &str) -> Option<&'a str> {
            request.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(want).then(|| v.trim())
            })
        }

        #[tokio::test]
        async fn sends_only_the_session_token() {
            let body = future_body();
            let (url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let client = build_client().unwrap();
            let answer = whoami(&client, &url, &token("ory_st_abc"), LONG)
                .await
                .unwrap();
            let request = server.await.unwrap();

            assert!(
                request.starts_with("GET /sessions/whoami HTTP/1.1\r\n"),
                "{request}"
            );
            let mut names = header_names(&request);
            names.sort();
            assert_eq!(names, ["accept", "host", "x-session-token"], "{request}");
            assert_eq!(header(&request, "x-session-token"), Some("ory_st_abc"));
            assert_eq!(header(&request, "accept"), Some("application/json"));

            let Answer::Active {
                session,
                cache_for_ms,
                set_cookie,
            } = answer
            else {
                panic!("{answer:?}");
            };
            assert_eq!(&*session.user_id, "bf32596a-f853-47c4-91e6-a3f41cf4949d");
            assert_eq!(cache_for_ms, Some(30_000));
            assert_eq!(set_cookie, ["ory_kratos_session=new; Path=/"]);
        }

        #[tokio::test]
        async fn sends_only_the_session_cookie() {
            let body = future_body();
            let (url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let credential = OwnedCredential {
                kind: CredentialKind::Cookie,
                cookie_name: "ory_session_acme".into(),
                value: "MTY5abc==".into(),
            };
            let client = build_client().unwrap();
            whoami(&client, &url, &credential, LONG).await.unwrap();
            let request = server.await.unwrap();
            let mut names = header_names(&request);
            names.sort();
            assert_eq!(names, ["accept", "cookie", "host"], "{request}");
            assert_eq!(
                header(&request, "cookie"),
                Some("ory_session_acme=MTY5abc==")
            );
        }

        #[tokio::test]
        async fn sends_only_the_bearer_token() {
            let body = future_body();
            let (url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let credential = OwnedCredential {
                kind: CredentialKind::Bearer,
                cookie_name: String::new(),
                value: "ory_st_xyz".into(),
            };
            let client = build_client().unwrap();
            whoami(&client, &url, &credential, LONG).await.unwrap();
            let request = server.await.unwrap();
            let mut names = header_names(&request);
            names.sort();
            assert_eq!(names, ["accept", "authorization", "host"], "{request}");
            assert_eq!(header(&request, "authorization"), Some("Bearer ory_st_xyz"));
        }

        #[tokio::test]
        async fn keeps_the_url_path_and_query() {
            let body = future_body();
            let (mut url, server) =
                serve(head_200(body.len()), vec![body.into()], Duration::ZERO).await;
            let base = format!("{}/.ory", url.origin().ascii_serialization());
            url = whoami_url(&base).unwrap();
            url.query_pairs_mut()
                .append_pair("tokenize_as", "jwt_example");
            whoami(&build_client().unwrap(), &url, &token("t"), LONG)
                .await
                .unwrap();
            let request = server.await.unwrap();
            assert!(
                request.starts_with("GET /.ory/sessions/whoami?tokenize_as=jwt_example HTTP/1.1"),
                "{request}"
            );
        }

        #[tokio::test]
        async fn unauthenticated_401() {
            let body = r#"{"error":{"code":401}}"#;
            let head = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nOry-Session-Cache-For: 60\r\n\r\n",
                body.len()
            );
            let (url, _server) = serve(head, vec![body.into()], Duration::ZERO).await;
            let answer = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            assert_eq!(
                answer.unwrap(),
                Answer::Unauthenticated {
                    reason: "Kratos rejected the session"
                }
            );
        }

        #[tokio::test]
        async fn rate_limited_and_server_error() {
            let head = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".to_string();
            let (url, _server) = serve(head, vec![], Duration::ZERO).await;
            let r = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            assert_eq!(r.unwrap_err(), KratosError::RateLimited);

            let head = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\n".to_string();
            let (url, _server) = serve(head, vec![b"oops!".to_vec()], Duration::ZERO).await;
            let r = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            assert_eq!(r.unwrap_err(), KratosError::Status(503));
        }

        #[tokio::test]
        async fn redirects_are_not_followed() {
            let head = "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/steal\r\n\
                        Content-Length: 0\r\n\r\n"
                .to_string();
            let (url, _server) = serve(head, vec![], Duration::ZERO).await;
            let r = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            assert_eq!(r.unwrap_err(), KratosError::Status(302));
        }

        #[tokio::test]
        async fn oversize_content_length() {
            let (url, _server) = serve(head_200(MAX_BODY_LEN + 1), vec![], Duration::ZERO).await;
            let r = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            assert_eq!(r.unwrap_err(), KratosError::TooLarge);
        }

        #[tokio::test]
        async fn oversize_chunked_body() {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
                .to_string();
            let chunk = vec![b' '; 64 * 1024];
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            let parts = vec![framed; MAX_BODY_LEN / chunk.len() + 2];
            let (url, _server) = serve(head, parts, Duration::ZERO).await;
            let r = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            assert_eq!(r.unwrap_err(), KratosError::TooLarge);
        }

        #[tokio::test]
        async fn body_at_the_limit_is_read() {
            let mut body = future_body().into_bytes();
            body.resize(MAX_BODY_LEN, b' ');
            let (url, _server) = serve(head_200(body.len()), vec![body], Duration::ZERO).await;
            let r = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            assert!(matches!(r, Ok(Answer::Active { .. })), "{r:?}");
        }

        #[tokio::test]
        async fn slow_body_times_out() {
            let body = future_body();
            let (first, rest) = body.split_at(10);
            let (url, _server) = serve(
                head_200(body.len()),
                vec![first.into(), rest.into()],
                Duration::from_secs(5),
            )
            .await;
            let started = std::time::Instant::now();
            let r = whoami(
                &build_client().unwrap(),
                &url,
                &token("t"),
                Duration::from_millis(200),
            )
            .await;
            assert_eq!(r.unwrap_err(), KratosError::Timeout);
            assert!(started.elapsed() < Duration::from_secs(3));
        }

        #[tokio::test]
        async fn refused_port_is_unreachable() {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            drop(listener);
            let mut url = whoami_url(&base).unwrap();
            url.query_pairs_mut().append_pair("tokenize_as", "tmpl");
            let r = whoami(&build_client().unwrap(), &url, &token("s3cr3t"), LONG).await;
            let err = r.unwrap_err();
            assert_eq!(err, KratosError::Unreachable("connection refused".into()));
            let text = err.to_string();
            assert_eq!(text, "Kratos is unreachable (connection refused)");
            for leak in ["127.0.0.1", "whoami", "tmpl", "s3cr3t"] {
                assert!(!text.contains(leak), "{text}");
            }
        }

        #[tokio::test]
        async fn connection_closed_mid_body_is_unreachable() {
            let body = future_body();
            let (url, _server) = serve(
                head_200(body.len()),
                vec![body.as_bytes()[..20].to_vec()],
                Duration::ZERO,
            )
            .await;
            let r = whoami(&build_client().unwrap(), &url, &token("t"), LONG).await;
            let Err(KratosError::Unreachable(why)) = r else {
                panic!("{r:?}");
            };
            assert!(!why.contains("127.0.0.1"), "{why}");
        }

        #[tokio::test]
        async fn invalid_credential_is_not_sent() {
            let credential = token("bad\r\nvalue");
            let url = whoami_url("http://127.0.0.1:1").unwrap();
            let r = whoami(&build_client().unwrap(), &url, &credential, LONG).await;
            let err = r.unwrap_err();
            assert!(matches!(err, KratosError::Unreachable(_)));
            assert!(!err.to_string().contains("bad"));
        }
    }

    #[test]
    fn the_jwt_and_its_expiry_are_kept() {
        use base64::Engine;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"x","exp":4102444800}"#);
        let jwt = format!("eyJhbGciOiJFUzI1NiJ9.{claims}.c2ln");
        let body = FULL_BODY.replacen("{", &format!("{{\"tokenized\":\"{jwt}\","), 1);
        let Ok(Answer::Active { session, .. }) = decode_response(
            200,
            Some("application/json"),
            None,
            vec![],
            body.as_bytes(),
            NOW,
        ) else {
            panic!("decodes");
        };
        assert_eq!(session.tokenized.as_deref(), Some(jwt.as_str()));
        assert_eq!(session.tokenized_exp_ms, Some(4_102_444_800_000));
    }

    #[test]
    fn a_jwt_without_a_readable_exp_has_no_expiry() {
        assert_eq!(jwt_exp_ms("not-a-jwt"), None);
        assert_eq!(jwt_exp_ms("a.!!!.c"), None);
        assert_eq!(jwt_exp_ms("a.e30.c"), None); // {}
    }
}
