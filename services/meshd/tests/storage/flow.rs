//! The upload and download flow over meshd's real HTTP endpoint, and what it refuses.

use http::{Method, StatusCode};
use mesh_proto::mesh::storage::v1 as pb;
use mesh_testkit::TestApp;
use tonic::Code;

use crate::support::{Files, Http, reason, sha256_hex, upload_request};

async fn app() -> TestApp {
    TestApp::start().await.expect("meshd starts")
}

fn admin(app: &TestApp, tenant: &str, user: &str) -> Files {
    let mut claims = app.claims(tenant, user);
    claims.scope = "admin".into();
    Files::with_token(app, app.key().sign(&claims).expect("the test key signs"))
}

#[tokio::test]
async fn an_upload_completes_and_downloads_the_same_bytes_while_watchers_see_each_status() {
    let app = app().await;
    let alice = Files::of(&app, "acme", "alice");
    let mut watch = Files::of(&app, "acme", "bob").watch().await;
    let mut other_tenant = Files::of(&app, "globex", "carol").watch().await;
    let http = Http::new();
    let bytes = b"hello, mesh storage \xF0\x9F\x93\xA6".repeat(100);

    let upload = alice.create_for("report \u{e9}t\u{e9}.txt", &bytes, true).await;
    let file = upload.file.clone().expect("a file");
    assert_eq!(file.status(), pb::FileStatus::Pending);
    assert_eq!((file.version, file.size_bytes), (1, bytes.len() as i64));
    assert_eq!((file.tenant_id.as_str(), file.owner_user_id.as_str()), ("acme", "alice"));
    assert!(
        upload.upload_url.contains(&format!("/blobs/tenants/acme/files/{}", file.file_id)),
        "{}",
        upload.upload_url
    );
    assert!(upload.upload_url_expire_time.is_some());

    let put = http.put(&upload, &bytes).await;
    assert!(put.status.is_success(), "the PUT is accepted: {put:?}");
    let done = alice.complete(&file.file_id).await.expect("CompleteUpload");
    assert_eq!(done.status(), pb::FileStatus::Ready);
    assert_eq!(done.version, 2);
    assert_eq!(alice.complete(&file.file_id).await.unwrap(), done, "completing again changes nothing");

    let url = alice.download_url(&file.file_id).await.expect("CreateDownloadUrl");
    let got = http.get(&url.download_url).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, bytes.as_slice(), "the same bytes come back");
    assert_eq!(got.headers["content-type"], "text/plain");
    assert_eq!(got.headers["x-content-type-options"], "nosniff");
    let disposition = got.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");

    let pending = watch.next_change().await;
    let ready = watch.next_change().await;
    let statuses = [pending.file.as_ref().unwrap().status(), ready.file.as_ref().unwrap().status()];
    assert_eq!(statuses, [pb::FileStatus::Pending, pb::FileStatus::Ready]);
    assert_eq!(ready.file.as_ref().unwrap().file_id, file.file_id);
    let offsets: Vec<u64> = [pending, ready]
        .iter()
        .map(|change| change.position.as_ref().unwrap().position.as_ref().unwrap().offset)
        .collect();
    assert_eq!(offsets[1], offsets[0] + 1, "changes carry consecutive positions");

    // another tenant's watcher saw nothing of acme: its next change is its own tenant's
    let globex = Files::of(&app, "globex", "carol");
    let theirs = globex.create_for("g.txt", b"g", false).await;
    let change = other_tenant.next_change().await;
    assert_eq!(change.file.unwrap().file_id, theirs.file.unwrap().file_id);
}

#[tokio::test]
async fn tampered_expired_misdirected_or_oversized_requests_store_nothing() {
    let app = app().await;
    let alice = Files::of(&app, "acme", "alice");
    let http = Http::new();
    let bytes = b"0123456789".to_vec();
    let upload = alice.create_for("a.txt", &bytes, false).await;
    let id = upload.file.as_ref().unwrap().file_id.clone();
    let headers: Vec<(String, String)> =
        upload.upload_headers.iter().map(|header| (header.name.clone(), header.value.clone())).collect();
    let url = upload.upload_url.clone();

    let tampered = {
        let (head, signature) = url.rsplit_once("signature=").expect("a signature parameter");
        let mut signature = signature.to_owned().into_bytes();
        signature[0] = if signature[0] == b'A' { b'B' } else { b'A' };
        format!("{head}signature={}", String::from_utf8(signature).unwrap())
    };
    let later = replace_param(&url, "expires", |expires| (expires.parse::<u64>().unwrap() + 3600).to_string());
    let earlier = replace_param(&url, "expires", |_| "1000000000".to_owned());
    let other_tenant = url.replace("/tenants/acme/", "/tenants/globex/");
    for (what, method, url, body, expected) in [
        ("a tampered signature", Method::PUT, tampered.as_str(), bytes.clone(), StatusCode::FORBIDDEN),
        ("a prolonged expiry", Method::PUT, later.as_str(), bytes.clone(), StatusCode::FORBIDDEN),
        ("an expiry moved back", Method::PUT, earlier.as_str(), bytes.clone(), StatusCode::FORBIDDEN),
        ("another tenant's path", Method::PUT, other_tenant.as_str(), bytes.clone(), StatusCode::FORBIDDEN),
        ("another method", Method::DELETE, url.as_str(), Vec::new(), StatusCode::FORBIDDEN),
        ("a larger body", Method::PUT, url.as_str(), b"0123456789AB".to_vec(), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let answer = http.send(method, url, &headers, &body).await;
        if what == "a larger body" {
            // hyper declares the real length, which already differs from the signed one
            assert!(
                matches!(answer.status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::FORBIDDEN),
                "{what}: {answer:?}"
            );
        } else if what == "another method" {
            // a method the blob routes do not serve at all may also be 405
            assert!(
                matches!(answer.status, StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED),
                "{what}: {answer:?}"
            );
        } else {
            assert_eq!(answer.status, expected, "{what}: {answer:?}");
        }
        let refused = alice.complete(&id).await.expect_err("nothing was stored");
        assert_eq!(
            (refused.code(), reason(&refused).as_deref()),
            (Code::FailedPrecondition, Some("OBJECT_MISSING")),
            "{what}"
        );
    }
    let get = http.get(&url).await;
    assert_eq!(get.status, StatusCode::FORBIDDEN, "a PUT URL does not download");

    // the real request still works, once
    assert!(http.put(&upload, &bytes).await.status.is_success());
    assert_eq!(http.put(&upload, &bytes).await.status, StatusCode::CONFLICT, "a second PUT is refused");
    assert_eq!(alice.complete(&id).await.unwrap().status(), pb::FileStatus::Ready);
}

fn replace_param(url: &str, name: &str, change: impl Fn(&str) -> String) -> String {
    let (base, query) = url.split_once('?').expect("a query");
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => format!("{key}={}", change(value)),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Writes `bytes` as the object of `id` straight into meshd's local blob folder, as a store
/// that checks nothing at upload time (S3 without signed headers) would let a client do.
fn write_object(app: &TestApp, tenant: &str, id: &str, bytes: &[u8]) {
    let path = app.settings().data_dir.join("blobs").join("tenants").join(tenant).join("files").join(id);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_size_or_checksum_mismatch_fails_the_upload_with_the_reason() {
    let app = app().await;
    let alice = Files::of(&app, "acme", "alice");
    let bytes = b"exactly these bytes".to_vec();

    let sized = alice.create_for("size.txt", &bytes, false).await.file.unwrap();
    write_object(&app, "acme", &sized.file_id, b"fewer bytes");
    let failed = alice.complete(&sized.file_id).await.expect("CompleteUpload answers");
    assert_eq!(failed.status(), pb::FileStatus::Failed);
    assert_eq!(failed.failure_reason(), pb::FailureReason::SizeMismatch);
    assert_eq!(failed.failure_message, format!("declared {} bytes, stored 11", bytes.len()));

    let summed = alice.create_for("sum.txt", &bytes, true).await.file.unwrap();
    let mut other = bytes.clone();
    other[0] ^= 1;
    write_object(&app, "acme", &summed.file_id, &other);
    let failed = alice.complete(&summed.file_id).await.expect("CompleteUpload answers");
    assert_eq!(failed.status(), pb::FileStatus::Failed);
    assert_eq!(failed.failure_reason(), pb::FailureReason::ChecksumMismatch);
    assert!(failed.failure_message.contains(&sha256_hex(&other)), "{}", failed.failure_message);

    let refused = alice.download_url(&failed.file_id).await.expect_err("a FAILED file has no download");
    assert_eq!((refused.code(), reason(&refused).as_deref()), (Code::FailedPrecondition, Some("FILE_NOT_READY")));
}

#[tokio::test]
async fn files_are_reached_by_their_tenant_and_changed_by_their_owner_or_an_admin() {
    let app = app().await;
    let alice = Files::of(&app, "acme", "alice");
    let bob = Files::of(&app, "acme", "bob");
    let mallory = Files::of(&app, "globex", "alice");
    let file = alice.create_for("a.txt", b"abc", false).await.file.unwrap();

    assert_eq!(bob.get(&file.file_id).await.unwrap().file_id, file.file_id, "any user of the tenant reads");
    assert_eq!(mallory.get(&file.file_id).await.unwrap_err().code(), Code::NotFound, "another tenant does not");
    assert_eq!(mallory.complete(&file.file_id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(mallory.delete(&file.file_id, None).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(bob.complete(&file.file_id).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(bob.delete(&file.file_id, None).await.unwrap_err().code(), Code::PermissionDenied);
    assert!(mallory.list(100, "", pb::FileStatus::Unspecified).await.unwrap().files.is_empty());

    let conflict = alice.delete(&file.file_id, Some(7)).await.unwrap_err();
    assert_eq!((conflict.code(), reason(&conflict).as_deref()), (Code::Aborted, Some("VERSION_CONFLICT")));
    assert_eq!(mesh_testkit::status::error_metadata(&conflict, "current_version").as_deref(), Some("1"));
    admin(&app, "acme", "root").delete(&file.file_id, Some(1)).await.expect("an admin deletes");
    assert_eq!(alice.get(&file.file_id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(alice.delete(&file.file_id, None).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_deleted_file_takes_its_object_and_its_upload_url_with_it() {
    let app = app().await;
    let alice = Files::of(&app, "acme", "alice");
    let http = Http::new();
    let mut watch = alice.watch().await;

    let ready = alice.create_for("r.txt", b"ready", false).await;
    let id = ready.file.as_ref().unwrap().file_id.clone();
    assert!(http.put(&ready, b"ready").await.status.is_success());
    alice.complete(&id).await.unwrap();
    let download = alice.download_url(&id).await.unwrap();
    alice.delete(&id, None).await.expect("DeleteFile");
    assert_eq!(http.get(&download.download_url).await.status, StatusCode::NOT_FOUND, "the object is gone");

    let pending = alice.create_for("p.txt", b"late", false).await;
    alice.delete(&pending.file.as_ref().unwrap().file_id, None).await.unwrap();
    let late = http.put(&pending, b"late").await;
    assert_eq!(late.status, StatusCode::FORBIDDEN, "a deleted upload takes no bytes: {late:?}");

    let statuses: Vec<pb::FileStatus> = {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(watch.next_change().await.file.unwrap().status());
        }
        statuses
    };
    use pb::FileStatus::{Deleted, Pending, Ready};
    assert_eq!(statuses, [Pending, Ready, Deleted, Pending, Deleted]);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_each_field() {
    let app = TestApp::start_with(|settings| {
        settings.storage.tenant_limits.insert(
            "small".into(),
            mesh_core::config::UploadLimits { max_size_bytes: 10, content_types: vec!["image/*".into()] },
        );
    })
    .await
    .unwrap();
    let small = Files::of(&app, "small", "alice");
    let request = pb::CreateUploadRequest {
        file_name: "a/b".into(),
        content_type: "text/plain".into(),
        size_bytes: 11,
        sha256: "XYZ".into(),
        request_id: "not-a-uuid".into(),
    };
    let refused = small.create(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields = mesh_testkit::status::violated_fields(&refused);
    assert_eq!(fields, ["file_name", "content_type", "size_bytes", "sha256", "request_id"]);
    assert!(
        small
            .create(pb::CreateUploadRequest {
                content_type: "image/png".into(),
                ..upload_request("a.png", b"0123456789", false)
            })
            .await
            .is_ok()
    );
    // the default limits of other tenants allow any type
    assert!(Files::of(&app, "acme", "alice").create(upload_request("a.txt", b"x", false)).await.is_ok());

    for id in ["", "short", "../../etc/passwd"] {
        assert_eq!(small.get(id).await.unwrap_err().code(), Code::InvalidArgument, "{id:?}");
    }
    let negative = small.list(-1, "", pb::FileStatus::Unspecified).await.unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    let deleted = small.list(10, "", pb::FileStatus::Deleted).await.unwrap_err();
    assert_eq!(deleted.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_retried_create_returns_the_first_file() {
    let app = app().await;
    let alice = Files::of(&app, "acme", "alice");
    let request = pb::CreateUploadRequest {
        request_id: "3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13".into(),
        ..upload_request("a.txt", b"abc", false)
    };
    let first = alice.create(request.clone()).await.unwrap();
    let again = alice.create(request.clone()).await.unwrap();
    assert_eq!(first.file, again.file, "the same file");
    assert!(!again.upload_url.is_empty(), "a PENDING file gets an upload URL again");
    let bob = Files::of(&app, "acme", "bob").create(request).await.unwrap();
    assert_ne!(bob.file.unwrap().file_id, first.file.unwrap().file_id, "request ids are per user");
    let listed = alice.list(100, "", pb::FileStatus::Unspecified).await.unwrap();
    assert_eq!(listed.files.len(), 2);
}

#[tokio::test]
async fn list_files_pages_newest_first_by_status_with_tokens_bound_to_the_caller() {
    let app = app().await;
    let alice = Files::of(&app, "acme", "alice");
    let http = Http::new();
    let mut created = Vec::new();
    for i in 0..7 {
        let upload = alice.create_for(&format!("f{i}.txt"), b"x", false).await;
        if i % 2 == 0 {
            assert!(http.put(&upload, b"x").await.status.is_success());
            alice.complete(&upload.file.as_ref().unwrap().file_id).await.unwrap();
        }
        created.push(upload.file.unwrap().file_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = alice.list(3, &token, pb::FileStatus::Unspecified).await.unwrap();
        assert!(page.files.len() <= 3);
        seen.extend(page.files.into_iter().map(|file| file.file_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "every file once, newest first");

    let ready = alice.list(2, "", pb::FileStatus::Ready).await.unwrap();
    assert_eq!(
        ready.files.iter().map(|file| file.file_id.clone()).collect::<Vec<_>>(),
        [created[6].clone(), created[4].clone()]
    );
    let bob = Files::of(&app, "acme", "bob");
    let stolen = bob.list(2, &ready.next_page_token, pb::FileStatus::Ready).await.unwrap_err();
    assert_eq!(stolen.code(), Code::InvalidArgument, "a token of another user");
    let refiltered = alice.list(2, &ready.next_page_token, pb::FileStatus::Pending).await.unwrap_err();
    assert_eq!(refiltered.code(), Code::InvalidArgument, "a token of another filter");
    let rest = alice.list(2, &ready.next_page_token, pb::FileStatus::Ready).await.unwrap();
    assert_eq!(
        rest.files.iter().map(|file| file.file_id.clone()).collect::<Vec<_>>(),
        [created[2].clone(), created[0].clone()]
    );
}

#[tokio::test]
async fn a_caller_may_hold_only_so_many_watches() {
    let app = TestApp::start_with(|settings| settings.storage.max_watches_per_caller = 2).await.unwrap();
    let alice = Files::of(&app, "acme", "alice");
    let first = alice.watch().await;
    let _second = alice.watch().await;
    let refused = alice.try_watch().await.err().expect("a third watch is refused");
    assert_eq!((refused.code(), reason(&refused).as_deref()), (Code::ResourceExhausted, Some("TOO_MANY_STREAMS")));
    assert!(Files::of(&app, "acme", "bob").try_watch().await.is_ok(), "the limit is per caller");
    drop(first);
    mesh_testkit::eventually("a closed watch frees its slot", std::time::Duration::from_secs(30), || {
        let alice = alice.clone();
        async move { alice.try_watch().await.ok() }
    })
    .await;
}
