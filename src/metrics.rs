//! Every Prometheus metric in one place, named `matchd_<noun>_<unit>`. One process-wide registry
//! (servers started side by side in one test process share it, so tests check that values move,
//! not their absolute level).

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The handles to every metric.
pub struct Metrics {
    registry: Registry,
    /// Open event streams, by transport (`ws`, `sse`).
    pub connections: IntGaugeVec,
    /// Users with at least one open stream on this node.
    pub connected_users: IntGauge,
    /// Events written to a connection.
    pub events_delivered: IntCounter,
    /// From an event's creation to its write on a connection.
    pub delivery_seconds: HistogramVec,
    /// Connections closed because they could not keep up.
    pub slow_consumers: IntCounter,
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
}

fn latency_buckets() -> Vec<f64> {
    // 50 µs .. ~1.6 s
    exponential_buckets(0.00005, 2.0, 16).unwrap_or_default()
}

impl Metrics {
    fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            connections: IntGaugeVec::new(
                Opts::new("matchd_connections", "Open event streams by transport"),
                &["transport"],
            )?,
            connected_users: IntGauge::new("matchd_connected_users", "Users with an open stream on this node")?,
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
            registry,
        };
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.connected_users.clone()))?;
        m.registry.register(Box::new(m.events_delivered.clone()))?;
        m.registry.register(Box::new(m.delivery_seconds.clone()))?;
        m.registry.register(Box::new(m.slow_consumers.clone()))?;
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
        Ok(m)
    }

    /// The text exposition format for `GET /metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
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

    #[test]
    fn every_documented_metric_is_exposed() {
        // Touch the labelled ones so they have a series to render.
        METRICS.connections.with_label_values(&["ws"]);
        METRICS.delivery_seconds.with_label_values(&["ws"]).observe(0.001);
        METRICS.swipes.with_label_values(&["pending"]);
        METRICS.errors.with_label_values(&["bad_request"]);
        METRICS.action_seconds.with_label_values(&["swipe", "http"]).observe(0.001);
        METRICS.queue_length.with_label_values(&["p"]);
        METRICS.queue_wait_seconds.with_label_values(&["p"]).observe(0.001);
        METRICS.pairings.with_label_values(&["p"]);
        METRICS.rooms_closed.with_label_values(&["skipped"]);
        METRICS.room_closed_notify_seconds.with_label_values(&["ws"]).observe(0.001);
        METRICS.invariant_violations.with_label_values(&["x"]);
        METRICS.webhooks.with_label_values(&["delivered"]);
        METRICS.cache_evictions.with_label_values(&["pair"]);
        let text = METRICS.render();
        // The README's list.
        for name in [
            "matchd_connections",
            "matchd_connected_users",
            "matchd_events_delivered_total",
            "matchd_event_delivery_seconds",
            "matchd_slow_consumers_closed_total",
            "matchd_swipes_total",
            "matchd_matches_total",
            "matchd_unmatches_total",
            "matchd_queue_length",
            "matchd_queue_wait_seconds",
            "matchd_pairings_total",
            "matchd_skips_total",
            "matchd_rooms_closed_total",
            "matchd_room_closed_notify_seconds",
            "matchd_persist_round_trips_total",
            "matchd_persist_commands_total",
            "matchd_persist_errors_total",
            "matchd_persist_seconds",
            "matchd_persist_batch_size",
            "matchd_errors_total",
            "matchd_action_seconds",
            "matchd_lease_held",
            "matchd_cluster_members",
            "matchd_ownership_changes_total",
            "matchd_forward_seconds",
            "matchd_forward_batch_size",
            "matchd_cross_node_delivery_seconds",
            "matchd_webhooks_total",
            "matchd_server_publish_total",
            "matchd_cache_evictions_total",
            "matchd_invariant_violations_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} is not exposed");
        }
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
