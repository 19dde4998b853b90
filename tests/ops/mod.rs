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

/// The metric names listed in README's "Observability" section.
fn documented_metrics() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = readme.split("## Observability").nth(1).expect("README has an Observability section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut names: Vec<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("matchd_"))
        .map(|s| s.split('{').next().unwrap().to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The labelled series a fresh node must expose at zero (value 0, or `_count 0` for histograms),
/// written out here independently of the server's own lists.
fn expected_zero_series(pools: &[&str], cluster: bool) -> Vec<String> {
    let mut out = Vec::new();
    for t in ["ws", "sse", "relay"] {
        out.push(format!("matchd_connections{{transport=\"{t}\"}}"));
    }
    for t in ["ws", "sse"] {
        out.push(format!("matchd_event_delivery_seconds_count{{transport=\"{t}\"}}"));
        out.push(format!("matchd_room_closed_notify_seconds_count{{transport=\"{t}\"}}"));
    }
    for o in ["pending", "matched", "passed", "replayed"] {
        out.push(format!("matchd_swipes_total{{outcome=\"{o}\"}}"));
    }
    for r in ["skipped", "left"] {
        out.push(format!("matchd_rooms_closed_total{{reason=\"{r}\"}}"));
    }
    for code in [
        "bad_request",
        "invalid_user",
        "self_swipe",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "payload_too_large",
        "rate_limited",
        "unavailable",
    ] {
        out.push(format!("matchd_errors_total{{code=\"{code}\"}}"));
    }
    for a in ["swipe", "unmatch", "join_queue", "leave_queue", "skip"] {
        for t in ["http", "ws"] {
            out.push(format!("matchd_action_seconds_count{{action=\"{a}\",transport=\"{t}\"}}"));
        }
    }
    for p in pools {
        out.push(format!("matchd_queue_length{{pool=\"{p}\"}}"));
        out.push(format!("matchd_queue_wait_seconds_count{{pool=\"{p}\"}}"));
        out.push(format!("matchd_pairings_total{{pool=\"{p}\"}}"));
    }
    for r in ["delivered", "retried", "gave_up", "dropped_overload"] {
        out.push(format!("matchd_webhooks_total{{result=\"{r}\"}}"));
    }
    for k in ["pair", "user"] {
        out.push(format!("matchd_cache_evictions_total{{kind=\"{k}\"}}"));
    }
    for c in ["duplicate_match_refused", "user_in_two_rooms"] {
        out.push(format!("matchd_invariant_violations_total{{check=\"{c}\"}}"));
    }
    if cluster {
        let kinds = [
            "swipe",
            "unmatch",
            "skip",
            "create_room",
            "member_gone",
            "publish",
            "effects_persisted",
            "enqueue",
            "dequeue",
            "forget",
            "restore_place",
            "arm_presence",
            "list_matches",
            "join",
            "leave",
            "pool_status",
        ];
        for k in kinds {
            for r in ["ok", "answered_error", "retried"] {
                out.push(format!("matchd_forwarded_total{{kind=\"{k}\",result=\"{r}\"}}"));
            }
        }
    }
    out.push("matchd_connected_users".into());
    out
}

fn assert_fresh_metrics(text: &str, pools: &[&str], cluster: bool) {
    let names = documented_metrics();
    assert!(names.len() >= 30, "README's Observability lists only {names:?}");
    for name in &names {
        // Forwarding happens in cluster mode only; its series exist there.
        if name == "matchd_forwarded_total" && !cluster {
            continue;
        }
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is documented but not exposed:\n{text}");
    }
    let values = scrape(text);
    for series in expected_zero_series(pools, cluster) {
        assert_eq!(values.get(&series), Some(&0.0), "{series} is not exposed at 0 on a fresh node:\n{text}");
    }
    let version = env!("CARGO_PKG_VERSION");
    let info = values.iter().find(|(k, _)| k.starts_with("matchd_build_info{")).map(|(k, v)| (k.clone(), *v));
    let (series, value) = info.unwrap_or_else(|| panic!("no matchd_build_info:\n{text}"));
    assert_eq!(value, 1.0);
    assert!(series.contains(&format!("version=\"{version}\"")), "{series}");
}

#[actix_rt::test]
async fn a_fresh_server_exposes_every_documented_series_at_zero_before_any_traffic() {
    let _trace = common::trace_init();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.toml");
    std::fs::write(&config, "[pools.interview]\nrating_tolerance = 100\n[pools.chess]\nregion = \"prefer\"\n").unwrap();
    let node = crate::common::process::MatchdProcess::start(&[
        "--workers",
        "1",
        "--shards",
        "2",
        "--config",
        config.to_str().unwrap(),
    ]);
    let (status, text) = node.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert_fresh_metrics(&text, &["default", "interview", "chess"], false);
    assert!(!text.contains("matchd_forwarded_total{"), "forwarding series on a node that never forwards");

    // In cluster mode the forwarding series exist too.
    let redis = crate::common::redis::RedisServer::start();
    let member = crate::common::process::MatchdProcess::cluster_node_on(&redis.url());
    let (status, text) = member.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert_fresh_metrics(&text, &["default"], true);
}

/// One open stream of a test user, closed politely or dropped.
enum Tab {
    /// awc WebSocket or SSE: closed with a close handshake / by dropping the response.
    Polite(common::Conn),
    /// A raw WebSocket: reset (no close frame, TCP RST).
    RawWs(matchd::load::raw_ws::RawWs),
    /// A raw SSE request: reset.
    RawSse(tokio::net::TcpStream),
}

impl Tab {
    /// Opens tab `kind` (0 = WS, 1 = SSE, 2 = raw WS, 3 = raw SSE) and waits for its `hello`.
    async fn open(api: &common::Api, addr: std::net::SocketAddr, token: &str, kind: usize) -> Tab {
        match kind % 4 {
            0 => {
                let c = api.ws(token).await;
                c.recv_event("hello", TIMEOUT).await;
                Tab::Polite(c)
            }
            1 => {
                let c = api.sse(token).await;
                c.recv_event("hello", TIMEOUT).await;
                Tab::Polite(c)
            }
            2 => {
                let mut ws =
                    matchd::load::raw_ws::RawWs::connect(addr, &format!("/v1/ws?token={token}"), None).await.unwrap();
                assert!(ws.until_event("hello").await.unwrap().is_some());
                Tab::RawWs(ws)
            }
            _ => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let req = format!(
                    "GET /v1/events?token={token} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.unwrap();
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&seen).contains("\"hello\"") {
                    let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await.unwrap().unwrap();
                    assert!(n > 0, "SSE stream ended before hello");
                    seen.extend_from_slice(&buf[..n]);
                }
                Tab::RawSse(s)
            }
        }
    }

    async fn close(self) {
        match self {
            Tab::Polite(c) => c.close().await,
            Tab::RawWs(ws) => ws.reset(),
            Tab::RawSse(s) => {
                let _ = s.set_zero_linger();
            }
        }
    }
}

async fn connected_users(api: &common::Api) -> f64 {
    let reply = api.send(api.request(Method::GET, "/metrics"), None).await;
    let text = std::str::from_utf8(&reply.body).unwrap().to_string();
    scrape(&text).get("matchd_connected_users").copied().unwrap_or_else(|| panic!("no matchd_connected_users:\n{text}"))
}

/// Waits until the gauge reads `expected`, then checks it stays there.
async fn assert_connected_users(api: &common::Api, expected: usize, when: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut last = connected_users(api).await;
    while last != expected as f64 {
        assert!(std::time::Instant::now() < deadline, "{when}: matchd_connected_users = {last}, not {expected}");
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
        last = connected_users(api).await;
    }
    for _ in 0..5 {
        actix_rt::time::sleep(std::time::Duration::from_millis(60)).await;
        assert_eq!(connected_users(api).await, expected as f64, "{when}: the gauge moved at a quiet point");
    }
}

#[actix_rt::test]
async fn connected_users_is_exact_while_many_tabs_connect_and_drop_concurrently() {
    let _trace = common::trace_init();
    let server = TestServer::start(common::config()).await;
    let (api, addr) = (server.api(), server.addr());
    // Another node in the same process, with users of its own: they are not this node's.
    let other = TestServer::start(common::config()).await;
    let other_api = other.api();
    let mut elsewhere = Vec::new();
    for i in 0..5 {
        let t = other_api.token(&format!("cu-other{i}")).await;
        elsewhere.push(Tab::open(&other_api, other.addr(), &t, i).await);
    }
    assert_connected_users(&other_api, 5, "the other node").await;
    const USERS: usize = 48;
    let names: Vec<String> = (0..USERS).map(|i| format!("cu{i}")).collect();
    let tokens: Vec<String> = futures_util::future::join_all(names.iter().map(|u| api.token(u))).await;
    assert_eq!(connected_users(&api).await, 0.0);

    // Users 0..40 open 1-3 tabs each, every kind mixed, all at once.
    let tabs_of = |i: usize| 1 + i % 3;
    let opened = common::bounded(
        32,
        (0..40).flat_map(|i| (0..tabs_of(i)).map(move |j| (i, j))).map(|(i, j)| {
            let (api, token) = (api.clone(), tokens[i].clone());
            async move { (i, Tab::open(&api, addr, &token, i + j).await) }
        }),
    )
    .await;
    let mut tabs: Vec<Vec<Tab>> = (0..USERS).map(|_| Vec::new()).collect();
    for (i, tab) in opened {
        tabs[i].push(tab);
    }
    assert_connected_users(&api, 40, "all tabs open").await;

    // At once: users 0..16 close every tab (some politely, some dropped); users 16..28 close all
    // but one; users 28..40 reload a tab (drop it, open a new one at once); users 40..48 arrive
    // with two tabs and 44..48 of them leave again right away.
    let mut work: Vec<futures_util::future::LocalBoxFuture<'_, (usize, Vec<Tab>)>> = Vec::new();
    for (i, user_tabs) in tabs.iter_mut().enumerate() {
        let mine = std::mem::take(user_tabs);
        let (api, token) = (api.clone(), tokens[i].clone());
        work.push(Box::pin(async move {
            let mut mine = mine;
            match i {
                0..16 => {
                    futures_util::future::join_all(mine.drain(..).map(Tab::close)).await;
                }
                16..28 => {
                    let keep = mine.pop();
                    futures_util::future::join_all(mine.drain(..).map(Tab::close)).await;
                    mine.extend(keep);
                }
                28..40 => {
                    if let Some(t) = mine.pop() {
                        t.close().await;
                    }
                    mine.push(Tab::open(&api, addr, &token, i + 1).await);
                }
                _ => {
                    let (a, b) = futures_util::future::join(
                        Tab::open(&api, addr, &token, i),
                        Tab::open(&api, addr, &token, i + 1),
                    )
                    .await;
                    if i >= 44 {
                        futures_util::future::join(a.close(), b.close()).await;
                    } else {
                        mine.extend([a, b]);
                    }
                }
            }
            (i, mine)
        }));
    }
    for (i, mine) in futures_util::future::join_all(work).await {
        tabs[i] = mine;
    }
    let open = tabs.iter().filter(|t| !t.is_empty()).count();
    assert_eq!(open, 28, "the test's own bookkeeping");
    assert_connected_users(&api, open, "after the churn").await;

    // Everybody goes: the gauge is back to zero.
    futures_util::future::join_all(tabs.into_iter().flatten().map(Tab::close)).await;
    assert_connected_users(&api, 0, "after everyone left").await;
    assert_connected_users(&other_api, 5, "the other node, untouched").await;
    futures_util::future::join_all(elsewhere.into_iter().map(Tab::close)).await;
    server.shutdown().await;
    other.shutdown().await;
}

/// The metric names a scrape exposes, with their types (`# TYPE name type`).
fn exported(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The Grafana dashboard in the repo is valid JSON, and every query in it names only metrics the
/// server exports (histograms through their `_bucket`/`_sum`/`_count` series).
#[actix_rt::test]
async fn the_grafana_dashboard_queries_only_metrics_the_server_exports() {
    let _trace = common::trace_init();
    let redis = crate::common::redis::RedisServer::start();
    // A cluster member exports every series (forwarding included).
    let member = crate::common::process::MatchdProcess::cluster_node_on(&redis.url());
    let (_, text) = member.get("/metrics").unwrap();
    let types = exported(&text);
    assert!(types.len() >= 30, "{types:?}");

    let raw = include_str!("../../docs/grafana/matchd.json");
    let dash: serde_json::Value = serde_json::from_str(raw).expect("docs/grafana/matchd.json is not valid JSON");
    assert_eq!(dash["uid"], "matchd-ops");
    assert!(dash["title"].is_string() && dash["schemaVersion"].is_u64());
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no queries", p["title"]);
        assert!(p["gridPos"]["w"].is_u64() && p["gridPos"]["h"].is_u64(), "panel {} has no place", p["title"]);
        for t in targets {
            exprs.push(
                t["expr"].as_str().unwrap_or_else(|| panic!("a query of {} has no expr", p["title"])).to_string(),
            );
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        exprs.push(v["query"]["query"].as_str().unwrap_or_default().to_string());
    }
    assert!(exprs.len() >= 25, "{exprs:?}");
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        let mut names = Vec::new();
        let mut word = String::new();
        for c in expr.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
            } else {
                if word.starts_with("matchd_") {
                    names.push(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
        assert!(!names.is_empty(), "a query names no matchd metric: {expr}");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| types.get(*b).map(String::as_str) == Some("histogram")))
                .unwrap_or(&name)
                .to_string();
            assert!(types.contains_key(&base), "{expr} uses {name}, which the server does not export");
            if name.ends_with("_bucket") {
                assert_eq!(types[&base], "histogram", "{name}");
            }
            used.insert(base);
        }
    }
    // It covers what an operator watches first.
    for name in ["matchd_connections", "matchd_matches_total", "matchd_queue_wait_seconds", "matchd_persist_seconds"] {
        assert!(used.contains(name), "the Grafana dashboard does not show {name}");
    }
}
