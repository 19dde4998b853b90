//! `swipes`: mutual pairs whose two right swipes are fired at the same instant from separate
//! connections, a fraction of swipes repeated with the same `swipe_id`, and one-sided "noise"
//! swipes on users who never swipe back. Optionally some users hold a WebSocket, to check each gets
//! its `match` exactly once. Measures the swipe endpoint's throughput and latency, and with
//! `--compare-healthz` the same server's `/healthz` rate before and after, for the ratio.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::actions::{self, Swipe};
use super::{
    check_fraction, first_fraction, note_cpu, open_streams, picked, report_cpu, wait_for, Env, Recorder, StreamSpec,
};
use crate::load::cli::SwipesArgs;
use crate::load::error::LoadError;
use crate::load::history::{StreamRecord, Transport};
use crate::load::report::Report;
use crate::load::workers::{self, WorkerCtx};

/// One unit of work: a pair's two swipes (plus retries), or one noise swipe.
#[derive(Clone, Copy)]
enum Task {
    Pair(usize),
    Noise(usize),
}

struct Names<'a> {
    env: &'a Env,
}

impl Names<'_> {
    fn a(&self, p: usize) -> String {
        self.env.user("s", p) + "a"
    }
    fn b(&self, p: usize) -> String {
        self.env.user("s", p) + "b"
    }
    fn lonely(&self, j: usize) -> String {
        self.env.user("n", j)
    }
}

pub async fn run(env: Arc<Env>, args: SwipesArgs) -> Result<Report, LoadError> {
    check_fraction("--retry-fraction", args.retry_fraction)?;
    check_fraction("--ws-fraction", args.ws_fraction)?;
    if args.pairs == 0 {
        return Err(LoadError::Usage("--pairs must be at least 1".into()));
    }
    let expected_requests = 2 * args.pairs + args.noise + (2.0 * args.pairs as f64 * args.retry_fraction) as usize;
    let before = match args.compare_healthz {
        true => Some(super::healthz::measure(env.clone(), expected_requests).await?),
        false => None,
    };
    let shared = (env.clone(), Arc::new(args.clone()));
    let parts = workers::run(env.common.threads, env.deadline, move |ctx| {
        let (env, args) = shared.clone();
        async move { worker(env, args, ctx).await }
    })
    .await?;
    let after = match args.compare_healthz {
        true => Some(super::healthz::measure(env.clone(), expected_requests).await?),
        false => None,
    };
    let mut rec = Recorder::default();
    for p in parts {
        rec.merge(p);
    }

    let mut report = Report::new("swipes", &env);
    report.param("pairs", args.pairs);
    report.param("retry_fraction", args.retry_fraction);
    report.param("noise", args.noise);
    report.param("ws_fraction", args.ws_fraction);
    report.count("swipe_requests", rec.count("swipe_requests"));
    report.count("streams", rec.history.streams.len() as u64);
    let matched = rec
        .history
        .swipes
        .iter()
        .filter(|s| !s.retry && s.answer.as_ref().is_some_and(|a| a.status == "matched"))
        .count();
    report.count("matched_answers", matched as u64);
    let swipe_rate = rec.rate("swipe_requests", "swipes");
    if let Some(r) = swipe_rate {
        report.rate("swipes_per_sec", r);
    }
    if let Some(s) = rec.seconds("swipes") {
        report.rate("burst_seconds", s);
    }
    report_cpu(&rec, &mut report, "swipes", "swipe", rec.count("swipe_requests"));
    let mut healthz_rates = Vec::new();
    for (name, h) in [("healthz_before_per_sec", &before), ("healthz_after_per_sec", &after)] {
        if let Some(h) = h {
            if let Some(r) = h.rate("healthz", "healthz") {
                report.rate(name, r);
                healthz_rates.push(r);
            }
            if let Some(l) = h.latencies.get("healthz_http") {
                report.latency(name.trim_end_matches("_per_sec"), l);
            }
            let mut cpu = Report::new("", &env);
            report_cpu(h, &mut cpu, "healthz", "healthz", h.count("healthz"));
            for (k, v) in cpu.figures {
                report.rate(&format!("{}_{k}", name.trim_end_matches("_per_sec")), v);
            }
            rec.history.failures.extend(h.history.failures.iter().cloned());
        }
    }
    if let (Some(s), false) = (swipe_rate, healthz_rates.is_empty()) {
        let mean = healthz_rates.iter().sum::<f64>() / healthz_rates.len() as f64;
        report.rate("swipe_vs_healthz", s / mean);
        report.note(format!(
            "swipes/s is {:.0}% of the mean /healthz rate measured just before and after with the same client",
            100.0 * s / mean
        ));
    }
    if !rec.history.streams.is_empty() {
        let d = super::delivery::match_latencies(&rec.history);
        d.report(&mut report);
    }
    report.latencies(&rec);
    report.finish(&rec.history);
    Ok(report)
}

/// A right swipe, repeated with the same `swipe_id` once answered when `retry`.
async fn like(
    http: &crate::load::http::Http,
    rec: &RefCell<Recorder>,
    token: &str,
    actor: &str,
    target: &str,
    swipe_id: &str,
    retry: bool,
) {
    let s = Swipe { token, actor, target, right: true, swipe_id: Some(swipe_id), retry: false };
    if actions::swipe(http, rec, s).await.is_some() && retry {
        let s = Swipe { token, actor, target, right: true, swipe_id: Some(swipe_id), retry: true };
        actions::swipe(http, rec, s).await;
    }
}

async fn worker(env: Arc<Env>, args: Arc<SwipesArgs>, ctx: WorkerCtx) -> Result<Recorder, LoadError> {
    let http = env.http();
    // Pair p's users count as users 2p and 2p + 1 (so with several targets they are on different
    // ones); lonely user j as user j.
    let https = env.https(&http);
    let names = Names { env: &env };
    let pairs: Vec<usize> = ctx.share(args.pairs).collect();
    let noise: Vec<usize> = ctx.share(args.noise).collect();
    let ws_pairs = first_fraction(args.pairs, args.ws_fraction);
    let ws_noise = first_fraction(args.noise, args.ws_fraction);

    let mut users: Vec<String> = Vec::new();
    for &p in &pairs {
        users.push(names.a(p));
        users.push(names.b(p));
    }
    for &j in &noise {
        users.push(names.a(j % args.pairs));
        if j < ws_noise {
            users.push(names.lonely(j));
        }
    }
    users.sort();
    users.dedup();
    let tokens: HashMap<String, String> =
        users.iter().cloned().zip(env.tokens.tokens(&http, &users, env.concurrency()).await?).collect();
    let token = |u: &str| tokens.get(u).map(String::as_str).unwrap_or_default();

    let mut rec = Recorder::default();
    let (stop, _) = watch::channel(false);
    let mut specs = Vec::new();
    for &p in pairs.iter().filter(|&&p| p < ws_pairs) {
        for (u, i) in [(names.a(p), 2 * p), (names.b(p), 2 * p + 1)] {
            let record = StreamRecord::new(&u, 0, Transport::Ws);
            specs.push(StreamSpec { token: token(&u).to_string(), record, target: i });
        }
    }
    for &j in noise.iter().filter(|&&j| j < ws_noise) {
        let u = names.lonely(j);
        specs.push(StreamSpec {
            token: token(&u).to_string(),
            record: StreamRecord::new(&u, 0, Transport::Ws),
            target: j,
        });
    }
    let streams = open_streams(&env, &http, specs, &stop, &mut rec.history).await;
    wait_for(env.settle_deadline(), || streams.iter().all(|s| s.settled())).await;
    for http in &https {
        super::healthz::warm_up(http, env.concurrency()).await;
    }

    // Interleave noise among the pairs so it lands throughout the burst.
    let mut tasks: Vec<Task> = pairs.iter().map(|&p| Task::Pair(p)).collect();
    let every = (pairs.len() / noise.len().max(1)).max(1);
    for (k, &j) in noise.iter().enumerate() {
        tasks.insert(((k + 1) * every).min(tasks.len()), Task::Noise(j));
    }

    ctx.sync("burst").await?;
    note_cpu(&env, &ctx, &mut rec, "swipes", "start")?;
    let start = Instant::now();
    rec.history.actions_from = Some(start);
    let rec = RefCell::new(rec);
    let in_flight = (env.concurrency() / 2).max(1);
    futures_util::stream::iter(tasks)
        .for_each_concurrent(in_flight, |task| {
            let (https, rec, names, args, token, env) = (&https, &rec, &names, &args, &token, &env);
            async move {
                match task {
                    Task::Pair(p) => {
                        let (a, b) = (names.a(p), names.b(p));
                        let (ida, idb) = (format!("{a}-like"), format!("{b}-like"));
                        let retry_a = picked(2 * p as u64, args.retry_fraction);
                        let retry_b = picked(2 * p as u64 + 1, args.retry_fraction);
                        let (http_a, http_b) = (&https[env.node(2 * p)], &https[env.node(2 * p + 1)]);
                        futures_util::future::join(
                            like(http_a, rec, token(&a), &a, &b, &ida, retry_a),
                            like(http_b, rec, token(&b), &b, &a, &idb, retry_b),
                        )
                        .await;
                    }
                    Task::Noise(j) => {
                        let (actor, target) = (names.a(j % args.pairs), names.lonely(j));
                        let http = &https[env.node(2 * (j % args.pairs))];
                        let id = format!("{actor}-noise{j}");
                        let s = Swipe {
                            token: token(&actor),
                            actor: &actor,
                            target: &target,
                            right: true,
                            swipe_id: Some(&id),
                            retry: false,
                        };
                        actions::swipe(http, rec, s).await;
                    }
                }
            }
        })
        .await;
    let end = Instant::now();
    let mut rec = rec.into_inner();
    rec.span("swipes", start, end);
    rec.add("swipe_requests", rec.history.swipes.len() as u64);
    ctx.sync("burst done").await?;
    note_cpu(&env, &ctx, &mut rec, "swipes", "end")?;

    // Every connected user of a matched pair must hear of it; wait for that, then a little longer.
    super::settle_match_events(&env, &mut rec, streams, &stop).await;
    Ok(rec)
}
