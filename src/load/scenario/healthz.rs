//! `healthz`: `GET /healthz` as fast as the client settings allow. The swipe endpoint's rate is
//! judged against this: same server, same machine, same client, same run.

use std::cell::RefCell;
use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::{note_cpu, report_cpu, Env, Recorder};
use crate::load::cli::HealthzArgs;
use crate::load::error::LoadError;
use crate::load::http::Http;
use crate::load::report::Report;
use crate::load::workers;

/// Fills the keep-alive pool (`n` requests at once) so the timed phase does not pay for connects.
pub async fn warm_up(http: &Http, n: usize) {
    futures_util::stream::iter(0..n)
        .for_each_concurrent(n.max(1), |_| async {
            let _ = http.get("/healthz", None).await;
        })
        .await;
}

/// Sends `requests` GETs over all threads; counts `healthz`, span `healthz`, latency `healthz_http`.
pub async fn measure(env: Arc<Env>, requests: usize) -> Result<Recorder, LoadError> {
    let threads = env.common.threads;
    let deadline = env.deadline;
    let parts = workers::run(threads, deadline, move |ctx| {
        let env = env.clone();
        async move {
            let https = env.https(&env.http());
            let c = env.concurrency();
            for http in &https {
                warm_up(http, c).await;
            }
            let rec = RefCell::new(Recorder::default());
            let mine = ctx.share(requests).count();
            ctx.sync("healthz").await?;
            let mut marks = Recorder::default();
            note_cpu(&env, &ctx, &mut marks, "healthz", "start")?;
            let start = Instant::now();
            futures_util::stream::iter(0..mine)
                .for_each_concurrent(c, |k| {
                    let (https, rec, env) = (&https, &rec, &env);
                    async move {
                        let sent = Instant::now();
                        let res = https[env.node(k)].get("/healthz", None).await;
                        let mut r = rec.borrow_mut();
                        r.latency("healthz_http").record(sent.elapsed());
                        match res {
                            Ok(reply) if reply.status == 200 => r.add("healthz", 1),
                            Ok(reply) => r.history.fail("GET /healthz", reply.brief()),
                            Err(e) => r.history.fail("GET /healthz", e.to_string()),
                        }
                    }
                })
                .await;
            let mut rec = rec.into_inner();
            rec.span("healthz", start, Instant::now());
            ctx.sync("healthz done").await?;
            note_cpu(&env, &ctx, &mut rec, "healthz", "end")?;
            rec.merge(marks);
            Ok(rec)
        }
    })
    .await?;
    let mut total = Recorder::default();
    for p in parts {
        total.merge(p);
    }
    Ok(total)
}

pub async fn run(env: Arc<Env>, args: HealthzArgs) -> Result<Report, LoadError> {
    if args.requests == 0 {
        return Err(LoadError::Usage("--requests must be at least 1".into()));
    }
    let rec = measure(env.clone(), args.requests).await?;
    let mut report = Report::new("healthz", &env);
    report.param("requests", args.requests);
    report.count("healthz_ok", rec.count("healthz"));
    if let Some(r) = rec.rate("healthz", "healthz") {
        report.rate("healthz_per_sec", r);
    }
    report_cpu(&rec, &mut report, "healthz", "healthz", rec.count("healthz"));
    report.latencies(&rec);
    report.finish(&rec.history);
    Ok(report)
}
