//! A real three-master Redis Cluster on loopback ports, for running the cluster tests against a
//! sharded store: three `redis-server --cluster-enabled yes` processes joined with
//! `redis-cli --cluster create`. Fails loudly if it cannot start.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis::free_port;

fn server_binary() -> String {
    std::env::var("MATCHD_REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` servers (no replicas), creates the cluster and waits until every node says
    /// `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..masters).map(|_| free_port()).collect();
        let children = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                Command::new(server_binary())
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                    .args(["--cluster-node-timeout", "2000"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start redis-server for a Redis Cluster ({e})"))
            })
            .collect();
        let cluster = RedisCluster { ports, children, _dir: dir };
        for port in &cluster.ports {
            cluster.wait_for(*port, "PING", "PONG");
        }
        let addrs: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(cli_binary())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create ({e})"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for port in &cluster.ports {
            cluster.wait_for(*port, "CLUSTER INFO", "cluster_state:ok");
        }
        cluster
    }

    /// The seed list matchd takes for a Redis Cluster: every master, comma-separated.
    pub fn url(&self) -> String {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Runs one command with `redis-cli -c` (following redirects to the key's master) and returns
    /// its raw output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out =
            Command::new(cli_binary()).args(["-c", "-p", &self.ports[0].to_string(), "--raw"]).args(args).output();
        let out = out.unwrap_or_else(|e| panic!("cannot run redis-cli ({e})"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Keys held by each master (DBSIZE), to show the data really is sharded.
    pub fn key_counts(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|p| {
                let out = Command::new(cli_binary()).args(["-p", &p.to_string(), "DBSIZE"]).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
            })
            .collect()
    }

    fn wait_for(&self, port: u16, command: &str, expect: &str) {
        for _ in 0..400 {
            let out = Command::new(cli_binary()).args(["-p", &port.to_string()]).args(command.split(' ')).output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(expect)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis cluster node {port} never answered {command} with {expect}");
    }
}

fn cli_binary() -> String {
    server_binary().replace("redis-server", "redis-cli")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
