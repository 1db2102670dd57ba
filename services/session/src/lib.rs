//! mesh-session: the Session service of the mesh (`mesh.session.v1`).
//!
//! - [`domain`]: the pure types and rules of sessions: ids, attributes and their limits,
//!   versions, lifetimes and expiry, change kinds, the audit event and [`SessionError`]. No
//!   I/O, no transport types.
//! - [`audit`]: the durable audit trail: the [`AuditSink`](audit::AuditSink) boundary (memory,
//!   JSON lines file, PostgreSQL), idempotent on the event id, and the
//!   [`AuditWorker`](audit::AuditWorker) that moves audit events from the job queue into a sink.
//! - [`store`]: the [`SessionStore`](store::SessionStore) boundary where sessions live
//!   (memory and Redis), each mutation atomic with its audit event.
//!
//! The gRPC adapter builds on these.

pub mod audit;
pub mod domain;
pub mod grpc;
pub mod store;
pub mod sweeper;

pub use domain::SessionError;
