//! Reading the rich error details of a gRPC status in tests.

use tonic_types::StatusExt;

/// The `ErrorInfo.reason` of `status`, if any.
pub fn reason(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// The fields named by the `BadRequest` of `status`, in order; panics without one.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    let bad_request = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    bad_request.field_violations.into_iter().map(|violation| violation.field).collect()
}

/// The `ErrorInfo.metadata` entry `key` of `status`, if any.
pub fn error_metadata(status: &tonic::Status, key: &str) -> Option<String> {
    status.get_details_error_info().and_then(|info| info.metadata.get(key).cloned())
}
