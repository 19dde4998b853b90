//! The checker is proven to find each violation by planting it in an otherwise clean history.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::load::history::{JoinRecord, PublishRecord, Seen, SkipRecord, StreamRecord, SwipeRecord, Transport};
use crate::load::wire::{MatchBody, RoomBody};

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn matched(id: &str, a: &str, b: &str) -> SwipeAnswer {
    let mut users = vec![a.to_string(), b.to_string()];
    users.sort();
    SwipeAnswer { status: "matched".into(), match_: Some(MatchBody { match_id: id.into(), users, created_at: 1 }) }
}

fn pending() -> SwipeAnswer {
    SwipeAnswer { status: "pending".into(), match_: None }
}

fn swipe(t0: Instant, ms: u64, actor: &str, target: &str, id: &str, answer: SwipeAnswer) -> SwipeRecord {
    SwipeRecord {
        actor: actor.into(),
        target: target.into(),
        right: true,
        swipe_id: Some(id.into()),
        retry: false,
        sent: at(t0, ms),
        done: at(t0, ms + 1),
        answer: Some(answer),
    }
}

fn stream(t0: Instant, user: &str, tab: usize, events: Vec<(u64, EventBody)>) -> StreamRecord {
    let mut s = StreamRecord::new(user, tab, Transport::Ws);
    s.hello = Some((0, t0));
    s.events = events.into_iter().map(|(id, body)| Seen { id, body, at: at(t0, 10 + id) }).collect();
    s
}

fn match_event(id: &str, a: &str, b: &str) -> EventBody {
    EventBody::Match { match_id: id.into(), users: vec![a.into(), b.into()] }
}

fn assigned(room: &str, a: &str, b: &str) -> EventBody {
    EventBody::RoomAssigned { room_id: room.into(), users: vec![a.into(), b.into()] }
}

fn closed(room: &str) -> EventBody {
    EventBody::RoomClosed { room_id: room.into(), reason: "partner_skipped".into() }
}

/// Alice and bob match once, each with two tabs that see the match once; a retry replays.
fn clean_swipes() -> History {
    let t0 = Instant::now();
    let mut retry = swipe(t0, 3, "alice", "bob", "k-a", pending());
    retry.retry = true;
    History {
        swipes: vec![
            swipe(t0, 1, "alice", "bob", "k-a", pending()),
            swipe(t0, 2, "bob", "alice", "k-b", matched("m1", "alice", "bob")),
            retry,
            swipe(t0, 4, "alice", "carol", "k-n", pending()),
        ],
        streams: vec![
            stream(t0, "alice", 0, vec![(1, match_event("m1", "alice", "bob"))]),
            stream(t0, "alice", 1, vec![(1, match_event("m1", "alice", "bob"))]),
            stream(t0, "bob", 0, vec![(1, match_event("m1", "alice", "bob"))]),
            stream(t0, "carol", 0, vec![]),
        ],
        actions_from: Some(at(t0, 1)),
        ..History::default()
    }
}

/// Two users share a room that alice skips; both hear it close; both are requeued into new rooms.
fn clean_rooms() -> History {
    let t0 = Instant::now();
    History {
        joins: vec![
            JoinRecord {
                user: "alice".into(),
                sent: at(t0, 1),
                done: at(t0, 2),
                room: None,
                expect_room: true,
                previous_room: None,
            },
            JoinRecord {
                user: "bob".into(),
                sent: at(t0, 1),
                done: at(t0, 2),
                room: Some(RoomBody { room_id: "r1".into(), users: vec!["alice".into(), "bob".into()] }),
                expect_room: true,
                previous_room: None,
            },
        ],
        skips: vec![SkipRecord { user: "alice".into(), room_id: "r1".into(), sent: at(t0, 20) }],
        streams: vec![
            stream(t0, "alice", 0, vec![(1, assigned("r1", "alice", "bob")), (2, closed("r1"))]),
            stream(t0, "bob", 0, vec![(1, assigned("r1", "alice", "bob")), (2, closed("r1"))]),
        ],
        actions_from: Some(at(t0, 1)),
        expect_rooms_closed: true,
        ..History::default()
    }
}

fn kinds(v: &[Violation]) -> Vec<&'static str> {
    v.iter().map(Violation::kind).collect()
}

#[test]
fn clean_histories_pass() {
    assert_eq!(check(&clean_swipes()), vec![]);
    assert_eq!(check(&clean_rooms()), vec![]);
}

#[test]
fn a_double_match_is_found() {
    let mut h = clean_swipes();
    h.swipes[0].answer = Some(matched("m2", "alice", "bob"));
    let v = check(&h);
    assert!(v.iter().any(|x| matches!(x, Violation::DoubleMatch { match_ids, .. } if match_ids.len() == 2)), "{v:?}");
}

#[test]
fn a_double_match_seen_only_in_events_is_found() {
    let mut h = clean_swipes();
    h.streams[2].events.push(Seen { id: 2, body: match_event("m9", "bob", "alice"), at: Instant::now() });
    assert!(kinds(&check(&h)).contains(&"double_match"));
}

#[test]
fn a_missing_match_is_found() {
    let mut h = clean_swipes();
    h.swipes[1].answer = Some(pending());
    for s in &mut h.streams {
        s.events.clear();
    }
    h.swipes.remove(2);
    assert_eq!(kinds(&check(&h)), vec!["missing_match"]);
}

#[test]
fn a_phantom_match_is_found() {
    let mut h = clean_swipes();
    h.swipes[3].answer = Some(matched("m5", "alice", "carol"));
    let v = check(&h);
    assert!(kinds(&v).contains(&"phantom_match"), "{v:?}");
}

#[test]
fn a_broken_idempotency_key_is_found() {
    let mut h = clean_swipes();
    h.swipes[2].answer = Some(SwipeAnswer { status: "passed".into(), match_: None });
    assert_eq!(kinds(&check(&h)), vec!["idempotency_broken"]);
}

#[test]
fn a_retry_may_answer_with_the_current_match() {
    let mut h = clean_swipes();
    h.swipes[2].answer = Some(matched("m1", "alice", "bob"));
    assert_eq!(check(&h), vec![]);
}

#[test]
fn a_duplicate_event_is_found() {
    let mut h = clean_swipes();
    let t = Instant::now();
    h.streams[1].events.push(Seen { id: 2, body: match_event("m1", "alice", "bob"), at: t });
    assert_eq!(kinds(&check(&h)), vec!["duplicate_event"]);
    let mut h = clean_swipes();
    h.streams[0].events.push(Seen { id: 1, body: EventBody::QueueUpdate, at: t });
    assert_eq!(kinds(&check(&h)), vec!["duplicate_event"]);
}

#[test]
fn non_increasing_ids_are_found() {
    let mut h = clean_swipes();
    let t = Instant::now();
    h.streams[0].events.insert(0, Seen { id: 5, body: EventBody::QueueUpdate, at: t });
    assert_eq!(kinds(&check(&h)), vec!["non_increasing_id"]);
    // An event no newer than the hello's resume point is out of order too.
    let mut h = clean_swipes();
    h.streams[2].hello = Some((3, h.streams[2].hello.unwrap().1));
    assert_eq!(kinds(&check(&h)), vec!["non_increasing_id"]);
}

#[test]
fn a_tab_that_missed_its_match_is_found() {
    let mut h = clean_swipes();
    h.streams[1].events.clear();
    let v = check(&h);
    assert_eq!(kinds(&v), vec!["missing_event"]);
    assert!(v[0].to_string().contains("alice#1"));
}

#[test]
fn a_stream_opened_after_the_actions_is_not_required_to_see_them() {
    let mut h = clean_swipes();
    let late = h.actions_from.unwrap() + Duration::from_secs(1);
    h.streams[1].hello = Some((1, late));
    h.streams[1].events.clear();
    assert_eq!(check(&h), vec![]);
}

#[test]
fn a_match_for_someone_else_is_found() {
    let mut h = clean_swipes();
    h.streams[3].events.push(Seen { id: 1, body: match_event("m1", "alice", "bob"), at: Instant::now() });
    assert_eq!(kinds(&check(&h)), vec!["unexpected_event"]);
}

#[test]
fn lost_connections_missing_hellos_and_bad_frames_are_found() {
    let mut h = clean_swipes();
    h.streams[3].lost = Some("server closed: 4008".into());
    h.streams[2].problems.push("not a contract frame".into());
    h.streams[0].hello = None;
    h.streams[0].events.clear();
    let k = kinds(&check(&h));
    assert!(k.contains(&"connection_lost") && k.contains(&"bad_frame") && k.contains(&"missing_event"), "{k:?}");
}

#[test]
fn a_lonely_room_is_found() {
    let mut h = clean_rooms();
    h.streams[1].events.pop();
    assert_eq!(check(&h), vec![Violation::LonelyRoom { room: "r1".into(), user: "bob".into() }]);
}

#[test]
fn a_room_closed_only_by_a_skip_answer_still_needs_both_to_hear_it() {
    let mut h = clean_rooms();
    h.streams[0].events.pop();
    h.streams[1].events.pop();
    assert_eq!(kinds(&check(&h)), vec!["lonely_room", "lonely_room"]);
}

#[test]
fn a_user_in_two_rooms_is_found() {
    let mut h = clean_rooms();
    h.streams[0].events.insert(1, Seen { id: 2, body: assigned("r2", "alice", "carol"), at: Instant::now() });
    h.streams[0].events[2].id = 3;
    let v = check(&h);
    assert!(
        v.contains(&Violation::UserInTwoRooms { user: "alice".into(), rooms: vec!["r1".into(), "r2".into()] }),
        "{v:?}"
    );
}

#[test]
fn a_room_never_closed_is_found_when_every_room_should_be() {
    let mut h = clean_rooms();
    h.skips.clear();
    for s in &mut h.streams {
        s.events.pop();
    }
    assert_eq!(kinds(&check(&h)), vec!["room_never_closed"]);
    h.expect_rooms_closed = false;
    assert_eq!(check(&h), vec![]);
}

#[test]
fn rooms_with_inconsistent_members_are_found() {
    let mut h = clean_rooms();
    h.streams[1].events[0].body = assigned("r1", "bob", "carol");
    let k = kinds(&check(&h));
    assert!(k.contains(&"bad_room"), "{k:?}");
}

#[test]
fn a_user_stuck_in_the_queue_is_found() {
    let mut h = clean_rooms();
    let t = h.joins[0].sent;
    h.joins.push(JoinRecord {
        user: "alice".into(),
        sent: t + Duration::from_secs(5),
        done: t + Duration::from_secs(5),
        room: None,
        expect_room: true,
        previous_room: Some("r1".into()),
    });
    assert_eq!(check(&h), vec![Violation::StuckInQueue { user: "alice".into() }]);
}

#[test]
fn failures_are_grouped() {
    let mut h = clean_swipes();
    for _ in 0..3 {
        h.fail("POST /v1/swipes", "503 unavailable");
    }
    h.fail("GET /v1/ws", "connect refused");
    let v = check(&h);
    assert_eq!(v.len(), 2);
    assert!(v.contains(&Violation::RequestFailed {
        what: "POST /v1/swipes".into(),
        detail: "503 unavailable".into(),
        count: 3
    }));
}

#[test]
fn a_failed_swipe_makes_its_pair_uncertain_not_missing() {
    let mut h = clean_swipes();
    h.swipes[1].answer = None;
    for s in &mut h.streams {
        s.events.clear();
    }
    h.swipes.remove(2);
    assert_eq!(check(&h), vec![]);
}

/// Two publishes (to alice and bob, then to alice alone), each seen once by every tab it names.
fn clean_publishes() -> History {
    let t0 = Instant::now();
    let app = |seq| EventBody::App { kind: "load.result".into(), seq: Some(seq) };
    let publish = |users: &[&str], seq, ms| PublishRecord {
        users: users.iter().map(|u| u.to_string()).collect(),
        kind: "load.result".into(),
        seq,
        sent: at(t0, ms),
        done: at(t0, ms + 1),
    };
    History {
        publishes: vec![publish(&["alice", "bob"], 0, 1), publish(&["alice"], 1, 2)],
        streams: vec![
            stream(t0, "alice", 0, vec![(1, app(0)), (2, app(1))]),
            stream(t0, "alice", 1, vec![(1, app(0)), (2, app(1))]),
            stream(t0, "bob", 0, vec![(1, app(0))]),
            stream(t0, "carol", 0, vec![]),
        ],
        actions_from: Some(at(t0, 1)),
        ..History::default()
    }
}

#[test]
fn published_events_missing_doubled_or_misdelivered_are_found() {
    assert_eq!(check(&clean_publishes()), vec![]);
    let mut h = clean_publishes();
    h.streams[1].events.pop();
    assert_eq!(kinds(&check(&h)), ["missing_event"]);
    let mut h = clean_publishes();
    let again = Seen { id: 3, ..h.streams[2].events[0].clone() };
    h.streams[2].events.push(again);
    assert_eq!(kinds(&check(&h)), ["duplicate_event"]);
    let mut h = clean_publishes();
    let stray = Seen { id: 1, ..h.streams[0].events[0].clone() };
    h.streams[3].events.push(stray);
    assert_eq!(kinds(&check(&h)), ["unexpected_event"]);
}
