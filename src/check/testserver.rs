//! A one-connection HTTP server for the clients' unit tests: real bytes on a real socket,
//! with whatever head and body a test wants, written as slowly as it wants.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves one connection on a free loopback port: reads the request (head and Content-Length body), answers with
/// `head` then `body` parts written `pause` apart, and returns the request it read.
pub async fn serve(
    head: String,
    body: Vec<Vec<u8>>,
    pause: Duration,
) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if request.len() >= end + 4 + len {
                    break;
                }
            }
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
    (base, task)
}
