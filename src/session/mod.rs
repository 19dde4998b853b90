//! Transport-agnostic event delivery. Each user hashes to a slot, each slot to one `UserShard`
//! actor, which numbers the user's events (strictly increasing ids, I2), keeps the resume log and
//! the index of the user's matches, and fans events out to every open connection of the user.
//! Connections (WebSocket or SSE session actors) subscribe through the same actor, so a resume
//! replays exactly what was missed and nothing twice.

pub mod effects;
pub mod event_log;
pub mod messages;
pub mod router;
pub mod user_shard;

pub use messages::{CloseReason, Deliver, IndexChange, SessionHandle};
pub use router::UserRouter;
