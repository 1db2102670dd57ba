//! [`RedisStore`]: sessions in Redis, the source of truth of the mesh.
//!
//! Every mutation is one Lua script (in `lua/`) that changes the session hash and the
//! owner's index and enqueues the audit event (`mesh_enqueue_job` of mesh-core's job queue)
//! in the same atomic step, so a change without its audit event cannot exist.
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
//! | `jobs:{q}:stream` | stream | the audit queue `q` (mesh-core's job queue layout) |
//!
//! Several users of a tenant share a shard, so the hash records its `user` and every script
//! checks it: another user's session is NotFound. Scripts treat a session whose `expire` or
//! `max_expire` passed (by the caller's `now`) as missing; Redis drops the hash
//! [`EXPIRY_GRACE`] after its `expire` (PEXPIREAT), and dead ids leave the index lazily when
//! a list meets them. The audit worker must drain all 16 queues; they must be on this Redis.

use std::time::{Duration, SystemTime};

use mesh_core::backend::RedisPool;
use mesh_core::jobs::{QueueName, RedisJobQueue};
use redis::Script;

use super::{
    BoxFuture, ListCursor, SessionPage, SessionStore, clamp_page_size, from_millis, millis, truncate_to_millis,
};
use crate::SessionError;
use crate::domain::{
    Attributes, AttributesPatch, AuditEvent, ExpectedVersion, Lifetimes, Session, SessionChangeKind, SessionId, Version,
};

/// Number of audit queues (`audit.s0` .. `audit.s15`) the Redis store spreads events over.
pub const AUDIT_SHARDS: u32 = 16;
/// How long Redis keeps a session hash after its idle expiry (so a slightly slow clock of
/// another instance never sees a live session vanish).
pub const EXPIRY_GRACE: Duration = Duration::from_secs(60);

const SESSION_LUA: &str = include_str!("lua/session.lua");

/// The audit queue of the sessions of (`tenant`, `user`): `audit.s<k>`, `k` = FNV-1a of the
/// owner mod [`AUDIT_SHARDS`].
pub fn audit_queue_for(tenant: &str, user: &str) -> QueueName {
    QueueName::parse(&format!("audit.s{}", shard_of(tenant, user))).expect("audit shard names are valid")
}

fn shard_of(tenant: &str, user: &str) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = tenant.bytes().chain(std::iter::once(0)).chain(user.bytes());
    let hash = bytes.fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    u32::try_from(hash % u64::from(AUDIT_SHARDS)).expect("a shard fits u32")
}

/// The Redis [`SessionStore`] (see the module docs).
pub struct RedisStore {
    pool: RedisPool,
    lifetimes: Lifetimes,
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
    list: Script,
}

impl Scripts {
    fn load() -> Self {
        let mutation = |body: &str| Script::new(&format!("{}\n{SESSION_LUA}\n{body}", RedisJobQueue::enqueue_lua()));
        let read = |body: &str| Script::new(&format!("{SESSION_LUA}\n{body}"));
        Self {
            create: mutation(include_str!("lua/create.lua")),
            get: read(include_str!("lua/get.lua")),
            update: mutation(include_str!("lua/update.lua")),
            touch: mutation(include_str!("lua/touch.lua")),
            delete: mutation(include_str!("lua/delete.lua")),
            list: read(include_str!("lua/list.lua")),
        }
    }
}

/// The keys of one owner's sessions.
struct OwnerKeys {
    session_prefix: String,
    index: String,
    stream: String,
}

impl OwnerKeys {
    fn new(tenant: &str, user: &str) -> Self {
        let queue = audit_queue_for(tenant, user);
        let tag = RedisJobQueue::hash_tag(&queue);
        Self {
            session_prefix: format!("t:{tenant}:session:{tag}:"),
            index: format!("t:{tenant}:sessions:{tag}:{user}"),
            stream: RedisJobQueue::stream_key(&queue),
        }
    }

    fn session(&self, id: &SessionId) -> String {
        format!("{}{id}", self.session_prefix)
    }
}

/// A script's reply: status, version, attributes, create, update, expire, max_expire.
type Reply = (String, i64, String, i64, i64, i64, i64);

/// A list row: id, then the fields of [`Reply`] after the status.
type Row = (String, i64, String, i64, i64, i64, i64);

impl RedisStore {
    /// A store on `pool`, which also holds the audit queues (the scripts enqueue there), with
    /// `lifetimes`.
    pub fn new(pool: RedisPool, lifetimes: Lifetimes) -> Self {
        Self { pool, lifetimes, scripts: Scripts::load() }
    }

    /// Runs one script invocation on a pooled connection.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SessionError> {
        let mut connection = self
            .pool
            .get()
            .await
            .map_err(|error| SessionError::Unavailable(format!("no redis connection: {error}")))?;
        invocation.invoke_async(&mut *connection).await.map_err(unavailable)
    }

    fn idle_millis(&self) -> i64 {
        i64::try_from(self.lifetimes.idle_ttl.as_millis()).unwrap_or(i64::MAX)
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
    let version = Version::new(version).ok_or_else(|| corrupt("version"))?;
    if status == "conflict" {
        return Err(SessionError::VersionConflict { current: version });
    }
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
        event_id: mesh_core::auth::random_id(),
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
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let session = Session::create(SessionId::generate(), tenant, user, attributes, now, &self.lifetimes);
            let event = AuditEvent::of(SessionChangeKind::Created, &session, now);
            let keys = OwnerKeys::new(tenant, user);
            let attributes = serde_json::to_string(&session.attributes).expect("attributes serialize");
            let reply: Option<Reply> = self
                .invoke(
                    self.scripts
                        .create
                        .key(keys.session(&session.id))
                        .key(&keys.index)
                        .key(&keys.stream)
                        .arg(user)
                        .arg(session.id.as_str())
                        .arg(attributes)
                        .arg(millis(now))
                        .arg(millis(session.expire_time))
                        .arg(millis(session.max_expire_time))
                        .arg(grace_millis())
                        .arg(&event.event_id)
                        .arg(event.to_json()),
                )
                .await?;
            session_of(reply, tenant, user, &session.id)
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
            let now = truncate_to_millis(now);
            let keys = OwnerKeys::new(tenant, user);
            let reply: Option<Reply> = self
                .invoke(
                    self.scripts
                        .get
                        .key(keys.session(id))
                        .arg(user)
                        .arg(millis(now))
                        .arg(self.idle_millis())
                        .arg(grace_millis()),
                )
                .await?;
            session_of(reply, tenant, user, id)
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
            // Read, apply the reference rules in Rust, then commit with a compare and set on
            // the version read: the event is built from exactly the state the script stores.
            let current = self.get(tenant, user, id, now).await?;
            let updated = current.updated(expected, patch, now, &self.lifetimes)?;
            let event = AuditEvent::of(SessionChangeKind::Updated, &updated, now);
            let attributes = serde_json::to_string(&updated.attributes).expect("attributes serialize");
            let keys = OwnerKeys::new(tenant, user);
            let reply: Option<Reply> = self
                .invoke(
                    self.scripts
                        .update
                        .key(keys.session(id))
                        .key(&keys.stream)
                        .arg(user)
                        .arg(millis(now))
                        .arg(expected.version().get())
                        .arg(attributes)
                        .arg(millis(updated.expire_time))
                        .arg(grace_millis())
                        .arg(&event.event_id)
                        .arg(event.to_json()),
                )
                .await?;
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
            let keys = OwnerKeys::new(tenant, user);
            let reply: Option<Reply> = self
                .invoke(
                    self.scripts
                        .touch
                        .key(keys.session(id))
                        .key(&keys.stream)
                        .arg(user)
                        .arg(millis(now))
                        .arg(self.idle_millis())
                        .arg(grace_millis())
                        .arg(event_id)
                        .arg(before)
                        .arg(after),
                )
                .await?;
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
            let keys = OwnerKeys::new(tenant, user);
            let expected = expected.map(|v| v.version().get().to_string()).unwrap_or_default();
            let reply: Option<Reply> = self
                .invoke(
                    self.scripts
                        .delete
                        .key(keys.session(id))
                        .key(&keys.index)
                        .key(&keys.stream)
                        .arg(user)
                        .arg(millis(now))
                        .arg(expected)
                        .arg(id.as_str())
                        .arg(event_id)
                        .arg(before)
                        .arg(after),
                )
                .await?;
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
                    let reply = ("ok".to_owned(), version, attributes, create, update, expire, max_expire);
                    session_of(Some(reply), tenant, user, &id)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let next = (sessions.len() > page_size).then(|| ListCursor::after(&sessions[page_size - 1]));
            sessions.truncate(page_size);
            Ok(SessionPage { sessions, next })
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
    fn an_event_template_puts_the_version_between_its_halves() {
        let id = SessionId::generate();
        let (event_id, before, after) = event_template(SessionChangeKind::Touched, "t", "u\"v", &id, SystemTime::now());
        let event = AuditEvent::from_json(format!("{before}7{after}").as_bytes()).unwrap();
        assert_eq!((event.event_id, event.version.get(), event.user.as_str()), (event_id, 7, "u\"v"));
    }
}
