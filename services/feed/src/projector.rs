//! [`Projector`]: brings a feed's read model up to its channel. It reads the feed-log events
//! after the model's watermark from the channel's history and applies them in offset order
//! with a compare-and-set on the watermark; if another projector got there first it reads
//! again. Catching up is idempotent: run it as often and on as many instances as wanted
//! (after each publication, and periodically).
//!
//! When the channel's history no longer reaches back to the watermark (its epoch changed or
//! it was trimmed), the model is reset to the newest `capacity` events the history still
//! holds. (A rebuild from the durable archive, which holds every event, replaces this once
//! the archive lands.)

use std::sync::Arc;

use mesh_core::broker::{Broker, BrokerError, History, Position};

use crate::domain::{FeedError, FeedEvent, FeedName};
use crate::store::ReadModel;
use crate::store::read_model::Change;

/// Rounds of compare-and-set a catch-up tries before it reports the contention.
const MAX_ROUNDS: usize = 64;

/// Catches read models up with the feed log.
pub struct Projector {
    broker: Arc<dyn Broker>,
    models: Arc<dyn ReadModel>,
    /// Most events read from history at once (at most the broker's history size).
    batch: usize,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("batch", &self.batch).finish_non_exhaustive()
    }
}

fn broker_error(error: BrokerError) -> FeedError {
    FeedError::Unavailable(error.to_string())
}

impl Projector {
    /// A projector of `models` from `broker`'s channels, reading up to `batch` events at once.
    pub fn new(broker: Arc<dyn Broker>, models: Arc<dyn ReadModel>, batch: usize) -> Self {
        Self { broker, models, batch: batch.max(1) }
    }

    /// Applies every event of `feed` in `tenant` not yet in its read model; returns the
    /// watermark reached.
    pub async fn catch_up(&self, tenant: &str, feed: &FeedName) -> Result<Option<Position>, FeedError> {
        let channel = feed.channel(tenant).map_err(|violation| FeedError::Invalid(vec![violation]))?;
        // Done once the model reaches the channel's head as it was when the call started:
        // whoever applies the events (this call or a concurrent one).
        let target = self.broker.position(&channel).await.map_err(broker_error)?;
        for _ in 0..MAX_ROUNDS {
            let watermark = self.models.watermark(tenant, feed).await?;
            if watermark.as_ref().is_some_and(|watermark| target.is_at_or_before(watermark)) {
                return Ok(watermark);
            }
            let head = self.broker.position(&channel).await.map_err(broker_error)?;
            let current = watermark.as_ref().filter(|watermark| watermark.epoch == head.epoch);
            if let Some(current) = current
                && current.offset >= head.offset
            {
                return Ok(watermark);
            }
            // Read forward from the watermark, or (history lost, or nothing applied yet)
            // from as far back as the feed's capacity reaches.
            let (since, reset) = match current {
                Some(current) => (current.clone(), false),
                None => {
                    let from = head.offset.saturating_sub(feed.capacity() as u64);
                    (Position { offset: from, epoch: head.epoch.clone() }, true)
                }
            };
            // The whole batch (the history's size): events published after `head` was read
            // may come along, and a smaller limit would make history refuse the read.
            let events = match self.broker.history(&channel, &since, self.batch).await.map_err(broker_error)? {
                History::Recovered(events) => events,
                History::Unrecoverable(why) => {
                    if reset {
                        // Even the newest events are gone: start empty at the head.
                        tracing::warn!(%channel, ?why, "feed history unavailable: read model reset empty");
                        if self.models.apply(tenant, feed, watermark.as_ref(), true, &[], &head).await? {
                            return Ok(Some(head));
                        }
                        continue;
                    }
                    // The watermark fell out of history: start over from the newest events.
                    tracing::warn!(%channel, ?why, "feed read model behind its history: resetting");
                    let from = head.offset.saturating_sub(feed.capacity() as u64);
                    let since = Position { offset: from, epoch: head.epoch.clone() };
                    match self.broker.history(&channel, &since, self.batch).await.map_err(broker_error)? {
                        History::Recovered(events) => {
                            let to = events.last().map_or(since.clone(), |last| last.position.clone());
                            let changes = changes(&events)?;
                            // Applied or not (another projector was faster): read again.
                            self.models.apply(tenant, feed, watermark.as_ref(), true, &changes, &to).await?;
                            continue;
                        }
                        History::Unrecoverable(_) => {
                            if self.models.apply(tenant, feed, watermark.as_ref(), true, &[], &head).await? {
                                return Ok(Some(head));
                            }
                            continue;
                        }
                    }
                }
            };
            let to = events.last().map_or_else(|| since.clone(), |last| last.position.clone());
            let changes = changes(&events)?;
            // A conflict means another projector moved on: read again.
            self.models.apply(tenant, feed, watermark.as_ref(), reset, &changes, &to).await?;
        }
        Err(FeedError::Unavailable(format!("feed {feed} of {tenant}: read model under contention, retry")))
    }
}

fn changes(events: &[mesh_core::broker::Publication]) -> Result<Vec<Change>, FeedError> {
    events
        .iter()
        .map(|publication| {
            Ok(match FeedEvent::decode(&publication.payload)? {
                FeedEvent::Published(activity) => Change::Add { offset: publication.position.offset, id: activity.id },
                FeedEvent::Deleted(tombstone) => Change::Remove { id: tombstone.id },
            })
        })
        .collect()
}
