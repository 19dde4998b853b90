//! The baseline, measured beside matchd in the same run on the same machine.
//!
//! 1. Swipes (the classic design): a burst of K mutual pairs whose two right swipes start at once, through
//!    - `classic_lua`: one Lua script call per swipe in a private redis-server (check the other
//!      side's like, record this one or the match, PUBLISH), over one pipelined connection;
//!    - `matchd_memory`: matchd's shard actors in memory (`Node::start`, `node.swipe`);
//!    - `matchd_redis`: matchd's shard actors persisting to the same redis-server (group commit:
//!      one pipeline per shard batch, the answer sent after it lands).
//!
//!    Criterion times the bursts; afterwards a table gives swipes/s and per-swipe latency
//!    percentiles for each design: all pairs at once, 64 pairs in flight, one pair at a time.
//! 2. Queue (the polling design): users join a Redis list at evenly spread moments; a poller wakes every
//!    2 s and pairs (as written: one couple per tick; "drain": all couples). Join -> published
//!    latency percentiles. Compare with `matchd-load spin` (join -> room).
//!
//! `cargo bench --bench classic` for figures (about a minute); `cargo test --all-targets` runs a
//! tiny version. Needs `redis-server` (panics with an install hint when it is missing).

// Benchmarks and tests measure wall-clock time of real servers: std's clock is the right one here.
#![allow(clippy::disallowed_types)]

mod support;

use std::cell::RefCell;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use matchd::Node;
use support::burst::{bench_config, drive, node_burst, percentiles, users, Run, Tally};
use support::classic::{measure_poll_queue, ClassicSwipes, Listener, PollQueue, MATCH_CHANNEL};
use support::redis_server::RedisServer;

/// Shard threads for matchd (the target machine has 2 cores).
const SHARDS: usize = 2;

struct Sizes {
    bursts: Vec<usize>,
    /// Pairs and repetitions for the latency table.
    table_pairs: usize,
    table_reps: usize,
    queue_users: usize,
    queue_window: Duration,
    queue_tick: Duration,
}

fn sizes() -> Sizes {
    if support::bench_mode() {
        Sizes {
            bursts: vec![100, 1_000, 10_000],
            table_pairs: 10_000,
            table_reps: 5,
            queue_users: 20,
            queue_window: Duration::from_secs(8),
            queue_tick: Duration::from_secs(2),
        }
    } else {
        Sizes {
            bursts: vec![50],
            table_pairs: 50,
            table_reps: 1,
            queue_users: 6,
            queue_window: Duration::from_millis(60),
            queue_tick: Duration::from_millis(20),
        }
    }
}

/// One design under test.
#[derive(Clone, Copy, PartialEq)]
enum Design {
    ClassicLua,
    MatchdMemory,
    MatchdRedis,
}

impl Design {
    fn name(self) -> &'static str {
        match self {
            Design::ClassicLua => "classic_lua",
            Design::MatchdMemory => "matchd_memory",
            Design::MatchdRedis => "matchd_redis",
        }
    }
}

struct Subjects {
    classic: ClassicSwipes,
    redis_url: String,
}

impl Subjects {
    /// Runs `reps` bursts of `pairs` pairs through `design`, each on a fresh state.
    async fn run(&self, design: Design, tag: &str, pairs: usize, in_flight: Option<usize>) -> Run {
        match design {
            Design::ClassicLua => {
                let u = users(tag, pairs);
                let c = &self.classic;
                drive(pairs, in_flight, |i, side| c.swipe_right(u[i][side].as_str(), u[i][1 - side].as_str())).await
            }
            Design::MatchdMemory | Design::MatchdRedis => {
                let mut config = bench_config(SHARDS);
                if design == Design::MatchdRedis {
                    config.redis = Some(self.redis_url.clone());
                }
                let node = Node::start(config).expect("node starts");
                if design == Design::MatchdRedis {
                    // With Redis one node at a time holds the ownership lease; each burst's node
                    // takes it (untimed) and gives it back for the next one.
                    node.keep_lease().await;
                    let ready = std::time::Instant::now() + Duration::from_secs(10);
                    while let Err(e) = node.persistence_ready().await {
                        assert!(std::time::Instant::now() < ready, "matchd did not become ready on redis: {e}");
                        actix_rt::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let run = node_burst(&node, &users(tag, pairs), in_flight).await;
                node.release_lease().await;
                run
            }
        }
    }
}

fn main() {
    let sizes = sizes();
    let redis = RedisServer::start();
    let system = actix_rt::System::new();
    let subjects = system.block_on(async {
        let classic = ClassicSwipes::connect(&redis.url()).await;
        classic.reset().await;
        Subjects { classic, redis_url: redis.url() }
    });
    // The classic design's WebSocket server subscribes to the match channel; so does this bench.
    let listener = system.block_on(Listener::start(&redis.url(), &[MATCH_CHANNEL]));

    let mut c = Criterion::default().configure_from_args();
    let tallies: RefCell<Vec<(String, Tally)>> = RefCell::new(Vec::new());
    {
        let mut g = c.benchmark_group("mutual_swipe_burst");
        if support::bench_mode() {
            g.measurement_time(Duration::from_secs(4)).sample_size(10);
        }
        for &pairs in &sizes.bursts {
            g.throughput(Throughput::Elements(2 * pairs as u64));
            for design in [Design::ClassicLua, Design::MatchdMemory, Design::MatchdRedis] {
                let mut tally = Tally::default();
                g.bench_function(BenchmarkId::new(design.name(), pairs), |b| {
                    b.iter_custom(|iters| {
                        system.block_on(async {
                            subjects.classic.reset().await;
                            let mut total = Duration::ZERO;
                            for it in 0..iters {
                                // matchd gets a fresh node per burst (untimed); only the burst is timed.
                                let run = subjects.run(design, &format!("c{it}"), pairs, None).await;
                                total += run.elapsed;
                                tally.add(&run.tally);
                            }
                            total
                        })
                    })
                });
                tallies.borrow_mut().push((format!("mutual_swipe_burst/{}/{pairs}", design.name()), tally));
            }
        }
        g.finish();
    }
    c.final_summary();

    // Per-swipe latency and rate, each design in turn, same sizes, same run.
    println!("\nper-swipe latency, best of {} runs per design", sizes.table_reps);
    println!(
        "{:<14} {:<10} {:>7} {:>12} {:>10} {:>10} {:>10}",
        "design", "in flight", "pairs", "swipes/s", "p50 us", "p99 us", "max us"
    );
    let mut table: Vec<(Design, &str, f64, u64)> = Vec::new();
    let one_by_one = sizes.table_pairs.min(1_000);
    for (mode, in_flight, pairs) in
        [("all", None, sizes.table_pairs), ("64 pairs", Some(64), sizes.table_pairs), ("1 pair", Some(1), one_by_one)]
    {
        for design in [Design::ClassicLua, Design::MatchdMemory, Design::MatchdRedis] {
            let mut best: Option<Run> = None;
            for rep in 0..sizes.table_reps {
                let run = system.block_on(async {
                    subjects.classic.reset().await;
                    subjects.run(design, &format!("t{rep}"), pairs, in_flight).await
                });
                tallies.borrow_mut().push((format!("table/{}/{mode}", design.name()), run.tally.clone()));
                if best.as_ref().is_none_or(|b| run.elapsed < b.elapsed) {
                    best = Some(run);
                }
            }
            if let Some(run) = best {
                let rate = run.tally.swipes as f64 / run.elapsed.as_secs_f64();
                let (p50, p99, max) = percentiles(&run.latency_us);
                println!(
                    "{:<14} {:<10} {:>7} {:>12.0} {:>10} {:>10} {:>10}",
                    design.name(),
                    mode,
                    pairs,
                    rate,
                    p50,
                    p99,
                    max
                );
                table.push((design, mode, rate, p99));
            }
        }
    }
    for mode in ["all", "64 pairs", "1 pair"] {
        let get = |d: Design| table.iter().find(|(x, m, _, _)| *x == d && *m == mode).map(|(_, _, r, p)| (*r, *p));
        if let (Some((cr, cp)), Some((mr, mp))) = (get(Design::ClassicLua), get(Design::MatchdMemory)) {
            println!(
                "ratio ({mode}): matchd_memory / classic_lua = {:.1}x swipes/s, p99 {:.3} of classic's",
                mr / cr,
                mp as f64 / cp.max(1) as f64
            );
        }
    }
    println!("classic match messages received by the subscriber: {}", listener.seen.borrow().len());

    // The polling queue.
    let (as_written, drained) = system.block_on(async {
        let a = PollQueue::new(&redis.url(), "as_written", true).await;
        let b = PollQueue::new(&redis.url(), "drain", false).await;
        let give_up = sizes.queue_tick * (sizes.queue_users as u32 + 2) + sizes.queue_window;
        let mut out = measure_poll_queue(
            &redis.url(),
            &[&a, &b],
            sizes.queue_users,
            sizes.queue_window,
            sizes.queue_tick,
            give_up,
        )
        .await;
        let drained = out.pop().expect("two queues measured");
        let as_written = out.pop().expect("two queues measured");
        (as_written, drained)
    });
    println!(
        "\npolling queue: {} users joining over {:?}, tick {:?}; join -> match published",
        sizes.queue_users, sizes.queue_window, sizes.queue_tick
    );
    println!("{:<22} {:>8} {:>10} {:>10} {:>10} {:>9}", "variant", "paired", "p50 ms", "p99 ms", "max ms", "unpaired");
    for (name, (h, unpaired)) in [("as written (1/tick)", &as_written), ("drain every tick", &drained)] {
        let (p50, p99, max) = percentiles(h);
        let ms = |us: u64| us as f64 / 1000.0;
        println!("{:<22} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>9}", name, h.len(), ms(p50), ms(p99), ms(max), unpaired);
    }

    let mut failed = false;
    for (name, t) in tallies.borrow().iter() {
        if t.failures > 0 || t.anomalies > 0 {
            failed = true;
        }
        if t.failures > 0 || t.anomalies > 0 || !name.starts_with("table/") {
            println!("{}", t.line(name));
        }
    }
    if failed {
        println!("SOME SWIPES FAILED OR PAIRS DID NOT MATCH EXACTLY ONCE (see above)");
    }
}
