//! Spin: pools, rooms, skip and presence with real clients. Races are provoked (everyone presses
//! spin at the same instant; both members skip at once) and the invariants are checked over every
//! answer and event: nobody in two rooms (I4), every room of two distinct users, everyone told once,
//! nobody alone after a close (I5), nobody left waiting beside a compatible partner (I6).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::common::process::MatchdProcess;
use crate::common::redis::RedisServer;
use crate::common::{self, bounded, Api, Conn, TestServer, WsOptions, TIMEOUT};

fn spin_config() -> matchd::Config {
    let mut config = common::config();
    config.limits.joins_per_minute = 10_000;
    config.limits.skips_per_minute = 10_000;
    config
}

async fn join(api: &Api, token: &str, body: Value) -> (u16, Value) {
    let r = api.post_json("/v1/queue", Some(token), &body).await;
    (r.status.as_u16(), r.json())
}

async fn skip(api: &Api, token: &str, room_id: &str, body: Value) -> (u16, Value) {
    let r = api.post_json(&format!("/v1/rooms/{room_id}/skip"), Some(token), &body).await;
    (r.status.as_u16(), r.json())
}

/// `n` users with a token and an open WebSocket each, in index order (`{prefix}0` first).
async fn connected_users(api: &Api, prefix: &str, n: usize) -> Vec<(String, String, Conn)> {
    let mut users = bounded(
        64,
        (0..n).map(|i| {
            let api = api.clone();
            let user = format!("{prefix}{i}");
            async move {
                let token = api.token(&user).await;
                let conn = api.ws(&token).await;
                conn.recv_event("hello", TIMEOUT).await;
                (i, (user, token, conn))
            }
        }),
    )
    .await;
    users.sort_by_key(|(i, _)| *i);
    users.into_iter().map(|(_, u)| u).collect()
}

/// Everyone presses spin at the same instant; checks I4/I5/I6 over answers and events.
async fn simultaneous_spins(n: usize) {
    simultaneous_spins_with(n, spin_config()).await;
}

async fn simultaneous_spins_with(n: usize, config: matchd::Config) {
    let server = TestServer::start(config).await;
    let api = server.api();
    let users = connected_users(&api, &format!("spin{n}u"), n).await;
    let barrier = Rc::new(Barrier::new(n));
    let answers = bounded(
        n,
        users.iter().map(|(user, token, _)| {
            let (api, barrier) = (api.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                (user.clone(), join(&api, token, json!({})).await)
            }
        }),
    )
    .await;
    let mut rooms_by_answer: HashMap<String, String> = HashMap::new();
    let mut queued = 0;
    for (user, (status, body)) in &answers {
        match (*status, body["status"].as_str()) {
            (200, Some("matched")) => {
                rooms_by_answer.insert(user.clone(), body["room"]["room_id"].as_str().unwrap().to_string());
            }
            (202, Some("queued")) => queued += 1,
            other => panic!("{user}: unexpected answer {other:?} {body}"),
        }
    }
    // Everyone paired except at most one (odd n); each told exactly once, by a room_assigned event.
    let expected_rooms = n / 2;
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for (user, _, conn) in &users {
        if n % 2 == 1 {
            // The one left over has nothing to wait for; give the others time instead.
            continue;
        }
        conn.wait_events("room_assigned", 1, TIMEOUT).await;
        let _ = user;
    }
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    let mut assigned_users = 0;
    for (user, _, conn) in &users {
        let rooms: Vec<Value> = conn.events().into_iter().filter(|e| e["type"] == "room_assigned").collect();
        assert!(rooms.len() <= 1, "{user} was put in {} rooms: {rooms:?}", rooms.len());
        if let Some(r) = rooms.first() {
            assigned_users += 1;
            let room = &r["data"]["room"];
            let ids: Vec<String> =
                room["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().into()).collect();
            assert!(ids.contains(user), "{user} told of a room without them: {room}");
            assert_ne!(ids[0], ids[1], "a room with one user twice: {room}");
            members.entry(room["room_id"].as_str().unwrap().to_string()).or_default().push(user.clone());
            if let Some(answered) = rooms_by_answer.get(user) {
                assert_eq!(answered, room["room_id"].as_str().unwrap(), "{user}: answer and event disagree");
            }
        }
    }
    assert_eq!(members.len(), expected_rooms, "rooms formed");
    for (room, who) in &members {
        assert_eq!(who.len(), 2, "room {room} was announced to {who:?}");
    }
    assert_eq!(assigned_users, expected_rooms * 2);
    assert_eq!(queued, n - rooms_by_answer.len());
    let status = api.get("/v1/queue/default", &users[0].1).await.ok();
    assert_eq!(status["waiting"].as_u64().unwrap(), (n % 2) as u64, "{status}");
    server.shutdown().await;
}

#[actix_rt::test]
async fn fifty_users_pressing_spin_at_once_are_paired_once_each() {
    let _trace = common::trace_init();
    simultaneous_spins(50).await;
}

#[actix_rt::test]
async fn a_thousand_simultaneous_spins_pair_everyone_exactly_once() {
    let _trace = common::trace_init();
    simultaneous_spins(1000).await;
}

#[actix_rt::test]
async fn simultaneous_spins_with_redis_pair_everyone_once() {
    let _trace = common::trace_init();
    let redis = RedisServer::start();
    let mut config = spin_config();
    config.redis = Some(redis.url());
    simultaneous_spins_with(200, config).await;
}

#[actix_rt::test]
async fn a_room_left_open_by_a_crash_stays_open_and_a_closed_one_stays_closed() {
    let _trace = common::trace_init();
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let users = connected_users(&api, "crash", 4).await;
    let open = pair(&api, &users[0], &users[1], "default").await;
    let skipped = pair(&api, &users[2], &users[3], "default").await;
    let (s, body) = skip(&api, &users[2].1, &skipped, json!({"requeue": false})).await;
    assert_eq!(s, 200, "{body}");
    users[3].2.recv_event("room_closed", TIMEOUT).await;
    let last: Vec<u64> = users.iter().map(|u| u.2.last_id()).collect();
    node.kill9();
    node.restart();
    // Resuming from their last ids: nobody hears of a close made by the restart.
    let mut conns = Vec::new();
    for (i, u) in users.iter().enumerate() {
        conns.push(api.ws_with(&u.1, WsOptions { since: Some(last[i]), ..Default::default() }).await.unwrap());
    }
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    for (u, conn) in users.iter().zip(&conns) {
        let closes = conn.events().iter().filter(|e| e["type"] == "room_closed").count();
        assert_eq!(closes, 0, "{}: {:?}", u.0, conn.events());
    }
    // The open room still works: in it, a join is refused, and a skip reaches the partner.
    let (s, body) = join(&api, &users[0].1, json!({ "pool": "default" })).await;
    assert_eq!(s, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains(open.as_str()), "{body}");
    let (s, body) = skip(&api, &users[0].1, &open, json!({"requeue": false})).await;
    assert_eq!(s, 200, "{body}");
    let closed = conns[1].recv_event("room_closed", TIMEOUT).await;
    assert_eq!(closed["data"], json!({"room_id": open, "reason": "partner_skipped"}));
    // The room closed before the crash stays closed: skipping it again answers the same, sends nothing.
    let (s, body) = skip(&api, &users[3].1, &skipped, json!({})).await;
    assert_eq!(s, 200, "{body}");
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conns[3].events().iter().filter(|e| e["type"] == "room_closed").count(), 0);
}

#[actix_rt::test]
async fn acknowledged_queue_places_survive_kill_9() {
    let _trace = common::trace_init();
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let users = connected_users(&api, "line", 4).await;
    let (s, body) = join(&api, &users[0].1, json!({"pool": "kept", "rating": 1200})).await;
    assert_eq!(s, 202, "{body}");
    let (s, _) = join(&api, &users[1].1, json!({"pool": "other"})).await;
    assert_eq!(s, 202);
    assert_eq!(api.delete("/v1/queue", &users[1].1).await.ok()["status"], "left");
    node.kill9();
    node.restart();
    let api = Api::new(&node.base_url(), &node.ws_url());
    // users[0] is back in line (its place too: a second join in another pool is refused); the
    // user who left is not.
    let status = api.get("/v1/queue/kept", &users[2].1).await.ok();
    assert_eq!(status["waiting"], 1, "{status}");
    assert_eq!(api.get("/v1/queue/other", &users[2].1).await.ok()["waiting"], 0);
    let (s, body) = join(&api, &users[0].1, json!({"pool": "elsewhere"})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let back = api.ws(&users[0].1).await;
    let (s, body) = join(&api, &users[2].1, json!({"pool": "kept"})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["room"]["users"], json!(["line0", "line2"]));
    let assigned = back.recv_event("room_assigned", TIMEOUT).await;
    assert_eq!(assigned["data"]["room"]["room_id"], body["room"]["room_id"]);
}

#[actix_rt::test]
async fn an_odd_spin_leaves_exactly_one_waiting() {
    let _trace = common::trace_init();
    simultaneous_spins(7).await;
}

/// Pairs `a` and `b` (a waits, b joins) and returns the room id.
async fn pair(api: &Api, a: &(String, String, Conn), b: &(String, String, Conn), pool: &str) -> String {
    let (s, body) = join(api, &a.1, json!({ "pool": pool })).await;
    assert_eq!((s, body["status"].as_str()), (202, Some("queued")), "{body}");
    let (s, body) = join(api, &b.1, json!({ "pool": pool })).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("matched")), "{body}");
    let room_id = body["room"]["room_id"].as_str().unwrap().to_string();
    for conn in [&a.2, &b.2] {
        let e = conn.recv_event("room_assigned", TIMEOUT).await;
        assert_eq!(e["data"]["room"]["room_id"], room_id.as_str());
    }
    room_id
}

#[actix_rt::test]
async fn both_members_skipping_at_once_close_the_room_once_and_requeue_each_once() {
    let _trace = common::trace_init();
    let server = TestServer::start(spin_config()).await;
    let api = server.api();
    let users = connected_users(&api, "bs", 4).await;
    let (a, b) = (&users[0], &users[1]);
    let room = pair(&api, a, b, "default").await;
    let barrier = Rc::new(Barrier::new(2));
    let results = bounded(
        2,
        [a, b].map(|u| {
            let (api, barrier, room) = (api.clone(), barrier.clone(), room.clone());
            async move {
                barrier.wait().await;
                skip(&api, &u.1, &room, json!({})).await
            }
        }),
    )
    .await;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, &json!({"status": "skipped", "requeued": true}));
    }
    for u in [a, b] {
        let closed = u.2.recv_event("room_closed", TIMEOUT).await;
        assert_eq!(closed["data"]["room_id"], room.as_str());
        u.2.recv_event("queue_update", TIMEOUT).await;
    }
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    for u in [a, b] {
        let events = u.2.events();
        assert_eq!(events.iter().filter(|e| e["type"] == "room_closed").count(), 1, "{events:?}");
        assert_eq!(events.iter().filter(|e| e["type"] == "queue_update").count(), 1, "requeued twice: {events:?}");
    }
    // They just met: not paired again with each other, but each with a newcomer.
    let status = api.get("/v1/queue/default", &a.1).await.ok();
    assert_eq!(status["waiting"], 2, "{status}");
    for newcomer in [&users[2], &users[3]] {
        let (s, body) = join(&api, &newcomer.1, json!({})).await;
        assert_eq!(s, 200, "{body}");
        let members = body["room"]["users"].to_string();
        assert!(members.contains(&newcomer.0));
        assert!(!(members.contains(&a.0) && members.contains(&b.0)));
    }
    for u in [a, b] {
        let rooms = u.2.wait_events("room_assigned", 2, TIMEOUT).await;
        assert_ne!(rooms[1]["data"]["room"]["room_id"], room.as_str());
    }
    server.shutdown().await;
}

#[actix_rt::test]
async fn a_skip_tells_the_partner_at_once_and_requeue_false_just_leaves() {
    let _trace = common::trace_init();
    let server = TestServer::start(spin_config()).await;
    let api = server.api();
    let users = connected_users(&api, "sk", 3).await;
    let (a, b, c) = (&users[0], &users[1], &users[2]);
    let room = pair(&api, a, b, "default").await;
    // A stranger cannot skip it; an unknown room is 404; a member cannot join a queue while in it.
    let (s, body) = skip(&api, &c.1, &room, json!({})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, _) = skip(&api, &a.1, "12.nosuchroom", json!({})).await;
    assert_eq!(s, 404);
    let (s, body) = join(&api, &a.1, json!({})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("conflict")));

    let (s, body) = skip(&api, &a.1, &room, json!({ "requeue": false })).await;
    assert_eq!((s, body), (200, json!({"status": "skipped", "requeued": false})));
    let closed = b.2.recv_event("room_closed", TIMEOUT).await;
    assert_eq!(closed["data"], json!({"room_id": room, "reason": "partner_skipped"}));
    let own = a.2.recv_event("room_closed", TIMEOUT).await;
    assert_eq!(own["data"]["reason"], "skipped");
    // The same skip again answers the same, changes nothing.
    let (s, body) = skip(&api, &a.1, &room, json!({ "requeue": false })).await;
    assert_eq!((s, body), (200, json!({"status": "skipped", "requeued": false})));
    let leave = api.delete("/v1/queue", &a.1).await.ok();
    assert_eq!(leave, json!({"status": "not_queued"}));
    // b went back to the queue; c joining pairs with b (a left).
    let (s, body) = join(&api, &c.1, json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["room"]["users"], json!([b.0, c.0]));
    server.shutdown().await;
}

#[actix_rt::test]
async fn joining_again_while_queued_is_one_entry_and_leaving_is_idempotent() {
    let _trace = common::trace_init();
    let server = TestServer::start(spin_config()).await;
    let api = server.api();
    let users = connected_users(&api, "jq", 1).await;
    let u = &users[0];
    let first = join(&api, &u.1, json!({ "pool": "solo" })).await;
    let again = join(&api, &u.1, json!({ "pool": "solo" })).await;
    assert_eq!(first.0, 202);
    assert_eq!(first, again);
    let (s, body) = join(&api, &u.1, json!({ "pool": "other" })).await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("conflict")));
    assert_eq!(api.get("/v1/queue/solo", &u.1).await.ok()["waiting"], 1);
    assert_eq!(api.delete("/v1/queue", &u.1).await.ok(), json!({"status": "left", "pool": "solo"}));
    assert_eq!(api.delete("/v1/queue", &u.1).await.ok(), json!({"status": "not_queued"}));
    assert_eq!(api.get("/v1/queue/solo", &u.1).await.ok()["waiting"], 0);
    server.shutdown().await;
}

#[actix_rt::test]
async fn pool_rules_rating_region_and_tags_decide_who_meets() {
    let _trace = common::trace_init();
    let mut config = spin_config();
    config.pools = toml::from_str(
        r#"
        [rated]
        rating_tolerance = 100
        [regional]
        region = "require"
        [tagged]
        tags = "require"
        prompts = ["Tell me about a bug you fixed"]
        [tagged.payload]
        minutes = 30
        "#,
    )
    .unwrap();
    let server = TestServer::start(config).await;
    let api = server.api();
    let users = connected_users(&api, "rule", 9).await;
    let t = |i: usize| users[i].1.clone();

    // Rating: 1000 and 1500 are too far apart; 1050 meets 1000.
    assert_eq!(join(&api, &t(0), json!({"pool": "rated", "rating": 1000})).await.0, 202);
    assert_eq!(join(&api, &t(1), json!({"pool": "rated", "rating": 1500})).await.0, 202);
    let (s, body) = join(&api, &t(2), json!({"pool": "rated", "rating": 1050})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["room"]["users"], json!(["rule0", "rule2"]));

    // Region: eu never meets us.
    assert_eq!(join(&api, &t(3), json!({"pool": "regional", "region": "us"})).await.0, 202);
    assert_eq!(join(&api, &t(4), json!({"pool": "regional", "region": "eu"})).await.0, 202);
    let (s, body) = join(&api, &t(5), json!({"pool": "regional", "region": "eu"})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["room"]["users"], json!(["rule4", "rule5"]));

    // Tags: a common tag is required; the room carries the pool's payload and a prompt.
    assert_eq!(join(&api, &t(6), json!({"pool": "tagged", "tags": ["go"]})).await.0, 202);
    assert_eq!(join(&api, &t(7), json!({"pool": "tagged", "tags": ["python"]})).await.0, 202);
    let (s, body) = join(&api, &t(8), json!({"pool": "tagged", "tags": ["rust", "python"]})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["room"]["users"], json!(["rule7", "rule8"]));
    assert_eq!(body["room"]["payload"], json!({"minutes": 30, "prompt": "Tell me about a bug you fixed"}));
    server.shutdown().await;
}

#[actix_rt::test]
async fn a_member_gone_past_the_grace_period_closes_the_room_and_the_partner_is_requeued() {
    let _trace = common::trace_init();
    let mut config = spin_config();
    config.timeouts.presence_grace_ms = 300;
    let server = TestServer::start(config).await;
    let api = server.api();
    let users = connected_users(&api, "pg", 4).await;

    // Reconnecting within the grace period keeps the room.
    let room = pair(&api, &users[2], &users[3], "default").await;
    users[2].2.close().await;
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    let back = api.ws(&users[2].1).await;
    actix_rt::time::sleep(Duration::from_millis(600)).await;
    assert!(users[3].2.events().iter().all(|e| e["type"] != "room_closed"), "closed despite a reconnect");
    let (s, body) = join(&api, &users[2].1, json!({})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("conflict")), "still in {room}: {body}");
    back.close().await;
    // Now gone for good: its partner hears it; take the partner out of the line for what follows.
    let closed = users[3].2.recv_event("room_closed", Duration::from_secs(5)).await;
    assert_eq!(closed["data"], json!({"room_id": room, "reason": "partner_left"}));
    users[3].2.recv_event("queue_update", TIMEOUT).await;
    assert_eq!(api.delete("/v1/queue", &users[3].1).await.ok()["status"], "left");

    // Gone for good: the partner hears partner_left and goes back to the queue.
    let (a, b) = (&users[0], &users[1]);
    let room = pair(&api, a, b, "default").await;
    a.2.close().await;
    let closed = b.2.recv_event("room_closed", Duration::from_secs(5)).await;
    assert_eq!(closed["data"], json!({"room_id": room, "reason": "partner_left"}));
    b.2.recv_event("queue_update", TIMEOUT).await;
    // The one who left hears it on resume.
    let resumed = api.ws_with(&a.1, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    let own = resumed.recv_event("room_closed", TIMEOUT).await;
    assert_eq!(own["data"], json!({"room_id": room, "reason": "left"}));
    server.shutdown().await;
}

#[actix_rt::test]
async fn spin_actions_work_over_websocket_and_joins_are_rate_limited() {
    let _trace = common::trace_init();
    let mut config = spin_config();
    config.limits.joins_per_minute = 3;
    let server = TestServer::start(config).await;
    let api = server.api();
    let users = connected_users(&api, "wsq", 2).await;
    let (a, b) = (&users[0], &users[1]);
    let queued = a.2.request(json!({"type": "join_queue", "pool": "ws"})).await;
    assert_eq!(queued["type"], "ack", "{queued}");
    assert_eq!(queued["data"]["status"], "queued");
    let matched = b.2.request(json!({"type": "join_queue", "pool": "ws"})).await;
    assert_eq!(matched["data"]["status"], "matched", "{matched}");
    let room = matched["data"]["room"]["room_id"].as_str().unwrap().to_string();
    let skipped = a.2.request(json!({"type": "skip", "room_id": room, "requeue": false})).await;
    assert_eq!(skipped["data"], json!({"status": "skipped", "requeued": false}), "{skipped}");
    let left = b.2.request(json!({"type": "leave_queue"})).await;
    assert_eq!(left["data"]["status"], "left", "{left}");
    // b has used 1 of 3 joins; a 1. Two more for a, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = api.post_json("/v1/queue", Some(&a.1), &json!({"pool": "ws"})).await;
        statuses.push((r.status.as_u16(), r.header("retry-after")));
        let _ = api.delete("/v1/queue", &a.1).await;
    }
    assert_eq!(statuses[0].0, 202);
    assert_eq!(statuses[1].0, 202);
    assert_eq!(statuses[2].0, 429);
    assert!(statuses[2].1.is_some(), "429 without Retry-After");
    let seen: HashSet<u16> = statuses.iter().map(|s| s.0).collect();
    assert!(seen.contains(&429));
    server.shutdown().await;
}

/// A pairing counts only once the pool has stored that its members left the line: if that write
/// fails, no room is made, the joiner is told 503 and the user who was waiting still waits (and is
/// paired later), so a pool that lost its store or its ownership cannot make a room behind its
/// successor's back.
#[actix_rt::test]
async fn a_pairing_whose_line_write_fails_makes_no_room_and_the_waiting_user_still_waits() {
    let _trace = common::trace_init();
    let mut redis = RedisServer::start();
    let node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let users = connected_users(&api, "held", 3).await;
    let (s, body) = join(&api, &users[0].1, json!({"pool": "held"})).await;
    assert_eq!(s, 202, "{body}");
    redis.kill();
    let (s, body) = join(&api, &users[1].1, json!({"pool": "held"})).await;
    assert_eq!((s, body["error"]["code"].as_str()), (503, Some("unavailable")), "{body}");
    redis.restart();
    node.wait_ready(Duration::from_secs(10));
    let status = api.get("/v1/queue/held", &users[2].1).await.ok();
    assert_eq!(status["waiting"], 1, "the waiting user lost their place: {status}");
    let (s, body) = join(&api, &users[2].1, json!({"pool": "held"})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["room"]["users"], json!(["held0", "held2"]));
    let assigned = users[0].2.recv_event("room_assigned", TIMEOUT).await;
    assert_eq!(assigned["data"]["room"]["room_id"], body["room"]["room_id"], "held0 was put in another room first");
    assert!(users[1].2.events().iter().all(|e| e["type"] != "room_assigned"), "held1 got a room");
}
