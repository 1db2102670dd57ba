//! The session store: where sessions live, behind the [`SessionStore`] boundary.
//!
//! Two implementations pass one conformance suite (`tests/store.rs`): [`MemoryStore`]
//! (embedded mode and tests) and [`RedisStore`] (the source of truth in production, see its
//! module for the key layout and the Lua scripts).
//!
//! Every operation is scoped by the caller's tenant and user: a session of another tenant or
//! user is [`SessionError::NotFound`], exactly like a missing one. An expired session (idle
//! expiry or absolute cap passed) is NotFound everywhere. Get, Touch and Update count as
//! activity and slide the idle expiry (never past the cap). Every mutation (create, update,
//! touch, delete, expiry) enqueues exactly one [`AuditEvent`](crate::domain::AuditEvent) and
//! publishes one change on the session's channel ([`channel_of`], payload as in
//! [`encode_change`]), and a change is never committed without its event.
//!
//! Times are kept to the millisecond (what Redis stores): both stores cut `now` there first,
//! so they return identical sessions. `now` is a parameter so tests control the clock.

mod change;
mod memory;
mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::FieldViolation;

use crate::SessionError;
use crate::domain::{Attributes, AttributesPatch, ExpectedVersion, RequestId, Session, SessionId};

pub use self::change::{channel_of, decode_change, encode_change};
pub use self::memory::MemoryStore;
pub use self::redis::{AUDIT_SHARDS, EXPIRY_GRACE, RedisStore, audit_queue_for, audit_queues};

pub use crate::audit::BoxFuture;

/// Largest page [`SessionStore::list`] returns; larger requests are cut to it.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Where sessions live. Shared between tasks as `Arc<dyn SessionStore>`.
pub trait SessionStore: Send + Sync + 'static {
    /// Creates a session of `user` in `tenant` with a new random id, version 1, and the
    /// expiry given by the store's lifetimes. With `request`, a retry by the same owner
    /// within [`REQUEST_ID_TTL`](crate::domain::REQUEST_ID_TTL) returns the session the first
    /// call created, as it is now, and changes nothing; if that session has ended meanwhile,
    /// a new one is created and the key now stands for it.
    fn create<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        attributes: Attributes,
        request: Option<&'a RequestId>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>>;

    /// The caller's session `id`; slides its idle expiry (Get counts as activity).
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>>;

    /// The caller's session `id` without counting as activity (no slide, no change): what a
    /// watch checks before it starts.
    fn peek<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>>;

    /// The owner of the live session `id` of `tenant`, for callers that may act on any
    /// session of their tenant (admin scopes); NotFound when there is none.
    fn owner_of<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<String, SessionError>>;

    /// Applies `patch` if the session's version is `expected` (else
    /// [`SessionError::VersionConflict`] with the current version); bumps the version and
    /// slides the idle expiry.
    fn update<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        expected: ExpectedVersion,
        patch: &'a AttributesPatch,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>>;

    /// Slides the idle expiry; the version stays.
    fn touch<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>>;

    /// Deletes the session; with `expected`, only if its version is that one.
    fn delete<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        expected: Option<ExpectedVersion>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), SessionError>>;

    /// One page of the caller's live sessions, newest first (by creation time, then id),
    /// starting after `after`. At most `page_size` sessions (1 to [`MAX_PAGE_SIZE`]).
    fn list<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        page_size: usize,
        after: Option<&'a ListCursor>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<SessionPage, SessionError>>;

    /// Ends sessions whose idle expiry or cap passed by `now` (at most `limit` per call):
    /// each is removed, its EXPIRED audit event enqueued and EXPIRED announced on its
    /// channel, exactly once even when several instances call this at the same time.
    /// Returns how many sessions this call ended. Every instance runs it periodically (the
    /// [`Sweeper`](crate::sweeper::Sweeper)); reads treat an expired session as missing
    /// before that.
    fn expire_due(&self, now: SystemTime, limit: usize) -> BoxFuture<'_, Result<usize, SessionError>>;
}

/// One page of [`SessionStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPage {
    /// The sessions, newest first.
    pub sessions: Vec<Session>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<ListCursor>,
}

/// A position in a caller's list of sessions: the creation time (ms) and id of the last
/// session of a page. Opaque to clients: [`to_token`](Self::to_token) and
/// [`parse_token`](Self::parse_token) turn it into a page token and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    create_millis: i64,
    id: SessionId,
}

impl ListCursor {
    /// The cursor just after `session`.
    pub fn after(session: &Session) -> Self {
        Self { create_millis: millis(session.create_time), id: session.id.clone() }
    }

    /// The page token of the cursor in the list of (`tenant`, `user`): opaque text that
    /// names the owner's list (by a hash), so it is refused in any other list.
    pub fn to_token(&self, tenant: &str, user: &str) -> String {
        use base64::Engine;
        let text = format!("{}.{}.{:016x}", self.create_millis, self.id, owner_hash(tenant, user));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// Reads a page token (request field `field`) of the list of (`tenant`, `user`).
    pub fn parse_token(raw: &str, field: &str, tenant: &str, user: &str) -> Result<Self, FieldViolation> {
        use base64::Engine;
        let invalid = || FieldViolation::new(field, "not a page token of this list");
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let text = String::from_utf8(text).map_err(|_| invalid())?;
        let mut parts = text.splitn(3, '.');
        let (millis, id, owner) = (parts.next(), parts.next(), parts.next());
        let (Some(millis), Some(id), Some(owner)) = (millis, id, owner) else {
            return Err(invalid());
        };
        if owner != format!("{:016x}", owner_hash(tenant, user)) {
            return Err(invalid());
        }
        let create_millis = millis.parse::<i64>().ok().filter(|ms| *ms >= 0).ok_or_else(invalid)?;
        let id = SessionId::parse(id, field).map_err(|_| invalid())?;
        Ok(Self { create_millis, id })
    }

    /// Whether `session` comes after the cursor in newest-first order.
    fn precedes(&self, session: &Session) -> bool {
        (millis(session.create_time), &session.id) < (self.create_millis, &self.id)
    }
}

/// FNV-1a of `tenant\0user`: names an owner's list in page tokens, and picks the audit
/// shard of the Redis store.
pub(crate) fn owner_hash(tenant: &str, user: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = tenant.bytes().chain(std::iter::once(0)).chain(user.bytes());
    bytes.fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

/// `page_size` within 1 to [`MAX_PAGE_SIZE`].
fn clamp_page_size(page_size: usize) -> usize {
    page_size.clamp(1, MAX_PAGE_SIZE)
}

/// Milliseconds since the epoch (0 before it).
fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// The time `ms` milliseconds after the epoch (the epoch for negative values).
fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `time` cut to the millisecond.
fn truncate_to_millis(time: SystemTime) -> SystemTime {
    from_millis(millis(time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lifetimes;

    #[test]
    fn a_cursor_survives_its_token() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let session =
            Session::create(SessionId::generate(), "t", "u", Attributes::default(), now, &Lifetimes::default());
        let cursor = ListCursor::after(&session);
        let token = cursor.to_token("t", "u");
        assert_eq!(ListCursor::parse_token(&token, "page_token", "t", "u").unwrap(), cursor);
        assert!(ListCursor::parse_token(&token, "page_token", "t", "v").is_err(), "another user's list");
        assert!(ListCursor::parse_token(&token, "page_token", "s", "u").is_err(), "another tenant's list");
    }

    #[test]
    fn a_foreign_token_is_refused() {
        for raw in ["", "abc", "12", "-1.x", "12.short", "MTIuc2hvcnQ"] {
            assert!(ListCursor::parse_token(raw, "page_token", "t", "u").is_err(), "{raw}");
        }
    }

    #[test]
    fn times_are_cut_to_the_millisecond() {
        let time = UNIX_EPOCH + Duration::new(5, 123_456_789);
        assert_eq!(truncate_to_millis(time), UNIX_EPOCH + Duration::new(5, 123_000_000));
    }
}
