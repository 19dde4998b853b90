//! Active/standby on one Redis: the ownership lease lets exactly one node write. A second node is a
//! standby (not ready, answers 503) until the active one dies, then takes over with everything the
//! active one acknowledged; a node paused past its lease cannot commit when it wakes (fencing).

use std::time::Duration;

use serde_json::json;

use crate::common::process::MatchdProcess;
use crate::common::redis::RedisServer;
use crate::common::{Api, WsOptions};

#[actix_rt::test]
async fn a_standby_takes_over_with_everything_the_dead_active_node_acknowledged() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let mut active = MatchdProcess::with_redis(&redis);
    let standby = MatchdProcess::standby_with_redis(&redis);
    let (a, b) = (Api::new(&active.base_url(), &active.ws_url()), Api::new(&standby.base_url(), &standby.ws_url()));
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(standby.status("/readyz"), Some(503), "two active nodes on one Redis");
    let t: Vec<String> = futures_util::future::join_all(["f1", "f2", "f3"].map(|u| a.token(u))).await;
    let (status, body) = b.try_swipe(&t[0], "f2", "standby-1").await.unwrap();
    assert_eq!(status, 503, "a standby acknowledged: {body}");

    let m = a.mutual_match("f1", "f2").await;
    assert_eq!(a.try_swipe(&t[0], "f3", "pending-1").await.unwrap().1["status"], "pending");
    active.kill9();
    standby.wait_ready(Duration::from_secs(10));

    // The match is decided and stored; the user's index gets it from the pair's outbox, which the
    // new owner sweeps as it takes over (if the dead node had not written it yet).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.matches(&t[0]).await != vec![m.clone()] {
        assert!(std::time::Instant::now() < deadline, "the acknowledged match never reached f1's matches");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = b.try_swipe(&t[2], "f1", "late-1").await.unwrap();
    assert_eq!(body["status"], "matched", "the dead node's acknowledged like was lost: {body}");
    let conn = b.ws_with(&t[1], WsOptions { since: Some(0), ..Default::default() }).await.unwrap();
    let events = conn.wait_events("match", 1, Duration::from_secs(5)).await;
    assert_eq!(events[0]["data"]["match"], m);
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conn.events().iter().filter(|e| e["type"] == "match").count(), 1);
}

#[actix_rt::test]
async fn a_node_paused_past_its_lease_cannot_commit_when_it_wakes() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let paused = MatchdProcess::with_redis(&redis);
    let other = MatchdProcess::standby_with_redis(&redis);
    let (p, o) = (Api::new(&paused.base_url(), &paused.ws_url()), Api::new(&other.base_url(), &other.ws_url()));
    let (t1, t2) = (p.token("s1").await, p.token("s2").await);
    // The paused node has the pair cached, so its stale memory could decide without Redis.
    assert_eq!(p.try_swipe(&t1, "s2", "warm").await.unwrap().1["status"], "pending");

    paused.signal("STOP");
    other.wait_ready(Duration::from_secs(10));
    // Under the new owner, s1 takes the like back.
    let withdrawn = o
        .post_json("/v1/swipes", Some(&t1), &json!({"target": "s2", "direction": "left", "swipe_id": "withdraw"}))
        .await;
    assert_eq!(withdrawn.ok()["status"], "passed");
    paused.signal("CONT");
    // Woken with a stale cache that still says "s1 likes s2": it must not acknowledge a match.
    match p.try_swipe(&t2, "s1", "stale").await {
        Some((200, body)) => panic!("a stale node acknowledged: {body}"),
        Some((status, _)) => assert_eq!(status, 503),
        None => {}
    }
    assert_ne!(paused.status("/readyz"), Some(200));
    // The real owner's view: s1 withdrew, so s2's like is pending, and nothing matched.
    let (_, body) = o.try_swipe(&t2, "s1", "real").await.unwrap();
    assert_eq!(body["status"], "pending", "{body}");
    assert!(o.matches(&t1).await.is_empty());
}

#[actix_rt::test]
async fn redis_refuses_a_batch_written_under_someone_elses_lease() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let store = matchd::persist::RedisStore::connect_lazy(&redis.url(), Duration::from_secs(1)).unwrap();
    let mine = matchd::persist::FenceToken { keys: vec!["matchd:lease".into()], token: "me".into() };
    let theirs = matchd::persist::FenceToken { keys: vec!["matchd:lease".into()], token: "them".into() };
    let mut take = redis::pipe();
    take.cmd("SET").arg("matchd:lease").arg("me");
    store.run(take, 1).await.unwrap();
    let write = |value: &str| {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg("matchd:probe").arg(value);
        pipe.cmd("GET").arg("matchd:probe");
        pipe
    };
    let out = store.run_fenced(&mine, &[], write("ok"), 2).await.unwrap();
    assert_eq!(out[1], redis::Value::BulkString(b"ok".to_vec()));
    let refused = store.run_fenced(&theirs, &[], write("stale"), 2).await;
    assert!(matches!(refused, Err(matchd::persist::StoreError::Fenced)), "{refused:?}");
    let mut read = redis::pipe();
    read.cmd("GET").arg("matchd:probe");
    assert_eq!(store.run(read, 1).await.unwrap()[0], redis::Value::BulkString(b"ok".to_vec()));
}

/// The last line of defence for I1: whatever the fencing let through, Redis refuses a batch that
/// would store a second active match for a pair, whole (none of its other writes land either).
#[actix_rt::test]
async fn redis_refuses_a_second_active_match_for_a_pair_and_writes_nothing_of_that_batch() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let store = matchd::persist::RedisStore::connect_lazy(&redis.url(), Duration::from_secs(1)).unwrap();
    let owner = matchd::persist::FenceToken { keys: vec!["matchd:lease".into()], token: "me".into() };
    let mut take = redis::pipe();
    take.cmd("SET").arg("matchd:lease").arg("me");
    store.run(take, 1).await.unwrap();
    let a = matchd::protocol::UserId::parse("guard-a").unwrap();
    let b = matchd::protocol::UserId::parse("guard-b").unwrap();
    let pair = matchd::coord::slot::PairKey::new(&a, &b).unwrap();
    let active = matchd::persist::keys::active_match(&pair);
    let write = |value: &str| {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg("matchd:probe").arg(value);
        pipe
    };
    let first = [(active.clone(), "match-1".to_string())];
    store.run_fenced(&owner, &first, write("first"), 1).await.unwrap();
    // The same match again (a retried batch) passes.
    store.run_fenced(&owner, &first, write("retry"), 1).await.unwrap();
    let second = [(active.clone(), "match-2".to_string())];
    let refused = store.run_fenced(&owner, &second, write("second"), 1).await;
    assert!(matches!(refused, Err(matchd::persist::StoreError::Duplicate(_))), "{refused:?}");
    // Two different matches for one fresh pair in the same batch are refused too.
    let b2 = matchd::protocol::UserId::parse("guard-c").unwrap();
    let fresh = matchd::persist::keys::active_match(&matchd::coord::slot::PairKey::new(&a, &b2).unwrap());
    let both = [(fresh.clone(), "match-3".to_string()), (fresh.clone(), "match-4".to_string())];
    let refused = store.run_fenced(&owner, &both, write("both"), 1).await;
    assert!(matches!(refused, Err(matchd::persist::StoreError::Duplicate(_))), "{refused:?}");
    let mut read = redis::pipe();
    read.cmd("GET").arg("matchd:probe").cmd("GET").arg(&active).cmd("EXISTS").arg(&fresh);
    let values = store.run(read, 3).await.unwrap();
    assert_eq!(values[0], redis::Value::BulkString(b"retry".to_vec()), "a refused batch wrote something");
    assert_eq!(values[1], redis::Value::BulkString(b"match-1".to_vec()));
    assert_eq!(values[2], redis::Value::Int(0));
}

/// A second node on the same Redis without `--cluster` can reach Redis: it is a standby. It says
/// so, names the active node, and says how to run several active nodes, on `/readyz` and on every
/// action (the contract's 503 `unavailable`).
#[actix_rt::test]
async fn a_standby_says_it_is_one_and_names_the_active_node() {
    let _trace = crate::common::trace_init();
    let redis = RedisServer::start();
    let active = MatchdProcess::with_redis(&redis);
    let standby = MatchdProcess::standby_with_redis(&redis);
    let (_, body) = active.get("/readyz").unwrap();
    let active_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["node"].as_str().unwrap().to_string();

    let (status, body) = standby.get("/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "standby", "{ready}");
    assert_eq!(ready["active_node"], active_id.as_str(), "{ready}");
    assert_eq!(ready["error"]["code"], "unavailable", "{ready}");
    let message = ready["error"]["message"].as_str().unwrap();
    assert!(message.contains("standby") && message.contains("--cluster"), "{message}");

    let b = Api::new(&standby.base_url(), &standby.ws_url());
    let token = b.token("sb1").await;
    let reply = b.post_json("/v1/swipes", Some(&token), &json!({"target": "sb2", "direction": "right"})).await;
    reply.assert_error(503, "unavailable");
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("standby"), "{message}");
    assert!(message.contains(&format!("node {active_id}")), "the active node is not named: {message}");
    assert!(message.contains("--cluster"), "{message}");
    assert!(!message.contains("cannot reach"), "{message}");
    let reply = b.post_json("/v1/queue", Some(&token), &json!({})).await;
    reply.assert_error(503, "unavailable");
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("standby"));

    // The active node keeps working, and stays ready.
    let a = Api::new(&active.base_url(), &active.ws_url());
    let ta = a.token("sb1").await;
    assert_eq!(a.try_swipe(&ta, "sb2", "act-1").await.unwrap().1["status"], "pending");
    assert_eq!(active.status("/readyz"), Some(200));
}
