//! Encoding one event: a user's `match` event is serialized once, when it gets its id, and the same
//! bytes go to every connection (and SSE wraps them). This is the per-event JSON cost of delivery.
//!
//! `cargo bench --bench event_encode` for figures; `cargo test --all-targets` runs each once.

// Benchmarks and tests measure wall-clock time of real servers: std's clock is the right one here.
#![allow(clippy::disallowed_types)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use matchd::protocol::{Event, EventKind, Match, MatchId, UserId};

fn bench(c: &mut Criterion) {
    let users = [UserId::parse("alice-1234").expect("valid"), UserId::parse("bob-5678").expect("valid")];
    let kind = EventKind::Match {
        match_: Match { match_id: MatchId::new_in_slot(4242), users, created_at: 1_764_000_000_000 },
    };
    let mut g = c.benchmark_group("event_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("match_json", |b| b.iter(|| Event::encode(std::hint::black_box(7), &kind)));
    let event = Event::encode(7, &kind);
    g.bench_function("match_sse_frame", |b| b.iter(|| std::hint::black_box(&event).to_sse()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
