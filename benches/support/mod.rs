//! Shared by the benches (not a bench itself: Cargo only builds `benches/*.rs` and
//! `benches/*/main.rs` as benches).
//! - [`burst`]: fire both swipes of many pairs at once through any swipe function, tally outcomes
//!   and latencies; matchd's in-process `Node` as one such function.
//! - [`redis_server`]: a private `redis-server` on a free port (panics loudly when missing).
//! - [`classic`]: the baseline designs: the classic per-swipe Lua script (one call per swipe,
//!   then PUBLISH) and the polling queue (a Redis list polled every 2 s).

#![allow(dead_code)]

pub mod burst;
pub mod classic;
pub mod redis_server;

/// True under `cargo bench` (full figures); false under `cargo test --all-targets`, where every
/// bench must finish in moments.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}
