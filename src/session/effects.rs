//! Whether a pair's effect is new to a user's log. Pure, shared by the user shard and the
//! simulator.
//!
//! Effects of one pair can reach a user's owner out of order: a `match` whose first publish was
//! lost (or whose user batch failed) is published again a second later, possibly after the
//! `unmatched` that ended it. Logging it then would list an ended match forever and show the
//! client a match after its end.

use super::event_log::EventLog;
use super::IndexChange;

/// What to do with an effect that reached the user's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Not logged yet: log it and apply its change.
    New,
    /// Logged already as event `id`: confirm it (once that id is stored), log nothing.
    Logged(u64),
    /// Overtaken by a later effect of the same match (its unmatch is logged, as event `id`):
    /// confirm it like a logged one, log nothing.
    Superseded(u64),
}

pub fn arrival(log: &EventLog, effect_id: &str, change: &IndexChange) -> Arrival {
    if let Some(id) = log.find_effect(effect_id) {
        return Arrival::Logged(id);
    }
    if let IndexChange::AddMatch(m) = change {
        if let Some(id) = log.find_effect(&format!("unmatch:{}", m.match_id)) {
            #[cfg(feature = "mutants")]
            if crate::mutants::active(crate::mutants::MATCH_AFTER_ITS_UNMATCH_LOGGED) {
                return Arrival::New;
            }
            return Arrival::Superseded(id);
        }
    }
    Arrival::New
}
