//! One user's event log: assigns strictly increasing ids and keeps the newest events (bounded) so a
//! reconnecting client can resume from its last id. With Redis, an event is numbered when it is
//! decided but replayed or delivered only once it is durable (`durable_id`), so no client ever
//! sees an id that a failed write could hand out again.

use std::collections::VecDeque;
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
    capacity: usize,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        EventLog { last_id: 0, durable_id: 0, retained: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// A log rebuilt from stored events (oldest first), all durable.
    pub fn restored(capacity: usize, events: Vec<Arc<Event>>) -> Self {
        let mut log = EventLog::new(capacity);
        for e in events {
            log.last_id = log.last_id.max(e.id);
            if log.retained.len() == log.capacity {
                log.retained.pop_front();
            }
            log.retained.push_back(e);
        }
        log.durable_id = log.last_id;
        log
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
        if self.retained.len() == self.capacity {
            self.retained.pop_front();
        }
        self.retained.push_back(event.clone());
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

    /// The retained event carrying `effect`, if any.
    pub fn find_effect(&self, effect: &str) -> Option<&Arc<Event>> {
        self.retained.iter().rev().find(|e| e.effect.as_deref() == Some(effect))
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
        assert!(log.find_effect("fx").is_some());
        log.mark_durable(3);
        assert_eq!(log.since(2).events.len(), 1);
    }
}
