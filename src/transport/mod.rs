//! Connection I/O and framing only. Each open stream is one session actor that receives `Deliver`
//! messages from its user shard; the actor's mailbox, bounded by `limits.outbox_capacity`, is the
//! connection's outbox.

pub mod sse;
pub mod ws;
