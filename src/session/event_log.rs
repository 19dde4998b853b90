//! One user's event log: assigns strictly increasing ids and keeps the newest events (bounded) so a
//! reconnecting client can resume from its last id. With Redis, an event is numbered when it is
//! decided but replayed or delivered only once it is durable (`durable_id`), so no client ever
//! sees an id that a failed write could hand out again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::protocol::{Event, EventKind};

/// What a resume returns.
#[derive(Debug)]
pub struct Replay {
    pub events: Vec<Arc<Event>>,
    /// Some events after the resume point were already dropped (or the point is from another life
    /// of an in-memory server): the client should refetch state (`GET /v1/matches`).
    pub gap: bool,
}

#[derive(Debug)]
pub struct EventLog {
    last_id: u64,
    durable_id: u64,
    retained: VecDeque<Arc<Event>>,
    /// Effect id -> id of the newest retained event carrying it, so de-duplicating a re-published
    /// effect or a repeated publish key costs a lookup, not a scan of the log.
    effects: HashMap<Arc<str>, u64>,
    capacity: usize,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        EventLog {
            last_id: 0,
            durable_id: 0,
            retained: VecDeque::new(),
            effects: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// A log rebuilt from stored events (oldest first), all durable.
    pub fn restored(capacity: usize, events: Vec<Arc<Event>>) -> Self {
        let mut log = EventLog::new(capacity);
        for e in events {
            log.last_id = log.last_id.max(e.id);
            log.retain(e);
        }
        log.durable_id = log.last_id;
        log
    }

    /// Keeps `event`, dropping the oldest one past the capacity.
    fn retain(&mut self, event: Arc<Event>) {
        if self.retained.len() == self.capacity {
            if let Some(old) = self.retained.pop_front() {
                if let Some(fx) = &old.effect {
                    if self.effects.get(fx) == Some(&old.id) {
                        self.effects.remove(fx);
                    }
                }
            }
        }
        if let Some(fx) = &event.effect {
            self.effects.insert(fx.clone(), event.id);
        }
        self.retained.push_back(event);
    }

    /// Numbers and stores `kind`; returns the encoded event.
    pub fn push(&mut self, kind: &EventKind, effect: Option<Arc<str>>) -> Arc<Event> {
        self.append(|id| {
            let mut event = Event::encode(id, kind);
            event.effect = effect;
            event
        })
    }

    /// Numbers and stores the event `encode` builds for the next id (an event the app's backend
    /// published, say); returns it.
    pub fn append(&mut self, encode: impl FnOnce(u64) -> Event) -> Arc<Event> {
        self.last_id += 1;
        let event = Arc::new(encode(self.last_id));
        self.retain(event.clone());
        event
    }

    /// Everything up to `id` is stored.
    pub fn mark_durable(&mut self, id: u64) {
        self.durable_id = self.durable_id.max(id);
    }

    /// The newest durable id (what a new connection is told).
    pub fn durable_id(&self) -> u64 {
        self.durable_id
    }

    /// The id of the newest retained event carrying `effect`, if any.
    pub fn find_effect(&self, effect: &str) -> Option<u64> {
        self.effects.get(effect).copied()
    }

    /// Every retained durable event with an id greater than `since`.
    pub fn since(&self, since: u64) -> Replay {
        let first_retained = self.retained.front().map(|e| e.id).unwrap_or(self.durable_id + 1);
        let gap = since > self.durable_id || since + 1 < first_retained;
        let start = if since > self.durable_id { 0 } else { self.retained.partition_point(|e| e.id <= since) };
        let events = self.retained.iter().skip(start).take_while(|e| e.id <= self.durable_id).cloned().collect();
        Replay { events, gap }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PoolName, RoomId};

    fn kind() -> EventKind {
        EventKind::RoomClosed { room_id: RoomId::parse("1.r").unwrap(), reason: "x".into() }
    }

    fn durable_log(capacity: usize, n: usize) -> EventLog {
        let mut log = EventLog::new(capacity);
        for _ in 0..n {
            let e = log.push(&kind(), None);
            log.mark_durable(e.id);
        }
        log
    }

    #[test]
    fn ids_increase_and_resume_returns_only_newer() {
        let log = durable_log(10, 5);
        let r = log.since(3);
        assert_eq!(r.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 5]);
        assert!(!r.gap);
        assert!(log.since(5).events.is_empty());
        assert_eq!(log.since(0).events.len(), 5);
    }

    #[test]
    fn resume_past_the_capacity_reports_a_gap() {
        let mut log = EventLog::new(3);
        for _ in 0..6 {
            let e = log.push(
                &EventKind::QueueUpdate { pool: PoolName::parse("p").unwrap(), position: 1, estimated_wait_ms: 0 },
                None,
            );
            log.mark_durable(e.id);
        }
        let r = log.since(1);
        assert!(r.gap);
        assert_eq!(r.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert!(!log.since(3).gap);
        let future = log.since(99);
        assert!(future.gap);
        assert_eq!(future.events.len(), 3);
    }

    #[test]
    fn events_not_yet_durable_are_not_replayed() {
        let mut log = durable_log(10, 2);
        log.push(&kind(), Some(Arc::from("fx")));
        assert_eq!(log.durable_id(), 2);
        assert_eq!(log.since(0).events.len(), 2);
        assert_eq!(log.find_effect("fx"), Some(3));
        log.mark_durable(3);
        assert_eq!(log.since(2).events.len(), 1);
    }

    #[test]
    fn effects_are_found_while_their_event_is_retained() {
        let mut log = EventLog::new(3);
        let with = |log: &mut EventLog, fx: &str| log.push(&kind(), Some(Arc::from(fx))).id;
        assert_eq!(with(&mut log, "a"), 1);
        assert_eq!(with(&mut log, "b"), 2);
        assert_eq!(with(&mut log, "a"), 3);
        assert_eq!((log.find_effect("a"), log.find_effect("b")), (Some(3), Some(2)));
        log.push(&kind(), None);
        // Event 1 (an older "a") left the log: "a" still names event 3.
        assert_eq!(log.find_effect("a"), Some(3));
        log.push(&kind(), None);
        assert_eq!(log.find_effect("b"), None, "event 2 left the log");
        log.mark_durable(5);
        let restored = EventLog::restored(3, log.since(0).events);
        assert_eq!(restored.find_effect("a"), Some(3));
        assert_eq!(restored.find_effect("b"), None);
    }
}
