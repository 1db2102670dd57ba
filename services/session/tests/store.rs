//! Conformance suite of the session store: every test runs against [`MemoryStore`] and
//! [`RedisStore`] (on a `redis-server` the test starts). Times come from a `now` the tests
//! move forward, so expiry needs no waiting.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::backend::redis_pool;
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{Broker, History, HistorySettings, Position};
use mesh_core::config::RedisSettings;
use mesh_core::jobs::{JobQueue, JobQueueSettings, MemoryJobQueue, QueueName, RedisJobQueue};
use mesh_session::SessionError;
use mesh_session::audit::audit_queue;
use mesh_session::domain::{
    Attributes, AttributesPatch, AuditEvent, ExpectedVersion, Lifetimes, RequestId, SessionChange, SessionChangeKind,
    SessionId,
};
use mesh_session::store::{MemoryStore, RedisStore, SessionStore, audit_queue_for, channel_of, decode_change};
use mesh_testkit::RedisServer;

const IDLE: Duration = Duration::from_secs(60);
const MAX: Duration = Duration::from_secs(600);

struct Fixture {
    store: Arc<dyn SessionStore>,
    jobs: Arc<dyn JobQueue>,
    broker: Arc<dyn Broker>,
    redis: bool,
    _server: Option<RedisServer>,
}

impl Fixture {
    async fn start(redis: bool) -> Self {
        let lifetimes = Lifetimes { idle_ttl: IDLE, max_lifetime: MAX };
        if !redis {
            let jobs: Arc<dyn JobQueue> = Arc::new(MemoryJobQueue::new(JobQueueSettings::default()));
            let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(HistorySettings::default()));
            let store = Arc::new(MemoryStore::new(jobs.clone(), broker.clone(), lifetimes));
            return Self { store, jobs, broker, redis, _server: None };
        }
        let server = RedisServer::start().await.expect("redis-server starts");
        // One connection per concurrent writer, so the writers test contention, not the pool.
        let settings =
            RedisSettings { pool_size: 64, connect_timeout: Duration::from_secs(10), ..RedisSettings::default() };
        let pool = redis_pool(&server.url(), &settings).expect("a valid redis url");
        let jobs: Arc<dyn JobQueue> = Arc::new(RedisJobQueue::new(pool.clone(), JobQueueSettings::default()));
        let broker: Arc<dyn Broker> = Arc::new(RedisBroker::new(pool.clone(), HistorySettings::default()));
        let store = Arc::new(RedisStore::new(pool, lifetimes, HistorySettings::default()));
        Self { store, jobs, broker, redis, _server: Some(server) }
    }

    fn queue(&self, tenant: &str, user: &str) -> QueueName {
        if self.redis { audit_queue_for(tenant, user) } else { audit_queue() }
    }

    /// Every change published so far on the channel of session `id` of `tenant`.
    async fn changes(&self, tenant: &str, id: &SessionId) -> Vec<SessionChange> {
        let channel = channel_of(tenant, id).unwrap();
        let head = self.broker.position(&channel).await.unwrap();
        let start = Position { offset: 0, epoch: head.epoch.clone() };
        let History::Recovered(publications) = self.broker.history(&channel, &start, 100).await.unwrap() else {
            panic!("the channel's history is complete");
        };
        assert_eq!(publications.len() as u64, head.offset);
        publications.iter().map(|p| decode_change(tenant, id, &p.payload).unwrap()).collect()
    }

    /// Every audit event enqueued so far for the owner's queue (claimed and acked).
    async fn audit_events(&self, tenant: &str, user: &str) -> Vec<AuditEvent> {
        let queue = self.queue(tenant, user);
        let mut events = Vec::new();
        loop {
            let deliveries = self.jobs.claim(&queue, "test", "test-1", 500, Duration::ZERO).await.unwrap();
            if deliveries.is_empty() {
                return events;
            }
            for delivery in deliveries {
                self.jobs.ack(&delivery).await.unwrap();
                let event = AuditEvent::from_json(&delivery.job.payload).unwrap();
                assert_eq!(delivery.job.id.as_str(), event.event_id);
                events.push(event);
            }
        }
    }
}

fn start_time() -> SystemTime {
    // Close to the real clock: Redis drops hashes by its own clock (PEXPIREAT).
    SystemTime::now()
}

fn attributes(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::parse(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())), "attributes").unwrap()
}

fn patch(key: &str, value: &str) -> AttributesPatch {
    AttributesPatch::parse([(key.to_string(), value.to_string())], "set", Vec::new(), "remove").unwrap()
}

mesh_testkit::conformance!(
    Fixture:
    a_created_session_can_be_read_back_and_listed,
    an_update_bumps_the_version_and_a_stale_one_conflicts,
    a_touch_slides_the_expiry_and_keeps_the_version,
    a_get_slides_the_expiry_in_whole_read_steps,
    a_deleted_session_is_gone,
    another_tenant_or_user_sees_not_found_everywhere,
    an_idle_session_expires_and_the_cap_ends_one_touched_all_along,
    every_mutation_enqueues_exactly_one_matching_audit_event,
    a_list_pages_newest_first,
    concurrent_writers_lose_no_update,
    every_change_is_published_on_the_session_channel_in_order,
    an_ended_session_is_expired_and_announced_exactly_once,
    a_peek_does_not_slide_and_the_owner_is_found_within_the_tenant_only,
    a_create_retried_with_its_request_id_returns_the_first_session,
    an_update_past_a_limit_is_invalid_and_changes_nothing,
);

async fn a_created_session_can_be_read_back_and_listed(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", attributes(&[("theme", "dark")]), None, now).await.unwrap();
    assert_eq!(created.version.get(), 1);
    assert_eq!(created.expire_time, created.create_time + IDLE);
    assert_eq!(created.max_expire_time, created.create_time + MAX);
    let read = fixture.store.get("acme", "alice", &created.id, now).await.unwrap();
    assert_eq!(read, created);
    let page = fixture.store.list("acme", "alice", 10, None, now).await.unwrap();
    assert_eq!(page.sessions, vec![created]);
    assert_eq!(page.next, None);
}

async fn an_update_bumps_the_version_and_a_stale_one_conflicts(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", attributes(&[("theme", "dark")]), None, now).await.unwrap();
    let later = now + Duration::from_secs(10);
    let v1 = ExpectedVersion::from(created.version);
    let updated =
        fixture.store.update("acme", "alice", &created.id, v1, &patch("theme", "light"), later).await.unwrap();
    assert_eq!(updated.version.get(), 2);
    assert_eq!(updated.attributes.get("theme"), Some("light"));
    assert_eq!(updated.expire_time, created.create_time + Duration::from_secs(10) + IDLE);
    let error = fixture.store.update("acme", "alice", &created.id, v1, &patch("theme", "x"), later).await.unwrap_err();
    assert!(matches!(error, SessionError::VersionConflict { current } if current.get() == 2), "{error:?}");
    let error = fixture.store.delete("acme", "alice", &created.id, Some(v1), later).await.unwrap_err();
    assert!(matches!(error, SessionError::VersionConflict { current } if current.get() == 2), "{error:?}");
    assert_eq!(fixture.store.get("acme", "alice", &created.id, later).await.unwrap(), updated);
}

async fn a_touch_slides_the_expiry_and_keeps_the_version(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    let touched = fixture.store.touch("acme", "alice", &created.id, now + Duration::from_secs(50)).await.unwrap();
    assert_eq!(touched.version, created.version);
    assert_eq!(touched.update_time, created.update_time);
    assert_eq!(touched.expire_time, created.create_time + Duration::from_secs(50) + IDLE);
    // Alive past the first idle expiry thanks to the touch.
    assert!(fixture.store.get("acme", "alice", &created.id, now + Duration::from_secs(100)).await.is_ok());
}

async fn a_get_slides_the_expiry_in_whole_read_steps(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    let step = Lifetimes { idle_ttl: IDLE, max_lifetime: MAX }.read_slide_step();
    // Within a step: nothing is written, the expiry stays.
    let read = fixture.store.get("acme", "alice", &created.id, now + step / 2).await.unwrap();
    assert_eq!(read.expire_time, created.expire_time);
    let peeked = fixture.store.peek("acme", "alice", &created.id, now + step / 2).await.unwrap();
    assert_eq!(peeked.expire_time, created.expire_time);
    // A whole step later: the expiry slides to the read's time plus the idle TTL, and stays.
    let later = now + step * 3;
    let read = fixture.store.get("acme", "alice", &created.id, later).await.unwrap();
    assert_eq!(read.expire_time, created.create_time + step * 3 + IDLE);
    assert_eq!(fixture.store.peek("acme", "alice", &created.id, later).await.unwrap().expire_time, read.expire_time);
    assert_eq!((read.version, read.update_time), (created.version, created.update_time));
    // Alive past the first idle expiry thanks to the reads.
    assert!(fixture.store.get("acme", "alice", &created.id, created.expire_time + step).await.is_ok());

    // Onto the cap even by less than a step: a session read all along ends exactly at it.
    let cap = created.max_expire_time;
    let mut at = created.expire_time + step;
    while at + Duration::from_secs(30) < cap - IDLE {
        at += Duration::from_secs(30);
        fixture.store.touch("acme", "alice", &created.id, at).await.unwrap();
    }
    let touched = fixture.store.touch("acme", "alice", &created.id, cap - IDLE - step / 4).await.unwrap();
    assert_eq!(touched.expire_time, cap - step / 4);
    let read = fixture.store.get("acme", "alice", &created.id, cap - IDLE).await.unwrap();
    assert_eq!(read.expire_time, cap);
    assert_eq!(fixture.store.peek("acme", "alice", &created.id, cap - IDLE).await.unwrap().expire_time, cap);
}

async fn a_deleted_session_is_gone(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    fixture.store.delete("acme", "alice", &created.id, Some(created.version.into()), now).await.unwrap();
    let error = fixture.store.get("acme", "alice", &created.id, now).await.unwrap_err();
    assert!(matches!(error, SessionError::NotFound));
    let error = fixture.store.delete("acme", "alice", &created.id, None, now).await.unwrap_err();
    assert!(matches!(error, SessionError::NotFound));
    assert!(fixture.store.list("acme", "alice", 10, None, now).await.unwrap().sessions.is_empty());
}

async fn another_tenant_or_user_sees_not_found_everywhere(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    let v1 = ExpectedVersion::from(created.version);
    for (tenant, user) in [("acme", "bob"), ("other", "alice")] {
        let store = &fixture.store;
        let id = &created.id;
        let results = [
            store.get(tenant, user, id, now).await.map(drop),
            store.update(tenant, user, id, v1, &patch("k", "v"), now).await.map(drop),
            store.touch(tenant, user, id, now).await.map(drop),
            store.delete(tenant, user, id, None, now).await,
        ];
        for result in results {
            assert!(matches!(result, Err(SessionError::NotFound)), "{tenant}/{user}: {result:?}");
        }
        assert!(store.list(tenant, user, 10, None, now).await.unwrap().sessions.is_empty());
    }
    assert_eq!(fixture.store.get("acme", "alice", &created.id, now).await.unwrap().version.get(), 1);
}

async fn an_idle_session_expires_and_the_cap_ends_one_touched_all_along(fixture: Fixture) {
    let now = start_time();
    let idle = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    let error = fixture.store.get("acme", "alice", &idle.id, now + IDLE).await.unwrap_err();
    assert!(matches!(error, SessionError::NotFound));

    let busy = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    let mut at = now;
    while at + Duration::from_secs(30) < busy.max_expire_time {
        at += Duration::from_secs(30);
        let touched = fixture.store.touch("acme", "alice", &busy.id, at).await.unwrap();
        assert!(touched.expire_time <= busy.max_expire_time);
    }
    let error = fixture.store.touch("acme", "alice", &busy.id, busy.max_expire_time).await.unwrap_err();
    assert!(matches!(error, SessionError::NotFound));
    let page = fixture.store.list("acme", "alice", 10, None, busy.max_expire_time).await.unwrap();
    assert!(page.sessions.is_empty());
}

async fn every_mutation_enqueues_exactly_one_matching_audit_event(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", attributes(&[("a", "1")]), None, now).await.unwrap();
    let v1 = ExpectedVersion::from(created.version);
    let updated = fixture.store.update("acme", "alice", &created.id, v1, &patch("a", "2"), now).await.unwrap();
    fixture.store.get("acme", "alice", &created.id, now).await.unwrap();
    fixture.store.touch("acme", "alice", &created.id, now).await.unwrap();
    fixture.store.delete("acme", "alice", &created.id, None, now).await.unwrap();

    let events = fixture.audit_events("acme", "alice").await;
    let kinds: Vec<_> = events.iter().map(|event| (event.kind, event.version.get())).collect();
    use SessionChangeKind::*;
    assert_eq!(kinds, [(Created, 1), (Updated, 2), (Touched, 2), (Deleted, 2)]);
    for event in &events {
        assert_eq!((event.tenant.as_str(), event.user.as_str()), ("acme", "alice"));
        assert_eq!(event.session_id, created.id);
        assert_eq!(event.occurred_at, created.create_time);
    }
    assert_eq!(events[0].attributes.as_ref(), Some(&created.attributes));
    assert_eq!(events[1].attributes.as_ref(), Some(&updated.attributes));
    assert_eq!((events[2].attributes.as_ref(), events[3].attributes.as_ref()), (None, None));
}

async fn a_list_pages_newest_first(fixture: Fixture) {
    let now = start_time();
    let mut created = Vec::new();
    for n in 0..5u64 {
        let at = now + Duration::from_millis(n * 10);
        created.push(fixture.store.create("acme", "alice", Attributes::default(), None, at).await.unwrap());
    }
    // Two sessions in the same millisecond, ordered by id.
    created.push(fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap());
    fixture.store.create("acme", "bob", Attributes::default(), None, now).await.unwrap();
    let mut expected = created.clone();
    expected.sort_by(|a, b| (b.create_time, &b.id).cmp(&(a.create_time, &a.id)));

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = fixture.store.list("acme", "alice", 2, after.as_ref(), now).await.unwrap();
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

async fn concurrent_writers_lose_no_update(fixture: Fixture) {
    const WRITERS: usize = 32;
    const CYCLES: usize = 50;
    let now = start_time();
    let session = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = fixture.store.clone();
        let id = session.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut successes = 0u64;
            for cycle in 0..CYCLES {
                loop {
                    let current = store.get("acme", "alice", &id, now).await.unwrap();
                    let value = format!("{writer}-{cycle}");
                    let change = patch(&format!("w{writer}"), &value);
                    match store.update("acme", "alice", &id, current.version.into(), &change, now).await {
                        Ok(_) => break successes += 1,
                        Err(SessionError::VersionConflict { .. }) => continue,
                        Err(error) => panic!("unexpected error: {error:?}"),
                    }
                }
            }
            successes
        }));
    }
    let mut successes = 0;
    for task in tasks {
        successes += task.await.unwrap();
    }
    let last = fixture.store.get("acme", "alice", &session.id, now).await.unwrap();
    assert_eq!(successes, (WRITERS * CYCLES) as u64);
    assert_eq!(last.version.get(), 1 + successes as i64);
    for writer in 0..WRITERS {
        let expected = format!("{writer}-{}", CYCLES - 1);
        assert_eq!(last.attributes.get(&format!("w{writer}")), Some(expected.as_str()));
    }
    let updates = fixture.audit_events("acme", "alice").await;
    assert_eq!(updates.iter().filter(|event| event.kind == SessionChangeKind::Updated).count() as u64, successes);
}

async fn every_change_is_published_on_the_session_channel_in_order(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", attributes(&[("a", "1")]), None, now).await.unwrap();
    let later = now + Duration::from_secs(5);
    let v1 = ExpectedVersion::from(created.version);
    let updated = fixture.store.update("acme", "alice", &created.id, v1, &patch("a", "2"), later).await.unwrap();
    fixture.store.get("acme", "alice", &created.id, later).await.unwrap();
    let touched = fixture.store.touch("acme", "alice", &created.id, later + Duration::from_secs(1)).await.unwrap();
    fixture.store.delete("acme", "alice", &created.id, None, later).await.unwrap();

    let changes = fixture.changes("acme", &created.id).await;
    let kinds: Vec<_> = changes.iter().map(|change| (change.kind, change.version.get())).collect();
    use SessionChangeKind::*;
    assert_eq!(kinds, [(Created, 1), (Updated, 2), (Touched, 2), (Deleted, 2)], "Get announces nothing");
    assert_eq!(changes[0].session.as_ref(), Some(&created));
    assert_eq!(changes[1].session.as_ref(), Some(&updated));
    assert_eq!(changes[2].session.as_ref(), Some(&touched));
    assert_eq!(changes[3].session, None);
    assert_eq!((changes[0].at, changes[1].at), (created.create_time, updated.update_time));
    assert!(changes.iter().all(|change| change.session_id == created.id));
}

async fn an_ended_session_is_expired_and_announced_exactly_once(fixture: Fixture) {
    let now = start_time();
    let idle = fixture.store.create("acme", "alice", Attributes::default(), None, now).await.unwrap();
    let v1 = ExpectedVersion::from(idle.version);
    fixture.store.update("acme", "alice", &idle.id, v1, &patch("a", "1"), now).await.unwrap();
    let fresh = fixture.store.create("acme", "bob", Attributes::default(), None, now + IDLE).await.unwrap();
    assert_eq!(fixture.store.expire_due(now + IDLE - Duration::from_millis(1), 100).await.unwrap(), 0);

    // Four sweepers at once, as four instances would: one of them ends the session.
    let sweeps = (0..4).map(|_| {
        let store = fixture.store.clone();
        tokio::spawn(async move { store.expire_due(now + IDLE, 100).await.unwrap() })
    });
    let mut ended = 0;
    for sweep in sweeps.collect::<Vec<_>>() {
        ended += sweep.await.unwrap();
    }
    assert_eq!(ended, 1);
    assert_eq!(fixture.store.expire_due(now + IDLE, 100).await.unwrap(), 0);

    let changes = fixture.changes("acme", &idle.id).await;
    let last = changes.last().unwrap();
    assert_eq!((changes.len(), last.kind, last.version.get()), (3, SessionChangeKind::Expired, 2));
    assert_eq!(last.session, None);
    let expired: Vec<_> = fixture
        .audit_events("acme", "alice")
        .await
        .into_iter()
        .filter(|event| event.kind == SessionChangeKind::Expired)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].session_id.clone(), expired[0].version.get()), (idle.id.clone(), 2));
    assert!(fixture.store.list("acme", "alice", 10, None, now).await.unwrap().sessions.is_empty());
    assert!(fixture.store.get("acme", "bob", &fresh.id, now + IDLE).await.is_ok());
}

async fn a_peek_does_not_slide_and_the_owner_is_found_within_the_tenant_only(fixture: Fixture) {
    let now = start_time();
    let created = fixture.store.create("acme", "alice", attributes(&[("a", "1")]), None, now).await.unwrap();
    let peeked = fixture.store.peek("acme", "alice", &created.id, now + Duration::from_secs(30)).await.unwrap();
    assert_eq!(peeked, created, "a peek changes nothing");
    assert!(matches!(fixture.store.peek("acme", "bob", &created.id, now).await, Err(SessionError::NotFound)));
    assert!(matches!(fixture.store.peek("other", "alice", &created.id, now).await, Err(SessionError::NotFound)));

    assert_eq!(fixture.store.owner_of("acme", &created.id, now).await.unwrap(), "alice");
    assert!(matches!(fixture.store.owner_of("other", &created.id, now).await, Err(SessionError::NotFound)));
    let unknown = SessionId::generate();
    assert!(matches!(fixture.store.owner_of("acme", &unknown, now).await, Err(SessionError::NotFound)));

    let ended = now + IDLE;
    assert!(matches!(fixture.store.peek("acme", "alice", &created.id, ended).await, Err(SessionError::NotFound)));
    assert!(matches!(fixture.store.owner_of("acme", &created.id, ended).await, Err(SessionError::NotFound)));
}

async fn a_create_retried_with_its_request_id_returns_the_first_session(fixture: Fixture) {
    let now = start_time();
    let request = RequestId::parse("3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13", "request_id").unwrap().unwrap();
    let store = &fixture.store;
    let first = store.create("acme", "alice", attributes(&[("a", "1")]), Some(&request), now).await.unwrap();
    let later = now + Duration::from_secs(1);
    let retry = store.create("acme", "alice", attributes(&[("a", "2")]), Some(&request), later).await.unwrap();
    assert_eq!(retry, first, "the retry answers with the first session and changes nothing");
    let other_user = store.create("acme", "bob", Attributes::default(), Some(&request), now).await.unwrap();
    assert_ne!(other_user.id, first.id, "a request id belongs to its owner");
    let events = fixture.audit_events("acme", "alice").await;
    let created = events.iter().filter(|event| event.kind == SessionChangeKind::Created && event.user == "alice");
    assert_eq!(created.count(), 1);
    assert_eq!(fixture.changes("acme", &first.id).await.len(), 1);

    store.delete("acme", "alice", &first.id, None, later).await.unwrap();
    let again = store.create("acme", "alice", Attributes::default(), Some(&request), later).await.unwrap();
    assert_ne!(again.id, first.id, "the first session ended: a new one stands for the key");
    let retry = store.create("acme", "alice", Attributes::default(), Some(&request), later).await.unwrap();
    assert_eq!(retry.id, again.id);
}

async fn an_update_past_a_limit_is_invalid_and_changes_nothing(fixture: Fixture) {
    let now = start_time();
    let big = "v".repeat(4000);
    let pairs: Vec<(String, String)> = (0..4).map(|n| (format!("k{n}"), big.clone())).collect();
    let full = Attributes::parse(pairs, "attributes").unwrap();
    let created = fixture.store.create("acme", "alice", full, None, now).await.unwrap();
    let v1 = ExpectedVersion::from(created.version);
    let error = fixture.store.update("acme", "alice", &created.id, v1, &patch("k4", &big), now).await.unwrap_err();
    let SessionError::Invalid(violations) = error else { panic!("not invalid: {error:?}") };
    assert_eq!(violations[0].field, "set_attributes");
    assert!(violations[0].description.contains("bytes"), "{violations:?}");
    // Replacing and removing within the limits works, and the result is exact.
    let swap =
        AttributesPatch::parse([("k0".to_string(), "small".to_string())], "set", vec!["k1".to_string()], "remove")
            .unwrap();
    let updated = fixture.store.update("acme", "alice", &created.id, v1, &swap, now).await.unwrap();
    assert_eq!(updated.version.get(), 2);
    let keys: Vec<&str> = updated.attributes.iter().map(|(key, _)| key).collect();
    assert_eq!(keys, ["k0", "k2", "k3"]);
    assert_eq!(updated.attributes.get("k0"), Some("small"));
    assert_eq!(fixture.store.get("acme", "alice", &created.id, now).await.unwrap(), updated);
    let events = fixture.audit_events("acme", "alice").await;
    assert_eq!(events.last().unwrap().attributes.as_ref(), Some(&updated.attributes));
}
