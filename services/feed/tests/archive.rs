//! Conformance suite of the feed archive: every check runs against [`MemoryFeedArchive`],
//! against [`RedisFeedArchive`] (on a `redis-server` the test starts) and against
//! [`DocumentFeedArchive`] on [`MemoryDocuments`] and on [`FirestoreDocuments`] (on a private
//! Firestore emulator the test starts).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::backend::{RedisPool, redis_pool};
use mesh_core::broker::{Epoch, Position};
use mesh_core::config::RedisSettings;
use mesh_core::documents::{
    BoxFuture, Committed, DocKey, Document, DocumentError, DocumentStore, Expect, FirestoreDocuments, MemoryDocuments,
    Page, Query, Write,
};
use mesh_feed::FeedError;
use mesh_feed::domain::{Activity, ActivityId, FeedEvent, FeedName, NewActivity, Tombstone};
use mesh_feed::store::{ArchivedEvent, DocumentFeedArchive, FeedArchive, MemoryFeedArchive, RedisFeedArchive};
use mesh_testkit::{FirestoreEmulator, RedisServer};
use serde_json::json;

/// The archive under test, and the server it needs (stopped on drop).
struct Fixture {
    archive: Arc<dyn FeedArchive>,
    _redis: Option<RedisServer>,
    _emulator: Option<FirestoreEmulator>,
}

#[derive(Clone, Copy)]
enum Backend {
    Memory,
    Redis,
    /// [`DocumentFeedArchive`] on [`MemoryDocuments`].
    MemoryDocuments,
    /// [`DocumentFeedArchive`] on [`FirestoreDocuments`] and the emulator.
    Firestore,
}

impl Fixture {
    async fn start(backend: Backend) -> Self {
        let fixture = |archive: Arc<dyn FeedArchive>| Self { archive, _redis: None, _emulator: None };
        match backend {
            Backend::Memory => fixture(Arc::new(MemoryFeedArchive::default())),
            Backend::Redis => {
                let (pool, server) = redis_archive_pool().await;
                Self { _redis: Some(server), ..fixture(Arc::new(RedisFeedArchive::new(pool))) }
            }
            Backend::MemoryDocuments => fixture(Arc::new(DocumentFeedArchive::new(Arc::new(MemoryDocuments::new())))),
            Backend::Firestore => {
                let (documents, emulator) = firestore_documents().await;
                Self { _emulator: Some(emulator), ..fixture(Arc::new(DocumentFeedArchive::new(documents))) }
            }
        }
    }
}

/// Runs each check against every backend: `memory::check`, `redis::check`,
/// `memory_documents::check` and `firestore::check`; the servers' on a 4-worker runtime, so
/// concurrency checks meet real parallelism.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
              async fn $name() { super::$name(super::Fixture::start(super::Backend::Memory).await).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::Fixture::start(super::Backend::Redis).await).await })*
        }
        mod memory_documents {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::Fixture::start(super::Backend::MemoryDocuments).await).await })*
        }
        mod firestore {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::Fixture::start(super::Backend::Firestore).await).await })*
        }
    };
}

async fn firestore_documents() -> (Arc<dyn DocumentStore>, FirestoreEmulator) {
    let emulator = FirestoreEmulator::start().await.expect("the firestore emulator starts");
    let documents = FirestoreDocuments::connect(&emulator.settings()).await.expect("firestore connects");
    (Arc::new(documents), emulator)
}

async fn redis_archive_pool() -> (RedisPool, RedisServer) {
    let server = RedisServer::start().await.expect("redis-server starts");
    let settings = RedisSettings { pool_size: 16, ..RedisSettings::default() };
    (redis_pool(&server.url(), &settings).expect("a valid redis url"), server)
}

/// A time `seconds` after a fixed start.
fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn position(offset: u64, epoch: &str) -> Position {
    Position { offset, epoch: Epoch(epoch.into()) }
}

/// The publication of a new activity of `actor` at `time`, at `global` and `own` in the
/// actor's feed.
fn published(tenant: &str, actor: &str, time: SystemTime, global: Position, own: Position) -> ArchivedEvent {
    let new = NewActivity::parse("post", Some(("post", "1")), "hello", []).unwrap();
    let activity = Activity::new(ActivityId::generate(), tenant, actor, new, time);
    ArchivedEvent {
        event: FeedEvent::Published(activity),
        positions: vec![(FeedName::Global, global), (FeedName::actor(actor), own)],
    }
}

/// `event` with other positions (what a conflicting second write would carry).
fn moved(event: &ArchivedEvent, by: u64) -> ArchivedEvent {
    let mut moved = event.clone();
    for (_, position) in &mut moved.positions {
        position.offset += by;
    }
    moved
}

/// 1,500 publications of alice, bob and carol in turn: global offsets 1.. in epoch `g`, each
/// actor's offsets 1.. in epoch `a`.
fn fifteen_hundred(tenant: &str) -> Vec<ArchivedEvent> {
    let actors = ["alice", "bob", "carol"];
    let mut own = [0u64; 3];
    (0..1500u64)
        .map(|i| {
            let actor = (i % 3) as usize;
            own[actor] += 1;
            let time = at(0) + Duration::from_millis(i);
            published(tenant, actors[actor], time, position(i + 1, "g"), position(own[actor], "a"))
        })
        .collect()
}

fn of_actor(events: &[ArchivedEvent], actor: &str) -> Vec<ArchivedEvent> {
    events.iter().filter(|archived| archived.event.actor() == actor).cloned().collect()
}

suite!(
    every_event_comes_back_in_its_feeds_in_offset_order,
    appending_again_or_concurrently_keeps_one_copy_of_the_first_write,
    a_tombstone_is_archived_beside_its_publication_and_follows_it,
    an_older_epoch_comes_first_whatever_its_text,
    a_tenant_never_sees_another_tenants_events,
    an_unknown_tenant_or_feed_has_no_events,
    an_event_twice_in_one_batch_keeps_its_first_copy,
);

async fn every_event_comes_back_in_its_feeds_in_offset_order(fixture: Fixture) {
    let events = fifteen_hundred("acme");
    // Out of order, in several batches: the archive orders them.
    for batch in events.chunks(400).rev() {
        let reversed: Vec<ArchivedEvent> = batch.iter().rev().cloned().collect();
        fixture.archive.append("acme", &reversed).await.unwrap();
    }

    assert_eq!(fixture.archive.events("acme", &FeedName::Global).await.unwrap(), events);
    for actor in ["alice", "bob", "carol"] {
        let own = fixture.archive.events("acme", &FeedName::actor(actor)).await.unwrap();
        assert_eq!(own.len(), 500, "{actor}");
        assert_eq!(own, of_actor(&events, actor), "{actor}");
    }
    let feeds = fixture.archive.feeds("acme").await.unwrap();
    let expected = [FeedName::actor("alice"), FeedName::actor("bob"), FeedName::actor("carol"), FeedName::Global];
    assert_eq!(feeds, expected);
}

async fn appending_again_or_concurrently_keeps_one_copy_of_the_first_write(fixture: Fixture) {
    let archive = &fixture.archive;
    let first: Vec<ArchivedEvent> = fifteen_hundred("acme").into_iter().take(300).collect();
    archive.append("acme", &first).await.unwrap();
    archive.append("acme", &first).await.unwrap();
    let feeds = archive.feeds("acme").await.unwrap();
    // The same events at other positions, one of them in a feed of its own.
    let mut conflicting: Vec<ArchivedEvent> = first.iter().map(|archived| moved(archived, 10_000)).collect();
    conflicting[0].positions.push((FeedName::actor("dave"), position(1, "d")));
    archive.append("acme", &conflicting).await.unwrap();
    assert_eq!(archive.events("acme", &FeedName::Global).await.unwrap(), first, "once each, as first written");
    assert_eq!(archive.events("acme", &FeedName::actor("alice")).await.unwrap(), of_actor(&first, "alice"));
    assert_eq!(archive.feeds("acme").await.unwrap(), feeds, "a second write adds no feed");

    // Two consumers at once, with overlapping batches that disagree on the overlap: each event
    // is kept whole in one version, its feeds agreeing with its record.
    let events = fifteen_hundred("other");
    let left: Vec<ArchivedEvent> = events[..900].to_vec();
    let right: Vec<ArchivedEvent> =
        events[600..].iter().enumerate().map(|(i, e)| if i < 300 { moved(e, 5_000) } else { e.clone() }).collect();
    let appends: Vec<_> = [left, right]
        .into_iter()
        .map(|batch| {
            let archive = archive.clone();
            tokio::spawn(async move { archive.append("other", &batch).await })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    let global = archive.events("other", &FeedName::Global).await.unwrap();
    assert_eq!(global.len(), 1500);
    let mut ids: Vec<String> = global.iter().map(|archived| archived.event.event_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1500, "one copy of each");
    let stored: std::collections::HashMap<String, &ArchivedEvent> =
        global.iter().map(|archived| (archived.event.event_id(), archived)).collect();
    for (i, original) in events.iter().enumerate() {
        let stored = stored[&original.event.event_id()];
        let either = (600..900).contains(&i) && *stored == moved(original, 5_000);
        assert!(stored == original || either, "event {i}: {stored:?}");
    }
    for actor in ["alice", "bob", "carol"] {
        let own = archive.events("other", &FeedName::actor(actor)).await.unwrap();
        assert_eq!(own, of_actor(&global, actor), "{actor}");
    }
}

async fn a_tombstone_is_archived_beside_its_publication_and_follows_it(fixture: Fixture) {
    let kept = published("acme", "alice", at(0), position(1, "g"), position(1, "a"));
    let gone = published("acme", "alice", at(1), position(2, "g"), position(2, "a"));
    let tombstone = ArchivedEvent {
        event: FeedEvent::Deleted(Tombstone {
            id: gone.event.activity_id().clone(),
            actor: "alice".into(),
            delete_time: at(2),
        }),
        positions: vec![(FeedName::Global, position(3, "g")), (FeedName::actor("alice"), position(3, "a"))],
    };
    assert_ne!(tombstone.event.event_id(), gone.event.event_id());
    fixture.archive.append("acme", &[tombstone.clone(), kept.clone()]).await.unwrap();
    fixture.archive.append("acme", std::slice::from_ref(&gone)).await.unwrap();

    let expected = [kept, gone, tombstone];
    assert_eq!(fixture.archive.events("acme", &FeedName::Global).await.unwrap(), expected);
    assert_eq!(fixture.archive.events("acme", &FeedName::actor("alice")).await.unwrap(), expected);
}

async fn an_older_epoch_comes_first_whatever_its_text(fixture: Fixture) {
    // The channel lost its history between the two: the new epoch starts at offset 1 again.
    let old: Vec<ArchivedEvent> =
        (1..=3).map(|i| published("acme", "alice", at(i), position(i, "zz-old"), position(i, "a-old"))).collect();
    let new: Vec<ArchivedEvent> = (1..=2)
        .map(|i| published("acme", "alice", at(3_600 + i), position(i, "aa-new"), position(i, "a-new")))
        .collect();
    fixture.archive.append("acme", &new).await.unwrap();
    fixture.archive.append("acme", &old).await.unwrap();

    let expected: Vec<ArchivedEvent> = old.into_iter().chain(new).collect();
    assert_eq!(fixture.archive.events("acme", &FeedName::Global).await.unwrap(), expected);
    assert_eq!(fixture.archive.events("acme", &FeedName::actor("alice")).await.unwrap(), expected);
}

async fn a_tenant_never_sees_another_tenants_events(fixture: Fixture) {
    let of_a = fifteen_hundred("a")[..30].to_vec();
    fixture.archive.append("a", &of_a).await.unwrap();
    assert!(fixture.archive.feeds("b").await.unwrap().is_empty());
    assert!(fixture.archive.events("b", &FeedName::Global).await.unwrap().is_empty());
    assert!(fixture.archive.events("b", &FeedName::actor("alice")).await.unwrap().is_empty());

    // The same activity ids in tenant b (other content) are b's own events.
    let of_b: Vec<ArchivedEvent> = of_a
        .iter()
        .map(|archived| {
            let FeedEvent::Published(activity) = &archived.event else { unreachable!() };
            let new = NewActivity::parse("like", Some(("post", "2")), "", []).unwrap();
            let activity = Activity::new(activity.id.clone(), "b", &activity.actor, new, at(9));
            ArchivedEvent { event: FeedEvent::Published(activity), positions: archived.positions.clone() }
        })
        .collect();
    fixture.archive.append("b", &of_b).await.unwrap();
    assert_eq!(fixture.archive.events("a", &FeedName::Global).await.unwrap(), of_a);
    assert_eq!(fixture.archive.events("b", &FeedName::Global).await.unwrap(), of_b);
    assert_eq!(fixture.archive.feeds("b").await.unwrap(), fixture.archive.feeds("a").await.unwrap());
}

async fn an_unknown_tenant_or_feed_has_no_events(fixture: Fixture) {
    assert!(fixture.archive.feeds("nobody").await.unwrap().is_empty());
    assert!(fixture.archive.events("nobody", &FeedName::Global).await.unwrap().is_empty());
    fixture.archive.append("acme", &fifteen_hundred("acme")[..3]).await.unwrap();
    fixture.archive.append("acme", &[]).await.unwrap();
    assert!(fixture.archive.events("acme", &FeedName::actor("dave")).await.unwrap().is_empty());
    assert_eq!(fixture.archive.feeds("acme").await.unwrap().len(), 4);
}

async fn an_event_twice_in_one_batch_keeps_its_first_copy(fixture: Fixture) {
    let events = fifteen_hundred("acme")[..3].to_vec();
    let batch =
        [events[0].clone(), moved(&events[0], 100), events[1].clone(), events[2].clone(), moved(&events[2], 100)];
    fixture.archive.append("acme", &batch).await.unwrap();
    assert_eq!(fixture.archive.events("acme", &FeedName::Global).await.unwrap(), events);
}

/// A document store that fails every commit once `commits` have succeeded: an archive
/// consumer that stops part-way through an append.
struct StoppingDocuments {
    inner: Arc<dyn DocumentStore>,
    commits: std::sync::atomic::AtomicUsize,
}

impl DocumentStore for StoppingDocuments {
    fn get<'a>(&'a self, keys: &'a [DocKey]) -> BoxFuture<'a, Result<Vec<Option<Document>>, DocumentError>> {
        self.inner.get(keys)
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Committed, DocumentError>> {
        use std::sync::atomic::Ordering;
        match self.commits.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)) {
            Ok(_) => self.inner.commit(writes),
            Err(_) => Box::pin(async { Err(DocumentError::Unavailable("stopped".into())) }),
        }
    }

    fn query<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Page, DocumentError>> {
        self.inner.query(query)
    }
}

/// Not part of the suite (only the document archive writes in several steps): an append that
/// stopped after any of its commits is completed by the next append of the same events, as
/// first written when the events were stored before it stopped.
async fn an_append_stopped_part_way_is_completed_by_the_next(documents: Arc<dyn DocumentStore>) {
    // Three events: one commit creates them, one writes their entries, one their feeds.
    for stop_after in 0..3 {
        let tenant = format!("t{stop_after}");
        let events = fifteen_hundred(&tenant)[..3].to_vec();
        let stopping = StoppingDocuments { inner: documents.clone(), commits: stop_after.into() };
        let result = DocumentFeedArchive::new(Arc::new(stopping)).append(&tenant, &events).await;
        assert!(matches!(result, Err(FeedError::Unavailable(_))), "{stop_after}: {result:?}");

        let archive = DocumentFeedArchive::new(documents.clone());
        let again: Vec<ArchivedEvent> = events.iter().map(|archived| moved(archived, 100)).collect();
        archive.append(&tenant, &again).await.unwrap();
        let expected = if stop_after == 0 { &again } else { &events };
        assert_eq!(&archive.events(&tenant, &FeedName::Global).await.unwrap(), expected, "{stop_after}");
        assert_eq!(&archive.events(&tenant, &FeedName::actor("alice")).await.unwrap(), &expected[..1]);
        assert_eq!(archive.feeds(&tenant).await.unwrap().len(), 4, "{stop_after}");
    }
}

#[tokio::test]
async fn an_append_stopped_part_way_in_memory_documents_is_completed_by_the_next() {
    an_append_stopped_part_way_is_completed_by_the_next(Arc::new(MemoryDocuments::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_stopped_part_way_in_firestore_is_completed_by_the_next() {
    let (documents, _emulator) = firestore_documents().await;
    an_append_stopped_part_way_is_completed_by_the_next(documents).await;
}

/// Not part of the suite: an entry document that does not decode is a backend fault, never
/// skipped.
#[tokio::test]
async fn a_document_entry_that_does_not_decode_is_unavailable() {
    let documents = Arc::new(MemoryDocuments::new());
    let archive = DocumentFeedArchive::new(documents.clone());
    archive.append("acme", &fifteen_hundred("acme")[..1]).await.unwrap();
    let fields = json!({ "key": "global:broken", "feed": "global", "event": "{", "positions": [] });
    let serde_json::Value::Object(fields) = fields else { unreachable!() };
    let key = DocKey::new("acme", "feed_archive_entries", "global:broken").unwrap();
    documents.commit(vec![Write::Put { key, fields, expect: Expect::Any }]).await.unwrap();
    let result = archive.events("acme", &FeedName::Global).await;
    assert!(matches!(result, Err(FeedError::Unavailable(_))), "{result:?}");
}

/// Not part of the suite (memory keeps no records to corrupt): a record that does not decode
/// is a backend fault, never skipped.
#[tokio::test]
async fn a_redis_record_that_does_not_decode_is_unavailable() {
    let (pool, _server) = redis_archive_pool().await;
    let archive = RedisFeedArchive::new(pool.clone());
    archive.append("acme", &fifteen_hundred("acme")[..1]).await.unwrap();
    let mut connection = pool.get().await.unwrap();
    let () = ::redis::cmd("HSET")
        .arg("t:acme:feed:archive:events")
        .arg("broken")
        .arg("{\"event\":")
        .query_async(&mut *connection)
        .await
        .unwrap();
    let () = ::redis::cmd("SADD")
        .arg("t:acme:feed:archive:feed:global")
        .arg("broken")
        .query_async(&mut *connection)
        .await
        .unwrap();
    let result = archive.events("acme", &FeedName::Global).await;
    assert!(matches!(result, Err(FeedError::Unavailable(_))), "{result:?}");
}
