//! mesh-core: the foundation every mesh service and `meshd` build on.
//!
//! - [`config`]: typed, layered [`Settings`](config::Settings) (defaults, TOML file,
//!   `MESH__SECTION__KEY` environment variables) with start-up validation.
//! - [`error`]: the one error model of the mesh, free of transport types.
//! - [`auth`]: the verified [`Caller`](auth::Caller), access-token verification and the
//!   signing key pair used by the embedded default (`meshd dev-token`).
//! - [`transport`]: everything that knows gRPC/HTTP: the error-to-`Status` mapping, the
//!   auth layer, the per-RPC layer (tracing span, shutdown of open streams), HTTP/2 limits.
//! - [`broker`]: the streaming backbone: positions, bounded history, live fan-out.
//! - [`documents`]: the document store (memory, Firestore) and its Redis read-through cache.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`jobs`]: the job queue (memory, Redis Streams): at-least-once, retries, dead letters.
//! - [`sealed`]: opaque, authenticated tokens (page tokens) bound to their context.
//! - [`limits`]: per-caller stream limits.
//! - [`request_id`]: the idempotency key of create calls (AIP-155).
//! - [`backend`]: health probes of I/O backends (memory and Redis).
//! - [`telemetry`]: the tracing subscriber (readable or JSON logs).
//!
//! Domain code of a service uses `config`, `error` and `auth`; only `grpc` adapters and
//! `meshd` reach into `transport`.

pub mod auth;
pub mod backend;
pub mod backoff;
pub mod broker;
pub mod config;
pub mod documents;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod request_id;
pub mod sealed;
pub mod telemetry;
pub mod transport;

pub use error::{Error, FieldViolation, Result};
