//! Real clients for a test server: HTTP (awc), WebSocket (awc) and Server-Sent Events (awc's
//! streaming response body, parsed into events).
//!
//! A connection (`Conn`, either transport) is read by a background task that keeps every frame the
//! server sent, in order, so a test can wait for one kind of event and still check the whole stream
//! afterwards (`history.rs` does that over many connections). Nothing is answered automatically
//! except WebSocket pings, and even that can be switched off to play a dead client.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use awc::http::{header, Method, StatusCode};
use awc::ws;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// How long a test waits for something the server should do at once.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The secret dev mode signs tokens with (the server prints it at start).
pub const DEV_SECRET: &str = "dev-secret";

/// An HTTP answer: status, headers and the raw body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: Bytes,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// The body of a 200 answer.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "expected 200, got {self:?}");
        self.json()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// Checks the contract's error form exactly: the status, and a body that is
    /// `{"error":{"code":<code>,"message":<a non-empty sentence>}}` and nothing else.
    pub fn assert_error(&self, status: u16, code: &str) {
        if let Some(problem) = self.error_problem(status, code) {
            panic!("{problem}: {self:?}");
        }
    }

    /// What is wrong with this answer as the error `status` + `code`, if anything.
    pub fn error_problem(&self, status: u16, code: &str) -> Option<String> {
        if self.status.as_u16() != status {
            return Some(format!("status {} instead of {status}", self.status.as_u16()));
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(body) => error_body_problem(&body, code),
            Err(_) => Some("the body is not JSON".into()),
        }
    }
}

/// What is wrong with `body` as exactly `{"error":{"code":<code>,"message":"<sentence>"}}`, if anything.
pub fn error_body_problem(body: &Value, code: &str) -> Option<String> {
    let Some(obj) = body.as_object() else { return Some("the body is not an object".into()) };
    let Some(err) = obj.get("error").and_then(Value::as_object) else {
        return Some("no \"error\" object".into());
    };
    if obj.len() != 1 || err.len() != 2 {
        return Some("extra fields (the body must be exactly {\"error\":{\"code\",\"message\"}})".into());
    }
    if err.get("code") != Some(&json!(code)) {
        return Some(format!("code {:?} instead of {code:?}", err.get("code")));
    }
    match err.get("message").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => None,
        _ => Some("no message".into()),
    }
}

/// How to open a WebSocket.
#[derive(Debug, Clone, Default)]
pub struct WsOptions {
    /// `?since=`: resume after this event id.
    pub since: Option<u64>,
    /// Send the token as `Authorization: Bearer` instead of `?token=`.
    pub bearer: bool,
    /// Never answer the server's pings (a dead client).
    pub ignore_pings: bool,
    /// Extra query parameters, appended as given (`a=1&b=2`).
    pub extra_query: Option<String>,
}

/// How to open an SSE stream.
#[derive(Debug, Clone, Default)]
pub struct SseOptions {
    /// The `Last-Event-ID` header.
    pub last_event_id: Option<String>,
    /// Send the token as `Authorization: Bearer` instead of `?token=`.
    pub bearer: bool,
    /// Extra query parameters, appended as given.
    pub extra_query: Option<String>,
}

/// HTTP, WebSocket and SSE access to one server. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    base: String,
    ws_base: String,
    /// Pooled keep-alive connections for plain requests, at most 128 at once.
    http: awc::Client,
    /// A separate client without a connection limit: each WebSocket holds its connection for good.
    streams: awc::Client,
}

impl Api {
    pub fn new(base_url: &str, ws_url: &str) -> Api {
        let http = awc::Client::builder()
            .connector(awc::Connector::new().limit(128))
            .timeout(Duration::from_secs(30))
            .finish();
        let streams =
            awc::Client::builder().connector(awc::Connector::new().limit(0)).timeout(Duration::from_secs(30)).finish();
        Api { base: base_url.to_string(), ws_base: ws_url.to_string(), http, streams }
    }

    /// A request to `path` (which starts with `/`).
    pub fn request(&self, method: Method, path: &str) -> awc::ClientRequest {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    /// Sends `req` with `body` and reads the whole answer. A pooled keep-alive connection the
    /// server closed meanwhile (e.g. a node that was paused) fails before the request is sent;
    /// that, and only that, is retried on a fresh connection, like an HTTP client library would.
    pub async fn send(&self, req: awc::ClientRequest, body: Option<Bytes>) -> Reply {
        let req = req.freeze().unwrap();
        let mut attempts = 0;
        let mut res = loop {
            let sent = match &body {
                Some(body) => req.send_body(body.clone()).await,
                None => req.send().await,
            };
            match sent {
                Err(awc::error::SendRequestError::Connect(awc::error::ConnectError::Disconnected)) if attempts < 3 => {
                    attempts += 1;
                }
                other => break other.unwrap(),
            }
        };
        let body = res.body().limit(16 << 20).await.unwrap();
        Reply { status: res.status(), headers: res.headers().clone(), body }
    }

    /// Sends `body` as a chunked stream (no `Content-Length`).
    pub async fn send_chunked(&self, req: awc::ClientRequest, body: Bytes) -> Reply {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let mut res = req.send_stream(futures_util::stream::iter(chunks)).await.unwrap();
        let body = res.body().limit(16 << 20).await.unwrap();
        Reply { status: res.status(), headers: res.headers().clone(), body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(self.request(Method::GET, path).bearer_auth(token), None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(self.request(Method::DELETE, path).bearer_auth(token), None).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let mut req = self.request(Method::POST, path).insert_header((header::CONTENT_TYPE, "application/json"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        self.send(req, Some(Bytes::from(body.to_string()))).await
    }

    /// A dev-mode token for `user`.
    pub async fn token(&self, user: &str) -> String {
        let body = self.post_json("/v1/dev/token", None, &json!({ "user_id": user })).await.ok();
        body["token"].as_str().unwrap().to_string()
    }

    /// `POST /v1/swipes` with the contract's body.
    pub async fn swipe(&self, token: &str, target: &str, direction: &str, swipe_id: Option<&str>) -> Reply {
        let mut body = json!({ "target": target, "direction": direction });
        if let Some(id) = swipe_id {
            body["swipe_id"] = json!(id);
        }
        self.post_json("/v1/swipes", Some(token), &body).await
    }

    /// A right swipe that reports transport failures instead of panicking (the server may be dead
    /// or restarting): `None`, or the status and JSON body.
    pub async fn try_swipe(&self, token: &str, target: &str, swipe_id: &str) -> Option<(u16, Value)> {
        let body = json!({ "target": target, "direction": "right", "swipe_id": swipe_id });
        let req = self
            .request(Method::POST, "/v1/swipes")
            .bearer_auth(token)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .timeout(Duration::from_secs(5));
        let mut res = req.send_body(body.to_string()).await.ok()?;
        let bytes = res.body().await.ok()?;
        Some((res.status().as_u16(), serde_json::from_slice(&bytes).ok()?))
    }

    /// The first user joins `pool` (alone there: queued), the second is paired with them at once;
    /// returns the room's id.
    pub async fn meet(&self, first: &str, second: &str, pool: &str) -> String {
        let pool = json!({ "pool": pool });
        let queued = self.post_json("/v1/queue", Some(first), &pool).await;
        assert_eq!(queued.status.as_u16(), 202, "{queued:?}");
        let matched = self.post_json("/v1/queue", Some(second), &pool).await.ok();
        matched["room"]["room_id"].as_str().unwrap_or_else(|| panic!("not paired: {matched}")).to_string()
    }

    /// A request that reports transport failures instead of panicking (the server may be dead or
    /// restarting): `None` when no answer came within 5 s.
    pub async fn try_send(&self, method: Method, path: &str, token: &str, body: Option<&Value>) -> Option<Reply> {
        let req = self.request(method, path).bearer_auth(token).timeout(Duration::from_secs(5));
        let mut res = match body {
            Some(body) => {
                let req = req.insert_header((header::CONTENT_TYPE, "application/json"));
                req.send_body(body.to_string()).await.ok()?
            }
            None => req.send().await.ok()?,
        };
        let body = res.body().limit(16 << 20).await.ok()?;
        Some(Reply { status: res.status(), headers: res.headers().clone(), body })
    }

    /// `GET /v1/matches`: the caller's active matches.
    pub async fn matches(&self, token: &str) -> Vec<Value> {
        let body = self.get("/v1/matches", token).await.ok();
        assert_eq!(body.as_object().unwrap().len(), 1, "unexpected fields in {body}");
        body["matches"].as_array().unwrap().clone()
    }

    /// `DELETE /v1/matches/{id}`.
    pub async fn unmatch(&self, token: &str, match_id: &str) -> Reply {
        self.delete(&format!("/v1/matches/{match_id}"), token).await
    }

    /// Makes `a` and `b` match (a first, then b) and returns the match.
    pub async fn mutual_match(&self, a: &str, b: &str) -> Value {
        let (ta, tb) = (self.token(a).await, self.token(b).await);
        let first = self.swipe(&ta, b, "right", None).await.ok();
        assert_eq!(first, json!({"status": "pending", "match": null}));
        let second = self.swipe(&tb, a, "right", None).await.ok();
        assert_eq!(second["status"], "matched", "{second}");
        second["match"].clone()
    }

    /// `GET /healthz` answers 200.
    pub async fn assert_healthy(&self) {
        let req = self.request(Method::GET, "/healthz");
        let reply = self.send(req, None).await;
        assert_eq!(reply.status, StatusCode::OK, "server unhealthy: {reply:?}");
    }

    /// Opens `GET /v1/ws` as `token`'s user (token in the query).
    pub async fn ws(&self, token: &str) -> Conn {
        self.ws_with(token, WsOptions::default()).await.unwrap()
    }

    /// Opens `GET /v1/ws`; a refused upgrade is the error.
    pub async fn ws_with(&self, token: &str, opts: WsOptions) -> Result<Conn, awc::error::WsClientError> {
        let mut query = Vec::new();
        if !opts.bearer {
            query.push(format!("token={token}"));
        }
        if let Some(since) = opts.since {
            query.push(format!("since={since}"));
        }
        query.extend(opts.extra_query.clone());
        let url = format!("{}/v1/ws?{}", self.ws_base, query.join("&"));
        let mut req = self.streams.ws(url).max_frame_size(16 << 20);
        if opts.bearer {
            req = req.bearer_auth(token);
        }
        let (_res, framed) = req.connect().await?;
        let (conn, shared, rx) = Conn::new(format!("ws#{}", next_conn_number()));
        actix_rt::spawn(read_ws(framed, shared, rx, opts.ignore_pings));
        Ok(conn)
    }

    /// Opens `GET /v1/events?token=` as `token`'s user.
    pub async fn sse(&self, token: &str) -> Conn {
        self.sse_with(Some(token), SseOptions::default()).await.unwrap()
    }

    /// Opens `GET /v1/events`; a refusal (any status but 200) is the error.
    pub async fn sse_with(&self, token: Option<&str>, opts: SseOptions) -> Result<Conn, Reply> {
        let mut query = Vec::new();
        if let (Some(token), false) = (token, opts.bearer) {
            query.push(format!("token={token}"));
        }
        query.extend(opts.extra_query.clone());
        let url = format!("{}/v1/events?{}", self.base, query.join("&"));
        let mut req = self.streams.get(url).insert_header((header::ACCEPT, "text/event-stream"));
        if let (Some(token), true) = (token, opts.bearer) {
            req = req.bearer_auth(token);
        }
        if let Some(id) = &opts.last_event_id {
            req = req.insert_header(("Last-Event-ID", id.as_str()));
        }
        let mut res = req.send().await.unwrap();
        if res.status() != StatusCode::OK {
            let body = res.body().await.unwrap();
            return Err(Reply { status: res.status(), headers: res.headers().clone(), body });
        }
        let content_type = res.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        let (conn, shared, rx) = Conn::new(format!("sse#{}", next_conn_number()));
        actix_rt::spawn(read_sse(res, shared, rx));
        Ok(conn)
    }
}

fn next_conn_number() -> u64 {
    thread_local!(static NEXT: Cell<u64> = const { Cell::new(1) });
    NEXT.with(|n| {
        let v = n.get();
        n.set(v + 1);
        v
    })
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The WebSocket close code, if the server sent a close frame.
    pub code: Option<u16>,
    /// Close description, transport error, or "closed by the client".
    pub reason: Option<String>,
}

/// What the reader task of a connection records.
#[derive(Default)]
struct Shared {
    /// Every JSON frame (WebSocket text frame or SSE `data:`) in arrival order.
    frames: RefCell<Vec<Value>>,
    closed: RefCell<Option<Closed>>,
    /// Server pings seen (WebSocket).
    pings: Cell<usize>,
    /// Anything the reader found wrong (not JSON, SSE fields that disagree with the data...).
    problems: RefCell<Vec<String>>,
    /// Woken whenever any of the above changes.
    notify: Notify,
}

impl Shared {
    fn push_json(&self, text: &[u8]) {
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => self.frames.borrow_mut().push(v),
            Err(e) => self.problem(format!("frame is not JSON ({e}): {}", String::from_utf8_lossy(text))),
        }
        self.notify.notify_waiters();
    }

    fn problem(&self, what: String) {
        self.problems.borrow_mut().push(what);
        self.notify.notify_waiters();
    }

    fn set_closed(&self, code: Option<u16>, reason: Option<String>) {
        let mut closed = self.closed.borrow_mut();
        if closed.is_none() {
            *closed = Some(Closed { code, reason });
        }
        drop(closed);
        self.notify.notify_waiters();
    }
}

/// Commands from the test to a connection's task.
enum Outgoing {
    Frame(ws::Message),
    Close,
}

/// One open event stream (WebSocket or SSE) and everything it received.
pub struct Conn {
    label: String,
    shared: Rc<Shared>,
    out: mpsc::UnboundedSender<Outgoing>,
    /// Frames before this index were consumed by `recv_event` / `next_frame`.
    cursor: Cell<usize>,
    next_ref: Cell<u64>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.out.send(Outgoing::Close);
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.label)
    }
}

impl Conn {
    fn new(label: String) -> (Conn, Rc<Shared>, mpsc::UnboundedReceiver<Outgoing>) {
        let shared = Rc::new(Shared::default());
        let (out, rx) = mpsc::unbounded_channel();
        let conn = Conn { label, shared: shared.clone(), out, cursor: Cell::new(0), next_ref: Cell::new(1) };
        (conn, shared, rx)
    }

    fn assert_sane(&self) {
        let problems = self.shared.problems.borrow();
        assert!(problems.is_empty(), "{}: bad frames from the server: {problems:?}", self.label);
    }

    /// Every frame received so far.
    pub fn frames(&self) -> Vec<Value> {
        self.assert_sane();
        self.shared.frames.borrow().clone()
    }

    /// Every stream event received so far (frames with an `id`, `hello` included), in order.
    pub fn events(&self) -> Vec<Value> {
        self.frames().into_iter().filter(|f| f.get("id").is_some()).collect()
    }

    /// The newest event id received.
    pub fn last_id(&self) -> u64 {
        self.events().last().map(|e| e["id"].as_u64().unwrap()).unwrap_or_else(|| panic!("{self:?}: no events"))
    }

    /// Server pings received (WebSocket).
    pub fn pings(&self) -> usize {
        self.shared.pings.get()
    }

    /// How the connection ended, if it has.
    pub fn is_closed(&self) -> Option<Closed> {
        self.shared.closed.borrow().clone()
    }

    /// Waits until `check` finds what it looks for in the frames received so far.
    pub async fn wait_for<T>(&self, within: Duration, what: &str, check: impl FnMut(&[Value]) -> Option<T>) -> T {
        match self.wait_or_closed(within, what, check).await {
            Ok(found) => found,
            Err(closed) => {
                panic!("{self:?}: closed ({closed:?}) while waiting for {what}; frames: {:?}", self.frames())
            }
        }
    }

    /// Like `wait_for`, but a connection that ends first is an answer too.
    pub async fn wait_or_closed<T>(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&[Value]) -> Option<T>,
    ) -> Result<T, Closed> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.shared.notify.notified();
            self.assert_sane();
            if let Some(found) = check(&self.shared.frames.borrow()) {
                return Ok(found);
            }
            if let Some(closed) = self.is_closed() {
                return Err(closed);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{self:?}: no {what} within {within:?}; frames: {:?}", self.frames());
            }
        }
    }

    /// The next event of type `kind` after the frames already consumed; frames skipped on the
    /// way stay in `frames()`.
    pub async fn recv_event(&self, kind: &str, within: Duration) -> Value {
        let from = self.cursor.get();
        let (index, frame) = self
            .wait_for(within, &format!("{kind:?} frame"), |frames| {
                frames.iter().enumerate().skip(from).find(|(_, f)| f["type"] == kind).map(|(i, f)| (i, f.clone()))
            })
            .await;
        self.cursor.set(index + 1);
        frame
    }

    /// Waits until `n` events of type `kind` were received in total, and returns them.
    pub async fn wait_events(&self, kind: &str, n: usize, within: Duration) -> Vec<Value> {
        self.wait_for(within, &format!("{n} {kind:?} events"), |frames| {
            let found: Vec<Value> = frames.iter().filter(|f| f["type"] == kind).cloned().collect();
            (found.len() >= n).then_some(found)
        })
        .await
    }

    /// Sends a text frame.
    pub fn send_text(&self, text: impl Into<String>) {
        self.send_message(ws::Message::Text(text.into().into()));
    }

    pub fn send_message(&self, message: ws::Message) {
        self.out.send(Outgoing::Frame(message)).unwrap();
    }

    /// Sends `frame` with a fresh `ref` and returns the server's reply carrying that ref
    /// (`ack`, `error` or `pong`).
    pub async fn request(&self, mut frame: Value) -> Value {
        let r = self.next_ref.get();
        self.next_ref.set(r + 1);
        let r = json!(format!("{}-r{r}", self.label));
        frame["ref"] = r.clone();
        self.request_with_ref(frame, r).await
    }

    /// Sends `frame` (which carries `r` as its ref) and returns the reply with that ref.
    pub async fn request_with_ref(&self, frame: Value, r: Value) -> Value {
        self.send_text(frame.to_string());
        self.wait_for(TIMEOUT, &format!("reply to {r}"), |frames| {
            frames.iter().find(|f| f.get("id").is_none() && (f["ref"] == r || f["data"]["ref"] == r)).cloned()
        })
        .await
    }

    /// Waits for the server to end the connection.
    pub async fn closed(&self, within: Duration) -> Closed {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.shared.notify.notified();
            self.assert_sane();
            if let Some(closed) = self.is_closed() {
                return closed;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{self:?}: still open after {within:?}; frames: {:?}", self.frames());
            }
        }
    }

    /// Closes from the client side (a WebSocket close handshake, or dropping the SSE response)
    /// and waits until the connection is gone.
    pub async fn close(&self) {
        let _ = self.out.send(Outgoing::Close);
        self.closed(TIMEOUT).await;
    }
}

async fn read_ws<F>(mut framed: F, shared: Rc<Shared>, mut rx: mpsc::UnboundedReceiver<Outgoing>, ignore_pings: bool)
where
    F: futures_util::Stream<Item = Result<ws::Frame, awc::error::WsProtocolError>>
        + futures_util::Sink<ws::Message, Error = awc::error::WsProtocolError>
        + Unpin,
{
    loop {
        tokio::select! {
            item = framed.next() => match item {
                Some(Ok(ws::Frame::Text(text))) => shared.push_json(&text),
                Some(Ok(ws::Frame::Ping(payload))) => {
                    shared.pings.set(shared.pings.get() + 1);
                    shared.notify.notify_waiters();
                    if !ignore_pings && framed.send(ws::Message::Pong(payload)).await.is_err() {
                        shared.set_closed(None, Some("could not answer a ping".into()));
                        return;
                    }
                }
                Some(Ok(ws::Frame::Pong(_))) => {}
                Some(Ok(ws::Frame::Close(reason))) => {
                    let code = reason.as_ref().map(|r| u16::from(r.code));
                    shared.set_closed(code, reason.and_then(|r| r.description));
                    return;
                }
                Some(Ok(other)) => shared.problem(format!("unexpected frame {other:?}")),
                Some(Err(e)) => {
                    shared.set_closed(None, Some(format!("protocol error: {e}")));
                    return;
                }
                None => {
                    shared.set_closed(None, Some("connection ended without a close frame".into()));
                    return;
                }
            },
            cmd = rx.recv() => match cmd {
                Some(Outgoing::Frame(message)) => {
                    if let Err(e) = framed.send(message).await {
                        shared.set_closed(None, Some(format!("send failed: {e}")));
                        return;
                    }
                }
                Some(Outgoing::Close) | None => {
                    let _ = framed.send(ws::Message::Close(Some(ws::CloseCode::Normal.into()))).await;
                    // Wait (briefly) for the server's close frame, so the server has let go too.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(frame)) = framed.next().await {
                            if matches!(frame, ws::Frame::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                    shared.set_closed(None, Some("closed by the client".into()));
                    return;
                }
            }
        }
    }
}

async fn read_sse<S>(mut res: awc::ClientResponse<S>, shared: Rc<Shared>, mut rx: mpsc::UnboundedReceiver<Outgoing>)
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            chunk = res.next() => match chunk {
                Some(Ok(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                        let block: Vec<u8> = buf.drain(..end + 2).collect();
                        parse_sse_block(&block[..end], &shared);
                    }
                }
                Some(Err(e)) => {
                    shared.set_closed(None, Some(format!("stream error: {e}")));
                    return;
                }
                None => {
                    shared.set_closed(None, Some("stream ended".into()));
                    return;
                }
            },
            cmd = rx.recv() => match cmd {
                Some(Outgoing::Frame(_)) => shared.problem("cannot send frames on an SSE stream".into()),
                Some(Outgoing::Close) | None => {
                    shared.set_closed(None, Some("closed by the client".into()));
                    return;
                }
            }
        }
    }
}

/// One SSE event block (lines without the final blank line). Comments (keep-alives) are skipped.
/// The `id:` and `event:` fields must agree with the JSON in `data:`.
fn parse_sse_block(block: &[u8], shared: &Shared) {
    let text = match std::str::from_utf8(block) {
        Ok(t) => t,
        Err(_) => return shared.problem(format!("SSE block is not UTF-8: {block:?}")),
    };
    let (mut id, mut event, mut data): (Option<&str>, Option<&str>, Vec<&str>) = (None, None, Vec::new());
    for line in text.split('\n') {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value),
            "event" => event = Some(value),
            "data" => data.push(value),
            "retry" => {}
            other => shared.problem(format!("unknown SSE field {other:?} in {text:?}")),
        }
    }
    if data.is_empty() {
        if id.is_some() || event.is_some() {
            shared.problem(format!("SSE event without data: {text:?}"));
        }
        return;
    }
    let joined = data.join("\n");
    let Ok(value) = serde_json::from_str::<Value>(&joined) else {
        return shared.problem(format!("SSE data is not JSON: {text:?}"));
    };
    if id != value.get("id").map(|v| v.to_string()).as_deref() {
        shared.problem(format!("SSE id: {id:?} disagrees with the data: {text:?}"));
    }
    if event != value.get("type").and_then(Value::as_str) {
        shared.problem(format!("SSE event: {event:?} disagrees with the data: {text:?}"));
    }
    shared.frames.borrow_mut().push(value);
    shared.notify.notify_waiters();
}

/// An HS256 token signed with `secret`, with the given claims (for forged, expired and foreign tokens).
pub fn sign_token(claims: &Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), claims, &key).unwrap()
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// An unsigned token (`alg: none`) claiming `sub`.
pub fn unsigned_token(sub: &str) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = base64url(json!({ "sub": sub, "exp": unix_secs() + 3600 }).to_string().as_bytes());
    format!("{header}.{claims}.")
}

/// Base64url without padding (the JWT encoding).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
