//! Every Prometheus metric in one place, named `matchd_<noun>_<unit>`. One process-wide registry
//! (servers started side by side in one test process share it, so tests check that values move,
//! not their absolute level), except `matchd_connected_users`, which each node derives at scrape
//! time from its own user shards (`render_with`).
//!
//! Every labelled series a node can produce is created at start (`preregister`), at zero, so a
//! dashboard or alert sees it before the first event: the label values live in [`labels`] (and
//! `ApiError::CODES`, `Call::KINDS`); a unit test checks that every literal label in the code is
//! listed there.

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The known values of each label, pre-registered at start.
pub mod labels {
    /// `matchd_connections{transport}` (`relay`: streams relayed from another node, cluster mode).
    pub const CONNECTION_TRANSPORTS: [&str; 3] = ["ws", "sse", "relay"];
    /// Transports an event is written on (`matchd_event_delivery_seconds`, `matchd_room_closed_notify_seconds`).
    pub const DELIVERY_TRANSPORTS: [&str; 2] = ["ws", "sse"];
    /// `matchd_swipes_total{outcome}`.
    pub const SWIPE_OUTCOMES: [&str; 4] = ["pending", "matched", "passed", "replayed"];
    /// `matchd_rooms_closed_total{reason}`: the reason the closing side hears.
    pub const ROOM_CLOSE_REASONS: [&str; 3] = ["skipped", "left", "closed_by_server"];
    /// `matchd_action_seconds{action}`.
    pub const ACTIONS: [&str; 7] =
        ["swipe", "unmatch", "join_queue", "leave_queue", "skip", "server_publish", "close_room"];
    /// `matchd_action_seconds{transport}`.
    pub const ACTION_TRANSPORTS: [&str; 2] = ["http", "ws"];
    /// `matchd_webhooks_total{result}`.
    pub const WEBHOOK_RESULTS: [&str; 4] = ["delivered", "retried", "gave_up", "dropped_overload"];
    /// `matchd_forwarded_total{result}` (cluster mode; `kind` is one of `Call::KINDS`).
    pub const FORWARD_RESULTS: [&str; 3] = ["ok", "answered_error", "retried"];
    /// `matchd_cache_evictions_total{kind}`.
    pub const CACHE_KINDS: [&str; 2] = ["pair", "user"];
    /// `matchd_invariant_violations_total{check}`.
    pub const INVARIANT_CHECKS: [&str; 2] = ["duplicate_match_refused", "user_in_two_rooms"];
}

/// The handles to every metric.
pub struct Metrics {
    registry: Registry,
    /// Always 1; its labels say which build runs (`version`, and `commit` when the build set
    /// `MATCHD_COMMIT`).
    pub build_info: IntGaugeVec,
    /// Open event streams, by transport (`ws`, `sse`).
    pub connections: IntGaugeVec,
    /// Events written to a connection.
    pub events_delivered: IntCounter,
    /// From an event's creation to its write on a connection.
    pub delivery_seconds: HistogramVec,
    /// Connections closed because they could not keep up.
    pub slow_consumers: IntCounter,
    /// Relayed streams that followed their user to a new owner without closing the client.
    pub relay_reopens: IntCounter,
    /// Swipes by outcome (`pending`, `matched`, `passed`, `replayed`).
    pub swipes: IntCounterVec,
    /// Matches created.
    pub matches: IntCounter,
    /// Matches ended by `DELETE /v1/matches/{id}`.
    pub unmatches: IntCounter,
    /// Errors answered, by contract code.
    pub errors: IntCounterVec,
    /// Actions handled, by name and transport, with their latency.
    pub action_seconds: HistogramVec,
    /// Users waiting, by pool.
    pub queue_length: IntGaugeVec,
    /// Time from join to pairing, by pool.
    pub queue_wait_seconds: HistogramVec,
    /// Pairs formed, by pool.
    pub pairings: IntCounterVec,
    /// Skips that closed a room.
    pub skips: IntCounter,
    /// Rooms closed, by reason (`skipped`, `left`).
    pub rooms_closed: IntCounterVec,
    /// From a skip or leave to the partner's `room_closed` being written to a connection.
    pub room_closed_notify_seconds: HistogramVec,
    /// Redis pipelines sent (each is one round trip).
    pub persist_round_trips: IntCounter,
    /// Redis commands sent (inside those pipelines).
    pub persist_commands: IntCounter,
    /// Redis pipelines that failed or timed out.
    pub persist_errors: IntCounter,
    /// Latency of one Redis pipeline.
    pub persist_seconds: prometheus::Histogram,
    /// Operations per group commit.
    pub persist_batch_size: prometheus::Histogram,
    /// Idle cache entries dropped from memory, by kind (`pair`, `user`); Redis mode.
    pub cache_evictions: IntCounterVec,
    /// 1 while this node holds the ownership lease (Redis mode).
    pub lease_held: IntGauge,
    /// Cluster mode: live members this node sees.
    pub cluster_members: IntGauge,
    /// Cluster mode: slots this node took over (claimed) since it started.
    pub ownership_changes: IntCounter,
    /// Cluster mode: actions and internal messages sent to the owning node, by kind and result.
    pub forwarded: IntCounterVec,
    /// Cluster mode: round trip of a forwarded call.
    pub forward_seconds: prometheus::Histogram,
    /// Cluster mode: calls per batched request to a peer.
    pub forward_batch_size: prometheus::Histogram,
    /// Cluster mode: from an event's creation on its owner to its relay by the node holding the
    /// connection (wall clocks of the two nodes).
    pub cross_node_delivery_seconds: prometheus::Histogram,
    /// Server API: publishes answered `published` (each logged one event per listed user).
    pub server_publish: IntCounter,
    /// Webhook deliveries by result (`delivered`, `retried`, `gave_up`, `dropped_overload`).
    pub webhooks: IntCounterVec,
    /// Internal consistency checks that failed (should stay 0; alert on any).
    pub invariant_violations: IntCounterVec,
    /// Inconsistencies the background audit found in Redis, by kind (each counted once when a
    /// sweep confirms it).
    pub audit_inconsistencies: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    // 50 µs .. ~1.6 s
    exponential_buckets(0.00005, 2.0, 16).unwrap_or_default()
}

impl Metrics {
    fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            build_info: IntGaugeVec::new(
                Opts::new("matchd_build_info", "Always 1; the labels name the running build"),
                if BUILD_COMMIT.is_some() { &["version", "commit"] } else { &["version"] },
            )?,
            connections: IntGaugeVec::new(
                Opts::new("matchd_connections", "Open event streams by transport"),
                &["transport"],
            )?,
            events_delivered: IntCounter::new("matchd_events_delivered_total", "Events written to connections")?,
            delivery_seconds: HistogramVec::new(
                HistogramOpts::new("matchd_event_delivery_seconds", "Event creation to write on a connection")
                    .buckets(latency_buckets()),
                &["transport"],
            )?,
            slow_consumers: IntCounter::new(
                "matchd_slow_consumers_closed_total",
                "Connections closed because their outbox was full",
            )?,
            relay_reopens: IntCounter::new(
                "matchd_relay_reopens_total",
                "Relayed streams that followed their user to a new owner without closing the client",
            )?,
            swipes: IntCounterVec::new(Opts::new("matchd_swipes_total", "Swipes by outcome"), &["outcome"])?,
            matches: IntCounter::new("matchd_matches_total", "Matches created")?,
            unmatches: IntCounter::new("matchd_unmatches_total", "Matches ended by unmatch")?,
            errors: IntCounterVec::new(Opts::new("matchd_errors_total", "Errors answered by code"), &["code"])?,
            action_seconds: HistogramVec::new(
                HistogramOpts::new("matchd_action_seconds", "Action latency by action and transport")
                    .buckets(latency_buckets()),
                &["action", "transport"],
            )?,
            queue_length: IntGaugeVec::new(Opts::new("matchd_queue_length", "Users waiting by pool"), &["pool"])?,
            queue_wait_seconds: HistogramVec::new(
                HistogramOpts::new("matchd_queue_wait_seconds", "Join to pairing by pool")
                    .buckets(exponential_buckets(0.0005, 2.0, 20).unwrap_or_default()),
                &["pool"],
            )?,
            pairings: IntCounterVec::new(Opts::new("matchd_pairings_total", "Pairs formed by pool"), &["pool"])?,
            skips: IntCounter::new("matchd_skips_total", "Skips that closed a room")?,
            rooms_closed: IntCounterVec::new(
                Opts::new("matchd_rooms_closed_total", "Rooms closed by reason"),
                &["reason"],
            )?,
            room_closed_notify_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "matchd_room_closed_notify_seconds",
                    "Room close decision to room_closed written to a connection",
                )
                .buckets(latency_buckets()),
                &["transport"],
            )?,
            persist_round_trips: IntCounter::new("matchd_persist_round_trips_total", "Redis pipelines sent")?,
            persist_commands: IntCounter::new("matchd_persist_commands_total", "Redis commands sent")?,
            persist_errors: IntCounter::new("matchd_persist_errors_total", "Redis pipelines that failed")?,
            persist_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new("matchd_persist_seconds", "Latency of one Redis pipeline")
                    .buckets(latency_buckets()),
            )?,
            persist_batch_size: prometheus::Histogram::with_opts(
                HistogramOpts::new("matchd_persist_batch_size", "Operations per group commit")
                    .buckets(exponential_buckets(1.0, 2.0, 12).unwrap_or_default()),
            )?,
            cache_evictions: IntCounterVec::new(
                Opts::new("matchd_cache_evictions_total", "Idle cache entries dropped from memory"),
                &["kind"],
            )?,
            lease_held: IntGauge::new("matchd_lease_held", "1 while this node holds the ownership lease")?,
            cluster_members: IntGauge::new("matchd_cluster_members", "Live cluster members this node sees")?,
            ownership_changes: IntCounter::new(
                "matchd_ownership_changes_total",
                "Slots this node took over since it started",
            )?,
            forwarded: IntCounterVec::new(
                Opts::new("matchd_forwarded_total", "Calls forwarded to the owning node"),
                &["kind", "result"],
            )?,
            forward_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new("matchd_forward_seconds", "Round trip of a call forwarded to the owning node")
                    .buckets(latency_buckets()),
            )?,
            forward_batch_size: prometheus::Histogram::with_opts(
                HistogramOpts::new("matchd_forward_batch_size", "Calls per batched request to another node")
                    .buckets(exponential_buckets(1.0, 2.0, 10).unwrap_or_default()),
            )?,
            cross_node_delivery_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "matchd_cross_node_delivery_seconds",
                    "Event creation on its owner to relay by the node holding the connection",
                )
                .buckets(latency_buckets()),
            )?,
            server_publish: IntCounter::new(
                "matchd_server_publish_total",
                "Server API publishes answered published (one event per listed user)",
            )?,
            webhooks: IntCounterVec::new(
                Opts::new("matchd_webhooks_total", "Webhook deliveries by result"),
                &["result"],
            )?,
            invariant_violations: IntCounterVec::new(
                Opts::new("matchd_invariant_violations_total", "Failed internal consistency checks"),
                &["check"],
            )?,
            audit_inconsistencies: IntCounterVec::new(
                Opts::new("matchd_audit_inconsistencies_total", "Inconsistencies found by the background state audit"),
                &["kind"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.build_info.clone()))?;
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.events_delivered.clone()))?;
        m.registry.register(Box::new(m.delivery_seconds.clone()))?;
        m.registry.register(Box::new(m.slow_consumers.clone()))?;
        m.registry.register(Box::new(m.relay_reopens.clone()))?;
        m.registry.register(Box::new(m.swipes.clone()))?;
        m.registry.register(Box::new(m.matches.clone()))?;
        m.registry.register(Box::new(m.unmatches.clone()))?;
        m.registry.register(Box::new(m.errors.clone()))?;
        m.registry.register(Box::new(m.action_seconds.clone()))?;
        m.registry.register(Box::new(m.queue_length.clone()))?;
        m.registry.register(Box::new(m.queue_wait_seconds.clone()))?;
        m.registry.register(Box::new(m.pairings.clone()))?;
        m.registry.register(Box::new(m.skips.clone()))?;
        m.registry.register(Box::new(m.rooms_closed.clone()))?;
        m.registry.register(Box::new(m.room_closed_notify_seconds.clone()))?;
        m.registry.register(Box::new(m.invariant_violations.clone()))?;
        m.registry.register(Box::new(m.audit_inconsistencies.clone()))?;
        m.registry.register(Box::new(m.webhooks.clone()))?;
        m.registry.register(Box::new(m.server_publish.clone()))?;
        m.registry.register(Box::new(m.lease_held.clone()))?;
        m.registry.register(Box::new(m.cluster_members.clone()))?;
        m.registry.register(Box::new(m.ownership_changes.clone()))?;
        m.registry.register(Box::new(m.forwarded.clone()))?;
        m.registry.register(Box::new(m.forward_seconds.clone()))?;
        m.registry.register(Box::new(m.forward_batch_size.clone()))?;
        m.registry.register(Box::new(m.cross_node_delivery_seconds.clone()))?;
        m.registry.register(Box::new(m.cache_evictions.clone()))?;
        m.registry.register(Box::new(m.persist_round_trips.clone()))?;
        m.registry.register(Box::new(m.persist_commands.clone()))?;
        m.registry.register(Box::new(m.persist_errors.clone()))?;
        m.registry.register(Box::new(m.persist_seconds.clone()))?;
        m.registry.register(Box::new(m.persist_batch_size.clone()))?;
        match BUILD_COMMIT {
            Some(commit) => m.build_info.with_label_values(&[VERSION, commit]).set(1),
            None => m.build_info.with_label_values(&[VERSION]).set(1),
        }
        Ok(m)
    }

    /// Creates every series a node with `config` can produce, at zero, so they exist before the
    /// first event: every known label value, every configured pool (and `default`), and the
    /// forwarding series in cluster mode.
    pub fn preregister(&self, config: &crate::Config) {
        for t in labels::CONNECTION_TRANSPORTS {
            self.connections.with_label_values(&[t]);
        }
        for t in labels::DELIVERY_TRANSPORTS {
            self.delivery_seconds.with_label_values(&[t]);
            self.room_closed_notify_seconds.with_label_values(&[t]);
        }
        for o in labels::SWIPE_OUTCOMES {
            self.swipes.with_label_values(&[o]);
        }
        for r in labels::ROOM_CLOSE_REASONS {
            self.rooms_closed.with_label_values(&[r]);
        }
        for code in crate::error::ApiError::CODES {
            self.errors.with_label_values(&[code]);
        }
        for a in labels::ACTIONS {
            for t in labels::ACTION_TRANSPORTS {
                self.action_seconds.with_label_values(&[a, t]);
            }
        }
        let pools =
            std::iter::once(crate::protocol::queue::DEFAULT_POOL).chain(config.pools.keys().map(String::as_str));
        for pool in pools {
            self.queue_length.with_label_values(&[pool]);
            self.queue_wait_seconds.with_label_values(&[pool]);
            self.pairings.with_label_values(&[pool]);
        }
        for r in labels::WEBHOOK_RESULTS {
            self.webhooks.with_label_values(&[r]);
        }
        if config.cluster.is_some() {
            for kind in crate::cluster::forward::Call::KINDS {
                for r in labels::FORWARD_RESULTS {
                    self.forwarded.with_label_values(&[kind, r]);
                }
            }
        }
        for k in labels::CACHE_KINDS {
            self.cache_evictions.with_label_values(&[k]);
        }
        for c in labels::INVARIANT_CHECKS {
            self.invariant_violations.with_label_values(&[c]);
        }
        for kind in crate::audit::Kind::ALL {
            self.audit_inconsistencies.with_label_values(&[kind.as_str()]);
        }
    }

    /// The text exposition format for `GET /metrics`.
    pub fn render(&self) -> String {
        self.render_with(Vec::new())
    }

    /// The process-wide metrics plus `node`'s own families (those a node derives at scrape time).
    pub fn render_with(&self, node: Vec<MetricFamily>) -> String {
        let mut families = self.registry.gather();
        families.extend(node);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The process-wide families, for the dashboard's server-side figures.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }
}

/// The crate's version, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from, when the build set `MATCHD_COMMIT`
/// (`MATCHD_COMMIT=$(git rev-parse --short HEAD) cargo build --release`).
pub const BUILD_COMMIT: Option<&str> = option_env!("MATCHD_COMMIT");

/// `matchd_connected_users` of one node: users with at least one open stream there (counted by
/// the user shards that own the connections, at scrape time).
pub fn connected_users_family(users: u64) -> Vec<MetricFamily> {
    match IntGauge::new("matchd_connected_users", "Users with an open stream on this node") {
        Ok(g) => {
            g.set(i64::try_from(users).unwrap_or(i64::MAX));
            g.collect()
        }
        Err(_) => Vec::new(),
    }
}

/// The process-wide metrics. Construction only fails on a duplicate or malformed metric name, which
/// is a programming error caught by the first test that touches metrics.
pub static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| Metrics::new().unwrap_or_else(|e| panic!("metric definitions are invalid: {e}")));

/// Counts an error answered with contract code `code`.
pub fn count_error(code: &str) {
    METRICS.errors.with_label_values(&[code]).inc();
}

/// Records that `event` was written to a `transport` connection.
pub fn delivered(event: &crate::protocol::Event, transport: &str) {
    let latency = event.created.elapsed().as_secs_f64();
    METRICS.events_delivered.inc();
    METRICS.delivery_seconds.with_label_values(&[transport]).observe(latency);
    if event.type_name == "room_closed" {
        METRICS.room_closed_notify_seconds.with_label_values(&[transport]).observe(latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `metric_name` -> the allowed values of its first label, for the literal labels in the code.
    fn allowed(field: &str) -> Option<Vec<&'static str>> {
        Some(match field {
            "connections" => labels::CONNECTION_TRANSPORTS.to_vec(),
            "delivery_seconds" | "room_closed_notify_seconds" => labels::DELIVERY_TRANSPORTS.to_vec(),
            "swipes" => labels::SWIPE_OUTCOMES.to_vec(),
            "rooms_closed" => labels::ROOM_CLOSE_REASONS.to_vec(),
            "action_seconds" => labels::ACTIONS.to_vec(),
            "webhooks" => labels::WEBHOOK_RESULTS.to_vec(),
            "cache_evictions" => labels::CACHE_KINDS.to_vec(),
            "invariant_violations" => labels::INVARIANT_CHECKS.to_vec(),
            "errors" => crate::error::ApiError::CODES.to_vec(),
            "forwarded" => crate::cluster::forward::Call::KINDS.to_vec(),
            _ => return None,
        })
    }

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `METRICS.<field>.with_label_values(&["literal"` in the server's code uses a value
    /// that `preregister` creates at start (so no series appears only after its first event).
    #[test]
    fn every_literal_label_in_the_code_is_preregistered() {
        let mut files = Vec::new();
        rust_files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut seen = 0;
        for file in files.iter().filter(|f| !f.ends_with("metrics.rs") && !f.to_string_lossy().contains("/load/")) {
            let text = std::fs::read_to_string(file).unwrap();
            let compact: String = text.split_whitespace().collect::<Vec<_>>().join("");
            for (at, _) in compact.match_indices(".with_label_values(&[\"") {
                let before = &compact[..at];
                let field = before.rsplit('.').next().unwrap_or_default();
                let rest = &compact[at + ".with_label_values(&[\"".len()..];
                let value = rest.split('"').next().unwrap_or_default();
                let allowed =
                    allowed(field).unwrap_or_else(|| panic!("{}: unknown labelled metric {field}", file.display()));
                assert!(allowed.contains(&value), "{}: {field}{{{value}}} is not pre-registered", file.display());
                seen += 1;
            }
        }
        assert!(seen >= 10, "the scan found only {seen} labelled uses; is it still reading the code?");
    }

    /// Labels that come from variables are checked at their source: the close reasons a room's
    /// closing side hears (`CloseReasons { leaver: .. }`) and the forwarded calls' kinds.
    #[test]
    fn dynamic_labels_match_their_sources() {
        let room = include_str!("queue/room.rs");
        let mut leavers: Vec<&str> =
            room.split("leaver: \"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
        leavers.sort_unstable();
        leavers.dedup();
        let mut listed = labels::ROOM_CLOSE_REASONS.to_vec();
        listed.sort_unstable();
        assert_eq!(leavers, listed, "room close reasons in queue/room.rs vs labels::ROOM_CLOSE_REASONS");

        let forward = include_str!("cluster/forward.rs");
        let body = forward.split("pub fn kind(&self)").nth(1).and_then(|b| b.split("\n    }\n").next()).unwrap();
        let mut kinds: Vec<&str> = body.split("=> \"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
        kinds.sort_unstable();
        let mut listed = crate::cluster::forward::Call::KINDS.to_vec();
        listed.sort_unstable();
        assert_eq!(kinds, listed, "Call::kind() vs Call::KINDS");
    }

    /// The names in README's Observability section.
    fn documented() -> Vec<String> {
        let readme = include_str!("../README.md");
        let section = readme.split("## Observability").nth(1).unwrap_or_default();
        let section = section.split("\n## ").next().unwrap_or_default();
        let mut names: Vec<String> = section
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with("matchd_"))
            .map(|s| s.split('{').next().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn every_documented_metric_is_exposed_after_preregister() {
        let mut config = crate::Config::default();
        config.cluster = Some(crate::config::ClusterConfig { advertise: "http://127.0.0.1:1".into() });
        METRICS.preregister(&config);
        let text = METRICS.render_with(connected_users_family(0));
        let names = documented();
        assert!(names.len() >= 30, "README lists only {} metrics: {names:?}", names.len());
        for name in names {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} is documented but not exposed");
        }
        for series in [
            "matchd_connections{transport=\"relay\"} 0",
            "matchd_swipes_total{outcome=\"replayed\"}",
            "matchd_errors_total{code=\"payload_too_large\"}",
            "matchd_rooms_closed_total{reason=\"left\"}",
            "matchd_forwarded_total{kind=\"pool_status\",result=\"retried\"}",
            "matchd_action_seconds_count{action=\"leave_queue\",transport=\"ws\"}",
            "matchd_queue_length{pool=\"default\"}",
            "matchd_connected_users 0",
        ] {
            assert!(text.contains(series), "{series} is not exposed");
        }
        for kind in crate::audit::Kind::ALL {
            let series = format!("matchd_audit_inconsistencies_total{{kind=\"{}\"}} ", kind.as_str());
            assert!(text.contains(&series), "{series} is not pre-registered");
        }
        assert!(text.contains(&format!("matchd_build_info{{version=\"{VERSION}\"")));
    }

    #[test]
    fn metrics_render_with_their_names() {
        METRICS.matches.inc();
        count_error("bad_request");
        let text = METRICS.render();
        assert!(text.contains("matchd_matches_total"));
        assert!(text.contains("matchd_errors_total{code=\"bad_request\"}"));
    }
}
