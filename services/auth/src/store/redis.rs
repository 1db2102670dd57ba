//! [`RedisRefreshStore`]: refresh tokens in Redis, one Lua script per operation (`lua/`,
//! after the shared `lua/refresh.lua`; key layout there). Every key has the hash tag
//! `{refresh}`, so a rotation, which touches the presented token, the next one and the
//! family, is one atomic step in one slot. The scripts declare only the key that routes them
//! (KEYS[1]); the family and session keys they reach come from the stored token, which
//! Redis allows for keys of the same slot but which a strict proxy that checks declared
//! keys would refuse.
//!
//! Expiry runs on Redis's clock (PEXPIREAT at the family's expiry); the `now` given to
//! `rotate` and `find` decides only whether a token still stored counts as expired.

use std::time::SystemTime;

use mesh_core::backend::RedisPool;
use redis::Script;

use super::{BoxFuture, RefreshTokenStore, Rotation, from_millis, millis};
use crate::AuthError;
use crate::domain::{FamilyId, RefreshRecord, RefreshTokenHash};

const PRELUDE: &str = include_str!("lua/refresh.lua");

/// A script reply: status, then tenant, user, session, family, expire (ms) unless invalid.
type Reply = (String, Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>);

/// The Redis [`RefreshTokenStore`].
pub struct RedisRefreshStore {
    pool: RedisPool,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisRefreshStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRefreshStore").finish_non_exhaustive()
    }
}

struct Scripts {
    issue: Script,
    rotate: Script,
    find: Script,
    revoke_session: Script,
}

impl RedisRefreshStore {
    /// A store on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            pool,
            scripts: Scripts {
                issue: script(include_str!("lua/issue.lua")),
                rotate: script(include_str!("lua/rotate.lua")),
                find: script(include_str!("lua/find.lua")),
                revoke_session: script(include_str!("lua/revoke_session.lua")),
            },
        }
    }

    async fn invoke<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, AuthError> {
        let mut connection =
            self.pool.get().await.map_err(|error| AuthError::Unavailable(format!("no redis connection: {error}")))?;
        invocation
            .invoke_async(&mut *connection)
            .await
            .map_err(|error| AuthError::Unavailable(format!("redis script failed: {error}")))
    }
}

/// The key of a token (the scripts build the same; passed as KEYS[1] to route the call).
fn token_key(token: &RefreshTokenHash) -> String {
    format!("mesh:{{refresh}}:token:{}", token.as_str())
}

/// The record of a reply, `None` for `invalid`.
fn record_of(reply: Reply) -> Result<Option<(String, RefreshRecord)>, AuthError> {
    let (status, tenant, user, session_id, family, expire) = reply;
    if status == "invalid" {
        return Ok(None);
    }
    let corrupt = || AuthError::Unavailable("a stored refresh token is malformed".into());
    let (Some(tenant), Some(user), Some(session_id), Some(family), Some(expire)) =
        (tenant, user, session_id, family, expire)
    else {
        return Err(corrupt());
    };
    let family = FamilyId::parse(&family).ok_or_else(corrupt)?;
    Ok(Some((status, RefreshRecord { tenant, user, session_id, family, expire_time: from_millis(expire) })))
}

impl RefreshTokenStore for RedisRefreshStore {
    fn issue<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        record: &'a RefreshRecord,
    ) -> BoxFuture<'a, Result<(), AuthError>> {
        Box::pin(async move {
            let _: i64 = self
                .invoke(
                    self.scripts
                        .issue
                        .key(token_key(token))
                        .arg(token.as_str())
                        .arg(&record.tenant)
                        .arg(&record.user)
                        .arg(&record.session_id)
                        .arg(record.family.as_str())
                        .arg(millis(record.expire_time)),
                )
                .await?;
            Ok(())
        })
    }

    fn rotate<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        next: &'a RefreshTokenHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Rotation, AuthError>> {
        Box::pin(async move {
            let reply: Reply = self
                .invoke(
                    self.scripts.rotate.key(token_key(token)).arg(token.as_str()).arg(next.as_str()).arg(millis(now)),
                )
                .await?;
            Ok(match record_of(reply)? {
                None => Rotation::Invalid,
                Some((status, record)) if status == "rotated" => Rotation::Rotated(record),
                Some((_, record)) => Rotation::Reused(record),
            })
        })
    }

    fn find<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Option<RefreshRecord>, AuthError>> {
        Box::pin(async move {
            let reply: Reply =
                self.invoke(self.scripts.find.key(token_key(token)).arg(token.as_str()).arg(millis(now))).await?;
            Ok(record_of(reply)?.map(|(_, record)| record))
        })
    }

    fn revoke_session<'a>(
        &'a self,
        tenant: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<FamilyId>, AuthError>> {
        Box::pin(async move {
            let key = format!("mesh:{{refresh}}:session:{tenant}/{session_id}");
            let families: Vec<String> =
                self.invoke(self.scripts.revoke_session.key(key).arg(tenant).arg(session_id)).await?;
            Ok(families.iter().filter_map(|family| FamilyId::parse(family)).collect())
        })
    }
}
