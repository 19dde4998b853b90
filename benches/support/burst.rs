//! Bursts of simultaneous mutual swipes. Each pair's two right swipes are started in the same
//! poll; all pairs at once (a burst) or a bounded number of pairs in flight. Every swipe's outcome
//! is tallied: a pair must end with exactly one `pending` and one `matched` answer, and failures
//! are counted and shown, never hidden.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use matchd::node::Via;
use matchd::protocol::{Direction, SwipeRequest, SwipeStatus, UserId};
use matchd::{Config, Node};

/// What one swipe answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Matched,
    Other(String),
    Failed(String),
}

/// Outcomes of a run.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub swipes: u64,
    pub failures: u64,
    /// Pairs whose two answers were not one `pending` and one `matched`.
    pub anomalies: u64,
    pub example: Option<String>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.swipes += other.swipes;
        self.failures += other.failures;
        self.anomalies += other.anomalies;
        if self.example.is_none() {
            self.example.clone_from(&other.example);
        }
    }

    /// One line for the bench output; loud when anything went wrong.
    pub fn line(&self, name: &str) -> String {
        if self.failures == 0 && self.anomalies == 0 {
            format!("{name}: {} swipes, no failures, every pair matched once", self.swipes)
        } else {
            format!(
                "{name}: {} swipes, {} FAILED, {} pairs without exactly one match (e.g. {})",
                self.swipes,
                self.failures,
                self.anomalies,
                self.example.as_deref().unwrap_or("?")
            )
        }
    }
}

/// A run: how long it took, per-swipe latencies (microseconds) and outcomes.
pub struct Run {
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub tally: Tally,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Fires `pairs` mutual pairs through `swipe(pair, side)`: all at once (`in_flight = None`) or
/// `in_flight` pairs at a time. A swipe's latency runs from its own start to its answer.
pub async fn drive<F, Fut>(pairs: usize, in_flight: Option<usize>, swipe: F) -> Run
where
    F: Fn(usize, usize) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let timed = |pair: usize, side: usize| {
        let fut = swipe(pair, side);
        async move {
            let start = Instant::now();
            let outcome = fut.await;
            (outcome, start.elapsed())
        }
    };
    let pair = |i: usize| futures_util::future::join(timed(i, 0), timed(i, 1));
    let start = Instant::now();
    let results: Vec<_> = match in_flight {
        None => futures_util::future::join_all((0..pairs).map(pair)).await,
        Some(k) => futures_util::stream::iter(0..pairs).map(pair).buffer_unordered(k.max(1)).collect().await,
    };
    let elapsed = start.elapsed();
    let mut latency_us = histogram();
    let mut tally = Tally::default();
    for ((a, la), (b, lb)) in results {
        for (o, l) in [(&a, la), (&b, lb)] {
            tally.swipes += 1;
            latency_us.saturating_record(l.as_micros().max(1) as u64);
            if let Outcome::Failed(e) = o {
                tally.failures += 1;
                tally.example.get_or_insert_with(|| e.clone());
            }
        }
        let one_match = matches!((&a, &b), (Outcome::Pending, Outcome::Matched) | (Outcome::Matched, Outcome::Pending));
        if !one_match {
            tally.anomalies += 1;
            tally.example.get_or_insert_with(|| format!("{a:?} + {b:?}"));
        }
    }
    Run { elapsed, latency_us, tally }
}

/// A server configuration for benches: `shards` shard threads, and limits that do not get in
/// the way of a benchmark (rate limits off, short event logs since users are fresh every burst).
pub fn bench_config(shards: usize) -> Config {
    let mut c = Config { shards, workers: 1, ..Config::default() };
    c.limits.actions_per_second = 1e12;
    c.limits.action_burst = u32::MAX;
    c.limits.event_log_capacity = 16;
    c
}

/// `pairs` pairs of users never used before in this process (named after `tag` and a counter),
/// so no state from an earlier burst (in memory or in Redis) can affect them.
pub fn users(tag: &str, pairs: usize) -> Vec<[UserId; 2]> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let batch = NEXT.fetch_add(1, Ordering::Relaxed);
    (0..pairs)
        .map(|i| {
            let id =
                |side: &str| UserId::parse(&format!("{tag}-{batch}-{i}{side}")).expect("generated user ids are valid");
            [id("a"), id("b")]
        })
        .collect()
}

/// One right swipe through matchd's `Node` (the path the HTTP handler takes after auth).
pub async fn node_swipe(node: &Node, from: &UserId, to: &UserId) -> Outcome {
    let req = SwipeRequest { target: to.clone(), direction: Direction::Right, swipe_id: None };
    match node.swipe(from, req, 0, Via::Http).await {
        Ok(r) => match r.status {
            SwipeStatus::Pending => Outcome::Pending,
            SwipeStatus::Matched => Outcome::Matched,
            other => Outcome::Other(format!("{other:?}")),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// A burst of `users.len()` mutual pairs through `node`.
pub async fn node_burst(node: &Node, users: &[[UserId; 2]], in_flight: Option<usize>) -> Run {
    drive(users.len(), in_flight, |i, side| node_swipe(node, &users[i][side], &users[i][1 - side])).await
}

/// p50 / p99 / max of a histogram, in microseconds.
pub fn percentiles(h: &Histogram<u64>) -> (u64, u64, u64) {
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
}
