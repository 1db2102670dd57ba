//! [`Storage`]: the Storage service's operations, on the file repository, the blob store and
//! the broker (the `files` channel of each tenant carries every status change for
//! WatchFiles). The gRPC adapter only decodes, checks the caller and maps results.
//!
//! Every change is written to the document store first and published after: a change is
//! never announced before it is stored. The cleanup runs on one instance per interval (a
//! Redis lease, when the mesh shares a Redis). Changes are compare-and-set on the document's
//! version, so of two instances racing on one file (two CompleteUpload calls, two cleanup
//! sweeps) exactly one applies and announces its change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::backend::RedisPool;
use mesh_core::broker::Broker;
use mesh_core::config::StorageSettings;
use mesh_core::request_id::RequestId;

use crate::StorageError;
use crate::blobs::{Blobs, ObjectPath, SignedUrl, UploadGate, UploadSpec};
use crate::domain::{Failure, FailureReason, FileId, FileRecord, FileStatus, NewUpload};
use crate::store::{Created, Files, ListCursor, Stored, changes_channel, encode_change};

/// Files handled per cleanup query.
const CLEANUP_BATCH: usize = 100;
/// The Redis key of the mesh-wide cleanup lease (no tenant's: `_mesh`).
const CLEANUP_LEASE: &str = "t:_mesh:storage:cleanup-lease";

/// A new upload: the file and where to PUT its bytes.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The file (PENDING, unless a retried request id found it completed meanwhile).
    pub file: FileRecord,
    /// The signed PUT, while the file is PENDING.
    pub url: Option<SignedUrl>,
}

/// Who calls: the tenant, the user and whether it holds the `admin` scope.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The caller's tenant.
    pub tenant: &'a str,
    /// The caller's user.
    pub user: &'a str,
    /// Whether it may delete any file of its tenant.
    pub admin: bool,
}

/// The Storage service's operations.
#[derive(Clone)]
pub struct Storage {
    files: Files,
    blobs: Blobs,
    broker: Arc<dyn Broker>,
    settings: Arc<StorageSettings>,
    /// The Redis whose lease lets one instance of the mesh sweep per interval (none: this
    /// process is the only instance).
    lease: Option<RedisPool>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("blobs", &self.blobs.kind()).finish_non_exhaustive()
    }
}

fn object_path(file: &FileRecord) -> Result<ObjectPath, StorageError> {
    Ok(ObjectPath::new(&file.tenant, file.id.as_str())?)
}

impl Storage {
    /// The service on `files`, `blobs` and `broker`, with limits and URL lifetimes from
    /// `settings`.
    pub fn new(files: Files, blobs: Blobs, broker: Arc<dyn Broker>, settings: StorageSettings) -> Self {
        Self { files, blobs, broker, settings: Arc::new(settings), lease: None }
    }

    /// The same service, sweeping only while it holds the mesh-wide cleanup lease in `redis`
    /// (instances of one mesh share it), so one instance sweeps per interval.
    pub fn with_cleanup_lease(mut self, redis: RedisPool) -> Self {
        self.lease = Some(redis);
        self
    }

    /// Takes this interval's cleanup lease: whether this instance sweeps now. Without a lease
    /// store it always does; when Redis cannot answer it does not (the next interval tries).
    async fn take_lease(&self) -> bool {
        let Some(pool) = &self.lease else { return true };
        // a little shorter than the interval, so the next tick of any instance can take it
        let hold = self.settings.cleanup_interval.mul_f64(0.9).max(Duration::from_millis(1));
        let take = async {
            let mut connection = pool.get().await.map_err(|error| error.to_string())?;
            redis::cmd("SET")
                .arg(CLEANUP_LEASE)
                .arg(std::process::id())
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX))
                .query_async::<Option<String>>(&mut *connection)
                .await
                .map(|taken| taken.is_some())
                .map_err(|error| error.to_string())
        };
        match take.await {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(%error, "the cleanup lease could not be taken; sweeping next interval");
                false
            }
        }
    }

    /// One sweep if this instance holds this interval's lease ([`clean_up`](Self::clean_up));
    /// `None` when another instance does.
    pub async fn clean_up_if_leased(&self, now: SystemTime) -> Result<Option<(usize, usize)>, StorageError> {
        if !self.take_lease().await {
            return Ok(None);
        }
        self.clean_up(now).await.map(Some)
    }

    /// The settings.
    pub fn settings(&self) -> &StorageSettings {
        &self.settings
    }

    /// The blob store.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Publishes that `file` changed; a change that cannot be published is logged (the file
    /// is stored: its watchers see it in its next change, or by GetFile).
    async fn announce(&self, file: &FileRecord) {
        let result = async {
            let channel = changes_channel(&file.tenant)?;
            let payload = encode_change(file, SystemTime::now())?;
            self.broker.publish(&channel, payload).await.map_err(|error| StorageError::Internal(error.into()))
        };
        if let Err(error) = result.await {
            tracing::error!(file = %file.id, tenant = %file.tenant, %error, "a file change could not be published");
        }
    }

    /// Saves a PENDING file for `upload` and signs its PUT.
    pub async fn create_upload(
        &self,
        actor: Actor<'_>,
        upload: NewUpload,
        request: Option<&RequestId>,
    ) -> Result<Upload, StorageError> {
        let now = SystemTime::now();
        let expires = now + self.settings.upload_url_ttl;
        let file = FileRecord::pending(actor.tenant, actor.user, upload, now, expires);
        let (file, ttl) = match self.files.create(&file, request).await? {
            Created::New(stored) => {
                self.announce(&stored.file).await;
                (stored.file, self.settings.upload_url_ttl)
            }
            // A retried request gets a URL that ends when the first one does.
            Created::Existing(stored) => {
                let left = stored.file.upload_expires_at.duration_since(now).unwrap_or(Duration::ZERO);
                (stored.file, left)
            }
        };
        if file.status != FileStatus::Pending {
            return Ok(Upload { file, url: None });
        }
        let spec = UploadSpec {
            content_type: file.upload.content_type.clone(),
            size: file.upload.size,
            sha256: file.upload.sha256.clone(),
        };
        let url = self.blobs.upload_url(&object_path(&file)?, &spec, ttl).await?;
        Ok(Upload { file, url: Some(url) })
    }

    async fn stored(&self, tenant: &str, id: &FileId) -> Result<Stored, StorageError> {
        self.files.get(tenant, id).await?.ok_or(StorageError::NotFound)
    }

    /// Checks the uploaded object of the caller's PENDING file and marks it READY or FAILED;
    /// a file already READY or FAILED is returned unchanged.
    pub async fn complete_upload(&self, actor: Actor<'_>, id: &FileId) -> Result<FileRecord, StorageError> {
        let stored = self.stored(actor.tenant, id).await?;
        if stored.file.owner != actor.user {
            return Err(StorageError::NotAllowed("only the user who created the upload completes it"));
        }
        if stored.file.status != FileStatus::Pending {
            return Ok(stored.file);
        }
        let path = object_path(&stored.file)?;
        let info = self.blobs.head(&path).await?.ok_or(StorageError::ObjectMissing)?;
        let sha256 = match (&stored.file.upload.sha256, info.size == stored.file.upload.size) {
            // the object went between the two reads: as if it never came
            (Some(_), true) => Some(self.blobs.sha256_hex(&path).await?.ok_or(StorageError::ObjectMissing)?),
            _ => None,
        };
        let now = SystemTime::now();
        let next = stored.file.verified(info.size, sha256.as_deref(), now);
        let failed = next.status == FileStatus::Failed;
        // a failed upload's object goes now, and again once its URL cannot write any more
        let purge = failed.then(|| self.purge_time(&next, now));
        match self.files.replace(&stored, next, purge).await {
            Ok(done) => {
                if failed {
                    self.remove_object(&done.file).await;
                }
                self.announce(&done.file).await;
                Ok(done.file)
            }
            // another call completed (or deleted) it meanwhile: report what it left
            Err(StorageError::Conflict) => Ok(self.stored(actor.tenant, id).await?.file),
            Err(error) => Err(error),
        }
    }

    /// When the object of `file`, deleted or failed at `now`, is removed for good: once its
    /// upload URL has expired and the grace period passed, so a late PUT is caught too.
    fn purge_time(&self, file: &FileRecord, now: SystemTime) -> SystemTime {
        now.max(file.upload_expires_at) + self.settings.cleanup_grace
    }

    /// Removes the object of `file` now, best effort (a scheduled purge follows up).
    async fn remove_object(&self, file: &FileRecord) {
        let removed = async { self.blobs.delete(&object_path(file)?).await.map_err(StorageError::from) };
        if let Err(error) = removed.await {
            tracing::warn!(file = %file.id, %error, "an object could not be removed now; its purge will retry");
        }
    }

    /// The file `id` of the caller's tenant.
    pub async fn get(&self, tenant: &str, id: &FileId) -> Result<FileRecord, StorageError> {
        Ok(self.stored(tenant, id).await?.file)
    }

    /// A page of the tenant's files, newest first.
    pub async fn list(
        &self,
        tenant: &str,
        status: Option<FileStatus>,
        limit: usize,
        after: Option<&ListCursor>,
    ) -> Result<(Vec<FileRecord>, Option<ListCursor>), StorageError> {
        self.files.list(tenant, status, limit, after).await
    }

    /// A signed GET of a READY file.
    pub async fn download_url(&self, tenant: &str, id: &FileId) -> Result<SignedUrl, StorageError> {
        let file = self.get(tenant, id).await?;
        if file.status != FileStatus::Ready {
            return Err(StorageError::NotReady);
        }
        let path = object_path(&file)?;
        Ok(self
            .blobs
            .download_url(&path, &file.upload.file_name, &file.upload.content_type, self.settings.download_url_ttl)
            .await?)
    }

    /// Deletes the metadata, then the object, of a file of the caller (or of its tenant, for
    /// an admin), optionally only at `expected_version`.
    pub async fn delete(
        &self,
        actor: Actor<'_>,
        id: &FileId,
        expected_version: Option<i64>,
    ) -> Result<(), StorageError> {
        let stored = self.stored(actor.tenant, id).await?;
        if stored.file.owner != actor.user && !actor.admin {
            return Err(StorageError::NotAllowed("only the owner or an admin deletes a file"));
        }
        if let Some(expected) = expected_version
            && expected != stored.file.version
        {
            return Err(StorageError::VersionConflict(stored.file.version));
        }
        let now = SystemTime::now();
        match self.files.delete(&stored, self.purge_time(&stored.file, now)).await {
            Ok(()) => {}
            Err(StorageError::Conflict) => {
                return match self.files.get(actor.tenant, id).await? {
                    Some(current) => Err(StorageError::VersionConflict(current.file.version)),
                    None => Err(StorageError::NotFound),
                };
            }
            Err(error) => return Err(error),
        }
        // Metadata first: an object left behind here is unreachable (no URL can be signed for
        // it, the local stores' upload gate refuses a late PUT), and its purge removes it.
        self.remove_object(&stored.file).await;
        let gone = stored.file.changed(FileStatus::Deleted, None, now);
        self.announce(&gone).await;
        Ok(())
    }

    /// Fails every upload of any tenant left PENDING past its URL's expiry plus the grace
    /// period, and removes the objects of deleted and failed files whose purge is due.
    /// Returns how many uploads it failed and how many objects it purged.
    pub async fn clean_up(&self, now: SystemTime) -> Result<(usize, usize), StorageError> {
        let cutoff = now.checked_sub(self.settings.cleanup_grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut failed = 0;
        loop {
            let abandoned = self.files.abandoned(cutoff, CLEANUP_BATCH).await?;
            let batch = abandoned.len();
            for stored in abandoned {
                let message = format!(
                    "not completed within {} after the upload URL expired",
                    humantime::format_duration(self.settings.cleanup_grace)
                );
                let failure = Failure { reason: FailureReason::UploadExpired, message };
                let next = stored.file.changed(FileStatus::Failed, Some(failure), now);
                // its URL has expired: the object (if any) goes now and stays gone
                match self.files.replace(&stored, next, Some(now)).await {
                    Ok(done) => {
                        failed += 1;
                        self.remove_object(&done.file).await;
                        self.announce(&done.file).await;
                    }
                    // another instance cleaned it up, or it was completed meanwhile
                    Err(StorageError::Conflict) => {}
                    Err(error) => return Err(error),
                }
            }
            if batch < CLEANUP_BATCH {
                break;
            }
        }
        let mut purged = 0;
        loop {
            let due = self.files.due_purges(now, CLEANUP_BATCH).await?;
            let batch = due.len();
            for (tenant, id) in due {
                // the purge is forgotten only once the object is gone
                self.blobs.delete(&ObjectPath::new(&tenant, id.as_str())?).await?;
                self.files.purged(&tenant, &id).await?;
                purged += 1;
            }
            if batch < CLEANUP_BATCH {
                return Ok((failed, purged));
            }
        }
    }

    /// Runs [`clean_up`](Self::clean_up) every `storage.cleanup_interval` until `stop`.
    pub async fn run_cleanup(self, stop: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(self.settings.cleanup_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.clean_up_if_leased(SystemTime::now()).await {
                Ok(None | Some((0, 0))) => {}
                Ok(Some((failed, purged))) => {
                    tracing::info!(failed, purged, "cleaned up abandoned uploads and removed objects")
                }
                Err(error) => tracing::warn!(%error, "the cleanup of abandoned uploads failed; retrying next interval"),
            }
        }
    }
}

impl UploadGate for Storage {
    fn allows<'a>(
        &'a self,
        path: &'a ObjectPath,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, mesh_core::Error>> + Send + 'a>> {
        Box::pin(async move {
            let Ok(id) = FileId::parse(path.file_id(), "file_id") else { return Ok(false) };
            let file = self.files.get(path.tenant(), &id).await.map_err(mesh_core::Error::from)?;
            Ok(file.is_some_and(|stored| {
                stored.file.status == FileStatus::Pending && stored.file.upload_expires_at > SystemTime::now()
            }))
        })
    }
}
