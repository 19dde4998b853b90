//! Where each user is: idle, waiting in one pool, or in one room (I4). The user's own shard is the
//! single owner of this fact; these are its handlers. Joins and leaves are asked of the pool that
//! holds the user, which answers truthfully even when it has just paired them; rooms are entered
//! and left only on the word of the room's owner (the pair shard).

use actix::{fut, ActorFutureExt, Context, ContextFutureSpawner, Handler, ResponseActFuture, WrapFuture};

use super::messages::{Dequeue, DequeueOutcome, Enqueue, Join, Leave, MemberGone};
use super::pool::Forget;
use crate::audit::repair::{RepairOutcome, RepairPlace};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::{EventKind, JoinRequest, JoinResponse, LeaveResponse, PoolName, RoomId, UserId};
use crate::session::user_shard::{PlaceAction, UserShard};
use crate::session::IndexChange;

pub use super::place::Place;

impl UserShard {
    /// Sets `user` back to idle if they are still queued in `pool` (a join that failed, a leave).
    fn release_if_queued(&mut self, user: &UserId, pool: &PoolName, ctx: &mut Context<Self>) {
        let queued_here =
            self.users.get(user).is_some_and(|e| matches!(&e.place, Place::Queued { ticket } if ticket.pool == *pool));
        if queued_here {
            self.set_place(user, Place::Idle, ctx);
        }
    }

    /// Puts `user` in line for `ticket.pool` and reports where they stand.
    fn enqueue(
        &mut self,
        user: UserId,
        ticket: JoinRequest,
        after_room: Option<RoomId>,
        requeued: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<JoinResponse, ApiError>> {
        let pool = ticket.pool.clone();
        let pools = match self.links() {
            Ok(links) => links.pools.clone(),
            Err(e) => {
                self.release_if_queued(&user, &pool, ctx);
                return Box::pin(fut::ready(Err(e)));
            }
        };
        // Decided now (a leave from here on waits for it), sent once the place it goes with is
        // stored: an owner the user moves to must find them queued if the pool may have them.
        let calls = &mut self.entry(&user).calls;
        calls.enqueue_sent();
        let seq = calls.next_seq();
        let stored = self.place_stored(&user, ctx);
        let msg = Enqueue { user: user.clone(), ticket, after_room, seq };
        let sent = async move {
            stored.await?;
            pools.enqueue(msg).await
        };
        Box::pin(sent.into_actor(self).map(move |res, act, ctx| {
            match &res {
                // The pool may have the user (a lost answer, a stale call): the place stays,
                // and a leave asks the pool what is true. Only a refusal releases it.
                Err(ApiError::Unavailable(_)) => {}
                Err(_) => act.release_if_queued(&user, &pool, ctx),
                // The user did not ask: tell them where they stand now.
                Ok(JoinResponse::Queued { pool, position, estimated_wait_ms }) if requeued => {
                    let kind = EventKind::QueueUpdate {
                        pool: pool.clone(),
                        position: *position,
                        estimated_wait_ms: *estimated_wait_ms,
                    };
                    act.publish(&user, &kind, IndexChange::None, ctx);
                }
                Ok(_) => {}
            }
            // Leaves held behind this enqueue run only now, after its answer is applied.
            for leave in act.entry(&user).calls.enqueue_answered() {
                leave(act, ctx);
            }
            res
        }))
    }

    /// The room's owner put `user` in `room_id` (with its `room_assigned` event).
    pub(crate) fn enter_room(&mut self, user: &UserId, room_id: RoomId, ticket: JoinRequest, ctx: &mut Context<Self>) {
        if let Place::InRoom { room_id: old, .. } = &self.entry(user).place {
            if *old != room_id {
                // A second room for one user would break I4; the pool's ownership rules make it
                // impossible, so this only counts and logs if that reasoning is ever wrong.
                METRICS.invariant_violations.with_label_values(&["user_in_two_rooms"]).inc();
                tracing::error!(user = %user, old = %old, new = %room_id, "user entered a second room");
            }
        }
        self.set_place(user, Place::InRoom { room_id, ticket }, ctx);
    }

    /// The room's owner closed `room_id` (with its `room_closed` event): requeue or release `user`.
    pub(crate) fn leave_room(&mut self, user: &UserId, room_id: &RoomId, requeue: bool, ctx: &mut Context<Self>) {
        let ticket = match &self.entry(user).place {
            Place::InRoom { room_id: current, ticket } if current == room_id => ticket.clone(),
            // Not (or no longer) in that room: a repeat, or a room from before a restart.
            _ => return,
        };
        if requeue {
            // The requeue itself tells the pool to forget the closed room.
            self.set_place(user, Place::Queued { ticket: ticket.clone() }, ctx);
            self.enqueue(user.clone(), ticket, Some(room_id.clone()), true, ctx).map(|_, _, _| ()).spawn(ctx);
        } else {
            if let Ok(links) = self.links() {
                // So the pool stops answering joins with the closed room.
                links.pools.forget(&ticket.pool, Forget { user: user.clone() });
            }
            self.entry(user).left_room = Some(room_id.clone());
            self.set_place(user, Place::Idle, ctx);
        }
    }

    /// The grace period after the user's last connection ran out.
    pub(crate) fn presence_expired(&mut self, user: &UserId, ctx: &mut Context<Self>) {
        let Ok(links) = self.links().cloned() else {
            return;
        };
        let place = self.entry(user).place.clone();
        match place {
            Place::Idle => {}
            Place::Queued { ticket } => {
                let key = user.clone();
                let user = user.clone();
                let leave: PlaceAction = Box::new(move |act, ctx| {
                    // Still queued there once any enqueue before it is answered?
                    if !matches!(&act.entry(&user).place, Place::Queued { ticket: t } if t.pool == ticket.pool) {
                        return;
                    }
                    let seq = act.entry(&user).calls.next_seq();
                    links
                        .pools
                        .dequeue(&ticket.pool, Dequeue { user: user.clone(), seq })
                        .into_actor(act)
                        .map(move |res, act, ctx| {
                            let out = matches!(res, Ok(DequeueOutcome::Removed) | Ok(DequeueOutcome::NotWaiting));
                            if out && act.entry(&user).calls.is_latest(seq) {
                                act.release_if_queued(&user, &ticket.pool, ctx);
                            }
                        })
                        .spawn(ctx);
                });
                if let Some(leave) = self.entry(&key).calls.leave(leave) {
                    leave(self, ctx);
                }
            }
            Place::InRoom { room_id, .. } => {
                if let Some(slot) = room_id.slot() {
                    links.pairs.member_gone(slot, MemberGone { user: user.clone(), room_id });
                }
            }
        }
    }
}

/// A place handler: the user shard's state and context in, the answer (later) out.
type PlaceHandler<T> =
    Box<dyn FnOnce(&mut UserShard, &mut Context<UserShard>) -> ResponseActFuture<UserShard, Result<T, ApiError>>>;

/// Runs `handler` in a deferred action and hands its answer to the caller's future.
fn deferred<T: 'static>(
    act: &mut UserShard,
    handler: PlaceHandler<T>,
    defer: impl FnOnce(&mut UserShard, PlaceAction, &mut Context<UserShard>),
    ctx: &mut Context<UserShard>,
) -> ResponseActFuture<UserShard, Result<T, ApiError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    defer(
        act,
        Box::new(move |act, ctx| {
            handler(act, ctx).map(move |res, _, _| drop(tx.send(res))).spawn(ctx);
        }),
        ctx,
    );
    Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) }.into_actor(act))
}

/// Runs a place handler now if the user is loaded, or (with Redis) once they are: their place is
/// known only then (a room from their log, a line from their stored place), and a join or leave
/// never overtakes the room changes waiting behind that load.
fn in_order<T: 'static>(
    act: &mut UserShard,
    user: &UserId,
    handler: PlaceHandler<T>,
    ctx: &mut Context<UserShard>,
) -> ResponseActFuture<UserShard, Result<T, ApiError>> {
    if act.is_loaded(user) {
        return handler(act, ctx);
    }
    let user = user.clone();
    deferred(act, handler, move |act, action, ctx| act.after_load(&user, action, ctx), ctx)
}

impl Handler<Join> for UserShard {
    type Result = ResponseActFuture<Self, Result<JoinResponse, ApiError>>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        let user = msg.user.clone();
        in_order(self, &user, Box::new(move |act, ctx| act.join_now(msg, ctx)), ctx)
    }
}

impl UserShard {
    fn join_now(
        &mut self,
        msg: Join,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<JoinResponse, ApiError>> {
        self.present_by_action(&msg.user);
        match &self.entry(&msg.user).place {
            Place::InRoom { room_id, .. } => {
                let e = ApiError::Conflict(format!("you are in room {room_id}; skip it before joining a queue"));
                return Box::pin(fut::ready(Err(e)));
            }
            Place::Queued { ticket } if ticket.pool != msg.ticket.pool => {
                let e = ApiError::Conflict(format!("you are already queued in pool {}; leave it first", ticket.pool));
                return Box::pin(fut::ready(Err(e)));
            }
            // Already queued here: the pool answers with the same entry (or the room it just made).
            Place::Queued { .. } => {}
            Place::Idle => self.set_place(&msg.user, Place::Queued { ticket: msg.ticket.clone() }, ctx),
        }
        let after_room = self.entry(&msg.user).left_room.take();
        // (The enqueue goes out once the queued place is stored, so a `queued` answer is stored.)
        self.enqueue(msg.user, msg.ticket, after_room, false, ctx)
    }
}

impl Handler<Leave> for UserShard {
    type Result = ResponseActFuture<Self, Result<LeaveResponse, ApiError>>;

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) -> Self::Result {
        let user = msg.user.clone();
        in_order(self, &user, Box::new(move |act, ctx| act.leave_after_enqueues(msg, ctx)), ctx)
    }
}

impl UserShard {
    /// A leave waits for the user's unanswered enqueues (see `place`), then runs.
    fn leave_after_enqueues(
        &mut self,
        msg: Leave,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<LeaveResponse, ApiError>> {
        let user = msg.user.clone();
        if !self.entry(&user).calls.awaits_enqueue() {
            return self.leave_now(msg, ctx);
        }
        let handler: PlaceHandler<LeaveResponse> = Box::new(move |act, ctx| act.leave_now(msg, ctx));
        let hold = move |act: &mut UserShard, action: PlaceAction, ctx: &mut Context<UserShard>| {
            // Held; the last enqueue's answer runs it.
            if let Some(now) = act.entry(&user).calls.leave(action) {
                now(act, ctx);
            }
        };
        deferred(self, handler, hold, ctx)
    }

    fn leave_now(
        &mut self,
        msg: Leave,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<LeaveResponse, ApiError>> {
        let place = self.entry(&msg.user).place.clone();
        let ticket = match place {
            Place::Idle => return Box::pin(fut::ready(Ok(LeaveResponse::NotQueued))),
            Place::InRoom { room_id, .. } => return Box::pin(fut::ready(Ok(LeaveResponse::InRoom { room_id }))),
            Place::Queued { ticket } => ticket,
        };
        let pools = match self.links() {
            Ok(links) => links.pools.clone(),
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let user = msg.user;
        let seq = self.entry(&user).calls.next_seq();
        Box::pin(pools.dequeue(&ticket.pool, Dequeue { user: user.clone(), seq }).into_actor(self).then(
            move |res, act, ctx| {
                let answer = match res {
                    Ok(DequeueOutcome::Removed) => Ok(LeaveResponse::Left { pool: ticket.pool.clone() }),
                    Ok(DequeueOutcome::NotWaiting) => Ok(LeaveResponse::NotQueued),
                    Ok(DequeueOutcome::Paired(room_id)) => Ok(LeaveResponse::InRoom { room_id }),
                    Err(e) => Err(e),
                };
                let out_of_line = matches!(answer, Ok(LeaveResponse::Left { .. } | LeaveResponse::NotQueued));
                // Only the answer to the user's latest call changes the place: one to a leave the
                // user has since followed with a join is moot.
                if out_of_line && act.entry(&user).calls.is_latest(seq) {
                    act.release_if_queued(&user, &ticket.pool, ctx);
                }
                // Answered once the idle place is stored (see `place_stored`).
                let stored = out_of_line.then(|| act.place_stored(&user, ctx));
                async move {
                    if let Some(stored) = stored {
                        stored.await?;
                    }
                    answer
                }
                .into_actor(act)
            },
        ))
    }
}

/// A pool reloaded its stored line (new lease tenure): `user` is waiting there.
#[derive(Debug, actix::Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct RestorePlace {
    pub user: UserId,
    pub ticket: JoinRequest,
}

impl Handler<RestorePlace> for UserShard {
    type Result = ();

    /// Applied once the user is loaded, and only to an idle user whose place was never stored (data
    /// from before places were stored): a stored place is the user's own word, newer than any
    /// reload's.
    fn handle(&mut self, msg: RestorePlace, ctx: &mut Context<Self>) {
        let user = msg.user.clone();
        self.after_load(
            &user,
            Box::new(move |act, ctx| {
                let entry = act.entry(&msg.user);
                if entry.place == Place::Idle && !entry.calls.recorded {
                    act.set_place(&msg.user, Place::Queued { ticket: msg.ticket }, ctx);
                    // Nobody may be connected after a restart: the usual grace applies from now.
                    act.check_presence_later(&msg.user, ctx);
                }
            }),
            ctx,
        );
    }
}

/// A room's owner kept `room_id` open across a restart or a move of its pair's slot: if `user` has
/// no connection on their own node, the usual presence grace runs from now, and a member who does
/// not come back within it leaves (the partner hears `partner_left`, I5).
#[derive(Debug, actix::Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct ArmPresence {
    pub user: UserId,
    pub room_id: crate::protocol::RoomId,
}

impl Handler<ArmPresence> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: ArmPresence, ctx: &mut Context<Self>) {
        let user = msg.user.clone();
        self.after_load(
            &msg.user,
            Box::new(move |act, ctx| {
                if act.entry(&user).is_offline() {
                    tracing::debug!(user = %user, room_id = %msg.room_id, "kept room: presence grace from now");
                    act.check_presence_later(&user, ctx);
                }
            }),
            ctx,
        );
    }
}

impl Handler<RepairPlace> for UserShard {
    type Result = ResponseActFuture<Self, Result<RepairOutcome, ApiError>>;

    /// An audit found the user in lines that cannot all be their place: once the user is loaded
    /// (a room in their log is their place then), the lines that are not their place are left.
    fn handle(&mut self, msg: RepairPlace, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let user = msg.user.clone();
        self.after_load(
            &user,
            Box::new(move |act, ctx| {
                act.repair_place(msg, ctx).map(move |res, _, _| drop(tx.send(res))).spawn(ctx);
            }),
            ctx,
        );
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) }.into_actor(self))
    }
}

impl UserShard {
    fn repair_place(
        &mut self,
        msg: RepairPlace,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<RepairOutcome, ApiError>> {
        let RepairPlace { user, lines, keep } = msg;
        let place = self.entry(&user).place.clone();
        let (kept, why) = match &place {
            Place::InRoom { room_id, .. } => (None, format!("in room {room_id}")),
            Place::Queued { ticket } => (Some(ticket.pool.clone()), format!("queued in {}", ticket.pool)),
            Place::Idle => match keep {
                // Nobody holds a place for them: the newest line entry becomes it (as a reload would).
                Some(ticket) => {
                    let pool = ticket.pool.clone();
                    self.set_place(&user, Place::Queued { ticket }, ctx);
                    self.check_presence_later(&user, ctx);
                    (Some(pool.clone()), format!("kept waiting in {pool}"))
                }
                None => (None, "idle".to_string()),
            },
        };
        tracing::info!(user = %user, place = %why, lines = ?lines, "audit repair of a place");
        let stray: Vec<PoolName> = lines.into_iter().filter(|p| Some(p) != kept.as_ref()).collect();
        if stray.is_empty() {
            return Box::pin(fut::ready(Ok(RepairOutcome::consistent(format!("{user} is {why}: no stray line")))));
        }
        let pools = match self.links() {
            Ok(links) => links.pools.clone(),
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let mut leaves = Vec::new();
        for pool in &stray {
            let seq = self.entry(&user).calls.next_seq();
            leaves.push(pools.dequeue(pool, Dequeue { user: user.clone(), seq }));
        }
        Box::pin(futures_util::future::join_all(leaves).into_actor(self).map(move |answers, _, _| {
            let mut left = Vec::new();
            for (pool, answer) in stray.iter().zip(answers) {
                match answer? {
                    DequeueOutcome::Removed | DequeueOutcome::NotWaiting => left.push(pool.as_str().to_string()),
                    // The pool paired them just now: that room is their place from here on.
                    DequeueOutcome::Paired(room) => left.push(format!("{pool} (paired into {room})")),
                }
            }
            Ok(RepairOutcome::repaired(format!("{user} ({why}) left {}", left.join(", "))))
        }))
    }
}
