//! mesh-feed: the Feed service of the mesh (`mesh.feed.v1`).
//!
//! - [`domain`]: the pure types and rules of activities: ids, verbs, object references,
//!   text and metadata within their limits, feed names, the events of the feed log and
//!   [`FeedError`]. No I/O, no transport types.
//! - [`store`]: the [`ActivityStore`](store::ActivityStore) boundary (memory, Redis): activity
//!   records and the feed log, appended to in one step.
//!
//! The read models, the projectors and the gRPC adapter build on these.

pub mod domain;
pub mod store;

pub use domain::FeedError;
