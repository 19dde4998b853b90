//! The real `matchd` binary as a child process, for tests that must kill it (SIGKILL) or signal
//! it (SIGTERM, SIGSTOP) and start it again on the same port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis::free_port;

pub struct MatchdProcess {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// Holds the config file of `with_redis` alive.
    _dir: Option<tempfile::TempDir>,
}

/// Lease TTL for test nodes: a killed node's successor takes over after about this long.
pub const TEST_LEASE_MS: u64 = 1_000;

impl MatchdProcess {
    /// A node on `redis` (one worker, two shards, a short lease), started and ready (active).
    pub fn with_redis(redis: &super::redis::RedisServer) -> MatchdProcess {
        let p = Self::standby_with_redis(redis);
        p.wait_ready(Duration::from_secs(10));
        p
    }

    /// Like `with_redis`, but only waits for it to be up (it may be a standby).
    pub fn standby_with_redis(redis: &super::redis::RedisServer) -> MatchdProcess {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("matchd.toml");
        std::fs::write(&config, format!("[timeouts]\nlease_ms = {TEST_LEASE_MS}\n")).unwrap();
        let url = redis.url();
        let args = ["--redis", &url, "--workers", "1", "--shards", "2", "--config", config.to_str().unwrap()];
        // Starts `matchd --listen 127.0.0.1:<free port> <args>` and waits for `/healthz`.
        let mut p = MatchdProcess {
            port: free_port(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            _dir: Some(dir),
        };
        p.spawn();
        p
    }

    /// Waits until `/readyz` answers 200 (Redis reachable and this node active).
    pub fn wait_ready(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.status("/readyz") != Some(200) {
            assert!(std::time::Instant::now() < deadline, "matchd on port {} did not become ready", self.port);
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_matchd"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..400 {
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("matchd on port {} did not become healthy", self.port);
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// `GET /healthz` answers 200.
    pub fn healthy(&self) -> bool {
        self.status("/healthz") == Some(200)
    }

    /// The status code of a plain GET, if the server answers.
    pub fn status(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again (same port) and waits until it is ready: with Redis, a
    /// node killed without releasing its lease is replaced once that lease has run out.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready(Duration::from_secs(10));
    }

    /// Sends `signal` (e.g. "TERM", "STOP", "CONT") with kill(1).
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(c.id().to_string()).status();
        }
    }

    /// Waits for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for MatchdProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
