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

    /// Like `with_redis`, with more config: `extra` continues the file's `[timeouts]` table (and may
    /// open further tables).
    pub fn with_redis_and(redis: &super::redis::RedisServer, extra: &str) -> MatchdProcess {
        let p = Self::on_redis(redis, extra);
        p.wait_ready(Duration::from_secs(10));
        p
    }

    /// Like `with_redis`, but only waits for it to be up (it may be a standby).
    pub fn standby_with_redis(redis: &super::redis::RedisServer) -> MatchdProcess {
        Self::on_redis(redis, "")
    }

    fn on_redis(redis: &super::redis::RedisServer, extra: &str) -> MatchdProcess {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("matchd.toml");
        std::fs::write(&config, format!("[timeouts]\nlease_ms = {TEST_LEASE_MS}\n{extra}")).unwrap();
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

    /// `matchd --listen 127.0.0.1:<free port> <args>`, waited for until healthy (`/healthz`).
    pub fn start(args: &[&str]) -> MatchdProcess {
        let mut p = MatchdProcess {
            port: free_port(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            _dir: None,
        };
        p.spawn();
        p
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A cluster node on the Redis (or Redis Cluster seed list) at `url`.
    pub fn cluster_node_on(url: &str) -> MatchdProcess {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("matchd.toml");
        // Join and skip budgets that a churning test client does not exhaust.
        let limits = "[limits]\njoins_per_minute = 600\nskips_per_minute = 600\n";
        std::fs::write(&config, format!("[timeouts]\nlease_ms = {TEST_LEASE_MS}\n{limits}")).unwrap();
        let port = free_port();
        let advertise = format!("http://127.0.0.1:{port}");
        let args = ["--cluster", "--advertise", &advertise, "--redis", url, "--workers", "1", "--shards", "2"];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--config".to_string(), config.to_str().unwrap().to_string()]);
        let mut p = MatchdProcess { port, args, child: None, _dir: Some(dir) };
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
            .env("RUST_LOG", std::env::var("MATCHD_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(if std::env::var("MATCHD_TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..400 {
            if self.healthy() {
                return;
            }
            // A process that exits (bad flags, bad config) says why on stderr; do not wait for it.
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!("matchd on port {} exited ({status}) before it was healthy: {:?}", self.port, self.args);
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
        self.get(path).map(|(status, _)| status)
    }

    /// The status and body of a plain GET, if the server answers within 2 s.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        self.send_raw("GET", path, None, None)?.read(Duration::from_secs(2))
    }

    /// Writes one request (`Connection: close`) and leaves its answer unread. The kernel accepts the
    /// connection and keeps the bytes even while the process is stopped (SIGSTOP), so the request is
    /// the first thing the process finds when it runs again. `None` if nothing listens.
    pub fn send_raw(&self, method: &str, path: &str, token: Option<&str>, json: Option<&str>) -> Option<RawRequest> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n", self.port);
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = json.unwrap_or("");
        if json.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(head.as_bytes()).ok()?;
        Some(RawRequest(s))
    }

    /// The process is running (not killed, not exited by itself).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process has exited by itself (e.g. after SIGTERM); then it no longer counts as
    /// running.
    pub fn reap(&mut self) -> bool {
        let exited = match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        };
        if exited {
            self.child = None;
        }
        exited
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
        self.respawn();
        self.wait_ready(Duration::from_secs(10));
    }

    /// Starts the same command again (same port) without waiting for it.
    pub fn respawn(&mut self) {
        self.kill9();
        self.spawn();
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

/// A request written by [`MatchdProcess::send_raw`] whose answer is still to be read.
pub struct RawRequest(TcpStream);

impl RawRequest {
    /// The answer's status and body (chunked bodies decoded), if it comes within `within`.
    pub fn read(mut self, within: Duration) -> Option<(u16, String)> {
        self.0.set_read_timeout(Some(within)).ok()?;
        let mut raw = Vec::new();
        self.0.read_to_end(&mut raw).ok()?;
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut body = raw[end + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        Some((status, String::from_utf8_lossy(&body).to_string()))
    }
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
