//! The broker conformance suite: every check runs against the memory broker
//! (`memory::<check>`) and the Redis broker on a private `redis-server`
//! (`redis::<check>`), and both must answer alike. Checks that only make sense for one
//! implementation (Redis pub/sub and keys, the memory bus) come after the shared ones.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mesh_core::backend::redis_pool;
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{
    Broker, BrokerError, ChannelKey, ChannelName, Epoch, History, HistorySettings, LiveFeed, LiveSink, Position,
    Publication, Unrecoverable,
};
use mesh_core::config::RedisSettings;
use mesh_testkit::RedisServer;
use tokio_stream::StreamExt as _;

/// Which implementation a check runs against.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Redis,
}

/// A broker under test, with what it runs on.
struct Fixture {
    broker: Arc<dyn Broker>,
    backend: Backend,
}

enum Backend {
    Memory(MemoryBroker),
    /// Kept alive for the test's duration; killed on drop.
    Redis(Box<RedisServer>),
}

impl Kind {
    async fn fixture(self) -> Fixture {
        self.fixture_with(HistorySettings::default()).await
    }

    async fn fixture_with(self, settings: HistorySettings) -> Fixture {
        match self {
            Kind::Memory => {
                let broker = MemoryBroker::new(settings);
                Fixture { broker: Arc::new(broker.clone()), backend: Backend::Memory(broker) }
            }
            Kind::Redis => {
                let server = RedisServer::start().await.expect("redis-server starts");
                let pool = redis_pool(&server.url(), &RedisSettings::default()).expect("a valid redis url");
                Fixture {
                    broker: Arc::new(RedisBroker::new(pool, settings)),
                    backend: Backend::Redis(Box::new(server)),
                }
            }
        }
    }
}

impl Fixture {
    async fn publish(&self, channel: &ChannelKey, payload: &str) -> Position {
        self.broker.publish(channel, Bytes::copy_from_slice(payload.as_bytes())).await.expect("publish succeeds")
    }

    /// Publishes `payload-1` .. `payload-n` and returns their positions.
    async fn publish_n(&self, channel: &ChannelKey, n: u64) -> Vec<Position> {
        let mut positions = Vec::new();
        for i in 1..=n {
            positions.push(self.publish(channel, &format!("payload-{i}")).await);
        }
        positions
    }

    async fn history(&self, channel: &ChannelKey, since: &Position, limit: usize) -> History {
        self.broker.history(channel, since, limit).await.expect("history succeeds")
    }

    async fn position(&self, channel: &ChannelKey) -> Position {
        self.broker.position(channel).await.expect("position succeeds")
    }
}

fn channel(tenant: &str, name: &str) -> ChannelKey {
    ChannelKey::new(tenant, ChannelName::parse(name, "channel").unwrap()).unwrap()
}

fn at(offset: u64, epoch: &Epoch) -> Position {
    Position { offset, epoch: epoch.clone() }
}

/// The offsets and payloads of a recovered history; panics on an unrecoverable one.
fn recovered(history: History, channel: &ChannelKey, epoch: &Epoch) -> Vec<(u64, String)> {
    let History::Recovered(publications) = history else { panic!("expected Recovered, got {history:?}") };
    publications
        .into_iter()
        .map(|publication| {
            assert_eq!(&publication.channel, channel);
            assert_eq!(&publication.position.epoch, epoch);
            (publication.position.offset, String::from_utf8(publication.payload.to_vec()).unwrap())
        })
        .collect()
}

fn expected(offsets: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    offsets.map(|offset| (offset, format!("payload-{offset}"))).collect()
}

// ---------------------------------------------------------------------------------------
// Checks shared by both implementations.

async fn offsets_start_at_1_and_are_gap_free_under_one_epoch(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let positions = fixture.publish_n(&key, 20).await;
    let offsets: Vec<u64> = positions.iter().map(|position| position.offset).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    assert!(positions.iter().all(|position| position.epoch == positions[0].epoch), "{positions:?}");
    assert_eq!(fixture.position(&key).await, positions[19]);
}

async fn channels_are_independent(kind: Kind) {
    let fixture = kind.fixture().await;
    let (a, b) = (channel("t1", "actors/a"), channel("t1", "actors/b"));
    let a_positions = fixture.publish_n(&a, 3).await;
    let b_first = fixture.publish(&b, "b-1").await;
    assert_eq!(b_first.offset, 1);
    assert_ne!(b_first.epoch, a_positions[0].epoch, "each channel has its own epoch");
    assert_eq!(fixture.publish(&a, "payload-4").await.offset, 4);
    let epoch = a_positions[0].epoch.clone();
    assert_eq!(recovered(fixture.history(&a, &at(0, &epoch), 100).await, &a, &epoch), expected(1..=4));
    let b_history = recovered(fixture.history(&b, &at(0, &b_first.epoch), 100).await, &b, &b_first.epoch);
    assert_eq!(b_history, vec![(1, "b-1".to_owned())]);
}

async fn same_named_channels_of_two_tenants_are_independent(kind: Kind) {
    let fixture = kind.fixture().await;
    let (one, two) = (channel("tenant-1", "global"), channel("tenant-2", "global"));
    fixture.publish_n(&one, 5).await;
    let two_first = fixture.publish(&two, "two-1").await;
    assert_eq!(two_first.offset, 1);
    assert_eq!(fixture.position(&one).await.offset, 5);
    let history = recovered(fixture.history(&two, &at(0, &two_first.epoch), 100).await, &two, &two_first.epoch);
    assert_eq!(history, vec![(1, "two-1".to_owned())]);
}

async fn history_after_a_position_returns_exactly_the_later_publications_in_order(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let positions = fixture.publish_n(&key, 10).await;
    let epoch = &positions[0].epoch;
    assert_eq!(recovered(fixture.history(&key, &positions[3], 100).await, &key, epoch), expected(5..=10));
    assert_eq!(recovered(fixture.history(&key, &positions[8], 100).await, &key, epoch), expected(10..=10));
}

async fn history_from_offset_0_returns_everything_while_nothing_is_trimmed(kind: Kind) {
    let fixture = kind.fixture_with(HistorySettings { size: 10, ..HistorySettings::default() }).await;
    let key = channel("t1", "global");
    let epoch = fixture.publish_n(&key, 10).await[0].epoch.clone();
    assert_eq!(recovered(fixture.history(&key, &at(0, &epoch), 100).await, &key, &epoch), expected(1..=10));
}

async fn history_at_the_head_is_empty_and_recovered(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let head = fixture.publish_n(&key, 3).await.pop().unwrap();
    assert_eq!(fixture.history(&key, &head, 100).await, History::Recovered(Vec::new()));
    assert_eq!(fixture.history(&key, &head, 0).await, History::Recovered(Vec::new()));
}

async fn history_with_another_epoch_or_of_an_unknown_channel_is_epoch_changed(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let positions = fixture.publish_n(&key, 3).await;
    let other = Epoch::random();
    assert_ne!(other, positions[0].epoch);
    for offset in [0, 1, 3, 4] {
        assert_eq!(
            fixture.history(&key, &at(offset, &other), 100).await,
            History::Unrecoverable(Unrecoverable::EpochChanged)
        );
    }
    let unknown = channel("t1", "never-published");
    assert_eq!(
        fixture.history(&unknown, &at(0, &other), 100).await,
        History::Unrecoverable(Unrecoverable::EpochChanged)
    );
}

async fn history_ahead_of_the_channel_is_ahead(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let epoch = fixture.publish_n(&key, 3).await[0].epoch.clone();
    for offset in [4, 1000, u64::MAX] {
        assert_eq!(fixture.history(&key, &at(offset, &epoch), 100).await, History::Unrecoverable(Unrecoverable::Ahead));
    }
}

async fn history_of_more_than_the_limit_is_too_many(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let epoch = fixture.publish_n(&key, 10).await[0].epoch.clone();
    assert_eq!(fixture.history(&key, &at(0, &epoch), 9).await, History::Unrecoverable(Unrecoverable::TooMany));
    assert_eq!(fixture.history(&key, &at(4, &epoch), 5).await, History::Unrecoverable(Unrecoverable::TooMany));
    assert_eq!(recovered(fixture.history(&key, &at(5, &epoch), 5).await, &key, &epoch), expected(6..=10));
}

async fn history_reaching_below_the_trimmed_part_is_trimmed(kind: Kind) {
    let fixture = kind.fixture_with(HistorySettings { size: 5, ..HistorySettings::default() }).await;
    let key = channel("t1", "global");
    let epoch = fixture.publish_n(&key, 10).await[0].epoch.clone();
    for since in [0, 2, 4] {
        assert_eq!(
            fixture.history(&key, &at(since, &epoch), 100).await,
            History::Unrecoverable(Unrecoverable::Trimmed),
            "since {since}"
        );
    }
}

async fn history_from_just_before_the_oldest_kept_publication_is_recovered(kind: Kind) {
    let fixture = kind.fixture_with(HistorySettings { size: 5, ..HistorySettings::default() }).await;
    let key = channel("t1", "global");
    let epoch = fixture.publish_n(&key, 10).await[0].epoch.clone();
    assert_eq!(recovered(fixture.history(&key, &at(5, &epoch), 100).await, &key, &epoch), expected(6..=10));
    assert_eq!(recovered(fixture.history(&key, &at(7, &epoch), 100).await, &key, &epoch), expected(8..=10));
}

async fn position_of_an_unknown_channel_is_offset_0_and_the_first_publication_continues_its_epoch(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let start = fixture.position(&key).await;
    assert_eq!(start.offset, 0);
    assert!(!start.epoch.0.is_empty());
    assert_eq!(fixture.position(&key).await, start, "position is stable");
    assert_eq!(fixture.history(&key, &start, 100).await, History::Recovered(Vec::new()));
    let first = fixture.publish(&key, "payload-1").await;
    assert_eq!(first, at(1, &start.epoch));
    assert_eq!(recovered(fixture.history(&key, &start, 100).await, &key, &start.epoch), expected(1..=1));
}

async fn a_payload_too_large_is_rejected_and_nothing_is_stored(kind: Kind) {
    let fixture = kind.fixture_with(HistorySettings { max_payload: 16, ..HistorySettings::default() }).await;
    let key = channel("t1", "global");
    let first = fixture.publish(&key, "payload-1").await;
    let error = fixture.broker.publish(&key, Bytes::from(vec![b'x'; 17])).await.unwrap_err();
    assert!(matches!(error, BrokerError::PayloadTooLarge { size: 17, limit: 16 }), "{error:?}");
    assert_eq!(fixture.position(&key).await, first);
    assert_eq!(recovered(fixture.history(&key, &at(0, &first.epoch), 100).await, &key, &first.epoch), expected(1..=1));
    let exact = fixture.broker.publish(&key, Bytes::from(vec![b'x'; 16])).await.expect("a payload at the limit passes");
    assert_eq!(exact, at(2, &first.epoch));
}

async fn a_lost_history_gives_a_new_epoch(kind: Kind) {
    // Memory loses the channel by its TTL; Redis by deleting its keys, as an expiry (or a
    // fresh Redis) would.
    let fixture =
        kind.fixture_with(HistorySettings { ttl: Duration::from_millis(200), ..HistorySettings::default() }).await;
    let key = channel("t1", "global");
    let old = fixture.publish_n(&key, 3).await.pop().unwrap();
    match &fixture.backend {
        Backend::Memory(_) => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while fixture.history(&key, &old, 100).await != History::Unrecoverable(Unrecoverable::EpochChanged) {
                assert!(tokio::time::Instant::now() < deadline, "the channel never expired");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Backend::Redis(server) => {
            let mut connection = server.connection().await.unwrap();
            let keys = [
                format!("{}:meta", RedisBroker::pubsub_channel(&key)),
                format!("{}:log", RedisBroker::pubsub_channel(&key)),
            ];
            let _: u64 = ::redis::cmd("DEL").arg(&keys).query_async(&mut connection).await.unwrap();
        }
    }
    assert_eq!(fixture.history(&key, &old, 100).await, History::Unrecoverable(Unrecoverable::EpochChanged));
    assert_eq!(
        fixture.history(&key, &at(0, &old.epoch), 100).await,
        History::Unrecoverable(Unrecoverable::EpochChanged)
    );
    let next = fixture.publish(&key, "payload-1").await;
    assert_eq!(next.offset, 1);
    assert_ne!(next.epoch, old.epoch);
    assert_eq!(recovered(fixture.history(&key, &at(0, &next.epoch), 100).await, &key, &next.epoch), expected(1..=1));
    assert_eq!(fixture.history(&key, &old, 100).await, History::Unrecoverable(Unrecoverable::EpochChanged));
}

async fn concurrent_publishers_get_exactly_offsets_1_to_800(kind: Kind) {
    let fixture = kind.fixture().await;
    let key = channel("t1", "global");
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let broker = fixture.broker.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for i in 0..100 {
                    let payload = Bytes::from(format!("{task}-{i}"));
                    positions.push(broker.publish(&key, payload).await.expect("publish succeeds"));
                }
                positions
            })
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(mine.windows(2).all(|pair| pair[0].offset < pair[1].offset), "one task's offsets increase");
        positions.extend(mine);
    }
    let epoch = positions[0].epoch.clone();
    assert!(positions.iter().all(|position| position.epoch == epoch));
    let offsets: BTreeSet<u64> = positions.iter().map(|position| position.offset).collect();
    assert_eq!(offsets.len(), 800, "no duplicates");
    assert_eq!(offsets, (1..=800).collect::<BTreeSet<_>>());
    let History::Recovered(history) = fixture.history(&key, &at(0, &epoch), 1000).await else {
        panic!("not recovered")
    };
    assert_eq!(
        history.iter().map(|publication| publication.position.offset).collect::<Vec<_>>(),
        (1..=800).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// Redis only.

fn server(fixture: &Fixture) -> &RedisServer {
    let Backend::Redis(server) = &fixture.backend else { panic!("not a Redis fixture") };
    server
}

async fn the_publish_script_also_publishes_the_message_live() {
    let fixture = Kind::Redis.fixture().await;
    let key = channel("t1", "actors/u1");
    let mut pubsub = server(&fixture).client().get_async_pubsub().await.unwrap();
    pubsub.subscribe(RedisBroker::pubsub_channel(&key)).await.unwrap();
    let mut messages = pubsub.on_message();

    let payloads = [Bytes::from_static(b"first"), Bytes::from_static(b"with:colons\x00and\xffbytes"), Bytes::new()];
    for payload in payloads {
        let position = fixture.broker.publish(&key, payload.clone()).await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("the message arrives")
            .expect("the subscription stays open");
        assert_eq!(RedisBroker::channel_from_pubsub(message.get_channel_name()), Some(key.clone()));
        let publication = RedisBroker::decode_message(key.clone(), message.get_payload_bytes()).expect("decodes");
        assert_eq!(publication, Publication::new(key.clone(), position, payload));
    }
}

async fn all_keys_of_a_channel_share_one_hash_tag() {
    let fixture = Kind::Redis.fixture().await;
    let key = channel("tenant-7", "sessions/abc");
    fixture.publish(&key, "x").await;
    fixture.position(&key).await;
    let mut connection = server(&fixture).connection().await.unwrap();
    let mut keys: Vec<String> = ::redis::cmd("KEYS").arg("t:tenant-7:ch:*").query_async(&mut connection).await.unwrap();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let tag = format!("{{{}}}", key.full());
    for stored in &keys {
        let open = stored.find('{').expect("a hash tag");
        let close = open + stored[open..].find('}').expect("a closed hash tag");
        assert_eq!(&stored[open..=close], tag, "{stored}");
    }
    assert!(RedisBroker::pubsub_channel(&key).contains(&tag));
}

async fn a_stopped_redis_is_unavailable_and_a_fresh_one_starts_a_new_epoch() {
    let mut fixture = Kind::Redis.fixture().await;
    // The pool waits its whole connect timeout for a Redis that is down: keep it short here.
    let settings = RedisSettings { connect_timeout: Duration::from_millis(300), ..RedisSettings::default() };
    let pool = redis_pool(&server(&fixture).url(), &settings).unwrap();
    let broker = RedisBroker::new(pool, HistorySettings::default());
    let key = channel("t1", "global");
    let old = broker.publish(&key, Bytes::from_static(b"payload-1")).await.unwrap();

    let Backend::Redis(server) = &mut fixture.backend else { panic!("not a Redis fixture") };
    server.stop().await;
    let error = broker.publish(&key, Bytes::from_static(b"lost")).await.unwrap_err();
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");
    let error = broker.history(&key, &old, 100).await.unwrap_err();
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");
    let error = broker.position(&key).await.unwrap_err();
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");

    // A restarted Redis is empty: the history is lost, and the pool reconnects by itself.
    server.restart().await.unwrap();
    let history = broker.history(&key, &old, 100).await.unwrap();
    assert_eq!(history, History::Unrecoverable(Unrecoverable::EpochChanged));
    let next = broker.publish(&key, Bytes::from_static(b"payload-1")).await.unwrap();
    assert_eq!(next.offset, 1);
    assert_ne!(next.epoch, old.epoch);
}

async fn a_failing_publish_script_leaves_no_gap() {
    let fixture = Kind::Redis.fixture().await;
    let key = channel("t1", "global");
    let first = fixture.publish(&key, "payload-1").await;
    // Break the log (a string where the stream should be): XADD fails inside the script.
    let mut connection = server(&fixture).connection().await.unwrap();
    let log = format!("{}:log", RedisBroker::pubsub_channel(&key));
    let _: () = ::redis::cmd("SET").arg(&log).arg("not a stream").query_async(&mut connection).await.unwrap();
    let error = fixture.broker.publish(&key, Bytes::from_static(b"lost")).await.unwrap_err();
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");
    assert_eq!(fixture.position(&key).await, first, "the offset did not move");
    let _: () = ::redis::cmd("DEL").arg(&log).query_async(&mut connection).await.unwrap();
    assert_eq!(fixture.publish(&key, "payload-2").await, at(2, &first.epoch));
}

// ---------------------------------------------------------------------------------------
// Memory only.

/// A sink that records what it receives.
#[derive(Default)]
struct RecordingSink {
    delivered: Mutex<Vec<Publication>>,
}

impl LiveSink for RecordingSink {
    fn deliver(&self, publication: Publication) {
        self.delivered.lock().unwrap().push(publication);
    }

    fn resumed(&self) {}
}

async fn publications_reach_a_feed_of_the_bus_in_order() {
    let fixture = Kind::Memory.fixture().await;
    let Backend::Memory(broker) = &fixture.backend else { panic!("not a memory fixture") };
    let feed = broker.bus().feed();
    let sink = Arc::new(RecordingSink::default());
    feed.attach(sink.clone());
    let (watched, other) = (channel("t1", "watched"), channel("t1", "other"));
    feed.subscribe(&watched).await.unwrap();

    let mut expected = Vec::new();
    for i in 1..=5 {
        let payload = Bytes::from(format!("payload-{i}"));
        let position = broker.publish(&watched, payload.clone()).await.unwrap();
        broker.publish(&other, Bytes::from_static(b"unwatched")).await.unwrap();
        expected.push(Publication::new(watched.clone(), position, payload));
    }
    assert_eq!(*sink.delivered.lock().unwrap(), expected);

    feed.unsubscribe(&watched).await.unwrap();
    broker.publish(&watched, Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(sink.delivered.lock().unwrap().len(), 5);
}

// ---------------------------------------------------------------------------------------

/// Runs every shared check against both implementations (`memory::<check>` and
/// `redis::<check>`), and each implementation's own checks in its module.
macro_rules! conformance {
    (shared: [$($check:ident),* $(,)?], memory: [$($memory:ident),* $(,)?], redis: [$($redis:ident),* $(,)?] $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::Kind::Memory).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $memory() {
                    super::$memory().await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::Kind::Redis).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $redis() {
                    super::$redis().await;
                }
            )*
        }
    };
}

conformance! {
    shared: [
        offsets_start_at_1_and_are_gap_free_under_one_epoch,
        channels_are_independent,
        same_named_channels_of_two_tenants_are_independent,
        history_after_a_position_returns_exactly_the_later_publications_in_order,
        history_from_offset_0_returns_everything_while_nothing_is_trimmed,
        history_at_the_head_is_empty_and_recovered,
        history_with_another_epoch_or_of_an_unknown_channel_is_epoch_changed,
        history_ahead_of_the_channel_is_ahead,
        history_of_more_than_the_limit_is_too_many,
        history_reaching_below_the_trimmed_part_is_trimmed,
        history_from_just_before_the_oldest_kept_publication_is_recovered,
        position_of_an_unknown_channel_is_offset_0_and_the_first_publication_continues_its_epoch,
        a_payload_too_large_is_rejected_and_nothing_is_stored,
        a_lost_history_gives_a_new_epoch,
        concurrent_publishers_get_exactly_offsets_1_to_800,
    ],
    memory: [publications_reach_a_feed_of_the_bus_in_order],
    redis: [
        the_publish_script_also_publishes_the_message_live,
        all_keys_of_a_channel_share_one_hash_tag,
        a_stopped_redis_is_unavailable_and_a_fresh_one_starts_a_new_epoch,
        a_failing_publish_script_leaves_no_gap,
    ],
}
