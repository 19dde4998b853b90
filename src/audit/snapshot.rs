//! What an audit looks at: the stored state, parsed. No I/O here (the reader fills it), so the
//! checks run on snapshots built by hand in unit tests.
//!
//! Where a user is, as stored: in a room when their log's last `room_assigned` has no
//! `room_closed` after it (how a node restores the place when it loads the user), queued in every
//! pool whose line holds them, idle otherwise. Events a pair owes a user and that are not yet in the
//! user's log (its outbox) are on their way: the checks count them as applied.

use std::collections::{BTreeMap, BTreeSet};

use crate::coord::slot::{name_slot, user_slot, PairKey};
use crate::persist::keys::{self, PREFIX};
use crate::persist::records::PairRecord;
use crate::protocol::{Match, PoolName, RoomId, UserId};
use crate::queue::line_store::StoredWaiter;

/// One entry of a user's event stream, as far as the checks need it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The stream entry id (`<event id>-0` when written by matchd).
    pub stream_id: String,
    /// The `id` inside the event's JSON.
    pub event_id: Option<u64>,
    /// The pair effect it reports (`fx` field), if any.
    pub effect: Option<String>,
    pub event: LogEvent,
}

/// The events that move a user's place.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    RoomAssigned { room_id: RoomId, users: [UserId; 2] },
    RoomClosed { room_id: RoomId },
    Other,
}

/// A stored value that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub key: String,
    /// A field, member or entry id within the key, if the problem is there.
    pub part: Option<String>,
    pub why: String,
}

/// Everything an audit reads, parsed.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pairs: BTreeMap<PairKey, PairRecord>,
    /// `active:<pair>` guard keys and the match id each holds.
    pub guards: BTreeMap<PairKey, String>,
    /// `match:<id>` keys of the active matches (id -> stored value); absent when not stored.
    pub match_owners: BTreeMap<String, String>,
    /// Per slot, the pairs its open-rooms set lists.
    pub open_rooms_listed: BTreeMap<u16, BTreeSet<PairKey>>,
    /// Per slot, the pairs its outbox set lists.
    pub outbox_listed: BTreeMap<u16, BTreeSet<PairKey>>,
    /// Each user's event stream, oldest first.
    pub logs: BTreeMap<UserId, Vec<LogEntry>>,
    /// Each user's match index (match id -> match).
    pub indexes: BTreeMap<UserId, BTreeMap<String, Match>>,
    /// Each pool's line.
    pub lines: BTreeMap<PoolName, BTreeMap<UserId, StoredWaiter>>,
    pub unreadable: Vec<Unreadable>,
    /// Keys the scan found (all of matchd's, including ones the checks do not read).
    pub keys_scanned: usize,
}

/// The keys an audit reads, by what they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Pair(PairKey),
    Guard(PairKey),
    OpenRooms(u16),
    Outbox(u16),
    Events(UserId),
    Matches(UserId),
    Line(PoolName),
    /// Any other key (fences, members, lease, id lookups), or one not shaped as matchd writes it.
    Other,
}

/// What `key` holds, from its name (see `persist::keys`). A key whose hash tag is not the slot
/// matchd would put it in is never read by a node, so it is `Other` here too.
pub fn classify(key: &str) -> KeyKind {
    let Some(rest) = key.strip_prefix(PREFIX).and_then(|r| r.strip_prefix(":{")) else { return KeyKind::Other };
    let Some((tag, rest)) = rest.split_once("}:") else { return KeyKind::Other };
    let Ok(slot) = tag.parse::<u16>() else { return KeyKind::Other };
    let parts: Vec<&str> = rest.split(':').collect();
    let pair = |low: &str, high: &str| -> Option<PairKey> {
        let (low, high) = (UserId::parse(low).ok()?, UserId::parse(high).ok()?);
        let key = PairKey::new(&low, &high)?;
        (key.low == low && key.slot() == slot).then_some(key)
    };
    let user = |name: &str| UserId::parse(name).ok().filter(|u| user_slot(u) == slot);
    let kind = match parts.as_slice() {
        ["pair", low, high] => pair(low, high).map(KeyKind::Pair),
        ["active", low, high] => pair(low, high).map(KeyKind::Guard),
        ["rooms"] => Some(KeyKind::OpenRooms(slot)),
        ["outbox"] => Some(KeyKind::Outbox(slot)),
        ["events", name] => user(name).map(KeyKind::Events),
        ["matches", name] => user(name).map(KeyKind::Matches),
        ["pool", name] => PoolName::parse(name).ok().filter(|p| name_slot(p.as_str()) == slot).map(KeyKind::Line),
        _ => None,
    };
    kind.unwrap_or(KeyKind::Other)
}

/// Parses one stream entry's fields (`json`, `fx`) into a `LogEntry`; `Err` says what is wrong.
pub fn parse_log_entry(stream_id: &str, json: Option<&str>, fx: Option<&str>) -> Result<LogEntry, String> {
    let json = json.ok_or("no json field")?;
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let event_id = v.get("id").and_then(serde_json::Value::as_u64);
    let room_id = |v: &serde_json::Value| v.as_str().and_then(|s| RoomId::parse(s).ok());
    let event = match v.get("type").and_then(serde_json::Value::as_str) {
        Some("room_assigned") => {
            let room = &v["data"]["room"];
            let users = room["users"].as_array().and_then(|u| {
                let a = UserId::parse(u.first()?.as_str()?).ok()?;
                let b = UserId::parse(u.get(1)?.as_str()?).ok()?;
                Some([a, b])
            });
            match (room_id(&room["room_id"]), users) {
                (Some(room_id), Some(users)) => LogEvent::RoomAssigned { room_id, users },
                _ => return Err("room_assigned without a readable room".into()),
            }
        }
        Some("room_closed") => match room_id(&v["data"]["room_id"]) {
            Some(room_id) => LogEvent::RoomClosed { room_id },
            None => return Err("room_closed without a readable room id".into()),
        },
        Some(_) => LogEvent::Other,
        None => return Err("no type".into()),
    };
    Ok(LogEntry {
        stream_id: stream_id.to_string(),
        event_id,
        effect: fx.filter(|s| !s.is_empty()).map(str::to_string),
        event,
    })
}

/// The room a log (oldest first) leaves its user in, with the room's members: the last
/// `room_assigned` not followed by its `room_closed` (as `UserShard::restore` reads it).
pub fn log_room(log: &[LogEntry]) -> Option<(&RoomId, &[UserId; 2])> {
    let mut open = None;
    for e in log {
        match &e.event {
            LogEvent::RoomAssigned { room_id, users } => open = Some((room_id, users)),
            LogEvent::RoomClosed { room_id } if open.is_some_and(|(r, _)| r == room_id) => open = None,
            _ => {}
        }
    }
    open
}

impl Snapshot {
    /// Every user the snapshot knows of: with a log, an index, a line entry, or in a pair.
    pub fn users(&self) -> BTreeSet<UserId> {
        let mut users: BTreeSet<UserId> = self.logs.keys().chain(self.indexes.keys()).cloned().collect();
        for line in self.lines.values() {
            users.extend(line.keys().cloned());
        }
        for pair in self.pairs.keys() {
            users.insert(pair.low.clone());
            users.insert(pair.high.clone());
        }
        users
    }

    /// The effect ids in `user`'s log.
    pub fn logged(&self, user: &UserId, effect: &str) -> bool {
        self.logs.get(user).is_some_and(|log| log.iter().any(|e| e.effect.as_deref() == Some(effect)))
    }

    /// Whether pair `pair`'s outbox holds the effect `effect` for `user` (until the user's log
    /// confirms it; a re-published match change also mends the user's index, see
    /// `UserShard::heal_index`).
    pub fn owed(&self, pair: &PairKey, user: &UserId, effect: &str) -> bool {
        self.pairs.get(pair).is_some_and(|r| r.outbox.iter().any(|o| o.user == *user && o.effect_id == effect))
    }

    /// Whether pair `pair` owes `user` the effect `effect` and it is not in the user's log yet:
    /// an event on its way, which the checks count as applied.
    pub fn pending(&self, pair: &PairKey, user: &UserId, effect: &str) -> bool {
        self.owed(pair, user, effect) && !self.logged(user, effect)
    }

    /// Whether room `room_id` of `pair` is open in the pair's record.
    pub fn room_open(&self, pair: &PairKey, room_id: &RoomId) -> bool {
        self.pairs
            .get(pair)
            .is_some_and(|r| r.rooms.iter().any(|room| room.room.room_id == *room_id && room.closed.is_none()))
    }

    /// The open room `user`'s stored place is in: their log's room, if its pair still has it open
    /// and no close of it is on its way to them.
    pub fn place_room(&self, user: &UserId) -> Option<(PairKey, RoomId)> {
        let (room_id, users) = log_room(self.logs.get(user)?)?;
        let pair = PairKey::new(&users[0], &users[1])?;
        let closing = self.pending(&pair, user, &format!("close:{room_id}"));
        (self.room_open(&pair, room_id) && !closing).then(|| (pair, room_id.clone()))
    }

    /// The name of the key holding `pair`'s record (for findings).
    pub fn pair_key(pair: &PairKey) -> String {
        keys::pair(pair)
    }
}
