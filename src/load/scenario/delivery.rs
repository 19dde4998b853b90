//! `delivery`: U users connected (T tabs each, WebSocket or SSE), then mutual pairs swiped one
//! after the other (the second swipe decides). Measures, per pair, the time from sending the
//! deciding swipe to the `match` event having reached every tab of both users, and how long after
//! the swipe's own answer the last event arrived.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::actions::{self, Swipe};
use super::{check_fraction, first_fraction, open_streams, wait_for, Env, Recorder, StreamSpec};
use crate::load::cli::{Audience, DeliveryArgs};
use crate::load::error::LoadError;
use crate::load::history::{History, StreamRecord, Transport};
use crate::load::http::Http;
use crate::load::report::Report;
use crate::load::stats::Latency;
use crate::load::stream::StreamHandle;
use crate::load::wire::EventBody;
use crate::load::workers::{self, WorkerCtx};

/// Match delivery latencies computed from a history.
#[derive(Debug, Default)]
pub struct MatchLatencies {
    /// Deciding swipe sent -> the match event on every tab of both users.
    pub both_users: Latency,
    /// The deciding swipe's answer -> the last of those events (0 when all came before the answer).
    pub after_answer: Latency,
    /// Deciding swipe sent -> the event, per tab.
    pub per_tab: Latency,
    /// Events that arrived before the answer of the swipe that caused them.
    pub before_answer: u64,
    /// Matches whose events were all seen.
    pub complete: u64,
}

impl MatchLatencies {
    pub fn report(&self, report: &mut Report) {
        report.latency("match_event_both_users", &self.both_users);
        report.latency("match_event_after_answer", &self.after_answer);
        report.latency("match_event_per_tab", &self.per_tab);
        report.count("match_events_before_answer", self.before_answer);
        report.count("matches_fully_delivered", self.complete);
    }
}

/// For each deciding (`matched`, first-time) swipe, when its match reached the users' tabs that
/// were open since the actions began.
pub fn match_latencies(h: &History) -> MatchLatencies {
    let mut out = MatchLatencies::default();
    let from = h.actions_from;
    let mut tabs: HashMap<&str, Vec<&StreamRecord>> = HashMap::new();
    for s in &h.streams {
        if from.is_some_and(|t| s.ready_before(t)) && s.lost.is_none() {
            tabs.entry(s.user.as_str()).or_default().push(s);
        }
    }
    for sw in h.swipes.iter().filter(|s| !s.retry) {
        let Some(m) = sw.answer.as_ref().filter(|a| a.status == "matched").and_then(|a| a.match_.as_ref()) else {
            continue;
        };
        let mut last: Option<Instant> = None;
        let mut complete = true;
        let mut any = false;
        for user in &m.users {
            for s in tabs.get(user.as_str()).map(Vec::as_slice).unwrap_or(&[]) {
                any = true;
                let at = s.events.iter().find_map(|e| match &e.body {
                    EventBody::Match { match_id, .. } if *match_id == m.match_id => Some(e.at),
                    _ => None,
                });
                match at {
                    Some(at) => {
                        out.per_tab.record(at.saturating_duration_since(sw.sent));
                        if at < sw.done {
                            out.before_answer += 1;
                        }
                        last = Some(last.map_or(at, |l| l.max(at)));
                    }
                    None => complete = false,
                }
            }
        }
        if let (true, true, Some(last)) = (any, complete, last) {
            out.complete += 1;
            out.both_users.record(last.saturating_duration_since(sw.sent));
            out.after_answer.record(last.saturating_duration_since(sw.done));
        }
    }
    out
}

/// Swipes pairs `pairs` (users `<kind>2k` and `<kind>2k+1`), `in_flight` at a time: the first
/// swipe, then the deciding one. User i's requests go to target i mod n.
pub async fn swipe_pairs<'a>(
    env: &Env,
    https: &[Http],
    rec: &RefCell<Recorder>,
    token: &impl Fn(&str) -> &'a str,
    kind: &str,
    pairs: &[usize],
    in_flight: usize,
) {
    futures_util::stream::iter(pairs.iter().copied())
        .for_each_concurrent(in_flight.max(1), |k| async move {
            let (http_a, http_b) = (&https[env.node(2 * k)], &https[env.node(2 * k + 1)]);
            let (a, b) = (env.user(kind, 2 * k), env.user(kind, 2 * k + 1));
            let first = Swipe { token: token(&a), actor: &a, target: &b, right: true, swipe_id: None, retry: false };
            if actions::swipe(http_a, rec, first).await.is_some() {
                let second =
                    Swipe { token: token(&b), actor: &b, target: &a, right: true, swipe_id: None, retry: false };
                actions::swipe(http_b, rec, second).await;
            }
        })
        .await;
}

pub async fn run(env: Arc<Env>, args: DeliveryArgs) -> Result<Report, LoadError> {
    check_audience(&args.audience)?;
    let users = args.audience.users;
    let pairs = args.pairs.unwrap_or(users / 2);
    if pairs == 0 || pairs > users / 2 {
        return Err(LoadError::Usage(format!("--pairs must be between 1 and users / 2 = {}", users / 2)));
    }
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
    let mut report = Report::new("delivery", &env);
    report_audience(&args.audience, &rec, &mut report);
    report.param("pairs", pairs);
    report.param("pairs_in_flight_per_thread", args.pairs_in_flight);
    report.count("swipe_requests", rec.history.swipes.len() as u64);
    if let Some(r) = rec.rate("pairs", "swipes") {
        report.rate("pairs_per_sec", r);
    }
    match_latencies(&rec.history).report(&mut report);
    report.latencies(&rec);
    report.finish(&rec.history);
    Ok(report)
}

/// One thread's share of an `Audience`: users `<kind>i` (a pair's two users on the same thread:
/// user i belongs to group i / 2), each with its tabs open and ready, and every target warmed up.
/// User i's requests and streams go to target i mod n, so with several targets a pair's users are
/// on different ones.
pub struct Connected {
    pub tokens: HashMap<String, String>,
    pub streams: Vec<StreamHandle>,
    /// Sending `true` stops the streams.
    pub stop: watch::Sender<bool>,
}

impl Connected {
    pub fn token(&self, user: &str) -> &str {
        self.tokens.get(user).map(String::as_str).unwrap_or_default()
    }
}

/// Checks an audience's flags.
pub fn check_audience(a: &Audience) -> Result<(), LoadError> {
    check_fraction("--sse-fraction", a.sse_fraction)?;
    if a.users < 2 || a.tabs == 0 {
        return Err(LoadError::Usage("--users must be at least 2 and --tabs at least 1".into()));
    }
    Ok(())
}

/// Reports an audience's flags and how many of its connections became ready.
pub fn report_audience(a: &Audience, rec: &Recorder, report: &mut Report) {
    report.param("users", a.users);
    report.param("tabs", a.tabs);
    report.param("sse_fraction", a.sse_fraction);
    let ready = rec.history.streams.iter().filter(|s| s.hello.is_some()).count();
    report.count("connections_ready", ready as u64);
    if let Some(s) = rec.seconds("connect") {
        report.rate("connect_seconds", s);
    }
}

/// Connects this thread's share of `audience` (span `connect`; failures go to the history).
pub async fn connect(
    env: &Env,
    ctx: &WorkerCtx,
    https: &[Http],
    kind: &str,
    audience: &Audience,
    rec: &mut Recorder,
) -> Result<Connected, LoadError> {
    let http = &https[0];
    let users: Vec<usize> = (0..audience.users).filter(|&i| ctx.owns(i / 2)).collect();
    let names: Vec<String> = users.iter().map(|&i| env.user(kind, i)).collect();
    let tokens: HashMap<String, String> =
        names.iter().cloned().zip(env.tokens.tokens(http, &names, env.concurrency()).await?).collect();
    let sse_users = first_fraction(audience.users, audience.sse_fraction);
    let (stop, _) = watch::channel(false);
    let mut specs = Vec::new();
    for (&i, name) in users.iter().zip(&names) {
        let transport = if i < sse_users { Transport::Sse } else { Transport::Ws };
        for tab in 0..audience.tabs {
            let token = tokens.get(name).cloned().unwrap_or_default();
            specs.push(StreamSpec { token, record: StreamRecord::new(name, tab, transport), target: i });
        }
    }
    let connect_start = Instant::now();
    let streams = open_streams(env, http, specs, &stop, &mut rec.history).await;
    wait_for(env.settle_deadline(), || streams.iter().all(|s| s.settled())).await;
    rec.span("connect", connect_start, Instant::now());
    for http in https {
        super::healthz::warm_up(http, env.concurrency()).await;
    }
    Ok(Connected { tokens, streams, stop })
}

async fn worker(env: Arc<Env>, args: Arc<DeliveryArgs>, pairs: usize, ctx: WorkerCtx) -> Result<Recorder, LoadError> {
    let http = env.http();
    let https = env.https(&http);
    let mut rec = Recorder::default();
    let c = connect(&env, &ctx, &https, "d", &args.audience, &mut rec).await?;
    let token = |u: &str| c.token(u);

    let my_pairs: Vec<usize> = (0..pairs).filter(|&k| ctx.owns(k)).collect();
    ctx.sync("swipes").await?;
    let start = Instant::now();
    rec.history.actions_from = Some(start);
    let rec = RefCell::new(rec);
    swipe_pairs(&env, &https, &rec, &token, "d", &my_pairs, args.pairs_in_flight).await;
    let mut rec = rec.into_inner();
    rec.span("swipes", start, Instant::now());
    rec.add("pairs", my_pairs.len() as u64);

    // Every connected user of a matched pair must hear of it; wait for that, then a little longer.
    super::settle_match_events(&env, &mut rec, c.streams, &c.stop).await;
    Ok(rec)
}
