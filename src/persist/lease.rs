//! The ownership lease: with Redis, exactly one matchd node may write at a time. The node that
//! holds `matchd:lease` (a key with a TTL, renewed every third of it) is active; any other node on
//! the same Redis is a standby: healthy, not ready, answering actions 503 until the lease is free,
//! then taking over (a hot standby behind a load balancer).
//!
//! Safety does not rest on timing alone: every batch is a script that first checks the lease
//! (`store::run_fenced`), so a node paused past its lease (GC, SIGSTOP, a VM freeze) cannot commit
//! when it wakes up. It also stops by itself: it treats the lease as lost two thirds of the way
//! through the TTL unless a renewal succeeded, before Redis can hand it to someone else.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::store::{LeaseToken, RedisStore};
use crate::metrics::METRICS;

/// The lease key.
pub const LEASE_KEY: &str = "matchd:lease";

/// Deletes `KEYS[1]` only if it still holds our token.
pub(crate) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Renews `KEYS[1]` only if it still holds our token.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

#[derive(Clone)]
pub struct Lease {
    inner: Arc<LeaseInner>,
}

struct LeaseInner {
    token: LeaseToken,
    ttl: Duration,
    /// Until when this node may act as owner (set on each successful acquire or renew).
    valid_until: Mutex<Option<Instant>>,
    /// Bumped on each acquisition, so shards can tell their caches are from an older tenure.
    generation: AtomicU64,
    /// Whether the last answer from Redis said we hold it.
    holding: AtomicBool,
    /// Set at shutdown: stop renewing, never acquire again.
    released: AtomicBool,
    /// While another node holds the lease: that node's id, as its token in Redis says.
    holder: Mutex<Option<String>>,
}

impl Lease {
    /// `url` is where this node takes internal calls (`matchd audit --repair` reads it from the
    /// token, after the `|`, to send its repairs to the active node).
    pub fn new(node_id: &str, url: &str, ttl: Duration) -> Lease {
        let token = format!("{node_id}:{}|{url}", &crate::protocol::ids::random_suffix()[..12]);
        Lease {
            inner: Arc::new(LeaseInner {
                token: LeaseToken { key: LEASE_KEY.to_string(), token },
                ttl,
                valid_until: Mutex::new(None),
                generation: AtomicU64::new(0),
                holding: AtomicBool::new(false),
                released: AtomicBool::new(false),
                holder: Mutex::new(None),
            }),
        }
    }

    /// The token to write with, while the lease is (locally) valid.
    pub fn current(&self) -> Option<LeaseToken> {
        let valid = self.inner.valid_until.lock().map(|v| v.is_some_and(|t| Instant::now() < t)).unwrap_or(false);
        valid.then(|| self.inner.token.clone())
    }

    pub fn held(&self) -> bool {
        self.current().is_some()
    }

    /// This node's id (the first part of its token).
    pub fn node_id(&self) -> &str {
        node_of_token(&self.inner.token.token)
    }

    /// The id of the node that holds the lease, when it is another node (this one is a
    /// standby); seen on this node's last attempt to acquire it.
    pub fn active_node(&self) -> Option<String> {
        if self.held() {
            return None;
        }
        self.inner.holder.lock().ok().and_then(|h| h.clone())
    }

    /// Acquires and renews the lease forever. `on_acquire` runs (and is awaited) on each new
    /// tenure, before the lease is usable: shards drop whatever they cached under an older one.
    /// `first` is told when the first attempt has been answered (so a starting node can wait for it).
    pub async fn keep<F, Fut>(
        self,
        store: RedisStore,
        on_acquire: F,
        mut first: Option<tokio::sync::oneshot::Sender<()>>,
    ) where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let inner = &self.inner;
        let ttl_ms = inner.ttl.as_millis() as u64;
        while !inner.released.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let held = inner.holding.load(Ordering::Relaxed);
            let mut pipe = redis::pipe();
            if held {
                pipe.cmd("EVAL").arg(RENEW).arg(1).arg(&inner.token.key).arg(&inner.token.token).arg(ttl_ms);
            } else {
                pipe.cmd("SET").arg(&inner.token.key).arg(&inner.token.token).arg("NX").arg("PX").arg(ttl_ms);
                // Who holds it, if not us: a standby names the active node.
                pipe.cmd("GET").arg(&inner.token.key);
            }
            match store.run(pipe, if held { 1 } else { 2 }).await {
                Ok(values) => {
                    let ok = match values.first() {
                        Some(redis::Value::Int(n)) => *n == 1,
                        Some(redis::Value::Okay) => true,
                        Some(redis::Value::SimpleString(s)) => s == "OK",
                        _ => false,
                    };
                    if ok && !held {
                        let generation = inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
                        on_acquire().await;
                        tracing::info!(token = %inner.token.token, generation, "ownership lease acquired: this node is active");
                        inner.holding.store(true, Ordering::Relaxed);
                    } else if !ok && held {
                        tracing::error!("ownership lease lost to another node: this node is now a standby");
                        inner.holding.store(false, Ordering::Relaxed);
                    }
                    if let Ok(mut v) = inner.valid_until.lock() {
                        // Counted from before the request: conservative whatever the round trip took.
                        *v = ok.then(|| sent + inner.ttl * 2 / 3);
                    }
                    if let Ok(mut h) = inner.holder.lock() {
                        *h = match (ok, values.get(1)) {
                            (false, Some(v)) => super::store::text(v).map(|t| node_of_token(&t).to_string()),
                            (false, None) => h.take(),
                            (true, _) => None,
                        };
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "lease renewal failed; it lapses unless the next one succeeds");
                    if let Ok(mut h) = inner.holder.lock() {
                        *h = None;
                    }
                }
            }
            METRICS.lease_held.set(i64::from(self.held()));
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            tokio::time::sleep(inner.ttl / 3).await;
        }
    }

    /// Gives the lease up (graceful shutdown), so a standby takes over at once instead of after
    /// the TTL. Call only once nothing more will be written.
    pub async fn release(&self, store: &RedisStore) {
        let inner = &self.inner;
        inner.released.store(true, Ordering::Relaxed);
        if let Ok(mut v) = inner.valid_until.lock() {
            *v = None;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL").arg(RELEASE).arg(1).arg(&inner.token.key).arg(&inner.token.token);
        match store.run(pipe, 1).await {
            Ok(_) => tracing::info!("ownership lease released"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease; it expires by itself"),
        }
        METRICS.lease_held.set(0);
    }
}

/// The node id in a lease token (`<node id>:<random suffix>|<url>`, see `Lease::new`).
pub fn node_of_token(token: &str) -> &str {
    let token = token.split_once('|').map_or(token, |(t, _)| t);
    token.rsplit_once(':').map_or(token, |(node, _)| node)
}

/// Where the lease's holder takes internal calls, if its token says (`|<url>`, see `Lease::new`).
pub fn url_of_token(token: &str) -> Option<&str> {
    token.split_once('|').map(|(_, url)| url).filter(|u| !u.is_empty())
}

/// What a standby answers (readiness and every action): it is a standby, which node is active,
/// and how to run several active nodes instead.
pub fn standby_message(node: &str, active: Option<&str>) -> String {
    let active = match active {
        Some(a) => format!("node {a} holds the ownership lease and is the active node"),
        None => "another node holds the ownership lease".to_string(),
    };
    format!(
        "node {node} is a standby: {active} on this Redis; send requests to the active node (this one takes \
         over if it stops), or start every node with --cluster to run them all active"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_node() {
        let lease = Lease::new("node:a", "http://127.0.0.1:8080", Duration::from_secs(1));
        assert_eq!(node_of_token(&lease.inner.token.token), "node:a");
        assert_eq!(url_of_token(&lease.inner.token.token), Some("http://127.0.0.1:8080"));
        assert_eq!(node_of_token("plain"), "plain");
        assert_eq!(node_of_token("a:1234"), "a", "a token from before the url");
        assert_eq!(url_of_token("a:1234"), None);
        let msg = standby_message("b", Some("a"));
        assert!(msg.contains("standby") && msg.contains("node a") && msg.contains("--cluster"), "{msg}");
    }
}
