//! Bodies of the server API (`/v1/server/*`, for the app's own backend), exactly as the contract
//! spells them, and the checks a publish must pass before anything is logged: the event `type` the
//! app chose, the users (deduplicated), and `data` (a JSON object, stored compact).

use serde::{Deserialize, Serialize};

use super::ids::{PoolName, PublishKey, RoomId, UserId};

/// Most distinct users one publish may name.
pub const MAX_PUBLISH_USERS: usize = 1000;
/// Longest event type the app may choose.
pub const MAX_EVENT_TYPE_LEN: usize = 64;

/// Types the app may not publish: the built-in events, the reply frames, the client's own frames,
/// and the pseudo-events of the client libraries, so nothing a client reads can be mistaken for one.
pub const RESERVED_EVENT_TYPES: &[&str] = &[
    "hello",
    "match",
    "unmatched",
    "room_assigned",
    "room_closed",
    "queue_update",
    "pong",
    "error",
    "ack",
    "ping",
    "swipe",
    "unmatch",
    "join_queue",
    "leave_queue",
    "skip",
    "connected",
    "disconnected",
    "gap",
];

/// The `type` of a published event: 1..64 characters of `[a-z0-9_.]`, not a reserved type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(std::sync::Arc<str>);

impl EventType {
    pub fn parse(s: &str) -> Result<EventType, String> {
        if s.is_empty() || s.len() > MAX_EVENT_TYPE_LEN {
            return Err(format!("type must be 1..{MAX_EVENT_TYPE_LEN} characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.') {
            return Err("type may only contain lowercase letters, digits, '_' and '.'".into());
        }
        if RESERVED_EVENT_TYPES.contains(&s) {
            return Err(format!("type {s:?} is a built-in event or frame type; choose another"));
        }
        Ok(EventType(std::sync::Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `POST /v1/server/publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub users: Vec<UserId>,
    #[serde(rename = "type")]
    pub type_: EventType,
    /// A JSON object; absent = `{}`.
    #[serde(default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
    /// Idempotency key: the same key again publishes nothing new (per user log).
    #[serde(default)]
    pub key: Option<PublishKey>,
}

/// A checked publish: distinct users in the order given, compact `data`.
#[derive(Debug, Clone)]
pub struct Publication {
    pub users: Vec<UserId>,
    pub event: AppEvent,
}

/// What each user's stream gets (the same for every user of one publish).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppEvent {
    #[serde(rename = "type")]
    pub type_: EventType,
    /// The compact text of a JSON object.
    pub data: std::sync::Arc<str>,
    pub key: Option<PublishKey>,
}

impl AppEvent {
    /// The effect id the event is logged with when it has a key: a publish with that key again
    /// finds it in the user's log and adds nothing (the log's de-duplication of pair effects).
    pub fn effect_id(&self) -> Option<String> {
        self.key.as_ref().map(|k| format!("publish:{k}"))
    }
}

impl PublishRequest {
    /// Checks the users (1..=1000 distinct ones; duplicates count once) and `data` (an object);
    /// the error is a sentence for a 400 `bad_request`.
    pub fn validate(self) -> Result<Publication, String> {
        let mut seen = std::collections::HashSet::with_capacity(self.users.len());
        let users: Vec<UserId> = self.users.into_iter().filter(|u| seen.insert(u.clone())).collect();
        if users.is_empty() || users.len() > MAX_PUBLISH_USERS {
            return Err(format!("users must name 1..{MAX_PUBLISH_USERS} distinct users, not {}", users.len()));
        }
        let data = match &self.data {
            None => std::sync::Arc::from("{}"),
            Some(raw) if raw.get().trim_start().starts_with('{') => std::sync::Arc::from(compact_json(raw.get())),
            Some(_) => return Err("data must be a JSON object".into()),
        };
        Ok(Publication { users, event: AppEvent { type_: self.type_, data, key: self.key } })
    }
}

/// Valid JSON text without the whitespace between its tokens (strings are kept as they are), so an
/// event fits on one SSE `data:` line whatever formatting the app sent.
pub fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Answer to `POST /v1/server/publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    pub status: String,
    /// Distinct users the event was published to.
    pub users: usize,
}

/// Where a user is, as `GET /v1/server/users/{user}` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceState {
    Idle,
    Queued,
    InRoom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceView {
    pub state: PlaceState,
    /// The pool waited in (queued), or the pool the room came from (in a room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<RoomId>,
}

impl PlaceView {
    pub fn idle() -> PlaceView {
        PlaceView { state: PlaceState::Idle, pool: None, room_id: None }
    }
}

/// Answer to `GET /v1/server/users/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub user: UserId,
    pub place: PlaceView,
    /// Active matches.
    pub matches: usize,
    /// Open streams (WebSocket + SSE), cluster-wide: streams opened on other nodes are relays,
    /// which are connections at the user's owner.
    pub connections: usize,
    /// The newest stored event id (what a new connection's `hello` says).
    pub last_event_id: u64,
}

impl UserView {
    /// A user the server has nothing about: idle, no matches, connections or events.
    pub fn unknown(user: UserId) -> UserView {
        UserView { user, place: PlaceView::idle(), matches: 0, connections: 0, last_event_id: 0 }
    }
}

/// `POST /v1/server/rooms/{room_id}/close` (the body may be left out).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseRoomRequest {
    /// Put both members back in line (default false).
    #[serde(default)]
    pub requeue: Option<bool>,
}

/// Answer to `POST /v1/server/rooms/{room_id}/close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRoomResponse {
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<Publication, String> {
        let req: PublishRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        req.validate()
    }

    #[test]
    fn event_types_follow_the_contract() {
        assert!(EventType::parse("match_result").is_ok());
        assert!(EventType::parse("a.b_9").is_ok());
        assert!(EventType::parse(&"x".repeat(64)).is_ok());
        assert!(EventType::parse(&"x".repeat(65)).is_err());
        assert!(EventType::parse("").is_err());
        assert!(EventType::parse("Match_Result").is_err());
        assert!(EventType::parse("a-b").is_err());
        for t in RESERVED_EVENT_TYPES {
            assert!(EventType::parse(t).is_err(), "{t} must be reserved");
        }
    }

    #[test]
    fn a_publish_dedupes_users_and_keeps_data_compact() {
        let p = request(
            "{\"users\":[\"a\",\"b\",\"a\"],\"type\":\"t\",\"data\":{ \"x\" : [1, 2],\n \"s\":\"a b\\\" c\" },\"key\":\"k1\"}",
        )
        .unwrap();
        assert_eq!(p.users.iter().map(UserId::as_str).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(&*p.event.data, r#"{"x":[1,2],"s":"a b\" c"}"#);
        assert_eq!(p.event.effect_id().as_deref(), Some("publish:k1"));
        assert_eq!(&*request(r#"{"users":["a"],"type":"t"}"#).unwrap().event.data, "{}");
    }

    #[test]
    fn a_publish_refuses_bad_users_types_and_data() {
        assert!(request(r#"{"users":[],"type":"t"}"#).unwrap_err().contains("distinct users"));
        let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        let body = serde_json::json!({"users": many, "type": "t"}).to_string();
        assert!(request(&body).unwrap_err().contains("distinct users"));
        let dup: Vec<String> = (0..1001).map(|i| format!("u{}", i % 1000)).collect();
        assert_eq!(request(&serde_json::json!({"users": dup, "type": "t"}).to_string()).unwrap().users.len(), 1000);
        assert!(request(r#"{"users":["a b"],"type":"t"}"#).unwrap_err().contains("invalid user id"));
        assert!(request(r#"{"users":["a"],"type":"match"}"#).is_err());
        assert!(request(r#"{"users":["a"],"type":"t","data":[1]}"#).unwrap_err().contains("object"));
        assert!(request(r#"{"users":["a"],"type":"t","data":"x"}"#).unwrap_err().contains("object"));
        assert!(request(r#"{"users":["a"],"type":"t","from":"x"}"#).is_err());
    }

    #[test]
    fn user_views_leave_out_what_the_place_does_not_have() {
        let v = UserView { connections: 1, last_event_id: 4, ..UserView::unknown(UserId::parse("a").unwrap()) };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"user":"a","place":{"state":"idle"},"matches":0,"connections":1,"last_event_id":4}"#
        );
    }
}
