//! Wiring of the document store and the Storage service: Firestore when
//! `[documents.firestore]` is set (behind the Redis cache when the backbone is on Redis),
//! else memory; blobs per `[storage]`, with the local stores' signed URLs served on this
//! port under `/blobs/`; the cleanup of abandoned uploads as a background task.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::config::{BlobBackend, ConfigError, Settings};
use mesh_core::documents::{CachedDocuments, DocumentStore, FirestoreDocuments, MemoryDocuments};
use mesh_core::sealed::Sealer;
use mesh_proto::mesh::storage::v1::storage_service_server::StorageServiceServer;
use mesh_storage::blobs::{Blobs, LocalSigning};
use mesh_storage::grpc::StorageGrpc;
use mesh_storage::service::Storage;
use mesh_storage::store::Files;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backbone::Backbone;

/// The process's document store.
#[derive(Clone)]
pub struct Documents {
    /// Reads by key through the Redis cache when there is one: for repositories that read
    /// documents by key (files, accounts).
    pub cached: Arc<dyn DocumentStore>,
    /// The store itself: for writers whose documents are read only by query (the feed
    /// archive), which the cache would only fill with entries nobody reads.
    pub direct: Arc<dyn DocumentStore>,
    /// Whether it is durable and shared (Firestore), not this process's memory.
    pub durable: bool,
}

/// The document store `[documents]` selects.
pub async fn documents(settings: &Settings, backbone: &Backbone) -> anyhow::Result<Documents> {
    let Some(firestore) = &settings.documents.firestore else {
        if backbone.redis.is_some() {
            tracing::warn!(
                "documents are kept in memory although redis.url is set: every instance has its own; set [documents.firestore]"
            );
        }
        let memory: Arc<dyn DocumentStore> = Arc::new(MemoryDocuments::new());
        return Ok(Documents { cached: memory.clone(), direct: memory, durable: false });
    };
    let store: Arc<dyn DocumentStore> = Arc::new(
        FirestoreDocuments::connect(firestore)
            .await
            .map_err(|error| anyhow::anyhow!("cannot reach Firestore ({}): {error}", firestore.project_id))?,
    );
    let cached: Arc<dyn DocumentStore> = match &backbone.redis {
        Some(pool) => Arc::new(CachedDocuments::new(store.clone(), pool.clone(), settings.documents.cache.clone())),
        None => store.clone(),
    };
    Ok(Documents { cached, direct: store, durable: true })
}

/// The blob store `[storage]` selects; local stores sign URLs for `http://<listen>` unless
/// `storage.public_url` says otherwise.
fn blobs(settings: &Settings, listen: SocketAddr, shared: bool) -> Result<Blobs, ConfigError> {
    let storage = &settings.storage;
    let served_here = matches!(storage.blobs, BlobBackend::Local | BlobBackend::Memory);
    if served_here && storage.public_url.is_none() && listen.ip().is_unspecified() {
        return Err(ConfigError::new(
            "storage.public_url",
            format!("meshd listens on {listen}, which is no address a client can reach its signed URLs at"),
            "the base URL clients reach this instance at, e.g. https://files.example.com",
        ));
    }
    if served_here && shared && storage.signing_key.is_none() {
        tracing::warn!("storage.signing_key is not set: blob URLs work only on the instance that signed them");
    }
    let base_url = storage.public_url.clone().unwrap_or_else(|| format!("http://{listen}"));
    let base_url = base_url.trim_end_matches('/').to_owned();
    let signing = || match &storage.signing_key {
        Some(key) => LocalSigning::from_base64(key.expose(), base_url.clone()).ok_or_else(|| {
            ConfigError::new("storage.signing_key", "not 32 bytes of URL-safe base64", "43 characters of base64url")
        }),
        None => Ok(LocalSigning::random(base_url.clone())),
    };
    let invalid = |key: &str, error: mesh_storage::blobs::BlobError| {
        ConfigError::new(key, error.to_string(), "a blob store this instance can use")
    };
    match storage.blobs {
        BlobBackend::Memory => Ok(Blobs::memory(signing()?)),
        BlobBackend::Local => {
            let dir = storage.blob_dir.clone().unwrap_or_else(|| settings.data_dir.join("blobs"));
            Blobs::local_folder(&dir, signing()?).map_err(|error| invalid("storage.blob_dir", error))
        }
        BlobBackend::S3 => Blobs::s3(&storage.s3).map_err(|error| invalid("storage.s3", error)),
        BlobBackend::Gcs => Blobs::gcs(&storage.gcs).map_err(|error| invalid("storage.gcs", error)),
    }
}

/// The Storage service and the HTTP routes of its signed URLs (for the local stores).
pub struct StorageParts {
    /// The gRPC server.
    pub server: StorageServiceServer<StorageGrpc>,
    /// `PUT/GET /blobs/...`, when meshd serves the blobs itself.
    pub routes: Option<axum::Router>,
}

/// Builds the Storage service on `documents` and `backbone`; its cleanup runs in `tasks`
/// until `stop`.
pub fn start(
    settings: &Settings,
    backbone: &Backbone,
    documents: Arc<dyn DocumentStore>,
    listen: SocketAddr,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<StorageParts, ConfigError> {
    let shared = backbone.redis.is_some();
    let blobs = blobs(settings, listen, shared)?;
    let mut storage =
        Storage::new(Files::new(documents), blobs.clone(), backbone.broker.clone(), settings.storage.clone());
    if let Some(pool) = &backbone.redis {
        storage = storage.with_cleanup_lease(pool.clone());
    }
    let largest = std::iter::once(&settings.storage.limits)
        .chain(settings.storage.tenant_limits.values())
        .map(|limits| limits.max_size_bytes)
        .max()
        .unwrap_or(0);
    let routes = blobs.routes(Arc::new(storage.clone()), largest);
    tasks.spawn(storage.clone().run_cleanup(stop.clone()));
    let page_tokens = match &settings.storage.page_token_key {
        Some(key) => Sealer::from_base64(key.expose()).ok_or_else(|| {
            ConfigError::new("storage.page_token_key", "not 32 bytes of URL-safe base64", "43 characters of base64url")
        })?,
        None => {
            if shared {
                tracing::warn!(
                    "storage.page_token_key is not set: ListFiles page tokens work only on the instance that issued them"
                );
            }
            Sealer::random()
        }
    };
    let grpc = StorageGrpc::new(storage, backbone.hub.clone(), backbone.subscription, page_tokens);
    Ok(StorageParts {
        server: grpc.into_server(settings.server.max_decoding_message_size, settings.server.max_encoding_message_size),
        routes,
    })
}
