//! [`subscribe`]: the function every streaming RPC calls. It turns channels and optional
//! last positions into one stream that keeps the stream contract:
//!
//! 1. a [`Confirmation`] first, with each channel's position and whether recovery worked;
//! 2. the publications the client missed (when it sent a last position and all of them
//!    are still in history), then live ones: no gap and no duplicate at the seam, because
//!    the subscriber joins the hub *before* history is read and live publications at or
//!    below the replayed offset are dropped;
//! 3. a heartbeat whenever nothing was sent for the heartbeat interval;
//! 4. a bounded queue: a subscriber that falls behind is ended with RESOURCE_EXHAUSTED,
//!    reason SLOW_CONSUMER, and the last position it received per channel, so it resumes
//!    without loss; a gap the hub could not repair ends it with UNAVAILABLE, reason
//!    STREAM_GAP, and the same positions. Never a silent gap.
//!
//! No task is spawned per subscription: the stream is polled by whoever sends it (the gRPC
//! response), which keeps an idle subscription down to its queue and a few fields.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;

use super::hub::{Hub, HubEvent, HubSubscription};
use super::{ChannelKey, History, Position, Publication};
use crate::{Error, FieldViolation};

/// Limits and pacing of subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionSettings {
    /// Events a subscriber may have waiting before it is cut off (default 100).
    pub queue_capacity: usize,
    /// Longest time an idle stream goes without a heartbeat (default 15 s); heartbeats come
    /// every half to whole interval of silence.
    pub heartbeat_interval: Duration,
    /// Most publications replayed per channel on recovery (default 1,000).
    pub history_limit: usize,
    /// Most channels in one subscription (default 16).
    pub max_channels: usize,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Self { queue_capacity: 100, heartbeat_interval: Duration::from_secs(15), history_limit: 1000, max_channels: 16 }
    }
}

/// One channel of a subscription request, with the client's last position if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRequest {
    /// The channel (the tenant comes from the verified caller).
    pub channel: ChannelKey,
    /// The last position the client received, to recover from.
    pub since: Option<Position>,
}

/// The first event of every subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    /// Each channel's position at the end of the replay (its head when the stream went
    /// live), in request order.
    pub positions: Vec<(ChannelKey, Position)>,
    /// Whether any channel came with a last position.
    pub recovery_requested: bool,
    /// True when recovery was requested and every channel that asked was recovered.
    pub recovered: bool,
    /// Channels whose last position could not be recovered (nothing was replayed for them).
    pub unrecovered: Vec<ChannelKey>,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The confirmation (always first, exactly once).
    Confirmed(Confirmation),
    /// A publication, replayed or live, shared with every other subscriber.
    Publication(Arc<Publication>),
    /// Nothing happened for a heartbeat interval.
    Heartbeat,
}

/// Subscribes to `requests` through `hub`: see the module documentation for what the
/// stream yields. Fails with INVALID_ARGUMENT for an empty, oversized or repetitive
/// request, and UNAVAILABLE when the broker cannot be reached.
pub async fn subscribe(
    hub: &Hub,
    requests: Vec<ChannelRequest>,
    settings: &SubscriptionSettings,
) -> Result<Subscription, Error> {
    validate(&requests, settings)?;
    let channels: Vec<ChannelKey> = requests.iter().map(|request| request.channel.clone()).collect();
    // Join first: everything published from now on is queued, so history read next and
    // the queue overlap rather than leave a gap.
    let hub_subscription = hub.join(&channels, settings.queue_capacity).await?;

    let broker = hub.broker();
    let mut replay = VecDeque::new();
    let mut positions = Vec::with_capacity(requests.len());
    // Where each channel's client stands: its own last position while its replay is still
    // to be sent (so an error reports what it really received), else the head.
    let mut cursors = Vec::with_capacity(requests.len());
    let mut unrecovered = Vec::new();
    for request in &requests {
        let mut recovered = None;
        if let Some(since) = &request.since {
            match broker.history(&request.channel, since, settings.history_limit).await? {
                History::Recovered(missed) => {
                    let head = missed.last().map_or_else(|| since.clone(), |last| last.position.clone());
                    replay
                        .extend(missed.into_iter().map(|publication| StreamEvent::Publication(Arc::new(publication))));
                    recovered = Some((since.clone(), head));
                }
                History::Unrecoverable(_) => unrecovered.push(request.channel.clone()),
            }
        }
        let (cursor, head) = match recovered {
            Some(pair) => pair,
            None => {
                let head = broker.position(&request.channel).await?;
                (head.clone(), head)
            }
        };
        hub.seed(&request.channel, &head);
        cursors.push((request.channel.clone(), cursor));
        positions.push((request.channel.clone(), head));
    }

    let recovery_requested = requests.iter().any(|request| request.since.is_some());
    let confirmation = Confirmation {
        positions,
        recovery_requested,
        recovered: recovery_requested && unrecovered.is_empty(),
        unrecovered,
    };
    replay.push_front(StreamEvent::Confirmed(confirmation));
    let tick = heartbeat_tick(settings.heartbeat_interval);
    Ok(Subscription {
        pending: replay,
        backlog: VecDeque::new(),
        backlog_limit: settings.queue_capacity + settings.history_limit,
        hub: hub_subscription,
        cursors,
        tick,
        heartbeat: Box::pin(tokio::time::sleep(tick)),
        active: false,
        ended: false,
    })
}

fn validate(requests: &[ChannelRequest], settings: &SubscriptionSettings) -> Result<(), Error> {
    if requests.is_empty() {
        return Err(Error::invalid_argument(vec![FieldViolation::new("channels", "at least one channel is required")]));
    }
    if requests.len() > settings.max_channels {
        return Err(Error::invalid_argument(vec![FieldViolation::new(
            "channels",
            format!("at most {} channels per subscription", settings.max_channels),
        )]));
    }
    let mut seen = HashSet::new();
    for (index, request) in requests.iter().enumerate() {
        if !seen.insert(request.channel.full()) {
            return Err(Error::invalid_argument(vec![FieldViolation::new(
                format!("channels[{index}]"),
                "the channel is named twice",
            )]));
        }
    }
    Ok(())
}

/// The heartbeat timer ticks at half the interval; a tick with no event since the previous
/// one sends a heartbeat. So an idle stream hears from the server at least once per
/// interval, and a busy stream never touches its timer (no clock read per event).
fn heartbeat_tick(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(1))
}

/// A live subscription: a stream of [`StreamEvent`]s that ends with an error when the
/// subscriber fell behind or publications were lost.
pub struct Subscription {
    pending: VecDeque<StreamEvent>,
    /// Live events taken off the hub queue while the replay is still being sent, so a long
    /// replay on a busy channel does not get the subscriber cut off.
    backlog: VecDeque<HubEvent>,
    backlog_limit: usize,
    hub: HubSubscription,
    /// The last position handed to the subscriber, per channel (a handful of channels:
    /// a vector beats a map, and keys compare by pointer first).
    cursors: Vec<(ChannelKey, Position)>,
    tick: Duration,
    heartbeat: Pin<Box<Sleep>>,
    /// Whether an event was sent since the last heartbeat tick.
    active: bool,
    ended: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("cursors", &self.cursors).finish_non_exhaustive()
    }
}

impl Subscription {
    /// The last position delivered on `channel`.
    pub fn cursor(&self, channel: &ChannelKey) -> Option<&Position> {
        self.cursors.iter().find(|(key, _)| key.is(channel)).map(|(_, position)| position)
    }

    fn cursor_mut(&mut self, channel: &ChannelKey) -> Option<&mut Position> {
        self.cursors.iter_mut().find(|(key, _)| key.is(channel)).map(|(_, position)| position)
    }

    fn end(&mut self, error: Error) -> Poll<Option<Result<StreamEvent, Error>>> {
        self.ended = true;
        let mut error = error;
        for (channel, position) in &self.cursors {
            error = error
                .with_metadata(channel.name().as_str(), format!("{}:{}", position.offset, position.epoch.as_str()));
        }
        Poll::Ready(Some(Err(error)))
    }

    fn emit(&mut self, event: StreamEvent) -> Poll<Option<Result<StreamEvent, Error>>> {
        self.active = true;
        Poll::Ready(Some(Ok(event)))
    }
}

impl Stream for Subscription {
    type Item = Result<StreamEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.hub.is_cut_off() {
            return this.end(slow_consumer());
        }
        if !this.pending.is_empty() {
            while let Ok(event) = this.hub.events().try_recv() {
                if this.backlog.len() >= this.backlog_limit {
                    return this.end(slow_consumer());
                }
                this.backlog.push_back(event);
            }
        }
        if let Some(event) = this.pending.pop_front() {
            if let StreamEvent::Publication(publication) = &event
                && let Some(cursor) = this.cursor_mut(&publication.channel)
            {
                *cursor = publication.position.clone();
            }
            return this.emit(event);
        }
        loop {
            let next = match this.backlog.pop_front() {
                Some(event) => Poll::Ready(Some(event)),
                None => this.hub.events().poll_recv(cx),
            };
            match next {
                Poll::Ready(Some(HubEvent::Publication(publication))) => {
                    let Some(cursor) = this.cursor_mut(&publication.channel) else {
                        continue;
                    };
                    let position = &publication.position;
                    if position.is_at_or_before(cursor) {
                        continue; // replayed already: the seam between history and live
                    }
                    // A new epoch starting at 1 on a live channel means its history expired
                    // while idle (the hub reports a gap itself when something was missed).
                    let restarted = position.offset == 1 && position.epoch != cursor.epoch;
                    if !position.follows(cursor) && !restarted {
                        return this.end(stream_gap());
                    }
                    *cursor = position.clone();
                    return this.emit(StreamEvent::Publication(publication));
                }
                Poll::Ready(Some(HubEvent::Gap(_))) => return this.end(stream_gap()),
                Poll::Ready(None) if this.hub.is_cut_off() => return this.end(slow_consumer()),
                Poll::Ready(None) => {
                    return this.end(Error::unavailable("SHUTTING_DOWN", "the server stopped this subscription"));
                }
                Poll::Pending => break,
            }
        }
        while this.heartbeat.as_mut().poll(cx).is_ready() {
            this.heartbeat.as_mut().reset(Instant::now() + this.tick);
            // A heartbeat does not count as activity: the next silent tick sends another.
            if !std::mem::take(&mut this.active) {
                return Poll::Ready(Some(Ok(StreamEvent::Heartbeat)));
            }
        }
        Poll::Pending
    }
}

fn slow_consumer() -> Error {
    Error::resource_exhausted(
        "SLOW_CONSUMER",
        "the subscriber fell behind; resubscribe from the last positions in the error metadata",
        Duration::from_secs(1),
    )
}

fn stream_gap() -> Error {
    Error::unavailable(
        "STREAM_GAP",
        "publications were lost while the broker was unreachable; resubscribe from the last positions in the error metadata",
    )
    .with_retry_after(Duration::from_secs(1))
}
