//! [`Hub`]: one per process. It multiplexes every local subscriber onto one live
//! subscription per channel (the feed subscribes when the first local subscriber of a
//! channel arrives and unsubscribes when the last leaves), and fans each publication out
//! to the subscribers' bounded queues as one shared `Arc<Publication>`: the payload is
//! encoded once by the publisher and never copied per subscriber.
//!
//! A subscriber whose queue is full is cut off at once (its stream then ends with
//! SLOW_CONSUMER); the hub never waits for one, so one slow subscriber never delays the
//! others.
//!
//! Repair: after the feed reconnects, and whenever a live publication does not follow the
//! last one delivered on its channel, the hub holds that channel's live publications back,
//! reads history from the last position it delivered, replays what was missed, then lets
//! the held publications through (dropping those the replay already covered). Where history
//! cannot fill the hole, every subscriber of the channel gets an explicit [`HubEvent::Gap`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Semaphore, mpsc, watch};

use super::{Broker, BrokerError, ChannelKey, History, LiveFeed, LiveSink, Position, Publication};

/// Most channels repaired at the same time after a reconnect.
const REPAIRS_AT_ONCE: usize = 64;
/// Longest a repair waits for history before it reports a gap instead.
const REPAIR_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a hub hands a subscriber.
#[derive(Debug, Clone)]
pub enum HubEvent {
    /// A publication on one of the subscriber's channels, shared with every other
    /// subscriber.
    Publication(Arc<Publication>),
    /// Publications of this channel were lost while the feed was down and cannot be
    /// replayed: the subscriber must report the gap. (Boxed: every subscriber queue
    /// allocates a block of 32 events up front, so the event stays two words.)
    Gap(Box<ChannelKey>),
}

// Two words: a subscriber's queue holds its first block of 32 events from the start.
const _: () = assert!(std::mem::size_of::<HubEvent>() <= 16);

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
    /// False from the moment the feed reports its connection lost until it resumed.
    connected: AtomicBool,
}

#[derive(Default)]
struct HubState {
    channels: HashMap<Arc<str>, ChannelEntry>,
    next_id: u64,
    generation: u64,
}

struct ChannelEntry {
    key: ChannelKey,
    /// Tells this entry apart from a later one of the same channel (a repair that started
    /// before the channel was left and joined again must not touch the new entry).
    generation: u64,
    /// The feed's answer to this channel's subscribe: `None` while pending.
    activation: watch::Receiver<Option<Result<(), String>>>,
    /// The last position the hub delivered (or was seeded with): the baseline of a
    /// repair, and the filter against duplicates from replays.
    last: Option<Position>,
    subscribers: Vec<Subscriber>,
    /// While the channel is being repaired: the live publications held back meanwhile.
    held: Option<Vec<Publication>>,
    /// Held for a repair that waits for the first baseline (see [`Hub::seed`]).
    repair_on_seed: bool,
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
        let inner = Arc::new(HubInner {
            broker,
            feed,
            history_limit,
            state: Mutex::new(HubState::default()),
            connected: AtomicBool::new(true),
        });
        inner.feed.attach(Arc::new(HubSink(Arc::downgrade(&inner))));
        Self { inner }
    }

    /// The broker this hub reads history from.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Whether the live feed is connected: false from a lost connection until the feed is
    /// back and every channel's repair (the replay of what was missed) has finished.
    pub fn feed_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
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
                if !state.channels.contains_key(key.full()) {
                    // The first local subscriber of a channel asks the feed, under the lock so
                    // calls reach the feed in the hub's order; later ones wait on its answer.
                    let (activated, activation) = watch::channel(None);
                    let subscribe = self.inner.feed.subscribe(key);
                    tokio::spawn(async move {
                        let result = subscribe.await.map_err(|error| error.to_string());
                        let _ = activated.send(Some(result));
                    });
                    state.generation += 1;
                    let generation = state.generation;
                    state.channels.insert(
                        Arc::from(key.full()),
                        ChannelEntry {
                            key: key.clone(),
                            generation,
                            last: None,
                            subscribers: Vec::new(),
                            held: None,
                            repair_on_seed: false,
                            activation,
                        },
                    );
                }
                let entry = state.channels.get_mut(key.full()).expect("inserted above");
                entry.subscribers.push(Subscriber { id, queue: queue.clone(), cut_off: cut_off.clone() });
                activations.push(entry.activation.clone());
            }
            id
        };
        let subscription =
            HubSubscription { id, channels: channels.to_vec(), events, cut_off, hub: Arc::downgrade(&self.inner) };
        for mut activation in activations {
            // On failure `subscription` drops here and leaves the channels again.
            let outcome = activation
                .wait_for(Option::is_some)
                .await
                .map_err(|_| BrokerError::Unavailable("the feed stopped".to_owned()))?
                .clone();
            outcome.expect("waited for Some").map_err(BrokerError::Unavailable)?;
        }
        Ok(subscription)
    }

    /// Sets the baseline position of `channel` if the hub has none yet (subscriptions call
    /// it with the position they start from).
    ///
    /// A channel the feed reconnected for before it had a baseline stays held until this
    /// seed, which then starts its repair: whatever the outage swallowed after the
    /// subscription read its position is replayed, not just noticed at the next publication.
    pub fn seed(&self, channel: &ChannelKey, position: &Position) {
        let mut state = self.inner.lock();
        let Some(entry) = state.channels.get_mut(channel.full()) else {
            return;
        };
        if entry.last.is_none() {
            entry.last = Some(position.clone());
        }
        if std::mem::take(&mut entry.repair_on_seed) {
            let target = (entry.key.clone(), entry.generation);
            drop(state);
            tokio::spawn(self.inner.clone().repair(vec![target]));
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

    /// A live publication from the feed.
    fn deliver(self: &Arc<Self>, publication: Publication) {
        let mut state = self.lock();
        let Some(entry) = state.channels.get_mut(publication.channel.full()) else {
            return;
        };
        if let Some(held) = &mut entry.held {
            held.push(publication);
            if held.len() > self.history_limit {
                // The repair takes too long to hold on: give up on this hole.
                tracing::warn!(channel = %entry.key, "too many publications held during a repair");
                entry.held = None;
                entry.report_gap();
            }
            return;
        }
        // A new epoch starting at 1 on a connected feed: the channel's history expired while
        // it was idle, and nothing was missed (after an outage the channel would be held).
        let restarted = publication.position.offset == 1;
        if let Some(last) = &entry.last
            && !restarted
            && !publication.position.is_at_or_before(last)
            && !publication.position.follows(last)
        {
            // A hole (or a new epoch): repair from history before anything else goes out.
            entry.held = Some(vec![publication]);
            let target = (entry.key.clone(), entry.generation);
            drop(state);
            tokio::spawn(self.clone().repair(vec![target]));
            return;
        }
        entry.fan_out(publication);
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

    /// The feed is back after an outage: hold every channel and repair it.
    fn resume(self: &Arc<Self>) {
        let mut state = self.lock();
        let mut targets = Vec::with_capacity(state.channels.len());
        for entry in state.channels.values_mut() {
            if entry.held.is_none() {
                entry.held = Some(Vec::new());
                targets.push((entry.key.clone(), entry.generation));
            }
        }
        drop(state);
        let hub = self.clone();
        tokio::spawn(async move {
            hub.clone().repair(targets).await;
            // Connected again only once every channel caught up (or reported its gap).
            hub.connected.store(true, Ordering::Release);
        });
    }

    /// Repairs each held channel, a bounded number at a time.
    async fn repair(self: Arc<Self>, targets: Vec<(ChannelKey, u64)>) {
        let permits = Arc::new(Semaphore::new(REPAIRS_AT_ONCE));
        for (key, generation) in targets {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let hub = self.clone();
            tokio::spawn(async move {
                hub.repair_one(key, generation).await;
                drop(permit);
            });
        }
        // Every permit back: every repair finished.
        let _ = permits.acquire_many(u32::try_from(REPAIRS_AT_ONCE).unwrap_or(u32::MAX)).await;
    }

    /// Replays what the channel missed since its last delivered position, then releases
    /// what was held; reports a gap where history cannot fill the hole in time.
    async fn repair_one(&self, key: ChannelKey, generation: u64) {
        let last = match self.lock().channels.get(key.full()) {
            Some(entry) if entry.generation == generation => entry.last.clone(),
            _ => return,
        };
        let Some(last) = last else {
            // No baseline yet: stay held until the subscriber seeds one, then repair.
            if let Some(entry) = self.lock().channels.get_mut(key.full()).filter(|entry| entry.generation == generation)
            {
                entry.repair_on_seed = true;
            }
            return;
        };
        let outcome = tokio::time::timeout(REPAIR_READ_TIMEOUT, self.broker.history(&key, &last, self.history_limit))
            .await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("history read timed out".to_owned())));
        let mut state = self.lock();
        let Some(entry) = state.channels.get_mut(key.full()).filter(|entry| entry.generation == generation) else {
            return;
        };
        let Some(held) = entry.held.take() else {
            return; // given up on already (too much held)
        };
        let missed = match outcome {
            Ok(History::Recovered(missed)) => missed,
            Ok(History::Unrecoverable(reason)) => {
                tracing::warn!(channel = %key, ?reason, "publications lost and not in history");
                entry.report_gap();
                return;
            }
            Err(error) => {
                tracing::warn!(channel = %key, %error, "cannot read history to repair a channel");
                entry.report_gap();
                return;
            }
        };
        if !missed.is_empty() {
            tracing::info!(channel = %key, replayed = missed.len(), "replayed publications the live feed missed");
        }
        for publication in missed.into_iter().chain(held) {
            match &entry.last {
                Some(last) if publication.position.is_at_or_before(last) => {}
                Some(last) if !publication.position.follows(last) => {
                    tracing::warn!(channel = %key, "publications lost during a repair");
                    entry.report_gap();
                    return;
                }
                _ => entry.fan_out(publication),
            }
        }
    }
}

impl ChannelEntry {
    /// Sends `publication` to every subscriber, as one shared allocation.
    fn fan_out(&mut self, publication: Publication) {
        self.last = Some(publication.position.clone());
        let shared = Arc::new(publication);
        self.subscribers.retain(|subscriber| send(subscriber, HubEvent::Publication(shared.clone())));
    }

    /// Tells every subscriber the channel has a hole; the channel starts afresh (the next
    /// subscriber seeds it again).
    fn report_gap(&mut self) {
        let key = self.key.clone();
        self.subscribers.retain(|subscriber| send(subscriber, HubEvent::Gap(Box::new(key.clone()))));
        self.last = None;
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
            hub.resume();
        }
    }

    fn interrupted(&self) {
        if let Some(hub) = self.0.upgrade() {
            hub.connected.store(false, Ordering::Release);
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
