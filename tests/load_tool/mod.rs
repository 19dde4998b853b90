//! `matchd-load` against the real server: every scenario, at a small size, through the load tool's
//! library entry point (`matchd::load::run`), must find no violation. The checker itself is proven
//! to find violations by its unit tests (src/load/check_test.rs), which plant them.

use clap::Parser;
use matchd::load::{run, LoadCli, Report};

use crate::common;

/// Runs `matchd-load <args>` against `server` with small, test-sized client settings.
async fn load(server: &matchd::Running, args: &[&str]) -> Report {
    load_at(&server.base_url(), args).await
}

/// Like `load`, against the server at `base`.
async fn load_at(base: &str, args: &[&str]) -> Report {
    let mut argv = vec!["matchd-load", "--url", base, "--threads", "2", "--concurrency", "16", "--timeout-secs", "60"];
    argv.extend_from_slice(args);
    let report = run(LoadCli::try_parse_from(argv).unwrap()).await.unwrap();
    assert!(report.ok(), "the load tool found violations:\n{}", report.human());
    report
}

#[actix_rt::test]
async fn swipes_with_retries_noise_and_sockets_pass() {
    let _trace = common::trace_init();
    let server = matchd::start(common::config()).await.unwrap();
    let args = ["swipes", "--pairs", "100", "--noise", "20", "--retry-fraction", "0.3", "--ws-fraction", "0.5"];
    let report = load(&server, &args).await;
    assert_eq!(report.counts["matched_answers"], 100);
    assert_eq!(report.counts["matches_fully_delivered"], 50);
    server.shutdown().await;
}

#[actix_rt::test]
async fn swipes_with_locally_minted_tokens_pass() {
    let _trace = common::trace_init();
    let secret = "load-tool-test-secret";
    let server = matchd::start(matchd::Config { jwt_secret: Some(secret.into()), ..common::config() }).await.unwrap();
    let report = load(&server, &["--jwt-secret", secret, "swipes", "--pairs", "20", "--noise", "5"]).await;
    assert_eq!(report.counts["matched_answers"], 20);
    server.shutdown().await;
}

#[actix_rt::test]
async fn delivery_to_every_tab_over_ws_and_sse_passes() {
    let _trace = common::trace_init();
    let server = matchd::start(common::config()).await.unwrap();
    let report = load(&server, &["delivery", "--users", "40", "--tabs", "2", "--sse-fraction", "0.25"]).await;
    assert_eq!(report.counts["connections_ready"], 80);
    assert_eq!(report.counts["matches_fully_delivered"], 20);
    assert!(report.latencies_ms.contains_key("match_event_both_users"));
    server.shutdown().await;
}

#[actix_rt::test]
async fn idle_connections_stay_open_and_memory_is_read() {
    let _trace = common::trace_init();
    let server = matchd::start(common::config()).await.unwrap();
    // The server runs in this process, so its RSS is this process's.
    let pid = std::process::id().to_string();
    let report = load(&server, &["idle", "--connections", "30", "--hold-secs", "1", "--server-pid", &pid]).await;
    assert_eq!(report.counts["connections_ready"], 30);
    assert!(report.figures.contains_key("kib_per_connection"));
    server.shutdown().await;
}

#[actix_rt::test]
async fn spin_join_skip_and_requeue_pass() {
    let _trace = common::trace_init();
    let server = matchd::start(common::config()).await.unwrap();
    let report = load(&server, &["spin", "--users", "12", "--rounds", "2", "--both-skip-fraction", "0.5"]).await;
    assert_eq!(report.counts["joins"], 12);
    assert!(report.latencies_ms.contains_key("join_to_room"));
    server.shutdown().await;
}

#[actix_rt::test]
async fn churn_cycles_wait_for_the_tcp_close_and_descriptors_come_back() {
    let _trace = common::trace_init();
    let server = matchd::start(common::config()).await.unwrap();
    // The server runs in this process: its descriptors are this process's (the client's too, and
    // they are closed by the time the tool counts again).
    let pid = std::process::id().to_string();
    let args = ["churn", "--connects", "300", "--users", "20", "--pairs", "40", "--server-pid", &pid];
    let report = load(&server, &args).await;
    assert_eq!(report.counts["cycles"], 300, "{}", report.human());
    assert_eq!(report.counts["cycle_failures"], 0);
    assert!(report.latencies_ms.contains_key("close_frame_to_tcp_close"));
    assert!(report.counts.contains_key("server_fds_peak"));
    server.shutdown().await;
}

#[actix_rt::test]
async fn publish_to_one_and_to_many_users_per_call_reaches_every_tab_once() {
    let _trace = common::trace_init();
    let server = matchd::start(common::config()).await.unwrap();
    let args = ["publish", "--users", "40", "--tabs", "2", "--sse-fraction", "0.25", "--users-per-call", "1,20"];
    let report = load(&server, &[&args[..], &["--calls", "60", "--pairs", "5"]].concat()).await;
    assert_eq!(report.counts["connections_ready"], 80);
    assert_eq!(report.counts["matches_fully_delivered"], 5);
    for n in [1, 20] {
        assert_eq!(report.counts[&format!("publish_{n}_calls_ok")], 60);
        assert_eq!(report.counts[&format!("publish_{n}_fully_delivered")], 60);
        assert!(report.latencies_ms.contains_key(&format!("publish_{n}_event_all_connections")));
        assert!(report.figures.contains_key(&format!("publish_{n}_events_per_sec")));
    }
    server.shutdown().await;
}

#[actix_rt::test]
async fn healthz_rate_is_measured() {
    let _trace = common::trace_init();
    let server = matchd::start(common::config()).await.unwrap();
    let report = load(&server, &["healthz", "--requests", "300"]).await;
    assert_eq!(report.counts["healthz_ok"], 300);
    server.shutdown().await;
}

/// A short soak against a real `matchd` process with Redis and a short cache idle time (so
/// eviction runs): every kind of load happens, the server is sampled, the invariants hold.
#[actix_rt::test]
async fn a_short_soak_mixes_every_load_and_samples_the_server() {
    let _trace = common::trace_init();
    let redis = common::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("soak.toml");
    std::fs::write(&config, "[timeouts]\nlease_ms = 1000\ncache_idle_ms = 1000\n").unwrap();
    let url = redis.url();
    let args = ["--redis", &url, "--workers", "1", "--shards", "2", "--config", config.to_str().unwrap()];
    let node = common::process::MatchdProcess::start(&args);
    node.wait_ready(std::time::Duration::from_secs(10));
    let pid = node.pid().unwrap().to_string();
    let soak = [
        "--server-pid",
        &pid,
        "soak",
        "--duration-secs",
        "6",
        "--sample-secs",
        "1",
        "--warmup-secs",
        "2",
        "--pairs-per-sec",
        "30",
        "--held-streams",
        "4",
        "--spinners",
        "6",
        "--join-every-ms",
        "1500",
    ];
    let report = load_at(&node.base_url(), &soak).await;
    let human = report.human();
    for count in ["swipe_requests", "matches", "skips", "churn_cycles", "held_stream_events", "unmatches"] {
        assert!(report.counts[count] > 0, "no {count}:\n{human}");
    }
    assert!(report.counts["samples"] >= 6, "{human}");
    assert!(report.samples.iter().all(|s| s["rss_kib"] > 0.0 && s["fds"] > 0.0 && s["threads"] > 0.0), "{human}");
    for figure in ["rss_warmup_kib", "rss_end_kib", "rss_end_over_warmup", "fds_end_over_warmup", "threads_end"] {
        assert!(report.figures.contains_key(figure), "no {figure}:\n{human}");
    }
    assert!(report.notes.iter().any(|n| n.contains("server RSS end/warm-up")), "{human}");
    // The server's own checks stayed at zero (a violation would have failed `load_at`).
    assert!(!report.violations_by_kind.contains_key("server_counted"));
    // Eviction ran in the server meanwhile.
    let (_, metrics) = node.get("/metrics").unwrap();
    let evicted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("matchd_cache_evictions_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(evicted > 0.0, "no cache eviction during the soak");
}
