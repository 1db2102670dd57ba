//! Per-caller limits of one instance: the publication rate ([`RateLimiter`], a token bucket
//! per tenant and user) and concurrent Subscribe streams ([`StreamSlots`], shared with every
//! streaming service from mesh-core).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use mesh_core::limits::{StreamSlot, StreamSlots};

/// Callers tracked at most; idle full buckets are dropped first when it is reached.
const MAX_TRACKED: usize = 100_000;

/// A token bucket per caller: `burst` publications at once, refilled at `rate` per second.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` per second on average, `burst` at once.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { rate: f64::from(rate.max(1)), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes one publication of `user` in `tenant` at `now`: `Err` with the time until the
    /// next is allowed when the bucket is empty.
    pub fn take(&self, tenant: &str, user: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry((tenant.to_owned(), user.to_owned())).or_insert((self.burst, now));
        let refilled = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate).max(Duration::from_millis(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(10, 3);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.take("acme", "alice", start).unwrap();
        }
        let wait = limiter.take("acme", "alice", start).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        limiter.take("acme", "bob", start).expect("per user");
        limiter.take("other", "alice", start).expect("per tenant");
        limiter.take("acme", "alice", start + Duration::from_millis(100)).expect("refilled after 1/rate");
        assert!(limiter.take("acme", "alice", start + Duration::from_millis(100)).is_err());
    }
}
