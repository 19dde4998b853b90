//! Bad input of every kind is answered with the contract's exact status and JSON error, changes
//! nothing, and never takes the server down. Also: rate limits, oversize WebSocket frames, and I8
//! (a request or connection acts only as its token's subject).

use std::time::Duration;

use awc::http::{header, Method};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::clients::{error_body_problem, sign_token, unix_secs, unsigned_token, DEV_SECRET};
use crate::common::{self, Api, SseOptions, TestServer, WsOptions, TIMEOUT};

/// How a case authenticates.
#[derive(Debug, Clone)]
enum Auth {
    None,
    /// A valid token of alice.
    Alice,
    /// This exact `Authorization` header value.
    Header(String),
    /// A token in the query string (`?token=`).
    Query(String),
    /// Alice's valid token in the query string.
    AliceInQuery,
}

/// One bad request and the exact error it must get.
#[derive(Debug)]
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    /// Body sent as `application/json` unless `content_type` says otherwise.
    body: Option<Bytes>,
    content_type: &'static str,
    /// Send the body chunked (no `Content-Length`).
    chunked: bool,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

impl Case {
    fn new(name: &'static str, method: Method, path: &str, status: u16, code: &'static str) -> Case {
        Case {
            name,
            method,
            path: path.to_string(),
            auth: Auth::Alice,
            body: None,
            content_type: "application/json",
            chunked: false,
            headers: Vec::new(),
            status,
            code,
        }
    }

    /// `POST /v1/swipes` as alice with `body`.
    fn swipe(name: &'static str, body: impl Into<String>, status: u16, code: &'static str) -> Case {
        Case::new(name, Method::POST, "/v1/swipes", status, code).body(body)
    }

    fn body(mut self, body: impl Into<String>) -> Case {
        self.body = Some(Bytes::from(body.into()));
        self
    }

    fn auth(mut self, auth: Auth) -> Case {
        self.auth = auth;
        self
    }

    fn content_type(mut self, content_type: &'static str) -> Case {
        self.content_type = content_type;
        self
    }

    fn chunked(mut self) -> Case {
        self.chunked = true;
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    async fn run(&self, api: &Api, alice: &str) -> common::clients::Reply {
        let mut path = self.path.clone();
        let query_token = match &self.auth {
            Auth::Query(token) => Some(token.as_str()),
            Auth::AliceInQuery => Some(alice),
            _ => None,
        };
        if let Some(token) = query_token {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("token={token}"));
        }
        let mut req = api.request(self.method.clone(), &path);
        match &self.auth {
            Auth::Alice => req = req.bearer_auth(alice),
            Auth::Header(value) => req = req.insert_header((header::AUTHORIZATION, value.as_str())),
            Auth::None | Auth::Query(_) | Auth::AliceInQuery => {}
        }
        for (name, value) in &self.headers {
            req = req.insert_header((*name, value.as_str()));
        }
        match &self.body {
            Some(body) => {
                req = req.insert_header((header::CONTENT_TYPE, self.content_type));
                if self.chunked {
                    api.send_chunked(req, body.clone()).await
                } else {
                    api.send(req, Some(body.clone())).await
                }
            }
            None => api.send(req, None).await,
        }
    }
}

/// A right swipe on bob that would complete a match if the server took it.
fn right_on_bob() -> Value {
    json!({"target": "bob", "direction": "right"})
}

fn with(extra: &[(&str, Value)]) -> String {
    let mut body = right_on_bob();
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    body.to_string()
}

fn table() -> Vec<Case> {
    let valid = right_on_bob().to_string();
    let alice_claims = |exp: u64| json!({"sub": "alice", "exp": exp});
    let expired = sign_token(&alice_claims(unix_secs() - 3600), DEV_SECRET);
    let foreign = sign_token(&alice_claims(unix_secs() + 3600), "some-other-secret-entirely");
    let bad_sub = sign_token(&json!({"sub": "not a user!", "exp": unix_secs() + 3600}), DEV_SECRET);
    let no_sub = sign_token(&json!({"exp": unix_secs() + 3600}), DEV_SECRET);
    let huge = "k".repeat(20 * 1024);
    vec![
        // Malformed bodies.
        Case::swipe("truncated JSON", r#"{"target":"bob","direction":"#, 400, "bad_request"),
        Case::swipe("not JSON", "right on bob please", 400, "bad_request"),
        Case::swipe("empty body", "", 400, "bad_request"),
        Case::swipe("unknown field", with(&[("extra", json!(true))]), 400, "bad_request"),
        Case::swipe("missing direction", r#"{"target":"bob"}"#, 400, "bad_request"),
        Case::swipe("missing target", r#"{"direction":"right"}"#, 400, "bad_request"),
        Case::swipe("target of the wrong type", r#"{"target":42,"direction":"right"}"#, 400, "bad_request"),
        Case::swipe("unknown direction", r#"{"target":"bob","direction":"up"}"#, 400, "bad_request"),
        Case::swipe("direction of the wrong type", r#"{"target":"bob","direction":true}"#, 400, "bad_request"),
        Case::swipe("swipe_id of the wrong type", with(&[("swipe_id", json!(7))]), 400, "bad_request"),
        Case::swipe("body not declared as JSON", valid.clone(), 400, "bad_request").content_type("text/plain"),
        // Invalid user ids.
        Case::swipe("target too long", with(&[("target", json!("b".repeat(65)))]), 400, "invalid_user"),
        Case::swipe("target with a space", with(&[("target", json!("bo b"))]), 400, "invalid_user"),
        Case::swipe("target with punctuation", with(&[("target", json!("bob!"))]), 400, "invalid_user"),
        Case::swipe("target with non-ASCII", with(&[("target", json!("böb"))]), 400, "invalid_user"),
        Case::swipe("empty target", with(&[("target", json!(""))]), 400, "invalid_user"),
        Case::new("dev token for an invalid id", Method::POST, "/v1/dev/token", 400, "invalid_user")
            .auth(Auth::None)
            .body(r#"{"user_id":"bob/../admin"}"#),
        Case::new("dev token for an empty id", Method::POST, "/v1/dev/token", 400, "invalid_user")
            .auth(Auth::None)
            .body(r#"{"user_id":""}"#),
        Case::swipe("self swipe", r#"{"target":"alice","direction":"right"}"#, 400, "self_swipe"),
        // Too large.
        Case::swipe("oversize body", with(&[("swipe_id", json!(huge))]), 413, "payload_too_large"),
        Case::swipe("oversize chunked body", with(&[("swipe_id", json!(huge))]), 413, "payload_too_large").chunked(),
        // Authentication.
        Case::swipe("no token", valid.clone(), 401, "unauthorized").auth(Auth::None),
        Case::swipe("garbage token", valid.clone(), 401, "unauthorized").auth(Auth::Header("Bearer garbage".into())),
        Case::swipe("empty bearer", valid.clone(), 401, "unauthorized").auth(Auth::Header("Bearer ".into())),
        Case::swipe("not a bearer scheme", valid.clone(), 401, "unauthorized")
            .auth(Auth::Header("Basic YWxpY2U6cGFzcw==".into())),
        Case::swipe("expired token", valid.clone(), 401, "unauthorized")
            .auth(Auth::Header(format!("Bearer {expired}"))),
        Case::swipe("token signed with another secret", valid.clone(), 401, "unauthorized")
            .auth(Auth::Header(format!("Bearer {foreign}"))),
        Case::swipe("unsigned token", valid.clone(), 401, "unauthorized")
            .auth(Auth::Header(format!("Bearer {}", unsigned_token("alice")))),
        Case::swipe("token with an invalid subject", valid.clone(), 401, "unauthorized")
            .auth(Auth::Header(format!("Bearer {bad_sub}"))),
        Case::swipe("token without a subject", valid.clone(), 401, "unauthorized")
            .auth(Auth::Header(format!("Bearer {no_sub}"))),
        Case::swipe("token in the query of an action", valid.clone(), 401, "unauthorized").auth(Auth::AliceInQuery),
        Case::new("matches without a token", Method::GET, "/v1/matches", 401, "unauthorized").auth(Auth::None),
        Case::new("websocket without a token", Method::GET, "/v1/ws", 401, "unauthorized").auth(Auth::None),
        Case::new("websocket with an expired token", Method::GET, "/v1/ws", 401, "unauthorized")
            .auth(Auth::Query(expired.clone())),
        Case::new("events with a foreign token", Method::GET, "/v1/events", 401, "unauthorized")
            .auth(Auth::Query(foreign.clone())),
        Case::new("events without a token", Method::GET, "/v1/events", 401, "unauthorized").auth(Auth::None),
        // Bad resume points.
        Case::new("websocket since is not a number", Method::GET, "/v1/ws?since=abc", 400, "bad_request"),
        Case::new("events since is negative", Method::GET, "/v1/events?since=-1", 400, "bad_request"),
        Case::new("Last-Event-ID is not a number", Method::GET, "/v1/events", 400, "bad_request")
            .header("Last-Event-ID", "yesterday"),
        // Unknown things.
        Case::new("unknown route", Method::GET, "/v1/nope", 404, "not_found"),
        Case::new("unknown top-level route", Method::GET, "/admin", 404, "not_found").auth(Auth::None),
        Case::new("route below an action", Method::POST, "/v1/swipes/bob", 404, "not_found").body(valid.clone()),
        Case::new(
            "unmatch of an unknown match",
            Method::DELETE,
            "/v1/matches/1.00000000000000000000000000000000",
            404,
            "not_found",
        ),
        Case::new("unmatch of a malformed id", Method::DELETE, "/v1/matches/%20%21", 404, "not_found"),
    ]
}

#[actix_rt::test]
async fn bad_requests_get_exact_errors_and_change_nothing() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let (alice, bob) = (api.token("alice").await, api.token("bob").await);
    // Bob likes alice already: any of the bad swipes on bob, if taken, would make a match.
    assert_eq!(api.swipe(&bob, "alice", "right", None).await.ok()["status"], "pending");
    let bob_ws = api.ws(&bob).await;
    let alice_ws = api.ws(&alice).await;
    bob_ws.recv_event("hello", TIMEOUT).await;
    alice_ws.recv_event("hello", TIMEOUT).await;

    let cases = table();
    let mut failures = Vec::new();
    for case in &cases {
        let reply = case.run(&api, &alice).await;
        if let Some(problem) = reply.error_problem(case.status, case.code) {
            failures.push(format!("{}: {problem}; expected {} {}, got {reply:?}", case.name, case.status, case.code));
        }
        api.assert_healthy().await;
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));

    // Nothing changed: no match, no event, no new user.
    assert_eq!(api.matches(&alice).await, Vec::<Value>::new());
    assert_eq!(api.matches(&bob).await, Vec::<Value>::new());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bob_ws.events().len(), 1, "{:?}", bob_ws.frames());
    assert_eq!(alice_ws.events().len(), 1, "{:?}", alice_ws.frames());
    // And the setup was live: the first valid swipe completes the match.
    assert_eq!(api.swipe(&alice, "bob", "right", None).await.ok()["status"], "matched");
    server.shutdown().await;
}

#[actix_rt::test]
async fn a_json_array_is_not_a_swipe_body() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let (alice, bob) = (api.token("alice").await, api.token("bob").await);
    assert_eq!(api.swipe(&bob, "alice", "right", None).await.ok()["status"], "pending");
    // The contract's body is an object with named fields; positional forms are not a swipe.
    for body in [r#"["bob","right"]"#, r#"["bob","right","k1"]"#] {
        let req = api
            .request(Method::POST, "/v1/swipes")
            .bearer_auth(&alice)
            .insert_header((header::CONTENT_TYPE, "application/json"));
        api.send(req, Some(Bytes::from(body))).await.assert_error(400, "bad_request");
    }
    assert_eq!(api.matches(&bob).await, Vec::<Value>::new());
    server.shutdown().await;
}

#[actix_rt::test]
async fn every_error_has_the_json_error_body() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let alice = api.token("alice").await;
    // Methods a route does not have: any 4xx is fine, but in the contract's error form.
    for (method, path) in [(Method::GET, "/v1/swipes"), (Method::PUT, "/v1/matches"), (Method::POST, "/v1/matches/1.x")]
    {
        let reply = api.send(api.request(method.clone(), path).bearer_auth(&alice), None).await;
        assert!(reply.status.is_client_error(), "{method} {path}: {reply:?}");
        let body: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|_| panic!("{method} {path}: the error body is not JSON: {reply:?}"));
        let code =
            body["error"]["code"].as_str().unwrap_or_else(|| panic!("{method} {path}: no error code: {reply:?}"));
        assert_eq!(error_body_problem(&body, code), None, "{method} {path}: {reply:?}");
    }
    server.shutdown().await;
}

#[actix_rt::test]
async fn too_many_actions_are_rate_limited_with_retry_after() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.limits.actions_per_second = 1.0;
    config.limits.action_burst = 3;
    let server = TestServer::start(config).await;
    let api = server.api();
    let (alice, dave) = (api.token("alice").await, api.token("dave").await);
    assert_eq!(api.swipe(&dave, "alice", "right", None).await.ok()["status"], "pending");
    let dave_ws = api.ws(&dave).await;
    dave_ws.recv_event("hello", TIMEOUT).await;

    for target in ["x1", "x2", "x3"] {
        api.swipe(&alice, target, "left", None).await.ok();
    }
    let limited = api.swipe(&alice, "dave", "right", None).await;
    limited.assert_error(429, "rate_limited");
    let retry_after: u64 =
        limited.header("retry-after").unwrap_or_else(|| panic!("no Retry-After: {limited:?}")).parse().unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After: {retry_after}");

    // Over WebSocket too, with the ref.
    let alice_ws = api.ws(&alice).await;
    alice_ws.recv_event("hello", TIMEOUT).await;
    let err = alice_ws.request(json!({"type": "swipe", "target": "dave", "direction": "right"})).await;
    assert_eq!((err["type"].as_str(), err["data"]["code"].as_str()), (Some("error"), Some("rate_limited")), "{err}");

    // The refused swipes changed nothing; another user is not limited.
    api.assert_healthy().await;
    assert_eq!(api.matches(&dave).await, Vec::<Value>::new());
    assert_eq!(api.swipe(&dave, "x1", "left", None).await.ok()["status"], "passed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dave_ws.events().len(), 1, "{:?}", dave_ws.frames());

    // After Retry-After, alice may act again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(api.swipe(&alice, "dave", "right", None).await.ok()["status"], "matched");
    dave_ws.recv_event("match", TIMEOUT).await;
    server.shutdown().await;
}

#[actix_rt::test]
async fn an_oversize_websocket_frame_closes_the_socket_with_1009() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.limits.max_frame_bytes = 1024;
    let server = TestServer::start(config).await;
    let api = server.api();
    let alice = api.token("alice").await;
    let ws = api.ws(&alice).await;
    ws.recv_event("hello", TIMEOUT).await;

    // Just under the limit is fine.
    let pong = ws.request(json!({"type": "ping", "pad": "p".repeat(900)})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    ws.send_text(json!({"type": "ping", "pad": "p".repeat(2000)}).to_string());
    let closed = ws.closed(TIMEOUT).await;
    assert_eq!(closed.code, Some(1009), "{closed:?}");

    // The server is fine and the user can reconnect.
    api.assert_healthy().await;
    let again = api.ws(&alice).await;
    again.recv_event("hello", TIMEOUT).await;
    server.shutdown().await;
}

#[actix_rt::test]
async fn a_token_acts_only_as_its_subject() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let (alice, bob, carol) = (api.token("alice").await, api.token("bob").await, api.token("carol").await);
    let bob_ws = api.ws(&bob).await;
    bob_ws.recv_event("hello", TIMEOUT).await;

    // A body naming another actor is refused, over HTTP and WebSocket.
    for field in ["from", "user", "actor", "user_id"] {
        let body = json!({"target": "carol", "direction": "right", field: "bob"});
        api.post_json("/v1/swipes", Some(&alice), &body).await.assert_error(400, "bad_request");
    }
    let alice_ws = api.ws(&alice).await;
    alice_ws.recv_event("hello", TIMEOUT).await;
    let err = alice_ws.request(json!({"type": "swipe", "target": "carol", "direction": "right", "from": "bob"})).await;
    assert_eq!(err["type"], "error", "{err}");

    // A swipe by alice is alice's: carol liking back matches alice, not bob.
    assert_eq!(api.swipe(&alice, "carol", "right", None).await.ok()["status"], "pending");
    let m = api.swipe(&carol, "alice", "right", None).await.ok();
    assert_eq!(m["status"], "matched");
    assert_eq!(m["match"]["users"], json!(["alice", "carol"]));
    assert_eq!(api.swipe(&carol, "bob", "right", None).await.ok()["status"], "pending", "bob never liked carol");
    assert_eq!(api.matches(&bob).await, Vec::<Value>::new());

    // Alice's token opens alice's stream, whatever the request names.
    let opts = WsOptions { extra_query: Some("user=bob&user_id=bob&sub=bob".into()), ..Default::default() };
    let spy_ws = api.ws_with(&alice, opts).await.unwrap();
    assert_eq!(spy_ws.recv_event("hello", TIMEOUT).await["data"]["user"], "alice");
    let opts = SseOptions { extra_query: Some("user=bob&user_id=bob&sub=bob".into()), ..Default::default() };
    let spy_sse = api.sse_with(Some(&alice), opts).await.unwrap();
    assert_eq!(spy_sse.recv_event("hello", TIMEOUT).await["data"]["user"], "alice");
    // A token claiming bob that the server did not sign opens nothing.
    let forged = sign_token(&json!({"sub": "bob", "exp": unix_secs() + 3600}), "not-the-server-secret");
    assert!(api.ws_with(&forged, WsOptions::default()).await.is_err());
    api.sse_with(Some(&forged), SseOptions::default()).await.unwrap_err().assert_error(401, "unauthorized");
    api.sse_with(Some(&unsigned_token("bob")), SseOptions::default())
        .await
        .unwrap_err()
        .assert_error(401, "unauthorized");

    // Bob's events reach bob only.
    let bm = api.mutual_match("bob", "dave").await;
    assert_eq!(bob_ws.recv_event("match", TIMEOUT).await["data"]["match"], bm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for spy in [&spy_ws, &spy_sse] {
        assert!(
            spy.events().iter().all(|e| e["type"] != "match" || e["data"]["match"]["users"][0] == "alice"),
            "{:?}",
            spy.frames()
        );
        assert!(
            !spy.events().iter().any(|e| e["data"]["match"] == bm),
            "alice's stream got bob's match: {:?}",
            spy.frames()
        );
    }
    server.shutdown().await;
}

#[actix_rt::test]
async fn ids_with_a_slot_out_of_range_are_not_found_and_break_nothing() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let alice = api.token("alice").await;
    let ws = api.ws(&alice).await;
    ws.recv_event("hello", TIMEOUT).await;
    for id in ["16383.x", "16384.x", "16384.", "65535.abc", "65536.abc", "99999999999999999999.x", "-1.x", "x.y"] {
        api.delete(&format!("/v1/matches/{id}"), &alice).await.assert_error(404, "not_found");
        let skip = api.post_json(&format!("/v1/rooms/{id}/skip"), Some(&alice), &json!({})).await;
        skip.assert_error(404, "not_found");
        // The same over the WebSocket: an error frame, and the socket stays open.
        for frame in [json!({"type": "unmatch", "match_id": id}), json!({"type": "skip", "room_id": id})] {
            let reply = ws.request(frame.clone()).await;
            assert_eq!(reply["type"], "error", "{frame}: {reply}");
            assert_eq!(reply["data"]["code"], "not_found", "{frame}: {reply}");
        }
    }
    assert!(ws.is_closed().is_none(), "the WebSocket was closed: {:?}", ws.is_closed());
    assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");
    server.shutdown().await;
}
