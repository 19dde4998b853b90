//! Random and boundary input, generated: every parser on its own (property tests, `parsers`), and a
//! real server over HTTP and WebSocket (`server`). Nothing may panic; every refusal is the
//! contract's JSON error with its status.

mod parsers;
mod server;
