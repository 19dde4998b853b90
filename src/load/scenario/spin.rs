//! `spin`: the queue of the contract. Every user holds a WebSocket and joins one pool (by default a
//! fresh one per run) at the same instant; each must get a room (`200 matched` or `room_assigned`).
//! Then, for a few rounds, one member of every room skips (both members at once in a fraction of
//! rooms): both must hear `room_closed` and are requeued by default. A pool may refuse to pair two
//! users again soon (matchd's rematch window), so after a requeue only users who could have been
//! paired with each other and were not count as stuck. Finally every room is skipped without
//! requeue and everyone leaves the queue, repeatedly, until no room is open: every room seen must
//! have closed and every member must have heard it.
//! Measures join -> room, requeue -> room and skip -> partner's `room_closed`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::actions::{self, Joined};
use super::{check_fraction, open_streams, picked, wait_for, Env, Recorder, StreamSpec, GRACE};
use crate::load::cli::SpinArgs;
use crate::load::error::LoadError;
use crate::load::history::{History, JoinRecord, StreamRecord, Transport};
use crate::load::report::Report;
use crate::load::stats::Latency;
use crate::load::stream::{self, StreamHandle};
use crate::load::wire::{EventBody, RoomBody};
use crate::load::workers::{self, WorkerCtx};

/// Cleanup passes (skip without requeue, leave the queue) before giving up on closing every room.
/// A skipped partner is requeued and may be paired again at once, so each pass can leave up to
/// half as many rooms as the one before.
const CLEANUP_PASSES: usize = 16;
/// A requeue phase ends early once no user got a new room for this long.
const QUIET: std::time::Duration = std::time::Duration::from_millis(1500);

/// What one user knows of its rooms: from its join answer and its stream.
#[derive(Debug, Clone, Default)]
struct Place {
    /// The room of a `200 matched` join answer, with when the answer came.
    answered: Option<(Instant, RoomBody)>,
}

/// The user's current room: the latest one assigned (answer or event) that has not closed.
fn current_room(place: &Place, stream: &StreamRecord) -> Option<RoomBody> {
    let mut rooms: Vec<(Instant, RoomBody)> = place.answered.iter().cloned().collect();
    let mut closed = std::collections::HashSet::new();
    for e in &stream.events {
        match &e.body {
            EventBody::RoomAssigned { room_id, users } => {
                rooms.push((e.at, RoomBody { room_id: room_id.clone(), users: users.clone() }))
            }
            EventBody::RoomClosed { room_id, .. } => {
                closed.insert(room_id.clone());
            }
            _ => {}
        }
    }
    rooms.sort_by_key(|(at, _)| *at);
    rooms.into_iter().rev().find(|(_, r)| !closed.contains(&r.room_id)).map(|(_, r)| r)
}

/// When the user heard `room_closed` for `room_id`.
fn heard_closed(stream: &StreamRecord, room_id: &str) -> Option<Instant> {
    stream.events.iter().find_map(|e| match &e.body {
        EventBody::RoomClosed { room_id: r, .. } if r == room_id => Some(e.at),
        _ => None,
    })
}

fn valid_pool(pool: &str) -> bool {
    !pool.is_empty() && pool.len() <= 64 && pool.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

pub async fn run(env: Arc<Env>, args: SpinArgs) -> Result<Report, LoadError> {
    check_fraction("--both-skip-fraction", args.both_skip_fraction)?;
    let users = args.users / 2 * 2;
    if users < 2 {
        return Err(LoadError::Usage("--users must be at least 2".into()));
    }
    let pool = args.pool.clone().unwrap_or_else(|| env.run_id.clone());
    if !valid_pool(&pool) {
        return Err(LoadError::Usage("--pool must be 1..64 characters of [A-Za-z0-9_.-]".into()));
    }
    preflight(&env).await?;
    let shared = (env.clone(), Arc::new(args.clone()), Arc::new(pool.clone()));
    let parts = workers::run(env.common.threads, env.deadline, move |ctx| {
        let (env, args, pool) = shared.clone();
        async move { worker(env, args, pool, users, ctx).await }
    })
    .await?;
    let mut rec = Recorder::default();
    for p in parts {
        rec.merge(p);
    }
    let mut report = Report::new("spin", &env);
    report.param("users", users);
    report.param("rounds", args.rounds);
    report.param("pool", pool);
    report.param("both_skip_fraction", args.both_skip_fraction);
    report.count("joins", rec.history.joins.iter().filter(|j| j.previous_room.is_none()).count() as u64);
    report.count("requeues", rec.history.joins.iter().filter(|j| j.previous_room.is_some()).count() as u64);
    report.count("skips_acknowledged", rec.history.skips.len() as u64);
    report.count("skips_already_closed", rec.count("skips_already_closed"));
    report.count("requeued_without_new_room", rec.count("requeued_without_new_room"));
    report.count("cleanup_passes", rec.counts.get("cleanup_passes").copied().unwrap_or(0));
    let (join, requeue, partner) = room_latencies(&rec.history);
    report.latency("join_to_room", &join);
    report.latency("requeue_to_room", &requeue);
    report.latency("skip_to_partner_room_closed", &partner);
    report.latencies(&rec);
    report.finish(&rec.history);
    Ok(report)
}

/// One harmless request to see whether the server has a queue at all.
async fn preflight(env: &Env) -> Result<(), LoadError> {
    let http = env.http();
    let user = env.user("q", 0);
    let token = env.tokens.token(&http, &user).await?;
    let reply = http.delete("/v1/queue", Some(&token)).await?;
    if reply.status == 404 {
        return Err(LoadError::NotImplemented(format!("DELETE /v1/queue: it answered {}", reply.describe())));
    }
    Ok(())
}

/// Join -> room, requeue -> room, skip -> partner's `room_closed`, from the merged history.
fn room_latencies(h: &History) -> (Latency, Latency, Latency) {
    let (mut join, mut requeue, mut partner) = (Latency::new(), Latency::new(), Latency::new());
    let mut streams: HashMap<&str, Vec<&StreamRecord>> = HashMap::new();
    for s in &h.streams {
        streams.entry(s.user.as_str()).or_default().push(s);
    }
    let mut members: HashMap<&str, &Vec<String>> = HashMap::new();
    for s in &h.streams {
        for e in &s.events {
            if let EventBody::RoomAssigned { room_id, users } = &e.body {
                members.insert(room_id, users);
            }
        }
    }
    for j in &h.joins {
        let answered = j.room.as_ref().map(|_| j.done);
        let event = streams.get(j.user.as_str()).into_iter().flatten().flat_map(|s| s.events.iter()).find_map(|e| {
            match &e.body {
                EventBody::RoomAssigned { room_id, .. }
                    if e.at >= j.sent && Some(room_id) != j.previous_room.as_ref() =>
                {
                    Some(e.at)
                }
                _ => None,
            }
        });
        let got = match (answered, event) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = got {
            let target = if j.previous_room.is_some() { &mut requeue } else { &mut join };
            target.record(at.saturating_duration_since(j.sent));
        }
    }
    let mut first_skip: BTreeMap<&str, (&str, Instant)> = BTreeMap::new();
    for s in &h.skips {
        let e = first_skip.entry(&s.room_id).or_insert((&s.user, s.sent));
        if s.sent < e.1 {
            *e = (&s.user, s.sent);
        }
    }
    for (room, (skipper, sent)) in first_skip {
        let Some(users) = members.get(room) else { continue };
        for other in users.iter().filter(|u| u.as_str() != skipper) {
            if let Some(at) = streams.get(other.as_str()).into_iter().flatten().find_map(|s| heard_closed(s, room)) {
                partner.record(at.saturating_duration_since(sent));
            }
        }
    }
    (join, requeue, partner)
}

/// This thread's users: name, token, place, stream and the target (index) they talk to.
struct Spinner {
    name: String,
    token: String,
    place: Place,
    stream: usize,
    node: usize,
}

fn room_of(s: &Spinner, streams: &[StreamHandle]) -> Option<RoomBody> {
    current_room(&s.place, &streams[s.stream].record.borrow())
}

/// Everyone `s` has shared a room with.
fn partners(s: &Spinner, stream: &StreamRecord) -> std::collections::HashSet<String> {
    let mut out: std::collections::HashSet<String> = std::collections::HashSet::new();
    let answered = s.place.answered.iter().map(|(_, r)| &r.users);
    let assigned = stream.events.iter().filter_map(|e| match &e.body {
        EventBody::RoomAssigned { users, .. } => Some(users),
        _ => None,
    });
    for users in answered.chain(assigned) {
        out.extend(users.iter().filter(|u| **u != s.name).cloned());
    }
    out
}

async fn worker(
    env: Arc<Env>,
    args: Arc<SpinArgs>,
    pool: Arc<String>,
    users: usize,
    ctx: WorkerCtx,
) -> Result<Recorder, LoadError> {
    let http = env.http();
    let https = env.https(&http);
    let numbers: Vec<usize> = ctx.share(users).collect();
    let names: Vec<String> = numbers.iter().map(|&i| env.user("q", i)).collect();
    let tokens = env.tokens.tokens(&http, &names, env.concurrency()).await?;
    let mut rec = Recorder::default();
    let (stop, _) = watch::channel(false);
    let specs = names
        .iter()
        .zip(&tokens)
        .zip(&numbers)
        .map(|((u, t), &i)| StreamSpec { token: t.clone(), record: StreamRecord::new(u, 0, Transport::Ws), target: i })
        .collect();
    let streams = open_streams(&env, &http, specs, &stop, &mut rec.history).await;
    wait_for(env.settle_deadline(), || streams.iter().all(|s| s.settled())).await;
    for http in &https {
        super::healthz::warm_up(http, env.concurrency()).await;
    }
    let by_user: HashMap<String, usize> =
        streams.iter().enumerate().map(|(i, s)| (s.record.borrow().user.clone(), i)).collect();
    // Users whose stream failed to open cannot be followed; they sit the run out.
    let mut spinners: Vec<Spinner> = names
        .into_iter()
        .zip(tokens)
        .zip(numbers)
        .filter_map(|((name, token), i)| {
            let stream = *by_user.get(&name)?;
            Some(Spinner { name, token, place: Place::default(), stream, node: env.node(i) })
        })
        .collect();

    ctx.sync("join").await?;
    let start = Instant::now();
    rec.history.actions_from = Some(start);
    let rec = RefCell::new(rec);
    let joined: Vec<(usize, Joined)> = futures_util::stream::iter(0..spinners.len())
        .map(|i| {
            let (rec, s, pool) = (&rec, &spinners[i], pool.as_str());
            let http = &https[s.node];
            async move { (i, actions::join(http, rec, &s.token, &s.name, pool).await) }
        })
        .buffer_unordered(env.concurrency())
        .collect()
        .await;
    for (i, outcome) in joined {
        match outcome {
            Joined::NotFound(reply) => {
                stop.send_replace(true);
                stream::finish(streams).await;
                return Err(LoadError::NotImplemented(format!("POST /v1/queue: it answered {}", reply.describe())));
            }
            Joined::Matched(room) => spinners[i].place.answered = Some((Instant::now(), room)),
            Joined::Queued | Joined::Failed => {}
        }
    }
    wait_for(env.settle_deadline(), || spinners.iter().all(|s| room_of(s, &streams).is_some())).await;
    rec.borrow_mut().span("join", start, Instant::now());

    for round in 0..args.rounds {
        ctx.sync(&format!("round {round}")).await?;
        let leaving: Vec<Option<RoomBody>> = spinners.iter().map(|s| room_of(s, &streams)).collect();
        skip_all(&https, &rec, &spinners, &leaving, args.both_skip_fraction, true).await;
        // Both members hear the close and are requeued. Wait until each has a new room, or until
        // nobody got one for a while (the pool may keep former partners apart).
        let until = env.settle_deadline();
        let mut settled = 0;
        let mut last_progress = Instant::now();
        loop {
            let now_settled = spinners
                .iter()
                .zip(&leaving)
                .filter(|(s, old)| {
                    let Some(old) = old else { return true };
                    let r = streams[s.stream].record.borrow();
                    heard_closed(&r, &old.room_id).is_some()
                        && current_room(&s.place, &r).is_some_and(|now| now.room_id != old.room_id)
                })
                .count();
            if now_settled != settled {
                settled = now_settled;
                last_progress = Instant::now();
            }
            let now = Instant::now();
            if settled == spinners.len() || now >= until || now.duration_since(last_progress) >= QUIET {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Users of this thread still waiting who were never paired with each other were both
        // waiting and compatible: they count as stuck (I6). The others may be held apart.
        let waiting: Vec<usize> = (0..spinners.len())
            .filter(|&i| {
                let Some(old) = &leaving[i] else { return false };
                let r = streams[spinners[i].stream].record.borrow();
                current_room(&spinners[i].place, &r).is_none_or(|now| now.room_id == old.room_id)
            })
            .collect();
        let mut r = rec.borrow_mut();
        r.add("requeued_without_new_room", waiting.len() as u64);
        for (i, (s, old)) in spinners.iter().zip(&leaving).enumerate() {
            let Some(old) = old else { continue };
            let record = streams[s.stream].record.borrow();
            let expect_room = !waiting.contains(&i) || {
                let known = partners(s, &record);
                waiting.iter().any(|&j| j != i && !known.contains(&spinners[j].name))
            };
            // The requeue starts when the user hears its room closed (or, if it never does, now).
            let sent = heard_closed(&record, &old.room_id).unwrap_or_else(Instant::now);
            r.history.joins.push(JoinRecord {
                user: s.name.clone(),
                sent,
                done: sent,
                room: None,
                expect_room,
                previous_room: Some(old.room_id.clone()),
            });
        }
    }

    // Close everything: both members skip without requeue and leave the queue at once (a skipped
    // partner is requeued by the server and may be paired again, hence several passes).
    let mut all_closed = false;
    for pass in 0..CLEANUP_PASSES {
        ctx.sync(&format!("cleanup {pass}")).await?;
        rec.borrow_mut().add("cleanup_passes", u64::from(ctx.index == 0));
        let rooms: Vec<Option<RoomBody>> = spinners.iter().map(|s| room_of(s, &streams)).collect();
        futures_util::stream::iter(spinners.iter().zip(&rooms))
            .for_each_concurrent(env.concurrency(), |(s, room)| {
                let (http, rec) = (&https[s.node], &rec);
                async move {
                    if let Some(room) = room {
                        actions::skip(http, rec, &s.token, &s.name, &room.room_id, false, true).await;
                    }
                    actions::leave(http, rec, &s.token).await;
                }
            })
            .await;
        wait_for(env.settle_deadline(), || {
            spinners.iter().zip(&rooms).all(|(s, room)| {
                room.as_ref()
                    .is_none_or(|room| heard_closed(&streams[s.stream].record.borrow(), &room.room_id).is_some())
            })
        })
        .await;
        tokio::time::sleep(GRACE).await;
        let open_here = spinners.iter().filter(|s| room_of(s, &streams).is_some()).count();
        if ctx.all_agree(&format!("cleanup {pass} done"), open_here == 0).await? {
            all_closed = true;
            break;
        }
    }
    let mut rec = rec.into_inner();
    rec.history.expect_rooms_closed = true;
    if !all_closed {
        rec.history.fail("cleanup", format!("rooms were still open after {CLEANUP_PASSES} cleanup passes"));
    }
    stop.send_replace(true);
    rec.history.streams.extend(stream::finish(streams).await);
    Ok(rec)
}

/// Skips the rooms in `rooms` (one per spinner): the lower member always, the other too when the
/// room is picked by `both_fraction`.
async fn skip_all(
    https: &[crate::load::http::Http],
    rec: &RefCell<Recorder>,
    spinners: &[Spinner],
    rooms: &[Option<RoomBody>],
    both_fraction: f64,
    requeue: bool,
) {
    futures_util::stream::iter(spinners.iter().zip(rooms))
        .for_each_concurrent(None, |(s, room)| async move {
            let Some(room) = room else { return };
            let mut members = room.users.clone();
            members.sort();
            let seed = room.room_id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            let both = picked(seed, both_fraction);
            let first = members.first() == Some(&s.name);
            if first || both {
                actions::skip(&https[s.node], rec, &s.token, &s.name, &room.room_id, requeue, both).await;
            }
        })
        .await;
}
