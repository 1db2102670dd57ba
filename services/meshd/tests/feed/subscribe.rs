//! Subscribe: live delivery, recovery, tenant isolation, stream limits, across instances.

use mesh_core::auth::SigningKeyPair;
use mesh_proto::mesh::feed::v1 as pb;
use mesh_testkit::RedisServer;
use pb::subscribe_response::Event;
use tonic::Code;

use crate::support::{Feed, confirmed, in_memory, next_activity, next_event, on_redis, reason};

#[tokio::test]
async fn a_subscriber_receives_each_activity_as_listfeed_returns_it_and_its_tombstone() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let alice = Feed::of(&app, "acme", "alice");
    let mut stream = alice.subscribe(&[("global", None)]).await.unwrap();
    confirmed(&mut stream).await;
    let published = alice.publish("post", "live").await.unwrap();
    let event = next_activity(&mut stream).await;
    assert_eq!(event.position.as_ref().unwrap().channel, "global");
    assert_eq!(event.position.unwrap().position, published.positions[0].position);
    let listed = alice.list("global", 1, "").await.unwrap().activities.remove(0);
    assert_eq!(event.activity.unwrap(), listed, "the same message ListFeed returns");
    alice.delete(&listed.activity_id).await.unwrap();
    match next_event(&mut stream).await.unwrap() {
        Some(Event::Tombstone(tombstone)) => {
            assert_eq!(
                (tombstone.activity_id.as_str(), tombstone.actor_id.as_str()),
                (listed.activity_id.as_str(), "alice")
            );
        }
        other => panic!("expected the tombstone, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_resuming_after_50_missed_activities_gets_exactly_those_then_live() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let alice = Feed::of(&app, "acme", "alice");
    let last = alice.publish("post", "seen").await.unwrap().positions.remove(0).position;
    let mut missed = Vec::new();
    for i in 0..50 {
        missed.push(alice.publish("post", &format!("missed {i}")).await.unwrap().activity.unwrap().activity_id);
    }
    let mut stream = alice.subscribe(&[("global", last)]).await.unwrap();
    let confirmation = confirmed(&mut stream).await;
    assert!(confirmation.recovery_requested && confirmation.recovered);
    for id in &missed {
        assert_eq!(&next_activity(&mut stream).await.activity.unwrap().activity_id, id);
    }
    let live = alice.publish("post", "live").await.unwrap().activity.unwrap();
    assert_eq!(next_activity(&mut stream).await.activity.unwrap(), live);
}

#[tokio::test]
async fn publishing_after_a_write_and_subscribing_from_its_position_misses_nothing() {
    let app = in_memory(|_| {}).await;
    let alice = Feed::of(&app, "acme", "alice");
    let own = alice.publish("post", "mine").await.unwrap();
    let mut stream = alice.subscribe(&[("actors/alice", own.positions[1].position.clone())]).await.unwrap();
    let confirmation = confirmed(&mut stream).await;
    assert!(confirmation.recovered, "the write's position is recoverable");
    let next = alice.publish("post", "next").await.unwrap().activity.unwrap();
    assert_eq!(next_activity(&mut stream).await.activity.unwrap(), next);
}

#[tokio::test]
async fn a_subscriber_never_receives_another_tenants_activities_whatever_channel_it_names() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let a = Feed::of(&app, "tenant-a", "alice");
    let b = Feed::of(&app, "tenant-b", "alice");
    let mut stream = a.subscribe(&[("global", None), ("actors/alice", None)]).await.unwrap();
    confirmed(&mut stream).await;
    for channel in ["tenant-b/global", "../tenant-b/global", "_mesh/revocations/all"] {
        assert_eq!(a.subscribe(&[(channel, None)]).await.unwrap_err().code(), Code::InvalidArgument, "{channel}");
    }
    b.publish("post", "b's").await.unwrap();
    let own = a.publish("post", "a's").await.unwrap().activity.unwrap();
    for _ in 0..2 {
        let event = next_activity(&mut stream).await.activity.unwrap();
        assert_eq!(event, own, "only tenant A's activity, on both channels");
    }
}

#[tokio::test]
async fn a_caller_may_hold_only_its_streams_allowance() {
    let app = in_memory(|settings| settings.feed.max_streams_per_caller = 2).await;
    let alice = Feed::of(&app, "acme", "alice");
    let mut first = alice.subscribe(&[("global", None)]).await.unwrap();
    confirmed(&mut first).await;
    let mut second = alice.subscribe(&[("global", None)]).await.unwrap();
    confirmed(&mut second).await;
    let status = alice.subscribe(&[("global", None)]).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_deref()), (Code::ResourceExhausted, Some("TOO_MANY_STREAMS")));
    let mut bobs = Feed::of(&app, "acme", "bob").subscribe(&[("global", None)]).await.unwrap();
    confirmed(&mut bobs).await;
    drop(first);
    let again =
        mesh_testkit::wait::eventually("a closed stream frees its slot", std::time::Duration::from_secs(10), || {
            let alice = alice.clone();
            async move { alice.subscribe(&[("global", None)]).await.ok() }
        })
        .await;
    drop(again);
}

#[tokio::test]
async fn three_instances_deliver_every_activity_to_every_subscriber_once_in_one_order() {
    let redis = RedisServer::start().await.unwrap();
    let key = SigningKeyPair::generate();
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(on_redis(&redis, Some(key.clone()), |_| {}).await);
    }
    let mut streams = Vec::new();
    for (index, app) in apps.iter().enumerate() {
        for watcher in 0..2 {
            let feed = Feed::of(app, "acme", &format!("watcher-{index}-{watcher}"));
            let mut stream = feed.subscribe(&[("global", None)]).await.unwrap();
            confirmed(&mut stream).await;
            streams.push(stream);
        }
    }
    let publishers: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(index, app)| {
            let feed = Feed::of(app, "acme", &format!("author-{index}"));
            tokio::spawn(async move {
                for i in 0..20 {
                    feed.publish("post", &format!("{index}/{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let mut orders = Vec::new();
    for stream in &mut streams {
        let mut order = Vec::new();
        for _ in 0..60 {
            let event = next_activity(stream).await;
            order.push((event.position.unwrap().position.unwrap().offset, event.activity.unwrap().activity_id));
        }
        orders.push(order);
    }
    let first = &orders[0];
    assert_eq!(first.iter().map(|(id, _)| id).collect::<std::collections::HashSet<_>>().len(), 60, "each once");
    assert!(first.windows(2).all(|pair| pair[0].0 < pair[1].0), "in offset order");
    for order in &orders[1..] {
        assert_eq!(order, first, "every subscriber sees the same sequence");
    }
}

#[tokio::test]
async fn a_slow_consumer_is_ended_with_slow_consumer_while_1000_others_get_everything() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |settings| settings.stream.queue_capacity = 16).await;
    let mut others = Vec::new();
    for i in 0..1000 {
        let mut stream = Feed::of(&app, "acme", &format!("reader-{i}")).subscribe(&[("global", None)]).await.unwrap();
        confirmed(&mut stream).await;
        others.push(stream);
    }
    // The slow one reads nothing: a tiny HTTP/2 window on its own connection fills at once,
    // then its queue in the server.
    let endpoint = tonic::transport::Endpoint::from_shared(app.url()).unwrap().initial_stream_window_size(Some(1024));
    let channel = endpoint.connect().await.unwrap();
    let mut slow_client = pb::feed_service_client::FeedServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::SubscribeRequest {
        channels: vec![mesh_proto::mesh::stream::v1::ChannelPosition { channel: "global".into(), position: None }],
    });
    let bearer = format!("Bearer {}", app.token("acme", "slow")).parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let mut slow = slow_client.subscribe(request).await.unwrap().into_inner();
    confirmed(&mut slow).await;

    // The others read as fast as they can, each in its own task.
    let readers: Vec<_> = others
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(60);
                for _ in 0..60 {
                    ids.push(next_activity(&mut stream).await.activity.unwrap().activity_id);
                }
                ids
            })
        })
        .collect();
    let alice = Feed::of(&app, "acme", "alice");
    let mut published = Vec::new();
    for i in 0..60 {
        let text = format!("{i} {}", "x".repeat(200));
        published.push(alice.publish("post", &text).await.unwrap().activity.unwrap().activity_id);
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap(), published, "every other subscriber got everything, in order");
    }
    let ended = loop {
        match next_event(&mut slow).await {
            Ok(Some(Event::Activity(_))) => continue,
            Ok(other) => panic!("expected the slow consumer to be ended, got {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!((ended.code(), reason(&ended).as_deref()), (Code::ResourceExhausted, Some("SLOW_CONSUMER")));
}
