//! Spin: pools that pair waiting users, rooms, skip, and presence.
//!
//! - `matcher`: pure pairing rules (FIFO, rating, region, tags, no-rematch, priority).
//! - `pool`: `PoolCoordinator`, the one owner of a pool's line.
//! - `place`: pure: a user's place and the order of their calls to pools.
//! - `placement`: the user shard's handlers for where a user is (I4).
//! - `room`: the pair shard's handlers for the room a pair shares (skip, leave, close; I5).

pub mod line_store;
pub mod matcher;
pub mod messages;
pub mod place;
pub mod placement;
pub mod pool;
pub mod room;
pub mod router;
pub mod rules;

pub use router::PoolRouter;
