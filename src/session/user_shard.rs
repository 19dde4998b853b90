//! `UserShard`: owns, for each of its users, the event log, the open connections, the index of
//! active matches, and the user's place (idle, queued, in a room; see `queue::placement`).
//! Publishing, subscribing and resuming are all messages to this one actor, so the order "replay
//! what was missed, then go live" cannot interleave with a new event (I2).
//!
//! With Redis, a user's log and match index are loaded on first touch (messages for the user wait
//! behind the load, in order), new events are written in the shard's next batch, and they reach
//! connections (and are confirmed to the pair that owes them) only after that batch commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::{Actor, ActorFutureExt, AsyncContext, Context, ContextFutureSpawner, Handler, ResponseFuture, WrapFuture};
use bytes::Bytes;
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::event_log::{EventLog, Replay};
use super::messages::{
    CloseAll, CloseReason, Deliver, EffectRef, IndexChange, InspectUser, ListMatches, Publish, ServerPublish,
    SessionHandle, Subscribe, Unsubscribe,
};
use crate::config::Limits;
use crate::coord::shard::{EffectsPersisted, ResetCache};
use crate::coord::slot::PairKey;
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::persist::batch::{self, GroupCommit, Schedule};
use crate::persist::store::text;
use crate::persist::{keys, Durability, StoreError};
use crate::protocol::event::Hello;
use crate::protocol::server::{AppEvent, PlaceState, PlaceView, UserView};
use crate::protocol::JoinRequest;
use crate::protocol::{Event, EventKind, Match, UserId};
use crate::queue::place::{Place, PoolCalls};
use crate::queue::PoolRouter;

/// Pause before publishing again the room and queue events of a failed batch.
const PUBLISH_RETRY: Duration = Duration::from_secs(1);

/// Replies per user load in a batch: the log, the match index, the stored queue place, and the
/// load's generation (see `queue::place::PlaceSeq`).
const LOAD_REPLIES: usize = 4;

/// The stored place of a user who is not in a line.
const IDLE: &str = "idle";

/// One user's state on this node.
pub(crate) struct UserEntry {
    log: EventLog,
    sessions: SmallVec<[SessionHandle; 2]>,
    matches: Vec<Match>,
    /// Where the user is (I4). Changed only by this shard.
    pub(crate) place: Place,
    /// The room the user last left without a requeue: their next join tells the pool to forget
    /// that pairing (in the join itself, so it holds across nodes).
    pub(crate) left_room: Option<crate::protocol::RoomId>,
    /// The place was set on this node (or installed by a load): it is newer than what is stored
    /// (its write may still be on its way), so a reload keeps it.
    place_known: bool,
    /// The user's calls to pools in flight, and the leaves held behind them.
    pub(crate) calls: PoolCalls<PlaceAction>,
    /// Bumped on every connect and disconnect, so a pending presence check can tell it is stale.
    presence_gen: u64,
    /// With Redis: the log and matches reflect what is stored.
    loaded: bool,
    /// Last time anything happened for this user (for evicting idle ones; Redis holds them).
    last_used: u64,
}

/// The other actors a user shard talks to; set once by `Wire` before any traffic.
#[derive(Clone)]
pub struct Links {
    pub pairs: ShardRouter,
    pub pools: PoolRouter,
}

/// Gives a user shard its links (they are created after it).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Wire(pub Links);

impl UserEntry {
    /// No connection of the user is open on this node (their owner).
    pub(crate) fn is_offline(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Where the answer to a publish by the app's backend goes, once its event is in the log.
type Ack = oneshot::Sender<Result<(), ApiError>>;

/// A message that must wait until its user is loaded.
enum Deferred {
    Publish(Publish),
    /// An event the app's backend publishes to this user.
    ServerPublish(UserId, AppEvent, Ack),
    Subscribe(Subscribe, oneshot::Sender<Result<(), ApiError>>),
    ListMatches(UserId, oneshot::Sender<Vec<Match>>),
    Inspect(UserId, oneshot::Sender<UserView>),
    /// A place action (join, leave) that must not overtake an earlier room change still waiting.
    Place(PlaceAction),
}

/// A deferred place action.
pub(crate) type PlaceAction = Box<dyn FnOnce(&mut UserShard, &mut Context<UserShard>)>;

/// One group commit of user logs.
#[derive(Default)]
struct UserBatch {
    /// New events in log order, to store then deliver.
    events: Vec<(UserId, Arc<Event>)>,
    index: Vec<(UserId, IndexChange)>,
    /// Effects to confirm to their pairs once this batch is stored.
    confirms: Vec<(PairKey, String, UserId)>,
    /// The batch's events that no pair re-publishes (room and queue events), kept so they can be
    /// published again if the batch fails.
    retryable: Vec<Publish>,
    /// Publishes by the app's backend answered once this batch is stored (their events are in it
    /// or in an earlier one); a failed batch fails them, and the app retries with its key.
    acks: Vec<(UserId, Ack)>,
    /// Queue places to store (the ticket while queued, else none), so a user who moves to another
    /// node, or is loaded again after a restart, is still queued there (I4).
    places: Vec<(UserId, Option<JoinRequest>)>,
    loads: Vec<UserId>,
}

impl UserBatch {
    fn ops(&self) -> usize {
        self.events.len()
            + self.index.len()
            + self.loads.len()
            + self.confirms.len()
            + self.acks.len()
            + self.places.len()
    }
}

struct UserDurable {
    durability: Durability,
    next: UserBatch,
    /// One batch in flight; when to send the next.
    commit: GroupCommit,
    loading: HashMap<UserId, Vec<Deferred>>,
}

#[derive(actix::Message)]
#[rtype(result = "()")]
struct FlushUsers;

pub struct UserShard {
    pub(crate) users: HashMap<UserId, UserEntry>,
    limits: Limits,
    /// This node's id, told to clients in `hello`.
    node_id: Arc<str>,
    links: Option<Links>,
    /// How long a user may stay disconnected before losing a queue place or room.
    presence_grace: Duration,
    durable: Option<UserDurable>,
}

impl UserShard {
    pub fn new(limits: Limits, node_id: Arc<str>, presence_grace: Duration, durability: Option<Durability>) -> Self {
        UserShard {
            users: HashMap::new(),
            limits,
            node_id,
            links: None,
            presence_grace,
            durable: durability.map(|durability| UserDurable {
                next: UserBatch::default(),
                commit: GroupCommit::new(durability.max_batch),
                durability,
                loading: HashMap::new(),
            }),
        }
    }

    pub(crate) fn links(&self) -> Result<&Links, ApiError> {
        self.links.as_ref().ok_or_else(|| ApiError::Unavailable("the server is still starting".into()))
    }

    pub(crate) fn entry(&mut self, user: &UserId) -> &mut UserEntry {
        let capacity = self.limits.event_log_capacity;
        let in_memory = self.durable.is_none();
        self.users.entry(user.clone()).or_insert_with(|| UserEntry {
            log: EventLog::new(capacity),
            sessions: SmallVec::new(),
            matches: Vec::new(),
            place: Place::Idle,
            left_room: None,
            calls: PoolCalls::default(),
            place_known: false,
            presence_gen: 0,
            loaded: in_memory,
            last_used: crate::protocol::unix_ms(),
        })
    }

    /// Runs `msg` now if the user is loaded, else queues it behind the user's load.
    fn when_loaded(&mut self, user: &UserId, msg: Deferred, ctx: &mut Context<Self>) {
        let entry = self.entry(user);
        entry.last_used = crate::protocol::unix_ms();
        if entry.loaded {
            return self.run(msg, ctx);
        }
        let Some(d) = self.durable.as_mut() else { return };
        let waiting = d.loading.entry(user.clone()).or_default();
        if waiting.is_empty() {
            d.next.loads.push(user.clone());
        }
        waiting.push(msg);
        self.schedule_flush(ctx);
    }

    fn run(&mut self, msg: Deferred, ctx: &mut Context<Self>) {
        match msg {
            Deferred::Publish(p) => self.publish_loaded(&p.user, &p.kind, p.change, p.effect, ctx),
            Deferred::Subscribe(s, tx) => {
                let _ = tx.send(self.subscribe_loaded(s));
            }
            Deferred::ListMatches(user, tx) => {
                let _ = tx.send(self.entry(&user).matches.clone());
            }
            Deferred::ServerPublish(user, event, ack) => self.publish_app_loaded(&user, &event, ack, ctx),
            Deferred::Inspect(user, tx) => {
                let _ = tx.send(self.view(&user));
            }
            Deferred::Place(action) => action(self, ctx),
        }
    }

    /// Runs `action` once `user` is loaded (at once if they are).
    pub(crate) fn after_load(&mut self, user: &UserId, action: PlaceAction, ctx: &mut Context<Self>) {
        self.when_loaded(user, Deferred::Place(action), ctx);
    }

    /// Logs an event the app's backend published (`event`) for `user` and delivers it, exactly as
    /// a built-in event; `ack` hears once it is in the log (stored, with Redis). An event whose key
    /// the log already holds is not logged again: the publish answers the same once that one is
    /// stored (I3, across retries, restarts and nodes, as far back as the log reaches).
    fn publish_app_loaded(&mut self, user: &UserId, event: &AppEvent, ack: Ack, ctx: &mut Context<Self>) {
        let effect = event.effect_id();
        let entry = self.entry(user);
        let logged = match effect.as_deref().and_then(|fx| entry.log.find_effect(fx)) {
            // Published with this key before: nothing new, and the same answer once that is stored.
            Some(existing) if existing <= entry.log.durable_id() => return drop(ack.send(Ok(()))),
            Some(_) => None,
            None => {
                Some(entry.log.append(|id| Event::app(id, event.type_.as_str(), &event.data, effect.map(Arc::from))))
            }
        };
        let Some(d) = self.durable.as_mut() else {
            if let Some(logged) = logged {
                self.entry(user).log.mark_durable(logged.id);
                self.deliver(user, logged, ctx);
            }
            let _ = ack.send(Ok(()));
            return;
        };
        // Not stored yet (this batch, or the one in flight before it): answer after this batch.
        if let Some(logged) = logged {
            d.next.events.push((user.clone(), logged));
        }
        d.next.acks.push((user.clone(), ack));
        self.schedule_flush(ctx);
    }

    /// What the server API tells about a loaded `user`.
    fn view(&mut self, user: &UserId) -> UserView {
        let entry = self.entry(user);
        let place = match &entry.place {
            Place::Idle => PlaceView::idle(),
            Place::Queued { ticket } => {
                PlaceView { state: PlaceState::Queued, pool: Some(ticket.pool.clone()), room_id: None }
            }
            Place::InRoom { room_id, ticket } => {
                PlaceView { state: PlaceState::InRoom, pool: Some(ticket.pool.clone()), room_id: Some(room_id.clone()) }
            }
        };
        UserView {
            user: user.clone(),
            place,
            matches: entry.matches.len(),
            connections: entry.sessions.iter().filter(|s| s.recipient.connected()).count(),
            last_event_id: entry.log.durable_id(),
        }
    }

    /// Whether `user`'s log, matches and place are in memory (always in memory mode).
    pub(crate) fn is_loaded(&self, user: &UserId) -> bool {
        self.durable.is_none() || self.users.get(user).is_some_and(|e| e.loaded)
    }

    /// Changes `user`'s place; with Redis a change of the stored part (the queue ticket) goes in
    /// the next batch. The place is in effect at once: calls to pools do not wait for that write.
    pub(crate) fn set_place(&mut self, user: &UserId, place: Place, ctx: &mut Context<Self>) {
        let durable = self.durable.is_some();
        let node = self.node_id.clone();
        let entry = self.entry(user);
        let changed = entry.place.stored_ticket() != place.stored_ticket() || !entry.calls.recorded;
        let stored = place.stored_ticket().cloned();
        tracing::debug!(node = %node, user = %user, from = ?entry.place, to = ?place, "place");
        entry.place = place;
        entry.place_known = true;
        if changed && durable {
            entry.calls.recorded = true;
            if let Some(d) = self.durable.as_mut() {
                d.next.places.push((user.clone(), stored));
            }
            self.schedule_flush(ctx);
        }
    }

    /// Resolves once everything now waiting for `user`'s next batch is stored (at once in memory
    /// mode): a join or leave is answered only when the place it set is stored, so no restart or
    /// move brings back a place the user was told is gone.
    pub(crate) fn place_stored(
        &mut self,
        user: &UserId,
        ctx: &mut Context<Self>,
    ) -> impl std::future::Future<Output = Result<(), ApiError>> + 'static {
        let (tx, rx) = oneshot::channel();
        match self.durable.as_mut() {
            None => drop(tx.send(Ok(()))),
            Some(d) => {
                d.next.acks.push((user.clone(), tx));
                self.schedule_flush(ctx);
            }
        }
        async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) }
    }

    /// Appends an event to `user`'s log and delivers it (now in memory; after commit with Redis).
    pub(crate) fn publish(&mut self, user: &UserId, kind: &EventKind, change: IndexChange, ctx: &mut Context<Self>) {
        let msg = Publish { user: user.clone(), kind: kind.clone(), change, effect: None };
        self.when_loaded(user, Deferred::Publish(msg), ctx);
    }

    fn publish_loaded(
        &mut self,
        user: &UserId,
        kind: &EventKind,
        change: IndexChange,
        effect: Option<EffectRef>,
        ctx: &mut Context<Self>,
    ) {
        let durable = self.durable.is_some();
        let entry = self.entry(user);
        if let Some(fx) = &effect {
            match crate::session::effects::arrival(&entry.log, &fx.id, &change) {
                crate::session::effects::Arrival::New => {}
                // A re-publish of an event already logged: confirm it, log nothing.
                crate::session::effects::Arrival::Logged(existing) => {
                    let durable_now = existing <= entry.log.durable_id();
                    self.heal_index(user, &change, ctx);
                    self.confirm(fx.pair.clone(), fx.id.clone(), user.clone(), durable_now, ctx);
                    return;
                }
                // A match that arrives after its own end: nothing to tell, nothing to list.
                crate::session::effects::Arrival::Superseded(existing) => {
                    let durable_now = existing <= entry.log.durable_id();
                    self.confirm(fx.pair.clone(), fx.id.clone(), user.clone(), durable_now, ctx);
                    return;
                }
            }
        }
        match &change {
            IndexChange::AddMatch(m) => entry.matches.push(m.clone()),
            IndexChange::RemoveMatch(id) => entry.matches.retain(|m| m.match_id != *id),
            IndexChange::None | IndexChange::EnterRoom { .. } | IndexChange::LeaveRoom { .. } => {}
        }
        let event = entry.log.push(kind, effect.as_ref().map(|fx| Arc::from(fx.id.as_str())));
        match &change {
            IndexChange::EnterRoom { room_id, ticket } => self.enter_room(user, room_id.clone(), ticket.clone(), ctx),
            IndexChange::LeaveRoom { room_id, requeue } => self.leave_room(user, room_id, *requeue, ctx),
            _ => {}
        }
        let entry = self.entry(user);
        if !durable {
            entry.log.mark_durable(event.id);
            self.deliver(user, event, ctx);
            return;
        }
        let Some(d) = self.durable.as_mut() else { return };
        if effect.is_none() {
            d.next.retryable.push(Publish {
                user: user.clone(),
                kind: kind.clone(),
                change: change.clone(),
                effect: None,
            });
        }
        d.next.events.push((user.clone(), event));
        if matches!(change, IndexChange::AddMatch(_) | IndexChange::RemoveMatch(_)) {
            d.next.index.push((user.clone(), change));
        }
        if let Some(fx) = effect {
            d.next.confirms.push((fx.pair, fx.id, user.clone()));
        }
        self.schedule_flush(ctx);
    }

    /// A re-published event whose index change is missing from the user's match index (it is logged
    /// and indexed in one batch, so only a repair finds this): applies the change alone. A match is
    /// added back only if its end is not logged after it.
    fn heal_index(&mut self, user: &UserId, change: &IndexChange, ctx: &mut Context<Self>) {
        let entry = self.entry(user);
        let heal = match change {
            IndexChange::AddMatch(m) => {
                let ended = entry.log.find_effect(&format!("unmatch:{}", m.match_id)).is_some();
                if ended || entry.matches.iter().any(|x| x.match_id == m.match_id) {
                    return;
                }
                entry.matches.push(m.clone());
                true
            }
            IndexChange::RemoveMatch(id) => {
                let before = entry.matches.len();
                entry.matches.retain(|m| m.match_id != *id);
                entry.matches.len() != before
            }
            IndexChange::None | IndexChange::EnterRoom { .. } | IndexChange::LeaveRoom { .. } => false,
        };
        if !heal {
            return;
        }
        tracing::info!(user = %user, change = ?change, "match index mended from a re-published event");
        if let Some(d) = self.durable.as_mut() {
            d.next.index.push((user.clone(), change.clone()));
            self.schedule_flush(ctx);
        }
    }

    /// Tells the pair that owes `effect` to `user` that it is logged (now, or after the next commit).
    fn confirm(&mut self, pair: PairKey, effect: String, user: UserId, durable_now: bool, ctx: &mut Context<Self>) {
        match (durable_now, self.durable.as_mut()) {
            (false, Some(d)) => {
                d.next.confirms.push((pair, effect, user));
                self.schedule_flush(ctx);
            }
            _ => {
                if let Ok(links) = self.links() {
                    links.pairs.effects_persisted(EffectsPersisted { pair, confirmed: vec![(effect, user)] });
                }
            }
        }
    }

    /// Writes a durable event to every connection of `user`.
    fn deliver(&mut self, user: &UserId, event: Arc<Event>, ctx: &mut Context<Self>) {
        let entry = self.entry(user);
        let before = entry.sessions.len();
        entry.sessions.retain(|s| match s.recipient.try_send(Deliver::Event(event.clone())) {
            Ok(()) => {
                s.gave(event.id);
                true
            }
            Err(SendError::Full(_)) => {
                // The connection's outbox is full: close it rather than buffer without bound.
                // It resumes from its last id when it reconnects.
                METRICS.slow_consumers.inc();
                s.recipient.do_send(Deliver::Close(CloseReason::SlowConsumer));
                false
            }
            Err(SendError::Closed(_)) => false,
        });
        if before > 0 && entry.sessions.is_empty() {
            self.went_offline(user, ctx);
        }
    }

    fn subscribe_loaded(&mut self, msg: Subscribe) -> Result<(), ApiError> {
        let max = self.limits.max_connections_per_user;
        let node = self.node_id.clone();
        let entry = self.entry(&msg.user);
        entry.sessions.retain(|s| s.recipient.connected());
        if entry.sessions.len() >= max {
            return Err(ApiError::Conflict(format!(
                "this user already has {max} open connections on this node (limits.max_connections_per_user)"
            )));
        }
        let last_id = entry.log.durable_id();
        let replay = match msg.since {
            Some(since) => entry.log.since(since),
            None => Replay { events: Vec::new(), gap: false },
        };
        if msg.continued {
            if replay.gap {
                return Err(ApiError::Unavailable("this stream's resume point is gone; reconnect".into()));
            }
            // Registered after the missed events are queued, so they precede every live one.
            msg.session.gave(msg.since.unwrap_or(0));
            for e in replay.events {
                msg.session.gave(e.id);
                msg.session.recipient.do_send(Deliver::Event(e));
            }
            entry.presence_gen += 1;
            entry.sessions.push(msg.session);
            return Ok(());
        }
        let hello_id = replay.events.first().map(|e| e.id - 1).unwrap_or(last_id);
        let hello = Event::hello(
            hello_id,
            &Hello { user: &msg.user, node: &node, last_id, resumed_from: msg.since, gap: replay.gap },
        );
        // Sent before the session is registered, so it precedes every live event in the mailbox.
        // `do_send`: the first message to a fresh mailbox; its size is bounded by the log capacity.
        msg.session.gave(replay.events.last().map_or(hello_id, |e| e.id));
        msg.session.recipient.do_send(Deliver::Resume { hello, missed: replay.events });
        entry.presence_gen += 1;
        entry.sessions.push(msg.session);
        Ok(())
    }

    /// The user's last connection is gone: after the grace period, give up their place.
    fn went_offline(&mut self, user: &UserId, ctx: &mut Context<Self>) {
        self.check_presence_later(user, ctx);
    }

    /// The user acted on their place themselves (a join): they are there, so an expiry armed while
    /// nobody was connected (after a restart or a move) no longer applies; like any user who never
    /// connected, they keep the place until a connection of theirs opens and closes.
    pub(crate) fn present_by_action(&mut self, user: &UserId) {
        self.entry(user).presence_gen += 1;
    }

    /// After the grace period, gives up the place of `user` unless a connection came (back) meanwhile.
    pub(crate) fn check_presence_later(&mut self, user: &UserId, ctx: &mut Context<Self>) {
        let entry = self.entry(user);
        entry.presence_gen += 1;
        let generation = entry.presence_gen;
        let user = user.clone();
        ctx.run_later(self.presence_grace, move |act, ctx| {
            let still_gone =
                act.users.get(&user).is_some_and(|e| e.presence_gen == generation && e.sessions.is_empty());
            if still_gone {
                act.presence_expired(&user, ctx);
            }
        });
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        let Some(d) = self.durable.as_mut() else { return };
        match d.commit.schedule(d.next.ops()) {
            Schedule::Wait => {}
            Schedule::FlushNow => self.flush(ctx),
            Schedule::Notify => ctx.notify(FlushUsers),
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let cap = self.limits.event_log_capacity;
        let Some(d) = self.durable.as_mut() else { return };
        if !d.commit.begin(d.next.ops()) {
            return;
        }
        let batch = std::mem::take(&mut d.next);
        METRICS.persist_batch_size.observe(batch.ops() as f64);
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for (user, event) in &batch.events {
            pipe.cmd("XADD")
                .arg(keys::events(user))
                .arg("MAXLEN")
                .arg(cap)
                .arg(format!("{}-0", event.id))
                .arg("json")
                .arg(event.json.as_ref())
                .arg("fx")
                .arg(event.effect.as_deref().unwrap_or(""));
            commands += 1;
        }
        for (user, change) in &batch.index {
            match change {
                IndexChange::AddMatch(m) => {
                    pipe.cmd("HSET")
                        .arg(keys::matches(user))
                        .arg(m.match_id.as_str())
                        .arg(serde_json::to_string(m).unwrap_or_default());
                }
                IndexChange::RemoveMatch(id) => {
                    pipe.cmd("HDEL").arg(keys::matches(user)).arg(id.as_str());
                }
                IndexChange::None | IndexChange::EnterRoom { .. } | IndexChange::LeaveRoom { .. } => continue,
            }
            commands += 1;
        }
        for (user, ticket) in &batch.places {
            // Idle is stored too (`idle`): a user with a record is never given a place by a reload.
            let value = ticket.as_ref().and_then(|t| serde_json::to_string(t).ok()).unwrap_or_else(|| IDLE.into());
            pipe.cmd("SET").arg(keys::place(user)).arg(value);
            commands += 1;
        }
        let first_load = commands;
        for user in &batch.loads {
            pipe.cmd("XREVRANGE").arg(keys::events(user)).arg("+").arg("-").arg("COUNT").arg(cap);
            pipe.cmd("HGETALL").arg(keys::matches(user));
            pipe.cmd("GET").arg(keys::place(user));
            pipe.cmd("INCR").arg(keys::place_generation(user));
            commands += LOAD_REPLIES;
        }
        let durability = d.durability.clone();
        let slots = batch
            .events
            .iter()
            .map(|(u, _)| u)
            .chain(batch.index.iter().map(|(u, _)| u))
            .chain(batch.places.iter().map(|(u, _)| u))
            .chain(&batch.loads)
            .chain(batch.acks.iter().map(|(u, _)| u));
        batch::send(durability, slots.map(crate::coord::slot::user_slot), Vec::new(), pipe, commands)
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(values) if values.len() == commands => act.committed(batch, &values[first_load..], ctx),
                Ok(values) => act.batch_failed(
                    batch,
                    StoreError::Corrupt {
                        key: "batch".into(),
                        message: format!("{} replies for {commands}", values.len()),
                    },
                    ctx,
                ),
                Err(e) => act.batch_failed(batch, e, ctx),
            })
            .spawn(ctx);
    }

    fn committed(&mut self, batch: UserBatch, loads: &[redis::Value], ctx: &mut Context<Self>) {
        if let Some(d) = self.durable.as_mut() {
            d.commit.finished();
        }
        for (user, event) in batch.events {
            self.entry(&user).log.mark_durable(event.id);
            self.deliver(&user, event, ctx);
        }
        for (_, ack) in batch.acks {
            let _ = ack.send(Ok(()));
        }
        let mut by_pair: HashMap<PairKey, Vec<(String, UserId)>> = HashMap::new();
        for (pair, effect, user) in batch.confirms {
            by_pair.entry(pair).or_default().push((effect, user));
        }
        if let Ok(links) = self.links() {
            for (pair, confirmed) in by_pair {
                links.pairs.effects_persisted(EffectsPersisted { pair, confirmed });
            }
        }
        for (user, values) in batch.loads.iter().zip(loads.chunks(LOAD_REPLIES)) {
            // Loaded meanwhile (by a later read), possibly with events not stored yet: keep that.
            let fresh = !self.users.get(user).is_some_and(|e| e.loaded);
            if fresh && self.restore(user, values) {
                // In a room nobody may be connected to any more: the usual grace applies from now.
                self.check_presence_later(user, ctx);
            }
            let waiting = self.durable.as_mut().and_then(|d| d.loading.remove(user)).unwrap_or_default();
            for msg in waiting {
                self.run(msg, ctx);
            }
        }
        self.schedule_flush(ctx);
    }

    /// Installs a user's stored log, matches and queue place. A user whose log shows them in a room
    /// (assigned, not closed) gets that place back, and one stored as queued their ticket, so a user
    /// who moved to this node (cluster mode) or was loaded again after a restart is never idle here
    /// while still in a room or a line (I4). Returns whether a place came back.
    fn restore(&mut self, user: &UserId, values: &[redis::Value]) -> bool {
        let cap = self.limits.event_log_capacity;
        let mut events = Vec::new();
        if let Some(redis::Value::Array(entries)) = values.first() {
            for entry in entries.iter().rev() {
                if let Some(e) = parse_stream_entry(entry) {
                    events.push(Arc::new(e));
                }
            }
        }
        let mut matches: Vec<Match> = Vec::new();
        if let Some(redis::Value::Array(fields)) = values.get(1) {
            for pair in fields.chunks(2) {
                if let Some(m) = pair.get(1).and_then(text).and_then(|j| serde_json::from_str(&j).ok()) {
                    matches.push(m);
                }
            }
        }
        let open_room = open_room_in(&events);
        let record = values.get(2).and_then(text);
        let queued = record.as_deref().and_then(|j| serde_json::from_str::<JoinRequest>(j).ok());
        let generation = match values.get(3) {
            Some(redis::Value::Int(g)) => u64::try_from(*g).unwrap_or(0),
            _ => 0,
        };
        let entry = self.entry(user);
        if !entry.place_known {
            // A new owner's calls rank above every earlier owner's. A reload of a user this node
            // kept (after a cache drop) goes on counting: its calls in flight are still its own.
            entry.calls.loaded(generation);
        }
        entry.calls.recorded |= record.is_some();
        entry.log = EventLog::restored(cap, events);
        entry.matches = matches;
        entry.loaded = true;
        if std::mem::replace(&mut entry.place_known, true) || entry.place != Place::Idle {
            return false;
        }
        match (open_room, queued) {
            (Some((room_id, pool)), _) => {
                let ticket = JoinRequest { pool, rating: None, region: None, tags: None };
                entry.place = Place::InRoom { room_id, ticket };
                true
            }
            (None, Some(ticket)) => {
                entry.place = Place::Queued { ticket };
                true
            }
            (None, None) => false,
        }
    }

    /// A batch failed: nothing in it reached a client. Forget every user's log so it is reloaded
    /// from what is stored. Pairs re-publish what they still owe; room and queue events are
    /// published again here after a pause (I5: a room's close is never lost to an outage).
    fn batch_failed(&mut self, batch: UserBatch, e: StoreError, ctx: &mut Context<Self>) {
        if let Some(d) = self.durable.as_mut() {
            d.commit.finished();
        }
        let err = ApiError::from(e);
        for (_, ack) in batch.acks {
            let _ = ack.send(Err(err.clone()));
        }
        // The places in the failed batch are written again as they stand now.
        // (Only for users still here: a user who moved is the new owner's to write.)
        let places: Vec<_> = batch
            .places
            .iter()
            .filter_map(|(user, _)| Some((user.clone(), self.users.get(user)?.place.stored_ticket().cloned())))
            .collect();
        if let Some(d) = self.durable.as_mut() {
            d.next.places.extend(places);
        }
        self.drop_cache(err, batch.retryable, ctx);
    }

    /// Forgets every user's log and matches so they are reloaded from what is stored (keeping
    /// connections and places). Room and queue events not yet stored are published again.
    fn drop_cache(&mut self, err: ApiError, mut retry: Vec<Publish>, ctx: &mut Context<Self>) {
        let cap = self.limits.event_log_capacity;
        let Some(d) = self.durable.as_mut() else { return };
        let mut next = std::mem::take(&mut d.next);
        // Places need no load: they are written with the next batch as they are (those of users
        // still here).
        let users = &self.users;
        d.next.places = std::mem::take(&mut next.places).into_iter().filter(|(u, _)| users.contains_key(u)).collect();
        retry.extend(next.retryable);
        // Publishes by the app's backend are answered, not retried: the app retries with its key.
        for (_, ack) in next.acks {
            let _ = ack.send(Err(err.clone()));
        }
        let mut place_actions = Vec::new();
        for (_, waiting) in d.loading.drain() {
            for msg in waiting {
                match msg {
                    Deferred::Subscribe(_, tx) => drop(tx.send(Err(err.clone()))),
                    Deferred::ServerPublish(_, _, ack) => drop(ack.send(Err(err.clone()))),
                    Deferred::ListMatches(_, tx) => drop(tx),
                    Deferred::Inspect(_, tx) => drop(tx),
                    Deferred::Publish(p) if p.effect.is_none() => retry.push(p),
                    Deferred::Publish(_) => {}
                    Deferred::Place(action) => place_actions.push(action),
                }
            }
        }
        for entry in self.users.values_mut() {
            entry.loaded = false;
            entry.log = EventLog::new(cap);
            entry.matches.clear();
        }
        // Place actions need no load; the room changes they waited behind come again from their pairs.
        for action in place_actions {
            action(self, ctx);
        }
        let places_waiting = self.durable.as_ref().is_some_and(|d| !d.next.places.is_empty());
        if !retry.is_empty() || places_waiting {
            ctx.run_later(PUBLISH_RETRY, move |act, ctx| {
                for p in retry {
                    let user = p.user.clone();
                    act.when_loaded(&user, Deferred::Publish(p), ctx);
                }
                act.schedule_flush(ctx);
            });
        }
    }
}

/// The room a log (oldest first) leaves its user in: the last `room_assigned` not followed by its
/// `room_closed`.
fn open_room_in(events: &[Arc<Event>]) -> Option<(crate::protocol::RoomId, crate::protocol::PoolName)> {
    let mut open = None;
    for e in events {
        if e.type_name != "room_assigned" && e.type_name != "room_closed" {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.json) else { continue };
        if e.type_name == "room_assigned" {
            let room = &v["data"]["room"];
            let id = room["room_id"].as_str().and_then(|s| crate::protocol::RoomId::parse(s).ok());
            let pool = room["pool"].as_str().and_then(|s| crate::protocol::PoolName::parse(s).ok());
            open = id.zip(pool);
        } else if open.as_ref().is_some_and(|(id, _)| Some(id.as_str()) == v["data"]["room_id"].as_str()) {
            open = None;
        }
    }
    open
}

/// Parses one `XREVRANGE` entry: `[id, [json, <json>, fx, <effect>]]`.
fn parse_stream_entry(entry: &redis::Value) -> Option<Event> {
    let redis::Value::Array(parts) = entry else { return None };
    let id: u64 = text(parts.first()?)?.split('-').next()?.parse().ok()?;
    let redis::Value::Array(fields) = parts.get(1)? else { return None };
    let mut json = None;
    let mut effect = None;
    for kv in fields.chunks(2) {
        match (kv.first().and_then(text).as_deref(), kv.get(1)) {
            (Some("json"), Some(v)) => json = text(v),
            (Some("fx"), Some(v)) => effect = text(v).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    let json = json?;
    let type_name = serde_json::from_str::<serde_json::Value>(&json)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).and_then(Event::parse_type))?;
    Some(Event::stored(id, type_name, Bytes::from(json), effect.map(Arc::from)))
}

impl UserShard {
    /// Drops idle users (Redis mode): no connection, no place, nothing pending, unused for
    /// `cache_idle_ms`. Their log and matches are in Redis and load again on next use.
    fn evict_idle(&mut self, now_ms: u64) {
        let Some(d) = self.durable.as_ref() else { return };
        let idle_ms = d.durability.idle_ms;
        let pending: std::collections::HashSet<&UserId> =
            d.next.events.iter().map(|(u, _)| u).chain(d.next.loads.iter()).collect();
        let idle: Vec<UserId> = self
            .users
            .iter()
            .filter(|(user, e)| {
                e.sessions.is_empty()
                    && e.place == Place::Idle
                    && e.calls.is_quiet()
                    && now_ms.saturating_sub(e.last_used) >= idle_ms
                    && !d.loading.contains_key(*user)
                    && !pending.contains(user)
            })
            .map(|(user, _)| user.clone())
            .collect();
        for user in idle {
            METRICS.cache_evictions.with_label_values(&["user"]).inc();
            self.users.remove(&user);
        }
    }
}

impl Actor for UserShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::coord::shard::SHARD_MAILBOX);
        if let Some(d) = self.durable.as_ref() {
            let every = crate::coord::shard::evict_interval(d.durability.idle_ms);
            ctx.run_interval(every, |act, _| act.evict_idle(crate::protocol::unix_ms()));
        }
    }
}

impl Handler<Wire> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Wire, _: &mut Context<Self>) {
        self.links = Some(msg.0);
    }
}

impl Handler<ResetCache> for UserShard {
    type Result = ();

    fn handle(&mut self, _: ResetCache, ctx: &mut Context<Self>) {
        self.drop_cache(ApiError::Unavailable("this node is taking over its data; retry".into()), Vec::new(), ctx);
    }
}

/// Cluster mode: the slot table changed. Users this node no longer owns are forgotten; their
/// connections are handed back (`Handover`) for the node to relay from the new owner, after the
/// last event each was given, so the clients keep them. On a new tenure (this node lapsed and
/// rejoined) every user is forgotten and closed with "reconnect" instead: any of them may have
/// moved and been told more meanwhile. The rest reload their logs from Redis.
#[derive(actix::Message)]
#[rtype(result = "Vec<Handover>")]
pub struct Rehome {
    pub table: Arc<crate::cluster::Ownership>,
    pub new_tenure: bool,
}

/// A connection of a user who moved to another owner, and the last event it was given.
pub struct Handover {
    pub user: UserId,
    pub session: SessionHandle,
    pub since: u64,
}

impl Handler<Rehome> for UserShard {
    type Result = Vec<Handover>;

    fn handle(&mut self, msg: Rehome, ctx: &mut Context<Self>) -> Vec<Handover> {
        let node = self.node_id.clone();
        let moved: Vec<UserId> = self
            .users
            .keys()
            .filter(|u| msg.new_tenure || !msg.table.owned_by(crate::coord::slot::user_slot(u), &node))
            .cloned()
            .collect();
        let mut handovers = Vec::new();
        for user in moved {
            if let Some(entry) = self.users.remove(&user) {
                for s in entry.sessions {
                    if msg.new_tenure || !s.recipient.connected() {
                        s.recipient.do_send(Deliver::Close(CloseReason::ShuttingDown));
                    } else {
                        let since = s.last_given();
                        handovers.push(Handover { user: user.clone(), session: s, since });
                    }
                }
            }
        }
        self.drop_cache(
            ApiError::Unavailable("this user's data is moving to another node; retry".into()),
            Vec::new(),
            ctx,
        );
        handovers
    }
}

impl Handler<FlushUsers> for UserShard {
    type Result = ();

    fn handle(&mut self, _: FlushUsers, ctx: &mut Context<Self>) {
        if let Some(d) = self.durable.as_mut() {
            d.commit.notified();
        }
        self.flush(ctx);
    }
}

impl Handler<Publish> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let user = msg.user.clone();
        self.when_loaded(&user, Deferred::Publish(msg), ctx);
    }
}

impl Handler<Subscribe> for UserShard {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let user = msg.user.clone();
        self.when_loaded(&user, Deferred::Subscribe(msg, tx), ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(ApiError::shutting_down())) })
    }
}

impl Handler<Unsubscribe> for UserShard {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        if let Some(entry) = self.users.get_mut(&msg.user) {
            let before = entry.sessions.len();
            entry.sessions.retain(|s| s.id != msg.session_id);
            if before > 0 && entry.sessions.is_empty() {
                self.went_offline(&msg.user, ctx);
            }
        }
    }
}

impl Handler<ListMatches> for UserShard {
    type Result = ResponseFuture<Result<Vec<Match>, ApiError>>;

    fn handle(&mut self, msg: ListMatches, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let user = msg.user.clone();
        self.when_loaded(&user, Deferred::ListMatches(msg.user, tx), ctx);
        Box::pin(async move {
            rx.await.map_err(|_| ApiError::Unavailable("persistence is not reachable; retry later".into()))
        })
    }
}

impl Handler<ServerPublish> for UserShard {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, msg: ServerPublish, ctx: &mut Context<Self>) -> Self::Result {
        let mut answers = Vec::with_capacity(msg.users.len());
        for user in msg.users {
            let (tx, rx) = oneshot::channel();
            answers.push(rx);
            self.when_loaded(&user.clone(), Deferred::ServerPublish(user, msg.event.clone(), tx), ctx);
        }
        Box::pin(async move {
            for answer in futures_util::future::join_all(answers).await {
                answer.unwrap_or_else(|_| Err(ApiError::shutting_down()))?;
            }
            Ok(())
        })
    }
}

impl Handler<InspectUser> for UserShard {
    type Result = ResponseFuture<Result<UserView, ApiError>>;

    fn handle(&mut self, msg: InspectUser, ctx: &mut Context<Self>) -> Self::Result {
        if self.durable.is_none() && !self.users.contains_key(&msg.user) {
            // In memory an unknown user has nothing: say so without keeping an entry for them.
            return Box::pin(std::future::ready(Ok(UserView::unknown(msg.user))));
        }
        let (tx, rx) = oneshot::channel();
        let user = msg.user.clone();
        self.when_loaded(&user, Deferred::Inspect(msg.user, tx), ctx);
        Box::pin(async move {
            rx.await.map_err(|_| ApiError::Unavailable("persistence is not reachable; retry later".into()))
        })
    }
}

/// How many of this shard's users have at least one open connection here (`matchd_connected_users`
/// is the sum over the shards, asked at scrape time: derived from the connections themselves, it
/// cannot drift). A connection whose session actor has stopped no longer counts, even before its
/// `Unsubscribe` arrives.
#[derive(actix::Message)]
#[rtype(result = "usize")]
pub struct CountConnected;

impl Handler<CountConnected> for UserShard {
    type Result = usize;

    fn handle(&mut self, _: CountConnected, _: &mut Context<Self>) -> usize {
        self.users.values().filter(|e| e.sessions.iter().any(|s| s.recipient.connected())).count()
    }
}

impl Handler<CloseAll> for UserShard {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        let mut closed = 0;
        for entry in self.users.values_mut() {
            for s in entry.sessions.drain(..) {
                s.recipient.do_send(Deliver::Close(msg.reason));
                closed += 1;
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PoolName, Room, RoomId};

    fn room(id: &RoomId) -> Room {
        Room {
            room_id: id.clone(),
            pool: PoolName::parse("p").unwrap(),
            users: [UserId::parse("a").unwrap(), UserId::parse("b").unwrap()],
            created_at: 0,
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn the_log_tells_which_room_a_user_is_still_in() {
        let (r1, r2) = (RoomId::new_in_slot(1), RoomId::new_in_slot(2));
        let assigned = |id: u64, r: &RoomId| Arc::new(Event::encode(id, &EventKind::RoomAssigned { room: room(r) }));
        let closed = |id: u64, r: &RoomId| {
            Arc::new(Event::encode(id, &EventKind::RoomClosed { room_id: r.clone(), reason: "skipped".into() }))
        };
        assert_eq!(open_room_in(&[assigned(1, &r1), closed(2, &r1)]), None);
        let open = open_room_in(&[assigned(1, &r1), closed(2, &r1), assigned(3, &r2)]);
        assert_eq!(open.map(|(id, pool)| (id, pool.as_str().to_string())), Some((r2.clone(), "p".into())));
        assert_eq!(open_room_in(&[assigned(1, &r2), closed(2, &r1)]).map(|(id, _)| id), Some(r2));
    }
}
