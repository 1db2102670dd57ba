//! Conformance suite of the read models, and the projector over them: every check runs
//! against [`MemoryReadModel`] with the memory stores and broker, and against
//! [`RedisReadModel`] with the Redis ones (on a `redis-server` the test starts).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::backend::{RedisPool, redis_pool};
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{Broker, Epoch, HistorySettings, Position};
use mesh_core::config::RedisSettings;
use mesh_core::jobs::{Job, JobQueue, JobQueueSettings, MemoryJobQueue, RedisJobQueue};
use mesh_feed::domain::{Activity, ActivityId, FeedError, FeedName, NewActivity};
use mesh_feed::projection::{self, ARCHIVE_GROUP, READ_MODELS_GROUP, create_groups, feed_queue};
use mesh_feed::projector::{Projector, Rebuilt};
use mesh_feed::store::read_model::Change;
use mesh_feed::store::{
    ActivityStore, Deleter, FeedArchive, MemoryActivityStore, MemoryFeedArchive, MemoryReadModel, ReadModel,
    RedisActivityStore, RedisFeedArchive, RedisReadModel,
};
use mesh_testkit::RedisServer;

struct Fixture {
    store: Arc<dyn ActivityStore>,
    models: Arc<dyn ReadModel>,
    broker: Arc<dyn Broker>,
    jobs: Arc<dyn JobQueue>,
    archive: Arc<dyn FeedArchive>,
    pool: Option<RedisPool>,
    _server: Option<RedisServer>,
}

impl Fixture {
    /// The fixture, with the feed queue's consumer groups created (as meshd does).
    async fn start(redis: bool) -> Self {
        let fixture = Self::build(redis).await;
        create_groups(&*fixture.jobs).await.unwrap();
        fixture
    }

    async fn build(redis: bool) -> Self {
        let history = HistorySettings { size: 2000, ..HistorySettings::default() };
        if !redis {
            let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(history));
            let jobs: Arc<dyn JobQueue> = Arc::new(MemoryJobQueue::new(JobQueueSettings::default()));
            return Self {
                store: Arc::new(MemoryActivityStore::new(broker.clone(), jobs.clone())),
                models: Arc::new(MemoryReadModel::default()),
                broker,
                jobs,
                archive: Arc::new(MemoryFeedArchive::default()),
                pool: None,
                _server: None,
            };
        }
        let server = RedisServer::start().await.expect("redis-server starts");
        let settings = RedisSettings { pool_size: 16, ..RedisSettings::default() };
        let pool = redis_pool(&server.url(), &settings).expect("a valid redis url");
        Self {
            store: Arc::new(RedisActivityStore::new(pool.clone(), history)),
            models: Arc::new(RedisReadModel::new(pool.clone())),
            broker: Arc::new(RedisBroker::new(pool.clone(), history)),
            jobs: Arc::new(RedisJobQueue::new(pool.clone(), JobQueueSettings::default())),
            archive: Arc::new(RedisFeedArchive::new(pool.clone())),
            pool: Some(pool),
            _server: Some(server),
        }
    }

    fn projector(&self) -> Projector {
        self.projector_of(self.broker.clone(), self.models.clone(), 2000)
    }

    fn projector_of(&self, broker: Arc<dyn Broker>, models: Arc<dyn ReadModel>, batch: usize) -> Projector {
        Projector::new(broker, models, self.archive.clone(), batch)
    }

    /// The feed jobs waiting for `group`, claimed (not acknowledged).
    async fn claim(&self, group: &str) -> Vec<Job> {
        let mut jobs = Vec::new();
        loop {
            let claimed = self.jobs.claim(&feed_queue(), group, "test", 500, Duration::ZERO).await.unwrap();
            if claimed.is_empty() {
                return jobs;
            }
            jobs.extend(claimed.into_iter().map(|delivery| delivery.job));
        }
    }

    /// Runs the archive consumer over every job waiting for it.
    async fn archive_all(&self) {
        let jobs = self.claim(ARCHIVE_GROUP).await;
        assert!(projection::archive(&*self.archive, jobs).await.iter().all(Result::is_ok));
    }

    /// Fresh, empty read models over the same data (what flushing them leaves).
    async fn flushed(&self) -> Arc<dyn ReadModel> {
        match &self.pool {
            None => Arc::new(MemoryReadModel::default()),
            Some(pool) => {
                let mut connection = pool.get().await.unwrap();
                let keys: Vec<String> =
                    ::redis::cmd("KEYS").arg("t:*:feed:model:*").query_async(&mut *connection).await.unwrap();
                if !keys.is_empty() {
                    let () = ::redis::cmd("DEL").arg(keys).query_async(&mut *connection).await.unwrap();
                }
                self.models.clone()
            }
        }
    }

    async fn publish(&self, tenant: &str, actor: &str) -> Activity {
        publish_on(&*self.store, tenant, actor).await
    }

    /// A store and broker on the fixture's backend (and job queue) whose channels keep only
    /// the newest `size` events.
    fn short_history(&self, size: usize) -> (Arc<dyn ActivityStore>, Arc<dyn Broker>) {
        let short = HistorySettings { size, ..HistorySettings::default() };
        match &self.pool {
            None => {
                let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(short));
                (Arc::new(MemoryActivityStore::new(broker.clone(), self.jobs.clone())), broker)
            }
            Some(pool) => (
                Arc::new(RedisActivityStore::new(pool.clone(), short)),
                Arc::new(RedisBroker::new(pool.clone(), short)),
            ),
        }
    }

    /// Every id of `feed`, newest first, paging `page` at a time.
    async fn list(&self, models: &dyn ReadModel, tenant: &str, feed: &FeedName, page: usize) -> Vec<ActivityId> {
        let mut ids = Vec::new();
        let mut before = None;
        loop {
            let slice = models.page(tenant, feed, before, page).await.unwrap();
            let Some((last, _)) = slice.entries.last() else { return ids };
            before = Some(*last);
            ids.extend(slice.entries.into_iter().map(|(_, id)| id));
        }
    }
}

/// Publishes an activity of `actor` in `tenant` through `store`.
async fn publish_on(store: &dyn ActivityStore, tenant: &str, actor: &str) -> Activity {
    let new = NewActivity::parse("post", Some(("post", "1")), "", []).unwrap();
    let activity = Activity::new(ActivityId::generate(), tenant, actor, new, SystemTime::now());
    store.publish(activity, None).await.unwrap().activity
}

fn position(offset: u64) -> Position {
    Position { offset, epoch: Epoch("e1".into()) }
}

mesh_testkit::conformance!(
    Fixture:
    apply_is_a_compare_and_set_on_the_watermark_and_trims_to_capacity,
    a_projected_feed_holds_the_newest_activities_in_order_and_pages_without_gaps,
    catching_up_twice_or_concurrently_applies_each_event_once,
    a_tombstone_removes_its_activity_from_every_feed,
    flushed_read_models_rebuild_identically,
    catching_up_while_activities_are_published_loses_none,
    a_feed_whose_history_expired_keeps_its_entries_and_goes_on,
    a_build_while_publishing_past_the_batch_never_leaves_the_feed_empty,
    the_read_model_consumer_projects_each_job_and_a_job_twice_changes_nothing,
    flushed_read_models_rebuild_from_the_archive_identically,
    a_rebuild_uses_the_archives_unbroken_run_and_history_for_the_rest,
    a_rebuild_refuses_while_the_archive_is_behind_history,
    a_feed_behind_its_history_is_rebuilt_from_the_archive,
);

async fn apply_is_a_compare_and_set_on_the_watermark_and_trims_to_capacity(fixture: Fixture) {
    let models = &fixture.models;
    let feed = FeedName::actor("alice");
    assert_eq!(models.watermark("acme", &feed).await.unwrap(), None);
    let adds: Vec<Change> = (1..=150).map(|_| Change::Add { id: ActivityId::generate() }).collect();
    assert!(models.apply("acme", &feed, None, false, &adds, &position(150)).await.unwrap());
    assert!(!models.apply("acme", &feed, None, false, &adds, &position(150)).await.unwrap(), "stale expectation");
    assert_eq!(models.watermark("acme", &feed).await.unwrap(), Some(position(150)));
    let page = models.page("acme", &feed, None, 1000).await.unwrap();
    assert_eq!(page.entries.len(), 100, "an actor's feed keeps 100");
    assert_eq!(page.entries.first().map(|(offset, _)| *offset), Some(150));
    assert_eq!(page.entries.last().map(|(offset, _)| *offset), Some(51));
    let Change::Add { id } = &adds[149] else { unreachable!() };
    let remove = [Change::Remove { id: id.clone() }];
    assert!(models.apply("acme", &feed, Some(&position(150)), false, &remove, &position(151)).await.unwrap());
    assert_eq!(models.page("acme", &feed, None, 1).await.unwrap().entries[0].0, 149);
    assert!(models.page("other", &feed, None, 10).await.unwrap().entries.is_empty(), "per tenant");
}

async fn a_projected_feed_holds_the_newest_activities_in_order_and_pages_without_gaps(fixture: Fixture) {
    let mut published = Vec::new();
    for i in 0..1500 {
        published.push(fixture.publish("acme", if i % 3 == 0 { "alice" } else { "bob" }).await);
    }
    let projector = fixture.projector();
    projector.catch_up("acme", &FeedName::Global).await.unwrap();
    projector.catch_up("acme", &FeedName::actor("alice")).await.unwrap();

    let newest: Vec<ActivityId> = published.iter().rev().take(1000).map(|activity| activity.id.clone()).collect();
    assert_eq!(fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 37).await, newest);
    let alice: Vec<ActivityId> =
        published.iter().rev().filter(|a| a.actor == "alice").take(100).map(|a| a.id.clone()).collect();
    assert_eq!(fixture.list(fixture.models.as_ref(), "acme", &FeedName::actor("alice"), 30).await, alice);
    let watermark = fixture.models.watermark("acme", &FeedName::Global).await.unwrap().unwrap();
    assert_eq!(watermark.offset, 1500);
}

async fn catching_up_twice_or_concurrently_applies_each_event_once(fixture: Fixture) {
    let fixture = Arc::new(fixture);
    for _ in 0..50 {
        fixture.publish("acme", "alice").await;
    }
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let fixture = fixture.clone();
            tokio::spawn(async move { fixture.projector().catch_up("acme", &FeedName::Global).await })
        })
        .collect();
    for run in runs {
        run.await.unwrap().unwrap();
    }
    let once = fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 100).await;
    assert_eq!(once.len(), 50);
    fixture.projector().catch_up("acme", &FeedName::Global).await.unwrap();
    assert_eq!(fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 100).await, once, "nothing changed");
}

async fn a_tombstone_removes_its_activity_from_every_feed(fixture: Fixture) {
    let kept = fixture.publish("acme", "alice").await;
    let gone = fixture.publish("acme", "alice").await;
    fixture.store.delete("acme", &gone.id, Deleter { user: "alice", admin: false }, SystemTime::now()).await.unwrap();
    let projector = fixture.projector();
    for feed in [FeedName::Global, FeedName::actor("alice")] {
        projector.catch_up("acme", &feed).await.unwrap();
        let ids = fixture.list(fixture.models.as_ref(), "acme", &feed, 10).await;
        assert_eq!(ids, std::slice::from_ref(&kept.id), "{feed}");
    }
}

async fn flushed_read_models_rebuild_identically(fixture: Fixture) {
    for i in 0..120 {
        fixture.publish("acme", if i % 2 == 0 { "alice" } else { "bob" }).await;
    }
    let projector = fixture.projector();
    let feeds = [FeedName::Global, FeedName::actor("alice"), FeedName::actor("bob")];
    let mut before = Vec::new();
    for feed in &feeds {
        projector.catch_up("acme", feed).await.unwrap();
        before.push(fixture.list(fixture.models.as_ref(), "acme", feed, 25).await);
    }
    let models = fixture.flushed().await;
    let rebuilt = fixture.projector_of(fixture.broker.clone(), models.clone(), 2000);
    for (feed, before) in feeds.iter().zip(before) {
        rebuilt.catch_up("acme", feed).await.unwrap();
        assert_eq!(fixture.list(models.as_ref(), "acme", feed, 25).await, before, "{feed}");
    }
}

async fn catching_up_while_activities_are_published_loses_none(fixture: Fixture) {
    let fixture = Arc::new(fixture);
    let publisher = {
        let fixture = fixture.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..200 {
                ids.push(fixture.publish("acme", "alice").await.id);
            }
            ids
        })
    };
    let projectors: Vec<_> = (0..3)
        .map(|_| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    fixture.projector().catch_up("acme", &FeedName::Global).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut ids = publisher.await.unwrap();
    for projector in projectors {
        projector.await.unwrap();
    }
    fixture.projector().catch_up("acme", &FeedName::Global).await.unwrap();
    ids.reverse();
    assert_eq!(fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 64).await, ids);
}

async fn a_feed_whose_history_expired_keeps_its_entries_and_goes_on(fixture: Fixture) {
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(fixture.publish("acme", "alice").await.id);
    }
    fixture.projector().catch_up("acme", &FeedName::Global).await.unwrap();
    // What an idle hour does to a channel: its history (and epoch) is gone.
    let (store, broker): (Arc<dyn ActivityStore>, Arc<dyn Broker>) = match &fixture.pool {
        None => {
            let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(HistorySettings::default()));
            (Arc::new(MemoryActivityStore::new(broker.clone(), fixture.jobs.clone())), broker)
        }
        Some(pool) => {
            let mut connection = pool.get().await.unwrap();
            let keys: Vec<String> =
                ::redis::cmd("KEYS").arg("t:acme:ch:*").query_async(&mut *connection).await.unwrap();
            let () = ::redis::cmd("DEL").arg(keys).query_async(&mut *connection).await.unwrap();
            (fixture.store.clone(), fixture.broker.clone())
        }
    };
    let mut after = Vec::new();
    for _ in 0..2 {
        after.push(publish_on(&*store, "acme", "alice").await.id);
    }
    fixture.projector_of(broker, fixture.models.clone(), 2000).catch_up("acme", &FeedName::Global).await.unwrap();
    let expected: Vec<ActivityId> = after.into_iter().rev().chain(before.into_iter().rev()).collect();
    assert_eq!(fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 2).await, expected);
}

async fn a_build_while_publishing_past_the_batch_never_leaves_the_feed_empty(fixture: Fixture) {
    let fixture = Arc::new(fixture);
    for _ in 0..1100 {
        fixture.publish("acme", "alice").await;
    }
    let publisher = {
        let fixture = fixture.clone();
        tokio::spawn(async move {
            let mut last = None;
            for _ in 0..100 {
                last = Some(fixture.publish("acme", "alice").await.id);
            }
            last.unwrap()
        })
    };
    // A projector whose batch equals the global feed's capacity, on an empty model.
    let projector = fixture.projector_of(fixture.broker.clone(), fixture.models.clone(), 1000);
    for _ in 0..20 {
        projector.catch_up("acme", &FeedName::Global).await.unwrap();
        let listed = fixture.models.page("acme", &FeedName::Global, None, 1000).await.unwrap();
        assert!(listed.entries.len() >= 800, "the build keeps the newest events: {}", listed.entries.len());
    }
    let last = publisher.await.unwrap();
    projector.catch_up("acme", &FeedName::Global).await.unwrap();
    let newest = fixture.models.page("acme", &FeedName::Global, None, 1).await.unwrap();
    assert_eq!(newest.entries[0].1, last);
}

async fn the_read_model_consumer_projects_each_job_and_a_job_twice_changes_nothing(fixture: Fixture) {
    let mut published = Vec::new();
    for i in 0..30 {
        published.push(fixture.publish("acme", if i % 2 == 0 { "alice" } else { "bob" }).await.id);
    }
    let gone = published.remove(4);
    fixture.store.delete("acme", &gone, Deleter { user: "alice", admin: true }, SystemTime::now()).await.unwrap();
    let jobs = fixture.claim(READ_MODELS_GROUP).await;
    assert_eq!(jobs.len(), 31);
    let projector = fixture.projector();
    assert!(projection::project(&projector, jobs.clone()).await.iter().all(Result::is_ok));
    published.reverse();
    let global = fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 7).await;
    assert_eq!(global, published);
    let alice = fixture.list(fixture.models.as_ref(), "acme", &FeedName::actor("alice"), 7).await;
    assert_eq!(alice.len(), 14);
    // On flushed models, the same jobs delivered twice at once (two consumers, one of
    // them in reverse order): each event is applied once.
    let models = fixture.flushed().await;
    let projector = Arc::new(fixture.projector_of(fixture.broker.clone(), models.clone(), 2000));
    let twice = [jobs.clone(), jobs.iter().rev().cloned().collect()].map(|jobs| {
        let projector = projector.clone();
        tokio::spawn(async move { projection::project(&projector, jobs).await })
    });
    for run in twice {
        assert!(run.await.unwrap().iter().all(Result::is_ok));
    }
    assert_eq!(fixture.list(models.as_ref(), "acme", &FeedName::Global, 7).await, global);
    assert_eq!(fixture.list(models.as_ref(), "acme", &FeedName::actor("alice"), 7).await, alice);
}

async fn a_rebuild_uses_the_archives_unbroken_run_and_history_for_the_rest(fixture: Fixture) {
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(fixture.publish("acme", "alice").await.id);
    }
    // The archive holds the first 100 and the last 100: a batch in the middle is still
    // waiting for its retry.
    let jobs = fixture.claim(ARCHIVE_GROUP).await;
    let (first, rest) = jobs.split_at(100);
    let archived: Vec<_> = first.iter().chain(&rest[100..]).cloned().collect();
    assert!(projection::archive(&*fixture.archive, archived).await.iter().all(Result::is_ok));
    let models = fixture.flushed().await;
    let rebuilt = fixture.projector_of(fixture.broker.clone(), models.clone(), 2000).rebuild("acme").await.unwrap();
    assert_eq!(rebuilt, Rebuilt { feeds: 2, entries: 300 + 100 });
    ids.reverse();
    assert_eq!(fixture.list(models.as_ref(), "acme", &FeedName::Global, 64).await, ids);
}

async fn a_rebuild_refuses_while_the_archive_is_behind_history(fixture: Fixture) {
    let (store, broker) = fixture.short_history(50);
    for _ in 0..200 {
        publish_on(&*store, "acme", "alice").await;
    }
    let projector = fixture.projector_of(broker, fixture.models.clone(), 50);
    projector.catch_up("acme", &FeedName::Global).await.unwrap();
    let before = fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 64).await;
    // Only the first 100 are archived: history (the newest 50) does not reach them.
    let jobs = fixture.claim(ARCHIVE_GROUP).await;
    assert!(projection::archive(&*fixture.archive, jobs[..100].to_vec()).await.iter().all(Result::is_ok));
    assert_eq!(projector.rebuild("acme").await, Err(FeedError::ArchiveBehind));
    assert_eq!(fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 64).await, before, "untouched");
}

async fn flushed_read_models_rebuild_from_the_archive_identically(fixture: Fixture) {
    let feeds = [FeedName::Global, FeedName::actor("alice"), FeedName::actor("bob"), FeedName::actor("carol")];
    let projector = fixture.projector();
    let catch_up = || async {
        for feed in &feeds {
            projector.catch_up("acme", feed).await.unwrap();
        }
    };
    // Projected as it goes, as the read-model consumer does: trimmed on write, then the
    // tombstones leave holes.
    let mut ids = Vec::new();
    for i in 0..1500 {
        ids.push(fixture.publish("acme", ["alice", "bob", "carol"][i % 3]).await.id);
        if i % 50 == 49 {
            catch_up().await;
        }
    }
    for id in ids.iter().rev().step_by(7).take(30) {
        fixture.store.delete("acme", id, Deleter { user: "x", admin: true }, SystemTime::now()).await.unwrap();
    }
    fixture.publish("other", "alice").await;
    fixture.archive_all().await;
    catch_up().await;
    let mut before = Vec::new();
    for feed in &feeds {
        before.push(fixture.list(fixture.models.as_ref(), "acme", feed, 64).await);
    }
    assert_eq!(before[0].len(), 970);

    let models = fixture.flushed().await;
    let rebuilt = fixture.projector_of(fixture.broker.clone(), models.clone(), 2000).rebuild("acme").await.unwrap();
    assert_eq!(rebuilt, Rebuilt { feeds: 4, entries: 970 + 3 * 100 - 30 });
    for (feed, before) in feeds.iter().zip(before) {
        assert_eq!(fixture.list(models.as_ref(), "acme", feed, 64).await, before, "{feed}");
    }
    assert!(fixture.list(models.as_ref(), "other", &FeedName::Global, 64).await.is_empty(), "per tenant");
}

async fn a_feed_behind_its_history_is_rebuilt_from_the_archive(fixture: Fixture) {
    let (store, broker) = fixture.short_history(50);
    let projector = fixture.projector_of(broker, fixture.models.clone(), 50);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(publish_on(&*store, "acme", "alice").await.id);
    }
    projector.catch_up("acme", &FeedName::Global).await.unwrap();
    // 290 more while the model stands still: history no longer reaches its watermark.
    for _ in 0..290 {
        ids.push(publish_on(&*store, "acme", "alice").await.id);
    }
    fixture.archive_all().await;
    projector.catch_up("acme", &FeedName::Global).await.unwrap();
    ids.reverse();
    assert_eq!(fixture.list(fixture.models.as_ref(), "acme", &FeedName::Global, 64).await, ids);
}
