//! Repairs as data: what an audit asks of a finding's owner. With a node running, each is sent to
//! the node (`POST /internal/v1/repairs`), which routes it to the owning actor (forwarding to the
//! owning node in a cluster): the pair's shard for everything about a pair (its guard and id keys,
//! its recovery-set listings, its rooms, the events it owes), the user's shard for the user's
//! place. The owner re-checks the finding against its own state and mends it in its own batch, or
//! answers that it is consistent (the finding was a change in flight) or refuses. Without a node the
//! same repairs are written directly (`offline`), with the same effects.
//!
//! Events a repair sends go through the pair's outbox with the effect ids the normal flow uses
//! (`close:<room>`, `match:<id>`, `unmatch:<id>`), so a user's log takes each at most once.

use serde::{Deserialize, Serialize};

use super::REPAIR_REASON;
use crate::coord::slot::PairKey;
use crate::error::ApiError;
use crate::persist::records::OutboxEntry;
use crate::protocol::{EventKind, JoinRequest, Match, MatchId, PoolName, RoomId, UserId};
use crate::session::IndexChange;

/// What to mend, and who owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "owner", rename_all = "snake_case")]
pub enum Repair {
    /// The pair's shard mends `fix`.
    Pair { pair: PairKey, fix: PairFix },
    /// The user's shard takes the user out of every line in `lines` that is not their place; with
    /// no place of their own (idle), they keep waiting in `keep` (the newest entry).
    Place {
        user: UserId,
        lines: Vec<PoolName>,
        #[serde(default)]
        keep: Option<JoinRequest>,
    },
}

impl Repair {
    /// The slot whose owner mends it.
    pub fn slot(&self) -> u16 {
        match self {
            Repair::Pair { pair, .. } => pair.slot(),
            Repair::Place { user, .. } => crate::coord::slot::user_slot(user),
        }
    }
}

/// A pair's mend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fix", rename_all = "snake_case")]
pub enum PairFix {
    /// Make the keys derived from the pair's state agree with it: the guard (`SET NX` to the active
    /// match, or deleted when there is none; a guard naming another match is left alone), the
    /// active match's id key, the open-rooms and outbox set listings; and publish what the pair
    /// owes again.
    SyncKeys,
    /// Close this open room (both members hear `room_closed`, reason `server_repair`; nobody is
    /// requeued).
    CloseRoom { room_id: RoomId },
    /// Owe `user` the `match` event of the pair's active match again (it logs it and indexes it,
    /// or only indexes it if its log has the event already).
    OweMatch { user: UserId, match_id: MatchId },
    /// Owe `user` an `unmatched` event (reason `server_repair`) for a match that is not active,
    /// which drops it from their match index.
    OweUnmatch { user: UserId, match_id: MatchId },
    /// Owe `user` a `room_closed` (reason `server_repair`) for a room that is not open, which
    /// gives them their place back (idle).
    OweRoomClosed { user: UserId, room_id: RoomId },
}

/// How an owner answered a repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairStatus {
    /// Mended (stored).
    Repaired,
    /// The owner's state is consistent already (the finding was a change in flight, or mended).
    Consistent,
    /// The owner's state says the repair would be wrong.
    Refused,
    /// It could not be carried out (the owner was unreachable or its batch failed); retry.
    Failed,
}

impl RepairStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairStatus::Repaired => "repaired",
            RepairStatus::Consistent => "consistent",
            RepairStatus::Refused => "refused",
            RepairStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairOutcome {
    pub status: RepairStatus,
    pub message: String,
}

impl RepairOutcome {
    pub fn repaired(message: impl Into<String>) -> Self {
        RepairOutcome { status: RepairStatus::Repaired, message: message.into() }
    }
    pub fn consistent(message: impl Into<String>) -> Self {
        RepairOutcome { status: RepairStatus::Consistent, message: message.into() }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        RepairOutcome { status: RepairStatus::Refused, message: message.into() }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        RepairOutcome { status: RepairStatus::Failed, message: message.into() }
    }
}

/// Asks a pair's shard to mend `fix` (answered once the mend is stored).
#[derive(Debug, Clone, actix::Message, Serialize, Deserialize)]
#[rtype(result = "Result<RepairOutcome, ApiError>")]
pub struct RepairPair {
    pub pair: PairKey,
    pub fix: PairFix,
}

/// Asks a user's shard to mend the user's place (see `Repair::Place`).
#[derive(Debug, Clone, actix::Message, Serialize, Deserialize)]
#[rtype(result = "Result<RepairOutcome, ApiError>")]
pub struct RepairPlace {
    pub user: UserId,
    pub lines: Vec<PoolName>,
    #[serde(default)]
    pub keep: Option<JoinRequest>,
}

/// The `room_closed` a repair owes one member.
pub fn room_closed_entry(user: &UserId, room_id: &RoomId, now_ms: u64) -> OutboxEntry {
    OutboxEntry {
        effect_id: format!("close:{room_id}"),
        user: user.clone(),
        kind: EventKind::RoomClosed { room_id: room_id.clone(), reason: REPAIR_REASON.to_string() },
        change: IndexChange::LeaveRoom { room_id: room_id.clone(), requeue: false },
        created_ms: now_ms,
    }
}

/// The `match` event of `m` owed to `user` again (the same effect as when it was decided).
pub fn match_entry(user: &UserId, m: &Match, now_ms: u64) -> OutboxEntry {
    OutboxEntry {
        effect_id: format!("match:{}", m.match_id),
        user: user.clone(),
        kind: EventKind::Match { match_: m.clone() },
        change: IndexChange::AddMatch(m.clone()),
        created_ms: now_ms,
    }
}

/// The `unmatched` a repair owes `user` for `match_id`; `by` is the other member of the pair.
pub fn unmatch_entry(user: &UserId, match_id: &MatchId, by: &UserId, now_ms: u64) -> OutboxEntry {
    OutboxEntry {
        effect_id: format!("unmatch:{match_id}"),
        user: user.clone(),
        kind: EventKind::Unmatched {
            match_id: match_id.clone(),
            by: by.clone(),
            reason: Some(REPAIR_REASON.to_string()),
        },
        change: IndexChange::RemoveMatch(match_id.clone()),
        created_ms: now_ms,
    }
}
