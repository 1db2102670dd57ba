//! The in-process [`LiveFeed`]: a [`MemoryBus`] that the memory broker publishes to, and one
//! [`MemoryFeed`] per hub attached to it. Deliveries happen inside `publish`, in the
//! broker's per-channel order; a sink must not block (the hub only enqueues).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use super::{BoxFuture, BrokerError, ChannelKey, LiveFeed, LiveSink, Publication};

/// The in-process bus every [`MemoryFeed`] of one memory broker listens on.
#[derive(Default)]
pub struct MemoryBus {
    feeds: RwLock<Vec<Weak<FeedState>>>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

impl MemoryBus {
    /// A new feed on this bus, for one hub.
    pub fn feed(self: &Arc<Self>) -> MemoryFeed {
        let state = Arc::new(FeedState::default());
        let mut feeds = self.feeds.write().expect("the feed list is never poisoned");
        feeds.retain(|feed| feed.strong_count() > 0);
        feeds.push(Arc::downgrade(&state));
        MemoryFeed { state }
    }

    /// Hands `publication` to every feed that subscribed to its channel.
    pub fn publish(&self, publication: &Publication) {
        let feeds = self.feeds.read().expect("the feed list is never poisoned");
        for feed in feeds.iter().filter_map(Weak::upgrade) {
            let subscribed = feed.channels.read().expect("never poisoned").contains(publication.channel.full());
            if let (true, Some(sink)) = (subscribed, feed.sink.get()) {
                sink.deliver(publication.clone());
            }
        }
    }
}

#[derive(Default)]
struct FeedState {
    sink: OnceLock<Arc<dyn LiveSink>>,
    channels: RwLock<HashSet<String>>,
}

/// One hub's view of a [`MemoryBus`].
pub struct MemoryFeed {
    state: Arc<FeedState>,
}

impl std::fmt::Debug for MemoryFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFeed").finish_non_exhaustive()
    }
}

impl LiveFeed for MemoryFeed {
    fn attach(&self, sink: Arc<dyn LiveSink>) {
        // Attaching twice is a wiring bug; the first sink stays.
        let _ = self.state.sink.set(sink);
    }

    fn subscribe(&self, channel: &ChannelKey) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.state.channels.write().expect("never poisoned").insert(channel.full().to_owned());
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, channel: &ChannelKey) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.state.channels.write().expect("never poisoned").remove(channel.full());
        Box::pin(async { Ok(()) })
    }
}
