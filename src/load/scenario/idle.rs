//! `idle`: open N WebSocket connections (one user each), hold them idle for S seconds while
//! answering the server's pings, and with `--server-pid` read the server's resident memory before,
//! with all connections open, at the end of the hold and after closing them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{open_streams, wait_for, Env, Recorder, StreamSpec};
use crate::load::cli::IdleArgs;
use crate::load::error::LoadError;
use crate::load::history::{StreamRecord, Transport};
use crate::load::procfs::vm_rss_kib;
use crate::load::report::Report;
use crate::load::stream;
use crate::load::workers::{self, WorkerCtx};

/// How long after closing everything the server gets to free the connections' memory.
const SETTLE_AFTER_CLOSE: Duration = Duration::from_secs(2);

pub async fn run(env: Arc<Env>, args: IdleArgs) -> Result<Report, LoadError> {
    if args.connections == 0 {
        return Err(LoadError::Usage("--connections must be at least 1".into()));
    }
    let before = rss_kib(&env)?;
    let shared = (env.clone(), Arc::new(args.clone()));
    let parts = workers::run(env.common.threads, env.deadline, move |ctx| {
        let (env, args) = shared.clone();
        async move { worker(env, args, ctx).await }
    })
    .await?;
    let mut rec = Recorder::default();
    for p in parts {
        rec.merge(p);
    }
    if !env.common.server_pid.is_empty() {
        tokio::time::sleep(SETTLE_AFTER_CLOSE).await;
    }
    let after_close = rss_kib(&env)?;

    let mut report = Report::new("idle", &env);
    report.param("connections", args.connections);
    report.param("hold_secs", args.hold_secs);
    let ready = rec.history.streams.iter().filter(|s| s.hello.is_some()).count() as u64;
    let lost = rec.history.streams.iter().filter(|s| s.lost.is_some()).count() as u64;
    report.count("connections_ready", ready);
    report.count("connections_lost", lost);
    report.count("connect_failures", rec.history.failures.len() as u64);
    if let Some(s) = rec.seconds("connect") {
        report.rate("connect_seconds", s);
        if s > 0.0 {
            report.rate("connects_per_sec", ready as f64 / s);
        }
    }
    if let Some(b) = before {
        report.rate("rss_before_kib", b as f64);
        for name in ["rss_connected_kib", "rss_held_kib"] {
            if let Some(&v) = rec.readings.get(name) {
                report.rate(name, v as f64);
            }
        }
        if let Some(a) = after_close {
            report.rate("rss_after_close_kib", a as f64);
        }
        let top = rec.readings.get("rss_held_kib").or(rec.readings.get("rss_connected_kib"));
        if let (Some(&top), true) = (top, ready > 0) {
            report.rate("kib_per_connection", (top as f64 - b as f64) / ready as f64);
        }
    } else {
        report.note("no --server-pid: memory not measured");
    }
    report.finish(&rec.history);
    Ok(report)
}

/// `VmRSS` summed over the `--server-pid`s, if any were given.
fn rss_kib(env: &Env) -> Result<Option<u64>, LoadError> {
    if env.common.server_pid.is_empty() {
        return Ok(None);
    }
    env.common.server_pid.iter().map(|&pid| vm_rss_kib(pid)).sum::<Result<u64, _>>().map(Some)
}

async fn worker(env: Arc<Env>, args: Arc<IdleArgs>, ctx: WorkerCtx) -> Result<Recorder, LoadError> {
    let http = env.http();
    let names: Vec<String> = ctx.share(args.connections).map(|i| env.user("i", i)).collect();
    let tokens: HashMap<String, String> =
        names.iter().cloned().zip(env.tokens.tokens(&http, &names, env.concurrency()).await?).collect();
    let mut rec = Recorder::default();
    let (stop, _) = watch::channel(false);
    let specs = ctx
        .share(args.connections)
        .zip(&names)
        .map(|(i, u)| StreamSpec {
            token: tokens.get(u).cloned().unwrap_or_default(),
            record: StreamRecord::new(u, 0, Transport::Ws),
            target: i,
        })
        .collect();
    let start = Instant::now();
    let streams = open_streams(&env, &http, specs, &stop, &mut rec.history).await;
    wait_for(env.settle_deadline(), || streams.iter().all(|s| s.settled())).await;
    rec.span("connect", start, Instant::now());

    ctx.sync("connected").await?;
    let measure = ctx.index == 0;
    if let (true, Some(kib)) = (measure, rss_kib(&env)?) {
        rec.readings.insert("rss_connected_kib".into(), kib);
    }
    // Leave time before the run's deadline to measure and close.
    let now = Instant::now();
    let latest = env.deadline.checked_sub(Duration::from_secs(10)).unwrap_or(now).max(now);
    tokio::time::sleep_until((now + Duration::from_secs(args.hold_secs)).min(latest)).await;
    ctx.sync("held").await?;
    if let (true, Some(kib)) = (measure, rss_kib(&env)?) {
        rec.readings.insert("rss_held_kib".into(), kib);
    }
    stop.send_replace(true);
    rec.history.streams.extend(stream::finish(streams).await);
    rec.history.actions_from = Some(start);
    Ok(rec)
}
