//! The in-process [`Broker`]: the embedded default and the unit-test double.
//!
//! Each channel has its own state behind its own lock: epoch, last offset, the last
//! `size` publications and the time of the last write. A publication is stored and handed
//! to the [`MemoryBus`] while that lock is held, so live deliveries follow offset order and
//! nobody sees a publication live before `history` can return it. No lock is ever held
//! across an `.await` (nothing here awaits).
//!
//! # TTL
//!
//! A channel whose last publication is older than [`HistorySettings::ttl`] is gone: the
//! next access finds it without an epoch (offset 0, empty history), so `history` answers
//! [`Unrecoverable::EpochChanged`] and the next `publish` or `position` starts a new epoch.
//! Expiry is checked lazily on access, against [`tokio::time::Instant`] (so a test running
//! on tokio's paused clock can advance it; elsewhere it is the monotonic clock). A channel
//! that `position` gave an epoch and that has no publication yet lives `ttl` from the last
//! `position` call; once it has publications, only `publish` extends its life. Expired
//! channels are dropped from the map from time to time (when the map has doubled since the
//! last sweep), so abandoned channels do not accumulate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::time::Instant;

use super::memory_feed::MemoryBus;
use super::{
    BoxFuture, Broker, BrokerError, ChannelKey, Epoch, History, HistorySettings, Position, Publication, Unrecoverable,
};

/// The in-process broker. Cloning is cheap and clones share the channels and the bus.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

struct Inner {
    settings: HistorySettings,
    bus: Arc<MemoryBus>,
    channels: RwLock<Channels>,
}

struct Channels {
    map: HashMap<ChannelKey, Arc<Mutex<ChannelState>>>,
    /// The map's length after the last sweep of expired channels.
    swept_len: usize,
}

/// Smallest map length at which sweeping starts.
const SWEEP_MIN_LEN: usize = 1024;

#[derive(Default)]
struct ChannelState {
    /// `None` until the first `publish` or `position` of an epoch.
    epoch: Option<Epoch>,
    /// Offset of the last publication of the epoch; 0 if none.
    last: u64,
    /// The kept publications, oldest first, with contiguous offsets ending at `last`.
    log: VecDeque<(u64, Bytes)>,
    /// Last publication (or `position` of a channel without publications).
    touched: Option<Instant>,
    /// Set when a sweep dropped this state from the map: whoever still holds it looks the
    /// channel up again.
    removed: bool,
}

impl ChannelState {
    fn expired(&self, now: Instant, settings: &HistorySettings) -> bool {
        self.touched.is_some_and(|touched| now.saturating_duration_since(touched) >= settings.ttl)
    }

    /// Forgets an expired epoch.
    fn expire_if_due(&mut self, now: Instant, settings: &HistorySettings) {
        if self.expired(now, settings) {
            self.epoch = None;
            self.last = 0;
            self.log.clear();
            self.touched = None;
        }
    }
}

impl MemoryBroker {
    /// An empty broker keeping history as `settings` say, with its own [`MemoryBus`].
    pub fn new(settings: HistorySettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                bus: Arc::new(MemoryBus::default()),
                channels: RwLock::new(Channels { map: HashMap::new(), swept_len: 0 }),
            }),
        }
    }

    /// The bus every publication is handed to; each hub listens on its own
    /// [`feed`](MemoryBus::feed).
    pub fn bus(&self) -> &Arc<MemoryBus> {
        &self.inner.bus
    }

    /// The history settings.
    pub fn settings(&self) -> &HistorySettings {
        &self.inner.settings
    }

    /// Runs `f` on `channel`'s state (created if missing), under the channel's lock, after
    /// lazy expiry.
    fn with_channel<R>(&self, channel: &ChannelKey, mut f: impl FnMut(&mut ChannelState, Instant) -> R) -> R {
        loop {
            let slot = self.slot(channel);
            let mut state = slot.lock().expect("a channel lock is never poisoned");
            if state.removed {
                continue;
            }
            let now = Instant::now();
            state.expire_if_due(now, &self.inner.settings);
            return f(&mut state, now);
        }
    }

    /// Runs `f` on `channel`'s state if it exists, under the channel's lock, after lazy
    /// expiry; `None` if the channel has no state.
    fn with_existing_channel<R>(&self, channel: &ChannelKey, f: impl FnOnce(&mut ChannelState) -> R) -> Option<R> {
        loop {
            let slot =
                self.inner.channels.read().expect("the channel map is never poisoned").map.get(channel).cloned()?;
            let mut state = slot.lock().expect("a channel lock is never poisoned");
            if state.removed {
                continue;
            }
            state.expire_if_due(Instant::now(), &self.inner.settings);
            return Some(f(&mut state));
        }
    }

    fn slot(&self, channel: &ChannelKey) -> Arc<Mutex<ChannelState>> {
        if let Some(slot) = self.inner.channels.read().expect("the channel map is never poisoned").map.get(channel) {
            return slot.clone();
        }
        let mut channels = self.inner.channels.write().expect("the channel map is never poisoned");
        if let Some(slot) = channels.map.get(channel) {
            return slot.clone();
        }
        if channels.map.len() >= SWEEP_MIN_LEN.max(channels.swept_len * 2) {
            self.sweep(&mut channels);
        }
        let slot = Arc::new(Mutex::new(ChannelState::default()));
        channels.map.insert(channel.clone(), slot.clone());
        slot
    }

    /// Drops expired channels from the map. A channel whose lock is busy is kept (its
    /// holder may be delivering; it is swept next time).
    fn sweep(&self, channels: &mut Channels) {
        let now = Instant::now();
        let settings = &self.inner.settings;
        channels.map.retain(|_, slot| {
            let Ok(mut state) = slot.try_lock() else { return true };
            let gone = state.epoch.is_none() || state.expired(now, settings);
            if gone {
                state.removed = true;
            }
            !gone
        });
        channels.swept_len = channels.map.len();
    }

    fn publish_now(&self, channel: &ChannelKey, payload: Bytes) -> Result<Position, BrokerError> {
        let limit = self.inner.settings.max_payload;
        if payload.len() > limit {
            return Err(BrokerError::PayloadTooLarge { size: payload.len(), limit });
        }
        let size = self.inner.settings.size;
        Ok(self.with_channel(channel, |state, now| {
            let epoch = state.epoch.get_or_insert_with(Epoch::random).clone();
            state.last += 1;
            state.touched = Some(now);
            state.log.push_back((state.last, payload.clone()));
            while state.log.len() > size {
                state.log.pop_front();
            }
            let publication =
                Publication::new(channel.clone(), Position { offset: state.last, epoch }, payload.clone());
            // Still under the channel's lock: live deliveries follow offset order.
            self.inner.bus.publish(&publication);
            publication.position
        }))
    }

    fn history_now(&self, channel: &ChannelKey, since: &Position, limit: usize) -> History {
        let answer = self.with_existing_channel(channel, |state| {
            let Some(epoch) = &state.epoch else { return History::Unrecoverable(Unrecoverable::EpochChanged) };
            if *epoch != since.epoch {
                return History::Unrecoverable(Unrecoverable::EpochChanged);
            }
            if since.offset > state.last {
                return History::Unrecoverable(Unrecoverable::Ahead);
            }
            let missed = state.last - since.offset;
            if missed > u64::try_from(limit).unwrap_or(u64::MAX) {
                return History::Unrecoverable(Unrecoverable::TooMany);
            }
            if missed == 0 {
                return History::Recovered(Vec::new());
            }
            let Some(&(oldest, _)) = state.log.front() else { return History::Unrecoverable(Unrecoverable::Trimmed) };
            if oldest > since.offset + 1 {
                return History::Unrecoverable(Unrecoverable::Trimmed);
            }
            // Offsets in the log are contiguous, so the first wanted one sits at this index.
            let skip = usize::try_from(since.offset + 1 - oldest).expect("the index lies within the log");
            History::Recovered(
                state
                    .log
                    .iter()
                    .skip(skip)
                    .map(|(offset, payload)| {
                        Publication::new(
                            channel.clone(),
                            Position { offset: *offset, epoch: epoch.clone() },
                            payload.clone(),
                        )
                    })
                    .collect(),
            )
        });
        answer.unwrap_or(History::Unrecoverable(Unrecoverable::EpochChanged))
    }

    fn position_now(&self, channel: &ChannelKey) -> Position {
        self.with_channel(channel, |state, now| {
            if state.epoch.is_none() || state.last == 0 {
                // No publication yet in this epoch: keep the epoch alive from now on.
                state.touched = Some(now);
            }
            let epoch = state.epoch.get_or_insert_with(Epoch::random).clone();
            Position { offset: state.last, epoch }
        })
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(&'a self, channel: &'a ChannelKey, payload: Bytes) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(async move { self.publish_now(channel, payload) })
    }

    fn history<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        Box::pin(async move { Ok(self.history_now(channel, since, limit)) })
    }

    fn position<'a>(&'a self, channel: &'a ChannelKey) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(async move { Ok(self.position_now(channel)) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::broker::ChannelName;

    fn key(name: &str) -> ChannelKey {
        ChannelKey::new("t1", ChannelName::parse(name, "channel").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn expired_channels_are_swept_from_the_map() {
        // A zero TTL expires every channel at once.
        let broker = MemoryBroker::new(HistorySettings { ttl: Duration::ZERO, ..HistorySettings::default() });
        for i in 0..SWEEP_MIN_LEN {
            broker.publish(&key(&format!("c{i}")), Bytes::from_static(b"x")).await.unwrap();
        }
        assert_eq!(broker.inner.channels.read().unwrap().map.len(), SWEEP_MIN_LEN);
        let position = broker.publish(&key("last"), Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(position.offset, 1);
        assert_eq!(broker.inner.channels.read().unwrap().map.len(), 1);
        // A swept channel starts over.
        assert_eq!(broker.publish(&key("c0"), Bytes::from_static(b"x")).await.unwrap().offset, 1);
    }

    #[tokio::test]
    async fn live_channels_survive_a_sweep() {
        let broker = MemoryBroker::new(HistorySettings::default());
        for i in 0..=SWEEP_MIN_LEN {
            broker.publish(&key(&format!("c{i}")), Bytes::from_static(b"x")).await.unwrap();
        }
        assert_eq!(broker.inner.channels.read().unwrap().map.len(), SWEEP_MIN_LEN + 1);
        assert_eq!(broker.publish(&key("c0"), Bytes::from_static(b"x")).await.unwrap().offset, 2);
    }
}
