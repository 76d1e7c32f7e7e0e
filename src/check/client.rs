//! The HTTP client every check's calls go through: one per worker, made on its runtime.

use std::time::Duration;

/// A call has its own deadline; this only keeps a dead address from holding a pooled
/// connection attempt longer than any sensible per-request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Redirects are not followed: a 3xx from a service is an error, and following one would
/// hand the credential to whatever host it names. No proxy from the environment either: the
/// credential goes to the configured URL and nowhere else.
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
