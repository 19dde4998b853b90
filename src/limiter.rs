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
    /// Map size at which idle buckets are swept next (amortized: doubles with what stays).
    sweep_at: std::sync::atomic::AtomicUsize,
}

/// Smallest map size that triggers a sweep.
const MIN_SWEEP_AT: usize = 4096;

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        RateLimiter {
            rate: rate_per_sec,
            burst: f64::from(burst),
            buckets: DashMap::new(),
            sweep_at: std::sync::atomic::AtomicUsize::new(MIN_SWEEP_AT),
        }
    }

    /// Takes one token for `user`, or says how long until one is available.
    pub fn check(&self, user: &UserId) -> Result<(), ApiError> {
        let now = Instant::now();
        self.sweep_if_large(now);
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

impl RateLimiter {
    /// Drops the buckets that have refilled completely (their users are idle: a fresh bucket is
    /// the same), so the map does not grow with every user ever seen.
    fn sweep_if_large(&self, now: Instant) {
        use std::sync::atomic::Ordering;
        if self.buckets.len() < self.sweep_at.load(Ordering::Relaxed) {
            return;
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst);
        self.sweep_at.store((self.buckets.len() * 2).max(MIN_SWEEP_AT), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_swept_once_the_map_is_large() {
        let l = RateLimiter::new(10.0, 2);
        for i in 0..MIN_SWEEP_AT {
            l.check(&UserId::parse(&format!("u{i}")).unwrap()).unwrap();
        }
        assert_eq!(l.buckets.len(), MIN_SWEEP_AT);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        // Everyone has refilled: the next check sweeps them all but its own user.
        let busy = UserId::parse("busy").unwrap();
        l.check(&busy).unwrap();
        assert_eq!(l.buckets.len(), 1);
        // A sweep never forgets a user who is still limited.
        l.check(&busy).unwrap();
        assert!(matches!(l.check(&busy), Err(ApiError::RateLimited(_))));
    }

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
