//! Where a user is (I4), and the order of their calls to pools. Pure: the user shard holds one
//! `PoolCalls` per user and asks it before it sends or applies anything about a line.
//!
//! Two orders are not given for free. Calls to a pool on another node are not ordered among
//! themselves, so a leave sent while an enqueue (a join, or the requeue after a room closed) is
//! unanswered could reach the pool first, be answered "not queued", and the enqueue would then put
//! the user back in line behind their back: leaves wait for every unanswered enqueue. And a pool
//! that reloads its line tells each waiting user's shard (`RestorePlace`); that word, sent before
//! the pool answered a later leave, can arrive after the answer: a pool's word that the user is no
//! longer in its line outranks its earlier word that they are, until the user joins again.

use crate::protocol::{JoinRequest, PoolName, RoomId};

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

/// The user's calls to pools that are still in flight, and the leaves (`A`) held behind them.
#[derive(Debug)]
pub struct PoolCalls<A> {
    enqueues: u32,
    held: Vec<A>,
    released_by: Option<PoolName>,
}

impl<A> Default for PoolCalls<A> {
    fn default() -> Self {
        Self { enqueues: 0, held: Vec::new(), released_by: None }
    }
}

impl<A> PoolCalls<A> {
    /// An enqueue is sent: the user joins again, so no earlier "not in line" word stands.
    pub fn enqueue_sent(&mut self) {
        self.enqueues += 1;
        self.released_by = None;
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

    /// `pool` answered that the user is not (or no longer) in its line.
    pub fn released(&mut self, pool: &PoolName) {
        self.released_by = Some(pool.clone());
    }

    /// Whether a `RestorePlace` from `pool` may make an idle user queued there again.
    pub fn may_restore(&self, pool: &PoolName) -> bool {
        self.released_by.as_ref() != Some(pool)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> PoolName {
        PoolName::parse(name).expect("pool name")
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
    fn a_restore_sent_before_a_release_does_not_stand_until_the_user_joins_again() {
        let (p, q) = (pool("p"), pool("q"));
        let mut calls = PoolCalls::<()>::default();
        assert!(calls.may_restore(&p));
        calls.released(&p);
        assert!(!calls.may_restore(&p), "the stale restore from p is refused");
        assert!(calls.may_restore(&q), "another pool's word is its own");
        calls.enqueue_sent();
        assert!(calls.may_restore(&p), "a new join: p's later restores count again");
    }

    #[test]
    fn an_answer_without_a_call_does_not_underflow() {
        let mut calls = PoolCalls::<()>::default();
        assert!(calls.enqueue_answered().is_empty());
        assert!(calls.is_quiet());
    }
}
