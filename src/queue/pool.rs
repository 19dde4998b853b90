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

use super::matcher::{Candidate, JoinOutcome, Matcher};
use super::messages::{CreateRoom, Dequeue, DequeueOutcome, Enqueue, GetStatus};
use super::rules::PoolRules;
use crate::coord::slot::pair_slot;
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::{unix_ms, JoinRequest, JoinResponse, PoolName, PoolStatus, Room, RoomId, UserId};

/// How long a pairing is remembered for answering joins and leaves that raced with it.
const RECENT_PAIRING_MS: u64 = 30_000;

pub struct PoolCoordinator {
    name: PoolName,
    matcher: Matcher,
    /// Tickets of waiting users, for requeueing them later.
    tickets: HashMap<UserId, JoinRequest>,
    /// Users paired recently: their room and until when it is remembered.
    recently_paired: HashMap<UserId, (Room, u64)>,
    pairs: ShardRouter,
    rescan_ms: u64,
}

impl PoolCoordinator {
    pub fn new(name: PoolName, rules: PoolRules, pairs: ShardRouter, rescan_ms: u64) -> Self {
        PoolCoordinator {
            name,
            matcher: Matcher::new(rules),
            tickets: HashMap::new(),
            recently_paired: HashMap::new(),
            pairs,
            rescan_ms,
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
    ) -> (Room, actix::prelude::Request<crate::coord::shard::PairShard, CreateRoom>) {
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
        }
        METRICS.pairings.with_label_values(&[self.name.as_str()]).inc();
        for c in [a.joined_ms, b.joined_ms] {
            METRICS
                .queue_wait_seconds
                .with_label_values(&[self.name.as_str()])
                .observe(now_ms.saturating_sub(c) as f64 / 1000.0);
        }
        let created = self.pairs.for_slot(slot).send(CreateRoom { room: room.clone(), tickets });
        self.report_length();
        (room, created)
    }

    fn report_length(&self) {
        METRICS.queue_length.with_label_values(&[self.name.as_str()]).set(self.matcher.waiting() as i64);
    }

    fn tick(&mut self, now_ms: u64) {
        self.recently_paired.retain(|_, (_, until)| *until > now_ms);
        if self.matcher.waiting() >= 2 && self.matcher.rules().time_dependent() {
            for (a, b) in self.matcher.rescan(now_ms) {
                let (room, created) = self.open_room(a, b, now_ms);
                // Nobody waits for this answer; the members hear of the room from its owner.
                actix::spawn(async move {
                    if let Ok(Err(e)) | Err(e) = created.await.map_err(ApiError::from) {
                        tracing::warn!(room_id = %room.room_id, error = %e, "room could not be created");
                    }
                });
            }
        }
    }
}

fn default_ticket(pool: &PoolName) -> JoinRequest {
    JoinRequest { pool: pool.clone(), rating: None, region: None, tags: None }
}

impl Actor for PoolCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(self.rescan_ms), |act, _| act.tick(unix_ms()));
    }
}

impl Handler<Enqueue> for PoolCoordinator {
    type Result = ResponseFuture<Result<JoinResponse, ApiError>>;

    fn handle(&mut self, msg: Enqueue, _: &mut Context<Self>) -> Self::Result {
        match self.enqueue(msg) {
            Ok(Joined::Now(res)) => Box::pin(std::future::ready(Ok(res))),
            // Paired: answer once the room is stored, so the joiner never hears of a room that a
            // crash could make vanish without a `room_closed`.
            Ok(Joined::Room(room, created)) => Box::pin(async move {
                (*created).await??;
                Ok(JoinResponse::Matched { room })
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// How an enqueue ended, before the room (if any) is stored.
enum Joined {
    Now(JoinResponse),
    Room(Room, Box<actix::prelude::Request<crate::coord::shard::PairShard, CreateRoom>>),
}

impl PoolCoordinator {
    fn enqueue(&mut self, msg: Enqueue) -> Result<Joined, ApiError> {
        let now = unix_ms();
        if let Some((room, until)) = self.recently_paired.get(&msg.user) {
            if *until > now && !self.matcher.is_waiting(&msg.user) {
                // Racing with the hand-off to the room (see the module doc); a requeue after the room
                // closed has cleared this entry (`Forget` below), so this is the same room.
                return Ok(Joined::Now(JoinResponse::Matched { room: room.clone() }));
            }
        }
        let candidate = Self::candidate(&msg.user, &msg.ticket, now);
        self.tickets.insert(msg.user.clone(), msg.ticket);
        let estimated_wait_ms = self.matcher.estimated_wait_ms();
        let out = match self.matcher.join(candidate, now) {
            JoinOutcome::AlreadyWaiting { position } | JoinOutcome::Queued { position } => {
                Joined::Now(JoinResponse::Queued { pool: self.name.clone(), position, estimated_wait_ms })
            }
            JoinOutcome::Paired { partner, joiner } => {
                let (room, created) = self.open_room(partner, joiner, now);
                Joined::Room(room, Box::new(created))
            }
        };
        self.report_length();
        Ok(out)
    }
}

impl Handler<Dequeue> for PoolCoordinator {
    type Result = actix::MessageResult<Dequeue>;

    fn handle(&mut self, msg: Dequeue, _: &mut Context<Self>) -> Self::Result {
        let out = if self.matcher.leave(&msg.user) {
            self.tickets.remove(&msg.user);
            self.report_length();
            DequeueOutcome::Removed
        } else {
            match self.recently_paired.get(&msg.user) {
                Some((room, until)) if *until > unix_ms() => DequeueOutcome::Paired(room.room_id.clone()),
                _ => DequeueOutcome::NotWaiting,
            }
        };
        actix::MessageResult(out)
    }
}

/// The room a user was in has closed, so the pool must stop answering joins with it.
#[derive(Debug, actix::Message)]
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
