//! A real `redis-server` for tests: its own free port and directory (AOF on, fsync always), killed
//! on drop. Panics with an install hint when the binary is missing: Redis tests never skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary to run: `MATCHD_REDIS_SERVER_BIN`, else `redis-server` on the PATH.
fn binary() -> String {
    std::env::var("MATCHD_REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a durable (AOF, `appendfsync always`) server and waits until it answers.
    pub fn start() -> RedisServer {
        let mut server = RedisServer { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}). Install it (`apt-get install redis-server`) or set \
                     MATCHD_REDIS_SERVER_BIN; ./scripts/test.sh installs it"
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// Runs one command with `redis-cli` and returns its raw output, trimmed ("" for nil).
    pub fn cli(&self, args: &[&str]) -> String {
        let cli = binary().replace("redis-server", "redis-cli");
        let out = Command::new(&cli).args(["-p", &self.port.to_string(), "--raw"]).args(args).output();
        let out = out.unwrap_or_else(|e| panic!("cannot run {cli}: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// True when the server answers PING.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills the server abruptly (its AOF keeps every write it acknowledged).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
