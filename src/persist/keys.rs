//! Redis key names. Every key carries its slot as a hash tag (`{<slot>}`), so all keys of one
//! slot live in one Redis Cluster slot and a slot's batch could run as one transaction there.

use crate::coord::slot::{user_slot, PairKey};
use crate::protocol::{MatchId, RoomId, UserId};

/// Prefix of every key, so matchd can share a Redis with other applications.
pub const PREFIX: &str = "matchd";

/// A pair's record (state + outbox).
pub fn pair(key: &PairKey) -> String {
    format!("{PREFIX}:{{{}}}:pair:{}:{}", key.slot(), key.low, key.high)
}

/// Match id -> pair, for unmatch after a restart.
pub fn match_owner(slot: u16, id: &MatchId) -> String {
    format!("{PREFIX}:{{{slot}}}:match:{id}")
}

/// The pair's active match id: set (guarded, see `store::run_fenced`) when the pair matches,
/// deleted when it unmatches; the last line of defence for one match per pair (I1).
pub fn active_match(key: &PairKey) -> String {
    format!("{PREFIX}:{{{}}}:active:{}:{}", key.slot(), key.low, key.high)
}

/// Room id -> pair, so a skip finds its room after a restart.
pub fn room_owner(slot: u16, id: &RoomId) -> String {
    format!("{PREFIX}:{{{slot}}}:room:{id}")
}

/// Pairs of `slot` with an open room (closed at start if a crash left them open).
pub fn open_rooms(slot: u16) -> String {
    format!("{PREFIX}:{{{slot}}}:rooms")
}

/// Pairs of `slot` whose outbox still holds effects not yet in their users' logs.
pub fn outbox(slot: u16) -> String {
    format!("{PREFIX}:{{{slot}}}:outbox")
}

/// A user's event stream (capped; entry ids are the event ids).
pub fn events(user: &UserId) -> String {
    format!("{PREFIX}:{{{}}}:events:{user}", user_slot(user))
}

/// A user's active matches: match id -> match JSON.
pub fn matches(user: &UserId) -> String {
    format!("{PREFIX}:{{{}}}:matches:{user}", user_slot(user))
}

/// A user's queue place: the ticket they joined with (JSON) while they wait in a line, `idle`
/// otherwise (a room is in their log).
pub fn place(user: &UserId) -> String {
    format!("{PREFIX}:{{{}}}:place:{user}", user_slot(user))
}

/// Counts a user's loads: each load's calls to pools rank above every earlier load's.
pub fn place_generation(user: &UserId) -> String {
    format!("{PREFIX}:{{{}}}:placegen:{user}", user_slot(user))
}

/// Encodes a pair key as a member of an outbox set.
pub fn pair_member(key: &PairKey) -> String {
    format!("{}\n{}", key.low, key.high)
}

/// Decodes `pair_member`.
pub fn parse_pair_member(s: &str) -> Option<PairKey> {
    let (a, b) = s.split_once('\n')?;
    PairKey::new(&UserId::parse(a).ok()?, &UserId::parse(b).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_slot_as_a_hash_tag() {
        let k = PairKey::new(&UserId::parse("bob").unwrap(), &UserId::parse("alice").unwrap()).unwrap();
        assert_eq!(pair(&k), "matchd:{5043}:pair:alice:bob");
        assert_eq!(parse_pair_member(&pair_member(&k)), Some(k));
        assert_eq!(events(&UserId::parse("alice").unwrap()), "matchd:{14599}:events:alice");
    }
}
