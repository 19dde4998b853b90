//! Events on a user's stream. An event is serialized once, when it gets its id, and the same bytes go
//! to every connection of the user (and to the resume log), so fan-out costs no JSON work.

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
    pub type_name: &'static str,
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
            type_name: kind.type_name(),
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
        Event { id, type_name: "hello", json: Bytes::from(json), created: tokio::time::Instant::now(), effect: None }
    }

    /// An event read back from storage.
    pub fn stored(id: u64, type_name: &'static str, json: Bytes, effect: Option<std::sync::Arc<str>>) -> Event {
        Event { id, type_name, json, created: tokio::time::Instant::now(), effect }
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
        let kind =
            EventKind::Unmatched { match_id: MatchId::parse("3.ab").unwrap(), by: UserId::parse("alice").unwrap() };
        let e = Event::encode(7, &kind);
        assert_eq!(
            std::str::from_utf8(&e.json).unwrap(),
            r#"{"id":7,"type":"unmatched","data":{"match_id":"3.ab","by":"alice"}}"#
        );
        let sse = e.to_sse();
        assert!(std::str::from_utf8(&sse).unwrap().starts_with("id: 7\nevent: unmatched\ndata: {"));
    }
}
