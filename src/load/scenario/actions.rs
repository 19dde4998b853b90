//! The user actions of the contract, each sent, timed and recorded in the history: a failed one is
//! recorded as a failure, never dropped.

use std::cell::RefCell;

use serde_json::json;
use tokio::time::Instant;

use super::Recorder;
use crate::load::history::{JoinRecord, SkipRecord, SwipeAnswer, SwipeRecord};
use crate::load::http::{Http, Reply};
use crate::load::wire::{JoinBody, SwipeBody};

const SWIPES: &str = "POST /v1/swipes";
const QUEUE: &str = "POST /v1/queue";
const SKIP: &str = "POST /v1/rooms/{id}/skip";
const LEAVE: &str = "DELETE /v1/queue";

/// One swipe to send.
pub struct Swipe<'a> {
    pub token: &'a str,
    pub actor: &'a str,
    pub target: &'a str,
    pub right: bool,
    pub swipe_id: Option<&'a str>,
    pub retry: bool,
}

/// Sends a swipe; records it, its latency under `swipe_http`, and any failure.
pub async fn swipe(http: &Http, rec: &RefCell<Recorder>, s: Swipe<'_>) -> Option<SwipeAnswer> {
    let body = json!({
        "target": s.target,
        "direction": if s.right { "right" } else { "left" },
        "swipe_id": s.swipe_id,
    });
    let sent = Instant::now();
    let res = http.post("/v1/swipes", Some(s.token), &body).await;
    let done = Instant::now();
    let mut r = rec.borrow_mut();
    r.latency("swipe_http").record(done - sent);
    let answer = match res {
        Ok(reply) if reply.status == 200 => match reply.json::<SwipeBody>() {
            Ok(b) => Some(SwipeAnswer { status: b.status, match_: b.match_ }),
            Err(e) => {
                r.history.fail(SWIPES, e.to_string());
                None
            }
        },
        Ok(reply) => {
            r.history.fail(SWIPES, reply.brief());
            None
        }
        Err(e) => {
            r.history.fail(SWIPES, e.to_string());
            None
        }
    };
    r.history.swipes.push(SwipeRecord {
        actor: s.actor.to_string(),
        target: s.target.to_string(),
        right: s.right,
        swipe_id: s.swipe_id.map(str::to_string),
        retry: s.retry,
        sent,
        done,
        answer: answer.clone(),
    });
    answer
}

/// What a join answered.
pub enum Joined {
    Queued,
    Matched(crate::load::wire::RoomBody),
    /// 404: the server has no queue.
    NotFound(Reply),
    Failed,
}

/// `POST /v1/queue`; records the join (expecting a room) and its latency under `join_http`.
pub async fn join(http: &Http, rec: &RefCell<Recorder>, token: &str, user: &str, pool: &str) -> Joined {
    join_expecting(http, rec, token, user, pool, true).await
}

/// `join`, saying whether the checker may expect a room for it (a join into a pool where
/// nobody else may be waiting need not get one).
pub async fn join_expecting(
    http: &Http,
    rec: &RefCell<Recorder>,
    token: &str,
    user: &str,
    pool: &str,
    expect_room: bool,
) -> Joined {
    let sent = Instant::now();
    let res = http.post("/v1/queue", Some(token), &json!({ "pool": pool })).await;
    let done = Instant::now();
    let mut r = rec.borrow_mut();
    r.latency("join_http").record(done - sent);
    let outcome = match res {
        Ok(reply) if reply.status == 404 => return Joined::NotFound(reply),
        Ok(reply) if reply.status == 200 || reply.status == 202 => match reply.json::<JoinBody>() {
            Ok(b) if b.status == "matched" => match b.room {
                Some(room) => Joined::Matched(room),
                None => {
                    r.history.fail(QUEUE, "`matched` without a room");
                    Joined::Failed
                }
            },
            Ok(b) if b.status == "queued" => Joined::Queued,
            Ok(b) => {
                r.history.fail(QUEUE, format!("{} with status {:?}", reply.status, b.status));
                Joined::Failed
            }
            Err(e) => {
                r.history.fail(QUEUE, e.to_string());
                Joined::Failed
            }
        },
        Ok(reply) => {
            r.history.fail(QUEUE, reply.brief());
            Joined::Failed
        }
        Err(e) => {
            r.history.fail(QUEUE, e.to_string());
            Joined::Failed
        }
    };
    let room = match &outcome {
        Joined::Matched(room) => Some(room.clone()),
        _ => None,
    };
    if !matches!(outcome, Joined::Failed) {
        r.history.joins.push(JoinRecord { user: user.to_string(), sent, done, room, expect_room, previous_room: None });
    }
    outcome
}

/// `POST /v1/rooms/{id}/skip`. `tolerate_gone`: the partner may have closed the room a moment
/// earlier (both skipping at once), so 404/409 are accepted as "already closed".
pub async fn skip(
    http: &Http,
    rec: &RefCell<Recorder>,
    token: &str,
    user: &str,
    room_id: &str,
    requeue: bool,
    tolerate_gone: bool,
) -> bool {
    let sent = Instant::now();
    let res = http.post(&format!("/v1/rooms/{room_id}/skip"), Some(token), &json!({ "requeue": requeue })).await;
    let done = Instant::now();
    let mut r = rec.borrow_mut();
    r.latency("skip_http").record(done - sent);
    match res {
        Ok(reply) if reply.status == 200 => {
            r.history.skips.push(SkipRecord { user: user.to_string(), room_id: room_id.to_string(), sent });
            true
        }
        Ok(reply) if tolerate_gone && (reply.status == 404 || reply.status == 409) => {
            r.add("skips_already_closed", 1);
            false
        }
        Ok(reply) => {
            r.history.fail(SKIP, reply.brief());
            false
        }
        Err(e) => {
            r.history.fail(SKIP, e.to_string());
            false
        }
    }
}

/// `DELETE /v1/queue` (idempotent). Returns the reply so a caller can detect a missing endpoint.
pub async fn leave(http: &Http, rec: &RefCell<Recorder>, token: &str) -> Option<Reply> {
    match http.delete("/v1/queue", Some(token)).await {
        Ok(reply) if reply.is_success() => Some(reply),
        Ok(reply) => {
            if reply.status != 404 {
                rec.borrow_mut().history.fail(LEAVE, reply.brief());
            }
            Some(reply)
        }
        Err(e) => {
            rec.borrow_mut().history.fail(LEAVE, e.to_string());
            None
        }
    }
}
