//! The pure types and rules of Feed: no I/O, no transport types.

pub(crate) mod activity;
mod error;
mod event;
mod feed_name;

pub use activity::{
    Activity, ActivityId, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_BYTES,
    MAX_NAME_LEN, MAX_OBJECT_ID_CHARS, MAX_TEXT_BYTES, Metadata, NewActivity, ObjectRef,
};
pub use error::FeedError;
pub use event::{FeedEvent, Tombstone};
pub use feed_name::FeedName;
