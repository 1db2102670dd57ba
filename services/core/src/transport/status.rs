//! The one place where a mesh [`Error`] becomes a `tonic::Status`: the code, the
//! caller-safe message, and the rich details of AIP-193 (`ErrorInfo` always, with domain
//! `mesh`; `BadRequest` for field violations; `RetryInfo` for retry hints). Internal causes
//! are logged here and never sent.

use tonic::{Code as GrpcCode, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::Caller;
use crate::error::{Code, Error};

/// The `ErrorInfo.domain` of every mesh error.
pub const ERROR_DOMAIN: &str = "mesh";

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        if let Some(source) = error.internal_source() {
            tracing::error!(reason = error.reason(), error = %format!("{source:#}"), "request failed");
        }
        let mut details = ErrorDetails::new();
        details.set_error_info(
            error.reason(),
            ERROR_DOMAIN,
            error
                .metadata()
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
        for violation in error.violations() {
            details.add_bad_request_violation(&violation.field, &violation.description);
        }
        if let Some(delay) = error.retry_after() {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(grpc_code(error.code()), error.message(), details)
    }
}

fn grpc_code(code: Code) -> GrpcCode {
    match code {
        Code::InvalidArgument => GrpcCode::InvalidArgument,
        Code::NotFound => GrpcCode::NotFound,
        Code::Aborted => GrpcCode::Aborted,
        Code::FailedPrecondition => GrpcCode::FailedPrecondition,
        Code::AlreadyExists => GrpcCode::AlreadyExists,
        Code::Unauthenticated => GrpcCode::Unauthenticated,
        Code::PermissionDenied => GrpcCode::PermissionDenied,
        Code::ResourceExhausted => GrpcCode::ResourceExhausted,
        Code::Unavailable => GrpcCode::Unavailable,
        Code::DeadlineExceeded => GrpcCode::DeadlineExceeded,
        Code::Internal => GrpcCode::Internal,
    }
}

/// The verified caller of `request`, as the auth layer left it; UNAUTHENTICATED if the
/// request did not pass through the auth layer (a wiring bug, reported safely).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Error::unauthenticated("TOKEN_MISSING", "this call needs a bearer access token").into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::FieldViolation;

    #[test]
    fn field_violations_become_bad_request_details() {
        let status: Status =
            Error::invalid_argument(vec![FieldViolation::new("session_id", "must not be empty")]).into();
        assert_eq!(status.code(), GrpcCode::InvalidArgument);
        let bad_request = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(bad_request.field_violations[0].field, "session_id");
        let info = status.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_ARGUMENT", "mesh"));
    }

    #[test]
    fn a_retry_hint_becomes_retry_info() {
        let status: Status = Error::resource_exhausted("SLOW_CONSUMER", "too slow", Duration::from_secs(2)).into();
        assert_eq!(status.code(), GrpcCode::ResourceExhausted);
        assert_eq!(status.get_details_retry_info().and_then(|info| info.retry_delay), Some(Duration::from_secs(2)));
    }

    #[test]
    fn internal_causes_never_reach_the_caller() {
        let status: Status = Error::internal(anyhow::anyhow!("connection refused by 10.0.0.7:6379")).into();
        assert_eq!(status.code(), GrpcCode::Internal);
        assert_eq!(status.message(), "internal error");
        assert!(!format!("{:?}", status.details()).contains("10.0.0.7"));
    }
}
