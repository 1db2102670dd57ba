//! The Redis store: one script per write stores or removes the record and appends the event
//! to both channels with the broker's own publish function, so the record and the feed log
//! never disagree.
//!
//! Each write also enqueues its feed job ([`crate::projection`]) on the feed queue's stream,
//! in the same script.
//!
//! Keys (tenant first):
//! - `t:<tenant>:feed:activity:<id>`: the record, JSON.
//! - `t:<tenant>:feed:request:<actor>:<request id>`: the first result of a publication with
//!   that request id, for 24 h.
//!
//! A script writes its own keys and the two channels' keys, which carry the channels' hash
//! tags: standalone Redis runs it atomically (see `RedisBroker::publish_lua` for Cluster).

use std::time::SystemTime;

use mesh_core::backend::RedisPool;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{Epoch, HistorySettings, Position};
use mesh_core::jobs::RedisJobQueue;
use mesh_core::request_id::{REQUEST_ID_TTL, RequestId};
use redis::Script;

use super::{ActivityStore, BoxFuture, Deleter, NOT_YOURS, Published, connection, feeds_of, positions, unavailable};
use crate::domain::{Activity, ActivityId, FeedError, FeedEvent, FeedName, Tombstone};
use crate::projection::{FeedJob, feed_queue};

/// Activity records in Redis, publishing on the broker's channels there.
pub struct RedisActivityStore {
    pool: RedisPool,
    history: HistorySettings,
    publish: Script,
    delete: Script,
}

impl std::fmt::Debug for RedisActivityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisActivityStore").finish_non_exhaustive()
    }
}

impl RedisActivityStore {
    /// A store on `pool`, keeping the channels' history as `history` says (the broker's
    /// settings).
    pub fn new(pool: RedisPool, history: HistorySettings) -> Self {
        let prelude = format!("{}\n{}", RedisJobQueue::enqueue_lua(), RedisBroker::publish_lua());
        let with_publish = |body: &str| Script::new(&format!("{prelude}\n{body}"));
        Self {
            pool,
            history,
            publish: with_publish(include_str!("lua/publish.lua")),
            delete: with_publish(include_str!("lua/delete.lua")),
        }
    }

    /// Adds the keys and arguments of the two channels of `actor` in `tenant`: KEYS meta and
    /// log of each and then the feed job stream; returns pub/sub channel and candidate
    /// epoch of each.
    fn channels(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        tenant: &str,
        actor: &str,
    ) -> Result<[String; 4], FeedError> {
        let mut argv = [String::new(), String::new(), String::new(), String::new()];
        for (index, feed) in feeds_of(actor).iter().enumerate() {
            let channel = feed.channel(tenant).map_err(|violation| FeedError::Invalid(vec![violation]))?;
            let (meta, log, pubsub) = RedisBroker::publish_keys(&channel);
            invocation.key(meta).key(log);
            argv[index * 2] = pubsub;
            argv[index * 2 + 1] = Epoch::random().as_str().to_owned();
        }
        invocation.key(RedisJobQueue::stream_key(&feed_queue()));
        Ok(argv)
    }

    async fn invoke<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, FeedError> {
        let mut connection = connection(&self.pool).await?;
        invocation.invoke_async(&mut *connection).await.map_err(unavailable)
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), FeedError> {
        if payload.len() > self.history.max_payload {
            return Err(too_large(payload.len(), self.history.max_payload));
        }
        Ok(())
    }
}

/// An event too large for the feed log (text and metadata within their limits can still
/// exceed `stream.max_payload_bytes` once encoded, e.g. with many escaped characters).
pub(super) fn too_large(size: usize, limit: usize) -> FeedError {
    FeedError::Invalid(vec![mesh_core::FieldViolation::new(
        "text",
        format!("the activity encodes to {size} bytes, over the server's limit of {limit}: shorten text or metadata"),
    )])
}

/// The job id of `event`, as the script's argument.
fn job_id(event: &FeedEvent) -> Result<String, FeedError> {
    FeedJob::id(event).map(|id| id.as_str().to_owned())
}

fn record_key(tenant: &str, id: &ActivityId) -> String {
    format!("t:{tenant}:feed:activity:{id}")
}

fn request_key(tenant: &str, actor: &str, request_id: &RequestId) -> String {
    format!("t:{tenant}:feed:request:{actor}:{request_id}")
}

fn decode_record(raw: &str) -> Result<Activity, FeedError> {
    serde_json::from_str(raw)
        .map_err(|error| FeedError::Unavailable(format!("a stored activity does not decode: {error}")))
}

impl ActivityStore for RedisActivityStore {
    fn publish<'a>(
        &'a self,
        activity: Activity,
        request_id: Option<&'a RequestId>,
    ) -> BoxFuture<'a, Result<Published, FeedError>> {
        Box::pin(async move {
            let record = serde_json::to_string(&activity).expect("an activity serializes");
            let event = FeedEvent::Published(activity.clone());
            let payload = event.encode();
            self.check_size(&payload)?;
            let record_key = record_key(&activity.tenant, &activity.id);
            let mut invocation = self.publish.key(&record_key);
            invocation.key(match request_id {
                Some(id) => request_key(&activity.tenant, &activity.actor, id),
                None => record_key.clone(),
            });
            let [g_pubsub, g_epoch, a_pubsub, a_epoch] =
                self.channels(&mut invocation, &activity.tenant, &activity.actor)?;
            invocation
                .arg(&record)
                .arg(payload)
                .arg(g_pubsub)
                .arg(g_epoch)
                .arg(a_pubsub)
                .arg(a_epoch)
                .arg(self.history.size)
                .arg(RedisBroker::ttl_seconds(self.history.ttl))
                .arg(request_id.map(|_| REQUEST_ID_TTL.as_secs().to_string()).unwrap_or_default())
                .arg(job_id(&event)?)
                .arg(&activity.tenant);
            let (_, result): (String, String) = self.invoke(&invocation).await?;
            let (raw_positions, stored) = result
                .split_once('\n')
                .ok_or_else(|| FeedError::Unavailable("a malformed publication result".to_owned()))?;
            let activity = decode_record(stored)?;
            let positions = positions(raw_positions, &activity.actor)?;
            Ok(Published { activity, positions })
        })
    }

    fn get<'a>(&'a self, tenant: &'a str, id: &'a ActivityId) -> BoxFuture<'a, Result<Activity, FeedError>> {
        Box::pin(async move {
            let found = self.get_many(tenant, std::slice::from_ref(id)).await?;
            found.into_iter().next().ok_or(FeedError::NotFound)
        })
    }

    fn get_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [ActivityId],
    ) -> BoxFuture<'a, Result<Vec<Activity>, FeedError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut connection = connection(&self.pool).await?;
            let keys: Vec<String> = ids.iter().map(|id| record_key(tenant, id)).collect();
            let raw: Vec<Option<String>> =
                redis::cmd("MGET").arg(keys).query_async(&mut *connection).await.map_err(unavailable)?;
            let mut found = Vec::with_capacity(raw.len());
            for raw in raw.into_iter().flatten() {
                let activity = decode_record(&raw)?;
                // The key names the tenant; the record must agree.
                if activity.tenant == tenant {
                    found.push(activity);
                }
            }
            Ok(found)
        })
    }

    fn delete<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a ActivityId,
        deleter: Deleter<'a>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<(FeedName, Position)>, FeedError>> {
        Box::pin(async move {
            let actor = self.get(tenant, id).await?.actor;
            if actor != deleter.user && !deleter.admin {
                return Err(FeedError::PermissionDenied(NOT_YOURS));
            }
            let tombstone = Tombstone {
                id: id.clone(),
                actor: actor.clone(),
                delete_time: crate::domain::activity::to_millis(now),
            };
            let event = FeedEvent::Deleted(tombstone);
            let payload = event.encode();
            let mut invocation = self.delete.key(record_key(tenant, id));
            let [g_pubsub, g_epoch, a_pubsub, a_epoch] = self.channels(&mut invocation, tenant, &actor)?;
            invocation
                .arg(&actor)
                .arg(deleter.user)
                .arg(if deleter.admin { "1" } else { "0" })
                .arg(payload)
                .arg(g_pubsub)
                .arg(g_epoch)
                .arg(a_pubsub)
                .arg(a_epoch)
                .arg(self.history.size)
                .arg(RedisBroker::ttl_seconds(self.history.ttl))
                .arg(job_id(&event)?)
                .arg(tenant);
            let reply: Vec<String> = self.invoke(&invocation).await?;
            match reply.first().map(String::as_str) {
                Some("ok") => positions(reply.get(1).map_or("", String::as_str), &actor),
                Some("denied") => Err(FeedError::PermissionDenied(NOT_YOURS)),
                _ => Err(FeedError::NotFound),
            }
        })
    }
}
