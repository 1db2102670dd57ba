//! [`Lifetimes`]: how long a session lives, and the pure expiry rules.
//!
//! A session has two deadlines. Its absolute cap, `max_expire_time = create_time +
//! max_lifetime`, is fixed at creation. Its idle expiry slides with activity:
//! `expire_time = min(last_activity + idle_ttl, max_expire_time)`. Activity never moves
//! `expire_time` back (a touch handled by an instance whose clock is a little behind must not
//! shorten a session) and never past the cap, so a session touched all along still ends at
//! `max_expire_time`.
//!
//! A read (GetSession) is activity too, but it moves the stored expiry only in steps of
//! [`Lifetimes::read_slide_step`] (1 s, or 1/100 of the idle TTL if that is less) or onto the
//! cap: a session read many times a second is written at most about once a second, and its
//! expiry is never more than one step short of `last_read + idle_ttl`. Writes (TouchSession, UpdateSession)
//! always slide exactly.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Largest accepted `max_lifetime` (and so `idle_ttl`): 366 days. It keeps every deadline
/// far from the limits of timestamps and millisecond TTLs.
pub const MAX_LIFETIME_LIMIT: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The most a read leaves the stored idle expiry behind (see the module docs).
const READ_SLIDE_STEP_LIMIT: Duration = Duration::from_secs(1);

/// The idle TTL and the absolute lifetime of sessions (server configuration, durations in
/// humantime form such as `"1h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lifetimes {
    /// How long a session lives without activity (default 1 h).
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
    /// How long a session lives at most, however active (default 8 h).
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self { idle_ttl: Duration::from_secs(60 * 60), max_lifetime: Duration::from_secs(8 * 60 * 60) }
    }
}

impl Lifetimes {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.idle_ttl.is_zero() {
            return Err("idle_ttl must be above zero".into());
        }
        if self.max_lifetime > MAX_LIFETIME_LIMIT {
            return Err("max_lifetime must be at most 366 days".into());
        }
        if self.idle_ttl > self.max_lifetime {
            return Err("idle_ttl must not exceed max_lifetime".into());
        }
        Ok(())
    }

    /// The absolute cap of a session created at `create_time`.
    pub fn max_expire_time(&self, create_time: SystemTime) -> SystemTime {
        create_time + self.max_lifetime.min(MAX_LIFETIME_LIMIT)
    }

    /// The idle expiry after activity at `now`: `min(now + idle_ttl, max_expire_time)`.
    pub fn idle_expire_time(&self, now: SystemTime, max_expire_time: SystemTime) -> SystemTime {
        (now + self.idle_ttl.min(MAX_LIFETIME_LIMIT)).min(max_expire_time)
    }

    /// The idle expiry of a session whose expiry is `current` after activity at `now`: slid
    /// forward to [`idle_expire_time`](Self::idle_expire_time), never back, never past the cap.
    pub fn slide(&self, current: SystemTime, now: SystemTime, max_expire_time: SystemTime) -> SystemTime {
        self.idle_expire_time(now, max_expire_time).max(current).min(max_expire_time)
    }

    /// The least a read moves the stored idle expiry: 1 s, or 1/100 of the idle TTL if less.
    pub fn read_slide_step(&self) -> Duration {
        (self.idle_ttl / 100).min(READ_SLIDE_STEP_LIMIT)
    }

    /// The idle expiry after a read at `now`: [`slide`](Self::slide) when that moves it by at
    /// least [`read_slide_step`](Self::read_slide_step) or onto the cap (so a session read
    /// all along still ends exactly at its cap), else `current` (nothing to write).
    pub fn slide_on_read(&self, current: SystemTime, now: SystemTime, max_expire_time: SystemTime) -> SystemTime {
        let slid = self.slide(current, now, max_expire_time);
        let moved = slid.duration_since(current).unwrap_or_default();
        if moved >= self.read_slide_step() || (slid == max_expire_time && slid != current) { slid } else { current }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn lifetimes(idle: u64, max: u64) -> Lifetimes {
        Lifetimes { idle_ttl: Duration::from_secs(idle), max_lifetime: Duration::from_secs(max) }
    }

    #[test]
    fn the_defaults_are_one_hour_idle_and_eight_hours_in_all() {
        let defaults = Lifetimes::default();
        assert_eq!(defaults.idle_ttl, Duration::from_secs(3600));
        assert_eq!(defaults.max_lifetime, Duration::from_secs(8 * 3600));
        assert_eq!(defaults.validate(), Ok(()));
    }

    #[test]
    fn a_new_session_expires_after_the_idle_ttl_within_its_cap() {
        let rules = lifetimes(60, 600);
        let cap = rules.max_expire_time(at(0));
        assert_eq!(cap, at(600));
        assert_eq!(rules.idle_expire_time(at(0), cap), at(60));
    }

    #[test]
    fn activity_slides_the_idle_expiry_forward() {
        let rules = lifetimes(60, 600);
        let cap = rules.max_expire_time(at(0));
        assert_eq!(rules.slide(at(60), at(30), cap), at(90));
    }

    #[test]
    fn activity_never_extends_a_session_past_its_cap() {
        let rules = lifetimes(60, 600);
        let cap = rules.max_expire_time(at(0));
        let mut expire = rules.idle_expire_time(at(0), cap);
        for second in (10..1000).step_by(10) {
            expire = rules.slide(expire, at(second), cap);
            assert!(expire <= cap);
        }
        assert_eq!(expire, cap);
    }

    #[test]
    fn activity_seen_with_an_earlier_clock_never_shortens_the_expiry() {
        let rules = lifetimes(60, 600);
        let cap = rules.max_expire_time(at(0));
        assert_eq!(rules.slide(at(100), at(20), cap), at(100));
    }

    #[test]
    fn a_read_slides_only_by_whole_steps() {
        let rules = lifetimes(3600, 8 * 3600);
        assert_eq!(rules.read_slide_step(), Duration::from_secs(1));
        let cap = rules.max_expire_time(at(0));
        let current = rules.idle_expire_time(at(0), cap);
        let just_under = at(1) - Duration::from_millis(1);
        assert_eq!(rules.slide_on_read(current, just_under, cap), current);
        assert_eq!(rules.slide_on_read(current, at(1), cap), at(3601));
        // Short idle TTLs read-slide in 1/100 of the TTL.
        assert_eq!(lifetimes(2, 4).read_slide_step(), Duration::from_millis(20));
        // Onto the cap even by less than a step, never past it, never back.
        let near_cap = cap - Duration::from_millis(500);
        assert_eq!(rules.slide_on_read(near_cap, at(8 * 3600 - 10), cap), cap);
        assert_eq!(rules.slide_on_read(cap, at(8 * 3600 - 10), cap), cap);
        let later = rules.idle_expire_time(at(10), cap);
        assert_eq!(rules.slide_on_read(later, at(5), cap), later);
    }

    #[test]
    fn bad_lifetimes_are_named() {
        assert!(lifetimes(0, 600).validate().unwrap_err().contains("idle_ttl"));
        assert!(lifetimes(700, 600).validate().unwrap_err().contains("idle_ttl"));
        assert!(lifetimes(60, 400 * 24 * 3600).validate().unwrap_err().contains("max_lifetime"));
    }

    #[test]
    fn lifetimes_read_humantime_durations() {
        let rules: Lifetimes = serde_json::from_str(r#"{"idle_ttl": "15m"}"#).unwrap();
        assert_eq!(rules, Lifetimes { idle_ttl: Duration::from_secs(900), ..Lifetimes::default() });
    }
}
