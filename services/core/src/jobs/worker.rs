//! [`Worker`]: what a service runs to consume a queue. It claims jobs for one consumer of
//! a group, runs a handler on each (or on each claimed batch), acks on `Ok`, fails on `Err`
//! (the queue retries with backoff, then dead-letters), and stops when its cancellation
//! token fires.

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
    linger: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("batch", &self.batch)
            .field("block_for", &self.block_for)
            .field("linger", &self.linger)
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
            linger: Duration::ZERO,
        }
    }

    /// Claims up to `batch` jobs at once (at least 1). The jobs of a batch are handled one
    /// after the other, so the last must still finish within the visibility timeout.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// After a batch that was not full, wait `linger` before the next claim (default none),
    /// so that under a steady trickle of jobs the batches fill up: fewer round trips per
    /// job, each job handled up to `linger` later.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
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
        let mut previous = None;
        while let Some(deliveries) = self.next_batch(&shutdown, &mut pause, previous).await {
            previous = Some(deliveries.len());
            for delivery in deliveries {
                self.handle(&handler, delivery).await;
            }
        }
    }

    /// Like [`run`](Self::run), but hands each claimed batch to `handler` at once (one sink
    /// write for many jobs, say). The handler answers one result per job, in order: the
    /// jobs that succeeded are acked together ([`JobQueue::ack_all`]), each failed one
    /// fails on its own (a job missing from the answer counts as failed).
    pub async fn run_batches<H, F>(self, handler: H, shutdown: CancellationToken)
    where
        H: Fn(Vec<Job>) -> F + Send + Sync,
        F: Future<Output = Vec<Result<(), String>>> + Send,
    {
        let mut pause = BACKEND_PAUSE_MIN;
        let mut previous = None;
        while let Some(deliveries) = self.next_batch(&shutdown, &mut pause, previous).await {
            previous = Some(deliveries.len());
            self.handle_batch(&handler, deliveries).await;
        }
    }

    /// The next claimed batch (never empty), or `None` once `shutdown` is cancelled; after a
    /// `previous` batch that was not full, the linger comes first. Backend failures are
    /// logged and retried after `pause`, which doubles per failure up to
    /// [`BACKEND_PAUSE_MAX`] and resets on success.
    async fn next_batch(
        &self,
        shutdown: &CancellationToken,
        pause: &mut Duration,
        previous: Option<usize>,
    ) -> Option<Vec<Delivery>> {
        if !self.linger.is_zero() && previous.is_some_and(|len| len < self.batch) {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.linger) => {}
            }
        }
        loop {
            let claimed = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                claimed = self.jobs.claim(&self.queue, &self.group, &self.consumer, self.batch, self.block_for) => claimed,
            };
            match claimed {
                Ok(deliveries) => {
                    *pause = BACKEND_PAUSE_MIN;
                    if !deliveries.is_empty() {
                        return Some(deliveries);
                    }
                }
                Err(error) => {
                    tracing::warn!(queue = %self.queue, consumer = %self.consumer, %error, "failed to claim jobs");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(*pause) => {}
                    }
                    *pause = (*pause * 2).min(BACKEND_PAUSE_MAX);
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
                Ok(()) => self.ack(std::slice::from_ref(&delivery)).await,
                Err(failure) => self.fail(&delivery, failure).await,
            }
        }
        .instrument(span)
        .await
    }

    async fn handle_batch<H, F>(&self, handler: &H, deliveries: Vec<Delivery>)
    where
        H: Fn(Vec<Job>) -> F + Send + Sync,
        F: Future<Output = Vec<Result<(), String>>> + Send,
    {
        let span = tracing::info_span!("jobs", queue = %self.queue, count = deliveries.len());
        async {
            let results = handler(deliveries.iter().map(|delivery| delivery.job.clone()).collect()).await;
            let results = results.into_iter().map(Some).chain(std::iter::repeat(None));
            let mut done = Vec::with_capacity(deliveries.len());
            for (delivery, result) in deliveries.into_iter().zip(results) {
                match result {
                    Some(Ok(())) => done.push(delivery),
                    Some(Err(failure)) => self.fail(&delivery, failure).await,
                    None => self.fail(&delivery, "the batch handler gave no result for this job".into()).await,
                }
            }
            self.ack(&done).await;
        }
        .instrument(span)
        .await
    }

    /// Acks finished deliveries; a failure is logged only.
    async fn ack(&self, done: &[Delivery]) {
        if done.is_empty() {
            return;
        }
        if let Err(error) = self.jobs.ack_all(done).await {
            // The jobs are done but still pending: they run again after the visibility
            // timeout, which idempotent handlers tolerate.
            tracing::warn!(%error, jobs = done.len(), "failed to acknowledge finished jobs");
        }
    }

    /// Records a failed delivery: retried after a backoff, or dead-lettered.
    async fn fail(&self, delivery: &Delivery, failure: String) {
        match self.jobs.fail(delivery, failure.clone()).await {
            Ok(FailOutcome::Retrying { next_attempt, delay }) => {
                tracing::info!(id = %delivery.job.id, error = %failure, next_attempt, ?delay, "job failed, retrying");
            }
            Ok(FailOutcome::DeadLettered) => {
                tracing::error!(id = %delivery.job.id, error = %failure, "job failed its last attempt, dead-lettered");
            }
            Ok(FailOutcome::Stale) => {
                tracing::warn!(id = %delivery.job.id, error = %failure, "job failed after another consumer reclaimed it");
            }
            Err(error) => {
                tracing::warn!(id = %delivery.job.id, %error, job_error = %failure, "failed to record a job failure");
            }
        }
    }
}
