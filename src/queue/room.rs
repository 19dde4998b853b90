//! Rooms, owned by the shard of the pair that shares them (like their likes and matches). A room
//! closes exactly once, whatever races (both skip at once, a skip and a disconnect), and on close
//! every member is told `room_closed` through their own shard, live or on resume (I5), and handed
//! back idle or requeued, each exactly once. With Redis, rooms are stored in their pair's record
//! and their events go through the pair's outbox, so a crash cannot lose a close; a room found
//! open from a previous run of the server (or a previous owner of its slot) is kept, and its members
//! get the presence grace from then on. The app's backend may close a room too (`closed_by_server`,
//! server API).

use serde::{Deserialize, Serialize};

use super::messages::{CloseRoom, CreateRoom, MemberGone, Skip};
use super::placement::ArmPresence;
use crate::coord::shard::PairShard;
use crate::coord::slot::PairKey;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::persist::records::OutboxEntry;
use crate::protocol::{unix_ms, EventKind, JoinRequest, Room, RoomId, SkipResponse, UserId};
use crate::session::IndexChange;
use crate::webhook::WebhookEvent;

/// How long a closed room is remembered (to answer repeated skips the same way).
pub const CLOSED_ROOM_RETENTION_MS: u64 = 10 * 60 * 1000;

/// How a room ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Closed {
    pub at_ms: u64,
    /// Whether each member (by index in `room.users`) was requeued.
    pub requeued: [bool; 2],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomState {
    pub room: Room,
    /// What each member joined with (to requeue them).
    pub tickets: [JoinRequest; 2],
    pub closed: Option<Closed>,
    /// The server run that opened it.
    pub incarnation: u64,
}

/// Why a room closes, as each side hears it. `leaver` is also the reason in the metric and the
/// `room.closed` webhook.
struct CloseReasons {
    leaver: &'static str,
    partner: &'static str,
}

/// The reason both members hear when the app's backend closes their room.
pub const CLOSED_BY_SERVER: &str = "closed_by_server";

impl PairShard {
    fn room_mut(&mut self, room_id: &RoomId) -> Option<(PairKey, &mut RoomState)> {
        let key = self.room_pairs.get(room_id)?.clone();
        let room = self.rooms.get_mut(&key)?.iter_mut().find(|r| r.room.room_id == *room_id)?;
        Some((key, room))
    }

    /// Closes `room_id` once: the member at `leaver` hears `why.leaver`, the other `why.partner`
    /// (with no leaver, when the server closes it, both hear `why.partner`); `requeued` says who
    /// goes back in line. A room closed already (or unknown) is left as it is.
    fn close_room(&mut self, room_id: &RoomId, leaver: Option<usize>, why: CloseReasons, requeued: [bool; 2]) {
        let Some((key, state)) = self.room_mut(room_id) else { return };
        if state.closed.is_some() {
            return;
        }
        state.closed = Some(Closed { at_ms: unix_ms(), requeued });
        let users = state.room.users.clone();
        METRICS.rooms_closed.with_label_values(&[why.leaver]).inc();
        let entries = state
            .room
            .users
            .iter()
            .enumerate()
            .map(|(i, user)| OutboxEntry {
                effect_id: format!("close:{room_id}"),
                user: user.clone(),
                kind: EventKind::RoomClosed {
                    room_id: room_id.clone(),
                    reason: (if Some(i) == leaver { why.leaver } else { why.partner }).to_string(),
                },
                change: IndexChange::LeaveRoom { room_id: room_id.clone(), requeue: requeued[i] },
                created_ms: unix_ms(),
            })
            .collect();
        self.mark_dirty(&key);
        self.owe(&key, entries);
        self.notify(|| {
            // `by` is the member who closed it; null when the server did (restart, server API).
            let closed_by = leaver.map(|i| users[i].clone());
            WebhookEvent::new(
                format!("room.closed:{room_id}"),
                "room.closed",
                serde_json::json!({ "room_id": room_id, "users": &users, "reason": why.leaver, "by": closed_by }),
            )
        });
    }

    fn member_index(room: &Room, user: &UserId) -> Option<usize> {
        room.users.iter().position(|u| u == user)
    }

    pub(crate) fn decide_create_room(&mut self, msg: CreateRoom) -> Result<(), ApiError> {
        let CreateRoom { room, tickets } = msg;
        let key = PairKey::new(&room.users[0], &room.users[1])
            .ok_or_else(|| ApiError::BadRequest("a room needs two different users".into()))?;
        // A pool that did not hear the answer sends the room again: it is made once (the answer
        // waits for the batch, so it comes once the first one is stored).
        if self.rooms.get(&key).is_some_and(|rooms| rooms.iter().any(|r| r.room.room_id == room.room_id)) {
            return Ok(());
        }
        let entries = room
            .users
            .iter()
            .zip(tickets.iter())
            .map(|(user, ticket)| OutboxEntry {
                effect_id: format!("enter:{}", room.room_id),
                user: user.clone(),
                kind: EventKind::RoomAssigned { room: room.clone() },
                change: IndexChange::EnterRoom { room_id: room.room_id.clone(), ticket: ticket.clone() },
                created_ms: unix_ms(),
            })
            .collect();
        self.index_room(&room.room_id, &key);
        self.notify(|| {
            WebhookEvent::new(
                format!("room.created:{}", room.room_id),
                "room.created",
                serde_json::json!({ "room": &room }),
            )
        });
        let incarnation = self.incarnation;
        self.rooms.entry(key.clone()).or_default().push(RoomState { room, tickets, closed: None, incarnation });
        self.mark_dirty(&key);
        self.owe(&key, entries);
        Ok(())
    }

    pub(crate) fn decide_skip(&mut self, msg: &Skip) -> Result<SkipResponse, ApiError> {
        let (_, state) =
            self.room_mut(&msg.room_id).ok_or_else(|| ApiError::NotFound(format!("no room {}", msg.room_id)))?;
        let me = Self::member_index(&state.room, &msg.by)
            .ok_or_else(|| ApiError::Forbidden("you are not a member of this room".into()))?;
        if let Some(closed) = &state.closed {
            // Closed already (the partner skipped or left at the same time): same answer, no change.
            return Ok(SkipResponse { status: "skipped".into(), requeued: closed.requeued[me] });
        }
        METRICS.skips.inc();
        tracing::debug!(request_id = msg.request_id, room_id = %msg.room_id, by = %msg.by, "room skipped");
        let why = CloseReasons { leaver: "skipped", partner: "partner_skipped" };
        let mut requeue = [true; 2];
        requeue[me] = msg.requeue;
        self.close_room(&msg.room_id, Some(me), why, requeue);
        Ok(SkipResponse { status: "skipped".into(), requeued: requeue[me] })
    }

    /// The app's backend closes a room: both members hear `closed_by_server`; a room closed
    /// already answers the same and sends nothing.
    pub(crate) fn decide_close_room(&mut self, msg: &CloseRoom) -> Result<(), ApiError> {
        let (_, state) =
            self.room_mut(&msg.room_id).ok_or_else(|| ApiError::NotFound(format!("no room {}", msg.room_id)))?;
        if state.closed.is_some() {
            return Ok(());
        }
        tracing::debug!(request_id = msg.request_id, room_id = %msg.room_id, requeue = msg.requeue, "room closed by the server API");
        let why = CloseReasons { leaver: "closed_by_server", partner: CLOSED_BY_SERVER };
        self.close_room(&msg.room_id, None, why, [msg.requeue; 2]);
        Ok(())
    }

    pub(crate) fn decide_member_gone(&mut self, msg: &MemberGone) {
        let Some((_, state)) = self.room_mut(&msg.room_id) else { return };
        let Some(me) = Self::member_index(&state.room, &msg.user) else { return };
        tracing::debug!(room_id = %msg.room_id, user = %msg.user, "room member gone past the grace period");
        let mut requeue = [true; 2];
        requeue[me] = false;
        self.close_room(&msg.room_id, Some(me), CloseReasons { leaver: "left", partner: "partner_left" }, requeue);
    }

    /// Closes `room_id` for an audit repair (a member's place is elsewhere): both members hear
    /// `room_closed` with reason `server_repair`, nobody is requeued.
    pub(crate) fn close_for_repair(&mut self, room_id: &RoomId) {
        let why = CloseReasons { leaver: crate::audit::REPAIR_REASON, partner: crate::audit::REPAIR_REASON };
        self.close_room(room_id, None, why, [false, false]);
    }

    /// Keeps the rooms of `key` that a previous run of the server, or the slot's previous owner,
    /// left open: they belong to this run now (stored on the next batch), and each member gets
    /// the usual presence grace from now on at their own node, so a member who does not come back
    /// leaves and the partner hears `partner_left` (I5). Nothing is closed because ownership moved.
    pub(crate) fn adopt_rooms(&mut self, key: &PairKey) {
        let incarnation = self.incarnation;
        let mut members = Vec::new();
        for r in self.rooms.get_mut(key).into_iter().flatten() {
            if r.closed.is_none() && r.incarnation != incarnation {
                r.incarnation = incarnation;
                tracing::debug!(room_id = %r.room.room_id, "keeping a room opened by a previous owner");
                members.extend(
                    r.room.users.iter().map(|u| ArmPresence { user: u.clone(), room_id: r.room.room_id.clone() }),
                );
            }
        }
        if members.is_empty() {
            return;
        }
        self.mark_dirty(key);
        for m in members {
            self.users.arm_presence(m);
        }
    }

    /// Drops rooms closed long ago.
    pub(crate) fn sweep_rooms(&mut self, now_ms: u64) {
        let fresh =
            |r: &RoomState| r.closed.as_ref().is_none_or(|c| now_ms.saturating_sub(c.at_ms) < CLOSED_ROOM_RETENTION_MS);
        let room_pairs = &mut self.room_pairs;
        self.rooms.retain(|_, rooms| {
            rooms.retain(|r| {
                let keep = fresh(r);
                if !keep {
                    room_pairs.remove(&r.room.room_id);
                }
                keep
            });
            !rooms.is_empty()
        });
    }
}
