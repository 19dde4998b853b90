//! Request and response bodies of the HTTP actions, exactly as the contract spells them.
//! Unknown fields are refused so a typo is an error, not a silently ignored option.

use serde::{Deserialize, Serialize};

use super::ids::{MatchId, SwipeId, UserId};

/// Which way a swipe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Right,
    Left,
}

/// `POST /v1/swipes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwipeRequest {
    pub target: UserId,
    pub direction: Direction,
    #[serde(default)]
    pub swipe_id: Option<SwipeId>,
}

/// A mutual match, as sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub match_id: MatchId,
    /// Sorted, so both members see the same value.
    pub users: [UserId; 2],
    pub created_at: u64,
}

/// The state a swipe leaves its pair in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwipeStatus {
    Pending,
    Matched,
    Passed,
}

/// Answer to `POST /v1/swipes` (and the `ack` data of a WS `swipe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwipeResponse {
    pub status: SwipeStatus,
    #[serde(rename = "match")]
    pub match_: Option<Match>,
}

/// `GET /v1/matches`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatchesResponse {
    pub matches: Vec<Match>,
}

/// `DELETE /v1/matches/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnmatchResponse {
    pub status: String,
}

/// `POST /v1/dev/token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    pub user_id: UserId,
}

/// Answer to `POST /v1/dev/token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevTokenResponse {
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swipe_request_parses_and_refuses_unknown_fields() {
        let ok: SwipeRequest = serde_json::from_str(r#"{"target":"bob","direction":"right","swipe_id":"k1"}"#).unwrap();
        assert_eq!(ok.direction, Direction::Right);
        assert!(serde_json::from_str::<SwipeRequest>(r#"{"target":"bob","direction":"up"}"#).is_err());
        assert!(serde_json::from_str::<SwipeRequest>(r#"{"target":"bob","direction":"left","from":"eve"}"#).is_err());
    }

    #[test]
    fn swipe_response_uses_the_contract_field_name() {
        let r = SwipeResponse { status: SwipeStatus::Pending, match_: None };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"status":"pending","match":null}"#);
    }
}
