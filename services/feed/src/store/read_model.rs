//! [`ReadModel`]: the query side of the feeds. Each feed of a tenant keeps the ids of its
//! newest activities (its [`capacity`](FeedName::capacity)), each under a sequence number the
//! model assigns in the order the events are applied (it never goes back, across channel
//! epochs and rebuilds alike, so page cursors stay valid), and its *watermark*: the channel
//! position of the last event applied. Projectors
//! apply events strictly in offset order with a compare-and-set on the watermark, so any
//! number of instances may project at once and each event is applied exactly once.
//!
//! [`MemoryReadModel`] and [`RedisReadModel`] pass one conformance suite
//! (`tests/read_models.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use mesh_core::backend::RedisPool;
use mesh_core::broker::{Epoch, Position};
use redis::Script;

use super::{BoxFuture, connection, unavailable};
use crate::domain::{ActivityId, FeedError, FeedName};

/// One change an event makes to a feed's read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An activity was published.
    Add {
        /// The activity.
        id: ActivityId,
    },
    /// An activity was deleted.
    Remove {
        /// The activity.
        id: ActivityId,
    },
}

/// A slice of a feed, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Activity ids with their sequence numbers, newest first.
    pub entries: Vec<(u64, ActivityId)>,
    /// The feed's watermark when the page was read (`None` before any event was applied).
    pub watermark: Option<Position>,
}

/// Where the feeds' read models live.
pub trait ReadModel: Send + Sync + 'static {
    /// The feed's watermark, `None` before its first event.
    fn watermark<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
    ) -> BoxFuture<'a, Result<Option<Position>, FeedError>>;

    /// Applies `changes` (in order) and moves the watermark to `to`, if the watermark is
    /// still `expected`; with `reset` the feed is emptied first. `false` when another
    /// projector moved the watermark meanwhile (nothing was changed). Each add trims the
    /// feed to its capacity, oldest first, so the entries never depend on the batching.
    fn apply<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
        expected: Option<&'a Position>,
        reset: bool,
        changes: &'a [Change],
        to: &'a Position,
    ) -> BoxFuture<'a, Result<bool, FeedError>>;

    /// Up to `limit` entries of the feed older than sequence number `before` (all when
    /// `None`), newest first, with the watermark (read together with the entries).
    fn page<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, FeedError>>;
}

/// Read models in memory.
#[derive(Debug, Default)]
pub struct MemoryReadModel {
    feeds: Mutex<HashMap<(String, String), MemoryFeed>>,
}

#[derive(Debug, Default)]
struct MemoryFeed {
    entries: BTreeMap<u64, ActivityId>,
    /// The last sequence number assigned.
    sequence: u64,
    watermark: Option<Position>,
}

impl MemoryReadModel {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), MemoryFeed>> {
        self.feeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(tenant: &str, feed: &FeedName) -> (String, String) {
    (tenant.to_owned(), feed.to_string())
}

impl ReadModel for MemoryReadModel {
    fn watermark<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
    ) -> BoxFuture<'a, Result<Option<Position>, FeedError>> {
        Box::pin(async move { Ok(self.lock().get(&key(tenant, feed)).and_then(|feed| feed.watermark.clone())) })
    }

    fn apply<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
        expected: Option<&'a Position>,
        reset: bool,
        changes: &'a [Change],
        to: &'a Position,
    ) -> BoxFuture<'a, Result<bool, FeedError>> {
        Box::pin(async move {
            let mut feeds = self.lock();
            let model = feeds.entry(key(tenant, feed)).or_default();
            if model.watermark.as_ref() != expected {
                return Ok(false);
            }
            if reset {
                model.entries.clear();
            }
            for change in changes {
                match change {
                    Change::Add { id } => {
                        model.sequence += 1;
                        model.entries.insert(model.sequence, id.clone());
                        // Trimmed on each write, so the entries never depend on how the
                        // events were batched.
                        if model.entries.len() > feed.capacity() {
                            model.entries.pop_first();
                        }
                    }
                    Change::Remove { id } => model.entries.retain(|_, entry| entry != id),
                }
            }
            model.watermark = Some(to.clone());
            Ok(true)
        })
    }

    fn page<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, FeedError>> {
        Box::pin(async move {
            let feeds = self.lock();
            let Some(model) = feeds.get(&key(tenant, feed)) else {
                return Ok(Page { entries: Vec::new(), watermark: None });
            };
            let entries = model
                .entries
                .range(..before.unwrap_or(u64::MAX))
                .rev()
                .take(limit)
                .map(|(offset, id)| (*offset, id.clone()))
                .collect();
            Ok(Page { entries, watermark: model.watermark.clone() })
        })
    }
}

/// Read models in Redis: per feed a sorted set of activity ids scored by sequence number
/// (`t:<tenant>:feed:model:<feed>`), the last sequence number (`...:sequence`) and the
/// watermark (`...:watermark`, `<offset>:<epoch>`).
pub struct RedisReadModel {
    pool: RedisPool,
    apply: Script,
}

impl std::fmt::Debug for RedisReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReadModel").finish_non_exhaustive()
    }
}

impl RedisReadModel {
    /// Read models on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self { pool, apply: Script::new(include_str!("lua/apply.lua")) }
    }
}

fn model_key(tenant: &str, feed: &FeedName) -> String {
    format!("t:{tenant}:feed:model:{feed}")
}

fn sequence_key(tenant: &str, feed: &FeedName) -> String {
    format!("t:{tenant}:feed:model:{feed}:sequence")
}

fn watermark_key(tenant: &str, feed: &FeedName) -> String {
    format!("t:{tenant}:feed:model:{feed}:watermark")
}

fn encode_position(position: &Position) -> String {
    format!("{}:{}", position.offset, position.epoch.as_str())
}

fn decode_position(raw: &str) -> Result<Position, FeedError> {
    let bad = || FeedError::Unavailable(format!("a malformed watermark: {raw}"));
    let (offset, epoch) = raw.split_once(':').ok_or_else(bad)?;
    Ok(Position { offset: offset.parse().map_err(|_| bad())?, epoch: Epoch(Arc::from(epoch)) })
}

impl ReadModel for RedisReadModel {
    fn watermark<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
    ) -> BoxFuture<'a, Result<Option<Position>, FeedError>> {
        Box::pin(async move {
            let mut connection = connection(&self.pool).await?;
            let raw: Option<String> = redis::cmd("GET")
                .arg(watermark_key(tenant, feed))
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            raw.as_deref().map(decode_position).transpose()
        })
    }

    fn apply<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
        expected: Option<&'a Position>,
        reset: bool,
        changes: &'a [Change],
        to: &'a Position,
    ) -> BoxFuture<'a, Result<bool, FeedError>> {
        Box::pin(async move {
            let mut invocation = self.apply.key(model_key(tenant, feed));
            invocation
                .key(watermark_key(tenant, feed))
                .key(sequence_key(tenant, feed))
                .arg(expected.map(encode_position).unwrap_or_default())
                .arg(encode_position(to))
                .arg(feed.capacity())
                .arg(if reset { "1" } else { "0" });
            for change in changes {
                match change {
                    Change::Add { id } => invocation.arg("+").arg(id.as_str()),
                    Change::Remove { id } => invocation.arg("-").arg(id.as_str()),
                };
            }
            let mut connection = connection(&self.pool).await?;
            let reply: String = invocation.invoke_async(&mut *connection).await.map_err(unavailable)?;
            Ok(reply == "ok")
        })
    }

    fn page<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, FeedError>> {
        Box::pin(async move {
            let max = before.map_or_else(|| "+inf".to_owned(), |offset| format!("({offset}"));
            let mut connection = connection(&self.pool).await?;
            // One transaction: the watermark describes exactly the entries read.
            let (entries, watermark): (Vec<(String, u64)>, Option<String>) = redis::pipe()
                .atomic()
                .cmd("ZRANGE")
                .arg(model_key(tenant, feed))
                .arg(max)
                .arg("-inf")
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .arg("WITHSCORES")
                .cmd("GET")
                .arg(watermark_key(tenant, feed))
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            let entries = entries
                .into_iter()
                .map(|(id, offset)| {
                    Ok((offset, ActivityId::parse(&id, "id").map_err(|v| FeedError::Unavailable(v.description))?))
                })
                .collect::<Result<_, FeedError>>()?;
            Ok(Page { entries, watermark: watermark.as_deref().map(decode_position).transpose()? })
        })
    }
}
