//! The error model of the mesh: one small set of codes, each error with an UPPER_SNAKE
//! `reason`, a caller-safe message and optional details (field violations, a retry hint,
//! metadata). It knows nothing of gRPC: [`crate::transport::status`] is the one place that
//! turns it into a `tonic::Status` (with `ErrorInfo`, `BadRequest` and `RetryInfo`).
//!
//! Service crates keep their own error enum and convert it into [`Error`]; internal details
//! (backend messages, causes) travel in `source`, are logged by the mapping and never sent.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Shorthand for results whose error is the mesh [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in the terms a caller can act on (a subset of the gRPC codes, chosen
/// after Google AIP-193).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request is malformed; details name the offending fields.
    InvalidArgument,
    /// The resource does not exist, or belongs to another tenant or user.
    NotFound,
    /// The resource to create exists already (a unique key is taken).
    AlreadyExists,
    /// A concurrent change won (optimistic locking): re-read and retry.
    Aborted,
    /// The resource is not in a state that allows the call; fix the state first.
    FailedPrecondition,
    /// The caller could not be identified (missing, invalid or expired credentials).
    Unauthenticated,
    /// The caller is identified but not allowed to do this.
    PermissionDenied,
    /// A limit was hit (rate limit, slow consumer, quota); retry after the hint.
    ResourceExhausted,
    /// A backend is down or the server is shutting down; safe to retry.
    Unavailable,
    /// The caller's deadline ran out before the work was done.
    DeadlineExceeded,
    /// A bug or an unexpected failure; details are logged, never sent.
    Internal,
}

/// One invalid field of a request, reported in a `BadRequest` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `attributes.color` or `expected_version`.
    pub field: String,
    /// What is wrong and what is expected, e.g. `must be at least 1`.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }

    /// `violations` as one line, `field: description; ...` (for error messages and logs).
    pub fn describe_all(violations: &[Self]) -> String {
        violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
    }
}

/// An error of the mesh, ready to be mapped to a transport status.
pub struct Error {
    code: Code,
    reason: &'static str,
    message: String,
    violations: Vec<FieldViolation>,
    retry_after: Option<Duration>,
    metadata: BTreeMap<String, String>,
    source: Option<anyhow::Error>,
}

impl Error {
    /// An error with `code`, an UPPER_SNAKE `reason` and a caller-safe `message`.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            violations: Vec::new(),
            retry_after: None,
            metadata: BTreeMap::new(),
            source: None,
        }
    }

    /// Bad input: one or more field violations (reason `INVALID_ARGUMENT`).
    pub fn invalid_argument(violations: impl Into<Vec<FieldViolation>>) -> Self {
        let violations = violations.into();
        let message = match violations.as_slice() {
            [only] => format!("invalid {}: {}", only.field, only.description),
            many => format!("{} invalid fields", many.len()),
        };
        Self { violations, ..Self::new(Code::InvalidArgument, "INVALID_ARGUMENT", message) }
    }

    /// The `resource` (e.g. `session`) does not exist for this caller.
    pub fn not_found(resource: &str) -> Self {
        Self::new(Code::NotFound, "NOT_FOUND", format!("{resource} not found"))
    }

    /// The resource to create exists already; `reason` says which unique key is taken.
    pub fn already_exists(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }

    /// Optimistic locking lost: the stored version is `current` (sent as metadata
    /// `current_version`).
    pub fn version_conflict(current: i64) -> Self {
        Self::new(Code::Aborted, "VERSION_CONFLICT", format!("version conflict: the current version is {current}"))
            .with_metadata("current_version", current.to_string())
    }

    /// The caller is not identified; `reason` says why (e.g. `TOKEN_EXPIRED`).
    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, reason, message)
    }

    /// The caller is identified but not allowed.
    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::PermissionDenied, reason, message)
    }

    /// A limit was hit; retry after `retry_after`.
    pub fn resource_exhausted(reason: &'static str, message: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(Code::ResourceExhausted, reason, message).with_retry_after(retry_after)
    }

    /// A backend (named in the message, never its error text) is unavailable.
    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, reason, message)
    }

    /// An unexpected failure: `source` is logged by the transport mapping, the caller only
    /// sees `internal error`.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self { source: Some(source.into()), ..Self::new(Code::Internal, "INTERNAL", "internal error") }
    }

    /// Adds a retry hint (sent as `RetryInfo`).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Adds one `ErrorInfo` metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Attaches the internal cause, logged but never sent to the caller.
    pub fn with_source(mut self, source: impl Into<anyhow::Error>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The UPPER_SNAKE reason, as sent in `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The caller-safe message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The field violations (empty unless the code is `InvalidArgument`).
    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    /// The retry hint, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The `ErrorInfo` metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The internal cause, if any (for logs only).
    pub fn internal_source(&self) -> Option<&anyhow::Error> {
        self.source.as_ref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("message", &self.message)
            .field("violations", &self.violations)
            .field("retry_after", &self.retry_after)
            .field("metadata", &self.metadata)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)?;
        if let Some(source) = &self.source {
            write!(f, " ({source:#})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|source| source.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_violation_is_named_in_the_message() {
        let error = Error::invalid_argument(vec![FieldViolation::new("expected_version", "must be at least 1")]);
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.message(), "invalid expected_version: must be at least 1");
    }

    #[test]
    fn an_internal_error_hides_its_cause_from_the_message() {
        let error = Error::internal(anyhow::anyhow!("redis said: WRONGTYPE"));
        assert_eq!(error.message(), "internal error");
        assert!(error.to_string().contains("WRONGTYPE"), "the cause stays available for logs");
    }

    #[test]
    fn a_version_conflict_carries_the_current_version() {
        let error = Error::version_conflict(7);
        assert_eq!(error.code(), Code::Aborted);
        assert_eq!(error.metadata().get("current_version").map(String::as_str), Some("7"));
    }
}
