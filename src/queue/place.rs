//! Where a user is (I4), and the order of their calls to pools. Pure: the user shard holds one
//! `PoolCalls` per user and asks it before it sends or applies anything about a line.
//!
//! Calls to a pool are not ordered for free: calls to another node may overtake each other, and
//! when the user moves to another owner (a restart, a rolling deploy), calls the old owner sent
//! may still be on their way when the new owner sends its own. A late enqueue would put a user who
//! has left back in line behind their back. So every call carries a `PlaceSeq`: the generation of
//! the user's load (an `INCR` in the user's load, so a new owner's calls always rank above the old
//! owner's) and a counter within it. The pool keeps the last call of each user (`LineOrder`, with a
//! stored tombstone for a while after the user leaves its line) and turns away older ones.
//! Within one owner, a leave also waits for every unanswered enqueue, so its answer is the truth
//! (`left`, not a `not_queued` the late enqueue would make false).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::protocol::{JoinRequest, RoomId, UserId};

/// A user's place.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    Idle,
    /// Waiting in `ticket.pool` (or being handed to a room by it).
    Queued {
        ticket: JoinRequest,
    },
    /// In a room; `ticket` is kept to requeue the user when the room closes.
    InRoom {
        room_id: RoomId,
        ticket: JoinRequest,
    },
}

impl Place {
    /// What is stored for the place: the ticket while queued (a room is in the log).
    pub fn stored_ticket(&self) -> Option<&JoinRequest> {
        match self {
            Place::Queued { ticket } => Some(ticket),
            Place::Idle | Place::InRoom { .. } => None,
        }
    }
}

/// Where a call to a pool stands among the user's calls: the user's load generation, then a
/// counter within it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlaceSeq {
    pub generation: u64,
    pub n: u64,
}

/// The user's calls to pools that are still in flight, and the leaves (`A`) held behind them.
#[derive(Debug)]
pub struct PoolCalls<A> {
    enqueues: u32,
    held: Vec<A>,
    last: PlaceSeq,
    /// The user's place has been stored since places were stored at all (see `RestorePlace`).
    pub recorded: bool,
}

impl<A> Default for PoolCalls<A> {
    fn default() -> Self {
        Self { enqueues: 0, held: Vec::new(), last: PlaceSeq::default(), recorded: false }
    }
}

impl<A> PoolCalls<A> {
    /// The user was loaded under `generation` (higher than any before): calls count on from it.
    pub fn loaded(&mut self, generation: u64) {
        if generation > self.last.generation {
            self.last = PlaceSeq { generation, n: 0 };
        }
    }

    /// The place of the next call.
    pub fn next_seq(&mut self) -> PlaceSeq {
        self.last.n += 1;
        self.last
    }

    /// Whether `seq` is the user's latest call: only its answer may change the place (an answer to
    /// an earlier leave that arrives after the user joined again is moot).
    pub fn is_latest(&self, seq: PlaceSeq) -> bool {
        #[cfg(feature = "mutants")]
        if crate::mutants::active(crate::mutants::EARLIER_LEAVE_ANSWER_APPLIED) {
            return true;
        }
        seq == self.last
    }

    /// An enqueue is sent.
    pub fn enqueue_sent(&mut self) {
        self.enqueues += 1;
    }

    /// An enqueue was answered (or failed). Returns the leaves to run now that none is unanswered.
    pub fn enqueue_answered(&mut self) -> Vec<A> {
        self.enqueues = self.enqueues.saturating_sub(1);
        if self.enqueues == 0 {
            std::mem::take(&mut self.held)
        } else {
            Vec::new()
        }
    }

    /// A leave (or any dequeue): returned to run now, or held until every enqueue is answered.
    pub fn leave(&mut self, leave: A) -> Option<A> {
        if self.enqueues == 0 {
            Some(leave)
        } else {
            self.held.push(leave);
            None
        }
    }

    /// An enqueue is unanswered: a leave now would be held.
    pub fn awaits_enqueue(&self) -> bool {
        self.enqueues > 0
    }

    /// Nothing in flight and nothing held (the entry may be evicted).
    pub fn is_quiet(&self) -> bool {
        self.enqueues == 0 && self.held.is_empty()
    }
}

/// How long a pool remembers the last call of a user who left its line: far longer than any
/// call takes to arrive, however it travels.
pub const GONE_KEEP_MS: u64 = 120_000;

/// The user's last call a pool heard, and since when they are out of its line (if they are).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastCall {
    pub seq: PlaceSeq,
    pub gone_at_ms: Option<u64>,
}

/// A pool's memory of each user's last call, so an older call that arrives late changes nothing.
#[derive(Debug, Default)]
pub struct LineOrder {
    last: HashMap<UserId, LastCall>,
}

impl LineOrder {
    /// An enqueue at `seq`: whether it may act. Not if a later call of the user came first, nor if
    /// this very call's place has already ended (a removal or a pairing at the same `seq`).
    pub fn admit_enqueue(&mut self, user: &UserId, seq: PlaceSeq) -> bool {
        #[cfg(feature = "mutants")]
        if crate::mutants::active(crate::mutants::STALE_POOL_CALL_ADMITTED) {
            self.last.insert(user.clone(), LastCall { seq: seq.max(self.seq_of(user)), gone_at_ms: None });
            return true;
        }
        match self.last.get(user) {
            Some(l) if seq < l.seq || (seq == l.seq && l.gone_at_ms.is_some()) => false,
            _ => {
                self.last.insert(user.clone(), LastCall { seq, gone_at_ms: None });
                true
            }
        }
    }

    /// A dequeue at `seq`: whether it may act (then the user is out of line from `now_ms`).
    pub fn admit_dequeue(&mut self, user: &UserId, seq: PlaceSeq, now_ms: u64) -> bool {
        match self.last.get(user) {
            Some(l) if seq < l.seq => false,
            _ => {
                self.last.insert(user.clone(), LastCall { seq, gone_at_ms: Some(now_ms) });
                true
            }
        }
    }

    /// The user left the line by being paired: the call that put them there ends now.
    pub fn paired(&mut self, user: &UserId, now_ms: u64) {
        if let Some(l) = self.last.get_mut(user) {
            l.gone_at_ms.get_or_insert(now_ms);
        }
    }

    /// The seq of the call that put a waiting user in line.
    pub fn seq_of(&self, user: &UserId) -> PlaceSeq {
        self.last.get(user).map(|l| l.seq).unwrap_or_default()
    }

    /// What is stored for a user out of line (a tombstone), if anything.
    pub fn gone(&self, user: &UserId) -> Option<LastCall> {
        self.last.get(user).copied().filter(|l| l.gone_at_ms.is_some())
    }

    /// Installs what a reload read.
    pub fn restore(&mut self, user: UserId, last: LastCall) {
        self.last.insert(user, last);
    }

    /// Forgets users out of line for longer than `GONE_KEEP_MS`; returns them (their tombstones
    /// are deleted).
    pub fn expire(&mut self, now_ms: u64) -> Vec<UserId> {
        let old: Vec<UserId> = self
            .last
            .iter()
            .filter(|(_, l)| l.gone_at_ms.is_some_and(|at| now_ms.saturating_sub(at) > GONE_KEEP_MS))
            .map(|(u, _)| u.clone())
            .collect();
        for u in &old {
            self.last.remove(u);
        }
        old
    }

    pub fn clear(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("user id")
    }

    fn seq(generation: u64, n: u64) -> PlaceSeq {
        PlaceSeq { generation, n }
    }

    #[test]
    fn a_late_enqueue_from_an_old_owner_does_not_undo_a_newer_leave() {
        let (u, mut order) = (user("u"), LineOrder::default());
        assert!(order.admit_enqueue(&u, seq(1, 1)), "the join");
        // The user moved (generation 2) and left; the old owner's requeue (1, 2) arrives after.
        assert!(order.admit_dequeue(&u, seq(2, 1), 10));
        assert!(!order.admit_enqueue(&u, seq(1, 2)), "the late requeue is turned away");
        assert!(order.admit_enqueue(&u, seq(2, 2)), "a new join of the new owner counts");
    }

    #[test]
    fn a_call_whose_place_ended_cannot_act_again_and_older_leaves_change_nothing() {
        let (u, mut order) = (user("u"), LineOrder::default());
        assert!(order.admit_enqueue(&u, seq(1, 3)));
        order.paired(&u, 5);
        assert!(!order.admit_enqueue(&u, seq(1, 3)), "the same enqueue again after its pairing");
        assert!(!order.admit_dequeue(&u, seq(1, 2), 6), "an older leave");
        assert_eq!(order.gone(&u).map(|l| l.gone_at_ms), Some(Some(5)));
        assert!(order.admit_enqueue(&u, seq(1, 4)), "the requeue after the room");
        assert_eq!(order.gone(&u), None);
        assert_eq!(order.seq_of(&u), seq(1, 4));
    }

    #[test]
    fn tombstones_are_forgotten_after_a_while() {
        let (u, mut order) = (user("u"), LineOrder::default());
        assert!(order.admit_dequeue(&u, seq(1, 1), 1_000));
        assert!(order.expire(1_000 + GONE_KEEP_MS).is_empty());
        assert_eq!(order.expire(1_001 + GONE_KEEP_MS), vec![u.clone()]);
        assert_eq!(order.gone(&u), None);
    }

    #[test]
    fn a_new_load_ranks_above_every_call_before_it() {
        let mut calls = PoolCalls::<()>::default();
        let first = calls.next_seq();
        calls.loaded(7);
        let after = calls.next_seq();
        assert!(after > first && after.generation == 7);
        calls.loaded(3);
        assert!(calls.next_seq() > after, "an older generation is never taken back");
    }

    #[test]
    fn a_leave_waits_for_every_unanswered_enqueue() {
        let mut calls = PoolCalls::default();
        calls.enqueue_sent();
        calls.enqueue_sent();
        assert_eq!(calls.leave("leave"), None, "held behind two enqueues");
        assert!(calls.enqueue_answered().is_empty(), "one still unanswered");
        assert!(!calls.is_quiet());
        assert_eq!(calls.enqueue_answered(), vec!["leave"]);
        assert!(calls.is_quiet());
        assert_eq!(calls.leave("next"), Some("next"), "nothing in flight: at once");
    }

    #[test]
    fn an_answer_without_a_call_does_not_underflow() {
        let mut calls = PoolCalls::<()>::default();
        assert!(calls.enqueue_answered().is_empty());
        assert!(calls.is_quiet());
    }
}
