//! `UserRouter`: the cloneable front door to the user shards: a local shard, or (cluster mode)
//! the node that owns the user's slot.

use actix::Addr;

use super::messages::{EffectRef, IndexChange, Publish};
use super::user_shard::UserShard;
use crate::cluster::forward::{notify, Call, Forwarder};
use crate::coord::slot::{shard_of, user_slot};
use crate::protocol::{EventKind, UserId};
use crate::queue::placement::{ArmPresence, RestorePlace};

#[derive(Clone)]
pub struct UserRouter {
    shards: std::sync::Arc<[Addr<UserShard>]>,
    cluster: Option<Forwarder>,
}

impl UserRouter {
    pub fn new(shards: Vec<Addr<UserShard>>, cluster: Option<Forwarder>) -> Self {
        UserRouter { shards: shards.into(), cluster }
    }

    /// This node's shard for `user`'s slot (whether or not this node owns it).
    pub fn for_user(&self, user: &UserId) -> &Addr<UserShard> {
        &self.shards[shard_of(user_slot(user), self.shards.len())]
    }

    /// Appends an event to `user`'s stream. The user shard's mailbox is not bounded: an event
    /// must never be dropped on the way to the log (I2); slow clients are bounded per connection.
    /// Across nodes, an effect lost on the way is re-published by its pair's outbox.
    pub fn publish(&self, user: &UserId, kind: EventKind, change: IndexChange, effect: Option<EffectRef>) {
        let msg = Publish { user: user.clone(), kind, change, effect };
        notify(self.cluster.as_ref(), user_slot(user), msg, |m| self.for_user(user).do_send(m), Call::Publish);
    }

    /// Tells `user`'s owner that a reloaded pool holds their place.
    pub fn restore_place(&self, msg: RestorePlace) {
        let user = msg.user.clone();
        notify(self.cluster.as_ref(), user_slot(&user), msg, |m| self.for_user(&user).do_send(m), Call::RestorePlace);
    }

    /// Tells `user`'s owner that a room of theirs was kept open by a new owner of its pair.
    pub fn arm_presence(&self, msg: ArmPresence) {
        let user = msg.user.clone();
        notify(self.cluster.as_ref(), user_slot(&user), msg, |m| self.for_user(&user).do_send(m), Call::ArmPresence);
    }

    pub fn all(&self) -> &[Addr<UserShard>] {
        &self.shards
    }

    pub fn forwarder(&self) -> Option<&Forwarder> {
        self.cluster.as_ref()
    }
}
