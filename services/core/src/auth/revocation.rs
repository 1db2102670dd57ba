//! Revoked credentials: the [`RevocationStore`] boundary (memory, Redis) that every
//! instance's auth layer can ask whether an access token's session (`sid`) or the token
//! itself (`jti`) was revoked.
//!
//! A revocation only needs to be remembered while a token it affects can still verify: until
//! `until`, which the revoker sets to the revocation time + the longest access-token
//! lifetime + the verification leeway. The Redis store keeps one key per revoked id with
//! that expiry, so it never grows beyond the revocations of the last token lifetime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::backend::RedisPool;

/// A boxed future, as the store trait returns (it is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What is revoked, in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// Every access token of this session (`sid` claim).
    Session(String),
    /// One access token (`jti` claim).
    Token(String),
}

/// The revocation store failed; the caller decides (the auth layer fails closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("revocation store unavailable: {0}")]
pub struct RevocationError(pub String);

/// Where revocations are kept until the tokens they affect have expired.
pub trait RevocationStore: Send + Sync + 'static {
    /// Records that `revoked` of `tenant` are revoked until `until`. Idempotent; a later
    /// `until` extends, an earlier one never shortens.
    fn revoke<'a>(
        &'a self,
        tenant: &'a str,
        revoked: &'a [Revoked],
        until: SystemTime,
    ) -> BoxFuture<'a, Result<(), RevocationError>>;

    /// Whether an access token of `tenant` with session `session` (if any) and token id
    /// `token` is revoked at `now`. The Redis store answers by Redis's clock (its keys
    /// expire at `until`) and ignores `now`; the memory store compares with `now`.
    fn is_revoked<'a>(
        &'a self,
        tenant: &'a str,
        session: Option<&'a str>,
        token: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>>;
}

/// The key of a revocation (Redis), or its map key (memory).
fn key(tenant: &str, revoked: &Revoked) -> String {
    match revoked {
        Revoked::Session(id) => format!("t:{tenant}:revoked:session:{id}"),
        Revoked::Token(id) => format!("t:{tenant}:revoked:token:{id}"),
    }
}

fn candidates(tenant: &str, session: Option<&str>, token: &str) -> Vec<String> {
    let mut keys = vec![key(tenant, &Revoked::Token(token.to_owned()))];
    if let Some(session) = session {
        keys.push(key(tenant, &Revoked::Session(session.to_owned())));
    }
    keys
}

/// Revocations in memory.
#[derive(Debug, Default)]
pub struct MemoryRevocationStore {
    until: Mutex<HashMap<String, SystemTime>>,
}

impl MemoryRevocationStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, SystemTime>> {
        self.until.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RevocationStore for MemoryRevocationStore {
    fn revoke<'a>(
        &'a self,
        tenant: &'a str,
        revoked: &'a [Revoked],
        until: SystemTime,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            let mut entries = self.lock();
            let now = SystemTime::now();
            entries.retain(|_, until| *until > now);
            for revoked in revoked {
                let entry = entries.entry(key(tenant, revoked)).or_insert(until);
                *entry = (*entry).max(until);
            }
            Ok(())
        })
    }

    fn is_revoked<'a>(
        &'a self,
        tenant: &'a str,
        session: Option<&'a str>,
        token: &'a str,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            let entries = self.lock();
            Ok(candidates(tenant, session, token).iter().any(|key| entries.get(key).is_some_and(|until| now < *until)))
        })
    }
}

/// Revocations in Redis: one key per revoked id, expiring at its `until` (Redis's clock).
pub struct RedisRevocationStore {
    pool: RedisPool,
}

impl std::fmt::Debug for RedisRevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocationStore").finish_non_exhaustive()
    }
}

impl RedisRevocationStore {
    /// Revocations on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self { pool }
    }
}

fn unavailable(error: impl std::fmt::Display) -> RevocationError {
    RevocationError(error.to_string())
}

impl RevocationStore for RedisRevocationStore {
    fn revoke<'a>(
        &'a self,
        tenant: &'a str,
        revoked: &'a [Revoked],
        until: SystemTime,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            if revoked.is_empty() {
                return Ok(());
            }
            let at = until.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
            let at = u64::try_from(at).unwrap_or(u64::MAX);
            let mut pipeline = redis::pipe();
            pipeline.atomic();
            for revoked in revoked {
                let key = key(tenant, revoked);
                // SET keeps the key; PEXPIREAT GT only ever extends an existing expiry, and
                // the plain PEXPIREAT NX sets the first one.
                pipeline.cmd("SET").arg(&key).arg(1).arg("KEEPTTL").ignore();
                pipeline.cmd("PEXPIREAT").arg(&key).arg(at).arg("NX").ignore();
                pipeline.cmd("PEXPIREAT").arg(&key).arg(at).arg("GT").ignore();
            }
            let mut connection = self.pool.get().await.map_err(unavailable)?;
            let () = pipeline.query_async(&mut *connection).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn is_revoked<'a>(
        &'a self,
        tenant: &'a str,
        session: Option<&'a str>,
        token: &'a str,
        _now: SystemTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            let keys = candidates(tenant, session, token);
            let mut connection = self.pool.get().await.map_err(unavailable)?;
            let found: i64 =
                redis::cmd("EXISTS").arg(&keys).query_async(&mut *connection).await.map_err(unavailable)?;
            Ok(found > 0)
        })
    }
}
