//! meshd: the composition root of the mesh. It turns [`Settings`](mesh_core::config::Settings)
//! into a running server: one port serving gRPC, grpc-web (HTTP/1.1 included) and plain
//! HTTP, with health, reflection, the auth layer, per-RPC tracing and graceful shutdown.
//!
//! - [`cli`]: the command line (`meshd`, `meshd dev-token`, `meshd print-config`) and exit codes.
//! - [`app`]: building the application from settings and serving it on a bound listener.
//! - [`backbone`]: the streaming backbone (broker, hub) from settings.
//! - [`coalesce`]: accepted connections whose writes are gathered into fewer system calls.
//! - [`registry`]: the mesh services this build can run (`--services`).
//! - [`health`]: grpc.health.v1 statuses driven by backend probes.
//! - [`http`]: the plain HTTP endpoints beside gRPC.
//! - [`session`]: wiring of the Session service (store, audit trail, worker, sweeper).
//! - [`feed`]: wiring of the Feed service (stores, read models, archive, projector, job
//!   consumers, limits).
//! - [`auth`]: wiring of the Auth service (stores, hasher, issuer, in-process Session client).
//! - [`storage`]: wiring of the document store (memory, Firestore behind the Redis cache) and
//!   the Storage service (blobs, signed-URL routes, cleanup of abandoned uploads).
//!
//! Wiring happens here and nowhere else: no globals, no service locator.

pub mod app;
pub mod auth;
pub mod backbone;
pub mod cli;
pub mod coalesce;
pub mod feed;
pub mod health;
pub mod http;
pub mod registry;
pub mod session;
pub mod storage;

pub use app::{App, StartupError};
