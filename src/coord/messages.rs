//! Messages a `PairShard` answers.

use actix::Message;

use crate::error::ApiError;
use crate::protocol::{Direction, MatchId, SwipeId, SwipeResponse, UserId};

/// A swipe by `from` on `to`. Answered with the pair's outcome once it is decided.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<SwipeResponse, ApiError>")]
pub struct Swipe {
    /// The acting user: always the token's subject, never taken from a body (I8).
    pub from: UserId,
    pub to: UserId,
    pub direction: Direction,
    /// Client idempotency key; a repeat is answered from memory and changes nothing (I3).
    pub swipe_id: Option<SwipeId>,
    /// Request id, carried into the shard's logs.
    pub request_id: u64,
}

/// `by` ends match `match_id`.
#[derive(Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<(), ApiError>")]
pub struct Unmatch {
    pub by: UserId,
    pub match_id: MatchId,
    pub request_id: u64,
}
