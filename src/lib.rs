//! matchd: a real-time matching server.
//!
//! # Layout
//! - [`config`]: flags, environment and config file, validated before anything binds.
//! - [`protocol`]: wire types of the public contract (no I/O).
//! - [`coord`]: pair slots and the `PairShard` actors that decide swipes, matches and unmatches.
//! - [`queue`]: spin pools (`PoolCoordinator`), pairing rules, rooms, skip and presence.
//! - [`session`]: per-user event logs and fan-out (`UserShard`), resume, the user's match index.
//! - [`transport`]: WebSocket and SSE session actors (framing, heartbeats, outboxes).
//! - [`cluster`]: several active nodes on one Redis: membership, slot owners, forwarding.
//! - [`persist`]: Redis persistence (group commit, fenced batches, the ownership lease, records,
//!   keys); absent = in memory.
//! - [`http`]: the route table, extractors and handlers.
//! - [`node`]: the handles every part needs and the actions shared by HTTP and WebSocket.
//! - [`audit`]: `matchd audit` and the background sweep: the stored state checked against the
//!   invariants (a pure function over a snapshot), and repairs carried out by the owners.
//! - [`sim`]: the deterministic simulator (the real cores, a simulated store, network and faults).
//! - [`webhook`]: signed, retried webhooks to the app's backend.
//! - [`load`]: the `matchd-load` tool's scenarios and invariant checker (a client, not the server).
//! - [`auth`], [`limiter`], [`error`], [`metrics`], [`telemetry`], [`shutdown`].
//!
//! [`start`] runs a server inside the current actix system; the binary, the tests and the benches
//! all start it the same way.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod audit;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod coord;
pub mod error;
pub mod http;
pub mod limiter;
pub mod load;
pub mod metrics;
#[cfg(feature = "mutants")]
pub mod mutants;
pub mod node;
pub mod persist;
pub mod protocol;
pub mod queue;
pub mod session;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
pub mod transport;
pub mod webhook;

use std::net::SocketAddr;
use std::time::Duration;

pub use config::Config;
pub use node::Node;

use crate::session::messages::CloseAll;
use crate::session::CloseReason;

/// A started server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    pub node: Node,
    handle: actix_server::ServerHandle,
    /// Resolves when the HTTP server has stopped.
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Graceful stop: stop accepting; in a cluster, hand the slots over (leave, then wait until
    /// their new owners claimed them, within half the grace period) so reconnects find ready
    /// owners; tell every connection to reconnect elsewhere (close code 1012); let in-flight
    /// requests finish within the grace period; then stop the shards.
    pub async fn shutdown(self) {
        let grace = Duration::from_millis(self.node.config.timeouts.shutdown_grace_ms);
        let drain = async {
            let stop = self.handle.stop(true);
            self.node.hand_over(grace / 2).await;
            for shard in self.node.users.all() {
                let _ = shard.send(CloseAll { reason: CloseReason::ShuttingDown }).await;
            }
            // Streams relayed from other owners are not in this node's user shards.
            if let Some(f) = &self.node.forwarder {
                f.close_relays(CloseReason::ShuttingDown);
            }
            stop.await;
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace period ran out; stopping anyway");
            self.handle.stop(false).await;
        }
        let _ = self.server.await;
        // In-flight actions have their answers, so their batches are stored; let a standby in.
        // (Events still owed to user logs are in the pairs' outboxes, which the next owner sweeps.)
        self.node.release_lease().await;
    }

    /// Immediate stop, for tests that simulate a crash of the HTTP layer.
    pub async fn abort(self) {
        self.handle.stop(false).await;
        let _ = self.server.await;
    }
}

/// Binds `config.listen` and starts serving. Must be called inside an actix system (the binary's
/// `#[actix_web::main]`, or `#[actix_rt::test]`).
pub async fn start(mut config: Config) -> std::io::Result<Running> {
    let listener = std::net::TcpListener::bind(config.listen)?;
    let addr = listener.local_addr()?;
    // The bound port (port 0 picks one), so the node names where it really listens.
    config.listen = addr;
    if config.dev_mode() {
        tracing::warn!(
            secret = config::DEV_SECRET,
            api_key = config.api_key.as_deref().map_or(config::DEV_API_KEY, |_| "<set>"),
            "dev mode: no --jwt-secret, tokens are signed with the dev secret and POST /v1/dev/token is open"
        );
    }
    if config.redis.is_none() {
        tracing::warn!("no --redis: state lives in memory on this single node and is lost when it stops");
    }
    let node = Node::start(config).map_err(|e| std::io::Error::other(e.to_string()))?;
    node.keep_lease().await;
    http::dashboard::spawn_sampler(&node);
    let server = http::server::serve(listener, &node)?;
    let handle = server.handle();
    let server = tokio::spawn(server);
    tracing::info!(%addr, node = %node.node_id, "matchd listening");
    Ok(Running { addr, node, handle, server })
}
