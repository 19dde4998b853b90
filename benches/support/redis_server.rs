//! A private `redis-server` for the baseline: its own free port and directory, no persistence
//! (the classic design is measured at its fastest), killed on drop. Panics with an install hint
//! when the binary is missing: the baseline is never skipped silently.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port for redis-server")
}

impl RedisServer {
    /// Starts `MATCHD_REDIS_SERVER_BIN` (default `redis-server`) and waits until it answers PING.
    pub fn start() -> RedisServer {
        let bin = std::env::var("MATCHD_REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let port = free_port();
        let dir = tempfile::tempdir().expect("cannot create a temporary directory for redis-server");
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the classic baseline needs redis-server and could not start `{bin}` ({e}). Install it \
                     (`apt-get install redis-server`) or set MATCHD_REDIS_SERVER_BIN"
                )
            });
        let server = RedisServer { port, child, _dir: dir };
        for _ in 0..200 {
            if server.ping() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not answer PING within 5 s");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
