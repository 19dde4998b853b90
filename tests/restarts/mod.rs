//! Change without loss on one node with Redis: 500 open rooms go through a SIGTERM + restart and a
//! kill -9 + restart. No room is closed by the server; every room still works afterwards (a skip
//! reaches the partner); each member's presence grace starts again when the node is back, so a
//! member who stays away leaves with `partner_left` to the other; every stream resumes with nothing
//! missed or doubled.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::process::MatchdProcess;
use crate::common::redis::RedisServer;
use crate::common::{self, bounded, bounded_in_order, Api, Conn, WsOptions, TIMEOUT};

const ROOMS: usize = 500;
/// Rooms `0..AWAY`: the second member does not come back after the restart.
const AWAY: usize = 50;
const GRACE_MS: u64 = 6_000;
const CONCURRENCY: usize = 48;

struct Member {
    user: String,
    token: String,
    before: Conn,
}

fn names(i: usize) -> [String; 2] {
    [format!("room{i}a"), format!("room{i}b")]
}

async fn open_rooms(api: &Api) -> (Vec<[Member; 2]>, Vec<String>) {
    let pairs: Vec<[Member; 2]> = bounded_in_order(
        CONCURRENCY,
        (0..ROOMS).map(|i| async move {
            let [a, b] = names(i);
            let (ta, tb) = (api.token(&a).await, api.token(&b).await);
            let (ca, cb) = (api.ws(&ta).await, api.ws(&tb).await);
            ca.recv_event("hello", TIMEOUT).await;
            cb.recv_event("hello", TIMEOUT).await;
            [Member { user: a, token: ta, before: ca }, Member { user: b, token: tb, before: cb }]
        }),
    )
    .await;
    // Each pair spins in its own pool, so the pairing is known.
    let rooms: Vec<String> = bounded_in_order(
        CONCURRENCY,
        pairs
            .iter()
            .enumerate()
            .map(|(i, [a, b])| async move { api.meet(&a.token, &b.token, &format!("keep{i}")).await }),
    )
    .await;
    for (pair, room) in pairs.iter().zip(&rooms) {
        for m in pair {
            let e = m.before.recv_event("room_assigned", TIMEOUT).await;
            assert_eq!(e["data"]["room"]["room_id"], json!(room), "{}", m.user);
        }
    }
    (pairs, rooms)
}

/// Reconnects with the last id seen; the `hello` must say nothing was dropped.
async fn resume(api: &Api, m: &Member) -> Conn {
    let since = m.before.last_id();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match api.ws_with(&m.token, WsOptions { since: Some(since), ..Default::default() }).await {
            Ok(conn) => {
                match conn.wait_or_closed(TIMEOUT, "hello", |f| f.iter().find(|f| f["type"] == "hello").cloned()).await
                {
                    Ok(hello) => {
                        assert_eq!(hello["data"]["gap"], json!(false), "{}: {hello}", m.user);
                        return conn;
                    }
                    Err(closed) => assert!(Instant::now() < deadline, "{}: resume refused: {closed:?}", m.user),
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "{}: cannot reconnect: {e}", m.user),
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn closes(events: &[Value]) -> Vec<Value> {
    events.iter().filter(|e| e["type"] == "room_closed").map(|e| e["data"].clone()).collect()
}

/// Both segments of a user's stream: ids strictly increasing, nothing twice (`hello` is not a
/// logged event: its id is the resume point).
fn assert_one_ordered_stream(user: &str, before: &Conn, after: &Conn) {
    let ids: Vec<u64> = before
        .events()
        .iter()
        .chain(after.events().iter())
        .filter(|e| e["type"] != "hello")
        .filter_map(|e| e["id"].as_u64())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{user}: ids not strictly increasing across the restart: {ids:?}");
}

async fn rooms_survive(kill: bool) {
    let redis = RedisServer::start();
    let mut node =
        MatchdProcess::with_redis_and(&redis, &format!("presence_grace_ms = {GRACE_MS}\n[limits]\nmax_pools = 2000\n"));
    let api = Api::new(&node.base_url(), &node.ws_url());
    let (pairs, rooms) = open_rooms(&api).await;

    if kill {
        node.kill9();
    } else {
        node.signal("TERM");
        assert_eq!(node.wait_exit(Duration::from_secs(15)), Some(0), "SIGTERM did not stop the node cleanly");
    }
    node.restart();
    let back = Instant::now();

    // Everyone comes back but the second member of rooms 0..AWAY.
    let resumed: HashMap<String, Conn> = bounded(
        CONCURRENCY,
        pairs.iter().enumerate().flat_map(|(i, pair)| {
            pair.iter().filter(move |m| i >= AWAY || m.user.ends_with('a')).map(|m| {
                let api = &api;
                async move { (m.user.clone(), resume(api, m).await) }
            })
        }),
    )
    .await
    .into_iter()
    .collect();
    let reconnected = back.elapsed();
    assert!(
        reconnected < Duration::from_millis(GRACE_MS),
        "reconnecting took {reconnected:?}, longer than the grace period: the test cannot tell a kept room"
    );

    // Every room that both members came back to still works: a skip reaches the partner, once.
    bounded(
        CONCURRENCY,
        pairs.iter().zip(&rooms).enumerate().skip(AWAY).map(|(_, ([a, b], room))| {
            let (api, resumed) = (&api, &resumed);
            async move {
                let path = format!("/v1/rooms/{room}/skip");
                let answer = api.post_json(&path, Some(&a.token), &json!({"requeue": false})).await.ok();
                assert_eq!(answer["status"], "skipped", "{}: {answer}", a.user);
                let partner = &resumed[&b.user];
                let closed = partner.recv_event("room_closed", TIMEOUT).await;
                assert_eq!(closed["data"], json!({"room_id": room, "reason": "partner_skipped"}), "{}", b.user);
            }
        }),
    )
    .await;

    // Rooms whose second member stayed away close after the grace: partner_left to the one there.
    for (i, [a, b]) in pairs.iter().enumerate().take(AWAY) {
        let conn = &resumed[&a.user];
        let closed = conn.recv_event("room_closed", Duration::from_millis(GRACE_MS) + TIMEOUT).await;
        assert_eq!(
            closed["data"],
            json!({"room_id": rooms[i], "reason": "partner_left"}),
            "{} (partner {})",
            a.user,
            b.user
        );
        assert!(
            back.elapsed() >= Duration::from_millis(GRACE_MS) - Duration::from_millis(500),
            "closed before the grace ran out"
        );
    }
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    // Nobody heard of a room closed by the server, and each room closed exactly once for each member.
    for (i, pair) in pairs.iter().enumerate() {
        for m in pair {
            let Some(after) = resumed.get(&m.user) else { continue };
            let all: Vec<Value> = m.before.events().into_iter().chain(after.events()).collect();
            let closed = closes(&all);
            assert_eq!(closed.len(), 1, "{}: room closes {closed:?}", m.user);
            assert!(closed.iter().all(|c| c["room_id"] == json!(rooms[i])), "{}: {closed:?}", m.user);
            assert_one_ordered_stream(&m.user, &m.before, after);
        }
    }
    let metrics = node.get("/metrics").map(|(_, body)| body).unwrap_or_default();
    let restart_closes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("matchd_rooms_closed_total{reason=\"server_restart\"} "))
        .unwrap_or("0");
    assert_eq!(restart_closes, "0", "rooms closed by the server");
}

#[actix_rt::test]
async fn five_hundred_rooms_survive_a_sigterm_restart() {
    let _trace = common::trace_init();
    rooms_survive(false).await;
}

#[actix_rt::test]
async fn five_hundred_rooms_survive_a_kill_9_restart() {
    let _trace = common::trace_init();
    rooms_survive(true).await;
}
