//! The job queue: work that must happen, later and elsewhere, even if this process dies
//! (audit writes, feed archive, projections). Two implementations of one boundary,
//! [`JobQueue`]: [`MemoryJobQueue`] (the embedded default and the test double) and
//! [`RedisJobQueue`] (Redis Streams with consumer groups). Services do not call `claim`
//! themselves: they run a [`Worker`] with a handler.
//!
//! # Delivery is at least once: handlers must be idempotent on the job id
//!
//! A job can reach a handler more than once: when its consumer crashes or stalls past the
//! visibility timeout, when an `ack` is lost, when it is enqueued twice with the same id.
//! The queue never deduplicates. **Every handler must be idempotent on [`Job::id`]**, the
//! event id the producer chose: doing the work twice for one id must have the effect of
//! doing it once (an upsert keyed by the id, an insert that ignores a duplicate key, a
//! compare-and-set). A handler that cannot be made idempotent does not belong on this queue.
//!
//! # Life of a job
//!
//! 1. `enqueue(queue, id, payload)` appends it; it is now *ready* for every consumer group
//!    of the queue (each group receives every job; consumers of one group share them).
//! 2. `claim` hands it to one consumer of a group as a [`Delivery`] (attempt 1). It is now
//!    *in flight*, invisible to the group's other consumers for the visibility timeout.
//! 3. `ack` finishes it. `fail` schedules attempt n+1 after an exponential backoff with
//!    jitter ([`JobQueueSettings::backoff_delay`]), for the failing group only; it is not
//!    delivered before that delay.
//!    After `max_attempts` (default 5) it moves to the queue's dead-letter stream with its
//!    last error instead ([`JobQueue::dead_letters`]).
//! 4. A delivery neither acked nor failed within the visibility timeout (its consumer
//!    crashed) is reclaimed by the next `claim` of any consumer of the group, as the next
//!    attempt. An attempt beyond `max_attempts` lost this way is dead-lettered too, so a job
//!    that kills its consumer cannot circulate forever.
//!
//! A group is created by its first `claim` (or by [`JobQueue::create_group`]) and starts
//! with the jobs the queue still holds; a job leaves the queue once every existing group has
//! acknowledged it. So a queue with several groups has them all created before any of them
//! acks: a group created later misses what the others acked.

mod memory;
mod names;
mod redis;
mod settings;
mod worker;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use memory::MemoryJobQueue;
pub use names::{JobId, MAX_JOB_ID_LEN, MAX_NAME_LEN, MAX_QUEUE_NAME_LEN, QueueName};
pub use redis::RedisJobQueue;
pub use settings::JobQueueSettings;
pub use worker::Worker;

/// A boxed future, as the [`JobQueue`] methods return them (it is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One job as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The producer's event id; handlers are idempotent on it (see the module docs).
    pub id: JobId,
    /// The queue it was enqueued on.
    pub queue: QueueName,
    /// The producer's bytes, opaque to the queue.
    pub payload: Bytes,
    /// 1 on the first delivery, then +1 per retry or reclaim.
    pub attempt: u32,
    /// When it was first enqueued (the backend's clock).
    pub enqueued_at: SystemTime,
    /// The error of the previous attempt, if it failed.
    pub last_error: Option<String>,
}

/// A job handed to one consumer: the job, and what `ack` and `fail` need to find it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The job.
    pub job: Job,
    group: String,
    consumer: String,
    /// The backend's id of the entry it came from.
    entry: String,
    /// How many times that entry had been delivered with this delivery (1 + reclaims), so
    /// a delivery that was reclaimed meanwhile, even by the same consumer, is told apart.
    number: u32,
}

impl Delivery {
    /// The consumer group it was claimed for.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The consumer that claimed it.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }
}

/// What `fail` did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Attempt `next_attempt` is scheduled after `delay`.
    Retrying {
        /// The attempt number of the next delivery.
        next_attempt: u32,
        /// The backoff before it can be claimed.
        delay: Duration,
    },
    /// That was the last attempt: the job is in the dead-letter stream.
    DeadLettered,
    /// The delivery was no longer this consumer's (its visibility timeout expired and it was
    /// reclaimed, or it was already acked): nothing was changed.
    Stale,
}

/// A job that used up its attempts, as kept in the queue's dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job; `attempt` is the number of attempts made.
    pub job: Job,
    /// The group whose handler gave up on it.
    pub group: String,
    /// The error of the last attempt.
    pub error: String,
    /// When it was dead-lettered (the backend's clock).
    pub dead_at: SystemTime,
}

/// The state of one queue as seen by one consumer group, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Jobs not yet delivered to the group. (Redis also counts retries of other groups that
    /// are due but not yet skipped by this group; they are few and short-lived.)
    pub ready: u64,
    /// Jobs delivered and neither acked nor failed yet.
    pub in_flight: u64,
    /// Failed jobs waiting for their backoff to elapse.
    pub retrying: u64,
    /// Age of the oldest job not done yet (ready, in flight or retrying), measured from
    /// its first enqueue; `None` when there is none.
    pub oldest_age: Option<Duration>,
    /// Jobs in the queue's dead-letter stream (all groups).
    pub dead: u64,
}

impl QueueStats {
    /// Jobs not done yet: ready + in flight + retrying.
    pub fn depth(&self) -> u64 {
        self.ready + self.in_flight + self.retrying
    }
}

/// Failures of a job queue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A name or id does not fit its rules (see [`QueueName`], [`JobId`]).
    #[error("invalid {field}: {reason}")]
    InvalidName {
        /// What was named: `queue`, `job id`, `group` or `consumer`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The payload is larger than [`JobQueueSettings::max_payload`].
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The backend is unreachable or failed; retryable.
    #[error("job queue backend unavailable: {0}")]
    Unavailable(String),
}

impl From<JobError> for crate::Error {
    fn from(error: JobError) -> Self {
        match error {
            JobError::InvalidName { field, reason } => {
                crate::Error::invalid_argument(vec![crate::FieldViolation::new(field.replace(' ', "_"), reason)])
            }
            JobError::PayloadTooLarge { size, limit } => {
                crate::Error::invalid_argument(vec![crate::FieldViolation::new(
                    "payload",
                    format!("{size} bytes exceed the limit of {limit} bytes"),
                )])
            }
            JobError::Unavailable(detail) => {
                crate::Error::unavailable("BACKEND_UNAVAILABLE", "the job queue is unavailable")
                    .with_source(anyhow::anyhow!(detail))
            }
        }
    }
}

/// A durable queue of jobs with consumer groups, retries and dead letters; see the module
/// docs for the life of a job. Delivery is at least once: handlers are idempotent on the
/// job id.
pub trait JobQueue: Send + Sync + 'static {
    /// Appends a job to `queue`. The id is the producer's event id; enqueueing one id twice
    /// makes two jobs (handlers are idempotent on the id, the queue does not deduplicate).
    fn enqueue<'a>(
        &'a self,
        queue: &'a QueueName,
        id: &'a JobId,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), JobError>>;

    /// Hands up to `max` jobs of `queue` to `consumer` of `group` (creating the group on
    /// first use): first deliveries of the group whose visibility timeout expired (their
    /// consumer is presumed dead), then retries whose backoff elapsed and new jobs, in
    /// order. Waits up to `block_for` for at least one, then returns what there is
    /// (possibly nothing).
    fn claim<'a>(
        &'a self,
        queue: &'a QueueName,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        block_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, JobError>>;

    /// Creates `group` on `queue` if it does not exist yet, starting with the jobs the queue
    /// still holds, as a first `claim` would (without claiming anything).
    fn create_group<'a>(&'a self, queue: &'a QueueName, group: &'a str) -> BoxFuture<'a, Result<(), JobError>>;

    /// Marks the delivery done. Acking a delivery that was reclaimed meanwhile still
    /// finishes the job (the other consumer's run is the duplicate).
    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), JobError>>;

    /// Marks every delivery of `deliveries` done, as [`ack`](Self::ack) does, in one round
    /// trip per (queue, group) among them: what a worker that handles a batch at once calls.
    fn ack_all<'a>(&'a self, deliveries: &'a [Delivery]) -> BoxFuture<'a, Result<(), JobError>>;

    /// Records that the delivery failed with `error`: the job is retried after a backoff,
    /// or dead-lettered after its last attempt.
    fn fail<'a>(&'a self, delivery: &'a Delivery, error: String) -> BoxFuture<'a, Result<FailOutcome, JobError>>;

    /// Up to `limit` entries of the queue's dead-letter stream, oldest first.
    fn dead_letters<'a>(
        &'a self,
        queue: &'a QueueName,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, JobError>>;

    /// Depth, oldest age and dead letters of `queue` for `group`.
    fn stats<'a>(&'a self, queue: &'a QueueName, group: &'a str) -> BoxFuture<'a, Result<QueueStats, JobError>>;
}
