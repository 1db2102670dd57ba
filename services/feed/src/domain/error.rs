//! [`FeedError`]: what the Feed domain and its stores report, and its conversion into the
//! mesh [`Error`](mesh_core::Error).

use std::time::Duration;

use mesh_core::FieldViolation;

/// What can go wrong with a feed operation, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// No such activity in the caller's tenant, or it was deleted.
    #[error("activity not found")]
    NotFound,
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", FieldViolation::describe_all(.0))]
    Invalid(Vec<FieldViolation>),
    /// The caller may not do this (another actor's activity without `admin`).
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// The caller publishes faster than its limit; retry after `retry_after`.
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// Time until the next publication is allowed.
        retry_after: Duration,
    },
    /// The archive does not reach the feed's channel history yet (its consumers are behind):
    /// a rebuild now would lose events. Retry once they caught up.
    #[error("the feed archive is behind the channel history")]
    ArchiveBehind,
    /// A backend failed or is unreachable; retryable. The text is for logs only.
    #[error("feed backend unavailable: {0}")]
    Unavailable(String),
}

impl From<FieldViolation> for FeedError {
    fn from(violation: FieldViolation) -> Self {
        Self::Invalid(vec![violation])
    }
}

impl From<Vec<FieldViolation>> for FeedError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::Invalid(violations)
    }
}

impl From<FeedError> for mesh_core::Error {
    fn from(error: FeedError) -> Self {
        match error {
            FeedError::NotFound => mesh_core::Error::not_found("activity"),
            FeedError::Invalid(violations) => mesh_core::Error::invalid_argument(violations),
            FeedError::PermissionDenied(message) => mesh_core::Error::permission_denied("NOT_ALLOWED", message),
            FeedError::RateLimited { retry_after } => mesh_core::Error::resource_exhausted(
                "RATE_LIMITED",
                "too many activities published; retry after the delay given",
                retry_after,
            ),
            FeedError::ArchiveBehind => mesh_core::Error::new(
                mesh_core::error::Code::FailedPrecondition,
                "ARCHIVE_BEHIND",
                "the feed archive does not reach the channel history yet; retry when its consumers caught up",
            )
            .with_retry_after(Duration::from_secs(5)),
            FeedError::Unavailable(detail) => {
                mesh_core::Error::unavailable("BACKEND_UNAVAILABLE", "the feed service is unavailable")
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
    fn each_error_has_its_code_and_reason() {
        let cases = [
            (FeedError::NotFound, Code::NotFound, "NOT_FOUND"),
            (FeedError::Invalid(vec![FieldViolation::new("verb", "bad")]), Code::InvalidArgument, "INVALID_ARGUMENT"),
            (FeedError::PermissionDenied("no"), Code::PermissionDenied, "NOT_ALLOWED"),
            (FeedError::RateLimited { retry_after: Duration::from_secs(1) }, Code::ResourceExhausted, "RATE_LIMITED"),
            (FeedError::ArchiveBehind, Code::FailedPrecondition, "ARCHIVE_BEHIND"),
            (FeedError::Unavailable("down".into()), Code::Unavailable, "BACKEND_UNAVAILABLE"),
        ];
        for (error, code, reason) in cases {
            let error = mesh_core::Error::from(error);
            assert_eq!((error.code(), error.reason()), (code, reason));
        }
    }
}
