//! The integration suite: one test binary (STYLE §7), one module folder per area.

mod bad_input;
mod common;
mod demo;
mod durability;
mod failover;
mod load_tool;
mod ops;
mod queue;
mod streams;
mod swipes;
mod webhooks;
