//! A pool's line in Redis (one hash per pool: user -> ticket and join time), kept by the pool
//! coordinator with the same group commit and lease fencing as the shards. A join is answered
//! `queued` only once the user's entry is stored (I7); if that batch fails, the join is taken back
//! (answered 503, the user is not in line). Removals (leave, pairing) are written the same way and
//! retried until stored. On a new lease tenure the pool reloads its line and gives each waiting
//! user back their place (with the presence grace if they are not connected).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::persist::batch::GroupCommit;
use crate::persist::keys::PREFIX;
use crate::persist::Durability;
use crate::protocol::{JoinRequest, PoolName, UserId};

/// A stored waiter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredWaiter {
    pub ticket: JoinRequest,
    pub joined_ms: u64,
    /// The call that put the user in line (see `queue::place`).
    #[serde(default)]
    pub seq: crate::queue::place::PlaceSeq,
}

/// The hash holding `pool`'s line.
pub fn line_key(pool: &PoolName) -> String {
    format!("{PREFIX}:{{{}}}:pool:{pool}", crate::coord::slot::name_slot(pool.as_str()))
}

/// The hash of `pool`'s tombstones: user -> their last call, for a while after they left the
/// line (see `queue::place::LineOrder`).
pub fn gone_key(pool: &PoolName) -> String {
    format!("{PREFIX}:{{{}}}:pool-gone:{pool}", crate::coord::slot::name_slot(pool.as_str()))
}

/// A pairing waiting for its line batch.
pub struct PendingRoom {
    pub msg: crate::queue::messages::CreateRoom,
    /// The members as they waited, to put back in line if the batch fails.
    pub members: [crate::queue::matcher::Candidate; 2],
    pub created: tokio::sync::oneshot::Sender<Result<(), crate::error::ApiError>>,
}

/// An answer waiting for the batch that stores what it reports.
pub type Waiter = Box<dyn FnOnce(Option<crate::error::ApiError>)>;

/// Redis-mode state of a pool.
pub struct LineStore {
    pub durability: Durability,
    pub commit: GroupCommit,
    /// Users whose stored entry must be written (present) or deleted (absent) next.
    pub dirty: HashSet<UserId>,
    /// Users added to the line since the last batch: taken back if their batch fails.
    pub fresh: HashSet<UserId>,
    pub waiters: Vec<Waiter>,
    /// Rooms paired from this line, handed to their pair's owner only once the batch removing
    /// their members from the stored line commits: a pool that lost its ownership (its batch is
    /// fenced) can never create a room its successor does not know about.
    pub rooms: Vec<PendingRoom>,
    /// A reload is due (new lease tenure).
    pub reload_pending: bool,
}

impl LineStore {
    pub fn new(durability: Durability) -> Self {
        let max = durability.max_batch;
        LineStore {
            durability,
            commit: GroupCommit::new(max),
            dirty: HashSet::new(),
            fresh: HashSet::new(),
            waiters: Vec::new(),
            rooms: Vec::new(),
            reload_pending: false,
        }
    }

    pub fn ops(&self) -> usize {
        self.dirty.len() + self.waiters.len() + self.rooms.len()
    }
}
