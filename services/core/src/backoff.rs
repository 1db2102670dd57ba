//! Exponential backoff with jitter, as the job queue's retries and the document cache's
//! breaker use it: `min(cap, base * factor^(attempt - 1))`, of which a share `jitter` is
//! random.

use std::time::Duration;

/// The backoff after failed attempt `attempt` (1-based), before jitter:
/// `min(cap, base * factor^(attempt - 1))`.
pub fn ceiling(base: Duration, factor: f64, cap: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(64) as i32;
    let factor = if factor.is_finite() { factor.max(1.0) } else { 1.0 };
    let seconds = base.as_secs_f64() * factor.powi(exponent);
    let cap = cap.max(base);
    if !seconds.is_finite() || seconds >= cap.as_secs_f64() { cap } else { Duration::from_secs_f64(seconds) }
}

/// `ceiling` with jitter drawn from `unit` (a number in `[0, 1)`): a uniform pick in
/// `[ceiling * (1 - jitter), ceiling]`.
pub fn jittered(ceiling: Duration, jitter: f64, unit: f64) -> Duration {
    ceiling.mul_f64(1.0 - jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0))
}

/// A uniform random number in `[0, 1)` for [`jittered`].
pub fn unit() -> f64 {
    use rand::Rng;
    rand::thread_rng().r#gen::<f64>()
}
