//! Pairings per second through one pool's pure pairing logic (`queue::matcher`), the work a
//! `PoolCoordinator` does per join. FIFO (every join pairs with the oldest waiter) and a rated pool
//! with region preference (each join scans for the best partner).

// Benchmarks and tests measure wall-clock time of real servers: std's clock is the right one here.
#![allow(clippy::disallowed_types)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use matchd::node::Via;
use matchd::protocol::{JoinRequest, UserId};
use matchd::queue::matcher::{Candidate, JoinOutcome, Matcher};
use matchd::queue::rules::{AttributeRule, PoolRules};

const JOINS: usize = 10_000;

fn candidates(rated: bool) -> Vec<Candidate> {
    (0..JOINS)
        .map(|i| Candidate {
            user: UserId::parse(&format!("u{i}")).unwrap(),
            rating: rated.then_some(1000 + (i as i32 * 37) % 400),
            region: Some(if i % 3 == 0 { "eu".into() } else { "us".into() }),
            tags: Vec::new(),
            joined_ms: i as u64,
        })
        .collect()
}

fn run(rules: &PoolRules, joins: Vec<Candidate>) -> usize {
    let mut m = Matcher::new(rules.clone());
    let mut pairs = 0;
    for (i, c) in joins.into_iter().enumerate() {
        if let JoinOutcome::Paired { .. } = m.join(c, i as u64) {
            pairs += 1;
        }
    }
    pairs
}

fn pairing(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_pairings");
    group.throughput(Throughput::Elements((JOINS / 2) as u64));
    let fifo = PoolRules { rematch_window_ms: 0, ..PoolRules::default() };
    group.bench_function("fifo_10000_joins", |b| {
        b.iter_batched(|| candidates(false), |joins| black_box(run(&fifo, joins)), BatchSize::LargeInput)
    });
    let rated = PoolRules {
        rating_tolerance: Some(150),
        region: AttributeRule::Prefer,
        rematch_window_ms: 60_000,
        ..PoolRules::default()
    };
    group.bench_function("rated_region_prefer_10000_joins", |b| {
        b.iter_batched(|| candidates(true), |joins| black_box(run(&rated, joins)), BatchSize::LargeInput)
    });
    group.finish();
}

/// The whole in-process path of a spin: user shard (place) -> pool coordinator (pairing) -> pair
/// shard (room) -> both user shards (`room_assigned`), for `USERS` simultaneous joins.
fn pairing_through_the_actors(c: &mut Criterion) {
    const USERS: usize = 2_000;
    let system = actix_rt::System::new();
    let node = system.block_on(async {
        let mut config = matchd::Config::default();
        config.limits.joins_per_minute = u32::MAX / 2;
        matchd::Node::start(config).unwrap()
    });
    let mut round = 0u64;
    let mut group = c.benchmark_group("pool_pairings_actors");
    group.throughput(Throughput::Elements((USERS / 2) as u64));
    group.sample_size(20);
    group.bench_function("spin_2000_simultaneous_joins", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let users: Vec<UserId> = (0..USERS).map(|i| UserId::parse(&format!("r{round}u{i}")).unwrap()).collect();
                total += system.block_on(async {
                    let started = std::time::Instant::now();
                    let joins = users.iter().map(|u| node.join_queue(u, JoinRequest::default(), Via::Http));
                    let answers = futures_util::future::join_all(joins).await;
                    let failed = answers.iter().filter(|a| a.is_err()).count();
                    assert_eq!(failed, 0, "joins failed");
                    started.elapsed()
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, pairing, pairing_through_the_actors);
criterion_main!(benches);
