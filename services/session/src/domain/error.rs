//! [`SessionError`]: the one error enum of the crate, and its conversion into the mesh
//! [`Error`](mesh_core::Error) (the gRPC adapter maps that to a status in one place).

use mesh_core::FieldViolation;

use super::Version;

/// What can go wrong with a session operation, in the terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session does not exist, has ended, or is outside what the caller may reach
    /// (another user's or another tenant's): indistinguishable on purpose.
    #[error("session not found")]
    NotFound,
    /// The expected version is stale; `current` is the session's version now.
    #[error("version conflict: the current version is {current}")]
    VersionConflict {
        /// The session's current version.
        current: Version,
    },
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", FieldViolation::describe_all(.0))]
    Invalid(Vec<FieldViolation>),
    /// A backend (store, queue) failed or is unreachable; retryable. The text is for logs
    /// only and never reaches the caller.
    #[error("session backend unavailable: {0}")]
    Unavailable(String),
}

impl From<FieldViolation> for SessionError {
    fn from(violation: FieldViolation) -> Self {
        Self::Invalid(vec![violation])
    }
}

impl From<Vec<FieldViolation>> for SessionError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::Invalid(violations)
    }
}

impl From<SessionError> for mesh_core::Error {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::NotFound => mesh_core::Error::not_found("session"),
            SessionError::VersionConflict { current } => mesh_core::Error::version_conflict(current.get()),
            SessionError::Invalid(violations) => mesh_core::Error::invalid_argument(violations),
            SessionError::Unavailable(detail) => {
                mesh_core::Error::unavailable("BACKEND_UNAVAILABLE", "the session service is unavailable")
                    .with_source(anyhow::anyhow!(detail))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::error::Code;

    use super::*;

    #[test]
    fn not_found_maps_to_not_found() {
        let error = mesh_core::Error::from(SessionError::NotFound);
        assert_eq!(error.code(), Code::NotFound);
        assert_eq!(error.message(), "session not found");
    }

    #[test]
    fn a_version_conflict_maps_to_aborted_with_the_current_version() {
        let error = mesh_core::Error::from(SessionError::VersionConflict { current: Version::new(4).unwrap() });
        assert_eq!(error.code(), Code::Aborted);
        assert_eq!(error.reason(), "VERSION_CONFLICT");
        assert_eq!(error.metadata().get("current_version").map(String::as_str), Some("4"));
    }

    #[test]
    fn invalid_input_maps_to_invalid_argument_with_every_violation() {
        let violations = vec![
            FieldViolation::new("session_id", "must not be empty"),
            FieldViolation::new("expected_version", "must be at least 1"),
        ];
        let error = mesh_core::Error::from(SessionError::Invalid(violations.clone()));
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.violations(), violations.as_slice());
    }

    #[test]
    fn unavailable_hides_the_backend_detail_from_the_caller() {
        let error = mesh_core::Error::from(SessionError::Unavailable("connection refused by 10.0.0.7".into()));
        assert_eq!(error.code(), Code::Unavailable);
        assert!(!error.message().contains("10.0.0.7"));
        assert!(error.to_string().contains("10.0.0.7"), "the detail stays available for logs");
    }
}
