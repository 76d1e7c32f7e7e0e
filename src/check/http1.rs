//! Calls to `http://` URLs: HTTP/1.1 on kept-alive TCP connections, one call at a time on a
//! connection.
//!
//! The services a gateway asks on every cache miss (Hydra's admin port, Kratos, Keto) usually
//! sit next to it on plain HTTP. A call through reqwest costs the client thread about four
//! times the instructions of the whole exchange here (`scripts/hotpath`), for layers these
//! calls do not use: redirect and retry policies, URL re-parsing, header maps, a connection
//! task per connection. `https://` URLs still go through reqwest (TLS, HTTP/2).
//!
//! What it does not do, on purpose: follow redirects, use a proxy, compress, pipeline, or
//! retry. A pooled connection is checked before it is used (the service may have closed it
//! while idle), so a restarted service costs no failed call.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::call::{io_error, CallError};
use super::client::{Head, Method, Request, Response};
use super::MAX_ANSWER_LEN;

/// Bounds the answer's status line and header fields together.
const MAX_HEAD_LEN: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A chunk-size line or a trailer longer than this is not a service talking.
const MAX_LINE_LEN: usize = 4096;
const MAX_TRAILERS_LEN: usize = 16 * 1024;

/// Connections idle for longer are closed rather than reused: services close theirs after a
/// minute or two (nginx 75 s, Go's servers when told to), and a connection the service is
/// closing just as the call is written fails the call. The HTTPS client keeps the same.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per worker, over all services: more than the calls a worker has in
/// flight at once under load, so that a burst does not end in a wave of reconnects.
const MAX_IDLE: usize = 512;

/// The idle connections of one worker's runtime, by origin (`host:port`).
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    origin: Box<str>,
    conn: Conn,
    since: Instant,
}

/// A connection with its read buffer, which stays with it: a fresh 4 KiB buffer per call is
/// a large allocation for malloc, which then consolidates its free lists every time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What a read buffer starts with, and is cut back to when a large answer grew it.
const BUF_LEN: usize = 4096;

impl Pool {
    /// The most recently used open connection to `origin`. Connections found closed or idle
    /// too long on the way are dropped.
    fn take(&self, origin: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.iter().rposition(|c| &*c.origin == origin) {
            let c = idle.swap_remove(i);
            if c.since.elapsed() < IDLE_TIMEOUT && is_open(&c.conn.stream) {
                return Some(c.conn);
            }
        }
        None
    }

    fn put(&self, origin: Box<str>, mut conn: Conn) {
        conn.buf.clear();
        if conn.buf.capacity() > 16 * BUF_LEN {
            conn.buf = Vec::with_capacity(BUF_LEN);
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            // The oldest goes: it is the likeliest to be closed by the service anyway.
            let oldest = (0..idle.len()).min_by_key(|&i| idle[i].since);
            if let Some(i) = oldest {
                idle.swap_remove(i);
            }
        }
        idle.push(Idle {
            origin,
            conn,
            since: Instant::now(),
        });
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// An idle connection is open when it has nothing to read: a service that closed it has sent
/// FIN (a read would return 0), one that reset it makes the read fail, and bytes it sent
/// unasked mean the connection is out of step. One `recv` with `MSG_PEEK`, which never waits.
fn is_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a non-blocking peek of at most one byte into a live local, on a socket we own.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Makes one call. The caller bounds it in time (`call::within`); connecting alone is bounded
/// by `connect_timeout`.
pub async fn send(
    pool: &Pool,
    request: &Request<'_>,
    connect_timeout: Duration,
) -> Result<Response, CallError> {
    let url = request.url;
    let host = url
        .host_str()
        .ok_or_else(|| CallError::Unreachable("the URL has no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let origin = format!("{host}:{port}");
    let bytes = request_bytes(request, host);

    let mut conn = match pool.take(&origin) {
        Some(conn) => conn,
        None => Conn {
            stream: connect(host, port, connect_timeout).await?,
            buf: Vec::with_capacity(BUF_LEN),
        },
    };
    let (response, reusable) = exchange(&mut conn, &bytes).await?;
    if reusable {
        pool.put(origin.into_boxed_str(), conn);
    }
    Ok(response)
}

async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, CallError> {
    // An IPv6 literal comes bracketed in a URL ("[::1]"); a name is resolved by the runtime
    // off its thread (getaddrinfo blocks).
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let connecting = async {
        match literal.parse::<std::net::IpAddr>() {
            Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await,
            Err(_) => TcpStream::connect((host, port)).await,
        }
    };
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| CallError::Timeout)?
        .map_err(io_error)?;
    // Calls are small and answered at once: Nagle's delay would only add latency.
    let _ = stream.set_nodelay(true);
    keep_alive(&stream);
    Ok(stream)
}

/// TCP keep-alive after a minute idle, so a connection to a service that vanished without a
/// FIN (a rescheduled pod) is found dead by the kernel rather than by a call.
fn keep_alive(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    let on: libc::c_int = 1;
    let idle: libc::c_int = 60;
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt with pointers to live c_ints of the size given, on a socket we own;
    // a failure only leaves the kernel's defaults.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&raw const on).cast(),
            size,
        );
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            (&raw const idle).cast(),
            size,
        );
    }
}

/// The request as it goes on the wire. `Host` carries the port when the URL names one, as
/// every client does; the headers are `HeaderName`/`HeaderValue`s, which hold no CR or LF.
fn request_bytes(request: &Request<'_>, host: &str) -> Vec<u8> {
    let url = request.url;
    let body = request.body.as_ref();
    let mut out = Vec::with_capacity(
        160 + url.as_str().len()
            + request
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>()
            + body.map_or(0, |(_, b)| b.len()),
    );
    out.extend_from_slice(match request.method {
        Method::Get => b"GET ",
        Method::Post => b"POST ",
    });
    out.extend_from_slice(url.path().as_bytes());
    if let Some(query) = url.query() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    if let Some(port) = url.port() {
        out.push(b':');
        out.extend_from_slice(port.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in &request.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some((content_type, body)) = body {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some((_, body)) = body {
        out.extend_from_slice(body);
    }
    out
}

/// How the answer's body ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    /// No length: the body ends when the service closes the connection.
    Close,
}

/// Writes the request and reads the answer. Returns whether the connection can carry
/// another call.
async fn exchange(conn: &mut Conn, request: &[u8]) -> Result<(Response, bool), CallError> {
    let Conn { stream, buf } = conn;
    stream.write_all(request).await.map_err(io_error)?;
    let (status, head, framing, keep_alive) = loop {
        let parsed = parse_head(buf)?;
        if let Some((len, status, head, framing, keep_alive)) = parsed {
            buf.drain(..len);
            // 1xx answers (100 Continue, 103 Early Hints) come before the real one.
            if (100..200).contains(&status) {
                continue;
            }
            break (status, head, framing, keep_alive);
        }
        if buf.len() >= MAX_HEAD_LEN {
            return Err(CallError::Malformed(format!(
                "the answer's header is larger than {MAX_HEAD_LEN} bytes"
            )));
        }
        if read_more(stream, buf).await.map_err(io_error)? == 0 {
            let why = if buf.is_empty() {
                "the connection closed before the answer"
            } else {
                "the connection closed in the answer's header"
            };
            return Err(CallError::Unreachable(why.into()));
        }
    };
    let (body, body_ends_cleanly) = read_body(stream, buf, framing).await;
    let reusable = keep_alive && body_ends_cleanly && body.is_ok();
    Ok((Response::new(status, head, body), reusable))
}

/// What a complete head says: its length, status, header fields, framing and whether the
/// connection stays open. `None` while the head is incomplete.
type ParsedHead = (usize, u16, Head, Framing, bool);

fn parse_head(buf: &[u8]) -> Result<Option<ParsedHead>, CallError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut fields);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(CallError::Malformed(format!(
                "the answer has more than {MAX_HEADERS} header fields"
            )))
        }
        Err(e) => return Err(CallError::Malformed(format!("not an HTTP answer ({e})"))),
    };
    let status = answer.code.unwrap_or(0);
    let http11 = answer.version == Some(1);
    let mut head = Head::default();
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = !http11;
    for field in answer.headers.iter() {
        head.push(field.name.as_bytes(), field.value);
        if field.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(field.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (value, length) {
                (Some(v), None) => length = Some(v),
                (Some(v), Some(seen)) if v == seen => {}
                _ => {
                    return Err(CallError::Malformed(
                        "the answer's Content-Length is invalid".into(),
                    ))
                }
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only chunked is asked for (no TE header is sent), and it must come last.
            let last = field.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(CallError::Malformed(
                    "the answer uses a transfer coding other than chunked".into(),
                ));
            }
            chunked = true;
        } else if field.name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !http11 && token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else if chunked {
        // Both headers: the length is not to be trusted (RFC 9112 §6.3), nor the connection.
        if length.is_some() {
            close = true;
        }
        Framing::Chunked
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let keep_alive = !close && framing != Framing::Close;
    Ok(Some((len, status, head, framing, keep_alive)))
}

/// Reads more bytes onto `buf`, growing it as needed. 0: the connection closed.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(8192);
    }
    stream.read_buf(buf).await
}

/// Reads the body after the head; `buf` holds what came with the head. Also says whether the
/// body ended exactly where its framing says (no bytes after it), which a reused connection
/// needs. A body over [`MAX_ANSWER_LEN`] is not read further.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> (Result<Vec<u8>, CallError>, bool) {
    match framing {
        Framing::Empty => {
            let clean = buf.is_empty();
            (Ok(Vec::new()), clean)
        }
        Framing::Length(len) => {
            if len > MAX_ANSWER_LEN {
                return (Err(CallError::TooLarge), false);
            }
            while buf.len() < len {
                match read_more(stream, buf).await {
                    Ok(0) => return (Err(closed_in_body()), false),
                    Ok(_) => {}
                    Err(e) => return (Err(io_error(e)), false),
                }
            }
            (Ok(buf[..len].to_vec()), buf.len() == len)
        }
        Framing::Close => loop {
            if buf.len() > MAX_ANSWER_LEN {
                return (Err(CallError::TooLarge), false);
            }
            match read_more(stream, buf).await {
                Ok(0) if buf.len() > MAX_ANSWER_LEN => return (Err(CallError::TooLarge), false),
                Ok(0) => return (Ok(std::mem::take(buf)), false),
                Ok(_) => {}
                Err(e) => return (Err(io_error(e)), false),
            }
        },
        Framing::Chunked => {
            let mut chunks = Dechunk::default();
            loop {
                match chunks.feed(buf) {
                    Ok(used) => {
                        buf.drain(..used);
                    }
                    Err(e) => return (Err(e), false),
                }
                if chunks.is_done() {
                    let clean = buf.is_empty();
                    return (Ok(chunks.body), clean);
                }
                match read_more(stream, buf).await {
                    Ok(0) => return (Err(closed_in_body()), false),
                    Ok(_) => {}
                    Err(e) => return (Err(io_error(e)), false),
                }
            }
        }
    }
}

fn closed_in_body() -> CallError {
    CallError::Unreachable("the connection closed in the answer's body".into())
}

/// A chunked body (RFC 9112 §7.1), decoded as it arrives.
#[derive(Default)]
struct Dechunk {
    state: Chunk,
    body: Vec<u8>,
    trailers_len: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Chunk {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes to go.
    Data(usize),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
    Done,
}

impl Dechunk {
    fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Takes what it can of `input`; returns how many bytes it used. The rest is an
    /// incomplete line, to be offered again with more bytes after it.
    fn feed(&mut self, input: &[u8]) -> Result<usize, CallError> {
        let bad = |why: &str| CallError::Malformed(format!("the answer's chunked body {why}"));
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                Chunk::Done => return Ok(used),
                Chunk::Size | Chunk::Trailers => {
                    let Some(end) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > MAX_LINE_LEN {
                            return Err(bad("has a line that is too long"));
                        }
                        return Ok(used);
                    };
                    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
                    used += end + 1;
                    if self.state == Chunk::Trailers {
                        self.trailers_len += end + 1;
                        if self.trailers_len > MAX_TRAILERS_LEN {
                            return Err(bad("has trailers that are too long"));
                        }
                        if line.is_empty() {
                            self.state = Chunk::Done;
                        }
                        continue;
                    }
                    let size = line
                        .split(|&b| b == b';')
                        .next()
                        .map(<[u8]>::trim_ascii)
                        .filter(|s| !s.is_empty() && s.len() <= 16)
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .and_then(|s| usize::from_str_radix(s, 16).ok())
                        .ok_or_else(|| bad("has an invalid chunk size"))?;
                    if size == 0 {
                        self.state = Chunk::Trailers;
                    } else if size > MAX_ANSWER_LEN - self.body.len() {
                        return Err(CallError::TooLarge);
                    } else {
                        self.state = Chunk::Data(size);
                    }
                }
                Chunk::Data(left) => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = left.min(rest.len());
                    self.body.extend_from_slice(&rest[..take]);
                    used += take;
                    self.state = if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    };
                }
                Chunk::DataEnd => {
                    if rest.starts_with(b"\r\n") {
                        used += 2;
                    } else if rest.starts_with(b"\n") {
                        used += 1;
                    } else if rest.is_empty() || rest == b"\r" {
                        return Ok(used);
                    } else {
                        return Err(bad("has a chunk longer than its size"));
                    }
                    self.state = Chunk::Size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue, ACCEPT};
    use reqwest::Url;
    use tokio::net::TcpListener;

    const LONG: Duration = Duration::from_secs(5);

    fn dechunk_all(parts: &[&[u8]]) -> Result<Vec<u8>, CallError> {
        let mut d = Dechunk::default();
        let mut pending = Vec::new();
        for part in parts {
            pending.extend_from_slice(part);
            let used = d.feed(&pending)?;
            pending.drain(..used);
        }
        assert!(d.is_done(), "not done: {:?}", d.state);
        assert!(pending.is_empty());
        Ok(d.body)
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let wire: &[u8] = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        let want = b"hello 0123456789".to_vec();
        assert_eq!(dechunk_all(&[wire]).unwrap(), want);
        for cut in 1..wire.len() {
            let (a, b) = wire.split_at(cut);
            assert_eq!(dechunk_all(&[a, b]).unwrap(), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(dechunk_all(&bytes).unwrap(), want);
        assert_eq!(dechunk_all(&[b"0\r\n\r\n"]).unwrap(), b"");
        assert_eq!(dechunk_all(&[b"3\nabc\n0\n\n"]).unwrap(), b"abc");
    }

    #[test]
    fn bad_chunked_bodies_are_refused() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"12345678901234567\r\n",
            b"3\r\nabcd\r\n",
        ] {
            let mut d = Dechunk::default();
            assert!(
                matches!(d.feed(wire), Err(CallError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut d = Dechunk::default();
        assert_eq!(d.feed(b"100001\r\n"), Err(CallError::TooLarge));
        let mut d = Dechunk::default();
        assert!(d.feed(&[b'1'; MAX_LINE_LEN + 1]).is_err());
        let mut d = Dechunk::default();
        assert_eq!(d.feed(&[b'1'; 100]), Ok(0), "an incomplete line waits");
    }

    #[test]
    fn heads_and_their_framing() {
        let parse = |s: &str| parse_head(s.as_bytes()).unwrap().unwrap();
        let (len, status, head, framing, keep) = parse(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        );
        assert_eq!(
            (len, status, framing, keep),
            (70, 200, Framing::Length(2), true)
        );
        assert_eq!(head.get("content-type"), Some("application/json"));
        let (.., framing, keep) = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((framing, keep), (Framing::Chunked, true));
        let (.., framing, keep) = parse("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((framing, keep), (Framing::Close, false));
        let (.., framing, keep) = parse("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((framing, keep), (Framing::Empty, true));
        let (.., keep) = parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!keep);
        let (.., keep) = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!keep);
        let (.., keep) =
            parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(keep);
        let (.., framing, keep) =
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((framing, keep), (Framing::Chunked, false));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Ty")
            .unwrap()
            .is_none());
        for bad in [
            "<html>\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad.as_bytes()), Err(CallError::Malformed(_))),
                "{bad:?}"
            );
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(parse_head(many.as_bytes()).is_err());
    }

    /// A server that answers each request on each connection with the next of `answers` (an
    /// empty one: close without answering), and records the requests and how many
    /// connections it accepted.
    async fn server(answers: Vec<Vec<u8>>) -> (Url, tokio::task::JoinHandle<(Vec<String>, usize)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/x?y=1", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            let mut answers = answers.into_iter();
            let mut connections = 0;
            // Done when no new connection comes for a while.
            let next = || tokio::time::timeout(Duration::from_millis(500), listener.accept());
            'accept: while let Ok(Ok((mut socket, _))) = next().await {
                connections += 1;
                loop {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => continue 'accept,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    requests.push(String::from_utf8_lossy(&request).into_owned());
                    let Some(answer) = answers.next() else {
                        break 'accept;
                    };
                    if answer.is_empty() {
                        continue 'accept; // close without answering
                    }
                    socket.write_all(&answer).await.unwrap();
                }
            }
            (requests, connections)
        });
        (url, task)
    }

    fn get(url: &Url) -> Request<'_> {
        Request::get(url).header(ACCEPT, HeaderValue::from_static("application/json"))
    }

    #[tokio::test]
    async fn keeps_the_connection_for_the_next_call() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n";
        let (url, server) = server(vec![ok.clone(), chunked.to_vec(), ok]).await;
        let pool = Pool::default();
        for want in ["{}", "[]", "{}"] {
            let response = send(&pool, &get(&url), LONG).await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(response.body().unwrap(), want.as_bytes());
            assert_eq!(pool.idle_count(), 1);
        }
        drop(pool);
        let (requests, connections) = server.await.unwrap();
        assert_eq!(connections, 1, "one connection for three calls");
        let host = url.host_str().unwrap();
        let port = url.port().unwrap();
        assert_eq!(
            requests[0],
            format!(
                "GET /x?y=1 HTTP/1.1\r\nHost: {host}:{port}\r\naccept: application/json\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn posts_carry_their_body() {
        let (url, server) = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()
        ])
        .await;
        let pool = Pool::default();
        let name = HeaderName::from_static("authorization");
        let request = Request::post(
            &url,
            "application/x-www-form-urlencoded",
            b"token=a".to_vec(),
        )
        .header(name, HeaderValue::from_static("Bearer k"));
        assert_eq!(send(&pool, &request, LONG).await.unwrap().status, 200);
        drop(pool);
        let (requests, _) = server.await.unwrap();
        assert!(
            requests[0].starts_with("POST /x?y=1 HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("\r\nauthorization: Bearer k\r\n"));
        assert!(requests[0].contains(
            "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\n"
        ));
    }

    #[tokio::test]
    async fn a_connection_the_service_closed_is_not_reused() {
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec();
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        let (url, server) = server(vec![close, ok.clone(), ok]).await;
        let pool = Pool::default();
        send(&pool, &get(&url), LONG).await.unwrap();
        assert_eq!(pool.idle_count(), 0, "Connection: close");
        send(&pool, &get(&url), LONG).await.unwrap();
        assert_eq!(pool.idle_count(), 1);
        drop(pool);
        assert_eq!(server.await.unwrap().1, 2);
    }

    #[tokio::test]
    async fn an_idle_connection_closed_by_the_service_is_replaced() {
        // The first connection is answered once, then closed by the server while idle.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await.unwrap();
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .unwrap();
                socket.shutdown().await.unwrap();
            }
        });
        let pool = Pool::default();
        send(&pool, &get(&url), LONG).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.idle_count(), 1);
        let second = send(&pool, &get(&url), LONG).await;
        assert_eq!(
            second.unwrap().status,
            200,
            "a new connection, not the closed one"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn failures() {
        let cases: Vec<(Vec<u8>, CallError)> = vec![
            (
                Vec::new(),
                CallError::Unreachable("the connection closed before the answer".into()),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(),
                CallError::Unreachable("the connection closed in the answer's header".into()),
            ),
            (
                b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
                CallError::Malformed("not an HTTP answer (invalid HTTP version)".into()),
            ),
        ];
        for (answer, want) in cases {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
            let server = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await.unwrap();
                socket.write_all(&answer).await.unwrap();
            });
            let err = send(&Pool::default(), &get(&url), LONG).await.err();
            assert_eq!(err, Some(want));
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_not_read() {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_ANSWER_LEN + 1
        );
        let (url, _server) = server(vec![head.into_bytes()]).await;
        let pool = Pool::default();
        let response = send(&pool, &get(&url), LONG).await.unwrap();
        assert_eq!(response.body(), Err(CallError::TooLarge));
        assert_eq!(pool.idle_count(), 0);

        let big = format!("{:x}\r\n", MAX_ANSWER_LEN / 2);
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            wire.extend_from_slice(big.as_bytes());
            wire.extend(std::iter::repeat_n(b'a', MAX_ANSWER_LEN / 2));
            wire.extend_from_slice(b"\r\n");
        }
        let (url, _server) = server(vec![wire]).await;
        let response = send(&pool, &get(&url), LONG).await.unwrap();
        assert_eq!(response.body(), Err(CallError::TooLarge));
    }

    #[tokio::test]
    async fn a_refused_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let err = send(&Pool::default(), &get(&url), LONG).await.err();
        assert_eq!(
            err,
            Some(CallError::Unreachable("connection refused".into()))
        );
    }
}
