//! mesh-feed: the Feed service of the mesh (`mesh.feed.v1`).
//!
//! - [`domain`]: the pure types and rules of activities: ids, verbs, object references,
//!   text and metadata within their limits, feed names, the events of the feed log and
//!   [`FeedError`]. No I/O, no transport types.
//! - [`store`]: the [`ActivityStore`](store::ActivityStore) boundary (memory, Redis): activity
//!   records and the feed log, appended to in one step; and the
//!   [`ReadModel`](store::ReadModel) boundary (memory, Redis): each feed's newest
//!   activities and the watermark of the last event applied.
//!   The [`FeedArchive`](store::FeedArchive) boundary (memory, Redis) keeps every event, so
//!   read models can be rebuilt.
//! - [`projector`]: catches a feed's read model up with its channel, in offset order, once
//!   per event however many instances project; rebuilds read models from the archive.
//! - [`projection`]: the job-queue consumers of the feed events (read models, archive).
//! - [`limits`]: per-caller publication rate and Subscribe streams (per instance).
//! - [`page_token`]: ListFeed's sealed page tokens.
//! - [`grpc`]: the adapter of `mesh.feed.v1.FeedService` on these.

pub mod domain;
pub mod grpc;
pub mod limits;
pub mod page_token;
pub mod projection;
pub mod projector;
pub mod store;

pub use domain::FeedError;
