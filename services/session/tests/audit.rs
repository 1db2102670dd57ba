//! The audit trail: the conformance suite of the [`AuditSink`] boundary, run against the
//! memory, JSON lines and PostgreSQL sinks; what is particular to the JSON lines file and to
//! PostgreSQL (reopening, migrations, append-only); and the [`AuditWorker`] moving events
//! from the job queue into a sink, including across a PostgreSQL outage.
//!
//! PostgreSQL and the files are private to each test (mesh-testkit, temporary folders).
//! Tests wait for state by polling with a deadline, never by sleeping.

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use mesh_core::jobs::{JobQueue, JobQueueSettings, MemoryJobQueue};
use mesh_session::audit::{
    AUDIT_GROUP, AuditError, AuditSink, AuditWorker, BoxFuture, JsonLinesAuditSink, MIGRATIONS, MemoryAuditSink,
    PostgresAuditOptions, PostgresAuditSink, audit_queue, enqueue_audit,
};
use mesh_session::domain::{Attributes, AuditEvent, Lifetimes, Session, SessionChangeKind, SessionId, Version};
use mesh_testkit::PostgresServer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a check waits for an expected state before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Support.

/// A sink under test and whatever must live as long as it (a folder, a server).
struct Subject {
    sink: Arc<dyn AuditSink>,
    _keep: Box<dyn Any + Send>,
}

async fn memory_sink() -> Subject {
    Subject { sink: Arc::new(MemoryAuditSink::default()), _keep: Box::new(()) }
}

async fn json_lines_sink() -> Subject {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let sink = JsonLinesAuditSink::open_in(folder.path()).await.expect("the audit file opens");
    Subject { sink: Arc::new(sink), _keep: Box::new(folder) }
}

async fn postgres_sink() -> Subject {
    let server = PostgresServer::start().await.expect("postgres starts");
    let sink = PostgresAuditSink::open(&server.url(), fast_options()).await.expect("the sink opens and migrates");
    Subject { sink: Arc::new(sink), _keep: Box::new(server) }
}

/// Pool options that notice a stopped database quickly.
fn fast_options() -> PostgresAuditOptions {
    PostgresAuditOptions {
        max_connections: 4,
        connect_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(10),
    }
}

/// A change of a new session, as an audit event.
fn event(kind: SessionChangeKind) -> AuditEvent {
    let attributes = Attributes::parse([("theme".to_string(), "dark".to_string())], "attributes").unwrap();
    let session =
        Session::create(SessionId::generate(), "acme", "alice", attributes, SystemTime::now(), &Lifetimes::default());
    AuditEvent::of(kind, &session, SystemTime::now())
}

fn events(n: usize) -> Vec<AuditEvent> {
    (0..n).map(|_| event(SessionChangeKind::Updated)).collect()
}

/// Polls `probe` until it yields a value, failing the test after [`PATIENCE`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, probe: impl FnMut() -> F) -> T {
    mesh_testkit::eventually(what, PATIENCE, probe).await
}

// ---------------------------------------------------------------------------------------
// The conformance suite: every check runs against every sink.

async fn an_appended_event_can_be_read_back(subject: Subject) {
    let sink = subject.sink;
    assert_eq!(sink.count().await.unwrap(), 0);
    let created = event(SessionChangeKind::Created);
    sink.append(std::slice::from_ref(&created)).await.unwrap();
    assert_eq!(sink.count().await.unwrap(), 1);
    assert_eq!(sink.get(&created.event_id).await.unwrap(), Some(created));
}

async fn events_of_every_kind_keep_every_field(subject: Subject) {
    let sink = subject.sink;
    let all: Vec<AuditEvent> = SessionChangeKind::ALL.into_iter().map(event).collect();
    sink.append(&all).await.unwrap();
    for expected in &all {
        assert_eq!(sink.get(&expected.event_id).await.unwrap().as_ref(), Some(expected), "{}", expected.kind);
    }
}

async fn a_duplicate_append_changes_nothing(subject: Subject) {
    let sink = subject.sink;
    let first = events(2);
    sink.append(&first).await.unwrap();
    let mut replayed = first[0].clone();
    replayed.version = Version::new(99).unwrap();
    replayed.attributes = None;
    sink.append(&[replayed, first[1].clone()]).await.unwrap();
    assert_eq!(sink.count().await.unwrap(), 2);
    assert_eq!(sink.get(&first[0].event_id).await.unwrap(), Some(first[0].clone()), "the first write wins");
}

async fn a_repeated_id_within_one_batch_is_stored_once(subject: Subject) {
    let sink = subject.sink;
    let original = event(SessionChangeKind::Touched);
    let twin = AuditEvent { version: Version::new(7).unwrap(), ..original.clone() };
    sink.append(&[original.clone(), twin, event(SessionChangeKind::Deleted)]).await.unwrap();
    assert_eq!(sink.count().await.unwrap(), 2);
    assert_eq!(sink.get(&original.event_id).await.unwrap(), Some(original));
}

async fn an_unknown_id_is_absent_and_an_empty_batch_is_fine(subject: Subject) {
    let sink = subject.sink;
    sink.append(&[]).await.unwrap();
    assert_eq!(sink.get("never-written").await.unwrap(), None);
    assert_eq!(sink.count().await.unwrap(), 0);
    sink.check().await.unwrap();
}

async fn a_large_batch_is_stored_whole(subject: Subject) {
    let sink = subject.sink;
    let batch = events(1000);
    sink.append(&batch).await.unwrap();
    sink.append(&batch[..500]).await.unwrap();
    assert_eq!(sink.count().await.unwrap(), 1000);
    assert_eq!(sink.get(&batch[999].event_id).await.unwrap().as_ref(), Some(&batch[999]));
}

/// One module per sink, one test per check of the suite.
macro_rules! conformance_suite {
    ($($sink:ident: $make:expr;)+) => {$(
        mod $sink {
            use super::*;

            #[tokio::test]
            async fn an_appended_event_can_be_read_back() {
                super::an_appended_event_can_be_read_back($make.await).await;
            }

            #[tokio::test]
            async fn events_of_every_kind_keep_every_field() {
                super::events_of_every_kind_keep_every_field($make.await).await;
            }

            #[tokio::test]
            async fn a_duplicate_append_changes_nothing() {
                super::a_duplicate_append_changes_nothing($make.await).await;
            }

            #[tokio::test]
            async fn a_repeated_id_within_one_batch_is_stored_once() {
                super::a_repeated_id_within_one_batch_is_stored_once($make.await).await;
            }

            #[tokio::test]
            async fn an_unknown_id_is_absent_and_an_empty_batch_is_fine() {
                super::an_unknown_id_is_absent_and_an_empty_batch_is_fine($make.await).await;
            }

            #[tokio::test]
            async fn a_large_batch_is_stored_whole() {
                super::a_large_batch_is_stored_whole($make.await).await;
            }
        }
    )+};
}

conformance_suite! {
    memory: memory_sink();
    json_lines: json_lines_sink();
    postgres: postgres_sink();
}

// ---------------------------------------------------------------------------------------
// The JSON lines file.

#[tokio::test]
async fn a_reopened_json_lines_sink_keeps_its_events_and_its_idempotency() {
    let folder = tempfile::tempdir().unwrap();
    let written = events(3);
    {
        let sink = JsonLinesAuditSink::open_in(folder.path()).await.unwrap();
        sink.append(&written).await.unwrap();
    }

    let reopened = JsonLinesAuditSink::open_in(folder.path()).await.unwrap();
    assert_eq!(reopened.count().await.unwrap(), 3);
    reopened.append(&written).await.unwrap();
    reopened.append(&events(1)).await.unwrap();

    assert_eq!(reopened.count().await.unwrap(), 4);
    assert_eq!(reopened.get(&written[1].event_id).await.unwrap().as_ref(), Some(&written[1]));
    let lines = std::fs::read_to_string(reopened.path()).unwrap();
    assert_eq!(lines.lines().count(), 4, "one line per event, none repeated");
}

#[tokio::test]
async fn a_half_written_last_line_is_cut_off_when_the_file_is_opened() {
    let folder = tempfile::tempdir().unwrap();
    let kept = event(SessionChangeKind::Created);
    JsonLinesAuditSink::open_in(folder.path()).await.unwrap().append(std::slice::from_ref(&kept)).await.unwrap();
    let path = folder.path().join(mesh_session::audit::AUDIT_FILE);
    let mut content = std::fs::read(&path).unwrap();
    content.extend_from_slice(br#"{"event_id":"half-writ"#);
    std::fs::write(&path, &content).unwrap();

    let sink = JsonLinesAuditSink::open(&path).await.unwrap();
    let added = event(SessionChangeKind::Updated);
    sink.append(std::slice::from_ref(&added)).await.unwrap();

    assert_eq!(sink.count().await.unwrap(), 2);
    let reopened = JsonLinesAuditSink::open(&path).await.unwrap();
    assert_eq!(reopened.get(&added.event_id).await.unwrap(), Some(added));
    assert_eq!(reopened.get(&kept.event_id).await.unwrap(), Some(kept));
}

#[tokio::test]
async fn a_damaged_line_in_the_middle_is_reported_with_its_number() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("audit.jsonl");
    let good = String::from_utf8(event(SessionChangeKind::Created).to_json()).unwrap();
    std::fs::write(&path, format!("{good}\nnot an event\n")).unwrap();

    let error = JsonLinesAuditSink::open(&path).await.unwrap_err();
    assert!(matches!(&error, AuditError::Corrupt(detail) if detail.contains("line 2")), "{error}");
}

// ---------------------------------------------------------------------------------------
// PostgreSQL.

async fn applied_migrations(server: &PostgresServer) -> i64 {
    let client = server.client().await.unwrap();
    client.query_one("SELECT count(*) FROM schema_migrations", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn migrations_run_twice_without_error_and_are_recorded_once() {
    let server = PostgresServer::start().await.unwrap();
    let sink = PostgresAuditSink::new(&server.url(), fast_options()).unwrap();
    sink.migrate().await.unwrap();
    sink.migrate().await.unwrap();
    PostgresAuditSink::open(&server.url(), fast_options()).await.unwrap();
    assert_eq!(applied_migrations(&server).await, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn two_sinks_migrating_at_once_apply_each_migration_once() {
    let server = PostgresServer::start().await.unwrap();
    let first = PostgresAuditSink::new(&server.url(), fast_options()).unwrap();
    let second = PostgresAuditSink::new(&server.url(), fast_options()).unwrap();

    let (a, b) = tokio::join!(first.migrate(), second.migrate());

    a.unwrap();
    b.unwrap();
    assert_eq!(applied_migrations(&server).await, MIGRATIONS.len() as i64);
    first.append(&events(1)).await.unwrap();
    assert_eq!(second.count().await.unwrap(), 1);
}

#[tokio::test]
async fn the_audit_table_refuses_updates_deletes_and_truncation() {
    let server = PostgresServer::start().await.unwrap();
    let sink = PostgresAuditSink::open(&server.url(), fast_options()).await.unwrap();
    sink.append(&events(1)).await.unwrap();
    let client = server.client().await.unwrap();

    for statement in ["UPDATE audit_events SET version = 2", "DELETE FROM audit_events", "TRUNCATE audit_events"] {
        let error = client.batch_execute(statement).await.unwrap_err();
        assert!(format!("{error:?}").contains("append-only"), "{statement}: {error:?}");
    }
    assert_eq!(sink.count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_stopped_database_is_reported_unavailable_within_the_connect_timeout() {
    let mut server = PostgresServer::start().await.unwrap();
    let sink = PostgresAuditSink::open(&server.url(), fast_options()).await.unwrap();
    server.stop().await;

    let started = Instant::now();
    let error = sink.append(&events(1)).await.unwrap_err();

    assert!(error.is_unavailable(), "{error}");
    assert!(sink.check().await.unwrap_err().is_unavailable());
    assert!(started.elapsed() < Duration::from_secs(10), "the failure came within the bounds");
    server.restart().await.unwrap();
    sink.append(&events(1)).await.unwrap();
    assert_eq!(sink.count().await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------
// The audit worker.

/// A sink that counts the failed calls (appends and checks) of the sink it wraps, so a test
/// knows how often the worker met an outage.
struct ObservedSink {
    inner: Arc<dyn AuditSink>,
    failed_calls: AtomicU64,
}

impl ObservedSink {
    fn new(inner: impl AuditSink) -> Arc<Self> {
        Arc::new(Self { inner: Arc::new(inner), failed_calls: AtomicU64::new(0) })
    }

    fn failed_calls(&self) -> u64 {
        self.failed_calls.load(Ordering::SeqCst)
    }

    fn observe<T>(&self, result: Result<T, AuditError>) -> Result<T, AuditError> {
        if result.is_err() {
            self.failed_calls.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
}

impl AuditSink for ObservedSink {
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move { self.observe(self.inner.append(events).await) })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        self.inner.count()
    }

    fn get<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<AuditEvent>, AuditError>> {
        self.inner.get(event_id)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move { self.observe(self.inner.check().await) })
    }
}

/// A memory sink that refuses (as a rejected write, not an outage) every batch holding the
/// event `refused`.
struct RefusingSink {
    inner: MemoryAuditSink,
    refused: String,
}

impl AuditSink for RefusingSink {
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            if events.iter().any(|event| event.event_id == self.refused) {
                return Err(AuditError::Rejected("the database refuses this event".into()));
            }
            self.inner.append(events).await
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        self.inner.count()
    }

    fn get<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<AuditEvent>, AuditError>> {
        self.inner.get(event_id)
    }

    fn check(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        self.inner.check()
    }
}

/// A memory job queue with fast retries and the default number of attempts (5).
fn fast_queue() -> Arc<dyn JobQueue> {
    Arc::new(MemoryJobQueue::new(JobQueueSettings {
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
        poll_interval: Duration::from_millis(5),
        ..JobQueueSettings::default()
    }))
}

/// Runs an [`AuditWorker`] with short waits; cancel the token to stop it.
fn spawn_worker(
    jobs: &Arc<dyn JobQueue>,
    sink: Arc<dyn AuditSink>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let worker = AuditWorker::new(jobs.clone(), sink, "test-audit-1")
        .with_block_for(Duration::from_millis(50))
        .with_outage_pause(Duration::from_millis(20), Duration::from_millis(200));
    (shutdown.clone(), tokio::spawn(worker.run(shutdown)))
}

async fn stop_worker(shutdown: CancellationToken, task: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, task).await.expect("the worker stops on shutdown").unwrap();
}

#[tokio::test]
async fn the_audit_worker_writes_enqueued_events_to_the_sink() {
    let jobs = fast_queue();
    let sink = Arc::new(MemoryAuditSink::default());
    let (shutdown, task) = spawn_worker(&jobs, sink.clone());
    let enqueued = events(20);
    for event in &enqueued {
        enqueue_audit(&*jobs, event).await.unwrap();
    }
    enqueue_audit(&*jobs, &enqueued[0]).await.unwrap();

    eventually("20 events are stored", || async { (sink.count().await.unwrap() == 20).then_some(()) }).await;
    eventually("the queue is drained", || async {
        (jobs.stats(&audit_queue(), AUDIT_GROUP).await.unwrap().depth() == 0).then_some(())
    })
    .await;
    stop_worker(shutdown, task).await;
    assert_eq!(sink.events(), enqueued, "in order, the duplicate job written once");
}

#[tokio::test]
async fn a_job_that_is_not_an_audit_event_is_dead_lettered_and_its_batch_is_written() {
    let jobs = fast_queue();
    let sink = Arc::new(MemoryAuditSink::default());
    // Enqueued before the worker starts, so the bad job arrives in one batch with the others.
    let enqueued = events(6);
    for event in &enqueued[..3] {
        enqueue_audit(&*jobs, event).await.unwrap();
    }
    let id = mesh_core::jobs::JobId::random();
    jobs.enqueue(&audit_queue(), &id, bytes::Bytes::from_static(b"not json")).await.unwrap();
    for event in &enqueued[3..] {
        enqueue_audit(&*jobs, event).await.unwrap();
    }
    let (shutdown, task) = spawn_worker(&jobs, sink.clone());

    let dead = dead_letters_once_drained(&jobs).await;
    stop_worker(shutdown, task).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.id, id);
    assert!(dead[0].error.contains("not an audit event"), "{}", dead[0].error);
    assert_eq!(sink.events(), enqueued, "the batch's good events are written once each");
}

#[tokio::test]
async fn an_event_the_sink_refuses_fails_alone_and_the_rest_of_its_batch_is_written() {
    let jobs = fast_queue();
    let enqueued = events(8);
    let refused = enqueued[3].event_id.clone();
    let sink = Arc::new(RefusingSink { inner: MemoryAuditSink::default(), refused: refused.clone() });
    for event in &enqueued {
        enqueue_audit(&*jobs, event).await.unwrap();
    }
    let (shutdown, task) = spawn_worker(&jobs, sink.clone());

    let dead = dead_letters_once_drained(&jobs).await;
    stop_worker(shutdown, task).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.id.as_str(), refused);
    let written: Vec<AuditEvent> = enqueued.iter().filter(|event| event.event_id != refused).cloned().collect();
    assert_eq!(sink.inner.events(), written, "every other event is written once, in order");
}

/// Waits until the audit queue has a dead letter and is otherwise drained; the dead letters.
async fn dead_letters_once_drained(jobs: &Arc<dyn JobQueue>) -> Vec<mesh_core::jobs::DeadLetter> {
    let dead = eventually("a job is dead-lettered", || async {
        let dead = jobs.dead_letters(&audit_queue(), 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    eventually("the queue is drained", || async {
        (jobs.stats(&audit_queue(), AUDIT_GROUP).await.unwrap().depth() == 0).then_some(())
    })
    .await;
    dead
}

/// Waits until PostgreSQL holds exactly the ids of `expected`, each once.
async fn wait_for_rows(server: &PostgresServer, expected: &[AuditEvent]) {
    let client = server.client().await.unwrap();
    let wanted = expected.len() as i64;
    let (rows, distinct) = eventually(&format!("{wanted} audit rows exist"), || async {
        let row = client.query_one("SELECT count(*), count(DISTINCT event_id) FROM audit_events", &[]).await.ok()?;
        let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
        (rows >= wanted).then_some((rows, distinct))
    })
    .await;
    assert_eq!((rows, distinct), (wanted, wanted), "none lost, none doubled");
    let stored: HashSet<String> =
        client.query("SELECT event_id FROM audit_events", &[]).await.unwrap().iter().map(|row| row.get(0)).collect();
    let wanted_ids: HashSet<String> = expected.iter().map(|event| event.event_id.clone()).collect();
    assert_eq!(stored, wanted_ids);
}

/// Waits until the audit queue is drained, and checks nothing was dead-lettered.
async fn wait_for_drained_queue(jobs: &Arc<dyn JobQueue>) {
    let stats = eventually("the audit queue is drained", || async {
        let stats = jobs.stats(&audit_queue(), AUDIT_GROUP).await.unwrap();
        (stats.depth() == 0).then_some(stats)
    })
    .await;
    assert_eq!(stats.dead, 0, "no audit event was dead-lettered");
}

#[tokio::test]
async fn audit_events_enqueued_while_postgres_is_down_arrive_exactly_once_when_it_is_back() {
    let mut server = PostgresServer::start().await.unwrap();
    let postgres = PostgresAuditSink::open(&server.url(), fast_options()).await.unwrap();
    let sink = ObservedSink::new(postgres);
    let jobs = fast_queue();
    server.stop().await;

    let enqueued = events(100);
    for event in &enqueued {
        enqueue_audit(&*jobs, event).await.unwrap();
    }
    let (shutdown, task) = spawn_worker(&jobs, sink.clone());
    eventually("the worker met the outage", || async { (sink.failed_calls() > 0).then_some(()) }).await;
    let waiting = jobs.stats(&audit_queue(), AUDIT_GROUP).await.unwrap();
    assert_eq!((waiting.depth(), waiting.dead), (100, 0), "the events wait in the queue");
    server.restart().await.unwrap();

    wait_for_rows(&server, &enqueued).await;
    wait_for_drained_queue(&jobs).await;
    stop_worker(shutdown, task).await;
    assert_eq!(sink.count().await.unwrap(), 100);
}

#[tokio::test]
async fn an_audit_worker_that_loses_postgres_mid_stream_resumes_without_loss() {
    let mut server = PostgresServer::start().await.unwrap();
    let postgres = PostgresAuditSink::open(&server.url(), fast_options()).await.unwrap();
    let sink = ObservedSink::new(postgres);
    let jobs = fast_queue();
    let (shutdown, task) = spawn_worker(&jobs, sink.clone());
    let enqueued = events(60);
    for event in &enqueued[..30] {
        enqueue_audit(&*jobs, event).await.unwrap();
    }
    wait_for_rows(&server, &enqueued[..30]).await;

    server.stop().await;
    for event in &enqueued[30..] {
        enqueue_audit(&*jobs, event).await.unwrap();
    }
    eventually("the worker met the outage", || async { (sink.failed_calls() > 0).then_some(()) }).await;
    server.restart().await.unwrap();

    wait_for_rows(&server, &enqueued).await;
    wait_for_drained_queue(&jobs).await;
    stop_worker(shutdown, task).await;
}

#[tokio::test]
async fn an_outage_longer_than_the_retry_schedule_sends_no_audit_event_to_the_dead_letters() {
    let mut server = PostgresServer::start().await.unwrap();
    let postgres = PostgresAuditSink::open(&server.url(), fast_options()).await.unwrap();
    let sink = ObservedSink::new(postgres);
    let jobs = fast_queue();
    server.stop().await;
    let waiting = event(SessionChangeKind::Deleted);
    enqueue_audit(&*jobs, &waiting).await.unwrap();

    let (shutdown, task) = spawn_worker(&jobs, sink.clone());
    let attempts = JobQueueSettings::default().max_attempts as u64;
    eventually("the worker has tried the stopped database twice as often as a job may be attempted", || async {
        let stats = jobs.stats(&audit_queue(), AUDIT_GROUP).await.unwrap();
        assert_eq!(stats.dead, 0, "an audit event was dead-lettered during the outage");
        (sink.failed_calls() >= 2 * attempts).then_some(())
    })
    .await;
    server.restart().await.unwrap();

    wait_for_rows(&server, std::slice::from_ref(&waiting)).await;
    wait_for_drained_queue(&jobs).await;
    stop_worker(shutdown, task).await;
}
