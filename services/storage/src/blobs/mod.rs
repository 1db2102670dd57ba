//! The bytes of files: an object store reached through `object_store` (in memory, a local
//! folder, S3 or GCS) and the signed URLs through which clients upload and download them.
//!
//! A file's object is at [`ObjectPath`] `tenants/<tenant>/files/<file id>`; every signature
//! covers the whole path, so a URL signed for one tenant's file can never reach another's.
//!
//! - S3 and GCS: `object_store`'s [`Signer`](object_store::signer::Signer) signs the URLs and
//!   the client talks to the bucket (see `cloud`).
//! - Memory and local folder: [`LocalSigning`] signs the URLs with HMAC-SHA256 and meshd
//!   serves them itself on [`Blobs::routes`] (see `http` for the checks, `upload` for how a
//!   PUT is stored all or nothing). An [`UploadGate`] lets those routes ask the file metadata
//!   whether an upload is still wanted, so deleting a PENDING file stops its upload.
//!
//! This module knows no file metadata and no gRPC: the domain decides what to sign.

mod cloud;
mod disposition;
mod http;
mod path;
mod settings;
mod signing;
mod upload;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::error::Code;
use object_store::aws::AmazonS3;
use object_store::gcp::GoogleCloudStorage;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest as _, Sha256};
use tokio_stream::StreamExt as _;

pub use mesh_core::config::{GcsSettings, S3Settings};
pub use path::ObjectPath;
pub use signing::LocalSigning;

use cloud::Cloud;

/// Longest validity of a signed URL: 7 days, the limit of S3 and GCS.
pub const MAX_URL_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What an upload URL allows: exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSpec {
    /// `Content-Type` the PUT must carry: 1 to 255 characters of visible ASCII or spaces,
    /// not starting or ending with a space.
    pub content_type: String,
    /// Exact size of the body in bytes.
    pub size: u64,
    /// SHA-256 of the body, 64 lowercase hex digits, when declared.
    pub sha256: Option<String>,
}

/// A signed URL and what a request to it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    /// The URL, ready to use.
    pub url: String,
    /// When the URL stops working.
    pub expires_at: SystemTime,
    /// Headers the request must carry verbatim (`Content-Type`, `Content-Length`, ...).
    pub headers: Vec<(String, String)>,
}

/// What the store knows of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A value to sign or a path is not acceptable; the text is safe to show the caller.
    #[error("invalid blob request: {0}")]
    Invalid(String),
    /// The object store failed or could not be reached; the text (the backend's) is for logs
    /// only.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// The store could not be set up from its settings (start-up only).
    #[error("object store not usable: {0}")]
    Config(String),
}

impl BlobError {
    fn unavailable(error: object_store::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<BlobError> for mesh_core::Error {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::Invalid(message) => mesh_core::Error::new(Code::InvalidArgument, "INVALID_ARGUMENT", message),
            BlobError::Unavailable(_) => {
                mesh_core::Error::unavailable("BACKEND_UNAVAILABLE", "object store unavailable").with_source(error)
            }
            BlobError::Config(_) => mesh_core::Error::internal(error),
        }
    }
}

/// Lets the local store's PUT handler ask whether an upload is still wanted (the file exists
/// and is PENDING).
pub trait UploadGate: Send + Sync + 'static {
    /// Whether a PUT to `path` may still store its object.
    fn allows<'a>(
        &'a self,
        path: &'a ObjectPath,
    ) -> Pin<Box<dyn Future<Output = Result<bool, mesh_core::Error>> + Send + 'a>>;
}

/// The object store of files, with its signed URLs. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    urls: Urls,
}

/// Who signs the URLs.
#[derive(Clone)]
enum Urls {
    Memory(Arc<LocalSigning>),
    Local(Arc<LocalSigning>),
    S3(Arc<AmazonS3>),
    Gcs(Arc<GoogleCloudStorage>),
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").field("kind", &self.kind()).finish_non_exhaustive()
    }
}

impl Blobs {
    /// Objects in memory, gone with the process; URLs signed by `signing`, served by
    /// [`routes`](Self::routes).
    pub fn memory(signing: LocalSigning) -> Self {
        Self { store: Arc::new(InMemory::new()), urls: Urls::Memory(Arc::new(signing)) }
    }

    /// Objects as files under `dir` (created if missing); URLs signed by `signing`, served by
    /// [`routes`](Self::routes).
    pub fn local_folder(dir: &Path, signing: LocalSigning) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| BlobError::Config(format!("cannot create the blob folder {}: {error}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|error| BlobError::Config(format!("cannot use the blob folder {}: {error}", dir.display())))?;
        Ok(Self { store: Arc::new(store), urls: Urls::Local(Arc::new(signing)) })
    }

    /// An S3 bucket (or S3-compatible service, `endpoint`). Settings left unset come from
    /// the environment (`AWS_*` variables) or the instance's role; the region defaults to
    /// `us-east-1`. Builds the client only: nothing is sent until the first call.
    pub fn s3(settings: &S3Settings) -> Result<Self, BlobError> {
        let s3 = Arc::new(settings::s3_store(settings)?);
        Ok(Self { store: Arc::clone(&s3) as Arc<dyn ObjectStore>, urls: Urls::S3(s3) })
    }

    /// A GCS bucket. Without a service account file, the application default credentials.
    pub fn gcs(settings: &GcsSettings) -> Result<Self, BlobError> {
        let gcs = Arc::new(settings::gcs_store(settings)?);
        Ok(Self { store: Arc::clone(&gcs) as Arc<dyn ObjectStore>, urls: Urls::Gcs(gcs) })
    }

    /// `memory`, `local`, `s3` or `gcs`.
    pub fn kind(&self) -> &'static str {
        match self.urls {
            Urls::Memory(_) => "memory",
            Urls::Local(_) => "local",
            Urls::S3(_) => "s3",
            Urls::Gcs(_) => "gcs",
        }
    }

    /// A URL that accepts one PUT of exactly the bytes `spec` describes to `path`, for `ttl`
    /// (at most [`MAX_URL_TTL`]; zero gives a URL that has already expired).
    pub async fn upload_url(
        &self,
        path: &ObjectPath,
        spec: &UploadSpec,
        ttl: Duration,
    ) -> Result<SignedUrl, BlobError> {
        check_content_type(&spec.content_type)?;
        check_ttl(ttl)?;
        if let Some(sha256) = &spec.sha256
            && !(sha256.len() == 64 && sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err(BlobError::Invalid("sha256 must be 64 lowercase hex digits".to_owned()));
        }
        match &self.urls {
            Urls::Memory(signing) | Urls::Local(signing) => Ok(signing.upload_url(path, spec, ttl)),
            Urls::S3(s3) => cloud::upload_url(Cloud::S3, s3.as_ref(), path, spec, ttl).await,
            Urls::Gcs(gcs) => cloud::upload_url(Cloud::Gcs, gcs.as_ref(), path, spec, ttl).await,
        }
    }

    /// A URL that downloads `path` for `ttl` as an attachment named `file_name` (1 to 255
    /// bytes, no control characters) with `Content-Type: content_type`.
    pub async fn download_url(
        &self,
        path: &ObjectPath,
        file_name: &str,
        content_type: &str,
        ttl: Duration,
    ) -> Result<SignedUrl, BlobError> {
        check_content_type(content_type)?;
        check_ttl(ttl)?;
        if file_name.is_empty() || file_name.len() > 255 || file_name.chars().any(char::is_control) {
            return Err(BlobError::Invalid("file name must be 1 to 255 bytes without control characters".to_owned()));
        }
        match &self.urls {
            Urls::Memory(signing) | Urls::Local(signing) => {
                Ok(signing.download_url(path, file_name, content_type, ttl))
            }
            Urls::S3(s3) => cloud::download_url(s3.as_ref(), path, file_name, content_type, ttl).await,
            Urls::Gcs(gcs) => cloud::download_url(gcs.as_ref(), path, file_name, content_type, ttl).await,
        }
    }

    /// The object at `path`, `None` when there is none.
    pub async fn head(&self, path: &ObjectPath) -> Result<Option<ObjectInfo>, BlobError> {
        match self.store.head(&path.to_store_path()).await {
            Ok(meta) => Ok(Some(ObjectInfo { size: meta.size })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(BlobError::unavailable(error)),
        }
    }

    /// The SHA-256 of the object at `path` in lowercase hex, `None` when there is none. The
    /// object streams through the hash; it is never held whole in memory.
    pub async fn sha256_hex(&self, path: &ObjectPath) -> Result<Option<String>, BlobError> {
        let object = match self.store.get(&path.to_store_path()).await {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(BlobError::unavailable(error)),
        };
        let mut hasher = Sha256::new();
        let mut chunks = object.into_stream();
        while let Some(chunk) = chunks.next().await {
            hasher.update(chunk.map_err(BlobError::unavailable)?);
        }
        Ok(Some(hex::encode(hasher.finalize())))
    }

    /// Deletes the object at `path`; a missing object is fine.
    pub async fn delete(&self, path: &ObjectPath) -> Result<(), BlobError> {
        match self.store.delete(&path.to_store_path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(BlobError::unavailable(error)),
        }
    }

    /// The `PUT/GET /blobs/{*path}` routes of the memory and local-folder stores, refusing
    /// uploads `gate` no longer wants and bodies over `max_upload_bytes`; `None` for S3 and
    /// GCS, whose URLs point at the bucket.
    pub fn routes(&self, gate: Arc<dyn UploadGate>, max_upload_bytes: u64) -> Option<axum::Router> {
        match &self.urls {
            Urls::Memory(signing) | Urls::Local(signing) => {
                Some(http::routes(Arc::clone(&self.store), Arc::clone(signing), gate, max_upload_bytes))
            }
            Urls::S3(_) | Urls::Gcs(_) => None,
        }
    }
}

fn check_content_type(content_type: &str) -> Result<(), BlobError> {
    let visible = |b: u8| b == b' ' || b.is_ascii_graphic();
    if content_type.is_empty()
        || content_type.len() > 255
        || !content_type.bytes().all(visible)
        || content_type.starts_with(' ')
        || content_type.ends_with(' ')
    {
        return Err(BlobError::Invalid(
            "content type must be 1 to 255 characters of visible ASCII or inner spaces".to_owned(),
        ));
    }
    Ok(())
}

fn check_ttl(ttl: Duration) -> Result<(), BlobError> {
    if ttl > MAX_URL_TTL {
        return Err(BlobError::Invalid("a signed url is valid for at most 7 days".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_text_never_reaches_the_caller() {
        let error: mesh_core::Error = BlobError::Unavailable("dns error: s3.internal.corp".to_owned()).into();
        assert_eq!(error.code(), Code::Unavailable);
        assert_eq!(error.reason(), "BACKEND_UNAVAILABLE");
        assert!(!error.message().contains("corp"));
        assert!(format!("{:?}", error.internal_source()).contains("corp"));
    }

    #[test]
    fn content_types_are_checked_before_they_are_signed() {
        for good in ["text/plain", "text/plain; charset=utf-8", "application/vnd.ms-excel"] {
            assert!(check_content_type(good).is_ok(), "{good}");
        }
        for bad in ["", " text/plain", "text/plain ", "text/plain\r\nx: y", "tëxt/plain", &"a".repeat(256)] {
            assert!(check_content_type(bad).is_err(), "{bad}");
        }
    }
}
