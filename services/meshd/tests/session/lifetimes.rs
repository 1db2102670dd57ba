//! The sliding idle TTL and the absolute cap, through the RPCs, with short lifetimes.

use std::time::{Duration, SystemTime};

use mesh_proto::mesh::session::v1 as pb;
use mesh_testkit::RedisServer;
use tonic::Code;

use crate::support::{Sessions, confirmed, next_change, on_redis, user};

fn time(timestamp: Option<prost_types::Timestamp>) -> SystemTime {
    SystemTime::try_from(timestamp.expect("a timestamp")).unwrap()
}

#[tokio::test]
async fn a_touch_extends_and_the_cap_ends_a_session_touched_all_along() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |settings| {
        settings.services = vec!["session".to_owned()];
        settings.session.idle_ttl = Duration::from_secs(2);
        settings.session.max_lifetime = Duration::from_secs(4);
        settings.session.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let alice = Sessions::of(&app, "acme", &user());
    let created = alice.create(&[]).await.unwrap();
    let max_expire = time(created.max_expire_time);
    assert_eq!(time(created.expire_time), time(created.create_time) + Duration::from_secs(2));
    assert_eq!(max_expire, time(created.create_time) + Duration::from_secs(4));
    let mut watch = alice.watch(&created.session_id, None).await.unwrap();
    confirmed(&mut watch).await;

    // A client that stays active touches well within the idle TTL (every 200 ms, so only a
    // stall of almost 2 s could let it idle out); each touch moves the idle expiry to
    // now + 2 s, never past the cap, so the session outlives its first idle
    // expiry and ends at the cap.
    let mut previous = time(created.expire_time);
    let mut last_alive = SystemTime::UNIX_EPOCH;
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    let ended = loop {
        pace.tick().await;
        match alice.touch(&created.session_id).await {
            Ok(touched) => {
                let expire = time(touched.expire_time);
                assert!(expire >= previous && expire <= max_expire, "the expiry slides forward up to the cap");
                previous = expire;
                last_alive = SystemTime::now();
            }
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::NotFound);
    assert!(SystemTime::now() >= max_expire, "only the cap ended it");
    assert!(last_alive > time(created.expire_time), "touches kept it alive past its first idle expiry");

    let mut kinds = Vec::new();
    loop {
        let change = next_change(&mut watch).await;
        kinds.push(change.kind());
        if change.kind() == pb::SessionChangeKind::Expired {
            assert_eq!(change.session, None);
            break;
        }
    }
    assert!(kinds[..kinds.len() - 1].iter().all(|kind| *kind == pb::SessionChangeKind::Touched));
    assert!(crate::support::next_event(&mut watch).await.is_none(), "the stream ends OK after EXPIRED");
}

#[tokio::test]
async fn an_idle_session_expires_and_its_watcher_hears_it() {
    let app = mesh_testkit::TestApp::start_with(|settings| {
        settings.services = vec!["session".to_owned()];
        settings.session.idle_ttl = Duration::from_secs(1);
        settings.session.sweep_interval = Duration::from_millis(50);
    })
    .await
    .unwrap();
    let alice = Sessions::of(&app, "acme", &user());
    let created = alice.create(&[]).await.unwrap();
    let mut watch = alice.watch(&created.session_id, None).await.unwrap();
    let confirmation = confirmed(&mut watch).await;
    let change = next_change(&mut watch).await;
    assert_eq!((change.kind(), change.version), (pb::SessionChangeKind::Expired, 1));
    assert!(SystemTime::now() >= time(created.expire_time));
    assert_eq!(alice.get(&created.session_id).await.unwrap_err().code(), Code::NotFound);

    // A client that saw the confirmation but not the end may still replay it; others get
    // NOT_FOUND.
    let last = confirmation.positions[0].position.clone();
    let mut replay = alice.watch(&created.session_id, last).await.unwrap();
    assert!(confirmed(&mut replay).await.recovered);
    assert_eq!(next_change(&mut replay).await.kind(), pb::SessionChangeKind::Expired);
    assert!(crate::support::next_event(&mut replay).await.is_none());
    assert_eq!(alice.watch(&created.session_id, None).await.unwrap_err().code(), Code::NotFound);
}
