//! Plain HTTP endpoints served on the gRPC port beside the services: `GET /healthz` for
//! load balancers and humans, `GET /` describing how to call this instance, and
//! `GET /.well-known/jwks.json`, the public keys that verify access tokens (RFC 7517).
//! Later: `/metrics`, signed blob URLs.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use mesh_core::auth::Jwk;

/// How long clients may cache the JWKS: a new signing key should be configured (as a
/// verification key on every instance) at least this long before it signs.
const JWKS_MAX_AGE_SECONDS: u32 = 300;

/// The plain HTTP routes; `served` lists the gRPC services for the index page, `jwks` the
/// keys `/.well-known/jwks.json` publishes.
pub fn router(served: Vec<String>, jwks: &[Jwk]) -> Router {
    let index = index_text(&served);
    let jwks = serde_json::json!({ "keys": jwks }).to_string();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(move || std::future::ready(index.clone())))
        .route(
            "/.well-known/jwks.json",
            get(move || {
                let body = jwks.clone();
                async move {
                    (
                        [
                            (http::header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
                            (http::header::CACHE_CONTROL, format!("public, max-age={JWKS_MAX_AGE_SECONDS}")),
                        ],
                        body,
                    )
                        .into_response()
                }
            }),
        )
}

fn index_text(served: &[String]) -> String {
    let mut text = String::from("meshd: gRPC, grpc-web and HTTP on this port\n\nservices:\n");
    for name in served {
        text.push_str("  ");
        text.push_str(name);
        text.push('\n');
    }
    text.push_str("\ntry: grpcurl -plaintext <this address> list\n");
    text
}
