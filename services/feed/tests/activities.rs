//! Conformance suite of the activity store: every check runs against
//! [`MemoryActivityStore`] (on a memory broker) and [`RedisActivityStore`] (on a Redis broker
//! and a `redis-server` the test starts). The feed log is read back through the broker.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::backend::redis_pool;
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{Broker, History, HistorySettings, Position};
use mesh_core::config::RedisSettings;
use mesh_core::jobs::{JobQueue, JobQueueSettings, MemoryJobQueue, RedisJobQueue};
use mesh_core::request_id::RequestId;
use mesh_feed::domain::{Activity, ActivityId, FeedError, FeedEvent, FeedName, NewActivity};
use mesh_feed::projection::{ARCHIVE_GROUP, FeedJob, READ_MODELS_GROUP, create_groups, feed_queue};
use mesh_feed::store::{ActivityStore, ArchivedEvent, Deleter, MemoryActivityStore, RedisActivityStore};
use mesh_testkit::RedisServer;

struct Fixture {
    store: Arc<dyn ActivityStore>,
    broker: Arc<dyn Broker>,
    jobs: Arc<dyn JobQueue>,
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
        let history = HistorySettings::default();
        if !redis {
            let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(history));
            let jobs: Arc<dyn JobQueue> = Arc::new(MemoryJobQueue::new(JobQueueSettings::default()));
            let store = Arc::new(MemoryActivityStore::new(broker.clone(), jobs.clone()));
            return Self { store, broker, jobs, _server: None };
        }
        let server = RedisServer::start().await.expect("redis-server starts");
        let pool = redis_pool(&server.url(), &RedisSettings::default()).expect("a valid redis url");
        let broker: Arc<dyn Broker> = Arc::new(RedisBroker::new(pool.clone(), history));
        let jobs: Arc<dyn JobQueue> = Arc::new(RedisJobQueue::new(pool.clone(), JobQueueSettings::default()));
        Self { store: Arc::new(RedisActivityStore::new(pool, history)), broker, jobs, _server: Some(server) }
    }

    /// Every feed job waiting for `group`, decoded, acknowledged.
    async fn jobs(&self, group: &str) -> Vec<(String, FeedJob)> {
        let mut found = Vec::new();
        loop {
            let claimed = self.jobs.claim(&feed_queue(), group, "test", 100, Duration::ZERO).await.unwrap();
            if claimed.is_empty() {
                return found;
            }
            self.jobs.ack_all(&claimed).await.unwrap();
            found.extend(
                claimed
                    .iter()
                    .map(|delivery| (delivery.job.id.to_string(), FeedJob::decode(&delivery.job.payload).unwrap())),
            );
        }
    }

    /// The events of `feed` in `tenant` after `since` (everything when `None`).
    async fn events(&self, tenant: &str, feed: &FeedName, since: Option<&Position>) -> Vec<(Position, FeedEvent)> {
        let channel = feed.channel(tenant).unwrap();
        let since = match since {
            Some(position) => position.clone(),
            None => Position { offset: 0, epoch: self.broker.position(&channel).await.unwrap().epoch },
        };
        let History::Recovered(publications) = self.broker.history(&channel, &since, 1000).await.unwrap() else {
            panic!("the history of {feed} is recoverable");
        };
        publications.into_iter().map(|p| (p.position, FeedEvent::decode(&p.payload).unwrap())).collect()
    }
}

fn activity(tenant: &str, actor: &str, verb: &str) -> Activity {
    let new = NewActivity::parse(verb, Some(("post", "42")), "hello", [("k".to_owned(), "v".to_owned())]).unwrap();
    Activity::new(ActivityId::generate(), tenant, actor, new, SystemTime::now())
}

mesh_testkit::conformance!(
    Fixture:
    a_published_activity_is_stored_and_appended_to_global_and_its_actor_feed,
    a_request_id_returns_the_first_result_and_publishes_once,
    deleting_removes_the_record_and_appends_a_tombstone_to_both_feeds,
    only_the_actor_or_an_admin_deletes_and_tenants_never_meet,
    get_many_returns_the_stored_ones_in_order,
    every_write_enqueues_its_job_with_its_event_and_positions_once,
);

async fn every_write_enqueues_its_job_with_its_event_and_positions_once(fixture: Fixture) {
    let request = RequestId::parse("3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13", "request_id").unwrap();
    let published = fixture.store.publish(activity("acme", "alice", "post"), request.as_ref()).await.unwrap();
    let retried = fixture.store.publish(activity("acme", "alice", "post"), request.as_ref()).await.unwrap();
    assert_eq!(retried, published);
    let deleted = fixture
        .store
        .delete("acme", &published.activity.id, Deleter { user: "alice", admin: false }, SystemTime::now())
        .await
        .unwrap();
    let tombstone = fixture.events("acme", &FeedName::Global, None).await.pop().unwrap().1;

    let published_event = FeedEvent::Published(published.activity.clone());
    let expected = vec![
        (
            published_event.event_id(),
            FeedJob {
                tenant: "acme".into(),
                archived: ArchivedEvent { event: published_event, positions: published.positions.clone() },
            },
        ),
        (
            tombstone.event_id(),
            FeedJob { tenant: "acme".into(), archived: ArchivedEvent { event: tombstone, positions: deleted } },
        ),
    ];
    // One job per write (the retry enqueued none), in write order, for each group.
    assert_eq!(fixture.jobs(READ_MODELS_GROUP).await, expected);
    assert_eq!(fixture.jobs(ARCHIVE_GROUP).await, expected);
}

async fn a_published_activity_is_stored_and_appended_to_global_and_its_actor_feed(fixture: Fixture) {
    let first = fixture.store.publish(activity("acme", "alice", "post"), None).await.unwrap();
    let second = fixture.store.publish(activity("acme", "bob", "like"), None).await.unwrap();
    assert_eq!(fixture.store.get("acme", &first.activity.id).await.unwrap(), first.activity);

    let feeds: Vec<&FeedName> = first.positions.iter().map(|(feed, _)| feed).collect();
    assert_eq!(feeds, [&FeedName::Global, &FeedName::actor("alice")]);
    assert_eq!(first.positions[0].1.offset + 1, second.positions[0].1.offset, "global: one after the other");
    assert_eq!(second.positions[1].1.offset, 1, "bob's feed starts at 1");

    let global = fixture.events("acme", &FeedName::Global, None).await;
    let ids: Vec<&ActivityId> = global.iter().map(|(_, event)| event.activity_id()).collect();
    assert_eq!(ids, [&first.activity.id, &second.activity.id]);
    assert_eq!(global[0].1, FeedEvent::Published(first.activity.clone()));
    assert_eq!(global[1].0, second.positions[0].1, "the reported position is the event's");
    let alice = fixture.events("acme", &FeedName::actor("alice"), None).await;
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].0, first.positions[1].1);
}

async fn a_request_id_returns_the_first_result_and_publishes_once(fixture: Fixture) {
    let key = RequestId::parse("3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13", "request_id").unwrap().unwrap();
    let first = fixture.store.publish(activity("acme", "alice", "post"), Some(&key)).await.unwrap();
    let retry = fixture.store.publish(activity("acme", "alice", "post"), Some(&key)).await.unwrap();
    assert_eq!(retry, first, "same activity, same positions");
    assert_eq!(fixture.events("acme", &FeedName::Global, None).await.len(), 1, "published once");
    let other_actor = fixture.store.publish(activity("acme", "bob", "post"), Some(&key)).await.unwrap();
    assert_ne!(other_actor.activity.id, first.activity.id, "keys are per actor");
}

async fn deleting_removes_the_record_and_appends_a_tombstone_to_both_feeds(fixture: Fixture) {
    let published = fixture.store.publish(activity("acme", "alice", "post"), None).await.unwrap();
    let id = published.activity.id.clone();
    let alice = Deleter { user: "alice", admin: false };
    let positions = fixture.store.delete("acme", &id, alice, SystemTime::now()).await.unwrap();
    assert_eq!(fixture.store.get("acme", &id).await.unwrap_err(), FeedError::NotFound);
    assert_eq!(positions[0].1.offset, published.positions[0].1.offset + 1);

    for (feed, since) in [&published.positions[0], &published.positions[1]] {
        let after = fixture.events("acme", feed, Some(since)).await;
        let [(position, FeedEvent::Deleted(tombstone))] = after.as_slice() else {
            panic!("one tombstone in {feed}, got {after:?}");
        };
        assert_eq!((&tombstone.id, tombstone.actor.as_str()), (&id, "alice"));
        assert!(positions.iter().any(|(f, p)| f == feed && p == position));
    }
    let again = fixture.store.delete("acme", &id, alice, SystemTime::now()).await.unwrap_err();
    assert_eq!(again, FeedError::NotFound, "already deleted");
}

async fn only_the_actor_or_an_admin_deletes_and_tenants_never_meet(fixture: Fixture) {
    let published = fixture.store.publish(activity("acme", "alice", "post"), None).await.unwrap();
    let id = published.activity.id.clone();
    assert_eq!(fixture.store.get("other", &id).await.unwrap_err(), FeedError::NotFound);
    let stranger = Deleter { user: "alice", admin: true };
    let elsewhere = fixture.store.delete("other", &id, stranger, SystemTime::now()).await.unwrap_err();
    assert_eq!(elsewhere, FeedError::NotFound, "another tenant's admin finds nothing");
    let bob = Deleter { user: "bob", admin: false };
    let denied = fixture.store.delete("acme", &id, bob, SystemTime::now()).await.unwrap_err();
    assert!(matches!(denied, FeedError::PermissionDenied(_)));
    fixture.store.get("acme", &id).await.expect("still there");
    let admin = Deleter { user: "bob", admin: true };
    fixture.store.delete("acme", &id, admin, SystemTime::now()).await.unwrap();
    assert_eq!(fixture.store.get("acme", &id).await.unwrap_err(), FeedError::NotFound);
}

async fn get_many_returns_the_stored_ones_in_order(fixture: Fixture) {
    let a = fixture.store.publish(activity("acme", "alice", "post"), None).await.unwrap().activity;
    let b = fixture.store.publish(activity("acme", "bob", "post"), None).await.unwrap().activity;
    let gone = fixture.store.publish(activity("acme", "bob", "post"), None).await.unwrap().activity;
    let bob = Deleter { user: "bob", admin: false };
    fixture.store.delete("acme", &gone.id, bob, SystemTime::now()).await.unwrap();
    let ids = [b.id.clone(), gone.id.clone(), ActivityId::generate(), a.id.clone()];
    assert_eq!(fixture.store.get_many("acme", &ids).await.unwrap(), [b, a]);
    assert!(fixture.store.get_many("other", &ids).await.unwrap().is_empty());
    assert!(fixture.store.get_many("acme", &[]).await.unwrap().is_empty());
}
