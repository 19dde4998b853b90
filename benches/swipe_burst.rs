//! End to end inside one process: the real shard actors (`matchd::Node::start`, in-memory mode,
//! two shard threads as on the target machine) take a burst of K mutual pairs whose two right
//! swipes are all sent at the same instant through `node.swipe(...)`, the call the HTTP handler
//! makes after authentication. Only the burst is timed (`iter_custom`). Each sample gets a fresh
//! node and fresh users; failed swipes and pairs that did not end with exactly one match are
//! counted and printed after the figures.
//!
//! `cargo bench --bench swipe_burst` for figures; `cargo test --all-targets` runs each once.

// Benchmarks and tests measure wall-clock time of real servers: std's clock is the right one here.
#![allow(clippy::disallowed_types)]

mod support;

use std::cell::RefCell;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use support::burst::{bench_config, node_burst, users, Tally};

/// Pairs per burst.
const SIZES: [usize; 3] = [100, 1_000, 10_000];
/// Shard threads (the target machine has 2 cores).
const SHARDS: usize = 2;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let system = actix_rt::System::new();
    let tallies: RefCell<Vec<(String, Tally)>> = RefCell::new(Vec::new());
    {
        let mut g = c.benchmark_group("swipe_burst");
        if support::bench_mode() {
            g.measurement_time(Duration::from_secs(5)).sample_size(20);
        }
        for pairs in SIZES {
            g.throughput(Throughput::Elements(2 * pairs as u64));
            let mut tally = Tally::default();
            g.bench_function(BenchmarkId::new("mutual_pairs", pairs), |b| {
                b.iter_custom(|iters| {
                    system.block_on(async {
                        // A fresh node per sample keeps memory bounded; starting it is not timed.
                        let node = matchd::Node::start(bench_config(SHARDS)).expect("in-memory node starts");
                        let mut total = Duration::ZERO;
                        for it in 0..iters {
                            let users = users(&format!("b{it}"), pairs);
                            let run = node_burst(&node, &users, None).await;
                            total += run.elapsed;
                            tally.add(&run.tally);
                        }
                        total
                    })
                })
            });
            tallies.borrow_mut().push((format!("swipe_burst/mutual_pairs/{pairs}"), tally));
        }
        g.finish();
    }
    c.final_summary();
    for (name, t) in tallies.borrow().iter() {
        println!("{}", t.line(name));
    }
}
