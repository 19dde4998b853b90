//! The checks: a pure function of a snapshot and the time. Each names the invariant it covers
//! (see `Kind::invariant` and docs/ARCHITECTURE.md, "State audit").

use std::collections::BTreeMap;

use super::repair::{PairFix, Repair};
use super::snapshot::{log_room, Snapshot};
use super::{Inconsistency, Kind};
use crate::coord::slot::PairKey;
use crate::persist::keys;
use crate::protocol::{MatchId, PoolName, RoomId, UserId};
use crate::queue::line_store::{line_key, StoredWaiter};

/// Every inconsistency in `snapshot`, sorted by kind. `outbox_max_age_ms` bounds how long an
/// event may wait in a pair's outbox before it counts as stuck.
pub fn audit(snapshot: &Snapshot, now_ms: u64, outbox_max_age_ms: u64) -> Vec<Inconsistency> {
    let mut out = Vec::new();
    unreadable(snapshot, &mut out);
    matches(snapshot, &mut out);
    indexes(snapshot, &mut out);
    rooms(snapshot, &mut out);
    places(snapshot, &mut out);
    lines(snapshot, &mut out);
    listings(snapshot, &mut out);
    outboxes(snapshot, now_ms, outbox_max_age_ms, &mut out);
    logs(snapshot, &mut out);
    out.sort_by_cached_key(|f| (f.kind, f.identity()));
    out
}

fn pair_repair(pair: &PairKey, fix: PairFix) -> Repair {
    Repair::Pair { pair: pair.clone(), fix }
}

fn name(pair: &PairKey) -> String {
    format!("{}/{}", pair.low, pair.high)
}

/// Where `user`'s stored place is, in words.
fn describe_place(s: &Snapshot, user: &UserId) -> String {
    if let Some((room, _)) = s.logs.get(user).and_then(|l| log_room(l)) {
        return format!("{user}'s log leaves them in room {room}");
    }
    let pools: Vec<&str> =
        s.lines.iter().filter(|(_, line)| line.contains_key(user)).map(|(p, _)| p.as_str()).collect();
    if pools.is_empty() {
        format!("{user} is idle")
    } else {
        format!("{user} waits in {}", pools.join(", "))
    }
}

fn unreadable(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    for u in &s.unreadable {
        let detail = match &u.part {
            Some(part) => format!("{} ({part}) cannot be read: {}", u.key, u.why),
            None => format!("{} cannot be read: {}", u.key, u.why),
        };
        let mut f = Inconsistency::new(Kind::UnreadableRecord, detail).key(&u.key);
        if let Some(part) = &u.part {
            f = f.id(part);
        }
        out.push(f);
    }
}

/// I1: an active match agrees with its guard key, its id key and both members' indexes; no guard
/// outlives its match.
fn matches(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    for (pair, record) in &s.pairs {
        let guard = s.guards.get(pair);
        let guard_key = keys::active_match(pair);
        let Some(m) = record.state.active_match() else {
            if let Some(g) = guard {
                let detail = format!("{guard_key} holds {g} but pair {} has no active match", name(pair));
                out.push(
                    Inconsistency::new(Kind::OrphanMatchGuard, detail)
                        .key(guard_key)
                        .key(keys::pair(pair))
                        .user(&pair.low)
                        .user(&pair.high)
                        .id(g)
                        .repair(pair_repair(pair, PairFix::SyncKeys)),
                );
            }
            continue;
        };
        let id = m.match_id.as_str();
        match guard {
            None => out.push(
                Inconsistency::new(
                    Kind::MatchGuardMissing,
                    format!("pair {} has active match {id} but {guard_key} is missing", name(pair)),
                )
                .key(&guard_key)
                .key(keys::pair(pair))
                .user(&pair.low)
                .user(&pair.high)
                .id(id)
                .repair(pair_repair(pair, PairFix::SyncKeys)),
            ),
            Some(g) if g != id => out.push(
                Inconsistency::new(
                    Kind::MatchGuardMismatch,
                    format!("pair {} has active match {id} but {guard_key} holds {g}", name(pair)),
                )
                .key(&guard_key)
                .key(keys::pair(pair))
                .user(&pair.low)
                .user(&pair.high)
                .id(id)
                .id(g),
            ),
            Some(_) => {}
        }
        let owner_key = keys::match_owner(pair.slot(), &m.match_id);
        if s.match_owners.get(id) != Some(&keys::pair_member(pair)) {
            out.push(
                Inconsistency::new(
                    Kind::MatchOwnerMissing,
                    format!("active match {id} of pair {}: {owner_key} does not name the pair", name(pair)),
                )
                .key(owner_key)
                .key(keys::pair(pair))
                .id(id)
                .repair(pair_repair(pair, PairFix::SyncKeys)),
            );
        }
        for user in &m.users {
            let indexed = s.indexes.get(user).is_some_and(|index| index.contains_key(id));
            // Owed (even if logged already): its next publish indexes it.
            if !indexed && !s.owed(pair, user, &format!("match:{id}")) {
                out.push(
                    Inconsistency::new(
                        Kind::MatchIndexMissing,
                        format!("{user}'s match index lacks {id}, the active match of pair {}", name(pair)),
                    )
                    .key(keys::matches(user))
                    .key(keys::pair(pair))
                    .user(user)
                    .id(id)
                    .repair(pair_repair(pair, PairFix::OweMatch { user: user.clone(), match_id: m.match_id.clone() })),
                );
            }
        }
    }
    for (pair, g) in &s.guards {
        if !s.pairs.contains_key(pair) {
            let guard_key = keys::active_match(pair);
            let detail = format!("{guard_key} holds {g} but pair {} has no stored record", name(pair));
            out.push(
                Inconsistency::new(Kind::OrphanMatchGuard, detail)
                    .key(guard_key)
                    .key(keys::pair(pair))
                    .user(&pair.low)
                    .user(&pair.high)
                    .id(g)
                    .repair(pair_repair(pair, PairFix::SyncKeys)),
            );
        }
    }
}

/// I1: every match a user's index names is the active match of its pair (or its end is on its way
/// to the user).
fn indexes(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    for (user, index) in &s.indexes {
        for (id, m) in index {
            let pair = PairKey::new(&m.users[0], &m.users[1]);
            let active = pair.as_ref().is_some_and(|pair| {
                s.pairs.get(pair).and_then(|r| r.state.active_match()).is_some_and(|a| a.match_id.as_str() == id)
            });
            let ending = pair.as_ref().is_some_and(|pair| s.owed(pair, user, &format!("unmatch:{id}")));
            if active || ending {
                continue;
            }
            let mut f = Inconsistency::new(
                Kind::MatchIndexStale,
                format!("{user}'s match index names {id}, which is not the active match of its pair"),
            )
            .key(keys::matches(user))
            .user(user)
            .id(id);
            match (pair, MatchId::parse(id)) {
                (Some(pair), Ok(match_id)) if pair.side_of(user).is_some() => {
                    f = f
                        .key(keys::pair(&pair))
                        .repair(pair_repair(&pair, PairFix::OweUnmatch { user: user.clone(), match_id }));
                }
                _ => f.not_repaired = Some("the entry names a pair the user is not a member of".into()),
            }
            out.push(f);
        }
    }
}

/// I5 (and I4): every member of an open room has it as their place (or is being told of it); a
/// user is a member of at most one open room.
fn rooms(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    let mut open_rooms: BTreeMap<&UserId, Vec<(&PairKey, &RoomId)>> = BTreeMap::new();
    for (pair, record) in &s.pairs {
        for room in record.rooms.iter().filter(|r| r.closed.is_none()) {
            let room_id = &room.room.room_id;
            for user in &room.room.users {
                open_rooms.entry(user).or_default().push((pair, room_id));
            }
            let elsewhere: Vec<&UserId> = room
                .room
                .users
                .iter()
                .filter(|user| {
                    let placed = s.logs.get(*user).and_then(|l| log_room(l)).is_some_and(|(r, _)| r == room_id);
                    !placed && !s.pending(pair, user, &format!("enter:{room_id}"))
                })
                .collect();
            if elsewhere.is_empty() {
                continue;
            }
            let places: Vec<String> = elsewhere.iter().map(|u| describe_place(s, u)).collect();
            let mut f = Inconsistency::new(
                Kind::OrphanRoom,
                format!("room {room_id} of pair {} is open, but {}", name(pair), places.join("; ")),
            )
            .key(keys::pair(pair))
            .id(room_id.as_str())
            .repair(pair_repair(pair, PairFix::CloseRoom { room_id: room_id.clone() }));
            for user in elsewhere {
                f = f.key(keys::events(user)).user(user);
            }
            out.push(f);
        }
    }
    for (user, rooms) in open_rooms.into_iter().filter(|(_, r)| r.len() > 1) {
        let ids: Vec<&str> = rooms.iter().map(|(_, r)| r.as_str()).collect();
        let mut f = Inconsistency::new(
            Kind::UserInTwoRooms,
            format!("{user} is a member of {} open rooms: {}", rooms.len(), ids.join(", ")),
        )
        .user(user);
        for (pair, room_id) in rooms {
            f = f.key(keys::pair(pair)).id(room_id.as_str());
        }
        out.push(f);
    }
}

/// I5: a user whose log leaves them in a room finds it open (or its close on its way).
fn places(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    for (user, log) in &s.logs {
        let Some((room_id, users)) = log_room(log) else { continue };
        let Some(pair) = PairKey::new(&users[0], &users[1]) else { continue };
        if s.room_open(&pair, room_id) || s.pending(&pair, user, &format!("close:{room_id}")) {
            continue;
        }
        let mut f = Inconsistency::new(
            Kind::RoomPlaceStale,
            format!("{user}'s log leaves them in room {room_id}, which pair {} does not have open", name(&pair)),
        )
        .key(keys::events(user))
        .key(keys::pair(&pair))
        .user(user)
        .id(room_id.as_str());
        if pair.side_of(user).is_some() {
            f = f.repair(pair_repair(&pair, PairFix::OweRoomClosed { user: user.clone(), room_id: room_id.clone() }));
        } else {
            f.not_repaired = Some("the room's members do not include the user".into());
        }
        out.push(f);
    }
}

/// I4: a user waits in at most one line, and never while in a room.
fn lines(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    let mut queued: BTreeMap<&UserId, Vec<(&PoolName, &StoredWaiter)>> = BTreeMap::new();
    for (pool, line) in &s.lines {
        for (user, waiter) in line {
            queued.entry(user).or_default().push((pool, waiter));
        }
    }
    // Rooms whose `room_assigned` is on its way to a member: the pool let them go already.
    let mut entering: BTreeMap<&UserId, &RoomId> = BTreeMap::new();
    for (pair, record) in &s.pairs {
        for room in record.rooms.iter().filter(|r| r.closed.is_none()) {
            for user in &room.room.users {
                if s.pending(pair, user, &format!("enter:{}", room.room.room_id)) {
                    entering.insert(user, &room.room.room_id);
                }
            }
        }
    }
    for (user, entries) in queued {
        for (pool, waiter) in entries.iter().filter(|(p, w)| w.ticket.pool != **p) {
            out.push(
                Inconsistency::new(
                    Kind::LineTicketMismatch,
                    format!("{user} waits in {pool}'s line with a ticket for {}", waiter.ticket.pool),
                )
                .key(line_key(pool))
                .user(user)
                .id(pool.as_str())
                .repair(Repair::Place { user: user.clone(), lines: vec![(*pool).clone()], keep: None }),
            );
        }
        let pools: Vec<PoolName> = entries.iter().map(|(p, _)| (*p).clone()).collect();
        let pool_names: Vec<&str> = pools.iter().map(PoolName::as_str).collect();
        if entries.len() > 1 {
            let newest = entries.iter().max_by_key(|(_, w)| w.joined_ms).map(|(_, w)| w.ticket.clone());
            let mut f = Inconsistency::new(
                Kind::QueuedTwice,
                format!("{user} waits in {} lines: {}", entries.len(), pool_names.join(", ")),
            )
            .user(user)
            .repair(Repair::Place { user: user.clone(), lines: pools.clone(), keep: newest });
            for pool in &pools {
                f = f.key(line_key(pool)).id(pool.as_str());
            }
            out.push(f);
        }
        let room = s.place_room(user).map(|(_, r)| r).or_else(|| entering.get(user).map(|r| (*r).clone()));
        if let Some(room_id) = room {
            let mut f = Inconsistency::new(
                Kind::QueuedInRoom,
                format!("{user} waits in {} while in room {room_id}", pool_names.join(", ")),
            )
            .user(user)
            .id(room_id.as_str())
            .repair(Repair::Place { user: user.clone(), lines: pools.clone(), keep: None });
            for pool in &pools {
                f = f.key(line_key(pool)).id(pool.as_str());
            }
            out.push(f.key(keys::events(user)));
        }
    }
}

/// I2/I5: the per-slot sets a new owner sweeps at start list exactly the pairs with an open room
/// and the pairs that owe events.
fn listings(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    let listed = |sets: &BTreeMap<u16, std::collections::BTreeSet<PairKey>>, pair: &PairKey| {
        sets.get(&pair.slot()).is_some_and(|set| set.contains(pair))
    };
    for (pair, record) in &s.pairs {
        let slot = pair.slot();
        if record.rooms.iter().any(|r| r.closed.is_none()) && !listed(&s.open_rooms_listed, pair) {
            out.push(
                Inconsistency::new(
                    Kind::OpenRoomNotListed,
                    format!("pair {} has an open room but {} does not list it", name(pair), keys::open_rooms(slot)),
                )
                .key(keys::open_rooms(slot))
                .key(keys::pair(pair))
                .repair(pair_repair(pair, PairFix::SyncKeys)),
            );
        }
        if !record.outbox.is_empty() && !listed(&s.outbox_listed, pair) {
            out.push(
                Inconsistency::new(
                    Kind::OutboxNotListed,
                    format!("pair {} owes events but {} does not list it", name(pair), keys::outbox(slot)),
                )
                .key(keys::outbox(slot))
                .key(keys::pair(pair))
                .repair(pair_repair(pair, PairFix::SyncKeys)),
            );
        }
    }
    let sets = [(&s.open_rooms_listed, true), (&s.outbox_listed, false)];
    for (sets, rooms) in sets {
        for (slot, set) in sets {
            for pair in set {
                let cause = s.pairs.get(pair).is_some_and(|r| {
                    if rooms {
                        r.rooms.iter().any(|room| room.closed.is_none())
                    } else {
                        !r.outbox.is_empty()
                    }
                });
                if cause {
                    continue;
                }
                let (set_key, what) =
                    if rooms { (keys::open_rooms(*slot), "no open room") } else { (keys::outbox(*slot), "no outbox") };
                out.push(
                    Inconsistency::new(
                        Kind::StaleListing,
                        format!("{set_key} lists pair {}, which has {what}", name(pair)),
                    )
                    .key(set_key)
                    .key(keys::pair(pair))
                    .repair(pair_repair(pair, PairFix::SyncKeys)),
                );
            }
        }
    }
}

/// I2: no event waits in an outbox (not yet in its user's log) longer than the bound.
fn outboxes(s: &Snapshot, now_ms: u64, max_age_ms: u64, out: &mut Vec<Inconsistency>) {
    for (pair, record) in &s.pairs {
        let stale: Vec<_> = record
            .outbox
            .iter()
            .filter(|o| o.created_ms > 0 && now_ms.saturating_sub(o.created_ms) > max_age_ms)
            .filter(|o| !s.logged(&o.user, &o.effect_id))
            .collect();
        let Some(oldest) = stale.iter().map(|o| o.created_ms).min() else { continue };
        let mut f = Inconsistency::new(
            Kind::StaleOutbox,
            format!(
                "pair {} owes {} event(s) not delivered for over {} ms (oldest: {} ms)",
                name(pair),
                stale.len(),
                max_age_ms,
                now_ms.saturating_sub(oldest)
            ),
        )
        .key(keys::pair(pair))
        .repair(pair_repair(pair, PairFix::SyncKeys));
        for o in stale {
            f = f.user(&o.user).id(format!("{}@{}", o.effect_id, o.user));
        }
        out.push(f);
    }
}

/// I2: a user's stored events have strictly increasing ids, each its stream entry's id.
fn logs(s: &Snapshot, out: &mut Vec<Inconsistency>) {
    for (user, log) in &s.logs {
        let mut last: Option<u64> = None;
        for e in log {
            let stream = e.stream_id.split_once('-').and_then(|(ms, seq)| Some((ms.parse::<u64>().ok()?, seq)));
            let matches_stream = match (stream, e.event_id) {
                (Some((ms, seq)), Some(id)) => ms == id && seq == "0",
                _ => false,
            };
            let increasing = match (last, e.event_id) {
                (Some(prev), Some(id)) => id > prev,
                (None, Some(_)) => true,
                _ => false,
            };
            if !(matches_stream && increasing) {
                let id = e.event_id.map_or_else(|| "none".to_string(), |i| i.to_string());
                out.push(
                    Inconsistency::new(
                        Kind::EventLogNotIncreasing,
                        format!(
                            "{user}'s stream entry {} holds event id {id}{}",
                            e.stream_id,
                            last.map_or_else(String::new, |l| format!(" after {l}"))
                        ),
                    )
                    .key(keys::events(user))
                    .user(user)
                    .id(&e.stream_id),
                );
                break;
            }
            last = e.event_id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::snapshot::{LogEntry, LogEvent, Unreadable};
    use crate::coord::pair_state::PairState;
    use crate::persist::records::{OutboxEntry, PairRecord};
    use crate::protocol::{Direction, EventKind, JoinRequest, Match, Room};
    use crate::queue::room::{Closed, RoomState};
    use crate::session::IndexChange;

    const NOW: u64 = 1_000_000;

    fn u(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn pair(a: &str, b: &str) -> PairKey {
        PairKey::new(&u(a), &u(b)).unwrap()
    }

    fn pool(name: &str) -> PoolName {
        PoolName::parse(name).unwrap()
    }

    /// A pair state with an active match `id`.
    fn matched(key: &PairKey, id: &str) -> (PairState, Match) {
        let mut state = PairState::default();
        let new_id = || MatchId::parse(id).unwrap();
        state.swipe(key, 0, Direction::Right, None, 5, 4, new_id);
        let d = state.swipe(key, 1, Direction::Right, None, 5, 4, || MatchId::parse(id).unwrap());
        let m = d.reply.match_.unwrap();
        (state, m)
    }

    fn room(key: &PairKey, id: &str) -> RoomState {
        let ticket = JoinRequest::default();
        RoomState {
            room: Room {
                room_id: RoomId::parse(id).unwrap(),
                pool: pool("default"),
                users: [key.low.clone(), key.high.clone()],
                created_at: 1,
                payload: serde_json::json!({}),
            },
            tickets: [ticket.clone(), ticket],
            closed: None,
            incarnation: 1,
        }
    }

    fn entry(id: u64, event: LogEvent, effect: Option<&str>) -> LogEntry {
        LogEntry { stream_id: format!("{id}-0"), event_id: Some(id), effect: effect.map(str::to_string), event }
    }

    fn assigned(id: u64, key: &PairKey, room_id: &str) -> LogEntry {
        let event = LogEvent::RoomAssigned {
            room_id: RoomId::parse(room_id).unwrap(),
            users: [key.low.clone(), key.high.clone()],
        };
        entry(id, event, Some(&format!("enter:{room_id}")))
    }

    fn closed(id: u64, room_id: &str) -> LogEntry {
        entry(id, LogEvent::RoomClosed { room_id: RoomId::parse(room_id).unwrap() }, Some(&format!("close:{room_id}")))
    }

    /// A consistent snapshot: a matched pair (a, b) both indexed; a pair (c, d) in an open room
    /// both know about; e waiting in one line; f whose room closed.
    fn clean() -> Snapshot {
        let mut s = Snapshot::default();
        let ab = pair("a", "b");
        let (state, m) = matched(&ab, "1.m");
        s.pairs.insert(ab.clone(), PairRecord { state, outbox: vec![], rooms: vec![] });
        s.guards.insert(ab.clone(), "1.m".into());
        s.match_owners.insert("1.m".into(), keys::pair_member(&ab));
        for user in [&ab.low, &ab.high] {
            s.indexes.entry(user.clone()).or_default().insert("1.m".into(), m.clone());
            s.logs.entry(user.clone()).or_default().push(entry(1, LogEvent::Other, Some("match:1.m")));
        }
        let cd = pair("c", "d");
        s.pairs.insert(cd.clone(), PairRecord { rooms: vec![room(&cd, "2.r")], ..Default::default() });
        s.open_rooms_listed.entry(cd.slot()).or_default().insert(cd.clone());
        for user in [&cd.low, &cd.high] {
            s.logs.entry(user.clone()).or_default().push(assigned(1, &cd, "2.r"));
        }
        let waiter = StoredWaiter { ticket: JoinRequest::default(), joined_ms: 3, seq: Default::default() };
        s.lines.entry(pool("default")).or_default().insert(u("e"), waiter);
        let fg = pair("f", "g");
        let mut gone = room(&fg, "3.r");
        gone.closed = Some(Closed { at_ms: 2, requeued: [false, false] });
        s.pairs.insert(fg.clone(), PairRecord { rooms: vec![gone], ..Default::default() });
        s.logs.insert(u("f"), vec![assigned(1, &fg, "3.r"), closed(2, "3.r")]);
        s
    }

    fn kinds(s: &Snapshot) -> Vec<Kind> {
        audit(s, NOW, 60_000).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_consistent_snapshot_has_no_findings() {
        assert_eq!(audit(&clean(), NOW, 60_000), vec![]);
        assert_eq!(audit(&Snapshot::default(), NOW, 60_000), vec![]);
    }

    #[test]
    fn guards_follow_active_matches() {
        let ab = pair("a", "b");
        let mut s = clean();
        s.guards.remove(&ab);
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::MatchGuardMissing);
        assert_eq!(found[0].repair, Some(Repair::Pair { pair: ab.clone(), fix: PairFix::SyncKeys }));
        assert!(found[0].keys.contains(&keys::active_match(&ab)));

        let mut s = clean();
        s.guards.insert(ab.clone(), "1.other".into());
        let found = audit(&s, NOW, 60_000);
        assert_eq!(kinds(&s), vec![Kind::MatchGuardMismatch]);
        assert_eq!(found[0].repair, None, "two matches for one pair need a person");
        assert!(found[0].not_repaired.is_some());

        let mut s = clean();
        let xy = pair("x", "y");
        s.guards.insert(xy.clone(), "9.gone".into());
        s.pairs.insert(pair("c", "e"), PairRecord::default());
        s.guards.insert(pair("c", "e"), "8.gone".into());
        assert_eq!(kinds(&s), vec![Kind::OrphanMatchGuard, Kind::OrphanMatchGuard]);
    }

    #[test]
    fn an_active_match_is_in_both_indexes_and_findable_by_id() {
        let ab = pair("a", "b");
        let mut s = clean();
        s.match_owners.clear();
        assert_eq!(kinds(&s), vec![Kind::MatchOwnerMissing]);

        let mut s = clean();
        s.indexes.get_mut(&u("b")).unwrap().clear();
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::MatchIndexMissing]);
        assert_eq!(found[0].users, vec![u("b")]);
        let fix = PairFix::OweMatch { user: u("b"), match_id: MatchId::parse("1.m").unwrap() };
        assert_eq!(found[0].repair, Some(Repair::Pair { pair: ab.clone(), fix }));

        // The match event on its way to b explains the missing entry.
        let m = s.pairs[&ab].state.active_match().unwrap().clone();
        s.pairs.get_mut(&ab).unwrap().outbox.push(crate::audit::repair::match_entry(&u("b"), &m, NOW));
        s.outbox_listed.entry(ab.slot()).or_default().insert(ab.clone());
        s.logs.get_mut(&u("b")).unwrap().clear();
        assert_eq!(kinds(&s), vec![]);
    }

    #[test]
    fn an_index_entry_of_an_ended_match_is_stale_unless_its_end_is_on_its_way() {
        let ab = pair("a", "b");
        let mut s = clean();
        let (_, old) = matched(&ab, "0.old");
        s.indexes.get_mut(&u("a")).unwrap().insert("0.old".into(), old);
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::MatchIndexStale]);
        let fix = PairFix::OweUnmatch { user: u("a"), match_id: MatchId::parse("0.old").unwrap() };
        assert_eq!(found[0].repair, Some(Repair::Pair { pair: ab.clone(), fix }));

        s.pairs.get_mut(&ab).unwrap().outbox.push(crate::audit::repair::unmatch_entry(
            &u("a"),
            &MatchId::parse("0.old").unwrap(),
            &u("b"),
            NOW,
        ));
        s.outbox_listed.entry(ab.slot()).or_default().insert(ab.clone());
        assert_eq!(kinds(&s), vec![]);
    }

    #[test]
    fn an_open_room_whose_member_is_elsewhere_is_an_orphan() {
        let cd = pair("c", "d");
        let mut s = clean();
        // d's log says the room closed (their place is idle) while the pair keeps it open.
        s.logs.get_mut(&u("d")).unwrap().push(closed(2, "2.r"));
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::OrphanRoom]);
        assert_eq!(found[0].users, vec![u("d")]);
        let fix = PairFix::CloseRoom { room_id: RoomId::parse("2.r").unwrap() };
        assert_eq!(found[0].repair, Some(Repair::Pair { pair: cd.clone(), fix }));
        assert!(found[0].detail.contains("d is idle"), "{}", found[0].detail);

        // A room whose `room_assigned` is still on its way to a member is not an orphan.
        let mut s = clean();
        s.logs.remove(&u("d"));
        let r = &s.pairs[&cd].rooms[0].room.clone();
        s.pairs.get_mut(&cd).unwrap().outbox.push(OutboxEntry {
            effect_id: "enter:2.r".into(),
            user: u("d"),
            kind: EventKind::RoomAssigned { room: r.clone() },
            change: IndexChange::EnterRoom { room_id: r.room_id.clone(), ticket: JoinRequest::default() },
            created_ms: NOW,
        });
        s.outbox_listed.entry(cd.slot()).or_default().insert(cd.clone());
        assert_eq!(kinds(&s), vec![]);
    }

    #[test]
    fn a_user_in_two_open_rooms_is_found_with_the_orphan() {
        let mut s = clean();
        let ce = pair("c", "e");
        s.pairs.insert(ce.clone(), PairRecord { rooms: vec![room(&ce, "4.r")], ..Default::default() });
        s.open_rooms_listed.entry(ce.slot()).or_default().insert(ce.clone());
        s.logs.insert(u("e"), vec![assigned(1, &ce, "4.r")]);
        s.lines.clear();
        let found = kinds(&s);
        assert_eq!(found, vec![Kind::UserInTwoRooms, Kind::OrphanRoom], "c's log names 2.r, so 4.r is the orphan");
    }

    #[test]
    fn a_log_room_that_is_not_open_is_a_stale_place() {
        let mut s = clean();
        let fg = pair("f", "g");
        // g's log never heard of the close.
        s.logs.insert(u("g"), vec![assigned(1, &fg, "3.r")]);
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::RoomPlaceStale]);
        let fix = PairFix::OweRoomClosed { user: u("g"), room_id: RoomId::parse("3.r").unwrap() };
        assert_eq!(found[0].repair, Some(Repair::Pair { pair: fg.clone(), fix }));
        // Its close on the way to g explains it.
        s.pairs.get_mut(&fg).unwrap().outbox.push(crate::audit::repair::room_closed_entry(
            &u("g"),
            &RoomId::parse("3.r").unwrap(),
            NOW,
        ));
        s.outbox_listed.entry(fg.slot()).or_default().insert(fg.clone());
        assert_eq!(kinds(&s), vec![]);
    }

    #[test]
    fn a_user_waits_in_one_line_and_never_while_in_a_room() {
        let mut s = clean();
        let older = StoredWaiter {
            ticket: JoinRequest { pool: pool("p2"), ..Default::default() },
            joined_ms: 1,
            seq: Default::default(),
        };
        s.lines.entry(pool("p2")).or_default().insert(u("e"), older);
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::QueuedTwice]);
        match &found[0].repair {
            Some(Repair::Place { user, lines, keep }) => {
                assert_eq!(user, &u("e"));
                assert_eq!(lines.len(), 2);
                assert_eq!(keep.as_ref().map(|t| t.pool.as_str()), Some("default"), "the newest entry stays");
            }
            other => panic!("{other:?}"),
        }

        let mut s = clean();
        let waiter = StoredWaiter { ticket: JoinRequest::default(), joined_ms: 9, seq: Default::default() };
        s.lines.entry(pool("default")).or_default().insert(u("c"), waiter);
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::QueuedInRoom]);
        assert_eq!(found[0].ids[0], "2.r");
        assert_eq!(found[0].repair, Some(Repair::Place { user: u("c"), lines: vec![pool("default")], keep: None }));
    }

    #[test]
    fn a_line_entry_names_its_own_pool() {
        let mut s = clean();
        let stray = StoredWaiter {
            ticket: JoinRequest { pool: pool("elsewhere"), ..Default::default() },
            joined_ms: 3,
            seq: Default::default(),
        };
        s.lines.get_mut(&pool("default")).unwrap().insert(u("e"), stray);
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::LineTicketMismatch]);
        assert_eq!(found[0].repair, Some(Repair::Place { user: u("e"), lines: vec![pool("default")], keep: None }));
    }

    #[test]
    fn recovery_sets_list_exactly_what_needs_recovering() {
        let cd = pair("c", "d");
        let mut s = clean();
        s.open_rooms_listed.clear();
        assert_eq!(kinds(&s), vec![Kind::OpenRoomNotListed]);

        let mut s = clean();
        s.outbox_listed.entry(cd.slot()).or_default().insert(cd.clone());
        s.open_rooms_listed.entry(pair("a", "b").slot()).or_default().insert(pair("a", "b"));
        assert_eq!(kinds(&s), vec![Kind::StaleListing, Kind::StaleListing]);

        let mut s = clean();
        let r = crate::audit::repair::room_closed_entry(&u("f"), &RoomId::parse("3.r").unwrap(), NOW);
        s.pairs.get_mut(&pair("f", "g")).unwrap().outbox.push(r);
        assert_eq!(kinds(&s), vec![Kind::OutboxNotListed]);
    }

    #[test]
    fn an_event_waiting_past_the_bound_is_stale() {
        let fg = pair("f", "g");
        let mut s = clean();
        s.logs.insert(u("g"), vec![assigned(1, &fg, "3.r")]);
        let mut owed = crate::audit::repair::room_closed_entry(&u("g"), &RoomId::parse("3.r").unwrap(), NOW - 5_000);
        s.pairs.get_mut(&fg).unwrap().outbox.push(owed.clone());
        s.outbox_listed.entry(fg.slot()).or_default().insert(fg.clone());
        assert_eq!(kinds(&s), vec![]);
        assert_eq!(audit(&s, NOW, 1_000).iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::StaleOutbox]);
        // Delivered (in the log) but not yet dropped is not stuck; nor is an entry of unknown age.
        s.logs.get_mut(&u("g")).unwrap().push(closed(2, "3.r"));
        assert_eq!(audit(&s, NOW, 1_000), vec![]);
        owed.created_ms = 0;
        s.pairs.get_mut(&fg).unwrap().outbox = vec![owed];
        s.logs.insert(u("g"), vec![assigned(1, &fg, "3.r")]);
        assert_eq!(audit(&s, NOW, 1_000), vec![]);
    }

    #[test]
    fn event_ids_increase_and_equal_their_stream_ids() {
        let mut s = clean();
        s.logs.get_mut(&u("a")).unwrap().push(entry(3, LogEvent::Other, None));
        assert_eq!(kinds(&s), vec![], "gaps are allowed");
        let mut wrong = entry(4, LogEvent::Other, None);
        wrong.event_id = Some(2);
        s.logs.get_mut(&u("a")).unwrap().push(wrong);
        let found = audit(&s, NOW, 60_000);
        assert_eq!(found.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::EventLogNotIncreasing]);
        assert_eq!(found[0].ids, vec!["4-0".to_string()]);
        assert_eq!(found[0].repair, None);
    }

    #[test]
    fn unreadable_values_are_reported_and_findings_have_stable_identities() {
        let mut s = clean();
        s.unreadable.push(Unreadable { key: "matchd:{1}:pair:x:y".into(), part: None, why: "not JSON".into() });
        let first = audit(&s, NOW, 60_000);
        assert_eq!(first.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::UnreadableRecord]);
        let again = audit(&s, NOW + 5_000, 60_000);
        assert_eq!(crate::audit::confirmed(&first, again).len(), 1);
        assert!(crate::audit::confirmed(&first, audit(&clean(), NOW, 60_000)).is_empty());
    }
}
