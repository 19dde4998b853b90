//! Messages of the spin flow. Who sends what:
//! - user shard -> pool: `Enqueue`, `Dequeue` (the user shard owns the user's place, I4);
//! - pool -> pair shard: `CreateRoom` (the pool decided the pair);
//! - pair shard -> user shards: events with `IndexChange::EnterRoom` / `LeaveRoom` (the pair shard
//!   owns the room, I5; with Redis they go through the pair's outbox like match events);
//! - user shard -> pair shard: `MemberGone` (presence grace ran out).

use actix::Message;

use super::place::PlaceSeq;
use crate::error::ApiError;
use crate::protocol::{JoinRequest, JoinResponse, LeaveResponse, PoolStatus, Room, RoomId, SkipResponse, UserId};

/// Put `user` in line (or answer where they already are).
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<JoinResponse, ApiError>")]
pub struct Enqueue {
    pub user: UserId,
    pub ticket: JoinRequest,
    /// A requeue after this room closed: the pool forgets the pairing first, in the same message,
    /// so it cannot answer with the closed room however the two travel between nodes.
    #[serde(default)]
    pub after_room: Option<RoomId>,
    /// Where this call stands among the user's calls (see `queue::place`).
    #[serde(default)]
    pub seq: PlaceSeq,
}

/// What a pool says to a leave.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum DequeueOutcome {
    Removed,
    NotWaiting,
    /// Too late: already paired into this room.
    Paired(RoomId),
}

/// Take `user` out of line, unless already paired.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<DequeueOutcome, ApiError>")]
pub struct Dequeue {
    pub user: UserId,
    #[serde(default)]
    pub seq: PlaceSeq,
}

/// The pool's waiting count and estimate.
#[derive(Debug, Message)]
#[rtype(result = "PoolStatus")]
pub struct GetStatus;

/// A pool paired two users: the pair's shard now owns their room. Answered once the room is
/// stored (with Redis), so the pool tells the joiner about a room that cannot vanish.
#[derive(Debug, Clone, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<(), ApiError>")]
pub struct CreateRoom {
    pub room: Room,
    /// What each member joined with, so the user shards can requeue them.
    pub tickets: [JoinRequest; 2],
}

/// `by` skips `room_id`.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<SkipResponse, ApiError>")]
pub struct Skip {
    pub by: UserId,
    pub room_id: RoomId,
    pub requeue: bool,
    pub request_id: u64,
}

/// The app's backend closes `room_id` (`POST /v1/server/rooms/{id}/close`): both members hear
/// `room_closed` with reason `closed_by_server` and are requeued only if `requeue`. Answered once
/// the close is stored; a room closed already answers the same and changes nothing.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<(), ApiError>")]
pub struct CloseRoom {
    pub room_id: RoomId,
    pub requeue: bool,
    pub request_id: u64,
}

/// `user` stayed disconnected past the grace period while in `room_id`.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct MemberGone {
    pub user: UserId,
    pub room_id: RoomId,
}

/// `user` spins (HTTP `POST /v1/queue`, WS `join_queue`).
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<JoinResponse, ApiError>")]
pub struct Join {
    pub user: UserId,
    pub ticket: JoinRequest,
}

/// `user` leaves the queue.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<LeaveResponse, ApiError>")]
pub struct Leave {
    pub user: UserId,
}
