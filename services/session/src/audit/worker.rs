//! How audit events travel: [`enqueue_audit`] puts an event on the job queue (queue
//! [`AUDIT_QUEUE`], job id = event id) and the [`AuditWorker`] appends each job's event to an
//! [`AuditSink`].
//!
//! A failed append fails the job, which the queue retries with backoff. An *outage* of the
//! sink must not use up attempts, though, or a database that is down for longer than the
//! backoff schedule (about 1.5 s by default) would send events to the dead letters. So when
//! an append fails because the sink is unavailable, the worker stops claiming jobs and asks
//! the sink ([`AuditSink::check`]) with a growing pause until it answers, then claims again.
//! The jobs wait in the queue meanwhile; only the jobs already claimed (at most one batch)
//! spend an attempt per outage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_core::jobs::{Job, JobId, JobQueue, QueueName, Worker};
use tokio_util::sync::CancellationToken;

use super::{AuditError, AuditSink};
use crate::domain::AuditEvent;

/// Name of the job queue of audit events.
pub const AUDIT_QUEUE: &str = "audit";
/// Consumer group of the workers that write audit events to the sink.
pub const AUDIT_GROUP: &str = "audit-writer";

/// The [`AUDIT_QUEUE`] as a queue name.
pub fn audit_queue() -> QueueName {
    QueueName::parse(AUDIT_QUEUE).expect("the audit queue name is valid")
}

/// Enqueues `event` on the audit queue, with the event id as job id.
pub async fn enqueue_audit(jobs: &dyn JobQueue, event: &AuditEvent) -> Result<(), AuditError> {
    let id = JobId::parse(&event.event_id)?;
    jobs.enqueue(&audit_queue(), &id, Bytes::from(event.to_json())).await?;
    Ok(())
}

/// Moves audit events from the job queue into a sink, as one consumer of [`AUDIT_GROUP`]
/// on each of its queues (see the module docs for what happens while the sink is down).
#[derive(Clone)]
pub struct AuditWorker {
    jobs: Arc<dyn JobQueue>,
    queues: Vec<QueueName>,
    sink: Arc<dyn AuditSink>,
    consumer: String,
    batch: usize,
    block_for: Duration,
    pause_min: Duration,
    pause_max: Duration,
}

impl std::fmt::Debug for AuditWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWorker")
            .field("queues", &self.queues)
            .field("consumer", &self.consumer)
            .field("batch", &self.batch)
            .field("block_for", &self.block_for)
            .field("pause_min", &self.pause_min)
            .field("pause_max", &self.pause_max)
            .finish_non_exhaustive()
    }
}

/// How long the audit worker waits after a batch that was not full before it claims again.
const AUDIT_LINGER: Duration = Duration::from_millis(10);

impl AuditWorker {
    /// A worker that appends the events of `jobs`' audit queue ([`AUDIT_QUEUE`]) to `sink`,
    /// as `consumer` (unique per process and worker, e.g. `meshd-<host>-audit-1`). It claims
    /// up to 64 jobs at a time and writes them in one append, lingers 10 ms after a batch
    /// that was not full (so a steady trickle of changes is written in batches too: an event
    /// reaches the sink up to 10 ms later, for a fraction of the round trips), waits up to
    /// 1 s per claim, and pauses 100 ms to 5 s between checks of a sink that is down.
    pub fn new(jobs: Arc<dyn JobQueue>, sink: Arc<dyn AuditSink>, consumer: impl Into<String>) -> Self {
        Self {
            jobs,
            queues: vec![audit_queue()],
            sink,
            consumer: consumer.into(),
            batch: 64,
            block_for: Duration::from_secs(1),
            pause_min: Duration::from_millis(100),
            pause_max: Duration::from_secs(5),
        }
    }

    /// Drains `queues` instead of [`AUDIT_QUEUE`] (the Redis store's shards,
    /// [`audit_queues`](crate::store::audit_queues)), each in its own task.
    pub fn with_queues(mut self, queues: Vec<QueueName>) -> Self {
        self.queues = queues;
        self
    }

    /// Claims up to `batch` jobs at once (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// How long one claim waits for a job.
    pub fn with_block_for(mut self, block_for: Duration) -> Self {
        self.block_for = block_for;
        self
    }

    /// The pause before the first check of a sink that went down, doubled per failed check
    /// up to `max`.
    pub fn with_outage_pause(mut self, min: Duration, max: Duration) -> Self {
        self.pause_min = min;
        self.pause_max = max.max(min);
        self
    }

    /// Writes audit events until `shutdown` is cancelled (a claimed batch is finished first).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for queue in self.queues.clone() {
            tasks.spawn(self.clone().drain(queue, shutdown.clone()));
        }
        while let Some(finished) = tasks.join_next().await {
            if let Err(error) = finished {
                tracing::error!(%error, "an audit worker task failed");
            }
        }
    }

    /// Writes the audit events of `queue` until `shutdown`.
    async fn drain(self, queue: QueueName, shutdown: CancellationToken) {
        loop {
            let outage = shutdown.child_token();
            let worker = Worker::new(self.jobs.clone(), queue.clone(), AUDIT_GROUP, self.consumer.clone())
                .with_batch(self.batch)
                .with_block_for(self.block_for)
                .with_linger(AUDIT_LINGER);
            let sink = self.sink.clone();
            let seen_outage = outage.clone();
            let handler = move |jobs: Vec<Job>| {
                let sink = sink.clone();
                let outage = seen_outage.clone();
                async move { write_events(&*sink, &jobs, &outage).await }
            };
            worker.run_batches(handler, outage).await;
            if shutdown.is_cancelled() {
                return;
            }
            tracing::warn!(consumer = %self.consumer, %queue, "audit sink unavailable: audit events wait in the queue");
            if !self.wait_for_sink(&shutdown).await {
                return;
            }
            tracing::info!(consumer = %self.consumer, %queue, "audit sink available again: writing audit events");
        }
    }

    /// Asks the sink with a growing pause until it answers (`true`) or `shutdown` (`false`).
    async fn wait_for_sink(&self, shutdown: &CancellationToken) -> bool {
        let mut pause = self.pause_min;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            match self.sink.check().await {
                Ok(()) => return true,
                Err(error) => tracing::debug!(%error, "audit sink still unavailable"),
            }
            pause = (pause * 2).min(self.pause_max);
        }
    }
}

/// The handler of a claimed batch of audit jobs: decode each, append the events in one
/// write (one transaction, one fsync). A job that holds no audit event fails on its own (and
/// ends in the dead letters). If the sink refuses the batch for another reason than being
/// unavailable, the events are appended one by one, so only the one it refuses fails. An
/// unavailable sink cancels `outage`, which stops the worker from claiming more (the batch
/// is retried once the sink is back).
async fn write_events(sink: &dyn AuditSink, jobs: &[Job], outage: &CancellationToken) -> Vec<Result<(), String>> {
    let decoded: Vec<Result<AuditEvent, String>> = jobs
        .iter()
        .map(|job| {
            AuditEvent::from_json(&job.payload).map_err(|error| {
                tracing::error!(%error, job = %job.id, "an audit job does not hold an audit event");
                format!("not an audit event: {error}")
            })
        })
        .collect();
    let events: Vec<AuditEvent> = decoded.iter().filter_map(|event| event.as_ref().ok().cloned()).collect();
    let batch = match append(sink, &events, outage).await {
        Err(error) if events.len() > 1 && !outage.is_cancelled() => {
            tracing::warn!(%error, events = events.len(), "the audit sink refused a batch: writing its events one by one");
            None
        }
        outcome => Some(outcome),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for event in decoded {
        let result = match (event, &batch) {
            (Err(error), _) => Err(error),
            (Ok(_), Some(outcome)) => outcome.clone(),
            (Ok(event), None) => append(sink, std::slice::from_ref(&event), outage).await,
        };
        results.push(result);
    }
    results
}

/// Appends `events` (none: nothing to do); an unavailable sink cancels `outage`, and once
/// it is cancelled nothing is tried.
async fn append(sink: &dyn AuditSink, events: &[AuditEvent], outage: &CancellationToken) -> Result<(), String> {
    if outage.is_cancelled() {
        return Err("audit sink unavailable".to_owned());
    }
    if events.is_empty() {
        return Ok(());
    }
    sink.append(events).await.map_err(|error| {
        if error.is_unavailable() {
            outage.cancel();
        }
        error.to_string()
    })
}
