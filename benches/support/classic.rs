//! The baseline designs, written as their authors describe them.
//!
//! The classic design: every swipe is one Lua script call in Redis that checks whether the
//! other side already liked this user, records the like or the match, and PUBLISHes the match
//! (its match script, verbatim). Decisions live in Redis; the app server is a pass-through.
//!
//! The polling queue: a Redis list (RPUSH to join); a background task wakes every 2 s, and if
//! two users wait, LPOPs them, stores the room and PUBLISHes it. As written it pairs ONE couple per
//! tick; a "drain" variant pairs every waiting couple each tick (kinder to the baseline).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands as _;

use super::burst::{histogram, Outcome};

/// the classic design's match script with the PUBLISH (KEYS: swipes:{u1}, swipes:{u2}, matches:{lo}:{hi}, channel).
pub const MATCH_SCRIPT: &str = r#"
local user1 = KEYS[1]
local user2 = KEYS[2]
local matchKey = KEYS[3]
local channel = KEYS[4]

-- Check if user2 has already swiped on user1
if redis.call('SISMEMBER', user2, user1) == 1 then
    -- Create a match atomically
    redis.call('SET', matchKey, 'matched')

    -- Publish match event
    redis.call('PUBLISH', channel, user1 .. ":" .. user2)

    return 'matched'
else
    -- Otherwise, store the swipe
    redis.call('SADD', user1, user2)
    return 'pending'
end
"#;

/// The channel the classic design publishes matches on.
pub const MATCH_CHANNEL: &str = "matches_channel";

/// The classic swipe path: one pipelined (multiplexed) connection, as fast as that design goes.
#[derive(Clone)]
pub struct ClassicSwipes {
    conn: MultiplexedConnection,
    script: Rc<redis::Script>,
}

impl ClassicSwipes {
    pub async fn connect(url: &str) -> ClassicSwipes {
        let client = redis::Client::open(url).expect("valid redis URL");
        let conn = client.get_multiplexed_async_connection().await.expect("redis connection");
        ClassicSwipes { conn, script: Rc::new(redis::Script::new(MATCH_SCRIPT)) }
    }

    /// `u1` swipes right on `u2`, exactly as the classic design's `swipe_right`.
    pub async fn swipe_right(&self, u1: &str, u2: &str) -> Outcome {
        let (lo, hi) = if u1 <= u2 { (u1, u2) } else { (u2, u1) };
        let mut conn = self.conn.clone();
        let mut inv = self.script.prepare_invoke();
        inv.key(format!("swipes:{u1}"))
            .key(format!("swipes:{u2}"))
            .key(format!("matches:{lo}:{hi}"))
            .key(MATCH_CHANNEL);
        match inv.invoke_async::<String>(&mut conn).await {
            Ok(s) if s == "pending" => Outcome::Pending,
            Ok(s) if s == "matched" => Outcome::Matched,
            Ok(other) => Outcome::Other(other),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Loads the script (EVALSHA needs it) and empties the database between runs.
    pub async fn reset(&self) {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.expect("FLUSHALL");
        let _: String = self.script.prepare_invoke().load_async(&mut conn).await.expect("SCRIPT LOAD");
    }
}

/// Subscribes to `channels` and records when each message arrives, for latency.
pub struct Listener {
    pub seen: Rc<RefCell<Vec<(String, String, Instant)>>>,
    task: actix_rt::task::JoinHandle<()>,
}

impl Listener {
    pub async fn start(url: &str, channels: &[&str]) -> Listener {
        let client = redis::Client::open(url).expect("valid redis URL");
        let mut pubsub = client.get_async_pubsub().await.expect("redis pubsub connection");
        for ch in channels {
            pubsub.subscribe(*ch).await.expect("SUBSCRIBE");
        }
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink = seen.clone();
        let task = actix_rt::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let payload: String = msg.get_payload().unwrap_or_default();
                sink.borrow_mut().push((msg.get_channel_name().to_string(), payload, Instant::now()));
            }
        });
        Listener { seen, task }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The polling queue's matchmaking.
#[derive(Clone)]
pub struct PollQueue {
    conn: MultiplexedConnection,
    pub queue: String,
    pub channel: String,
    /// As the classic design writes it: one pair per tick.
    pub one_pair_per_tick: bool,
}

impl PollQueue {
    pub async fn new(url: &str, name: &str, one_pair_per_tick: bool) -> PollQueue {
        let client = redis::Client::open(url).expect("valid redis URL");
        let conn = client.get_multiplexed_async_connection().await.expect("redis connection");
        PollQueue {
            conn,
            queue: format!("match_queue:{name}"),
            channel: format!("match_channel:{name}"),
            one_pair_per_tick,
        }
    }

    /// `enqueue_player`: RPUSH.
    pub async fn enqueue(&self, user: &str) {
        let mut conn = self.conn.clone();
        let _: i64 = conn.rpush(&self.queue, user).await.expect("RPUSH");
    }

    /// `try_match_players`: if two wait, pop them, store the room, publish it.
    pub async fn try_match_players(&self) {
        let mut conn = self.conn.clone();
        loop {
            let size: i64 = conn.llen(&self.queue).await.expect("LLEN");
            if size < 2 {
                return;
            }
            let p1: Option<String> = conn.lpop(&self.queue, None).await.expect("LPOP");
            let p2: Option<String> = conn.lpop(&self.queue, None).await.expect("LPOP");
            let (Some(p1), Some(p2)) = (p1, p2) else { return };
            let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.expect("TIME");
            let match_id = format!("match_{p1}_{p2}_{secs}");
            let room = format!(r#"{{"match_id":"{match_id}","player1":"{p1}","player2":"{p2}","status":"active"}}"#);
            let _: () = conn.set(format!("room:{match_id}"), &room).await.expect("SET room");
            let event = format!(r#"{{"players":["{p1}","{p2}"],"match_id":"{match_id}"}}"#);
            let _: i64 = conn.publish(&self.channel, event).await.expect("PUBLISH");
            if self.one_pair_per_tick {
                return;
            }
        }
    }
}

/// Join -> "match published" latency of a polling queue: `users` join evenly spread over `window`
/// while `queue` is polled every `tick`; returns each user's latency (microseconds) and how many
/// were never paired before `give_up`.
pub async fn measure_poll_queue(
    url: &str,
    queues: &[&PollQueue],
    users: usize,
    window: Duration,
    tick: Duration,
    give_up: Duration,
) -> Vec<(Histogram<u64>, usize)> {
    let channels: Vec<&str> = queues.iter().map(|q| q.channel.as_str()).collect();
    let listener = Listener::start(url, &channels).await;
    let stop = Rc::new(std::cell::Cell::new(false));
    let pollers: Vec<_> = queues
        .iter()
        .map(|q| {
            let stop = stop.clone();
            let q = (*q).clone();
            actix_rt::spawn(async move {
                // `matchmaking_background_task`: try, then sleep for the tick.
                while !stop.get() {
                    q.try_match_players().await;
                    actix_rt::time::sleep(tick).await;
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut joined: HashMap<String, Instant> = HashMap::new();
    for i in 0..users {
        let due = start + window.mul_f64(i as f64 / users.max(1) as f64);
        actix_rt::time::sleep(due.saturating_duration_since(Instant::now())).await;
        let user = format!("player_{i}");
        let at = Instant::now();
        for q in queues {
            q.enqueue(&user).await;
        }
        joined.insert(user, at);
    }
    let deadline = Instant::now() + give_up;
    let expected = users / 2 * 2 * queues.len();
    let players = |payload: &str| payload.split('"').filter(|s| s.starts_with("player_")).count();
    while listener.seen.borrow().iter().map(|(_, p, _)| players(p)).sum::<usize>() < expected
        && Instant::now() < deadline
    {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    stop.set(true);
    for p in pollers {
        p.abort();
    }
    queues
        .iter()
        .map(|q| {
            let mut h = histogram();
            let mut paired = 0;
            for (_, payload, at) in listener.seen.borrow().iter().filter(|(ch, _, _)| *ch == q.channel) {
                for user in payload.split('"').filter(|s| s.starts_with("player_")) {
                    if let Some(j) = joined.get(user) {
                        h.saturating_record(at.duration_since(*j).as_micros().max(1) as u64);
                        paired += 1;
                    }
                }
            }
            (h, users / 2 * 2 - paired)
        })
        .collect()
}
