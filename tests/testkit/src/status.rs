//! Reading the rich error details of a gRPC status in tests.

use tonic_types::StatusExt;

/// The `ErrorInfo.reason` of `status`, if any.
pub fn reason(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}
