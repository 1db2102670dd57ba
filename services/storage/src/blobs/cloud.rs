//! Signed URLs of the cloud stores (S3, GCS), made by `object_store`'s [`Signer`]: the client
//! talks to the bucket directly and meshd never sees the bytes.
//!
//! An upload URL binds, in the signature, the `Content-Type` and a create-only precondition
//! (`If-None-Match: *` on S3, `x-goog-if-generation-match: 0` on GCS: a second PUT fails and
//! writes nothing). GCS also binds the exact size (`x-goog-content-length-range`) and S3 the
//! declared SHA-256 (`x-amz-checksum-sha256`, which S3 verifies against the body). An S3
//! presigned PUT cannot bind the size (`Content-Length` is not signable there), so the size is
//! enforced by CompleteUpload, which compares [`super::Blobs::head`] with the declared size.
//!
//! A download URL signs `response-content-disposition` (an attachment with the file name)
//! and `response-content-type`, so the bucket serves the same headers meshd would; cloud
//! stores cannot add `X-Content-Type-Options`, but an attachment is never rendered inline.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderName, HeaderValue, Method};
use object_store::signer::{SignedUrlOptions, Signer};

use super::disposition::attachment;
use super::path::ObjectPath;
use super::{BlobError, SignedUrl, UploadSpec};

/// Which cloud's headers to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cloud {
    S3,
    Gcs,
}

/// A signed PUT URL for `spec` (validated by the caller).
pub(crate) async fn upload_url(
    cloud: Cloud,
    signer: &dyn Signer,
    path: &ObjectPath,
    spec: &UploadSpec,
    ttl: Duration,
) -> Result<SignedUrl, BlobError> {
    let mut signed = vec![("Content-Type", spec.content_type.clone())];
    match cloud {
        Cloud::S3 => {
            signed.push(("If-None-Match", "*".to_owned()));
            if let Some(sha256) = &spec.sha256 {
                let digest = hex::decode(sha256).map_err(|_| BlobError::Invalid("sha256 is not hex".to_owned()))?;
                signed.push(("x-amz-checksum-sha256", STANDARD.encode(digest)));
            }
        }
        Cloud::Gcs => {
            signed.push(("x-goog-if-generation-match", "0".to_owned()));
            signed.push(("x-goog-content-length-range", format!("{0},{0}", spec.size)));
        }
    }
    let mut options = SignedUrlOptions::default();
    for (name, value) in &signed {
        options = options.with_signed_header(header_name(name), header_value(value)?);
    }
    let url = sign(signer, Method::PUT, path, ttl, &options).await?;
    // Content-Length is not part of the signature but the request must carry it (S3 and GCS
    // refuse chunked uploads to signed URLs)
    let mut headers: Vec<(String, String)> = signed.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    headers.insert(1, ("Content-Length".to_owned(), spec.size.to_string()));
    Ok(SignedUrl { url, expires_at: SystemTime::now() + ttl, headers })
}

/// A signed GET URL whose response is an attachment named `file_name` of `content_type`
/// (both validated by the caller).
pub(crate) async fn download_url(
    signer: &dyn Signer,
    path: &ObjectPath,
    file_name: &str,
    content_type: &str,
    ttl: Duration,
) -> Result<SignedUrl, BlobError> {
    let options = SignedUrlOptions::default().with_query([
        ("response-content-disposition", attachment(file_name)),
        ("response-content-type", content_type.to_owned()),
    ]);
    let url = sign(signer, Method::GET, path, ttl, &options).await?;
    Ok(SignedUrl { url, expires_at: SystemTime::now() + ttl, headers: Vec::new() })
}

async fn sign(
    signer: &dyn Signer,
    method: Method,
    path: &ObjectPath,
    ttl: Duration,
    options: &SignedUrlOptions,
) -> Result<String, BlobError> {
    let url =
        signer.signed_url_opts(method, &path.to_store_path(), ttl, options).await.map_err(BlobError::unavailable)?;
    Ok(url.into())
}

fn header_name(name: &str) -> HeaderName {
    // from_bytes lowercases; every name here is a constant of this module
    HeaderName::from_bytes(name.as_bytes()).expect("a valid header name")
}

fn header_value(value: &str) -> Result<HeaderValue, BlobError> {
    HeaderValue::from_str(value).map_err(|_| BlobError::Invalid("header value is not visible ASCII".to_owned()))
}
