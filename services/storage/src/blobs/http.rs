//! The `PUT/GET /blobs/{*path}` routes that meshd serves for the memory and local-folder
//! stores: the other end of [`LocalSigning`]'s URLs.
//!
//! Every request is checked in this order, and the first failure answers with a short
//! plain-text reason that helps no forger:
//!
//! 1. the path has the shape `tenants/<tenant>/files/<file id>`, the query carries a valid
//!    signature for that path, and the URL has not expired (403);
//! 2. the method is the signed one (403);
//! 3. PUT: `Content-Type` equals the signed type and `Content-Length`, when sent, the signed
//!    size (403); the signed size is within `max_upload_bytes` (413); the [`UploadGate`] still
//!    wants the upload (403); no object exists yet (409); the body is exactly the signed size
//!    (413 when longer, 400 when shorter) and hashes to the signed SHA-256 (400). Only then is
//!    the object stored (see [`super::upload`]), answering 200 with an empty body.
//! 4. GET: the object exists (404); it is sent with the signed `Content-Type`,
//!    `Content-Disposition: attachment` and `X-Content-Type-Options: nosniff`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use object_store::{ObjectStore, ObjectStoreExt as _};

use super::UploadGate;
use super::disposition::attachment;
use super::path::ObjectPath;
use super::signing::{Denied, Grant, LocalSigning};
use super::upload::{Committed, Refused, receive};

/// How long the body of one PUT may take to arrive: a client trickling bytes does not hold a
/// connection and a staging object for longer.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The routes over `store`, accepting URLs signed by `signing`.
pub(crate) fn routes(
    store: Arc<dyn ObjectStore>,
    signing: Arc<LocalSigning>,
    gate: Arc<dyn UploadGate>,
    max_upload_bytes: u64,
) -> Router {
    let state = Arc::new(RouteState { store, signing, gate, max_upload_bytes });
    Router::new().route("/blobs/{*path}", put(serve).get(serve)).with_state(state)
}

struct RouteState {
    store: Arc<dyn ObjectStore>,
    signing: Arc<LocalSigning>,
    gate: Arc<dyn UploadGate>,
    max_upload_bytes: u64,
}

async fn serve(
    State(state): State<Arc<RouteState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // the raw path, not a percent-decoded one: a signed path has exactly one spelling
    let Some(Ok(path)) = uri.path().strip_prefix("/blobs/").map(ObjectPath::parse) else {
        return refuse(StatusCode::FORBIDDEN, "invalid path");
    };
    let grant = match state.signing.verify(&path, uri.query().unwrap_or_default(), SystemTime::now()) {
        Ok(grant) => grant,
        Err(Denied::Signature) => return refuse(StatusCode::FORBIDDEN, "invalid signature"),
        Err(Denied::Expired) => return refuse(StatusCode::FORBIDDEN, "url expired"),
    };
    if method.as_str() != grant.method() {
        return refuse(StatusCode::FORBIDDEN, "method not allowed by this url");
    }
    match grant {
        Grant::Upload { size, content_type, sha256 } => {
            upload(&state, &path, &headers, body, size, &content_type, sha256.as_deref()).await
        }
        Grant::Download { file_name, content_type } => download(&state, &path, &file_name, &content_type).await,
    }
}

async fn upload(
    state: &RouteState,
    path: &ObjectPath,
    headers: &HeaderMap,
    body: Body,
    size: u64,
    content_type: &str,
    sha256: Option<&str>,
) -> Response {
    if !only_value_is(headers, &CONTENT_TYPE, content_type) {
        return refuse(StatusCode::FORBIDDEN, "content type differs from the signed one");
    }
    if headers.contains_key(CONTENT_LENGTH) && !only_value_is(headers, &CONTENT_LENGTH, &size.to_string()) {
        return refuse(StatusCode::FORBIDDEN, "content length differs from the signed one");
    }
    if size > state.max_upload_bytes {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "upload larger than this server accepts");
    }
    if let Some(refusal) = check_gate(state, path).await {
        return refusal;
    }
    match state.store.head(&path.to_store_path()).await {
        Ok(_) => return refuse(StatusCode::CONFLICT, "object exists already"),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => return store_failed(path, &error),
    }
    let received = tokio::time::timeout(BODY_DEADLINE, receive(&state.store, body, size, sha256)).await;
    let Ok(received) = received else {
        // dropping the unfinished upload discards what was staged
        return refuse(StatusCode::REQUEST_TIMEOUT, "body not received in time");
    };
    let staged = match received {
        Ok(staged) => staged,
        Err(Refused::TooLarge) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body longer than the signed size"),
        Err(Refused::Incomplete) => return refuse(StatusCode::BAD_REQUEST, "body shorter than the signed size"),
        Err(Refused::ChecksumMismatch) => {
            return refuse(StatusCode::BAD_REQUEST, "body does not match the signed sha256");
        }
        Err(Refused::Store(error)) => return store_failed(path, &error),
    };
    // the file may have been deleted while the body streamed in
    if let Some(refusal) = check_gate(state, path).await {
        return refusal;
    }
    match staged.commit(path).await {
        Ok(Committed::Stored) => StatusCode::OK.into_response(),
        Ok(Committed::Exists) => refuse(StatusCode::CONFLICT, "object exists already"),
        Err(error) => store_failed(path, &error),
    }
}

async fn download(state: &RouteState, path: &ObjectPath, file_name: &str, content_type: &str) -> Response {
    let object = match state.store.get(&path.to_store_path()).await {
        Ok(object) => object,
        Err(object_store::Error::NotFound { .. }) => return refuse(StatusCode::NOT_FOUND, "not found"),
        Err(error) => return store_failed(path, &error),
    };
    // both values were validated before they were signed; a failure here is a bug
    let (Ok(content_type), Ok(disposition)) =
        (HeaderValue::from_str(content_type), HeaderValue::from_str(&attachment(file_name)))
    else {
        tracing::error!(%path, "a signed download url carries an invalid header value");
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    let size = object.meta.size;
    let mut response = Body::from_stream(object.into_stream()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(CONTENT_DISPOSITION, disposition);
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A refusal unless the gate still wants an upload to `path`.
async fn check_gate(state: &RouteState, path: &ObjectPath) -> Option<Response> {
    match state.gate.allows(path).await {
        Ok(true) => None,
        Ok(false) => Some(refuse(StatusCode::FORBIDDEN, "upload no longer accepted")),
        Err(error) => {
            tracing::warn!(%path, code = ?error.code(), reason = error.reason(), source = ?error.internal_source(), "cannot ask whether an upload is still wanted");
            Some(refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable"))
        }
    }
}

/// Whether `headers` hold exactly one `name`, equal to `expected`.
fn only_value_is(headers: &HeaderMap, name: &http::HeaderName, expected: &str) -> bool {
    let mut values = headers.get_all(name).iter();
    matches!((values.next(), values.next()), (Some(value), None) if value.as_bytes() == expected.as_bytes())
}

fn store_failed(path: &ObjectPath, error: &object_store::Error) -> Response {
    tracing::warn!(%path, %error, "object store request failed");
    refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable")
}

fn refuse(status: StatusCode, reason: &'static str) -> Response {
    (status, reason).into_response()
}
