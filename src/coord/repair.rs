//! Audit repairs of a pair, decided by the pair's own shard (see `audit::repair`): it re-checks each
//! against its state, which is the truth for the pair, and mends it in its next batch; the answer
//! is released once that batch is stored, like any other.

use super::pair_state::PairState;
use super::shard::PairShard;
use crate::audit::repair::{match_entry, room_closed_entry, unmatch_entry, PairFix, RepairOutcome, RepairPair};
use crate::protocol::unix_ms;

impl PairShard {
    pub(crate) fn decide_repair(&mut self, msg: &RepairPair) -> RepairOutcome {
        let key = &msg.pair;
        let now = unix_ms();
        let active = self.pairs.get(key).and_then(PairState::active_match).cloned();
        let room_open = |shard: &PairShard, room_id: &crate::protocol::RoomId| {
            shard
                .rooms
                .get(key)
                .is_some_and(|rooms| rooms.iter().any(|r| r.room.room_id == *room_id && r.closed.is_none()))
        };
        tracing::info!(pair = ?key, fix = ?msg.fix, "audit repair");
        match &msg.fix {
            PairFix::SyncKeys => {
                if !self.persisted() {
                    return RepairOutcome::consistent("this node keeps its state in memory: nothing is stored");
                }
                self.sync_keys(key);
                RepairOutcome::repaired("the guard, id key and set listings are written from the pair's state")
            }
            PairFix::CloseRoom { room_id } => {
                if !room_open(self, room_id) {
                    return RepairOutcome::consistent(format!("room {room_id} is not open"));
                }
                self.close_for_repair(room_id);
                RepairOutcome::repaired(format!("room {room_id} closed; both members are told (server_repair)"))
            }
            PairFix::OweMatch { user, match_id } => match active {
                Some(m) if m.match_id == *match_id && key.side_of(user).is_some() => {
                    if self.owes(key, user, &format!("match:{match_id}")) {
                        return RepairOutcome::consistent(format!("the match event is on its way to {user}"));
                    }
                    self.mark_dirty(key);
                    self.owe(key, vec![match_entry(user, &m, now)]);
                    RepairOutcome::repaired(format!("{user} is sent the match event of {match_id} again"))
                }
                _ => RepairOutcome::refused(format!("{match_id} is not the active match of the pair")),
            },
            PairFix::OweUnmatch { user, match_id } => {
                if active.is_some_and(|m| m.match_id == *match_id) {
                    return RepairOutcome::refused(format!("{match_id} is the active match of the pair"));
                }
                let Some(side) = key.side_of(user) else {
                    return RepairOutcome::refused(format!("{user} is not a member of the pair"));
                };
                if self.owes(key, user, &format!("unmatch:{match_id}")) {
                    return RepairOutcome::consistent(format!("the end of {match_id} is on its way to {user}"));
                }
                let partner = key.user(1 - side).clone();
                self.mark_dirty(key);
                self.owe(key, vec![unmatch_entry(user, match_id, &partner, now)]);
                RepairOutcome::repaired(format!("{user} is sent unmatched (server_repair) for {match_id}"))
            }
            PairFix::OweRoomClosed { user, room_id } => {
                if room_open(self, room_id) {
                    return RepairOutcome::refused(format!("room {room_id} is open"));
                }
                if key.side_of(user).is_none() {
                    return RepairOutcome::refused(format!("{user} is not a member of the pair"));
                }
                if self.owes(key, user, &format!("close:{room_id}")) {
                    return RepairOutcome::consistent(format!("the close of {room_id} is on its way to {user}"));
                }
                self.mark_dirty(key);
                self.owe(key, vec![room_closed_entry(user, room_id, now)]);
                RepairOutcome::repaired(format!("{user} is sent room_closed (server_repair) for {room_id}"))
            }
        }
    }
}
