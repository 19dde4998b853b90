//! `Node`: the handles every part of the server needs (routers to the shards, auth, limits), and
//! the actions themselves. HTTP handlers and WebSocket sessions both call these methods, so an
//! action means the same thing on either transport.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Actor, Arbiter};

use crate::auth::Auth;
use crate::config::Config;
use crate::coord::messages::{Swipe, Unmatch};
use crate::coord::shard::PairShard;
use crate::coord::shard::ResetCache;
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::limiter::RateLimiter;
use crate::metrics::METRICS;
use crate::persist::{Durability, DurabilityFactory, Lease, RedisStore, StoreError};
use crate::protocol::{JoinRequest, JoinResponse, LeaveResponse, PoolName, PoolStatus, RoomId, SkipResponse};
use crate::protocol::{MatchId, MatchesResponse, SwipeRequest, SwipeResponse, UnmatchResponse, UserId};
use crate::queue::messages::{GetStatus, Join, Leave, Skip};
use crate::queue::PoolRouter;
use crate::session::messages::ListMatches;
use crate::session::user_shard::{Links, UserShard, Wire};
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
    /// The ownership lease this node writes under (Redis mode).
    lease: Option<Lease>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        for a in &self.arbiters {
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
        // Each shard gets its own Redis connection, created on its own thread's runtime.
        let redis_url = config.redis.clone();
        let lease = redis_url.as_ref().map(|_| Lease::new(&config.node_id, config.lease_ttl()));
        let store_for = {
            let (url, timeout, max) = (redis_url.clone(), config.persist_timeout(), config.limits.persist_batch_max);
            let idle_ms = config.timeouts.cache_idle_ms;
            let lease = lease.clone();
            let factory: DurabilityFactory = Arc::new(move || -> Option<Durability> {
                let (url, lease) = (url.as_deref()?, lease.clone()?);
                match RedisStore::connect_lazy(url, timeout) {
                    Ok(store) => Some(Durability { store, max_batch: max, lease, idle_ms }),
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
                        UserShard::new(limits, node_id, grace, store_for())
                    })
                })
                .collect(),
        );
        let pairs = ShardRouter::new(
            arbiters
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let (limits, users, shards) = (config.limits.clone(), users.clone(), config.shards);
                    let (store_for, webhooks) = (store_for.clone(), webhooks.clone());
                    PairShard::start_in_arbiter(&a.handle(), move |_| {
                        PairShard::new(i, shards, users, limits, store_for(), webhooks)
                    })
                })
                .collect(),
        );
        let pools = PoolRouter::new(
            &config,
            arbiters.iter().map(|a| a.handle()).collect(),
            pairs.clone(),
            users.clone(),
            store_for.clone(),
        );
        arbiters.extend(webhook_thread);
        for shard in users.all() {
            shard.do_send(Wire(Links { pairs: pairs.clone(), pools: pools.clone() }));
        }
        let auth = Auth::new(config.secret());
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
                limiter,
                join_limiter,
                skip_limiter,
                next_session_id: AtomicU64::new(1),
                next_request_id: AtomicU64::new(1),
                arbiters,
                probe,
                lease,
            }),
        })
    }

    /// With Redis: acquires the ownership lease and keeps it (see `persist::lease`). Each new
    /// tenure first makes every shard drop its cache. Runs on the calling actix system; returns
    /// once the first attempt was answered (or the persistence timeout passed).
    pub async fn keep_lease(&self) {
        let (Some(lease), Some(store)) = (self.lease.clone(), self.probe.clone()) else { return };
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let (pairs, users) = (self.pairs.clone(), self.users.clone());
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
        let _ = tokio::time::timeout(self.config.persist_timeout() * 2, first_rx).await;
    }

    /// Gives up the lease at shutdown (Redis mode), after the shards have written what they owed.
    pub async fn release_lease(&self) {
        if let (Some(lease), Some(store)) = (&self.lease, &self.probe) {
            lease.release(store).await;
        }
    }

    /// Whether persistence answers and this node holds the lease (always true in memory mode).
    pub async fn persistence_ready(&self) -> Result<(), StoreError> {
        match (&self.probe, &self.lease) {
            (Some(store), Some(lease)) => {
                store.ping().await?;
                if lease.held() {
                    Ok(())
                } else {
                    Err(StoreError::Fenced)
                }
            }
            _ => Ok(()),
        }
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    fn timed_out() -> ApiError {
        ApiError::Unavailable(
            "the action timed out inside the server; its outcome is unknown, retry with the same swipe_id".into(),
        )
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
        let res =
            self.pairs.for_pair(actor, &req.target).send(msg).timeout(self.config.action_timeout()).await.map_err(
                |e| match e {
                    actix::MailboxError::Timeout => Self::timed_out(),
                    other => ApiError::from(other),
                },
            )?;
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
        self.pairs
            .for_slot(slot)
            .send(Unmatch { by: actor.clone(), match_id, request_id })
            .timeout(self.config.action_timeout())
            .await??;
        Ok(UnmatchResponse { status: "unmatched".into() })
    }

    /// `actor`'s active matches.
    pub async fn matches(&self, actor: &UserId) -> Result<MatchesResponse, ApiError> {
        let mut matches = self
            .users
            .for_user(actor)
            .send(ListMatches { user: actor.clone() })
            .timeout(self.config.action_timeout())
            .await??;
        matches.sort_by_key(|m| m.created_at);
        Ok(MatchesResponse { matches })
    }

    /// `actor` spins in `ticket.pool`.
    pub async fn join_queue(&self, actor: &UserId, ticket: JoinRequest, via: Via) -> Result<JoinResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["join_queue", via.as_str()]).start_timer();
        ticket.validate().map_err(ApiError::BadRequest)?;
        self.join_limiter.check(actor)?;
        self.users
            .for_user(actor)
            .send(Join { user: actor.clone(), ticket })
            .timeout(self.config.action_timeout())
            .await?
    }

    /// `actor` leaves whatever queue they wait in.
    pub async fn leave_queue(&self, actor: &UserId, via: Via) -> Result<LeaveResponse, ApiError> {
        let _timer = METRICS.action_seconds.with_label_values(&["leave_queue", via.as_str()]).start_timer();
        self.users.for_user(actor).send(Leave { user: actor.clone() }).timeout(self.config.action_timeout()).await?
    }

    /// How many wait in `pool`, and the estimated wait.
    pub async fn pool_status(&self, pool: &PoolName) -> Result<PoolStatus, ApiError> {
        Ok(self.pools.get(pool)?.send(GetStatus).timeout(self.config.action_timeout()).await?)
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
        let mut res = self
            .pairs
            .for_slot(slot)
            .send(Skip { by: actor.clone(), room_id, requeue, request_id })
            .timeout(self.config.action_timeout())
            .await??;
        if res.requeued && !requeue {
            // The partner closed the room first and we were requeued with them; honour our choice.
            self.leave_queue(actor, via).await?;
            res.requeued = false;
        }
        Ok(res)
    }
}
