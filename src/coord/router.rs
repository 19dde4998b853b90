//! `ShardRouter`: the cloneable front door to the pair shards. Maps a pair (or a slot carried in a
//! match id) to the one actor that owns it.

use actix::Addr;

use super::shard::PairShard;
use super::slot::{pair_slot, shard_of};
use crate::protocol::UserId;

#[derive(Clone)]
pub struct ShardRouter {
    shards: std::sync::Arc<[Addr<PairShard>]>,
}

impl ShardRouter {
    pub fn new(shards: Vec<Addr<PairShard>>) -> Self {
        ShardRouter { shards: shards.into() }
    }

    /// The shard owning slot `slot`.
    pub fn for_slot(&self, slot: u16) -> &Addr<PairShard> {
        &self.shards[shard_of(slot, self.shards.len())]
    }

    /// The shard owning the pair {a, b}.
    pub fn for_pair(&self, a: &UserId, b: &UserId) -> &Addr<PairShard> {
        self.for_slot(pair_slot(a, b))
    }

    pub fn all(&self) -> &[Addr<PairShard>] {
        &self.shards
    }
}
