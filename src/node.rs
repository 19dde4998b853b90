//! `Node`: the handles every part of the server needs (routers to the shards, auth, limits), and
//! the actions themselves. HTTP handlers and WebSocket sessions both call these methods, so an
//! action means the same thing on either transport.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Actor, Arbiter};

use futures_util::future::LocalBoxFuture;

use crate::auth::{ApiKey, Auth};
use crate::cluster::forward::{ask, dispatch, flatten, Call, Forwarder, LocalExecutor};
use crate::cluster::{Membership, Role, Route};
use crate::config::Config;
use crate::coord::messages::{Swipe, Unmatch};
use crate::coord::shard::PairShard;
use crate::coord::shard::ResetCache;
use crate::coord::slot::{pair_slot, shard_of, user_slot, SLOT_COUNT};
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::limiter::RateLimiter;
use crate::metrics::METRICS;
use crate::persist::{Durability, DurabilityFactory, Fence, Lease, RedisStore, StoreError};
use crate::protocol::server::{CloseRoomResponse, Publication, PublishResponse, UserView};
use crate::protocol::{JoinRequest, JoinResponse, LeaveResponse, PoolName, PoolStatus, RoomId, SkipResponse};
use crate::protocol::{MatchId, MatchesResponse, SwipeRequest, SwipeResponse, UnmatchResponse, UserId};
use crate::queue::messages::{CloseRoom, GetStatus, Join, Leave, Skip};
use crate::queue::PoolRouter;
use crate::session::messages::{InspectUser, ListMatches, ServerPublish, SessionHandle, Subscribe, Unsubscribe};
use crate::session::user_shard::{CountConnected, Links, Rehome, UserShard, Wire};
use crate::session::UserRouter;
use crate::webhook::WebhookSender;

/// Cheap to clone; shared by every worker and session.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

pub struct NodeInner {
    pub config: Config,
    pub node_id: Arc<str>,
    pub pairs: ShardRouter,
    pub users: UserRouter,
    pub pools: PoolRouter,
    pub auth: Auth,
    /// The server API's key; `None` turns the server API off (404).
    pub api_key: Option<ApiKey>,
    /// Per-user budget for swipes and unmatches.
    pub limiter: RateLimiter,
    /// Per-user budget for queue joins.
    pub join_limiter: RateLimiter,
    /// Per-user budget for skips.
    pub skip_limiter: RateLimiter,
    next_session_id: AtomicU64,
    next_request_id: AtomicU64,
    /// The shard threads; stopped when the node is dropped.
    arbiters: Vec<Arbiter>,
    /// A connection for readiness checks and the lease (Redis mode).
    probe: Option<RedisStore>,
    /// The ownership lease this node writes under (Redis mode, one active node).
    lease: Option<Lease>,
    /// Cluster mode: who owns what, and how to reach them.
    pub forwarder: Option<Forwarder>,
    /// The dashboard's samples of the metrics (filled once a second by its sampler).
    pub dashboard: crate::http::dashboard::Samples,
    /// What other nodes and `matchd audit` prove themselves with on `/internal/` (see `cluster_key`).
    pub internal_key: String,
    /// The background audit's thread, if `audit.interval_ms` is set.
    audit_sweep: Option<Arbiter>,
}

/// Pause between attempts to open a stream while its user's slot changes hands.
const STREAM_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// How a connection gets its user's events: from this node's user shard, or relayed from the
/// owning node's (cluster mode).
pub enum Subscription {
    Local,
    Remote(tokio::task::JoinHandle<()>),
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        for a in self.arbiters.iter().chain(&self.audit_sweep) {
            a.stop();
        }
    }
}

impl std::ops::Deref for Node {
    type Target = NodeInner;
    fn deref(&self) -> &NodeInner {
        &self.inner
    }
}

/// The transport an action came in on, for metrics.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Http,
    Ws,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Ws => "ws",
        }
    }
}

impl Node {
    /// Starts the shard actors, each pair shard and user shard pair on its own arbiter (thread).
    /// Fails only if the Redis URL cannot be used.
    pub fn start(config: Config) -> Result<Node, StoreError> {
        METRICS.preregister(&config);
        // Each shard gets its own Redis connection, created on its own thread's runtime.
        let redis_url = config.redis.clone();
        let membership = match (&config.cluster, &redis_url) {
            (Some(cluster), Some(_)) => Some(Membership::new(&config.node_id, &cluster.advertise, config.lease_ttl())),
            _ => None,
        };
        let lease = match (&redis_url, &membership) {
            (Some(_), None) => Some(Lease::new(&config.node_id, &config.internal_url(), config.lease_ttl())),
            _ => None,
        };
        let forwarder = membership
            .as_ref()
            .map(|m| Forwarder::new(m.clone(), cluster_key(config.secret().as_bytes()), config.action_timeout()));
        let store_for = {
            let (url, timeout, max) = (redis_url.clone(), config.persist_timeout(), config.limits.persist_batch_max);
            let idle_ms = config.timeouts.cache_idle_ms;
            let (lease, membership) = (lease.clone(), membership.clone());
            let factory: DurabilityFactory = Arc::new(move |role: Role| -> Option<Durability> {
                let url = url.as_deref()?;
                let fence = match (&lease, &membership) {
                    (Some(lease), _) => Fence::Lease(lease.clone()),
                    (None, Some(membership)) => Fence::Cluster { membership: membership.clone(), role },
                    (None, None) => return None,
                };
                match RedisStore::connect_lazy(url, timeout) {
                    Ok(store) => Some(Durability { store, max_batch: max, fence, idle_ms }),
                    Err(e) => {
                        // Checked below before any shard starts, so this cannot happen.
                        tracing::error!(error = %e, "redis client could not be created");
                        None
                    }
                }
            });
            factory
        };
        let probe = match &redis_url {
            Some(url) => Some(RedisStore::connect_lazy(url, config.persist_timeout())?),
            None => None,
        };
        let node_id: Arc<str> = Arc::from(config.node_id.as_str());
        let mut arbiters: Vec<Arbiter> = (0..config.shards).map(|_| Arbiter::new()).collect();
        let (webhooks, webhook_thread) = WebhookSender::start(&config.webhooks);
        let users = UserRouter::new(
            arbiters
                .iter()
                .map(|a| {
                    let (limits, node_id, grace) = (config.limits.clone(), node_id.clone(), config.presence_grace());
                    let store_for = store_for.clone();
                    UserShard::start_in_arbiter(&a.handle(), move |_| {
                        UserShard::new(limits, node_id, grace, store_for(Role::Users))
                    })
                })
                .collect(),
            forwarder.clone(),
        );
        let pairs = ShardRouter::new(
            arbiters
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let (limits, users, shards) = (config.limits.clone(), users.clone(), config.shards);
                    let (store_for, webhooks) = (store_for.clone(), webhooks.clone());
                    PairShard::start_in_arbiter(&a.handle(), move |_| {
                        PairShard::new(i, shards, users, limits, store_for(Role::Pairs), webhooks)
                    })
                })
                .collect(),
            forwarder.clone(),
        );
        let pools = PoolRouter::new(
            &config,
            arbiters.iter().map(|a| a.handle()).collect(),
            pairs.clone(),
            users.clone(),
            store_for.clone(),
            forwarder.clone(),
        );
        if let Some(f) = &forwarder {
            let (pairs, users, pools) = (pairs.clone(), users.clone(), pools.clone());
            let timeout = config.action_timeout();
            let local: LocalExecutor = Arc::new(move |call| execute_local(&pairs, &users, &pools, timeout, call));
            f.set_local(local);
        }
        arbiters.extend(webhook_thread);
        for shard in users.all() {
            shard.do_send(Wire(Links { pairs: pairs.clone(), pools: pools.clone() }));
        }
        let internal_key = cluster_key(config.secret().as_bytes());
        let audit_sweep =
            crate::audit::sweep::start(&config, lease.clone(), forwarder.as_ref().map(|f| f.membership().clone()));
        let auth = Auth::new(config.secret());
        let api_key = config.server_api_key().map(ApiKey::new);
        let limiter = RateLimiter::new(config.limits.actions_per_second, config.limits.action_burst);
        let per_minute = |n: u32| RateLimiter::new(f64::from(n) / 60.0, n);
        let join_limiter = per_minute(config.limits.joins_per_minute);
        let skip_limiter = per_minute(config.limits.skips_per_minute);
        Ok(Node {
            inner: Arc::new(NodeInner {
                config,
                node_id,
                pairs,
                users,
                pools,
                auth,
                api_key,
                limiter,
                join_limiter,
                skip_limiter,
                next_session_id: AtomicU64::new(1),
                next_request_id: AtomicU64::new(1),
                arbiters,
                probe,
                lease,
                forwarder,
                dashboard: Default::default(),
                internal_key,
                audit_sweep,
            }),
        })
    }

    /// With Redis: acquires the ownership lease and keeps it (see `persist::lease`), or in cluster
    /// mode joins the members (see `cluster::membership`). Each new tenure or view first makes
    /// every actor drop what it cached. Runs on the calling actix system; returns once the first
    /// attempt was answered (or the persistence timeout passed).
    pub async fn keep_lease(&self) {
        let Some(store) = self.probe.clone() else { return };
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let (pairs, users, pools) = (self.pairs.clone(), self.users.clone(), self.pools.clone());
        if let (Some(membership), Some(forwarder)) = (self.membership().cloned(), self.forwarder.clone()) {
            let me = membership.clone();
            actix_rt::spawn(membership.keep(
                store,
                move |change| {
                    let (pairs, users, pools, me) = (pairs.clone(), users.clone(), pools.clone(), me.clone());
                    let forwarder = forwarder.clone();
                    async move {
                        pools.retire_unowned(|slot| change.table.owned_by(slot, me.node_id()));
                        for shard in users.all() {
                            let rehome = Rehome { table: change.table.clone(), new_tenure: change.new_tenure };
                            // Streams of users who moved keep going, relayed from the new owner.
                            for h in shard.send(rehome).await.unwrap_or_default() {
                                let local =
                                    crate::cluster::remote_stream::Local { users: users.clone(), session: h.session };
                                crate::cluster::remote_stream::follow(forwarder.clone(), h.user, h.since, local);
                            }
                        }
                        for shard in pairs.all() {
                            let _ = shard.send(ResetCache).await;
                        }
                        for pool in pools.all() {
                            let _ = pool.send(ResetCache).await;
                        }
                    }
                },
                Some(first_tx),
            ));
        } else if let Some(lease) = self.lease.clone() {
            actix_rt::spawn(lease.keep(
                store,
                move || {
                    let (pairs, users) = (pairs.clone(), users.clone());
                    async move {
                        for shard in pairs.all() {
                            let _ = shard.send(ResetCache).await;
                        }
                        for shard in users.all() {
                            let _ = shard.send(ResetCache).await;
                        }
                    }
                },
                Some(first_tx),
            ));
        } else {
            return;
        }
        let _ = tokio::time::timeout(self.config.persist_timeout() * 2, first_rx).await;
    }

    /// Cluster mode, at shutdown: leaves the members set and waits (up to `within`) until the
    /// slots this node owned have new owners that claimed them, forwarding actions to them
    /// meanwhile. Returns at once otherwise.
    pub async fn hand_over(&self, within: std::time::Duration) {
        if let (Some(store), Some(m)) = (&self.probe, self.membership()) {
            m.hand_over(store, within).await;
        }
    }

    /// Gives up the lease, or leaves the cluster, at shutdown (Redis mode), after the shards have
    /// written what they owed.
    pub async fn release_lease(&self) {
        let Some(store) = &self.probe else { return };
        if let Some(lease) = &self.lease {
            lease.release(store).await;
        }
        if let Some(m) = self.membership() {
            m.leave(store).await;
        }
    }

    /// Whether persistence answers and this node may act: it holds the lease, or (cluster mode)
    /// it is a settled member. Always true in memory mode.
    pub async fn persistence_ready(&self) -> Result<(), StoreError> {
        let Some(store) = &self.probe else { return Ok(()) };
        store.ping().await?;
        let active = match (&self.lease, self.membership()) {
            (Some(lease), _) => lease.held(),
            (None, Some(m)) => m.is_active(),
            (None, None) => true,
        };
        if active {
            Ok(())
        } else {
            Err(StoreError::Fenced)
        }
    }

    /// Users with at least one open stream on this node, counted by the user shards that hold
    /// the connections (a relayed stream counts on the user's owner, where its relay connects).
    /// `None` if a shard did not answer within the persistence timeout.
    pub async fn connected_users(&self) -> Option<u64> {
        count_connected(&self.users, self.config.persist_timeout()).await
    }

    /// Redis mode without `--cluster`: the active node's id while this node is a standby
    /// (another node holds the ownership lease).
    pub fn standby_of(&self) -> Option<String> {
        self.lease.as_ref().and_then(Lease::active_node)
    }

    /// The cluster membership, in cluster mode.
    pub fn membership(&self) -> Option<&Membership> {
        self.forwarder.as_ref().map(Forwarder::membership)
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a connection of `user` with the user's owner: this node's user shard, or the
    /// owning node's, relayed (cluster mode).
    pub async fn subscribe(
        &self,
        user: &UserId,
        session: SessionHandle,
        since: Option<u64>,
    ) -> Result<Subscription, ApiError> {
        let Some(f) = &self.forwarder else {
            self.users
                .for_user(user)
                .send(Subscribe { user: user.clone(), session, since, continued: false })
                .await??;
            return Ok(Subscription::Local);
        };
        // While the slot changes hands (a view change, an owner that just died) the stream waits
        // for the new owner, within the action timeout, instead of failing the connection.
        let deadline = tokio::time::Instant::now() + self.config.action_timeout();
        loop {
            let attempt = match f.route(user_slot(user)) {
                Ok(Route::Remote(peer)) => {
                    let local =
                        crate::cluster::remote_stream::Local { users: self.users.clone(), session: session.clone() };
                    crate::cluster::remote_stream::open(f, &peer, user, since, local).await.map(Subscription::Remote)
                }
                Ok(Route::Local) => {
                    let msg = Subscribe { user: user.clone(), session: session.clone(), since, continued: false };
                    flatten(self.users.for_user(user).send(msg).await).map(|()| Subscription::Local)
                }
                Err(e) => Err(e),
            };
            match attempt {
                Err(ApiError::Unavailable(_)) if tokio::time::Instant::now() + STREAM_RETRY_PAUSE < deadline => {
                    f.membership().refresh_soon();
                    tokio::time::sleep(STREAM_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// The connection `session_id` of `user` is gone.
    pub fn unsubscribe(&self, user: &UserId, session_id: u64, subscription: Subscription) {
        match subscription {
            Subscription::Local => {
                self.users.for_user(user).do_send(Unsubscribe { user: user.clone(), session_id });
            }
            // Ending the relay closes its stream at the owner, which unsubscribes it there; a relay
            // whose user came to this node continued as a local subscription.
            Subscription::Remote(relay) => {
                relay.abort();
                self.users.for_user(user).do_send(Unsubscribe { user: user.clone(), session_id });
            }
        }
    }

    /// `actor` swipes per `req`.
    pub async fn swipe(
        &self,
        actor: &UserId,
        req: SwipeRequest,
        request_id: u64,
        via: Via,
    ) -> Result<SwipeResponse, ApiError> {
        let timer = METRICS.action_seconds.with_label_values(&["swipe", via.as_str()]).start_timer();
        if *actor == req.target {
            return Err(ApiError::SelfSwipe);
        }
        self.limiter.check(actor)?;
        let msg = Swipe {
            from: actor.clone(),
            to: req.target.clone(),
            direction: req.direction,
            swipe_id: req.swipe_id,
            request_id,
        };
        let slot = pair_slot(actor, &req.target);
        let (addr, timeout) = (self.pairs.for_slot(slot).clone(), self.config.action_timeout());
        let local = |m| ask(addr, m, timeout);
        let res = dispatch(self.forwarder.as_ref(), slot, msg, local, Call::Swipe).await;
        timer.observe_duration();
        res
    }

    /// `actor` ends `match_id`.
    pub async fn unmatch(
        &self,
        actor: &UserId,
        match_id: MatchId,
        request_id: u64,
        via: Via,
    ) -> Result<UnmatchResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["unmatch", via.as_str()]).start_timer();
        self.limiter.check(actor)?;
        let slot = match_id.slot().ok_or_else(|| ApiError::NotFound(format!("no match {match_id}")))?;
        let (addr, timeout) = (self.pairs.for_slot(slot).clone(), self.config.action_timeout());
        let msg = Unmatch { by: actor.clone(), match_id, request_id };
        let local = |m| ask(addr, m, timeout);
        dispatch::<_, (), _>(self.forwarder.as_ref(), slot, msg, local, Call::Unmatch).await?;
        Ok(UnmatchResponse { status: "unmatched".into() })
    }

    /// `actor`'s active matches.
    pub async fn matches(&self, actor: &UserId) -> Result<MatchesResponse, ApiError> {
        let (addr, timeout) = (self.users.for_user(actor).clone(), self.config.action_timeout());
        let local = |m| ask(addr, m, timeout);
        let msg = ListMatches { user: actor.clone() };
        let mut matches: Vec<crate::protocol::Match> =
            dispatch(self.forwarder.as_ref(), user_slot(actor), msg, local, Call::ListMatches).await?;
        matches.sort_by_key(|m| m.created_at);
        Ok(MatchesResponse { matches })
    }

    /// `actor` spins in `ticket.pool`.
    pub async fn join_queue(&self, actor: &UserId, ticket: JoinRequest, via: Via) -> Result<JoinResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["join_queue", via.as_str()]).start_timer();
        ticket.validate().map_err(ApiError::BadRequest)?;
        self.join_limiter.check(actor)?;
        let (addr, timeout) = (self.users.for_user(actor).clone(), self.config.action_timeout());
        let local = |m| ask(addr, m, timeout);
        let msg = Join { user: actor.clone(), ticket };
        dispatch(self.forwarder.as_ref(), user_slot(actor), msg, local, Call::Join).await
    }

    /// `actor` leaves whatever queue they wait in.
    pub async fn leave_queue(&self, actor: &UserId, via: Via) -> Result<LeaveResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["leave_queue", via.as_str()]).start_timer();
        let (addr, timeout) = (self.users.for_user(actor).clone(), self.config.action_timeout());
        let local = |m| ask(addr, m, timeout);
        let msg = Leave { user: actor.clone() };
        dispatch(self.forwarder.as_ref(), user_slot(actor), msg, local, Call::Leave).await
    }

    /// How many wait in `pool`, and the estimated wait.
    pub async fn pool_status(&self, pool: &PoolName) -> Result<PoolStatus, ApiError> {
        tokio::time::timeout(self.config.action_timeout(), self.pools.status(pool))
            .await
            .map_err(|_| ApiError::Unavailable("the pool did not answer in time; retry".into()))?
    }

    /// Carries out an audit repair at its owner (this node's actor, or the owning node's), which
    /// re-checks it against its own state; a failure to reach it is reported as `failed`.
    pub async fn repair(&self, repair: crate::audit::Repair) -> crate::audit::RepairOutcome {
        use crate::audit::repair::{RepairPair, RepairPlace};
        use crate::audit::{Repair, RepairOutcome};
        let timeout = self.config.action_timeout();
        let slot = repair.slot();
        let res = match repair {
            Repair::Pair { pair, fix } => {
                let addr = self.pairs.for_slot(slot).clone();
                let local = |m| ask(addr, m, timeout);
                dispatch(self.forwarder.as_ref(), slot, RepairPair { pair, fix }, local, Call::RepairPair).await
            }
            Repair::Place { user, lines, keep } => {
                let addr = self.users.for_user(&user).clone();
                let local = |m| ask(addr, m, timeout);
                let msg = RepairPlace { user, lines, keep };
                dispatch(self.forwarder.as_ref(), slot, msg, local, Call::RepairPlace).await
            }
        };
        res.unwrap_or_else(|e| RepairOutcome::failed(e.to_string()))
    }

    /// `actor` skips `room_id`; `requeue` (default true) puts them back in line.
    pub async fn skip(
        &self,
        actor: &UserId,
        room_id: RoomId,
        requeue: bool,
        request_id: u64,
        via: Via,
    ) -> Result<SkipResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["skip", via.as_str()]).start_timer();
        self.skip_limiter.check(actor)?;
        let slot = room_id.slot().ok_or_else(|| ApiError::NotFound(format!("no room {room_id}")))?;
        let (addr, timeout) = (self.pairs.for_slot(slot).clone(), self.config.action_timeout());
        let local = |m| ask(addr, m, timeout);
        let msg = Skip { by: actor.clone(), room_id, requeue, request_id };
        let mut res: SkipResponse = dispatch(self.forwarder.as_ref(), slot, msg, local, Call::Skip).await?;
        if res.requeued && !requeue {
            // The partner closed the room first and we were requeued with them; honour our choice.
            self.leave_queue(actor, via).await?;
            res.requeued = false;
        }
        Ok(res)
    }
}

// === Server API (the app's own backend) ===

impl Node {
    /// Publishes `publication.event` to each of its users (`POST /v1/server/publish`): users this
    /// node owns get it from their shard (one message per shard), the others from their owner
    /// (one forwarded call per user, batched per peer). Answers once every user's event is in
    /// their log (stored, with Redis). On an error some users may have it: a retry with the same
    /// key adds it only where it is missing.
    pub async fn server_publish(&self, publication: Publication) -> Result<PublishResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["server_publish", "http"]).start_timer();
        let Publication { users, event } = publication;
        let count = users.len();
        let shards = self.users.all();
        let mut local: Vec<Vec<UserId>> = vec![Vec::new(); shards.len()];
        let mut sends: Vec<LocalBoxFuture<'static, Result<(), ApiError>>> = Vec::new();
        for user in users {
            let slot = user_slot(&user);
            match &self.forwarder {
                Some(f) if !matches!(f.route(slot), Ok(Route::Local)) => {
                    let (f, call) = (f.clone(), Call::PublishEvent { user, event: event.clone() });
                    sends.push(Box::pin(async move { f.send(call).await }));
                }
                _ => local[shard_of(slot, shards.len())].push(user),
            }
        }
        let timeout = self.config.action_timeout();
        for (shard, users) in shards.iter().zip(local).filter(|(_, users)| !users.is_empty()) {
            let msg = ServerPublish { users, event: event.clone() };
            sends.push(Box::pin(ask(shard.clone(), msg, timeout)));
        }
        for res in futures_util::future::join_all(sends).await {
            res?;
        }
        METRICS.server_publish.inc();
        Ok(PublishResponse { status: "published".into(), users: count })
    }

    /// What the server API tells about `user` (`GET /v1/server/users/{user}`), from the user's owner.
    pub async fn inspect_user(&self, user: UserId) -> Result<UserView, ApiError> {
        let (addr, timeout) = (self.users.for_user(&user).clone(), self.config.action_timeout());
        let local = |m| ask(addr, m, timeout);
        let slot = user_slot(&user);
        dispatch(self.forwarder.as_ref(), slot, InspectUser { user }, local, Call::InspectUser).await
    }

    /// The app's backend closes `room_id` (`POST /v1/server/rooms/{id}/close`).
    pub async fn close_room(
        &self,
        room_id: RoomId,
        requeue: bool,
        request_id: u64,
    ) -> Result<CloseRoomResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["close_room", "http"]).start_timer();
        let slot = room_slot(&room_id)?;
        let (addr, timeout) = (self.pairs.for_slot(slot).clone(), self.config.action_timeout());
        let local = |m| ask(addr, m, timeout);
        let msg = CloseRoom { room_id, requeue, request_id };
        dispatch::<_, (), _>(self.forwarder.as_ref(), slot, msg, local, Call::CloseRoom).await?;
        Ok(CloseRoomResponse { status: "closed".into() })
    }
}

/// The slot a room id carries, if it is one this server could have issued (404 otherwise).
fn room_slot(room_id: &RoomId) -> Result<u16, ApiError> {
    room_id.slot().filter(|s| *s < SLOT_COUNT).ok_or_else(|| ApiError::NotFound(format!("no room {room_id}")))
}

/// Users with at least one open stream, summed over the user shards (`None` if one does not
/// answer within `timeout`).
pub async fn count_connected(users: &UserRouter, timeout: std::time::Duration) -> Option<u64> {
    let asks = users.all().iter().map(|shard| shard.send(CountConnected));
    let counts = tokio::time::timeout(timeout, futures_util::future::join_all(asks)).await.ok()?;
    counts.into_iter().map(|c| c.ok().map(|n| n as u64)).sum()
}

/// The key nodes of one cluster prove themselves with on internal calls: derived from the shared
/// JWT secret, so it needs no configuration of its own and never travels to clients.
pub fn cluster_key(secret: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, b"matchd-cluster-internal-calls");
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a forwarded call on this node's own actors (the receiver checked it owns the slot).
pub fn execute_local(
    pairs: &ShardRouter,
    users: &UserRouter,
    pools: &PoolRouter,
    timeout: std::time::Duration,
    call: Call,
) -> LocalBoxFuture<'static, Result<serde_json::Value, ApiError>> {
    fn answer<T: serde::Serialize>(res: Result<T, ApiError>) -> Result<serde_json::Value, ApiError> {
        res.and_then(|v| serde_json::to_value(v).map_err(|e| ApiError::Unavailable(e.to_string())))
    }
    fn done() -> LocalBoxFuture<'static, Result<serde_json::Value, ApiError>> {
        Box::pin(std::future::ready(Ok(serde_json::Value::Null)))
    }
    match call {
        Call::Swipe(m) => {
            let addr = pairs.for_pair(&m.from, &m.to).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::Unmatch(m) => {
            let addr = pairs.for_slot(m.match_id.slot().unwrap_or(0)).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::Skip(m) => {
            let addr = pairs.for_slot(m.room_id.slot().unwrap_or(0)).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::CreateRoom(m) => {
            let addr = pairs.for_pair(&m.room.users[0], &m.room.users[1]).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::MemberGone(m) => {
            pairs.for_slot(m.room_id.slot().unwrap_or(0)).do_send(m);
            done()
        }
        Call::EffectsPersisted(m) => {
            pairs.for_slot(m.pair.slot()).do_send(m);
            done()
        }
        Call::Publish(m) => {
            users.for_user(&m.user).do_send(m);
            done()
        }
        Call::RestorePlace(m) => {
            users.for_user(&m.user).do_send(m);
            done()
        }
        Call::ArmPresence(m) => {
            users.for_user(&m.user).do_send(m);
            done()
        }
        Call::ListMatches(m) => {
            let addr = users.for_user(&m.user).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::Join(m) => {
            let addr = users.for_user(&m.user).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::Leave(m) => {
            let addr = users.for_user(&m.user).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::Enqueue(m) => {
            let addr = pools.get(&m.ticket.pool);
            Box::pin(async move { answer(ask(addr?, m, timeout).await) })
        }
        Call::Dequeue { pool, msg } => {
            let addr = pools.get(&pool);
            Box::pin(async move { answer(ask(addr?, msg, timeout).await) })
        }
        Call::Forget { pool, msg } => {
            if let Ok(addr) = pools.get(&pool) {
                addr.do_send(msg);
            }
            done()
        }
        Call::PoolStatus { pool } => {
            let addr = pools.get(&pool);
            Box::pin(async move { answer(Ok(addr?.send(GetStatus).timeout(timeout).await?)) })
        }
        Call::PublishEvent { user, event } => {
            let addr = users.for_user(&user).clone();
            Box::pin(async move { answer(ask(addr, ServerPublish { users: vec![user], event }, timeout).await) })
        }
        Call::InspectUser(m) => {
            let addr = users.for_user(&m.user).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::CloseRoom(m) => {
            let addr = room_slot(&m.room_id).map(|slot| pairs.for_slot(slot).clone());
            Box::pin(async move { answer(ask(addr?, m, timeout).await) })
        }
        Call::RepairPair(m) => {
            let addr = pairs.for_slot(m.pair.slot()).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
        Call::RepairPlace(m) => {
            let addr = users.for_user(&m.user).clone();
            Box::pin(async move { answer(ask(addr, m, timeout).await) })
        }
    }
}
