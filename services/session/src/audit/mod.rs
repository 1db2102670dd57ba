//! The audit trail: where every change of a session is recorded for good.
//!
//! [`AuditSink`] is the I/O boundary, with three implementations that pass one conformance
//! suite (`tests/audit.rs`): [`MemoryAuditSink`] (tests), [`JsonLinesAuditSink`] (the
//! embedded default: one JSON object per line in a local file) and [`PostgresAuditSink`]
//! (an append-only table). Every sink is idempotent on [`AuditEvent::event_id`]: appending an
//! event whose id is already stored changes nothing, so a job delivered twice is written once.
//!
//! Events do not reach a sink from the request path: a change enqueues its event on the job
//! queue ([`enqueue_audit`]) and the [`AuditWorker`] appends it, retrying while the sink is
//! down. So a PostgreSQL outage delays the trail and loses nothing.

mod json_lines;
mod memory;
mod migrations;
mod postgres;
mod worker;

use std::future::Future;
use std::pin::Pin;

use mesh_core::jobs::JobError;

use crate::SessionError;
use crate::domain::AuditEvent;

pub use json_lines::{AUDIT_FILE, JsonLinesAuditSink};
pub use memory::MemoryAuditSink;
pub use migrations::{MIGRATIONS, Migration};
pub use postgres::{PostgresAuditOptions, PostgresAuditSink};
pub use worker::{AUDIT_GROUP, AUDIT_QUEUE, AuditWorker, audit_queue, enqueue_audit};

/// A boxed future, as the [`AuditSink`] methods return them (it is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Failures of the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The sink's backend is unreachable or failed (connection refused, timeout, I/O error);
    /// retryable.
    #[error("audit sink unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the events or the request for a reason retrying will not cure
    /// (a schema that does not match, a malformed configuration): a bug to fix.
    #[error("audit sink refused the request: {0}")]
    Rejected(String),
    /// Stored data cannot be read back as audit events (a damaged file, a foreign row).
    #[error("audit trail unreadable: {0}")]
    Corrupt(String),
    /// A schema migration failed for a reason other than an outage.
    #[error("audit schema migration {version} failed: {reason}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// What went wrong.
        reason: String,
    },
    /// The job queue refused or failed to take an audit event.
    #[error(transparent)]
    Queue(#[from] JobError),
}

impl AuditError {
    /// Whether the failure is an outage that retrying later can cure.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Queue(JobError::Unavailable(_)))
    }
}

impl From<AuditError> for SessionError {
    fn from(error: AuditError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// Where audit events are kept for good. Implementations are idempotent on the event id
/// and safe to share between tasks (`Arc<dyn AuditSink>`).
pub trait AuditSink: Send + Sync + 'static {
    /// Stores `events` that are not stored yet, in one batch: an event whose id is already
    /// stored (or repeated earlier in the batch) changes nothing. On `Ok` every event of the
    /// batch is durable; on `Err` none, some or all may be, and appending the batch again is
    /// safe.
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>>;

    /// Number of stored events (for tests and tools).
    fn count(&self) -> BoxFuture<'_, Result<u64, AuditError>>;

    /// The stored event with id `event_id`, if any (for tests and tools).
    fn get<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<AuditEvent>, AuditError>>;

    /// Whether the sink can take events now: `Ok` when its backend answers. The worker asks
    /// it while paused by an outage, health checks may too.
    fn check(&self) -> BoxFuture<'_, Result<(), AuditError>>;
}

/// The events of `batch` whose id did not appear earlier in the batch, in order.
fn first_of_each_id(batch: &[AuditEvent]) -> Vec<&AuditEvent> {
    let mut seen = std::collections::HashSet::new();
    batch.iter().filter(|event| seen.insert(event.event_id.as_str())).collect()
}
