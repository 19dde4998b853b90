//! Durability. Without `--redis` the server keeps state in memory only (and says so at start).
//! With it, every shard writes its changes to Redis in batches (group commit: one atomic
//! pipeline in flight per shard; everything decided meanwhile forms the next batch) and answers
//! callers only after their batch is acknowledged (I7).
//!
//! Contract of a batch: it runs as one Lua script (`store::run_fenced`), atomically, and only while
//! this node holds the ownership lease (`lease`). If it fails, the
//! shard fails every waiter of that batch and of the batch queued behind it (which was decided on
//! top of it), drops its cached state, and reloads lazily from Redis on the next touch. Nothing
//! that failed was acknowledged.

pub mod batch;
pub mod keys;
pub mod lease;
pub mod records;
pub mod store;

pub use lease::Lease;
pub use store::{LeaseToken, RedisStore, StoreError};

/// Makes a `Durability` on the calling thread (each actor gets its own connection); `None` in
/// memory mode.
pub type DurabilityFactory = std::sync::Arc<dyn Fn() -> Option<Durability> + Send + Sync>;

/// What a shard needs to persist: its connection, its batch bound, and the lease it writes under.
#[derive(Clone)]
pub struct Durability {
    pub store: RedisStore,
    pub max_batch: usize,
    pub lease: Lease,
    /// Cached state idle this long is dropped from memory (it stays in Redis).
    pub idle_ms: u64,
}

use crate::error::ApiError;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::Fenced) {
            return ApiError::Unavailable(
                "this node is not the active owner of its data; retry on the active node".into(),
            );
        }
        tracing::warn!(error = %e, "persistence failed");
        ApiError::Unavailable("persistence is not reachable; nothing was changed, retry later".into())
    }
}
