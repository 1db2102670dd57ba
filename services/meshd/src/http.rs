//! Plain HTTP endpoints served on the gRPC port beside the services: `GET /healthz` for
//! load balancers and humans, and `GET /` describing how to call this instance. Later:
//! `/metrics`, `/.well-known/jwks.json`, signed blob URLs.

use axum::Router;
use axum::routing::get;

/// The plain HTTP routes; `served` lists the gRPC services for the index page.
pub fn router(served: Vec<String>) -> Router {
    let index = index_text(&served);
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/", get(move || std::future::ready(index.clone())))
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
