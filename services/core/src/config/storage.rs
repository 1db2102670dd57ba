//! Sections `[documents]` (the document store and its cache) and `[storage]` (the Storage
//! service: blobs, signed URLs, upload limits, the cleanup of abandoned uploads).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;
use crate::documents::{CacheSettings, FirestoreSettings};

/// Section `[documents]`: where documents (file metadata, ...) are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentsSettings {
    /// Firestore (or its emulator). Key `documents.firestore`, default unset: documents are
    /// kept in memory (the embedded default; lost on exit).
    pub firestore: Option<FirestoreSettings>,
    /// The Redis read-through cache in front of the store, used when `redis.url` is set.
    /// Keys `documents.cache.ttl` (default `5m`), `documents.cache.call_timeout` (`2s`),
    /// `documents.cache.backoff_base` (`200ms`), `documents.cache.backoff_cap` (`30s`).
    pub cache: CacheSettings,
}

/// Which object store keeps the bytes of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackend {
    /// A local folder (`storage.blob_dir`), served by meshd itself through signed URLs.
    #[default]
    Local,
    /// In memory, served by meshd itself (tests; lost on exit).
    Memory,
    /// Amazon S3 or an S3-compatible store (`[storage.s3]`).
    S3,
    /// Google Cloud Storage (`[storage.gcs]`).
    Gcs,
}

/// Section `[storage.s3]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket. Key `storage.s3.bucket`.
    pub bucket: String,
    /// The region, e.g. `eu-west-1`. Key `storage.s3.region`, default `us-east-1`.
    pub region: Option<String>,
    /// An S3-compatible endpoint instead of AWS, e.g. `http://127.0.0.1:9000`. Key
    /// `storage.s3.endpoint`.
    pub endpoint: Option<String>,
    /// The access key id; unset: the AWS environment, profile or instance credentials.
    /// Key `storage.s3.access_key_id`.
    pub access_key_id: Option<String>,
    /// The secret access key (a secret). Key `storage.s3.secret_access_key`.
    pub secret_access_key: Option<Secret<String>>,
    /// Allow a plain-HTTP endpoint. Key `storage.s3.allow_http`, default false.
    pub allow_http: bool,
}

/// Section `[storage.gcs]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsSettings {
    /// The bucket. Key `storage.gcs.bucket`.
    pub bucket: String,
    /// A service account key file; unset: the application default credentials. Key
    /// `storage.gcs.service_account_path`.
    pub service_account_path: Option<PathBuf>,
}

/// What a tenant may upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadLimits {
    /// Largest file, in bytes (default 5 GiB).
    pub max_size_bytes: u64,
    /// Allowed content types: exact (`image/png`), a type's subtypes (`image/*`) or `*/*`
    /// for any (default: any).
    pub content_types: Vec<String>,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self { max_size_bytes: 5 * 1024 * 1024 * 1024, content_types: vec!["*/*".into()] }
    }
}

/// Section `[storage]`: the Storage service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Where the bytes go. Key `storage.blobs`: `local` (default), `memory`, `s3`, `gcs`.
    pub blobs: BlobBackend,
    /// The folder of the local blob store. Key `storage.blob_dir`, default `<data_dir>/blobs`.
    pub blob_dir: Option<PathBuf>,
    /// Key of the HMAC-SHA256 signatures of the local store's URLs: 32 bytes, URL-safe base64
    /// without padding (43 characters); a secret that instances sharing a blob folder
    /// share. Key `storage.signing_key`, default unset: a random key per process.
    pub signing_key: Option<Secret<String>>,
    /// The base URL clients reach this instance's `/blobs/...` at, e.g.
    /// `https://files.example.com`. Key `storage.public_url`, default `http://<listen address>`.
    pub public_url: Option<String>,
    /// How long an upload URL works. Key `storage.upload_url_ttl`, default `15m`.
    #[serde(with = "humantime_serde")]
    pub upload_url_ttl: Duration,
    /// How long a download URL works. Key `storage.download_url_ttl`, default `5m`.
    #[serde(with = "humantime_serde")]
    pub download_url_ttl: Duration,
    /// How long after its URL expired a PENDING upload is failed and its object removed.
    /// Key `storage.cleanup_grace`, default `1h`.
    #[serde(with = "humantime_serde")]
    pub cleanup_grace: Duration,
    /// How often each instance looks for abandoned uploads. Key `storage.cleanup_interval`,
    /// default `1m`.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Concurrent WatchFiles streams per caller (tenant and user, per instance); one more is
    /// RESOURCE_EXHAUSTED (`TOO_MANY_STREAMS`). Key `storage.max_watches_per_caller`, default 8.
    pub max_watches_per_caller: usize,
    /// Key of ListFiles page tokens (as `feed.page_token_key`). Key `storage.page_token_key`.
    pub page_token_key: Option<Secret<String>>,
    /// Upload limits of every tenant. Keys `storage.limits.max_size_bytes`,
    /// `storage.limits.content_types`.
    pub limits: UploadLimits,
    /// Per-tenant limits replacing `storage.limits`, e.g.
    /// `[storage.tenant_limits.acme] max_size_bytes = 1048576`.
    pub tenant_limits: BTreeMap<String, UploadLimits>,
    /// `[storage.s3]`, when `storage.blobs = "s3"`.
    pub s3: S3Settings,
    /// `[storage.gcs]`, when `storage.blobs = "gcs"`.
    pub gcs: GcsSettings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            blobs: BlobBackend::Local,
            blob_dir: None,
            signing_key: None,
            public_url: None,
            upload_url_ttl: Duration::from_secs(15 * 60),
            download_url_ttl: Duration::from_secs(5 * 60),
            cleanup_grace: Duration::from_secs(3600),
            cleanup_interval: Duration::from_secs(60),
            max_watches_per_caller: 8,
            page_token_key: None,
            limits: UploadLimits::default(),
            tenant_limits: BTreeMap::new(),
            s3: S3Settings::default(),
            gcs: GcsSettings::default(),
        }
    }
}

impl StorageSettings {
    /// The limits of `tenant`.
    pub fn limits_of(&self, tenant: &str) -> &UploadLimits {
        self.tenant_limits.get(tenant).unwrap_or(&self.limits)
    }
}
