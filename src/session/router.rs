//! `UserRouter`: the cloneable front door to the user shards.

use actix::Addr;

use super::messages::{EffectRef, IndexChange, Publish};
use super::user_shard::UserShard;
use crate::coord::slot::{shard_of, user_slot};
use crate::protocol::{EventKind, UserId};

#[derive(Clone)]
pub struct UserRouter {
    shards: std::sync::Arc<[Addr<UserShard>]>,
}

impl UserRouter {
    pub fn new(shards: Vec<Addr<UserShard>>) -> Self {
        UserRouter { shards: shards.into() }
    }

    /// The shard owning `user`'s stream.
    pub fn for_user(&self, user: &UserId) -> &Addr<UserShard> {
        &self.shards[shard_of(user_slot(user), self.shards.len())]
    }

    /// Appends an event to `user`'s stream. The user shard's mailbox is not bounded: an event
    /// must never be dropped on the way to the log (I2); slow clients are bounded per connection.
    pub fn publish(&self, user: &UserId, kind: EventKind, change: IndexChange, effect: Option<EffectRef>) {
        self.for_user(user).do_send(Publish { user: user.clone(), kind, change, effect });
    }

    pub fn all(&self) -> &[Addr<UserShard>] {
        &self.shards
    }
}
