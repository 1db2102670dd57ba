//! [`StorageError`]: everything that can go wrong in the Storage service, and its one mapping
//! to the mesh's error model.

use mesh_core::documents::DocumentError;
use mesh_core::{Error, FieldViolation};

use crate::blobs::BlobError;

/// Failures of the Storage service.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Bad input.
    #[error("invalid request: {}", FieldViolation::describe_all(.0))]
    Invalid(Vec<FieldViolation>),
    /// No such file for this caller (also: another tenant's file).
    #[error("file not found")]
    NotFound,
    /// The caller may not do this to this file.
    #[error("not allowed: {0}")]
    NotAllowed(&'static str),
    /// The file is not READY (CreateDownloadUrl).
    #[error("the file is not ready")]
    NotReady,
    /// CompleteUpload found no object.
    #[error("the object was not uploaded")]
    ObjectMissing,
    /// The file changed since it was read.
    #[error("the file changed meanwhile")]
    Conflict,
    /// DeleteFile's expected version is not the file's.
    #[error("version conflict: the current version is {0}")]
    VersionConflict(i64),
    /// The document store failed.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Anything else.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        use mesh_core::error::Code;
        match error {
            StorageError::Invalid(violations) => Error::invalid_argument(violations),
            StorageError::NotFound => Error::not_found("file"),
            StorageError::NotAllowed(message) => Error::permission_denied("PERMISSION_DENIED", message),
            StorageError::NotReady => Error::new(Code::FailedPrecondition, "FILE_NOT_READY", "the file is not READY"),
            StorageError::ObjectMissing => {
                Error::new(Code::FailedPrecondition, "OBJECT_MISSING", "no object was uploaded for this file yet")
            }
            StorageError::Conflict => {
                Error::new(Code::Aborted, "CONCURRENT_UPDATE", "the file changed meanwhile; retry")
            }
            StorageError::VersionConflict(current) => Error::version_conflict(current),
            StorageError::Document(error) => error.into(),
            StorageError::Blob(error) => error.into(),
            StorageError::Internal(error) => Error::internal(error),
        }
    }
}
