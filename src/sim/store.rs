//! The simulated Redis: the keys the pair and user owners write, with the semantics of the fenced
//! batch script (`persist/store.rs`): every fence key must hold the writer's token, guards are
//! checked against what is stored and within the batch before the first write, then the guards are
//! set and the commands run in order. A command that errors stops the script; what ran before it
//! stays written, as in Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::coord::slot::PairKey;
use crate::persist::records::PairRecord;
use crate::protocol::{Event, Match, MatchId, UserId};

/// Why the store refused a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A fence key held another token.
    Fenced,
    /// A guard already named another match (or the batch named two).
    Duplicate(PairKey),
    /// An event id not above the stream's last one (XADD's error).
    StreamOrder(UserId),
}

/// One pair batch, command by command as the pair shard sends it.
#[derive(Debug, Clone, Default)]
pub struct PairBatch {
    pub token: u64,
    pub slots: BTreeSet<u16>,
    pub guards: Vec<(PairKey, MatchId)>,
    pub records: Vec<(PairKey, PairRecord)>,
    /// Pairs whose active match ended (their guard is deleted after the writes).
    pub ended: Vec<PairKey>,
    pub loads: Vec<PairKey>,
}

/// One user batch: events appended to streams, match index changes.
#[derive(Debug, Clone, Default)]
pub struct UserBatch {
    pub token: u64,
    pub slots: BTreeSet<u16>,
    pub events: Vec<(UserId, Arc<Event>)>,
    pub index: Vec<(UserId, IndexWrite)>,
    pub loads: Vec<UserId>,
}

#[derive(Debug, Clone)]
pub enum IndexWrite {
    Add(Match),
    Remove(MatchId),
}

/// A user as read back: their stream and match index.
#[derive(Debug, Clone, Default)]
pub struct StoredUser {
    pub events: Vec<Arc<Event>>,
    pub matches: Vec<Match>,
}

#[derive(Debug, Default)]
pub struct Store {
    pub pairs: BTreeMap<PairKey, PairRecord>,
    pub guards: BTreeMap<PairKey, MatchId>,
    /// slot -> (token, epoch of the claim that wrote it).
    pub fences: BTreeMap<u16, (u64, u64)>,
    pub streams: BTreeMap<UserId, Vec<Arc<Event>>>,
    pub indexes: BTreeMap<UserId, BTreeMap<MatchId, Match>>,
    /// Every match a committed pair batch created (history, for the checks).
    pub created: BTreeSet<MatchId>,
    /// What the store saw that must never happen.
    pub violations: Vec<String>,
}

impl Store {
    fn fenced(&self, token: u64, slots: &BTreeSet<u16>) -> bool {
        slots.iter().any(|s| self.fences.get(s).map(|f| f.0) != Some(token))
    }

    /// Claims `slots` for `token` under view `epoch`, unless a newer view claimed a slot first.
    pub fn claim(&mut self, token: u64, epoch: u64, slots: impl IntoIterator<Item = u16>) {
        for slot in slots {
            let fence = self.fences.entry(slot).or_insert((0, 0));
            if fence.1 <= epoch {
                *fence = (token, epoch);
            }
        }
    }

    pub fn apply_pairs(&mut self, b: &PairBatch) -> Result<Vec<Option<PairRecord>>, Refusal> {
        if self.fenced(b.token, &b.slots) {
            return Err(Refusal::Fenced);
        }
        let mut claimed: BTreeMap<&PairKey, &MatchId> = BTreeMap::new();
        for (key, id) in &b.guards {
            let current = claimed.get(key).copied().or_else(|| self.guards.get(key));
            if current.is_some_and(|c| c != id) {
                return Err(Refusal::Duplicate(key.clone()));
            }
            claimed.insert(key, id);
        }
        for (key, id) in &b.guards {
            self.guards.insert(key.clone(), id.clone());
            self.created.insert(id.clone());
        }
        for (key, record) in &b.records {
            // I1 at the store: a record may name a new active match only once the old one ended.
            let before = self.pairs.get(key).and_then(|r| r.state.active_match()).map(|m| m.match_id.clone());
            let after = record.state.active_match().map(|m| m.match_id.clone());
            if let (Some(old), Some(new)) = (&before, &after) {
                if old != new {
                    self.violations.push(format!("I1: pair {key:?}'s stored match {old} was replaced by {new}"));
                }
            }
            self.pairs.insert(key.clone(), record.clone());
        }
        for key in &b.ended {
            self.guards.remove(key);
        }
        Ok(b.loads.iter().map(|k| self.pairs.get(k).cloned()).collect())
    }

    pub fn apply_users(&mut self, b: &UserBatch) -> Result<Vec<StoredUser>, Refusal> {
        if self.fenced(b.token, &b.slots) {
            return Err(Refusal::Fenced);
        }
        for (user, event) in &b.events {
            let stream = self.streams.entry(user.clone()).or_default();
            if stream.last().is_some_and(|last| last.id >= event.id) {
                return Err(Refusal::StreamOrder(user.clone()));
            }
            stream.push(event.clone());
        }
        for (user, write) in &b.index {
            let index = self.indexes.entry(user.clone()).or_default();
            match write {
                IndexWrite::Add(m) => drop(index.insert(m.match_id.clone(), m.clone())),
                IndexWrite::Remove(id) => drop(index.remove(id)),
            }
        }
        Ok(b.loads
            .iter()
            .map(|u| StoredUser {
                events: self.streams.get(u).cloned().unwrap_or_default(),
                matches: self.indexes.get(u).map(|i| i.values().cloned().collect()).unwrap_or_default(),
            })
            .collect())
    }
}
