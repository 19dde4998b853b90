//! Repairs with no node running: the audit acts as the owner for a moment, with the fencing the
//! nodes use, so a node starting meanwhile can never be written behind.
//!
//! 1. It takes the fence: on one Redis it acquires the ownership lease (`SET NX`, so a starting
//!    single-active node stays a standby until it is released), and on any Redis it claims the
//!    slots it will touch under the current view epoch (a cluster node that starts meanwhile
//!    claims under a newer epoch, which replaces the claim).
//! 2. It reads a fresh snapshot (under the fence), audits it, and plans the writes (`plan`, pure).
//! 3. It writes them as one fenced batch (`store::run_fenced`, the script every actor's batch runs):
//!    refused whole if any fence key no longer holds its token.
//! 4. It releases the lease.
//!
//! Events a repair owes go into the pairs' outboxes (listed in the outbox sets), exactly as an
//! owner would write them: the next node to start publishes them to their users, who read them
//! live or on resume. Nothing is written to a user's log directly (its owner numbers its events).

use std::collections::{BTreeMap, BTreeSet};

use super::repair::{match_entry, room_closed_entry, unmatch_entry, PairFix, Repair, RepairOutcome};
use super::snapshot::Snapshot;
use super::{Inconsistency, Kind};
use crate::cluster::membership::{claim_epoch_key, epoch_key, fence_key, CLAIM};
use crate::cluster::Role;
use crate::coord::slot::{name_slot, user_slot, PairKey};
use crate::persist::keys;
use crate::persist::lease::{LEASE_KEY, RELEASE};
use crate::persist::records::{OutboxEntry, PairRecord};
use crate::persist::store::text;
use crate::persist::{FenceToken, RedisStore, StoreError};
use crate::protocol::{JoinRequest, PoolName, UserId};
use crate::queue::line_store::line_key;
use crate::queue::room::Closed;

/// How long the audit's lease lasts if it dies before releasing it.
const LEASE_MS: u64 = 30_000;
/// Commands per fenced batch.
const BATCH: usize = 512;

/// The writes that mend a snapshot's findings, and what each finding's repair amounts to.
#[derive(Default)]
pub struct Plan {
    pub commands: Vec<redis::Cmd>,
    /// The slots written, and the users' slots whose state the writes were decided on.
    pub slots: BTreeSet<u16>,
    /// One per finding, in order; `None` for findings without a repair.
    pub outcomes: Vec<Option<RepairOutcome>>,
}

fn owes(record: &PairRecord, user: &UserId, effect: &str) -> bool {
    record.outbox.iter().any(|o| o.user == *user && o.effect_id == effect)
}

/// Adds `entry` to `record`'s outbox unless it is owed already; whether it was added.
fn owe(record: &mut PairRecord, entry: OutboxEntry) -> bool {
    if owes(record, &entry.user, &entry.effect_id) {
        return false;
    }
    record.outbox.push(entry);
    true
}

/// Mends `fix` on `pair`'s record (`records` holds the records changed so far).
fn fix_pair(
    s: &Snapshot,
    records: &mut BTreeMap<PairKey, PairRecord>,
    pair: &PairKey,
    fix: &PairFix,
    now_ms: u64,
) -> RepairOutcome {
    let mut record = records.get(pair).or_else(|| s.pairs.get(pair)).cloned().unwrap_or_default();
    let outcome = match fix {
        PairFix::SyncKeys => {
            return RepairOutcome::repaired("the guard, id key and set listings are written to agree with the pair")
        }
        PairFix::CloseRoom { room_id } => {
            let Some(room) = record.rooms.iter_mut().find(|r| r.room.room_id == *room_id && r.closed.is_none()) else {
                return RepairOutcome::consistent(format!("room {room_id} is not open"));
            };
            room.closed = Some(Closed { at_ms: now_ms, requeued: [false, false] });
            let users = room.room.users.clone();
            for user in &users {
                owe(&mut record, room_closed_entry(user, room_id, now_ms));
            }
            RepairOutcome::repaired(format!(
                "room {room_id} closed; {} and {} are owed room_closed (server_repair), delivered when a node runs",
                users[0], users[1]
            ))
        }
        PairFix::OweMatch { user, match_id } => match record.state.active_match() {
            Some(m) if m.match_id == *match_id => {
                let m = m.clone();
                if !owe(&mut record, match_entry(user, &m, now_ms)) {
                    return RepairOutcome::consistent(format!("the match event is already owed to {user}"));
                }
                RepairOutcome::repaired(format!("{user} is owed the match event of {match_id} again"))
            }
            _ => return RepairOutcome::refused(format!("{match_id} is not the pair's active match")),
        },
        PairFix::OweUnmatch { user, match_id } => {
            if record.state.active_match().is_some_and(|m| m.match_id == *match_id) {
                return RepairOutcome::refused(format!("{match_id} is the pair's active match"));
            }
            let Some(side) = pair.side_of(user) else {
                return RepairOutcome::refused(format!("{user} is not a member of the pair"));
            };
            if !owe(&mut record, unmatch_entry(user, match_id, pair.user(1 - side), now_ms)) {
                return RepairOutcome::consistent(format!("the end of {match_id} is already owed to {user}"));
            }
            RepairOutcome::repaired(format!("{user} is owed unmatched (server_repair) for {match_id}"))
        }
        PairFix::OweRoomClosed { user, room_id } => {
            if record.rooms.iter().any(|r| r.room.room_id == *room_id && r.closed.is_none()) {
                return RepairOutcome::refused(format!("room {room_id} is open"));
            }
            if pair.side_of(user).is_none() {
                return RepairOutcome::refused(format!("{user} is not a member of the pair"));
            }
            if !owe(&mut record, room_closed_entry(user, room_id, now_ms)) {
                return RepairOutcome::consistent(format!("the close of {room_id} is already owed to {user}"));
            }
            RepairOutcome::repaired(format!("{user} is owed room_closed (server_repair) for {room_id}"))
        }
    };
    records.insert(pair.clone(), record);
    outcome
}

/// Takes `user` out of the lines that are not their place: all of them while they are in a room,
/// else all but `keep`'s.
fn fix_place(
    s: &Snapshot,
    removals: &mut BTreeSet<(PoolName, UserId)>,
    user: &UserId,
    lines: &[PoolName],
    keep: Option<&JoinRequest>,
) -> RepairOutcome {
    let in_room = s.place_room(user);
    let keep = if in_room.is_some() { None } else { keep.map(|t| &t.pool) };
    let stray: Vec<&PoolName> = lines
        .iter()
        .filter(|p| Some(*p) != keep && s.lines.get(*p).is_some_and(|line| line.contains_key(user)))
        .collect();
    if stray.is_empty() {
        return RepairOutcome::consistent(format!("{user} waits in no stray line"));
    }
    for pool in &stray {
        removals.insert(((*pool).clone(), user.clone()));
    }
    let names: Vec<&str> = stray.iter().map(|p| p.as_str()).collect();
    let why = match (&in_room, keep) {
        (Some((_, room)), _) => format!(" (in room {room})"),
        (None, Some(pool)) => format!(" (keeps waiting in {pool})"),
        (None, None) => String::new(),
    };
    RepairOutcome::repaired(format!("{user} removed from {}{why}", names.join(", ")))
}

/// Plans the writes that mend `findings` of `s` (pure).
pub fn plan(s: &Snapshot, findings: &[Inconsistency], now_ms: u64) -> Plan {
    let mut records: BTreeMap<PairKey, PairRecord> = BTreeMap::new();
    let mut synced: BTreeSet<PairKey> = BTreeSet::new();
    let mut removals: BTreeSet<(PoolName, UserId)> = BTreeSet::new();
    let mut plan = Plan::default();
    for f in findings {
        let outcome = match &f.repair {
            None => None,
            Some(Repair::Pair { pair, fix }) => {
                synced.insert(pair.clone());
                plan.slots.insert(pair.slot());
                plan.slots.extend(f.users.iter().map(user_slot));
                Some(fix_pair(s, &mut records, pair, fix, now_ms))
            }
            Some(Repair::Place { user, lines, keep }) => {
                plan.slots.insert(user_slot(user));
                Some(fix_place(s, &mut removals, user, lines, keep.as_ref()))
            }
        };
        plan.outcomes.push(outcome);
    }
    let empty = PairRecord::default();
    let mut written: BTreeSet<PairKey> = BTreeSet::new();
    for pair in &synced {
        let before = plan.commands.len();
        let slot = pair.slot();
        let changed = records.get(pair);
        let record = changed.or_else(|| s.pairs.get(pair)).unwrap_or(&empty);
        if let Some(r) = changed {
            let mut cmd = redis::cmd("SET");
            cmd.arg(keys::pair(pair)).arg(serde_json::to_string(r).unwrap_or_default());
            plan.commands.push(cmd);
        }
        let guard = s.guards.get(pair);
        match (record.state.active_match(), guard) {
            // A guard naming another match is left for a person (match_guard_mismatch).
            (Some(m), None) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(keys::active_match(pair)).arg(m.match_id.as_str()).arg("NX");
                plan.commands.push(cmd);
            }
            (None, Some(_)) => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(keys::active_match(pair));
                plan.commands.push(cmd);
            }
            _ => {}
        }
        if let Some(m) = record.state.active_match() {
            if s.match_owners.get(m.match_id.as_str()) != Some(&keys::pair_member(pair)) {
                let mut cmd = redis::cmd("SET");
                cmd.arg(keys::match_owner(slot, &m.match_id)).arg(keys::pair_member(pair));
                plan.commands.push(cmd);
            }
        }
        let listed = |sets: &BTreeMap<u16, BTreeSet<PairKey>>| sets.get(&slot).is_some_and(|set| set.contains(pair));
        let open = record.rooms.iter().any(|r| r.closed.is_none());
        for (set, wanted, was) in [
            (keys::open_rooms(slot), open, listed(&s.open_rooms_listed)),
            (keys::outbox(slot), !record.outbox.is_empty(), listed(&s.outbox_listed)),
        ] {
            if wanted != was {
                let mut cmd = redis::cmd(if wanted { "SADD" } else { "SREM" });
                cmd.arg(set).arg(keys::pair_member(pair));
                plan.commands.push(cmd);
            }
        }
        if plan.commands.len() > before {
            written.insert(pair.clone());
        }
    }
    // What a key sync amounts to is known once the writes are planned.
    for (f, outcome) in findings.iter().zip(plan.outcomes.iter_mut()) {
        let Some(Repair::Pair { pair, fix: PairFix::SyncKeys }) = &f.repair else { continue };
        *outcome = Some(if f.kind == Kind::StaleOutbox {
            RepairOutcome::consistent("listed for the next node to start, which delivers it")
        } else if written.contains(pair) {
            RepairOutcome::repaired("the guard, id key and set listings are written to agree with the pair")
        } else {
            RepairOutcome::consistent("the pair's keys agree with its record")
        });
    }
    for (pool, user) in removals {
        plan.slots.insert(name_slot(pool.as_str()));
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(line_key(&pool)).arg(user.as_str());
        plan.commands.push(cmd);
    }
    plan
}

/// Why an offline repair did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("a node became active meanwhile ({0}); run the repair again: it goes through the node then")]
    NodeStarted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The audit's hold on the data while it writes.
pub struct Fence {
    token: String,
    /// Held on one Redis (not a Redis Cluster, whose nodes are all `--cluster`).
    lease: bool,
    claimed: BTreeSet<u16>,
}

impl Fence {
    /// Takes the lease (one Redis) and claims `slots`.
    pub async fn acquire(store: &RedisStore, slots: &BTreeSet<u16>) -> Result<Fence, OfflineError> {
        let token = format!("audit:{}", &crate::protocol::ids::random_suffix()[..12]);
        let mut fence = Fence { token, lease: false, claimed: BTreeSet::new() };
        if !store.is_cluster() {
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(LEASE_KEY).arg(&fence.token).arg("NX").arg("PX").arg(LEASE_MS);
            let values = store.run(pipe, 1).await?;
            if !matches!(values.first(), Some(redis::Value::Okay)) {
                return Err(OfflineError::NodeStarted("the ownership lease is held".into()));
            }
            fence.lease = true;
        }
        if let Err(e) = fence.claim(store, slots).await {
            fence.release(store).await;
            return Err(e);
        }
        Ok(fence)
    }

    /// Claims `slots` (those not claimed yet) under the current view epoch.
    pub async fn claim(&mut self, store: &RedisStore, slots: &BTreeSet<u16>) -> Result<(), OfflineError> {
        let todo: Vec<u16> = slots.iter().copied().filter(|s| !self.claimed.contains(s)).collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(epoch_key());
        let epoch: u64 = store.run(pipe, 1).await?.first().and_then(text).and_then(|t| t.parse().ok()).unwrap_or(0);
        for chunk in todo.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for slot in chunk {
                pipe.cmd("EVAL").arg(CLAIM).arg(4);
                for role in Role::ALL {
                    pipe.arg(fence_key(role, *slot));
                }
                pipe.arg(claim_epoch_key(*slot)).arg(&self.token).arg(epoch);
            }
            let values = store.run(pipe, chunk.len()).await?;
            for (slot, v) in chunk.iter().zip(&values) {
                if !matches!(v, redis::Value::Int(1)) {
                    return Err(OfflineError::NodeStarted(format!("slot {slot} was claimed under a newer view")));
                }
                self.claimed.insert(*slot);
            }
        }
        Ok(())
    }

    /// The fence a batch writing (or decided on) `slots` carries.
    fn token(&self, slots: &BTreeSet<u16>) -> FenceToken {
        let mut keys: Vec<String> = self.lease.then(|| LEASE_KEY.to_string()).into_iter().collect();
        keys.extend(slots.iter().map(|s| fence_key(Role::Pairs, *s)));
        FenceToken { keys, token: std::sync::Arc::from(self.token.as_str()) }
    }

    /// Writes `plan` under the fence: refused whole (per Redis Cluster slot) if a node took over.
    pub async fn write(&mut self, store: &RedisStore, plan: &Plan) -> Result<(), OfflineError> {
        self.claim(store, &plan.slots).await?;
        for chunk in plan.commands.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for cmd in chunk {
                pipe.add_command(cmd.clone());
            }
            match store.run_fenced(&self.token(&plan.slots), &[], pipe, chunk.len()).await {
                Err(StoreError::Fenced) => {
                    return Err(OfflineError::NodeStarted("a fence key changed hands".into()));
                }
                other => drop(other?),
            }
        }
        Ok(())
    }

    /// Gives the lease back (the claims stay until a node claims the slots for itself).
    pub async fn release(&self, store: &RedisStore) {
        if !self.lease {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(LEASE_KEY).arg(&self.token);
        if let Err(e) = store.run(pipe, 1).await {
            tracing::warn!(error = %e, "could not release the audit's lease; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::check::audit;
    use crate::audit::snapshot::{LogEntry, LogEvent};
    use crate::audit::RepairStatus;
    use crate::coord::pair_state::PairState;
    use crate::protocol::{Direction, EventKind, MatchId, Room, RoomId};
    use crate::queue::line_store::StoredWaiter;
    use crate::queue::room::RoomState;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).to_string()),
                _ => None,
            })
            .collect()
    }

    fn open_room(key: &PairKey, id: &str) -> RoomState {
        RoomState {
            room: Room {
                room_id: RoomId::parse(id).unwrap(),
                pool: PoolName::parse("default").unwrap(),
                users: [key.low.clone(), key.high.clone()],
                created_at: 1,
                payload: serde_json::json!({}),
            },
            tickets: [JoinRequest::default(), JoinRequest::default()],
            closed: None,
            incarnation: 1,
        }
    }

    #[test]
    fn an_orphan_room_is_closed_through_the_outbox_and_the_listings_follow() {
        let cd = PairKey::new(&u("c"), &u("d")).unwrap();
        let mut s = Snapshot::default();
        s.pairs.insert(cd.clone(), PairRecord { rooms: vec![open_room(&cd, "2.r")], ..Default::default() });
        s.open_rooms_listed.entry(cd.slot()).or_default().insert(cd.clone());
        let findings = audit(&s, 10, 60_000);
        assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::OrphanRoom]);
        let planned = plan(&s, &findings, 10);
        assert_eq!(planned.outcomes[0].as_ref().map(|o| o.status), Some(RepairStatus::Repaired));
        let cmds: Vec<Vec<String>> = planned.commands.iter().map(args).collect();
        assert_eq!(cmds[0][0..2], ["SET".to_string(), keys::pair(&cd)]);
        let record: PairRecord = serde_json::from_str(&cmds[0][2]).unwrap();
        assert!(record.rooms[0].closed.is_some());
        let reasons: Vec<String> = record
            .outbox
            .iter()
            .map(|o| match &o.kind {
                EventKind::RoomClosed { reason, .. } => format!("{}:{reason}", o.user),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons, ["c:server_repair", "d:server_repair"]);
        assert!(cmds.contains(&vec!["SREM".into(), keys::open_rooms(cd.slot()), keys::pair_member(&cd)]));
        assert!(cmds.contains(&vec!["SADD".into(), keys::outbox(cd.slot()), keys::pair_member(&cd)]));

        // Applied, the snapshot is consistent (the closes are on their way).
        let mut after = s.clone();
        after.pairs.insert(cd.clone(), record);
        after.open_rooms_listed.clear();
        after.outbox_listed.entry(cd.slot()).or_default().insert(cd.clone());
        assert_eq!(audit(&after, 10, 60_000), vec![]);
    }

    #[test]
    fn guards_are_set_only_where_absent_and_deleted_only_without_a_match() {
        let ab = PairKey::new(&u("a"), &u("b")).unwrap();
        let xy = PairKey::new(&u("x"), &u("y")).unwrap();
        let mut state = PairState::default();
        state.swipe(&ab, 0, Direction::Right, None, 1, 4, || MatchId::parse("1.m").unwrap());
        state.swipe(&ab, 1, Direction::Right, None, 1, 4, || MatchId::parse("1.m").unwrap());
        let mut s = Snapshot::default();
        s.pairs.insert(ab.clone(), PairRecord { state, ..Default::default() });
        s.guards.insert(xy.clone(), "7.old".into());
        let findings: Vec<_> = audit(&s, 10, 60_000)
            .into_iter()
            .filter(|f| matches!(f.kind, Kind::MatchGuardMissing | Kind::OrphanMatchGuard | Kind::MatchOwnerMissing))
            .collect();
        let cmds: Vec<Vec<String>> = plan(&s, &findings, 10).commands.iter().map(args).collect();
        assert!(cmds.contains(&vec!["SET".into(), keys::active_match(&ab), "1.m".into(), "NX".into()]));
        assert!(cmds.contains(&vec!["DEL".into(), keys::active_match(&xy)]));
        assert!(cmds.iter().any(|c| c[0] == "SET" && c[1].contains(":match:1.m")));
        assert!(!cmds.iter().any(|c| c[1] == keys::pair(&ab)), "the record itself is not rewritten");
    }

    #[test]
    fn a_stray_line_entry_is_removed_and_the_newest_kept() {
        let mut s = Snapshot::default();
        let (p1, p2) = (PoolName::parse("p1").unwrap(), PoolName::parse("p2").unwrap());
        for (pool, joined_ms) in [(&p1, 1), (&p2, 2)] {
            let w = StoredWaiter {
                ticket: JoinRequest { pool: pool.clone(), ..Default::default() },
                joined_ms,
                seq: Default::default(),
            };
            s.lines.entry(pool.clone()).or_default().insert(u("e"), w);
        }
        let findings = audit(&s, 10, 60_000);
        let planned = plan(&s, &findings, 10);
        let cmds: Vec<Vec<String>> = planned.commands.iter().map(args).collect();
        assert_eq!(cmds, vec![vec!["HDEL".to_string(), line_key(&p1), "e".into()]]);
        assert!(planned.slots.contains(&name_slot("p1")));

        // In a room: every line entry goes.
        let ce = PairKey::new(&u("c"), &u("e")).unwrap();
        s.pairs.insert(ce.clone(), PairRecord { rooms: vec![open_room(&ce, "3.r")], ..Default::default() });
        s.open_rooms_listed.entry(ce.slot()).or_default().insert(ce.clone());
        let assigned = || LogEntry {
            stream_id: "1-0".into(),
            event_id: Some(1),
            effect: Some("enter:3.r".into()),
            event: LogEvent::RoomAssigned { room_id: RoomId::parse("3.r").unwrap(), users: [u("c"), u("e")] },
        };
        s.logs.insert(u("c"), vec![assigned()]);
        s.logs.insert(u("e"), vec![assigned()]);
        let findings = audit(&s, 10, 60_000);
        let cmds: Vec<Vec<String>> = plan(&s, &findings, 10).commands.iter().map(args).collect();
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(cmds.iter().all(|c| c[0] == "HDEL"));
    }

    #[test]
    fn repairs_the_record_refutes_are_refused() {
        let ab = PairKey::new(&u("a"), &u("b")).unwrap();
        let mut state = PairState::default();
        state.swipe(&ab, 0, Direction::Right, None, 1, 4, || MatchId::parse("1.m").unwrap());
        state.swipe(&ab, 1, Direction::Right, None, 1, 4, || MatchId::parse("1.m").unwrap());
        let mut s = Snapshot::default();
        s.pairs.insert(ab.clone(), PairRecord { state, ..Default::default() });
        let f = Inconsistency::new(Kind::MatchIndexStale, "x".into()).repair(Repair::Pair {
            pair: ab.clone(),
            fix: PairFix::OweUnmatch { user: u("a"), match_id: MatchId::parse("1.m").unwrap() },
        });
        let planned = plan(&s, &[f], 10);
        assert_eq!(planned.outcomes[0].as_ref().map(|o| o.status), Some(RepairStatus::Refused));
    }
}
