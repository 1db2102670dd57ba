//! Two meshd instances on one Redis: no instance-local state, and each expiry announced
//! once, not once per instance.

use std::time::Duration;

use mesh_core::auth::SigningKeyPair;
use mesh_core::backend::redis_pool;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::{Broker, History, HistorySettings, Position};
use mesh_core::config::RedisSettings;
use mesh_proto::mesh::session::v1 as pb;
use mesh_session::domain::{SessionChangeKind, SessionId};
use mesh_session::store::{channel_of, decode_change};
use mesh_testkit::RedisServer;

use crate::support::{Sessions, confirmed, next_change, next_event, on_redis, user};

#[tokio::test]
async fn an_update_on_one_instance_reaches_a_watcher_on_the_other() {
    let redis = RedisServer::start().await.unwrap();
    let key = SigningKeyPair::generate();
    let a = on_redis(&redis, Some(key.clone()), |_| {}).await;
    let b = on_redis(&redis, Some(key), |_| {}).await;
    let name = user();
    let on_a = Sessions::of(&a, "acme", &name);
    let on_b = Sessions::of(&b, "acme", &name);

    let session = on_a.create(&[]).await.unwrap();
    assert_eq!(on_b.get(&session.session_id).await.unwrap().version, 1, "B reads what A wrote");
    let mut watch = on_b.watch(&session.session_id, None).await.unwrap();
    confirmed(&mut watch).await;
    on_a.update(&session.session_id, 1, &[("seen", "by b")], &[]).await.unwrap();
    let change = next_change(&mut watch).await;
    assert_eq!((change.kind(), change.version), (pb::SessionChangeKind::Updated, 2));
    let snapshot = change.session.unwrap();
    assert_eq!(snapshot.attributes.get("seen").map(String::as_str), Some("by b"));
    on_a.delete(&session.session_id, None).await.unwrap();
    assert_eq!(next_change(&mut watch).await.kind(), pb::SessionChangeKind::Deleted);
    assert!(next_event(&mut watch).await.is_none());
}

#[tokio::test]
async fn an_expiry_is_announced_once_whatever_the_number_of_instances() {
    let redis = RedisServer::start().await.unwrap();
    let key = SigningKeyPair::generate();
    // Long enough for the nine watches below to open before the sessions expire.
    let short = |settings: &mut mesh_core::config::Settings| {
        settings.services = vec!["session".to_owned()];
        settings.session.idle_ttl = Duration::from_secs(2);
        settings.session.sweep_interval = Duration::from_millis(20);
    };
    let a = on_redis(&redis, Some(key.clone()), short).await;
    let b = on_redis(&redis, Some(key.clone()), short).await;
    let c = on_redis(&redis, Some(key), short).await;
    let name = user();
    let mut sessions = Vec::new();
    let mut watches = Vec::new();
    for (n, app) in [&a, &b, &c].into_iter().enumerate() {
        let client = Sessions::of(app, "acme", &name);
        let session = client.create(&[("n", &n.to_string())]).await.unwrap();
        sessions.push(session.session_id.clone());
        // Every session is watched on every instance.
        for watcher in [&a, &b, &c] {
            let mut watch = Sessions::of(watcher, "acme", &name).watch(&session.session_id, None).await.unwrap();
            confirmed(&mut watch).await;
            watches.push(watch);
        }
    }
    for watch in &mut watches {
        let change = next_change(watch).await;
        assert_eq!(change.kind(), pb::SessionChangeKind::Expired);
        assert_eq!(change.position.unwrap().position.unwrap().offset, 2, "CREATED, then one EXPIRED");
        assert!(next_event(watch).await.is_none());
    }

    // The channel holds exactly one EXPIRED per session: three sweepers, one announcement.
    let pool = redis_pool(&redis.url(), &RedisSettings::default()).unwrap();
    let broker = RedisBroker::new(pool, HistorySettings::default());
    for id in &sessions {
        let id = SessionId::parse(id, "id").unwrap();
        let channel = channel_of("acme", &id).unwrap();
        let head = broker.position(&channel).await.unwrap();
        let start = Position { offset: 0, epoch: head.epoch.clone() };
        let History::Recovered(all) = broker.history(&channel, &start, 100).await.unwrap() else {
            panic!("the history is complete");
        };
        let kinds: Vec<_> = all.iter().map(|p| decode_change("acme", &id, &p.payload).unwrap().kind).collect();
        assert_eq!(kinds, [SessionChangeKind::Created, SessionChangeKind::Expired]);
    }
}
