//! [`Projector`]: brings a feed's read model up to its channel. It reads the feed-log events
//! after the model's watermark from the channel's history and applies them in offset order
//! with a compare-and-set on the watermark; if another projector got there first it reads
//! again. Catching up is idempotent: run it as often and on as many instances as wanted
//! (after each publication, and periodically).
//!
//! A feed that was never projected (or was flushed) is built from the newest events its
//! channel's history holds. When the history expired while the feed was idle (a new epoch),
//! the model keeps its entries and goes on with the new epoch. Only when the model fell
//! further behind than history reaches is it rebuilt from the newest events (a rebuild from
//! the durable archive, which holds every event, replaces this once the archive lands).

use std::sync::Arc;

use mesh_core::broker::{Broker, BrokerError, History, Position, Unrecoverable};

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
            let (since, reset) = match &watermark {
                // Nothing to apply, and nothing stored for a feed that never had an event.
                None if head.offset == 0 => return Ok(None),
                Some(current) if current.epoch == head.epoch => {
                    if current.offset >= head.offset {
                        return Ok(watermark);
                    }
                    (current.clone(), false)
                }
                // The channel's history expired while the feed was idle (its epoch changed):
                // the model keeps what it holds and goes on with the new epoch from its start.
                Some(_) => (Position { offset: 0, epoch: head.epoch.clone() }, false),
                // Nothing applied yet (or flushed): build from the newest events.
                None => (self.newest(feed, &head), true),
            };
            // The whole batch: events published after `head` was read may come along, and a
            // smaller limit would make history refuse the read.
            let events = match self.broker.history(&channel, &since, self.batch).await.map_err(broker_error)? {
                History::Recovered(events) => events,
                History::Unrecoverable(why) => {
                    if reset || why == Unrecoverable::EpochChanged || why == Unrecoverable::Ahead {
                        // The channel moved on while we read: read again.
                        continue;
                    }
                    // The model fell further behind than history reaches: start over from
                    // the newest events (a rebuild from the archive replaces this later).
                    tracing::warn!(%channel, ?why, "feed read model behind its history: rebuilding from the newest events");
                    let since = self.newest(feed, &head);
                    if let History::Recovered(events) =
                        self.broker.history(&channel, &since, self.batch).await.map_err(broker_error)?
                    {
                        let to = events.last().map_or(since.clone(), |last| last.position.clone());
                        self.models.apply(tenant, feed, watermark.as_ref(), true, &changes(&events)?, &to).await?;
                    }
                    continue;
                }
            };
            let to = events.last().map_or_else(|| since.clone(), |last| last.position.clone());
            // A conflict means another projector moved on: read again.
            self.models.apply(tenant, feed, watermark.as_ref(), reset, &changes(&events)?, &to).await?;
        }
        Err(FeedError::Unavailable(format!("feed {feed} of {tenant}: read model under contention, retry")))
    }
}

impl Projector {
    /// Where a build from history starts: the feed's capacity back from `head`, but no
    /// further than nine tenths of a batch, so events published meanwhile still fit in one
    /// read of history.
    fn newest(&self, feed: &FeedName, head: &Position) -> Position {
        let reach = feed.capacity().min(self.batch - self.batch / 10).max(1) as u64;
        Position { offset: head.offset.saturating_sub(reach), epoch: head.epoch.clone() }
    }
}

fn changes(events: &[mesh_core::broker::Publication]) -> Result<Vec<Change>, FeedError> {
    events
        .iter()
        .map(|publication| {
            Ok(match FeedEvent::decode(&publication.payload)? {
                FeedEvent::Published(activity) => Change::Add { id: activity.id },
                FeedEvent::Deleted(tombstone) => Change::Remove { id: tombstone.id },
            })
        })
        .collect()
}
