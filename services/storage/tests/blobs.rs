//! Conformance of the stores meshd serves itself (memory and local folder): every check runs
//! against both, through a real HTTP server on `127.0.0.1:0` that serves [`Blobs::routes`],
//! with a plain HTTP/1.1 client sending what a browser or `curl` would.
//!
//! Every refused request is followed by `head`, which must find nothing: a refusal writes
//! nothing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_storage::blobs::{Blobs, LocalSigning, ObjectPath, UploadGate, UploadSpec};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// `max_upload_bytes` of the routes under test.
const LIMIT: u64 = 4 * 1024 * 1024;
const TTL: Duration = Duration::from_secs(300);

/// Runs each check against the memory and the local-folder store: `memory::check` and
/// `local_folder::check`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
              async fn $name() { super::$name(super::Fixture::start(super::Kind::Memory).await).await })*
        }
        mod local_folder {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::Fixture::start(super::Kind::LocalFolder).await).await })*
        }
    };
}

conformance!(
    an_uploaded_file_downloads_as_an_attachment_with_its_type,
    an_empty_file_uploads_and_downloads,
    a_body_of_several_parts_is_stored_whole,
    a_deleted_object_is_gone_and_its_download_is_404,
    a_tampered_signature_is_refused,
    an_expired_url_is_refused,
    a_put_url_cannot_download,
    a_get_url_cannot_upload,
    a_body_longer_than_signed_is_refused_with_413,
    a_body_shorter_than_signed_is_refused_with_400,
    a_content_type_other_than_signed_is_refused,
    a_content_length_other_than_signed_is_refused,
    the_signature_of_one_tenants_file_cannot_reach_another_tenants,
    a_body_that_misses_the_signed_sha256_is_refused_with_400,
    an_upload_the_gate_refuses_is_refused_with_403,
    a_second_put_is_refused_with_409_and_keeps_the_first_bytes,
    of_two_concurrent_puts_exactly_one_lands,
    a_declared_size_over_the_server_limit_is_refused_with_413,
    a_download_of_a_missing_object_is_404,
);

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    LocalFolder,
}

/// Says yes until told otherwise.
#[derive(Default)]
struct SwitchGate {
    refuse: AtomicBool,
}

impl UploadGate for SwitchGate {
    fn allows<'a>(
        &'a self,
        _path: &'a ObjectPath,
    ) -> Pin<Box<dyn Future<Output = Result<bool, mesh_core::Error>> + Send + 'a>> {
        Box::pin(async move { Ok(!self.refuse.load(Ordering::SeqCst)) })
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// One store behind its routes on a free port.
struct Fixture {
    blobs: Blobs,
    gate: Arc<SwitchGate>,
    client: Client<HttpConnector, Body>,
    server: JoinHandle<()>,
    /// The local folder's root (kept for the life of the test).
    dir: Option<TempDir>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What came back.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// How the body is sent.
enum Sent {
    /// With `Content-Length` (when the signed headers include it, they set it).
    Sized(Vec<u8>),
    /// With `Transfer-Encoding: chunked`, no `Content-Length`: lets a client send a different
    /// number of bytes than it signed for.
    Chunked(Vec<u8>),
    /// Headers only: the body never comes (for refusals that must not wait for it).
    Withheld,
}

impl Fixture {
    async fn start(kind: Kind) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let signing = LocalSigning::random(format!("http://{}", listener.local_addr().unwrap()));
        let (blobs, dir) = match kind {
            Kind::Memory => (Blobs::memory(signing), None),
            Kind::LocalFolder => {
                let dir = tempfile::tempdir().unwrap();
                // a folder that does not exist yet: local_folder creates it
                (Blobs::local_folder(&dir.path().join("blobs"), signing).unwrap(), Some(dir))
            }
        };
        let gate = Arc::new(SwitchGate::default());
        let routes = blobs.routes(gate.clone(), LIMIT).expect("meshd serves the memory and local stores");
        let server = tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { blobs, gate, client, server, dir }
    }

    async fn request(&self, method: Method, url: &str, headers: &[(String, String)], body: Sent) -> Reply {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let body: Body = match body {
            Sent::Sized(bytes) => Full::new(Bytes::from(bytes)).boxed(),
            Sent::Chunked(bytes) => {
                let frames = bytes.chunks(1000).map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))));
                StreamBody::new(tokio_stream::iter(frames.collect::<Vec<_>>())).boxed()
            }
            Sent::Withheld => StreamBody::new(tokio_stream::pending::<Result<Frame<Bytes>, Infallible>>()).boxed(),
        };
        let response = self.client.request(request.body(body).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    async fn put(&self, url: &str, headers: &[(String, String)], body: Sent) -> Reply {
        self.request(Method::PUT, url, headers, body).await
    }

    async fn get(&self, url: &str) -> Reply {
        self.request(Method::GET, url, &[], Sent::Sized(Vec::new())).await
    }

    /// Signs an upload of `bytes` (with their SHA-256) to `path` and sends it as signed.
    async fn upload(&self, path: &ObjectPath, bytes: &[u8]) -> Reply {
        let spec = spec_of(bytes);
        let signed = self.blobs.upload_url(path, &spec, TTL).await.unwrap();
        self.put(&signed.url, &signed.headers, Sent::Sized(bytes.to_vec())).await
    }

    async fn assert_nothing_stored(&self, path: &ObjectPath) {
        assert_eq!(self.blobs.head(path).await.unwrap(), None, "{path} was stored");
    }
}

fn path(tenant: &str, file: &str) -> ObjectPath {
    ObjectPath::new(tenant, file).unwrap()
}

fn spec_of(bytes: &[u8]) -> UploadSpec {
    UploadSpec {
        content_type: "text/plain; charset=utf-8".to_owned(),
        size: bytes.len() as u64,
        sha256: Some(hex::encode(Sha256::digest(bytes))),
    }
}

/// Bytes that are not all alike, `len` of them.
fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

fn assert_refused(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "body: {:?}", String::from_utf8_lossy(&reply.body));
}

async fn an_uploaded_file_downloads_as_an_attachment_with_its_type(app: Fixture) {
    let file = path("acme", "f1");
    let bytes = sample(10_000);

    let stored = app.upload(&file, &bytes).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert!(stored.body.is_empty());
    assert_eq!(app.blobs.head(&file).await.unwrap().map(|info| info.size), Some(10_000));
    assert_eq!(app.blobs.sha256_hex(&file).await.unwrap(), Some(hex::encode(Sha256::digest(&bytes))));

    let signed = app.blobs.download_url(&file, "Résumé \"final\".txt", "text/plain", TTL).await.unwrap();
    let reply = app.get(&signed.url).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, bytes);
    assert_eq!(header(&reply, "content-type"), "text/plain");
    assert_eq!(header(&reply, "content-length"), "10000");
    assert_eq!(header(&reply, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&reply, "content-disposition"),
        "attachment; filename=\"R_sum_ _final_.txt\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22.txt"
    );
}

async fn an_empty_file_uploads_and_downloads(app: Fixture) {
    let file = path("acme", "empty");
    assert_eq!(app.upload(&file, b"").await.status, StatusCode::OK);
    assert_eq!(app.blobs.head(&file).await.unwrap().map(|info| info.size), Some(0));
    let signed = app.blobs.download_url(&file, "empty.txt", "text/plain", TTL).await.unwrap();
    let reply = app.get(&signed.url).await;
    assert_eq!((reply.status, reply.body.len()), (StatusCode::OK, 0));
    assert_eq!(header(&reply, "content-disposition"), "attachment; filename=\"empty.txt\"");
}

async fn a_body_of_several_parts_is_stored_whole(app: Fixture) {
    // the store receives bodies in parts of 1 MiB
    let file = path("acme", "big");
    let bytes = sample(2_500_000);

    assert_eq!(app.upload(&file, &bytes).await.status, StatusCode::OK);

    assert_eq!(app.blobs.sha256_hex(&file).await.unwrap(), Some(hex::encode(Sha256::digest(&bytes))));
    let signed = app.blobs.download_url(&file, "big.bin", "application/octet-stream", TTL).await.unwrap();
    assert_eq!(app.get(&signed.url).await.body, bytes);
}

async fn a_deleted_object_is_gone_and_its_download_is_404(app: Fixture) {
    let file = path("acme", "f1");
    assert_eq!(app.upload(&file, b"hello").await.status, StatusCode::OK);
    let download = app.blobs.download_url(&file, "hello.txt", "text/plain", TTL).await.unwrap();

    app.blobs.delete(&file).await.unwrap();

    app.assert_nothing_stored(&file).await;
    assert_eq!(app.blobs.sha256_hex(&file).await.unwrap(), None);
    assert_refused(&app.get(&download.url).await, StatusCode::NOT_FOUND);
    // deleting what is not there is fine
    app.blobs.delete(&file).await.unwrap();
}

async fn a_tampered_signature_is_refused(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"hello"), TTL).await.unwrap();
    let (unsigned, signature) = signed.url.rsplit_once("signature=").unwrap();
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{unsigned}signature={flipped}{}", &signature[1..]);

    let reply = app.put(&tampered, &signed.headers, Sent::Sized(b"hello".to_vec())).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "invalid signature");
    app.assert_nothing_stored(&file).await;
}

async fn an_expired_url_is_refused(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"hello"), Duration::ZERO).await.unwrap();

    let reply = app.put(&signed.url, &signed.headers, Sent::Sized(b"hello".to_vec())).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "url expired");
    app.assert_nothing_stored(&file).await;
}

async fn a_put_url_cannot_download(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"secret"), TTL).await.unwrap();
    assert_eq!(app.put(&signed.url, &signed.headers, Sent::Sized(b"secret".to_vec())).await.status, StatusCode::OK);

    let reply = app.get(&signed.url).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    assert_ne!(reply.body, "secret");
}

async fn a_get_url_cannot_upload(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.download_url(&file, "a.txt", "text/plain", TTL).await.unwrap();
    let headers = [("Content-Type".to_owned(), "text/plain".to_owned())];

    let reply = app.put(&signed.url, &headers, Sent::Sized(b"hello".to_vec())).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    app.assert_nothing_stored(&file).await;
}

async fn a_body_longer_than_signed_is_refused_with_413(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(&sample(5000)), TTL).await.unwrap();
    let headers: Vec<_> = signed.headers.iter().filter(|(name, _)| name != "Content-Length").cloned().collect();

    let reply = app.put(&signed.url, &headers, Sent::Chunked(sample(5001))).await;

    assert_refused(&reply, StatusCode::PAYLOAD_TOO_LARGE);
    app.assert_nothing_stored(&file).await;
}

async fn a_body_shorter_than_signed_is_refused_with_400(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(&sample(5000)), TTL).await.unwrap();
    let headers: Vec<_> = signed.headers.iter().filter(|(name, _)| name != "Content-Length").cloned().collect();

    let reply = app.put(&signed.url, &headers, Sent::Chunked(sample(4999))).await;

    assert_refused(&reply, StatusCode::BAD_REQUEST);
    app.assert_nothing_stored(&file).await;
}

async fn a_content_type_other_than_signed_is_refused(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"<script>"), TTL).await.unwrap();
    let headers = [("Content-Type".to_owned(), "text/html".to_owned()), ("Content-Length".to_owned(), "8".to_owned())];

    let reply = app.put(&signed.url, &headers, Sent::Sized(b"<script>".to_vec())).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    app.assert_nothing_stored(&file).await;
    // no Content-Type at all is no better
    let reply = app.put(&signed.url, &headers[1..], Sent::Sized(b"<script>".to_vec())).await;
    assert_refused(&reply, StatusCode::FORBIDDEN);
    app.assert_nothing_stored(&file).await;
}

async fn a_content_length_other_than_signed_is_refused(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"hello"), TTL).await.unwrap();
    let headers = [signed.headers[0].clone(), ("Content-Length".to_owned(), "4".to_owned())];

    let reply = app.put(&signed.url, &headers, Sent::Sized(b"hell".to_vec())).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    app.assert_nothing_stored(&file).await;
}

async fn the_signature_of_one_tenants_file_cannot_reach_another_tenants(app: Fixture) {
    let ours = path("acme", "f1");
    let theirs = path("evil", "f1");
    let signed = app.blobs.upload_url(&ours, &spec_of(b"hello"), TTL).await.unwrap();
    let redirected = signed.url.replacen("/tenants/acme/", "/tenants/evil/", 1);
    assert_ne!(redirected, signed.url);

    let reply = app.put(&redirected, &signed.headers, Sent::Sized(b"hello".to_vec())).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    app.assert_nothing_stored(&theirs).await;
    app.assert_nothing_stored(&ours).await;
    // nor can a download URL of ours read theirs
    assert_eq!(app.upload(&theirs, b"their secret").await.status, StatusCode::OK);
    let download = app.blobs.download_url(&ours, "a.txt", "text/plain", TTL).await.unwrap();
    let reply = app.get(&download.url.replacen("/tenants/acme/", "/tenants/evil/", 1)).await;
    assert_refused(&reply, StatusCode::FORBIDDEN);
    // and an escaped or traversing path is not a path at all
    let escaped = signed.url.replacen("/tenants/acme/files/f1", "/tenants/acme/files/..%2F..%2Fevil%2Ffiles%2Ff1", 1);
    assert_refused(&app.put(&escaped, &signed.headers, Sent::Sized(b"hello".to_vec())).await, StatusCode::FORBIDDEN);
    app.assert_nothing_stored(&ours).await;
}

async fn a_body_that_misses_the_signed_sha256_is_refused_with_400(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"hello"), TTL).await.unwrap();

    let reply = app.put(&signed.url, &signed.headers, Sent::Sized(b"jello".to_vec())).await;

    assert_refused(&reply, StatusCode::BAD_REQUEST);
    app.assert_nothing_stored(&file).await;
    // the URL still works for the right bytes
    assert_eq!(app.put(&signed.url, &signed.headers, Sent::Sized(b"hello".to_vec())).await.status, StatusCode::OK);
}

async fn an_upload_the_gate_refuses_is_refused_with_403(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"hello"), TTL).await.unwrap();
    app.gate.refuse.store(true, Ordering::SeqCst);

    let reply = app.put(&signed.url, &signed.headers, Sent::Sized(b"hello".to_vec())).await;

    assert_refused(&reply, StatusCode::FORBIDDEN);
    app.assert_nothing_stored(&file).await;
}

async fn a_second_put_is_refused_with_409_and_keeps_the_first_bytes(app: Fixture) {
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(b"first"), TTL).await.unwrap();
    assert_eq!(app.put(&signed.url, &signed.headers, Sent::Sized(b"first".to_vec())).await.status, StatusCode::OK);

    let replay = app.put(&signed.url, &signed.headers, Sent::Sized(b"first".to_vec())).await;
    let other = app.upload(&file, b"second").await;

    assert_refused(&replay, StatusCode::CONFLICT);
    assert_refused(&other, StatusCode::CONFLICT);
    assert_eq!(app.blobs.sha256_hex(&file).await.unwrap(), Some(hex::encode(Sha256::digest(b"first"))));
}

async fn of_two_concurrent_puts_exactly_one_lands(app: Fixture) {
    let file = path("acme", "f1");
    let (one, two) = (sample(40_000), sample(40_001));

    let (first, second) = tokio::join!(app.upload(&file, &one), app.upload(&file, &two));

    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let landed = if first.status == StatusCode::OK { &one } else { &two };
    assert_eq!(app.blobs.sha256_hex(&file).await.unwrap(), Some(hex::encode(Sha256::digest(landed))));
}

async fn a_declared_size_over_the_server_limit_is_refused_with_413(app: Fixture) {
    let file = path("acme", "f1");
    let over = UploadSpec { content_type: "application/octet-stream".to_owned(), size: LIMIT + 1, sha256: None };
    let signed = app.blobs.upload_url(&file, &over, TTL).await.unwrap();

    // refused on the headers, before any byte of the body is read
    let reply = app.put(&signed.url, &signed.headers, Sent::Withheld).await;

    assert_refused(&reply, StatusCode::PAYLOAD_TOO_LARGE);
    app.assert_nothing_stored(&file).await;
    assert_eq!(app.upload(&file, &sample(LIMIT as usize)).await.status, StatusCode::OK);
}

async fn a_download_of_a_missing_object_is_404(app: Fixture) {
    let file = path("acme", "never");
    let signed = app.blobs.download_url(&file, "a.txt", "text/plain", TTL).await.unwrap();
    assert_refused(&app.get(&signed.url).await, StatusCode::NOT_FOUND);
}

/// Regular files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            found.extend(files_under(&entry.path()));
        } else {
            found.push(entry.path());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_uploads_leave_no_file_in_the_local_folder() {
    let app = Fixture::start(Kind::LocalFolder).await;
    let root = app.dir.as_ref().unwrap().path().join("blobs");
    let file = path("acme", "f1");
    let signed = app.blobs.upload_url(&file, &spec_of(&sample(5000)), TTL).await.unwrap();
    let chunked: Vec<_> = signed.headers.iter().filter(|(name, _)| name != "Content-Length").cloned().collect();
    assert_refused(&app.put(&signed.url, &chunked, Sent::Chunked(sample(5001))).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert_refused(&app.put(&signed.url, &chunked, Sent::Chunked(sample(4999))).await, StatusCode::BAD_REQUEST);
    let mut wrong = sample(5000);
    wrong[0] ^= 1;
    assert_refused(&app.put(&signed.url, &signed.headers, Sent::Sized(wrong)).await, StatusCode::BAD_REQUEST);
    // staged bodies are removed in the background once refused; wait for it with a deadline
    mesh_testkit::eventually("the staging files are removed", Duration::from_secs(10), || {
        let left = files_under(&root);
        async move { left.is_empty().then_some(()) }
    })
    .await;

    assert_eq!(app.put(&signed.url, &signed.headers, Sent::Sized(sample(5000))).await.status, StatusCode::OK);
    assert_eq!(files_under(&root), [root.join("tenants/acme/files/f1")]);
}
