//! `UserShard`: owns, for each of its users, the event log, the open connections, the index of
//! active matches, and the user's place (idle, queued, in a room; see `queue::placement`).
//! Publishing, subscribing and resuming are all messages to this one actor, so the order "replay
//! what was missed, then go live" cannot interleave with a new event (I2).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::{Actor, AsyncContext, Context, Handler};
use smallvec::SmallVec;

use super::event_log::{EventLog, Replay};
use super::messages::{
    CloseAll, CloseReason, Deliver, IndexChange, ListMatches, Publish, SessionHandle, Subscribe,
    Unsubscribe,
};
use crate::config::Limits;
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::event::Hello;
use crate::protocol::{Event, EventKind, Match, UserId};
use crate::queue::placement::Place;
use crate::queue::PoolRouter;

/// One user's state on this node.
pub(crate) struct UserEntry {
    log: EventLog,
    sessions: SmallVec<[SessionHandle; 2]>,
    matches: Vec<Match>,
    /// Where the user is (I4). Changed only by this shard.
    pub(crate) place: Place,
    /// Bumped on every connect and disconnect, so a pending presence check can tell it is stale.
    presence_gen: u64,
}

/// The other actors a user shard talks to; set once by `Wire` before any traffic.
#[derive(Clone)]
pub struct Links {
    pub pairs: ShardRouter,
    pub pools: PoolRouter,
}

/// Gives a user shard its links (they are created after it).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Wire(pub Links);

pub struct UserShard {
    pub(crate) users: HashMap<UserId, UserEntry>,
    limits: Limits,
    /// This node's id, told to clients in `hello`.
    node_id: Arc<str>,
    links: Option<Links>,
    /// How long a user may stay disconnected before losing a queue place or room.
    presence_grace: Duration,
}

impl UserShard {
    pub fn new(limits: Limits, node_id: Arc<str>, presence_grace: Duration) -> Self {
        UserShard {
            users: HashMap::new(),
            limits,
            node_id,
            links: None,
            presence_grace,
        }
    }

    pub(crate) fn links(&self) -> Result<&Links, ApiError> {
        self.links
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable("the server is still starting".into()))
    }

    pub(crate) fn entry(&mut self, user: &UserId) -> &mut UserEntry {
        let capacity = self.limits.event_log_capacity;
        self.users.entry(user.clone()).or_insert_with(|| UserEntry {
            log: EventLog::new(capacity),
            sessions: SmallVec::new(),
            matches: Vec::new(),
            place: Place::Idle,
            presence_gen: 0,
        })
    }

    /// Appends an event to `user`'s log and writes it to every connection of the user.
    pub(crate) fn publish(
        &mut self,
        user: &UserId,
        kind: &EventKind,
        change: IndexChange,
        ctx: &mut Context<Self>,
    ) {
        let entry = self.entry(user);
        match change {
            IndexChange::None => {}
            IndexChange::AddMatch(m) => entry.matches.push(m),
            IndexChange::RemoveMatch(id) => entry.matches.retain(|m| m.match_id != id),
        }
        let event = entry.log.push(kind);
        let before = entry.sessions.len();
        entry.sessions.retain(
            |s| match s.recipient.try_send(Deliver::Event(event.clone())) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    // The connection's outbox is full: close it rather than buffer without bound.
                    // It resumes from its last id when it reconnects.
                    METRICS.slow_consumers.inc();
                    s.recipient
                        .do_send(Deliver::Close(CloseReason::SlowConsumer));
                    false
                }
                Err(SendError::Closed(_)) => false,
            },
        );
        if before > 0 && entry.sessions.is_empty() {
            self.went_offline(user, ctx);
        }
    }

    /// The user's last connection is gone: after the grace period, give up their place.
    fn went_offline(&mut self, user: &UserId, ctx: &mut Context<Self>) {
        METRICS.connected_users.dec();
        let entry = self.entry(user);
        entry.presence_gen += 1;
        let generation = entry.presence_gen;
        let user = user.clone();
        ctx.run_later(self.presence_grace, move |act, ctx| {
            let still_gone = act
                .users
                .get(&user)
                .is_some_and(|e| e.presence_gen == generation && e.sessions.is_empty());
            if still_gone {
                act.presence_expired(&user, ctx);
            }
        });
    }
}

impl Actor for UserShard {
    type Context = Context<Self>;
}

impl Handler<Wire> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Wire, _: &mut Context<Self>) {
        self.links = Some(msg.0);
    }
}

impl Handler<Publish> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.publish(&msg.user, &msg.kind, msg.change, ctx);
    }
}

impl Handler<Subscribe> for UserShard {
    type Result = Result<(), ApiError>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let max = self.limits.max_connections_per_user;
        let node = self.node_id.clone();
        let entry = self.entry(&msg.user);
        entry.sessions.retain(|s| s.recipient.connected());
        if entry.sessions.len() >= max {
            return Err(ApiError::Conflict(format!(
                "this user already has {max} open connections on this node (limits.max_connections_per_user)"
            )));
        }
        let last_id = entry.log.last_id();
        let replay = match msg.since {
            Some(since) => entry.log.since(since),
            None => Replay {
                events: Vec::new(),
                gap: false,
            },
        };
        let hello_id = replay.events.first().map(|e| e.id - 1).unwrap_or(last_id);
        let hello = Event::hello(
            hello_id,
            &Hello {
                user: &msg.user,
                node: &node,
                last_id,
                resumed_from: msg.since,
                gap: replay.gap,
            },
        );
        // Sent before the session is registered, so it precedes every live event in the mailbox.
        // `do_send`: the first message to a fresh mailbox; its size is bounded by the log capacity.
        msg.session.recipient.do_send(Deliver::Resume {
            hello,
            missed: replay.events,
        });
        if entry.sessions.is_empty() {
            METRICS.connected_users.inc();
        }
        entry.presence_gen += 1;
        entry.sessions.push(msg.session);
        Ok(())
    }
}

impl Handler<Unsubscribe> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        if let Some(entry) = self.users.get_mut(&msg.user) {
            let before = entry.sessions.len();
            entry.sessions.retain(|s| s.id != msg.session_id);
            if before > 0 && entry.sessions.is_empty() {
                self.went_offline(&msg.user, ctx);
            }
        }
    }
}

impl Handler<ListMatches> for UserShard {
    type Result = Vec<Match>;

    fn handle(&mut self, msg: ListMatches, _: &mut Context<Self>) -> Vec<Match> {
        self.users
            .get(&msg.user)
            .map(|e| e.matches.clone())
            .unwrap_or_default()
    }
}

impl Handler<CloseAll> for UserShard {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        let mut closed = 0;
        for entry in self.users.values_mut() {
            for s in entry.sessions.drain(..) {
                s.recipient.do_send(Deliver::Close(msg.reason));
                closed += 1;
            }
        }
        closed
    }
}
