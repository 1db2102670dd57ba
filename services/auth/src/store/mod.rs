//! The I/O boundaries of Auth: where accounts and refresh tokens live.
//!
//! - [`UserStore`]: accounts, unique by (tenant, normalized email). [`MemoryUserStore`] and
//!   [`DocumentUserStore`] (on the document store: Firestore) pass one conformance suite
//!   (`tests/users.rs`).
//! - [`RefreshTokenStore`]: refresh tokens by hash, in families, with atomic rotation and
//!   reuse detection. [`MemoryRefreshStore`] and [`RedisRefreshStore`] pass one conformance
//!   suite (`tests/refresh.rs`).
//! - [`AttemptStore`]: failed-login counters (memory, Redis) under [`LoginThrottle`].

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use mesh_core::request_id::RequestId;

use crate::AuthError;
use crate::domain::{Email, FamilyId, PasswordHash, RefreshRecord, RefreshTokenHash, User, UserId};

mod documents;
mod memory;
mod redis;
pub mod throttle;

pub use documents::DocumentUserStore;
pub use memory::{MemoryRefreshStore, MemoryUserStore};
pub use redis::RedisRefreshStore;
pub use throttle::{AttemptStore, LoginThrottle, MemoryAttemptStore, RedisAttemptStore, ThrottleSettings};

/// A boxed future, as the store traits return (they are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where accounts live.
pub trait UserStore: Send + Sync + 'static {
    /// Stores a new account; [`AuthError::EmailTaken`] if the tenant has an account with the
    /// same normalized email. With `request_id`, a retry within [`REQUEST_ID_TTL`](mesh_core::request_id::REQUEST_ID_TTL) that
    /// names the same email returns the account the first call created; one that names
    /// another email is [`AuthError::Invalid`] (the key was used for another request).
    fn create<'a>(&'a self, user: User, request_id: Option<&'a RequestId>) -> BoxFuture<'a, Result<User, AuthError>>;

    /// The tenant's account with `email` (compared by its normalized form).
    fn by_email<'a>(&'a self, tenant: &'a str, email: &'a Email) -> BoxFuture<'a, Result<Option<User>, AuthError>>;

    /// The tenant's account `id`.
    fn by_id<'a>(&'a self, tenant: &'a str, id: &'a UserId) -> BoxFuture<'a, Result<Option<User>, AuthError>>;

    /// Replaces the password hash of the tenant's account `id`; [`AuthError::UserNotFound`]
    /// if there is none.
    fn set_password<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a UserId,
        hash: PasswordHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<User, AuthError>>;
}

/// The outcome of presenting a refresh token to [`RefreshTokenStore::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is consumed and the next token of its family is stored.
    Rotated(RefreshRecord),
    /// The token had been consumed before, or its family was revoked for reuse: the whole
    /// family is revoked (again). The caller ends the session, on every such presentation.
    Reused(RefreshRecord),
    /// Unknown, expired or revoked.
    Invalid,
}

/// Where refresh tokens live, by hash (the tokens themselves are never stored). Stored
/// tokens are dropped once their family expired, by the store's own clock (Redis key expiry;
/// the memory store prunes by the system clock); `now` arguments decide expiry on reads.
pub trait RefreshTokenStore: Send + Sync + 'static {
    /// Stores `token`, the first of a new family, for `record` (until its `expire_time`).
    fn issue<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        record: &'a RefreshRecord,
    ) -> BoxFuture<'a, Result<(), AuthError>>;

    /// Presents `token` at `now`: atomically consumes it and stores `next` in its family
    /// (same session, same expiry), or detects reuse and revokes the family. Of concurrent
    /// rotations of one token exactly one is [`Rotation::Rotated`].
    fn rotate<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        next: &'a RefreshTokenHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Rotation, AuthError>>;

    /// The record of `token` if it is live at `now` (stored, not consumed, not expired).
    fn find<'a>(
        &'a self,
        token: &'a RefreshTokenHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Option<RefreshRecord>, AuthError>>;

    /// Revokes every family (every token) of session `session_id` of `tenant`; the families
    /// there were.
    fn revoke_session<'a>(
        &'a self,
        tenant: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<FamilyId>, AuthError>>;
}

/// Milliseconds since the epoch.
fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time of `ms` milliseconds since the epoch.
fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
