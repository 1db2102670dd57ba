//! [`Projector`]: brings a feed's read model up to its channel. It reads the feed-log events
//! after the model's watermark from the channel's history and applies them in offset order
//! with a compare-and-set on the watermark; if another projector got there first it reads
//! again. Catching up is idempotent: run it as often and on as many instances as wanted
//! (after each publication, and periodically).
//!
//! A feed that was never projected (or was flushed) is built from the newest events its
//! channel's history holds. When the history expired while the feed was idle (a new epoch),
//! the model keeps its entries and goes on with the new epoch. When the model fell further
//! behind than history reaches, it is rebuilt from the durable archive (which receives every
//! event through the job queue; its unbroken run from the oldest event is used) and caught
//! up from there; only if that run does not reach history either (the archive lags behind
//! it) is it built from the newest events of history.
//!
//! [`Projector::rebuild`] (`meshctl feed rebuild`) rebuilds every feed of a tenant from the
//! archive, then catches each up with its channel.

use std::sync::Arc;

use mesh_core::broker::{Broker, BrokerError, History, Position, Unrecoverable};

use crate::domain::{ActivityId, FeedError, FeedEvent, FeedName};
use crate::store::read_model::Change;
use crate::store::{FeedArchive, ReadModel};

/// Rounds of compare-and-set a catch-up tries before it reports the contention.
const MAX_ROUNDS: usize = 64;

/// Catches read models up with the feed log.
pub struct Projector {
    broker: Arc<dyn Broker>,
    models: Arc<dyn ReadModel>,
    archive: Arc<dyn FeedArchive>,
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
    /// A projector of `models` from `broker`'s channels, reading up to `batch` events at
    /// once, and rebuilding from `archive`.
    pub fn new(
        broker: Arc<dyn Broker>,
        models: Arc<dyn ReadModel>,
        archive: Arc<dyn FeedArchive>,
        batch: usize,
    ) -> Self {
        Self { broker, models, archive, batch: batch.max(1) }
    }

    /// Rebuilds every feed of `tenant` that has archived events from the archive, then
    /// catches each up with its channel (the events the archive does not hold yet). Safe
    /// while events are published and projected. Returns the feeds rebuilt and the entries
    /// they hold. [`FeedError::ArchiveBehind`] (before that feed is touched) when the
    /// archive's unbroken run ends before what the channel's history still holds.
    pub async fn rebuild(&self, tenant: &str) -> Result<Rebuilt, FeedError> {
        let mut rebuilt = Rebuilt::default();
        for feed in self.archive.feeds(tenant).await? {
            if let Some((changes, to)) = self.archived_entries(tenant, &feed).await? {
                let channel = feed.channel(tenant).map_err(|violation| FeedError::Invalid(vec![violation]))?;
                // Another epoch: the history of `to`'s epoch is gone and the catch-up starts
                // the current epoch from its beginning.
                if let History::Unrecoverable(Unrecoverable::Trimmed | Unrecoverable::TooMany) =
                    self.broker.history(&channel, &to, self.batch).await.map_err(broker_error)?
                {
                    return Err(FeedError::ArchiveBehind);
                }
                self.reset(tenant, &feed, &changes, &to).await?;
            }
            self.catch_up(tenant, &feed).await?;
            rebuilt.feeds += 1;
            rebuilt.entries += self.models.page(tenant, &feed, None, feed.capacity()).await?.entries.len();
        }
        Ok(rebuilt)
    }

    /// Replaces the feed's entries with `changes` and its watermark with `to`, whatever
    /// it was (a concurrent projector's move is retried over).
    async fn reset(&self, tenant: &str, feed: &FeedName, changes: &[Change], to: &Position) -> Result<(), FeedError> {
        for _ in 0..MAX_ROUNDS {
            let watermark = self.models.watermark(tenant, feed).await?;
            if self.models.apply(tenant, feed, watermark.as_ref(), true, changes, to).await? {
                return Ok(());
            }
        }
        Err(FeedError::Unavailable(format!("feed {feed} of {tenant}: read model under contention, retry")))
    }

    /// The feed's entries (oldest first) as projecting its archived events leaves them,
    /// and the position of the last event used; `None` when nothing is archived.
    ///
    /// Only the unbroken run from the oldest archived event is used (offsets one after the
    /// other; a new epoch from its offset 1): archive consumers on several instances finish
    /// out of order and a failed batch waits for its retry, so a later event can be
    /// archived before an earlier one. The channel's history supplies what follows.
    async fn archived_entries(
        &self,
        tenant: &str,
        feed: &FeedName,
    ) -> Result<Option<(Vec<Change>, Position)>, FeedError> {
        let events = self.archive.events(tenant, feed).await?;
        let mut run = Vec::with_capacity(events.len());
        let mut last: Option<&Position> = None;
        for archived in &events {
            let Some((_, at)) = archived.positions.iter().find(|(of, _)| of == feed) else { continue };
            if let Some(previous) = last
                && !at.follows(previous)
                && !(at.offset == 1 && at.epoch != previous.epoch)
            {
                break;
            }
            last = Some(at);
            run.push(archived);
        }
        let Some(to) = last.cloned() else {
            return Ok(None);
        };
        // What projecting every event in order leaves: adds trimmed to the capacity on
        // write, tombstones removing their entry if it is still there.
        let mut entries: std::collections::VecDeque<&ActivityId> = std::collections::VecDeque::new();
        for archived in run {
            match &archived.event {
                FeedEvent::Published(activity) => {
                    entries.push_back(&activity.id);
                    if entries.len() > feed.capacity() {
                        entries.pop_front();
                    }
                }
                FeedEvent::Deleted(tombstone) => entries.retain(|id| **id != tombstone.id),
            }
        }
        Ok(Some((entries.into_iter().map(|id| Change::Add { id: id.clone() }).collect(), to)))
    }

    /// Applies every event of `feed` in `tenant` not yet in its read model; returns the
    /// watermark reached.
    pub async fn catch_up(&self, tenant: &str, feed: &FeedName) -> Result<Option<Position>, FeedError> {
        let channel = feed.channel(tenant).map_err(|violation| FeedError::Invalid(vec![violation]))?;
        // Done once the model reaches the channel's head as it was when the call started:
        // whoever applies the events (this call or a concurrent one).
        let target = self.broker.position(&channel).await.map_err(broker_error)?;
        let mut archive_tried = false;
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
                    // The model fell further behind than history reaches: rebuild it from the
                    // archive and catch up from there, once.
                    if !std::mem::replace(&mut archive_tried, true)
                        && let Some((changes, to)) = self.archived_entries(tenant, feed).await?
                    {
                        tracing::warn!(%channel, ?why, "feed read model behind its history: rebuilding from the archive");
                        self.models.apply(tenant, feed, watermark.as_ref(), true, &changes, &to).await?;
                        continue;
                    }
                    // The archive does not reach history either: start over from the newest
                    // events.
                    tracing::warn!(%channel, ?why, "feed read model behind its history and the archive: rebuilding from the newest events");
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

/// What [`Projector::rebuild`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Feeds rebuilt.
    pub feeds: usize,
    /// Entries they hold now.
    pub entries: usize,
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
