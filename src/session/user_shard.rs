//! `UserShard`: owns, for each of its users, the event log, the open connections and the index of
//! active matches. Publishing, subscribing and resuming are all messages to this one actor, so the
//! order "replay what was missed, then go live" cannot interleave with a new event (I2).

use std::collections::HashMap;
use std::sync::Arc;

use actix::dev::SendError;
use actix::{Actor, Context, Handler};
use smallvec::SmallVec;

use super::event_log::EventLog;
use super::messages::{
    CloseAll, CloseReason, Deliver, IndexChange, ListMatches, Publish, SessionHandle, Subscribe, Unsubscribe,
};
use crate::config::Limits;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::event::Hello;
use crate::protocol::{Event, Match, UserId};

/// One user's stream state on this node.
struct UserEntry {
    log: EventLog,
    sessions: SmallVec<[SessionHandle; 2]>,
    matches: Vec<Match>,
}

pub struct UserShard {
    users: HashMap<UserId, UserEntry>,
    limits: Limits,
    /// This node's id, told to clients in `hello`.
    node_id: Arc<str>,
}

impl UserShard {
    pub fn new(limits: Limits, node_id: Arc<str>) -> Self {
        UserShard { users: HashMap::new(), limits, node_id }
    }

    fn entry(&mut self, user: &UserId) -> &mut UserEntry {
        let capacity = self.limits.event_log_capacity;
        self.users.entry(user.clone()).or_insert_with(|| UserEntry {
            log: EventLog::new(capacity),
            sessions: SmallVec::new(),
            matches: Vec::new(),
        })
    }
}

impl Actor for UserShard {
    type Context = Context<Self>;
}

impl Handler<Publish> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let entry = self.entry(&msg.user);
        match msg.change {
            IndexChange::None => {}
            IndexChange::AddMatch(m) => entry.matches.push(m),
            IndexChange::RemoveMatch(id) => entry.matches.retain(|m| m.match_id != id),
        }
        let event = entry.log.push(&msg.kind);
        let before = entry.sessions.len();
        entry.sessions.retain(|s| match s.recipient.try_send(Deliver::Event(event.clone())) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                // The connection's outbox is full: close it rather than buffer without bound.
                // It resumes from its last id when it reconnects.
                METRICS.slow_consumers.inc();
                s.recipient.do_send(Deliver::Close(CloseReason::SlowConsumer));
                false
            }
            Err(SendError::Closed(_)) => false,
        });
        if before > 0 && entry.sessions.is_empty() {
            METRICS.connected_users.dec();
        }
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
            None => super::event_log::Replay { events: Vec::new(), gap: false },
        };
        let hello_id = replay.events.first().map(|e| e.id - 1).unwrap_or(last_id);
        let hello = Event::hello(
            hello_id,
            &Hello { user: &msg.user, node: &node, last_id, resumed_from: msg.since, gap: replay.gap },
        );
        // Sent before the session is registered, so it precedes every live event in the mailbox.
        // `do_send`: the first message to a fresh mailbox; its size is bounded by the log capacity.
        msg.session.recipient.do_send(Deliver::Resume { hello, missed: replay.events });
        if entry.sessions.is_empty() {
            METRICS.connected_users.inc();
        }
        entry.sessions.push(msg.session);
        Ok(())
    }
}

impl Handler<Unsubscribe> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        if let Some(entry) = self.users.get_mut(&msg.user) {
            let before = entry.sessions.len();
            entry.sessions.retain(|s| s.id != msg.session_id);
            if before > 0 && entry.sessions.is_empty() {
                METRICS.connected_users.dec();
            }
        }
    }
}

impl Handler<ListMatches> for UserShard {
    type Result = Vec<Match>;

    fn handle(&mut self, msg: ListMatches, _: &mut Context<Self>) -> Vec<Match> {
        self.users.get(&msg.user).map(|e| e.matches.clone()).unwrap_or_default()
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
