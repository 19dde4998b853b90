//! Mutual swipes and matches: simultaneous swipes of thousands of pairs (I1, I2, I3 over the whole
//! history), and unmatch.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::common::history::{History, SwipeRecord};
use crate::common::{self, Api, Conn, TestServer, TIMEOUT};

/// Mutual pairs in the race test.
const PAIRS: usize = 2000;
/// Swipe groups (pairs) in flight at once, and streams opened at once.
const CONCURRENCY: usize = 48;

/// When a swipe is sent again with the same `swipe_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    /// Released by the same barrier as the original: the two race.
    Concurrent,
    /// After the original's answer (a client that timed out and retries).
    After,
}

#[derive(Debug, Clone)]
struct Planned {
    actor: String,
    target: String,
    direction: &'static str,
    swipe_id: String,
    retry: Retry,
    /// Sent as a WebSocket `swipe` action on one of the actor's connections instead of HTTP.
    via_ws: bool,
}

/// Sends one planned swipe (or its retry) and records the answer.
async fn send_swipe(
    api: &Api,
    tokens: &HashMap<String, String>,
    conns: &HashMap<String, Vec<Rc<Conn>>>,
    history: &History,
    s: &Planned,
    retry: bool,
) {
    let (status, body) = if s.via_ws {
        let conn = &conns[&s.actor][0];
        let reply = conn
            .request(json!({"type": "swipe", "target": s.target, "direction": s.direction, "swipe_id": s.swipe_id}))
            .await;
        match reply["type"].as_str() {
            Some("ack") => (200, reply["data"].clone()),
            _ => (0, reply),
        }
    } else {
        let reply = api.swipe(&tokens[&s.actor], &s.target, s.direction, Some(&s.swipe_id)).await;
        (reply.status.as_u16(), reply.json())
    };
    history.record_swipe(SwipeRecord {
        actor: s.actor.clone(),
        target: s.target.clone(),
        direction: s.direction.to_string(),
        swipe_id: Some(s.swipe_id.clone()),
        retry,
        via: if s.via_ws { "ws" } else { "http" },
        status,
        body,
    });
}

/// Fires a group of swipes (both sides of a pair, plus concurrent retries) at the same instant.
async fn run_group(
    api: &Api,
    tokens: &HashMap<String, String>,
    conns: &HashMap<String, Vec<Rc<Conn>>>,
    history: &History,
    group: &[Planned],
) {
    let concurrent = group.iter().filter(|s| s.retry == Retry::Concurrent).count();
    let barrier = Barrier::new(group.len() + concurrent);
    let barrier = &barrier;
    let mut tasks = Vec::new();
    for s in group {
        tasks.push(Box::pin(async move {
            barrier.wait().await;
            send_swipe(api, tokens, conns, history, s, false).await;
            if s.retry == Retry::After {
                send_swipe(api, tokens, conns, history, s, true).await;
            }
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>);
        if s.retry == Retry::Concurrent {
            tasks.push(Box::pin(async move {
                barrier.wait().await;
                send_swipe(api, tokens, conns, history, s, true).await;
            }));
        }
    }
    futures_util::future::join_all(tasks).await;
}

fn plan(actor: &str, target: &str, direction: &'static str, rng: &mut StdRng) -> Planned {
    // 20% of swipes are retried with the same swipe_id; half of those race their original.
    let retry = match rng.gen_range(0..10) {
        0 => Retry::Concurrent,
        1 => Retry::After,
        _ => Retry::No,
    };
    Planned {
        actor: actor.to_string(),
        target: target.to_string(),
        direction,
        swipe_id: format!("{actor}-{target}"),
        retry,
        via_ws: rng.gen_range(0..10) == 0,
    }
}

#[actix_rt::test]
async fn simultaneous_mutual_swipes_make_exactly_one_match_per_pair() {
    let _trace = common::trace_init();
    let started = Instant::now();
    let mut config = common::config();
    config.limits.max_connections_per_user = 4;
    let server = TestServer::start(config).await;
    let api = server.api();
    let history = History::default();
    let mut rng = StdRng::seed_from_u64(0x5eed);

    let users: Vec<String> = (0..PAIRS).flat_map(|i| [format!("a{i}"), format!("b{i}")]).collect();
    let tokens: HashMap<String, String> = common::bounded(
        CONCURRENCY,
        users.iter().map(|u| {
            let api = &api;
            async move { (u.clone(), api.token(u).await) }
        }),
    )
    .await
    .into_iter()
    .collect();

    // Every user is connected before the first swipe; 10% have a second tab.
    let tabs: Vec<&String> =
        users.iter().enumerate().flat_map(|(i, u)| std::iter::repeat_n(u, if i % 10 == 3 { 2 } else { 1 })).collect();
    let opened = common::bounded(
        CONCURRENCY,
        tabs.iter().map(|u| {
            let (api, tokens) = (&api, &tokens);
            async move {
                let conn = api.ws(&tokens[*u]).await;
                conn.recv_event("hello", TIMEOUT).await;
                ((*u).clone(), Rc::new(conn))
            }
        }),
    )
    .await;
    let mut conns: HashMap<String, Vec<Rc<Conn>>> = HashMap::new();
    for (u, c) in opened {
        conns.entry(u).or_default().push(c);
    }
    let connected = started.elapsed();

    // The groups: 2,000 mutual pairs, and pairs that must never match: 200 one-sided right
    // swipes, 100 right-against-left races, 100 lone left swipes.
    let mut groups: Vec<Vec<Planned>> = Vec::new();
    for i in 0..PAIRS {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        groups.push(vec![plan(&a, &b, "right", &mut rng), plan(&b, &a, "right", &mut rng)]);
    }
    for i in 0..200 {
        groups.push(vec![plan(&format!("a{i}"), &format!("b{}", (i + 1) % PAIRS), "right", &mut rng)]);
    }
    for i in (200..400).step_by(2) {
        let (a, b) = (format!("a{i}"), format!("a{}", i + 1));
        groups.push(vec![plan(&a, &b, "right", &mut rng), plan(&b, &a, "left", &mut rng)]);
    }
    for i in 400..500 {
        groups.push(vec![plan(&format!("b{i}"), &format!("a{}", (i + 2) % PAIRS), "left", &mut rng)]);
    }
    groups.shuffle(&mut rng);

    let swipes_started = Instant::now();
    common::bounded(CONCURRENCY, groups.iter().map(|g| run_group(&api, &tokens, &conns, &history, g))).await;
    let swiped = swipes_started.elapsed();

    // Every connection gets its user's match; then a quiet moment to catch duplicates.
    for (user, cs) in &conns {
        for c in cs {
            c.wait_for(TIMEOUT, &format!("the match event of {user}"), |frames| {
                frames.iter().any(|f| f["type"] == "match").then_some(())
            })
            .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (user, cs) in &conns {
        for c in cs {
            history.record_connection(user, c);
        }
    }
    let listings = common::bounded(
        CONCURRENCY,
        users.iter().map(|u| {
            let (api, tokens) = (&api, &tokens);
            async move { (u.clone(), api.matches(&tokens[u]).await) }
        }),
    )
    .await;
    for (u, matches) in listings {
        history.record_listing(&u, matches);
    }

    let summary = history.check();
    assert_eq!(summary.matches.len(), PAIRS);
    assert_eq!(summary.unmatched_pairs, 400);
    assert_eq!(summary.connections, tabs.len());
    assert!(summary.retries > summary.swipes / 10, "{summary:?}");
    assert!(summary.via_ws > summary.swipes / 20, "{summary:?}");
    eprintln!(
        "{PAIRS} pairs: {} swipes ({} retries, {} over WebSocket), {} connections, {} events; connect {connected:?}, swipes {swiped:?}, total {:?}",
        summary.swipes,
        summary.retries,
        summary.via_ws,
        summary.connections,
        summary.events,
        started.elapsed()
    );
    drop(conns);
    server.shutdown().await;
}

#[actix_rt::test]
async fn unmatch_tells_both_members_on_every_tab_and_only_members_may_unmatch() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let api = server.api();
    let (alice, bob, carol) = (api.token("alice").await, api.token("bob").await, api.token("carol").await);
    let tabs = [api.ws(&alice).await, api.ws(&alice).await, api.ws(&bob).await, api.ws(&bob).await];
    let outsider = api.ws(&carol).await;
    for t in tabs.iter().chain([&outsider]) {
        t.recv_event("hello", TIMEOUT).await;
    }

    let m = api.mutual_match("alice", "bob").await;
    let match_id = m["match_id"].as_str().unwrap();
    for t in &tabs {
        assert_eq!(t.recv_event("match", TIMEOUT).await["data"], json!({ "match": m }));
    }

    // Not a member: refused, and nothing changes.
    api.unmatch(&carol, match_id).await.assert_error(403, "forbidden");
    // Unknown ids, well-formed or not.
    api.unmatch(&alice, "0.00000000000000000000000000000000").await.assert_error(404, "not_found");
    api.unmatch(&alice, &format!("{match_id}x")).await.assert_error(404, "not_found");
    api.unmatch(&alice, "no-such-match").await.assert_error(404, "not_found");
    assert_eq!(api.matches(&alice).await, vec![m.clone()]);
    assert_eq!(api.matches(&bob).await, vec![m.clone()]);

    let reply = api.unmatch(&bob, match_id).await;
    assert_eq!(reply.ok(), json!({"status": "unmatched"}));
    for t in &tabs {
        let e = t.recv_event("unmatched", TIMEOUT).await;
        assert_eq!(e["data"], json!({"match_id": match_id, "by": "bob"}), "{t:?}");
    }
    assert_eq!(api.matches(&alice).await, Vec::<Value>::new());
    assert_eq!(api.matches(&bob).await, Vec::<Value>::new());

    // Saying it again (either side) tells nobody anything new.
    let again = api.unmatch(&bob, match_id).await;
    assert!(again.status == 200 || again.status == 404, "{again:?}");
    let again = api.unmatch(&alice, match_id).await;
    assert!(again.status == 200 || again.status == 404, "{again:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for t in &tabs {
        let types: Vec<Value> = t.events().iter().map(|e| e["type"].clone()).collect();
        assert_eq!(types, vec![json!("hello"), json!("match"), json!("unmatched")], "{t:?}");
        let ids: Vec<u64> = t.events().iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{t:?}: {ids:?}");
    }
    assert_eq!(outsider.events().len(), 1, "carol heard about a match she is not in: {:?}", outsider.frames());
    server.shutdown().await;
}
