//! `matchd-load`: a load generator and invariant checker for any matchd server, speaking only the
//! public contract (docs/PROTOCOL.md) to loopback addresses. The binary `src/bin/matchd-load.rs`
//! parses flags and calls [`run`]; integration tests call [`run`] against a server they started
//! with `matchd::start`.
//!
//! A run splits its users over client threads (each with its own actix system), records everything
//! it sends and receives into a [`history::History`], measures latencies with hdrhistogram, and
//! checks the invariants (I1-I6 as far as a client can see them) over the whole history.
//!
//! # Layout
//! - [`cli`]: flags and subcommands; [`error`]: why a run could not be carried out.
//! - [`target`]: the servers' base URLs, refused unless they are loopback addresses.
//! - [`token`]: dev tokens or locally minted HS256 tokens.
//! - [`http`]: one thread's HTTP pool and calls; [`wire`]: the contract as a client reads it.
//! - [`stream`], [`sse`]: WebSocket and SSE connections that record what they receive; [`raw_ws`]:
//!   a bare WebSocket client for the connection's own life (handshakes, TCP close, stalls).
//! - [`history`]: what a run saw; [`check`]: the invariants over it.
//! - [`stats`]: latency histograms; [`report`]: human and JSON output; [`procfs`]: server memory and CPU.
//! - [`workers`]: client threads and phase barriers.
//! - [`scenario`]: `swipes`, `delivery`, `idle`, `spin`, `healthz`, `churn`, `publish` (the server API).

pub mod check;
pub mod cli;
pub mod error;
pub mod history;
pub mod http;
pub mod procfs;
pub mod raw_ws;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod stream;
pub mod target;
pub mod token;
pub mod wire;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use check::Violation;
pub use cli::{LoadCli, Scenario};
pub use error::LoadError;
pub use report::Report;

use scenario::Env;
use target::Target;
use token::TokenSource;

/// Longest run id (user ids are `<run>-<kind><n>[ab]`, at most 64 characters).
const MAX_RUN_ID: usize = 24;

/// Runs one scenario and returns its report (violations included). Must be awaited inside an
/// actix system; it does not block that system's thread, so a server started there keeps serving.
pub async fn run(cli: LoadCli) -> Result<Report, LoadError> {
    let common = cli.common;
    if common.threads == 0 || common.threads > 64 {
        return Err(LoadError::Usage("--threads must be between 1 and 64".into()));
    }
    if common.concurrency == 0 || common.concurrency > 10_000 {
        return Err(LoadError::Usage("--concurrency must be between 1 and 10000".into()));
    }
    if common.timeout_secs == 0 || common.request_timeout_ms == 0 {
        return Err(LoadError::Usage("--timeout-secs and --request-timeout-ms must be positive".into()));
    }
    if common.url.is_empty() || common.url.len() > 64 {
        return Err(LoadError::Usage("--url must be given 1 to 64 times".into()));
    }
    let targets = common.url.iter().map(|u| Target::parse(u)).collect::<Result<Vec<_>, _>>()?;
    let run_id = match &common.run_id {
        Some(id) => {
            let ok =
                !id.is_empty() && id.len() <= MAX_RUN_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(LoadError::Usage(format!("--run-id must be 1..{MAX_RUN_ID} characters of [A-Za-z0-9_]")));
            }
            id.clone()
        }
        None => format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    };
    // A soak runs for as long as it is told: its hard limit is at least that, plus time to finish.
    let timeout_secs = match &cli.scenario {
        Scenario::Soak(a) => common.timeout_secs.max(a.duration_secs.saturating_add(scenario::soak::FINISH_SECS)),
        _ => common.timeout_secs,
    };
    let env = Arc::new(Env {
        targets,
        tokens: TokenSource::new(common.jwt_secret.as_deref()),
        deadline: Instant::now() + Duration::from_secs(timeout_secs),
        common,
        run_id,
    });
    match cli.scenario {
        Scenario::Swipes(a) => scenario::swipes::run(env, a).await,
        Scenario::Delivery(a) => scenario::delivery::run(env, a).await,
        Scenario::Idle(a) => scenario::idle::run(env, a).await,
        Scenario::Spin(a) => scenario::spin::run(env, a).await,
        Scenario::Healthz(a) => scenario::healthz::run(env, a).await,
        Scenario::Churn(a) => scenario::churn::run(env, a).await,
        Scenario::Publish(a) => scenario::publish::run(env, a).await,
        Scenario::Soak(a) => scenario::soak::run(env, a).await,
    }
}
