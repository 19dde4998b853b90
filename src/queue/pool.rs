//! `PoolCoordinator`: the one owner of a pool's line. Joins are paired the moment a compatible
//! partner waits (I6); a timer re-checks only what time alone can change (widening tolerance,
//! rematch windows). A pairing hands the two users to their pair's shard, which owns the room.
//!
//! A user the pool has just paired may still look "queued" to their own shard for the few
//! microseconds the hand-off takes; the pool remembers recent pairings so a repeated join or a
//! leave in that window gets the truthful answer (the room) instead of a second entry (I4).

use std::collections::HashMap;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture};

use actix::{ActorFutureExt, ContextFutureSpawner, WrapFuture};

use super::line_store::{gone_key, line_key, LineStore, PendingRoom, StoredWaiter};
use super::matcher::{Candidate, JoinOutcome, Matcher};
use super::messages::{CreateRoom, Dequeue, DequeueOutcome, Enqueue, GetStatus};
use super::place::{LastCall, LineOrder};
use super::placement::RestorePlace;
use super::rules::PoolRules;
use crate::coord::shard::ResetCache;
use crate::coord::slot::pair_slot;
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::persist::batch::{self, Schedule};
use crate::persist::store::text;
use crate::persist::Durability;
use crate::protocol::{unix_ms, JoinRequest, JoinResponse, PoolName, PoolStatus, Room, RoomId, UserId};
use crate::session::UserRouter;

/// Pause before writing the line again after a failed batch.
const LINE_RETRY: Duration = Duration::from_secs(1);

/// How long a pairing is remembered for answering joins and leaves that raced with it.
const RECENT_PAIRING_MS: u64 = 30_000;

pub struct PoolCoordinator {
    name: PoolName,
    matcher: Matcher,
    /// Tickets of waiting users, for requeueing them later.
    tickets: HashMap<UserId, JoinRequest>,
    /// Users paired recently: their room and until when it is remembered.
    recently_paired: HashMap<UserId, (Room, u64)>,
    /// Each user's last call, so a late older one changes nothing (stored with the line).
    order: LineOrder,
    pairs: ShardRouter,
    /// To give restored waiters their place back.
    users: UserRouter,
    rescan_ms: u64,
    /// With Redis: the stored line.
    store: Option<LineStore>,
}

impl PoolCoordinator {
    pub fn new(
        name: PoolName,
        rules: PoolRules,
        pairs: ShardRouter,
        users: UserRouter,
        rescan_ms: u64,
        durability: Option<Durability>,
    ) -> Self {
        PoolCoordinator {
            name,
            matcher: Matcher::new(rules),
            tickets: HashMap::new(),
            recently_paired: HashMap::new(),
            order: LineOrder::default(),
            pairs,
            users,
            rescan_ms,
            store: durability.map(LineStore::new),
        }
    }

    /// Marks `user`'s stored entry for writing (added) or deleting (gone from the line).
    fn touch(&mut self, user: &UserId, added: bool) {
        if let Some(st) = self.store.as_mut() {
            st.dirty.insert(user.clone());
            if added {
                st.fresh.insert(user.clone());
            } else {
                st.fresh.remove(user);
            }
        }
    }

    /// Answers now (memory), or once the line's next batch is stored (Redis).
    fn answer<T: 'static>(&mut self, result: T, ctx: &mut Context<Self>) -> ResponseFuture<Result<T, ApiError>> {
        let Some(st) = self.store.as_mut() else { return Box::pin(std::future::ready(Ok(result))) };
        let (tx, rx) = tokio::sync::oneshot::channel();
        st.waiters.push(Box::new(move |failed| {
            let _ = tx.send(match failed {
                Some(e) => Err(e),
                None => Ok(result),
            });
        }));
        self.schedule_flush(ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        let Some(st) = self.store.as_mut() else { return };
        match st.commit.schedule(st.ops()) {
            Schedule::Wait => {}
            Schedule::FlushNow => self.flush(ctx),
            Schedule::Notify => ctx.notify(FlushLine),
        }
    }

    /// Writes the dirty entries (present: HSET, gone: HDEL) in one fenced batch.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(st) = self.store.as_mut() else { return };
        if !st.commit.begin(st.ops()) {
            return;
        }
        let dirty: Vec<UserId> = st.dirty.drain().collect();
        let fresh: Vec<UserId> = st.fresh.drain().collect();
        let waiters = std::mem::take(&mut st.waiters);
        let rooms = std::mem::take(&mut st.rooms);
        let (key, gone) = (line_key(&self.name), gone_key(&self.name));
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for user in &dirty {
            match (self.matcher.get(user), self.tickets.get(user)) {
                (Some(c), Some(ticket)) => {
                    let seq = self.order.seq_of(user);
                    let stored = StoredWaiter { ticket: ticket.clone(), joined_ms: c.joined_ms, seq };
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg(user.as_str())
                        .arg(serde_json::to_string(&stored).unwrap_or_default());
                }
                _ => {
                    pipe.cmd("HDEL").arg(&key).arg(user.as_str());
                }
            }
            match self.order.gone(user).and_then(|l| serde_json::to_string(&l).ok()) {
                Some(json) => pipe.cmd("HSET").arg(&gone).arg(user.as_str()).arg(json),
                None => pipe.cmd("HDEL").arg(&gone).arg(user.as_str()),
            };
            commands += 2;
        }
        let durability = st.durability.clone();
        let slot = crate::coord::slot::name_slot(self.name.as_str());
        batch::send(durability, std::iter::once(slot), Vec::new(), pipe, commands)
            .into_actor(self)
            .map(move |res, act, ctx| {
                let Some(st) = act.store.as_mut() else { return };
                st.commit.finished();
                match res {
                    Ok(_) => {
                        waiters.into_iter().for_each(|w| w(None));
                        for room in rooms {
                            let created = act.pairs.create_room_surely(room.msg);
                            actix::spawn(async move { drop(room.created.send(created.await)) });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pool = %act.name, error = %e, "storing the line failed; joins in it are taken back");
                        let err = ApiError::from(e);
                        waiters.into_iter().for_each(|w| w(Some(err.clone())));
                        // Pairings whose removal from the line was not stored did not happen: the
                        // members who were waiting (their removal was in this batch) wait again;
                        // a joiner paired at once never was in the line and is refused.
                        for room in rooms {
                            for (member, ticket) in room.members.into_iter().zip(room.msg.tickets) {
                                act.recently_paired.remove(&member.user);
                                if dirty.contains(&member.user) && !fresh.contains(&member.user) {
                                    act.tickets.insert(member.user.clone(), ticket);
                                    act.matcher.restore(member);
                                }
                            }
                            let _ = room.created.send(Err(err.clone()));
                        }
                        // Joins that were not stored did not happen; the rest is written again.
                        for user in &fresh {
                            if act.matcher.leave(user) {
                                act.tickets.remove(user);
                            }
                            // (Their call ended; remembered in memory only, like the join.)
                            act.order.paired(user, unix_ms());
                        }
                        if let Some(st) = act.store.as_mut() {
                            st.dirty.extend(dirty.into_iter().filter(|u| !fresh.contains(u)));
                        }
                        act.report_length();
                        ctx.run_later(LINE_RETRY, |act, ctx| act.schedule_flush(ctx));
                        return;
                    }
                }
                act.schedule_flush(ctx);
            })
            .spawn(ctx);
    }

    /// Replaces the line with the stored one (new lease tenure), gives each waiter their place
    /// back, and pairs whoever is compatible.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let Some(st) = self.store.as_ref() else { return };
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(line_key(&self.name));
        pipe.cmd("HGETALL").arg(gone_key(&self.name));
        let store = st.durability.store.clone();
        async move { store.run(pipe, 2).await }
            .into_actor(self)
            .map(|res, act, ctx| {
                let (fields, gone) = match res {
                    Ok(values) => {
                        let mut values = values.into_iter().map(|v| match v {
                            redis::Value::Array(fields) => fields,
                            _ => Vec::new(),
                        });
                        (values.next().unwrap_or_default(), values.next().unwrap_or_default())
                    }
                    Err(e) => {
                        tracing::warn!(pool = %act.name, error = %e, "could not load the stored line; retrying");
                        ctx.run_later(LINE_RETRY, |act, ctx| act.reload(ctx));
                        return;
                    }
                };
                let mut waiters: Vec<(UserId, StoredWaiter)> = fields
                    .chunks(2)
                    .filter_map(|kv| {
                        let user = UserId::parse(&text(kv.first()?)?).ok()?;
                        let stored: StoredWaiter = serde_json::from_str(&text(kv.get(1)?)?).ok()?;
                        Some((user, stored))
                    })
                    .collect();
                waiters.sort_by_key(|(_, w)| w.joined_ms);
                act.matcher = Matcher::new(act.matcher.rules().clone());
                act.tickets.clear();
                act.order.clear();
                for kv in gone.chunks(2) {
                    let user = kv.first().and_then(text).and_then(|u| UserId::parse(&u).ok());
                    let last = kv.get(1).and_then(text).and_then(|j| serde_json::from_str::<LastCall>(&j).ok());
                    if let (Some(user), Some(last)) = (user, last) {
                        act.order.restore(user, last);
                    }
                }
                for (user, stored) in waiters {
                    act.order.restore(user.clone(), LastCall { seq: stored.seq, gone_at_ms: None });
                    let c = Self::candidate(&user, &stored.ticket, stored.joined_ms);
                    act.matcher.restore(c);
                    act.users.restore_place(RestorePlace { user: user.clone(), ticket: stored.ticket.clone() });
                    act.tickets.insert(user, stored.ticket);
                }
                if act.matcher.waiting() > 0 {
                    tracing::info!(pool = %act.name, waiting = act.matcher.waiting(), "line restored");
                }
                act.pair_restored(unix_ms());
                act.report_length();
                act.schedule_flush(ctx);
            })
            .wait(ctx);
    }

    /// Pairs restored waiters that are compatible now.
    fn pair_restored(&mut self, now_ms: u64) {
        for (a, b) in self.matcher.rescan(now_ms) {
            self.touch(&a.user, false);
            self.touch(&b.user, false);
            let (room, created) = self.open_room(a, b, now_ms);
            actix::spawn(async move {
                if let Err(e) = created.await {
                    tracing::warn!(room_id = %room.room_id, error = %e, "room could not be created");
                }
            });
        }
    }

    fn candidate(user: &UserId, ticket: &JoinRequest, now_ms: u64) -> Candidate {
        Candidate {
            user: user.clone(),
            rating: ticket.rating,
            region: ticket.region.clone(),
            tags: ticket.tags.clone().unwrap_or_default(),
            joined_ms: now_ms,
        }
    }

    /// Creates the room for a new pair and hands it to the pair's shard; the returned request
    /// resolves once the room is stored there.
    fn open_room(
        &mut self,
        a: Candidate,
        b: Candidate,
        now_ms: u64,
    ) -> (Room, futures_util::future::LocalBoxFuture<'static, Result<(), ApiError>>) {
        // In the order of the room's users (and of `tickets`).
        let members = if a.user < b.user { [a.clone(), b.clone()] } else { [b.clone(), a.clone()] };
        let ta = self.tickets.remove(&a.user).unwrap_or_else(|| default_ticket(&self.name));
        let tb = self.tickets.remove(&b.user).unwrap_or_else(|| default_ticket(&self.name));
        let (users, tickets) =
            if a.user < b.user { ([a.user, b.user], [ta, tb]) } else { ([b.user, a.user], [tb, ta]) };
        let slot = pair_slot(&users[0], &users[1]);
        let room = Room {
            room_id: RoomId::new_in_slot(slot),
            pool: self.name.clone(),
            users,
            created_at: now_ms,
            payload: self.matcher.rules().room_payload(),
        };
        for u in &room.users {
            self.recently_paired.insert(u.clone(), (room.clone(), now_ms + RECENT_PAIRING_MS));
            self.order.paired(u, now_ms);
        }
        METRICS.pairings.with_label_values(&[self.name.as_str()]).inc();
        for c in [a.joined_ms, b.joined_ms] {
            METRICS
                .queue_wait_seconds
                .with_label_values(&[self.name.as_str()])
                .observe(now_ms.saturating_sub(c) as f64 / 1000.0);
        }
        let msg = CreateRoom { room: room.clone(), tickets };
        let created: futures_util::future::LocalBoxFuture<'static, Result<(), ApiError>> = match self.store.as_mut() {
            None => self.pairs.create_room_surely(msg),
            Some(st) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                st.rooms.push(PendingRoom { msg, members, created: tx });
                Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
            }
        };
        self.report_length();
        (room, created)
    }

    fn report_length(&self) {
        METRICS.queue_length.with_label_values(&[self.name.as_str()]).set(self.matcher.waiting() as i64);
    }

    fn tick(&mut self, now_ms: u64, ctx: &mut Context<Self>) {
        self.recently_paired.retain(|_, (_, until)| *until > now_ms);
        let expired = self.order.expire(now_ms);
        if !expired.is_empty() {
            for user in &expired {
                self.touch(user, false);
            }
            self.schedule_flush(ctx);
        }
        if self.matcher.waiting() >= 2 && self.matcher.rules().time_dependent() {
            // Nobody waits for these rooms; the members hear of them from their owner.
            self.pair_restored(now_ms);
            self.schedule_flush(ctx);
        }
    }
}

/// A call older than one the pool already heard from the user (sent by an owner the user has left):
/// the current owner's calls decide; the sender retries through it.
fn stale_call(user: &UserId) -> ApiError {
    ApiError::Unavailable(format!("a newer queue action of {user} came first; retry"))
}

fn default_ticket(pool: &PoolName) -> JoinRequest {
    JoinRequest { pool: pool.clone(), rating: None, region: None, tags: None }
}

impl Actor for PoolCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::coord::shard::SHARD_MAILBOX);
        ctx.run_interval(Duration::from_millis(self.rescan_ms), |act, ctx| act.tick(unix_ms(), ctx));
        // Nothing is answered before the stored line is back.
        self.reload(ctx);
    }
}

/// Sends the line's pending batch (queued behind the mailbox, like the shards' `Flush`).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct FlushLine;

impl Handler<FlushLine> for PoolCoordinator {
    type Result = ();

    fn handle(&mut self, _: FlushLine, ctx: &mut Context<Self>) {
        if let Some(st) = self.store.as_mut() {
            st.commit.notified();
        }
        self.flush(ctx);
    }
}

/// This node no longer owns the pool (cluster mode): stop; the new owner reloads the stored line.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for PoolCoordinator {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        use actix::ActorContext;
        ctx.stop();
    }
}

impl Handler<ResetCache> for PoolCoordinator {
    type Result = ();

    fn handle(&mut self, _: ResetCache, ctx: &mut Context<Self>) {
        self.reload(ctx);
    }
}

impl Handler<Enqueue> for PoolCoordinator {
    type Result = ResponseFuture<Result<JoinResponse, ApiError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        match self.enqueue(msg) {
            // Queued: answered once the entry is stored.
            Ok(Joined::Now(res @ JoinResponse::Queued { .. })) => self.answer(res, ctx),
            Ok(Joined::Now(res)) => Box::pin(std::future::ready(Ok(res))),
            // Paired: answer once the room is stored, so the joiner never hears of a room that a
            // crash could make vanish without a `room_closed`.
            Ok(Joined::Room(room, created)) => {
                self.schedule_flush(ctx);
                Box::pin(async move {
                    created.await?;
                    Ok(JoinResponse::Matched { room })
                })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// How an enqueue ended, before the room (if any) is stored.
enum Joined {
    Now(JoinResponse),
    Room(Room, futures_util::future::LocalBoxFuture<'static, Result<(), ApiError>>),
}

impl PoolCoordinator {
    fn enqueue(&mut self, msg: Enqueue) -> Result<Joined, ApiError> {
        let now = unix_ms();
        // The room's close is a fact whoever sent this: forgotten even if the call is stale.
        if let Some(closed) = &msg.after_room {
            if self.recently_paired.get(&msg.user).is_some_and(|(room, _)| room.room_id == *closed) {
                self.recently_paired.remove(&msg.user);
            }
        }
        if !self.order.admit_enqueue(&msg.user, msg.seq) {
            return Err(stale_call(&msg.user));
        }
        if let Some((room, until)) = self.recently_paired.get(&msg.user) {
            if *until > now && !self.matcher.is_waiting(&msg.user) {
                // Racing with the hand-off to the room (see the module doc); a requeue after the room
                // closed has cleared this entry (`Forget` below), so this is the same room.
                self.order.paired(&msg.user, now);
                return Ok(Joined::Now(JoinResponse::Matched { room: room.clone() }));
            }
        }
        let candidate = Self::candidate(&msg.user, &msg.ticket, now);
        self.tickets.insert(msg.user.clone(), msg.ticket);
        let estimated_wait_ms = self.matcher.estimated_wait_ms();
        let out = match self.matcher.join(candidate, now) {
            JoinOutcome::AlreadyWaiting { position } => {
                Joined::Now(JoinResponse::Queued { pool: self.name.clone(), position, estimated_wait_ms })
            }
            JoinOutcome::Queued { position } => {
                self.touch(&msg.user, true);
                Joined::Now(JoinResponse::Queued { pool: self.name.clone(), position, estimated_wait_ms })
            }
            JoinOutcome::Paired { partner, joiner } => {
                self.touch(&partner.user, false);
                let (room, created) = self.open_room(partner, joiner, now);
                Joined::Room(room, created)
            }
        };
        self.report_length();
        Ok(out)
    }
}

impl Handler<Dequeue> for PoolCoordinator {
    type Result = ResponseFuture<Result<DequeueOutcome, ApiError>>;

    fn handle(&mut self, msg: Dequeue, ctx: &mut Context<Self>) -> Self::Result {
        if !self.order.admit_dequeue(&msg.user, msg.seq, unix_ms()) {
            return Box::pin(std::future::ready(Err(stale_call(&msg.user))));
        }
        let out = if self.matcher.leave(&msg.user) {
            self.tickets.remove(&msg.user);
            self.touch(&msg.user, false);
            self.report_length();
            // Answered once the removal is stored (if that fails, it is retried: a leave is
            // idempotent, and the client retries on 503).
            return self.answer(DequeueOutcome::Removed, ctx);
        } else {
            match self.recently_paired.get(&msg.user) {
                Some((room, until)) if *until > unix_ms() => DequeueOutcome::Paired(room.room_id.clone()),
                _ => DequeueOutcome::NotWaiting,
            }
        };
        // Answered once the user's last call (their tombstone) is stored.
        self.touch(&msg.user, false);
        self.answer(out, ctx)
    }
}

/// The room a user was in has closed, so the pool must stop answering joins with it.
#[derive(Debug, actix::Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct Forget {
    pub user: UserId,
}

impl Handler<Forget> for PoolCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        self.recently_paired.remove(&msg.user);
    }
}

impl Handler<GetStatus> for PoolCoordinator {
    type Result = actix::MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(PoolStatus {
            pool: self.name.clone(),
            waiting: self.matcher.waiting() as u64,
            estimated_wait_ms: self.matcher.estimated_wait_ms(),
        })
    }
}
