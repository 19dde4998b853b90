//! Frames a WebSocket client sends, and the server's replies to them (`ack`, `error`, `pong`).
//! Replies carry the client's `ref` and are not part of the user's event log, so they have no `id`.

use serde::{Deserialize, Serialize};

use super::http::SwipeRequest;
use super::ids::{MatchId, RoomId};
use super::queue::JoinRequest;

/// A client's frame: `{"type": ..., "ref": ..., ...action fields}`.
#[derive(Debug, Deserialize)]
pub struct ClientFrame {
    /// Echoed in the `ack` or `error` so the client can pair replies with requests.
    #[serde(rename = "ref", default)]
    pub ref_: Option<serde_json::Value>,
    #[serde(flatten)]
    pub action: ClientAction,
}

/// What the client asks for. Field rules are those of the matching HTTP body.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientAction {
    Ping,
    Swipe(SwipeRequest),
    Unmatch {
        match_id: MatchId,
    },
    JoinQueue(JoinRequest),
    LeaveQueue,
    Skip {
        room_id: RoomId,
        #[serde(default)]
        requeue: Option<bool>,
    },
}

/// `{"type":"ack","ref":...,"data":<the HTTP body>}`.
#[derive(Debug, Serialize)]
pub struct Ack<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub type_: &'static str,
    #[serde(rename = "ref")]
    pub ref_: &'a Option<serde_json::Value>,
    pub data: T,
}

/// `{"type":"error","data":{"code","message","ref"?}}`.
#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    pub type_: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_: Option<&'a serde_json::Value>,
    pub data: ErrorData<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorData<'a> {
    pub code: &'a str,
    pub message: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_: Option<&'a serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert!(matches!(f.action, ClientAction::Ping));
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"swipe","ref":7,"target":"bob","direction":"left"}"#).unwrap();
        assert_eq!(f.ref_, Some(serde_json::json!(7)));
        assert!(matches!(f.action, ClientAction::Swipe(_)));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"fly"}"#).is_err());
    }
}
