//! Wire types of spin queues and rooms.

use serde::{Deserialize, Serialize};

use super::ids::{PoolName, RoomId, UserId};

/// Longest region name accepted.
pub const MAX_REGION_LEN: usize = 32;
/// Most tags a join may carry, and the longest tag.
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 32;

/// The pool that always exists.
pub const DEFAULT_POOL: &str = "default";

fn default_pool() -> PoolName {
    // "default" is a valid pool name by construction.
    PoolName::parse(DEFAULT_POOL).unwrap_or_else(|_| unreachable!("\"default\" is a valid pool name"))
}

/// `POST /v1/queue` (and the WS `join_queue` action).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    #[serde(default = "default_pool")]
    pub pool: PoolName,
    #[serde(default)]
    pub rating: Option<i32>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl Default for JoinRequest {
    fn default() -> Self {
        JoinRequest { pool: default_pool(), rating: None, region: None, tags: None }
    }
}

impl JoinRequest {
    /// Checks the free-text fields' sizes; returns a sentence for the client.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.region {
            if r.is_empty() || r.len() > MAX_REGION_LEN {
                return Err(format!("region must be 1..{MAX_REGION_LEN} characters"));
            }
        }
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                return Err(format!("at most {MAX_TAGS} tags"));
            }
            if tags.iter().any(|t| t.is_empty() || t.len() > MAX_TAG_LEN) {
                return Err(format!("each tag must be 1..{MAX_TAG_LEN} characters"));
            }
        }
        Ok(())
    }
}

/// A room two users were paired into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub room_id: RoomId,
    pub pool: PoolName,
    /// Sorted.
    pub users: [UserId; 2],
    pub created_at: u64,
    pub payload: serde_json::Value,
}

/// Answer to a join: queued (202) or paired at once (200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JoinResponse {
    Queued { pool: PoolName, position: u64, estimated_wait_ms: u64 },
    Matched { room: Room },
}

/// `DELETE /v1/queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LeaveResponse {
    /// Removed from the pool's queue.
    Left { pool: PoolName },
    /// Was not queued (idempotent repeat).
    NotQueued,
    /// Already paired: the user is in this room (skip it to leave).
    InRoom { room_id: RoomId },
}

/// `GET /v1/queue/{pool}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub pool: PoolName,
    pub waiting: u64,
    pub estimated_wait_ms: u64,
}

/// `POST /v1/rooms/{room_id}/skip`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipRequest {
    #[serde(default)]
    pub requeue: Option<bool>,
}

/// Answer to a skip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkipResponse {
    pub status: String,
    pub requeued: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_defaults_to_the_default_pool() {
        let j: JoinRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(j.pool.as_str(), "default");
        assert!(serde_json::from_str::<JoinRequest>(r#"{"pool":"a b"}"#).is_err());
        let j: JoinRequest = serde_json::from_str(r#"{"tags":[""]}"#).unwrap();
        assert!(j.validate().is_err());
    }

    #[test]
    fn join_responses_carry_their_status() {
        let q = JoinResponse::Queued { pool: PoolName::parse("p").unwrap(), position: 3, estimated_wait_ms: 10 };
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"status":"queued","pool":"p","position":3,"estimated_wait_ms":10}"#
        );
    }
}
