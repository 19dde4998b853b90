//! What is stored per pair: its decision state plus an outbox of events not yet confirmed to be
//! in the users' logs. The outbox is written in the same transaction as the decision, so a crash
//! between "match decided" and "both users' logs hold the event" cannot lose the event: whoever
//! loads the pair next re-publishes it, and user logs drop duplicates by effect id (I2).

use serde::{Deserialize, Serialize};

use crate::coord::pair_state::PairState;
use crate::protocol::{EventKind, UserId};
use crate::queue::room::RoomState;
use crate::session::IndexChange;

/// One event a pair decision owes one user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique per (user, effect): lets the user's log ignore a re-publish.
    pub effect_id: String,
    pub user: UserId,
    pub kind: EventKind,
    pub change: IndexChange,
    /// When the decision owing it was made (unix ms; 0 in records written before this field
    /// existed): lets an audit tell an event on its way from one that is stuck.
    #[serde(default)]
    pub created_ms: u64,
}

/// The stored form of a pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PairRecord {
    pub state: PairState,
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    /// The pair's rooms, open and recently closed.
    #[serde(default)]
    pub rooms: Vec<RoomState>,
}
