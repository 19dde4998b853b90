//! `PoolRouter`: pool name -> its coordinator. Pools named in the config exist from the start;
//! others are created on first use with default rules when `allow_dynamic_pools` is on. The map
//! only routes; each pool's state is owned by its actor.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Addr, ArbiterHandle};
use dashmap::DashMap;

use futures_util::future::LocalBoxFuture;

use super::messages::{Dequeue, DequeueOutcome, Enqueue, GetStatus};
use super::pool::{Forget, PoolCoordinator};
use super::rules::PoolRules;
use crate::cluster::forward::{dispatch, flatten, notify, Call, Forwarder};
use crate::coord::slot::{name_slot, shard_of};
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::persist::DurabilityFactory;
use crate::protocol::{JoinResponse, PoolName, PoolStatus};
use crate::session::UserRouter;

#[derive(Clone)]
pub struct PoolRouter {
    inner: Arc<PoolRouterInner>,
}

struct PoolRouterInner {
    pools: DashMap<PoolName, Addr<PoolCoordinator>>,
    configured: HashMap<String, PoolRules>,
    allow_dynamic: bool,
    max_pools: usize,
    arbiters: Vec<ArbiterHandle>,
    pairs: ShardRouter,
    users: UserRouter,
    rescan_ms: u64,
    /// Makes a pool's Redis connection on the pool's own thread (none in memory mode).
    durability: DurabilityFactory,
    cluster: Option<Forwarder>,
}

impl PoolRouter {
    /// Pools as `config` describes them; coordinators start on `arbiters` when first used.
    pub fn new(
        config: &crate::config::Config,
        arbiters: Vec<ArbiterHandle>,
        pairs: ShardRouter,
        users: UserRouter,
        durability: DurabilityFactory,
        cluster: Option<Forwarder>,
    ) -> Self {
        PoolRouter {
            inner: Arc::new(PoolRouterInner {
                pools: DashMap::new(),
                configured: config.pools.clone(),
                allow_dynamic: config.allow_dynamic_pools,
                max_pools: config.limits.max_pools,
                arbiters,
                pairs,
                users,
                rescan_ms: config.timeouts.pool_rescan_ms,
                durability,
                cluster,
            }),
        }
    }

    /// The coordinator of `pool`, started on first use.
    pub fn get(&self, pool: &PoolName) -> Result<Addr<PoolCoordinator>, ApiError> {
        if let Some(addr) = self.inner.pools.get(pool) {
            return Ok(addr.clone());
        }
        let rules = match self.inner.configured.get(pool.as_str()) {
            Some(rules) => rules.clone(),
            None if self.inner.allow_dynamic || pool.as_str() == "default" => PoolRules::default(),
            None => return Err(ApiError::NotFound(format!("no pool named {pool}"))),
        };
        if self.inner.pools.len() >= self.inner.max_pools {
            return Err(ApiError::Conflict(format!("too many pools (limit {})", self.inner.max_pools)));
        }
        let entry = self.inner.pools.entry(pool.clone()).or_insert_with(|| {
            // Pools spread over the shard threads by name.
            let placement = shard_of(name_slot(pool.as_str()), self.inner.arbiters.len());
            let (name, pairs, users, rescan_ms) =
                (pool.clone(), self.inner.pairs.clone(), self.inner.users.clone(), self.inner.rescan_ms);
            let durability = self.inner.durability.clone();
            PoolCoordinator::start_in_arbiter(&self.inner.arbiters[placement], move |_| {
                PoolCoordinator::new(name, rules, pairs, users, rescan_ms, durability(crate::cluster::Role::Pools))
            })
        });
        Ok(entry.clone())
    }

    /// Every started pool.
    pub fn all(&self) -> Vec<Addr<PoolCoordinator>> {
        self.inner.pools.iter().map(|e| e.value().clone()).collect()
    }

    /// Stops and forgets the pools this node no longer owns (cluster mode; their lines are in
    /// Redis, and the new owner reloads them).
    pub fn retire_unowned(&self, owns: impl Fn(u16) -> bool) {
        self.inner.pools.retain(|name, addr| {
            let keep = owns(name_slot(name.as_str()));
            if !keep {
                addr.do_send(super::pool::Retire);
            }
            keep
        });
    }

    /// Puts a user in line at the pool's owner.
    pub fn enqueue(&self, msg: Enqueue) -> LocalBoxFuture<'static, Result<JoinResponse, ApiError>> {
        let slot = name_slot(msg.ticket.pool.as_str());
        let addr = self.get(&msg.ticket.pool);
        let local = |m| async move { flatten(addr?.send(m).await) };
        dispatch(self.inner.cluster.as_ref(), slot, msg, local, Call::Enqueue)
    }

    /// Takes a user out of `pool`'s line at its owner.
    pub fn dequeue(&self, pool: &PoolName, msg: Dequeue) -> LocalBoxFuture<'static, Result<DequeueOutcome, ApiError>> {
        let addr = self.get(pool);
        let local = |m| async move { flatten(addr?.send(m).await) };
        let pool = pool.clone();
        dispatch(self.inner.cluster.as_ref(), name_slot(pool.as_str()), msg, local, move |msg| Call::Dequeue {
            pool,
            msg,
        })
    }

    /// Tells `pool`'s owner that a user's room closed.
    pub fn forget(&self, pool: &PoolName, msg: Forget) {
        let local = |m| {
            if let Ok(addr) = self.get(pool) {
                addr.do_send(m);
            }
        };
        let name = pool.clone();
        notify(self.inner.cluster.as_ref(), name_slot(pool.as_str()), msg, local, move |msg| Call::Forget {
            pool: name,
            msg,
        });
    }

    /// The waiting count and estimate of `pool`, from its owner.
    pub fn status(&self, pool: &PoolName) -> LocalBoxFuture<'static, Result<PoolStatus, ApiError>> {
        let addr = self.get(pool);
        let local = |_| async move { Ok(addr?.send(GetStatus).await?) };
        let name = pool.clone();
        dispatch(self.inner.cluster.as_ref(), name_slot(pool.as_str()), (), local, move |_| Call::PoolStatus {
            pool: name,
        })
    }
}
