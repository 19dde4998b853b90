//! Pair coordination: every unordered pair of users hashes to a slot, every slot to one `PairShard`
//! actor, and that actor alone decides everything about the pair (likes, match, unmatch).

pub mod messages;
pub mod outbox;
pub mod pair_state;
pub mod repair;
pub mod router;
pub mod shard;
pub mod slot;

pub use router::ShardRouter;
