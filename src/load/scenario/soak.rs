//! `soak`: a mixed load for `--duration-secs`, to see whether anything in the server grows with
//! time. Every client thread runs, side by side until the end:
//! - swipes at `--pairs-per-sec` (over all threads) between fresh users: mostly mutual pairs, some
//!   one-sided, some retried with the same `swipe_id`, a fifth with a user who holds a stream the
//!   whole run (WebSocket or SSE), and an unmatch after every fifth match;
//! - spinners, each holding a WebSocket: join the pool, get a room, stay a moment, skip without
//!   requeue (or leave when nobody came), join again (paced under the server's join limit);
//! - connect/drop cycles: a WebSocket closed politely, a WebSocket reset without a close frame, an
//!   SSE stream dropped, in turn.
//!
//! With `--server-pid` the server's resident memory, open descriptors and threads are sampled every
//! `--sample-secs`; the report lists the samples and compares the end with the warm-up sample
//! (flat means within 10 %). At the end every room is closed, the streams are checked like every
//! scenario's (each held stream saw each of its user's matches once, every room member heard its
//! close...), and the server's own `matchd_invariant_violations_total` must not have moved.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::actions::{self, Joined, Swipe};
use super::{open_streams, picked, wait_for, Env, Recorder, StreamSpec, GRACE};
use crate::load::check::Violation;
use crate::load::cli::SoakArgs;
use crate::load::error::LoadError;
use crate::load::history::{StreamRecord, Transport};
use crate::load::http::Http;
use crate::load::procfs::{open_fds, threads, vm_rss_kib};
use crate::load::raw_ws::RawWs;
use crate::load::report::Report;
use crate::load::stream::{self, StreamHandle};
use crate::load::wire::{EventBody, RoomBody};
use crate::load::workers::{self, WorkerCtx};

/// Seconds a soak gets beyond its duration to open streams before and close rooms after.
pub const FINISH_SECS: u64 = 120;
/// How long a spinner waits in line for a partner before leaving.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(4);
/// Passes of "leave the queue, skip every open room" at the end.
const CLEANUP_PASSES: usize = 16;
/// A change of more than this between warm-up and end is not flat.
const FLAT: f64 = 0.10;
const CHURN: &str = "soak connect/drop cycle";
const TOKEN: &str = "token for a soak user";
const UNMATCH: &str = "DELETE /v1/matches/{id}";
const METRICS: &str = "GET /metrics";

/// One reading of the server (summed over the `--server-pid`s).
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_secs: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(env: &Env, started: Instant) -> Result<Option<Sample>, LoadError> {
    if env.common.server_pid.is_empty() {
        return Ok(None);
    }
    let (mut rss, mut fds, mut th) = (0, 0, 0);
    for &pid in &env.common.server_pid {
        rss += vm_rss_kib(pid)?;
        fds += open_fds(pid)?;
        th += threads(pid)?;
    }
    Ok(Some(Sample { at_secs: started.elapsed().as_secs_f64(), rss_kib: rss, fds, threads: th }))
}

/// The sum of `matchd_invariant_violations_total` by check, over every target.
async fn server_violations(env: &Env) -> Result<BTreeMap<String, u64>, String> {
    let http = env.http();
    let mut out = BTreeMap::new();
    for h in env.https(&http) {
        let reply = h.get("/metrics", None).await.map_err(|e| format!("{METRICS}: {e}"))?;
        if reply.status != 200 {
            return Err(format!("{METRICS}: {}", reply.brief()));
        }
        for line in String::from_utf8_lossy(&reply.body).lines() {
            let Some(rest) = line.strip_prefix("matchd_invariant_violations_total{check=\"") else { continue };
            let Some((check, value)) = rest.split_once("\"}") else { continue };
            let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
            *out.entry(check.to_string()).or_default() += n;
        }
    }
    Ok(out)
}

pub async fn run(env: Arc<Env>, args: SoakArgs) -> Result<Report, LoadError> {
    if args.duration_secs == 0 || args.sample_secs == 0 {
        return Err(LoadError::Usage("--duration-secs and --sample-secs must be at least 1".into()));
    }
    if !(args.pairs_per_sec > 0.0 && args.pairs_per_sec <= 10_000.0) {
        return Err(LoadError::Usage("--pairs-per-sec must be above 0 and at most 10000".into()));
    }
    if args.spinners == 1 {
        return Err(LoadError::Usage("--spinners must be 0 or at least 2".into()));
    }
    let pool = args.pool.clone().unwrap_or_else(|| env.run_id.clone());
    let warmup = args.warmup_secs.unwrap_or((args.duration_secs / 5).clamp(1, 120));
    let mut addrs = Vec::with_capacity(env.targets.len());
    for t in &env.targets {
        addrs.push(super::churn::socket_addr(&t.http).await?);
    }
    let violations_before = server_violations(&env).await;

    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration_secs);
    let done = Cell::new(false);
    let samples = RefCell::new(Vec::new());
    let shared = (env.clone(), Arc::new(args.clone()), Arc::new(pool.clone()), Arc::new(addrs));
    let work = async {
        let parts = workers::run(env.common.threads, env.deadline, move |ctx| {
            let (env, args, pool, addrs) = shared.clone();
            async move { worker(env, args, pool, addrs, end, ctx).await }
        })
        .await;
        done.set(true);
        parts
    };
    let sampler = async {
        let every = Duration::from_secs(args.sample_secs);
        let mut next = started;
        while !done.get() {
            if Instant::now() >= next {
                if let Ok(Some(s)) = sample(&env, started) {
                    samples.borrow_mut().push(s);
                }
                next += every;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (parts, ()) = futures_util::future::join(work, sampler).await;
    let parts = parts?;
    // One more after everything closed.
    let last = sample(&env, started)?;
    let violations_after = server_violations(&env).await;

    let mut rec = Recorder::default();
    for p in parts {
        rec.merge(p);
    }
    let mut report = Report::new("soak", &env);
    report.param("duration_secs", args.duration_secs);
    report.param("sample_secs", args.sample_secs);
    report.param("warmup_secs", warmup);
    report.param("pairs_per_sec", args.pairs_per_sec);
    report.param("held_streams", args.held_streams);
    report.param("spinners", args.spinners);
    report.param("churn_in_flight", args.churn_in_flight);
    report.param("pool", &pool);
    let swipes = rec.history.swipes.len() as u64;
    report.count("swipe_requests", swipes);
    let matched: std::collections::HashSet<&str> = rec
        .history
        .swipes
        .iter()
        .filter_map(|s| s.answer.as_ref()?.match_.as_ref().map(|m| m.match_id.as_str()))
        .collect();
    report.count("matches", matched.len() as u64);
    report.count("unmatches", rec.count("unmatches"));
    report.count("joins", rec.history.joins.len() as u64);
    report.count("rooms_from_joins", rec.count("rooms"));
    report.count("skips", rec.history.skips.len() as u64);
    report.count("leaves_without_room", rec.count("leaves_without_room"));
    report.count("churn_cycles", rec.count("churn_cycles"));
    report.count("held_stream_events", rec.count("held_stream_events"));
    if let Some(secs) = rec.seconds("soak") {
        report.rate("load_seconds", secs);
        if secs > 0.0 {
            report.rate("swipes_per_sec", swipes as f64 / secs);
            report.rate("churn_cycles_per_sec", rec.count("churn_cycles") as f64 / secs);
        }
    }
    report_samples(&mut report, &samples.into_inner(), last, warmup as f64);
    report.latencies(&rec);
    report.finish(&rec.history);
    match (violations_before, violations_after) {
        (Ok(before), Ok(after)) => {
            for (check, n) in after {
                let was = before.get(&check).copied().unwrap_or(0);
                if n > was {
                    report.violation(Violation::ServerCounted { check, count: n - was });
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => report.note(format!("could not read the server's invariant counters: {e}")),
    }
    Ok(report)
}

/// Lists the samples and compares the end with the warm-up one.
fn report_samples(report: &mut Report, samples: &[Sample], last: Option<Sample>, warmup_secs: f64) {
    let all: Vec<Sample> = samples.iter().copied().chain(last).collect();
    if all.is_empty() {
        report.note("no --server-pid: the server's memory, descriptors and threads were not sampled");
        return;
    }
    for s in &all {
        report.samples.push(BTreeMap::from([
            ("at_secs".to_string(), s.at_secs.round()),
            ("rss_kib".to_string(), s.rss_kib as f64),
            ("fds".to_string(), s.fds as f64),
            ("threads".to_string(), s.threads as f64),
        ]));
    }
    report.count("samples", all.len() as u64);
    // The warm-up reading: the first sample at or after the warm-up age (else the first one);
    // the end: the last sample taken while the load ran (the very last one is after cleanup).
    let warm = samples.iter().find(|s| s.at_secs >= warmup_secs).or(samples.first()).or(all.first());
    let end = samples.last().or(all.last());
    let (Some(warm), Some(end)) = (warm, end) else { return };
    let peak = all.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    report.rate("warmup_at_secs", warm.at_secs.round());
    report.rate("end_at_secs", end.at_secs.round());
    report.rate("rss_warmup_kib", warm.rss_kib as f64);
    report.rate("rss_end_kib", end.rss_kib as f64);
    report.rate("rss_peak_kib", peak as f64);
    report.rate("fds_warmup", warm.fds as f64);
    report.rate("fds_end", end.fds as f64);
    report.rate("threads_warmup", warm.threads as f64);
    report.rate("threads_end", end.threads as f64);
    let ratio = |a: u64, b: u64| if a == 0 { 1.0 } else { b as f64 / a as f64 };
    let (rss, fds, th) = (ratio(warm.rss_kib, end.rss_kib), ratio(warm.fds, end.fds), ratio(warm.threads, end.threads));
    report.rate("rss_end_over_warmup", rss);
    report.rate("fds_end_over_warmup", fds);
    report.rate("threads_end_over_warmup", th);
    let flat = |r: f64| (r - 1.0).abs() <= FLAT;
    let verdict = |name: &str, r: f64| {
        format!("{name} end/warm-up = {r:.3} ({})", if flat(r) { "flat within 10 %" } else { "NOT flat within 10 %" })
    };
    report.note(format!(
        "{}; {}; {}",
        verdict("server RSS", rss),
        verdict("open descriptors", fds),
        verdict("threads", th)
    ));
}

/// A spinner's view of its rooms: answered by its joins, or announced on its stream.
struct Spinner {
    name: String,
    token: String,
    stream: usize,
    node: usize,
    answered: Vec<RoomBody>,
}

/// The spinner's open room: the newest assigned (answer or event) and not closed.
fn open_room(s: &Spinner, streams: &[StreamHandle]) -> Option<String> {
    let record = streams[s.stream].record.borrow();
    let mut closed = std::collections::HashSet::new();
    let mut assigned: Vec<&str> = s.answered.iter().map(|r| r.room_id.as_str()).collect();
    for e in &record.events {
        match &e.body {
            EventBody::RoomAssigned { room_id, .. } => assigned.push(room_id),
            EventBody::RoomClosed { room_id, .. } => {
                closed.insert(room_id.as_str());
            }
            _ => {}
        }
    }
    assigned.into_iter().rev().find(|r| !closed.contains(r)).map(str::to_string)
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t).await;
}

async fn worker(
    env: Arc<Env>,
    args: Arc<SoakArgs>,
    pool: Arc<String>,
    addrs: Arc<Vec<SocketAddr>>,
    end: Instant,
    ctx: WorkerCtx,
) -> Result<Recorder, LoadError> {
    let (args, pool): (&SoakArgs, &str) = (&args, &pool);
    let http = env.http();
    let https = env.https(&http);
    let held: Vec<(usize, String)> = ctx.share(args.held_streams).map(|i| (i, env.user("h", i))).collect();
    let spinner_ids: Vec<(usize, String)> = ctx.share(args.spinners).map(|i| (i, env.user("q", i))).collect();
    let churners: Vec<(usize, String)> =
        ctx.share(ctx.count * args.churn_in_flight.max(1) * 4).map(|i| (i, env.user("c", i))).collect();
    let mut names: Vec<String> = held.iter().map(|(_, u)| u.clone()).collect();
    names.extend(spinner_ids.iter().map(|(_, u)| u.clone()));
    names.extend(churners.iter().map(|(_, u)| u.clone()));
    let tokens: HashMap<String, String> =
        names.iter().cloned().zip(env.tokens.tokens(&http, &names, env.concurrency()).await?).collect();
    let token = |u: &str| tokens.get(u).cloned().unwrap_or_default();

    let mut rec = Recorder::default();
    let (stop, _) = watch::channel(false);
    let mut specs: Vec<StreamSpec> = held
        .iter()
        .map(|(i, u)| StreamSpec {
            record: StreamRecord::new(u, 0, if i % 2 == 0 { Transport::Ws } else { Transport::Sse }),
            token: token(u),
            target: *i,
        })
        .collect();
    specs.extend(spinner_ids.iter().map(|(i, u)| StreamSpec {
        record: StreamRecord::new(u, 0, Transport::Ws),
        token: token(u),
        target: *i,
    }));
    let streams = open_streams(&env, &http, specs, &stop, &mut rec.history).await;
    wait_for(env.settle_deadline(), || streams.iter().all(StreamHandle::settled)).await;
    let by_user: HashMap<String, usize> =
        streams.iter().enumerate().map(|(i, s)| (s.record.borrow().user.clone(), i)).collect();
    let held_users: Vec<String> = held.iter().map(|(_, u)| u.clone()).filter(|u| by_user.contains_key(u)).collect();
    let spinners: Vec<RefCell<Spinner>> = spinner_ids
        .iter()
        .filter_map(|(i, u)| {
            let stream = *by_user.get(u)?;
            Some(RefCell::new(Spinner {
                name: u.clone(),
                token: token(u),
                stream,
                node: env.node(*i),
                answered: Vec::new(),
            }))
        })
        .collect();

    ctx.sync("soak").await?;
    let start = Instant::now();
    rec.history.actions_from = Some(start);
    let rec = RefCell::new(rec);
    let env_ref = &*env;
    let swipes = swipe_load(env_ref, args, &https, &held_users, &rec, &ctx, end);
    let spins =
        futures_util::future::join_all(spinners.iter().map(|s| spin_load(args, &https, pool, s, &streams, &rec, end)));
    let churn = futures_util::future::join_all((0..args.churn_in_flight).map(|lane| {
        let (rec, addrs, churners, token) = (&rec, &addrs, &churners, &token);
        async move {
            let mine: Vec<&(usize, String)> = churners.iter().skip(lane).step_by(args.churn_in_flight.max(1)).collect();
            let mut cycle = 0usize;
            while Instant::now() < end && !mine.is_empty() {
                let (i, user) = mine[cycle % mine.len()];
                let addr = addrs[env_ref.node(*i)];
                let timeout = Duration::from_millis(env_ref.common.request_timeout_ms);
                let outcome = tokio::time::timeout(timeout, churn_cycle(addr, &token(user), cycle % 3)).await;
                {
                    let mut r = rec.borrow_mut();
                    match outcome {
                        Ok(Ok(hello)) => {
                            r.add("churn_cycles", 1);
                            r.latency("churn_connect_to_hello").record(hello);
                        }
                        Ok(Err(e)) => r.history.fail(CHURN, e),
                        Err(_) => r.history.fail(CHURN, format!("not done within {timeout:?}")),
                    }
                }
                cycle += 1;
                tokio::time::sleep(Duration::from_millis(args.churn_pause_ms)).await;
            }
        }
    }));
    futures_util::future::join3(swipes, spins, churn).await;
    rec.borrow_mut().span("soak", start, Instant::now());

    // Close every room: leave the queue, skip what is open, until no thread sees an open room.
    let mut clean = spinners.is_empty();
    for pass in 0..CLEANUP_PASSES {
        for s in &spinners {
            let (node, token) = {
                let s = s.borrow();
                (s.node, s.token.clone())
            };
            actions::leave(&https[node], &rec, &token).await;
        }
        for s in &spinners {
            let room = open_room(&s.borrow(), &streams);
            if let Some(room) = room {
                let (node, token, name) = {
                    let s = s.borrow();
                    (s.node, s.token.clone(), s.name.clone())
                };
                actions::skip(&https[node], &rec, &token, &name, &room, false, true).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mine_clean = spinners.iter().all(|s| open_room(&s.borrow(), &streams).is_none());
        clean = ctx.all_agree(&format!("soak-clean-{pass}"), mine_clean).await?;
        if clean {
            break;
        }
    }
    // Late events (a match's event after its answer, a room's close) get a moment to arrive.
    tokio::time::sleep(GRACE * 5).await;
    stop.send_replace(true);
    let mut rec = rec.into_inner();
    rec.history.expect_rooms_closed = clean;
    let records = stream::finish(streams).await;
    let held_events: usize = records.iter().filter(|r| held_users.contains(&r.user)).map(|r| r.events.len()).sum();
    rec.add("held_stream_events", held_events as u64);
    rec.history.streams.extend(records);
    Ok(rec)
}

/// Swipes between fresh users at this thread's share of `--pairs-per-sec` until `end`.
async fn swipe_load(
    env: &Env,
    args: &SoakArgs,
    https: &[Http],
    held: &[String],
    rec: &RefCell<Recorder>,
    ctx: &WorkerCtx,
    end: Instant,
) {
    let every = Duration::from_secs_f64(ctx.count as f64 / args.pairs_per_sec);
    let ticks = futures_util::stream::unfold((Instant::now(), 0usize), move |(next, k)| async move {
        sleep_until(next).await;
        (Instant::now() < end).then_some((k, (next + every, k + 1)))
    });
    let in_flight = ((args.pairs_per_sec / ctx.count as f64) as usize).clamp(2, 256);
    ticks
        .for_each_concurrent(in_flight, |k| async move {
            let n = k * ctx.count + ctx.index;
            one_pair(env, https, held, rec, n).await;
        })
        .await;
}

/// Pair number `n`: mutual by default; every 10th one-sided, every 10th with a retry, every 5th
/// with a held-stream user; an unmatch after every 5th match.
async fn one_pair(env: &Env, https: &[Http], held: &[String], rec: &RefCell<Recorder>, n: usize) {
    let b = env.user("p", n) + "b";
    let a = match (n % 5, held.is_empty()) {
        (0, false) => held[(n / 5) % held.len()].clone(),
        _ => env.user("p", n) + "a",
    };
    let http_a = &https[env.node(2 * n)];
    let http_b = &https[env.node(2 * n + 1)];
    let (ta, tb) = futures_util::future::join(env.tokens.token(http_a, &a), env.tokens.token(http_b, &b)).await;
    let (ta, tb) = match (ta, tb) {
        (Ok(ta), Ok(tb)) => (ta, tb),
        (Err(e), _) | (_, Err(e)) => {
            rec.borrow_mut().history.fail(TOKEN, e.to_string());
            return;
        }
    };
    let (ida, idb) = (format!("{a}-{b}"), format!("{b}-{a}"));
    let b_right = n % 10 != 3;
    let sa = Swipe { token: &ta, actor: &a, target: &b, right: true, swipe_id: Some(&ida), retry: false };
    let sb = Swipe { token: &tb, actor: &b, target: &a, right: b_right, swipe_id: Some(&idb), retry: false };
    let (ra, rb) = futures_util::future::join(actions::swipe(http_a, rec, sa), actions::swipe(http_b, rec, sb)).await;
    if n % 10 == 7 {
        let again = Swipe { token: &ta, actor: &a, target: &b, right: true, swipe_id: Some(&ida), retry: true };
        actions::swipe(http_a, rec, again).await;
    }
    let matched = [ra, rb].into_iter().flatten().find_map(|r| r.match_);
    if let (Some(m), true) = (matched, picked(n as u64, 0.2)) {
        match http_b.delete(&format!("/v1/matches/{}", m.match_id), Some(&tb)).await {
            Ok(reply) if reply.is_success() => rec.borrow_mut().add("unmatches", 1),
            Ok(reply) => rec.borrow_mut().history.fail(UNMATCH, reply.brief()),
            Err(e) => rec.borrow_mut().history.fail(UNMATCH, e.to_string()),
        }
    }
}

/// One spinner until `end`: skip an open room after a moment, else join (paced), wait for a
/// partner, leave if none came.
async fn spin_load(
    args: &SoakArgs,
    https: &[Http],
    pool: &str,
    spinner: &RefCell<Spinner>,
    streams: &[StreamHandle],
    rec: &RefCell<Recorder>,
    end: Instant,
) {
    let join_every = Duration::from_millis(args.join_every_ms);
    let (name, token, node) = {
        let s = spinner.borrow();
        (s.name.clone(), s.token.clone(), s.node)
    };
    let http = &https[node];
    let mut last_join: Option<Instant> = None;
    let mut round = 0u64;
    while Instant::now() < end {
        round += 1;
        let room = open_room(&spinner.borrow(), streams);
        if let Some(room) = room {
            // Stay in the room a moment (200..1200 ms), then skip it unless the partner did.
            let seed = round.wrapping_mul(31).wrapping_add(name.len() as u64);
            let dwell = 200 + (seed % 11) * 100;
            tokio::time::sleep(Duration::from_millis(dwell)).await;
            if open_room(&spinner.borrow(), streams).as_deref() == Some(room.as_str()) {
                actions::skip(http, rec, &token, &name, &room, false, true).await;
            }
            continue;
        }
        if let Some(t) = last_join {
            if t.elapsed() < join_every {
                sleep_until((t + join_every).min(end)).await;
                continue;
            }
        }
        let sent = Instant::now();
        last_join = Some(sent);
        match actions::join_expecting(http, rec, &token, &name, pool, false).await {
            Joined::Matched(room) => {
                rec.borrow_mut().add("rooms", 1);
                spinner.borrow_mut().answered.push(room);
            }
            Joined::Queued => {
                let got =
                    wait_for((sent + WAIT_FOR_ROOM).min(end), || open_room(&spinner.borrow(), streams).is_some()).await;
                if got {
                    rec.borrow_mut().add("rooms", 1);
                } else {
                    actions::leave(http, rec, &token).await;
                    rec.borrow_mut().add("leaves_without_room", 1);
                }
            }
            Joined::NotFound(reply) => {
                rec.borrow_mut().history.fail("POST /v1/queue", reply.brief());
                return;
            }
            Joined::Failed => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// One connect/drop cycle: mode 0 = WebSocket closed politely (close handshake, then the server's
/// TCP close), 1 = WebSocket reset without a close frame, 2 = SSE stream dropped. Returns the time
/// to `hello`.
async fn churn_cycle(addr: SocketAddr, token: &str, mode: usize) -> Result<Duration, String> {
    let start = Instant::now();
    if mode == 2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!("GET /v1/events?token={token} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("\"hello\"") {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("SSE stream ended before hello: {}", String::from_utf8_lossy(&seen)));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        return Ok(start.elapsed());
    }
    let mut ws = RawWs::connect(addr, &format!("/v1/ws?token={token}"), None).await.map_err(|e| e.to_string())?;
    if ws.until_event("hello").await.map_err(|e| e.to_string())?.is_none() {
        return Err("closed before hello".into());
    }
    let hello = start.elapsed();
    if mode == 1 {
        ws.reset();
        return Ok(hello);
    }
    ws.send_close(1000).await.map_err(|e| e.to_string())?;
    match ws.until_close().await.map_err(|e| e.to_string())? {
        Some(1000) => {}
        other => return Err(format!("closing handshake answered {other:?}, not 1000")),
    }
    ws.until_eof().await.map_err(|e| e.to_string())?;
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_means_within_ten_percent_of_the_warm_up_sample() {
        let s = |at: f64, rss: u64| Sample { at_secs: at, rss_kib: rss, fds: 20, threads: 8 };
        let env_less = |samples: &[Sample]| {
            let mut r = Report {
                scenario: "soak".into(),
                target: String::new(),
                run_id: String::new(),
                threads: 1,
                concurrency: 1,
                params: BTreeMap::new(),
                counts: BTreeMap::new(),
                figures: BTreeMap::new(),
                latencies_ms: BTreeMap::new(),
                notes: Vec::new(),
                violations_total: 0,
                violations_by_kind: BTreeMap::new(),
                violations: Vec::new(),
                samples: Vec::new(),
            };
            report_samples(&mut r, samples, None, 10.0);
            r
        };
        let flat = env_less(&[s(0.0, 50_000), s(10.0, 100_000), s(20.0, 105_000)]);
        assert_eq!(flat.figures["rss_warmup_kib"], 100_000.0, "the warm-up sample is the first at 10 s");
        assert!((flat.figures["rss_end_over_warmup"] - 1.05).abs() < 1e-9);
        assert!(flat.notes[0].contains("server RSS end/warm-up = 1.050 (flat within 10 %)"), "{:?}", flat.notes);
        let grows = env_less(&[s(0.0, 50_000), s(10.0, 100_000), s(20.0, 120_000)]);
        assert!(grows.notes[0].contains("NOT flat"), "{:?}", grows.notes);
        assert_eq!(grows.samples.len(), 3);
    }
}
