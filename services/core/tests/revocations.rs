//! The in-process revocation view: it asks the store until it is live, catches up on what
//! was revoked before it started, follows revocations made by other processes through the
//! broker, and fails closed when it can tell nothing. Each test starts its own redis-server.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::auth::{Caller, RedisRevocationStore, RevocationStore, Revocations, Revoked};
use mesh_core::backend::redis_pool;
use mesh_core::broker::HistorySettings;
use mesh_core::broker::hub::Hub;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::redis_feed::RedisFeed;
use mesh_core::broker::subscription::SubscriptionSettings;
use mesh_core::config::RedisSettings;
use mesh_core::error::Code;
use mesh_proto::mesh::auth::v1 as pb;
use mesh_testkit::RedisServer;
use mesh_testkit::wait::eventually;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);

/// One process's view on `server`, as meshd builds it.
fn view(server: &RedisServer) -> (Arc<Revocations>, Arc<dyn RevocationStore>) {
    let pool = redis_pool(&server.url(), &RedisSettings::default()).unwrap();
    let broker = Arc::new(RedisBroker::new(pool.clone(), HistorySettings::default()));
    let hub = Hub::new(broker, Arc::new(RedisFeed::start(server.client())), 1000);
    let store: Arc<dyn RevocationStore> = Arc::new(RedisRevocationStore::new(pool));
    (Revocations::new(store.clone(), hub), store)
}

fn caller(tenant: &str, session: &str, token: &str) -> Caller {
    Caller {
        tenant: tenant.into(),
        user: "alice".into(),
        session: Some(session.into()),
        token_id: token.into(),
        scopes: Vec::new(),
        expires_at: SystemTime::now() + Duration::from_secs(900),
    }
}

fn revocation(tenant: &str, session: &str) -> pb::Revocation {
    let now = SystemTime::now();
    pb::Revocation {
        tenant_id: tenant.into(),
        session_ids: vec![session.into()],
        user_id: "alice".into(),
        reason: pb::RevocationReason::Logout.into(),
        revoke_time: Some(mesh_core::transport::stream::timestamp(now)),
        expire_time: Some(mesh_core::transport::stream::timestamp(now + Duration::from_secs(960))),
        ..Default::default()
    }
}

async fn live(view: &Revocations) {
    eventually("the view is live", PATIENCE, || async { view.is_live().then_some(()) }).await;
}

#[tokio::test]
async fn until_it_is_live_the_view_asks_the_store() {
    let server = RedisServer::start().await.unwrap();
    let (view, store) = view(&server);
    let revoked = caller("acme", "s1", "j1");
    store.revoke("acme", &[Revoked::Session("s1".into())], SystemTime::now() + Duration::from_secs(60)).await.unwrap();
    assert_eq!(view.check_local(&revoked), None, "not live: memory cannot tell");
    assert_eq!(view.check(&revoked).await.unwrap_err().reason(), "TOKEN_REVOKED");
    view.check(&caller("acme", "s2", "j2")).await.expect("a token of another session passes");
    view.check(&caller("other", "s1", "j1")).await.expect("s1 of another tenant passes");
}

#[tokio::test]
async fn a_view_catches_up_on_start_and_follows_revocations_of_other_processes() {
    let server = RedisServer::start().await.unwrap();
    let (a, _) = view(&server);
    let (b, _) = view(&server);
    a.revoke(&revocation("acme", "before")).await.unwrap();
    assert_eq!(a.check_local(&caller("acme", "before", "j")), Some(true), "the revoking process knows at once");

    let stop = CancellationToken::new();
    tokio::spawn(b.clone().watch(SubscriptionSettings::default(), stop.clone()));
    live(&b).await;
    assert_eq!(b.check_local(&caller("acme", "before", "j")), Some(true), "loaded from the store on start");
    assert_eq!(b.check_local(&caller("acme", "later", "j")), Some(false), "live: memory answers");

    a.revoke(&revocation("acme", "later")).await.unwrap();
    eventually("B learns of A's revocation", PATIENCE, || async {
        (b.check_local(&caller("acme", "later", "j")) == Some(true)).then_some(())
    })
    .await;
    assert_eq!(b.check_local(&caller("other", "later", "j")), Some(false), "per tenant");
    stop.cancel();
}

#[tokio::test]
async fn a_view_that_lost_its_feed_asks_the_store_and_fails_closed_while_it_is_down() {
    let mut server = RedisServer::start().await.unwrap();
    let (view, _) = view(&server);
    let stop = CancellationToken::new();
    tokio::spawn(view.clone().watch(SubscriptionSettings::default(), stop.clone()));
    live(&view).await;

    server.stop().await;
    eventually("the view stops trusting memory", PATIENCE, || async { (!view.is_live()).then_some(()) }).await;
    let error = view.check(&caller("acme", "s1", "j1")).await.unwrap_err();
    assert_eq!((error.code(), error.reason()), (Code::Unavailable, "REVOCATION_CHECK_UNAVAILABLE"));

    server.restart().await.unwrap();
    live(&view).await;
    view.check(&caller("acme", "s1", "j1")).await.expect("live again");
    stop.cancel();
}
