//! State audit: checks what Redis holds against the invariants, and mends what is safe to mend.
//!
//! - [`snapshot`]: what the checks look at (pair records, guards, recovery sets, user logs and
//!   match indexes, pool lines), parsed, with no I/O.
//! - [`check`]: `audit(&Snapshot, now_ms, outbox_max_age_ms) -> Vec<Inconsistency>`, a pure
//!   function (unit-tested without Redis).
//! - [`reader`]: fills a snapshot from one Redis or a Redis Cluster (SCAN per master), and tells
//!   whether a node is running (the lease, the cluster members).
//! - [`repair`]: the mends, as messages to the owning actors (sent to a running node, which routes
//!   each to the owner; the owner re-checks and mends in its own batch) and as direct, fenced
//!   writes when no node runs ([`offline`]).
//! - [`cli`]: `matchd audit`; [`sweep`]: the same checks as a background sweep in the server
//!   (reporting only).
//!
//! A snapshot read while nodes are running is not atomic, so a change in flight can look like an
//! inconsistency; with a node running every check is therefore confirmed by a second snapshot a
//! moment later (only what both show is reported), and every repair is re-checked by its owner.

pub mod check;
pub mod cli;
pub mod offline;
pub mod reader;
pub mod repair;
pub mod snapshot;
pub mod sweep;

use serde::{Deserialize, Serialize};

pub use check::audit;
pub use repair::{PairFix, Repair, RepairOutcome, RepairStatus};
pub use snapshot::Snapshot;

use crate::protocol::UserId;

/// The `room_closed` reason (and `unmatched` reason) of events an audit repair sends.
pub const REPAIR_REASON: &str = "server_repair";

/// Default bound on how long an outbox entry may wait for its user's log.
pub const DEFAULT_OUTBOX_MAX_AGE_MS: u64 = 60_000;

/// Default pause between the two snapshots that confirm a finding while nodes run.
pub const DEFAULT_CONFIRM_MS: u64 = 1_500;

/// What kind of inconsistency a finding is (the `kind` label of
/// `matchd_audit_inconsistencies_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A pair's active match has no guard key (`active:<pair>`).
    MatchGuardMissing,
    /// A pair's guard key names another match than the pair's active one.
    MatchGuardMismatch,
    /// A guard key for a pair without an active match (it would refuse the pair's next match).
    OrphanMatchGuard,
    /// An active match's `match:<id>` key (id -> pair, for unmatch after a restart) is missing.
    MatchOwnerMissing,
    /// A member's match index lacks the pair's active match (and no event for it is on its way).
    MatchIndexMissing,
    /// A user's match index names a match that is not active on its pair.
    MatchIndexStale,
    /// A user is a member of two open rooms.
    UserInTwoRooms,
    /// A user waits in two pools' lines.
    QueuedTwice,
    /// A user waits in a pool's line while in an open room.
    QueuedInRoom,
    /// A line entry whose ticket names another pool (a reload would place the user there).
    LineTicketMismatch,
    /// An open room with a member whose place (from their log) is idle or another room.
    OrphanRoom,
    /// A user's log leaves them in a room that is no longer open, and no close is on its way.
    RoomPlaceStale,
    /// A pair with an open room is missing from its slot's open-rooms set.
    OpenRoomNotListed,
    /// A pair owing events is missing from its slot's outbox set.
    OutboxNotListed,
    /// A recovery set lists a pair that has no open room (or owes nothing).
    StaleListing,
    /// An outbox entry older than the bound: an event that is not reaching its user.
    StaleOutbox,
    /// A user's event log whose ids are not strictly increasing or differ from the stream ids.
    EventLogNotIncreasing,
    /// A stored value that cannot be read.
    UnreadableRecord,
}

impl Kind {
    pub const ALL: [Kind; 18] = [
        Kind::MatchGuardMissing,
        Kind::MatchGuardMismatch,
        Kind::OrphanMatchGuard,
        Kind::MatchOwnerMissing,
        Kind::MatchIndexMissing,
        Kind::MatchIndexStale,
        Kind::UserInTwoRooms,
        Kind::QueuedTwice,
        Kind::QueuedInRoom,
        Kind::LineTicketMismatch,
        Kind::OrphanRoom,
        Kind::RoomPlaceStale,
        Kind::OpenRoomNotListed,
        Kind::OutboxNotListed,
        Kind::StaleListing,
        Kind::StaleOutbox,
        Kind::EventLogNotIncreasing,
        Kind::UnreadableRecord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MatchGuardMissing => "match_guard_missing",
            Kind::MatchGuardMismatch => "match_guard_mismatch",
            Kind::OrphanMatchGuard => "orphan_match_guard",
            Kind::MatchOwnerMissing => "match_owner_missing",
            Kind::MatchIndexMissing => "match_index_missing",
            Kind::MatchIndexStale => "match_index_stale",
            Kind::UserInTwoRooms => "user_in_two_rooms",
            Kind::QueuedTwice => "queued_twice",
            Kind::QueuedInRoom => "queued_in_room",
            Kind::LineTicketMismatch => "line_ticket_mismatch",
            Kind::OrphanRoom => "orphan_room",
            Kind::RoomPlaceStale => "room_place_stale",
            Kind::OpenRoomNotListed => "open_room_not_listed",
            Kind::OutboxNotListed => "outbox_not_listed",
            Kind::StaleListing => "stale_listing",
            Kind::StaleOutbox => "stale_outbox",
            Kind::EventLogNotIncreasing => "event_log_not_increasing",
            Kind::UnreadableRecord => "unreadable_record",
        }
    }

    /// The invariant (docs/ARCHITECTURE.md) the check covers.
    pub fn invariant(self) -> &'static str {
        match self {
            Kind::MatchGuardMissing
            | Kind::MatchGuardMismatch
            | Kind::OrphanMatchGuard
            | Kind::MatchOwnerMissing
            | Kind::MatchIndexMissing
            | Kind::MatchIndexStale => "I1",
            Kind::UserInTwoRooms | Kind::QueuedTwice | Kind::QueuedInRoom | Kind::LineTicketMismatch => "I4",
            Kind::OrphanRoom | Kind::RoomPlaceStale | Kind::OpenRoomNotListed => "I5",
            Kind::OutboxNotListed | Kind::StaleListing | Kind::StaleOutbox | Kind::EventLogNotIncreasing => "I2",
            Kind::UnreadableRecord => "I7",
        }
    }

    /// Why a kind is never repaired, for the kinds that are not.
    pub fn not_repaired(self) -> Option<&'static str> {
        match self {
            Kind::MatchGuardMismatch => Some(
                "two matches were decided for one pair (the guard keeps the other): which one the users were \
                 told about is in their logs; a person has to choose",
            ),
            Kind::UserInTwoRooms => {
                Some("mended through orphan_room: the rooms that are not the user's place are closed")
            }
            Kind::EventLogNotIncreasing => {
                Some("clients resume by these ids; renumbering a log would make them skip or repeat events")
            }
            Kind::UnreadableRecord => {
                Some("deleting or rewriting it would lose whatever it holds; a person has to look")
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding: what is wrong, which keys, users and ids it concerns, and how it would be mended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inconsistency {
    pub kind: Kind,
    /// The invariant the check covers ("I1" ...).
    pub invariant: String,
    /// The Redis keys involved.
    pub keys: Vec<String>,
    pub users: Vec<UserId>,
    /// Match, room, effect or event ids involved.
    pub ids: Vec<String>,
    /// One sentence for a person.
    pub detail: String,
    /// What `--repair` does about it (through the owner when a node runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
    /// Why it is not repaired, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_repaired: Option<String>,
}

impl Inconsistency {
    pub(crate) fn new(kind: Kind, detail: String) -> Inconsistency {
        Inconsistency {
            kind,
            invariant: kind.invariant().to_string(),
            keys: Vec::new(),
            users: Vec::new(),
            ids: Vec::new(),
            detail,
            repair: None,
            not_repaired: kind.not_repaired().map(str::to_string),
        }
    }

    pub(crate) fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    pub(crate) fn user(mut self, user: &UserId) -> Self {
        if !self.users.contains(user) {
            self.users.push(user.clone());
        }
        self
    }

    pub(crate) fn id(mut self, id: impl Into<String>) -> Self {
        self.ids.push(id.into());
        self
    }

    pub(crate) fn repair(mut self, repair: Repair) -> Self {
        self.repair = Some(repair);
        self
    }

    /// What names this finding across two snapshots (the detail may carry ages that change).
    pub fn identity(&self) -> String {
        let users: Vec<&str> = self.users.iter().map(UserId::as_str).collect();
        format!("{}|{}|{}|{}", self.kind.as_str(), self.keys.join(","), users.join(","), self.ids.join(","))
    }
}

/// The findings of `second` that `first` also had (by identity): with nodes running, a change in
/// flight between two reads looks like an inconsistency once, rarely twice.
pub fn confirmed(first: &[Inconsistency], second: Vec<Inconsistency>) -> Vec<Inconsistency> {
    let seen: std::collections::HashSet<String> = first.iter().map(Inconsistency::identity).collect();
    second.into_iter().filter(|f| seen.contains(&f.identity())).collect()
}
