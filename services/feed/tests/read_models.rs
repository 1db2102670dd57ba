//! Conformance suite of the read models, and the projector over them: every check runs
//! against [`MemoryReadModel`] with the memory stores and broker, and against
//! [`RedisReadModel`] with the Redis ones (on a `redis-server` the test starts).

use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::backend::{RedisPool, redis_pool};
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{Broker, Epoch, HistorySettings, Position};
use mesh_core::config::RedisSettings;
use mesh_feed::domain::{Activity, ActivityId, FeedName, NewActivity};
use mesh_feed::projector::Projector;
use mesh_feed::store::read_model::Change;
use mesh_feed::store::{
    ActivityStore, Deleter, MemoryActivityStore, MemoryReadModel, ReadModel, RedisActivityStore, RedisReadModel,
};
use mesh_testkit::RedisServer;

struct Fixture {
    store: Arc<dyn ActivityStore>,
    models: Arc<dyn ReadModel>,
    broker: Arc<dyn Broker>,
    pool: Option<RedisPool>,
    _server: Option<RedisServer>,
}

impl Fixture {
    async fn start(redis: bool) -> Self {
        let history = HistorySettings { size: 2000, ..HistorySettings::default() };
        if !redis {
            let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(history));
            return Self {
                store: Arc::new(MemoryActivityStore::new(broker.clone())),
                models: Arc::new(MemoryReadModel::default()),
                broker,
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
            pool: Some(pool),
            _server: Some(server),
        }
    }

    fn projector(&self) -> Projector {
        Projector::new(self.broker.clone(), self.models.clone(), 2000)
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
        let new = NewActivity::parse("post", Some(("post", "1")), "", []).unwrap();
        let activity = Activity::new(ActivityId::generate(), tenant, actor, new, SystemTime::now());
        self.store.publish(activity, None).await.unwrap().activity
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
    let rebuilt = Projector::new(fixture.broker.clone(), models.clone(), 2000);
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
            (Arc::new(MemoryActivityStore::new(broker.clone())), broker)
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
        let new = NewActivity::parse("post", Some(("post", "1")), "", []).unwrap();
        let activity = Activity::new(ActivityId::generate(), "acme", "alice", new, SystemTime::now());
        after.push(store.publish(activity, None).await.unwrap().activity.id);
    }
    Projector::new(broker, fixture.models.clone(), 2000).catch_up("acme", &FeedName::Global).await.unwrap();
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
    let projector = Projector::new(fixture.broker.clone(), fixture.models.clone(), 1000);
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
