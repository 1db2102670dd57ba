//! Uploads left PENDING past their URL's expiry plus the grace period are failed and their
//! objects removed.

use std::time::Duration;

use mesh_proto::mesh::storage::v1 as pb;
use mesh_testkit::{TestApp, eventually};

use crate::support::{Files, Http};

#[tokio::test]
async fn an_abandoned_upload_is_failed_and_its_object_removed() {
    let app = TestApp::start_with(|settings| {
        settings.storage.upload_url_ttl = Duration::from_secs(3);
        settings.storage.cleanup_grace = Duration::ZERO;
        settings.storage.cleanup_interval = Duration::from_millis(20);
    })
    .await
    .unwrap();
    let alice = Files::of(&app, "acme", "alice");
    let mut watch = alice.watch().await;
    let never = alice.create_for("never.txt", b"never", false).await;
    let uploaded = alice.create_for("uploaded.txt", b"bytes", false).await;
    assert!(Http::new().put(&uploaded, b"bytes").await.status.is_success());
    let completed = alice.create_for("done.txt", b"done", false).await;
    assert!(Http::new().put(&completed, b"done").await.status.is_success());
    alice.complete(&completed.file.as_ref().unwrap().file_id).await.unwrap();

    for upload in [&never, &uploaded] {
        let id = upload.file.as_ref().unwrap().file_id.clone();
        let failed = eventually("the abandoned upload is failed", Duration::from_secs(30), || {
            let alice = alice.clone();
            let id = id.clone();
            async move { alice.get(&id).await.ok().filter(|file| file.status() == pb::FileStatus::Failed) }
        })
        .await;
        assert_eq!(failed.failure_reason(), pb::FailureReason::UploadExpired);
        assert_eq!(failed.version, 2);
        // the object goes right after the status is stored
        let object = app.settings().data_dir.join("blobs/tenants/acme/files").join(&id);
        eventually("its object is removed", Duration::from_secs(30), || {
            let gone = !object.exists();
            async move { gone.then_some(()) }
        })
        .await;
    }
    let done = alice.get(&completed.file.unwrap().file_id).await.unwrap();
    assert_eq!(done.status(), pb::FileStatus::Ready, "a completed upload is left alone");

    // three PENDING, one READY, two FAILED
    let mut failed = 0;
    for _ in 0..6 {
        if watch.next_change().await.file.unwrap().status() == pb::FileStatus::Failed {
            failed += 1;
        }
    }
    assert_eq!(failed, 2, "each abandoned upload is failed once, and announced");
}
