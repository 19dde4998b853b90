//! `matchd audit` against real Redis and real matchd processes: no false positive after heavy load
//! (while the node runs, while load is in flight, and after SIGTERM); every kind of inconsistency
//! written by hand is found, and mended where it is safe, offline (under the nodes' fencing) and
//! through a running node, with the affected users told; the same on a Redis Cluster; the
//! background sweep counts what it finds.

use std::process::Command;
use std::time::Duration;

use matchd::audit::repair::room_closed_entry;
use matchd::coord::pair_state::PairState;
use matchd::coord::slot::PairKey;
use matchd::persist::keys;
use matchd::persist::records::PairRecord;
use matchd::protocol::{Direction, JoinRequest, MatchId, PoolName, Room, RoomId, UserId};
use matchd::queue::line_store::{line_key, StoredWaiter};
use matchd::queue::room::RoomState;
use serde_json::{json, Value};

use crate::common::process::MatchdProcess;
use crate::common::redis::RedisServer;
use crate::common::redis_cluster::RedisCluster;
use crate::common::{bounded, Api, Conn, WsOptions, TIMEOUT};

/// What one `matchd audit` run said.
struct Audit {
    code: i32,
    report: Value,
    stderr: String,
}

impl Audit {
    /// The kinds under `field` ("inconsistencies" or "remaining"), sorted.
    fn kinds(&self, field: &str) -> Vec<String> {
        let mut kinds: Vec<String> = self.report[field]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["kind"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        kinds.sort();
        kinds
    }

    fn assert_clean(&self, when: &str) {
        assert_eq!(self.code, 0, "{when}: audit was not clean: {}\n{}", self.stderr, self.report);
        assert_eq!(self.report["clean"], true, "{when}");
    }
}

/// Runs `matchd audit --redis <url> --json <extra...>`.
fn audit(url: &str, extra: &[&str]) -> Audit {
    let out = Command::new(env!("CARGO_BIN_EXE_matchd"))
        .args(["audit", "--redis", url, "--json", "--confirm-ms", "300"])
        .args(extra)
        .env_remove("MATCHD_REDIS")
        .env_remove("MATCHD_CONFIG")
        .env_remove("MATCHD_JWT_SECRET")
        .env("RUST_LOG", std::env::var("AUDIT_LOG").unwrap_or_else(|_| "warn".into()))
        .output()
        .unwrap();
    Audit {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Runs the audit on its own thread (it blocks), while the test's own tasks go on.
fn audit_in_background(url: String, extra: Vec<&'static str>) -> tokio::sync::oneshot::Receiver<Audit> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || drop(tx.send(audit(&url, &extra))));
    rx
}

fn u(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn pair(a: &str, b: &str) -> PairKey {
    PairKey::new(&u(a), &u(b)).unwrap()
}

fn pool(name: &str) -> PoolName {
    PoolName::parse(name).unwrap()
}

/// An open room of `key` as its pair shard stores it.
fn open_room(key: &PairKey, incarnation: u64) -> RoomState {
    RoomState {
        room: Room {
            room_id: RoomId::new_in_slot(key.slot()),
            pool: pool("default"),
            users: [key.low.clone(), key.high.clone()],
            created_at: 1,
            payload: json!({}),
        },
        tickets: [JoinRequest::default(), JoinRequest::default()],
        closed: None,
        incarnation,
    }
}

fn waiter(pool_name: &str, joined_ms: u64) -> String {
    serde_json::to_string(&StoredWaiter {
        ticket: JoinRequest { pool: pool(pool_name), ..Default::default() },
        joined_ms,
        seq: Default::default(),
    })
    .unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Swipes, matches, unmatches and rematches, spins with skips (requeued or not) and leaves, over
/// HTTP only (no stream, so nobody's presence runs out): leaves users queued in two pools and
/// rooms open.
async fn load(api: &Api, prefix: &str) {
    const PAIRS: usize = 200;
    const SPINNERS: usize = 60;
    let names = |i: usize| (format!("{prefix}p{i}a"), format!("{prefix}p{i}b"));
    let matched = bounded(
        16,
        (0..PAIRS).map(|i| {
            let api = api.clone();
            async move {
                let (a, b) = names(i);
                let (ta, tb) = (api.token(&a).await, api.token(&b).await);
                let (ra, rb) =
                    futures_util::future::join(api.swipe(&ta, &b, "right", None), api.swipe(&tb, &a, "right", None))
                        .await;
                let (ra, rb) = (ra.ok(), rb.ok());
                let m = if rb["status"] == "matched" { rb["match"].clone() } else { ra["match"].clone() };
                let id = m["match_id"].as_str().unwrap().to_string();
                if i % 3 == 0 {
                    assert_eq!(api.unmatch(&ta, &id).await.status, 200);
                    if i % 2 == 0 {
                        // Matched again: a new match id, a new guard.
                        api.swipe(&ta, &b, "right", None).await.ok();
                        assert_eq!(api.swipe(&tb, &a, "right", None).await.ok()["status"], "matched");
                    }
                }
            }
        }),
    )
    .await;
    assert_eq!(matched.len(), PAIRS);

    let spinners: Vec<(String, String)> = bounded(
        16,
        (0..SPINNERS).map(|i| {
            let api = api.clone();
            async move {
                let user = format!("{prefix}s{i}");
                let token = api.token(&user).await;
                (user, token)
            }
        }),
    )
    .await;
    let answers = bounded(
        SPINNERS,
        spinners.iter().map(|(_, token)| {
            let api = api.clone();
            let token = token.clone();
            async move { (token.clone(), api.post_json("/v1/queue", Some(&token), &json!({})).await.json()) }
        }),
    )
    .await;
    let mut rooms = Vec::new();
    for (token, answer) in &answers {
        if answer["status"] == "matched" {
            rooms.push((token.clone(), answer["room"]["room_id"].as_str().unwrap().to_string()));
        }
    }
    assert!(rooms.len() >= SPINNERS / 3, "too few rooms: {answers:?}");
    for (n, (token, room_id)) in rooms.iter().enumerate() {
        let body = match n % 3 {
            0 => json!({}),
            1 => json!({ "requeue": false }),
            // Left open.
            _ => continue,
        };
        let r = api.post_json(&format!("/v1/rooms/{room_id}/skip"), Some(token), &body).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // Some of whoever waits leaves; a few wait in another pool.
    for (_, token) in spinners.iter().step_by(5) {
        assert_eq!(api.delete("/v1/queue", token).await.status, 200);
    }
    for i in 0..3 {
        let token = api.token(&format!("{prefix}q{i}")).await;
        let r = api.post_json("/v1/queue", Some(&token), &json!({ "pool": "other" })).await;
        assert!(r.status == 200 || r.status == 202, "{r:?}");
    }
}

#[actix_rt::test]
async fn no_false_positive_after_heavy_load_while_running_during_load_and_after_sigterm() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    load(&api, "h").await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    let running = audit(&redis.url(), &[]);
    running.assert_clean("with the node running");
    assert_eq!(running.report["mode"], "online");
    assert!(running.report["pairs"].as_u64().unwrap() > 200, "{}", running.report);
    assert!(running.report["pools"].as_u64().unwrap() >= 1, "{}", running.report);

    // Read-only, concurrent with a second wave of load: it disturbs nothing and finds nothing.
    let during = audit_in_background(redis.url(), vec![]);
    load(&api, "w").await;
    let during = during.await.unwrap();
    during.assert_clean("during load");
    api.assert_healthy().await;

    node.signal("TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(15)), Some(0));
    let stopped = audit(&redis.url(), &[]);
    stopped.assert_clean("after SIGTERM");
    assert_eq!(stopped.report["mode"], "offline");

    // A new run closes the rooms left open (server_restart) and restores the lines: still clean.
    node.restart();
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    audit(&redis.url(), &[]).assert_clean("after a restart");
}

/// Stops `node` gracefully.
fn stop(node: &mut MatchdProcess) {
    node.signal("TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(15)), Some(0));
}

/// The events of `user`'s stream from the start, once `kind` arrived `n` times.
async fn resumed(api: &Api, user: &str, kind: &str, n: usize) -> Vec<Value> {
    let token = api.token(user).await;
    let conn = api.ws_with(&token, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    conn.wait_events(kind, n, TIMEOUT).await;
    let events = conn.events();
    conn.close().await;
    events
}

#[actix_rt::test]
async fn every_repairable_kind_is_found_and_mended_offline_and_the_users_are_told() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    // Real state to spoil: a match (a1, b1) and a room (c1, d1).
    let m = api.mutual_match("a1", "b1").await;
    let match_id = m["match_id"].as_str().unwrap().to_string();
    let (tc, td) = (api.token("c1").await, api.token("d1").await);
    api.post_json("/v1/queue", Some(&tc), &json!({})).await;
    let room = api.post_json("/v1/queue", Some(&td), &json!({})).await.ok();
    assert_eq!(room["status"], "matched");
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    stop(&mut node);
    audit(&redis.url(), &[]).assert_clean("before spoiling");

    let cli = |args: &[&str]| redis.cli(args);
    let ab = pair("a1", "b1");
    // I1: no guard and no id key for a1/b1's match; a guard without a match; a1's index lost the
    // match; b1's index names a match that does not exist.
    cli(&["DEL", &keys::active_match(&ab)]);
    cli(&["DEL", &keys::match_owner(ab.slot(), &MatchId::parse(&match_id).unwrap())]);
    cli(&["SET", &keys::active_match(&pair("x1", "y1")), "1.gone"]);
    cli(&["HDEL", &keys::matches(&u("a1")), &match_id]);
    let stale = json!({"match_id": format!("{}.stale", ab.slot()), "users": ["a1", "b1"], "created_at": 1});
    cli(&["HSET", &keys::matches(&u("b1")), stale["match_id"].as_str().unwrap(), &stale.to_string()]);
    // I5: an open room whose members never heard of it (g1, h1 idle); a room in i1's log that no
    // pair has open; c1/d1's room missing from its slot's open-rooms set.
    let gh = pair("g1", "h1");
    let orphan = open_room(&gh, 1);
    let orphan_id = orphan.room.room_id.to_string();
    let record = PairRecord { rooms: vec![orphan], ..Default::default() };
    cli(&["SET", &keys::pair(&gh), &serde_json::to_string(&record).unwrap()]);
    cli(&["SADD", &keys::open_rooms(gh.slot()), &keys::pair_member(&gh)]);
    let ij = pair("i1", "j1");
    let ghost = RoomId::new_in_slot(ij.slot());
    let assigned = json!({"id": 1, "type": "room_assigned", "data": {"room": {
        "room_id": ghost.as_str(), "pool": "default", "users": ["i1", "j1"], "created_at": 1, "payload": {}}}});
    cli(&["XADD", &keys::events(&u("i1")), "1-0", "json", &assigned.to_string(), "fx", &format!("enter:{ghost}")]);
    let cd = pair("c1", "d1");
    cli(&["SREM", &keys::open_rooms(cd.slot()), &keys::pair_member(&cd)]);
    // I4: k1 waits in two lines; c1 waits in a line while in the room.
    cli(&["HSET", &line_key(&pool("p1")), "k1", &waiter("p1", 1)]);
    cli(&["HSET", &line_key(&pool("p2")), "k1", &waiter("p2", 2)]);
    cli(&["HSET", &line_key(&pool("default")), "c1", &waiter("default", 3)]);
    // ... and l1's entry in p3's line holds a ticket for p4.
    cli(&["HSET", &line_key(&pool("p3")), "l1", &waiter("p4", 4)]);
    // I2: a pair owing an event it is not listed for; a listing without cause.
    let mn = pair("m1", "n1");
    let owed = room_closed_entry(&u("m1"), &RoomId::new_in_slot(mn.slot()), now_ms());
    let record = PairRecord { outbox: vec![owed], ..Default::default() };
    cli(&["SET", &keys::pair(&mn), &serde_json::to_string(&record).unwrap()]);
    let op = pair("o1", "p1");
    cli(&["SADD", &keys::outbox(op.slot()), &keys::pair_member(&op)]);

    let found = audit(&redis.url(), &[]);
    assert_eq!(found.code, 1, "{}", found.stderr);
    let expected = [
        "line_ticket_mismatch",
        "match_guard_missing",
        "match_index_missing",
        "match_index_stale",
        "match_owner_missing",
        "open_room_not_listed",
        "orphan_match_guard",
        "orphan_room",
        "outbox_not_listed",
        "queued_in_room",
        "queued_twice",
        "room_place_stale",
        "stale_listing",
    ];
    assert_eq!(found.kinds("inconsistencies"), expected, "{}", found.stderr);
    let orphan_finding = found.report["inconsistencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "orphan_room")
        .unwrap()
        .clone();
    assert_eq!(orphan_finding["ids"], json!([orphan_id]));
    assert_eq!(orphan_finding["users"], json!(["g1", "h1"]));
    assert!(orphan_finding["keys"].as_array().unwrap().contains(&json!(keys::pair(&gh))));

    let repaired = audit(&redis.url(), &["--repair"]);
    assert_eq!(repaired.code, 0, "{}\n{}", repaired.stderr, repaired.report);
    assert_eq!(repaired.report["remaining"], json!([]));
    let statuses: Vec<&str> =
        repaired.report["repairs"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == "repaired"), "{}", repaired.report);
    assert_eq!(cli(&["GET", "matchd:lease"]), "", "the audit gave its lease back");
    audit(&redis.url(), &[]).assert_clean("after the offline repair");
    assert_eq!(cli(&["HEXISTS", &line_key(&pool("p1")), "k1"]), "0");
    assert_eq!(cli(&["HEXISTS", &line_key(&pool("p2")), "k1"]), "1", "the newest entry stays");
    assert_eq!(cli(&["HEXISTS", &line_key(&pool("default")), "c1"]), "0");
    assert_eq!(cli(&["HEXISTS", &line_key(&pool("p3")), "l1"]), "0");
    assert_eq!(cli(&["GET", &keys::active_match(&ab)]), match_id);
    assert_eq!(cli(&["EXISTS", &keys::active_match(&pair("x1", "y1"))]), "0");

    // The next node delivers what the repairs owe: live or on resume, each user hears it.
    node.restart();
    for user in ["g1", "h1"] {
        let events = resumed(&api, user, "room_closed", 1).await;
        let closed: Vec<&Value> = events.iter().filter(|e| e["type"] == "room_closed").collect();
        assert_eq!(closed.len(), 1, "{user}: {events:?}");
        assert_eq!(closed[0]["data"], json!({"room_id": orphan_id, "reason": "server_repair"}), "{user}");
    }
    let events = resumed(&api, "i1", "room_closed", 1).await;
    let closed = events.iter().find(|e| e["type"] == "room_closed").unwrap();
    assert_eq!(closed["data"], json!({"room_id": ghost.as_str(), "reason": "server_repair"}));
    let events = resumed(&api, "b1", "unmatched", 1).await;
    let unmatched = events.iter().find(|e| e["type"] == "unmatched").unwrap();
    assert_eq!(
        unmatched["data"],
        json!({"match_id": stale["match_id"], "by": "a1", "reason": "server_repair"}),
        "{events:?}"
    );
    let (ta, tb) = (api.token("a1").await, api.token("b1").await);
    assert_eq!(api.matches(&ta).await, vec![m.clone()], "a1's index has its match back");
    assert_eq!(api.matches(&tb).await, vec![m.clone()], "b1's index lost only the stale entry");
    // i1 has their place back: they can spin.
    let ti = api.token("i1").await;
    let spin = api.post_json("/v1/queue", Some(&ti), &json!({"pool": "solo"})).await;
    assert_eq!(spin.status, 202, "{spin:?}");
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    audit(&redis.url(), &[]).assert_clean("with the node that delivered the repairs");
}

#[actix_rt::test]
async fn what_needs_a_person_is_reported_and_left_alone() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let cli = |args: &[&str]| redis.cli(args);
    // A pair whose guard names another match than its record.
    let ab = pair("a2", "b2");
    let mut state = PairState::default();
    let id = MatchId::new_in_slot(ab.slot());
    state.swipe(&ab, 0, Direction::Right, None, 1, 4, || id.clone());
    state.swipe(&ab, 1, Direction::Right, None, 1, 4, || id.clone());
    let m = state.active_match().unwrap().clone();
    cli(&["SET", &keys::pair(&ab), &serde_json::to_string(&PairRecord { state, ..Default::default() }).unwrap()]);
    cli(&["SET", &keys::active_match(&ab), &format!("{}.other", ab.slot())]);
    cli(&["SET", &keys::match_owner(ab.slot(), &id), &keys::pair_member(&ab)]);
    for user in ["a2", "b2"] {
        cli(&["HSET", &keys::matches(&u(user)), id.as_str(), &serde_json::to_string(&m).unwrap()]);
    }
    // A log whose event ids go backwards; a record that is not JSON.
    let event = |id: u64| json!({"id": id, "type": "queue_update", "data": {}}).to_string();
    cli(&["XADD", &keys::events(&u("c2")), "5-0", "json", &event(5), "fx", ""]);
    cli(&["XADD", &keys::events(&u("c2")), "6-0", "json", &event(3), "fx", ""]);
    cli(&["SET", &keys::pair(&pair("d2", "e2")), "{not json"]);

    let found = audit(&redis.url(), &[]);
    assert_eq!(found.code, 1);
    let expected = ["event_log_not_increasing", "match_guard_mismatch", "unreadable_record"];
    assert_eq!(found.kinds("inconsistencies"), expected, "{}", found.stderr);
    for f in found.report["inconsistencies"].as_array().unwrap() {
        assert!(f["repair"].is_null() && f["not_repaired"].is_string(), "{f}");
    }
    let after = audit(&redis.url(), &["--repair"]);
    assert_eq!(after.code, 1, "{}", after.stderr);
    assert_eq!(after.kinds("remaining"), expected);
    assert_eq!(cli(&["GET", &keys::pair(&pair("d2", "e2"))]), "{not json", "nothing was rewritten");
    assert!(found.stderr.contains("not repaired"), "{}", found.stderr);
}

#[actix_rt::test]
async fn repairs_go_through_a_running_node_whose_owners_recheck_them() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let cli = |args: &[&str]| redis.cli(args);
    // A real room, to learn its shard's incarnation (a room of another run would be closed as
    // `server_restart` the moment its pair loads).
    let (tq, tr) = (api.token("q3").await, api.token("r3").await);
    api.post_json("/v1/queue", Some(&tq), &json!({})).await;
    assert_eq!(api.post_json("/v1/queue", Some(&tr), &json!({})).await.ok()["status"], "matched");
    let qr = pair("q3", "r3");
    let live: PairRecord = serde_json::from_str(&cli(&["GET", &keys::pair(&qr)])).unwrap();
    let incarnation = live.rooms[0].incarnation;

    // An orphan room of this run, of a pair on the same shard, for s3/t3 (both idle); s3 is
    // connected and hears of it live.
    let shard = |key: &PairKey| matchd::coord::slot::shard_of(key.slot(), 2);
    let (s3, t3) =
        (0..).map(|n| (format!("s3-{n}"), format!("t3-{n}"))).find(|(s, t)| shard(&pair(s, t)) == shard(&qr)).unwrap();
    let (s3, t3) = (s3.as_str(), t3.as_str());
    let st = pair(s3, t3);
    let orphan = open_room(&st, incarnation);
    let orphan_id = orphan.room.room_id.to_string();
    let record = PairRecord { rooms: vec![orphan], ..Default::default() };
    cli(&["SET", &keys::pair(&st), &serde_json::to_string(&record).unwrap()]);
    cli(&["SADD", &keys::open_rooms(st.slot()), &keys::pair_member(&st)]);
    let ts = api.token(s3).await;
    let s3_conn: Conn = api.ws(&ts).await;
    s3_conn.recv_event("hello", TIMEOUT).await;
    // A guard without a match; an event owed for two minutes that nobody lists; a user in two lines.
    cli(&["SET", &keys::active_match(&pair("x3", "y3")), "2.gone"]);
    let uv = pair("u3", "v3");
    let stuck_room = RoomId::new_in_slot(uv.slot());
    let owed = room_closed_entry(&u("u3"), &stuck_room, now_ms() - 120_000);
    cli(&[
        "SET",
        &keys::pair(&uv),
        &serde_json::to_string(&PairRecord { outbox: vec![owed], ..Default::default() }).unwrap(),
    ]);
    cli(&["HSET", &line_key(&pool("p1")), "w3", &waiter("p1", 1)]);
    cli(&["HSET", &line_key(&pool("p2")), "w3", &waiter("p2", 2)]);

    let found = audit(&redis.url(), &[]);
    assert_eq!(found.code, 1, "{}", found.stderr);
    assert_eq!(
        found.kinds("inconsistencies"),
        ["orphan_match_guard", "orphan_room", "outbox_not_listed", "queued_twice", "stale_outbox"],
        "{}",
        found.stderr
    );
    let repaired = audit(&redis.url(), &["--repair"]);
    assert_eq!(repaired.code, 0, "{}\n{}", repaired.stderr, repaired.report);
    assert_eq!(repaired.report["mode"], "online");

    let closed = s3_conn.recv_event("room_closed", TIMEOUT).await;
    assert_eq!(closed["data"], json!({"room_id": orphan_id, "reason": "server_repair"}));
    let events = resumed(&api, t3, "room_closed", 1).await;
    let closed = events.iter().find(|e| e["type"] == "room_closed").unwrap();
    assert_eq!(closed["data"], json!({"room_id": orphan_id, "reason": "server_repair"}));
    let events = resumed(&api, "u3", "room_closed", 1).await;
    assert!(events.iter().any(|e| e["data"]["room_id"] == stuck_room.as_str()), "{events:?}");
    assert_eq!(cli(&["EXISTS", &keys::active_match(&pair("x3", "y3"))]), "0");
    assert_eq!(cli(&["HEXISTS", &line_key(&pool("p1")), "w3"]), "0");
    assert_eq!(cli(&["HEXISTS", &line_key(&pool("p2")), "w3"]), "1");
    audit(&redis.url(), &[]).assert_clean("after the repairs through the node");
    // The node carries on as before.
    assert_eq!(api.mutual_match("a3", "b3").await["users"], json!(["a3", "b3"]));

    // Without the nodes' secret the node refuses the repairs (and nothing is mended).
    cli(&["SET", &keys::active_match(&pair("x3", "y3")), "2.gone"]);
    let refused = audit(&redis.url(), &["--repair", "--jwt-secret", "not-the-secret-of-the-nodes"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("secret"), "{}", refused.stderr);
    assert_eq!(cli(&["GET", &keys::active_match(&pair("x3", "y3"))]), "2.gone");
}

#[actix_rt::test]
async fn on_a_redis_cluster_the_audit_scans_every_master_and_repairs_online_and_offline() {
    let _trace = crate::common::trace_init();
    let redis = RedisCluster::start(3);
    let mut node = MatchdProcess::cluster_node_on(&redis.url());
    node.wait_ready(Duration::from_secs(20));
    let api = Api::new(&node.base_url(), &node.ws_url());
    load(&api, "c").await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let clean = audit(&redis.url(), &[]);
    clean.assert_clean("on a Redis Cluster with a node running");
    assert_eq!(clean.report["mode"], "online");
    let counts = redis.key_counts();
    assert!(counts.iter().all(|n| *n > 0), "the data is not sharded: {counts:?}");
    assert_eq!(clean.report["keys_scanned"].as_u64().unwrap(), counts.iter().sum::<u64>(), "every master scanned");

    redis.cli(&["SET", &keys::active_match(&pair("x4", "y4")), "3.gone"]);
    let online = audit(&redis.url(), &["--repair"]);
    assert_eq!(online.kinds("inconsistencies"), ["orphan_match_guard"], "{}", online.stderr);
    assert_eq!(online.code, 0, "{}\n{}", online.stderr, online.report);

    stop(&mut node);
    redis.cli(&["SET", &keys::active_match(&pair("x5", "y5")), "4.gone"]);
    redis.cli(&["HSET", &line_key(&pool("p1")), "z5", &waiter("p1", 1)]);
    redis.cli(&["HSET", &line_key(&pool("p2")), "z5", &waiter("p2", 2)]);
    let offline = audit(&redis.url(), &["--repair"]);
    assert_eq!(offline.report["mode"], "offline");
    assert_eq!(offline.kinds("inconsistencies"), ["orphan_match_guard", "queued_twice"], "{}", offline.stderr);
    assert_eq!(offline.code, 0, "{}\n{}", offline.stderr, offline.report);
    audit(&redis.url(), &[]).assert_clean("after the offline repair on a Redis Cluster");

    // A node started after an offline repair takes its slots back and works.
    let node = MatchdProcess::cluster_node_on(&redis.url());
    node.wait_ready(Duration::from_secs(20));
    let api = Api::new(&node.base_url(), &node.ws_url());
    assert_eq!(api.mutual_match("x5", "y5").await["users"], json!(["x5", "y5"]));
}

#[actix_rt::test]
async fn the_background_sweep_counts_each_finding_by_kind() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let node = MatchdProcess::with_redis_and(&redis, "[audit]\ninterval_ms = 200\nconfirm_ms = 50\n");
    let metric = |kind: &str| -> f64 {
        let (_, text) = node.get("/metrics").unwrap();
        let series = format!("matchd_audit_inconsistencies_total{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series}"))
            .parse()
            .unwrap()
    };
    for kind in matchd::audit::Kind::ALL {
        assert_eq!(metric(kind.as_str()), 0.0, "{kind} is not exposed at 0");
    }
    redis.cli(&["SET", &keys::active_match(&pair("x6", "y6")), "5.gone"]);
    let mut counted = 0.0;
    for _ in 0..100 {
        counted = metric("orphan_match_guard");
        if counted > 0.0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0);
    // Reported once while it lasts; the sweep never repairs.
    actix_rt::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(metric("orphan_match_guard"), 1.0);
    assert_eq!(redis.cli(&["GET", &keys::active_match(&pair("x6", "y6"))]), "5.gone");
}

#[test]
fn exit_codes_say_clean_found_could_not_run_and_bad_flags() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_matchd"))
            .arg("audit")
            .args(args)
            .env_remove("MATCHD_REDIS")
            .env_remove("MATCHD_CONFIG")
            .output()
            .unwrap()
    };
    assert_eq!(run(&["--bogus"]).status.code(), Some(64));
    assert_eq!(run(&[]).status.code(), Some(64), "--redis is required");
    assert_eq!(run(&["--redis", "http://x"]).status.code(), Some(64));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--repair"));
    let port = crate::common::redis::free_port().to_string();
    let down = run(&["--redis", &format!("redis://127.0.0.1:{port}"), "--json"]);
    assert_eq!(down.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&down.stdout).unwrap();
    assert!(report["error"].is_string(), "{report}");
    let redis = RedisServer::start();
    assert_eq!(run(&["--redis", &redis.url()]).status.code(), Some(0));
    redis.cli(&["SET", &keys::active_match(&pair("x7", "y7")), "6.gone"]);
    assert_eq!(run(&["--redis", &redis.url()]).status.code(), Some(1));
}
