//! Multi-active cluster: three `matchd --cluster` nodes on one Redis with nginx in front. Any node
//! takes any request (forwarding to the slot's owner); streams land on whichever node nginx picks.
//! Races are provoked across nodes (the two sides of a pair, the spins of one pool), a node is
//! killed mid-load and another paused past its lease, and the invariants are checked over the whole
//! history each time: one match per pair (I1), every event once per connection in id order (I2),
//! nobody in two rooms (I4), every acknowledged action durable (I7), no stale owner committing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::common::cluster::{Backing, Cluster};
use crate::common::history::{pair, History, SwipeRecord};
use crate::common::nginx::NginxServer;
use crate::common::process::{MatchdProcess, TEST_LEASE_MS};
use crate::common::redis::{free_port, RedisServer};
use crate::common::{self, bounded, Api, Conn, WsOptions, TIMEOUT};

mod rolling;

const NODES: usize = 3;
/// Requests (or connection openings) in flight at once while setting up.
const CONCURRENCY: usize = 48;

/// A dev token for every user (any node signs them: the secret is shared).
async fn tokens(api: &Api, users: &[String]) -> HashMap<String, String> {
    bounded(CONCURRENCY, users.iter().map(|u| async move { (u.clone(), api.token(u).await) }))
        .await
        .into_iter()
        .collect()
}

/// A WebSocket of `token`'s user through `api`, after its `hello`.
async fn connect(api: &Api, token: &str) -> Conn {
    let conn = api.ws(token).await;
    conn.recv_event("hello", TIMEOUT).await;
    conn
}

/// Collects violations so a failure lists all of them, not just the first.
#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn add(&mut self, v: String) {
        self.0.push(v);
    }

    fn assert_none(&self, what: &str) {
        if !self.0.is_empty() {
            let shown: Vec<&str> = self.0.iter().take(25).map(String::as_str).collect();
            panic!("{} {what} violation(s), first ones:\n{}", self.0.len(), shown.join("\n"));
        }
    }
}

#[actix_rt::test]
async fn nginx_proxies_requests_and_streams_and_skips_a_dead_node() {
    let _trace = common::trace_init();
    let redis = RedisServer::start();
    let node = MatchdProcess::with_redis(&redis);
    // The first upstream is a port nobody listens on: nginx must go on to the next one, not 502.
    let nginx = NginxServer::start(&[free_port(), node.port]);
    let api = Api::new(&nginx.base_url(), &nginx.ws_url());
    for _ in 0..6 {
        api.assert_healthy().await;
    }
    let (ta, tb) = (api.token("ngx-a").await, api.token("ngx-b").await);
    let ws = connect(&api, &ta).await;
    let sse = api.sse(&tb).await;
    sse.recv_event("hello", TIMEOUT).await;
    let pong = ws.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");

    // Unbuffered: each event arrives at once, while the streams stay open.
    let m = api.mutual_match("ngx-a", "ngx-b").await;
    let quick = Duration::from_secs(2);
    assert_eq!(ws.recv_event("match", quick).await["data"], json!({ "match": m }));
    assert_eq!(sse.recv_event("match", quick).await["data"], json!({ "match": m }));
    // Resuming through nginx replays what was missed.
    let resumed = api.ws_with(&tb, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    assert_eq!(resumed.recv_event("match", quick).await["data"], json!({ "match": m }));
    assert!(ws.is_closed().is_none() && sse.is_closed().is_none(), "{}", nginx.output());
}

/// A swipe of the cross-node race, and where it is sent.
#[derive(Debug, Clone)]
struct Planned {
    actor: String,
    target: String,
    direction: &'static str,
    swipe_id: String,
    /// The node the original goes to (directly, over HTTP).
    node: usize,
    /// A retry with the same `swipe_id` released with the original, through another route.
    retry: Option<Route>,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    /// HTTP, directly to this node.
    Node(usize),
    /// A WebSocket `swipe` action on the actor's first connection (through nginx: any node).
    Ws,
}

fn planned(actor: &str, target: &str, direction: &'static str, node: usize, rng: &mut StdRng) -> Planned {
    let retry = match rng.gen_range(0..20) {
        0 | 1 => Some(Route::Node((node + rng.gen_range(1..NODES)) % NODES)),
        2 => Some(Route::Ws),
        _ => None,
    };
    let swipe_id = format!("{actor}-{target}");
    Planned { actor: actor.into(), target: target.into(), direction, swipe_id, node, retry }
}

/// Everything the cross-node race needs to send a swipe.
struct RaceCtx {
    apis: Vec<Api>,
    tokens: HashMap<String, String>,
    conns: HashMap<String, Vec<Conn>>,
    history: History,
}

impl RaceCtx {
    async fn send(&self, s: &Planned, route: Route, retry: bool) {
        let (status, body, via) = match route {
            Route::Ws => {
                let frame =
                    json!({"type": "swipe", "target": s.target, "direction": s.direction, "swipe_id": s.swipe_id});
                let reply = self.conns[&s.actor][0].request(frame).await;
                match reply["type"].as_str() {
                    Some("ack") => (200, reply["data"].clone(), "ws"),
                    _ => (0, reply, "ws"),
                }
            }
            Route::Node(i) => {
                let reply = self.apis[i].swipe(&self.tokens[&s.actor], &s.target, s.direction, Some(&s.swipe_id)).await;
                (reply.status.as_u16(), reply.json(), "http")
            }
        };
        self.history.record_swipe(SwipeRecord {
            actor: s.actor.clone(),
            target: s.target.clone(),
            direction: s.direction.to_string(),
            swipe_id: Some(s.swipe_id.clone()),
            retry,
            via,
            status,
            body,
        });
    }

    /// Fires a group (both sides of a pair and their retries) at the same instant.
    async fn run_group(&self, group: &[Planned]) {
        let sends: Vec<(&Planned, Route, bool)> = group
            .iter()
            .flat_map(|s| std::iter::once((s, Route::Node(s.node), false)).chain(s.retry.map(|r| (s, r, true))))
            .collect();
        let barrier = Barrier::new(sends.len());
        let barrier = &barrier;
        futures_util::future::join_all(sends.into_iter().map(|(s, route, retry)| async move {
            barrier.wait().await;
            self.send(s, route, retry).await;
        }))
        .await;
    }
}

#[actix_rt::test]
async fn mutual_swipes_through_different_nodes_make_exactly_one_match_per_pair() {
    mutual_swipes_through_different_nodes_make_exactly_one_match_per_pair_on(Backing::Redis).await;
}

#[actix_rt::test]
async fn mutual_swipes_through_different_nodes_make_exactly_one_match_per_pair_on_a_redis_cluster() {
    mutual_swipes_through_different_nodes_make_exactly_one_match_per_pair_on(Backing::RedisCluster).await;
}

async fn mutual_swipes_through_different_nodes_make_exactly_one_match_per_pair_on(backing: Backing) {
    const PAIRS: usize = 2000;
    let _trace = common::trace_init();
    let started = Instant::now();
    let cluster = Cluster::start_on(NODES, backing).await;
    let lb = cluster.lb();
    let mut rng = StdRng::seed_from_u64(0xc105);

    let users: Vec<String> = (0..PAIRS).flat_map(|i| [format!("a{i}"), format!("b{i}")]).collect();
    let tokens = tokens(&lb, &users).await;
    // Every user holds a stream through nginx (so on any node) before the first swipe; 10% two.
    let tabs: Vec<&String> =
        users.iter().enumerate().flat_map(|(i, u)| std::iter::repeat_n(u, if i % 10 == 3 { 2 } else { 1 })).collect();
    let opened = bounded(
        CONCURRENCY,
        tabs.iter().map(|u| {
            let (lb, tokens) = (&lb, &tokens);
            async move { ((*u).clone(), connect(lb, &tokens[*u]).await) }
        }),
    )
    .await;
    let mut conns: HashMap<String, Vec<Conn>> = HashMap::new();
    for (u, c) in opened {
        conns.entry(u).or_default().push(c);
    }
    let connected = started.elapsed();

    // Pair i: a{i} through node i, b{i} through node i+1. Then pairs that must never match: one-sided
    // likes and likes raced by a pass, across nodes too.
    let mut groups: Vec<Vec<Planned>> = Vec::new();
    for i in 0..PAIRS {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        groups.push(vec![
            planned(&a, &b, "right", i % NODES, &mut rng),
            planned(&b, &a, "right", (i + 1) % NODES, &mut rng),
        ]);
    }
    for i in 0..100 {
        let (a, b) = (format!("a{i}"), format!("b{}", (i + 1) % PAIRS));
        groups.push(vec![planned(&a, &b, "right", (i + 2) % NODES, &mut rng)]);
    }
    for k in 100..125 {
        let (a, b) = (format!("a{}", 2 * k), format!("a{}", 2 * k + 1));
        groups.push(vec![
            planned(&a, &b, "right", k % NODES, &mut rng),
            planned(&b, &a, "left", (k + 1) % NODES, &mut rng),
        ]);
    }
    groups.shuffle(&mut rng);

    let ctx =
        RaceCtx { apis: (0..NODES).map(|i| cluster.api(i)).collect(), tokens, conns, history: History::default() };
    let swipes_started = Instant::now();
    bounded(CONCURRENCY, groups.iter().map(|g| ctx.run_group(g))).await;
    let swiped = swipes_started.elapsed();

    // Every connection gets its user's one match; then a quiet moment to catch duplicates.
    for (user, cs) in &ctx.conns {
        for c in cs {
            c.wait_for(TIMEOUT, &format!("the match event of {user}"), |frames| {
                frames.iter().any(|f| f["type"] == "match").then_some(())
            })
            .await;
        }
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    for (user, cs) in &ctx.conns {
        for c in cs {
            ctx.history.record_connection(user, c);
        }
    }
    // Every node lists the same matches for every user; the history checks one node's listing.
    let listings = bounded(
        CONCURRENCY,
        users.iter().map(|u| {
            let ctx = &ctx;
            async move {
                let mut per_node = Vec::new();
                for api in &ctx.apis {
                    per_node.push(api.matches(&ctx.tokens[u]).await);
                }
                (u.clone(), per_node)
            }
        }),
    )
    .await;
    let mut v = Violations::default();
    for (u, per_node) in listings {
        let sets: Vec<BTreeSet<String>> = per_node.iter().map(|l| l.iter().map(Value::to_string).collect()).collect();
        if sets.iter().any(|s| s != &sets[0]) {
            v.add(format!("{u}: the nodes list different matches: {per_node:?}"));
        }
        ctx.history.record_listing(&u, per_node[0].clone());
    }
    v.assert_none("cross-node listing");

    let summary = ctx.history.check();
    assert_eq!(summary.matches.len(), PAIRS);
    assert_eq!(summary.unmatched_pairs, 125);
    assert_eq!(summary.connections, tabs.len());
    assert!(summary.retries > summary.swipes / 20, "{summary:?}");
    assert!(summary.via_ws > 0, "{summary:?}");
    eprintln!(
        "{PAIRS} pairs over {NODES} nodes: {} swipes ({} retries, {} over WebSocket), {} connections, {} events; \
         connect {connected:?}, swipes {swiped:?}, total {:?}",
        summary.swipes,
        summary.retries,
        summary.via_ws,
        summary.connections,
        summary.events,
        started.elapsed()
    );
    if let Some(counts) = cluster.redis_cluster_key_counts() {
        // The state really is spread over the Redis Cluster's masters, not funnelled into one.
        assert!(counts.iter().all(|n| *n > 100), "keys per Redis Cluster master: {counts:?}");
    }
}

/// What happens to a first-round room in the spin test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomPlan {
    /// The first member skips (`requeue` as given); the partner is requeued either way.
    SkipOne {
        requeue: bool,
    },
    /// Both members skip at the same instant, through different nodes (default: requeue).
    SkipBoth,
    Stay,
}

/// Where a user is, as told by their stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Idle,
    Waiting,
    InRoom(String),
}

#[actix_rt::test]
async fn spins_through_every_node_pair_each_user_once_and_skips_close_rooms_for_both() {
    spins_through_every_node_pair_each_user_once_and_skips_close_rooms_for_both_on(Backing::Redis).await;
}

#[actix_rt::test]
async fn spins_through_every_node_pair_each_user_once_and_skips_close_rooms_for_both_on_a_redis_cluster() {
    spins_through_every_node_pair_each_user_once_and_skips_close_rooms_for_both_on(Backing::RedisCluster).await;
}

async fn spins_through_every_node_pair_each_user_once_and_skips_close_rooms_for_both_on(backing: Backing) {
    const SPINNERS: usize = 150;
    const POOL: &str = "cluster";
    let _trace = common::trace_init();
    let cluster = Cluster::start_on(NODES, backing).await;
    let lb = cluster.lb();
    let apis: Vec<Api> = (0..NODES).map(|i| cluster.api(i)).collect();
    let users: Vec<String> = (0..SPINNERS).map(|i| format!("q{i}")).collect();
    let tokens = tokens(&lb, &users).await;
    let conns: HashMap<String, Conn> = bounded(
        CONCURRENCY,
        users.iter().map(|u| {
            let (lb, tokens) = (&lb, &tokens);
            async move { (u.clone(), connect(lb, &tokens[u]).await) }
        }),
    )
    .await
    .into_iter()
    .collect();

    // Round 1: everyone presses spin at the same instant, through node i % 3.
    let barrier = Barrier::new(SPINNERS);
    let answers = futures_util::future::join_all(users.iter().enumerate().map(|(i, u)| {
        let (api, token, barrier) = (&apis[i % NODES], &tokens[u], &barrier);
        async move {
            barrier.wait().await;
            let r = api.post_json("/v1/queue", Some(token), &json!({ "pool": POOL })).await;
            (u.clone(), r.status.as_u16(), r.json())
        }
    }))
    .await;
    let mut answered_rooms: HashMap<String, Value> = HashMap::new();
    for (u, status, body) in &answers {
        match (*status, body["status"].as_str()) {
            (200, Some("matched")) => {
                answered_rooms.insert(u.clone(), body["room"].clone());
            }
            (202, Some("queued")) => assert_eq!(body["pool"], POOL, "{u}: {body}"),
            _ => panic!("{u}: unexpected answer to a spin: {status} {body}"),
        }
    }
    // An even number pressed spin: everyone is paired, and no node sees anyone waiting.
    for u in &users {
        conns[u].wait_events("room_assigned", 1, TIMEOUT).await;
    }
    for (i, api) in apis.iter().enumerate() {
        let status = api.get(&format!("/v1/queue/{POOL}"), &tokens[&users[0]]).await.ok();
        assert_eq!(status["waiting"], 0, "node {i}: {status}");
    }
    let mut first_rooms: BTreeMap<String, Value> = BTreeMap::new();
    for u in &users {
        let e = conns[u].events().into_iter().find(|e| e["type"] == "room_assigned").unwrap();
        first_rooms.insert(e["data"]["room"]["room_id"].as_str().unwrap().to_string(), e["data"]["room"].clone());
    }
    assert_eq!(first_rooms.len(), SPINNERS / 2, "rooms formed in round 1: {first_rooms:?}");

    // Round 2: skips, released together; a room's two members go through different nodes.
    let plans: BTreeMap<String, RoomPlan> = first_rooms
        .keys()
        .enumerate()
        .map(|(k, id)| {
            let plan = match k % 6 {
                0 | 4 => RoomPlan::SkipOne { requeue: true },
                3 => RoomPlan::SkipOne { requeue: false },
                1 => RoomPlan::SkipBoth,
                _ => RoomPlan::Stay,
            };
            (id.clone(), plan)
        })
        .collect();
    let member = |room: &str, j: usize| first_rooms[room]["users"][j].as_str().unwrap().to_string();
    let mut skips: Vec<(String, String, bool, usize)> = Vec::new();
    for (k, (room, plan)) in plans.iter().enumerate() {
        match plan {
            RoomPlan::SkipOne { requeue } => skips.push((member(room, 0), room.clone(), *requeue, k % NODES)),
            RoomPlan::SkipBoth => {
                skips.push((member(room, 0), room.clone(), true, k % NODES));
                skips.push((member(room, 1), room.clone(), true, (k + 1) % NODES));
            }
            RoomPlan::Stay => {}
        }
    }
    let barrier = Barrier::new(skips.len());
    let skip_answers = futures_util::future::join_all(skips.iter().map(|(u, room, requeue, node)| {
        let (api, token, barrier) = (&apis[*node], &tokens[u], &barrier);
        let body = if *requeue { json!({}) } else { json!({ "requeue": false }) };
        async move {
            barrier.wait().await;
            let r = api.post_json(&format!("/v1/rooms/{room}/skip"), Some(token), &body).await;
            (u.clone(), *requeue, r.status.as_u16(), r.json())
        }
    }))
    .await;
    for (u, requeue, status, body) in &skip_answers {
        assert_eq!(
            (*status, body),
            (200, &json!({"status": "skipped", "requeued": requeue})),
            "{u}: unexpected answer to a skip"
        );
    }

    // Let the pool pair the requeued users: wait until nothing changes for a second.
    let mut last = (usize::MAX, Value::Null);
    let mut stable_since = Instant::now();
    let settle_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: usize = conns.values().map(|c| c.events().len()).sum();
        let waiting = apis[0].get(&format!("/v1/queue/{POOL}"), &tokens[&users[0]]).await.ok()["waiting"].clone();
        if (events, waiting.clone()) != last {
            last = (events, waiting);
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(Instant::now() < settle_deadline, "the pool did not settle: {last:?}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }

    // Replay every user's stream: nobody in two rooms at once (I4), every room announced to its
    // two members with the same room, every close told to both.
    let mut v = Violations::default();
    let mut late_updates = Vec::new();
    let mut places: HashMap<String, Place> = HashMap::new();
    let mut announced: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    let mut closed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut requeued: BTreeSet<String> = BTreeSet::new();
    for u in &users {
        let events = conns[u].events();
        if events.first().map(|e| e["type"] != "hello").unwrap_or(true) {
            v.add(format!("{u}: first event is not hello: {events:?}"));
        }
        let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap_or(0)).collect();
        if ids.windows(2).any(|w| w[0] >= w[1]) {
            v.add(format!("{u}: ids do not strictly increase: {ids:?}"));
        }
        let mut place = Place::Idle;
        let mut first_told: Option<Value> = None;
        let mut left_a_room = false;
        for e in events.iter().skip(1) {
            let data = &e["data"];
            match e["type"].as_str() {
                Some("room_assigned") => {
                    let room = &data["room"];
                    let id = room["room_id"].as_str().unwrap_or_default().to_string();
                    match &place {
                        Place::InRoom(current) => v.add(format!("{u}: put in room {id} while still in {current} (I4)")),
                        // Put back in line by the server and paired at once: no queue_update.
                        _ if left_a_room => {
                            requeued.insert(u.clone());
                        }
                        _ => {}
                    }
                    let members: Vec<&str> = room["users"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if members.len() != 2 || members[0] == members[1] || !members.contains(&u.as_str()) {
                        v.add(format!("{u}: a room that is not of two distinct users including them: {room}"));
                    }
                    if room["pool"] != POOL {
                        v.add(format!("{u}: room of another pool: {room}"));
                    }
                    announced.entry(id.clone()).or_default().push((u.clone(), room.clone()));
                    first_told.get_or_insert_with(|| room.clone());
                    place = Place::InRoom(id);
                }
                Some("room_closed") => {
                    let id = data["room_id"].as_str().unwrap_or_default().to_string();
                    if place != Place::InRoom(id.clone()) {
                        v.add(format!("{u}: room_closed for {id} while {place:?}"));
                    }
                    closed.entry(id).or_default().push((u.clone(), data["reason"].as_str().unwrap_or("?").into()));
                    place = Place::Idle;
                    left_a_room = true;
                }
                Some("queue_update") => {
                    if data["pool"] != POOL {
                        v.add(format!("{u}: queue_update of another pool: {e}"));
                    }
                    if matches!(place, Place::InRoom(_)) {
                        late_updates.push(u.clone());
                    } else {
                        requeued.insert(u.clone());
                        place = Place::Waiting;
                    }
                }
                _ => v.add(format!("{u}: unexpected event {e}")),
            }
        }
        places.insert(u.clone(), place);
        if let Some(room) = answered_rooms.get(u) {
            if first_told.as_ref() != Some(room) {
                v.add(format!("{u}: the spin answered {room}, the first room_assigned says {first_told:?}"));
            }
        }
    }
    for (id, who) in &announced {
        let users_of_room = &who[0].1["users"];
        let names: BTreeSet<&str> = who.iter().map(|(w, _)| w.as_str()).collect();
        if who.len() != 2 || names.len() != 2 || who.iter().any(|(_, r)| r != &who[0].1) {
            v.add(format!("room {id} was announced as {who:?} (both members, once each, the same room)"));
        }
        for (w, _) in who {
            if !users_of_room.as_array().map(|a| a.contains(&json!(w))).unwrap_or(false) {
                v.add(format!("room {id} announced to {w}, who is not in {users_of_room}"));
            }
        }
    }
    for (id, who) in &closed {
        let members: BTreeSet<String> =
            announced.get(id).map(|w| w.iter().map(|(u, _)| u.clone()).collect()).unwrap_or_default();
        let told: BTreeSet<String> = who.iter().map(|(u, _)| u.clone()).collect();
        if who.len() != 2 || told != members {
            v.add(format!("room {id} with {members:?}: room_closed went to {who:?} (both members, once each)"));
        }
        let reasons: BTreeMap<&str, &str> = who.iter().map(|(u, r)| (u.as_str(), r.as_str())).collect();
        match plans.get(id) {
            Some(RoomPlan::SkipOne { .. }) => {
                let skipper = member(id, 0);
                let partner = member(id, 1);
                if reasons.get(skipper.as_str()) != Some(&"skipped")
                    || reasons.get(partner.as_str()) != Some(&"partner_skipped")
                {
                    v.add(format!("room {id}: {skipper} skipped, but the reasons are {reasons:?}"));
                }
            }
            Some(RoomPlan::SkipBoth) => {
                if reasons.values().any(|r| *r != "skipped" && *r != "partner_skipped") {
                    v.add(format!("room {id}: both skipped, but the reasons are {reasons:?}"));
                }
            }
            _ => v.add(format!("room {id} closed though nobody skipped it: {who:?}")),
        }
    }
    for (id, plan) in &plans {
        if *plan != RoomPlan::Stay && !closed.contains_key(id) {
            v.add(format!("room {id} was skipped ({plan:?}) but nobody heard it close"));
        }
        // Requeued by the server: both members, except a skipper who asked not to be.
        let (a, b) = (member(id, 0), member(id, 1));
        let expect_requeued = match plan {
            RoomPlan::SkipOne { requeue } => vec![(a.clone(), *requeue), (b.clone(), true)],
            RoomPlan::SkipBoth => vec![(a.clone(), true), (b.clone(), true)],
            RoomPlan::Stay => vec![(a.clone(), false), (b.clone(), false)],
        };
        for (u, expected) in expect_requeued {
            if requeued.contains(&u) != expected {
                let events = conns[&u].events();
                v.add(format!("{u} of room {id} ({plan:?}): requeued {}, expected {expected}: {events:?}", !expected));
            }
        }
        // Two users who just met are not paired again.
        if *plan != RoomPlan::Stay {
            for (other, who) in &announced {
                let pair: BTreeSet<&str> = who.iter().map(|(w, _)| w.as_str()).collect();
                if other != id && pair == BTreeSet::from([a.as_str(), b.as_str()]) {
                    v.add(format!("{a} and {b} skipped room {id} and were paired again in {other}"));
                }
            }
        }
    }
    v.assert_none("spin history");

    // Whoever the streams say is waiting is exactly who every node counts; each requeued user has
    // only one person they may not meet again, so at most two can be left waiting (I6).
    let waiting_users: Vec<&String> = users.iter().filter(|u| places[*u] == Place::Waiting).collect();
    for (i, api) in apis.iter().enumerate() {
        let status = api.get(&format!("/v1/queue/{POOL}"), &tokens[&users[0]]).await.ok();
        assert_eq!(
            status["waiting"],
            waiting_users.len(),
            "node {i}: {status}; waiting by the streams: {waiting_users:?}"
        );
    }
    assert!(waiting_users.len() <= 2, "left waiting beside compatible partners: {waiting_users:?}");
    let rooms_now = places.values().filter(|p| matches!(p, Place::InRoom(_))).count();
    eprintln!(
        "{SPINNERS} spins over {NODES} nodes: {} rooms, {} skips, {} in rooms now, {} waiting; queue_update after \
         room_assigned (the requeue's place, told after the new room): {late_updates:?}",
        announced.len(),
        skips.len(),
        rooms_now,
        waiting_users.len()
    );
}

/// A user's event stream through nginx that reconnects whenever it drops, resuming after the last
/// event id it saw. Each connection it opened is kept, in order.
struct ResumingStream {
    user: String,
    segments: RefCell<Vec<Rc<Conn>>>,
    /// Refused or failed connection attempts.
    refused: Cell<usize>,
}

impl ResumingStream {
    async fn run(self: Rc<Self>, api: Api, token: String, stop: Rc<Cell<bool>>) {
        let mut since: Option<u64> = None;
        while !stop.get() {
            let conn = match api.ws_with(&token, WsOptions { since, ..Default::default() }).await {
                Ok(conn) => Rc::new(conn),
                Err(_) => {
                    self.refused.set(self.refused.get() + 1);
                    actix_rt::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.segments.borrow_mut().push(conn.clone());
            // Woken when the connection ends, and every 200 ms to look at `stop`.
            while conn.is_closed().is_none() {
                let _ = tokio::time::timeout(Duration::from_millis(200), conn.closed(Duration::from_secs(3600))).await;
                if stop.get() {
                    return;
                }
            }
            let last = conn.frames().iter().rev().find_map(|f| f["id"].as_u64());
            since = last.or(since);
        }
    }

    /// The match events over all connections.
    fn match_ids(&self) -> Vec<String> {
        let segments = self.segments.borrow();
        let frames = segments.iter().flat_map(|c| c.frames());
        frames
            .filter(|f| f["type"] == "match")
            .filter_map(|f| f["data"]["match"]["match_id"].as_str().map(String::from))
            .collect()
    }

    /// Checks the whole chain: each connection starts with `hello` (resuming where the previous one
    /// ended, no gap); the events after it have strictly increasing ids across reconnections, and
    /// every match of the user (`expected`) arrives exactly once in total, nothing else.
    fn check(&self, expected: &[Value], v: &mut Violations) {
        let u = &self.user;
        let mut since: Option<u64> = None;
        let mut last_event: Option<u64> = None;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (k, conn) in self.segments.borrow().iter().enumerate() {
            let events = conn.events();
            let Some(hello) = events.first() else { continue };
            let hello_id = hello["id"].as_u64().unwrap_or(0);
            if hello["type"] != "hello" || hello["data"]["user"] != u.as_str() || hello["data"]["gap"] != false {
                v.add(format!("{u} connection {k}: bad first event {hello}"));
            }
            if let Some(since) = since {
                if hello["data"]["resumed_from"] != since || hello_id < since {
                    v.add(format!("{u} connection {k}: resumed with since={since}, hello says {hello}"));
                }
            }
            for e in events.iter().skip(1) {
                let id = e["id"].as_u64().unwrap_or(0);
                if last_event.is_some_and(|l| id <= l) || (since.is_some() && id <= hello_id) {
                    v.add(format!("{u} connection {k}: event {e} after id {last_event:?} (hello {hello_id})"));
                }
                last_event = Some(id);
                match (e["type"].as_str(), e["data"]["match"]["match_id"].as_str()) {
                    (Some("match"), Some(id)) => {
                        if !expected.contains(&e["data"]["match"]) {
                            v.add(format!("{u}: match event for no acknowledged match of theirs: {e}"));
                        }
                        *seen.entry(id.to_string()).or_default() += 1;
                    }
                    _ => v.add(format!("{u} connection {k}: unexpected event {e}")),
                }
            }
            since = Some(last_event.unwrap_or(hello_id).max(hello_id));
        }
        for m in expected {
            let id = m["match_id"].as_str().unwrap_or_default();
            let n = seen.get(id).copied().unwrap_or(0);
            if n != 1 {
                v.add(format!("{u}: {n} match events for {id} over {} connection(s)", self.segments.borrow().len()));
            }
        }
    }
}

/// The final answer to a swipe retried (same `swipe_id`) until the cluster acknowledged it.
#[derive(Debug)]
struct Acknowledged {
    actor: String,
    status: u16,
    body: Value,
    /// Attempts that failed (5xx, or no answer) before it.
    failures: Vec<String>,
}

/// Sends a right swipe through a random route (nginx or a node not known dead), again with the same
/// `swipe_id` after a 5xx or a transport error, until a 2xx; `deadline` bounds it.
async fn swipe_until_acknowledged(
    routes: &[Api],
    dead: &Cell<Option<usize>>,
    (actor, token, target): (&str, &str, &str),
    rng: &RefCell<StdRng>,
    deadline: Instant,
) -> Acknowledged {
    let swipe_id = format!("{actor}-{target}");
    let mut failures = Vec::new();
    loop {
        let mut route = rng.borrow_mut().gen_range(0..routes.len());
        if dead.get().map(|d| d + 1) == Some(route) {
            route = 0;
        }
        match routes[route].try_swipe(token, target, &swipe_id).await {
            Some((status, body)) if (200..300).contains(&status) => {
                return Acknowledged { actor: actor.into(), status, body, failures };
            }
            Some((status, body)) if status >= 500 => failures.push(format!("route {route}: {status} {body}")),
            None => failures.push(format!("route {route}: no answer")),
            Some((status, body)) => panic!("{actor} -> {target}: refused with {status} {body}"),
        }
        assert!(Instant::now() < deadline, "{actor} -> {target} was never acknowledged: {failures:?}");
        actix_rt::time::sleep(Duration::from_millis(150)).await;
    }
}

#[actix_rt::test]
async fn a_node_killed_mid_load_loses_no_acknowledged_swipe_and_streams_resume_without_gaps() {
    a_node_killed_mid_load_loses_no_acknowledged_swipe_and_streams_resume_without_gaps_on(Backing::Redis).await;
}

#[actix_rt::test]
async fn a_node_killed_mid_load_loses_no_acknowledged_swipe_and_streams_resume_without_gaps_on_a_redis_cluster() {
    a_node_killed_mid_load_loses_no_acknowledged_swipe_and_streams_resume_without_gaps_on(Backing::RedisCluster).await;
}

async fn a_node_killed_mid_load_loses_no_acknowledged_swipe_and_streams_resume_without_gaps_on(backing: Backing) {
    const PAIRS: usize = 300;
    /// A pair starts every this often: the load runs for PAIRS * STEP.
    const STEP: Duration = Duration::from_millis(20);
    const VICTIM: usize = 2;
    let _trace = common::trace_init();
    let mut cluster = Cluster::start_on(NODES, backing).await;
    let lb = cluster.lb();
    let survivors: Vec<Api> = (0..NODES).filter(|&i| i != VICTIM).map(|i| cluster.api(i)).collect();
    let routes: Vec<Api> = std::iter::once(lb.clone()).chain((0..NODES).map(|i| cluster.api(i))).collect();
    let users: Vec<String> = (0..PAIRS).flat_map(|i| [format!("k{i}a"), format!("k{i}b")]).collect();
    let tokens = tokens(&lb, &users).await;

    // Every user streams through nginx (a tenth with a second device), resuming after drops.
    let stop = Rc::new(Cell::new(false));
    let mut streams: Vec<Rc<ResumingStream>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for _ in 0..if i % 10 == 7 { 2 } else { 1 } {
            let s = Rc::new(ResumingStream { user: u.clone(), segments: RefCell::default(), refused: Cell::new(0) });
            tasks.push(actix_rt::spawn(s.clone().run(lb.clone(), tokens[u].clone(), stop.clone())));
            streams.push(s);
        }
    }
    let deadline = Instant::now() + TIMEOUT;
    for s in &streams {
        loop {
            let ready = s.segments.borrow().iter().any(|c| !c.events().is_empty());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let tries: Vec<_> = s.segments.borrow().iter().map(|c| c.is_closed()).collect();
                panic!(
                    "{} got no hello ({} refused upgrades; {} connections, the last ones ended {:?}); nginx:\n{}",
                    s.user,
                    s.refused.get(),
                    tries.len(),
                    &tries[tries.len().saturating_sub(3)..],
                    cluster.nginx_output()
                );
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The load: both sides of pair i swipe at once, starting i * STEP in; the victim dies a third
    // of the way through.
    let dead: Cell<Option<usize>> = Cell::new(None);
    let started = Instant::now();
    let load = futures_util::future::join_all((0..PAIRS).map(|i| {
        let (routes, dead, tokens) = (&routes, &dead, &tokens);
        async move {
            tokio::time::sleep_until(started + STEP * i as u32).await;
            let rng = RefCell::new(StdRng::seed_from_u64(i as u64));
            let (a, b) = (format!("k{i}a"), format!("k{i}b"));
            let deadline = Instant::now() + Duration::from_secs(20);
            let (x, y) = tokio::join!(
                swipe_until_acknowledged(routes, dead, (&a, &tokens[&a], &b), &rng, deadline),
                swipe_until_acknowledged(routes, dead, (&b, &tokens[&b], &a), &rng, deadline),
            );
            (pair(&a, &b), [x, y])
        }
    }));
    let kill = async {
        tokio::time::sleep_until(started + STEP * (PAIRS as u32 / 3)).await;
        cluster.kill9(VICTIM);
        dead.set(Some(VICTIM));
    };
    let (outcomes, ()) = tokio::join!(load, kill);
    let load_time = started.elapsed();

    // The survivors agree the victim is gone.
    cluster.wait_converged(NODES - 1, Duration::from_secs(10)).await;

    // I1 and I7 over the answers: every pair's acknowledged likes made exactly one match.
    let mut v = Violations::default();
    let mut matches: HashMap<String, Value> = HashMap::new();
    let mut failed_attempts = 0;
    for (key, answers) in &outcomes {
        let named: BTreeSet<String> =
            answers.iter().filter(|a| !a.body["match"].is_null()).map(|a| a.body["match"].to_string()).collect();
        for a in answers {
            failed_attempts += a.failures.len();
            let status = a.body["status"].as_str().unwrap_or("?");
            let fields = a.body.as_object().map(|o| o.len()).unwrap_or(0);
            if a.status != 200 || fields != 2 || !(status == "pending" || status == "matched") {
                v.add(format!("{key:?}: {} got {} {}", a.actor, a.status, a.body));
            }
            if (status == "matched") == a.body["match"].is_null() {
                v.add(format!("{key:?}: {} got {} (status and match disagree)", a.actor, a.body));
            }
        }
        // When no answer was lost, the first like answered pending and the second matched.
        if answers.iter().all(|a| a.failures.is_empty()) {
            let pending = answers.iter().filter(|a| a.body["status"] == "pending").count();
            if pending != 1 {
                v.add(format!("{key:?}: {pending} sides answered pending: {answers:?}"));
            }
        }
        match named.len() {
            1 => {
                let m: Value = serde_json::from_str(named.first().unwrap()).unwrap();
                if m["users"] != json!([key.0, key.1]) || !m["match_id"].is_string() || !m["created_at"].is_u64() {
                    v.add(format!("{key:?}: bad match {m}"));
                }
                matches.insert(key.0.clone(), m.clone());
                matches.insert(key.1.clone(), m);
            }
            n => v.add(format!("{key:?}: both likes acknowledged, {n} matches named: {answers:?}")),
        }
    }
    v.assert_none("acknowledged swipe");

    // Every surviving node lists exactly that match for both users.
    let listings = bounded(
        CONCURRENCY,
        users.iter().map(|u| {
            let (survivors, tokens) = (&survivors, &tokens);
            async move {
                let mut per_node = Vec::new();
                for api in survivors {
                    per_node.push(api.matches(&tokens[u]).await);
                }
                (u.clone(), per_node)
            }
        }),
    )
    .await;
    for (u, per_node) in listings {
        for (n, listed) in per_node.iter().enumerate() {
            if listed != &vec![matches[&u].clone()] {
                v.add(format!("{u}: surviving node {n} lists {listed:?}, acknowledged {}", matches[&u]));
            }
        }
    }
    v.assert_none("match listing after the kill");

    // Every stream gets its user's match, once, across its reconnections (I2 with resume).
    let deadline = Instant::now() + Duration::from_secs(15);
    for s in &streams {
        let id = matches[&s.user]["match_id"].as_str().unwrap().to_string();
        while !s.match_ids().contains(&id) {
            if Instant::now() > deadline {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    stop.set(true);
    for t in tasks {
        t.await.unwrap();
    }
    let reconnected = streams.iter().filter(|s| s.segments.borrow().len() > 1).count();
    for s in &streams {
        s.check(&[matches[&s.user].clone()], &mut v);
    }
    v.assert_none("resumed stream");
    assert!(reconnected > 0, "no stream was on the killed node: the kill tested nothing");
    eprintln!(
        "{PAIRS} pairs, node {VICTIM} killed at {:?}: load {load_time:?}, {failed_attempts} failed attempts retried, \
         {reconnected} of {} streams reconnected",
        STEP * (PAIRS as u32 / 3),
        streams.len()
    );
}

#[actix_rt::test]
async fn a_node_paused_past_its_lease_does_not_commit_as_a_stale_owner_when_it_wakes() {
    a_node_paused_past_its_lease_does_not_commit_as_a_stale_owner_when_it_wakes_on(Backing::Redis).await;
}

#[actix_rt::test]
async fn a_node_paused_past_its_lease_does_not_commit_as_a_stale_owner_when_it_wakes_on_a_redis_cluster() {
    a_node_paused_past_its_lease_does_not_commit_as_a_stale_owner_when_it_wakes_on(Backing::RedisCluster).await;
}

async fn a_node_paused_past_its_lease_does_not_commit_as_a_stale_owner_when_it_wakes_on(backing: Backing) {
    const PAIRS: usize = 20;
    const PAUSED: usize = 0;
    let _trace = common::trace_init();
    let mut cluster = Cluster::start_on(NODES, backing).await;
    let (lb, paused) = (cluster.lb(), cluster.api(PAUSED));
    let others: Vec<Api> = (0..NODES).filter(|&i| i != PAUSED).map(|i| cluster.api(i)).collect();
    // Group w: a withdraws its like while the node sleeps. Group m: b likes back (a match).
    let names = |g: &str, i: usize| (format!("{g}{i}a"), format!("{g}{i}b"));
    let users: Vec<String> =
        (0..PAIRS).flat_map(|i| ["w", "m"].map(|g| names(g, i))).flat_map(|(a, b)| [a, b]).collect();
    let tokens = tokens(&lb, &users).await;
    let t = |u: &str| tokens[u].clone();

    // Warm every pair on the node about to be paused: those it owns, it has in memory, with a's like.
    for g in ["w", "m"] {
        for i in 0..PAIRS {
            let (a, b) = names(g, i);
            let (status, body) = paused.try_swipe(&t(&a), &b, "warm").await.unwrap();
            assert_eq!((status, &body["status"]), (200, &json!("pending")), "{a} -> {b}: {body}");
        }
    }

    cluster.pause(PAUSED);
    let paused_at = Instant::now();
    // Meanwhile, through the other nodes (retrying until the paused node's slots are taken over).
    let meanwhile = |api: Api, token: String, body: Value| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = api.post_json("/v1/swipes", Some(&token), &body).await;
            if r.status.as_u16() < 500 {
                return r;
            }
            assert!(Instant::now() < deadline, "never acknowledged while a node was paused: {r:?}");
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut decided: HashMap<String, Value> = HashMap::new();
    for i in 0..PAIRS {
        let api = &others[i % others.len()];
        let (a, b) = names("w", i);
        let body = json!({"target": b, "direction": "left", "swipe_id": "withdraw"});
        let withdrawn = meanwhile(api.clone(), t(&a), body).await;
        assert_eq!(withdrawn.ok(), json!({"status": "passed", "match": null}), "{a} withdrawing from {b}");
        let (a, b) = names("m", i);
        let body = json!({"target": a, "direction": "right", "swipe_id": "meanwhile"});
        let matched = meanwhile(api.clone(), t(&b), body).await.ok();
        assert_eq!(matched["status"], "matched", "{b} liking {a} back: {matched}");
        assert_eq!(matched["match"]["users"], json!([a, b]));
        decided.insert(a, matched["match"].clone());
    }
    cluster.wait_converged(NODES - 1, Duration::from_secs(10)).await;
    tokio::time::sleep_until(paused_at + Duration::from_millis(3 * TEST_LEASE_MS)).await;

    // Queued in the sleeping node's sockets, so they are the first thing it handles when it wakes:
    // its readiness, and swipes its stale memory would decide wrongly (w: a still likes b, so b's
    // like would match; m: no match yet, so b's like would make a second one).
    let node = cluster.node(PAUSED);
    let probe = node.send_raw("GET", "/readyz", None, None).expect("the paused node's socket is gone");
    let mut stale = Vec::new();
    for g in ["w", "m"] {
        for i in 0..PAIRS {
            let (a, b) = names(g, i);
            let body = json!({"target": a, "direction": "right", "swipe_id": "stale"}).to_string();
            let req = node.send_raw("POST", "/v1/swipes", Some(&t(&b)), Some(&body)).unwrap();
            stale.push((g, a, b, req));
        }
    }
    cluster.wake(PAUSED);
    let (status, body) = probe.read(TIMEOUT).expect("no answer to /readyz after waking");
    // 503 (not a member), or 408 when the HTTP layer's own request timer (started before the pause)
    // fired first: either way not ready, and nothing was processed.
    assert!(
        status == 503 || status == 408,
        "ready right after waking past its lease, before rejoining: {status} {body}"
    );
    let mut v = Violations::default();
    for (g, a, b, req) in stale {
        let Some((status, text)) = req.read(TIMEOUT) else {
            v.add(format!("{b} -> {a} on the woken node: no answer"));
            continue;
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let truth = match g {
            "w" => json!({"status": "pending", "match": null}),
            _ => json!({"status": "matched", "match": decided[&a]}),
        };
        // Refusing is right (it is not an owner any more; 408: the HTTP layer timed the request out
        // unprocessed); answering is right only with the truth.
        if !(status == 503 || status == 408 || (status == 200 && body == truth)) {
            v.add(format!("{b} -> {a} on the woken node: {status} {text}; the cluster decided {truth}"));
        }
    }
    v.assert_none("stale owner");

    // It rejoins; then every node, the woken one included, tells the state decided meanwhile.
    cluster.wait_converged(NODES, Duration::from_secs(15)).await;
    for i in 0..PAIRS {
        let (a, b) = names("w", i);
        for n in 0..NODES {
            let api = cluster.api(n);
            assert_eq!(api.matches(&t(&a)).await, Vec::<Value>::new(), "node {n}: {a} withdrew from {b}");
            assert_eq!(api.matches(&t(&b)).await, Vec::<Value>::new(), "node {n}: {a} withdrew from {b}");
        }
        let again = paused.swipe(&t(&b), &a, "right", Some("after")).await.ok();
        assert_eq!(again, json!({"status": "pending", "match": null}), "the woken node on {b} -> {a}");

        let (a, b) = names("m", i);
        for n in 0..NODES {
            let api = cluster.api(n);
            assert_eq!(api.matches(&t(&a)).await, vec![decided[&a].clone()], "node {n}: matches of {a}");
            assert_eq!(api.matches(&t(&b)).await, vec![decided[&a].clone()], "node {n}: matches of {b}");
        }
        let again = paused.swipe(&t(&a), &b, "right", Some("after")).await.ok();
        assert_eq!(again, json!({"status": "matched", "match": decided[&a]}), "the woken node on {a} -> {b}");
    }
}

/// The node-to-node endpoints act only for callers holding the cluster key: a client that reaches
/// them through the load balancer cannot swipe as someone else or read another user's stream.
#[actix_rt::test]
async fn internal_endpoints_refuse_callers_without_the_cluster_key() {
    let _trace = common::trace_init();
    let cluster = Cluster::start_on(1, Backing::Redis).await;
    let api = cluster.api(0);
    let forged = json!([{"call": "swipe", "msg": {"from": "mallory", "to": "victim", "direction": "right",
        "swipe_id": null, "request_id": 1}}]);
    let res = api.post_json("/internal/v1/calls", None, &forged).await;
    assert_eq!(res.status, 403, "{res:?}");
    assert_eq!(res.json()["error"]["code"], "forbidden");
    let req = api
        .request(awc::http::Method::POST, "/internal/v1/calls")
        .insert_header(("x-matchd-cluster-key", "guess"))
        .insert_header(("content-type", "application/json"));
    let res = api.send(req, Some(forged.to_string().into())).await;
    assert_eq!(res.status, 403, "{res:?}");
    let stream = api.send(api.request(awc::http::Method::GET, "/internal/v1/events?user=victim"), None).await;
    assert_eq!(stream.status, 403, "{stream:?}");
    // Nothing happened: the victim has no pending like from mallory.
    let victim = api.token("victim").await;
    let answer = api.swipe(&victim, "mallory", "right", None).await.ok();
    assert_eq!(answer, json!({"status": "pending", "match": null}));
}

/// Membership changes move only the share of slots they must: a node that joins takes ~1/3 and
/// the others only give slots up; a node that stops gracefully leaves at once (no lease wait) and
/// only its slots move. Matches made before survive both, on every node.
#[actix_rt::test]
async fn a_joining_or_leaving_node_moves_only_its_share_of_slots_and_nothing_is_lost() {
    const PAIRS: usize = 100;
    let _trace = common::trace_init();
    let mut cluster = Cluster::start_on(2, Backing::Redis).await;
    let api = cluster.api(0);
    let mut matches = Vec::new();
    for i in 0..PAIRS {
        matches.push((format!("j{i}a"), api.mutual_match(&format!("j{i}a"), &format!("j{i}b")).await));
    }
    let owned = |c: &Cluster, i: usize| c.owned_slots(i).unwrap_or_else(|| panic!("node {i} is not ready"));
    let before = [owned(&cluster, 0), owned(&cluster, 1)];
    assert_eq!(before[0] + before[1], 16_384);

    let joined = cluster.add_node();
    cluster.wait_converged(3, Duration::from_secs(20)).await;
    let after = [owned(&cluster, 0), owned(&cluster, 1), owned(&cluster, joined)];
    assert_eq!(after.iter().sum::<u64>(), 16_384, "{after:?}");
    assert!(after[0] <= before[0] && after[1] <= before[1], "an old node gained slots: {before:?} -> {after:?}");
    assert!((4_500..6_500).contains(&after[2]), "the new node took {} slots", after[2]);
    // The dashboard of any node lists every member with the slots it owns.
    let data = cluster
        .api(joined)
        .send(cluster.api(joined).request(awc::http::Method::GET, "/dashboard/data"), None)
        .await
        .ok();
    let nodes = data["nodes"].as_array().unwrap_or_else(|| panic!("no nodes in {data}"));
    assert_eq!(nodes.len(), 3, "{data}");
    let slots: Vec<u64> = nodes.iter().map(|n| n["owned_slots"].as_u64().unwrap()).collect();
    assert_eq!(slots.iter().sum::<u64>(), 16_384, "{data}");
    let mine = nodes.iter().find(|n| n["self"] == true).unwrap_or_else(|| panic!("no self in {data}"));
    assert_eq!(mine["owned_slots"].as_u64(), Some(after[2]), "{data}");
    assert_eq!(data["node"]["mode"], "cluster");

    let started = Instant::now();
    cluster.stop(1, Duration::from_secs(15)).await;
    cluster.wait_converged(2, Duration::from_secs(20)).await;
    let left_after = started.elapsed();
    let last = [owned(&cluster, 0), owned(&cluster, joined)];
    assert_eq!(last[0] + last[1], 16_384);
    assert!(last[0] >= after[0] && last[1] >= after[2], "a remaining node lost slots: {after:?} -> {last:?}");

    for n in [0, joined] {
        let api = cluster.api(n);
        for (user, m) in &matches {
            let token = api.token(user).await;
            assert_eq!(api.matches(&token).await, vec![m.clone()], "node {n} lost {user}'s match");
        }
    }
    eprintln!("slots {before:?} -> {after:?} -> {last:?}; graceful leave converged in {left_after:?}");
}

/// A node stopped with SIGTERM hands its slots over before it closes its streams: when a stream
/// gets 1012, the remaining nodes already own every slot, so the reconnect and the user's first
/// request find ready owners (no 503), and the resumed streams miss nothing and carry on.
#[actix_rt::test]
async fn a_node_stopped_gracefully_hands_its_slots_over_before_closing_its_streams() {
    a_node_stopped_gracefully_hands_its_slots_over_before_closing_its_streams_on(Backing::Redis).await;
}

#[actix_rt::test]
async fn a_node_stopped_gracefully_hands_its_slots_over_before_closing_its_streams_on_a_redis_cluster() {
    a_node_stopped_gracefully_hands_its_slots_over_before_closing_its_streams_on(Backing::RedisCluster).await;
}

async fn a_node_stopped_gracefully_hands_its_slots_over_before_closing_its_streams_on(backing: Backing) {
    const PAIRS: usize = 20;
    const LEAVER: usize = 2;
    let _trace = common::trace_init();
    let mut cluster = Cluster::start_on(NODES, backing).await;
    let (leaver, stayer, other) = (cluster.api(LEAVER), cluster.api(0), cluster.api(1));
    let users: Vec<String> = (0..PAIRS).flat_map(|i| [format!("g{i}a"), format!("g{i}b")]).collect();
    let tokens = tokens(&stayer, &users).await;
    let mut matches = HashMap::new();
    for i in 0..PAIRS {
        let (a, b) = (format!("g{i}a"), format!("g{i}b"));
        let m = stayer.mutual_match(&a, &b).await;
        matches.insert(a, m.clone());
        matches.insert(b, m);
    }
    // Every user streams from the leaving node (relayed there for users other nodes own).
    let conns = bounded(CONCURRENCY, users.iter().map(|u| connect(&leaver, &tokens[u]))).await;
    for c in &conns {
        assert_eq!(c.last_id(), 1, "{c:?}: the hello names the match event");
    }
    // And a second device on one of the nodes that stay: its socket's node is not restarted, so it
    // must not be closed at all (a relay follows its user to the new owner).
    let stays = bounded(
        CONCURRENCY,
        users.iter().enumerate().map(|(n, u)| {
            let api = if n % 2 == 0 { stayer.clone() } else { other.clone() };
            let token = tokens[u].clone();
            async move { connect(&api, &token).await }
        }),
    )
    .await;

    cluster.terminate(LEAVER);
    // The first close: by then the two others must be settled owners of all 16,384 slots.
    let first =
        futures_util::future::select_all(conns.iter().map(|c| Box::pin(c.closed(Duration::from_secs(15))))).await.0;
    let views: Vec<Option<(u16, Value)>> = [0, 1].into_iter().map(|i| cluster.readyz(i)).collect();
    assert_eq!(first.code, Some(1012), "{first:?}");
    let mut owned = 0;
    for (i, view) in views.iter().enumerate() {
        match view {
            Some((200, body)) if body["members"] == 2 => owned += body["owned_slots"].as_u64().unwrap_or(0),
            _ => panic!(
                "node {i} was not a settled member of the two-node view when the leaver closed a stream: {view:?}"
            ),
        }
    }
    assert_eq!(owned, 16_384, "{views:?}");
    for c in &conns {
        let closed = c.closed(Duration::from_secs(15)).await;
        assert_eq!(closed.code, Some(1012), "{c:?}: {closed:?}");
    }

    // The first request of each user, through either remaining node, is answered at once.
    for (n, u) in users.iter().enumerate() {
        let api = if n % 2 == 0 { &stayer } else { &other };
        let listed = api.get("/v1/matches", &tokens[u]).await;
        assert_eq!(listed.status.as_u16(), 200, "{u}'s first request after the hand-over: {:?}", listed.json());
        assert_eq!(listed.json()["matches"], json!([matches[u].clone()]), "{u}");
    }
    // Streams resume where they were and carry on: an unmatch reaches both members, next in line.
    let resumed = bounded(
        CONCURRENCY,
        users.iter().zip(&conns).enumerate().map(|(n, (u, old))| {
            let api = if n % 2 == 0 { stayer.clone() } else { other.clone() };
            let (token, since) = (tokens[u].clone(), old.last_id());
            async move {
                let conn = api.ws_with(&token, WsOptions { since: Some(since), ..WsOptions::default() }).await;
                let conn = conn.unwrap_or_else(|e| panic!("reconnect refused: {e:?}"));
                conn.recv_event("hello", TIMEOUT).await;
                (conn, since)
            }
        }),
    )
    .await;
    for i in 0..PAIRS {
        let a = format!("g{i}a");
        let id = matches[&a]["match_id"].as_str().unwrap_or_default().to_string();
        assert_eq!(stayer.unmatch(&tokens[&a], &id).await.status.as_u16(), 200);
    }
    for (u, (conn, since)) in users.iter().zip(&resumed) {
        let e = conn.recv_event("unmatched", TIMEOUT).await;
        assert_eq!(e["id"].as_u64(), Some(since + 1), "{u}: the resumed stream skipped or repeated an event");
    }
    for (u, conn) in users.iter().zip(&stays) {
        let e = conn.recv_event("unmatched", TIMEOUT).await;
        assert_eq!(e["id"].as_u64(), Some(2), "{u}: the staying device skipped or repeated an event");
        assert!(conn.is_closed().is_none(), "{u}: a stream on a node that stayed was closed: {:?}", conn.is_closed());
    }
    cluster.wait_exit(LEAVER, Duration::from_secs(15)).await;
}

/// A user's queue place moves with the user. When a node leaves, the users it owned are loaded by
/// their new owners still queued, whether or not their pool moved too: a join elsewhere is refused
/// as for any queued user, and a leave answers `left` and empties their line.
#[actix_rt::test]
async fn queue_places_move_with_their_users_when_a_node_leaves() {
    use matchd::cluster::{Member, Ownership};
    use matchd::coord::slot::{name_slot, user_slot};
    const USERS: usize = 60;
    const LEAVER: usize = 2;
    let _trace = common::trace_init();
    let mut cluster = Cluster::start_on(NODES, Backing::Redis).await;
    let api = cluster.api(0);
    let users: Vec<String> = (0..USERS).map(|i| format!("q{i}")).collect();
    let pool = |i: usize| format!("solo{i}");
    let tokens = tokens(&api, &users).await;
    // Connected, as waiting users are (a place with nobody connected ends after the grace).
    let _conns = bounded(CONCURRENCY, users.iter().map(|u| connect(&api, &tokens[u]))).await;
    for (i, u) in users.iter().enumerate() {
        let joined = api.post_json("/v1/queue", Some(&tokens[u]), &json!({ "pool": pool(i) })).await;
        assert_eq!(joined.status.as_u16(), 202, "{u}: {:?}", joined.json());
    }
    // Which users move while their pool stays: the case only the stored place covers.
    let view = |i: usize| cluster.readyz(i).unwrap_or_else(|| panic!("node {i} answers /readyz")).1;
    let ids: Vec<String> = view(0)["member_ids"]
        .as_array()
        .expect("member ids")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let leaver = view(LEAVER)["node"].as_str().expect("node id").to_string();
    let table =
        Ownership::new(ids.iter().map(|id| Member { id: id.as_str().into(), url: "http://unused".into() }).collect());
    let left_by_leaver = |slot: u16| table.owned_by(slot, &leaver);
    let moved_alone = (0..USERS)
        .filter(|i| {
            let user = matchd::protocol::UserId::parse(&users[*i]).expect("user id");
            left_by_leaver(user_slot(&user)) && !left_by_leaver(name_slot(&pool(*i)))
        })
        .count();
    assert!(moved_alone > 0, "some user must move without their pool (ids {ids:?}, leaver {leaver})");

    cluster.stop(LEAVER, Duration::from_secs(15)).await;
    cluster.wait_converged(NODES - 1, Duration::from_secs(15)).await;
    for (i, u) in users.iter().enumerate() {
        let elsewhere = api.post_json("/v1/queue", Some(&tokens[u]), &json!({ "pool": "elsewhere" })).await;
        assert_eq!(elsewhere.status.as_u16(), 409, "{u} is still queued in {}: {:?}", pool(i), elsewhere.json());
        let left = api.delete("/v1/queue", &tokens[u]).await;
        assert_eq!(left.json()["status"], "left", "{u} ({moved_alone} moved without their pool): {:?}", left.json());
        let line = api.get(&format!("/v1/queue/{}", pool(i)), &tokens[u]).await;
        assert_eq!(line.json()["waiting"], 0, "{u}'s line after the leave: {:?}", line.json());
    }
}
