//! The server's connection limits over a real socket: connections that say nothing, or half a request
//! head, or idle after a response, are closed; over the cap, a connection is refused with a 503.

mod support;

use std::time::Duration;

use support::{ScriptedBackend, config_in};
use synthesis_bridge::http::Bridge;
use synthesis_bridge::server::{self, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEAD_TIMEOUT: Duration = Duration::from_millis(300);

/// A bridge served with at most `max` connections and [`HEAD_TIMEOUT`] to send a request head.
async fn serve(max: usize, dir: &std::path::Path) -> std::net::SocketAddr {
    // Only /health is asked for: no turn runs.
    let (backend, _) = ScriptedBackend::new();
    let bridge = Bridge::new(backend, config_in(dir));
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits::default()
        .max_connections(max)
        .header_read_timeout(HEAD_TIMEOUT);
    tokio::spawn(server::serve_with(
        listener,
        bridge,
        std::future::pending(),
        Duration::from_secs(1),
        limits,
    ));
    addr
}

/// Reads until the server closes the connection; fails if it does not within a few seconds.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut text))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&text).into_owned()
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_or_half_a_head_or_idles_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(8, dir.path()).await;
    // Nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, "");
    // Half a request head.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut half).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A whole request, then nothing on the kept-alive connection.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(HEALTH).await.unwrap();
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test]
async fn over_the_cap_a_connection_is_refused_and_a_freed_place_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(2, dir.path()).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    let refused = read_to_close(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(
        refused.contains(r#""code":"too_many_connections""#),
        "{refused}"
    );
    // The first closes (it sent nothing in time); its place serves the next.
    read_to_close(&mut first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(HEALTH).await.unwrap();
    let answer = read_to_close(&mut next).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test]
async fn a_connection_that_stops_inside_the_http2_preface_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(8, dir.path()).await;
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut partial).await, "");
}
