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

/// How long a pool keeps sending a decided room to its pair's owner (see `create_room_surely`):
/// longer than a hand-over or a restart takes.
pub const CREATE_ROOM_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

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

    /// Hands a room the pool has decided (its members are out of the stored line) to the pair's
    /// owner until it is stored there: a refusal for now (503: the owner is moving, its store
    /// failed) is sent again, to whoever owns the pair then, for up to `CREATE_ROOM_PATIENCE`; the
    /// pair makes it once however often it arrives. Giving up earlier would leave both members in
    /// a room nobody holds.
    pub fn create_room_surely(&self, msg: CreateRoom) -> LocalBoxFuture<'static, Result<(), ApiError>> {
        let router = self.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + CREATE_ROOM_PATIENCE;
            let mut pause = std::time::Duration::from_millis(20);
            loop {
                match router.create_room(msg.clone()).await {
                    Err(ApiError::Unavailable(why)) if tokio::time::Instant::now() + pause < deadline => {
                        tracing::debug!(room_id = %msg.room.room_id, why = %why, "room not stored yet; sending it again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(std::time::Duration::from_secs(1));
                    }
                    other => return other,
                }
            }
        })
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
