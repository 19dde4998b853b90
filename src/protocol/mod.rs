//! Wire types only: what the public contract (docs/PROTOCOL.md) writes, with serde and validation,
//! and no I/O or actors, so they can be unit-tested and shared by HTTP, WebSocket, SSE and the load tool.

pub mod event;
pub mod http;
pub mod ids;
pub mod queue;
pub mod server;
pub mod sse;
pub mod ws;

pub use event::{Event, EventKind};
pub use http::*;
pub use ids::{MatchId, PoolName, PublishKey, RoomId, SwipeId, UserId};
pub use queue::{JoinRequest, JoinResponse, LeaveResponse, PoolStatus, Room, SkipRequest, SkipResponse};

/// Milliseconds since the Unix epoch, the contract's timestamp unit.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
