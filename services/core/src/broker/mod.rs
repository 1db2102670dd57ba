//! The streaming backbone: publications with positions, bounded history with recovery, and
//! live fan-out. Every streaming RPC of every service is built on it.
//!
//! - [`Broker`] (I/O boundary, memory and Redis): `publish` assigns each publication the
//!   next gap-free offset of its channel under the channel's epoch and stores it in a
//!   bounded history (size and TTL from [`HistorySettings`]); `history` answers "what came
//!   after this position", or says it cannot; `position` tells where a channel stands.
//! - [`LiveFeed`] (I/O boundary, memory and Redis pub/sub): carries publications to the
//!   processes that watch a channel.
//! - [`Hub`](hub::Hub): one per process; multiplexes every local subscriber onto one live
//!   subscription per channel, fans out without copying payloads, and checks subscribers
//!   against history after the feed reconnects.
//! - [`subscribe`](subscription::subscribe): the function streaming RPCs call: confirmation,
//!   replay of what was missed, then live, with heartbeats and a bounded queue.
//!
//! A position is (offset, epoch). Offsets of a channel start at 1 and have no gaps; the
//! epoch is a random id that changes whenever the channel's history was lost (expired,
//! deleted, a fresh Redis), so a stale position can never be mistaken for a current one.

mod channel;
pub mod hub;
pub mod memory;
pub mod memory_feed;
pub mod redis;
pub mod redis_feed;
pub mod subscription;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use channel::{ChannelKey, ChannelName, MAX_CHANNEL_NAME_LEN, MESH_WIDE};

/// A boxed future, as the boundary traits return them (they are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a publication stands in its channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// 1 for the first publication of an epoch, then +1 each; 0 means "nothing yet".
    pub offset: u64,
    /// Random id of the channel's current history; a new one means the history was lost.
    pub epoch: Epoch,
}

/// The id of one unbroken history of a channel. Shared, so copying a position into every
/// subscriber's cursor never allocates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch(pub Arc<str>);

impl Epoch {
    /// A new random epoch (96 bits, URL-safe base64, 16 characters).
    pub fn random() -> Self {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(Arc::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two epochs are the same (pointer first, then text).
    fn same(&self, other: &Epoch) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Position {
    /// Whether `self` is exactly the position after `previous` in the same epoch.
    pub fn follows(&self, previous: &Position) -> bool {
        self.epoch.same(&previous.epoch) && self.offset == previous.offset + 1
    }

    /// Whether `self` is `other` or lies before it in the same epoch.
    pub fn is_at_or_before(&self, other: &Position) -> bool {
        self.epoch.same(&other.epoch) && self.offset <= other.offset
    }
}

/// One published message: its channel, its position and the payload bytes (already
/// encoded once by the publisher; every subscriber shares the same bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The channel it was published on.
    pub channel: ChannelKey,
    /// Its position in that channel.
    pub position: Position,
    /// The payload, shared (cloning `Bytes` does not copy).
    pub payload: Bytes,
    /// The response the streams of this process send for it, encoded by the first of them.
    pub response: SharedResponse,
}

impl Publication {
    /// A publication of `payload` at `position` of `channel`.
    pub fn new(channel: ChannelKey, position: Position, payload: Bytes) -> Self {
        Self { channel, position, payload, response: SharedResponse::default() }
    }
}

/// The encoded response message of one kind of streaming RPC for a publication, and
/// whether the stream ends after it, kept with the publication: the hub hands one
/// publication to every local subscriber, so the first stream that sends it encodes it and
/// every other stream sends the same bytes (see [`crate::transport::encoded`]). It never
/// takes part in comparisons.
#[derive(Clone, Default)]
pub struct SharedResponse(std::sync::OnceLock<(&'static str, Bytes, bool)>);

impl SharedResponse {
    /// The bytes (and last-message flag) kept for response kind `kind` (the message's full
    /// protobuf name), made by `encode` for the first caller. A caller of another kind gets
    /// its own encoding, not kept.
    pub fn get_or_encode<E>(
        &self,
        kind: &'static str,
        encode: impl FnOnce() -> Result<(Bytes, bool), E>,
    ) -> Result<(Bytes, bool), E> {
        if let Some((kept, bytes, last)) = self.0.get() {
            return if *kept == kind { Ok((bytes.clone(), *last)) } else { encode() };
        }
        let (bytes, last) = encode()?;
        // Two streams may race to encode: both results are equal, the first is kept.
        let _ = self.0.set((kind, bytes.clone(), last));
        Ok((bytes, last))
    }
}

impl std::fmt::Debug for SharedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "SharedResponse(encoded)" } else { "SharedResponse(empty)" })
    }
}

impl PartialEq for SharedResponse {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SharedResponse {}

/// What `history` can say about the publications after a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// Exactly the publications after the position, in order (possibly none).
    Recovered(Vec<Publication>),
    /// They cannot be replayed; nothing is returned, never a part.
    Unrecoverable(Unrecoverable),
}

/// Why a position cannot be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrecoverable {
    /// The channel's history was lost since (expired, deleted, a fresh store): the epoch
    /// differs.
    EpochChanged,
    /// Part of what was missed has been trimmed from the bounded history.
    Trimmed,
    /// More was missed than the caller's limit allows.
    TooMany,
    /// The position lies ahead of the channel (never issued by this epoch).
    Ahead,
}

/// Size and lifetime of each channel's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Publications kept per channel (default 1,000).
    pub size: usize,
    /// How long a channel's history lives after its last publication (default 1 h).
    pub ttl: Duration,
    /// Largest payload accepted (default 64 KiB).
    pub max_payload: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self { size: 1000, ttl: Duration::from_secs(3600), max_payload: 64 * 1024 }
    }
}

/// Failures of a broker or feed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The payload is larger than [`HistorySettings::max_payload`].
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The backend is unreachable or failed; retryable.
    #[error("broker backend unavailable: {0}")]
    Unavailable(String),
}

impl From<BrokerError> for crate::Error {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::PayloadTooLarge { size, limit } => {
                crate::Error::invalid_argument(vec![crate::FieldViolation::new(
                    "payload",
                    format!("{size} bytes exceed the limit of {limit} bytes"),
                )])
            }
            BrokerError::Unavailable(detail) => {
                crate::Error::unavailable("BACKEND_UNAVAILABLE", "the broker is unavailable")
                    .with_source(anyhow::anyhow!(detail))
            }
        }
    }
}

/// Publications with positions and bounded history: the storage side of the backbone.
pub trait Broker: Send + Sync + 'static {
    /// Appends `payload` to `channel`'s history and hands it to the live feed, atomically:
    /// no subscriber can see it live before it is in history. Returns its position.
    fn publish<'a>(&'a self, channel: &'a ChannelKey, payload: Bytes) -> BoxFuture<'a, Result<Position, BrokerError>>;

    /// The publications after `since`, if all of them (at most `limit`) are still held and
    /// `since.epoch` is the channel's current epoch; otherwise why not.
    fn history<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, BrokerError>>;

    /// The channel's latest position (offset 0 if nothing was published in this epoch). A
    /// channel without an epoch gets one now, so the next publication continues it.
    fn position<'a>(&'a self, channel: &'a ChannelKey) -> BoxFuture<'a, Result<Position, BrokerError>>;
}

/// Receives what a [`LiveFeed`] carries: the hub implements it.
pub trait LiveSink: Send + Sync + 'static {
    /// A publication arrived on a channel this process subscribed to.
    fn deliver(&self, publication: Publication);

    /// The feed lost its connection and is back: publications may have been missed, and
    /// every subscribed channel must be checked against history.
    fn resumed(&self);

    /// The feed lost its connection: until [`resumed`](Self::resumed), publications do not
    /// arrive live. Feeds that cannot lose a connection never call it.
    fn interrupted(&self) {}
}

/// Carries publications from publishers to the processes that watch their channels.
///
/// Interest is registered by the call itself, in call order (the hub calls under its lock,
/// so a subscribe that follows an unsubscribe of the same channel always wins); the
/// returned future only reports when the feed has acted. Subscribing to a channel that is
/// already subscribed costs nothing: one backend subscription per channel.
pub trait LiveFeed: Send + Sync + 'static {
    /// Sets where publications go; called once, before any subscribe.
    fn attach(&self, sink: Arc<dyn LiveSink>);

    /// Starts receiving `channel`. The future resolves once the subscription is active: a
    /// publication made after that is delivered.
    fn subscribe(&self, channel: &ChannelKey) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// Stops receiving `channel`; dropping the future does not undo the call.
    fn unsubscribe(&self, channel: &ChannelKey) -> BoxFuture<'static, Result<(), BrokerError>>;
}
