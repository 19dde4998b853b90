//! Membership: every node of a cluster holds an entry in one Redis sorted set (`matchd:members`)
//! whose score is its expiry, renewed five times per lease TTL. Times are Redis's own clock
//! (`TIME` inside the script), so nodes need no synchronised clocks. The live entries give the slot
//! table (`Ownership`).
//!
//! Fencing: a node treats itself as a member only until two thirds of the TTL after its last
//! successful renewal was sent, i.e. it stops acting before anyone can have dropped it. When its
//! view changes it stops acting (503, which forwarders retry), makes every actor drop its cache,
//! then claims the slots it gained by writing its tenure token into each slot's fence keys; every
//! batch an actor writes is a script that first checks those keys hold the token (see
//! `persist::fence`). A node that lapsed (paused past its lease) starts a new tenure with a new
//! token, so nothing it decided before cannot commit afterwards.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::ownership::{Member, Ownership};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::persist::keys::PREFIX;
use crate::persist::store::text;
use crate::persist::{RedisStore, StoreError};

/// Renews `ARGV[1]` in the members set (`KEYS[1]`) until `now + ARGV[2]` ms, drops expired
/// entries, bumps the view epoch (`KEYS[2]`) when the set changed, and returns the epoch and the
/// live entries. Views are thereby totally ordered: one epoch, one member list.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if removed > 0 or added > 0 then
  redis.call('INCR', KEYS[2])
end
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
return {epoch, redis.call('ZRANGE', KEYS[1], 0, -1)}
";

/// Removes `ARGV[1]` from the members set (`KEYS[1]`) with the expired entries, bumps the epoch
/// (`KEYS[2]`) if that changed the set, and returns the epoch and the remaining entries: a leave is
/// a view of its own, like a join, so claims made for it are ordered after those of the view
/// before it.
const LEAVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) + redis.call('ZREM', KEYS[1], ARGV[1])
if removed > 0 then
  redis.call('INCR', KEYS[2])
end
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
return {epoch, redis.call('ZRANGE', KEYS[1], 0, -1)}
";

/// How often a leaving node checks whether its slots have been claimed.
const HAND_OVER_POLL: Duration = Duration::from_millis(25);

/// Claims one slot for a view: writes the token (`ARGV[1]`) into the slot's fence keys
/// (`KEYS[1..3]`) unless the slot was already claimed under a newer view (`KEYS[4]` holds the
/// epoch of the last claim, `ARGV[2]` is ours). So a node acting on an older view can never take
/// a slot back from the owner of a newer one; returns 1 if claimed.
pub(crate) const CLAIM: &str = r"
local cur = tonumber(redis.call('GET', KEYS[4]) or '0')
if cur > tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[4], ARGV[2])
for i = 1, 3 do
  redis.call('SET', KEYS[i], ARGV[1])
end
return 1
";

/// Slots claimed per request (one short script each).
const CLAIM_CHUNK: usize = 512;

/// The actors that write a slot's state; each has its own fence key per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pairs,
    Users,
    Pools,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Pairs, Role::Users, Role::Pools];

    fn as_str(self) -> &'static str {
        match self {
            Role::Pairs => "pairs",
            Role::Users => "users",
            Role::Pools => "pools",
        }
    }
}

/// The fence key of `role` for `slot` (in the slot's hash tag, beside the data it guards).
pub fn fence_key(role: Role, slot: u16) -> String {
    format!("{PREFIX}:{{{slot}}}:fence:{}", role.as_str())
}

/// The members set; it and the epoch share a hash tag so the heartbeat script is single-slot on a
/// Redis Cluster.
pub fn members_key() -> String {
    format!("{PREFIX}:{{members}}:set")
}

pub(crate) fn epoch_key() -> String {
    format!("{PREFIX}:{{members}}:epoch")
}

/// Epoch of the view under which `slot` was last claimed.
pub(crate) fn claim_epoch_key(slot: u16) -> String {
    format!("{PREFIX}:{{{slot}}}:fence:epoch")
}

/// Where a slot's actor lives, as this node sees it now.
#[derive(Debug, Clone)]
pub enum Route {
    Local,
    Remote(Member),
}

#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

struct Inner {
    me: Member,
    ttl: Duration,
    state: RwLock<State>,
    refresh: Notify,
    /// A write was fenced although this node thought it owned the slot: claim again.
    recheck: AtomicBool,
    left: AtomicBool,
    /// The renewal task is running (a leave waits for it to stop, so no renewal re-adds the node).
    renewing: AtomicBool,
}

struct State {
    table: Arc<Ownership>,
    /// The view epoch `table` was computed at.
    epoch: u64,
    /// Until when this node may act (set on each successful renewal).
    valid_until: Option<Instant>,
    /// False while a view change is being carried out: the node answers 503 meanwhile.
    settled: bool,
    /// Written into the fence keys of the slots this node owns; new on each tenure.
    token: Arc<str>,
    /// Bumped each time this node (re)joins after a lapse.
    tenure: u64,
    /// Left the cluster at shutdown: `table` is the view without this node, and every action is
    /// forwarded to its slot's new owner.
    leaving: bool,
}

/// What a view change asks of the node's actors before it claims its new slots.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: Arc<Ownership>,
    /// True when this node (re)joins: everything it held may have been taken over meanwhile.
    pub new_tenure: bool,
}

fn new_token(id: &str) -> Arc<str> {
    Arc::from(format!("{id}:{}", &crate::protocol::ids::random_suffix()[..12]))
}

/// Reads the heartbeat's answer: `[epoch, [member, ..]]`.
fn parse_view(value: Option<redis::Value>) -> (u64, Vec<Member>) {
    let Some(redis::Value::Array(parts)) = value else { return (0, Vec::new()) };
    let epoch = match parts.first() {
        Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    let members = match parts.get(1) {
        Some(redis::Value::Array(items)) => {
            items.iter().filter_map(|v| text(v).and_then(|s| Member::decode(&s))).collect()
        }
        _ => Vec::new(),
    };
    (epoch, members)
}

impl Membership {
    pub fn new(node_id: &str, url: &str, ttl: Duration) -> Membership {
        let me = Member { id: Arc::from(node_id), url: Arc::from(url) };
        Membership {
            inner: Arc::new(Inner {
                state: RwLock::new(State {
                    table: Arc::new(Ownership::new(Vec::new())),
                    epoch: 0,
                    valid_until: None,
                    settled: false,
                    token: new_token(node_id),
                    tenure: 0,
                    leaving: false,
                }),
                me,
                ttl,
                refresh: Notify::new(),
                recheck: AtomicBool::new(false),
                left: AtomicBool::new(false),
                renewing: AtomicBool::new(false),
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.me.id
    }

    fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> Option<T> {
        self.inner.state.read().ok().map(|s| f(&s))
    }

    fn active(state: &State) -> bool {
        state.settled && state.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether this node is a settled, live member (readiness).
    pub fn is_active(&self) -> bool {
        self.with_state(Self::active).unwrap_or(false)
    }

    /// How many slots this node owns in its current view.
    pub fn owned_slots(&self) -> usize {
        let me = &self.inner.me.id;
        self.with_state(|s| s.table.slots_of(me).count()).unwrap_or(0)
    }

    /// How many live members this node sees.
    pub fn member_count(&self) -> usize {
        self.with_state(|s| s.table.members.len()).unwrap_or(0)
    }

    /// The members this node sees.
    pub fn members(&self) -> Vec<Member> {
        self.with_state(|s| s.table.members.clone()).unwrap_or_default()
    }

    /// The members this node sees, each with the number of slots it owns in this node's view.
    pub fn members_with_slots(&self) -> Vec<(Member, usize)> {
        self.with_state(|s| s.table.members.iter().cloned().zip(s.table.slot_counts()).collect()).unwrap_or_default()
    }

    /// Where `slot`'s actors are; 503 while this node is not an active member.
    pub fn route(&self, slot: u16) -> Result<Route, ApiError> {
        let me = &self.inner.me.id;
        self.with_state(|s| {
            if s.leaving {
                // Handing over: every slot is someone else's now.
                return match s.table.owner(slot) {
                    Some(m) if m.id != *me => Ok(Route::Remote(m.clone())),
                    _ => Err(Self::not_active()),
                };
            }
            if !Self::active(s) {
                return Err(Self::not_active());
            }
            match s.table.owner(slot) {
                Some(m) if m.id == *me => Ok(Route::Local),
                Some(m) => Ok(Route::Remote(m.clone())),
                None => Err(Self::not_active()),
            }
        })
        .unwrap_or_else(|| Err(Self::not_active()))
    }

    pub fn not_active() -> ApiError {
        ApiError::Unavailable("this node is joining the cluster or handing slots over; retry".into())
    }

    /// Whether this node may act for `slot` now.
    pub fn owns(&self, slot: u16) -> bool {
        matches!(self.route(slot), Ok(Route::Local))
    }

    /// The fence keys and token for a batch writing `slots` as `role`; `Fenced` if this node may
    /// not write one of them now.
    pub fn fence(&self, role: Role, slots: impl Iterator<Item = u16>) -> Result<(Vec<String>, Arc<str>), StoreError> {
        let me = &self.inner.me.id;
        let state = self.inner.state.read().map_err(|_| StoreError::Fenced)?;
        if !Self::active(&state) {
            return Err(StoreError::Fenced);
        }
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for slot in slots {
            if !state.table.owned_by(slot, me) {
                return Err(StoreError::Fenced);
            }
            if seen.insert(slot) {
                keys.push(fence_key(role, slot));
            }
        }
        Ok((keys, state.token.clone()))
    }

    /// Asks the membership loop to renew and re-read the members now (after a forward failed).
    pub fn refresh_soon(&self) {
        self.inner.refresh.notify_one();
    }

    /// A batch was fenced although this node's view says it owns the slots: renew now, and claim
    /// the owned slots again (guarded by the view epoch, so never against a newer view).
    pub fn fenced(&self) {
        self.inner.recheck.store(true, Ordering::Relaxed);
        self.refresh_soon();
    }

    /// Joins and stays a member until `leave`. `on_change` runs (and is awaited) whenever the view
    /// changes, before the node claims its new slots and acts again. `first` is told once the
    /// first renewal has been answered.
    pub async fn keep<F, Fut>(self, store: RedisStore, on_change: F, first: Option<tokio::sync::oneshot::Sender<()>>)
    where
        F: Fn(Change) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        // Renewals run on their own task, so a long hand-over (claiming thousands of slots on a
        // busy machine) never delays them into a lapse.
        let (tx, mut rx) = tokio::sync::watch::channel(0u64);
        actix_rt::spawn(self.clone().renew_forever(store.clone(), tx, first));
        let mut claimed: HashSet<u16> = HashSet::new();
        let mut tenure_seen = 0;
        while rx.changed().await.is_ok() {
            rx.borrow_and_update();
            if self.inner.left.load(Ordering::Relaxed) {
                break;
            }
            if let Err(e) = self.reconcile(&store, &on_change, &mut claimed, &mut tenure_seen).await {
                tracing::warn!(error = %e, "claiming slots failed; this node stays unready and retries");
                self.inner.recheck.store(true, Ordering::Relaxed);
                self.refresh_soon();
            }
        }
    }

    /// Renews this node's entry five times per TTL (a node must miss three in a row, a long pause,
    /// before it stops acting at two thirds of the TTL), installs each new view at once (not
    /// settled: the node stops acting for slots that may move), and wakes the reconciler.
    async fn renew_forever(
        self,
        store: RedisStore,
        changes: tokio::sync::watch::Sender<u64>,
        mut first: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let inner = &self.inner;
        inner.renewing.store(true, Ordering::Relaxed);
        let ttl_ms = inner.ttl.as_millis() as u64;
        let mut wakeups = 0u64;
        while !inner.left.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(HEARTBEAT)
                .arg(2)
                .arg(members_key())
                .arg(epoch_key())
                .arg(inner.me.encode())
                .arg(ttl_ms);
            match store.run(pipe, 1).await {
                Ok(values) => {
                    let (epoch, members) = parse_view(values.into_iter().next());
                    let changed = self.install(sent, epoch, members);
                    if changed || inner.recheck.load(Ordering::Relaxed) {
                        wakeups += 1;
                        let _ = changes.send(wakeups);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "membership renewal failed; it lapses unless the next one succeeds")
                }
            }
            METRICS.cluster_members.set(self.member_count() as i64);
            METRICS.lease_held.set(i64::from(self.is_active()));
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            let _ = tokio::time::timeout(inner.ttl / 5, inner.refresh.notified()).await;
        }
        inner.renewing.store(false, Ordering::Relaxed);
        // Wakes the reconciler so it sees `left` and ends.
        let _ = changes.send(u64::MAX);
    }

    /// A renewal sent at `sent` succeeded: extend validity; install the view if it changed.
    /// Returns whether the reconciler has work.
    fn install(&self, sent: Instant, epoch: u64, members: Vec<Member>) -> bool {
        let inner = &self.inner;
        let Ok(mut s) = inner.state.write() else { return false };
        // Lapsed: others may have dropped this node and taken its slots over.
        let lapsed = s.valid_until.is_none_or(|t| sent >= t);
        let table = Ownership::new(members);
        let changed = lapsed || s.epoch != epoch || s.table.members != table.members;
        if changed {
            s.settled = false;
            s.table = Arc::new(table);
            s.epoch = epoch;
            if lapsed {
                s.token = new_token(&inner.me.id);
                s.tenure += 1;
            }
        }
        s.valid_until = Some(sent + inner.ttl * 2 / 3);
        changed || !s.settled
    }

    /// Carries out the current view: the actors drop what moved, then every owned slot is claimed
    /// under the view's epoch; the node acts again once that view is still current.
    async fn reconcile<F, Fut>(
        &self,
        store: &RedisStore,
        on_change: &F,
        claimed: &mut HashSet<u16>,
        tenure_seen: &mut u64,
    ) -> Result<(), StoreError>
    where
        F: Fn(Change) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let inner = &self.inner;
        let (table, epoch, token, tenure, settled) = {
            let s = inner.state.read().map_err(|_| StoreError::Fenced)?;
            (s.table.clone(), s.epoch, s.token.clone(), s.tenure, s.settled)
        };
        let recheck = inner.recheck.swap(false, Ordering::Relaxed);
        if settled && !recheck {
            return Ok(());
        }
        let new_tenure = tenure != *tenure_seen;
        if !settled {
            if new_tenure {
                claimed.clear();
                tracing::info!(node = %inner.me.id, members = table.members.len(), "joined the cluster (new tenure)");
            } else {
                tracing::info!(node = %inner.me.id, members = table.members.len(), "cluster membership changed");
            }
            on_change(Change { table: table.clone(), new_tenure }).await;
            *tenure_seen = tenure;
        }
        let mine: Vec<u16> = table.slots_of(&inner.me.id).collect();
        let gained = mine.iter().filter(|s| !claimed.contains(s)).count();
        // Every owned slot is claimed again, not only the gained ones: a claim under a view this
        // node never saw (a member that joined and left between two renewals) may have replaced it.
        // The epoch guard makes re-claiming harmless.
        claimed.clear();
        let mut refused = 0usize;
        for chunk in mine.chunks(CLAIM_CHUNK) {
            // EVAL rather than EVALSHA: on a Redis Cluster the claims of one pipeline go to
            // different servers, and none of them needs the script loaded beforehand.
            let mut pipe = redis::pipe();
            for slot in chunk {
                pipe.cmd("EVAL").arg(CLAIM).arg(4);
                for role in Role::ALL {
                    pipe.arg(fence_key(role, *slot));
                }
                pipe.arg(claim_epoch_key(*slot)).arg(&*token).arg(epoch);
            }
            let values = store.run(pipe, chunk.len()).await?;
            for (slot, v) in chunk.iter().zip(values.iter()) {
                if matches!(v, redis::Value::Int(1)) {
                    claimed.insert(*slot);
                } else {
                    refused += 1;
                }
            }
        }
        if refused > 0 {
            // A newer view exists: this one is already out of date.
            tracing::info!(node = %inner.me.id, epoch, refused, "slots already claimed under a newer view");
            self.refresh_soon();
        }
        METRICS.ownership_changes.inc_by(gained as u64);
        let mut s = inner.state.write().map_err(|_| StoreError::Fenced)?;
        // Only if nothing newer replaced this view (or this tenure) meanwhile.
        if Arc::ptr_eq(&s.table, &table) && s.tenure == tenure {
            s.settled = true;
            tracing::info!(node = %inner.me.id, epoch, owned = mine.len(), gained, "slots claimed; acting as owner");
        }
        Ok(())
    }

    /// Graceful leave: stops renewing, leaves the members set under a new view epoch, forwards
    /// every action to the new owners from then on, and waits (up to `within`) until every slot
    /// it owned has been claimed under that view or a newer one. Returns whether they all were, so
    /// the caller closes its streams only once reconnects find ready owners.
    pub async fn hand_over(&self, store: &RedisStore, within: Duration) -> bool {
        let inner = &self.inner;
        let deadline = Instant::now() + within;
        let mine: Vec<u16> = self.with_state(|s| s.table.slots_of(&inner.me.id).collect()).unwrap_or_default();
        inner.left.store(true, Ordering::Relaxed);
        if let Ok(mut s) = inner.state.write() {
            s.valid_until = None;
            s.settled = false;
        }
        // A renewal in flight would add this node back after it left.
        inner.refresh.notify_one();
        let renewals_stop = Instant::now() + Duration::from_secs(1);
        while inner.renewing.load(Ordering::Relaxed) && Instant::now() < renewals_stop {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL").arg(LEAVE).arg(2).arg(members_key()).arg(epoch_key()).arg(inner.me.encode());
        let (epoch, members) = match store.run(pipe, 1).await {
            Ok(values) => parse_view(values.into_iter().next()),
            Err(e) => {
                tracing::warn!(error = %e, "could not leave the cluster; the entry expires by itself");
                return false;
            }
        };
        METRICS.lease_held.set(0);
        let remaining = members.len();
        if let Ok(mut s) = inner.state.write() {
            s.table = Arc::new(Ownership::new(members));
            s.epoch = epoch;
            s.leaving = true;
        }
        tracing::info!(epoch, remaining, slots = mine.len(), "left the cluster");
        if remaining == 0 || within.is_zero() {
            return remaining == 0;
        }
        let started = Instant::now();
        let mut waiting = mine;
        while Instant::now() < deadline {
            let mut pipe = redis::pipe();
            for slot in &waiting {
                pipe.cmd("GET").arg(claim_epoch_key(*slot));
            }
            if let Ok(values) = store.run(pipe, waiting.len()).await {
                let claimed =
                    |v: &redis::Value| text(v).and_then(|t| t.parse::<u64>().ok()).is_some_and(|e| e >= epoch);
                let left: Vec<u16> =
                    waiting.iter().zip(values.iter()).filter(|(_, v)| !claimed(v)).map(|(s, _)| *s).collect();
                waiting = left;
            }
            if waiting.is_empty() {
                tracing::info!(ms = started.elapsed().as_millis() as u64, "every slot claimed by its new owner");
                return true;
            }
            tokio::time::sleep(HAND_OVER_POLL).await;
        }
        tracing::warn!(unclaimed = waiting.len(), "hand-over timed out; closing streams anyway");
        false
    }

    /// Leaves the cluster at shutdown so the others take over at once instead of after the TTL:
    /// a `hand_over` that does not wait (nothing to do after one).
    pub async fn leave(&self, store: &RedisStore) {
        if !self.with_state(|s| s.leaving).unwrap_or(false) {
            self.hand_over(store, Duration::ZERO).await;
        }
    }
}
