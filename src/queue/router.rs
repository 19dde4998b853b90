//! `PoolRouter`: pool name -> its coordinator. Pools named in the config exist from the start;
//! others are created on first use with default rules when `allow_dynamic_pools` is on. The map
//! only routes; each pool's state is owned by its actor.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Addr, ArbiterHandle};
use dashmap::DashMap;

use super::pool::PoolCoordinator;
use super::rules::PoolRules;
use crate::coord::slot::{name_slot, shard_of};
use crate::coord::ShardRouter;
use crate::error::ApiError;
use crate::protocol::PoolName;

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
    rescan_ms: u64,
}

impl PoolRouter {
    pub fn new(
        configured: HashMap<String, PoolRules>,
        allow_dynamic: bool,
        max_pools: usize,
        arbiters: Vec<ArbiterHandle>,
        pairs: ShardRouter,
        rescan_ms: u64,
    ) -> Self {
        PoolRouter {
            inner: Arc::new(PoolRouterInner {
                pools: DashMap::new(),
                configured,
                allow_dynamic,
                max_pools,
                arbiters,
                pairs,
                rescan_ms,
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
            let (name, pairs, rescan_ms) = (pool.clone(), self.inner.pairs.clone(), self.inner.rescan_ms);
            PoolCoordinator::start_in_arbiter(&self.inner.arbiters[placement], move |_| {
                PoolCoordinator::new(name, rules, pairs, rescan_ms)
            })
        });
        Ok(entry.clone())
    }

    /// Every started pool.
    pub fn all(&self) -> Vec<Addr<PoolCoordinator>> {
        self.inner.pools.iter().map(|e| e.value().clone()).collect()
    }
}
