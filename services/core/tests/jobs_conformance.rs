//! Conformance suite of the job queue boundary: every check runs against
//! [`MemoryJobQueue`] and against [`RedisJobQueue`] on a private `redis-server`.
//!
//! Checks wait for state by polling with a deadline, never by sleeping; settings are small
//! (a 10 ms backoff base) so retries are fast.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mesh_core::backend::{RedisPool, redis_pool};
use mesh_core::config::RedisSettings;
use mesh_core::jobs::{
    Delivery, FailOutcome, Job, JobError, JobId, JobQueue, JobQueueSettings, MemoryJobQueue, QueueName, RedisJobQueue,
    Worker,
};
use mesh_testkit::RedisServer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a check waits for an expected state before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The implementation under test.
enum Backend {
    Memory,
    Redis { pool: RedisPool, _server: Box<RedisServer> },
}

impl Backend {
    async fn redis() -> Self {
        let server = RedisServer::start().await.expect("redis-server starts");
        let pool = redis_pool(&server.url(), &RedisSettings::default()).expect("the pool builds");
        Self::Redis { pool, _server: Box::new(server) }
    }

    /// A queue with the suite's fast settings changed by `configure`.
    fn queue(&self, configure: impl FnOnce(&mut JobQueueSettings)) -> Arc<dyn JobQueue> {
        let mut settings = JobQueueSettings {
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(100),
            visibility_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(5),
            ..JobQueueSettings::default()
        };
        configure(&mut settings);
        match self {
            Backend::Memory => Arc::new(MemoryJobQueue::new(settings)),
            Backend::Redis { pool, .. } => Arc::new(RedisJobQueue::new(pool.clone(), settings)),
        }
    }
}

fn queue_name() -> QueueName {
    QueueName::parse(&format!("audit-{}", JobId::random().as_str().replace('_', "x"))).unwrap()
}

/// Polls `probe` until it yields a value, failing the check after [`PATIENCE`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, probe: impl FnMut() -> F) -> T {
    mesh_testkit::eventually(what, PATIENCE, probe).await
}

async fn claim_now(jobs: &dyn JobQueue, queue: &QueueName, consumer: &str, max: usize) -> Vec<Delivery> {
    jobs.claim(queue, "workers", consumer, max, Duration::ZERO).await.expect("claim")
}

/// Runs a [`Worker`] over `queue` for group `workers`, recording the attempt of every call
/// and answering with `outcome(attempt)`.
fn spawn_worker(
    jobs: &Arc<dyn JobQueue>,
    queue: &QueueName,
    outcome: fn(u32) -> Result<(), String>,
) -> (Arc<Mutex<Vec<Job>>>, CancellationToken, tokio::task::JoinHandle<()>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let worker =
        Worker::new(jobs.clone(), queue.clone(), "workers", "worker-1").with_block_for(Duration::from_millis(50));
    let recorded = calls.clone();
    let handler = move |job: Job| {
        let recorded = recorded.clone();
        async move {
            let attempt = job.attempt;
            recorded.lock().unwrap().push(job);
            outcome(attempt)
        }
    };
    let task = tokio::spawn(worker.run(handler, shutdown.clone()));
    (calls, shutdown, task)
}

// ---------------------------------------------------------------------------------------
// The checks.

async fn enqueued_jobs_are_delivered_once_to_one_of_two_consumers_and_gone_after_ack(backend: Backend) {
    let jobs = backend.queue(|_| {});
    let queue = queue_name();
    let ids: Vec<JobId> = (0..10).map(|_| JobId::random()).collect();
    for (n, id) in ids.iter().enumerate() {
        jobs.enqueue(&queue, id, Bytes::from(format!("payload {n}"))).await.unwrap();
    }

    let mut delivered = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while delivered.len() < ids.len() {
        assert!(Instant::now() < deadline, "only {} of {} jobs were delivered", delivered.len(), ids.len());
        for consumer in ["alice", "bob"] {
            delivered.extend(claim_now(&*jobs, &queue, consumer, 3).await);
        }
    }

    let delivered_ids: Vec<&JobId> = delivered.iter().map(|delivery| &delivery.job.id).collect();
    let unique: HashSet<&JobId> = delivered_ids.iter().copied().collect();
    assert_eq!(unique.len(), delivered_ids.len(), "no job is delivered twice");
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
    assert!(delivered.iter().any(|delivery| delivery.consumer() == "alice"));
    assert!(delivered.iter().any(|delivery| delivery.consumer() == "bob"));
    for delivery in &delivered {
        let n = ids.iter().position(|id| *id == delivery.job.id).unwrap();
        assert_eq!(delivery.job.payload, Bytes::from(format!("payload {n}")));
        assert_eq!(delivery.job.attempt, 1);
        assert_eq!(delivery.job.last_error, None);
    }
    assert!(claim_now(&*jobs, &queue, "carol", 10).await.is_empty(), "in-flight jobs are not handed out again");

    for delivery in &delivered {
        jobs.ack(delivery).await.unwrap();
    }
    let stats = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!(stats.depth(), 0, "{stats:?}");
    assert_eq!(stats.oldest_age, None);
    assert!(claim_now(&*jobs, &queue, "alice", 10).await.is_empty());
}

async fn a_handler_failing_four_times_then_succeeding_runs_five_times_and_the_job_is_done(backend: Backend) {
    let jobs = backend.queue(|_| {});
    let queue = queue_name();
    let id = JobId::random();
    jobs.enqueue(&queue, &id, Bytes::from_static(b"write me")).await.unwrap();

    let (calls, shutdown, worker) =
        spawn_worker(&jobs, &queue, |attempt| if attempt < 5 { Err(format!("failure {attempt}")) } else { Ok(()) });
    eventually("the fifth attempt succeeded and the queue is empty", || async {
        let stats = jobs.stats(&queue, "workers").await.unwrap();
        (calls.lock().unwrap().len() >= 5 && stats.depth() == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap();

    let calls = calls.lock().unwrap().clone();
    let attempts: Vec<u32> = calls.iter().map(|job| job.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    assert!(calls.iter().all(|job| job.id == id && job.payload == Bytes::from_static(b"write me")));
    assert_eq!(calls[0].last_error, None);
    assert_eq!(calls[4].last_error.as_deref(), Some("failure 4"), "a retry sees the previous error");
    let stats = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!(stats.dead, 0);
    assert!(jobs.dead_letters(&queue, 10).await.unwrap().is_empty());
}

async fn a_job_failing_always_ends_in_the_dead_letter_stream_with_its_last_error_after_five_attempts(backend: Backend) {
    let jobs = backend.queue(|_| {});
    let queue = queue_name();
    let id = JobId::random();
    jobs.enqueue(&queue, &id, Bytes::from_static(b"poison")).await.unwrap();

    let (calls, shutdown, worker) = spawn_worker(&jobs, &queue, |attempt| Err(format!("failure {attempt}")));
    let dead = eventually("the job is dead-lettered", || async {
        let dead = jobs.dead_letters(&queue, 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;

    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.job.id, id);
    assert_eq!(letter.job.payload, Bytes::from_static(b"poison"));
    assert_eq!(letter.job.attempt, 5);
    assert_eq!(letter.error, "failure 5");
    assert_eq!(letter.group, "workers");
    let stats = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((stats.depth(), stats.dead), (0, 1), "nothing is left to deliver: {stats:?}");

    shutdown.cancel();
    worker.await.unwrap();
    let attempts: Vec<u32> = calls.lock().unwrap().iter().map(|job| job.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5], "no delivery after the last attempt");
    assert!(claim_now(&*jobs, &queue, "other", 10).await.is_empty());
}

async fn a_consumer_killed_mid_job_has_its_job_redelivered_to_another_consumer_after_the_visibility_timeout(
    backend: Backend,
) {
    let jobs = backend.queue(|settings| settings.visibility_timeout = Duration::from_millis(500));
    let queue = queue_name();
    let id = JobId::random();
    jobs.enqueue(&queue, &id, Bytes::from_static(b"half done")).await.unwrap();

    // A worker whose handler starts the job and never finishes it; then it is killed.
    let (started, mut started_rx) = mpsc::unbounded_channel::<JobId>();
    let worker =
        Worker::new(jobs.clone(), queue.clone(), "workers", "doomed").with_block_for(Duration::from_millis(50));
    let handler = move |job: Job| {
        let started = started.clone();
        async move {
            let _ = started.send(job.id);
            std::future::pending::<Result<(), String>>().await
        }
    };
    let doomed = tokio::spawn(worker.run(handler, CancellationToken::new()));
    let claimed = tokio::time::timeout(PATIENCE, started_rx.recv()).await.expect("the doomed worker took the job");
    assert_eq!(claimed, Some(id.clone()));
    doomed.abort();
    assert!(doomed.await.unwrap_err().is_cancelled());

    let redelivered = eventually("another consumer gets the job", || async {
        claim_now(&*jobs, &queue, "survivor", 10).await.into_iter().next()
    })
    .await;
    assert_eq!(redelivered.job.id, id);
    assert_eq!(redelivered.consumer(), "survivor");
    assert_eq!(redelivered.job.attempt, 2, "a reclaim counts as the next attempt");
    assert_eq!(redelivered.job.payload, Bytes::from_static(b"half done"));

    jobs.ack(&redelivered).await.unwrap();
    assert_eq!(jobs.stats(&queue, "workers").await.unwrap().depth(), 0);
}

async fn a_failed_job_is_not_redelivered_before_its_backoff_delay(backend: Backend) {
    // A first backoff of 0.5 to 1 s: far longer than a claim right after the failure takes.
    let jobs = backend.queue(|settings| {
        settings.backoff_base = Duration::from_secs(1);
        settings.backoff_cap = Duration::from_secs(1);
    });
    let queue = queue_name();
    let id = JobId::random();
    jobs.enqueue(&queue, &id, Bytes::from_static(b"flaky")).await.unwrap();
    let first = claim_now(&*jobs, &queue, "alice", 1).await.pop().expect("the job is delivered");

    let outcome = jobs.fail(&first, "backend hiccup".into()).await.unwrap();
    assert!(matches!(outcome, FailOutcome::Retrying { next_attempt: 2, .. }), "{outcome:?}");
    assert!(claim_now(&*jobs, &queue, "alice", 10).await.is_empty(), "not redelivered before its backoff");
    assert!(claim_now(&*jobs, &queue, "bob", 10).await.is_empty(), "not to another consumer either");
    let stats = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.retrying), (0, 0, 1), "{stats:?}");
    assert_eq!(jobs.fail(&first, "twice".into()).await.unwrap(), FailOutcome::Stale, "a delivery fails once");

    // Two consumers race for the retry once it is due: exactly one gets it.
    let retry = eventually("the retry is delivered after its backoff", || async {
        let mut claimed = claim_now(&*jobs, &queue, "alice", 10).await;
        claimed.extend(claim_now(&*jobs, &queue, "bob", 10).await);
        (!claimed.is_empty()).then_some(claimed)
    })
    .await;
    assert_eq!(retry.len(), 1, "{retry:?}");
    let retry = &retry[0];
    assert_eq!(retry.job.id, id);
    assert_eq!(retry.job.attempt, 2);
    assert_eq!(retry.job.last_error.as_deref(), Some("backend hiccup"));
    assert_eq!(retry.job.enqueued_at, first.job.enqueued_at, "age counts from the first enqueue");
    assert!(claim_now(&*jobs, &queue, "alice", 10).await.is_empty());
    assert!(claim_now(&*jobs, &queue, "bob", 10).await.is_empty());

    jobs.ack(retry).await.unwrap();
    assert_eq!(jobs.stats(&queue, "workers").await.unwrap().depth(), 0);
}

async fn stats_report_depth_oldest_age_and_dead_letters(backend: Backend) {
    let jobs = backend.queue(|settings| settings.max_attempts = 1);
    let queue = queue_name();
    let empty = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((empty.depth(), empty.oldest_age, empty.dead), (0, None, 0), "{empty:?}");

    for _ in 0..3 {
        jobs.enqueue(&queue, &JobId::random(), Bytes::from_static(b"job")).await.unwrap();
    }
    let waiting = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((waiting.ready, waiting.in_flight, waiting.retrying, waiting.depth()), (3, 0, 0, 3), "{waiting:?}");
    let first_age = waiting.oldest_age.expect("waiting jobs have an age");
    eventually("the oldest job grows older", || async {
        let stats = jobs.stats(&queue, "workers").await.unwrap();
        (stats.oldest_age.expect("still waiting") > first_age).then_some(())
    })
    .await;

    let claimed = claim_now(&*jobs, &queue, "alice", 2).await;
    assert_eq!(claimed.len(), 2);
    let busy = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((busy.ready, busy.in_flight, busy.depth()), (1, 2, 3), "{busy:?}");
    assert!(busy.oldest_age.is_some());

    assert_eq!(jobs.fail(&claimed[0], "no luck".into()).await.unwrap(), FailOutcome::DeadLettered);
    jobs.ack(&claimed[1]).await.unwrap();
    let after = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((after.ready, after.in_flight, after.depth(), after.dead), (1, 0, 1, 1), "{after:?}");

    let last = claim_now(&*jobs, &queue, "alice", 10).await;
    assert_eq!(last.len(), 1);
    jobs.ack(&last[0]).await.unwrap();
    let done = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((done.depth(), done.oldest_age, done.dead), (0, None, 1), "{done:?}");
    let dead = jobs.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].job.id.clone(), dead[0].error.as_str()), (claimed[0].job.id.clone(), "no luck"));
}

async fn each_group_receives_every_job_and_a_retry_goes_to_the_failing_group_only(backend: Backend) {
    let jobs = backend.queue(|_| {});
    let queue = queue_name();
    let id = JobId::random();
    jobs.enqueue(&queue, &id, Bytes::from_static(b"event")).await.unwrap();

    let claim = |group: &'static str| {
        let jobs = jobs.clone();
        let queue = queue.clone();
        async move { jobs.claim(&queue, group, "c1", 10, Duration::ZERO).await.unwrap() }
    };
    let archive = claim("archive").await;
    let projector = claim("projector").await;
    assert_eq!((archive.len(), projector.len()), (1, 1), "each group gets the job");
    assert!(matches!(jobs.fail(&archive[0], "disk full".into()).await.unwrap(), FailOutcome::Retrying { .. }));
    jobs.ack(&projector[0]).await.unwrap();

    let retry = eventually("the archive group gets its retry", || async { claim("archive").await.pop() }).await;
    assert_eq!((retry.job.id.clone(), retry.job.attempt), (id, 2));
    assert!(claim("projector").await.is_empty(), "the other group does not see the retry");
    jobs.ack(&retry).await.unwrap();
    for group in ["archive", "projector"] {
        assert_eq!(jobs.stats(&queue, group).await.unwrap().depth(), 0, "{group}");
    }
}

async fn a_created_group_receives_the_jobs_another_group_acked_before_its_first_claim(backend: Backend) {
    let jobs = backend.queue(|_| {});
    let queue = queue_name();
    jobs.create_group(&queue, "archive").await.unwrap();
    jobs.create_group(&queue, "archive").await.unwrap();
    jobs.create_group(&queue, "projector").await.unwrap();
    let ids = [JobId::random(), JobId::random()];
    for id in &ids {
        jobs.enqueue(&queue, id, Bytes::from_static(b"event")).await.unwrap();
    }
    let projected = jobs.claim(&queue, "projector", "c1", 10, Duration::ZERO).await.unwrap();
    jobs.ack_all(&projected).await.unwrap();
    let archived = jobs.claim(&queue, "archive", "c1", 10, Duration::ZERO).await.unwrap();
    let archived: Vec<JobId> = archived.into_iter().map(|delivery| delivery.job.id).collect();
    assert_eq!(archived, ids, "nothing was trimmed while the archive group still needed it");
    assert!(matches!(jobs.create_group(&queue, "bad group").await, Err(JobError::InvalidName { .. })));
}

async fn a_job_whose_consumers_keep_dying_is_dead_lettered_after_its_last_attempt(backend: Backend) {
    let jobs = backend.queue(|settings| {
        settings.max_attempts = 2;
        settings.visibility_timeout = Duration::from_millis(100);
    });
    let queue = queue_name();
    let id = JobId::random();
    jobs.enqueue(&queue, &id, Bytes::from_static(b"crashes its consumer")).await.unwrap();

    // Every consumer claims it and dies without a word.
    let mut attempts = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let dead = loop {
        let consumer = format!("doomed-{}", attempts.len());
        let claimed = jobs.claim(&queue, "workers", &consumer, 10, Duration::ZERO).await.unwrap();
        attempts.extend(claimed.into_iter().map(|delivery| delivery.job.attempt));
        if let Some(dead) = jobs.dead_letters(&queue, 10).await.unwrap().pop() {
            break dead;
        }
        assert!(Instant::now() < deadline, "timed out waiting until the job is dead-lettered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(attempts, [1, 2]);
    assert_eq!((dead.job.id, dead.job.attempt), (id, 2));
    assert_eq!(dead.error, "attempt 2 was not acknowledged within the visibility timeout");
    assert_eq!(jobs.stats(&queue, "workers").await.unwrap().depth(), 0);
}

async fn a_late_failure_of_a_reclaimed_delivery_changes_nothing(backend: Backend) {
    let jobs = backend.queue(|settings| settings.visibility_timeout = Duration::from_millis(100));
    let queue = queue_name();
    let id = JobId::random();
    jobs.enqueue(&queue, &id, Bytes::from_static(b"slow")).await.unwrap();
    let stalled = claim_now(&*jobs, &queue, "alice", 1).await.pop().expect("the job is delivered");

    // The same consumer name takes it again after the visibility timeout (a restarted
    // process reusing its name): the first delivery is now stale.
    let current =
        eventually("the job is reclaimed", || async { claim_now(&*jobs, &queue, "alice", 1).await.pop() }).await;
    assert_eq!((current.job.id.clone(), current.job.attempt), (id, 2));
    assert_eq!(jobs.fail(&stalled, "too late".into()).await.unwrap(), FailOutcome::Stale);
    let stats = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((stats.in_flight, stats.retrying, stats.dead), (1, 0, 0), "{stats:?}");

    jobs.ack(&current).await.unwrap();
    assert_eq!(jobs.stats(&queue, "workers").await.unwrap().depth(), 0);
}

async fn oversized_payloads_and_bad_names_are_refused(backend: Backend) {
    let jobs = backend.queue(|settings| settings.max_payload = 8);
    let queue = queue_name();
    let refused = jobs.enqueue(&queue, &JobId::random(), Bytes::from_static(b"nine byte")).await;
    assert!(matches!(refused, Err(JobError::PayloadTooLarge { size: 9, limit: 8 })), "{refused:?}");
    jobs.enqueue(&queue, &JobId::random(), Bytes::from_static(b"eight by")).await.unwrap();

    let bad_group = jobs.claim(&queue, "", "c1", 1, Duration::ZERO).await;
    assert!(matches!(bad_group, Err(JobError::InvalidName { field: "group", .. })), "{bad_group:?}");
    let bad_consumer = jobs.claim(&queue, "workers", "c 1", 1, Duration::ZERO).await;
    assert!(matches!(bad_consumer, Err(JobError::InvalidName { field: "consumer", .. })), "{bad_consumer:?}");
    assert_eq!(jobs.stats(&queue, "workers").await.unwrap().ready, 1);
}

async fn a_batch_worker_acks_its_successes_together_and_retries_only_the_failed_job(backend: Backend) {
    let jobs = backend.queue(|_| {});
    let queue = queue_name();
    let ids: Vec<JobId> = (0..12).map(|_| JobId::random()).collect();
    for (n, id) in ids.iter().enumerate() {
        jobs.enqueue(&queue, id, Bytes::from(format!("job {n}"))).await.unwrap();
    }
    // Job "job 3" fails on its first attempt; every other job succeeds at once. The handler
    // answers one result fewer than it got for its first batch: that job counts as failed.
    let batches = Arc::new(Mutex::new(Vec::<Vec<Job>>::new()));
    let recorded = batches.clone();
    let handler = move |batch: Vec<Job>| {
        let recorded = recorded.clone();
        async move {
            let first = recorded.lock().unwrap().is_empty();
            let mut results: Vec<Result<(), String>> = batch
                .iter()
                .map(|job| if &job.payload[..] == b"job 3" && job.attempt == 1 { Err("no".into()) } else { Ok(()) })
                .collect();
            if first {
                results.pop();
            }
            recorded.lock().unwrap().push(batch);
            results
        }
    };
    let shutdown = CancellationToken::new();
    let worker = Worker::new(jobs.clone(), queue.clone(), "workers", "batcher")
        .with_batch(8)
        .with_block_for(Duration::from_millis(50));
    let task = tokio::spawn(worker.run_batches(handler, shutdown.clone()));
    eventually("every job is done", || async {
        (jobs.stats(&queue, "workers").await.unwrap().depth() == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();

    let batches = batches.lock().unwrap().clone();
    assert!(batches[0].len() > 1, "jobs arrive in batches: {:?}", batches.iter().map(Vec::len).collect::<Vec<_>>());
    let unanswered = batches[0].last().unwrap().id.clone();
    let handled: Vec<(JobId, u32)> = batches.iter().flatten().map(|job| (job.id.clone(), job.attempt)).collect();
    for id in &ids {
        let attempts: Vec<u32> = handled.iter().filter(|(job, _)| job == id).map(|(_, attempt)| *attempt).collect();
        let expected: &[u32] = if *id == ids[3] || *id == unanswered { &[1, 2] } else { &[1] };
        assert_eq!(attempts, expected, "attempts of {id:?}");
    }
    assert_eq!(jobs.stats(&queue, "workers").await.unwrap().dead, 0);
}

async fn thousands_of_deliveries_are_acked_in_one_call(backend: Backend) {
    let jobs = backend.queue(|_| {});
    let queue = queue_name();
    for n in 0..9000 {
        jobs.enqueue(&queue, &JobId::random(), Bytes::from(format!("job {n}"))).await.unwrap();
    }
    let mut claimed = Vec::new();
    while claimed.len() < 9000 {
        let batch = claim_now(&*jobs, &queue, "bulk", 9000 - claimed.len()).await;
        assert!(!batch.is_empty(), "only {} of 9000 claimed", claimed.len());
        claimed.extend(batch);
    }
    jobs.ack_all(&claimed).await.unwrap();
    let stats = jobs.stats(&queue, "workers").await.unwrap();
    assert_eq!((stats.depth(), stats.dead), (0, 0));
    assert!(claim_now(&*jobs, &queue, "bulk", 10).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Each check against each implementation.

#[tokio::test]
async fn memory_enqueued_jobs_are_delivered_once_to_one_of_two_consumers_and_gone_after_ack() {
    enqueued_jobs_are_delivered_once_to_one_of_two_consumers_and_gone_after_ack(Backend::Memory).await;
}

#[tokio::test]
async fn redis_enqueued_jobs_are_delivered_once_to_one_of_two_consumers_and_gone_after_ack() {
    enqueued_jobs_are_delivered_once_to_one_of_two_consumers_and_gone_after_ack(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_a_handler_failing_four_times_then_succeeding_runs_five_times_and_the_job_is_done() {
    a_handler_failing_four_times_then_succeeding_runs_five_times_and_the_job_is_done(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_handler_failing_four_times_then_succeeding_runs_five_times_and_the_job_is_done() {
    a_handler_failing_four_times_then_succeeding_runs_five_times_and_the_job_is_done(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_a_job_failing_always_ends_in_the_dead_letter_stream_with_its_last_error_after_five_attempts() {
    a_job_failing_always_ends_in_the_dead_letter_stream_with_its_last_error_after_five_attempts(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_job_failing_always_ends_in_the_dead_letter_stream_with_its_last_error_after_five_attempts() {
    a_job_failing_always_ends_in_the_dead_letter_stream_with_its_last_error_after_five_attempts(Backend::redis().await)
        .await;
}

#[tokio::test]
async fn memory_a_consumer_killed_mid_job_has_its_job_redelivered_to_another_consumer_after_the_visibility_timeout() {
    a_consumer_killed_mid_job_has_its_job_redelivered_to_another_consumer_after_the_visibility_timeout(Backend::Memory)
        .await;
}

#[tokio::test]
async fn redis_a_consumer_killed_mid_job_has_its_job_redelivered_to_another_consumer_after_the_visibility_timeout() {
    a_consumer_killed_mid_job_has_its_job_redelivered_to_another_consumer_after_the_visibility_timeout(
        Backend::redis().await,
    )
    .await;
}

#[tokio::test]
async fn memory_a_failed_job_is_not_redelivered_before_its_backoff_delay() {
    a_failed_job_is_not_redelivered_before_its_backoff_delay(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_failed_job_is_not_redelivered_before_its_backoff_delay() {
    a_failed_job_is_not_redelivered_before_its_backoff_delay(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_stats_report_depth_oldest_age_and_dead_letters() {
    stats_report_depth_oldest_age_and_dead_letters(Backend::Memory).await;
}

#[tokio::test]
async fn redis_stats_report_depth_oldest_age_and_dead_letters() {
    stats_report_depth_oldest_age_and_dead_letters(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_each_group_receives_every_job_and_a_retry_goes_to_the_failing_group_only() {
    each_group_receives_every_job_and_a_retry_goes_to_the_failing_group_only(Backend::Memory).await;
}

#[tokio::test]
async fn redis_each_group_receives_every_job_and_a_retry_goes_to_the_failing_group_only() {
    each_group_receives_every_job_and_a_retry_goes_to_the_failing_group_only(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_a_job_whose_consumers_keep_dying_is_dead_lettered_after_its_last_attempt() {
    a_job_whose_consumers_keep_dying_is_dead_lettered_after_its_last_attempt(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_job_whose_consumers_keep_dying_is_dead_lettered_after_its_last_attempt() {
    a_job_whose_consumers_keep_dying_is_dead_lettered_after_its_last_attempt(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_a_late_failure_of_a_reclaimed_delivery_changes_nothing() {
    a_late_failure_of_a_reclaimed_delivery_changes_nothing(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_late_failure_of_a_reclaimed_delivery_changes_nothing() {
    a_late_failure_of_a_reclaimed_delivery_changes_nothing(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_oversized_payloads_and_bad_names_are_refused() {
    oversized_payloads_and_bad_names_are_refused(Backend::Memory).await;
}

#[tokio::test]
async fn redis_oversized_payloads_and_bad_names_are_refused() {
    oversized_payloads_and_bad_names_are_refused(Backend::redis().await).await;
}

// ---------------------------------------------------------------------------------------
// Redis only: the key layout.

#[tokio::test]
async fn redis_keys_of_a_queue_share_its_hash_tag_and_finished_entries_are_trimmed() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let pool = redis_pool(&server.url(), &RedisSettings::default()).expect("the pool builds");
    let jobs: Arc<dyn JobQueue> = Arc::new(RedisJobQueue::new(
        pool,
        JobQueueSettings {
            backoff_base: Duration::from_secs(60),
            backoff_cap: Duration::from_secs(60),
            max_attempts: 2,
            ..JobQueueSettings::default()
        },
    ));
    let queue = QueueName::parse("audit").unwrap();
    for _ in 0..3 {
        jobs.enqueue(&queue, &JobId::random(), Bytes::from_static(b"job")).await.unwrap();
    }
    let claimed = claim_now(&*jobs, &queue, "c1", 3).await;
    assert_eq!(claimed.len(), 3);
    jobs.ack(&claimed[0]).await.unwrap();
    jobs.ack(&claimed[1]).await.unwrap();
    let mut connection = server.connection().await.unwrap();
    let length: u64 = redis::cmd("XLEN").arg("jobs:{audit}:stream").query_async(&mut connection).await.unwrap();
    assert_eq!(length, 1, "acked entries leave the stream once every group is done with them");

    assert!(matches!(jobs.fail(&claimed[2], "later".into()).await.unwrap(), FailOutcome::Retrying { .. }));
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut connection).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["jobs:{audit}:delayed:workers", "jobs:{audit}:stream"]);
    let length: u64 = redis::cmd("XLEN").arg("jobs:{audit}:stream").query_async(&mut connection).await.unwrap();
    assert_eq!(length, 0);
}

#[tokio::test]
async fn redis_another_script_enqueues_atomically_with_its_own_write() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let pool = redis_pool(&server.url(), &RedisSettings::default()).expect("the pool builds");
    let jobs: Arc<dyn JobQueue> = Arc::new(RedisJobQueue::new(pool, JobQueueSettings::default()));
    let queue = QueueName::parse("audit.s3").unwrap();
    // A component's own key under the queue's hash tag, written by the same script.
    let record = format!("t:t1:session:{}:abc", RedisJobQueue::hash_tag(&queue));
    let script = redis::Script::new(&format!(
        "{}\nredis.call('SET', KEYS[2], ARGV[3])\nmesh_enqueue_job(KEYS[1], ARGV[1], ARGV[2])\nreturn 1",
        RedisJobQueue::enqueue_lua()
    ));
    let id = JobId::random();
    let mut connection = server.connection().await.unwrap();
    let _: i64 = script
        .key(RedisJobQueue::stream_key(&queue))
        .key(&record)
        .arg(id.as_str())
        .arg(&b"audit event"[..])
        .arg("v2")
        .invoke_async(&mut connection)
        .await
        .unwrap();

    let stored: String = redis::cmd("GET").arg(&record).query_async(&mut connection).await.unwrap();
    assert_eq!(stored, "v2");
    let claimed = claim_now(&*jobs, &queue, "c1", 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].job.id.as_str(), &claimed[0].job.payload[..]), (id.as_str(), &b"audit event"[..]));
    assert_eq!(claimed[0].job.attempt, 1);
}

#[tokio::test]
async fn memory_a_batch_worker_acks_its_successes_together_and_retries_only_the_failed_job() {
    a_batch_worker_acks_its_successes_together_and_retries_only_the_failed_job(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_batch_worker_acks_its_successes_together_and_retries_only_the_failed_job() {
    a_batch_worker_acks_its_successes_together_and_retries_only_the_failed_job(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_thousands_of_deliveries_are_acked_in_one_call() {
    thousands_of_deliveries_are_acked_in_one_call(Backend::Memory).await;
}

#[tokio::test]
async fn redis_thousands_of_deliveries_are_acked_in_one_call() {
    thousands_of_deliveries_are_acked_in_one_call(Backend::redis().await).await;
}

#[tokio::test]
async fn memory_a_created_group_receives_the_jobs_another_group_acked_before_its_first_claim() {
    a_created_group_receives_the_jobs_another_group_acked_before_its_first_claim(Backend::Memory).await;
}

#[tokio::test]
async fn redis_a_created_group_receives_the_jobs_another_group_acked_before_its_first_claim() {
    a_created_group_receives_the_jobs_another_group_acked_before_its_first_claim(Backend::redis().await).await;
}
