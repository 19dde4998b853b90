//! Per-user token buckets for actions (429 `rate_limited` with `Retry-After`). The map only holds
//! counters, never matching state, so a short per-entry lock is all it needs.

use dashmap::DashMap;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::protocol::UserId;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<UserId, Bucket>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        RateLimiter { rate: rate_per_sec, burst: f64::from(burst), buckets: DashMap::new() }
    }

    /// Takes one token for `user`, or says how long until one is available.
    pub fn check(&self, user: &UserId) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut b = self.buckets.entry(user.clone()).or_insert_with(|| Bucket { tokens: self.burst, updated: now });
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64;
            Err(ApiError::RateLimited(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_are_refused_then_refilled() {
        let l = RateLimiter::new(1.0, 2);
        let u = UserId::parse("u").unwrap();
        assert!(l.check(&u).is_ok());
        assert!(l.check(&u).is_ok());
        assert!(matches!(l.check(&u), Err(ApiError::RateLimited(1))));
        tokio::time::advance(std::time::Duration::from_millis(1100)).await;
        assert!(l.check(&u).is_ok());
    }
}
