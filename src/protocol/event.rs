//! Events on a user's stream. An event is serialized once, when it gets its id, and the same bytes go
//! to every connection of the user (and to the resume log), so fan-out costs no JSON work. Besides
//! the built-in kinds (`EventKind`), a stream carries the events the app's backend publishes
//! (`POST /v1/server/publish`), whose `type` it chose (see `protocol::server::EventType`).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use super::http::Match;
use super::ids::{MatchId, PoolName, RoomId, UserId};
use super::queue::Room;

/// What happened, with its data. The variant name is the contract's `type`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventKind {
    Match {
        #[serde(rename = "match")]
        match_: Match,
    },
    Unmatched {
        match_id: MatchId,
        by: UserId,
        /// Only when the server ended it rather than a member: `server_repair` (an audit found
        /// the user's match list naming a match that was no longer active).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    RoomAssigned {
        room: Room,
    },
    RoomClosed {
        room_id: RoomId,
        reason: String,
    },
    QueueUpdate {
        pool: PoolName,
        position: u64,
        estimated_wait_ms: u64,
    },
}

impl EventKind {
    /// The `'static` form of a stored event's `type`.
    pub fn known_type(name: &str) -> Option<&'static str> {
        ["match", "unmatched", "room_assigned", "room_closed", "queue_update"].into_iter().find(|t| *t == name)
    }

    /// The contract's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Match { .. } => "match",
            EventKind::Unmatched { .. } => "unmatched",
            EventKind::RoomAssigned { .. } => "room_assigned",
            EventKind::RoomClosed { .. } => "room_closed",
            EventKind::QueueUpdate { .. } => "queue_update",
        }
    }
}

/// One logged event of one user, already encoded.
#[derive(Debug, Clone)]
pub struct Event {
    /// Per-user, strictly increasing.
    pub id: u64,
    /// The contract's `type`: borrowed for the built-in kinds, owned for the app's own types.
    pub type_name: Cow<'static, str>,
    /// `{"id":..,"type":..,"data":..}`, the exact text sent on WebSocket and as SSE `data:`.
    pub json: Bytes,
    /// When the event was created (for the delivery-latency histogram).
    pub created: tokio::time::Instant,
    /// The pair decision it reports, if any (for de-duplicating a re-published event).
    pub effect: Option<std::sync::Arc<str>>,
}

/// Data of the `hello` a connection gets first.
#[derive(Debug, Serialize)]
pub struct Hello<'a> {
    pub user: &'a UserId,
    /// The node serving this connection.
    pub node: &'a str,
    /// The user's newest event id when the connection opened.
    pub last_id: u64,
    /// The `since` / `Last-Event-ID` the client asked to resume after, if any.
    pub resumed_from: Option<u64>,
    /// True when some events after `resumed_from` can no longer be replayed (refetch state).
    pub gap: bool,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: u64,
    #[serde(flatten)]
    kind: &'a EventKind,
}

impl Event {
    pub fn encode(id: u64, kind: &EventKind) -> Event {
        // Serializing plain data into a Vec cannot fail; fall back to an empty object rather than panic.
        let json = serde_json::to_vec(&Envelope { id, kind }).unwrap_or_else(|_| b"{}".to_vec());
        Event {
            id,
            type_name: Cow::Borrowed(kind.type_name()),
            json: Bytes::from(json),
            created: tokio::time::Instant::now(),
            effect: None,
        }
    }

    /// A connection's `hello`: not part of the user's log; its id is the connection's resume point,
    /// so it is lower than every event that follows it on that connection.
    pub fn hello(id: u64, hello: &Hello<'_>) -> Event {
        #[derive(Serialize)]
        struct Frame<'a> {
            id: u64,
            #[serde(rename = "type")]
            type_: &'static str,
            data: &'a Hello<'a>,
        }
        let json = serde_json::to_vec(&Frame { id, type_: "hello", data: hello }).unwrap_or_else(|_| b"{}".to_vec());
        Event {
            id,
            type_name: Cow::Borrowed("hello"),
            json: Bytes::from(json),
            created: tokio::time::Instant::now(),
            effect: None,
        }
    }

    /// An event the app's backend published: `type_name` is a validated `EventType` (no character
    /// that needs escaping) and `data` the compact text of a JSON object (no line break, so the
    /// SSE encoding stays one `data:` line).
    pub fn app(id: u64, type_name: &str, data: &str, effect: Option<std::sync::Arc<str>>) -> Event {
        let mut json = Vec::with_capacity(data.len() + type_name.len() + 40);
        json.extend_from_slice(b"{\"id\":");
        json.extend_from_slice(id.to_string().as_bytes());
        json.extend_from_slice(b",\"type\":\"");
        json.extend_from_slice(type_name.as_bytes());
        json.extend_from_slice(b"\",\"data\":");
        json.extend_from_slice(data.as_bytes());
        json.push(b'}');
        Event {
            id,
            type_name: Cow::Owned(type_name.to_string()),
            json: Bytes::from(json),
            created: tokio::time::Instant::now(),
            effect,
        }
    }

    /// An event read back from storage or relayed from another node.
    pub fn stored(id: u64, type_name: Cow<'static, str>, json: Bytes, effect: Option<std::sync::Arc<str>>) -> Event {
        Event { id, type_name, json, created: tokio::time::Instant::now(), effect }
    }

    /// The `type` of a stored or relayed event: a built-in kind (`hello` included), or one the
    /// app's backend may publish. Anything else is not an event of this server.
    pub fn parse_type(name: &str) -> Option<Cow<'static, str>> {
        if name == "hello" {
            return Some(Cow::Borrowed("hello"));
        }
        match EventKind::known_type(name) {
            Some(t) => Some(Cow::Borrowed(t)),
            None => super::server::EventType::parse(name).ok().map(|t| Cow::Owned(t.as_str().to_string())),
        }
    }

    /// The SSE encoding: `id:`, `event:` and the whole JSON as `data:`.
    pub fn to_sse(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.json.len() + 48);
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(self.id.to_string().as_bytes());
        out.extend_from_slice(b"\nevent: ");
        out.extend_from_slice(self.type_name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&self.json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_encode_as_the_contract_says() {
        let kind = EventKind::Unmatched {
            match_id: MatchId::parse("3.ab").unwrap(),
            by: UserId::parse("alice").unwrap(),
            reason: None,
        };
        let e = Event::encode(7, &kind);
        assert_eq!(
            std::str::from_utf8(&e.json).unwrap(),
            r#"{"id":7,"type":"unmatched","data":{"match_id":"3.ab","by":"alice"}}"#
        );
        let sse = e.to_sse();
        assert!(std::str::from_utf8(&sse).unwrap().starts_with("id: 7\nevent: unmatched\ndata: {"));
    }

    #[test]
    fn app_events_encode_like_built_in_ones() {
        let e = Event::app(3, "match_result", r#"{"score":0.9,"ids":["a"]}"#, None);
        assert_eq!(
            std::str::from_utf8(&e.json).unwrap(),
            r#"{"id":3,"type":"match_result","data":{"score":0.9,"ids":["a"]}}"#
        );
        assert_eq!(e.type_name, "match_result");
        assert_eq!(
            std::str::from_utf8(&e.to_sse()).unwrap(),
            "id: 3\nevent: match_result\ndata: {\"id\":3,\"type\":\"match_result\",\"data\":{\"score\":0.9,\"ids\":[\"a\"]}}\n\n"
        );
    }

    #[test]
    fn stored_types_are_built_in_or_publishable() {
        assert_eq!(Event::parse_type("hello").as_deref(), Some("hello"));
        assert_eq!(Event::parse_type("room_closed").as_deref(), Some("room_closed"));
        assert_eq!(Event::parse_type("match_result").as_deref(), Some("match_result"));
        assert_eq!(Event::parse_type("Bad Type"), None);
        assert_eq!(Event::parse_type(""), None);
    }
}
