//! Forwarding: an action or internal message for a slot owned by another node is sent to that
//! node and answered from its reply. Calls to one peer are batched (`POST /internal/v1/calls`, a few
//! requests in flight per peer and thread, the rest queued for the next). A call is retried (after a
//! membership refresh) only when it certainly did not run: the connection was refused, or the
//! receiver said it does not own the slot. Anything else (a timeout after sending) is reported as
//! an unknown outcome, which clients retry with their idempotency keys.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::membership::{Membership, Route};
use super::ownership::Member;
use crate::audit::repair::{RepairPair, RepairPlace};
use crate::coord::messages::{Swipe, Unmatch};
use crate::coord::shard::EffectsPersisted;
use crate::coord::slot::{name_slot, pair_slot, user_slot};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::protocol::server::AppEvent;
use crate::protocol::{PoolName, UserId};
use crate::queue::messages::{CloseRoom, CreateRoom, Dequeue, Enqueue, Join, Leave, MemberGone, Skip};
use crate::queue::placement::{ArmPresence, RestorePlace};
use crate::queue::pool::Forget;
use crate::session::messages::{InspectUser, ListMatches, Publish};

/// Header carrying the cluster key on internal requests.
pub const CLUSTER_KEY_HEADER: &str = "x-matchd-cluster-key";
/// Pause before retrying a call that did not run.
const RETRY_PAUSE: Duration = Duration::from_millis(40);

/// Everything one node may ask of another's actors. A server-API publish is one `PublishEvent`
/// per user owned elsewhere, so each is routed and retried on its own (calls to one peer still
/// travel in one batch).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", content = "msg", rename_all = "snake_case")]
pub enum Call {
    Swipe(Swipe),
    Unmatch(Unmatch),
    Skip(Skip),
    CreateRoom(CreateRoom),
    MemberGone(MemberGone),
    Publish(Publish),
    EffectsPersisted(EffectsPersisted),
    Enqueue(Enqueue),
    Dequeue { pool: PoolName, msg: Dequeue },
    Forget { pool: PoolName, msg: Forget },
    RestorePlace(RestorePlace),
    ArmPresence(ArmPresence),
    ListMatches(ListMatches),
    Join(Join),
    Leave(Leave),
    PoolStatus { pool: PoolName },
    PublishEvent { user: UserId, event: AppEvent },
    InspectUser(InspectUser),
    CloseRoom(CloseRoom),
    RepairPair(RepairPair),
    RepairPlace(RepairPlace),
}

impl Call {
    /// The slot whose owner must handle the call.
    pub fn slot(&self) -> u16 {
        match self {
            Call::Swipe(m) => pair_slot(&m.from, &m.to),
            Call::Unmatch(m) => m.match_id.slot().unwrap_or(0),
            Call::Skip(m) => m.room_id.slot().unwrap_or(0),
            Call::CreateRoom(m) => pair_slot(&m.room.users[0], &m.room.users[1]),
            Call::MemberGone(m) => m.room_id.slot().unwrap_or(0),
            Call::Publish(m) => user_slot(&m.user),
            Call::EffectsPersisted(m) => m.pair.slot(),
            Call::Enqueue(m) => name_slot(m.ticket.pool.as_str()),
            Call::Dequeue { pool, .. } | Call::Forget { pool, .. } | Call::PoolStatus { pool } => {
                name_slot(pool.as_str())
            }
            Call::RestorePlace(m) => user_slot(&m.user),
            Call::ArmPresence(m) => user_slot(&m.user),
            Call::ListMatches(m) => user_slot(&m.user),
            Call::Join(m) => user_slot(&m.user),
            Call::Leave(m) => user_slot(&m.user),
            Call::PublishEvent { user, .. } => user_slot(user),
            Call::InspectUser(m) => user_slot(&m.user),
            Call::CloseRoom(m) => m.room_id.slot().unwrap_or(0),
            Call::RepairPair(m) => m.pair.slot(),
            Call::RepairPlace(m) => user_slot(&m.user),
        }
    }

    /// Every `kind`, for the metrics pre-registered at start.
    pub const KINDS: [&'static str; 21] = [
        "swipe",
        "unmatch",
        "skip",
        "create_room",
        "member_gone",
        "publish",
        "effects_persisted",
        "enqueue",
        "dequeue",
        "forget",
        "restore_place",
        "arm_presence",
        "list_matches",
        "join",
        "leave",
        "pool_status",
        "publish_event",
        "inspect_user",
        "close_room",
        "repair_pair",
        "repair_place",
    ];

    /// The call's name (its serde tag), the `kind` label of its metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Swipe(_) => "swipe",
            Call::Unmatch(_) => "unmatch",
            Call::Skip(_) => "skip",
            Call::CreateRoom(_) => "create_room",
            Call::MemberGone(_) => "member_gone",
            Call::Publish(_) => "publish",
            Call::EffectsPersisted(_) => "effects_persisted",
            Call::Enqueue(_) => "enqueue",
            Call::Dequeue { .. } => "dequeue",
            Call::Forget { .. } => "forget",
            Call::RestorePlace(_) => "restore_place",
            Call::ArmPresence(_) => "arm_presence",
            Call::ListMatches(_) => "list_matches",
            Call::Join(_) => "join",
            Call::Leave(_) => "leave",
            Call::PoolStatus { .. } => "pool_status",
            Call::PublishEvent { .. } => "publish_event",
            Call::InspectUser(_) => "inspect_user",
            Call::CloseRoom(_) => "close_room",
            Call::RepairPair(_) => "repair_pair",
            Call::RepairPlace(_) => "repair_place",
        }
    }
}

/// Runs a call on this node's own actors (set once the actors exist).
pub type LocalExecutor =
    Arc<dyn Fn(Call) -> LocalBoxFuture<'static, Result<serde_json::Value, ApiError>> + Send + Sync>;

/// Why a forwarded call failed.
#[derive(Clone)]
enum Failure {
    /// It did not run; try again after refreshing membership.
    DidNotRun(String),
    /// It ran, or may have: this is the answer.
    Answer(ApiError),
}

/// Sends calls to their slot's owner. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<ForwarderInner>,
}

struct ForwarderInner {
    membership: Membership,
    /// Proves to the receiver that the call comes from a node of this cluster.
    key: String,
    /// The whole budget of one call, retries included.
    timeout: Duration,
    local: OnceLock<LocalExecutor>,
    /// Streams of this node relayed from their users' owners, so a shutdown can close them
    /// (they are not in this node's user shards).
    relays: std::sync::Mutex<std::collections::HashMap<u64, actix::Recipient<crate::session::Deliver>>>,
    next_relay: std::sync::atomic::AtomicU64,
}

/// Calls per batched request, at most.
const MAX_BATCH: usize = 256;
/// Batched requests out to one peer from one thread, at most.
const MAX_IN_FLIGHT: usize = 4;

/// Where a queued call's answer goes.
type AnswerTo = tokio::sync::oneshot::Sender<Result<serde_json::Value, Failure>>;

/// Calls waiting for a peer (per thread: awc clients and these queues are not `Send`).
#[derive(Default)]
struct PeerQueue {
    pending: Vec<(Vec<u8>, AnswerTo)>,
    /// Tasks sending this peer's batches (each has at most one request out).
    senders: usize,
}

thread_local! {
    static QUEUES: std::cell::RefCell<std::collections::HashMap<Arc<str>, PeerQueue>> =
        std::cell::RefCell::new(std::collections::HashMap::new());

    /// One HTTP client (with its connection pool) per thread: awc clients are not `Send`.
    /// Calls are short, but a burst may have many in flight: no cap on connections per peer.
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs(10))
        .finish();
}

impl Forwarder {
    /// Remembers a relayed stream's session until `relay_ended`.
    pub(crate) fn relay_started(&self, session: actix::Recipient<crate::session::Deliver>) -> u64 {
        let id = self.inner.next_relay.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut relays) = self.inner.relays.lock() {
            relays.insert(id, session);
        }
        id
    }

    pub(crate) fn relay_ended(&self, id: u64) {
        if let Ok(mut relays) = self.inner.relays.lock() {
            relays.remove(&id);
        }
    }

    /// Closes every relayed stream with `reason` (at shutdown: the client reconnects elsewhere).
    pub fn close_relays(&self, reason: crate::session::CloseReason) -> usize {
        let relays: Vec<_> = self.inner.relays.lock().map(|mut r| r.drain().collect()).unwrap_or_default();
        for (_, session) in &relays {
            session.do_send(crate::session::Deliver::Close(reason));
        }
        relays.len()
    }

    pub fn new(membership: Membership, key: String, timeout: Duration) -> Forwarder {
        Forwarder {
            inner: Arc::new(ForwarderInner {
                membership,
                key,
                timeout,
                local: OnceLock::new(),
                relays: Default::default(),
                next_relay: Default::default(),
            }),
        }
    }

    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// The whole budget of one call (also how long a relay looks for a user's new owner).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Installs the executor for calls that turn out to be local after a retry.
    pub fn set_local(&self, local: LocalExecutor) {
        let _ = self.inner.local.set(local);
    }

    /// Where `slot`'s actors are now.
    pub fn route(&self, slot: u16) -> Result<Route, ApiError> {
        self.inner.membership.route(slot)
    }

    /// Runs `call` on its owner, wherever that is, and decodes the answer.
    pub async fn send<T: DeserializeOwned>(&self, call: Call) -> Result<T, ApiError> {
        let value = self.send_value(call).await?;
        serde_json::from_value(value).map_err(|e| {
            ApiError::Unavailable(format!("a node answered a forwarded call with an unreadable body: {e}"))
        })
    }

    async fn send_value(&self, call: Call) -> Result<serde_json::Value, ApiError> {
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let kind = call.kind();
        let body = serde_json::to_vec(&call).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut call = Some(call);
        loop {
            let failure = match self.route(call.as_ref().map_or(0, Call::slot)) {
                Ok(Route::Local) => {
                    let (Some(local), Some(call)) = (self.inner.local.get(), call.take()) else {
                        return Err(ApiError::shutting_down());
                    };
                    return local(call).await;
                }
                Ok(Route::Remote(peer)) => {
                    let started = tokio::time::Instant::now();
                    let res = self.post(&peer, body.clone(), deadline).await;
                    METRICS.forward_seconds.observe(started.elapsed().as_secs_f64());
                    match res {
                        Ok(v) => {
                            METRICS.forwarded.with_label_values(&[kind, "ok"]).inc();
                            return Ok(v);
                        }
                        Err(Failure::Answer(e)) => {
                            METRICS.forwarded.with_label_values(&[kind, "answered_error"]).inc();
                            return Err(e);
                        }
                        Err(Failure::DidNotRun(why)) => {
                            METRICS.forwarded.with_label_values(&[kind, "retried"]).inc();
                            self.inner.membership.refresh_soon();
                            why
                        }
                    }
                }
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(ApiError::Unavailable(format!(
                    "the owner of this data could not be reached ({failure}); nothing was changed, retry"
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Queues one encoded call for `peer` and waits for its answer. Calls to one peer from one
    /// thread travel together: a few requests in flight per peer, and whatever is queued meanwhile
    /// goes in the next one (like the shards' group commit), so a burst of cross-node swipes costs
    /// a few requests, not one each.
    async fn post(
        &self,
        peer: &Member,
        body: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<serde_json::Value, Failure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = QUEUES.with(|q| {
            let mut q = q.borrow_mut();
            let queue = q.entry(peer.url.clone()).or_default();
            queue.pending.push((body, tx));
            // Another sender while few are out: a call never waits long behind a slow batch.
            let start = queue.senders < MAX_IN_FLIGHT && queue.pending.len() == 1;
            if start {
                queue.senders += 1;
            }
            start
        });
        if start {
            actix_rt::spawn(self.clone().send_batches(peer.clone()));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Failure::Answer(ApiError::shutting_down())),
            Err(_) => Err(Failure::Answer(ApiError::Unavailable(
                "the owning node did not answer in time; the outcome is unknown, retry with the same key".into(),
            ))),
        }
    }

    /// Sends `peer`'s queued calls, a batch at a time, until the queue is empty.
    async fn send_batches(self, peer: Member) {
        // Calls made by tasks that are ready now join the first batch.
        tokio::task::yield_now().await;
        loop {
            let batch = QUEUES.with(|q| {
                let mut q = q.borrow_mut();
                let queue = q.get_mut(&peer.url)?;
                if queue.pending.is_empty() {
                    queue.senders -= 1;
                    return None;
                }
                let n = queue.pending.len().min(MAX_BATCH);
                Some(queue.pending.drain(..n).collect::<Vec<_>>())
            });
            let Some(batch) = batch else { break };
            METRICS.forward_batch_size.observe(batch.len() as f64);
            let mut body = Vec::with_capacity(batch.iter().map(|(b, _)| b.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (i, (call, _)) in batch.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(call);
            }
            body.push(b']');
            match self.post_batch(&peer, body, batch.len()).await {
                Ok(answers) => {
                    for ((_, reply), answer) in batch.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(failure) => {
                    for (_, reply) in batch {
                        let _ = reply.send(Err(failure.clone()));
                    }
                }
            }
        }
    }

    /// One `POST /internal/v1/calls` with `count` calls; one answer per call, in order.
    async fn post_batch(
        &self,
        peer: &Member,
        body: Vec<u8>,
        count: usize,
    ) -> Result<Vec<Result<serde_json::Value, Failure>>, Failure> {
        let url = format!("{}/internal/v1/calls", peer.url);
        let request = CLIENT.with(|c| {
            c.post(url)
                .timeout(self.inner.timeout)
                .insert_header((CLUSTER_KEY_HEADER, self.inner.key.as_str()))
                .insert_header(("content-type", "application/json"))
        });
        let mut res = match request.send_body(body).await {
            Ok(res) => res,
            Err(awc::error::SendRequestError::Connect(e)) => return Err(Failure::DidNotRun(e.to_string())),
            Err(e) => {
                return Err(Failure::Answer(ApiError::Unavailable(format!(
                    "the owning node did not answer in time ({e}); the outcome is unknown, retry with the same key"
                ))))
            }
        };
        let status = res.status();
        let bytes = res.body().limit(64 << 20).await.map_err(|e| {
            Failure::Answer(ApiError::Unavailable(format!("the owning node's answer was cut off ({e}); retry")))
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        let answers = match value {
            serde_json::Value::Array(answers) if status.is_success() && answers.len() == count => answers,
            other => return Err(Failure::Answer(ApiError::from_body(&other, "the owning node failed"))),
        };
        Ok(answers
            .into_iter()
            .map(|mut a| {
                if a.get("not_owner").is_some() {
                    return Err(Failure::DidNotRun(format!("{} does not own the slot", peer.id)));
                }
                match a.get_mut("ok") {
                    Some(v) => Ok(v.take()),
                    None => Err(Failure::Answer(ApiError::from_body(&a, "the owning node failed"))),
                }
            })
            .collect())
    }

    /// Sends a message that has no answer (its sender retries by its own means, or it is a
    /// best-effort hint). Runs on the current thread's runtime.
    pub fn tell(&self, call: Call) {
        let this = self.clone();
        actix_rt::spawn(async move {
            let kind = call.kind();
            if let Err(e) = this.send_value(call).await {
                tracing::debug!(call = kind, error = %e, "a forwarded message was not delivered; its sender retries");
            }
        });
    }
}

/// Runs `msg` on the local actor (`local`) when this node owns `slot` (or there is no cluster),
/// else forwards it as `wrap(msg)` to the owner.
pub fn dispatch<M, T, F>(
    forwarder: Option<&Forwarder>,
    slot: u16,
    msg: M,
    local: impl FnOnce(M) -> F,
    wrap: impl FnOnce(M) -> Call,
) -> LocalBoxFuture<'static, Result<T, ApiError>>
where
    F: std::future::Future<Output = Result<T, ApiError>> + 'static,
    T: DeserializeOwned + 'static,
{
    match forwarder {
        Some(f) if !matches!(f.route(slot), Ok(Route::Local)) => {
            let (f, call) = (f.clone(), wrap(msg));
            Box::pin(async move { f.send(call).await })
        }
        _ => Box::pin(local(msg)),
    }
}

/// Like `dispatch`, for messages without an answer.
pub fn notify<M>(
    forwarder: Option<&Forwarder>,
    slot: u16,
    msg: M,
    local: impl FnOnce(M),
    wrap: impl FnOnce(M) -> Call,
) {
    match forwarder {
        Some(f) if !matches!(f.route(slot), Ok(Route::Local)) => f.tell(wrap(msg)),
        _ => local(msg),
    }
}

/// Flattens an actor call's two error layers.
pub fn flatten<T>(res: Result<Result<T, ApiError>, actix::MailboxError>) -> Result<T, ApiError> {
    res.map_err(ApiError::from).and_then(|r| r)
}

/// Asks a local actor, waiting at most `timeout`. A timeout leaves the outcome unknown (the actor
/// may still decide), which the answer says; a stopped actor changed nothing.
pub async fn ask<A, M, T>(addr: actix::Addr<A>, msg: M, timeout: Duration) -> Result<T, ApiError>
where
    A: actix::Actor + actix::Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: actix::Message<Result = Result<T, ApiError>> + Send + 'static,
    T: Send + 'static,
{
    match addr.send(msg).timeout(timeout).await {
        Ok(answer) => answer,
        Err(actix::MailboxError::Timeout) => Err(ApiError::Unavailable(
            "the action timed out inside the server; its outcome is unknown, retry with the same idempotency key"
                .into(),
        )),
        Err(e) => Err(ApiError::from(e)),
    }
}
