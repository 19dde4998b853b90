//! A real nginx in front of several `matchd` nodes, as a load balancer would be deployed: round robin,
//! a dead node is skipped (connect errors fail over to the next one), WebSocket upgrades pass through
//! and streams (WebSocket and SSE) are neither buffered nor timed out. Everything nginx writes (pid,
//! logs, temp files) lives in its own directory, so it runs as any user; killed on drop. Panics with
//! nginx's own output when it cannot start: cluster tests never skip.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::redis::free_port;

/// The binary to run: `MATCHD_NGINX_BIN`, else `nginx` on the PATH, else `/usr/sbin/nginx` (not on
/// every user's PATH).
fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("MATCHD_NGINX_BIN") {
        return bin.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("nginx")).find(|p| p.is_file()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| "/usr/sbin/nginx".into())
}

pub struct NginxServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NginxServer {
    /// Starts nginx on a free loopback port, balancing over `upstream_ports` (127.0.0.1), and waits
    /// until it accepts connections.
    pub fn start(upstream_ports: &[u16]) -> NginxServer {
        assert!(!upstream_ports.is_empty(), "nginx needs at least one upstream");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstream_ports)).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let bin = binary();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nginx ({}: {e}). Install it (`apt-get install nginx`) or set MATCHD_NGINX_BIN; \
                     ./scripts/test.sh installs it",
                    bin.display()
                )
            });
        let mut server = NginxServer { port, dir, child: Some(child) };
        server.wait_listening(Duration::from_secs(10));
        server
    }

    fn wait_listening(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!("nginx exited ({status}) before listening on port {}:\n{}", self.port, self.output());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!("nginx did not listen on port {} within {within:?}:\n{}", self.port, self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What nginx said on stderr and in its error log.
    pub fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("--- stderr ---\n{}--- error.log ---\n{}", read("stderr.log"), read("error.log"))
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Drop for NginxServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One process (no master, no daemon) so that killing the child stops all of nginx.
fn config(dir: &Path, port: u16, upstream_ports: &[u16]) -> String {
    let d = dir.display();
    let servers: String =
        upstream_ports.iter().map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=1s;\n")).collect();
    format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 16384;
}}

http {{
    access_log {d}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000;

    # An upgrade request keeps its Connection: upgrade; anything else gets none, so that the
    # connection to the node can be kept alive.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}

    upstream matchd {{
{servers}        keepalive 64;
        keepalive_requests 100000;
    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            proxy_pass http://matchd;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout;
            # Streams: every event goes out as it comes, and a quiet stream is not cut.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"#
    )
}
