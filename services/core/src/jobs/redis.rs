//! [`RedisJobQueue`]: the job queue on Redis Streams with consumer groups.
//!
//! Keys of a queue `q` (one hash tag per queue, so every script runs on Redis Cluster):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `jobs:{q}:stream` | stream | ready and in-flight jobs; one consumer group per group name |
//! | `jobs:{q}:delayed:<group>` | sorted set | failed jobs of a group, scored by the time (ms) they are due again |
//! | `jobs:{q}:dead` | stream | dead letters: job, group, attempts, last error |
//!
//! Every operation is one Lua script (in `lua/`), so each is atomic: a due retry is moved
//! back into the stream by exactly one claim, a failed entry is acked and rescheduled in
//! one step, and acked entries are trimmed once every group is done with them. Times come
//! from the Redis server's clock. `claim` does not use XREADGROUP's BLOCK (it would hold a
//! multiplexed connection shared through the pool): it polls every
//! [`poll_interval`](JobQueueSettings::poll_interval) until `block_for` has passed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::Script;
use redis::streams::{StreamId, StreamRangeReply};
use tokio::time::Instant;

use super::names::{check_group_name, check_member_names};
use super::{
    BoxFuture, DeadLetter, Delivery, FailOutcome, Job, JobError, JobId, JobQueue, JobQueueSettings, QueueName,
    QueueStats,
};
use crate::backend::RedisPool;

const COMMON: &str = include_str!("lua/common.lua");
const ENQUEUE_FN: &str = include_str!("lua/enqueue_fn.lua");
/// Most entries one ack script takes (Lua's `unpack` fails somewhere below 8,000).
const ACK_CHUNK: usize = 1000;

/// The Redis [`JobQueue`], sharing the process's command pool.
pub struct RedisJobQueue {
    pool: RedisPool,
    settings: JobQueueSettings,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisJobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisJobQueue").field("settings", &self.settings).finish_non_exhaustive()
    }
}

struct Scripts {
    enqueue: Script,
    claim: Script,
    ack: Script,
    fail: Script,
    stats: Script,
}

impl Scripts {
    fn load() -> Self {
        let script = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            enqueue: script(&format!("{ENQUEUE_FN}\n{}", include_str!("lua/enqueue.lua"))),
            claim: script(include_str!("lua/claim.lua")),
            ack: script(include_str!("lua/ack.lua")),
            fail: script(include_str!("lua/fail.lua")),
            stats: script(include_str!("lua/stats.lua")),
        }
    }
}

/// The keys of one queue, as the scripts take them: stream, the group's retry set, dead
/// letters.
struct QueueKeys {
    stream: String,
    delayed: String,
    dead: String,
}

impl QueueKeys {
    fn new(queue: &QueueName, group: &str) -> Self {
        Self { stream: stream_key(queue), delayed: format!("jobs:{{{queue}}}:delayed:{group}"), dead: dead_key(queue) }
    }
}

fn stream_key(queue: &QueueName) -> String {
    format!("jobs:{{{queue}}}:stream")
}

fn dead_key(queue: &QueueName) -> String {
    format!("jobs:{{{queue}}}:dead")
}

/// One delivery as the claim script returns it.
type ClaimedRow = (String, String, Vec<u8>, u32, u64, Option<String>, u32);

impl RedisJobQueue {
    /// The hash tag every key of `queue` carries (`{<queue>}`). A component that enqueues
    /// from its own script puts the same tag in its keys, so the script runs on one Redis
    /// Cluster slot.
    pub fn hash_tag(queue: &QueueName) -> String {
        format!("{{{queue}}}")
    }

    /// The key a script passes to `mesh_enqueue_job` (one of the script's KEYS).
    pub fn stream_key(queue: &QueueName) -> String {
        stream_key(queue)
    }

    /// Lua source to put in front of another component's script: it defines
    /// `mesh_enqueue_job(stream_key, job_id, payload)`, which appends a job exactly as
    /// [`JobQueue::enqueue`] does, atomically with the rest of that script (a change and its
    /// audit event, say). The job id must be a valid [`JobId`] and the payload at most
    /// `max_payload` bytes: the script cannot check them, the caller does.
    pub fn enqueue_lua() -> String {
        format!("{COMMON}\n{ENQUEUE_FN}")
    }

    /// A queue on `pool` with `settings`.
    pub fn new(pool: RedisPool, settings: JobQueueSettings) -> Self {
        Self { pool, settings, scripts: Scripts::load() }
    }

    async fn connection(&self) -> Result<bb8::PooledConnection<'_, crate::backend::RedisManager>, JobError> {
        self.pool.get().await.map_err(|error| JobError::Unavailable(format!("no redis connection: {error}")))
    }

    async fn claim_now(
        &self,
        queue: &QueueName,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, JobError> {
        let keys = QueueKeys::new(queue, group);
        let mut connection = self.connection().await?;
        let rows: Vec<ClaimedRow> = self
            .scripts
            .claim
            .key(&keys.stream)
            .key(&keys.delayed)
            .key(&keys.dead)
            .arg(group)
            .arg(consumer)
            .arg(max)
            .arg(millis(self.settings.visibility_timeout))
            .arg(self.settings.attempts())
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|(entry, id, payload, attempt, enqueued_at, last_error, number)| {
                let job = Job {
                    id: stored_id(id)?,
                    queue: queue.clone(),
                    payload: Bytes::from(payload),
                    attempt,
                    enqueued_at: from_millis(enqueued_at),
                    last_error,
                };
                Ok(Delivery { job, group: group.to_owned(), consumer: consumer.to_owned(), entry, number })
            })
            .collect()
    }
}

impl JobQueue for RedisJobQueue {
    fn enqueue<'a>(
        &'a self,
        queue: &'a QueueName,
        id: &'a JobId,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if payload.len() > self.settings.max_payload {
                return Err(JobError::PayloadTooLarge { size: payload.len(), limit: self.settings.max_payload });
            }
            let mut connection = self.connection().await?;
            let _: i64 = self
                .scripts
                .enqueue
                .key(stream_key(queue))
                .arg(id.as_str())
                .arg(payload.as_ref())
                .invoke_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn claim<'a>(
        &'a self,
        queue: &'a QueueName,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        block_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, JobError>> {
        Box::pin(async move {
            check_member_names(group, consumer)?;
            if max == 0 {
                return Ok(Vec::new());
            }
            let deadline = Instant::now() + block_for;
            loop {
                let claimed = self.claim_now(queue, group, consumer, max).await?;
                let now = Instant::now();
                if !claimed.is_empty() || now >= deadline {
                    return Ok(claimed);
                }
                tokio::time::sleep((deadline - now).min(self.settings.poll_interval)).await;
            }
        })
    }

    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), JobError>> {
        self.ack_all(std::slice::from_ref(delivery))
    }

    fn ack_all<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            // One script per (queue, group): its entries are acked together, trimmed once.
            let mut groups: Vec<(&QueueName, &str, Vec<&str>)> = Vec::new();
            for delivery in deliveries {
                let (queue, group) = (&delivery.job.queue, delivery.group.as_str());
                match groups.iter_mut().find(|(q, g, _)| *q == queue && *g == group) {
                    Some((_, _, entries)) => entries.push(&delivery.entry),
                    None => groups.push((queue, group, vec![&delivery.entry])),
                }
            }
            if groups.is_empty() {
                return Ok(());
            }
            let mut connection = self.connection().await?;
            for (queue, group, entries) in groups {
                let keys = QueueKeys::new(queue, group);
                // Lua unpacks the ids onto its C stack: keep each call well below its limit.
                for chunk in entries.chunks(ACK_CHUNK) {
                    let _: i64 = self
                        .scripts
                        .ack
                        .key(&keys.stream)
                        .arg(group)
                        .arg(chunk)
                        .invoke_async(&mut *connection)
                        .await
                        .map_err(unavailable)?;
                }
            }
            Ok(())
        })
    }

    fn fail<'a>(&'a self, delivery: &'a Delivery, error: String) -> BoxFuture<'a, Result<FailOutcome, JobError>> {
        Box::pin(async move {
            let keys = QueueKeys::new(&delivery.job.queue, &delivery.group);
            let delay = self.settings.backoff_delay(delivery.job.attempt);
            let mut connection = self.connection().await?;
            let (outcome, attempt): (String, u32) = self
                .scripts
                .fail
                .key(&keys.stream)
                .key(&keys.delayed)
                .key(&keys.dead)
                .arg(&delivery.group)
                .arg(&delivery.consumer)
                .arg(&delivery.entry)
                .arg(error)
                .arg(delivery.job.attempt)
                .arg(self.settings.attempts())
                .arg(millis(delay))
                .arg(delivery.number)
                .invoke_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            Ok(match outcome.as_str() {
                "retry" => FailOutcome::Retrying { next_attempt: attempt, delay },
                "dead" => FailOutcome::DeadLettered,
                _ => FailOutcome::Stale,
            })
        })
    }

    fn dead_letters<'a>(
        &'a self,
        queue: &'a QueueName,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, JobError>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut connection = self.connection().await?;
            let reply: StreamRangeReply = redis::cmd("XRANGE")
                .arg(dead_key(queue))
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            reply.ids.iter().map(|entry| dead_letter(queue, entry)).collect()
        })
    }

    fn create_group<'a>(&'a self, queue: &'a QueueName, group: &'a str) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            check_group_name(group)?;
            let mut connection = self.connection().await?;
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream_key(queue))
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut *connection)
                .await;
            match created {
                Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
                other => other.map_err(unavailable),
            }
        })
    }

    fn stats<'a>(&'a self, queue: &'a QueueName, group: &'a str) -> BoxFuture<'a, Result<QueueStats, JobError>> {
        Box::pin(async move {
            check_group_name(group)?;
            let keys = QueueKeys::new(queue, group);
            let mut connection = self.connection().await?;
            let (ready, in_flight, retrying, age, dead): (u64, u64, u64, i64, u64) = self
                .scripts
                .stats
                .key(&keys.stream)
                .key(&keys.delayed)
                .key(&keys.dead)
                .arg(group)
                .invoke_async(&mut *connection)
                .await
                .map_err(unavailable)?;
            let oldest_age = u64::try_from(age).ok().map(Duration::from_millis);
            Ok(QueueStats { ready, in_flight, retrying, oldest_age, dead })
        })
    }
}

fn dead_letter(queue: &QueueName, entry: &StreamId) -> Result<DeadLetter, JobError> {
    let field = |name: &str| -> Result<String, JobError> {
        entry.get::<String>(name).ok_or_else(|| corrupt(format!("dead letter {} lacks {name}", entry.id)))
    };
    let number = |name: &str| -> Result<u64, JobError> {
        field(name)?.parse().map_err(|_| corrupt(format!("dead letter {} has a bad {name}", entry.id)))
    };
    let payload: Vec<u8> = entry.get("payload").unwrap_or_default();
    let job = Job {
        id: stored_id(field("id")?)?,
        queue: queue.clone(),
        payload: Bytes::from(payload),
        attempt: u32::try_from(number("attempts")?).unwrap_or(u32::MAX),
        enqueued_at: from_millis(number("enqueued_at")?),
        last_error: None,
    };
    Ok(DeadLetter { job, group: field("group")?, error: field("error")?, dead_at: from_millis(number("dead_at")?) })
}

fn stored_id(raw: String) -> Result<JobId, JobError> {
    JobId::parse(&raw).map_err(|_| corrupt(format!("stored job id {raw:?} is invalid")))
}

fn corrupt(detail: String) -> JobError {
    JobError::Unavailable(format!("unexpected job queue data in redis: {detail}"))
}

fn unavailable(error: redis::RedisError) -> JobError {
    JobError::Unavailable(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn from_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}
