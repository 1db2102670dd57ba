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

    /// Every revocation still in force at `now`, with its tenant and `until`: what a
    /// process that may have missed revocations loads to catch up.
    fn active(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<ActiveRevocation>, RevocationError>>;
}

/// One revocation in force, as [`RevocationStore::active`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRevocation {
    /// Tenant of the revoked credentials.
    pub tenant: String,
    /// What is revoked.
    pub revoked: Revoked,
    /// Until when.
    pub until: SystemTime,
}

/// The Redis sorted set indexing every revocation by its `until` (milliseconds).
const INDEX_KEY: &str = "mesh:revocations:index";

/// The index member of a revocation: tenant, kind and id on separate lines (none of them
/// can hold a line break: tenants are principal ids, sids and jtis come from verified tokens).
fn index_member(tenant: &str, revoked: &Revoked) -> String {
    match revoked {
        Revoked::Session(id) => format!("{tenant}\ns\n{id}"),
        Revoked::Token(id) => format!("{tenant}\nt\n{id}"),
    }
}

fn parse_index_member(member: &str, until: SystemTime) -> Option<ActiveRevocation> {
    let mut parts = member.splitn(3, '\n');
    let (tenant, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
    let revoked = match kind {
        "s" => Revoked::Session(id.to_owned()),
        "t" => Revoked::Token(id.to_owned()),
        _ => return None,
    };
    Some(ActiveRevocation { tenant: tenant.to_owned(), revoked, until })
}

fn millis(time: SystemTime) -> u64 {
    u64::try_from(time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis()).unwrap_or(u64::MAX)
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
    until: Mutex<HashMap<String, ActiveRevocation>>,
}

impl MemoryRevocationStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ActiveRevocation>> {
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
            entries.retain(|_, entry| entry.until > now);
            for revoked in revoked {
                let entry = entries.entry(key(tenant, revoked)).or_insert_with(|| ActiveRevocation {
                    tenant: tenant.to_owned(),
                    revoked: revoked.clone(),
                    until,
                });
                entry.until = entry.until.max(until);
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
            Ok(candidates(tenant, session, token)
                .iter()
                .any(|key| entries.get(key).is_some_and(|entry| now < entry.until)))
        })
    }

    fn active(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<ActiveRevocation>, RevocationError>> {
        Box::pin(async move { Ok(self.lock().values().filter(|entry| now < entry.until).cloned().collect()) })
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
            let at = millis(until);
            let mut pipeline = redis::pipe();
            pipeline.atomic();
            for revoked in revoked {
                let key = key(tenant, revoked);
                // SET keeps the key; PEXPIREAT GT only ever extends an existing expiry, and
                // the plain PEXPIREAT NX sets the first one.
                pipeline.cmd("SET").arg(&key).arg(1).arg("KEEPTTL").ignore();
                pipeline.cmd("PEXPIREAT").arg(&key).arg(at).arg("NX").ignore();
                pipeline.cmd("PEXPIREAT").arg(&key).arg(at).arg("GT").ignore();
                pipeline.cmd("ZADD").arg(INDEX_KEY).arg("GT").arg(at).arg(index_member(tenant, revoked)).ignore();
            }
            pipeline
                .cmd("ZREMRANGEBYSCORE")
                .arg(INDEX_KEY)
                .arg("-inf")
                .arg(format!("({}", millis(SystemTime::now())))
                .ignore();
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

    fn active(&self, now: SystemTime) -> BoxFuture<'_, Result<Vec<ActiveRevocation>, RevocationError>> {
        Box::pin(async move {
            let mut connection = self.pool.get().await.map_err(unavailable)?;
            let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(INDEX_KEY)
                .arg(format!("({}", millis(now)))
                .arg("+inf")
                .arg("BYSCORE")
                .arg("WITHSCORES")
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            Ok(entries
                .into_iter()
                .filter_map(|(member, at)| {
                    parse_index_member(&member, SystemTime::UNIX_EPOCH + Duration::from_millis(at as u64))
                })
                .collect())
        })
    }
}
