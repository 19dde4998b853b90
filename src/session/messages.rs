//! Messages between user shards and session actors.

use std::sync::Arc;

use actix::{Message, Recipient};

use crate::error::ApiError;
use crate::protocol::server::{AppEvent, UserView};
use crate::protocol::{Event, EventKind, JoinRequest, Match, MatchId, RoomId, UserId};

/// Why the server closes a connection. The close code tells the client whether to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client did not read fast enough and its outbox filled up. Reconnect and resume.
    SlowConsumer,
    /// The server is shutting down. Reconnect (to another node) and resume.
    ShuttingDown,
}

impl CloseReason {
    /// WebSocket close code: 4000-4099 means "reconnect and resume", 1012 "service restart".
    pub fn ws_code(self) -> u16 {
        match self {
            CloseReason::SlowConsumer => 4008,
            CloseReason::ShuttingDown => 1012,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ShuttingDown => "shutting_down",
        }
    }
}

/// Something for one connection to write.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Deliver {
    /// The first message a connection gets: its `hello`, then the events it missed.
    Resume { hello: Event, missed: Vec<Arc<Event>> },
    /// A live event.
    Event(Arc<Event>),
    /// Close the connection.
    Close(CloseReason),
}

/// A connection as its user shard knows it.
#[derive(Clone)]
pub struct SessionHandle {
    /// Unique per process, so a connection can unsubscribe itself and only itself.
    pub id: u64,
    pub recipient: Recipient<Deliver>,
    /// The id of the last event queued to it (its `hello`'s at first): where a relay taking the
    /// connection over to the user's next owner resumes.
    pub given: Arc<std::sync::atomic::AtomicU64>,
}

impl SessionHandle {
    pub fn new(id: u64, recipient: Recipient<Deliver>) -> SessionHandle {
        SessionHandle { id, recipient, given: Arc::default() }
    }

    pub(crate) fn gave(&self, id: u64) {
        self.given.fetch_max(id, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn last_given(&self) -> u64 {
        self.given.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What an event changes for its user besides the log, applied together with the event: the index
/// of active matches, or the user's place (entering and leaving rooms are decided by the room's
/// pair shard and carried out by the user's own shard, I4).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum IndexChange {
    None,
    AddMatch(Match),
    RemoveMatch(MatchId),
    EnterRoom { room_id: RoomId, ticket: JoinRequest },
    LeaveRoom { room_id: RoomId, requeue: bool },
}

/// Which pair decision an event comes from, so a re-published event is logged once and the pair
/// can be told when it is safely in the user's log.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EffectRef {
    pub id: String,
    pub pair: crate::coord::slot::PairKey,
}

/// Append an event to `user`'s stream and deliver it to the user's connections.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct Publish {
    pub user: UserId,
    pub kind: EventKind,
    pub change: IndexChange,
    pub effect: Option<EffectRef>,
}

/// The app's backend publishes `event` to `users` (users of the shard it is sent to). Each user's
/// log gets one event, numbered and delivered like the built-in ones; an event with a key that a
/// user's log already holds is not added again. Answered once every user's event is in their log:
/// with Redis, once it is stored (I7).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct ServerPublish {
    pub users: Vec<UserId>,
    pub event: AppEvent,
}

/// What the server API tells about `user` (`GET /v1/server/users/{user}`).
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<UserView, ApiError>")]
pub struct InspectUser {
    pub user: UserId,
}

/// Open a stream for `user`, resuming after `since` when given.
#[derive(Message)]
#[rtype(result = "Result<(), ApiError>")]
pub struct Subscribe {
    pub user: UserId,
    pub session: SessionHandle,
    pub since: Option<u64>,
    /// The connection already had its `hello` (a relay handing its stream over to this node):
    /// replay what it missed after `since`, no new `hello`. Refused if the log no longer
    /// reaches back that far (the client reconnects and is told of the gap).
    pub continued: bool,
}

/// The connection `session_id` of `user` is gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub user: UserId,
    pub session_id: u64,
}

/// The user's active matches.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<Vec<Match>, ApiError>")]
pub struct ListMatches {
    pub user: UserId,
}

/// Ask every connection on this shard to close (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub reason: CloseReason,
}
