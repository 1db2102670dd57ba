//! [`Hub`]: one per process. It multiplexes every local subscriber onto one live
//! subscription per channel (the feed subscribes when the first local subscriber of a
//! channel arrives and unsubscribes when the last leaves), and fans each publication out
//! to the subscribers' bounded queues as one shared `Arc<Publication>`: the payload is
//! encoded once by the publisher and never copied per subscriber.
//!
//! A subscriber whose queue is full is cut off at once (its stream then ends with
//! SLOW_CONSUMER); the hub never waits for one, so one slow subscriber never delays the
//! others. After the feed reconnects, the hub checks each channel against history from
//! the last position it delivered: what was missed is replayed, and where that is
//! impossible every subscriber of the channel gets an explicit [`HubEvent::Gap`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;

use super::{Broker, BrokerError, ChannelKey, History, LiveFeed, LiveSink, Position, Publication};

/// What a hub hands a subscriber.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// A publication on one of the subscriber's channels, shared with every other
    /// subscriber.
    Publication(Arc<Publication>),
    /// Publications of this channel were lost while the feed was down and cannot be
    /// replayed: the subscriber must report the gap.
    Gap(ChannelKey),
}

/// The per-process fan-out point of the backbone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("channels", &self.channel_count()).finish_non_exhaustive()
    }
}

struct HubInner {
    broker: Arc<dyn Broker>,
    feed: Arc<dyn LiveFeed>,
    history_limit: usize,
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    channels: HashMap<Arc<str>, ChannelEntry>,
    next_id: u64,
}

struct ChannelEntry {
    key: ChannelKey,
    /// The last position the hub delivered (or was seeded with): the baseline of the
    /// check after a reconnect, and the filter against duplicates from replays.
    last: Option<Position>,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    id: u64,
    queue: mpsc::Sender<HubEvent>,
    cut_off: Arc<AtomicBool>,
}

impl Hub {
    /// A hub that reads history from `broker` and receives live publications from `feed`;
    /// after a reconnect it replays at most `history_limit` publications per channel.
    pub fn new(broker: Arc<dyn Broker>, feed: Arc<dyn LiveFeed>, history_limit: usize) -> Self {
        let inner = Arc::new(HubInner { broker, feed, history_limit, state: Mutex::new(HubState::default()) });
        inner.feed.attach(Arc::new(HubSink(Arc::downgrade(&inner))));
        Self { inner }
    }

    /// The broker this hub reads history from.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Registers one subscriber for `channels` with a queue of `capacity` events, and
    /// waits until the feed delivers every one of them.
    pub async fn join(&self, channels: &[ChannelKey], capacity: usize) -> Result<HubSubscription, BrokerError> {
        let (queue, events) = mpsc::channel(capacity.max(1));
        let cut_off = Arc::new(AtomicBool::new(false));
        let mut activations = Vec::with_capacity(channels.len());
        let id = {
            let mut state = self.inner.lock();
            let id = state.next_id;
            state.next_id += 1;
            for key in channels {
                let entry = state.channels.entry(Arc::from(key.full())).or_insert_with(|| ChannelEntry {
                    key: key.clone(),
                    last: None,
                    subscribers: Vec::new(),
                });
                entry.subscribers.push(Subscriber { id, queue: queue.clone(), cut_off: cut_off.clone() });
                // Registered under the lock: calls reach the feed in the hub's order.
                activations.push(self.inner.feed.subscribe(key));
            }
            id
        };
        let subscription =
            HubSubscription { id, channels: channels.to_vec(), events, cut_off, hub: Arc::downgrade(&self.inner) };
        for activation in activations {
            // On failure `subscription` drops here and leaves the channels again.
            activation.await?;
        }
        Ok(subscription)
    }

    /// Sets the baseline position of `channel` if the hub has none yet (subscriptions call
    /// it with the position they start from).
    pub fn seed(&self, channel: &ChannelKey, position: &Position) {
        let mut state = self.inner.lock();
        if let Some(entry) = state.channels.get_mut(channel.full())
            && entry.last.is_none()
        {
            entry.last = Some(position.clone());
        }
    }

    /// How many channels have local subscribers (each is one live subscription).
    pub fn channel_count(&self) -> usize {
        self.inner.lock().channels.len()
    }

    /// How many local subscribers watch `channel`.
    pub fn subscriber_count(&self, channel: &ChannelKey) -> usize {
        self.inner.lock().channels.get(channel.full()).map_or(0, |entry| entry.subscribers.len())
    }
}

impl HubInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves consistent data (every step is a single
        // map or vector operation), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn deliver(&self, publication: Publication) {
        let mut state = self.lock();
        let Some(entry) = state.channels.get_mut(publication.channel.full()) else {
            return;
        };
        if let Some(last) = &entry.last
            && publication.position.is_at_or_before(last)
        {
            return; // already delivered (a replay overlapping live delivery)
        }
        entry.last = Some(publication.position.clone());
        let shared = Arc::new(publication);
        entry.subscribers.retain(|subscriber| send(subscriber, HubEvent::Publication(shared.clone())));
    }

    fn leave(&self, id: u64, channels: &[ChannelKey]) {
        let mut state = self.lock();
        for key in channels {
            let Some(entry) = state.channels.get_mut(key.full()) else {
                continue;
            };
            entry.subscribers.retain(|subscriber| subscriber.id != id);
            if entry.subscribers.is_empty() {
                state.channels.remove(key.full());
                // Registered now, under the lock; the future only reports.
                drop(self.feed.unsubscribe(key));
            }
        }
    }

    /// After a reconnect: replay what each channel missed, or report a gap.
    async fn check_after_resume(self: Arc<Self>) {
        let snapshot: Vec<(ChannelKey, Option<Position>)> =
            self.lock().channels.values().map(|entry| (entry.key.clone(), entry.last.clone())).collect();
        for (key, last) in snapshot {
            let outcome = match &last {
                Some(last) => self.broker.history(&key, last, self.history_limit).await,
                None => Ok(History::Unrecoverable(super::Unrecoverable::EpochChanged)),
            };
            match outcome {
                Ok(History::Recovered(missed)) => {
                    if !missed.is_empty() {
                        tracing::info!(channel = %key, replayed = missed.len(), "replayed publications missed while the feed was down");
                    }
                    for publication in missed {
                        self.deliver(publication);
                    }
                }
                Ok(History::Unrecoverable(reason)) => {
                    tracing::warn!(channel = %key, ?reason, "publications lost while the feed was down");
                    self.report_gap(&key);
                }
                Err(error) => {
                    tracing::warn!(channel = %key, %error, "cannot check history after the feed reconnected");
                    self.report_gap(&key);
                }
            }
        }
    }

    fn report_gap(&self, key: &ChannelKey) {
        let mut state = self.lock();
        if let Some(entry) = state.channels.get_mut(key.full()) {
            entry.subscribers.retain(|subscriber| send(subscriber, HubEvent::Gap(key.clone())));
        }
    }
}

/// Enqueues `event` for `subscriber`; false drops it from the channel (cut off or gone).
fn send(subscriber: &Subscriber, event: HubEvent) -> bool {
    if subscriber.cut_off.load(Ordering::Relaxed) {
        return false;
    }
    match subscriber.queue.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            subscriber.cut_off.store(true, Ordering::Relaxed);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The hub as its feed's sink, held weakly: a hub dropped by its owner stops its feed.
struct HubSink(Weak<HubInner>);

impl LiveSink for HubSink {
    fn deliver(&self, publication: Publication) {
        if let Some(hub) = self.0.upgrade() {
            hub.deliver(publication);
        }
    }

    fn resumed(&self) {
        if let Some(hub) = self.0.upgrade() {
            tokio::spawn(hub.check_after_resume());
        }
    }
}

/// One subscriber's registration: its queue of events, and its place in the hub until
/// dropped.
pub struct HubSubscription {
    id: u64,
    channels: Vec<ChannelKey>,
    events: mpsc::Receiver<HubEvent>,
    cut_off: Arc<AtomicBool>,
    hub: Weak<HubInner>,
}

impl std::fmt::Debug for HubSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSubscription")
            .field("id", &self.id)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl HubSubscription {
    /// Whether the hub cut this subscriber off because its queue was full.
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Relaxed)
    }

    /// The queue of events.
    pub fn events(&mut self) -> &mut mpsc::Receiver<HubEvent> {
        &mut self.events
    }
}

impl Drop for HubSubscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.leave(self.id, &self.channels);
        }
    }
}
