//! Event streams: WebSocket and SSE carry the same per-user stream, resume replays what was missed
//! (and reports a gap past the log), WebSocket actions are acknowledged with the HTTP body, dead
//! connections are closed by the heartbeat, and the per-user connection limit holds.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{self, Conn, SseOptions, TestServer, WsOptions, TIMEOUT};

/// The events of `conn` after its `hello`.
fn after_hello(conn: &Conn) -> Vec<Value> {
    let events = conn.events();
    assert_eq!(events[0]["type"], "hello", "{conn:?}: {events:?}");
    events[1..].to_vec()
}

fn ids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

fn assert_increasing(conn: &Conn) {
    let ids = ids(&conn.events());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{conn:?}: ids not strictly increasing: {ids:?}");
}

#[actix_rt::test]
async fn a_resumed_websocket_gets_what_it_missed_in_order_then_live_events() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let alice = api.token("alice").await;
    // A second tab stays open throughout: the reference for what alice's stream holds.
    let stay = api.ws(&alice).await;
    stay.recv_event("hello", TIMEOUT).await;

    let ws = api.ws(&alice).await;
    let hello = ws.recv_event("hello", TIMEOUT).await;
    assert_eq!(hello["data"]["gap"], false);
    let m1 = api.mutual_match("alice", "bob1").await;
    assert_eq!(ws.recv_event("match", TIMEOUT).await["data"]["match"], m1);
    let last_seen = ws.last_id();
    ws.close().await;

    // While alice is away: two matches and an unmatch.
    api.mutual_match("alice", "bob2").await;
    api.mutual_match("bob3", "alice").await;
    let bob1 = api.token("bob1").await;
    api.unmatch(&bob1, m1["match_id"].as_str().unwrap()).await.ok();
    stay.wait_for(TIMEOUT, "4 events", |f| (f.iter().filter(|e| e.get("id").is_some()).count() == 5).then_some(()))
        .await;
    let missed: Vec<Value> = after_hello(&stay).into_iter().filter(|e| e["id"].as_u64().unwrap() > last_seen).collect();
    assert_eq!(missed.len(), 3, "{missed:?}");

    let back = api.ws_with(&alice, WsOptions { since: Some(last_seen), ..Default::default() }).await.unwrap();
    let hello = back.recv_event("hello", TIMEOUT).await;
    assert_eq!(hello["data"]["user"], "alice");
    assert_eq!(hello["data"]["gap"], false, "{hello}");
    assert_eq!(hello["data"]["resumed_from"], last_seen, "{hello}");
    assert_eq!(hello["data"]["last_id"], stay.last_id(), "{hello}");
    back.wait_for(TIMEOUT, "the missed events", |f| (f.len() > missed.len()).then_some(())).await;

    // Then live events.
    let m4 = api.mutual_match("alice", "bob4").await;
    let live = back.wait_for(TIMEOUT, "the live match", |f| f.iter().find(|e| e["data"]["match"] == m4).cloned()).await;
    stay.wait_for(TIMEOUT, "the live event", |f| f.iter().any(|e| e["data"]["match"] == m4).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut expected = missed.clone();
    expected.push(stay.events().last().unwrap().clone());
    assert_eq!(after_hello(&back), expected, "replay then live, each once, in order");
    assert!(ids(&after_hello(&back)).iter().all(|&id| id > last_seen), "resume repeated an event it already had");
    assert_increasing(&back);
    assert_increasing(&stay);
    // The replayed events are the very events the other tab got live.
    assert_eq!(after_hello(&stay).last().unwrap(), &live);
    server.shutdown().await;
}

#[actix_rt::test]
async fn resuming_past_the_event_log_reports_a_gap() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.limits.event_log_capacity = 3;
    let server = TestServer::start(config).await;
    let api = server.api();
    let alice = api.token("alice").await;

    // A second tab stays open throughout, to know when every event is in the log.
    let stay = api.ws(&alice).await;
    stay.recv_event("hello", TIMEOUT).await;
    let ws = api.ws(&alice).await;
    ws.recv_event("hello", TIMEOUT).await;
    api.mutual_match("alice", "bob1").await;
    ws.recv_event("match", TIMEOUT).await;
    let last_seen = ws.last_id();
    ws.close().await;

    // Five more events while away: the log keeps only the newest three.
    let mut made = Vec::new();
    for i in 2..=6 {
        made.push(api.mutual_match("alice", &format!("bob{i}")).await);
    }
    stay.wait_events("match", 6, TIMEOUT).await;
    assert_eq!(stay.last_id(), last_seen + 5);

    let back = api.ws_with(&alice, WsOptions { since: Some(last_seen), ..Default::default() }).await.unwrap();
    let hello = back.recv_event("hello", TIMEOUT).await;
    assert_eq!(
        hello["data"]["gap"],
        true,
        "events {} and {} were dropped from the log: {hello}",
        last_seen + 1,
        last_seen + 2
    );
    assert_eq!(hello["data"]["resumed_from"], last_seen);
    // What is still there is replayed, in order.
    back.wait_for(TIMEOUT, "the retained events", |f| (f.len() >= 4).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let replayed = after_hello(&back);
    assert_eq!(ids(&replayed), vec![last_seen + 3, last_seen + 4, last_seen + 5], "{replayed:?}");
    let replayed_matches: Vec<Value> = replayed.iter().map(|e| e["data"]["match"].clone()).collect();
    assert_eq!(replayed_matches, made[2..].to_vec());
    assert_increasing(&back);

    // A resume point inside the log has no gap.
    let inside = api.ws_with(&alice, WsOptions { since: Some(last_seen + 3), ..Default::default() }).await.unwrap();
    let hello = inside.recv_event("hello", TIMEOUT).await;
    assert_eq!(hello["data"]["gap"], false, "{hello}");
    inside.wait_for(TIMEOUT, "2 events", |f| (f.len() >= 3).then_some(())).await;
    assert_eq!(ids(&after_hello(&inside)), vec![last_seen + 4, last_seen + 5]);
    server.shutdown().await;
}

#[actix_rt::test]
async fn sse_carries_the_same_stream_as_websocket_and_resumes_with_last_event_id() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let alice = api.token("alice").await;
    let ws = api.ws(&alice).await;
    let sse = api.sse(&alice).await;
    let ws_hello = ws.recv_event("hello", TIMEOUT).await;
    let sse_hello = sse.recv_event("hello", TIMEOUT).await;
    assert_eq!(sse_hello, ws_hello);

    let m1 = api.mutual_match("alice", "bob1").await;
    api.mutual_match("bob2", "alice").await;
    let bob1 = api.token("bob1").await;
    api.unmatch(&bob1, m1["match_id"].as_str().unwrap()).await.ok();
    for conn in [&ws, &sse] {
        conn.wait_for(TIMEOUT, "3 events", |f| (f.len() >= 4).then_some(())).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Same ids, types and data (the SSE client also checked `id:` and `event:` against the data).
    assert_eq!(sse.events(), ws.events());
    let types: Vec<Value> = ws.events().iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, vec![json!("hello"), json!("match"), json!("match"), json!("unmatched")]);
    assert_increasing(&sse);

    // Last-Event-ID resumes after that event, like `?since=` (token in the header this time).
    let first_id = after_hello(&ws)[0]["id"].as_u64().unwrap();
    let opts = SseOptions { last_event_id: Some(first_id.to_string()), bearer: true, ..Default::default() };
    let resumed = api.sse_with(Some(&alice), opts).await.unwrap();
    let hello = resumed.recv_event("hello", TIMEOUT).await;
    assert_eq!(hello["data"]["gap"], false, "{hello}");
    assert_eq!(hello["data"]["resumed_from"], first_id, "{hello}");
    resumed.wait_for(TIMEOUT, "2 replayed events", |f| (f.len() >= 3).then_some(())).await;

    // And all three get the next live event.
    api.mutual_match("alice", "bob3").await;
    for conn in [&ws, &sse, &resumed] {
        conn.wait_for(TIMEOUT, "the live match", |f| {
            f.iter().any(|e| e["data"]["match"]["users"][1] == "bob3").then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let expected: Vec<Value> = after_hello(&ws).into_iter().filter(|e| e["id"].as_u64().unwrap() > first_id).collect();
    assert_eq!(after_hello(&resumed), expected);
    assert_eq!(sse.events(), ws.events());
    server.shutdown().await;
}

#[actix_rt::test]
async fn websocket_actions_are_acked_with_the_http_body() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let (alice, bob) = (api.token("alice").await, api.token("bob").await);
    let ws = api.ws_with(&alice, WsOptions { bearer: true, ..Default::default() }).await.unwrap();
    let hello = ws.recv_event("hello", TIMEOUT).await;
    assert_eq!(hello["data"]["user"], "alice");

    let ack = ws
        .request_with_ref(
            json!({"type": "swipe", "target": "bob", "direction": "right", "swipe_id": "k1", "ref": "r1"}),
            json!("r1"),
        )
        .await;
    assert_eq!(ack, json!({"type": "ack", "ref": "r1", "data": {"status": "pending", "match": null}}));
    // The same swipe_id over HTTP replays the very same body.
    assert_eq!(api.swipe(&alice, "bob", "right", Some("k1")).await.ok(), ack["data"]);

    let matched = api.swipe(&bob, "alice", "right", None).await.ok();
    assert_eq!(matched["status"], "matched");
    let ack =
        ws.request_with_ref(json!({"type": "swipe", "target": "bob", "direction": "right", "ref": 2}), json!(2)).await;
    assert_eq!(ack, json!({"type": "ack", "ref": 2, "data": matched}));
    assert_eq!(ws.recv_event("match", TIMEOUT).await["data"]["match"], matched["match"]);

    // ping -> pong, with and without a ref.
    ws.send_text(r#"{"type":"ping"}"#);
    ws.recv_event("pong", TIMEOUT).await;
    let pong = ws.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");

    // A bad frame is answered with an error carrying its ref; the connection stays usable.
    let err = ws.request_with_ref(json!({"type": "fly", "ref": "r3"}), json!("r3")).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["data"]["code"], "bad_request", "{err}");
    assert_eq!(err["data"]["ref"], "r3", "{err}");
    assert!(err["data"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{err}");
    let err = ws
        .request_with_ref(json!({"type": "swipe", "target": "alice", "direction": "right", "ref": "r4"}), json!("r4"))
        .await;
    assert_eq!((err["type"].as_str(), err["data"]["code"].as_str()), (Some("error"), Some("self_swipe")), "{err}");
    assert_eq!(err["data"]["ref"], "r4", "{err}");
    ws.send_text("this is not json");
    let err = ws
        .wait_for(TIMEOUT, "an error without ref", |f| {
            f.iter().find(|f| f["type"] == "error" && f["data"]["ref"].is_null()).cloned()
        })
        .await;
    assert_eq!(err["data"]["code"], "bad_request", "{err}");
    let pong = ws.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    assert!(ws.is_closed().is_none());
    server.shutdown().await;
}

#[actix_rt::test]
async fn websocket_action_errors_use_the_http_error_codes() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let alice = api.token("alice").await;
    let ws = api.ws(&alice).await;
    ws.recv_event("hello", TIMEOUT).await;
    let cases = [
        json!({"target": "bad id!", "direction": "right"}),
        json!({"target": "", "direction": "right"}),
        json!({"target": "x".repeat(65), "direction": "right"}),
        json!({"target": "alice", "direction": "right"}),
        json!({"target": "bob", "direction": "up"}),
        json!({"target": "bob", "direction": "right", "from": "carol"}),
    ];
    let mut differ = Vec::new();
    for body in cases {
        let http = api.post_json("/v1/swipes", Some(&alice), &body).await;
        let http_code = http.json()["error"]["code"].clone();
        assert!(http_code.is_string(), "{http:?}");
        let mut frame = body.clone();
        frame["type"] = json!("swipe");
        let reply = ws.request(frame).await;
        assert_eq!(reply["type"], "error", "{body}: {reply}");
        if reply["data"]["code"] != http_code {
            differ.push(format!("{body}: HTTP says {http:?}, WebSocket says {reply}"));
        }
    }
    assert!(differ.is_empty(), "the same bad swipe gets different codes:\n{}", differ.join("\n"));
    server.shutdown().await;
}

#[actix_rt::test]
async fn the_heartbeat_closes_a_silent_websocket_and_keeps_a_live_one() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.timeouts.heartbeat_interval_ms = 100;
    config.timeouts.client_timeout_ms = 500;
    let server = TestServer::start(config).await;
    let api = server.api();
    let (alice, bob) = (api.token("alice").await, api.token("bob").await);
    let opened = Instant::now();
    let silent = api.ws_with(&alice, WsOptions { ignore_pings: true, ..Default::default() }).await.unwrap();
    let live = api.ws(&bob).await;
    silent.recv_event("hello", TIMEOUT).await;
    live.recv_event("hello", TIMEOUT).await;

    let closed = silent.closed(Duration::from_secs(5)).await;
    let after = opened.elapsed();
    assert!(after >= Duration::from_millis(450), "closed after {after:?}, before the client timeout: {closed:?}");
    assert!(silent.pings() >= 1, "the server never pinged: {closed:?}");

    // The live client answered every ping and is still open, three timeouts later.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(opened.elapsed())).await;
    assert_eq!(live.is_closed(), None);
    assert!(live.pings() >= 5, "only {} pings", live.pings());
    let pong = live.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    server.shutdown().await;
}

#[actix_rt::test]
async fn connections_past_the_per_user_limit_are_refused() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.limits.max_connections_per_user = 2;
    let server = TestServer::start(config).await;
    let api = server.api();
    let (alice, bob) = (api.token("alice").await, api.token("bob").await);
    let first = api.ws(&alice).await;
    let second = api.sse(&alice).await;
    first.recv_event("hello", TIMEOUT).await;
    second.recv_event("hello", TIMEOUT).await;

    let extra = api.ws(&alice).await;
    let closed = extra.closed(TIMEOUT).await;
    assert_eq!(closed.code, Some(4009), "{closed:?}");
    assert!(extra.events().is_empty(), "the refused connection got events: {:?}", extra.frames());
    let refused = api.sse_with(Some(&alice), SseOptions::default()).await.unwrap_err();
    refused.assert_error(409, "conflict");

    // Other users are not affected, and the open ones keep working.
    let other = api.ws(&bob).await;
    other.recv_event("hello", TIMEOUT).await;
    let m = api.mutual_match("alice", "bob").await;
    for conn in [&first, &second, &other] {
        assert_eq!(conn.recv_event("match", TIMEOUT).await["data"]["match"], m);
    }

    // Closing one frees its place.
    first.close().await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let conn = api.ws(&alice).await;
        match conn.wait_or_closed(TIMEOUT, "hello", |f| f.iter().find(|f| f["type"] == "hello").cloned()).await {
            Ok(_) => break,
            Err(closed) => assert_eq!(closed.code, Some(4009), "{closed:?}"),
        }
        assert!(Instant::now() < deadline, "the freed place was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

#[actix_rt::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_and_resumes() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::stalled::config()).await;
    let api = server.api();
    let (mut stalled, cycles) = common::stalled::stall_until_closed(&api, server.addr(), "slowpoke").await;
    // What it had buffered ends with a close frame saying why: reconnect and resume.
    assert_eq!(stalled.until_close().await.unwrap(), Some(4008));
    let slow = api.token("slowpoke").await;
    let conn = api.ws_with(&slow, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    let rooms = conn.wait_events("room_assigned", cycles, TIMEOUT).await;
    assert_eq!(rooms.len(), cycles, "a resume replays what the slow client missed");
    server.shutdown().await;
}
