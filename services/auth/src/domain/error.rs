//! [`AuthError`]: what the Auth domain and its stores report.

use mesh_core::error::FieldViolation;

/// What went wrong in Auth, in domain terms; the gRPC adapter maps it to a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", FieldViolation::describe_all(.0))]
    Invalid(Vec<FieldViolation>),
    /// The email is already registered in the tenant (compared case-insensitively).
    #[error("the email is already registered in this tenant")]
    EmailTaken,
    /// No such user in the tenant.
    #[error("user not found")]
    UserNotFound,
    /// Too many failed logins for the account or the client address: try again after
    /// `retry_after`.
    #[error("too many failed logins: retry after {retry_after:?}")]
    Throttled {
        /// Time until the limit lifts.
        retry_after: std::time::Duration,
    },
    /// A backend (store) failed or is unreachable; retryable. The text is for logs only.
    #[error("auth backend unavailable: {0}")]
    Unavailable(String),
}

impl From<FieldViolation> for AuthError {
    fn from(violation: FieldViolation) -> Self {
        Self::Invalid(vec![violation])
    }
}
