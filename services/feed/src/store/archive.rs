//! [`FeedArchive`]: every feed-log event, kept durably, so that read models can be rebuilt
//! from it (the broker's history of a channel is bounded, the archive is not). A job-queue
//! consumer appends the events the feed log carried; a rebuild lists a tenant's feeds and
//! reads each feed's events in feed order.
//!
//! Appending is idempotent on the event id ([`FeedEvent::event_id`]): an event already
//! archived is left as it is (first write wins), so a consumer may append a batch again after
//! a crash, or two consumers the same events at once, and nothing changes.
//!
//! *Feed order*: the events of one epoch of the feed's channel by offset; the epochs (random
//! ids that change when the channel's history was lost, so they never interleave in time) by
//! the earliest [`time`](FeedEvent::time) of their events in the feed, ties by epoch text. Both
//! implementations sort with the one function `in_feed_order`.
//!
//! The archive does not interpret events: a tombstone is one more event (its own id), and it
//! is the rebuild's job to apply it.
//!
//! [`MemoryFeedArchive`] and [`RedisFeedArchive`] pass one conformance suite
//! (`tests/archive.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mesh_core::backend::RedisPool;
use mesh_core::broker::{Epoch, Position};
use redis::Script;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, connection, unavailable};
use crate::domain::{FeedError, FeedEvent, FeedName};

/// One feed-log event as the archive keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEvent {
    /// The event; its id is [`FeedEvent::event_id`], its time [`FeedEvent::time`].
    pub event: FeedEvent,
    /// Its position in each feed it was appended to (`global` first, then the actor's feed),
    /// as the channels gave them.
    pub positions: Vec<(FeedName, Position)>,
}

/// Where the feed-log events are archived (see the module docs).
pub trait FeedArchive: Send + Sync + 'static {
    /// Stores `events` of `tenant`; idempotent on the event id: an event already archived is
    /// left as it is (first write wins), so appending the same events twice, or
    /// concurrently, changes nothing.
    fn append<'a>(&'a self, tenant: &'a str, events: &'a [ArchivedEvent]) -> BoxFuture<'a, Result<(), FeedError>>;

    /// Every feed of `tenant` with at least one archived event, sorted by name.
    fn feeds<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<FeedName>, FeedError>>;

    /// Every archived event of `tenant` that has a position in `feed`, in feed order (see the
    /// module docs); empty for an unknown tenant or feed.
    fn events<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
    ) -> BoxFuture<'a, Result<Vec<ArchivedEvent>, FeedError>>;
}

/// The archive in memory: the embedded default and the reference of the conformance suite.
#[derive(Debug, Default)]
pub struct MemoryFeedArchive {
    tenants: Mutex<HashMap<String, TenantArchive>>,
}

#[derive(Debug, Default)]
struct TenantArchive {
    /// By event id.
    events: HashMap<String, ArchivedEvent>,
    /// The ids of each feed's events.
    feeds: HashMap<FeedName, HashSet<String>>,
}

impl MemoryFeedArchive {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantArchive>> {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FeedArchive for MemoryFeedArchive {
    fn append<'a>(&'a self, tenant: &'a str, events: &'a [ArchivedEvent]) -> BoxFuture<'a, Result<(), FeedError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let mut tenants = self.lock();
            let archive = tenants.entry(tenant.to_owned()).or_default();
            for archived in events {
                let id = archived.event.event_id();
                if archive.events.contains_key(&id) {
                    continue;
                }
                for (feed, _) in &archived.positions {
                    archive.feeds.entry(feed.clone()).or_default().insert(id.clone());
                }
                archive.events.insert(id, archived.clone());
            }
            Ok(())
        })
    }

    fn feeds<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<FeedName>, FeedError>> {
        Box::pin(async move {
            let tenants = self.lock();
            let mut feeds: Vec<FeedName> =
                tenants.get(tenant).map(|archive| archive.feeds.keys().cloned().collect()).unwrap_or_default();
            feeds.sort_by_cached_key(FeedName::to_string);
            Ok(feeds)
        })
    }

    fn events<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
    ) -> BoxFuture<'a, Result<Vec<ArchivedEvent>, FeedError>> {
        Box::pin(async move {
            let tenants = self.lock();
            let Some(archive) = tenants.get(tenant) else { return Ok(Vec::new()) };
            let Some(ids) = archive.feeds.get(feed) else { return Ok(Vec::new()) };
            Ok(in_feed_order(feed, ids.iter().filter_map(|id| archive.events.get(id).cloned())))
        })
    }
}

/// The archive in Redis. Keys (tenant first):
/// - `t:<tenant>:feed:archive:events`: hash, event id -> the event's record, JSON
///   `{"event": <the feed-log payload as text>, "positions": [[<feed>, "<offset>:<epoch>"], ..],
///   "time": <ms>}` (`time` is the event's, for readers of the raw record).
/// - `t:<tenant>:feed:archive:feed:<feed>`: set, the ids of the feed's events.
/// - `t:<tenant>:feed:archive:feeds`: set, the names of the feeds with events.
///
/// One script appends a whole batch (`lua/archive.lua`): a record is written only if its id
/// has none yet (HSETNX), and only then is the id added to its feeds. Like the other feed
/// keys, these carry no hash tag: standalone Redis (the only topology this build connects
/// to) runs the script atomically; on Redis Cluster they would need one tag per tenant,
/// after the tenant prefix as the session store does.
pub struct RedisFeedArchive {
    pool: RedisPool,
    append: Script,
}

impl std::fmt::Debug for RedisFeedArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeedArchive").finish_non_exhaustive()
    }
}

impl RedisFeedArchive {
    /// The archive on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self { pool, append: Script::new(include_str!("lua/archive.lua")) }
    }
}

/// Most records one HMGET asks for.
const HMGET_CHUNK: usize = 1000;

fn events_key(tenant: &str) -> String {
    format!("t:{tenant}:feed:archive:events")
}

fn feed_key(tenant: &str, feed: &FeedName) -> String {
    format!("t:{tenant}:feed:archive:feed:{feed}")
}

fn feeds_key(tenant: &str) -> String {
    format!("t:{tenant}:feed:archive:feeds")
}

impl FeedArchive for RedisFeedArchive {
    fn append<'a>(&'a self, tenant: &'a str, events: &'a [ArchivedEvent]) -> BoxFuture<'a, Result<(), FeedError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            // The batch's feeds, numbered from 1 in order of first appearance (see the script).
            let mut feeds: Vec<&FeedName> = Vec::new();
            let mut numbers: HashMap<&FeedName, usize> = HashMap::new();
            for (feed, _) in events.iter().flat_map(|archived| &archived.positions) {
                numbers.entry(feed).or_insert_with(|| {
                    feeds.push(feed);
                    feeds.len()
                });
            }
            let mut invocation = self.append.key(events_key(tenant));
            invocation.key(feeds_key(tenant));
            for feed in &feeds {
                invocation.key(feed_key(tenant, feed));
            }
            for feed in &feeds {
                invocation.arg(feed.to_string());
            }
            for archived in events {
                invocation.arg(archived.event.event_id()).arg(encode_record(archived)).arg(archived.positions.len());
                for (feed, _) in &archived.positions {
                    invocation.arg(numbers[feed]);
                }
            }
            let mut connection = connection(&self.pool).await?;
            let _added: u64 = invocation.invoke_async(&mut *connection).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn feeds<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<FeedName>, FeedError>> {
        Box::pin(async move {
            let mut connection = connection(&self.pool).await?;
            let mut names: Vec<String> = redis::cmd("SMEMBERS")
                .arg(feeds_key(tenant))
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            names.sort();
            names.iter().map(|name| decode_feed(name)).collect()
        })
    }

    fn events<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
    ) -> BoxFuture<'a, Result<Vec<ArchivedEvent>, FeedError>> {
        Box::pin(async move {
            let mut connection = connection(&self.pool).await?;
            let ids: Vec<String> = redis::cmd("SMEMBERS")
                .arg(feed_key(tenant, feed))
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            let mut archived = Vec::with_capacity(ids.len());
            // Records are never changed or removed, so reading them in several steps is safe.
            for chunk in ids.chunks(HMGET_CHUNK) {
                let records: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(events_key(tenant))
                    .arg(chunk)
                    .query_async(&mut *connection)
                    .await
                    .map_err(unavailable)?;
                for (id, record) in chunk.iter().zip(records) {
                    let record = record.ok_or_else(|| {
                        FeedError::Unavailable(format!("archived event {id} of feed {feed} has no record"))
                    })?;
                    archived.push(decode_record(&record)?);
                }
            }
            Ok(in_feed_order(feed, archived))
        })
    }
}

/// Keeps the events with a position in `feed` and puts them in feed order: by the earliest
/// time of their epoch's events, then epoch text, then offset (then event id, so the order
/// is total even for a malformed log).
pub(super) fn in_feed_order(feed: &FeedName, events: impl IntoIterator<Item = ArchivedEvent>) -> Vec<ArchivedEvent> {
    let mut placed: Vec<(Position, ArchivedEvent)> = events
        .into_iter()
        .filter_map(|archived| {
            let position = archived.positions.iter().find(|(name, _)| name == feed)?.1.clone();
            Some((position, archived))
        })
        .collect();
    let mut epoch_start: HashMap<Epoch, SystemTime> = HashMap::new();
    for (position, archived) in &placed {
        let time = archived.event.time();
        epoch_start.entry(position.epoch.clone()).and_modify(|start| *start = (*start).min(time)).or_insert(time);
    }
    placed.sort_by_cached_key(|(position, archived)| {
        (epoch_start[&position.epoch], position.epoch.0.clone(), position.offset, archived.event.event_id())
    });
    placed.into_iter().map(|(_, archived)| archived).collect()
}

/// An event's record in Redis (see [`RedisFeedArchive`]).
#[derive(Serialize, Deserialize)]
struct Record {
    /// The feed-log payload ([`FeedEvent::encode`]), as text.
    event: String,
    /// Feed name and `<offset>:<epoch>` (the form of the read models' watermarks), in order.
    positions: Vec<(String, String)>,
    /// The event's time; the event itself is what [`FeedArchive::events`] reads.
    #[serde(with = "crate::domain::activity::millis")]
    time: SystemTime,
}

fn encode_record(archived: &ArchivedEvent) -> String {
    let record = Record {
        event: String::from_utf8(archived.event.encode()).expect("a feed event encodes to JSON text"),
        positions: archived
            .positions
            .iter()
            .map(|(feed, position)| (feed.to_string(), format!("{}:{}", position.offset, position.epoch.as_str())))
            .collect(),
        time: archived.event.time(),
    };
    serde_json::to_string(&record).expect("an archive record serializes")
}

/// Reads a record; a malformed one is a backend fault.
fn decode_record(raw: &str) -> Result<ArchivedEvent, FeedError> {
    let record: Record = serde_json::from_str(raw)
        .map_err(|error| FeedError::Unavailable(format!("an archived event does not decode: {error}")))?;
    let positions = record
        .positions
        .iter()
        .map(|(feed, position)| Ok((decode_feed(feed)?, decode_position(position)?)))
        .collect::<Result<_, FeedError>>()?;
    Ok(ArchivedEvent { event: FeedEvent::decode(record.event.as_bytes())?, positions })
}

pub(super) fn decode_feed(raw: &str) -> Result<FeedName, FeedError> {
    FeedName::parse(raw, "feed").map_err(|_| FeedError::Unavailable(format!("a malformed archived feed name: {raw}")))
}

pub(super) fn decode_position(raw: &str) -> Result<Position, FeedError> {
    let bad = || FeedError::Unavailable(format!("a malformed archived position: {raw}"));
    let (offset, epoch) = raw.split_once(':').ok_or_else(bad)?;
    Ok(Position { offset: offset.parse().map_err(|_| bad())?, epoch: Epoch(Arc::from(epoch)) })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::domain::{Activity, ActivityId, NewActivity, Tombstone};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn published(seconds: u64, global: (u64, &str)) -> ArchivedEvent {
        let new = NewActivity::parse("post", Some(("post", "1")), "", []).unwrap();
        let activity = Activity::new(ActivityId::generate(), "acme", "alice", new, at(seconds));
        let position = |(offset, epoch): (u64, &str)| Position { offset, epoch: Epoch(epoch.into()) };
        ArchivedEvent {
            event: FeedEvent::Published(activity),
            positions: vec![(FeedName::Global, position(global)), (FeedName::actor("alice"), position(global))],
        }
    }

    #[test]
    fn events_of_one_epoch_are_ordered_by_offset() {
        let events: Vec<ArchivedEvent> = (1..=5).map(|offset| published(10 - offset, (offset, "e1"))).collect();
        let mut shuffled = events.clone();
        shuffled.swap(0, 4);
        shuffled.swap(1, 3);
        assert_eq!(in_feed_order(&FeedName::Global, shuffled), events, "by offset, whatever the times");
    }

    #[test]
    fn the_epoch_with_the_earliest_event_comes_first_whatever_its_text() {
        let old = [published(1, (1, "zz")), published(2, (2, "zz"))];
        let new = [published(10, (1, "aa")), published(11, (2, "aa"))];
        let expected: Vec<ArchivedEvent> = old.iter().chain(&new).cloned().collect();
        let input = [new[1].clone(), old[1].clone(), new[0].clone(), old[0].clone()];
        assert_eq!(in_feed_order(&FeedName::Global, input), expected);
        // Epochs starting at the same time go by their text.
        let tied = [published(1, (1, "bb")), published(1, (1, "aa"))];
        let ordered = in_feed_order(&FeedName::Global, tied.clone());
        assert_eq!(ordered, [tied[1].clone(), tied[0].clone()]);
    }

    #[test]
    fn events_without_a_position_in_the_feed_are_left_out() {
        let event = published(1, (1, "e1"));
        assert_eq!(in_feed_order(&FeedName::actor("alice"), [event.clone()]), std::slice::from_ref(&event));
        assert!(in_feed_order(&FeedName::actor("bob"), [event]).is_empty());
    }

    #[test]
    fn records_round_trip_and_a_malformed_one_is_a_backend_fault() {
        let event = published(1, (7, "e:1"));
        assert_eq!(decode_record(&encode_record(&event)).unwrap(), event);
        let tombstone = ArchivedEvent {
            event: FeedEvent::Deleted(Tombstone {
                id: event.event.activity_id().clone(),
                actor: "alice".into(),
                delete_time: at(5),
            }),
            positions: vec![(FeedName::Global, Position { offset: 8, epoch: Epoch("e1".into()) })],
        };
        assert_eq!(decode_record(&encode_record(&tombstone)).unwrap(), tombstone);
        let malformed = [
            "{}".to_owned(),
            r#"{"event":"{}","positions":[],"time":0}"#.to_owned(),
            encode_record(&event).replace("actors/alice", "actors/"),
            encode_record(&event).replace("7:e:1", "x:e"),
        ];
        for raw in malformed {
            assert!(matches!(decode_record(&raw), Err(FeedError::Unavailable(_))), "{raw}");
        }
    }
}
