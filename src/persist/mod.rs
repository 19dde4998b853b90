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
pub use store::{FenceToken, LeaseToken, RedisStore, StoreError};

use crate::cluster::{Membership, Role};

/// Makes a `Durability` on the calling thread (each actor gets its own connection); `None` in
/// memory mode.
/// The role names the fence keys the actor's batches check in cluster mode.
pub type DurabilityFactory = std::sync::Arc<dyn Fn(Role) -> Option<Durability> + Send + Sync>;

/// Who a batch must prove it writes for.
#[derive(Clone)]
pub enum Fence {
    /// One active node: the ownership lease.
    Lease(Lease),
    /// Cluster mode: the written slots' fence keys for this actor's role.
    Cluster { membership: Membership, role: Role },
}

impl Fence {
    /// Checked when a batch is built (not when it is sent), so a batch decided under one tenure
    /// can never carry the token of the next.
    pub fn token(&self, slots: impl Iterator<Item = u16>) -> Result<FenceToken, StoreError> {
        match self {
            Fence::Lease(lease) => {
                let t = lease.current().ok_or_else(|| match lease.active_node() {
                    Some(active) => StoreError::Standby { node: lease.node_id().to_string(), active },
                    None => StoreError::Fenced,
                })?;
                Ok(FenceToken { keys: vec![t.key], token: std::sync::Arc::from(t.token) })
            }
            Fence::Cluster { membership, role } => {
                let (keys, token) = membership.fence(*role, slots)?;
                Ok(FenceToken { keys, token })
            }
        }
    }

    /// A fenced batch was refused by Redis: in cluster mode, make the membership check its claims.
    pub fn refused(&self) {
        if let Fence::Cluster { membership, .. } = self {
            membership.fenced();
        }
    }

    /// Whether this node may act at all now (cluster mode: it is a settled member).
    pub fn ready(&self) -> bool {
        match self {
            Fence::Lease(_) => true,
            Fence::Cluster { membership, .. } => membership.is_active(),
        }
    }

    /// Whether this actor may act for `slot` now (always, for the lease: it is checked per batch).
    pub fn owns(&self, slot: u16) -> bool {
        match self {
            Fence::Lease(_) => true,
            Fence::Cluster { membership, .. } => membership.owns(slot),
        }
    }
}

/// What a shard needs to persist: its connection, its batch bound, and the fence it writes under.
#[derive(Clone)]
pub struct Durability {
    pub store: RedisStore,
    pub max_batch: usize,
    pub fence: Fence,
    /// Cached state idle this long is dropped from memory (it stays in Redis).
    pub idle_ms: u64,
}

use crate::error::ApiError;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Duplicate(what) = &e {
            crate::metrics::METRICS.invariant_violations.with_label_values(&["duplicate_match_refused"]).inc();
            tracing::error!(guard = %what, "Redis refused a second active match for a pair; nothing was written");
            return ApiError::Unavailable("this pair's state changed under another owner; retry".into());
        }
        if let StoreError::Standby { node, active } = &e {
            return ApiError::Unavailable(lease::standby_message(node, Some(active)));
        }
        if matches!(e, StoreError::Fenced) {
            return ApiError::Unavailable(
                "this node is not the active owner of its data; retry on the active node".into(),
            );
        }
        tracing::warn!(error = %e, "persistence failed");
        ApiError::Unavailable("persistence is not reachable; nothing was changed, retry later".into())
    }
}
