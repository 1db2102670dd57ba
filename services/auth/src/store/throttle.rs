//! Login throttling: failed attempts counted per account and per client address.
//!
//! [`AttemptStore`] is the I/O boundary (memory, Redis): counters that live for a fixed
//! window from their first attempt. [`LoginThrottle`] applies the limits. Every attempt is
//! counted atomically *before* the password is checked, so parallel guesses cannot all slip
//! through: once a key has `max` attempts in its window, further attempts are refused
//! without checking the password until the window ends ([`AuthError::Throttled`] carries
//! the time left, for RESOURCE_EXHAUSTED with RetryInfo). A successful login clears the
//! account's counter and takes its own attempt back from the address's counter, so what
//! remains there are failures (one address guessing many accounts stays throttled).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use mesh_core::backend::RedisPool;
use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::BoxFuture;
use crate::AuthError;
use crate::domain::Email;

/// Limits of failed logins (server configuration, `[auth.login_throttle]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleSettings {
    /// Failed attempts on one account (tenant + email) within `window` before it is
    /// throttled.
    pub max_failures_per_account: u32,
    /// Failed attempts from one client address within `window` before it is throttled.
    pub max_failures_per_address: u32,
    /// How long a counter lives from its first attempt.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self { max_failures_per_account: 5, max_failures_per_address: 50, window: Duration::from_secs(15 * 60) }
    }
}

impl From<mesh_core::config::LoginThrottleSettings> for ThrottleSettings {
    fn from(settings: mesh_core::config::LoginThrottleSettings) -> Self {
        Self {
            max_failures_per_account: settings.max_failures_per_account,
            max_failures_per_address: settings.max_failures_per_address,
            window: settings.window,
        }
    }
}

impl ThrottleSettings {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_failures_per_account == 0 || self.max_failures_per_address == 0 {
            return Err("max_failures_per_account and max_failures_per_address must be above zero".into());
        }
        if self.window < Duration::from_secs(1) {
            return Err("window must be at least 1s".into());
        }
        Ok(())
    }
}

/// Attempt counters with a fixed window each.
pub trait AttemptStore: Send + Sync + 'static {
    /// Counts one attempt of `key`, atomically; a new counter's window (`window`) starts
    /// now. Returns the attempts so far, this one included, and the time left in the window.
    fn record_attempt<'a>(
        &'a self,
        key: &'a str,
        window: Duration,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(u32, Duration), AuthError>>;

    /// Takes one attempt of `key` back (never below zero).
    fn refund<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), AuthError>>;

    /// Forgets the attempts of `key`.
    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), AuthError>>;
}

/// The limits over an [`AttemptStore`].
#[derive(Clone)]
pub struct LoginThrottle {
    store: Arc<dyn AttemptStore>,
    settings: ThrottleSettings,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl LoginThrottle {
    /// The limits of `settings` over `store`.
    pub fn new(store: Arc<dyn AttemptStore>, settings: ThrottleSettings) -> Self {
        Self { store, settings }
    }

    /// Counts an attempt on (`tenant`, `email`) from `address`: `Ok` if it may check the
    /// password, [`AuthError::Throttled`] with the time until the later limit lifts if the
    /// account or the address is over its limit. Call
    /// [`succeeded`](Self::succeeded) when the password matched.
    pub async fn attempt(&self, tenant: &str, email: &Email, address: &str, now: SystemTime) -> Result<(), AuthError> {
        let limits = [
            (account_key(tenant, email), self.settings.max_failures_per_account),
            (address_key(address), self.settings.max_failures_per_address),
        ];
        let mut wait = Duration::ZERO;
        for (key, max) in limits {
            let (attempts, left) = self.store.record_attempt(&key, self.settings.window, now).await?;
            if attempts > max {
                wait = wait.max(left.max(Duration::from_secs(1)));
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(AuthError::Throttled { retry_after: wait }) }
    }

    /// The attempt succeeded: the account's attempts are forgotten, and this attempt is
    /// taken back from the address's count.
    pub async fn succeeded(&self, tenant: &str, email: &Email, address: &str) -> Result<(), AuthError> {
        self.store.clear(&account_key(tenant, email)).await?;
        self.store.refund(&address_key(address)).await
    }
}

/// The counter of an account: by tenant and a hash of the normalized email (no address in
/// key names, and no characters that mean something to Redis).
fn account_key(tenant: &str, email: &Email) -> String {
    let digest = Sha256::digest(email.normalized().as_bytes());
    format!("t:{tenant}:login-failures:{}", crate::domain::hex(&digest[..16]))
}

/// The counter of a client address.
fn address_key(address: &str) -> String {
    format!("mesh:login-failures:address:{address}")
}

/// Attempt counters in memory (windows by the caller's clock).
#[derive(Debug, Default)]
pub struct MemoryAttemptStore {
    counters: Mutex<HashMap<String, (u32, SystemTime)>>,
}

impl MemoryAttemptStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u32, SystemTime)>> {
        self.counters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AttemptStore for MemoryAttemptStore {
    fn record_attempt<'a>(
        &'a self,
        key: &'a str,
        window: Duration,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(u32, Duration), AuthError>> {
        Box::pin(async move {
            let mut counters = self.lock();
            counters.retain(|_, (_, until)| now < *until);
            let counter = counters.entry(key.to_owned()).or_insert((0, now + window));
            counter.0 += 1;
            Ok((counter.0, counter.1.duration_since(now).unwrap_or_default()))
        })
    }

    fn refund<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            if let Some(counter) = self.lock().get_mut(key) {
                counter.0 = counter.0.saturating_sub(1);
            }
            Ok(())
        })
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            self.lock().remove(key);
            Ok(())
        })
    }
}

/// Attempt counters in Redis: one script does INCR, the PEXPIRE of a new counter and PTTL;
/// Redis's clock runs the windows.
pub struct RedisAttemptStore {
    pool: RedisPool,
    record: Script,
    refund: Script,
}

impl std::fmt::Debug for RedisAttemptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAttemptStore").finish_non_exhaustive()
    }
}

impl RedisAttemptStore {
    /// Counters on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        let record = Script::new(
            "local n = redis.call('INCR', KEYS[1])\n\
             if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end\n\
             return {n, redis.call('PTTL', KEYS[1])}",
        );
        let refund = Script::new(
            "local n = tonumber(redis.call('GET', KEYS[1]) or '0')\n\
             if n > 0 then redis.call('DECR', KEYS[1]) end\n\
             return 1",
        );
        Self { pool, record, refund }
    }

    async fn connection(&self) -> Result<bb8::PooledConnection<'_, mesh_core::backend::RedisManager>, AuthError> {
        self.pool.get().await.map_err(|error| AuthError::Unavailable(format!("no redis connection: {error}")))
    }
}

fn unavailable(error: redis::RedisError) -> AuthError {
    AuthError::Unavailable(format!("redis failed: {error}"))
}

impl AttemptStore for RedisAttemptStore {
    fn record_attempt<'a>(
        &'a self,
        key: &'a str,
        window: Duration,
        _now: SystemTime,
    ) -> BoxFuture<'a, Result<(u32, Duration), AuthError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            let (attempts, ttl): (u32, i64) =
                self.record.key(key).arg(window).invoke_async(&mut *connection).await.map_err(unavailable)?;
            Ok((attempts, Duration::from_millis(u64::try_from(ttl).unwrap_or(0))))
        })
    }

    fn refund<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let _: i64 = self.refund.key(key).invoke_async(&mut *connection).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn clear<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut *connection).await.map_err(unavailable)?;
            Ok(())
        })
    }
}
