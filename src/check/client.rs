//! The HTTP clients every check's calls go through: one per set of trusted certificates,
//! made on each worker's runtime.

use std::time::Duration;

/// A call has its own deadline; this only keeps a dead address from holding a pooled
/// connection attempt longer than any sensible per-request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which certificate authorities a client trusts for HTTPS.
#[derive(Clone)]
pub enum Trust {
    /// The system's store (on Debian `/etc/ssl/certs`, from `ca-certificates`), as nginx's
    /// and curl's own clients do.
    System,
    /// Only these, from a `*_trusted_certificate` file: like nginx's
    /// `proxy_ssl_trusted_certificate`, the system's store is not used then.
    Only(Vec<reqwest::Certificate>),
}

/// Redirects are not followed: a 3xx from a service is an error, and following one would
/// hand the credential to whatever host it names. No proxy from the environment either: the
/// credential goes to the configured URL and nowhere else. HTTP/2 is used where the service
/// offers it over ALPN.
pub fn build_client(trust: &Trust) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60));
    match trust {
        Trust::System => builder = builder.tls_built_in_native_certs(true),
        Trust::Only(certificates) => {
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate.clone());
            }
        }
    }
    builder.build()
}

/// The certificates of a PEM file, for `Trust::Only`. Errors are short phrases for `nginx -t`.
pub fn read_trusted(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, &'static str> {
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err("the file holds no PEM certificate");
    }
    let certificates =
        reqwest::Certificate::from_pem_bundle(pem).map_err(|_| "the file is not valid PEM")?;
    if certificates.is_empty() {
        return Err("the file holds no PEM certificate");
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA made with `openssl req -x509 -newkey ec -pkeyopt
    /// ec_paramgen_curve:P-256 -subj /CN=nginx-ory-test-ca -days 36500 -nodes`.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkDCCATWgAwIBAgIUH65f4H5WBlvNTqqyOs6gtgei+KswCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRbmdpbngtb3J5LXRlc3QtY2EwIBcNMjYxMjAxMjEyMzE0WhgP
MjEyNjExMDcyMTIzMTRaMBwxGjAYBgNVBAMMEW5naW54LW9yeS10ZXN0LWNhMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEERGX+t7v5JxoqYUqDXHWXL3jF3bALGS+
SMIbmgyUe8pnn2Ty12OsjgxjbSljRqwV0vZ91EsTvR38QpA6ehuESqNTMFEwHQYD
VR0OBBYEFJgaBbqTRj2x5sryXFgKlgHViSHKMB8GA1UdIwQYMBaAFJgaBbqTRj2x
5sryXFgKlgHViSHKMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh
AOhwlNqBBjGGLDI9VZ2gkoebPPd1yxPuxkl738q4vLYqAiEAoLIVTHLFoNTliXzy
3YBHWZdkCU45cM4aN11zn4wsN1M=
-----END CERTIFICATE-----
";

    #[test]
    fn files_without_certificates_are_refused() {
        assert_eq!(
            read_trusted(b"").unwrap_err(),
            "the file holds no PEM certificate"
        );
        assert_eq!(
            read_trusted(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err(),
            "the file holds no PEM certificate"
        );
        assert!(
            read_trusted(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    #[test]
    fn a_pem_certificate_is_read() {
        let certificates = read_trusted(CA.as_bytes()).unwrap();
        assert_eq!(certificates.len(), 1);
        let doubled = format!("{CA}{CA}");
        assert_eq!(read_trusted(doubled.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn clients_build_for_either_trust() {
        assert!(build_client(&Trust::System).is_ok());
        let only = Trust::Only(read_trusted(CA.as_bytes()).unwrap());
        assert!(build_client(&only).is_ok());
    }
}
