//! `ShardRouter`: the cloneable front door to the pair shards. Maps a pair (or a slot carried in a
//! match id) to the one actor that owns it: a local shard, or (cluster mode) the owning node.

use actix::Addr;
use futures_util::future::LocalBoxFuture;

use super::shard::{EffectsPersisted, PairShard};
use super::slot::{pair_slot, shard_of};
use crate::cluster::forward::{dispatch, flatten, notify, Call, Forwarder};
use crate::error::ApiError;
use crate::protocol::UserId;
use crate::queue::messages::{CreateRoom, MemberGone};

#[derive(Clone)]
pub struct ShardRouter {
    shards: std::sync::Arc<[Addr<PairShard>]>,
    cluster: Option<Forwarder>,
}

impl ShardRouter {
    pub fn new(shards: Vec<Addr<PairShard>>, cluster: Option<Forwarder>) -> Self {
        ShardRouter { shards: shards.into(), cluster }
    }

    /// This node's shard for slot `slot` (whether or not this node owns the slot).
    pub fn for_slot(&self, slot: u16) -> &Addr<PairShard> {
        &self.shards[shard_of(slot, self.shards.len())]
    }

    /// This node's shard for the pair {a, b}.
    pub fn for_pair(&self, a: &UserId, b: &UserId) -> &Addr<PairShard> {
        self.for_slot(pair_slot(a, b))
    }

    pub fn all(&self) -> &[Addr<PairShard>] {
        &self.shards
    }

    pub fn forwarder(&self) -> Option<&Forwarder> {
        self.cluster.as_ref()
    }

    /// Hands a new room to its pair's owner; resolves once it is stored there.
    pub fn create_room(&self, msg: CreateRoom) -> LocalBoxFuture<'static, Result<(), ApiError>> {
        let slot = pair_slot(&msg.room.users[0], &msg.room.users[1]);
        let addr = self.for_slot(slot).clone();
        dispatch(self.cluster.as_ref(), slot, msg, |m| async move { flatten(addr.send(m).await) }, Call::CreateRoom)
    }

    /// Tells a pair's owner its effects are in their users' logs (it re-publishes if this is lost).
    pub fn effects_persisted(&self, msg: EffectsPersisted) {
        let slot = msg.pair.slot();
        notify(self.cluster.as_ref(), slot, msg, |m| self.for_slot(slot).do_send(m), Call::EffectsPersisted);
    }

    /// Tells a room's owner that a member stayed away past the grace period.
    pub fn member_gone(&self, slot: u16, msg: MemberGone) {
        notify(self.cluster.as_ref(), slot, msg, |m| self.for_slot(slot).do_send(m), Call::MemberGone);
    }
}
