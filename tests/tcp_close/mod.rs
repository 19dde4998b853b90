//! The server closes the TCP connection right after a WebSocket's closing handshake (RFC 6455
//! 7.1.1), whoever started it, and as soon as an SSE client goes away, instead of holding the
//! socket until a disconnect timeout. Each client here waits for the server's TCP close, as a
//! careful client does.
//!
//! Each path is timed three times: the fastest must be within 50 ms of the handshake and none may
//! take 500 ms (held connections used to take the whole 1 s linger every time), so a busy machine
//! cannot fail a working server and a server that lingers cannot pass.

use std::net::SocketAddr;
use std::time::Duration;

use matchd::load::raw_ws::{RawWs, OP_PING};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

use crate::common::{self, Api, TestServer, TIMEOUT};

const ATTEMPTS: usize = 3;
const PROMPT: Duration = Duration::from_millis(50);
const NEVER: Duration = Duration::from_millis(500);

fn assert_prompt(path: &str, samples: &[Duration]) {
    let fastest = samples.iter().min().copied().unwrap_or(Duration::MAX);
    let slowest = samples.iter().max().copied().unwrap_or(Duration::MAX);
    assert!(
        fastest <= PROMPT && slowest < NEVER,
        "{path}: TCP close after the closing handshake took {samples:?} (want the fastest <= {PROMPT:?}, all < {NEVER:?})"
    );
}

async fn open(addr: SocketAddr, token: &str) -> RawWs {
    let mut ws = RawWs::connect(addr, &format!("/v1/ws?token={token}"), None).await.unwrap();
    let hello = timeout(TIMEOUT, ws.until_event("hello")).await.unwrap().unwrap();
    assert!(hello.is_some(), "no hello");
    ws
}

/// Reads up to the server's close frame (checking its code), then times the TCP close.
async fn close_after_handshake(ws: &mut RawWs, code: u16) -> Duration {
    let got = timeout(TIMEOUT, ws.until_close()).await.expect("no close frame").unwrap();
    assert_eq!(got, Some(code), "close code");
    let handshake = Instant::now();
    timeout(TIMEOUT, ws.until_eof()).await.expect("the server never closed the TCP connection").unwrap();
    handshake.elapsed()
}

#[actix_rt::test]
async fn a_client_initiated_close_ends_the_tcp_connection_at_once() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let token = api.token("closer").await;
    let mut samples = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut ws = open(server.addr(), &token).await;
        ws.send_close(1000).await.unwrap();
        samples.push(close_after_handshake(&mut ws, 1000).await);
    }
    assert_prompt("client close (1000)", &samples);
    server.shutdown().await;
}

#[actix_rt::test]
async fn server_initiated_closes_end_the_tcp_connection_at_once() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.limits.max_frame_bytes = 1024;
    config.limits.max_connections_per_user = 1;
    let server = TestServer::start(config).await;
    let api = server.api();

    // 1009: a frame over limits.max_frame_bytes.
    let token = api.token("big-framer").await;
    let mut samples = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut ws = open(server.addr(), &token).await;
        ws.send_text(&json!({"type": "ping", "pad": "p".repeat(2000)}).to_string()).await.unwrap();
        samples.push(close_after_handshake(&mut ws, 1009).await);
    }
    assert_prompt("frame too large (1009)", &samples);

    // 4009: a second connection past limits.max_connections_per_user.
    let token = api.token("crowded").await;
    let _first = open(server.addr(), &token).await;
    let mut samples = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut extra = RawWs::connect(server.addr(), &format!("/v1/ws?token={token}"), None).await.unwrap();
        samples.push(close_after_handshake(&mut extra, 4009).await);
    }
    assert_prompt("too many connections (4009)", &samples);
    server.shutdown().await;
}

#[actix_rt::test]
async fn a_heartbeat_timeout_closes_with_1001_and_ends_the_tcp_connection() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.timeouts.heartbeat_interval_ms = 50;
    config.timeouts.client_timeout_ms = 200;
    let server = TestServer::start(config).await;
    let api = server.api();
    let token = api.token("sleeper").await;
    let mut samples = Vec::new();
    for _ in 0..ATTEMPTS {
        // This client reads the server's pings but never answers them.
        let mut ws = open(server.addr(), &token).await;
        let mut pings = 0;
        let code = loop {
            let frame =
                timeout(TIMEOUT, ws.read_frame()).await.unwrap().unwrap().expect("closed without a close frame");
            match frame.opcode {
                OP_PING => pings += 1,
                matchd::load::raw_ws::OP_CLOSE => break frame.close_code(),
                _ => {}
            }
        };
        assert_eq!(code, Some(1001));
        assert!(pings >= 1, "the server closed before pinging");
        let handshake = Instant::now();
        timeout(TIMEOUT, ws.until_eof()).await.expect("the server never closed the TCP connection").unwrap();
        samples.push(handshake.elapsed());
    }
    assert_prompt("heartbeat timeout (1001)", &samples);
    server.shutdown().await;
}

#[actix_rt::test]
async fn a_shutdown_closes_with_1012_and_ends_the_tcp_connections_at_once() {
    let _trace = common::trace_init();
    let mut samples = Vec::new();
    for _ in 0..ATTEMPTS {
        let server = TestServer::start(common::config()).await;
        let token = server.api().token("leaver").await;
        let mut ws = open(server.addr(), &token).await;
        let stop = actix_rt::spawn(server.shutdown());
        samples.push(close_after_handshake(&mut ws, 1012).await);
        stop.await.unwrap();
    }
    assert_prompt("server shutdown (1012)", &samples);
}

#[actix_rt::test]
async fn a_slow_consumer_close_ends_the_tcp_connection_once_its_frames_are_read() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::stalled::config()).await;
    let api = server.api();
    let mut samples = Vec::new();
    for attempt in 0..ATTEMPTS {
        let (mut stalled, _) =
            common::stalled::stall_until_closed(&api, server.addr(), &format!("slow{attempt}")).await;
        samples.push(close_after_handshake(&mut stalled, 4008).await);
    }
    assert_prompt("slow consumer (4008)", &samples);
    server.shutdown().await;
}

/// An SSE stream as a raw socket: the request, then everything up to the `hello` event.
async fn open_sse(addr: SocketAddr, token: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /v1/events?token={token} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("event: hello") {
        let mut chunk = [0u8; 4096];
        let n = timeout(TIMEOUT, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "the stream ended before hello: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    stream
}

async fn sse_connections(api: &Api) -> f64 {
    let reply = api.send(api.request(awc::http::Method::GET, "/metrics"), None).await;
    std::str::from_utf8(&reply.body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("matchd_connections{transport=\"sse\"} "))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[actix_rt::test]
async fn an_sse_client_that_goes_away_is_let_go_at_once() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let token = api.token("reader").await;

    // Half-close (the client stops sending): the server ends the stream and its side at once.
    let mut samples = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut stream = open_sse(server.addr(), &token).await;
        stream.shutdown().await.unwrap();
        let gone = Instant::now();
        let mut rest = Vec::new();
        timeout(TIMEOUT, stream.read_to_end(&mut rest)).await.expect("the server kept the stream open").unwrap();
        samples.push(gone.elapsed());
    }
    assert_prompt("SSE client half-close", &samples);

    // A full close: the server's session (and its place in the per-user limit) goes at once, not at
    // the next keep-alive write.
    let mut samples = Vec::new();
    for _ in 0..ATTEMPTS {
        let stream = open_sse(server.addr(), &token).await;
        assert_eq!(sse_connections(&api).await, 1.0);
        drop(stream);
        let gone = Instant::now();
        while sse_connections(&api).await != 0.0 {
            assert!(gone.elapsed() < TIMEOUT, "the server kept the dropped SSE session");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(gone.elapsed());
    }
    assert_prompt("SSE client close", &samples);
    server.shutdown().await;
}
