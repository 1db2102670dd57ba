//! Helpers of the Storage tests: a Storage client acting as one user, a plain HTTP client for
//! the signed URLs, and the WatchFiles stream.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_proto::mesh::storage::v1 as pb;
use mesh_testkit::TestApp;
use pb::storage_service_client::StorageServiceClient;
use pb::watch_files_response::Event;
use sha2::Digest;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub use mesh_testkit::status::reason;

/// Longest a test waits for one stream message (a guard, not a timing).
const STREAM_GUARD: Duration = Duration::from_secs(30);

/// A Storage client acting as one user.
#[derive(Clone)]
pub struct Files {
    client: StorageServiceClient<Channel>,
    token: String,
}

impl Files {
    pub fn of(app: &TestApp, tenant: &str, user: &str) -> Self {
        Self::with_token(app, app.token(tenant, user))
    }

    pub fn with_token(app: &TestApp, token: String) -> Self {
        Self { client: StorageServiceClient::new(app.channel()), token }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = MetadataValue::try_from(format!("Bearer {}", self.token)).unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    pub async fn create(&self, request: pb::CreateUploadRequest) -> Result<pb::CreateUploadResponse, Status> {
        Ok(self.client.clone().create_upload(self.request(request)).await?.into_inner())
    }

    /// A CreateUpload of `bytes` as `text/plain`, declaring their SHA-256 when `checksum`.
    pub async fn create_for(&self, name: &str, bytes: &[u8], checksum: bool) -> pb::CreateUploadResponse {
        self.create(upload_request(name, bytes, checksum)).await.expect("CreateUpload")
    }

    pub async fn complete(&self, id: &str) -> Result<pb::File, Status> {
        let request = pb::CompleteUploadRequest { file_id: id.into() };
        Ok(self.client.clone().complete_upload(self.request(request)).await?.into_inner().file.expect("a file"))
    }

    pub async fn get(&self, id: &str) -> Result<pb::File, Status> {
        let request = pb::GetFileRequest { file_id: id.into() };
        Ok(self.client.clone().get_file(self.request(request)).await?.into_inner().file.expect("a file"))
    }

    pub async fn list(
        &self,
        page_size: i32,
        token: &str,
        status: pb::FileStatus,
    ) -> Result<pb::ListFilesResponse, Status> {
        let request = pb::ListFilesRequest { page_size, page_token: token.into(), status: status.into() };
        Ok(self.client.clone().list_files(self.request(request)).await?.into_inner())
    }

    pub async fn download_url(&self, id: &str) -> Result<pb::CreateDownloadUrlResponse, Status> {
        let request = pb::CreateDownloadUrlRequest { file_id: id.into() };
        Ok(self.client.clone().create_download_url(self.request(request)).await?.into_inner())
    }

    pub async fn delete(&self, id: &str, expected_version: Option<i64>) -> Result<(), Status> {
        let request = pb::DeleteFileRequest { file_id: id.into(), expected_version };
        self.client.clone().delete_file(self.request(request)).await.map(drop)
    }

    pub async fn watch(&self) -> Watch {
        self.try_watch().await.expect("WatchFiles")
    }

    /// WatchFiles, confirmed, or the status it was refused with.
    pub async fn try_watch(&self) -> Result<Watch, Status> {
        let request = pb::WatchFilesRequest { last_position: None };
        let stream = self.client.clone().watch_files(self.request(request)).await?.into_inner();
        let mut watch = Watch { stream };
        match watch.next_event().await {
            Event::Confirmed(_) => Ok(watch),
            other => panic!("expected the confirmation, got {other:?}"),
        }
    }
}

/// A CreateUpload request of `bytes` as `text/plain`.
pub fn upload_request(name: &str, bytes: &[u8], checksum: bool) -> pb::CreateUploadRequest {
    pb::CreateUploadRequest {
        file_name: name.into(),
        content_type: "text/plain".into(),
        size_bytes: bytes.len() as i64,
        sha256: if checksum { sha256_hex(bytes) } else { String::new() },
        request_id: String::new(),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A WatchFiles stream after its confirmation.
pub struct Watch {
    stream: Streaming<pb::WatchFilesResponse>,
}

impl Watch {
    async fn next_event(&mut self) -> Event {
        let message = tokio::time::timeout(STREAM_GUARD, self.stream.message())
            .await
            .expect("a message within the guard")
            .expect("the stream is healthy")
            .expect("the stream is open");
        message.event.expect("an event")
    }

    /// The next change (heartbeats skipped).
    pub async fn next_change(&mut self) -> pb::FileChange {
        loop {
            match self.next_event().await {
                Event::Change(change) => return change,
                Event::Heartbeat(_) => continue,
                Event::Confirmed(_) => panic!("a second confirmation"),
            }
        }
    }
}

/// A plain HTTP/1.1 client for the signed URLs.
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What an HTTP request got.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Http {
    pub fn new() -> Self {
        Self { client: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub async fn send(&self, method: Method, url: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            // hyper sets Content-Length from the body itself
            if !name.eq_ignore_ascii_case("content-length") {
                request = request.header(name, value);
            }
        }
        let request = request.body(Full::new(Bytes::copy_from_slice(body))).expect("a request");
        let response = self.client.request(request).await.expect("the request is answered");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body reads").to_bytes();
        Answer { status: parts.status, headers: parts.headers, body }
    }

    /// PUTs `bytes` to an upload as CreateUpload told.
    pub async fn put(&self, upload: &pb::CreateUploadResponse, bytes: &[u8]) -> Answer {
        let headers: Vec<(String, String)> =
            upload.upload_headers.iter().map(|header| (header.name.clone(), header.value.clone())).collect();
        self.send(Method::PUT, &upload.upload_url, &headers, bytes).await
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.send(Method::GET, url, &[], &[]).await
    }
}
