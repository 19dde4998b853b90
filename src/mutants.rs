//! Real bugs this code once had, put back on purpose (cargo feature `mutants`, off by default),
//! so the simulator and the tests can show that each one is caught. One is active at a time,
//! chosen by name; without the feature none of this is compiled.

use std::sync::RwLock;

/// An outbox entry decided while an earlier batch of its pair was in flight went out when that
/// earlier batch committed, before its own batch did (a failed later batch left both users
/// told of a match that was never stored; the next owner decided a second one).
pub const OUTBOX_RELEASED_BY_EARLIER_BATCH: &str = "outbox_released_by_earlier_batch";

/// A pair read from the store before a cache drop, answered after it, was installed over the
/// pair's newer state in memory (a retried swipe then decided a second match on it).
pub const STALE_LOAD_INSTALLED: &str = "stale_load_installed";

/// A `match` re-published after its `unmatched` was logged was logged again: the user's index
/// listed an ended match.
pub const MATCH_AFTER_ITS_UNMATCH_LOGGED: &str = "match_after_its_unmatch_logged";

/// A pool acted on a call older than one it had already heard from the user: a requeue sent by
/// an owner the user had left reached the pool after the new owner's leave and put the user back in
/// line (a user who left was then put in a room).
pub const STALE_POOL_CALL_ADMITTED: &str = "stale_pool_call_admitted";

/// The answer to a leave that arrived after the user had joined the same pool again released the
/// new place (the user stayed in line while their shard said idle).
pub const EARLIER_LEAVE_ANSWER_APPLIED: &str = "earlier_leave_answer_applied";

/// Every mutant, by name.
pub const ALL: &[&str] = &[
    OUTBOX_RELEASED_BY_EARLIER_BATCH,
    STALE_LOAD_INSTALLED,
    MATCH_AFTER_ITS_UNMATCH_LOGGED,
    STALE_POOL_CALL_ADMITTED,
    EARLIER_LEAVE_ANSWER_APPLIED,
];

static ACTIVE: RwLock<Option<&'static str>> = RwLock::new(None);

/// Activates `name` (or none). Unknown names are refused.
pub fn select(name: Option<&str>) -> Result<(), String> {
    let chosen = match name {
        None => None,
        Some(n) => Some(*ALL.iter().find(|m| **m == n).ok_or_else(|| format!("unknown mutant {n:?}"))?),
    };
    *ACTIVE.write().unwrap_or_else(|e| e.into_inner()) = chosen;
    Ok(())
}

/// Whether mutant `name` is active.
pub fn active(name: &str) -> bool {
    *ACTIVE.read().unwrap_or_else(|e| e.into_inner()) == Some(name)
}
