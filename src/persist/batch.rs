//! Group-commit bookkeeping shared by the shard actors: at most one batch in flight per shard.
//! Whatever is decided while a batch is out forms the next one, which is sent when the previous
//! returns, once the mailbox has drained (a `Flush` message queued behind it), or at once when it
//! reaches `max_batch` operations. So a lone action costs one round trip, and a burst costs one
//! round trip per batch, not per action.

/// What a shard should do about its pending batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Nothing pending, or a batch is already out (its return reschedules).
    Wait,
    /// Send it now (it is full).
    FlushNow,
    /// Queue a `Flush` message to self, so what is already in the mailbox joins the batch.
    Notify,
}

#[derive(Debug)]
pub struct GroupCommit {
    in_flight: bool,
    flush_queued: bool,
    max_batch: usize,
}

impl GroupCommit {
    pub fn new(max_batch: usize) -> Self {
        GroupCommit { in_flight: false, flush_queued: false, max_batch: max_batch.max(1) }
    }

    /// Called whenever work was added or a batch returned.
    pub fn schedule(&mut self, pending_ops: usize) -> Schedule {
        if self.in_flight || pending_ops == 0 {
            return Schedule::Wait;
        }
        if pending_ops >= self.max_batch {
            self.flush_queued = false;
            Schedule::FlushNow
        } else if !self.flush_queued {
            self.flush_queued = true;
            Schedule::Notify
        } else {
            Schedule::Wait
        }
    }

    /// The queued `Flush` message arrived.
    pub fn notified(&mut self) {
        self.flush_queued = false;
    }

    /// Whether a batch of `pending_ops` may be sent now; if so it counts as in flight.
    pub fn begin(&mut self, pending_ops: usize) -> bool {
        if self.in_flight || pending_ops == 0 {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// The batch in flight returned (committed or failed).
    pub fn finished(&mut self) {
        self.in_flight = false;
    }
}

/// Runs a batch's commands under the fence for `slots` (the slots it reads or writes); an empty
/// batch (only waiters, who read what earlier batches stored) needs no round trip, but still
/// needs the fence. The fence is checked now, when the batch is built.
pub fn send(
    durability: super::Durability,
    slots: impl Iterator<Item = u16>,
    guards: Vec<(String, String)>,
    pipe: redis::Pipeline,
    commands: usize,
) -> futures_util::future::LocalBoxFuture<'static, Result<Vec<redis::Value>, super::StoreError>> {
    let fence = durability.fence.token(slots);
    Box::pin(async move {
        let fence = fence?;
        if commands == 0 && guards.is_empty() {
            Ok(Vec::new())
        } else {
            let res = durability.store.run_fenced(&fence, &guards, pipe, commands).await;
            if matches!(res, Err(super::StoreError::Fenced)) {
                durability.fence.refused();
            }
            res
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_in_flight_and_the_next_waits_for_it() {
        let mut g = GroupCommit::new(3);
        assert_eq!(g.schedule(0), Schedule::Wait);
        assert_eq!(g.schedule(1), Schedule::Notify);
        assert_eq!(g.schedule(2), Schedule::Wait, "a Flush is already queued");
        g.notified();
        assert!(g.begin(2));
        assert_eq!(g.schedule(5), Schedule::Wait, "one batch in flight at a time");
        assert!(!g.begin(5));
        g.finished();
        assert_eq!(g.schedule(5), Schedule::FlushNow, "a full batch goes at once");
        assert!(g.begin(5));
    }
}
