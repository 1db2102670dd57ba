//! The feed's job-queue consumers. Every write of the [`ActivityStore`](crate::store::ActivityStore)
//! appends its event to the feed log and, in the same step, enqueues a [`FeedJob`] on
//! [`FEED_QUEUE`] (job id = [`FeedEvent::event_id`]). Two consumer groups take every job,
//! on any instance, at least once:
//!
//! - [`READ_MODELS_GROUP`] catches the event's feeds up ([`Projector::catch_up`]): reading
//!   the channel after the read model's watermark makes it idempotent and order-proof, so a
//!   job delivered twice, late or out of order changes nothing more;
//! - [`ARCHIVE_GROUP`] appends the event to the durable [`FeedArchive`], idempotent on the
//!   event id, so read models can be rebuilt from it ([`Projector::rebuild`]).
//!
//! A job that cannot be handled fails and is retried with backoff by the queue, then
//! dead-lettered. When the archive shares the backbone's Redis with the queue, an outage
//! stops the claims as well and spends no attempts; when it is in Firestore, an outage
//! longer than the retries (5 attempts, backoff up to 30 s) dead-letters archive jobs, which
//! stay in the queue's dead-letter stream to be replayed.
//!
//! The payload is text: `<tenant>\n<global offset>:<global epoch>:<actor offset>:<actor
//! epoch>\n<event payload>`; the Redis store's scripts write the same format.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_core::broker::Position;
use mesh_core::jobs::{Job, JobError, JobId, JobQueue, QueueName, Worker};
use tokio_util::sync::CancellationToken;

use crate::domain::{FeedError, FeedEvent, FeedName};
use crate::projector::Projector;
use crate::store::{ArchivedEvent, FeedArchive};

/// The job queue of feed events.
pub const FEED_QUEUE: &str = "feed.events";
/// The consumer group that keeps the read models current.
pub const READ_MODELS_GROUP: &str = "feed-read-models";
/// The consumer group that archives every event.
pub const ARCHIVE_GROUP: &str = "feed-archive";

/// Jobs claimed at once.
const BATCH: usize = 100;
/// The archive's wait after a batch that was not full (fewer, fuller writes; the read
/// models do not wait: ListFeed would catch up anyway, but subscribers of a rebuilt feed
/// read sooner).
const ARCHIVE_LINGER: Duration = Duration::from_millis(10);

/// [`FEED_QUEUE`] as a queue name.
pub fn feed_queue() -> QueueName {
    QueueName::parse(FEED_QUEUE).expect("the feed queue name is valid")
}

/// One feed event as its job carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedJob {
    /// The tenant it happened in.
    pub tenant: String,
    /// The event, with its position in each feed (global first, then the actor's).
    pub archived: ArchivedEvent,
}

impl FeedJob {
    /// The job id of `event` (event ids always make valid job ids; a failure is a fault).
    pub fn id(event: &FeedEvent) -> Result<JobId, FeedError> {
        JobId::parse(&event.event_id())
            .map_err(|error| FeedError::Unavailable(format!("no job id for a feed event: {error}")))
    }

    /// The payload of the job of an event appended at `positions` (global, then the
    /// actor's feed) with feed-log payload `event`.
    pub fn payload(tenant: &str, positions: &[(FeedName, Position)], event: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(tenant.len() + event.len() + 64);
        out.extend_from_slice(tenant.as_bytes());
        for (index, (_, position)) in positions.iter().enumerate() {
            out.push(if index == 0 { b'\n' } else { b':' });
            out.extend_from_slice(format!("{}:{}", position.offset, position.epoch.as_str()).as_bytes());
        }
        out.push(b'\n');
        out.extend_from_slice(event);
        Bytes::from(out)
    }

    /// Reads a job's payload; a malformed one is a fault of its producer.
    pub fn decode(payload: &[u8]) -> Result<Self, FeedError> {
        let malformed = |what: &str| FeedError::Unavailable(format!("a feed job is malformed: {what}"));
        let mut parts = payload.splitn(3, |byte| *byte == b'\n');
        let (Some(tenant), Some(positions), Some(event)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("missing lines"));
        };
        let tenant = std::str::from_utf8(tenant).map_err(|_| malformed("tenant"))?.to_owned();
        let positions = std::str::from_utf8(positions).map_err(|_| malformed("positions"))?;
        let event = FeedEvent::decode(event)?;
        let positions = crate::store::positions(positions, event.actor())?;
        Ok(Self { tenant, archived: ArchivedEvent { event, positions } })
    }
}

/// The consumers of [`FEED_QUEUE`] in one process: one of each group.
pub struct FeedWorkers {
    jobs: Arc<dyn JobQueue>,
    projector: Arc<Projector>,
    archive: Arc<dyn FeedArchive>,
    consumer: String,
}

impl std::fmt::Debug for FeedWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedWorkers").field("consumer", &self.consumer).finish_non_exhaustive()
    }
}

impl FeedWorkers {
    /// Consumers of `jobs`' feed queue named `consumer` (unique per process) in both groups,
    /// projecting with `projector` and archiving into `archive`.
    pub fn new(
        jobs: Arc<dyn JobQueue>,
        projector: Arc<Projector>,
        archive: Arc<dyn FeedArchive>,
        consumer: impl Into<String>,
    ) -> Self {
        Self { jobs, projector, archive, consumer: consumer.into() }
    }

    /// Handles jobs until `shutdown` is cancelled. Both groups are created first (retrying
    /// while the queue is unreachable), so neither can ack a job the other has not seen.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        while let Err(error) = create_groups(&*self.jobs).await {
            tracing::warn!(%error, "cannot create the feed job groups yet; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        let worker =
            |group: &str| Worker::new(self.jobs.clone(), feed_queue(), group, &self.consumer).with_batch(BATCH);
        let read_models =
            worker(READ_MODELS_GROUP).run_batches(|jobs| project(&self.projector, jobs), shutdown.clone());
        let archive = worker(ARCHIVE_GROUP)
            .with_linger(ARCHIVE_LINGER)
            .run_batches(|jobs| archive(&*self.archive, jobs), shutdown.clone());
        tokio::join!(read_models, archive);
    }
}

/// Creates both consumer groups of the feed queue (see [`JobQueue::create_group`]).
pub async fn create_groups(jobs: &dyn JobQueue) -> Result<(), JobError> {
    for group in [READ_MODELS_GROUP, ARCHIVE_GROUP] {
        jobs.create_group(&feed_queue(), group).await?;
    }
    Ok(())
}

/// Decodes a batch of jobs: each job's event, or why it cannot be handled.
fn decode(jobs: &[Job]) -> Vec<Result<FeedJob, String>> {
    jobs.iter().map(|job| FeedJob::decode(&job.payload).map_err(|error| error.to_string())).collect()
}

/// Catches up every feed the batch's events were appended to, once per feed.
pub async fn project(projector: &Projector, jobs: Vec<Job>) -> Vec<Result<(), String>> {
    let decoded = decode(&jobs);
    let mut feeds = BTreeMap::new();
    for job in decoded.iter().flatten() {
        for (feed, _) in &job.archived.positions {
            feeds.insert((job.tenant.clone(), feed.to_string()), feed.clone());
        }
    }
    let mut failed = BTreeMap::new();
    for ((tenant, key), feed) in feeds {
        if let Err(error) = projector.catch_up(&tenant, &feed).await {
            failed.insert((tenant, key), error.to_string());
        }
    }
    decoded
        .into_iter()
        .map(|job| {
            let job = job?;
            match job
                .archived
                .positions
                .iter()
                .find_map(|(feed, _)| failed.get(&(job.tenant.clone(), feed.to_string())))
            {
                Some(error) => Err(error.clone()),
                None => Ok(()),
            }
        })
        .collect()
}

/// Appends the batch's events to the archive, one append per tenant.
pub async fn archive(archive: &dyn FeedArchive, jobs: Vec<Job>) -> Vec<Result<(), String>> {
    let decoded = decode(&jobs);
    let mut tenants: BTreeMap<&str, Vec<ArchivedEvent>> = BTreeMap::new();
    for job in decoded.iter().flatten() {
        tenants.entry(&job.tenant).or_default().push(job.archived.clone());
    }
    let mut failed = BTreeMap::new();
    for (tenant, events) in &tenants {
        if let Err(error) = archive.append(tenant, events).await {
            failed.insert(tenant.to_string(), error.to_string());
        }
    }
    decoded
        .into_iter()
        .map(|job| {
            let job = job?;
            failed.get(&job.tenant).map_or(Ok(()), |error| Err(error.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use mesh_core::broker::Epoch;

    use super::*;
    use crate::domain::{Activity, ActivityId, NewActivity};

    #[test]
    fn a_job_payload_round_trips() {
        let new = NewActivity::parse("post", Some(("post", "1")), "hi", []).unwrap();
        let activity = Activity::new(ActivityId::generate(), "acme", "alice", new, SystemTime::now());
        let event = FeedEvent::Published(activity);
        let positions = vec![
            (FeedName::Global, Position { offset: 12, epoch: Epoch::random() }),
            (FeedName::actor("alice"), Position { offset: 3, epoch: Epoch::random() }),
        ];
        let event_payload = event.encode();
        let payload = FeedJob::payload("acme", &positions, &event_payload);
        let job = FeedJob::decode(&payload).unwrap();
        assert_eq!(job.tenant, "acme");
        assert_eq!(job.archived, ArchivedEvent { event, positions });
        // Two position fields instead of four, with a valid event.
        let mut short = b"acme\n12:e\n".to_vec();
        short.extend_from_slice(&event_payload);
        assert!(
            matches!(FeedJob::decode(&short), Err(FeedError::Unavailable(message)) if message.contains("positions"))
        );
        assert!(FeedJob::decode(b"acme").is_err());
    }
}
