//! The scenarios, and what they share: the run's environment, a per-thread recorder, opening and
//! waiting for streams.

pub mod actions;
pub mod churn;
pub mod delivery;
pub mod healthz;
pub mod idle;
pub mod publish;
pub mod soak;
pub mod spin;
pub mod swipes;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cli::Common;
use super::error::LoadError;
use super::history::{History, StreamRecord};
use super::http::Http;
use super::procfs::cpu_time;
use super::report::Report;
use super::stats::Latency;
use super::stream::{self, StreamHandle};
use super::target::Target;
use super::token::TokenSource;
use super::workers::WorkerCtx;

/// How often a waiting scenario looks at its streams again. Latencies come from the instants
/// the readers recorded, so this only bounds how soon a phase notices it is done.
const POLL: Duration = Duration::from_millis(5);
/// After the expected events are in, how long to keep listening for duplicates.
pub const GRACE: Duration = Duration::from_millis(200);

/// What every thread of a run shares.
pub struct Env {
    /// The servers (at least one); user i goes to `targets[i % n]`.
    pub targets: Vec<Target>,
    pub tokens: TokenSource,
    pub common: Common,
    /// Prefix of every generated user id.
    pub run_id: String,
    /// Hard end of the run.
    pub deadline: Instant,
}

impl Env {
    /// A fresh HTTP side for the calling thread, sending to the first target.
    pub fn http(&self) -> Http {
        Http::new(&self.targets[0].http, self.common.concurrency, Duration::from_millis(self.common.request_timeout_ms))
    }

    /// `http` (the calling thread's pools) once per target, in target order: `[i % n]` is user i's.
    pub fn https(&self, http: &Http) -> Vec<Http> {
        self.targets.iter().map(|t| http.with_base(&t.http)).collect()
    }

    /// Index of the target that user (or stream, or request) number `i` goes to.
    pub fn node(&self, i: usize) -> usize {
        i % self.targets.len()
    }

    /// Requests in flight per thread.
    pub fn concurrency(&self) -> usize {
        self.common.concurrency.max(1)
    }

    /// Until when to wait for expected events, from now (never past the run's deadline).
    pub fn settle_deadline(&self) -> Instant {
        (Instant::now() + Duration::from_millis(self.common.settle_ms)).min(self.deadline)
    }

    pub fn user(&self, kind: &str, i: usize) -> String {
        format!("{}-{kind}{i}", self.run_id)
    }
}

/// A measurement's name: usually a literal, built for phases a run repeats (`publish_100`).
pub type Name = Cow<'static, str>;

/// What one client thread measured; threads' recorders are merged into one.
#[derive(Debug, Default)]
pub struct Recorder {
    pub history: History,
    pub latencies: BTreeMap<Name, Latency>,
    pub counts: BTreeMap<Name, u64>,
    /// Start and end of a timed phase (merged: earliest start, latest end).
    pub spans: BTreeMap<Name, (Instant, Instant)>,
    /// Single readings (memory, CPU time), keyed by name.
    pub readings: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn latency(&mut self, name: impl Into<Name>) -> &mut Latency {
        self.latencies.entry(name.into()).or_default()
    }

    pub fn add(&mut self, name: impl Into<Name>, n: u64) {
        *self.counts.entry(name.into()).or_default() += n;
    }

    pub fn span(&mut self, name: impl Into<Name>, start: Instant, end: Instant) {
        let e = self.spans.entry(name.into()).or_insert((start, end));
        *e = (e.0.min(start), e.1.max(end));
    }

    pub fn merge(&mut self, other: Recorder) {
        self.history.merge(other.history);
        for (k, v) in other.latencies {
            self.latency(k).merge(&v);
        }
        for (k, v) in other.counts {
            self.add(k, v);
        }
        for (k, (s, e)) in other.spans {
            self.span(k, s, e);
        }
        self.readings.extend(other.readings);
    }

    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// `count` per second over `span`.
    pub fn rate(&self, count: &str, span: &str) -> Option<f64> {
        let (s, e) = self.spans.get(span)?;
        let secs = e.duration_since(*s).as_secs_f64();
        (secs > 0.0).then(|| self.count(count) as f64 / secs)
    }

    pub fn seconds(&self, span: &str) -> Option<f64> {
        self.spans.get(span).map(|(s, e)| e.duration_since(*s).as_secs_f64())
    }
}

/// Thread 0 notes the server's (with `--server-pid`; summed over several) and this process's CPU time so far, under
/// `<phase>.server.<mark>` and `<phase>.client.<mark>` (nanoseconds).
pub fn note_cpu(env: &Env, ctx: &WorkerCtx, rec: &mut Recorder, phase: &str, mark: &str) -> Result<(), LoadError> {
    if ctx.index != 0 {
        return Ok(());
    }
    if !env.common.server_pid.is_empty() {
        let mut ns = 0u64;
        for &pid in &env.common.server_pid {
            ns += cpu_time(pid)?.as_nanos() as u64;
        }
        rec.readings.insert(format!("{phase}.server.{mark}"), ns);
    }
    rec.readings.insert(format!("{phase}.client.{mark}"), cpu_time(std::process::id())?.as_nanos() as u64);
    Ok(())
}

/// Reports CPU microseconds per request of `phase` (between marks `start` and `end`).
pub fn report_cpu(rec: &Recorder, report: &mut Report, phase: &str, unit: &str, requests: u64) {
    if requests == 0 {
        return;
    }
    for side in ["server", "client"] {
        let get = |mark: &str| rec.readings.get(&format!("{phase}.{side}.{mark}")).copied();
        if let (Some(a), Some(b)) = (get("start"), get("end")) {
            let us = b.saturating_sub(a) as f64 / 1000.0 / requests as f64;
            report.rate(&format!("{side}_cpu_us_per_{unit}"), us);
        }
    }
}

/// A stream to open: its (empty) record, the token to open it with and the target it goes to
/// (an index into `Env::targets`, taken modulo their number).
pub struct StreamSpec {
    pub record: StreamRecord,
    pub token: String,
    pub target: usize,
}

/// Opens `specs`, `concurrency` at a time. Failures go to the history; the rest are returned.
pub async fn open_streams(
    env: &Env,
    http: &Http,
    specs: Vec<StreamSpec>,
    stop: &watch::Sender<bool>,
    history: &mut History,
) -> Vec<StreamHandle> {
    let results: Vec<_> = futures_util::stream::iter(specs)
        .map(|spec| {
            let rx = stop.subscribe();
            async move {
                let what = match spec.record.transport {
                    super::history::Transport::Ws => "GET /v1/ws",
                    super::history::Transport::Sse => "GET /v1/events",
                };
                let target = &env.targets[env.node(spec.target)];
                stream::open(http, target, &spec.token, spec.record, rx).await.map_err(|e| (what, e))
            }
        })
        .buffer_unordered(env.concurrency())
        .collect()
        .await;
    let mut handles = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(h) => handles.push(h),
            Err((what, e)) => history.fail(what, e.to_string()),
        }
    }
    handles
}

/// Waits until every open stream of a user whose pair matched (per the recorded answers) has its
/// `match` event (or the settle deadline passes), lets late duplicates arrive for `GRACE`, then
/// closes the streams and records what each saw.
pub async fn settle_match_events(
    env: &Env,
    rec: &mut Recorder,
    streams: Vec<crate::load::stream::StreamHandle>,
    stop: &tokio::sync::watch::Sender<bool>,
) {
    wait_match_events(env, rec, &streams).await;
    close_streams(rec, streams, stop).await;
}

/// Lets late duplicates arrive for `GRACE`, then closes the streams (`stop`) and records what each saw.
pub async fn close_streams(
    rec: &mut Recorder,
    streams: Vec<crate::load::stream::StreamHandle>,
    stop: &tokio::sync::watch::Sender<bool>,
) {
    tokio::time::sleep(GRACE).await;
    stop.send_replace(true);
    rec.history.streams.extend(crate::load::stream::finish(streams).await);
}

/// Waits until every open stream of a user whose pair matched (per the recorded answers) has its
/// `match` event, or the settle deadline passes.
pub async fn wait_match_events(env: &Env, rec: &Recorder, streams: &[crate::load::stream::StreamHandle]) {
    let matched: std::collections::HashSet<&str> = rec
        .history
        .swipes
        .iter()
        .filter_map(|s| s.answer.as_ref()?.match_.as_ref())
        .flat_map(|m| m.users.iter().map(String::as_str))
        .collect();
    wait_for(env.settle_deadline(), || {
        streams.iter().all(|s| {
            let r = s.record.borrow();
            r.lost.is_some()
                || !matched.contains(r.user.as_str())
                || r.events.iter().any(|e| matches!(e.body, crate::load::wire::EventBody::Match { .. }))
        })
    })
    .await;
}

/// Polls `done` until it holds or `until` passes. Returns whether it held.
pub async fn wait_for(until: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deterministic pseudo-random pick of a `fraction` of indexes (splitmix64).
pub fn picked(seed: u64, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z as f64) < fraction * (u64::MAX as f64)
}

/// Refuses a fraction outside 0..=1.
pub fn check_fraction(flag: &str, value: f64) -> Result<(), LoadError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(LoadError::Usage(format!("{flag} must be between 0 and 1, not {value}")))
    }
}

/// Items `0..n` whose index is below `fraction * n`.
pub fn first_fraction(n: usize, fraction: f64) -> usize {
    ((n as f64) * fraction).ceil().min(n as f64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_follow_the_fraction() {
        let n = (0..10_000u64).filter(|&i| picked(i, 0.1)).count();
        assert!((800..1200).contains(&n), "{n}");
        assert!(!(0..100u64).any(|i| picked(i, 0.0)));
        assert!((0..100u64).all(|i| picked(i, 1.0)));
        assert_eq!(first_fraction(10, 0.25), 3);
        assert_eq!(first_fraction(10, 1.0), 10);
    }
}
