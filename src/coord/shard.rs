//! `PairShard`: one actor per shard, on its own arbiter (thread). It owns the `PairState` of every
//! pair whose slot maps to it and applies their commands one at a time, so there are no locks and
//! no check-then-set on the decision path (I1, I3). After deciding, it hands events to the users'
//! own shards, which number and deliver them.

use std::collections::HashMap;

use actix::{Actor, AsyncContext, Context, Handler};

use super::messages::{Swipe, Unmatch};
use super::pair_state::{Effect, PairState, UnmatchError};
use super::slot::PairKey;
use crate::config::Limits;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::{unix_ms, EventKind, MatchId, RoomId, SwipeResponse, SwipeStatus};
use crate::queue::room::RoomState;
use crate::session::{IndexChange, UserRouter};

/// The owner of a share of all pairs.
pub struct PairShard {
    /// Position among the node's shards, for logs.
    index: usize,
    pairs: HashMap<PairKey, PairState>,
    /// Match id -> pair, so `DELETE /v1/matches/{id}` finds its pair.
    match_pairs: HashMap<MatchId, PairKey>,
    /// Where the users' event streams and places live.
    pub(crate) users: UserRouter,
    limits: Limits,
    /// Rooms of this shard's pairs (see `queue::room`).
    pub(crate) rooms: HashMap<RoomId, RoomState>,
}

impl PairShard {
    pub fn new(index: usize, users: UserRouter, limits: Limits) -> Self {
        PairShard {
            index,
            pairs: HashMap::new(),
            match_pairs: HashMap::new(),
            users,
            limits,
            rooms: HashMap::new(),
        }
    }

    /// Carries out a decision's effect: index the match and tell both users.
    fn apply(&mut self, key: &PairKey, effect: Effect) {
        match effect {
            Effect::MatchCreated(m) => {
                METRICS.matches.inc();
                self.match_pairs.insert(m.match_id.clone(), key.clone());
                for user in &m.users {
                    self.users.publish(
                        user,
                        EventKind::Match { match_: m.clone() },
                        IndexChange::AddMatch(m.clone()),
                    );
                }
            }
            Effect::Unmatched { match_, by } => {
                METRICS.unmatches.inc();
                for user in &match_.users {
                    self.users.publish(
                        user,
                        EventKind::Unmatched {
                            match_id: match_.match_id.clone(),
                            by: by.clone(),
                        },
                        IndexChange::RemoveMatch(match_.match_id.clone()),
                    );
                }
            }
        }
    }
}

/// How often closed rooms are swept.
const ROOM_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Actor for PairShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(ROOM_SWEEP_INTERVAL, |act, _| act.sweep_rooms(unix_ms()));
    }
}

impl Handler<Swipe> for PairShard {
    type Result = Result<SwipeResponse, ApiError>;

    fn handle(&mut self, msg: Swipe, _: &mut Context<Self>) -> Self::Result {
        let key = PairKey::new(&msg.from, &msg.to).ok_or(ApiError::SelfSwipe)?;
        // `from` is one of the two users by construction of the key.
        let side = usize::from(key.low != msg.from);
        let slot = key.slot();
        let state = self.pairs.entry(key.clone()).or_default();
        let decision = state.swipe(
            &key,
            side,
            msg.direction,
            msg.swipe_id.as_ref(),
            unix_ms(),
            self.limits.swipe_ids_per_pair,
            || MatchId::new_in_slot(slot),
        );
        let outcome = match (decision.replayed, decision.reply.status) {
            (true, _) => "replayed",
            (false, SwipeStatus::Pending) => "pending",
            (false, SwipeStatus::Matched) => "matched",
            (false, SwipeStatus::Passed) => "passed",
        };
        METRICS.swipes.with_label_values(&[outcome]).inc();
        tracing::debug!(request_id = msg.request_id, shard = self.index, from = %msg.from, to = %msg.to, outcome, "swipe decided");
        for effect in decision.effects {
            self.apply(&key, effect);
        }
        Ok(decision.reply)
    }
}

impl Handler<Unmatch> for PairShard {
    type Result = Result<(), ApiError>;

    fn handle(&mut self, msg: Unmatch, _: &mut Context<Self>) -> Self::Result {
        let not_found = || ApiError::NotFound(format!("no match {}", msg.match_id));
        let key = self
            .match_pairs
            .get(&msg.match_id)
            .cloned()
            .ok_or_else(not_found)?;
        if key.side_of(&msg.by).is_none() {
            return Err(ApiError::Forbidden(
                "you are not a member of this match".into(),
            ));
        }
        let state = self.pairs.get_mut(&key).ok_or_else(not_found)?;
        match state.unmatch(&msg.match_id, &msg.by) {
            Ok(Some(effect)) => {
                tracing::debug!(request_id = msg.request_id, match_id = %msg.match_id, by = %msg.by, "unmatched");
                self.apply(&key, effect);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(UnmatchError::NotFound) => Err(not_found()),
        }
    }
}
