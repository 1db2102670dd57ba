//! mesh-storage: the Storage service (`mesh.storage.v1`).
//!
//! - [`domain`]: files, their life cycle and the limits of an upload (pure).
//! - [`store`]: the file-metadata repository on mesh-core's document store.
//! - [`blobs`]: the object store (memory, local folder, S3, GCS through `object_store`) and
//!   its signed URLs; for the memory and local-folder stores, meshd itself serves the signed
//!   `PUT/GET /blobs/...` requests, checked by an HMAC-SHA256 signature.
//! - [`service`]: the operations, on those three and the broker (WatchFiles' changes).
//! - [`grpc`]: the thin gRPC adapter.

pub mod blobs;
pub mod domain;
mod error;
pub mod grpc;
pub mod service;
pub mod store;

pub use error::StorageError;
