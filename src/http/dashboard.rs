//! The live operations dashboard: `GET /dashboard` (one self-contained page, `dashboard.html`:
//! inline CSS and plain SVG charts, no external assets) and `GET /dashboard/data` (the JSON it
//! polls every second). Served in dev mode, or to a request carrying the dashboard key
//! (`X-Api-Key` header or `?key=`; see [`dashboard_key`]).
//!
//! Figures are computed here, from the Prometheus registry: a sampler task reads the counters,
//! gauges and histogram buckets once a second into a ring of the last five minutes; rates come from
//! the difference of two samples, percentiles from the difference of two samples' buckets (as
//! `histogram_quantile` would), so the page only draws.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::node::Node;

/// The page, compiled in.
pub const PAGE: &str = include_str!("dashboard.html");

/// How often the sampler reads the registry.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept (five minutes at one a second).
const KEEP: usize = 300;
/// Samples drawn in the charts.
const SERIES: usize = 120;
/// Rates ("now") are averaged over this many seconds.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Percentiles are taken over this many seconds.
const PERCENTILE_WINDOW: Duration = Duration::from_secs(60);

/// The key that opens the dashboard outside dev mode: the server API key (none configured: the
/// dashboard is served in dev mode only).
pub fn dashboard_key(node: &Node) -> Option<&str> {
    node.config.server_api_key()
}

/// Compares without stopping at the first difference (the key is a secret).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `req` may see the dashboard: dev mode, or the dashboard key as `X-Api-Key` or `?key=`.
fn allowed(node: &Node, req: &HttpRequest) -> Result<(), ApiError> {
    if node.config.dev_mode() {
        return Ok(());
    }
    let Some(key) = dashboard_key(node) else {
        return Err(ApiError::NotFound("the dashboard is only served in dev mode or with the server API key".into()));
    };
    let header = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    let query = web::Query::<BTreeMap<String, String>>::from_query(req.query_string()).ok();
    let given = header.map(str::to_string).or_else(|| query.and_then(|q| q.get("key").cloned()));
    match given {
        Some(g) if same_secret(g.as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized("the dashboard key is wrong".into())),
        None => Err(ApiError::Unauthorized("the dashboard needs the server API key (X-Api-Key or ?key=)".into())),
    }
}

/// `GET /dashboard`.
pub async fn page(node: web::Data<Node>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    allowed(&node, &req)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE))
}

/// `GET /dashboard/data`.
pub async fn data(node: web::Data<Node>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    allowed(&node, &req)?;
    let connected = node.connected_users().await;
    let ready = node.persistence_ready().await.is_ok();
    // The figures of "now" are read now; the sampler's ring gives the earlier readings.
    let live = Snapshot::take(connected);
    let body = {
        let ring = node.dashboard.lock().map_err(|_| ApiError::Unavailable("the dashboard is unwell".into()))?;
        figures(&node, &ring, &live, ready)
    };
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body))
}

/// Cumulative bucket counts of one histogram (or several summed), as Prometheus exposes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// Upper bounds, increasing (the implicit `+Inf` bucket is `count`).
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
}

impl Buckets {
    fn add(&mut self, h: &prometheus::proto::Histogram) {
        let buckets = h.get_bucket();
        if self.bounds.is_empty() {
            self.bounds = buckets.iter().map(|b| b.upper_bound()).collect();
            self.cumulative = vec![0; self.bounds.len()];
        }
        for (c, b) in self.cumulative.iter_mut().zip(buckets) {
            *c += b.cumulative_count();
        }
        self.count += h.get_sample_count();
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        if earlier.bounds != self.bounds {
            return self.clone();
        }
        Buckets {
            bounds: self.bounds.clone(),
            cumulative: self.cumulative.iter().zip(&earlier.cumulative).map(|(a, b)| a.saturating_sub(*b)).collect(),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The `q` quantile (0..1), interpolated inside its bucket like Prometheus's
    /// `histogram_quantile`; `None` without observations. Past the last bound: that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut prev_bound = 0.0;
        let mut prev_count = 0u64;
        for (&bound, &cum) in self.bounds.iter().zip(&self.cumulative) {
            if cum as f64 >= rank && cum > prev_count {
                let within = (rank - prev_count as f64) / (cum - prev_count) as f64;
                return Some(prev_bound + (bound - prev_bound) * within.clamp(0.0, 1.0));
            }
            prev_bound = bound;
            prev_count = cum;
        }
        self.bounds.last().copied()
    }
}

fn families(c: &dyn Collector) -> Vec<MetricFamily> {
    c.collect()
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    m.get_label().iter().find(|l| l.name() == name).map(|l| l.value())
}

/// Every child of a histogram family, summed (`filter` picks children by their labels).
fn histogram(c: &dyn Collector, filter: impl Fn(&prometheus::proto::Metric) -> bool) -> Buckets {
    let mut b = Buckets::default();
    for f in families(c) {
        for m in f.get_metric().iter().filter(|m| filter(m)) {
            b.add(m.get_histogram());
        }
    }
    b
}

/// Each child of a labelled histogram by the value of `by`.
fn histograms_by(c: &dyn Collector, by: &str) -> BTreeMap<String, Buckets> {
    let mut out: BTreeMap<String, Buckets> = BTreeMap::new();
    for f in families(c) {
        for m in f.get_metric() {
            if let Some(v) = label(m, by) {
                out.entry(v.to_string()).or_default().add(m.get_histogram());
            }
        }
    }
    out
}

fn counter_total(c: &dyn Collector) -> u64 {
    families(c).iter().flat_map(|f| f.get_metric()).map(|m| m.get_counter().get_value() as u64).sum()
}

fn counters_by(c: &dyn Collector, by: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for f in families(c) {
        for m in f.get_metric() {
            if let Some(v) = label(m, by) {
                *out.entry(v.to_string()).or_default() += m.get_counter().get_value() as u64;
            }
        }
    }
    out
}

fn gauges_by(c: &dyn Collector, by: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for f in families(c) {
        for m in f.get_metric() {
            if let Some(v) = label(m, by) {
                *out.entry(v.to_string()).or_default() += m.get_gauge().get_value() as i64;
            }
        }
    }
    out
}

/// One reading of the registry.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    unix_ms: u64,
    matches: u64,
    swipes: u64,
    events: u64,
    rooms_closed: u64,
    persist_errors: u64,
    invariant_violations: u64,
    pairings: BTreeMap<String, u64>,
    queue_length: BTreeMap<String, i64>,
    connections: BTreeMap<String, i64>,
    connected_users: Option<u64>,
    delivery: Buckets,
    persist: Buckets,
    queue_wait: BTreeMap<String, Buckets>,
}

impl Snapshot {
    fn take(connected_users: Option<u64>) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            unix_ms: crate::protocol::unix_ms(),
            matches: METRICS.matches.get(),
            swipes: counter_total(&METRICS.swipes),
            events: METRICS.events_delivered.get(),
            rooms_closed: counter_total(&METRICS.rooms_closed),
            persist_errors: METRICS.persist_errors.get(),
            invariant_violations: counter_total(&METRICS.invariant_violations),
            pairings: counters_by(&METRICS.pairings, "pool"),
            queue_length: gauges_by(&METRICS.queue_length, "pool"),
            connections: gauges_by(&METRICS.connections, "transport"),
            connected_users,
            delivery: histogram(&METRICS.delivery_seconds, |_| true),
            persist: histogram(&METRICS.persist_seconds, |_| true),
            queue_wait: histograms_by(&METRICS.queue_wait_seconds, "pool"),
        }
    }

    fn pairings_total(&self) -> u64 {
        self.pairings.values().sum()
    }

    fn connections_total(&self) -> i64 {
        self.connections.values().sum()
    }
}

/// The sampler's ring of snapshots, oldest first.
#[derive(Debug, Default)]
pub struct Ring {
    samples: VecDeque<Snapshot>,
}

impl Ring {
    fn push(&mut self, s: Snapshot) {
        self.samples.push_back(s);
        while self.samples.len() > KEEP {
            self.samples.pop_front();
        }
    }

    /// The newest sample at least `ago` older than `latest` (else the oldest, else `latest`).
    fn before<'a>(&'a self, latest: &'a Snapshot, ago: Duration) -> &'a Snapshot {
        self.samples
            .iter()
            .rev()
            .find(|s| latest.at.saturating_duration_since(s.at) >= ago)
            .or_else(|| self.samples.front())
            .unwrap_or(latest)
    }
}

/// Shared between the node (which serves it) and its sampler.
pub type Samples = Arc<Mutex<Ring>>;

/// Starts the once-a-second sampler of `node`'s dashboard; it ends when the node is dropped.
pub fn spawn_sampler(node: &Node) {
    let ring: Weak<Mutex<Ring>> = Arc::downgrade(&node.dashboard);
    let users = node.users.clone();
    let timeout = node.config.persist_timeout();
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if ring.strong_count() == 0 {
                return;
            }
            let connected = crate::node::count_connected(&users, timeout).await;
            let snapshot = Snapshot::take(connected);
            let Some(ring) = ring.upgrade() else { return };
            if let Ok(mut r) = ring.lock() {
                r.push(snapshot);
            };
        }
    });
}

fn ms(seconds: Option<f64>) -> Value {
    seconds.map_or(Value::Null, |s| json!((s * 1000.0 * 1000.0).round() / 1000.0))
}

fn per_sec(later: u64, earlier: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (later.saturating_sub(earlier) as f64 / secs * 100.0).round() / 100.0
}

/// The dashboard's JSON: `latest` (read now) against the ring's earlier samples.
fn figures(node: &Node, ring: &Ring, latest: &Snapshot, ready: bool) -> Value {
    let connected = latest.connected_users;
    let recent = ring.before(latest, RATE_WINDOW);
    let window = ring.before(latest, PERCENTILE_WINDOW);
    let secs = latest.at.saturating_duration_since(recent.at).as_secs_f64();
    let (mode, persistence) = match (&node.config.cluster, &node.config.redis) {
        (Some(_), _) => ("cluster", "redis"),
        (None, Some(_)) => ("single active node", "redis"),
        (None, None) => ("single node", "memory"),
    };
    let nodes: Vec<Value> = match node.membership() {
        Some(m) => m
            .members_with_slots()
            .into_iter()
            .map(|(member, slots)| {
                json!({"id": &*member.id, "url": &*member.url, "owned_slots": slots, "self": *member.id == *node.node_id})
            })
            .collect(),
        None => {
            let slots = if ready { crate::coord::slot::SLOT_COUNT } else { 0 };
            vec![json!({"id": &*node.node_id, "owned_slots": slots, "self": true, "active": ready})]
        }
    };
    let mut pool_names: Vec<&String> = latest.queue_length.keys().chain(latest.pairings.keys()).collect();
    pool_names.sort();
    pool_names.dedup();
    let pools: Vec<Value> = pool_names
        .into_iter()
        .map(|p| {
            let empty = Buckets::default();
            let now = latest.queue_wait.get(p).unwrap_or(&empty);
            let then = window.queue_wait.get(p).unwrap_or(&empty);
            let waited = now.since(then);
            json!({
                "pool": p,
                "waiting": latest.queue_length.get(p).copied().unwrap_or(0),
                "wait_p50_ms": ms(waited.quantile(0.5)),
                "wait_p99_ms": ms(waited.quantile(0.99)),
                "pairings_total": latest.pairings.get(p).copied().unwrap_or(0),
                "pairings_per_sec": per_sec(
                    latest.pairings.get(p).copied().unwrap_or(0),
                    recent.pairings.get(p).copied().unwrap_or(0),
                    secs,
                ),
            })
        })
        .collect();
    let delivery = latest.delivery.since(&window.delivery);
    let persist = latest.persist.since(&window.persist);

    // The charts: one point per sample interval.
    let start = ring.samples.len().saturating_sub(SERIES + 1);
    let points: Vec<(&Snapshot, &Snapshot)> =
        ring.samples.iter().skip(start).zip(ring.samples.iter().skip(start + 1)).collect();
    let series = |f: &dyn Fn(&Snapshot, &Snapshot, f64) -> Value| -> Vec<Value> {
        points.iter().map(|(a, b)| f(a, b, b.at.saturating_duration_since(a.at).as_secs_f64())).collect()
    };
    json!({
        "node": {
            "id": &*node.node_id,
            "version": crate::metrics::VERSION,
            "commit": crate::metrics::BUILD_COMMIT,
            "mode": mode,
            "persistence": persistence,
            "ready": ready,
            "standby_of": node.standby_of(),
        },
        "slots_total": crate::coord::slot::SLOT_COUNT,
        "nodes": nodes,
        "connections": latest.connections,
        "connected_users": connected,
        "now": {
            "window_secs": (secs * 10.0).round() / 10.0,
            "matches_per_sec": per_sec(latest.matches, recent.matches, secs),
            "rooms_per_sec": per_sec(latest.pairings_total(), recent.pairings_total(), secs),
            "swipes_per_sec": per_sec(latest.swipes, recent.swipes, secs),
            "events_per_sec": per_sec(latest.events, recent.events, secs),
            "persist_errors_per_sec": per_sec(latest.persist_errors, recent.persist_errors, secs),
        },
        "latency": {
            "window_secs": latest.at.saturating_duration_since(window.at).as_secs(),
            "delivery_p50_ms": ms(delivery.quantile(0.5)),
            "delivery_p99_ms": ms(delivery.quantile(0.99)),
            "persist_p50_ms": ms(persist.quantile(0.5)),
            "persist_p99_ms": ms(persist.quantile(0.99)),
        },
        "totals": {
            "matches": latest.matches,
            "rooms": latest.pairings_total(),
            "rooms_closed": latest.rooms_closed,
            "swipes": latest.swipes,
            "events_delivered": latest.events,
            "persist_errors": latest.persist_errors,
            "invariant_violations": latest.invariant_violations,
        },
        "pools": pools,
        "series": {
            "t": points.iter().map(|(_, b)| b.unix_ms).collect::<Vec<_>>(),
            "matches_per_sec": series(&|a, b, s| json!(per_sec(b.matches, a.matches, s))),
            "rooms_per_sec": series(&|a, b, s| json!(per_sec(b.pairings_total(), a.pairings_total(), s))),
            "swipes_per_sec": series(&|a, b, s| json!(per_sec(b.swipes, a.swipes, s))),
            "connections": series(&|_, b, _| json!(b.connections_total())),
            "connected_users": series(&|_, b, _| json!(b.connected_users)),
            "queue_waiting": series(&|_, b, _| json!(b.queue_length.values().sum::<i64>())),
            "delivery_p99_ms": series(&|a, b, _| ms(b.delivery.since(&a.delivery).quantile(0.99))),
            "persist_p99_ms": series(&|a, b, _| ms(b.persist.since(&a.persist).quantile(0.99))),
            "persist_errors_per_sec": series(&|a, b, s| json!(per_sec(b.persist_errors, a.persist_errors, s))),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(bounds: &[f64], counts: &[u64]) -> Buckets {
        let mut cum = 0;
        let cumulative = counts
            .iter()
            .map(|c| {
                cum += c;
                cum
            })
            .collect();
        Buckets { bounds: bounds.to_vec(), cumulative, count: cum }
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket_like_prometheus() {
        let b = buckets(&[0.001, 0.002, 0.004, 0.008], &[0, 10, 0, 0]);
        assert_eq!(b.quantile(0.5), Some(0.0015));
        let b = buckets(&[0.001, 0.002, 0.004, 0.008], &[50, 0, 49, 1]);
        assert_eq!(b.quantile(0.5), Some(0.001));
        let p99 = b.quantile(0.99).unwrap();
        assert!((p99 - 0.004).abs() < 1e-9, "{p99}");
        assert_eq!(Buckets::default().quantile(0.5), None);
    }

    #[test]
    fn a_window_subtracts_the_earlier_sample() {
        let before = buckets(&[1.0, 2.0], &[5, 0]);
        let after = buckets(&[1.0, 2.0], &[5, 3]);
        let d = after.since(&before);
        assert_eq!((d.count, d.cumulative.clone()), (3, vec![0, 3]));
        assert_eq!(d.quantile(0.5), Some(1.5));
    }

    #[test]
    fn the_key_comparison_needs_every_byte() {
        assert!(same_secret(b"dev-api-key", b"dev-api-key"));
        assert!(!same_secret(b"dev-api-key", b"dev-api-kez"));
        assert!(!same_secret(b"dev", b"dev-api-key"));
    }
}
