//! The hub and `subscribe` over both backbones (memory, and Redis with its own private
//! redis-server): confirmation, recovery, the seam between history and live, fan-out
//! across hubs, slow consumers, one Redis subscription per channel, and a Redis restart
//! in the middle of a stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mesh_core::backend::redis_pool;
use mesh_core::broker::hub::Hub;
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::redis_feed::RedisFeed;
use mesh_core::broker::subscription::{ChannelRequest, StreamEvent, Subscription, SubscriptionSettings, subscribe};
use mesh_core::broker::{Broker, ChannelKey, ChannelName, HistorySettings, Position};
use mesh_core::config::RedisSettings;
use mesh_core::error::Code;
use mesh_testkit::RedisServer;
use tokio_stream::StreamExt;

/// How long any single expected event may take before a test fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn channel(tenant: &str, name: &str) -> ChannelKey {
    ChannelKey::new(tenant, ChannelName::parse(name, "channel").unwrap()).unwrap()
}

fn memory_hub(history: HistorySettings) -> Hub {
    let broker = MemoryBroker::new(history);
    let feed = Arc::new(broker.bus().feed());
    Hub::new(Arc::new(broker), feed, 1000)
}

/// A second hub on the same memory broker (another "process" sharing the backbone).
fn memory_pair(history: HistorySettings) -> (Hub, Hub) {
    let broker = Arc::new(MemoryBroker::new(history));
    let first = Hub::new(broker.clone(), Arc::new(broker.bus().feed()), 1000);
    let second = Hub::new(broker.clone(), Arc::new(broker.bus().feed()), 1000);
    (first, second)
}

/// A hub on `redis` with its own command pool and its own pub/sub connection, as one
/// meshd process would have.
fn redis_hub(redis: &RedisServer, history: HistorySettings) -> Hub {
    let pool = redis_pool(&redis.url(), &RedisSettings::default()).unwrap();
    let broker = Arc::new(RedisBroker::new(pool, history));
    let feed = Arc::new(RedisFeed::start(redis.client()));
    Hub::new(broker, feed, 1000)
}

fn settings() -> SubscriptionSettings {
    SubscriptionSettings { heartbeat_interval: Duration::from_secs(3600), ..SubscriptionSettings::default() }
}

async fn open(
    hub: &Hub,
    key: &ChannelKey,
    since: Option<Position>,
) -> (Subscription, mesh_core::broker::subscription::Confirmation) {
    let mut subscription =
        subscribe(hub, vec![ChannelRequest { channel: key.clone(), since }], &settings()).await.expect("subscribed");
    match next(&mut subscription).await {
        StreamEvent::Confirmed(confirmation) => (subscription, confirmation),
        other => panic!("the first event must be the confirmation, got {other:?}"),
    }
}

async fn next(subscription: &mut Subscription) -> StreamEvent {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("no stream error")
}

async fn next_offsets(subscription: &mut Subscription, count: usize) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(count);
    while offsets.len() < count {
        match next(subscription).await {
            StreamEvent::Publication(publication) => offsets.push(publication.position.offset),
            StreamEvent::Heartbeat => {}
            StreamEvent::Confirmed(_) => panic!("a second confirmation"),
        }
    }
    offsets
}

async fn publish_n(broker: &Arc<dyn Broker>, key: &ChannelKey, count: usize) -> Position {
    let mut last = None;
    for index in 0..count {
        last = Some(broker.publish(key, Bytes::from(format!("message {index}"))).await.unwrap());
    }
    last.expect("at least one publication")
}

// ----- the checks, each run on memory and on Redis -----

async fn live_publications_arrive_in_order_after_the_confirmation(hub: Hub) {
    let key = channel("t1", "global");
    let (mut subscription, confirmation) = open(&hub, &key, None).await;
    assert!(!confirmation.recovery_requested && !confirmation.recovered);
    assert_eq!(confirmation.positions[0].1.offset, 0);
    publish_n(hub.broker(), &key, 20).await;
    assert_eq!(next_offsets(&mut subscription, 20).await, (1..=20).collect::<Vec<_>>());
}

async fn a_reconnect_with_the_last_position_replays_exactly_what_was_missed(hub: Hub) {
    let key = channel("t1", "global");
    let (mut subscription, _) = open(&hub, &key, None).await;
    publish_n(hub.broker(), &key, 5).await;
    let seen = next_offsets(&mut subscription, 5).await;
    let last = subscription.cursor(&key).unwrap().clone();
    assert_eq!((seen.last(), last.offset), (Some(&5), 5));
    drop(subscription);

    publish_n(hub.broker(), &key, 10).await;
    let (mut resumed, confirmation) = open(&hub, &key, Some(last)).await;
    assert!(confirmation.recovery_requested && confirmation.recovered, "{confirmation:?}");
    assert_eq!(confirmation.positions[0].1.offset, 15);
    assert_eq!(next_offsets(&mut resumed, 10).await, (6..=15).collect::<Vec<_>>());
    // Then live, with nothing doubled at the seam.
    publish_n(hub.broker(), &key, 1).await;
    assert_eq!(next_offsets(&mut resumed, 1).await, vec![16]);
}

async fn a_position_below_the_trimmed_history_is_not_recovered_and_nothing_is_replayed(hub: Hub) {
    let key = channel("t1", "global");
    let first = publish_n(hub.broker(), &key, 1).await;
    publish_n(hub.broker(), &key, 20).await; // history holds 5 (see the fixture)
    let (mut subscription, confirmation) = open(&hub, &key, Some(first)).await;
    assert!(confirmation.recovery_requested && !confirmation.recovered);
    assert_eq!(confirmation.unrecovered, vec![key.clone()]);
    assert_eq!(confirmation.positions[0].1.offset, 21);
    publish_n(hub.broker(), &key, 1).await;
    assert_eq!(next_offsets(&mut subscription, 1).await, vec![22], "nothing replayed, then live");
}

async fn a_position_of_another_epoch_is_not_recovered(hub: Hub) {
    let key = channel("t1", "global");
    let mut stale = publish_n(hub.broker(), &key, 3).await;
    stale.epoch = mesh_core::broker::Epoch::random();
    let (_subscription, confirmation) = open(&hub, &key, Some(stale)).await;
    assert!(!confirmation.recovered);
    assert_eq!(confirmation.unrecovered, vec![key]);
}

async fn publications_racing_with_joins_are_neither_lost_nor_doubled(hub: Hub) {
    let key = channel("t1", "race");
    let publisher = {
        let broker = hub.broker().clone();
        let key = key.clone();
        tokio::spawn(async move {
            for round in 0..300 {
                broker.publish(&key, Bytes::from(format!("{round}"))).await.unwrap();
                if round % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Each subscriber reads as it goes, from the offset it joined at up to the last.
    let mut readers = Vec::new();
    for _ in 0..20 {
        let (mut subscription, confirmation) = open(&hub, &key, None).await;
        let start = confirmation.positions[0].1.offset;
        readers.push(tokio::spawn(async move {
            let got = next_offsets(&mut subscription, (300 - start) as usize).await;
            (start, got)
        }));
        tokio::task::yield_now().await;
    }
    publisher.await.unwrap();
    for reader in readers {
        let (start, got) = reader.await.unwrap();
        assert_eq!(got, (start + 1..=300).collect::<Vec<_>>(), "subscriber that joined at {start}");
    }
}

async fn a_subscriber_that_does_not_read_is_cut_off_while_100_others_get_everything(hub: Hub) {
    let key = channel("t1", "busy");
    let (mut slow, _) = open(&hub, &key, None).await;
    let mut fast = Vec::new();
    for _ in 0..100 {
        fast.push(open(&hub, &key, None).await.0);
    }
    let total = 150; // more than the queue of 100
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut subscription| tokio::spawn(async move { next_offsets(&mut subscription, total).await }))
        .collect();
    for index in 0..total {
        hub.broker().publish(&key, Bytes::from(format!("{index}"))).await.unwrap();
        if index % 20 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap(), (1..=total as u64).collect::<Vec<_>>());
    }
    // The slow one gets what fitted in its queue, then SLOW_CONSUMER with its position.
    let mut received = 0;
    let error = loop {
        match tokio::time::timeout(PATIENCE, slow.next()).await.expect("an event in time").expect("open") {
            Ok(StreamEvent::Publication(_)) => received += 1,
            Ok(_) => {}
            Err(error) => break error,
        }
    };
    assert_eq!((error.code(), error.reason()), (Code::ResourceExhausted, "SLOW_CONSUMER"));
    assert!(received < total, "the slow subscriber cannot have received everything");
    assert_eq!(
        error.metadata().get("busy").map(String::as_str).map(|value| value.split(':').next()),
        Some(Some(received.to_string().as_str()))
    );
}

async fn an_idle_stream_gets_heartbeats(hub: Hub) {
    let key = channel("t1", "quiet");
    let settings =
        SubscriptionSettings { heartbeat_interval: Duration::from_millis(50), ..SubscriptionSettings::default() };
    let mut subscription =
        subscribe(&hub, vec![ChannelRequest { channel: key, since: None }], &settings).await.unwrap();
    assert!(matches!(next(&mut subscription).await, StreamEvent::Confirmed(_)));
    assert_eq!(next(&mut subscription).await, StreamEvent::Heartbeat);
    assert_eq!(next(&mut subscription).await, StreamEvent::Heartbeat);
}

async fn bad_requests_are_invalid_arguments(hub: Hub) {
    let key = channel("t1", "global");
    let empty = subscribe(&hub, vec![], &settings()).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let twice =
        vec![ChannelRequest { channel: key.clone(), since: None }, ChannelRequest { channel: key, since: None }];
    let error = subscribe(&hub, twice, &settings()).await.unwrap_err();
    assert_eq!(error.violations()[0].field, "channels[1]");
    let many: Vec<_> =
        (0..17).map(|index| ChannelRequest { channel: channel("t1", &format!("c{index}")), since: None }).collect();
    assert_eq!(subscribe(&hub, many, &settings()).await.unwrap_err().code(), Code::InvalidArgument);
}

fn small_history() -> HistorySettings {
    HistorySettings { size: 5, ..HistorySettings::default() }
}

macro_rules! on_both_backbones {
    ($($check:ident $(with $history:expr)?;)*) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut history = HistorySettings::default();
                    $(history = $history;)?
                    super::$check(memory_hub(history)).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut history = HistorySettings::default();
                    $(history = $history;)?
                    let server = RedisServer::start().await.unwrap();
                    super::$check(redis_hub(&server, history)).await;
                }
            )*
        }
    };
}

on_both_backbones! {
    live_publications_arrive_in_order_after_the_confirmation;
    a_reconnect_with_the_last_position_replays_exactly_what_was_missed;
    a_position_below_the_trimmed_history_is_not_recovered_and_nothing_is_replayed with small_history();
    a_position_of_another_epoch_is_not_recovered;
    publications_racing_with_joins_are_neither_lost_nor_doubled;
    a_subscriber_that_does_not_read_is_cut_off_while_100_others_get_everything;
    an_idle_stream_gets_heartbeats;
    bad_requests_are_invalid_arguments;
}

// ----- across hubs, and Redis-only behaviour -----

async fn a_publication_on_one_hub_reaches_the_subscribers_of_another_in_order(first: Hub, second: Hub) {
    let key = channel("t1", "shared");
    let (mut on_second, _) = open(&second, &key, None).await;
    let (mut on_first, _) = open(&first, &key, None).await;
    publish_n(first.broker(), &key, 50).await;
    let expected: Vec<u64> = (1..=50).collect();
    assert_eq!(next_offsets(&mut on_second, 50).await, expected);
    assert_eq!(next_offsets(&mut on_first, 50).await, expected);
}

#[tokio::test]
async fn memory_a_publication_on_one_hub_reaches_the_subscribers_of_another_in_order() {
    let (first, second) = memory_pair(HistorySettings::default());
    a_publication_on_one_hub_reaches_the_subscribers_of_another_in_order(first, second).await;
}

#[tokio::test]
async fn redis_a_publication_on_one_hub_reaches_the_subscribers_of_another_in_order() {
    let server = RedisServer::start().await.unwrap();
    let (first, second) =
        (redis_hub(&server, HistorySettings::default()), redis_hub(&server, HistorySettings::default()));
    a_publication_on_one_hub_reaches_the_subscribers_of_another_in_order(first, second).await;
}

async fn numsub(server: &RedisServer, key: &ChannelKey) -> i64 {
    let mut connection = server.connection().await.unwrap();
    let reply: Vec<::redis::Value> = ::redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(RedisBroker::pubsub_channel(key))
        .query_async(&mut connection)
        .await
        .unwrap();
    ::redis::from_redis_value(reply[1].clone()).unwrap()
}

#[tokio::test]
async fn many_local_streams_share_one_redis_subscription_which_ends_with_the_last() {
    let server = RedisServer::start().await.unwrap();
    let hub = redis_hub(&server, HistorySettings::default());
    let key = channel("t1", "popular");
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(open(&hub, &key, None).await.0);
    }
    assert_eq!(numsub(&server, &key).await, 1, "one SUBSCRIBE for ten local streams");
    assert_eq!(hub.subscriber_count(&key), 10);
    streams.clear();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while numsub(&server, &key).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the channel was never unsubscribed");
        tokio::task::yield_now().await;
    }
    assert_eq!(hub.channel_count(), 0);
}

#[tokio::test]
async fn a_redis_restart_mid_stream_is_reported_and_the_hub_resubscribes_by_itself() {
    let mut server = RedisServer::start().await.unwrap();
    let hub = redis_hub(&server, HistorySettings::default());
    let key = channel("t1", "restart");
    let (mut subscription, _) = open(&hub, &key, None).await;
    publish_n(hub.broker(), &key, 3).await;
    assert_eq!(next_offsets(&mut subscription, 3).await, vec![1, 2, 3]);
    let last = subscription.cursor(&key).unwrap().clone();

    server.stop().await;
    server.restart().await.unwrap();

    // The restarted Redis kept nothing: the stream must say so, not go silent.
    let error = loop {
        match tokio::time::timeout(PATIENCE, subscription.next()).await.expect("a gap report in time").expect("open") {
            Ok(StreamEvent::Heartbeat) => continue,
            Ok(other) => panic!("expected a gap report, got {other:?}"),
            Err(error) => break error,
        }
    };
    assert_eq!((error.code(), error.reason()), (Code::Unavailable, "STREAM_GAP"));
    assert_eq!(
        error.metadata().get("restart").map(String::as_str),
        Some(format!("3:{}", last.epoch.as_str()).as_str())
    );

    // Without any caller action the hub is subscribed again: a new stream works, and its
    // client's old position is reported as unrecoverable rather than silently skipped.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (mut again, confirmation) = loop {
        match subscribe(&hub, vec![ChannelRequest { channel: key.clone(), since: Some(last.clone()) }], &settings())
            .await
        {
            Ok(mut stream) => match next(&mut stream).await {
                StreamEvent::Confirmed(confirmation) => break (stream, confirmation),
                other => panic!("{other:?}"),
            },
            Err(error) if error.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("no resubscription: {error:?}"),
        }
    };
    assert!(confirmation.recovery_requested && !confirmation.recovered);
    let fresh = publish_n(hub.broker(), &key, 1).await;
    assert_eq!(fresh.offset, 1);
    assert_ne!(fresh.epoch, last.epoch, "a fresh Redis means a new epoch");
    assert_eq!(next_offsets(&mut again, 1).await, vec![1]);
}

#[tokio::test]
async fn a_channel_whose_keys_were_deleted_is_not_recovered_and_nothing_is_replayed() {
    let server = RedisServer::start().await.unwrap();
    let hub = redis_hub(&server, HistorySettings::default());
    let key = channel("t1", "wiped");
    let (mut subscription, _) = open(&hub, &key, None).await;
    publish_n(hub.broker(), &key, 5).await;
    assert_eq!(next_offsets(&mut subscription, 5).await, vec![1, 2, 3, 4, 5]);
    let last = subscription.cursor(&key).unwrap().clone();
    drop(subscription);

    let mut connection = server.connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("t:t1:ch:*").query_async(&mut connection).await.unwrap();
    assert!(!keys.is_empty());
    let _: () = ::redis::cmd("DEL").arg(&keys).query_async(&mut connection).await.unwrap();
    publish_n(hub.broker(), &key, 10).await;

    let (mut resumed, confirmation) = open(&hub, &key, Some(last.clone())).await;
    assert!(confirmation.recovery_requested && !confirmation.recovered, "{confirmation:?}");
    assert_ne!(confirmation.positions[0].1.epoch, last.epoch);
    publish_n(hub.broker(), &key, 1).await;
    assert_eq!(next_offsets(&mut resumed, 1).await, vec![11], "nothing replayed, then live");
}

#[tokio::test]
async fn publications_made_while_the_pubsub_connection_was_down_are_replayed_in_order() {
    let server = RedisServer::start().await.unwrap();
    let hub = redis_hub(&server, HistorySettings::default());
    let key = channel("t1", "replay");
    let (mut subscription, _) = open(&hub, &key, None).await;
    publish_n(hub.broker(), &key, 3).await;
    assert_eq!(next_offsets(&mut subscription, 3).await, vec![1, 2, 3]);

    // Cut the hub's pub/sub connection; Redis keeps its data, so history can fill the hole.
    let mut connection = server.connection().await.unwrap();
    let killed: i64 =
        ::redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut connection).await.unwrap();
    assert_eq!(killed, 1, "one pub/sub connection for the whole hub");
    publish_n(hub.broker(), &key, 5).await; // nobody is subscribed to hear these live

    // The hub reconnects, resubscribes and replays 4..=8 by itself; then live goes on.
    assert_eq!(next_offsets(&mut subscription, 5).await, vec![4, 5, 6, 7, 8]);
    publish_n(hub.broker(), &key, 1).await;
    assert_eq!(next_offsets(&mut subscription, 1).await, vec![9]);
}

#[tokio::test]
async fn a_consumer_cut_off_during_its_replay_is_told_the_position_it_really_reached() {
    let hub = memory_hub(HistorySettings::default());
    let key = channel("t1", "catchup");
    let since = publish_n(hub.broker(), &key, 1).await;
    publish_n(hub.broker(), &key, 50).await;
    let roomy = SubscriptionSettings { queue_capacity: 5, ..settings() };
    let mut subscription =
        subscribe(&hub, vec![ChannelRequest { channel: key.clone(), since: Some(since.clone()) }], &roomy)
            .await
            .unwrap();
    // The client reads nothing while live publications pile up beyond queue and backlog.
    publish_n(hub.broker(), &key, 2000).await;
    let error = loop {
        match tokio::time::timeout(PATIENCE, subscription.next()).await.expect("in time").expect("open") {
            Ok(StreamEvent::Confirmed(_)) => {}
            Ok(other) => panic!("nothing should reach a client that was cut off before reading: {other:?}"),
            Err(error) => break error,
        }
    };
    assert_eq!(error.reason(), "SLOW_CONSUMER");
    let reported = error.metadata().get("catchup").cloned().unwrap();
    assert_eq!(reported, format!("{}:{}", since.offset, since.epoch.as_str()), "it received nothing of its replay");
}

#[tokio::test]
async fn a_long_replay_on_a_busy_channel_does_not_cut_off_a_reading_client() {
    let hub = memory_hub(HistorySettings::default());
    let key = channel("t1", "busyreplay");
    let since = publish_n(hub.broker(), &key, 1).await;
    publish_n(hub.broker(), &key, 300).await;
    let small_queue = SubscriptionSettings { queue_capacity: 10, ..settings() };
    let mut subscription =
        subscribe(&hub, vec![ChannelRequest { channel: key.clone(), since: Some(since) }], &small_queue).await.unwrap();
    assert!(matches!(next(&mut subscription).await, StreamEvent::Confirmed(ref c) if c.recovered));
    let mut offsets = Vec::new();
    for round in 0..50 {
        publish_n(hub.broker(), &key, 1).await; // live, while the replay is still going out
        offsets.extend(next_offsets(&mut subscription, 6).await);
        assert!(offsets.len() == (round + 1) * 6);
    }
    offsets.extend(next_offsets(&mut subscription, 350 - offsets.len()).await);
    assert_eq!(offsets, (2..=351).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_channel_whose_history_expired_while_idle_goes_on_without_a_gap_report() {
    let history = HistorySettings { ttl: Duration::from_millis(200), ..HistorySettings::default() };
    let hub = memory_hub(history);
    let key = channel("t1", "idle");
    let (mut subscription, _) = open(&hub, &key, None).await;
    let first = publish_n(hub.broker(), &key, 1).await;
    assert_eq!(next_offsets(&mut subscription, 1).await, vec![1]);

    // Wait (polling, with a deadline) until the idle channel's history has expired.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.broker().position(&key).await.unwrap().epoch == first.epoch {
        assert!(tokio::time::Instant::now() < deadline, "the history never expired");
        tokio::task::yield_now().await;
    }
    let restarted = publish_n(hub.broker(), &key, 1).await;
    assert_eq!(restarted.offset, 1);
    match next(&mut subscription).await {
        StreamEvent::Publication(publication) => assert_eq!(publication.position, restarted),
        other => panic!("expected the publication of the new epoch, got {other:?}"),
    }
}
