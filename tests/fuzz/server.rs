//! Random and boundary input to a real server: raw HTTP requests (methods, paths with ids at and
//! past the slot range, empty and huge ids, percent-encoded non-UTF-8, tokens of every kind, headers,
//! bodies that are random JSON, truncated, non-UTF-8 or too large) and raw WebSocket frames. A panic
//! hook counts panics on the server's threads and on this test's thread: any panic fails the test.
//! Every error must be the contract's JSON error with the status its code names. The seed is
//! printed; `MATCHD_FUZZ_SEED` replays one.

use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::Duration;

use matchd::load::raw_ws::{RawWs, OP_CLOSE, OP_PING, OP_TEXT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::common::clients::{error_body_problem, sign_token, unix_secs, unsigned_token, DEV_SECRET};
use crate::common::{self, TestServer, TIMEOUT};

const HTTP_CASES: usize = 5_000;
const WS_FRAMES: usize = 2_000;
const MAX_BODY: usize = 4096;
const MAX_FRAME: usize = 2048;

/// Names of the threads that panicked since the hook was installed.
static PANICKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every panic's thread, then reports it as the default hook would.
fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            if let Ok(mut p) = PANICKED.lock() {
                p.push(name);
            }
            previous(info);
        }));
    });
}

/// Panics since `from` on a server thread (actix workers and arbiters) or on this test's thread.
fn server_panics(from: usize) -> Vec<String> {
    let me = std::thread::current().name().unwrap_or("").to_string();
    let p = PANICKED.lock().map(|p| p.clone()).unwrap_or_default();
    p.into_iter().skip(from).filter(|n| n.starts_with("actix") || *n == me).collect()
}

fn panics_so_far() -> usize {
    PANICKED.lock().map(|p| p.len()).unwrap_or(0)
}

fn seed() -> u64 {
    let seed = std::env::var("MATCHD_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("fuzz seed {seed} (replay with MATCHD_FUZZ_SEED={seed})");
    seed
}

/// The status each contract error code must come with.
fn status_of(code: &str) -> Option<u16> {
    Some(match code {
        "bad_request" | "invalid_user" | "self_swipe" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "conflict" => 409,
        "payload_too_large" => 413,
        "rate_limited" => 429,
        "unavailable" => 503,
        _ => return None,
    })
}

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &[&'a T]) -> &'a T {
    items[rng.gen_range(0..items.len())]
}

/// An id at a boundary or of a random shape.
fn random_id(rng: &mut StdRng) -> String {
    match rng.gen_range(0..12) {
        0 => "16383.x".into(),
        1 => "16384.x".into(),
        2 => format!("{}.{}", rng.gen::<u32>(), rng.gen::<u64>()),
        3 => "0.".into(),
        4 => "%FF%FE%00".into(),
        5 => "a".repeat(rng.gen_range(100..6000)),
        6 => "%2e%2e".into(),
        7 => "1.2.3".into(),
        8 => format!("{}.", rng.gen_range(0..20_000)),
        9 => "%E2%82%AC.x".into(),
        _ => (0..rng.gen_range(1..80)).map(|_| pick(rng, &["a", "Z", "9", "_", ".", "-", "%20", "%25"])).collect(),
    }
}

/// A random JSON value drawn near the contract's fields.
fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    let keys = ["target", "direction", "swipe_id", "pool", "rating", "region", "tags", "requeue", "user_id", "x"];
    match rng.gen_range(0..if depth > 2 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(pick(rng, &["right", "left", "bob", "alice", "", "default", "16384.x"])),
        4 => json!("é".repeat(rng.gen_range(0..100))),
        5 => Value::Array((0..rng.gen_range(0..5)).map(|_| random_json(rng, depth + 1)).collect()),
        _ => Value::Object(
            (0..rng.gen_range(0..6)).map(|_| (pick(rng, &keys).to_string(), random_json(rng, depth + 1))).collect(),
        ),
    }
}

fn random_body(rng: &mut StdRng) -> Option<Vec<u8>> {
    Some(match rng.gen_range(0..10) {
        0 => return None,
        1 => json!({"target": "bob", "direction": "right", "swipe_id": format!("k{}", rng.gen::<u16>())})
            .to_string()
            .into_bytes(),
        2 => {
            let text = random_json(rng, 0).to_string();
            text.as_bytes()[..rng.gen_range(0..=text.len())].to_vec()
        }
        3 => (0..rng.gen_range(1..200)).map(|_| rng.gen::<u8>()).collect(),
        4 => vec![b'{'; MAX_BODY + rng.gen_range(1..4000)],
        5 => format!("{{\"target\":\"{}\"}}", "b".repeat(MAX_BODY)).into_bytes(),
        _ => random_json(rng, 0).to_string().into_bytes(),
    })
}

struct Tokens {
    alice: String,
    bob: String,
}

fn random_request(rng: &mut StdRng, tokens: &Tokens) -> (String, Vec<u8>) {
    let method = pick(rng, &["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]);
    let id = random_id(rng);
    let pool = random_id(rng);
    let path = match rng.gen_range(0..13) {
        0 => "/v1/swipes".to_string(),
        1 => "/v1/matches".to_string(),
        2 => format!("/v1/matches/{id}"),
        3 => "/v1/queue".to_string(),
        4 => format!("/v1/queue/{pool}"),
        5 => format!("/v1/rooms/{id}/skip"),
        6 => "/v1/dev/token".to_string(),
        7 => format!("/v1/events?since={}", pick(rng, &["abc", "-1", "18446744073709551616", "0", ""])),
        8 => format!("/v1/ws?since={}", pick(rng, &["x", "1e9", "99999999999999999999"])),
        9 => pick(rng, &["/healthz", "/readyz", "/metrics", "/"]).to_string(),
        10 => "/internal/v1/calls".to_string(),
        11 => format!("/v1/{id}"),
        _ => format!("/v1/rooms/{id}/skip?requeue={id}"),
    };
    let expired = sign_token(&json!({"sub": "alice", "exp": unix_secs() - 60}), DEV_SECRET);
    let auth = match rng.gen_range(0..8) {
        0..=2 => format!("Authorization: Bearer {}\r\n", tokens.alice),
        3 => format!("Authorization: Bearer {}\r\n", tokens.bob),
        4 => format!("Authorization: Bearer {}\r\n", unsigned_token("alice")),
        5 => format!("Authorization: Bearer {expired}\r\n"),
        6 => format!("Authorization: {}\r\n", pick(rng, &["Basic eDp5", "Bearer", "Bearer a.b.c", "bearer  x"])),
        _ => String::new(),
    };
    let content_type = pick(
        rng,
        &[
            "Content-Type: application/json\r\n",
            "Content-Type: text/plain\r\n",
            "",
            "Content-Type: application/json; charset=utf-8\r\n",
        ],
    );
    let mut extra = Vec::new();
    if rng.gen_bool(0.2) {
        extra.extend_from_slice(b"Last-Event-ID: ");
        // Visible ASCII and obs-text (0x80-0xff) are valid in a header value; DEL is not HTTP.
        extra.extend((0..rng.gen_range(0..30)).map(|_| rng.gen_range(0x21u8..=0xff)).filter(|&b| b != 0x7f));
        extra.extend_from_slice(b"\r\n");
    }
    if rng.gen_bool(0.1) {
        extra.extend_from_slice(b"Origin: http://evil.example\r\n");
    }
    let body = random_body(rng);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\n{auth}{content_type}").into_bytes();
    req.extend_from_slice(&extra);
    match &body {
        Some(b) if rng.gen_bool(0.15) => {
            // Chunked, in two pieces.
            req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let cut = b.len() / 2;
            // (An empty chunk would end the body early; the rest would be a malformed next request.)
            for part in [&b[..cut], &b[cut..]].into_iter().filter(|p| !p.is_empty()) {
                req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                req.extend_from_slice(part);
                req.extend_from_slice(b"\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
        }
        Some(b) => {
            req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            req.extend_from_slice(b);
        }
        None => req.extend_from_slice(b"\r\n"),
    }
    (format!("{method} {path}"), req)
}

/// An answer read off a raw socket: status, headers (lowercased names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `req` on a new connection and reads one answer. Streams (101, event-stream) are taken
/// as they start.
async fn exchange(addr: SocketAddr, req: &[u8], no_body: bool) -> Result<Answer, String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // The server may answer before reading a large body, and then stop reading: that is allowed.
    let _ = stream.write_all(req).await;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed after {} bytes: {:?}", buf.len(), String::from_utf8_lossy(&buf)));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut answer = Answer { status, headers, body: buf[head_end + 4..].to_vec() };
    let streaming = status == 101 || answer.header("content-type").is_some_and(|c| c.starts_with("text/event-stream"));
    if streaming || no_body {
        return Ok(answer);
    }
    let length: usize = answer.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while answer.body.len() < length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("connection closed inside the body".into());
        }
        answer.body.extend_from_slice(&chunk[..n]);
    }
    answer.body.truncate(length);
    Ok(answer)
}

/// What is wrong with an answer, if anything.
fn problem(answer: &Answer, method: &str) -> Option<String> {
    if answer.status >= 500 && answer.status != 503 {
        return Some(format!("status {}", answer.status));
    }
    if answer.status < 400 || method.starts_with("HEAD ") {
        return None;
    }
    let body: Value = match serde_json::from_slice(&answer.body) {
        Ok(v) => v,
        Err(_) => {
            return Some(format!(
                "{} with a body that is not JSON: {:?}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ))
        }
    };
    let Some(code) = body["error"]["code"].as_str() else { return Some(format!("no error code: {body}")) };
    if let Some(p) = error_body_problem(&body, code) {
        return Some(p);
    }
    match status_of(code) {
        Some(s) if s == answer.status => None,
        Some(s) => Some(format!("{} for code {code} (which is {s})", answer.status)),
        None => Some(format!("code {code} is not one of the contract's")),
    }
}

#[actix_rt::test]
async fn random_http_requests_get_the_contracts_answers_and_nothing_panics() {
    let _trace = common::trace_init();
    record_panics();
    let before = panics_so_far();
    let mut config = common::config();
    config.limits.max_body_bytes = MAX_BODY;
    config.cors_origins = vec!["http://app.example".into()];
    let server = TestServer::start(config).await;
    let api = server.api();
    let tokens = Tokens { alice: api.token("alice").await, bob: api.token("bob").await };
    let mut rng = StdRng::seed_from_u64(seed());
    let mut failures = Vec::new();
    for case in 0..HTTP_CASES {
        let (what, req) = random_request(&mut rng, &tokens);
        match timeout(TIMEOUT, exchange(server.addr(), &req, what.starts_with("HEAD "))).await {
            Ok(Ok(answer)) => {
                if let Some(p) = problem(&answer, &what) {
                    failures.push(format!("case {case} {what}: {p}"));
                }
            }
            Ok(Err(e)) => failures.push(format!("case {case} {what}: {e}")),
            Err(_) => failures.push(format!("case {case} {what}: no answer within {TIMEOUT:?}")),
        }
    }
    assert_eq!(server_panics(before), Vec::<String>::new(), "the server panicked (see the output above)");
    assert!(
        failures.is_empty(),
        "{} of {HTTP_CASES} cases failed:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
    // Still serving, and still deciding.
    api.assert_healthy().await;
    let (c, d) = (api.token("carol").await, api.token("dave").await);
    assert_eq!(api.swipe(&c, "dave", "right", None).await.ok()["status"], "pending");
    assert_eq!(api.swipe(&d, "carol", "right", None).await.ok()["status"], "matched");
    server.shutdown().await;
}

/// A random client frame: JSON near the actions, non-JSON text, or a control frame.
fn random_frame(rng: &mut StdRng, r: usize) -> (u8, Vec<u8>) {
    let actions = ["ping", "swipe", "unmatch", "join_queue", "leave_queue", "skip", "nope", ""];
    match rng.gen_range(0..10) {
        0 => (OP_TEXT, b"not json".to_vec()),
        1 => (OP_TEXT, random_json(rng, 0).to_string().into_bytes()),
        2 => (OP_PING, b"hi".to_vec()),
        _ => {
            let mut frame = match random_json(rng, 1) {
                Value::Object(m) => Value::Object(m),
                _ => json!({}),
            };
            frame["type"] = json!(pick(rng, &actions));
            frame["ref"] = json!(r);
            if rng.gen_bool(0.4) {
                frame["match_id"] = json!(random_id(rng));
                frame["room_id"] = json!(random_id(rng));
            }
            (OP_TEXT, frame.to_string().into_bytes())
        }
    }
}

async fn connect(addr: SocketAddr, token: &str) -> RawWs {
    let mut ws = RawWs::connect(addr, &format!("/v1/ws?token={token}"), None).await.unwrap();
    assert!(timeout(TIMEOUT, ws.until_event("hello")).await.unwrap().unwrap().is_some());
    ws
}

#[actix_rt::test]
async fn random_websocket_frames_get_replies_and_nothing_panics() {
    let _trace = common::trace_init();
    record_panics();
    let before = panics_so_far();
    let mut config = common::config();
    config.limits.max_frame_bytes = MAX_FRAME;
    let server = TestServer::start(config).await;
    let api = server.api();
    let token = api.token("alice").await;
    let mut rng = StdRng::seed_from_u64(seed());
    let mut ws = connect(server.addr(), &token).await;
    let mut failures = Vec::new();
    for r in 0..WS_FRAMES {
        // Now and then a frame the connection cannot survive: too large, or text that is not UTF-8.
        if rng.gen_bool(0.03) {
            let (payload, want) = match rng.gen_bool(0.5) {
                true => (vec![b' '; MAX_FRAME + 10], 1009),
                false => (vec![0xff, 0xfe, 0x80], 1007),
            };
            ws.send(OP_TEXT, &payload).await.unwrap();
            match timeout(TIMEOUT, ws.until_close()).await {
                Ok(Ok(Some(code))) if code == want || (want == 1007 && code == 1002) => {}
                other => failures.push(format!("frame {r}: expected close {want}, got {other:?}")),
            }
            ws = connect(server.addr(), &token).await;
            continue;
        }
        let (opcode, payload) = random_frame(&mut rng, r);
        ws.send(opcode, &payload).await.unwrap();
        if payload.len() > MAX_FRAME {
            match timeout(TIMEOUT, ws.until_close()).await {
                Ok(Ok(Some(1009))) => {}
                other => {
                    failures.push(format!("frame {r}: {} bytes, expected close 1009, got {other:?}", payload.len()))
                }
            }
            ws = connect(server.addr(), &token).await;
            continue;
        }
        let reply = loop {
            match timeout(TIMEOUT, ws.read_frame()).await {
                Ok(Ok(Some(f))) if f.opcode == OP_TEXT => {
                    let v: Value = serde_json::from_slice(&f.payload).unwrap_or(Value::Null);
                    if v.get("id").is_none() {
                        break Some(v);
                    }
                }
                Ok(Ok(Some(f))) if opcode == OP_PING && f.opcode == matchd::load::raw_ws::OP_PONG => break None,
                Ok(Ok(Some(f))) if f.opcode == OP_CLOSE => {
                    let sent = String::from_utf8_lossy(&payload[..payload.len().min(300)]).to_string();
                    failures.push(format!("frame {r}: the server closed ({:?}) after {sent:?}", f.close_code()));
                    break None;
                }
                Ok(Ok(Some(_))) => {}
                other => {
                    failures.push(format!("frame {r}: no reply ({other:?})"));
                    break None;
                }
            }
        };
        let Some(reply) = reply else {
            if failures.last().is_some_and(|f| f.starts_with(&format!("frame {r}:"))) {
                ws = connect(server.addr(), &token).await;
            }
            continue;
        };
        match reply["type"].as_str() {
            Some("ack") | Some("pong") => {}
            Some("error") => {
                let code = reply["data"]["code"].as_str().unwrap_or("");
                if status_of(code).is_none() || reply["data"]["message"].as_str().is_none_or(|m| m.is_empty()) {
                    failures.push(format!("frame {r}: error frame outside the contract: {reply}"));
                }
            }
            _ => failures.push(format!("frame {r}: unexpected reply {reply}")),
        }
    }
    assert_eq!(server_panics(before), Vec::<String>::new(), "the server panicked (see the output above)");
    assert!(
        failures.is_empty(),
        "{} of {WS_FRAMES} frames failed:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
    ws.send_close(1000).await.unwrap();
    api.assert_healthy().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown().await;
}
