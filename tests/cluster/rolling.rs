//! Changes to a three-node cluster behind nginx under swipe, room and stream load. A rolling
//! restart of every node: each node in turn gets SIGTERM (it hands its slots over, then closes its streams
//! with 1012), comes back on the same port, and the next one goes once the cluster has converged.
//! No room is closed by the server, no acknowledged swipe is lost or doubled, every stream is one
//! ordered log across its reconnections, and a client is closed only when the node its own socket
//! is on restarts (streams relayed from a restarting owner follow their user). A fourth node
//! joining: the same, and no stream is closed at all. Throughout, pairs spin through fresh rooms
//! as fast as they can (join, skip, leave at once, racing the server's requeue): every leave ends
//! out of line and nobody is left in any line or in a place they were told they left (I4).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{swipe_until_acknowledged, tokens, CONCURRENCY, NODES};
use crate::common::clients::Reply;
use crate::common::cluster::{Backing, Cluster};
use crate::common::history::pair;
use crate::common::{self, bounded_in_order, Api, Conn, WsOptions, TIMEOUT};
use awc::http::Method;

const ROOMS: usize = 45;
/// Pairs that spin through fresh rooms as fast as they can while the nodes change.
const CHURN_PAIRS: usize = 10;
const SWIPE_PAIRS: usize = 200;
/// A swipe pair starts every this often, so the swipes span the whole rolling restart.
const STEP: Duration = Duration::from_millis(60);

/// One room member's stream: the segments it had, each on one node, reconnecting to the next
/// node when closed.
struct Member {
    user: String,
    token: String,
    segments: RefCell<Vec<(usize, Rc<Conn>)>>,
    /// From each close to the next segment's `hello` (reconnect to resumed).
    away: RefCell<Vec<Duration>>,
}

impl Member {
    fn events(&self) -> Vec<Value> {
        self.segments.borrow().iter().flat_map(|(_, c)| c.events()).filter(|e| e["type"] != "hello").collect()
    }

    fn current(&self) -> Option<Rc<Conn>> {
        self.segments.borrow().last().map(|(_, c)| c.clone())
    }
}

/// Keeps `m`'s stream open: on a close it reconnects to the next node not restarting, resuming
/// after its last id. A close of a socket whose node is not the one restarting is a violation.
async fn follow(
    m: Rc<Member>,
    apis: Vec<Api>,
    first: usize,
    restarting: Rc<Cell<Option<usize>>>,
    stop: Rc<Cell<bool>>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut node = first;
    let mut closed_at: Option<Instant> = None;
    while !stop.get() {
        if restarting.get() == Some(node) {
            node = (node + 1) % apis.len();
        }
        let since = m.segments.borrow().last().map(|(_, c)| c.last_id());
        let opts = WsOptions { since, ..WsOptions::default() };
        let conn = match apis[node].ws_with(&m.token, opts).await {
            Ok(conn) => conn,
            Err(_) => {
                node = (node + 1) % apis.len();
                actix_rt::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let hello = conn.wait_or_closed(TIMEOUT, "hello", |f| f.iter().find(|f| f["type"] == "hello").cloned()).await;
        let Ok(hello) = hello else {
            node = (node + 1) % apis.len();
            continue;
        };
        if hello["data"]["gap"] != json!(false) {
            wrong.push(format!("{}: resumed with a gap: {hello}", m.user));
        }
        if let Some(at) = closed_at.take() {
            m.away.borrow_mut().push(at.elapsed());
        }
        m.segments.borrow_mut().push((node, Rc::new(conn)));
        loop {
            if stop.get() {
                return wrong;
            }
            let closed = m.current().and_then(|c| c.is_closed());
            if let Some(closed) = closed {
                closed_at = Some(Instant::now());
                if restarting.get() != Some(node) {
                    wrong.push(format!(
                        "{}: its socket on node {node} was closed ({closed:?}) while {:?} restarted",
                        m.user,
                        restarting.get()
                    ));
                }
                node = (node + 1) % apis.len();
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wrong
}

/// An answer to an action that may meet a restarting node or a moving owner: retried (through
/// the next route) on 502-504 or no answer, after a pause on 429; anything else is returned. Every
/// action retried here is idempotent (a join, a skip, a leave).
async fn until_answered(routes: &[Api], method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        let reply = routes[n % routes.len()].try_send(method.clone(), path, token, body.as_ref()).await;
        n += 1;
        match reply.as_ref().map(|r| r.status.as_u16()) {
            None | Some(502..=504) => actix_rt::time::sleep(Duration::from_millis(50)).await,
            Some(429) => actix_rt::time::sleep(Duration::from_secs(1)).await,
            Some(_) => return reply.expect("an answer"),
        }
        assert!(Instant::now() < deadline, "{method} {path}: no answer within 30 s: {reply:?}");
    }
}

/// Spin churn (I4 under change): both members of a pair join a fresh pool and are paired, one
/// skips without requeue (the other is requeued by the server), and the other leaves at once,
/// racing its own requeue. Each leave must end in `left` or `not_queued`, after which the user is
/// in no line: checked per pool at the end, and by a last join elsewhere that must not be refused.
/// Returns the pools used, and a list of what went wrong.
async fn churn(
    k: usize,
    routes: Vec<Api>,
    tokens: HashMap<String, String>,
    stop: Rc<Cell<bool>>,
) -> (Vec<String>, Vec<String>) {
    let (a, b) = (format!("c{k}a"), format!("c{k}b"));
    let (ta, tb) = (tokens[&a].clone(), tokens[&b].clone());
    let mut pools = Vec::new();
    let mut wrong = Vec::new();
    let mut round = 0;
    let mut trail: Vec<String> = Vec::new();
    while !stop.get() {
        let pool = format!("churn{k}-{round}");
        round += 1;
        pools.push(pool.clone());
        // (Right after its own skip, a's shard may not have heard its room close yet: 409 `in room`.)
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            let first = until_answered(&routes, Method::POST, "/v1/queue", &ta, Some(json!({"pool": pool}))).await;
            if first.status.as_u16() != 409 || Instant::now() > deadline {
                break first;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        };
        if first.status.as_u16() != 202 {
            wrong.push(format!("{a} joining {pool}: {first:?}"));
            break;
        }
        let second = until_answered(&routes, Method::POST, "/v1/queue", &tb, Some(json!({"pool": pool}))).await;
        let Some(room) = second.json()["room"]["room_id"].as_str().map(str::to_string) else {
            wrong.push(format!("{b} joining {pool} was not paired with {a}: {second:?} (its last leave: {trail:?})"));
            break;
        };
        // (The join answers with the room as the pool makes it; its pair's owner may hear of it a
        // moment later: 404 until then.)
        let deadline = Instant::now() + Duration::from_secs(10);
        let skip = loop {
            let path = format!("/v1/rooms/{room}/skip");
            let skip = until_answered(&routes, Method::POST, &path, &ta, Some(json!({"requeue": false}))).await;
            if skip.status.as_u16() != 404 || Instant::now() > deadline {
                break skip;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        };
        if skip.json()["status"] != "skipped" {
            wrong.push(format!("{a} skipping {room}: {skip:?}"));
            break;
        }
        // b leaves at once: while its room change is on its way it hears `in_room`, then its
        // requeue may be in flight; it asks again until it is out.
        let deadline = Instant::now() + Duration::from_secs(10);
        trail.clear();
        loop {
            let left = until_answered(&routes, Method::DELETE, "/v1/queue", &tb, None).await;
            trail.push(left.json()["status"].to_string());
            match left.json()["status"].as_str() {
                Some("left") | Some("not_queued") => break,
                Some("in_room") if Instant::now() < deadline => actix_rt::time::sleep(Duration::from_millis(10)).await,
                _ => {
                    wrong.push(format!("{b} leaving {pool} after the skip of {room}: {left:?}"));
                    return (pools, wrong);
                }
            }
        }
    }
    (pools, wrong)
}

/// Waits until `m`'s stream (across its reconnections) has `n` events of `kind`; returns the n-th.
async fn nth_event(m: &Member, kind: &str, n: usize) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(e) = m.events().into_iter().filter(|e| e["type"] == kind).nth(n - 1) {
            return e;
        }
        assert!(Instant::now() < deadline, "{}: no {kind} #{n}; events {:?}", m.user, m.events());
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// What changes under the load.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Every node in turn: SIGTERM, back on the same port, converged before the next.
    RollingRestart,
    /// A fourth node joins (not behind nginx) and takes its share of slots.
    Join,
}

#[actix_rt::test]
async fn a_rolling_restart_under_load_closes_no_room_and_loses_nothing() {
    under_load(Change::RollingRestart).await;
}

/// A node joining under load takes its slots without closing any stream: every user who moved
/// keeps their connection (relayed from the new node).
#[actix_rt::test]
async fn a_node_joining_under_load_closes_no_room_and_no_stream() {
    under_load(Change::Join).await;
}

async fn under_load(change: Change) {
    let _trace = common::trace_init();
    let mut cluster = Cluster::start_on(NODES, Backing::Redis).await;
    let lb = cluster.lb();
    let apis: Vec<Api> = (0..NODES).map(|i| cluster.api(i)).collect();
    let room_users: Vec<String> = (0..ROOMS).flat_map(|i| [format!("r{i}a"), format!("r{i}b")]).collect();
    let swipe_users: Vec<String> = (0..SWIPE_PAIRS).flat_map(|i| [format!("s{i}a"), format!("s{i}b")]).collect();
    let churn_users: Vec<String> = (0..CHURN_PAIRS).flat_map(|k| [format!("c{k}a"), format!("c{k}b")]).collect();
    let all: Vec<String> = room_users.iter().chain(&swipe_users).chain(&churn_users).cloned().collect();
    let tokens = tokens(&lb, &all).await;

    // Room members stream from node (member index mod 3), then meet in their own pool.
    let restarting: Rc<Cell<Option<usize>>> = Rc::new(Cell::new(None));
    let stop = Rc::new(Cell::new(false));
    let members: Vec<Rc<Member>> = room_users
        .iter()
        .map(|u| {
            Rc::new(Member {
                user: u.clone(),
                token: tokens[u].clone(),
                segments: RefCell::default(),
                away: RefCell::default(),
            })
        })
        .collect();
    let followers: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| actix_rt::spawn(follow(m.clone(), apis.clone(), i % NODES, restarting.clone(), stop.clone())))
        .collect();
    for m in &members {
        let deadline = Instant::now() + TIMEOUT;
        while m.segments.borrow().is_empty() {
            assert!(Instant::now() < deadline, "{} never connected", m.user);
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let rooms: Vec<String> = bounded_in_order(
        CONCURRENCY,
        (0..ROOMS).map(|i| {
            let (lb, tokens) = (&lb, &tokens);
            async move { lb.meet(&tokens[&format!("r{i}a")], &tokens[&format!("r{i}b")], &format!("roll{i}")).await }
        }),
    )
    .await;
    for (i, m) in members.iter().enumerate() {
        let Some(conn) = m.current() else { panic!("{} has no stream", m.user) };
        let e = conn.recv_event("room_assigned", TIMEOUT).await;
        assert_eq!(e["data"]["room"]["room_id"], json!(rooms[i / 2]), "{}", m.user);
    }

    // The swipe load, through nginx and the nodes not restarting, while each node restarts in turn.
    let routes: Vec<Api> = std::iter::once(lb.clone()).chain(apis.iter().cloned()).collect();
    let dead: Cell<Option<usize>> = Cell::new(None);
    let started = Instant::now();
    let load = futures_util::future::join_all((0..SWIPE_PAIRS).map(|i| {
        let (routes, dead, tokens) = (&routes, &dead, &tokens);
        async move {
            tokio::time::sleep_until(started + STEP * i as u32).await;
            let rng = RefCell::new(StdRng::seed_from_u64(i as u64));
            let (a, b) = (format!("s{i}a"), format!("s{i}b"));
            let deadline = Instant::now() + Duration::from_secs(30);
            let t = Instant::now();
            let (x, y) = tokio::join!(
                swipe_until_acknowledged(routes, dead, (&a, &tokens[&a], &b), &rng, deadline),
                swipe_until_acknowledged(routes, dead, (&b, &tokens[&b], &a), &rng, deadline),
            );
            (pair(&a, &b), [x, y], t.elapsed())
        }
    }));
    let roll = async {
        let mut took = Vec::new();
        if change == Change::Join {
            tokio::time::sleep(STEP * (SWIPE_PAIRS as u32 / 3)).await;
            let t = Instant::now();
            cluster.add_node();
            cluster.wait_converged(NODES + 1, Duration::from_secs(20)).await;
            took.push(t.elapsed());
            return took;
        }
        for n in 0..NODES {
            let t = Instant::now();
            restarting.set(Some(n));
            dead.set(Some(n));
            cluster.restart_gracefully(n, Duration::from_secs(20)).await;
            cluster.wait_converged(NODES, Duration::from_secs(20)).await;
            dead.set(None);
            // Streams closed by this restart have reconnected elsewhere before the next one.
            actix_rt::time::sleep(Duration::from_millis(500)).await;
            restarting.set(None);
            took.push(t.elapsed());
        }
        took
    };
    // Spin churn through nginx and every node, until the changes are done.
    let churning = Rc::new(Cell::new(false));
    let churns = futures_util::future::join_all(
        (0..CHURN_PAIRS).map(|k| churn(k, routes.clone(), tokens.clone(), churning.clone())),
    );
    let roll = async {
        let took = roll.await;
        churning.set(true);
        took
    };
    let (outcomes, took, churned) = tokio::join!(load, roll, churns);
    let load_time = started.elapsed();

    // I4 under churn: every churn user who left is in no line and in no room.
    let mut churn_rounds = 0;
    for (k, (pools, wrong)) in churned.iter().enumerate() {
        churn_rounds += pools.len();
        for pool in pools {
            let line = lb.get(&format!("/v1/queue/{pool}"), &tokens[&format!("c{k}a")]).await;
            if line.json()["waiting"] != 0 {
                // Who is it, and what do their shards think?
                let mut who = Vec::new();
                for u in [format!("c{k}a"), format!("c{k}b")] {
                    who.push(format!("{u}: {:?}", lb.delete("/v1/queue", &tokens[&u]).await));
                }
                panic!("churn pair {k}: {pool} still holds someone: {line:?}; leaving now: {who:?}; {wrong:?}");
            }
        }
        assert!(wrong.is_empty(), "churn pair {k}: {wrong:?}");
    }
    for u in &churn_users {
        let last = lb.post_json("/v1/queue", Some(&tokens[u]), &json!({"pool": format!("last-{u}")})).await;
        assert_eq!(last.status.as_u16(), 202, "{u} after churning is placed somewhere: {last:?}");
        let left = lb.delete("/v1/queue", &tokens[u]).await;
        assert_eq!(left.json()["status"], "left", "{u}: {left:?}");
    }

    // I1, I7: every pair's acknowledged likes named one match, listed by both users on every node.
    let mut failures = 0;
    let mut latencies = Vec::new();
    let mut expected: HashMap<String, Value> = HashMap::new();
    for (key, answers, took) in &outcomes {
        latencies.push(*took);
        failures += answers.iter().map(|a| a.failures.len()).sum::<usize>();
        let named: BTreeSet<String> =
            answers.iter().filter(|a| !a.body["match"].is_null()).map(|a| a.body["match"].to_string()).collect();
        assert_eq!(named.len(), 1, "{key:?}: {answers:?}");
        let m: Value = serde_json::from_str(named.first().unwrap_or(&String::new())).unwrap_or(Value::Null);
        expected.insert(key.0.clone(), m.clone());
        expected.insert(key.1.clone(), m);
    }
    // (A match decided for a user owned by another node reaches that user's index a moment
    // after the answer: poll briefly.)
    for u in &swipe_users {
        for (n, api) in apis.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let listed = api.matches(&tokens[u]).await;
                if listed == vec![expected[u].clone()] {
                    break;
                }
                assert!(Instant::now() < deadline, "{u} on node {n} lists {listed:?}, acknowledged {}", expected[u]);
                actix_rt::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // Every room is still open and works: a skip reaches the partner, once.
    for (i, room) in rooms.iter().enumerate() {
        let (a, b) = (&members[2 * i], &members[2 * i + 1]);
        let answer = lb.post_json(&format!("/v1/rooms/{room}/skip"), Some(&a.token), &json!({"requeue": false})).await;
        assert_eq!(answer.ok()["status"], "skipped", "{}", a.user);
        let Some(conn) = b.current() else { panic!("{} has no stream", b.user) };
        let closed = conn.recv_event("room_closed", TIMEOUT).await;
        assert_eq!(closed["data"], json!({"room_id": room, "reason": "partner_skipped"}), "{}", b.user);
        let own = nth_event(a, "room_closed", 1).await;
        assert_eq!(own["data"], json!({"room_id": room, "reason": "skipped"}), "{}", a.user);
    }
    stop.set(true);
    let mut wrong = Vec::new();
    for f in followers {
        wrong.extend(f.await.unwrap_or_default());
    }
    // Nobody heard of a room closed by the server; each stream is one ordered log.
    let mut away = Vec::new();
    let mut reconnects = 0;
    for m in &members {
        let events = m.events();
        let closes: Vec<&Value> = events.iter().filter(|e| e["type"] == "room_closed").collect();
        // Only the skip closed the room: `skipped` to the one who skipped, `partner_skipped` to the other.
        let reason = if m.user.ends_with('a') { "skipped" } else { "partner_skipped" };
        let reasons: Vec<&Value> = closes.iter().map(|c| &c["data"]["reason"]).collect();
        assert_eq!(reasons, vec![&json!(reason)], "{}: room closes {closes:?}", m.user);
        let ids: Vec<u64> = events.iter().filter_map(|e| e["id"].as_u64()).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{}: ids across reconnections: {ids:?}", m.user);
        reconnects += m.segments.borrow().len() - 1;
        away.extend(m.away.borrow().iter().copied());
    }
    assert!(wrong.is_empty(), "{wrong:?}");
    if change == Change::Join {
        assert_eq!(reconnects, 0, "streams were closed although no node they were on stopped");
    }
    eprintln!(
        "{}: node changes took {took:?} (load {load_time:?}); {SWIPE_PAIRS} pairs: {failures} failed \
         attempts (503 or no answer), swipe-pair p50 {:?} p99 {:?}; {} room streams: {reconnects} reconnects, \
         away p50 {:?} p99 {:?}; {churn_rounds} churn rounds",
        if change == Change::Join { "4th node joining" } else { "rolling restart" },
        percentile(latencies.clone(), 0.5),
        percentile(latencies, 0.99),
        members.len(),
        percentile(away.clone(), 0.5),
        percentile(away, 0.99),
    );
}
