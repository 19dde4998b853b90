//! `churn`: WebSocket connections opened and closed as fast as the server allows while mutual swipes
//! run. Each cycle connects, waits for `hello`, starts the closing handshake and, unless
//! `--no-wait-close`, waits for the server's close frame and then for the server to close the TCP
//! connection, as a careful client (and RFC 6455 7.1.1) does. With `--server-pid` it samples the
//! server's open file descriptors during the run and reports how soon after the last cycle they are
//! back to where they started.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::actions::{self, Swipe};
use super::{Env, Recorder};
use crate::load::cli::ChurnArgs;
use crate::load::error::LoadError;
use crate::load::procfs::{open_fds, vm_rss_kib};
use crate::load::raw_ws::RawWs;
use crate::load::report::Report;
use crate::load::workers::{self, WorkerCtx};

const CHURN: &str = "GET /v1/ws (churn cycle)";
/// How often the server's descriptors are counted during the run.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How long after the run the server gets to be back at its starting descriptor count.
const SETTLE: Duration = Duration::from_secs(5);
/// Pairs being swiped at a time per client thread, beside the churn.
const SWIPES_IN_FLIGHT: usize = 2;

pub async fn run(env: Arc<Env>, args: ChurnArgs) -> Result<Report, LoadError> {
    if args.connects == 0 || args.users == 0 || args.in_flight == 0 {
        return Err(LoadError::Usage("--connects, --users and --in-flight must be at least 1".into()));
    }
    let mut addrs = Vec::with_capacity(env.targets.len());
    for t in &env.targets {
        addrs.push(socket_addr(&t.http).await?);
    }
    let fds_before = fds(&env)?;
    let rss_before = rss(&env)?;
    let done = Cell::new(false);
    let peak = Cell::new(fds_before.unwrap_or(0));
    let shared = (env.clone(), Arc::new(args.clone()), Arc::new(addrs));
    let work = async {
        let parts = workers::run(env.common.threads, env.deadline, move |ctx| {
            let (env, args, addrs) = shared.clone();
            async move { worker(env, args, addrs, ctx).await }
        })
        .await;
        done.set(true);
        parts
    };
    let sample = async {
        while !done.get() {
            if let Ok(Some(n)) = fds(&env) {
                peak.set(peak.get().max(n));
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    };
    let (parts, ()) = futures_util::future::join(work, sample).await;
    let parts = parts?;
    let stopped = Instant::now();
    let mut back_after = None;
    if let Some(before) = fds_before {
        while stopped.elapsed() < SETTLE {
            if fds(&env)?.is_some_and(|n| n <= before) {
                back_after = Some(stopped.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let fds_after = fds(&env)?;
    let rss_after = rss(&env)?;

    let mut rec = Recorder::default();
    for p in parts {
        rec.merge(p);
    }
    let mut report = Report::new("churn", &env);
    report.param("connects", args.connects);
    report.param("users", args.users);
    report.param("pairs", args.pairs);
    report.param("in_flight", args.in_flight);
    report.param("wait_close", !args.no_wait_close);
    report.count("cycles", rec.count("cycles"));
    report.count("cycle_failures", rec.history.failures.iter().filter(|f| f.what == CHURN).count() as u64);
    report.count("swipe_requests", rec.count("swipe_requests"));
    if let Some(r) = rec.rate("cycles", "churn") {
        report.rate("cycles_per_sec", r);
    }
    if let Some(r) = rec.rate("swipe_requests", "churn") {
        report.rate("swipes_per_sec", r);
    }
    if let (Some(before), Some(after)) = (fds_before, fds_after) {
        report.count("server_fds_before", before);
        report.count("server_fds_peak", peak.get());
        report.count("server_fds_after", after);
        match back_after {
            Some(d) => report.rate("fds_back_to_baseline_ms", d.as_secs_f64() * 1000.0),
            None => report.note(format!("server descriptors were not back to {before} within {SETTLE:?}")),
        }
    } else {
        report.note("no --server-pid: descriptors and memory not measured");
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        report.rate("rss_before_kib", b as f64);
        report.rate("rss_after_kib", a as f64);
    }
    report.latencies(&rec);
    report.finish(&rec.history);
    Ok(report)
}

/// The socket address of a target's base URL (`http://host:port`).
pub(super) async fn socket_addr(base: &str) -> Result<SocketAddr, LoadError> {
    let authority = base.trim_start_matches("http://").split('/').next().unwrap_or_default();
    let mut found = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| LoadError::Setup(format!("cannot resolve {authority}: {e}")))?;
    found.next().ok_or_else(|| LoadError::Setup(format!("{authority} resolves to nothing")))
}

/// Open descriptors summed over the `--server-pid`s, if any were given.
fn fds(env: &Env) -> Result<Option<u64>, LoadError> {
    if env.common.server_pid.is_empty() {
        return Ok(None);
    }
    env.common.server_pid.iter().map(|&pid| open_fds(pid)).sum::<Result<u64, _>>().map(Some)
}

fn rss(env: &Env) -> Result<Option<u64>, LoadError> {
    if env.common.server_pid.is_empty() {
        return Ok(None);
    }
    env.common.server_pid.iter().map(|&pid| vm_rss_kib(pid)).sum::<Result<u64, _>>().map(Some)
}

/// What one cycle measured.
struct Cycle {
    hello: Duration,
    /// From the server's close frame to its TCP close (when the client waits for it).
    tcp_close: Option<Duration>,
}

async fn cycle(addr: SocketAddr, token: &str, wait_close: bool) -> Result<Cycle, String> {
    let start = Instant::now();
    let mut ws = RawWs::connect(addr, &format!("/v1/ws?token={token}"), None).await.map_err(|e| e.to_string())?;
    if ws.until_event("hello").await.map_err(|e| e.to_string())?.is_none() {
        return Err("closed before hello".into());
    }
    let hello = start.elapsed();
    ws.send_close(1000).await.map_err(|e| e.to_string())?;
    if !wait_close {
        return Ok(Cycle { hello, tcp_close: None });
    }
    match ws.until_close().await.map_err(|e| e.to_string())? {
        Some(1000) => {}
        other => return Err(format!("closing handshake answered {other:?}, not 1000")),
    }
    let handshake = Instant::now();
    ws.until_eof().await.map_err(|e| e.to_string())?;
    Ok(Cycle { hello, tcp_close: Some(handshake.elapsed()) })
}

async fn worker(
    env: Arc<Env>,
    args: Arc<ChurnArgs>,
    addrs: Arc<Vec<SocketAddr>>,
    ctx: WorkerCtx,
) -> Result<Recorder, LoadError> {
    let http = env.http();
    let https = env.https(&http);
    let churners: Vec<String> = ctx.share(args.users).map(|i| env.user("c", i)).collect();
    let pairs: Vec<usize> = ctx.share(args.pairs).collect();
    let pair = |p: usize| (env.user("w", p) + "a", env.user("w", p) + "b");
    let mut users = churners.clone();
    for &p in &pairs {
        let (a, b) = pair(p);
        users.extend([a, b]);
    }
    let tokens: HashMap<String, String> =
        users.iter().cloned().zip(env.tokens.tokens(&http, &users, env.concurrency()).await?).collect();
    let token = |u: &str| tokens.get(u).map(String::as_str).unwrap_or_default();
    let timeout = Duration::from_millis(env.common.request_timeout_ms);

    ctx.sync("churn").await?;
    let start = Instant::now();
    let rec = RefCell::new(Recorder::default());
    rec.borrow_mut().history.actions_from = Some(start);
    let wait_close = !args.no_wait_close;
    let cycles = futures_util::stream::iter(ctx.share(args.connects)).for_each_concurrent(args.in_flight, |i| {
        let (rec, churners, addrs, env, token) = (&rec, &churners, &addrs, &env, &token);
        async move {
            let user = &churners[i % churners.len()];
            let addr = addrs[env.node(i)];
            let outcome = tokio::time::timeout(timeout, cycle(addr, token(user), wait_close)).await;
            let mut r = rec.borrow_mut();
            match outcome {
                Ok(Ok(c)) => {
                    r.add("cycles", 1);
                    r.latency("connect_to_hello").record(c.hello);
                    if let Some(d) = c.tcp_close {
                        r.latency("close_frame_to_tcp_close").record(d);
                    }
                }
                Ok(Err(e)) => r.history.fail(CHURN, e),
                Err(_) => r.history.fail(CHURN, format!("no TCP close within {timeout:?}")),
            }
        }
    });
    // Swipes run for as long as the churn does (or until the pairs run out).
    let churn_done = Cell::new(false);
    let cycles = async {
        cycles.await;
        churn_done.set(true);
    };
    let swipes = futures_util::stream::iter(pairs.iter().copied())
        .take_while(|_| std::future::ready(!churn_done.get()))
        .for_each_concurrent(SWIPES_IN_FLIGHT, |p| {
            let (rec, https, env, token, pair) = (&rec, &https, &env, &token, &pair);
            async move {
                let (a, b) = pair(p);
                let (ida, idb) = (format!("{a}-like"), format!("{b}-like"));
                let sa =
                    Swipe { token: token(&a), actor: &a, target: &b, right: true, swipe_id: Some(&ida), retry: false };
                let sb =
                    Swipe { token: token(&b), actor: &b, target: &a, right: true, swipe_id: Some(&idb), retry: false };
                let (ha, hb) = (&https[env.node(2 * p)], &https[env.node(2 * p + 1)]);
                futures_util::future::join(actions::swipe(ha, rec, sa), actions::swipe(hb, rec, sb)).await;
            }
        });
    futures_util::future::join(cycles, swipes).await;
    let mut rec = rec.into_inner();
    rec.span("churn", start, Instant::now());
    rec.add("swipe_requests", rec.history.swipes.len() as u64);
    Ok(rec)
}
