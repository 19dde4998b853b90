//! The invariants, checked over a whole recorded history rather than over one happy path:
//! - I1 one match: a pair's answers and events name at most one match, there is one when both
//!   sides like each other, and none when they do not;
//! - I2 told exactly once: every connection that was open sees each of its user's events once, with
//!   strictly increasing ids;
//! - I3 idempotent actions: a repeated `swipe_id` gets the first answer (or the pair's current match);
//! - I4 one place per user: no user is assigned a second room before the first closed;
//! - I5 nobody alone: every member of a closed room hears `room_closed`;
//! - I6 nobody stuck: a user who joined with others waiting gets a room;
//! - I2 for published events (server API): every connection of each listed user, open since before
//!   the publish, sees it once, and nobody else does.
//!
//! Plus what a client can see of the contract itself: failed requests, malformed frames,
//! connections the server dropped.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use serde::Serialize;

use super::history::{History, StreamRecord, SwipeAnswer};
use super::wire::EventBody;

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// I1: a pair got more than one match.
    DoubleMatch { pair: String, match_ids: Vec<String> },
    /// I1: both sides like each other and no match was created.
    MissingMatch { pair: String },
    /// I1: a match although one side never liked the other.
    PhantomMatch { pair: String, match_id: String },
    /// A match whose users are not two distinct users, or not the pair that swiped.
    BadMatch { match_id: String, detail: String },
    /// I3: a repeated `swipe_id` got a different answer.
    IdempotencyBroken { user: String, swipe_id: String, first: String, again: String },
    /// I2: ids on a connection must strictly increase.
    NonIncreasingId { conn: String, prev: u64, next: u64 },
    /// I2: the same event (or event id) twice on one connection.
    DuplicateEvent { conn: String, event: String },
    /// I2: an event a connection should have seen and did not.
    MissingEvent { conn: String, event: String },
    /// An event about someone else.
    UnexpectedEvent { conn: String, event: String },
    /// A connection that ended without the client closing it.
    ConnectionLost { conn: String, detail: String },
    /// A frame that does not follow the contract.
    BadFrame { conn: String, detail: String },
    /// I4: a second room before the first one closed.
    UserInTwoRooms { user: String, rooms: Vec<String> },
    /// I5: a room closed and this member never heard `room_closed`.
    LonelyRoom { room: String, user: String },
    /// A room still open at the end although the scenario closed every room.
    RoomNeverClosed { room: String },
    /// A room whose membership does not make sense.
    BadRoom { room: String, detail: String },
    /// I6: a user who joined while compatible users waited never got a room.
    StuckInQueue { user: String },
    /// Requests that failed, grouped by request and answer.
    RequestFailed { what: String, detail: String, count: usize },
    /// The server's own consistency checks failed during the run (`matchd_invariant_violations_total`).
    ServerCounted { check: String, count: u64 },
}

impl Violation {
    /// The snake_case kind, as in the JSON report.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::DoubleMatch { .. } => "double_match",
            Violation::MissingMatch { .. } => "missing_match",
            Violation::PhantomMatch { .. } => "phantom_match",
            Violation::BadMatch { .. } => "bad_match",
            Violation::IdempotencyBroken { .. } => "idempotency_broken",
            Violation::NonIncreasingId { .. } => "non_increasing_id",
            Violation::DuplicateEvent { .. } => "duplicate_event",
            Violation::MissingEvent { .. } => "missing_event",
            Violation::UnexpectedEvent { .. } => "unexpected_event",
            Violation::ConnectionLost { .. } => "connection_lost",
            Violation::BadFrame { .. } => "bad_frame",
            Violation::UserInTwoRooms { .. } => "user_in_two_rooms",
            Violation::LonelyRoom { .. } => "lonely_room",
            Violation::RoomNeverClosed { .. } => "room_never_closed",
            Violation::BadRoom { .. } => "bad_room",
            Violation::StuckInQueue { .. } => "stuck_in_queue",
            Violation::RequestFailed { .. } => "request_failed",
            Violation::ServerCounted { .. } => "server_counted",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::DoubleMatch { pair, match_ids } => {
                write!(f, "pair {pair} has {} matches: {}", match_ids.len(), match_ids.join(", "))
            }
            Violation::MissingMatch { pair } => write!(f, "pair {pair} like each other but never matched"),
            Violation::PhantomMatch { pair, match_id } => {
                write!(f, "pair {pair} matched ({match_id}) although one side never liked the other")
            }
            Violation::BadMatch { match_id, detail } => write!(f, "match {match_id}: {detail}"),
            Violation::IdempotencyBroken { user, swipe_id, first, again } => {
                write!(f, "{user} repeated swipe_id {swipe_id}: first answer {first}, then {again}")
            }
            Violation::NonIncreasingId { conn, prev, next } => write!(f, "{conn}: event id {next} after {prev}"),
            Violation::DuplicateEvent { conn, event } => write!(f, "{conn}: {event} received twice"),
            Violation::MissingEvent { conn, event } => write!(f, "{conn}: never received {event}"),
            Violation::UnexpectedEvent { conn, event } => write!(f, "{conn}: unexpected {event}"),
            Violation::ConnectionLost { conn, detail } => write!(f, "{conn}: connection lost: {detail}"),
            Violation::BadFrame { conn, detail } => write!(f, "{conn}: {detail}"),
            Violation::UserInTwoRooms { user, rooms } => {
                write!(f, "{user} was assigned {} before {} closed", rooms.last().map_or("?", |r| r), rooms[0])
            }
            Violation::LonelyRoom { room, user } => write!(f, "room {room} closed but {user} never heard room_closed"),
            Violation::RoomNeverClosed { room } => write!(f, "room {room} never closed"),
            Violation::BadRoom { room, detail } => write!(f, "room {room}: {detail}"),
            Violation::StuckInQueue { user } => write!(f, "{user} joined the queue and never got a room"),
            Violation::RequestFailed { what, detail, count } => write!(f, "{count} x {what} failed: {detail}"),
            Violation::ServerCounted { check, count } => {
                write!(f, "the server counted {count} invariant violation(s) of {check} during the run")
            }
        }
    }
}

type Pair = (String, String);

fn pair_of(a: &str, b: &str) -> Pair {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn pair_label(p: &Pair) -> String {
    format!("{}+{}", p.0, p.1)
}

/// What the history says about one unordered pair.
#[derive(Debug, Default)]
struct PairView {
    /// Each side's latest answered swipe: right?
    last_right: [Option<bool>; 2],
    /// Each side liked the other at least once.
    ever_right: [bool; 2],
    /// A swipe of the pair failed, so its effect is unknown.
    uncertain: bool,
    /// Swipes of this pair are in the history (else only events mention it).
    swiped: bool,
    match_ids: BTreeSet<String>,
}

/// Checks every invariant over `h`.
pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    check_failures(h, &mut out);
    check_streams(h, &mut out);
    let pairs = check_pairs(h, &mut out);
    check_idempotency(h, &pairs, &mut out);
    check_delivery(h, &pairs, &mut out);
    check_rooms(h, &mut out);
    check_joins(h, &mut out);
    check_publishes(h, &mut out);
    out
}

/// I2 for events the app's backend published: each one reached every connection (open since
/// before the publish) of each listed user, and no connection of anyone else. Duplicates are
/// caught per connection by `check_streams` (the event's key is its type and `seq`).
fn check_publishes(h: &History, out: &mut Vec<Violation>) {
    if h.publishes.is_empty() {
        return;
    }
    let listed: HashSet<(&str, &str, u64)> =
        h.publishes.iter().flat_map(|p| p.users.iter().map(move |u| (u.as_str(), p.kind.as_str(), p.seq))).collect();
    let mut seen: HashSet<(&str, &str, u64)> = HashSet::new();
    for s in &h.streams {
        for e in &s.events {
            if let EventBody::App { kind, seq: Some(seq) } = &e.body {
                if !listed.contains(&(s.user.as_str(), kind.as_str(), *seq)) {
                    out.push(Violation::UnexpectedEvent { conn: s.label.clone(), event: format!("{kind} {seq}") });
                }
                seen.insert((s.label.as_str(), kind.as_str(), *seq));
            }
        }
    }
    let mut by_user: BTreeMap<&str, Vec<&StreamRecord>> = BTreeMap::new();
    for s in h.streams.iter().filter(|s| s.lost.is_none()) {
        by_user.entry(s.user.as_str()).or_default().push(s);
    }
    for p in &h.publishes {
        for user in &p.users {
            for s in by_user.get(user.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                if s.ready_before(p.sent) && !seen.contains(&(s.label.as_str(), p.kind.as_str(), p.seq)) {
                    out.push(Violation::MissingEvent { conn: s.label.clone(), event: format!("{} {}", p.kind, p.seq) });
                }
            }
        }
    }
}

fn check_failures(h: &History, out: &mut Vec<Violation>) {
    let mut groups: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for f in &h.failures {
        *groups.entry((f.what.as_str(), f.detail.as_str())).or_default() += 1;
    }
    for ((what, detail), count) in groups {
        out.push(Violation::RequestFailed { what: what.to_string(), detail: detail.to_string(), count });
    }
}

fn check_streams(h: &History, out: &mut Vec<Violation>) {
    for s in &h.streams {
        let conn = || s.label.clone();
        if s.hello.is_none() && s.lost.is_none() {
            out.push(Violation::MissingEvent { conn: conn(), event: "hello".into() });
        }
        let mut prev = s.hello.map(|(id, _)| id);
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for e in &s.events {
            if !ids.insert(e.id) {
                out.push(Violation::DuplicateEvent { conn: conn(), event: format!("event id {}", e.id) });
                continue;
            }
            if let Some(p) = prev {
                if e.id <= p {
                    out.push(Violation::NonIncreasingId { conn: conn(), prev: p, next: e.id });
                }
            }
            prev = Some(e.id);
            if let Some(k) = e.body.key() {
                if !keys.insert(k.clone()) {
                    out.push(Violation::DuplicateEvent { conn: conn(), event: k });
                }
            }
        }
        if let Some(detail) = &s.lost {
            out.push(Violation::ConnectionLost { conn: conn(), detail: detail.clone() });
        }
        for p in &s.problems {
            out.push(Violation::BadFrame { conn: conn(), detail: p.clone() });
        }
    }
}

/// I1 over answers and events. Returns the pairs for the later checks.
fn check_pairs(h: &History, out: &mut Vec<Violation>) -> BTreeMap<Pair, PairView> {
    let mut pairs: BTreeMap<Pair, PairView> = BTreeMap::new();
    let mut order: Vec<usize> = (0..h.swipes.len()).collect();
    order.sort_by_key(|&i| h.swipes[i].sent);
    for i in order {
        let s = &h.swipes[i];
        let key = pair_of(&s.actor, &s.target);
        let side = usize::from(s.actor != key.0);
        let view = pairs.entry(key.clone()).or_default();
        view.swiped = true;
        let Some(answer) = &s.answer else {
            view.uncertain = true;
            continue;
        };
        if !s.retry {
            view.last_right[side] = Some(s.right);
        }
        view.ever_right[side] |= s.right;
        if let Some(m) = &answer.match_ {
            let mut users = m.users.clone();
            users.sort();
            if users != [key.0.clone(), key.1.clone()] {
                out.push(Violation::BadMatch {
                    match_id: m.match_id.clone(),
                    detail: format!("answer to {} names users {:?}", pair_label(&key), m.users),
                });
            }
            view.match_ids.insert(m.match_id.clone());
        } else if answer.status == "matched" {
            out.push(Violation::BadMatch {
                match_id: "?".into(),
                detail: format!("{} got `matched` without a match", s.actor),
            });
        }
    }
    let mut bad_events = BTreeSet::new();
    for s in &h.streams {
        for e in &s.events {
            if let EventBody::Match { match_id, users } = &e.body {
                if users.len() != 2 || users[0] == users[1] {
                    if bad_events.insert(match_id.clone()) {
                        out.push(Violation::BadMatch {
                            match_id: match_id.clone(),
                            detail: format!("event names users {users:?}"),
                        });
                    }
                    continue;
                }
                pairs.entry(pair_of(&users[0], &users[1])).or_default().match_ids.insert(match_id.clone());
            }
        }
    }
    for (key, view) in &pairs {
        let label = pair_label(key);
        if view.match_ids.len() > 1 {
            out.push(Violation::DoubleMatch { pair: label, match_ids: view.match_ids.iter().cloned().collect() });
        } else if view.uncertain {
            // A failed swipe may or may not have counted: nothing more can be said of this pair.
        } else if view.match_ids.is_empty() {
            if view.last_right == [Some(true), Some(true)] {
                out.push(Violation::MissingMatch { pair: label });
            }
        } else if view.swiped && !(view.ever_right[0] && view.ever_right[1]) {
            let match_id = view.match_ids.iter().next().cloned().unwrap_or_default();
            out.push(Violation::PhantomMatch { pair: label, match_id });
        }
    }
    pairs
}

fn describe_answer(a: &SwipeAnswer) -> String {
    match &a.match_ {
        Some(m) => format!("{} {}", a.status, m.match_id),
        None => a.status.clone(),
    }
}

/// I3: every repeat of a `swipe_id` answers like the first time, or with the pair's one match.
fn check_idempotency(h: &History, pairs: &BTreeMap<Pair, PairView>, out: &mut Vec<Violation>) {
    let mut by_key: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, s) in h.swipes.iter().enumerate() {
        if let (Some(id), Some(_)) = (&s.swipe_id, &s.answer) {
            by_key.entry((s.actor.as_str(), id.as_str())).or_default().push(i);
        }
    }
    for ((user, swipe_id), mut idx) in by_key {
        if idx.len() < 2 {
            continue;
        }
        idx.sort_by_key(|&i| (h.swipes[i].retry, h.swipes[i].sent));
        let first = &h.swipes[idx[0]];
        let Some(first_answer) = &first.answer else { continue };
        let current = pairs
            .get(&pair_of(&first.actor, &first.target))
            .filter(|v| v.match_ids.len() == 1)
            .and_then(|v| v.match_ids.iter().next());
        for &i in &idx[1..] {
            let Some(again) = &h.swipes[i].answer else { continue };
            let same = again == first_answer;
            let current_match =
                again.status == "matched" && again.match_.as_ref().map(|m| &m.match_id) == current && current.is_some();
            if !same && !current_match {
                out.push(Violation::IdempotencyBroken {
                    user: user.to_string(),
                    swipe_id: swipe_id.to_string(),
                    first: describe_answer(first_answer),
                    again: describe_answer(again),
                });
            }
        }
    }
}

/// I2 for matches: each connection of a matched user, open since the actions began, saw the match.
fn check_delivery(h: &History, pairs: &BTreeMap<Pair, PairView>, out: &mut Vec<Violation>) {
    for s in &h.streams {
        for e in &s.events {
            if let EventBody::Match { match_id, users } = &e.body {
                if !users.contains(&s.user) {
                    out.push(Violation::UnexpectedEvent {
                        conn: s.label.clone(),
                        event: format!("match {match_id} of {users:?}"),
                    });
                }
            }
        }
    }
    let Some(from) = h.actions_from else { return };
    let mut by_user: BTreeMap<&str, Vec<&StreamRecord>> = BTreeMap::new();
    for s in &h.streams {
        if s.ready_before(from) && s.lost.is_none() {
            by_user.entry(s.user.as_str()).or_default().push(s);
        }
    }
    for (key, view) in pairs {
        if view.match_ids.len() != 1 {
            continue;
        }
        for match_id in &view.match_ids {
            for user in [&key.0, &key.1] {
                for s in by_user.get(user.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                    let seen = s.count_matching(|b| matches!(b, EventBody::Match { match_id: m, .. } if m == match_id));
                    if seen == 0 {
                        out.push(Violation::MissingEvent { conn: s.label.clone(), event: format!("match {match_id}") });
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct RoomView {
    users: Option<BTreeSet<String>>,
    closed: bool,
    heard_closed: BTreeSet<String>,
    reported: bool,
}

fn note_members(rooms: &mut BTreeMap<String, RoomView>, room: &str, users: &[String], out: &mut Vec<Violation>) {
    let set: BTreeSet<String> = users.iter().cloned().collect();
    let view = rooms.entry(room.to_string()).or_default();
    if view.reported {
        return;
    }
    if set.len() < 2 || set.len() != users.len() {
        view.reported = true;
        out.push(Violation::BadRoom { room: room.to_string(), detail: format!("members {users:?}") });
        return;
    }
    match &view.users {
        None => view.users = Some(set),
        Some(known) if *known != set => {
            view.reported = true;
            out.push(Violation::BadRoom {
                room: room.to_string(),
                detail: format!("members {known:?} in one place, {set:?} in another"),
            });
        }
        Some(_) => {}
    }
}

/// I4 and I5 over joins, skips and room events.
fn check_rooms(h: &History, out: &mut Vec<Violation>) {
    let mut rooms: BTreeMap<String, RoomView> = BTreeMap::new();
    for j in &h.joins {
        if let Some(r) = &j.room {
            note_members(&mut rooms, &r.room_id, &r.users, out);
            if !r.users.contains(&j.user) {
                out.push(Violation::BadRoom {
                    room: r.room_id.clone(),
                    detail: format!("{} joined into it but is not a member", j.user),
                });
            }
        }
    }
    for s in &h.skips {
        rooms.entry(s.room_id.clone()).or_default().closed = true;
    }
    let mut timelines: BTreeMap<&str, BTreeMap<u64, &EventBody>> = BTreeMap::new();
    let mut listening: BTreeSet<&str> = BTreeSet::new();
    for s in &h.streams {
        if s.hello.is_some() && s.lost.is_none() {
            listening.insert(&s.user);
        }
        for e in &s.events {
            match &e.body {
                EventBody::RoomAssigned { room_id, users } => {
                    note_members(&mut rooms, room_id, users, out);
                    if !users.contains(&s.user) {
                        out.push(Violation::UnexpectedEvent {
                            conn: s.label.clone(),
                            event: format!("room_assigned {room_id} of {users:?}"),
                        });
                    }
                }
                EventBody::RoomClosed { room_id, .. } => {
                    let view = rooms.entry(room_id.clone()).or_default();
                    view.closed = true;
                    view.heard_closed.insert(s.user.clone());
                }
                _ => continue,
            }
            timelines.entry(&s.user).or_default().insert(e.id, &e.body);
        }
    }
    for (user, events) in timelines {
        let mut current: Option<&str> = None;
        for body in events.values() {
            match body {
                EventBody::RoomAssigned { room_id, .. } => {
                    if let Some(c) = current {
                        if c != room_id {
                            out.push(Violation::UserInTwoRooms {
                                user: user.to_string(),
                                rooms: vec![c.to_string(), room_id.clone()],
                            });
                        }
                    }
                    current = Some(room_id);
                }
                EventBody::RoomClosed { room_id, .. } if current == Some(room_id.as_str()) => current = None,
                _ => {}
            }
        }
    }
    for (room, view) in &rooms {
        if view.closed {
            for member in view.users.iter().flatten() {
                if listening.contains(member.as_str()) && !view.heard_closed.contains(member) {
                    out.push(Violation::LonelyRoom { room: room.clone(), user: member.clone() });
                }
            }
        } else if h.expect_rooms_closed {
            out.push(Violation::RoomNeverClosed { room: room.clone() });
        }
    }
}

/// I6: a join that expected a room got one (in its answer or as a later `room_assigned`).
fn check_joins(h: &History, out: &mut Vec<Violation>) {
    for j in h.joins.iter().filter(|j| j.expect_room && j.room.is_none()) {
        let got = h.streams.iter().filter(|s| s.user == j.user).any(|s| {
            s.events.iter().any(|e| {
                e.at >= j.sent
                    && matches!(&e.body, EventBody::RoomAssigned { room_id, .. } if Some(room_id) != j.previous_room.as_ref())
            })
        });
        if !got {
            out.push(Violation::StuckInQueue { user: j.user.clone() });
        }
    }
}

#[cfg(test)]
#[path = "check_test.rs"]
mod tests;
