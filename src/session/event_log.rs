//! One user's event log: assigns strictly increasing ids and keeps the newest events (bounded) so a
//! reconnecting client can resume from its last id.

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
    retained: VecDeque<Arc<Event>>,
    capacity: usize,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        EventLog {
            last_id: 0,
            retained: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Numbers and stores `kind`; returns the encoded event.
    pub fn push(&mut self, kind: &EventKind) -> Arc<Event> {
        self.last_id += 1;
        let event = Arc::new(Event::encode(self.last_id, kind));
        if self.retained.len() == self.capacity {
            self.retained.pop_front();
        }
        self.retained.push_back(event.clone());
        event
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Every retained event with an id greater than `since`.
    pub fn since(&self, since: u64) -> Replay {
        let first_retained = self
            .retained
            .front()
            .map(|e| e.id)
            .unwrap_or(self.last_id + 1);
        let gap = since > self.last_id || since + 1 < first_retained;
        let start = if since > self.last_id {
            0
        } else {
            self.retained.partition_point(|e| e.id <= since)
        };
        Replay {
            events: self.retained.iter().skip(start).cloned().collect(),
            gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PoolName, RoomId};

    fn kind() -> EventKind {
        EventKind::RoomClosed {
            room_id: RoomId::parse("1.r").unwrap(),
            reason: "x".into(),
        }
    }

    #[test]
    fn ids_increase_and_resume_returns_only_newer() {
        let mut log = EventLog::new(10);
        for _ in 0..5 {
            log.push(&kind());
        }
        let r = log.since(3);
        assert_eq!(
            r.events.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(!r.gap);
        assert!(log.since(5).events.is_empty());
        assert_eq!(log.since(0).events.len(), 5);
    }

    #[test]
    fn resume_past_the_capacity_reports_a_gap() {
        let mut log = EventLog::new(3);
        for _ in 0..6 {
            log.push(&EventKind::QueueUpdate {
                pool: PoolName::parse("p").unwrap(),
                position: 1,
                estimated_wait_ms: 0,
            });
        }
        let r = log.since(1);
        assert!(r.gap);
        assert_eq!(
            r.events.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert!(!log.since(3).gap);
        let future = log.since(99);
        assert!(future.gap);
        assert_eq!(future.events.len(), 3);
    }
}
