//! The S3 and GCS clients, built from their configuration sections `[storage.s3]` and
//! `[storage.gcs]` ([`S3Settings`], [`GcsSettings`]: defined with the rest of the configuration
//! in mesh-core, re-exported by [`super`]). What needs no network is checked first, and every
//! error names the key to fix; secrets never appear in one.

use mesh_core::config::{GcsSettings, S3Settings};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};

use super::BlobError;

/// The region when `storage.s3.region` is unset.
const DEFAULT_REGION: &str = "us-east-1";

/// The S3 client of `settings`; unset credentials come from the environment (`AWS_*`
/// variables), a web identity or the instance's role.
pub(crate) fn s3_store(settings: &S3Settings) -> Result<AmazonS3, BlobError> {
    check_s3(settings)?;
    let region = settings.region.as_deref().unwrap_or(DEFAULT_REGION);
    // explicit keys take nothing from the environment (an AWS_SESSION_TOKEN there would not
    // belong to them); without keys the environment, a web identity or the instance's role
    // provide the credentials
    let mut builder = match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => {
            AmazonS3Builder::new().with_access_key_id(id).with_secret_access_key(secret.expose())
        }
        _ => AmazonS3Builder::from_env(),
    };
    builder = builder.with_bucket_name(&settings.bucket).with_region(region).with_allow_http(settings.allow_http);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder.build().map_err(|error| BlobError::Config(format!("storage.s3: {error}")))
}

/// The GCS client of `settings`; without a service account file, the application default
/// credentials.
pub(crate) fn gcs_store(settings: &GcsSettings) -> Result<GoogleCloudStorage, BlobError> {
    if settings.bucket.is_empty() {
        return Err(BlobError::Config("storage.gcs.bucket is not set".to_owned()));
    }
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&settings.bucket);
    if let Some(path) = &settings.service_account_path {
        builder = builder.with_service_account_path(path.to_string_lossy());
    }
    builder.build().map_err(|error| BlobError::Config(format!("storage.gcs: {error}")))
}

/// A bucket, both key halves or neither, an `http://` endpoint only with `allow_http`.
fn check_s3(settings: &S3Settings) -> Result<(), BlobError> {
    let problem = |text: &str| Err(BlobError::Config(text.to_owned()));
    if settings.bucket.is_empty() {
        return problem("storage.s3.bucket is not set");
    }
    if settings.region.as_deref() == Some("") {
        return problem("storage.s3.region is empty");
    }
    if settings.access_key_id.is_some() != settings.secret_access_key.is_some() {
        return problem("storage.s3.access_key_id and storage.s3.secret_access_key go together: set both or neither");
    }
    if let Some(endpoint) = &settings.endpoint {
        let http = endpoint.starts_with("http://");
        if !http && !endpoint.starts_with("https://") {
            return problem("storage.s3.endpoint is not an http(s) URL");
        }
        if http && !settings.allow_http {
            return problem("storage.s3.endpoint is plain http: set storage.s3.allow_http for a local test service");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mesh_core::config::Secret;

    use super::*;

    fn s3(bucket: &str) -> S3Settings {
        S3Settings { bucket: bucket.to_owned(), ..S3Settings::default() }
    }

    fn config_error(result: Result<AmazonS3, BlobError>) -> String {
        match result {
            Err(BlobError::Config(text)) => text,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn an_s3_client_needs_no_network_to_build() {
        let settings = S3Settings {
            access_key_id: Some("AKIDEXAMPLE".to_owned()),
            secret_access_key: Some(Secret::new("hunter2".to_owned())),
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            allow_http: true,
            ..s3("files")
        };
        assert!(s3_store(&settings).is_ok());
    }

    #[test]
    fn s3_errors_name_the_key_and_never_the_secret() {
        assert!(config_error(s3_store(&s3(""))).contains("storage.s3.bucket"));
        let half = S3Settings { secret_access_key: Some(Secret::new("hunter2".to_owned())), ..s3("files") };
        let text = config_error(s3_store(&half));
        assert!(text.contains("storage.s3.access_key_id") && !text.contains("hunter2"), "{text}");
        let plain = S3Settings { endpoint: Some("http://127.0.0.1:9".to_owned()), ..s3("files") };
        assert!(config_error(s3_store(&plain)).contains("storage.s3.allow_http"));
        let odd = S3Settings { endpoint: Some("ftp://x".to_owned()), allow_http: true, ..s3("files") };
        assert!(config_error(s3_store(&odd)).contains("storage.s3.endpoint"));
    }

    #[test]
    fn a_gcs_bucket_is_required() {
        match gcs_store(&GcsSettings::default()) {
            Err(BlobError::Config(text)) => assert!(text.contains("storage.gcs.bucket")),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}
