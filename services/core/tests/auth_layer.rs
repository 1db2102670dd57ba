//! The auth layer in front of a real gRPC service (health, with nothing left open), called
//! through a real client: what it accepts, what it rejects with UNAUTHENTICATED and a
//! reason, and the `Caller` it hands to the service.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_core::auth::{AccessClaims, Caller, SigningKeyPair, TokenVerifier};
use mesh_core::transport::AuthLayer;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

/// A health server behind the auth layer (no open services), recording every `Caller`
/// the layer let through.
struct Protected {
    url: String,
    client: HealthClient<tonic::transport::Channel>,
    key: SigningKeyPair,
    callers: Arc<Mutex<Vec<Caller>>>,
}

impl Protected {
    async fn start() -> Self {
        let key = SigningKeyPair::generate();
        let mut verifier = TokenVerifier::new("mesh", "mesh", Duration::from_secs(60));
        verifier.add_key_pair(&key);
        let callers = Arc::new(Mutex::new(Vec::new()));
        let seen = callers.clone();
        let record = tower::layer::layer_fn(move |inner| RecordCaller { inner, seen: seen.clone() });
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(AuthLayer::with_open_services(Arc::new(verifier), Vec::new()))
                .layer(record)
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        Self { url: format!("http://{addr}"), client: HealthClient::new(channel), key, callers }
    }

    fn claims(&self) -> AccessClaims {
        AccessClaims::new("mesh", "mesh", "t1", "u1", "s1", Duration::from_secs(900))
    }

    async fn call(&self, authorization: Option<&str>) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", MetadataValue::try_from(value).unwrap());
        }
        self.client.clone().check(request).await.map(|_| ())
    }

    async fn call_with_token(&self, token: &str) -> Result<(), tonic::Status> {
        self.call(Some(&format!("Bearer {token}"))).await
    }

    async fn assert_rejected(&self, token: &str, expected_reason: &str) {
        let status = self.call_with_token(token).await.expect_err("the token must be rejected");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        let info = status.get_details_error_info().expect("an ErrorInfo detail");
        assert_eq!(info.reason, expected_reason, "{status:?}");
        assert_eq!(info.domain, "mesh");
    }
}

#[derive(Clone)]
struct RecordCaller<S> {
    inner: S,
    seen: Arc<Mutex<Vec<Caller>>>,
}

impl<S, B> tower::Service<http::Request<B>> for RecordCaller<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(caller) = request.extensions().get::<Caller>() {
            self.seen.lock().unwrap().push(caller.clone());
        }
        self.inner.call(request)
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Builds a JWT by hand: any header, any claims, any signature bytes.
fn handmade_token(header: serde_json::Value, claims: serde_json::Value, signature: &[u8]) -> String {
    let encode = |value: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());
    format!("{}.{}.{}", encode(&header), encode(&claims), URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_its_caller_reaches_the_service() {
    let server = Protected::start().await;
    let mut claims = server.claims();
    claims.scope = "admin".to_owned();
    server.call_with_token(&server.key.sign(&claims).unwrap()).await.unwrap();

    let callers = server.callers.lock().unwrap();
    assert_eq!(callers.len(), 1);
    assert_eq!(
        (callers[0].tenant.as_str(), callers[0].user.as_str(), callers[0].session.as_deref()),
        ("t1", "u1", Some("s1"))
    );
    assert!(callers[0].has_scope("admin"));
}

#[tokio::test]
async fn a_missing_token_is_unauthenticated() {
    let server = Protected::start().await;
    let status = server.call(None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.get_details_error_info().unwrap().reason, "TOKEN_MISSING");
    assert!(server.callers.lock().unwrap().is_empty(), "the service was never called");
}

#[tokio::test]
async fn a_token_expired_beyond_the_leeway_is_rejected() {
    let server = Protected::start().await;
    let mut claims = server.claims();
    claims.iat = now() - 1000;
    claims.exp = now() - 120;
    server.assert_rejected(&server.key.sign(&claims).unwrap(), "TOKEN_EXPIRED").await;
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_accepted() {
    let server = Protected::start().await;
    let mut claims = server.claims();
    claims.iat = now() - 1000;
    claims.exp = now() - 30;
    server.call_with_token(&server.key.sign(&claims).unwrap()).await.unwrap();
}

#[tokio::test]
async fn a_token_for_another_audience_is_rejected() {
    let server = Protected::start().await;
    let mut claims = server.claims();
    claims.aud = "someone-else".to_owned();
    server.assert_rejected(&server.key.sign(&claims).unwrap(), "TOKEN_AUDIENCE_INVALID").await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_rejected() {
    let server = Protected::start().await;
    let mut claims = server.claims();
    claims.iss = "https://evil.example".to_owned();
    server.assert_rejected(&server.key.sign(&claims).unwrap(), "TOKEN_ISSUER_INVALID").await;
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_rejected() {
    let server = Protected::start().await;
    let stranger = SigningKeyPair::generate();
    server.assert_rejected(&stranger.sign(&server.claims()).unwrap(), "UNKNOWN_KEY").await;
}

#[tokio::test]
async fn a_token_with_a_known_kid_but_a_foreign_signature_is_rejected() {
    let server = Protected::start().await;
    let stranger = SigningKeyPair::from_pkcs8_pem(
        &SigningKeyPair::generate().private_key_pem(),
        Some(server.key.kid().to_owned()),
    )
    .unwrap();
    server.assert_rejected(&stranger.sign(&server.claims()).unwrap(), "TOKEN_SIGNATURE_INVALID").await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_rejected() {
    let server = Protected::start().await;
    let claims = serde_json::to_value(server.claims()).unwrap();
    let token = handmade_token(json!({"alg": "none", "typ": "at+jwt", "kid": server.key.kid()}), claims, b"");
    let status = server.call_with_token(&token).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let reason = status.get_details_error_info().unwrap().reason;
    assert!(["TOKEN_MALFORMED", "ALGORITHM_NOT_ALLOWED"].contains(&reason.as_str()), "{reason}");
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_rejected() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let server = Protected::start().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(server.key.kid().to_owned());
    header.typ = Some("at+jwt".to_owned());
    // The classic confusion attack: the verifier's public key used as an HMAC secret, in
    // both of the forms a verifier might hold it.
    for secret in [server.key.public_key_pem().into_bytes(), server.key.public_key_bytes().to_vec()] {
        let token = jsonwebtoken::encode(&header, &server.claims(), &EncodingKey::from_secret(&secret)).unwrap();
        server.assert_rejected(&token, "ALGORITHM_NOT_ALLOWED").await;
    }
}

#[tokio::test]
async fn a_token_without_an_audience_is_rejected() {
    let server = Protected::start().await;
    let mut claims = serde_json::to_value(server.claims()).unwrap();
    claims.as_object_mut().unwrap().remove("aud");
    // Signed properly with the trusted key: only the missing claim is wrong.
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": server.key.kid()});
    let unsigned = handmade_token(header, claims, b"");
    let signing_input = unsigned.rsplit_once('.').unwrap().0.to_owned();
    let signature = server.key.sign_raw(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    server.assert_rejected(&token, "TOKEN_CLAIM_MISSING").await;
}

#[tokio::test]
async fn a_refresh_style_opaque_token_is_rejected_as_malformed() {
    let server = Protected::start().await;
    server.assert_rejected(&URL_SAFE_NO_PAD.encode([7u8; 32]), "TOKEN_MALFORMED").await;
}

#[tokio::test]
async fn a_jwt_of_another_type_is_rejected() {
    let server = Protected::start().await;
    let claims = serde_json::to_value(server.claims()).unwrap();
    let unsigned = handmade_token(json!({"alg": "EdDSA", "typ": "JWT", "kid": server.key.kid()}), claims, b"");
    let signing_input = unsigned.rsplit_once('.').unwrap().0.to_owned();
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(server.key.sign_raw(signing_input.as_bytes())));
    server.assert_rejected(&token, "TOKEN_TYPE_INVALID").await;
}

#[tokio::test]
async fn a_service_token_without_a_session_is_accepted_with_no_session() {
    let server = Protected::start().await;
    let mut claims = server.claims();
    claims.sid = None;
    claims.scope = "sessions.create".to_owned();
    server.call_with_token(&server.key.sign(&claims).unwrap()).await.unwrap();
    let callers = server.callers.lock().unwrap();
    assert_eq!(callers[0].session, None);
    assert!(callers[0].has_scope("sessions.create"));
}

#[tokio::test]
async fn a_call_that_claims_another_content_type_is_still_checked() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let server = Protected::start().await;
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<bytes::Bytes>>();
    for content_type in ["application/json", "text/plain", ""] {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("{}/grpc.health.v1.Health/Check", server.url))
            .header("te", "trailers");
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let response = client
            .request(request.body(Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]))).unwrap())
            .await
            .unwrap();
        let in_headers = response.headers().get("grpc-status").cloned();
        let trailers = response.into_body().collect().await.unwrap().trailers().cloned();
        let status = in_headers.or_else(|| trailers.and_then(|t| t.get("grpc-status").cloned()));
        assert_eq!(
            status.as_ref().map(|v| v.to_str().unwrap()),
            Some("16"),
            "content-type {content_type:?} got through"
        );
    }
    assert!(server.callers.lock().unwrap().is_empty());
}
