//! Rooms, owned by the shard of the pair that shares them (like their likes and matches). A room
//! closes exactly once, whatever races (both skip at once, a skip and a disconnect), and on close
//! every member is told `room_closed` through their own shard, live or on resume (I5), and handed
//! back idle or requeued, each exactly once.

use actix::{Context, Handler};

use super::messages::{CreateRoom, EnterRoom, ExitRoom, MemberGone, Skip};
use crate::coord::shard::PairShard;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::{unix_ms, JoinRequest, Room, RoomId, SkipResponse, UserId};

/// How long a closed room is remembered (to answer repeated skips the same way).
pub const CLOSED_ROOM_RETENTION_MS: u64 = 10 * 60 * 1000;

/// How a room ended.
#[derive(Debug, Clone)]
pub struct Closed {
    pub at_ms: u64,
    /// Whether each member (by index in `room.users`) was requeued.
    pub requeued: [bool; 2],
}

pub struct RoomState {
    pub room: Room,
    pub tickets: [JoinRequest; 2],
    pub closed: Option<Closed>,
}

impl PairShard {
    /// Closes `room_id` once: `leaver` leaves for `reason`; the partner hears `partner_reason` and is
    /// requeued. Returns whether the leaver was requeued, or `None` if it was already closed.
    fn close_room(
        &mut self,
        room_id: &RoomId,
        leaver: usize,
        leaver_reason: &'static str,
        partner_reason: &'static str,
        requeue_leaver: bool,
    ) -> Option<bool> {
        let state = self.rooms.get_mut(room_id)?;
        if state.closed.is_some() {
            return None;
        }
        let mut requeued = [true; 2];
        requeued[leaver] = requeue_leaver;
        state.closed = Some(Closed { at_ms: unix_ms(), requeued });
        METRICS.rooms_closed.with_label_values(&[leaver_reason]).inc();
        for (i, user) in state.room.users.iter().enumerate() {
            let reason = if i == leaver { leaver_reason } else { partner_reason };
            self.users.for_user(user).do_send(ExitRoom {
                user: user.clone(),
                room_id: room_id.clone(),
                reason,
                requeue: requeued[i],
            });
        }
        Some(requeue_leaver)
    }

    fn member_index(room: &Room, user: &UserId) -> Option<usize> {
        room.users.iter().position(|u| u == user)
    }

    /// Drops rooms closed long ago.
    pub(crate) fn sweep_rooms(&mut self, now_ms: u64) {
        self.rooms
            .retain(|_, r| r.closed.as_ref().is_none_or(|c| now_ms.saturating_sub(c.at_ms) < CLOSED_ROOM_RETENTION_MS));
    }
}

impl Handler<CreateRoom> for PairShard {
    type Result = ();

    fn handle(&mut self, msg: CreateRoom, _: &mut Context<Self>) {
        let CreateRoom { room, tickets } = msg;
        for (user, ticket) in room.users.iter().zip(tickets.iter()) {
            self.users.for_user(user).do_send(EnterRoom {
                user: user.clone(),
                room: room.clone(),
                ticket: ticket.clone(),
            });
        }
        self.rooms.insert(room.room_id.clone(), RoomState { room, tickets, closed: None });
    }
}

impl Handler<Skip> for PairShard {
    type Result = Result<SkipResponse, ApiError>;

    fn handle(&mut self, msg: Skip, _: &mut Context<Self>) -> Self::Result {
        let state =
            self.rooms.get(&msg.room_id).ok_or_else(|| ApiError::NotFound(format!("no room {}", msg.room_id)))?;
        let me = Self::member_index(&state.room, &msg.by)
            .ok_or_else(|| ApiError::Forbidden("you are not a member of this room".into()))?;
        if let Some(closed) = &state.closed {
            // Closed already (the partner skipped or left at the same time): same answer, no change.
            return Ok(SkipResponse { status: "skipped".into(), requeued: closed.requeued[me] });
        }
        METRICS.skips.inc();
        tracing::debug!(request_id = msg.request_id, room_id = %msg.room_id, by = %msg.by, "room skipped");
        let requeued =
            self.close_room(&msg.room_id, me, "skipped", "partner_skipped", msg.requeue).unwrap_or(msg.requeue);
        Ok(SkipResponse { status: "skipped".into(), requeued })
    }
}

impl Handler<MemberGone> for PairShard {
    type Result = ();

    fn handle(&mut self, msg: MemberGone, _: &mut Context<Self>) {
        let Some(state) = self.rooms.get(&msg.room_id) else {
            return;
        };
        let Some(me) = Self::member_index(&state.room, &msg.user) else {
            return;
        };
        tracing::debug!(room_id = %msg.room_id, user = %msg.user, "room member gone past the grace period");
        self.close_room(&msg.room_id, me, "left", "partner_left", false);
    }
}
