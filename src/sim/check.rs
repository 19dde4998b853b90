//! The simulation's history and its invariant checks, over everything clients were told and
//! everything the store holds at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::node::{Action, Answer, Node};
use super::store::Store;
use crate::coord::slot::PairKey;
use crate::protocol::{Event, MatchId, SwipeId, SwipeStatus, UserId};

/// What one user's client saw on its stream.
#[derive(Debug, Default)]
struct Stream {
    /// Node serving the stream now, if connected.
    at: Option<usize>,
    last_id: u64,
    /// (id, effect) of every event received, in order.
    seen: Vec<(u64, Option<Arc<str>>)>,
    effects: BTreeSet<Arc<str>>,
    /// A resume reported a gap (the log no longer reaches back): ids may jump once.
    gap: bool,
}

#[derive(Debug, Default)]
pub struct History {
    /// First answer per (user, swipe id) (I3).
    swipes: BTreeMap<(UserId, SwipeId), Answer>,
    /// Matches clients were told of, and their pairs.
    matches: BTreeMap<MatchId, PairKey>,
    /// The active match each pair's clients last heard of (drives unmatches).
    active: BTreeMap<PairKey, MatchId>,
    streams: BTreeMap<usize, Stream>,
    pub violations: Vec<String>,
}

impl History {
    fn violation(&mut self, v: String) {
        if self.violations.len() < 50 {
            self.violations.push(v);
        }
    }

    pub fn active_seen(&self, key: &PairKey) -> Option<MatchId> {
        self.active.get(key).cloned()
    }

    pub fn pair_of(&self, id: &MatchId) -> Option<PairKey> {
        self.matches.get(id).cloned()
    }

    /// A client got an answer: it must be the same for a repeated swipe id (I3) and a match it
    /// names must be stored (I7).
    pub fn answered(&mut self, now: u64, user: &UserId, action: &Action, answer: &Answer, store: &Store) {
        match (action, answer) {
            (Action::Swipe { to, swipe_id, .. }, Answer::Swiped(reply)) => {
                let first = self.swipes.entry((user.clone(), swipe_id.clone())).or_insert_with(|| answer.clone());
                if first != answer {
                    let v = format!("I3 at {now} ms: {user} swipe {swipe_id:?} answered {first:?}, then {answer:?}");
                    self.violation(v);
                }
                if reply.status == SwipeStatus::Matched {
                    if let Some(m) = &reply.match_ {
                        if !store.created.contains(&m.match_id) {
                            let v =
                                format!("I7 at {now} ms: {user} was answered match {} that is not stored", m.match_id);
                            self.violation(v);
                        }
                        if let Some(key) = PairKey::new(user, to) {
                            self.matches.insert(m.match_id.clone(), key.clone());
                            self.active.insert(key, m.match_id.clone());
                        }
                    }
                }
            }
            (Action::Unmatch { match_id }, Answer::Unmatched { .. }) => {
                if let Some(key) = self.matches.get(match_id).cloned() {
                    if self.active.get(&key) == Some(match_id) {
                        self.active.remove(&key);
                    }
                }
            }
            _ => {}
        }
    }

    pub fn stream_at(&self, user: usize) -> Option<usize> {
        self.streams.get(&user).and_then(|s| s.at)
    }

    pub fn last_seen(&self, user: usize) -> u64 {
        self.streams.get(&user).map_or(0, |s| s.last_id)
    }

    pub fn disconnected(&mut self, user: usize) {
        if let Some(s) = self.streams.get_mut(&user) {
            s.at = None;
        }
    }

    /// A stream (re)connected at `node` from `since` and was replayed `events`.
    pub fn connected(&mut self, user: usize, node: usize, since: u64, events: &[Arc<Event>], gap: bool) {
        let s = self.streams.entry(user).or_default();
        s.at = Some(node);
        let last = s.last_id;
        if since != last {
            self.violation(format!("I2: user {user} resumed from {since}, its last id is {last}"));
        }
        if gap {
            self.streams.entry(user).or_default().gap = true;
        }
        for e in events {
            self.delivered(user, e);
        }
    }

    /// An event reached `user`'s stream: the next id, never an effect twice (I2).
    pub fn delivered(&mut self, user: usize, event: &Arc<Event>) {
        let s = self.streams.entry(user).or_default();
        let expected = s.last_id + 1;
        let gap = std::mem::take(&mut s.gap);
        let repeated = event.effect.as_ref().is_some_and(|fx| !s.effects.insert(fx.clone()));
        s.last_id = s.last_id.max(event.id);
        s.seen.push((event.id, event.effect.clone()));
        if event.id != expected && !gap {
            self.violation(format!("I2: user {user} got event {} after {}", event.id, expected - 1));
        }
        if repeated {
            self.violation(format!("I2: user {user} got effect {:?} twice", event.effect));
        }
    }

    /// After the run settled without faults.
    pub fn check_final(&mut self, store: &Store, users: &[UserId], nodes: &[Node]) -> Vec<String> {
        let mut v = std::mem::take(&mut self.violations);
        v.extend(store.violations.iter().take(20).cloned());
        for (key, record) in &store.pairs {
            if !record.outbox.is_empty() {
                v.push(format!("I2: pair {key:?} still owes {} events after settling", record.outbox.len()));
            }
            if let Some(m) = record.state.active_match() {
                for user in [&key.low, &key.high] {
                    if !store.indexes.get(user).is_some_and(|i| i.contains_key(&m.match_id)) {
                        v.push(format!("I2: {user} does not list active match {}", m.match_id));
                    }
                }
            }
        }
        if nodes.iter().any(Node::owes_anything) {
            v.push("I2: a node still owes events after settling".into());
        }
        for (idx, user) in users.iter().enumerate() {
            let stream = store.streams.get(user).map(Vec::as_slice).unwrap_or_default();
            // I1 over the user's whole log: never a match the store did not create, and at most one
            // not ended per partner. (Events of different decisions may arrive in either order: an
            // unmatch re-published after a loss can follow the pair's next match.)
            let mut told: BTreeMap<UserId, BTreeSet<MatchId>> = BTreeMap::new();
            let mut ended: BTreeSet<MatchId> = BTreeSet::new();
            let mut effects = BTreeSet::new();
            for e in stream {
                if let Some(fx) = &e.effect {
                    if !effects.insert(fx.clone()) {
                        v.push(format!("I2: {user}'s log holds effect {fx} twice"));
                    }
                }
                let parsed: serde_json::Value = serde_json::from_slice(&e.json).unwrap_or_default();
                let data = &parsed["data"];
                match parsed["type"].as_str() {
                    Some("match") => {
                        let m = &data["match"];
                        let id = m["match_id"].as_str().and_then(|s| MatchId::parse(s).ok());
                        let partner = m["users"]
                            .as_array()
                            .and_then(|u| u.iter().filter_map(|x| x.as_str()).find(|x| *x != user.as_str()))
                            .and_then(|s| UserId::parse(s).ok());
                        let (Some(id), Some(partner)) = (id, partner) else { continue };
                        if !store.created.contains(&id) {
                            v.push(format!("I1/I7: {user} was told of match {id}, which was never stored"));
                        }
                        told.entry(partner).or_default().insert(id);
                    }
                    Some("unmatched") => {
                        if let Some(id) = data["match_id"].as_str().and_then(|s| MatchId::parse(s).ok()) {
                            ended.insert(id);
                        }
                    }
                    _ => {}
                }
            }
            let mut active = BTreeSet::new();
            for (partner, ids) in told {
                let open: Vec<MatchId> = ids.into_iter().filter(|id| !ended.contains(id)).collect();
                if open.len() > 1 {
                    v.push(format!("I1: {user}'s log leaves {} matches with {partner} active: {open:?}", open.len()));
                }
                active.extend(open);
            }
            let listed: BTreeSet<MatchId> =
                store.indexes.get(user).map(|i| i.keys().cloned().collect()).unwrap_or_default();
            if listed != active {
                v.push(format!("I1: {user} lists {listed:?}, their log leaves {active:?} active"));
            }
            // I2: the stream got exactly the log, in order, once.
            let seen = self.streams.get(&idx).map(|s| s.seen.as_slice()).unwrap_or_default();
            let logged: Vec<(u64, Option<Arc<str>>)> = stream.iter().map(|e| (e.id, e.effect.clone())).collect();
            if seen != logged.as_slice() {
                v.push(format!(
                    "I2: {user}'s stream got {} events, the log has {} (first difference at {:?})",
                    seen.len(),
                    logged.len(),
                    seen.iter().zip(&logged).position(|(a, b)| a != b)
                ));
            }
        }
        v
    }
}
