//! The effects a pair shard owes its users (Redis mode), and when each may go out.
//!
//! An entry is decided in memory, written to the pair's record by one batch, and published only
//! once *that* batch has committed. An entry decided while an earlier batch writing the same pair
//! is in flight waits for its own batch: releasing it with the earlier one told both users about a
//! match that the later, failed batch never stored, and the pair's next owner decided a second one
//! (two active matches in the users' indexes, I1/I7). Pure: the caller passes the time.

use std::collections::HashMap;

use super::pair_state::Effect;
use super::slot::PairKey;
use crate::persist::records::OutboxEntry;
use crate::protocol::{EventKind, UserId};
use crate::session::IndexChange;

/// The events a pair decision owes its two users (one entry per user, with the effect id their
/// logs de-duplicate a re-publish by).
pub fn owed_for(effect: &Effect, now_ms: u64) -> Vec<OutboxEntry> {
    match effect {
        Effect::MatchCreated(m) => m
            .users
            .iter()
            .map(|user| OutboxEntry {
                effect_id: format!("match:{}", m.match_id),
                user: user.clone(),
                kind: EventKind::Match { match_: m.clone() },
                change: IndexChange::AddMatch(m.clone()),
                created_ms: now_ms,
            })
            .collect(),
        Effect::Unmatched { match_, by } => match_
            .users
            .iter()
            .map(|user| OutboxEntry {
                effect_id: format!("unmatch:{}", match_.match_id),
                user: user.clone(),
                kind: EventKind::Unmatched { match_id: match_.match_id.clone(), by: by.clone(), reason: None },
                change: IndexChange::RemoveMatch(match_.match_id.clone()),
                created_ms: now_ms,
            })
            .collect(),
    }
}

/// Whether a pair read from the store may be installed: only if it was read in the cache's current
/// generation (reads from before a drop are stale) and the pair is not in memory already (memory
/// may hold decisions not stored yet; replacing them once let a retried swipe decide a second match).
pub fn may_install(read_generation: u64, generation: u64, in_memory: bool) -> bool {
    #[cfg(feature = "mutants")]
    if crate::mutants::active(crate::mutants::STALE_LOAD_INSTALLED) {
        return true;
    }
    read_generation == generation && !in_memory
}

/// Where an entry is on its way to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Decided; no batch has carried it yet.
    Decided,
    /// Carried by the batch with this sequence number, not committed yet.
    Writing(u64),
    /// Stored: it may be published.
    Committed,
}

#[derive(Debug, Clone)]
struct Owed {
    entry: OutboxEntry,
    stage: Stage,
    /// When it was last published (ms, the caller's clock).
    last_sent: Option<u64>,
}

/// Owed effects per pair, mirroring the stored outboxes plus what is decided on top of them.
#[derive(Debug, Default)]
pub struct Outbox {
    owed: HashMap<PairKey, Vec<Owed>>,
}

impl Outbox {
    /// Entries a decision about `key` owes; they wait for the batch that writes them.
    pub fn owe(&mut self, key: &PairKey, entries: impl IntoIterator<Item = OutboxEntry>) {
        let owed = self.owed.entry(key.clone()).or_default();
        owed.extend(entries.into_iter().map(|entry| Owed { entry, stage: Stage::Decided, last_sent: None }));
    }

    /// Entries read back from the store: committed already.
    pub fn restore(&mut self, key: &PairKey, entries: Vec<OutboxEntry>) {
        if entries.is_empty() {
            return;
        }
        let owed = entries.into_iter().map(|entry| Owed { entry, stage: Stage::Committed, last_sent: None });
        self.owed.insert(key.clone(), owed.collect());
    }

    /// The entries batch `seq` writes in `key`'s record (all of them, as the record holds the
    /// whole outbox); those not carried by an earlier batch now wait for this one.
    pub fn write(&mut self, key: &PairKey, seq: u64) -> Vec<OutboxEntry> {
        let Some(owed) = self.owed.get_mut(key) else { return Vec::new() };
        for o in owed.iter_mut().filter(|o| o.stage == Stage::Decided) {
            o.stage = Stage::Writing(seq);
        }
        owed.iter().map(|o| o.entry.clone()).collect()
    }

    /// Batch `seq` committed `key`: the entries it (or an earlier batch) carried are stored.
    pub fn committed(&mut self, key: &PairKey, seq: u64) {
        let Some(owed) = self.owed.get_mut(key) else { return };
        for o in owed.iter_mut() {
            let stored = match o.stage {
                Stage::Writing(s) => s <= seq,
                Stage::Committed => true,
                Stage::Decided => false,
            };
            #[cfg(feature = "mutants")]
            let stored = stored || crate::mutants::active(crate::mutants::OUTBOX_RELEASED_BY_EARLIER_BATCH);
            if stored {
                o.stage = Stage::Committed;
            }
        }
    }

    /// The committed entries of `key`, to publish now (each remembered as sent at `now`).
    pub fn due(&mut self, key: &PairKey, now_ms: u64) -> Vec<OutboxEntry> {
        let Some(owed) = self.owed.get_mut(key) else { return Vec::new() };
        let due = owed.iter_mut().filter(|o| o.stage == Stage::Committed);
        due.map(|o| {
            o.last_sent = Some(now_ms);
            o.entry.clone()
        })
        .collect()
    }

    /// Pairs with a committed entry never sent, or sent at least `retry_ms` ago.
    pub fn stale(&self, now_ms: u64, retry_ms: u64) -> Vec<PairKey> {
        let stale =
            |o: &Owed| o.stage == Stage::Committed && o.last_sent.is_none_or(|t| now_ms.saturating_sub(t) >= retry_ms);
        self.owed.iter().filter(|(_, owed)| owed.iter().any(stale)).map(|(k, _)| k.clone()).collect()
    }

    /// A user's log holds these (effect id, user) entries of `key`: they are no longer owed.
    /// Returns whether anything was dropped (the record must be written again).
    pub fn confirm(&mut self, key: &PairKey, confirmed: &[(String, UserId)]) -> bool {
        let Some(owed) = self.owed.get_mut(key) else { return false };
        let before = owed.len();
        // Only a stored entry can be confirmed: one decided since is a newer effect.
        owed.retain(|o| {
            !(o.stage == Stage::Committed
                && confirmed.iter().any(|(id, user)| *id == o.entry.effect_id && *user == o.entry.user))
        });
        let changed = owed.len() != before;
        if owed.is_empty() {
            self.owed.remove(key);
        }
        changed
    }

    /// Whether `key` owes `user` the effect `effect_id` (in any stage).
    pub fn owes(&self, key: &PairKey, user: &UserId, effect_id: &str) -> bool {
        self.owed.get(key).is_some_and(|o| o.iter().any(|o| o.entry.user == *user && o.entry.effect_id == effect_id))
    }

    /// Whether `key` owes anything.
    pub fn has(&self, key: &PairKey) -> bool {
        self.owed.get(key).is_some_and(|o| !o.is_empty())
    }

    pub fn clear(&mut self) {
        self.owed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RoomId;

    fn key() -> PairKey {
        PairKey::new(&UserId::parse("a").unwrap(), &UserId::parse("b").unwrap()).unwrap()
    }

    fn entry(effect: &str, user: &str) -> OutboxEntry {
        OutboxEntry {
            effect_id: effect.into(),
            user: UserId::parse(user).unwrap(),
            kind: EventKind::RoomClosed { room_id: RoomId::new_in_slot(0), reason: "skip".into() },
            change: IndexChange::None,
            created_ms: 0,
        }
    }

    fn ids(entries: &[OutboxEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.effect_id.as_str()).collect()
    }

    #[test]
    fn nothing_goes_out_before_its_batch_commits() {
        let (mut o, k, now) = (Outbox::default(), key(), 1_000);
        o.owe(&k, [entry("m1", "a")]);
        assert!(o.due(&k, now).is_empty());
        assert_eq!(ids(&o.write(&k, 1)), ["m1"]);
        assert!(o.due(&k, now).is_empty(), "in flight is not stored");
        assert!(o.stale(now, 0).is_empty());
        o.committed(&k, 1);
        assert_eq!(ids(&o.due(&k, now)), ["m1"]);
    }

    #[test]
    fn an_entry_decided_while_an_earlier_batch_is_in_flight_waits_for_its_own() {
        let (mut o, k, now) = (Outbox::default(), key(), 1_000);
        o.owe(&k, [entry("like", "a")]);
        o.write(&k, 1);
        // Decided on top of batch 1, so carried by batch 2.
        o.owe(&k, [entry("match", "a"), entry("match", "b")]);
        o.committed(&k, 1);
        assert_eq!(ids(&o.due(&k, now)), ["like"], "batch 1 stored only what it carried");
        assert!(!o.confirm(&k, &[("match".into(), UserId::parse("a").unwrap())]), "not stored, not confirmable");
        assert_eq!(ids(&o.write(&k, 2)), ["like", "match", "match"]);
        o.committed(&k, 2);
        assert_eq!(ids(&o.due(&k, now)), ["like", "match", "match"]);
    }

    #[test]
    fn a_later_batch_commits_what_earlier_ones_carried() {
        let (mut o, k, now) = (Outbox::default(), key(), 1_000);
        o.owe(&k, [entry("x", "a")]);
        o.write(&k, 3);
        o.committed(&k, 4);
        assert_eq!(ids(&o.due(&k, now)), ["x"]);
    }

    #[test]
    fn restored_entries_are_due_and_confirmation_empties_the_pair() {
        let (mut o, k, now) = (Outbox::default(), key(), 1_000);
        o.restore(&k, vec![entry("x", "a"), entry("x", "b")]);
        assert!(o.has(&k) && o.owes(&k, &UserId::parse("b").unwrap(), "x"));
        assert_eq!(o.stale(now, 1_000), std::slice::from_ref(&k));
        assert_eq!(o.due(&k, now).len(), 2);
        assert!(o.stale(now, 1_000).is_empty(), "just sent");
        assert!(o.confirm(&k, &[("x".into(), UserId::parse("a").unwrap())]));
        assert!(o.confirm(&k, &[("x".into(), UserId::parse("b").unwrap())]));
        assert!(!o.has(&k));
    }
}
