//! The cleanup of abandoned uploads and the purge of deleted and failed files' objects, on
//! `Storage` itself with an injected clock: memory documents, a local blob folder (its
//! objects written straight into the folder, as a client's PUT to S3 would land them) and
//! the memory broker.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::broker::{HistorySettings, memory::MemoryBroker};
use mesh_core::config::StorageSettings;
use mesh_core::documents::MemoryDocuments;
use mesh_storage::blobs::{Blobs, LocalSigning, ObjectPath};
use mesh_storage::domain::{FailureReason, FileRecord, FileStatus, NewUpload};
use mesh_storage::service::{Actor, Storage};
use mesh_storage::store::Files;

const TTL: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(60);

struct Fixture {
    storage: Storage,
    blobs: Blobs,
    documents: Arc<MemoryDocuments>,
    broker: Arc<MemoryBroker>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local_folder(dir.path(), LocalSigning::random("http://127.0.0.1:9".into())).unwrap();
        let documents = Arc::new(MemoryDocuments::new());
        let broker = Arc::new(MemoryBroker::new(HistorySettings::default()));
        Self { storage: Self::instance(&documents, &blobs, &broker), blobs, documents, broker, dir }
    }

    /// Another instance of the service on the same documents, blobs and broker.
    fn instance(documents: &Arc<MemoryDocuments>, blobs: &Blobs, broker: &Arc<MemoryBroker>) -> Storage {
        let settings = StorageSettings { upload_url_ttl: TTL, cleanup_grace: GRACE, ..StorageSettings::default() };
        Storage::new(Files::new(documents.clone()), blobs.clone(), broker.clone(), settings)
    }

    async fn create(&self, size: u64) -> FileRecord {
        let upload = NewUpload { file_name: "a.txt".into(), content_type: "text/plain".into(), size, sha256: None };
        self.storage.create_upload(alice(), upload, None).await.unwrap().file
    }

    /// Writes `bytes` as `file`'s object, bypassing any check.
    fn write_object(&self, file: &FileRecord, bytes: &[u8]) {
        let path = self.dir.path().join(ObjectPath::new(&file.tenant, file.id.as_str()).unwrap().as_str());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    async fn has_object(&self, file: &FileRecord) -> bool {
        self.blobs.head(&ObjectPath::new(&file.tenant, file.id.as_str()).unwrap()).await.unwrap().is_some()
    }
}

fn alice() -> Actor<'static> {
    Actor { tenant: "acme", user: "alice", admin: false }
}

#[tokio::test]
async fn abandoned_uploads_fail_once_and_every_late_object_is_purged() {
    let fixture = Fixture::new();
    let start = SystemTime::now();
    let abandoned = fixture.create(5).await;
    fixture.write_object(&abandoned, b"12345");
    let ready = fixture.create(5).await;
    fixture.write_object(&ready, b"12345");
    assert_eq!(fixture.storage.complete_upload(alice(), &ready.id).await.unwrap().status, FileStatus::Ready);
    let deleted = fixture.create(5).await;
    fixture.storage.delete(alice(), &deleted.id, None).await.unwrap();
    // a PUT through the deleted file's still valid URL lands after the delete
    fixture.write_object(&deleted, b"12345");

    // within the URL's life and the grace period nothing happens
    assert_eq!(fixture.storage.clean_up(start + TTL + GRACE - Duration::from_secs(5)).await.unwrap(), (0, 0));
    assert!(fixture.has_object(&abandoned).await && fixture.has_object(&deleted).await);

    let later = start + TTL + GRACE + Duration::from_secs(5);
    let other = Fixture::instance(&fixture.documents, &fixture.blobs, &fixture.broker);
    let (first, second) = tokio::join!(fixture.storage.clean_up(later), other.clean_up(later));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.0 + second.0, 1, "the abandoned upload is failed once, by one instance");
    assert!(first.1 + second.1 >= 1, "the deleted file's late object is purged");
    let failed = fixture.storage.get("acme", &abandoned.id).await.unwrap();
    assert_eq!((failed.status, failed.version), (FileStatus::Failed, 2));
    assert_eq!(failed.failure.unwrap().reason, FailureReason::UploadExpired);
    assert!(!fixture.has_object(&abandoned).await, "the abandoned upload's object is removed");
    assert!(!fixture.has_object(&deleted).await, "the late object of the deleted file is removed");
    assert!(fixture.has_object(&ready).await, "a READY file keeps its object");
    assert_eq!(fixture.storage.get("acme", &ready.id).await.unwrap().status, FileStatus::Ready);

    // the purges are done: later sweeps find nothing
    let (failed_later, _) = fixture.storage.clean_up(later + Duration::from_secs(1)).await.unwrap();
    assert_eq!(failed_later, 0);
    assert_eq!(fixture.storage.clean_up(later + Duration::from_secs(2)).await.unwrap(), (0, 0));
}

#[tokio::test]
async fn a_failed_upload_loses_its_object_at_once() {
    let fixture = Fixture::new();
    let file = fixture.create(10).await;
    fixture.write_object(&file, b"short");
    let failed = fixture.storage.complete_upload(alice(), &file.id).await.unwrap();
    assert_eq!(failed.failure.as_ref().unwrap().reason, FailureReason::SizeMismatch);
    assert!(!fixture.has_object(&file).await, "a failed upload keeps no bytes");
    // a late write through the still valid URL is purged once the URL is dead
    fixture.write_object(&file, b"0123456789");
    let after = SystemTime::now() + TTL + GRACE + Duration::from_secs(1);
    assert_eq!(fixture.storage.clean_up(after).await.unwrap(), (0, 1));
    assert!(!fixture.has_object(&file).await);
}

#[tokio::test]
async fn with_a_shared_lease_one_instance_sweeps_per_interval() {
    let redis = mesh_testkit::RedisServer::start().await.unwrap();
    let pool = mesh_core::backend::redis_pool(&redis.url(), &mesh_core::config::RedisSettings::default()).unwrap();
    let fixture = Fixture::new();
    let abandoned = fixture.create(5).await;
    let first = Fixture::instance(&fixture.documents, &fixture.blobs, &fixture.broker).with_cleanup_lease(pool.clone());
    let second = Fixture::instance(&fixture.documents, &fixture.blobs, &fixture.broker).with_cleanup_lease(pool);

    let later = SystemTime::now() + TTL + GRACE + Duration::from_secs(1);
    assert_eq!(first.clean_up_if_leased(later).await.unwrap(), Some((1, 0)), "the first instance takes the lease");
    assert_eq!(second.clean_up_if_leased(later).await.unwrap(), None, "the second one skips this interval");
    assert_eq!(fixture.storage.get("acme", &abandoned.id).await.unwrap().status, FileStatus::Failed);
    // without a lease store, an instance always sweeps
    assert!(fixture.storage.clean_up_if_leased(later).await.unwrap().is_some());
}
