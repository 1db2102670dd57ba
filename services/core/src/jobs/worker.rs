//! [`Worker`]: what a service runs to consume a queue. It claims jobs for one consumer of
//! a group, runs a handler on each, acks on `Ok`, fails on `Err` (the queue retries with
//! backoff, then dead-letters), and stops when its cancellation token fires.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Delivery, FailOutcome, Job, JobQueue, QueueName};

/// Shortest pause after the backend failed, doubled per further failure.
const BACKEND_PAUSE_MIN: Duration = Duration::from_millis(100);
/// Longest pause after the backend failed.
const BACKEND_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Runs a handler over the jobs of one queue as one consumer of a group.
///
/// Jobs are handled one after the other; for parallelism run several workers with
/// different consumer names. Handlers must be idempotent on [`Job::id`] (delivery is at
/// least once) and finish well within the queue's visibility timeout. A handler that
/// panics ends the worker; its job is reclaimed after the visibility timeout.
pub struct Worker {
    jobs: Arc<dyn JobQueue>,
    queue: QueueName,
    group: String,
    consumer: String,
    batch: usize,
    block_for: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("batch", &self.batch)
            .field("block_for", &self.block_for)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `consumer` (unique per process and task, e.g. `meshd-<host>-<n>`) of
    /// `group` on `queue`. It claims one job at a time and waits up to 1 s per claim.
    pub fn new(
        jobs: Arc<dyn JobQueue>,
        queue: QueueName,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        Self {
            jobs,
            queue,
            group: group.into(),
            consumer: consumer.into(),
            batch: 1,
            block_for: Duration::from_secs(1),
        }
    }

    /// Claims up to `batch` jobs at once (at least 1). The jobs of a batch are handled one
    /// after the other, so the last must still finish within the visibility timeout.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// How long one claim waits for a job before the worker looks again (default 1 s).
    pub fn with_block_for(mut self, block_for: Duration) -> Self {
        self.block_for = block_for;
        self
    }

    /// Handles jobs until `shutdown` is cancelled. A claimed batch is finished first, so a
    /// shutdown never leaves a claimed job waiting for the visibility timeout. Backend
    /// failures are logged and retried with a growing pause; this only returns on shutdown.
    pub async fn run<H, F>(self, handler: H, shutdown: CancellationToken)
    where
        H: Fn(Job) -> F + Send + Sync,
        F: Future<Output = Result<(), String>> + Send,
    {
        let mut pause = BACKEND_PAUSE_MIN;
        loop {
            let claimed = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                claimed = self.jobs.claim(&self.queue, &self.group, &self.consumer, self.batch, self.block_for) => claimed,
            };
            match claimed {
                Ok(deliveries) => {
                    pause = BACKEND_PAUSE_MIN;
                    for delivery in deliveries {
                        self.handle(&handler, delivery).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(queue = %self.queue, consumer = %self.consumer, %error, "failed to claim jobs");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(BACKEND_PAUSE_MAX);
                }
            }
        }
    }

    async fn handle<H, F>(&self, handler: &H, delivery: Delivery)
    where
        H: Fn(Job) -> F + Send + Sync,
        F: Future<Output = Result<(), String>> + Send,
    {
        let span = tracing::info_span!(
            "job",
            queue = %delivery.job.queue,
            id = %delivery.job.id,
            attempt = delivery.job.attempt,
        );
        async {
            match handler(delivery.job.clone()).await {
                Ok(()) => {
                    if let Err(error) = self.jobs.ack(&delivery).await {
                        // The job is done but still pending: it runs again after the
                        // visibility timeout, which idempotent handlers tolerate.
                        tracing::warn!(%error, "failed to acknowledge a finished job");
                    }
                }
                Err(failure) => match self.jobs.fail(&delivery, failure.clone()).await {
                    Ok(FailOutcome::Retrying { next_attempt, delay }) => {
                        tracing::info!(error = %failure, next_attempt, ?delay, "job failed, retrying");
                    }
                    Ok(FailOutcome::DeadLettered) => {
                        tracing::error!(error = %failure, "job failed its last attempt, dead-lettered");
                    }
                    Ok(FailOutcome::Stale) => {
                        tracing::warn!(error = %failure, "job failed after another consumer reclaimed it");
                    }
                    Err(error) => {
                        tracing::warn!(%error, job_error = %failure, "failed to record a job failure");
                    }
                },
            }
        }
        .instrument(span)
        .await
    }
}
