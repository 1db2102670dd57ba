//! The transport side of mesh-core: everything that knows gRPC and HTTP. Service crates use
//! it from their `grpc` adapters only; `meshd` uses it to assemble the server.
//!
//! - [`status`]: the one mapping from [`crate::Error`] to `tonic::Status`.
//! - [`auth_layer`]: the tower layer that verifies bearer tokens and inserts the `Caller`.
//! - [`rpc_layer`]: the per-RPC tracing span and the ending of open streams at shutdown.

pub mod auth_layer;
pub mod encoded;
pub mod rpc_layer;
pub mod status;
pub mod stream;

pub use auth_layer::{AuthLayer, OPEN_METHODS, OPEN_SERVICES};
pub use rpc_layer::{EndStreams, RpcLayer, shutdown_status};
pub use status::caller;
