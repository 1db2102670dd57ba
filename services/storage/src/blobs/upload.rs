//! Receiving the body of a signed PUT into the memory or local-folder store, all or nothing.
//!
//! The body streams, with a running byte count and SHA-256, into a staging object
//! (`uploads/<random>`, outside `tenants/`, so never mistaken for a file) through a multipart
//! upload: at most a few parts of 1 MiB are held in memory. Only a body of exactly the signed size
//! (and hash) is kept; it is then moved to its final path with `rename_if_not_exists`, which
//! fails when the object exists (a hard link on the local folder, a check under the store's
//! lock in memory), so of two concurrent PUTs at most one lands. Any other outcome, including
//! the request being dropped half-way, deletes the staging object: the final path only ever
//! holds a complete, verified object.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio_stream::StreamExt as _;

use super::path::ObjectPath;

/// Bytes buffered before they are written to the staging object as one part.
const PART_SIZE: usize = 1024 * 1024;
/// Parts written concurrently to the staging object.
const PARTS_IN_FLIGHT: usize = 2;

/// Why a body was not kept.
#[derive(Debug)]
pub(crate) enum Refused {
    /// More bytes than signed.
    TooLarge,
    /// Fewer bytes than signed, or the body broke off.
    Incomplete,
    /// The bytes do not hash to the signed SHA-256.
    ChecksumMismatch,
    /// The object store failed.
    Store(object_store::Error),
}

/// A complete, verified body in its staging object, deleted on drop unless committed.
pub(crate) struct Staged {
    store: Arc<dyn ObjectStore>,
    staging: Option<StorePath>,
}

/// Whether [`Staged::commit`] placed the object.
pub(crate) enum Committed {
    /// The object is now at its path.
    Stored,
    /// An object was at the path already; nothing changed.
    Exists,
}

/// Streams `body` into a staging object of `store`: exactly `size` bytes, hashing to `sha256`
/// when given (lowercase hex).
pub(crate) async fn receive(
    store: &Arc<dyn ObjectStore>,
    body: Body,
    size: u64,
    sha256: Option<&str>,
) -> Result<Staged, Refused> {
    let staging = StorePath::from(format!("uploads/{:032x}", rand::random::<u128>()));
    let upload = store.put_multipart(&staging).await.map_err(Refused::Store)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    match copy_body(body, &mut writer, size, sha256).await {
        Ok(()) => {}
        Err(refused) => {
            // dropping an unfinished upload discards it too; abort just does it now
            let _ = writer.abort().await;
            return Err(refused);
        }
    }
    // from here on the guard deletes the staging object on every path that does not commit
    let staged = Staged { store: Arc::clone(store), staging: Some(staging) };
    writer.finish().await.map_err(Refused::Store)?;
    Ok(staged)
}

impl Staged {
    /// Moves the staged object to `path`, unless an object is there already.
    pub(crate) async fn commit(mut self, path: &ObjectPath) -> Result<Committed, object_store::Error> {
        let staging = self.staging.take().expect("a staged upload is committed once");
        match self.store.rename_if_not_exists(&staging, &path.to_store_path()).await {
            Ok(()) => Ok(Committed::Stored),
            Err(error) => {
                self.staging = Some(staging);
                match error {
                    object_store::Error::AlreadyExists { .. } => Ok(Committed::Exists),
                    error => Err(error),
                }
            }
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let Some(staging) = self.staging.take() else { return };
        let store = Arc::clone(&self.store);
        // best effort: a staging object left by a crash is never read, only wastes space
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match store.delete(&staging).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => tracing::warn!(%staging, %error, "cannot delete a staged upload"),
                }
            });
        }
    }
}

async fn copy_body(body: Body, writer: &mut WriteMultipart, size: u64, sha256: Option<&str>) -> Result<(), Refused> {
    let mut received: u64 = 0;
    let mut hasher = Sha256::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk: Bytes = chunk.map_err(|_| Refused::Incomplete)?;
        received = received.saturating_add(chunk.len() as u64);
        if received > size {
            return Err(Refused::TooLarge);
        }
        hasher.update(&chunk);
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(Refused::Store)?;
        writer.put(chunk);
    }
    if received < size {
        return Err(Refused::Incomplete);
    }
    if let Some(expected) = sha256
        && hex::encode(hasher.finalize()) != expected
    {
        return Err(Refused::ChecksumMismatch);
    }
    Ok(())
}
