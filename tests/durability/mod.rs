//! Durability with Redis (I7): acknowledged actions survive a SIGKILL of matchd, events owed at the
//! crash reach their users after the restart, and a Redis outage answers 503 without false acks,
//! recovering by itself when Redis returns. Every test starts its own redis-server (AOF, fsync
//! always) and fails loudly if it cannot.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use awc::http::Method;
use serde_json::{json, Value};

use crate::common::process::MatchdProcess;
use crate::common::redis::RedisServer;
use crate::common::{bounded, Api, WsOptions};

/// A swipe answer the server acknowledged (2xx).
#[derive(Debug, Clone)]
struct Acked {
    user: String,
    target: String,
    swipe_id: String,
    body: Value,
}

fn users(i: usize) -> (String, String) {
    (format!("d{i}a"), format!("d{i}b"))
}

#[actix_rt::test]
async fn acknowledged_swipes_and_owed_events_survive_kill_9() {
    let _trace = crate::common::trace_init();
    const PAIRS: usize = 400;
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let mut tokens = HashMap::new();
    for i in 0..PAIRS {
        let (a, b) = users(i);
        tokens.insert(a.clone(), api.token(&a).await);
        tokens.insert(b.clone(), api.token(&b).await);
    }
    let tokens = Rc::new(tokens);
    let acked: Rc<RefCell<Vec<Acked>>> = Rc::default();

    // Phase 1: both swipes of every pair at once (plus a concurrent retry of one side), until the
    // process is killed in the middle.
    let load = {
        let (api, tokens, acked) = (api.clone(), tokens.clone(), acked.clone());
        actix_rt::spawn(async move {
            bounded(
                64,
                (0..PAIRS).map(|i| {
                    let (api, tokens, acked) = (api.clone(), tokens.clone(), acked.clone());
                    async move {
                        let (a, b) = users(i);
                        let calls =
                            [(a.clone(), b.clone(), format!("{a}-1")), (b.clone(), a.clone(), format!("{b}-1"))];
                        let retry = calls[0].clone();
                        let run = |(user, target, id): (String, String, String)| {
                            let (api, tokens, acked) = (api.clone(), tokens.clone(), acked.clone());
                            async move {
                                if let Some((200, body)) = api.try_swipe(&tokens[&user], &target, &id).await {
                                    acked.borrow_mut().push(Acked { user, target, swipe_id: id, body });
                                }
                            }
                        };
                        let [first, second] = calls;
                        futures_util::future::join3(run(first), run(second), run(retry)).await;
                    }
                }),
            )
            .await;
        })
    };
    while acked.borrow().len() < PAIRS / 2 {
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    node.kill9();
    load.await.unwrap();
    let acked_before = acked.borrow().clone();
    assert!(acked_before.len() < PAIRS * 3, "the kill happened after the load finished; nothing was tested");

    // Phase 2: the same node comes back on the same Redis.
    node.restart();

    // Every acknowledged answer is still the truth: a retry with the same key replays it.
    for ack in &acked_before {
        let (status, body) = api.try_swipe(&tokens[&ack.user], &ack.target, &ack.swipe_id).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, ack.body, "acknowledged answer to {ack:?} changed after the crash");
    }
    // Finish every pair (retries with the same keys are safe): each ends with exactly one match.
    let finished = bounded(
        64,
        (0..PAIRS).map(|i| {
            let (api, tokens) = (api.clone(), tokens.clone());
            async move {
                let (a, b) = users(i);
                let ra = api.try_swipe(&tokens[&a], &b, &format!("{a}-1")).await.unwrap();
                let rb = api.try_swipe(&tokens[&b], &a, &format!("{b}-1")).await.unwrap();
                (i, ra, rb)
            }
        }),
    )
    .await;
    let mut match_of_pair = HashMap::new();
    for (i, (sa, ba), (sb, bb)) in finished {
        assert_eq!((sa, sb), (200, 200));
        // The later of the two always sees the match (the earlier may replay its `pending`).
        let m = if bb["status"] == "matched" { &bb["match"] } else { &ba["match"] };
        assert!(m["match_id"].is_string(), "pair {i} did not match: {ba} {bb}");
        match_of_pair.insert(i, m["match_id"].as_str().unwrap().to_string());
    }
    for ack in &acked_before {
        if ack.body["status"] == "matched" {
            let i: usize = ack.user[1..ack.user.len() - 1].parse().unwrap();
            assert_eq!(ack.body["match"]["match_id"].as_str().unwrap(), match_of_pair[&i], "pair {i} has two matches");
        }
    }

    // Every user's stream, resumed from the start, holds exactly one `match` event, for the one
    // match of their pair: events owed at the crash were re-published, none twice.
    let checks = bounded(
        32,
        (0..PAIRS)
            .flat_map(|i| {
                let (a, b) = users(i);
                [(i, a), (i, b)]
            })
            .map(|(i, user)| {
                let (api, tokens) = (api.clone(), tokens.clone());
                let expected = match_of_pair[&i].clone();
                async move {
                    let conn =
                        api.ws_with(&tokens[&user], WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
                    let events = conn.wait_events("match", 1, Duration::from_secs(10)).await;
                    actix_rt::time::sleep(Duration::from_millis(50)).await;
                    let all = conn.events();
                    let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().unwrap()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{user}: ids not increasing: {ids:?}");
                    let matches: Vec<&Value> = all.iter().filter(|e| e["type"] == "match").collect();
                    assert_eq!(matches.len(), 1, "{user}: {all:?}");
                    assert_eq!(events[0]["data"]["match"]["match_id"].as_str().unwrap(), expected);
                    conn.close().await;
                    let listed = api.matches(&tokens[&user]).await;
                    assert_eq!(listed.len(), 1, "{user}: {listed:?}");
                    assert_eq!(listed[0]["match_id"].as_str().unwrap(), expected);
                }
            }),
    )
    .await;
    assert_eq!(checks.len(), PAIRS * 2);
}

#[actix_rt::test]
async fn redis_outage_answers_503_then_recovers_without_restart() {
    let _trace = crate::common::trace_init();
    let mut redis = RedisServer::start();
    let node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let m = api.mutual_match("o1", "o2").await;
    let (t3, t4) = (api.token("o3").await, api.token("o4").await);
    assert_eq!(node.status("/readyz"), Some(200));

    redis.kill();
    let mut refused = 0;
    for n in 0..5 {
        let started = std::time::Instant::now();
        let (status, body) = api.try_swipe(&t3, "o4", &format!("outage-{n}")).await.unwrap();
        assert_eq!(status, 503, "acknowledged while Redis was down: {body}");
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(started.elapsed() < Duration::from_secs(3), "a 503 must come promptly");
        refused += 1;
    }
    assert_eq!(refused, 5);
    assert_eq!(node.status("/readyz"), Some(503));

    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if let Some((200, _)) = api.try_swipe(&t4, "o5", "after-outage").await {
            recovered = true;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "service did not resume after Redis came back");
    let mut ready = false;
    for _ in 0..50 {
        if node.status("/readyz") == Some(200) {
            ready = true;
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz did not recover");
    // Nothing refused was stored: o3's likes of o4 never happened, so o4's like is only pending.
    let (status, body) = api.try_swipe(&t4, "o3", "check").await.unwrap();
    assert_eq!((status, body["status"].clone()), (200, json!("pending")));
    // What was stored before the outage is intact, and events owed when Redis went away arrive
    // (the match's index entry may still have been on its way to o1's log).
    let t1 = api.token("o1").await;
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = api.matches(&t1).await;
        if !listed.is_empty() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed, vec![m.clone()]);
    let conn = api.ws_with(&t1, WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    let events = conn.wait_events("match", 1, Duration::from_secs(5)).await;
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conn.events().iter().filter(|e| e["type"] == "match").count(), 1);
    let seen: HashSet<String> = events.iter().map(|e| e["data"]["match"]["match_id"].to_string()).collect();
    assert_eq!(seen.len(), 1);
}

#[actix_rt::test]
async fn sigterm_under_load_drains_and_loses_no_acknowledged_swipe() {
    let _trace = crate::common::trace_init();
    const PAIRS: usize = 200;
    let redis = RedisServer::start();
    let mut node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let mut tokens = HashMap::new();
    for i in 0..PAIRS {
        let (a, b) = (format!("t{i}a"), format!("t{i}b"));
        tokens.insert(a.clone(), api.token(&a).await);
        tokens.insert(b.clone(), api.token(&b).await);
    }
    let tokens = Rc::new(tokens);
    let watcher = api.ws(&tokens["t0a"]).await;
    let acked: Rc<RefCell<Vec<Acked>>> = Rc::default();
    let load = {
        let (api, tokens, acked) = (api.clone(), tokens.clone(), acked.clone());
        actix_rt::spawn(async move {
            bounded(
                32,
                (0..PAIRS)
                    .flat_map(|i| [(format!("t{i}a"), format!("t{i}b")), (format!("t{i}b"), format!("t{i}a"))])
                    .map(|(user, target)| {
                        let (api, tokens, acked) = (api.clone(), tokens.clone(), acked.clone());
                        async move {
                            let id = format!("{user}-term");
                            if let Some((200, body)) = api.try_swipe(&tokens[&user], &target, &id).await {
                                acked.borrow_mut().push(Acked { user, target, swipe_id: id, body });
                            }
                        }
                    }),
            )
            .await;
        })
    };
    while acked.borrow().len() < PAIRS / 2 {
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
    node.signal("TERM");
    // Connected clients are told to reconnect elsewhere (1012 "service restart").
    let closed = watcher.closed(Duration::from_secs(10)).await;
    assert_eq!(closed.code, Some(1012), "{closed:?}");
    assert_eq!(node.wait_exit(Duration::from_secs(15)), Some(0), "matchd did not exit cleanly on SIGTERM");
    load.await.unwrap();
    let acked = acked.borrow().clone();
    node.restart();
    for ack in &acked {
        let (status, body) = api.try_swipe(&tokens[&ack.user], &ack.target, &ack.swipe_id).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, ack.body, "acknowledged answer to {ack:?} was lost across SIGTERM");
    }
}

#[actix_rt::test]
async fn idle_state_leaves_memory_and_comes_back_intact() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let mut config = crate::common::config();
    config.redis = Some(redis.url());
    config.timeouts.cache_idle_ms = 200;
    let server = crate::common::TestServer::start(config).await;
    let api = server.api();
    let evictions = |text: &str, kind: &str| -> f64 {
        let prefix = format!("matchd_cache_evictions_total{{kind=\"{kind}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(|v| v.parse().unwrap()).unwrap_or(0.0)
    };
    let metrics = || async {
        String::from_utf8(api.send(api.request(Method::GET, "/metrics"), None).await.body.to_vec()).unwrap()
    };
    let before = metrics().await;
    let m = api.mutual_match("e1", "e2").await;
    let (t1, t3) = (api.token("e1").await, api.token("e3").await);
    assert_eq!(api.try_swipe(&t3, "e1", "e3-like").await.unwrap().1["status"], "pending");
    actix_rt::time::sleep(Duration::from_millis(900)).await;
    let after = metrics().await;
    assert!(evictions(&after, "pair") > evictions(&before, "pair"), "no idle pair was evicted");
    assert!(evictions(&after, "user") > evictions(&before, "user"), "no idle user was evicted");
    // Reloaded from Redis: the match, the pending like and the replay of an old key.
    assert_eq!(api.matches(&t1).await, vec![m]);
    assert_eq!(api.try_swipe(&t3, "e1", "e3-like").await.unwrap().1["status"], "pending");
    assert_eq!(api.try_swipe(&t1, "e3", "e1-like").await.unwrap().1["status"], "matched");
    server.shutdown().await;
}

/// The per-pair active-match guard follows the pair through unmatch and a new match: the guard key
/// names the current match, is gone after an unmatch, and a pair can match again.
#[actix_rt::test]
async fn a_pair_can_match_again_after_unmatching_and_the_guard_follows_it() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let node = MatchdProcess::with_redis(&redis);
    let api = Api::new(&node.base_url(), &node.ws_url());
    let guard = || {
        let a = matchd::protocol::UserId::parse("again-a").unwrap();
        let b = matchd::protocol::UserId::parse("again-b").unwrap();
        let key = matchd::persist::keys::active_match(&matchd::coord::slot::PairKey::new(&a, &b).unwrap());
        redis.cli(&["GET", &key])
    };
    let first = api.mutual_match("again-a", "again-b").await;
    assert_eq!(guard(), first["match_id"].as_str().unwrap());
    let ta = api.token("again-a").await;
    assert_eq!(api.unmatch(&ta, first["match_id"].as_str().unwrap()).await.status, 200);
    assert_eq!(guard(), "", "the guard outlived its match");
    let second = api.mutual_match("again-a", "again-b").await;
    assert_ne!(second["match_id"], first["match_id"]);
    assert_eq!(guard(), second["match_id"].as_str().unwrap());
}
