//! A record of everything a concurrency test did and saw: every swipe answer, every frame each
//! connection received, every user's `GET /v1/matches`. `check` then verifies the invariants over
//! the whole history, not over one happy path:
//!
//! - I1: a pair has a match exactly when both sides swiped right, and exactly one (every answer that
//!   names a match names the same one; one side's first answer is `pending`, the other's `matched`).
//! - I3: a retried swipe (same `swipe_id`) creates nothing new: no second match, no second event.
//! - I2: each connection gets `hello` first, then strictly increasing ids, and exactly one `match`
//!   event per match of its user, equal to the match in the swipe answers; nothing for pairs that
//!   did not match.
//! - `GET /v1/matches` of each user lists exactly that user's matches.
//!
//! The checker covers histories of swipes only (no unmatch), where each user swipes each target in
//! one direction (retries included), and every recorded connection was open before the first swipe.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use serde_json::Value;

use super::clients::Conn;

/// One swipe request and its answer.
#[derive(Debug, Clone)]
pub struct SwipeRecord {
    pub actor: String,
    pub target: String,
    pub direction: String,
    pub swipe_id: Option<String>,
    /// A repeat of an earlier request with the same `swipe_id`.
    pub retry: bool,
    /// "http" or "ws".
    pub via: &'static str,
    /// HTTP status (200 for a WebSocket `ack`, the error's status otherwise).
    pub status: u16,
    /// The HTTP body, or the `ack`'s `data`.
    pub body: Value,
}

/// Everything one connection received.
#[derive(Debug, Clone)]
pub struct ConnRecord {
    pub user: String,
    pub label: String,
    pub frames: Vec<Value>,
}

#[derive(Default)]
struct Inner {
    swipes: Vec<SwipeRecord>,
    connections: Vec<ConnRecord>,
    listings: BTreeMap<String, Vec<Value>>,
}

/// Shared by the tasks of one test (single-threaded, hence `Rc`).
#[derive(Clone, Default)]
pub struct History {
    inner: Rc<RefCell<Inner>>,
}

/// What the history contains, once checked.
#[derive(Debug)]
pub struct Summary {
    /// Pairs that matched, with their match.
    pub matches: BTreeMap<(String, String), Value>,
    /// Pairs with swipes that must not (and did not) match.
    pub unmatched_pairs: usize,
    pub swipes: usize,
    pub retries: usize,
    /// Swipes sent as WebSocket actions.
    pub via_ws: usize,
    pub connections: usize,
    pub events: usize,
}

/// The unordered pair {a, b}, sorted.
pub fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Collects violations so a failure lists all of them, not just the first.
#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn add(&mut self, v: String) {
        self.0.push(v);
    }

    fn assert_none(self, what: &str) {
        if !self.0.is_empty() {
            let shown: Vec<&String> = self.0.iter().take(25).collect();
            panic!(
                "{} {what} violation(s), first ones:\n{}",
                self.0.len(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl History {
    pub fn record_swipe(&self, record: SwipeRecord) {
        self.inner.borrow_mut().swipes.push(record);
    }

    /// Snapshots what `conn` (a connection of `user`) received so far.
    pub fn record_connection(&self, user: &str, conn: &Conn) {
        self.record_frames(user, &format!("{conn:?} of {user}"), conn.frames());
    }

    /// Records the frames a connection of `user` received.
    pub fn record_frames(&self, user: &str, label: &str, frames: Vec<Value>) {
        let record = ConnRecord { user: user.to_string(), label: label.to_string(), frames };
        self.inner.borrow_mut().connections.push(record);
    }

    /// Records `user`'s `GET /v1/matches`.
    pub fn record_listing(&self, user: &str, matches: Vec<Value>) {
        self.inner.borrow_mut().listings.insert(user.to_string(), matches);
    }

    /// Checks every invariant over the whole history (panics listing the violations).
    pub fn check(&self) -> Summary {
        let inner = self.inner.borrow();
        let (matches, unmatched_pairs) = check_swipes(&inner.swipes);
        let events = check_connections(&inner.connections, &matches);
        check_listings(&inner.listings, &matches);
        Summary {
            unmatched_pairs,
            swipes: inner.swipes.len(),
            retries: inner.swipes.iter().filter(|s| s.retry).count(),
            via_ws: inner.swipes.iter().filter(|s| s.via == "ws").count(),
            connections: inner.connections.len(),
            events,
            matches,
        }
    }
}

/// I1 and I3 over the answers. Returns the matches per pair and the number of pairs that must
/// not have matched.
fn check_swipes(swipes: &[SwipeRecord]) -> (BTreeMap<(String, String), Value>, usize) {
    let mut v = Violations::default();
    let mut by_pair: BTreeMap<(String, String), Vec<&SwipeRecord>> = BTreeMap::new();
    let mut directions: HashMap<(&str, &str), &str> = HashMap::new();
    for s in swipes {
        if s.retry && s.swipe_id.is_none() {
            v.add(format!("a retry without a swipe_id cannot be checked: {s:?}"));
        }
        if s.status != 200 {
            v.add(format!("swipe failed: {s:?}"));
            continue;
        }
        if let Some(d) = directions.insert((&s.actor, &s.target), &s.direction) {
            assert_eq!(d, s.direction, "the checker assumes one direction per actor and target: {s:?}");
        }
        by_pair.entry(pair(&s.actor, &s.target)).or_default().push(s);
    }
    let mut matches = BTreeMap::new();
    let mut unmatched_pairs = 0;
    for (key, records) in &by_pair {
        let sides = [&key.0, &key.1];
        let right = |user: &String| records.iter().any(|s| &s.actor == user && s.direction == "right");
        let should_match = right(sides[0]) && right(sides[1]);
        let mut seen_match: Option<Value> = None;
        for s in records {
            let status = s.body["status"].as_str().unwrap_or("?");
            let m = &s.body["match"];
            let fields_ok = s.body.as_object().map(|o| o.len() == 2).unwrap_or(false);
            if !fields_ok {
                v.add(format!("answer is not {{status, match}}: {s:?}"));
            }
            match (s.direction.as_str(), status) {
                ("left", "passed") | ("right", "pending") | ("right", "matched") => {}
                _ => v.add(format!("{status:?} is not an answer to a {} swipe: {s:?}", s.direction)),
            }
            if status == "pending" && !m.is_null() {
                v.add(format!("pending answer names a match: {s:?}"));
            }
            if status == "matched" || !m.is_null() {
                if !should_match {
                    v.add(format!("pair {key:?} must not match, but an answer names a match: {s:?}"));
                    continue;
                }
                if m["users"] != serde_json::json!([key.0, key.1]) {
                    v.add(format!("match users are not the sorted pair {key:?}: {s:?}"));
                }
                if !m["match_id"].is_string() || !m["created_at"].is_u64() {
                    v.add(format!("match lacks match_id or created_at: {s:?}"));
                }
                match &seen_match {
                    None => seen_match = Some(m.clone()),
                    Some(first) if first != m => {
                        v.add(format!("pair {key:?} got two different matches (I1): {first} and {m}"))
                    }
                    Some(_) => {}
                }
            }
        }
        if !should_match {
            unmatched_pairs += 1;
            continue;
        }
        let Some(m) = seen_match else {
            v.add(format!("both sides of {key:?} swiped right but no answer says matched (I1): {records:?}"));
            continue;
        };
        // Exactly one side's first decision was `pending`; a retry can only repeat that answer or
        // report the pair's current state (`matched`), so the other side never says `pending`.
        let pending_sides: Vec<&&String> =
            sides.iter().filter(|u| records.iter().any(|s| &s.actor == **u && s.body["status"] == "pending")).collect();
        if pending_sides.len() != 1 {
            v.add(format!(
                "pair {key:?}: expected exactly one side answered pending, got {pending_sides:?}: {records:?}"
            ));
        }
        matches.insert(key.clone(), m);
    }
    v.assert_none("swipe answer");
    (matches, unmatched_pairs)
}

/// I2 over every connection. Returns the number of events seen.
fn check_connections(connections: &[ConnRecord], matches: &BTreeMap<(String, String), Value>) -> usize {
    let mut v = Violations::default();
    let mut total = 0;
    let by_id: HashMap<&str, (&(String, String), &Value)> =
        matches.iter().map(|(k, m)| (m["match_id"].as_str().unwrap(), (k, m))).collect();
    for conn in connections {
        let events: Vec<&Value> = conn.frames.iter().filter(|f| f.get("id").is_some()).collect();
        total += events.len();
        match events.first() {
            Some(h) if h["type"] == "hello" => {
                if h["data"]["user"] != conn.user.as_str() || h["data"]["gap"] != false {
                    v.add(format!("{}: bad hello {h}", conn.label));
                }
            }
            other => v.add(format!("{}: first event is not hello: {other:?}", conn.label)),
        }
        let mut last: Option<u64> = None;
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &events {
            let Some(id) = e["id"].as_u64() else {
                v.add(format!("{}: event id is not an integer: {e}", conn.label));
                continue;
            };
            if let Some(prev) = last {
                if id <= prev {
                    v.add(format!("{}: id {id} after {prev} (ids must strictly increase)", conn.label));
                }
            }
            last = Some(id);
            match e["type"].as_str() {
                Some("hello") if e == events.first().unwrap() => {}
                Some("match") => {
                    let m = &e["data"]["match"];
                    match m["match_id"].as_str().and_then(|id| by_id.get(id)) {
                        Some((key, expected)) => {
                            if *expected != m {
                                v.add(format!(
                                    "{}: match event {m} differs from the swipe answers' {expected}",
                                    conn.label
                                ));
                            }
                            if key.0 != conn.user && key.1 != conn.user {
                                v.add(format!("{}: got another user's match {m}", conn.label));
                            }
                            *count.entry(m["match_id"].as_str().unwrap()).or_default() += 1;
                        }
                        None => v.add(format!("{}: match event for no match of the history: {e}", conn.label)),
                    }
                }
                _ => v.add(format!("{}: unexpected event {e}", conn.label)),
            }
        }
        for (key, m) in matches {
            if key.0 != conn.user && key.1 != conn.user {
                continue;
            }
            let id = m["match_id"].as_str().unwrap();
            let n = count.get(id).copied().unwrap_or(0);
            if n != 1 {
                v.add(format!("{}: {n} match events for {id} of {key:?} (I2: exactly one)", conn.label));
            }
        }
    }
    v.assert_none("event stream");
    total
}

/// `GET /v1/matches` lists exactly the user's matches.
fn check_listings(listings: &BTreeMap<String, Vec<Value>>, matches: &BTreeMap<(String, String), Value>) {
    let mut v = Violations::default();
    for (user, listed) in listings {
        let expected: BTreeSet<String> =
            matches.iter().filter(|(k, _)| &k.0 == user || &k.1 == user).map(|(_, m)| m.to_string()).collect();
        let got: Vec<String> = listed.iter().map(|m| m.to_string()).collect();
        let got_set: BTreeSet<String> = got.iter().cloned().collect();
        if got.len() != got_set.len() || got_set != expected {
            v.add(format!("{user}: GET /v1/matches lists {got:?}, the history says {expected:?}"));
        }
    }
    v.assert_none("match listing");
}

/// The checker itself: a consistent history passes, and each kind of violation is caught.
mod checker {
    use serde_json::{json, Value};

    use super::{History, SwipeRecord};

    fn swipe(actor: &str, target: &str, direction: &str, status: &str, m: Value, retry: bool) -> SwipeRecord {
        SwipeRecord {
            actor: actor.into(),
            target: target.into(),
            direction: direction.into(),
            swipe_id: Some(format!("{actor}-{target}")),
            retry,
            via: "http",
            status: 200,
            body: json!({"status": status, "match": m}),
        }
    }

    fn the_match() -> Value {
        json!({"match_id": "1.m", "users": ["a", "b"], "created_at": 1})
    }

    fn hello(user: &str, id: u64) -> Value {
        json!({"id": id, "type": "hello", "data": {"user": user, "node": "n", "last_id": id, "resumed_from": null, "gap": false}})
    }

    fn match_event(id: u64) -> Value {
        json!({"id": id, "type": "match", "data": {"match": the_match()}})
    }

    /// a and b match (b's answer retried), a likes c alone.
    fn consistent() -> History {
        let h = History::default();
        h.record_swipe(swipe("a", "b", "right", "pending", Value::Null, false));
        h.record_swipe(swipe("b", "a", "right", "matched", the_match(), false));
        h.record_swipe(swipe("b", "a", "right", "matched", the_match(), true));
        h.record_swipe(swipe("a", "c", "right", "pending", Value::Null, false));
        h.record_frames("a", "a1", vec![hello("a", 0), json!({"type": "pong"}), match_event(1)]);
        h.record_frames("b", "b1", vec![hello("b", 3), match_event(4)]);
        h.record_frames("c", "c1", vec![hello("c", 0)]);
        h.record_listing("a", vec![the_match()]);
        h.record_listing("b", vec![the_match()]);
        h.record_listing("c", vec![]);
        h
    }

    #[test]
    fn a_consistent_history_passes() {
        let _trace = crate::common::trace_init();
        let summary = consistent().check();
        assert_eq!(summary.matches.len(), 1);
        assert_eq!(summary.unmatched_pairs, 1);
        assert_eq!(summary.retries, 1);
        assert_eq!(summary.events, 5);
    }

    #[test]
    #[should_panic(expected = "2 match events for 1.m")]
    fn a_duplicate_match_event_is_caught() {
        let _trace = crate::common::trace_init();
        let h = consistent();
        h.record_frames("a", "a2", vec![hello("a", 0), match_event(1), match_event(2)]);
        h.check();
    }

    #[test]
    #[should_panic(expected = "0 match events for 1.m")]
    fn a_missing_match_event_is_caught() {
        let _trace = crate::common::trace_init();
        let h = consistent();
        h.record_frames("b", "b2", vec![hello("b", 0)]);
        h.check();
    }

    #[test]
    #[should_panic(expected = "ids must strictly increase")]
    fn ids_going_back_are_caught() {
        let _trace = crate::common::trace_init();
        let h = consistent();
        h.record_frames("b", "b2", vec![hello("b", 4), match_event(4)]);
        h.check();
    }

    #[test]
    #[should_panic(expected = "two different matches")]
    fn two_matches_for_one_pair_are_caught() {
        let _trace = crate::common::trace_init();
        let h = consistent();
        let other = json!({"match_id": "1.other", "users": ["a", "b"], "created_at": 1});
        h.record_swipe(swipe("a", "b", "right", "matched", other, true));
        h.check();
    }

    #[test]
    #[should_panic(expected = "exactly one side answered pending")]
    fn both_sides_pending_is_caught() {
        let _trace = crate::common::trace_init();
        let h = consistent();
        h.record_swipe(swipe("b", "a", "right", "pending", Value::Null, true));
        h.check();
    }

    #[test]
    #[should_panic(expected = "must not match")]
    fn a_match_of_a_one_sided_pair_is_caught() {
        let _trace = crate::common::trace_init();
        let h = consistent();
        let m = json!({"match_id": "2.m", "users": ["a", "c"], "created_at": 1});
        h.record_swipe(swipe("a", "c", "right", "matched", m, true));
        h.check();
    }

    #[test]
    #[should_panic(expected = "GET /v1/matches lists")]
    fn a_wrong_listing_is_caught() {
        let _trace = crate::common::trace_init();
        let h = consistent();
        h.record_listing("c", vec![the_match()]);
        h.check();
    }
}
