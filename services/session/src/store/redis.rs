//! [`RedisStore`]: sessions in Redis, the source of truth of the mesh.
//!
//! Every mutation is one Lua script (in `lua/`) that changes the session hash, the owner's
//! index and the expiry index, enqueues the audit event (`mesh_enqueue_job` of mesh-core's
//! job queue) and publishes the change on the session's channel (`mesh_publish` of
//! mesh-core's broker, payload as in [`change`](super::change)) in one atomic step: a change
//! without its audit event cannot exist, and watchers see changes in commit order.
//!
//! ## Keys and sharding
//!
//! Audit events go to [`AUDIT_SHARDS`] queues `audit.s0` .. `audit.s15`. The shard `k` of a
//! session is a stable hash (FNV-1a) of its owner, (tenant, user), mod 16 — by owner and not
//! by session id, so that an owner's index and all their sessions share one hash tag and a
//! script may touch them together on Redis Cluster. The session id alone therefore does not
//! give the shard; every operation knows the caller's (tenant, user) and computes it
//! ([`audit_queue_for`]). With `q = audit.s<k>`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `t:<tenant>:session:{q}:<id>` | hash | `user`, `version`, `attributes` (JSON), `create`, `update`, `expire`, `max_expire` (ms) |
//! | `t:<tenant>:sessions:{q}:<user>` | sorted set | the owner's session ids, scored by creation time (ms) |
//! | `t:<tenant>:sessions:{q}:<user>:request:<uuid>` | string | the session a CreateSession request id created (24 h) |
//! | `mesh:session-expiry:{q}` | sorted set | `<tenant>/<user>/<id>` of every session of the shard, scored by its idle expiry (ms) |
//! | `jobs:{q}:stream` | stream | the audit queue `q` (mesh-core's job queue layout) |
//!
//! The channel `sessions/<id>` keeps the broker's own keys (and hash tag); see
//! [`RedisBroker::publish_lua`] for what that means on Redis Cluster.
//!
//! Several users of a tenant share a shard, so the hash records its `user` and every script
//! checks it: another user's session is NotFound. Scripts treat a session whose `expire` or
//! `max_expire` passed (by the caller's `now`) as missing.
//!
//! ## Expiry
//!
//! [`SessionStore::expire_due`] (run by every instance's sweeper) reads the due entries of
//! each shard's expiry index and ends each in the `expire` script, which removes the session
//! and enqueues and announces EXPIRED only if the session is still there and still due: two
//! instances sweeping at once end each session exactly once. As a safety net Redis drops a
//! hash [`EXPIRY_GRACE`] after its idle expiry (PEXPIREAT) if no sweeper ran by then; such a
//! session is never announced. Dead ids leave an owner's index when a list meets them.
//! The audit workers must drain all 16 queues ([`audit_queues`]); they are on this Redis.

use std::time::{Duration, SystemTime};

use mesh_core::backend::RedisPool;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{Epoch, HistorySettings};
use mesh_core::jobs::{QueueName, RedisJobQueue};
use redis::Script;

use super::change::channel_of;
use super::{
    BoxFuture, ListCursor, SessionPage, SessionStore, clamp_page_size, from_millis, millis, owner_hash,
    truncate_to_millis,
};
use crate::SessionError;
use crate::domain::{
    Attributes, AttributesPatch, AuditEvent, ExpectedVersion, Lifetimes, MAX_ATTRIBUTES, MAX_ATTRIBUTES_TOTAL_BYTES,
    REQUEST_ID_TTL, RequestId, Session, SessionChangeKind, SessionId, Version,
};

/// Number of audit queues (`audit.s0` .. `audit.s15`) the Redis store spreads events over.
pub const AUDIT_SHARDS: u32 = 16;
/// How long Redis keeps a session hash after its idle expiry when no sweeper ended it (a
/// safety net against leaks while no instance runs; the sweeper normally ends it at once).
pub const EXPIRY_GRACE: Duration = Duration::from_secs(3600);

const SESSION_LUA: &str = include_str!("lua/session.lua");

/// The audit queue of the sessions of (`tenant`, `user`): `audit.s<k>`, `k` = FNV-1a of the
/// owner mod [`AUDIT_SHARDS`].
pub fn audit_queue_for(tenant: &str, user: &str) -> QueueName {
    shard_queue(shard_of(tenant, user))
}

/// Every audit queue of the Redis store, `audit.s0` .. `audit.s15`: what its audit workers
/// drain.
pub fn audit_queues() -> Vec<QueueName> {
    (0..AUDIT_SHARDS).map(shard_queue).collect()
}

fn shard_of(tenant: &str, user: &str) -> u32 {
    u32::try_from(owner_hash(tenant, user) % u64::from(AUDIT_SHARDS)).expect("a shard fits u32")
}

/// The Redis [`SessionStore`] (see the module docs).
pub struct RedisStore {
    pool: RedisPool,
    lifetimes: Lifetimes,
    history: HistorySettings,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("lifetimes", &self.lifetimes).finish_non_exhaustive()
    }
}

struct Scripts {
    create: Script,
    get: Script,
    update: Script,
    touch: Script,
    delete: Script,
    expire: Script,
    list: Script,
}

impl Scripts {
    fn load() -> Self {
        let prelude = format!("{}\n{}\n{SESSION_LUA}", RedisJobQueue::enqueue_lua(), RedisBroker::publish_lua());
        let mutation = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        Self {
            create: mutation(include_str!("lua/create.lua")),
            get: mutation(include_str!("lua/get.lua")),
            update: mutation(include_str!("lua/update.lua")),
            touch: mutation(include_str!("lua/touch.lua")),
            delete: mutation(include_str!("lua/delete.lua")),
            expire: mutation(include_str!("lua/expire.lua")),
            list: Script::new(&format!("{SESSION_LUA}\n{}", include_str!("lua/list.lua"))),
        }
    }
}

/// The keys of one owner's sessions.
struct OwnerKeys {
    session_prefix: String,
    index: String,
    stream: String,
    expiry: String,
}

impl OwnerKeys {
    fn new(tenant: &str, user: &str) -> Self {
        let shard = shard_of(tenant, user);
        let queue = shard_queue(shard);
        let tag = RedisJobQueue::hash_tag(&queue);
        Self {
            session_prefix: format!("t:{tenant}:session:{tag}:"),
            index: format!("t:{tenant}:sessions:{tag}:{user}"),
            stream: RedisJobQueue::stream_key(&queue),
            expiry: expiry_key(shard),
        }
    }

    fn session(&self, id: &SessionId) -> String {
        format!("{}{id}", self.session_prefix)
    }

    /// The key of a CreateSession idempotency key of this owner: the id of the session it
    /// created, expiring after [`REQUEST_ID_TTL`].
    fn request(&self, request: &RequestId) -> String {
        format!("{}:request:{request}", self.index)
    }
}

/// The audit queue of shard `shard`.
fn shard_queue(shard: u32) -> QueueName {
    QueueName::parse(&format!("audit.s{shard}")).expect("audit shard names are valid")
}

/// The expiry index of shard `shard`: a sorted set of `<tenant>/<user>/<id>` members scored
/// by their session's idle expiry (ms), read by [`RedisStore::expire_due`].
fn expiry_key(shard: u32) -> String {
    format!("mesh:session-expiry:{}", RedisJobQueue::hash_tag(&shard_queue(shard)))
}

/// The expiry index member of a session.
fn expiry_member(tenant: &str, user: &str, id: &SessionId) -> String {
    format!("{tenant}/{user}/{id}")
}

/// The owner and id of an expiry index member.
fn parse_expiry_member(member: &str) -> Option<(&str, &str, SessionId)> {
    let mut parts = member.splitn(3, '/');
    let (tenant, user, id) = (parts.next()?, parts.next()?, parts.next()?);
    Some((tenant, user, SessionId::parse(id, "id").ok()?))
}

/// A script's reply: status, version, attributes, create, update, expire, max_expire.
type Reply = (String, i64, String, i64, i64, i64, i64);

/// The fields of a session hash as HMGET returns them (see the key table).
type StoredFields = (Option<String>, Option<i64>, Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// The create script's reply: [`Reply`], then the session id.
type CreateReply = (String, i64, String, i64, i64, i64, i64, String);

/// A list row: id, then the fields of [`Reply`] after the status.
type Row = (String, i64, String, i64, i64, i64, i64);

impl RedisStore {
    /// A store on `pool`, which also holds the audit queues (the scripts enqueue there) and
    /// the broker's channels (the scripts publish each change there, kept as `history`
    /// says: the broker's settings), with `lifetimes`.
    pub fn new(pool: RedisPool, lifetimes: Lifetimes, history: HistorySettings) -> Self {
        Self { pool, lifetimes, history, scripts: Scripts::load() }
    }

    /// An invocation of a script that may announce a change (every one but get and list)
    /// for session `id` of (`tenant`, `user`) at `now`, with the KEYS and leading ARGV such
    /// scripts take (see lua/session.lua); the caller adds the script's own arguments.
    fn prepare<'s>(
        &self,
        script: &'s Script,
        tenant: &str,
        user: &str,
        id: &SessionId,
        now: SystemTime,
    ) -> Result<redis::ScriptInvocation<'s>, SessionError> {
        let (meta, log, pubsub) = RedisBroker::publish_keys(&channel_of(tenant, id)?);
        let mut invocation = self.prepare_quiet(script, tenant, user, id, now);
        invocation
            .key(meta)
            .key(log)
            .arg(pubsub)
            .arg(Epoch::random().as_str())
            .arg(self.history.size)
            .arg(RedisBroker::ttl_seconds(self.history.ttl));
        Ok(invocation)
    }

    /// Like [`prepare`](Self::prepare) without the channel's keys and arguments, for the get
    /// script (the hot path), which announces nothing.
    fn prepare_quiet<'s>(
        &self,
        script: &'s Script,
        tenant: &str,
        user: &str,
        id: &SessionId,
        now: SystemTime,
    ) -> redis::ScriptInvocation<'s> {
        let keys = OwnerKeys::new(tenant, user);
        let mut invocation = script.key(keys.session(id));
        invocation
            .key(keys.index)
            .key(keys.stream)
            .key(keys.expiry)
            .arg(user)
            .arg(millis(now))
            .arg(i64::try_from(self.lifetimes.idle_ttl.as_millis()).unwrap_or(i64::MAX))
            .arg(grace_millis())
            .arg(id.as_str())
            .arg(expiry_member(tenant, user, id));
        invocation
    }

    /// Runs one script invocation on a pooled connection.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SessionError> {
        let mut connection = self.connection().await?;
        invocation.invoke_async(&mut *connection).await.map_err(unavailable)
    }

    async fn connection(&self) -> Result<bb8::PooledConnection<'_, mesh_core::backend::RedisManager>, SessionError> {
        self.pool.get().await.map_err(|error| SessionError::Unavailable(format!("no redis connection: {error}")))
    }

    /// The caller's session `id` as stored, if it is alive at `now`: one HMGET, no script.
    async fn load_live(
        &self,
        tenant: &str,
        user: &str,
        id: &SessionId,
        now: SystemTime,
    ) -> Result<Session, SessionError> {
        let key = OwnerKeys::new(tenant, user).session(id);
        let fields: StoredFields = {
            let mut connection = self.connection().await?;
            redis::cmd("HMGET")
                .arg(&key)
                .arg(&["user", "version", "attributes", "create", "update", "expire", "max_expire"])
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?
        };
        let (Some(owner), Some(version), Some(attributes), Some(create), Some(update), Some(expire), Some(max)) =
            fields
        else {
            return Err(SessionError::NotFound);
        };
        if owner != user {
            return Err(SessionError::NotFound);
        }
        let session = stored_session((version, attributes, create, update, expire, max), tenant, user, id)?;
        if session.is_expired(now) {
            return Err(SessionError::NotFound);
        }
        Ok(session)
    }

    /// Ends one due entry of the expiry index; whether this call ended the session.
    async fn expire_member(&self, shard: u32, member: &str, now: SystemTime) -> Result<bool, SessionError> {
        let Some((tenant, user, id)) = parse_expiry_member(member) else {
            tracing::warn!(member, "dropping a malformed session expiry entry");
            let mut connection = self.connection().await?;
            let _: i64 = redis::cmd("ZREM")
                .arg(expiry_key(shard))
                .arg(member)
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            return Ok(false);
        };
        let (event_id, before, after) = event_template(SessionChangeKind::Expired, tenant, user, &id, now);
        let mut invocation = self.prepare(&self.scripts.expire, tenant, user, &id, now)?;
        invocation.arg(event_id).arg(before).arg(after);
        let ended: Option<i64> = self.invoke(&invocation).await?;
        Ok(ended.is_some())
    }
}

fn unavailable(error: redis::RedisError) -> SessionError {
    SessionError::Unavailable(format!("redis script failed: {error}"))
}

fn grace_millis() -> i64 {
    i64::try_from(EXPIRY_GRACE.as_millis()).expect("the grace fits")
}

/// The session of a reply, or the error its status says.
fn session_of(reply: Option<Reply>, tenant: &str, user: &str, id: &SessionId) -> Result<Session, SessionError> {
    let (status, version, attributes, create, update, expire, max_expire) = reply.ok_or(SessionError::NotFound)?;
    let session = stored_session((version, attributes, create, update, expire, max_expire), tenant, user, id)?;
    if status == "conflict" {
        return Err(SessionError::VersionConflict { current: session.version });
    }
    Ok(session)
}

/// A session from its stored fields: version, attributes (JSON), create, update, expire,
/// max_expire (ms).
fn stored_session(
    (version, attributes, create, update, expire, max_expire): (i64, String, i64, i64, i64, i64),
    tenant: &str,
    user: &str,
    id: &SessionId,
) -> Result<Session, SessionError> {
    let version = Version::new(version).ok_or_else(|| corrupt("version"))?;
    let attributes: Attributes = serde_json::from_str(&attributes).map_err(|_| corrupt("attributes"))?;
    Ok(Session {
        id: id.clone(),
        tenant: tenant.to_owned(),
        user: user.to_owned(),
        attributes,
        version,
        create_time: from_millis(create),
        update_time: from_millis(update),
        expire_time: from_millis(expire),
        max_expire_time: from_millis(max_expire),
    })
}

fn corrupt(field: &str) -> SessionError {
    SessionError::Unavailable(format!("stored session has a bad {field}"))
}

/// The tail of an event template (after the version) split where the script puts the
/// attributes: `,"occurred_at":"…","attributes":` and the closing `}`.
fn split_before_attributes(after: &str) -> (String, String) {
    let body = after.strip_suffix('}').expect("an event is a JSON object");
    (format!("{body},\"attributes\":"), "}".to_owned())
}

/// The JSON of an event whose version the script fills in: the text before and after the
/// version number.
fn event_template(
    kind: SessionChangeKind,
    tenant: &str,
    user: &str,
    id: &SessionId,
    now: SystemTime,
) -> (String, String, String) {
    let event = AuditEvent {
        event_id: AuditEvent::new_id(kind, id),
        tenant: tenant.to_owned(),
        user: user.to_owned(),
        session_id: id.clone(),
        kind,
        version: Version::FIRST,
        occurred_at: now,
        attributes: None,
    };
    let json = String::from_utf8(event.to_json()).expect("serde_json writes UTF-8");
    // Quotes inside JSON strings are escaped, so this marker can only be the version field.
    let marker = ",\"version\":1,";
    let at = json.find(marker).expect("an event has a version field") + marker.len() - 2;
    (event.event_id, json[..at].to_owned(), json[at + 1..].to_owned())
}

impl SessionStore for RedisStore {
    fn create<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        attributes: Attributes,
        request: Option<&'a RequestId>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let session = Session::create(SessionId::generate(), tenant, user, attributes, now, &self.lifetimes);
            let event = AuditEvent::of(SessionChangeKind::Created, &session, now);
            let attributes = serde_json::to_string(&session.attributes).expect("attributes serialize");
            let mut invocation = self.prepare(&self.scripts.create, tenant, user, &session.id, now)?;
            if let Some(request) = request {
                invocation.key(OwnerKeys::new(tenant, user).request(request));
            }
            invocation
                .arg(attributes)
                .arg(millis(session.expire_time))
                .arg(millis(session.max_expire_time))
                .arg(&event.event_id)
                .arg(event.to_json())
                .arg(i64::try_from(REQUEST_ID_TTL.as_millis()).expect("the TTL fits"));
            let reply: Option<CreateReply> = self.invoke(&invocation).await?;
            let (status, version, attributes, create, update, expire, max_expire, id) =
                reply.ok_or_else(|| corrupt("create reply"))?;
            let id = SessionId::parse(&id, "id").map_err(|_| corrupt("id"))?;
            session_of(Some((status, version, attributes, create, update, expire, max_expire)), tenant, user, &id)
        })
    }

    fn get<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            // The hot path: one HMGET, and the get script (which slides the expiry) only when
            // the read moves it by a whole step, at most once a second per session.
            let now = truncate_to_millis(now);
            let session = self.load_live(tenant, user, id, now).await?;
            if self.lifetimes.slide_on_read(session.expire_time, now, session.max_expire_time) == session.expire_time {
                return Ok(session);
            }
            let mut invocation = self.prepare_quiet(&self.scripts.get, tenant, user, id, now);
            invocation.arg(i64::try_from(self.lifetimes.read_slide_step().as_millis()).unwrap_or(i64::MAX));
            let reply: Option<Reply> = self.invoke(&invocation).await?;
            session_of(reply, tenant, user, id)
        })
    }

    fn peek<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move { self.load_live(tenant, user, id, truncate_to_millis(now)).await })
    }

    fn owner_of<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<String, SessionError>> {
        Box::pin(async move {
            // The shard of a session follows its owner, who is what we look for: ask every
            // shard in one pipelined round trip (admin calls only).
            let now = millis(truncate_to_millis(now));
            let mut pipeline = redis::pipe();
            for shard in 0..AUDIT_SHARDS {
                let tag = RedisJobQueue::hash_tag(&shard_queue(shard));
                pipeline.cmd("HMGET").arg(format!("t:{tenant}:session:{tag}:{id}")).arg(&[
                    "user",
                    "expire",
                    "max_expire",
                ]);
            }
            let mut connection = self.connection().await?;
            let replies: Vec<(Option<String>, Option<i64>, Option<i64>)> =
                pipeline.query_async(&mut *connection).await.map_err(unavailable)?;
            replies
                .into_iter()
                .find_map(|(user, expire, max_expire)| match (user, expire, max_expire) {
                    (Some(user), Some(expire), Some(max_expire)) if now < expire && now < max_expire => Some(user),
                    _ => None,
                })
                .ok_or(SessionError::NotFound)
        })
    }

    fn update<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        expected: ExpectedVersion,
        patch: &'a AttributesPatch,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            // One round trip: the script applies the patch, checks the limits and compares
            // and sets the version (see lua/update.lua).
            let (event_id, before, after) = event_template(SessionChangeKind::Updated, tenant, user, id, now);
            let (middle, after) = split_before_attributes(&after);
            let set = serde_json::to_string(patch.set()).expect("a patch serializes");
            let remove = serde_json::to_string(patch.remove()).expect("a patch serializes");
            let mut invocation = self.prepare(&self.scripts.update, tenant, user, id, now)?;
            invocation
                .arg(expected.version().get())
                .arg(set)
                .arg(remove)
                .arg(MAX_ATTRIBUTES)
                .arg(MAX_ATTRIBUTES_TOTAL_BYTES)
                .arg(event_id)
                .arg(before)
                .arg(middle)
                .arg(after);
            let reply: Option<Reply> = self.invoke(&invocation).await?;
            if let Some(reply) = reply.as_ref().filter(|reply| reply.0 == "limit") {
                let current = (reply.1, reply.2.clone(), reply.3, reply.4, reply.5, reply.6);
                let current = stored_session(current, tenant, user, id)?;
                // The reference rules name the violated limit.
                return match current.updated(expected, patch, now, &self.lifetimes) {
                    Err(error) => Err(error),
                    Ok(_) => Err(corrupt("attribute limits")),
                };
            }
            session_of(reply, tenant, user, id)
        })
    }

    fn touch<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let (event_id, before, after) = event_template(SessionChangeKind::Touched, tenant, user, id, now);
            let mut invocation = self.prepare(&self.scripts.touch, tenant, user, id, now)?;
            invocation.arg(event_id).arg(before).arg(after);
            let reply: Option<Reply> = self.invoke(&invocation).await?;
            session_of(reply, tenant, user, id)
        })
    }

    fn delete<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        expected: Option<ExpectedVersion>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let (event_id, before, after) = event_template(SessionChangeKind::Deleted, tenant, user, id, now);
            let expected = expected.map(|v| v.version().get().to_string()).unwrap_or_default();
            let mut invocation = self.prepare(&self.scripts.delete, tenant, user, id, now)?;
            invocation.arg(expected).arg(event_id).arg(before).arg(after);
            let reply: Option<Reply> = self.invoke(&invocation).await?;
            session_of(reply, tenant, user, id).map(drop)
        })
    }

    fn list<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        page_size: usize,
        after: Option<&'a ListCursor>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<SessionPage, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let page_size = clamp_page_size(page_size);
            let keys = OwnerKeys::new(tenant, user);
            let (max_score, after_id) = match after {
                Some(cursor) => (cursor.create_millis.to_string(), cursor.id.to_string()),
                None => ("+inf".to_owned(), String::new()),
            };
            let rows: Vec<Row> = self
                .invoke(
                    self.scripts
                        .list
                        .key(&keys.index)
                        .arg(user)
                        .arg(millis(now))
                        .arg(&keys.session_prefix)
                        .arg(page_size + 1)
                        .arg(max_score)
                        .arg(after_id),
                )
                .await?;
            let mut sessions = rows
                .into_iter()
                .map(|(id, version, attributes, create, update, expire, max_expire)| {
                    let id = SessionId::parse(&id, "id").map_err(|_| corrupt("id"))?;
                    stored_session((version, attributes, create, update, expire, max_expire), tenant, user, &id)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let next = (sessions.len() > page_size).then(|| ListCursor::after(&sessions[page_size - 1]));
            sessions.truncate(page_size);
            Ok(SessionPage { sessions, next })
        })
    }

    fn expire_due(&self, now: SystemTime, limit: usize) -> BoxFuture<'_, Result<usize, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut ended = 0;
            for shard in 0..AUDIT_SHARDS {
                if ended >= limit {
                    break;
                }
                let due: Vec<String> = {
                    let mut connection = self.connection().await?;
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(expiry_key(shard))
                        .arg("-inf")
                        .arg(millis(now))
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit - ended)
                        .query_async(&mut *connection)
                        .await
                        .map_err(unavailable)?
                };
                for member in due {
                    if self.expire_member(shard, &member, now).await? {
                        ended += 1;
                    }
                }
            }
            Ok(ended)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_always_maps_to_the_same_one_of_sixteen_queues() {
        assert_eq!(audit_queue_for("acme", "alice"), audit_queue_for("acme", "alice"));
        let shards: std::collections::HashSet<u32> = (0..200).map(|n| shard_of("acme", &format!("u{n}"))).collect();
        assert_eq!(shards.len(), AUDIT_SHARDS as usize);
        assert_ne!(shard_of("ab", "c"), shard_of("a", "bc"), "the separator keeps owners apart");
    }

    #[test]
    fn an_update_event_template_takes_the_version_and_the_attributes() {
        let id = SessionId::generate();
        let (_, before, after) = event_template(SessionChangeKind::Updated, "t", "u", &id, SystemTime::now());
        let (middle, after) = split_before_attributes(&after);
        let event = AuditEvent::from_json(format!("{before}3{middle}{{\"k\":\"v\"}}{after}").as_bytes()).unwrap();
        assert_eq!((event.version.get(), event.attributes.unwrap().get("k")), (3, Some("v")));
    }

    #[test]
    fn an_event_template_puts_the_version_between_its_halves() {
        let id = SessionId::generate();
        let (event_id, before, after) = event_template(SessionChangeKind::Touched, "t", "u\"v", &id, SystemTime::now());
        let event = AuditEvent::from_json(format!("{before}7{after}").as_bytes()).unwrap();
        assert_eq!((event.event_id, event.version.get(), event.user.as_str()), (event_id, 7, "u\"v"));
    }
}
