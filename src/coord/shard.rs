//! `PairShard`: one actor per shard, on its own arbiter (thread). It owns the `PairState` of every
//! pair whose slot maps to it and applies their commands one at a time, so there are no locks and
//! no check-then-set on the decision path (I1, I3). After deciding, it hands events to the users'
//! own shards, which number and deliver them.
//!
//! With Redis (see `persist`), decisions still happen here in memory, one at a time; what changes
//! is when callers hear back: a decision joins the shard's next batch, and its reply and events go
//! out only after that batch is committed (I7). A pair not in memory is loaded first, with later
//! commands for it queued behind the load in arrival order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, ContextFutureSpawner, Handler, ResponseFuture, WrapFuture};
use tokio::sync::oneshot;

use super::messages::{Swipe, Unmatch};
use super::outbox::{may_install, owed_for, Outbox};
use super::pair_state::{Effect, PairState, UnmatchError};
use super::slot::{shard_of, PairKey, SLOT_COUNT};
use crate::audit::repair::{RepairOutcome, RepairPair};
use crate::config::Limits;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::persist::batch::{self, GroupCommit, Schedule};
use crate::persist::records::{OutboxEntry, PairRecord};
use crate::persist::store::text;
use crate::persist::{keys, Durability, StoreError};
use crate::protocol::{unix_ms, MatchId, RoomId, SkipResponse, SwipeResponse, SwipeStatus};
use crate::queue::messages::{CloseRoom, CreateRoom, MemberGone, Skip};
use crate::queue::room::RoomState;
use crate::session::messages::EffectRef;
use crate::session::UserRouter;
use crate::webhook::{WebhookEvent, WebhookSender};

/// Messages a shard's mailbox holds before senders wait: bounded (the HTTP layer and the
/// connection limits bound what can be in flight anyway), but far above actix's default of 16.
pub(crate) const SHARD_MAILBOX: usize = 4096;

/// How often closed rooms are swept.
const ROOM_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often idle cache entries are looked for: often enough for `idle_ms`, at most once a minute.
pub(crate) fn evict_interval(idle_ms: u64) -> Duration {
    Duration::from_millis((idle_ms / 2).clamp(100, 60_000))
}

/// How long a committed outbox entry may stay unconfirmed before it is published again.
const OUTBOX_RETRY: Duration = Duration::from_secs(1);
/// Slots per request of the recovery sweep.
const RECOVERY_CHUNK: usize = 512;
/// How soon a new owner sweeps stored outboxes and open rooms (or re-checks it may).
const RECOVERY_SOON: Duration = Duration::from_millis(100);

type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A command waiting to be decided.
pub(crate) enum Cmd {
    Swipe(Swipe, Reply<SwipeResponse>),
    Unmatch(Unmatch, Reply<()>),
    CreateRoom(CreateRoom, Reply<()>),
    Skip(Skip, Reply<SkipResponse>),
    CloseRoom(CloseRoom, Reply<()>),
    MemberGone(MemberGone),
    Repair(RepairPair, Reply<RepairOutcome>),
}

impl Cmd {
    fn fail(self, err: &ApiError) {
        match self {
            Cmd::Swipe(_, tx) => drop(tx.send(Err(err.clone()))),
            Cmd::Unmatch(_, tx) => drop(tx.send(Err(err.clone()))),
            Cmd::CreateRoom(_, tx) => drop(tx.send(Err(err.clone()))),
            Cmd::Skip(_, tx) => drop(tx.send(Err(err.clone()))),
            Cmd::CloseRoom(_, tx) => drop(tx.send(Err(err.clone()))),
            Cmd::Repair(_, tx) => drop(tx.send(Err(err.clone()))),
            Cmd::MemberGone(_) => {}
        }
    }
}

/// A decided answer waiting for its batch to commit: called with `None` to deliver the decided
/// result, or with the error that made the batch fail.
pub(crate) struct Waiter(Box<dyn FnOnce(Option<ApiError>)>);

impl Waiter {
    fn new<T: 'static>(tx: Reply<T>, result: Result<T, ApiError>) -> Waiter {
        Waiter(Box::new(move |failed| {
            let _ = tx.send(match failed {
                Some(e) => Err(e),
                None => result,
            });
        }))
    }

    fn release(self) {
        (self.0)(None)
    }

    fn fail(self, err: &ApiError) {
        (self.0)(Some(err.clone()))
    }
}

/// Something a command needs looked up before its pair is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Lookup {
    Match(MatchId),
    Room(RoomId),
}

/// One group commit's worth of work.
#[derive(Default)]
struct Batch {
    /// The cache generation the batch was decided in (see `Durable::generation`).
    generation: u64,
    /// Numbers the shard's batches: an outbox entry goes out once the batch carrying it commits.
    seq: u64,
    dirty: HashSet<PairKey>,
    match_keys: Vec<(MatchId, PairKey)>,
    /// Pairs whose active match ended (their guard key is deleted).
    ended: Vec<PairKey>,
    /// Pairs whose derived keys (guard, match id key, recovery-set listings) are written from their
    /// state, whatever this shard believes is stored (an audit repair).
    synced: Vec<PairKey>,
    room_keys: Vec<(RoomId, PairKey)>,
    loads: Vec<PairKey>,
    lookups: Vec<Lookup>,
    waiters: Vec<Waiter>,
    /// Request ids answered by this batch, for the commit log line.
    request_ids: Vec<u64>,
    /// Webhooks for the batch's decisions, sent once it is stored.
    webhooks: Vec<WebhookEvent>,
}

impl Batch {
    fn ops(&self) -> usize {
        self.dirty.len() + self.loads.len() + self.lookups.len() + self.waiters.len() + self.synced.len()
    }
}

/// What a sent batch expects back, command by command.
enum Expect {
    Ignore,
    Pair(PairKey),
    Owner(Lookup),
}

/// Redis-mode state of the shard.
struct Durable {
    durability: Durability,
    /// Effects owed to users, per pair (mirrors the stored outboxes).
    outbox: Outbox,
    /// The sequence number of the last batch sent.
    sent: u64,
    next: Batch,
    /// One batch in flight; when to send the next.
    commit: GroupCommit,
    loading: HashMap<PairKey, Vec<Cmd>>,
    looking_up: HashMap<Lookup, Vec<Cmd>>,
    /// A sweep of stored outboxes is pending (after a failed batch).
    recovery_scheduled: bool,
    /// Bumped whenever the cache is dropped: what a batch sent before read from Redis (loads,
    /// lookups) must not be installed after, or it would replace state decided since.
    generation: u64,
    /// Pairs this shard has put in (and not yet taken out of) the per-slot recovery sets.
    listed_outbox: HashSet<PairKey>,
    listed_rooms: HashSet<PairKey>,
    /// When each cached pair was last used (for evicting idle ones; Redis holds them).
    last_used: HashMap<PairKey, u64>,
    /// Pairs idle this long are dropped from memory.
    idle_ms: u64,
}

/// The owner of a share of all pairs.
pub struct PairShard {
    /// Position among the node's shards.
    index: usize,
    shards: usize,
    pub(crate) pairs: HashMap<PairKey, PairState>,
    /// Match id -> pair, so `DELETE /v1/matches/{id}` finds its pair.
    match_pairs: HashMap<MatchId, PairKey>,
    /// Where the users' event streams and places live.
    pub(crate) users: UserRouter,
    limits: Limits,
    /// Rooms of this shard's pairs, open and recently closed (see `queue::room`).
    pub(crate) rooms: HashMap<PairKey, Vec<RoomState>>,
    /// Room id -> pair, so a skip finds its room.
    pub(crate) room_pairs: HashMap<RoomId, PairKey>,
    /// Random per process start: an open room stored by another incarnation was left open by a
    /// crash and is closed when found (I5).
    pub(crate) incarnation: u64,
    webhooks: WebhookSender,
    durable: Option<Durable>,
}

/// Asks the shard to send its pending batch (queued behind messages already in the mailbox, so
/// everything that arrived meanwhile joins the batch).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Flush;

/// This node starts a new lease tenure: whatever is cached may be older than what is stored.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct ResetCache;

/// A user shard has these effects of `pair` in the named users' logs (durably, with Redis).
#[derive(Debug, actix::Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct EffectsPersisted {
    pub pair: PairKey,
    /// (effect id, user) pairs.
    pub confirmed: Vec<(String, crate::protocol::UserId)>,
}

impl PairShard {
    pub fn new(
        index: usize,
        shards: usize,
        users: UserRouter,
        limits: Limits,
        durability: Option<Durability>,
        webhooks: WebhookSender,
    ) -> Self {
        PairShard {
            index,
            shards,
            pairs: HashMap::new(),
            match_pairs: HashMap::new(),
            users,
            limits,
            rooms: HashMap::new(),
            room_pairs: HashMap::new(),
            incarnation: rand::random(),
            webhooks,
            durable: durability.map(|durability| Durable {
                idle_ms: durability.idle_ms,
                outbox: Outbox::default(),
                sent: 0,
                next: Batch::default(),
                commit: GroupCommit::new(durability.max_batch),
                durability,
                loading: HashMap::new(),
                looking_up: HashMap::new(),
                recovery_scheduled: false,
                generation: 0,
                last_used: HashMap::new(),
                listed_outbox: HashSet::new(),
                listed_rooms: HashSet::new(),
            }),
        }
    }

    /// The pair a command concerns, if known without a lookup.
    fn pair_of(&self, cmd: &Cmd) -> Result<Option<PairKey>, Lookup> {
        let by_room = |room_id: &RoomId| match self.room_pairs.get(room_id) {
            Some(k) => Ok(Some(k.clone())),
            None if room_id.slot().is_some() => Err(Lookup::Room(room_id.clone())),
            None => Ok(None),
        };
        match cmd {
            Cmd::Swipe(m, _) => Ok(PairKey::new(&m.from, &m.to)),
            Cmd::Unmatch(m, _) => match self.match_pairs.get(&m.match_id) {
                Some(k) => Ok(Some(k.clone())),
                None if m.match_id.slot().is_some() => Err(Lookup::Match(m.match_id.clone())),
                None => Ok(None),
            },
            Cmd::CreateRoom(m, _) => Ok(PairKey::new(&m.room.users[0], &m.room.users[1])),
            Cmd::Skip(m, _) => by_room(&m.room_id),
            Cmd::CloseRoom(m, _) => by_room(&m.room_id),
            Cmd::MemberGone(m) => by_room(&m.room_id),
            Cmd::Repair(m, _) => Ok(Some(m.pair.clone())),
        }
    }

    /// Takes a command: decides it now if its pair is in memory, else loads the pair first.
    pub(crate) fn submit(&mut self, cmd: Cmd, ctx: &mut Context<Self>) {
        if self.durable.is_none() {
            return self.execute(cmd, ctx);
        }
        let key = match self.pair_of(&cmd) {
            Ok(Some(key)) => key,
            // Invalid or unknown: deciding it answers the error.
            Ok(None) => return self.execute(cmd, ctx),
            Err(lookup) => {
                let Some(d) = self.durable.as_mut() else { return };
                let waiting = d.looking_up.entry(lookup.clone()).or_default();
                if waiting.is_empty() {
                    d.next.lookups.push(lookup);
                }
                waiting.push(cmd);
                return self.schedule_flush(ctx);
            }
        };
        if self.pairs.contains_key(&key) {
            return self.execute(cmd, ctx);
        }
        let Some(d) = self.durable.as_mut() else { return };
        let waiting = d.loading.entry(key.clone()).or_default();
        if waiting.is_empty() {
            d.next.loads.push(key);
        }
        waiting.push(cmd);
        self.schedule_flush(ctx);
    }

    /// Makes sure `key` is (being) loaded, with no command waiting on it (recovery sweep).
    fn ensure_loaded(&mut self, key: PairKey, ctx: &mut Context<Self>) {
        let Some(d) = self.durable.as_mut() else { return };
        if self.pairs.contains_key(&key) || d.loading.contains_key(&key) {
            return;
        }
        d.loading.insert(key.clone(), Vec::new());
        d.next.loads.push(key);
        self.schedule_flush(ctx);
    }

    /// Decides `cmd` on the in-memory state.
    fn execute(&mut self, cmd: Cmd, ctx: &mut Context<Self>) {
        if self.durable.is_some() {
            if let Ok(Some(key)) = self.pair_of(&cmd) {
                if let Some(d) = self.durable.as_mut() {
                    d.last_used.insert(key, unix_ms());
                }
            }
        }
        let (waiter, request_id) = match cmd {
            Cmd::Swipe(msg, tx) => (Waiter::new(tx, self.decide_swipe(&msg)), msg.request_id),
            Cmd::Unmatch(msg, tx) => (Waiter::new(tx, self.decide_unmatch(&msg)), msg.request_id),
            Cmd::CreateRoom(msg, tx) => (Waiter::new(tx, self.decide_create_room(msg)), 0),
            Cmd::Skip(msg, tx) => (Waiter::new(tx, self.decide_skip(&msg)), msg.request_id),
            Cmd::CloseRoom(msg, tx) => (Waiter::new(tx, self.decide_close_room(&msg)), msg.request_id),
            Cmd::Repair(msg, tx) => (Waiter::new(tx, Ok(self.decide_repair(&msg))), 0),
            Cmd::MemberGone(msg) => {
                self.decide_member_gone(&msg);
                // Nobody waits for an answer, but the close must be stored and told now (I5), not
                // whenever the next action on this shard happens to flush.
                self.schedule_flush(ctx);
                return;
            }
        };
        self.answer(waiter, request_id, ctx);
    }

    /// Replies now (memory) or after the next commit (Redis), so no answer reveals state that is
    /// not yet durable, even a read-only one.
    fn answer(&mut self, waiter: Waiter, request_id: u64, ctx: &mut Context<Self>) {
        match self.durable.as_mut() {
            None => waiter.release(),
            Some(d) => {
                d.next.waiters.push(waiter);
                if request_id != 0 {
                    d.next.request_ids.push(request_id);
                }
                self.schedule_flush(ctx);
            }
        }
    }

    fn decide_swipe(&mut self, msg: &Swipe) -> Result<SwipeResponse, ApiError> {
        let key = PairKey::new(&msg.from, &msg.to).ok_or(ApiError::SelfSwipe)?;
        // `from` is one of the two users by construction of the key.
        let side = usize::from(key.low != msg.from);
        let slot = key.slot();
        let state = self.pairs.entry(key.clone()).or_default();
        let decision = state.swipe(
            &key,
            side,
            msg.direction,
            msg.swipe_id.as_ref(),
            unix_ms(),
            self.limits.swipe_ids_per_pair,
            || MatchId::new_in_slot(slot),
        );
        let outcome = match (decision.replayed, decision.reply.status) {
            (true, _) => "replayed",
            (false, SwipeStatus::Pending) => "pending",
            (false, SwipeStatus::Matched) => "matched",
            (false, SwipeStatus::Passed) => "passed",
        };
        METRICS.swipes.with_label_values(&[outcome]).inc();
        tracing::debug!(request_id = msg.request_id, shard = self.index, from = %msg.from, to = %msg.to, outcome, "swipe decided");
        if !decision.replayed {
            self.mark_dirty(&key);
        }
        for effect in decision.effects {
            self.apply(&key, effect);
        }
        Ok(decision.reply)
    }

    fn decide_unmatch(&mut self, msg: &Unmatch) -> Result<(), ApiError> {
        let not_found = || ApiError::NotFound(format!("no match {}", msg.match_id));
        let key = self.match_pairs.get(&msg.match_id).cloned().ok_or_else(not_found)?;
        if key.side_of(&msg.by).is_none() {
            return Err(ApiError::Forbidden("you are not a member of this match".into()));
        }
        let state = self.pairs.get_mut(&key).ok_or_else(not_found)?;
        match state.unmatch(&msg.match_id, &msg.by) {
            Ok(Some(effect)) => {
                tracing::debug!(request_id = msg.request_id, match_id = %msg.match_id, by = %msg.by, "unmatched");
                self.mark_dirty(&key);
                self.apply(&key, effect);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(UnmatchError::NotFound) => Err(not_found()),
        }
    }

    pub(crate) fn mark_dirty(&mut self, key: &PairKey) {
        if let Some(d) = self.durable.as_mut() {
            d.next.dirty.insert(key.clone());
        }
    }

    /// Carries out a decision's effect: index the match and owe both users their event.
    fn apply(&mut self, key: &PairKey, effect: Effect) {
        match &effect {
            Effect::MatchCreated(m) => {
                METRICS.matches.inc();
                self.notify(|| {
                    WebhookEvent::new(
                        format!("match.created:{}", m.match_id),
                        "match.created",
                        serde_json::json!({ "match": m }),
                    )
                });
                self.match_pairs.insert(m.match_id.clone(), key.clone());
                if let Some(d) = self.durable.as_mut() {
                    d.next.match_keys.push((m.match_id.clone(), key.clone()));
                }
            }
            Effect::Unmatched { match_, by } => {
                METRICS.unmatches.inc();
                if let Some(d) = self.durable.as_mut() {
                    d.next.ended.push(key.clone());
                }
                self.notify(|| {
                    WebhookEvent::new(
                        format!("match.ended:{}", match_.match_id),
                        "match.ended",
                        serde_json::json!({ "match_id": &match_.match_id, "users": &match_.users, "by": by }),
                    )
                });
            }
        }
        self.owe(key, owed_for(&effect, unix_ms()));
    }

    /// Tells the app's backend about a decision: now in memory, after the batch is stored with Redis.
    /// The event is only built when webhooks are on.
    pub(crate) fn notify(&mut self, event: impl FnOnce() -> WebhookEvent) {
        if !self.webhooks.enabled() {
            return;
        }
        let event = event();
        match self.durable.as_mut() {
            None => self.webhooks.send(event),
            Some(d) => d.next.webhooks.push(event),
        }
    }

    /// Events (and their changes) a decision about `key` owes its users.
    pub(crate) fn owe(&mut self, key: &PairKey, entries: Vec<OutboxEntry>) {
        match self.durable.as_mut() {
            // In memory the event goes straight to the user's log.
            None => {
                for e in entries {
                    self.users.publish(&e.user, e.kind, e.change, None);
                }
            }
            // With Redis it is owed until the batch commits and the user's log confirms it.
            Some(d) => d.outbox.owe(key, entries),
        }
    }

    /// Whether this shard stores its pairs (Redis mode).
    pub(crate) fn persisted(&self) -> bool {
        self.durable.is_some()
    }

    /// Whether `key` owes `user` the effect `effect_id` (in memory, owed events go out at once).
    pub(crate) fn owes(&self, key: &PairKey, user: &crate::protocol::UserId, effect_id: &str) -> bool {
        self.durable.as_ref().is_some_and(|d| d.outbox.owes(key, user, effect_id))
    }

    /// Writes `key`'s guard, active match id key and recovery-set listings from its state in the
    /// next batch (an audit repair), and publishes what it owes again.
    pub(crate) fn sync_keys(&mut self, key: &PairKey) {
        if let Some(d) = self.durable.as_mut() {
            d.next.synced.push(key.clone());
        }
        self.publish_owed(key);
    }

    /// Records that room `room_id` of `key` must be findable by id after a restart.
    pub(crate) fn index_room(&mut self, room_id: &RoomId, key: &PairKey) {
        self.room_pairs.insert(room_id.clone(), key.clone());
        if let Some(d) = self.durable.as_mut() {
            d.next.room_keys.push((room_id.clone(), key.clone()));
        }
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = self.durable.as_mut() else { return };
        match d.commit.schedule(d.next.ops()) {
            Schedule::Wait => {}
            Schedule::FlushNow => self.flush(ctx),
            Schedule::Notify => ctx.notify(Flush),
        }
    }

    /// Sends the pending batch as one atomic, fenced script (see `persist::batch::send`).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = self.durable.as_mut() else { return };
        if !d.commit.begin(d.next.ops()) {
            return;
        }
        let mut batch = std::mem::take(&mut d.next);
        batch.generation = d.generation;
        d.sent += 1;
        batch.seq = d.sent;
        METRICS.persist_batch_size.observe(batch.ops() as f64);
        let mut pipe = redis::pipe();
        let mut expect = Vec::new();
        for key in &batch.dirty {
            let outbox = d.outbox.write(key, batch.seq);
            let has_outbox = !outbox.is_empty();
            let rooms = self.rooms.get(key);
            let record = PairRecord {
                state: self.pairs.get(key).cloned().unwrap_or_default(),
                outbox,
                rooms: rooms.cloned().unwrap_or_default(),
            };
            let json = serde_json::to_string(&record).unwrap_or_default();
            pipe.cmd("SET").arg(keys::pair(key)).arg(json);
            expect.push(Expect::Ignore);
            // The per-slot recovery sets change only when the pair starts or stops owing events or
            // having an open room, not on every write of it.
            let open_room = rooms.is_some_and(|r| r.iter().any(|r| r.closed.is_none()));
            for (set, wanted, listed) in [
                (keys::open_rooms(key.slot()), open_room, &mut d.listed_rooms),
                (keys::outbox(key.slot()), has_outbox, &mut d.listed_outbox),
            ] {
                if wanted != listed.contains(key) {
                    pipe.cmd(if wanted { "SADD" } else { "SREM" }).arg(set).arg(keys::pair_member(key));
                    expect.push(Expect::Ignore);
                    if wanted {
                        listed.insert(key.clone());
                    } else {
                        listed.remove(key);
                    }
                }
            }
        }
        for (id, key) in &batch.match_keys {
            pipe.cmd("SET").arg(keys::match_owner(key.slot(), id)).arg(keys::pair_member(key));
            expect.push(Expect::Ignore);
        }
        for key in &batch.ended {
            pipe.cmd("DEL").arg(keys::active_match(key));
            expect.push(Expect::Ignore);
        }
        for key in &batch.synced {
            let active = self.pairs.get(key).and_then(PairState::active_match);
            match active {
                // `NX`: a guard naming another match stays for a person to look at.
                Some(m) => {
                    pipe.cmd("SET").arg(keys::active_match(key)).arg(m.match_id.as_str()).arg("NX");
                    pipe.cmd("SET").arg(keys::match_owner(key.slot(), &m.match_id)).arg(keys::pair_member(key));
                    expect.extend([Expect::Ignore, Expect::Ignore]);
                }
                None => {
                    pipe.cmd("DEL").arg(keys::active_match(key));
                    expect.push(Expect::Ignore);
                }
            }
            let open_room = self.rooms.get(key).is_some_and(|r| r.iter().any(|r| r.closed.is_none()));
            let has_outbox = d.outbox.has(key);
            for (set, wanted, listed) in [
                (keys::open_rooms(key.slot()), open_room, &mut d.listed_rooms),
                (keys::outbox(key.slot()), has_outbox, &mut d.listed_outbox),
            ] {
                pipe.cmd(if wanted { "SADD" } else { "SREM" }).arg(set).arg(keys::pair_member(key));
                expect.push(Expect::Ignore);
                if wanted {
                    listed.insert(key.clone());
                } else {
                    listed.remove(key);
                }
            }
        }
        let guards: Vec<(String, String)> =
            batch.match_keys.iter().map(|(id, key)| (keys::active_match(key), id.to_string())).collect();
        for (id, key) in &batch.room_keys {
            pipe.cmd("SET").arg(keys::room_owner(key.slot(), id)).arg(keys::pair_member(key));
            expect.push(Expect::Ignore);
        }
        for key in &batch.loads {
            pipe.cmd("GET").arg(keys::pair(key));
            expect.push(Expect::Pair(key.clone()));
        }
        for lookup in &batch.lookups {
            let key = match lookup {
                Lookup::Match(id) => keys::match_owner(id.slot().unwrap_or(0), id),
                Lookup::Room(id) => keys::room_owner(id.slot().unwrap_or(0), id),
            };
            pipe.cmd("GET").arg(key);
            expect.push(Expect::Owner(lookup.clone()));
        }
        let durability = d.durability.clone();
        let commands = expect.len();
        let written = batch.match_keys.iter().map(|(_, k)| k).chain(batch.room_keys.iter().map(|(_, k)| k));
        let slots =
            batch.dirty.iter().chain(&batch.loads).chain(&batch.synced).chain(written).map(PairKey::slot).chain(
                batch.lookups.iter().map(|l| match l {
                    Lookup::Match(id) => id.slot().unwrap_or(0),
                    Lookup::Room(id) => id.slot().unwrap_or(0),
                }),
            );
        batch::send(durability, slots, guards, pipe, commands)
            .into_actor(self)
            .map(move |res, act, ctx| act.committed(batch, expect, res, ctx))
            .spawn(ctx);
    }

    /// A batch came back: release its answers and events, or fail everything that depended on it.
    fn committed(
        &mut self,
        batch: Batch,
        expect: Vec<Expect>,
        res: Result<Vec<redis::Value>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let values = match res {
            Ok(v) if v.len() == expect.len() => v,
            Ok(v) => {
                let e = StoreError::Corrupt {
                    key: "batch".into(),
                    message: format!("{} replies for {} commands", v.len(), expect.len()),
                };
                return self.batch_failed(batch, e, ctx);
            }
            Err(e) => return self.batch_failed(batch, e, ctx),
        };
        let Some(d) = self.durable.as_mut() else { return };
        d.commit.finished();
        // The writes are durable: the outbox entries this batch carried may go out now.
        for key in &batch.dirty {
            d.outbox.committed(key, batch.seq);
        }
        tracing::debug!(shard = self.index, ops = batch.waiters.len(), request_ids = ?batch.request_ids, "batch committed");
        for w in batch.waiters {
            w.release();
        }
        for event in batch.webhooks {
            self.webhooks.send(event);
        }
        for key in &batch.dirty {
            self.publish_owed(key);
        }
        // Reads from before a cache drop are stale: their commands were failed by the drop and
        // the pairs are loaded again on their next touch.
        let generation = self.durable.as_ref().map_or(0, |d| d.generation);
        let current = generation == batch.generation;
        for (value, exp) in values.iter().zip(expect) {
            match exp {
                Expect::Ignore => {}
                Expect::Owner(_) if !current => {}
                Expect::Pair(key) if !may_install(batch.generation, generation, self.pairs.contains_key(&key)) => {
                    if current {
                        // In memory already: run what waited for the load on that state.
                        let cmds = self.durable.as_mut().and_then(|d| d.loading.remove(&key)).unwrap_or_default();
                        for cmd in cmds {
                            self.execute(cmd, ctx);
                        }
                    }
                }
                Expect::Pair(key) => self.loaded(key, value, ctx),
                Expect::Owner(lookup) => {
                    let owner = text(value).and_then(|s| keys::parse_pair_member(&s));
                    let cmds = self.durable.as_mut().and_then(|d| d.looking_up.remove(&lookup)).unwrap_or_default();
                    match (owner, &lookup) {
                        (Some(key), Lookup::Match(id)) => drop(self.match_pairs.insert(id.clone(), key)),
                        (Some(key), Lookup::Room(id)) => drop(self.room_pairs.insert(id.clone(), key)),
                        (None, _) => {}
                    }
                    for cmd in cmds {
                        match self.pair_of(&cmd) {
                            // Known now: load the pair (or decide).
                            Ok(_) => self.submit(cmd, ctx),
                            // Known absent: deciding answers not found.
                            Err(_) => self.execute(cmd, ctx),
                        }
                    }
                }
            }
        }
        self.schedule_flush(ctx);
    }

    /// A pair's stored record arrived: install it, re-publish what it still owes, run its queue.
    fn loaded(&mut self, key: PairKey, value: &redis::Value, ctx: &mut Context<Self>) {
        let record = match text(value) {
            None => PairRecord::default(),
            Some(json) => match serde_json::from_str::<PairRecord>(&json) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(key = %keys::pair(&key), error = %e, "unreadable pair record");
                    let cmds = self.durable.as_mut().and_then(|d| d.loading.remove(&key)).unwrap_or_default();
                    let err = ApiError::Unavailable("this pair's stored state is unreadable".into());
                    cmds.into_iter().for_each(|c| c.fail(&err));
                    return;
                }
            },
        };
        if let Some(m) = record.state.active_match() {
            self.match_pairs.insert(m.match_id.clone(), key.clone());
        }
        for room in &record.rooms {
            self.room_pairs.insert(room.room.room_id.clone(), key.clone());
        }
        self.pairs.insert(key.clone(), record.state);
        if !record.rooms.is_empty() {
            self.rooms.insert(key.clone(), record.rooms);
        }
        let Some(d) = self.durable.as_mut() else { return };
        // A record and its set memberships are written in one atomic batch, so they agree.
        if !record.outbox.is_empty() {
            d.listed_outbox.insert(key.clone());
        }
        if self.rooms.get(&key).is_some_and(|r| r.iter().any(|r| r.closed.is_none())) {
            d.listed_rooms.insert(key.clone());
        }
        d.outbox.restore(&key, record.outbox);
        let cmds = d.loading.remove(&key).unwrap_or_default();
        self.publish_owed(&key);
        // Rooms a previous run (or owner) left open go on; their members' grace starts now.
        self.adopt_rooms(&key);
        for cmd in cmds {
            self.execute(cmd, ctx);
        }
        self.schedule_flush(ctx);
    }

    /// The batch failed: nothing in it (or decided on top of it) is acknowledged; forget the cache
    /// so the next touch reloads the truth from Redis.
    fn batch_failed(&mut self, batch: Batch, e: StoreError, ctx: &mut Context<Self>) {
        tracing::warn!(shard = self.index, error = %e, request_ids = ?batch.request_ids, "batch failed; its actions answer 503");
        let err = ApiError::from(e);
        if let Some(d) = self.durable.as_mut() {
            d.commit.finished();
        }
        for w in batch.waiters {
            w.fail(&err);
        }
        self.drop_cache(&err, ctx);
    }

    /// Forgets everything cached (failing what was decided on it), so the next touch reloads the
    /// truth from Redis. After a failed batch, and when this node starts a new lease tenure.
    fn drop_cache(&mut self, err: &ApiError, ctx: &mut Context<Self>) {
        let Some(d) = self.durable.as_mut() else { return };
        d.generation += 1;
        let next = std::mem::take(&mut d.next);
        for w in next.waiters {
            w.fail(err);
        }
        for (_, cmds) in d.loading.drain() {
            cmds.into_iter().for_each(|c| c.fail(err));
        }
        for (_, cmds) in d.looking_up.drain() {
            cmds.into_iter().for_each(|c| c.fail(err));
        }
        d.outbox.clear();
        d.last_used.clear();
        d.listed_outbox.clear();
        d.listed_rooms.clear();
        self.pairs.clear();
        self.match_pairs.clear();
        self.rooms.clear();
        self.room_pairs.clear();
        // Effects owed by pairs no longer in memory would wait for their pair's next touch:
        // sweep the stored outboxes (and open rooms) again once Redis answers.
        if !d.recovery_scheduled {
            d.recovery_scheduled = true;
            ctx.run_later(OUTBOX_RETRY, |act, ctx| act.recover_outboxes(ctx));
        }
    }

    /// Drops pairs idle for `idle_ms` that owe nothing and have no open room (Redis mode): memory
    /// holds what is in use, Redis the rest. An evicted pair is loaded again on its next touch;
    /// a write of it still in flight is ordered before that load on the shard's connection.
    fn evict_idle(&mut self, now_ms: u64) {
        let Some(d) = self.durable.as_mut() else { return };
        let idle_ms = d.idle_ms;
        let idle: Vec<PairKey> = d
            .last_used
            .iter()
            .filter(|(key, used)| {
                now_ms.saturating_sub(**used) >= idle_ms
                    && !d.outbox.has(key)
                    && !d.loading.contains_key(*key)
                    && !d.next.dirty.contains(*key)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in idle {
            if self.rooms.get(&key).is_some_and(|rooms| rooms.iter().any(|r| r.closed.is_none())) {
                continue;
            }
            d.last_used.remove(&key);
            d.listed_outbox.remove(&key);
            d.listed_rooms.remove(&key);
            METRICS.cache_evictions.with_label_values(&["pair"]).inc();
            if let Some(state) = self.pairs.remove(&key) {
                if let Some(m) = state.active_match() {
                    self.match_pairs.remove(&m.match_id);
                }
            }
            for room in self.rooms.remove(&key).unwrap_or_default() {
                self.room_pairs.remove(&room.room.room_id);
            }
        }
    }

    /// Publishes the committed, unconfirmed effects of `key` to their users.
    pub(crate) fn publish_owed(&mut self, key: &PairKey) {
        let Some(d) = self.durable.as_mut() else { return };
        for entry in d.outbox.due(key, unix_ms()) {
            let effect = EffectRef { id: entry.effect_id, pair: key.clone() };
            self.users.publish(&entry.user, entry.kind, entry.change, Some(effect));
        }
    }

    /// Re-publishes effects that were not confirmed in time (a user shard's batch failed).
    fn retry_outbox(&mut self) {
        let Some(d) = self.durable.as_mut() else { return };
        for key in d.outbox.stale(unix_ms(), OUTBOX_RETRY.as_millis() as u64) {
            self.publish_owed(&key);
        }
    }

    /// Loads every pair of this shard's slots that still owes events (after a crash).
    fn recover_outboxes(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = self.durable.as_mut() else { return };
        d.recovery_scheduled = false;
        let (index, shards) = (self.index, self.shards);
        if !d.durability.fence.ready() {
            // Cluster mode, between views: sweep once this node knows which slots are its own.
            d.recovery_scheduled = true;
            ctx.run_later(RECOVERY_SOON, |act, ctx| act.recover_outboxes(ctx));
            return;
        }
        let fence = &d.durability.fence;
        let slots: Vec<u16> = (0..SLOT_COUNT).filter(|s| shard_of(*s, shards) == index && fence.owns(*s)).collect();
        let store = d.durability.store.clone();
        // In chunks, each within the persistence timeout (on a Redis Cluster every slot is its own
        // request).
        let sweep = async move {
            let mut values = Vec::with_capacity(slots.len() * 2);
            for chunk in slots.chunks(RECOVERY_CHUNK) {
                let mut pipe = redis::pipe();
                for slot in chunk {
                    pipe.cmd("SMEMBERS").arg(keys::outbox(*slot));
                    pipe.cmd("SMEMBERS").arg(keys::open_rooms(*slot));
                }
                values.extend(store.run(pipe, chunk.len() * 2).await?);
            }
            Ok::<_, StoreError>(values)
        };
        sweep
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(values) => {
                    let mut found = 0;
                    for v in values {
                        if let redis::Value::Array(members) = v {
                            for m in members {
                                if let Some(key) = text(&m).and_then(|s| keys::parse_pair_member(&s)) {
                                    found += 1;
                                    act.ensure_loaded(key, ctx);
                                }
                            }
                        }
                    }
                    if found > 0 {
                        tracing::info!(shard = act.index, pairs = found, "recovering owed events and open rooms");
                    }
                }
                Err(e) => {
                    tracing::warn!(shard = act.index, error = %e, "outbox recovery failed; retrying");
                    ctx.run_later(OUTBOX_RETRY, |act, ctx| act.recover_outboxes(ctx));
                }
            })
            .spawn(ctx);
    }
}

impl Actor for PairShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A burst of actions queues here instead of parking every sender (actix's default is 16).
        ctx.set_mailbox_capacity(SHARD_MAILBOX);
        ctx.run_interval(ROOM_SWEEP_INTERVAL, |act, _| act.sweep_rooms(unix_ms()));
        if let Some(d) = self.durable.as_ref() {
            ctx.run_interval(evict_interval(d.idle_ms), |act, _| act.evict_idle(unix_ms()));
        }
        if self.durable.is_some() {
            ctx.run_interval(OUTBOX_RETRY, |act, _| act.retry_outbox());
            self.recover_outboxes(ctx);
        }
    }
}

impl Handler<ResetCache> for PairShard {
    type Result = ();

    fn handle(&mut self, _: ResetCache, ctx: &mut Context<Self>) {
        self.drop_cache(&ApiError::Unavailable("this node is taking over its data; retry".into()), ctx);
        // A new owner sweeps what the previous one still owed at once, not after the retry pause.
        ctx.run_later(RECOVERY_SOON, |act, ctx| act.recover_outboxes(ctx));
    }
}

impl Handler<Flush> for PairShard {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        if let Some(d) = self.durable.as_mut() {
            d.commit.notified();
        }
        self.flush(ctx);
    }
}

impl Handler<CreateRoom> for PairShard {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: CreateRoom, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.submit(Cmd::CreateRoom(msg, tx), ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }
}

impl Handler<Skip> for PairShard {
    type Result = ResponseFuture<Result<SkipResponse, ApiError>>;

    fn handle(&mut self, msg: Skip, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.submit(Cmd::Skip(msg, tx), ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }
}

impl Handler<CloseRoom> for PairShard {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: CloseRoom, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.submit(Cmd::CloseRoom(msg, tx), ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }
}

impl Handler<MemberGone> for PairShard {
    type Result = ();

    fn handle(&mut self, msg: MemberGone, ctx: &mut Context<Self>) {
        self.submit(Cmd::MemberGone(msg), ctx);
    }
}

impl Handler<Swipe> for PairShard {
    type Result = ResponseFuture<Result<SwipeResponse, ApiError>>;

    fn handle(&mut self, msg: Swipe, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.submit(Cmd::Swipe(msg, tx), ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }
}

impl Handler<RepairPair> for PairShard {
    type Result = ResponseFuture<Result<RepairOutcome, ApiError>>;

    fn handle(&mut self, msg: RepairPair, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.submit(Cmd::Repair(msg, tx), ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }
}

impl Handler<Unmatch> for PairShard {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: Unmatch, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.submit(Cmd::Unmatch(msg, tx), ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }
}

impl Handler<EffectsPersisted> for PairShard {
    type Result = ();

    fn handle(&mut self, msg: EffectsPersisted, ctx: &mut Context<Self>) {
        let Some(d) = self.durable.as_mut() else { return };
        if d.outbox.confirm(&msg.pair, &msg.confirmed) {
            d.next.dirty.insert(msg.pair);
            self.schedule_flush(ctx);
        }
    }
}
