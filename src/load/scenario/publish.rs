//! `publish`: the server API's fan-out. U users connect (T tabs each, WebSocket or SSE); a few
//! mutual pairs are swiped first, for a `match` event latency from the same run; then, for each
//! "users per call" N given, C calls of `POST /v1/server/publish` (each to N users, with its own
//! idempotency key), a few in flight per client thread. Measures, per call, the time from sending
//! it to the event having reached every connection of every listed user (and per connection), the
//! call's own latency, and the throughput in calls/s and in events/s (one event per listed user).
//! The checker verifies that every such connection got each of its events exactly once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use serde_json::json;
use tokio::time::Instant;

use super::delivery::{check_audience, connect, match_latencies, report_audience, swipe_pairs};
use super::{note_cpu, report_cpu, wait_for, Env, Recorder};
use crate::load::cli::PublishArgs;
use crate::load::error::LoadError;
use crate::load::history::{History, PublishRecord, StreamRecord};
use crate::load::report::Report;
use crate::load::stats::Latency;
use crate::load::wire::EventBody;
use crate::load::workers::{self, WorkerCtx};

/// The `type` of the load tool's published events.
const EVENT_TYPE: &str = "load.result";
const PUBLISH: &str = "POST /v1/server/publish";
/// Most users one call may name (the contract's bound).
const MAX_USERS_PER_CALL: usize = 1000;

/// The users call `k` of a phase with `n` users per call goes to: `n` consecutive users from `k * n`.
fn call_users(k: usize, n: usize, users: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |j| (k * n + j) % users)
}

/// A publish's `seq` (unique in the run): phase, then call.
fn seq(phase: usize, calls: usize, k: usize) -> u64 {
    (phase * calls + k) as u64
}

/// Latencies of the publishes that named `n` users each.
#[derive(Debug, Default)]
pub struct PublishLatencies {
    /// Call sent -> the event on every connection of every listed user.
    pub all_connections: Latency,
    /// Call sent -> the event, per connection.
    pub per_connection: Latency,
    /// Calls whose events were all seen.
    pub complete: u64,
    /// Events written to connections (a listed user's open tabs).
    pub deliveries: u64,
}

/// For each answered publish naming `n` users, when its event reached the connections of its users
/// that were open since before it was sent.
pub fn publish_latencies(h: &History, n: usize) -> PublishLatencies {
    let mut out = PublishLatencies::default();
    let mut arrivals: HashMap<&str, Vec<HashMap<u64, Instant>>> = HashMap::new();
    let mut ready: HashMap<&str, Vec<&StreamRecord>> = HashMap::new();
    for s in h.streams.iter().filter(|s| s.lost.is_none()) {
        let seen: HashMap<u64, Instant> = s
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::App { kind, seq: Some(seq) } if kind == EVENT_TYPE => Some((*seq, e.at)),
                _ => None,
            })
            .collect();
        arrivals.entry(s.user.as_str()).or_default().push(seen);
        ready.entry(s.user.as_str()).or_default().push(s);
    }
    for p in h.publishes.iter().filter(|p| p.users.len() == n) {
        let (mut last, mut complete) = (None::<Instant>, true);
        for user in &p.users {
            let (Some(streams), Some(seen)) = (ready.get(user.as_str()), arrivals.get(user.as_str())) else {
                continue;
            };
            for (s, seen) in streams.iter().zip(seen) {
                if !s.ready_before(p.sent) {
                    continue;
                }
                match seen.get(&p.seq) {
                    Some(&at) => {
                        out.deliveries += 1;
                        out.per_connection.record(at.saturating_duration_since(p.sent));
                        last = Some(last.map_or(at, |l| l.max(at)));
                    }
                    None => complete = false,
                }
            }
        }
        if let (true, Some(last)) = (complete, last) {
            out.complete += 1;
            out.all_connections.record(last.saturating_duration_since(p.sent));
        }
    }
    out
}

pub async fn run(env: Arc<Env>, args: PublishArgs) -> Result<Report, LoadError> {
    check_audience(&args.audience)?;
    let users = args.audience.users;
    if args.calls == 0 {
        return Err(LoadError::Usage("--calls must be at least 1".into()));
    }
    if args.users_per_call.is_empty()
        || args.users_per_call.iter().any(|&n| n == 0 || n > users || n > MAX_USERS_PER_CALL)
    {
        return Err(LoadError::Usage(format!(
            "--users-per-call must list values between 1 and min(--users, {MAX_USERS_PER_CALL})"
        )));
    }
    let pairs = args.pairs.unwrap_or(users / 10).min(users / 2);
    let shared = (env.clone(), Arc::new(args.clone()));
    let parts = workers::run(env.common.threads, env.deadline, move |ctx| {
        let (env, args) = shared.clone();
        async move { worker(env, args, pairs, ctx).await }
    })
    .await?;
    let mut rec = Recorder::default();
    for p in parts {
        rec.merge(p);
    }
    let mut report = Report::new("publish", &env);
    report_audience(&args.audience, &rec, &mut report);
    report.param("pairs", pairs);
    report.param("users_per_call", &args.users_per_call);
    report.param("calls_per_phase", args.calls);
    report.param("calls_in_flight_per_thread", args.calls_in_flight);
    if let Some(r) = rec.rate("pairs", "swipes") {
        report.rate("pairs_per_sec", r);
    }
    match_latencies(&rec.history).report(&mut report);
    for &n in &args.users_per_call {
        let phase = format!("publish_{n}");
        let calls = rec.count(&format!("{phase}_calls"));
        report.count(&format!("{phase}_calls_ok"), calls);
        if let Some(r) = rec.rate(&format!("{phase}_calls"), &phase) {
            report.rate(&format!("{phase}_calls_per_sec"), r);
            report.rate(&format!("{phase}_events_per_sec"), r * n as f64);
        }
        let l = publish_latencies(&rec.history, n);
        if let Some(secs) = rec.seconds(&phase).filter(|s| *s > 0.0) {
            report.rate(&format!("{phase}_deliveries_per_sec"), l.deliveries as f64 / secs);
        }
        report.count(&format!("{phase}_fully_delivered"), l.complete);
        report.latency(&format!("{phase}_event_all_connections"), &l.all_connections);
        report.latency(&format!("{phase}_event_per_connection"), &l.per_connection);
        report_cpu(&rec, &mut report, &phase, &format!("publish_call_{n}"), calls);
    }
    report.latencies(&rec);
    report.finish(&rec.history);
    Ok(report)
}

async fn worker(env: Arc<Env>, args: Arc<PublishArgs>, pairs: usize, ctx: WorkerCtx) -> Result<Recorder, LoadError> {
    let http = env.http();
    let https = env.https(&http);
    let mut rec = Recorder::default();
    let c = connect(&env, &ctx, &https, "p", &args.audience, &mut rec).await?;
    let token = |u: &str| c.token(u);
    let users = args.audience.users;

    // Matches first: their event latency, from this run, beside the publishes'.
    let my_pairs: Vec<usize> = (0..pairs).filter(|&k| ctx.owns(k)).collect();
    ctx.sync("swipes").await?;
    let start = Instant::now();
    rec.history.actions_from = Some(start);
    let rec = RefCell::new(rec);
    swipe_pairs(&env, &https, &rec, &token, "p", &my_pairs, args.pairs_in_flight).await;
    let mut rec = rec.into_inner();
    rec.span("swipes", start, Instant::now());
    rec.add("pairs", my_pairs.len() as u64);
    super::wait_match_events(&env, &rec, &c.streams).await;

    // Then one phase per "users per call", every thread at once.
    let mut expected: HashMap<String, usize> = HashMap::new();
    for (phase, &n) in args.users_per_call.iter().enumerate() {
        let name = format!("publish_{n}");
        ctx.sync(&name).await?;
        note_cpu(&env, &ctx, &mut rec, &name, "start")?;
        let start = Instant::now();
        let cell = RefCell::new(rec);
        let calls: Vec<usize> = ctx.share(args.calls).collect();
        futures_util::stream::iter(calls)
            .for_each_concurrent(args.calls_in_flight.max(1), |k| {
                let (env, args, cell, https) = (&env, &args, &cell, &https);
                let name = &name;
                async move {
                    let users: Vec<String> = call_users(k, n, users).map(|i| env.user("p", i)).collect();
                    let seq = seq(phase, args.calls, k);
                    let key = format!("{}-{seq}", env.run_id);
                    let body = json!({"users": users, "type": EVENT_TYPE, "data": {"seq": seq}, "key": key});
                    let http = &https[env.node(k)];
                    let sent = Instant::now();
                    let res = http.post_with_api_key("/v1/server/publish", &args.api_key, &body).await;
                    let done = Instant::now();
                    let mut r = cell.borrow_mut();
                    r.latency(format!("{name}_http")).record(done - sent);
                    match res {
                        Ok(reply) if reply.status == 200 => {
                            r.add(format!("{name}_calls"), 1);
                            r.history.publishes.push(PublishRecord { users, kind: EVENT_TYPE.into(), seq, sent, done });
                        }
                        Ok(reply) => r.history.fail(PUBLISH, reply.brief()),
                        Err(e) => r.history.fail(PUBLISH, e.to_string()),
                    }
                }
            })
            .await;
        rec = cell.into_inner();
        rec.span(name.clone(), start, Instant::now());
        ctx.sync(&format!("{name} done")).await?;
        note_cpu(&env, &ctx, &mut rec, &name, "end")?;
        for k in 0..args.calls {
            for i in call_users(k, n, users) {
                *expected.entry(env.user("p", i)).or_default() += 1;
            }
        }
    }

    // Every stream waits for the events published to its user (by any thread), then a little
    // longer for duplicates.
    wait_for(env.settle_deadline(), || {
        c.streams.iter().all(|s| {
            let r = s.record.borrow();
            let want = expected.get(&r.user).copied().unwrap_or(0);
            r.lost.is_some() || r.events.iter().filter(|e| matches!(e.body, EventBody::App { .. })).count() >= want
        })
    })
    .await;
    super::close_streams(&mut rec, c.streams, &c.stop).await;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_cover_the_users_evenly_and_seqs_are_unique() {
        let mut hits = vec![0; 10];
        for k in 0..20 {
            for i in call_users(k, 5, 10) {
                hits[i] += 1;
            }
        }
        assert!(hits.iter().all(|&h| h == 10), "{hits:?}");
        assert_ne!(seq(0, 100, 99), seq(1, 100, 0));
    }
}
