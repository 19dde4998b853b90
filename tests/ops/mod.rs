//! Operations: metrics an operator watches move with traffic; every answer carries a request id.

use std::collections::HashMap;

use awc::http::Method;
use serde_json::json;

use crate::common::{self, TestServer, TIMEOUT};

/// Parses the Prometheus text format into `name{labels}` -> value.
fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[actix_rt::test]
async fn metrics_move_with_traffic_and_answers_carry_a_request_id() {
    let _trace = common::trace_init();
    let mut config = common::config();
    config.limits.joins_per_minute = 100;
    let server = TestServer::start(config).await;
    let api = server.api();
    let before = scrape(std::str::from_utf8(&api.send(api.request(Method::GET, "/metrics"), None).await.body).unwrap());

    let (ta, tb) = (api.token("m1").await, api.token("m2").await);
    let conn = api.ws(&ta).await;
    api.mutual_match("m1", "m2").await;
    conn.recv_event("match", TIMEOUT).await;
    api.post_json("/v1/queue", Some(&ta), &json!({})).await;
    let room = api.post_json("/v1/queue", Some(&tb), &json!({})).await.ok();
    let room_id = room["room"]["room_id"].as_str().unwrap().to_string();
    api.post_json(&format!("/v1/rooms/{room_id}/skip"), Some(&ta), &json!({"requeue": false})).await.ok();
    let bad = api.post_json("/v1/swipes", Some(&ta), &json!({"target": "m1", "direction": "right"})).await;
    assert!(bad.header("x-request-id").is_some(), "errors carry the request id too");
    let ok = api.get("/v1/matches", &ta).await;
    let id: u64 = ok.header("x-request-id").unwrap().parse().unwrap();
    assert!(id > 0);

    let reply = api.send(api.request(Method::GET, "/metrics"), None).await;
    assert_eq!(reply.header("content-type").unwrap(), "text/plain; version=0.0.4");
    let after = scrape(std::str::from_utf8(&reply.body).unwrap());
    let grew = |name: &str| {
        let (b, a) = (before.get(name).copied().unwrap_or(0.0), after.get(name).copied().unwrap_or(0.0));
        assert!(a > b, "{name} did not move: {b} -> {a}");
    };
    grew("matchd_matches_total");
    grew("matchd_swipes_total{outcome=\"matched\"}");
    grew("matchd_events_delivered_total");
    grew("matchd_event_delivery_seconds_count{transport=\"ws\"}");
    grew("matchd_pairings_total{pool=\"default\"}");
    grew("matchd_queue_wait_seconds_count{pool=\"default\"}");
    grew("matchd_skips_total");
    grew("matchd_rooms_closed_total{reason=\"skipped\"}");
    grew("matchd_errors_total{code=\"self_swipe\"}");
    grew("matchd_action_seconds_count{action=\"swipe\",transport=\"http\"}");
    assert!(after.contains_key("matchd_connections{transport=\"ws\"}"));
    assert!(after.contains_key("matchd_queue_length{pool=\"default\"}"));
    let ready = api.send(api.request(Method::GET, "/readyz"), None).await.ok();
    assert_eq!(ready["persistence"], "memory");
    server.shutdown().await;
}

#[test]
fn bad_configuration_stops_the_binary_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_connections_per_user = 0\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--listen", "not-an-address"], "listen"),
        (&["--jwt-secret", "short"], "jwt_secret"),
        (&["--redis", "http://nope"], "redis"),
        (&["--config", file.to_str().unwrap()], "max_connections_per_user"),
    ];
    for (args, key) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_matchd")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: {stderr}");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_matchd")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--listen", "--redis", "--jwt-secret", "--node-id", "--config", "MATCHD_REDIS"] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}
