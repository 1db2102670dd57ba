//! Storage on the real document store: two meshd instances on one Firestore emulator,
//! caching through one Redis and sharing a blob folder and its signing key, as the
//! instances of one mesh do.

use mesh_core::auth::SigningKeyPair;
use mesh_core::config::{BlobBackend, Secret, Settings};
use mesh_proto::mesh::storage::v1 as pb;
use mesh_testkit::{FirestoreEmulator, RedisServer, TestApp};

use crate::support::{Files, Http};

fn on_firestore(emulator: &FirestoreEmulator, blobs: &std::path::Path) -> impl FnOnce(&mut Settings) + use<> {
    let firestore = emulator.settings();
    let blobs = blobs.to_path_buf();
    move |settings| {
        settings.documents.firestore = Some(firestore);
        settings.storage.blobs = BlobBackend::Local;
        settings.storage.blob_dir = Some(blobs);
        settings.storage.signing_key = Some(Secret::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into()));
        settings.storage.page_token_key = Some(Secret::new("HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_files_through_firestore_and_the_cache_without_stale_reads() {
    let emulator = FirestoreEmulator::start().await.expect("the firestore emulator starts");
    let redis = RedisServer::start().await.expect("redis-server starts");
    let blobs = tempfile::tempdir().unwrap();
    let key = SigningKeyPair::generate();
    let a = TestApp::on_redis(&redis, key.clone(), on_firestore(&emulator, blobs.path())).await.expect("meshd a");
    let b = TestApp::on_redis(&redis, key, on_firestore(&emulator, blobs.path())).await.expect("meshd b");
    let (alice_a, alice_b) = (Files::of(&a, "acme", "alice"), Files::of(&b, "acme", "alice"));
    let mut watch_b = alice_b.watch().await;
    let http = Http::new();

    let upload = alice_a.create_for("shared.txt", b"shared bytes", true).await;
    let id = upload.file.as_ref().unwrap().file_id.clone();
    // b reads it (and caches it as PENDING) before the upload completes on a
    assert_eq!(alice_b.get(&id).await.unwrap().status(), pb::FileStatus::Pending);
    assert!(http.put(&upload, b"shared bytes").await.status.is_success());
    assert_eq!(alice_a.complete(&id).await.unwrap().status(), pb::FileStatus::Ready);
    assert_eq!(alice_b.get(&id).await.unwrap().status(), pb::FileStatus::Ready, "no stale read on the other instance");
    let url = alice_b.download_url(&id).await.unwrap();
    assert_eq!(http.get(&url.download_url).await.body.as_ref(), b"shared bytes");

    let listed = alice_b.list(10, "", pb::FileStatus::Ready).await.unwrap();
    assert_eq!(listed.files.iter().map(|file| file.file_id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    assert!(Files::of(&b, "globex", "alice").list(10, "", pb::FileStatus::Unspecified).await.unwrap().files.is_empty());

    alice_b.delete(&id, Some(2)).await.expect("b deletes");
    assert_eq!(alice_a.get(&id).await.unwrap_err().code(), tonic::Code::NotFound, "a sees the delete at once");

    let statuses: Vec<pb::FileStatus> = {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(watch_b.next_change().await.file.unwrap().status());
        }
        statuses
    };
    assert_eq!(statuses, [pb::FileStatus::Pending, pb::FileStatus::Ready, pb::FileStatus::Deleted]);
}
