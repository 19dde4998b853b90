//! Everything a run saw: each swipe and its answer, each queue join and skip, each event on each
//! connection with the instant it arrived, and each failed request. Client threads record their
//! own share; the shares are merged and then checked as one history (`check`).

use tokio::time::Instant;

use super::wire::{EventBody, MatchBody, RoomBody};

/// How a stream was connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Ws,
    Sse,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// One numbered event as a connection received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: u64,
    pub body: EventBody,
    pub at: Instant,
}

/// One event connection (a browser tab) and everything it received.
#[derive(Debug, Clone, Default)]
pub struct StreamRecord {
    /// `user#tab/ws`, for messages.
    pub label: String,
    pub user: String,
    pub transport: Transport,
    /// The `hello`: its id and when it arrived. A stream without one never became ready.
    pub hello: Option<(u64, Instant)>,
    pub events: Vec<Seen>,
    /// Set when the stream ended before the client closed it (server close, error, end of body).
    pub lost: Option<String>,
    /// Frames that do not follow the contract, or `error` frames.
    pub problems: Vec<String>,
}

impl StreamRecord {
    pub fn new(user: &str, tab: usize, transport: Transport) -> StreamRecord {
        StreamRecord {
            label: format!("{user}#{tab}/{}", transport.as_str()),
            user: user.to_string(),
            transport,
            ..StreamRecord::default()
        }
    }

    /// Ready before `t`: it must see every event of its user from `t` on.
    pub fn ready_before(&self, t: Instant) -> bool {
        self.hello.map(|(_, at)| at <= t).unwrap_or(false)
    }

    pub fn count_matching(&self, pred: impl Fn(&EventBody) -> bool) -> usize {
        self.events.iter().filter(|e| pred(&e.body)).count()
    }
}

/// One `POST /v1/swipes` and its answer.
#[derive(Debug, Clone)]
pub struct SwipeRecord {
    pub actor: String,
    pub target: String,
    pub right: bool,
    pub swipe_id: Option<String>,
    /// A repeat of an earlier swipe with the same `swipe_id`.
    pub retry: bool,
    pub sent: Instant,
    pub done: Instant,
    /// `None` when the request failed (the failure is recorded too).
    pub answer: Option<SwipeAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwipeAnswer {
    pub status: String,
    pub match_: Option<MatchBody>,
}

/// One `POST /v1/queue` (or a requeue the server does on its own after a skip).
#[derive(Debug, Clone)]
pub struct JoinRecord {
    pub user: String,
    pub sent: Instant,
    pub done: Instant,
    /// The room of a 200 `matched` answer.
    pub room: Option<RoomBody>,
    /// The user must be in a room after this (compatible users are waiting: I6).
    pub expect_room: bool,
    /// For a requeue: the room just left, which does not count as the new one.
    pub previous_room: Option<String>,
}

/// One `POST /v1/rooms/{id}/skip` that was acknowledged.
#[derive(Debug, Clone)]
pub struct SkipRecord {
    pub user: String,
    pub room_id: String,
    pub sent: Instant,
}

/// One `POST /v1/server/publish` that was answered `published`: every stream of each of `users`
/// open since before `sent` must get the event (type `kind`, `data.seq` = `seq`) exactly once.
#[derive(Debug, Clone)]
pub struct PublishRecord {
    pub users: Vec<String>,
    pub kind: String,
    pub seq: u64,
    pub sent: Instant,
    pub done: Instant,
}

/// A request that did not get the answer the contract promises.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `POST /v1/swipes`, `GET /v1/ws`, ...
    pub what: String,
    pub detail: String,
}

/// A run's whole history.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub swipes: Vec<SwipeRecord>,
    pub streams: Vec<StreamRecord>,
    pub joins: Vec<JoinRecord>,
    pub skips: Vec<SkipRecord>,
    pub publishes: Vec<PublishRecord>,
    pub failures: Vec<Failure>,
    /// When the actions began. Streams ready by then must see every later event of their user.
    pub actions_from: Option<Instant>,
    /// The scenario closed every room it saw, so every room must have closed.
    pub expect_rooms_closed: bool,
}

impl History {
    pub fn fail(&mut self, what: &str, detail: impl Into<String>) {
        self.failures.push(Failure { what: what.to_string(), detail: detail.into() });
    }

    /// Adds another thread's share.
    pub fn merge(&mut self, other: History) {
        self.swipes.extend(other.swipes);
        self.streams.extend(other.streams);
        self.joins.extend(other.joins);
        self.skips.extend(other.skips);
        self.publishes.extend(other.publishes);
        self.failures.extend(other.failures);
        self.actions_from = match (self.actions_from, other.actions_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.expect_rooms_closed |= other.expect_rooms_closed;
    }
}
