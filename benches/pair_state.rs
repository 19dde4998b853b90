//! `PairState::swipe` decisions per second on mutual pairs: the pure decision logic the pair
//! shards run for every swipe, without actors, threads or I/O.
//!
//! - `decide`: two right swipes per pair on fresh states (the match id is made cheaply), i.e. the
//!   decision alone;
//! - `decide_real_ids`: the same with real match ids (`MatchId::new_in_slot`, a UUID) and an
//!   idempotency key per swipe, as the shard calls it;
//! - `shard_path`: what a shard does per swipe minus the actor runtime: build the pair key, find
//!   the pair's state in the shard's map, decide with real ids.
//!
//! `cargo bench --bench pair_state` for figures; `cargo test --all-targets` runs each once.

// Benchmarks and tests measure wall-clock time of real servers: std's clock is the right one here.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use matchd::coord::pair_state::PairState;
use matchd::coord::slot::PairKey;
use matchd::protocol::{Direction, MatchId, SwipeId, UserId};

/// Pairs per iteration.
const SIZES: [usize; 3] = [100, 1_000, 10_000];
/// Idempotency keys remembered per side (the server's default `swipe_ids_per_pair`).
const REMEMBERED: usize = 16;

fn users(n: usize) -> Vec<(UserId, UserId)> {
    (0..n)
        .map(|i| {
            let id = |s: &str| UserId::parse(&format!("u{i}{s}")).expect("generated ids are valid");
            (id("a"), id("b"))
        })
        .collect()
}

fn keys(users: &[(UserId, UserId)]) -> Vec<PairKey> {
    users.iter().map(|(a, b)| PairKey::new(a, b).expect("distinct users")).collect()
}

fn swipe_ids(n: usize) -> Vec<[SwipeId; 2]> {
    (0..n)
        .map(|i| {
            let id = |s: &str| SwipeId::parse(&format!("k{i}{s}")).expect("generated ids are valid");
            [id("a"), id("b")]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair_state");
    let cheap_id = MatchId::parse("0.bench").expect("valid id");
    for n in SIZES {
        let users = users(n);
        let keys = keys(&users);
        let ids = swipe_ids(n);
        g.throughput(Throughput::Elements(2 * n as u64));

        g.bench_with_input(BenchmarkId::new("decide", n), &keys, |b, keys| {
            b.iter_batched_ref(
                || vec![PairState::default(); n],
                |states| {
                    for (s, k) in states.iter_mut().zip(keys) {
                        std::hint::black_box(s.swipe(k, 0, Direction::Right, None, 1, REMEMBERED, || cheap_id.clone()));
                        std::hint::black_box(s.swipe(k, 1, Direction::Right, None, 1, REMEMBERED, || cheap_id.clone()));
                    }
                },
                BatchSize::LargeInput,
            )
        });

        g.bench_with_input(BenchmarkId::new("decide_real_ids", n), &keys, |b, keys| {
            b.iter_batched_ref(
                || vec![PairState::default(); n],
                |states| {
                    for ((s, k), id) in states.iter_mut().zip(keys).zip(&ids) {
                        let slot = k.slot();
                        for (side, sid) in id.iter().enumerate() {
                            let d = s.swipe(k, side, Direction::Right, Some(sid), 1, REMEMBERED, || {
                                MatchId::new_in_slot(slot)
                            });
                            std::hint::black_box(d);
                        }
                    }
                },
                BatchSize::LargeInput,
            )
        });

        g.bench_with_input(BenchmarkId::new("shard_path", n), &users, |b, users| {
            b.iter_batched_ref(
                || HashMap::<PairKey, PairState>::with_capacity(n),
                |pairs| {
                    for ((a, bu), id) in users.iter().zip(&ids) {
                        for (side_user, other, sid) in [(a, bu, &id[0]), (bu, a, &id[1])] {
                            let key = PairKey::new(side_user, other).expect("distinct users");
                            let side = usize::from(key.low != *side_user);
                            let slot = key.slot();
                            let state = pairs.entry(key.clone()).or_default();
                            let d = state.swipe(&key, side, Direction::Right, Some(sid), 1, REMEMBERED, || {
                                MatchId::new_in_slot(slot)
                            });
                            std::hint::black_box(d);
                        }
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
