//! The HTTP clients every check's calls go through: one per set of trusted certificates,
//! made on each worker's runtime, and the one request and answer shape every call uses.
//! `http://` URLs go to [`super::http1`]; `https://` URLs to reqwest (TLS, HTTP/2).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Url;

use super::call::{read_body, transport_error, CallError};
use super::http1;

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

/// A worker's client for one set of trusted certificates. Cloning it is cheap: clones share
/// the connections.
#[derive(Clone)]
pub struct Client {
    plain: Arc<http1::Pool>,
    tls: reqwest::Client,
}

impl Client {
    /// Makes one call, the answer's body included (see [`Response::body`]). The caller
    /// bounds it in time (`call::within`).
    pub async fn send(&self, request: &Request<'_>) -> Result<Response, CallError> {
        if request.url.scheme() == "http" {
            return http1::send(&self.plain, request, CONNECT_TIMEOUT).await;
        }
        let url = request.url.clone();
        let mut builder = match request.method {
            Method::Get => self.tls.get(url),
            Method::Post => self.tls.post(url),
        };
        for (name, value) in &request.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        if let Some((content_type, body)) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        let mut response = builder.send().await.map_err(transport_error)?;
        let mut head = Head::default();
        for (name, value) in response.headers() {
            head.push(name.as_str().as_bytes(), value.as_bytes());
        }
        let status = response.status().as_u16();
        let body = read_body(&mut response).await;
        Ok(Response::new(status, head, body))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One call: nothing from the client's request goes into it unless a check puts it there.
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a Url,
    /// Values that carry a secret are marked sensitive by the caller (kept out of HTTP/2
    /// header compression tables and debug output).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Content type and body.
    pub body: Option<(&'static str, Vec<u8>)>,
}

impl<'a> Request<'a> {
    pub fn get(url: &'a Url) -> Self {
        Request {
            method: Method::Get,
            url,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn post(url: &'a Url, content_type: &'static str, body: Vec<u8>) -> Self {
        Request {
            method: Method::Post,
            url,
            headers: Vec::new(),
            body: Some((content_type, body)),
        }
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// An answer, whatever its status.
pub struct Response {
    pub status: u16,
    head: Head,
    body: Result<Vec<u8>, CallError>,
}

impl Response {
    pub(crate) fn new(status: u16, head: Head, body: Result<Vec<u8>, CallError>) -> Self {
        Response { status, head, body }
    }

    /// The first field `name` (any case) as text, if it is text (visible ASCII, spaces and
    /// tabs, as `HeaderValue::to_str` wants).
    pub fn header<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        self.head.get(name)
    }

    /// Every field `name` that is text, in order.
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.head.get_all(name)
    }

    /// The answer's `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.head.get("content-type")
    }

    /// The body. Only a 200 needs its body: for the other statuses the status is the answer,
    /// and a body that is too large or breaks off is taken as empty.
    pub fn body(&self) -> Result<&[u8], CallError> {
        match &self.body {
            Ok(body) => Ok(body),
            Err(e) if self.status == 200 => Err(e.clone()),
            Err(_) => Ok(&[]),
        }
    }
}

/// An answer's header fields, in one buffer.
#[derive(Default)]
pub struct Head {
    bytes: Vec<u8>,
    /// Per field: where its name starts, where its value starts (the name's end) and ends.
    fields: Vec<(usize, usize, usize)>,
}

impl Head {
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let middle = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.fields.push((start, middle, self.bytes.len()));
    }

    pub fn get<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        self.get_all(name).next()
    }

    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.fields.iter().filter_map(move |&(start, middle, end)| {
            if !self.bytes[start..middle].eq_ignore_ascii_case(name.as_bytes()) {
                return None;
            }
            let value = &self.bytes[middle..end];
            if value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
                std::str::from_utf8(value).ok()
            } else {
                None
            }
        })
    }
}

/// Redirects are not followed: a 3xx from a service is an error, and following one would
/// hand the credential to whatever host it names. No proxy from the environment either: the
/// credential goes to the configured URL and nowhere else. HTTP/2 is used where the service
/// offers it over ALPN.
pub fn build_client(trust: &Trust) -> reqwest::Result<Client> {
    Ok(Client {
        plain: Arc::new(http1::Pool::default()),
        tls: build_tls_client(trust)?,
    })
}

fn build_tls_client(trust: &Trust) -> reqwest::Result<reqwest::Client> {
    // reqwest's TLS takes rustls' process-wide crypto provider. Ours is aws-lc-rs, the
    // library that also checks JWS signatures: one crypto library in the module. A second
    // install is refused and changes nothing, so every client build may ask.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(http1::IDLE_TIMEOUT)
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
