//! The contract's bodies and events as a client reads them. These are the load tool's own types,
//! not the server's, so the tool checks the wire format rather than sharing the server's serde.
//! Unknown fields are ignored: the contract may grow.

use serde::Deserialize;

/// `POST /v1/dev/token` answer.
#[derive(Debug, Deserialize)]
pub struct TokenBody {
    pub token: String,
}

/// MATCH.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MatchBody {
    pub match_id: String,
    pub users: Vec<String>,
    #[serde(default)]
    pub created_at: u64,
}

/// `POST /v1/swipes` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct SwipeBody {
    pub status: String,
    #[serde(rename = "match", default)]
    pub match_: Option<MatchBody>,
}

/// ROOM (the fields the checks need).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoomBody {
    pub room_id: String,
    pub users: Vec<String>,
}

/// `POST /v1/queue` answer: `queued` (202) or `matched` with the room (200).
#[derive(Debug, Clone, Deserialize)]
pub struct JoinBody {
    pub status: String,
    #[serde(default)]
    pub room: Option<RoomBody>,
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// What an event says, reduced to what the invariants look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    Hello {
        last_id: u64,
    },
    Match {
        match_id: String,
        users: Vec<String>,
    },
    Unmatched {
        match_id: String,
    },
    RoomAssigned {
        room_id: String,
        users: Vec<String>,
    },
    RoomClosed {
        room_id: String,
        reason: String,
    },
    QueueUpdate,
    /// An event the app's backend published; `seq` is its `data.seq` when it has one (the load
    /// tool's own publishes do).
    App {
        kind: String,
        seq: Option<u64>,
    },
    Other {
        kind: String,
    },
}

impl EventBody {
    /// The contract's `type`.
    pub fn kind(&self) -> &str {
        match self {
            EventBody::Hello { .. } => "hello",
            EventBody::Match { .. } => "match",
            EventBody::Unmatched { .. } => "unmatched",
            EventBody::RoomAssigned { .. } => "room_assigned",
            EventBody::RoomClosed { .. } => "room_closed",
            EventBody::QueueUpdate => "queue_update",
            EventBody::App { kind, .. } | EventBody::Other { kind } => kind,
        }
    }

    /// What makes this event unique on one user's stream (`match:<id>`), when it has such a key.
    pub fn key(&self) -> Option<String> {
        match self {
            EventBody::Match { match_id, .. } => Some(format!("match:{match_id}")),
            EventBody::Unmatched { match_id } => Some(format!("unmatched:{match_id}")),
            EventBody::RoomAssigned { room_id, .. } => Some(format!("room_assigned:{room_id}")),
            EventBody::RoomClosed { room_id, .. } => Some(format!("room_closed:{room_id}")),
            EventBody::App { kind, seq: Some(seq) } => Some(format!("{kind}:{seq}")),
            _ => None,
        }
    }
}

/// One text frame (WebSocket) or one `data:` (SSE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A numbered event of the user's stream (`hello` included).
    Event { id: u64, body: EventBody },
    /// A reply without an id (`ack`, `pong`, `error`); the load tool sends no WS actions, so these are unexpected.
    Reply { kind: String, text: String },
    /// Not the contract's shape.
    Malformed(String),
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(default)]
    id: Option<u64>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct MatchData {
    #[serde(rename = "match")]
    match_: MatchBody,
}

#[derive(Deserialize)]
struct RoomData {
    room: RoomBody,
}

#[derive(Deserialize)]
struct ClosedData {
    room_id: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct UnmatchedData {
    match_id: String,
}

#[derive(Deserialize)]
struct HelloData {
    #[serde(default)]
    last_id: u64,
}

fn data<T: serde::de::DeserializeOwned>(kind: &str, value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("{kind} event with unexpected data: {e}"))
}

/// Parses one frame's text.
pub fn parse_frame(text: &str) -> Frame {
    let raw: RawFrame = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return Frame::Malformed(format!("not a contract frame ({e}): {}", snippet(text))),
    };
    let Some(id) = raw.id else {
        return Frame::Reply { kind: raw.kind, text: snippet(text) };
    };
    let body = match raw.kind.as_str() {
        "hello" => data::<HelloData>("hello", raw.data).map(|d| EventBody::Hello { last_id: d.last_id }),
        "match" => data::<MatchData>("match", raw.data)
            .map(|d| EventBody::Match { match_id: d.match_.match_id, users: d.match_.users }),
        "unmatched" => {
            data::<UnmatchedData>("unmatched", raw.data).map(|d| EventBody::Unmatched { match_id: d.match_id })
        }
        "room_assigned" => data::<RoomData>("room_assigned", raw.data)
            .map(|d| EventBody::RoomAssigned { room_id: d.room.room_id, users: d.room.users }),
        "room_closed" => data::<ClosedData>("room_closed", raw.data)
            .map(|d| EventBody::RoomClosed { room_id: d.room_id, reason: d.reason }),
        "queue_update" => Ok(EventBody::QueueUpdate),
        other if crate::protocol::server::EventType::parse(other).is_ok() => {
            Ok(EventBody::App { kind: other.to_string(), seq: raw.data.get("seq").and_then(serde_json::Value::as_u64) })
        }
        other => Ok(EventBody::Other { kind: other.to_string() }),
    };
    match body {
        Ok(body) => Frame::Event { id, body },
        Err(e) => Frame::Malformed(e),
    }
}

/// The start of a body or frame, for messages.
pub fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_events_parse() {
        let f = parse_frame(
            r#"{"id":7,"type":"match","data":{"match":{"match_id":"3.x","users":["a","b"],"created_at":1}}}"#,
        );
        assert_eq!(
            f,
            Frame::Event {
                id: 7,
                body: EventBody::Match { match_id: "3.x".into(), users: vec!["a".into(), "b".into()] }
            }
        );
        let f = parse_frame(r#"{"id":2,"type":"room_closed","data":{"room_id":"r","reason":"partner_skipped"}}"#);
        assert!(matches!(f, Frame::Event { id: 2, body: EventBody::RoomClosed { .. } }));
        let f = parse_frame(r#"{"id":0,"type":"hello","data":{"user":"a","node":"n","last_id":4}}"#);
        assert_eq!(f, Frame::Event { id: 0, body: EventBody::Hello { last_id: 4 } });
        assert!(matches!(parse_frame(r#"{"type":"pong","data":{}}"#), Frame::Reply { .. }));
        assert!(matches!(parse_frame("nope"), Frame::Malformed(_)));
        let f = parse_frame(r#"{"id":9,"type":"load.result","data":{"seq":12}}"#);
        assert_eq!(f, Frame::Event { id: 9, body: EventBody::App { kind: "load.result".into(), seq: Some(12) } });
        assert!(matches!(parse_frame(r#"{"id":1,"type":"match","data":{}}"#), Frame::Malformed(_)));
    }

    #[test]
    fn snippets_cut_on_char_boundaries() {
        let s = "é".repeat(300);
        assert!(snippet(&s).ends_with("..."));
        assert_eq!(snippet("short"), "short");
    }
}
