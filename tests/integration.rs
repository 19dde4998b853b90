//! The integration suite: one test binary, one module folder per area.

// Benchmarks and tests measure wall-clock time of real servers: std's clock is the right one here.
#![allow(clippy::disallowed_types)]

mod audit;
mod bad_input;
mod cluster;
mod common;
mod demo;
mod durability;
mod failover;
mod fuzz;
mod load_tool;
mod ops;
mod queue;
mod restarts;
mod server_api;
mod streams;
mod swipes;
mod tcp_close;
mod webhooks;
