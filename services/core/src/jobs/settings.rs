//! [`JobQueueSettings`]: attempts, backoff, visibility timeout and limits of a job queue,
//! and the backoff schedule computed from them (pure, unit-tested here).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a job queue retries, reclaims and limits. Deserializable so the configuration can
/// embed it (durations in humantime form, e.g. `"100ms"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobQueueSettings {
    /// Deliveries of one job before it is dead-lettered (default 5).
    pub max_attempts: u32,
    /// Backoff after the first failed attempt (default 100 ms).
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Growth of the backoff per further failed attempt (default 2).
    pub backoff_factor: f64,
    /// Largest backoff (default 30 s).
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Share of each backoff that is random, from 0 (none) to 1 (full jitter); a delay `d`
    /// becomes a uniform pick in `[d * (1 - jitter), d]` (default 0.5).
    pub backoff_jitter: f64,
    /// How long a delivery stays invisible to the other consumers of its group before it
    /// is reclaimed from a consumer presumed dead (default 30 s). Handlers must finish well
    /// within it, or their job runs twice.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// How often a blocking `claim` looks again while nothing is ready (default 100 ms).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Largest payload accepted by `enqueue`, in bytes (default 1 MiB).
    pub max_payload: usize,
}

impl Default for JobQueueSettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Duration::from_millis(100),
            backoff_factor: 2.0,
            backoff_cap: Duration::from_secs(30),
            backoff_jitter: 0.5,
            visibility_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(100),
            max_payload: 1024 * 1024,
        }
    }
}

impl JobQueueSettings {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            return Err("backoff_factor must be a number of at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err("backoff_jitter must be between 0 and 1".into());
        }
        if self.backoff_cap < self.backoff_base {
            return Err("backoff_cap must not be below backoff_base".into());
        }
        if self.visibility_timeout.is_zero() {
            return Err("visibility_timeout must be above zero".into());
        }
        if self.poll_interval.is_zero() {
            return Err("poll_interval must be above zero".into());
        }
        if self.max_payload == 0 {
            return Err("max_payload must be above zero".into());
        }
        Ok(())
    }

    /// The backoff after failed attempt `attempt` (1-based), before jitter:
    /// `min(cap, base * factor^(attempt - 1))`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        crate::backoff::ceiling(self.backoff_base, self.backoff_factor, self.backoff_cap, attempt)
    }

    /// The backoff after failed attempt `attempt`, with jitter drawn from `unit` (a number
    /// in `[0, 1)`): `ceiling * (1 - jitter * unit)`.
    pub fn backoff_delay_with(&self, attempt: u32, unit: f64) -> Duration {
        crate::backoff::jittered(self.backoff_ceiling(attempt), self.backoff_jitter, unit)
    }

    /// The backoff after failed attempt `attempt`, with random jitter.
    pub fn backoff_delay(&self, attempt: u32) -> Duration {
        self.backoff_delay_with(attempt, crate::backoff::unit())
    }

    /// `max_attempts`, at least 1.
    pub(super) fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn the_backoff_doubles_from_the_base_up_to_the_cap() {
        let settings = JobQueueSettings::default();
        let ceilings: Vec<_> = (1..=5).map(|attempt| settings.backoff_ceiling(attempt)).collect();
        assert_eq!(ceilings, [ms(100), ms(200), ms(400), ms(800), ms(1600)]);
        assert_eq!(settings.backoff_ceiling(20), Duration::from_secs(30));
        assert_eq!(settings.backoff_ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_only_shortens_the_delay_down_to_its_share() {
        let settings = JobQueueSettings::default();
        assert_eq!(settings.backoff_delay_with(2, 0.0), ms(200));
        assert_eq!(settings.backoff_delay_with(2, 1.0), ms(100));
        for _ in 0..100 {
            let delay = settings.backoff_delay(3);
            assert!(delay >= ms(200) && delay <= ms(400), "{delay:?}");
        }
    }

    #[test]
    fn the_defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(JobQueueSettings::default().validate(), Ok(()));
        let zero_attempts = JobQueueSettings { max_attempts: 0, ..JobQueueSettings::default() };
        assert!(zero_attempts.validate().unwrap_err().contains("max_attempts"));
        let wild_jitter = JobQueueSettings { backoff_jitter: 1.5, ..JobQueueSettings::default() };
        assert!(wild_jitter.validate().unwrap_err().contains("backoff_jitter"));
    }

    #[test]
    fn settings_read_humantime_durations() {
        let settings: JobQueueSettings =
            serde_json::from_str(r#"{"backoff_base": "10ms", "visibility_timeout": "2s", "max_attempts": 3}"#).unwrap();
        assert_eq!(settings.backoff_base, ms(10));
        assert_eq!(settings.visibility_timeout, Duration::from_secs(2));
        assert_eq!(settings.max_attempts, 3);
        assert_eq!(settings.backoff_cap, Duration::from_secs(30));
    }
}
