//! The session domain: pure types and rules, validated at the edge and trusted inside.
//!
//! Nothing here does I/O or knows a transport: the store and the gRPC adapter take these
//! types, and raw request values become them through the `parse` functions, which report
//! every problem as a [`FieldViolation`](mesh_core::FieldViolation) with the field's path.

mod attributes;
mod audit_event;
mod error;
mod lifetimes;
mod session;
mod session_id;
mod version;

pub use attributes::{
    Attributes, AttributesPatch, MAX_ATTRIBUTES, MAX_ATTRIBUTES_TOTAL_BYTES, MAX_KEY_LEN, MAX_REMOVED_KEYS,
    MAX_VALUE_BYTES,
};
pub use audit_event::AuditEvent;
pub use error::SessionError;
pub use lifetimes::{Lifetimes, MAX_LIFETIME_LIMIT};
pub use mesh_core::request_id::{REQUEST_ID_TTL, RequestId};
pub use session::{Session, SessionChange, SessionChangeKind};
pub use session_id::{SESSION_ID_LEN, SessionId};
pub use version::{ExpectedVersion, Version};
