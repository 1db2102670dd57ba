//! Per-caller limits of one instance: the publication rate ([`RateLimiter`], a token bucket
//! per tenant and user) and concurrent Subscribe streams ([`StreamSlots`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Counts the open Subscribe streams per caller, up to a maximum.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    max: usize,
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

/// One open stream's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    key: (String, String),
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl StreamSlots {
    /// At most `max` streams per caller.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1), open: Arc::default() }
    }

    /// A slot for `user` of `tenant`, or `None` when it has `max` streams open.
    pub fn acquire(&self, tenant: &str, user: &str) -> Option<StreamSlot> {
        let key = (tenant.to_owned(), user.to_owned());
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot { key, open: self.open.clone() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
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

    #[test]
    fn slots_are_per_caller_and_freed_on_drop() {
        let slots = StreamSlots::new(2);
        let first = slots.acquire("acme", "alice").unwrap();
        let _second = slots.acquire("acme", "alice").unwrap();
        assert!(slots.acquire("acme", "alice").is_none());
        assert!(slots.acquire("acme", "bob").is_some());
        drop(first);
        assert!(slots.acquire("acme", "alice").is_some());
    }
}
