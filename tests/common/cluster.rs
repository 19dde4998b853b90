//! A multi-active cluster for tests: one real redis-server, `n` `matchd --cluster` processes on
//! loopback ports and nginx in front of them. Nodes can be killed (SIGKILL), paused (SIGSTOP) and
//! woken; `wait_converged` waits until every running node has joined and sees the same members.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::clients::Api;
use super::nginx::NginxServer;
use super::process::MatchdProcess;
use super::redis::RedisServer;
use super::redis_cluster::RedisCluster;

/// What the nodes store into.
#[derive(Debug, Clone, Copy)]
pub enum Backing {
    /// One redis-server.
    Redis,
    /// A three-master Redis Cluster.
    RedisCluster,
}

/// Kept alive for the cluster's lifetime.
enum Store {
    Redis(#[allow(dead_code)] RedisServer),
    Cluster(RedisCluster),
}

/// Fields drop in order: nginx, then the nodes, then Redis.
pub struct Cluster {
    nginx: NginxServer,
    nodes: Vec<MatchdProcess>,
    /// Stopped with SIGSTOP and not woken yet.
    paused: Vec<bool>,
    apis: Vec<Api>,
    lb: Api,
    /// The store's URL (seed list for a Redis Cluster), for nodes added later.
    url: String,
    _redis: Store,
}

impl Cluster {
    /// Starts the store, `n` nodes and nginx, and waits until every node is ready and sees `n`
    /// members.
    pub async fn start_on(n: usize, backing: Backing) -> Cluster {
        let (redis, url) = match backing {
            Backing::Redis => {
                let r = RedisServer::start();
                let url = r.url();
                (Store::Redis(r), url)
            }
            Backing::RedisCluster => {
                let r = RedisCluster::start(3);
                let url = r.url();
                (Store::Cluster(r), url)
            }
        };
        let nodes: Vec<MatchdProcess> = (0..n).map(|_| MatchdProcess::cluster_node_on(&url)).collect();
        let ports: Vec<u16> = nodes.iter().map(|p| p.port).collect();
        let nginx = NginxServer::start(&ports);
        let apis = nodes.iter().map(|p| Api::new(&p.base_url(), &p.ws_url())).collect();
        let lb = Api::new(&nginx.base_url(), &nginx.ws_url());
        let cluster = Cluster { nginx, paused: vec![false; n], nodes, apis, lb, url, _redis: redis };
        cluster.wait_converged(n, Duration::from_secs(20)).await;
        cluster
    }

    /// Keys per Redis Cluster master (`None` on a single Redis).
    pub fn redis_cluster_key_counts(&self) -> Option<Vec<u64>> {
        match &self._redis {
            Store::Cluster(c) => Some(c.key_counts()),
            Store::Redis(_) => None,
        }
    }

    /// A client that goes through nginx (any node).
    pub fn lb(&self) -> Api {
        self.lb.clone()
    }

    /// A client of node `i` only.
    pub fn api(&self, i: usize) -> Api {
        self.apis[i].clone()
    }

    pub fn node(&self, i: usize) -> &MatchdProcess {
        &self.nodes[i]
    }

    /// What nginx logged (for failure messages).
    pub fn nginx_output(&self) -> String {
        self.nginx.output()
    }

    /// Starts one more node on the same store (not behind nginx); returns its index.
    pub fn add_node(&mut self) -> usize {
        let node = MatchdProcess::cluster_node_on(&self.url);
        self.apis.push(Api::new(&node.base_url(), &node.ws_url()));
        self.nodes.push(node);
        self.paused.push(false);
        self.nodes.len() - 1
    }

    /// SIGTERM node `i` and wait until it has exited (a graceful stop leaves the cluster).
    pub async fn stop(&mut self, i: usize, within: Duration) {
        self.nodes[i].signal("TERM");
        self.wait_exit(i, within).await;
    }

    /// SIGTERM node `i`, wait until it has exited, start it again on the same port (nginx keeps
    /// its upstream) and wait until it answers `/readyz` 200, without blocking the test's tasks.
    pub async fn restart_gracefully(&mut self, i: usize, within: Duration) {
        self.stop(i, within).await;
        self.nodes[i].respawn();
        let deadline = Instant::now() + within;
        while !matches!(self.readyz(i), Some((200, _))) {
            assert!(Instant::now() < deadline, "node {i} was not ready within {within:?} of its restart");
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM node `i` without waiting.
    pub fn terminate(&self, i: usize) {
        self.nodes[i].signal("TERM");
    }

    /// Waits until node `i` has exited.
    pub async fn wait_exit(&mut self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.nodes[i].reap() {
            assert!(Instant::now() < deadline, "node {i} did not stop within {within:?} of SIGTERM");
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The slots node `i` says it owns (`/readyz`), if it is ready.
    pub fn owned_slots(&self, i: usize) -> Option<u64> {
        match self.readyz(i) {
            Some((200, body)) => body["owned_slots"].as_u64(),
            _ => None,
        }
    }

    /// SIGKILL node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
        self.paused[i] = false;
    }

    /// SIGSTOP node `i`: it keeps its sockets but does nothing (no lease renewal either).
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].signal("STOP");
        self.paused[i] = true;
    }

    /// SIGCONT node `i`.
    pub fn wake(&mut self, i: usize) {
        self.nodes[i].signal("CONT");
        self.paused[i] = false;
    }

    /// Node `i`'s `GET /readyz`: status and JSON body (`Null` when the body is not JSON).
    pub fn readyz(&self, i: usize) -> Option<(u16, Value)> {
        let (status, body) = self.nodes[i].get("/readyz")?;
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// The nodes that are running and not paused.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].running() && !self.paused[i]).collect()
    }

    /// Waits until every live node answers `/readyz` 200 with `"members": members`.
    pub async fn wait_converged(&self, members: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<(usize, Option<(u16, Value)>)> =
                self.live().into_iter().map(|i| (i, self.readyz(i))).collect();
            let converged = seen
                .iter()
                .all(|(_, r)| matches!(r, Some((200, body)) if body["members"].as_u64() == Some(members as u64)));
            if converged {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not converge to {members} members within {within:?}; /readyz of the live nodes \
                 (index, answer): {seen:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
