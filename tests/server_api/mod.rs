//! The server API (`/v1/server/*`, for the app's own backend) with real servers and clients:
//! a published event reaches every connection of each listed user once with the next id, an
//! offline user on connect, and the same key again adds nothing (I2, I3), also across a kill -9
//! with Redis (I7) and across the nodes of a cluster behind nginx; bad requests answer the
//! contract's errors and publish nothing; the users endpoint tells place, matches, connections and
//! the last event id; closing a room tells both members once and requeues only when asked (I5).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use awc::http::{header, Method};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::common::clients::Reply;
use crate::common::cluster::{Backing, Cluster};
use crate::common::process::MatchdProcess;
use crate::common::redis::RedisServer;
use crate::common::{self, bounded, Api, Conn, TestServer, WsOptions, TIMEOUT};

/// The server API's key in dev mode.
const DEV_KEY: &str = "dev-api-key";
/// How long to keep listening for a duplicate after the expected events arrived.
const GRACE: Duration = Duration::from_millis(300);

/// A server-API request with `key` in `X-Api-Key` (none: no header) and a JSON body.
async fn server_call(api: &Api, method: Method, path: &str, key: Option<&str>, body: Option<&Value>) -> Reply {
    let mut req = api.request(method, path);
    if let Some(key) = key {
        req = req.insert_header(("X-Api-Key", key));
    }
    match body {
        Some(body) => {
            let req = req.insert_header((header::CONTENT_TYPE, "application/json"));
            api.send(req, Some(Bytes::from(body.to_string()))).await
        }
        None => api.send(req, None).await,
    }
}

async fn publish(api: &Api, body: &Value) -> Reply {
    server_call(api, Method::POST, "/v1/server/publish", Some(DEV_KEY), Some(body)).await
}

/// `GET /v1/server/users/{user}` with the dev key: the 200 body.
async fn inspect(api: &Api, user: &str) -> Value {
    server_call(api, Method::GET, &format!("/v1/server/users/{user}"), Some(DEV_KEY), None).await.ok()
}

/// Asks the users endpoint until `check` holds (what it waits for happens soon after an answer).
async fn inspect_until(api: &Api, user: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let view = inspect(api, user).await;
        if check(&view) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{user}: not {what} within {TIMEOUT:?}: {view}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test server whose users may join queues as often as the tests need.
async fn spin_server() -> TestServer {
    let mut config = common::config();
    config.limits.joins_per_minute = 1000;
    TestServer::start(config).await
}

async fn close_room(api: &Api, room_id: &str, body: Option<&Value>) -> Reply {
    server_call(api, Method::POST, &format!("/v1/server/rooms/{room_id}/close"), Some(DEV_KEY), body).await
}

/// The events of type `kind` `conn` received.
fn of_type(conn: &Conn, kind: &str) -> Vec<Value> {
    conn.events().into_iter().filter(|e| e["type"] == kind).collect()
}

/// Waits for `n` events of `kind` on every connection, lets duplicates arrive, then checks each
/// has exactly `n`; returns each connection's events of that kind.
async fn exactly(conns: &[&Conn], kind: &str, n: usize) -> Vec<Vec<Value>> {
    for c in conns {
        c.wait_events(kind, n, TIMEOUT).await;
    }
    actix_rt::time::sleep(GRACE).await;
    conns
        .iter()
        .map(|c| {
            let got = of_type(c, kind);
            assert_eq!(got.len(), n, "{c:?}: {n} {kind:?} expected, got {got:?}");
            got
        })
        .collect()
}

/// A WebSocket of `token`'s user after its `hello`.
async fn ws(api: &Api, token: &str) -> Conn {
    let conn = api.ws(token).await;
    conn.recv_event("hello", TIMEOUT).await;
    conn
}

/// An SSE stream of `token`'s user after its `hello`.
async fn sse(api: &Api, token: &str) -> Conn {
    let conn = api.sse(token).await;
    conn.recv_event("hello", TIMEOUT).await;
    conn
}

#[actix_rt::test]
async fn a_published_event_reaches_every_connection_once_and_an_offline_user_on_connect() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let alice = api.token("pub-alice").await;
    let tabs = [ws(&api, &alice).await, ws(&api, &alice).await, sse(&api, &alice).await];
    // Alice already has an event (a match), so the published one must take the next id.
    api.mutual_match("pub-alice", "pub-carol").await;
    for t in &tabs {
        t.recv_event("match", TIMEOUT).await;
    }
    let before = tabs[0].last_id();

    let data = json!({"score": 0.93, "why": "likes \"jazz\"\nand tea", "ids": [1, 2, {"deep": true}]});
    let body = json!({
        "users": ["pub-alice", "pub-bob", "pub-alice"],
        "type": "match_result",
        "data": data,
        "key": "job-1",
    });
    let first = publish(&api, &body).await;
    assert_eq!(first.ok(), json!({"status": "published", "users": 2}), "duplicates count once");
    let got = exactly(&tabs.iter().collect::<Vec<_>>(), "match_result", 1).await;
    for events in &got {
        assert_eq!(events[0], json!({"id": before + 1, "type": "match_result", "data": data}));
    }

    // Bob was offline: his stream has it from the start, and a new connection is told its id.
    let bob = api.token("pub-bob").await;
    let resumed = api.ws_with(&bob, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    let later = sse(&api, &bob).await;
    assert_eq!(later.events()[0]["data"]["last_id"], 1, "{:?}", later.events());
    let got = exactly(&[&resumed], "match_result", 1).await;
    assert_eq!(got[0][0], json!({"id": 1, "type": "match_result", "data": data}));

    // The same key again: the same answer, nothing new anywhere.
    let again = publish(&api, &body).await;
    assert_eq!(again.ok(), first.ok());
    let again_bob_only = publish(&api, &json!({"users": ["pub-bob"], "type": "match_result", "key": "job-1"})).await;
    assert_eq!(again_bob_only.ok(), json!({"status": "published", "users": 1}));
    actix_rt::time::sleep(GRACE).await;
    for c in tabs.iter().chain([&resumed]) {
        assert_eq!(of_type(c, "match_result").len(), 1, "{c:?}: a repeat was delivered: {:?}", c.events());
    }
    assert_eq!(later.events().len(), 1, "opened after the publish, not resuming: only its hello");
    assert_eq!(inspect(&api, "pub-alice").await["last_event_id"], before + 1);
    assert_eq!(inspect(&api, "pub-bob").await["last_event_id"], 1);

    // Another key is another event, with the next id, on every connection.
    let next = json!({"users": ["pub-alice"], "type": "match_result.v2", "key": "job-2"});
    publish(&api, &next).await.ok();
    let got = exactly(&tabs.iter().collect::<Vec<_>>(), "match_result.v2", 1).await;
    for events in &got {
        assert_eq!(events[0], json!({"id": before + 2, "type": "match_result.v2", "data": {}}));
    }
    for t in &tabs {
        let ids: Vec<u64> = t.events().iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{t:?}: ids not increasing: {ids:?}");
    }
    let metrics = api.send(api.request(Method::GET, "/metrics"), None).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("matchd_server_publish_total"));
    server.shutdown().await;
}

#[actix_rt::test]
async fn bad_server_api_requests_answer_the_contract_errors_and_publish_nothing() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let victim = api.token("bad-victim").await;
    let conn = ws(&api, &victim).await;
    let ok_body = json!({"users": ["bad-victim"], "type": "match_result", "data": {}});
    let post = |key: Option<&'static str>, body: Value| {
        let api = api.clone();
        async move { server_call(&api, Method::POST, "/v1/server/publish", key, Some(&body)).await }
    };

    // The key: missing, wrong, or a user's token (as a bearer, or as the key itself).
    post(None, ok_body.clone()).await.assert_error(401, "unauthorized");
    post(Some("not-the-key-at-all"), ok_body.clone()).await.assert_error(401, "unauthorized");
    let bearer = api
        .request(Method::POST, "/v1/server/publish")
        .bearer_auth(&victim)
        .insert_header((header::CONTENT_TYPE, "application/json"));
    api.send(bearer, Some(Bytes::from(ok_body.to_string()))).await.assert_error(401, "unauthorized");
    let jwt_as_key = server_call(&api, Method::POST, "/v1/server/publish", Some(&victim), Some(&ok_body)).await;
    jwt_as_key.assert_error(401, "unauthorized");
    server_call(&api, Method::GET, "/v1/server/users/bad-victim", None, None).await.assert_error(401, "unauthorized");
    // A bad body without the key is still a 401: nothing about the body is told.
    post(None, json!([1])).await.assert_error(401, "unauthorized");

    // Types: uppercase, built-in, too long.
    let with_type = |t: &str| json!({"users": ["bad-victim"], "type": t});
    for t in ["Match_Result".to_string(), "match".into(), "room_closed".into(), "hello".into(), "x".repeat(65)] {
        post(Some(DEV_KEY), with_type(&t)).await.assert_error(400, "bad_request");
    }
    post(Some(DEV_KEY), json!({"users": ["bad-victim"]})).await.assert_error(400, "bad_request");
    // Users: none, too many, a bad id.
    post(Some(DEV_KEY), json!({"users": [], "type": "t"})).await.assert_error(400, "bad_request");
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    post(Some(DEV_KEY), json!({"users": many, "type": "t"})).await.assert_error(400, "bad_request");
    post(Some(DEV_KEY), json!({"users": ["bad-victim", "bad id"], "type": "t"}))
        .await
        .assert_error(400, "invalid_user");
    // Bodies: too large, not an object, data not an object, unknown fields.
    let huge = json!({"users": ["bad-victim"], "type": "t", "data": {"blob": "x".repeat(20_000)}});
    post(Some(DEV_KEY), huge).await.assert_error(413, "payload_too_large");
    post(Some(DEV_KEY), json!(["bad-victim"])).await.assert_error(400, "bad_request");
    post(Some(DEV_KEY), json!({"users": ["bad-victim"], "type": "t", "data": [1]}))
        .await
        .assert_error(400, "bad_request");
    post(Some(DEV_KEY), json!({"users": ["bad-victim"], "type": "t", "data": "x"}))
        .await
        .assert_error(400, "bad_request");
    post(Some(DEV_KEY), json!({"users": ["bad-victim"], "type": "t", "as": "x"}))
        .await
        .assert_error(400, "bad_request");
    server_call(&api, Method::GET, "/v1/server/users/bad!id", Some(DEV_KEY), None)
        .await
        .assert_error(400, "invalid_user");
    server_call(&api, Method::GET, "/v1/server/nothing", Some(DEV_KEY), None).await.assert_error(404, "not_found");

    // Nothing of it reached the log.
    actix_rt::time::sleep(GRACE).await;
    assert_eq!(conn.events().len(), 1, "only the hello: {:?}", conn.events());
    let view = inspect(&api, "bad-victim").await;
    assert_eq!(view["last_event_id"], 0, "{view}");
    // And the good request does work, so the refusals above were about what they changed.
    post(Some(DEV_KEY), ok_body).await.ok();
    exactly(&[&conn], "match_result", 1).await;
    server.shutdown().await;
}

#[actix_rt::test]
async fn the_server_api_is_off_without_a_key_unless_in_dev_mode() {
    let _trace = common::trace_init();
    let secret = "a-real-secret-0123456789";
    let mut config = common::config();
    config.jwt_secret = Some(secret.into());
    let off = TestServer::start(config.clone()).await;
    let api = off.api();
    let body = json!({"users": ["a"], "type": "t"});
    for key in [None, Some(DEV_KEY)] {
        server_call(&api, Method::POST, "/v1/server/publish", key, Some(&body)).await.assert_error(404, "not_found");
        server_call(&api, Method::GET, "/v1/server/users/a", key, None).await.assert_error(404, "not_found");
        server_call(&api, Method::POST, "/v1/server/rooms/1.ab/close", key, None).await.assert_error(404, "not_found");
    }
    off.shutdown().await;

    config.api_key = Some("the-backend-key-0123".into());
    let on = TestServer::start(config).await;
    let api = on.api();
    let token = common::clients::sign_token(&json!({"sub": "a", "exp": common::clients::unix_secs() + 60}), secret);
    server_call(&api, Method::POST, "/v1/server/publish", Some(DEV_KEY), Some(&body))
        .await
        .assert_error(401, "unauthorized");
    server_call(&api, Method::POST, "/v1/server/publish", Some(&token), Some(&body))
        .await
        .assert_error(401, "unauthorized");
    let ok = server_call(&api, Method::POST, "/v1/server/publish", Some("the-backend-key-0123"), Some(&body)).await;
    assert_eq!(ok.ok(), json!({"status": "published", "users": 1}));
    on.shutdown().await;
}

#[actix_rt::test]
async fn the_users_endpoint_tells_place_matches_connections_and_last_event_id() {
    let _trace = common::trace_init();
    let server = spin_server().await;
    let api = server.api();
    let idle =
        json!({"user": "insp-nobody", "place": {"state": "idle"}, "matches": 0, "connections": 0, "last_event_id": 0});
    assert_eq!(inspect(&api, "insp-nobody").await, idle);

    let (t1, t2) = (api.token("insp-1").await, api.token("insp-2").await);
    let a = ws(&api, &t1).await;
    let b = sse(&api, &t1).await;
    let c = ws(&api, &t2).await;
    api.mutual_match("insp-1", "insp-3").await;
    a.recv_event("match", TIMEOUT).await;
    b.recv_event("match", TIMEOUT).await;
    let view = inspect(&api, "insp-1").await;
    assert_eq!(
        view,
        json!({"user": "insp-1", "place": {"state": "idle"}, "matches": 1, "connections": 2, "last_event_id": 1})
    );

    let queued = api.post_json("/v1/queue", Some(&t1), &json!({"pool": "insp"})).await;
    assert_eq!(queued.status.as_u16(), 202, "{queued:?}");
    assert_eq!(inspect(&api, "insp-1").await["place"], json!({"state": "queued", "pool": "insp"}));
    let paired = api.post_json("/v1/queue", Some(&t2), &json!({"pool": "insp"})).await.ok();
    let room_id = paired["room"]["room_id"].as_str().unwrap().to_string();
    a.recv_event("room_assigned", TIMEOUT).await;
    c.recv_event("room_assigned", TIMEOUT).await;
    for user in ["insp-1", "insp-2"] {
        let view = inspect(&api, user).await;
        assert_eq!(view["place"], json!({"state": "in_room", "pool": "insp", "room_id": room_id}), "{user}: {view}");
    }
    let view = inspect(&api, "insp-1").await;
    assert_eq!((view["matches"].clone(), view["last_event_id"].clone()), (json!(1), json!(2)), "{view}");

    // A closed stream stops counting (a WebSocket: its close is seen at once).
    a.close().await;
    inspect_until(&api, "insp-1", "a closed stream no longer counted", |v| v["connections"] == 1).await;
    server.shutdown().await;
}

/// Two connected users put in one room of `pool`; their room id.
async fn room_of(api: &Api, pool: &str, a: (&str, &Conn), b: (&str, &Conn)) -> String {
    let queued = api.post_json("/v1/queue", Some(a.0), &json!({"pool": pool})).await;
    assert_eq!(queued.status.as_u16(), 202, "{queued:?}");
    let paired = api.post_json("/v1/queue", Some(b.0), &json!({"pool": pool})).await.ok();
    a.1.recv_event("room_assigned", TIMEOUT).await;
    b.1.recv_event("room_assigned", TIMEOUT).await;
    paired["room"]["room_id"].as_str().unwrap().to_string()
}

#[actix_rt::test]
async fn closing_a_room_tells_both_members_once_and_requeues_only_when_asked() {
    let _trace = common::trace_init();
    let server = spin_server().await;
    let api = server.api();
    let mut users = Vec::new();
    for u in ["close-a", "close-b", "close-c", "close-d"] {
        let token = api.token(u).await;
        let conn = ws(&api, &token).await;
        users.push((u, token, conn));
    }
    let [(ua, ta, ca), (ub, tb, cb), (uc, tc, cc), (ud, td, cd)] = &users[..] else { unreachable!() };

    // Closed without a body: both hear it once, both idle.
    let room = room_of(&api, "closing", (ta, ca), (tb, cb)).await;
    assert_eq!(close_room(&api, &room, None).await.ok(), json!({"status": "closed"}));
    let got = exactly(&[ca, cb], "room_closed", 1).await;
    for events in got {
        assert_eq!(events[0]["data"], json!({"room_id": room, "reason": "closed_by_server"}));
    }
    for user in [ua, ub] {
        assert_eq!(inspect(&api, user).await["place"], json!({"state": "idle"}), "{user}");
    }
    // Again: the same answer, nothing sent.
    assert_eq!(close_room(&api, &room, Some(&json!({"requeue": true}))).await.ok(), json!({"status": "closed"}));
    exactly(&[ca, cb], "room_closed", 1).await;
    assert_eq!(inspect(&api, ua).await["place"], json!({"state": "idle"}), "a repeat requeued nobody");
    // A member's own skip of the closed room changes nothing either.
    let skip = api.post_json(&format!("/v1/rooms/{room}/skip"), Some(ta), &json!({})).await.ok();
    assert_eq!(skip, json!({"status": "skipped", "requeued": false}));

    // Closed with requeue: both back in line (the pool does not pair them again at once).
    let room = room_of(&api, "closing2", (tc, cc), (td, cd)).await;
    let closed = close_room(&api, &room, Some(&json!({"requeue": true}))).await;
    assert_eq!(closed.ok(), json!({"status": "closed"}));
    let got = exactly(&[cc, cd], "room_closed", 1).await;
    assert_eq!(got[0][0]["data"]["reason"], "closed_by_server");
    for user in [uc, ud] {
        let requeued = |v: &Value| v["place"] == json!({"state": "queued", "pool": "closing2"});
        inspect_until(&api, user, "requeued", requeued).await;
    }

    // Unknown rooms, malformed ids and slots no id can carry: 404, and the server stays up.
    for id in ["5.00000000000000000000000000000000", "16384.x", "65535.x", "99999.x", "nodot", "7."] {
        close_room(&api, id, None).await.assert_error(404, "not_found");
    }
    close_room(&api, &room, Some(&json!({"requeue": "yes"}))).await.assert_error(400, "bad_request");
    server.shutdown().await;
}

fn user(i: usize) -> String {
    format!("dur-{i}")
}

/// Publish `i` of the durability test: to `dur-<i>` and to `dur-all`, with key `job-<i>`.
fn body(i: usize) -> Value {
    json!({"users": [user(i), "dur-all"], "type": "job.done", "data": {"n": i}, "key": format!("job-{i}")})
}

#[actix_rt::test]
async fn acknowledged_publishes_survive_kill_9_and_a_retry_with_the_key_adds_nothing() {
    let _trace = common::trace_init();
    const USERS: usize = 300;
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let alice = api.token("dur-all").await;
    let live = ws(&api, &alice).await;

    // Publishes (each to one user and to dur-all), many at once, until the process is killed.
    let acked: Rc<RefCell<Vec<usize>>> = Rc::default();
    let load = {
        let (api, acked) = (api.clone(), acked.clone());
        actix_rt::spawn(async move {
            bounded(
                16,
                (0..USERS).map(|i| {
                    let (api, acked) = (api.clone(), acked.clone());
                    async move {
                        let req = api
                            .request(Method::POST, "/v1/server/publish")
                            .insert_header(("X-Api-Key", DEV_KEY))
                            .insert_header((header::CONTENT_TYPE, "application/json"))
                            .timeout(Duration::from_secs(5));
                        if let Ok(mut res) = req.send_body(body(i).to_string()).await {
                            if res.status().as_u16() == 200 && res.body().await.is_ok() {
                                acked.borrow_mut().push(i);
                            }
                        }
                    }
                }),
            )
            .await;
        })
    };
    while acked.borrow().len() < USERS / 3 {
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    node.kill9();
    load.await.unwrap();
    let acked_before: BTreeSet<usize> = acked.borrow().iter().copied().collect();
    assert!(acked_before.len() < USERS, "the kill came after the load; nothing was tested");
    drop(live);
    node.restart();

    // Every acknowledged publish is in both of its users' logs.
    for &i in &acked_before {
        let view = inspect(&api, &user(i)).await;
        assert_eq!(view["last_event_id"], 1, "acknowledged publish {i} was lost: {view}");
    }
    let all = api.ws_with(&alice, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    let hello = all.recv_event("hello", TIMEOUT).await;
    let stored = hello["data"]["last_id"].as_u64().unwrap() as usize;
    assert!(stored >= acked_before.len(), "dur-all has {stored} events, {} acknowledged", acked_before.len());
    let replayed = all.wait_events("job.done", stored, TIMEOUT).await;
    let ns: Vec<usize> = replayed.iter().map(|e| e["data"]["n"].as_u64().unwrap() as usize).collect();
    assert!(acked_before.iter().all(|i| ns.contains(i)), "dur-all lost an acknowledged publish: {ns:?}");

    // Every publish again with its key (acknowledged or not): each user ends with it exactly once.
    let answers = bounded(
        16,
        (0..USERS).map(|i| {
            let api = api.clone();
            async move { (i, publish(&api, &body(i)).await) }
        }),
    )
    .await;
    for (i, reply) in answers {
        assert_eq!(reply.ok(), json!({"status": "published", "users": 2}), "retry {i}");
    }
    for i in 0..USERS {
        let view = inspect(&api, &user(i)).await;
        assert_eq!(view["last_event_id"], 1, "user {i} after the retries: {view}");
    }
    exactly(&[&all], "job.done", USERS).await;
    let ids: Vec<u64> = all.events().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing: {ids:?}");
    let mut ns: Vec<u64> = of_type(&all, "job.done").iter().map(|e| e["data"]["n"].as_u64().unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..USERS as u64).collect::<Vec<_>>(), "every publish once");

    // And once more after a second restart: the keys are still in the stored logs.
    node.restart();
    let again = publish(&api, &body(0)).await;
    assert_eq!(again.ok(), json!({"status": "published", "users": 2}));
    assert_eq!(inspect(&api, "dur-all").await["last_event_id"], USERS as u64);
    assert_eq!(inspect(&api, &user(0)).await["last_event_id"], 1);
}

#[actix_rt::test]
async fn a_room_closed_by_the_server_stays_closed_after_kill_9() {
    let _trace = common::trace_init();
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let (ta, tb) = (api.token("rk-a").await, api.token("rk-b").await);
    let (ca, cb) = (ws(&api, &ta).await, ws(&api, &tb).await);
    let room = room_of(&api, "rk", (&ta, &ca), (&tb, &cb)).await;
    assert_eq!(close_room(&api, &room, None).await.ok(), json!({"status": "closed"}));
    exactly(&[&ca, &cb], "room_closed", 1).await;
    drop((ca, cb));
    node.kill9();
    node.restart();
    assert_eq!(close_room(&api, &room, None).await.ok(), json!({"status": "closed"}));
    for t in [&ta, &tb] {
        let conn = api.ws_with(t, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
        let got = exactly(&[&conn], "room_closed", 1).await;
        assert_eq!(got[0][0]["data"]["reason"], "closed_by_server");
    }
}

#[actix_rt::test]
async fn published_events_reach_users_owned_by_different_nodes_once_through_nginx() {
    let _trace = common::trace_init();
    const USERS: usize = 12;
    let cluster = Cluster::start_on(3, Backing::Redis).await;
    let lb = cluster.lb();
    let names: Vec<String> = (0..USERS).map(|i| format!("cl-pub-{i}")).collect();
    let mut conns: Vec<(String, Vec<Conn>)> = Vec::new();
    let mut owners: HashMap<String, String> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let token = lb.token(name).await;
        let first = ws(&lb, &token).await;
        let owner = first.events()[0]["data"]["node"].as_str().unwrap().to_string();
        owners.insert(name.clone(), owner);
        let mut tabs = vec![first];
        if i % 3 == 0 {
            tabs.push(sse(&lb, &token).await);
        }
        conns.push((name.clone(), tabs));
    }
    let distinct: BTreeSet<&String> = owners.values().collect();
    assert!(distinct.len() >= 2, "every user is owned by one node ({owners:?}): nothing crosses nodes");

    let body = json!({"users": names, "type": "match_result", "data": {"batch": 7}, "key": "cl-job"});
    let first = publish(&cluster.api(0), &body).await;
    assert_eq!(first.ok(), json!({"status": "published", "users": USERS}));
    let all: Vec<&Conn> = conns.iter().flat_map(|(_, tabs)| tabs.iter()).collect();
    for events in exactly(&all, "match_result", 1).await {
        assert_eq!(events[0]["data"], json!({"batch": 7}));
    }
    // A retry through another node with the same key: same answer, nothing new.
    let again = publish(&cluster.api(1), &body).await;
    assert_eq!(again.ok(), first.ok());
    exactly(&all, "match_result", 1).await;
    for (name, tabs) in &conns {
        let view = inspect(&lb, name).await;
        let last = tabs[0].last_id();
        assert_eq!(view["last_event_id"], last, "{name}: {view}");
        assert_eq!(view["connections"], tabs.len(), "{name} (owned by {}): {view}", owners[name]);
    }
}

#[actix_rt::test]
async fn rooms_close_and_users_are_inspected_through_any_node_of_a_cluster() {
    let _trace = common::trace_init();
    let cluster = Cluster::start_on(3, Backing::Redis).await;
    let lb = cluster.lb();
    let (ta, tb) = (lb.token("cl-room-a").await, lb.token("cl-room-b").await);
    let (ca, cb) = (ws(&lb, &ta).await, ws(&lb, &tb).await);
    let room = room_of(&lb, "cl-close", (&ta, &ca), (&tb, &cb)).await;
    for i in 0..3 {
        let view = inspect(&cluster.api(i), "cl-room-a").await;
        assert_eq!(view["place"]["room_id"], room.as_str(), "node {i}: {view}");
    }
    assert_eq!(
        close_room(&cluster.api(2), &room, Some(&json!({"requeue": false}))).await.ok(),
        json!({"status": "closed"})
    );
    assert_eq!(close_room(&cluster.api(0), &room, None).await.ok(), json!({"status": "closed"}));
    for events in exactly(&[&ca, &cb], "room_closed", 1).await {
        assert_eq!(events[0]["data"]["reason"], "closed_by_server");
    }
    close_room(&cluster.api(1), "16384.x", None).await.assert_error(404, "not_found");
}
