//! Test support: a real `matchd` server on an ephemeral port (started through the same library
//! call as the binary), tracing for failing tests, real clients (`clients`), the history checker
//! (`history`), and real processes: `matchd` (`process`), redis-server (`redis`), nginx (`nginx`)
//! and a whole cluster of them (`cluster`).

pub mod clients;
pub mod cluster;
pub mod history;
pub mod nginx;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod stalled;

use std::future::Future;

use futures_util::StreamExt;

pub use clients::{Api, Conn, SseOptions, WsOptions, TIMEOUT};

/// Installs a tracing subscriber that writes into the test's captured output (shown when a test
/// fails). `RUST_LOG` selects what is logged (default `warn`). Keep the guard for the whole test.
pub fn trace_init() -> tracing::dispatcher::DefaultGuard {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    // The server's own threads (workers, shards) log through the global subscriber; the test's
    // thread through its own default, so its output lands in this test's capture.
    let _ = tracing_subscriber::fmt().with_env_filter(filter()).with_test_writer().try_init();
    tracing::subscriber::set_default(tracing_subscriber::fmt().with_env_filter(filter()).with_test_writer().finish())
}

/// A configuration for tests: port 0, one HTTP worker and two shards (the machines running the
/// suite are small), a short shutdown grace period. Tests change what they need on top.
pub fn config() -> matchd::Config {
    let mut config =
        matchd::Config { listen: "127.0.0.1:0".parse().unwrap(), workers: 1, shards: 2, ..matchd::Config::default() };
    config.timeouts.shutdown_grace_ms = 2_000;
    config
}

/// A running server and a client for it.
pub struct TestServer {
    running: matchd::Running,
    api: Api,
}

impl TestServer {
    /// Starts `config` (see [`config`]) inside the test's actix system.
    pub async fn start(config: matchd::Config) -> TestServer {
        config.validate().unwrap();
        let running = matchd::start(config).await.unwrap();
        let api = Api::new(&running.base_url(), &running.ws_url());
        TestServer { running, api }
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// The server's bound address (for raw-socket clients).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.addr
    }

    /// Graceful stop; the server must still be healthy when asked to stop.
    pub async fn shutdown(self) {
        self.api.assert_healthy().await;
        self.running.shutdown().await;
    }
}

/// Runs `futures` with at most `limit` in flight, collecting their outputs in input order.
pub async fn bounded_in_order<I, F, T>(limit: usize, futures: I) -> Vec<T>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = T>,
{
    futures_util::stream::iter(futures).buffered(limit).collect().await
}

/// Runs `futures` with at most `limit` in flight, collecting their outputs (in completion order).
pub async fn bounded<I, F, T>(limit: usize, futures: I) -> Vec<T>
where
    I: IntoIterator<Item = F>,
    F: Future<Output = T>,
{
    futures_util::stream::iter(futures).buffer_unordered(limit).collect().await
}
