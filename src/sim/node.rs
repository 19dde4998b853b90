//! A simulated node: a pair owner and a user owner (one shard each) around the real cores,
//! following the Redis-mode rules of `coord/shard.rs` and `session/user_shard.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::Rng;

use super::store::{IndexWrite, PairBatch, Refusal, StoredUser, UserBatch};
use super::{Ev, World};
use crate::coord::outbox::{may_install, owed_for, Outbox};
use crate::coord::pair_state::PairState;
use crate::coord::slot::{user_slot, PairKey};
use crate::persist::records::{OutboxEntry, PairRecord};
use crate::protocol::{Direction, Event, Match, MatchId, SwipeId, SwipeResponse, UserId};
use crate::session::effects::{arrival, Arrival};
use crate::session::event_log::EventLog;
use crate::session::IndexChange;

/// How often a pair owner re-publishes unconfirmed effects (the shard's `OUTBOX_RETRY`).
const OUTBOX_RETRY_MS: u64 = 1_000;
/// A batch without a reply after this long fails (its outcome is unknown).
const BATCH_TIMEOUT_MS: u64 = 1_000;
const SWIPE_IDS_PER_PAIR: usize = 16;
const LOG_CAPACITY: usize = 1_000_000;

#[derive(Debug, Clone)]
pub enum Action {
    Swipe { to: UserId, right: bool, swipe_id: SwipeId },
    Unmatch { match_id: MatchId },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 503 or "not owner": the client tries again.
    Retry,
    Swiped(SwipeResponse),
    Unmatched {
        found: bool,
    },
}

#[derive(Debug, Clone)]
pub enum PairMsg {
    Committed { seq: u64, result: Result<Vec<Option<PairRecord>>, Refusal> },
    Timeout { seq: u64 },
    EffectsPersisted { pair: PairKey, confirmed: Vec<(String, UserId)> },
}

#[derive(Debug, Clone)]
pub enum UserMsg {
    Publish { entry: Box<OutboxEntry>, pair: PairKey },
    Committed { seq: u64, result: Result<Vec<StoredUser>, Refusal> },
    Timeout { seq: u64 },
    Claimed { epoch: u64 },
}

#[derive(Debug, Clone)]
pub enum StoreOp {
    Pairs { node: usize, inc: u64, seq: u64, batch: PairBatch },
    Users { node: usize, inc: u64, seq: u64, batch: UserBatch },
    Claim { node: usize, inc: u64, epoch: u64, token: u64, slots: Vec<u16> },
}

/// A request waiting for its batch.
#[derive(Debug, Clone)]
struct Waiter {
    req: u64,
    attempt: u32,
    answer: Answer,
}

#[derive(Debug, Default)]
struct PairNext {
    dirty: BTreeSet<PairKey>,
    guards: Vec<(PairKey, MatchId)>,
    ended: Vec<PairKey>,
    loads: BTreeSet<PairKey>,
    waiters: Vec<Waiter>,
}

#[derive(Debug)]
struct PairFlight {
    seq: u64,
    generation: u64,
    dirty: BTreeSet<PairKey>,
    loads: Vec<PairKey>,
    waiters: Vec<Waiter>,
}

#[derive(Debug, Default)]
pub struct PairOwner {
    pairs: BTreeMap<PairKey, PairState>,
    match_pairs: BTreeMap<MatchId, PairKey>,
    outbox: Outbox,
    next: PairNext,
    flight: Option<PairFlight>,
    sent: u64,
    generation: u64,
    loading: BTreeMap<PairKey, Vec<(u64, u32)>>,
}

#[derive(Debug, Default)]
struct UserEntry {
    log: Option<EventLog>,
    matches: Vec<Match>,
    connected: bool,
}

#[derive(Debug, Default)]
struct UserNext {
    events: Vec<(UserId, Arc<Event>)>,
    index: Vec<(UserId, IndexWrite)>,
    confirms: Vec<(PairKey, String, UserId)>,
    loads: BTreeSet<UserId>,
}

#[derive(Debug)]
struct UserFlight {
    seq: u64,
    generation: u64,
    events: Vec<(UserId, Arc<Event>)>,
    confirms: Vec<(PairKey, String, UserId)>,
    loads: Vec<UserId>,
}

/// What waits for a user's load.
#[derive(Debug, Clone)]
enum UserWait {
    Publish { entry: Box<OutboxEntry>, pair: PairKey },
    Connect,
}

#[derive(Debug, Default)]
pub struct UserOwner {
    users: BTreeMap<UserId, UserEntry>,
    next: UserNext,
    flight: Option<UserFlight>,
    sent: u64,
    generation: u64,
    loading: BTreeMap<UserId, Vec<UserWait>>,
}

#[derive(Debug, Default)]
pub struct Node {
    pub alive: bool,
    /// Bumped on every start: events for an older incarnation are dropped (memory lost).
    pub inc: u64,
    pub token: u64,
    pub paused_until: u64,
    /// The view this node last learned, and whether it has claimed its slots in it.
    pub epoch: u64,
    pub acting: bool,
    /// When this node's last store operation arrives (one connection: FIFO).
    store_clock: u64,
    pub pairs: PairOwner,
    pub users: UserOwner,
}

impl Node {
    pub fn owes_anything(&self) -> bool {
        self.pairs.pairs.keys().any(|k| self.pairs.outbox.has(k))
    }
}

pub fn start(w: &mut World, i: usize) {
    let inc = w.nodes[i].inc + 1;
    w.nodes[i] = Node { alive: true, inc, ..Node::default() };
    new_tenure(w, i);
    w.at(OUTBOX_RETRY_MS, Ev::Tick { node: i, inc });
}

/// A new tenure: a new token, nothing cached, no streams; it acts again once it has claimed.
pub fn new_tenure(w: &mut World, i: usize) {
    w.ids += 1;
    w.nodes[i].token = w.ids;
    w.nodes[i].acting = false;
    drop_pairs(w, i);
    drop_users(w, i);
}

pub fn crash(w: &mut World, i: usize) {
    let n = &mut w.nodes[i];
    n.alive = false;
    n.acting = false;
    n.inc += 1;
    n.pairs = PairOwner::default();
    n.users = UserOwner::default();
    close_streams(w, i, |_| true);
}

fn close_streams(w: &mut World, i: usize, which: impl Fn(&UserId) -> bool) {
    let idx: Vec<usize> = (0..w.users.len()).filter(|&u| which(&w.users[u])).collect();
    for u in idx {
        if w.history.stream_at(u) == Some(i) {
            w.history.disconnected(u);
            let delay = w.rng.gen_range(50..300);
            w.at(delay, Ev::Connect { user: u });
        }
        if let Some(e) = w.nodes[i].users.users.get_mut(&w.users[u]) {
            e.connected = false;
        }
    }
}

/// Learns view `epoch`: stops acting, forgets what it no longer owns (and every cache), claims.
pub fn learn(w: &mut World, i: usize, inc: u64, epoch: u64) {
    if w.nodes[i].inc != inc || !w.nodes[i].alive || epoch <= w.nodes[i].epoch {
        return;
    }
    w.nodes[i].epoch = epoch;
    w.nodes[i].acting = false;
    drop_pairs(w, i);
    drop_users(w, i);
    let owned: Vec<u16> = w.slots.iter().copied().filter(|s| w.owner(epoch, *s) == Some(i)).collect();
    let token = w.nodes[i].token;
    store_send(w, i, StoreOp::Claim { node: i, inc, epoch, token, slots: owned });
}

/// Sends `op` to the store over this node's one connection (in order, sometimes slowly).
fn store_send(w: &mut World, i: usize, op: StoreOp) {
    let slow = w.faults && w.rng.gen_bool(0.01);
    let latency = if slow { w.rng.gen_range(200..1_500) } else { w.rng.gen_range(1..6) };
    let arrive = (w.now + latency).max(w.nodes[i].store_clock);
    w.nodes[i].store_clock = arrive;
    w.at(arrive - w.now, Ev::Store(op));
}

pub fn store_op(w: &mut World, op: StoreOp) {
    // The reply may be lost (a timeout after sending): the write stands or not, unknown to the node.
    let lost = w.faults && w.rng.gen_bool(0.01);
    let delay = w.rng.gen_range(1..6);
    match op {
        StoreOp::Pairs { node, inc, seq, batch } => {
            let unavailable = w.faults && w.rng.gen_bool(0.005);
            let result = if unavailable { Err(Refusal::Fenced) } else { w.store.apply_pairs(&batch) };
            if !lost {
                w.at(delay, Ev::Pair { node, inc, msg: PairMsg::Committed { seq, result } });
            }
        }
        StoreOp::Users { node, inc, seq, batch } => {
            let result = w.store.apply_users(&batch);
            if !lost {
                w.at(delay, Ev::User { node, inc, msg: UserMsg::Committed { seq, result } });
            }
        }
        StoreOp::Claim { node, inc, epoch, token, slots } => {
            w.store.claim(token, epoch, slots);
            w.at(delay, Ev::User { node, inc, msg: UserMsg::Claimed { epoch } });
        }
    }
}

fn owns(w: &World, i: usize, slot: u16) -> bool {
    let n = &w.nodes[i];
    n.alive && n.acting && w.owner(n.epoch, slot) == Some(i)
}

fn answer(w: &mut World, req: u64, attempt: u32, answer: Answer) {
    let lost = w.faults && w.rng.gen_bool(0.01);
    if !lost {
        let delay = w.rng.gen_range(1..10);
        w.at(delay, Ev::Answer { req, attempt, answer });
    }
}

/// A client request reaches node `i`: forwarded to the owner it believes in, or decided here.
pub fn request(w: &mut World, i: usize, req: u64, attempt: u32, forwarded: bool) {
    if !w.nodes[i].alive {
        return;
    }
    let r = w.requests[req as usize].clone();
    let key = match &r.action {
        Action::Swipe { to, .. } => PairKey::new(&r.user, to),
        Action::Unmatch { match_id } => w.history.pair_of(match_id),
    };
    let Some(key) = key else { return answer(w, req, attempt, Answer::Unmatched { found: false }) };
    let slot = key.slot();
    let epoch = w.nodes[i].epoch;
    match w.owner(epoch, slot) {
        Some(o) if o == i => {}
        Some(o) if !forwarded => {
            // Forwarded once: the owner answers (or says it is not the owner).
            if w.nodes[o].alive {
                let delay = w.rng.gen_range(1..10);
                w.at(delay, Ev::Request { node: o, req, attempt, forwarded: true });
            } else {
                answer(w, req, attempt, Answer::Retry);
            }
            return;
        }
        _ => return answer(w, req, attempt, Answer::Retry),
    }
    if !owns(w, i, slot) {
        return answer(w, req, attempt, Answer::Retry);
    }
    let p = &mut w.nodes[i].pairs;
    if p.pairs.contains_key(&key) {
        decide(w, i, &key, (req, attempt));
    } else {
        p.loading.entry(key.clone()).or_default().push((req, attempt));
        p.next.loads.insert(key);
    }
    flush_pairs(w, i);
}

fn decide(w: &mut World, i: usize, key: &PairKey, (req, attempt): (u64, u32)) {
    let r = w.requests[req as usize].clone();
    let now = w.now;
    let slot = key.slot();
    let fresh = w.match_id(slot);
    let p = &mut w.nodes[i].pairs;
    let Some(state) = p.pairs.get_mut(key) else { return };
    let (answer, effects) = match &r.action {
        Action::Swipe { right, swipe_id, .. } => {
            let side = usize::from(key.low != r.user);
            let direction = if *right { Direction::Right } else { Direction::Left };
            let d = state.swipe(key, side, direction, Some(swipe_id), now, SWIPE_IDS_PER_PAIR, || fresh);
            if !d.replayed {
                p.next.dirty.insert(key.clone());
            }
            (Answer::Swiped(d.reply), d.effects.into_vec())
        }
        Action::Unmatch { match_id } => match state.unmatch(match_id, &r.user) {
            Ok(Some(effect)) => {
                p.next.dirty.insert(key.clone());
                (Answer::Unmatched { found: true }, vec![effect])
            }
            Ok(None) => (Answer::Unmatched { found: true }, Vec::new()),
            Err(_) => (Answer::Unmatched { found: false }, Vec::new()),
        },
    };
    for effect in effects {
        match &effect {
            crate::coord::pair_state::Effect::MatchCreated(m) => {
                p.next.guards.push((key.clone(), m.match_id.clone()));
                p.match_pairs.insert(m.match_id.clone(), key.clone());
            }
            crate::coord::pair_state::Effect::Unmatched { .. } => p.next.ended.push(key.clone()),
        }
        p.outbox.owe(key, owed_for(&effect, now));
    }
    p.next.waiters.push(Waiter { req, attempt, answer });
}

fn flush_pairs(w: &mut World, i: usize) {
    let n = &mut w.nodes[i];
    let p = &mut n.pairs;
    if p.flight.is_some() || (p.next.dirty.is_empty() && p.next.loads.is_empty() && p.next.waiters.is_empty()) {
        return;
    }
    let next = std::mem::take(&mut p.next);
    p.sent += 1;
    let seq = p.sent;
    let records: Vec<(PairKey, PairRecord)> = next
        .dirty
        .iter()
        .map(|k| {
            let outbox = p.outbox.write(k, seq);
            (k.clone(), PairRecord { state: p.pairs.get(k).cloned().unwrap_or_default(), outbox, rooms: Vec::new() })
        })
        .collect();
    let loads: Vec<PairKey> = next.loads.iter().cloned().collect();
    let slots = next.dirty.iter().chain(&loads).chain(next.guards.iter().map(|(k, _)| k)).map(PairKey::slot).collect();
    let batch =
        PairBatch { token: n.token, slots, guards: next.guards, records, ended: next.ended, loads: loads.clone() };
    p.flight = Some(PairFlight { seq, generation: p.generation, dirty: next.dirty, loads, waiters: next.waiters });
    let inc = n.inc;
    store_send(w, i, StoreOp::Pairs { node: i, inc, seq, batch });
    w.at(BATCH_TIMEOUT_MS, Ev::Pair { node: i, inc, msg: PairMsg::Timeout { seq } });
}

pub fn pair_message(w: &mut World, i: usize, inc: u64, msg: PairMsg) {
    if w.nodes[i].inc != inc || !w.nodes[i].alive {
        return;
    }
    match msg {
        PairMsg::Committed { seq, result } => pair_committed(w, i, seq, result),
        PairMsg::Timeout { seq } => {
            if w.nodes[i].pairs.flight.as_ref().is_some_and(|f| f.seq == seq) {
                pair_committed(w, i, seq, Err(Refusal::Fenced));
            }
        }
        PairMsg::EffectsPersisted { pair, confirmed } => {
            let p = &mut w.nodes[i].pairs;
            if p.outbox.confirm(&pair, &confirmed) {
                p.next.dirty.insert(pair);
                flush_pairs(w, i);
            }
        }
    }
}

fn pair_committed(w: &mut World, i: usize, seq: u64, result: Result<Vec<Option<PairRecord>>, Refusal>) {
    let p = &mut w.nodes[i].pairs;
    let Some(flight) = p.flight.take_if(|f| f.seq == seq) else { return };
    let values = match result {
        Ok(values) => values,
        Err(_) => {
            for waiter in flight.waiters {
                answer(w, waiter.req, waiter.attempt, Answer::Retry);
            }
            drop_pairs(w, i);
            return flush_pairs(w, i);
        }
    };
    for key in &flight.dirty {
        p.outbox.committed(key, seq);
    }
    for waiter in flight.waiters {
        answer(w, waiter.req, waiter.attempt, waiter.answer);
    }
    for key in &flight.dirty {
        publish_owed(w, i, key);
    }
    for (key, record) in flight.loads.into_iter().zip(values) {
        install(w, i, flight.generation, key, record.unwrap_or_default());
    }
    flush_pairs(w, i);
}

/// A pair read from the store: installed unless already in memory (possibly with newer decisions).
fn install(w: &mut World, i: usize, read_generation: u64, key: PairKey, record: PairRecord) {
    let p = &mut w.nodes[i].pairs;
    let current = read_generation == p.generation;
    if may_install(read_generation, p.generation, p.pairs.contains_key(&key)) {
        if let Some(m) = record.state.active_match() {
            p.match_pairs.insert(m.match_id.clone(), key.clone());
        }
        p.pairs.insert(key.clone(), record.state);
        p.outbox.restore(&key, record.outbox);
        publish_owed(w, i, &key);
    }
    if !current {
        // Read before a drop: what waited for it was failed by the drop.
        return;
    }
    let waiting = w.nodes[i].pairs.loading.remove(&key).unwrap_or_default();
    for req in waiting {
        decide(w, i, &key, req);
    }
}

fn publish_owed(w: &mut World, i: usize, key: &PairKey) {
    let now = w.now;
    let due = w.nodes[i].pairs.outbox.due(key, now);
    let epoch = w.nodes[i].epoch;
    for entry in due {
        let Some(owner) = w.owner(epoch, user_slot(&entry.user)) else { continue };
        let inc = w.nodes[owner].inc;
        w.send(Ev::User { node: owner, inc, msg: UserMsg::Publish { entry: Box::new(entry), pair: key.clone() } });
    }
}

/// Forgets every cached pair (a failed batch, a new view or tenure): requests waiting fail, and
/// the stored outboxes of owned slots are swept again.
fn drop_pairs(w: &mut World, i: usize) {
    let p = &mut w.nodes[i].pairs;
    p.generation += 1;
    let next = std::mem::take(&mut p.next);
    let waiting: Vec<(u64, u32)> = std::mem::take(&mut p.loading).into_values().flatten().collect();
    p.pairs.clear();
    p.match_pairs.clear();
    p.outbox.clear();
    for waiter in next.waiters {
        answer(w, waiter.req, waiter.attempt, Answer::Retry);
    }
    for (req, attempt) in waiting {
        answer(w, req, attempt, Answer::Retry);
    }
}

/// Every `OUTBOX_RETRY_MS`: re-publish what is unconfirmed, and (the start-up / after-drop sweep)
/// load owned pairs whose stored outbox is not empty.
pub fn tick(w: &mut World, i: usize, inc: u64) {
    if w.nodes[i].inc != inc || !w.nodes[i].alive {
        return;
    }
    w.at(OUTBOX_RETRY_MS, Ev::Tick { node: i, inc });
    if !w.nodes[i].acting {
        return;
    }
    let mut stale = w.nodes[i].pairs.outbox.stale(w.now, OUTBOX_RETRY_MS);
    stale.sort();
    for key in &stale {
        publish_owed(w, i, key);
    }
    let owed: Vec<PairKey> = w
        .store
        .pairs
        .iter()
        .filter(|(k, r)| !r.outbox.is_empty() && owns(w, i, k.slot()))
        .map(|(k, _)| k.clone())
        .collect();
    let p = &mut w.nodes[i].pairs;
    for key in owed {
        if !p.pairs.contains_key(&key) {
            p.next.loads.insert(key);
        }
    }
    flush_pairs(w, i);
}

// ---- users ----

pub fn user_message(w: &mut World, i: usize, inc: u64, msg: UserMsg) {
    if w.nodes[i].inc != inc || !w.nodes[i].alive {
        return;
    }
    match msg {
        UserMsg::Publish { entry, pair } => {
            if !owns(w, i, user_slot(&entry.user)) {
                return; // "not owner": the pair's outbox publishes it again
            }
            when_loaded(w, i, entry.user.clone(), UserWait::Publish { entry, pair });
        }
        UserMsg::Committed { seq, result } => user_committed(w, i, seq, result),
        UserMsg::Timeout { seq } => {
            if w.nodes[i].users.flight.as_ref().is_some_and(|f| f.seq == seq) {
                user_committed(w, i, seq, Err(Refusal::Fenced));
            }
        }
        UserMsg::Claimed { epoch } => {
            if w.nodes[i].epoch == epoch {
                w.nodes[i].acting = true;
            }
        }
    }
    flush_users(w, i);
}

fn when_loaded(w: &mut World, i: usize, user: UserId, wait: UserWait) {
    let u = &mut w.nodes[i].users;
    if u.users.get(&user).is_some_and(|e| e.log.is_some()) {
        return run_loaded(w, i, &user, wait);
    }
    u.loading.entry(user.clone()).or_default().push(wait);
    u.next.loads.insert(user);
}

fn run_loaded(w: &mut World, i: usize, user: &UserId, wait: UserWait) {
    let u = &mut w.nodes[i].users;
    let Some(entry) = u.users.get_mut(user) else { return };
    let Some(log) = entry.log.as_mut() else { return };
    match wait {
        UserWait::Publish { entry: owed, pair } => {
            if let Arrival::Logged(existing) | Arrival::Superseded(existing) =
                arrival(log, &owed.effect_id, &owed.change)
            {
                // A re-publish of a logged event: confirm it (now if stored), log nothing.
                if existing <= log.durable_id() {
                    confirm(w, i, vec![(pair, owed.effect_id, user.clone())]);
                } else {
                    u.next.confirms.push((pair, owed.effect_id, user.clone()));
                }
                return;
            }
            match &owed.change {
                IndexChange::AddMatch(m) => {
                    entry.matches.push(m.clone());
                    u.next.index.push((user.clone(), IndexWrite::Add(m.clone())));
                }
                IndexChange::RemoveMatch(id) => {
                    entry.matches.retain(|m| m.match_id != *id);
                    u.next.index.push((user.clone(), IndexWrite::Remove(id.clone())));
                }
                _ => {}
            }
            let event = log.push(&owed.kind, Some(Arc::from(owed.effect_id.as_str())));
            u.next.events.push((user.clone(), event));
            u.next.confirms.push((pair, owed.effect_id, user.clone()));
        }
        UserWait::Connect => {
            let idx = w.users.iter().position(|u| u == user).unwrap_or(0);
            let since = w.history.last_seen(idx);
            let replay = log.since(since);
            entry.connected = true;
            w.history.connected(idx, i, since, &replay.events, replay.gap);
        }
    }
}

fn confirm(w: &mut World, i: usize, confirms: Vec<(PairKey, String, UserId)>) {
    let mut by_pair: BTreeMap<PairKey, Vec<(String, UserId)>> = BTreeMap::new();
    for (pair, effect, user) in confirms {
        by_pair.entry(pair).or_default().push((effect, user));
    }
    let epoch = w.nodes[i].epoch;
    for (pair, confirmed) in by_pair {
        let Some(owner) = w.owner(epoch, pair.slot()) else { continue };
        let inc = w.nodes[owner].inc;
        w.send(Ev::Pair { node: owner, inc, msg: PairMsg::EffectsPersisted { pair, confirmed } });
    }
}

fn flush_users(w: &mut World, i: usize) {
    let n = &mut w.nodes[i];
    let u = &mut n.users;
    let next = &u.next;
    if u.flight.is_some() || (next.events.is_empty() && next.loads.is_empty() && next.confirms.is_empty()) {
        return;
    }
    let next = std::mem::take(&mut u.next);
    u.sent += 1;
    let seq = u.sent;
    let loads: Vec<UserId> = next.loads.into_iter().collect();
    let slots = next.events.iter().map(|(u, _)| u).chain(next.index.iter().map(|(u, _)| u)).chain(&loads);
    let batch = UserBatch {
        token: n.token,
        slots: slots.map(user_slot).collect(),
        events: next.events.clone(),
        index: next.index,
        loads: loads.clone(),
    };
    u.flight = Some(UserFlight { seq, generation: u.generation, events: next.events, confirms: next.confirms, loads });
    let inc = n.inc;
    store_send(w, i, StoreOp::Users { node: i, inc, seq, batch });
    w.at(BATCH_TIMEOUT_MS, Ev::User { node: i, inc, msg: UserMsg::Timeout { seq } });
}

fn user_committed(w: &mut World, i: usize, seq: u64, result: Result<Vec<StoredUser>, Refusal>) {
    let u = &mut w.nodes[i].users;
    let Some(flight) = u.flight.take_if(|f| f.seq == seq) else { return };
    let Ok(values) = result else {
        drop_users(w, i);
        return;
    };
    for (user, event) in &flight.events {
        let Some(entry) = u.users.get_mut(user) else { continue };
        if let Some(log) = entry.log.as_mut() {
            log.mark_durable(event.id);
        }
        if entry.connected {
            let idx = w.users.iter().position(|x| x == user).unwrap_or(0);
            w.history.delivered(idx, event);
        }
    }
    confirm(w, i, flight.confirms);
    if w.nodes[i].users.generation == flight.generation {
        for (user, stored) in flight.loads.into_iter().zip(values) {
            let u = &mut w.nodes[i].users;
            let entry = u.users.entry(user.clone()).or_default();
            if entry.log.is_none() {
                entry.log = Some(EventLog::restored(LOG_CAPACITY, stored.events));
                entry.matches = stored.matches;
            }
            for wait in u.loading.remove(&user).unwrap_or_default() {
                run_loaded(w, i, &user, wait);
            }
        }
    }
}

/// Forgets every cached user and closes their streams (they reconnect and resume).
fn drop_users(w: &mut World, i: usize) {
    let u = &mut w.nodes[i].users;
    u.generation += 1;
    u.next = UserNext::default();
    let waiting = std::mem::take(&mut u.loading);
    u.users.clear();
    close_streams(w, i, |_| true);
    // Streams that were waiting for their user's load connect again.
    for (user, waits) in waiting {
        if waits.iter().any(|w| matches!(w, UserWait::Connect)) {
            if let Some(idx) = w.users.iter().position(|u| *u == user) {
                let delay = w.rng.gen_range(50..300);
                w.at(delay, Ev::Connect { user: idx });
            }
        }
    }
}

/// A user's client (re)connects through the load balancer; the stream is served by the user's
/// owner (relayed, in the real server, when it enters elsewhere).
pub fn connect(w: &mut World, idx: usize) {
    let user = w.users[idx].clone();
    if let Some(at) = w.history.stream_at(idx) {
        if w.nodes[at].alive && w.nodes[at].users.users.get(&user).is_some_and(|e| e.connected) {
            return; // still connected
        }
        w.history.disconnected(idx);
    }
    let live: Vec<usize> = (0..w.nodes.len()).filter(|&n| w.nodes[n].alive).collect();
    let retry = |w: &mut World| {
        let delay = w.rng.gen_range(100..400);
        w.at(delay, Ev::Connect { user: idx });
    };
    if live.is_empty() {
        return retry(w);
    }
    let entry = live[w.rng.gen_range(0..live.len())];
    let owner = w.owner(w.nodes[entry].epoch, user_slot(&user));
    match owner {
        Some(o) if owns(w, o, user_slot(&user)) && w.nodes[o].paused_until <= w.now => {
            when_loaded(w, o, user, UserWait::Connect);
            // A connect queued behind a load that fails is retried by the drop's reconnect.
            flush_users(w, o);
        }
        _ => retry(w),
    }
}
