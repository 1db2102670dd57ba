//! [`ActivityStore`]: where activity records live and how the feed log is appended to.
//!
//! Publishing stores the record (by id) and appends its [`FeedEvent`] to the tenant's
//! `global` channel and to the actor's channel of the broker, as one step: on Redis one
//! script does all of it (so no record exists without its events, and no event without its
//! record); the memory store does it under one lock. Deleting removes the record and appends
//! a tombstone the same way. A request id makes a retried publication return the first
//! result (same activity, same positions) for 24 h.
//!
//! [`MemoryActivityStore`] and [`RedisActivityStore`] pass one conformance suite
//! (`tests/activities.rs`).
//!
//! The feed archive ([`FeedArchive`]) lives beside them: in memory, in Redis, or in the
//! document store ([`DocumentFeedArchive`], `archive_documents`).

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use mesh_core::broker::Position;
use mesh_core::request_id::RequestId;

use crate::domain::{Activity, ActivityId, FeedError, FeedName};

pub mod archive;
pub mod archive_documents;
mod memory;
pub mod read_model;
mod redis;

pub use archive::{ArchivedEvent, FeedArchive, MemoryFeedArchive, RedisFeedArchive};
pub use archive_documents::DocumentFeedArchive;
pub use memory::MemoryActivityStore;
pub use read_model::{MemoryReadModel, ReadModel, RedisReadModel};
pub use redis::RedisActivityStore;

/// A boxed future, as the store trait returns (it is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A published activity with its position in each feed it was appended to: `global`
/// first, then the actor's feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stored activity.
    pub activity: Activity,
    /// Where its event stands in each feed.
    pub positions: Vec<(FeedName, Position)>,
}

/// Who deletes: the caller, and whether it may delete anyone's activity (`admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleter<'a> {
    /// The caller's user id.
    pub user: &'a str,
    /// The caller may delete any activity of its tenant.
    pub admin: bool,
}

/// Where activity records live and the feed log is appended to (see the module docs).
pub trait ActivityStore: Send + Sync + 'static {
    /// Stores `activity` and appends its event to `global` and the actor's feed. With
    /// `request_id`, a retry by the same tenant and actor within 24 h returns the first
    /// result and changes nothing.
    fn publish<'a>(
        &'a self,
        activity: Activity,
        request_id: Option<&'a RequestId>,
    ) -> BoxFuture<'a, Result<Published, FeedError>>;

    /// The stored activity `id` of `tenant`; [`FeedError::NotFound`] if there is none (never
    /// published, deleted, or another tenant's).
    fn get<'a>(&'a self, tenant: &'a str, id: &'a ActivityId) -> BoxFuture<'a, Result<Activity, FeedError>>;

    /// The stored activities among `ids` of `tenant`, in the order of `ids`; ids without a
    /// record (deleted, unknown) are left out.
    fn get_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [ActivityId],
    ) -> BoxFuture<'a, Result<Vec<Activity>, FeedError>>;

    /// Deletes activity `id` of `tenant` at `now` and appends a tombstone to the feeds it
    /// was in; returns the tombstone's positions. [`FeedError::NotFound`] if there is none,
    /// [`FeedError::PermissionDenied`] if it is another actor's and `deleter` is no admin.
    fn delete<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a ActivityId,
        deleter: Deleter<'a>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<(FeedName, Position)>, FeedError>>;
}

/// A pooled Redis connection, or UNAVAILABLE.
async fn connection(
    pool: &mesh_core::backend::RedisPool,
) -> Result<bb8::PooledConnection<'_, mesh_core::backend::RedisManager>, FeedError> {
    pool.get().await.map_err(|error| FeedError::Unavailable(format!("no redis connection: {error}")))
}

/// A failed Redis command.
fn unavailable(error: ::redis::RedisError) -> FeedError {
    FeedError::Unavailable(error.to_string())
}

/// The message of deleting another actor's activity without `admin`.
const NOT_YOURS: &str = "only its actor, or a token with the admin scope, may delete this activity";

/// Reads `<g offset>:<g epoch>:<a offset>:<a epoch>` (what the Redis scripts reply and
/// feed jobs carry) into the positions of `actor`'s feeds; malformed text is a backend fault.
pub(crate) fn positions(raw: &str, actor: &str) -> Result<Vec<(FeedName, Position)>, FeedError> {
    let bad = || FeedError::Unavailable(format!("malformed positions: {raw}"));
    let parts: Vec<&str> = raw.split(':').collect();
    let [g_offset, g_epoch, a_offset, a_epoch] = parts.as_slice() else {
        return Err(bad());
    };
    let position = |offset: &str, epoch: &str| -> Result<Position, FeedError> {
        Ok(Position { offset: offset.parse().map_err(|_| bad())?, epoch: mesh_core::broker::Epoch(epoch.into()) })
    };
    let [global, own] = feeds_of(actor);
    Ok(vec![(global, position(g_offset, g_epoch)?), (own, position(a_offset, a_epoch)?)])
}

/// The feeds an event of `actor` goes to, in order.
fn feeds_of(actor: &str) -> [FeedName; 2] {
    [FeedName::Global, FeedName::actor(actor)]
}
