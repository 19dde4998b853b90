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
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::limiter::RateLimiter;
use crate::metrics::METRICS;
use crate::protocol::{MatchId, MatchesResponse, SwipeRequest, SwipeResponse, UnmatchResponse, UserId};
use crate::session::messages::ListMatches;
use crate::session::user_shard::UserShard;
use crate::session::UserRouter;

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
    pub auth: Auth,
    pub limiter: RateLimiter,
    next_session_id: AtomicU64,
    next_request_id: AtomicU64,
    /// The shard threads; stopped when the node is dropped.
    arbiters: Vec<Arbiter>,
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
    pub fn start(config: Config) -> Node {
        let node_id: Arc<str> = Arc::from(config.node_id.as_str());
        let arbiters: Vec<Arbiter> = (0..config.shards).map(|_| Arbiter::new()).collect();
        let users = UserRouter::new(
            arbiters
                .iter()
                .map(|a| {
                    let (limits, node_id) = (config.limits.clone(), node_id.clone());
                    UserShard::start_in_arbiter(&a.handle(), move |_| UserShard::new(limits, node_id))
                })
                .collect(),
        );
        let pairs = ShardRouter::new(
            arbiters
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let (limits, users) = (config.limits.clone(), users.clone());
                    PairShard::start_in_arbiter(&a.handle(), move |_| PairShard::new(i, users, limits))
                })
                .collect(),
        );
        let auth = Auth::new(config.secret());
        let limiter = RateLimiter::new(config.limits.actions_per_second, config.limits.action_burst);
        Node {
            inner: Arc::new(NodeInner {
                config,
                node_id,
                pairs,
                users,
                auth,
                limiter,
                next_session_id: AtomicU64::new(1),
                next_request_id: AtomicU64::new(1),
                arbiters,
            }),
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
        let res = self
            .pairs
            .for_pair(actor, &req.target)
            .send(msg)
            .timeout(self.config.action_timeout())
            .await
            .map_err(|e| match e {
                actix::MailboxError::Timeout => Self::timed_out(),
                other => ApiError::from(other),
            })?;
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
            .await?;
        matches.sort_by_key(|m| m.created_at);
        Ok(MatchesResponse { matches })
    }
}
