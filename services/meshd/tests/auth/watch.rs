//! WatchRevocations and GetJwks.

use mesh_proto::mesh::auth::v1 as pb;
use mesh_testkit::RedisServer;
use pb::watch_revocations_response::Event;
use tonic::Code;

use crate::support::{Auth, next_event, on_redis, reason, scoped_token};

#[tokio::test]
async fn watch_revocations_streams_each_logout_with_its_position_and_reason_and_needs_its_scope() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let (_, login) = auth.signed_up("acme").await;

    let plain = auth.watch(&login.access, false).await.unwrap_err();
    assert_eq!((plain.code(), reason(&plain).as_deref()), (Code::PermissionDenied, Some("SCOPE_MISSING")));
    let tenant_only = scoped_token(&app, "acme", "edge", &["revocations.read"]);
    let all = auth.watch(&tenant_only, true).await.unwrap_err();
    assert_eq!(all.code(), Code::PermissionDenied, "every tenant needs revocations.read.all");

    let mut tenant = auth.watch(&tenant_only, false).await.unwrap();
    let Event::Confirmed(confirmed) = next_event(&mut tenant).await else { panic!("a confirmation first") };
    let gateway = scoped_token(&app, "acme", "gateway", &["revocations.read.all"]);
    let mut everyone = auth.watch(&gateway, true).await.unwrap();
    assert!(matches!(next_event(&mut everyone).await, Event::Confirmed(_)));

    auth.logout(Some(&login.access), "").await.unwrap();
    for stream in [&mut tenant, &mut everyone] {
        let Event::Revocation(revocation) = next_event(stream).await else { panic!("a revocation") };
        assert_eq!(revocation.tenant_id, "acme");
        assert_eq!(revocation.session_ids, vec![login.session_id.clone()]);
        assert_eq!(revocation.user_id, login.user_id);
        assert_eq!(revocation.reason(), pb::RevocationReason::Logout);
        assert!(revocation.expire_time.unwrap().seconds > revocation.revoke_time.unwrap().seconds);
        assert!(revocation.position.is_some());
    }
    assert!(confirmed.positions.len() == 1, "one channel");
}

#[tokio::test]
async fn get_jwks_lists_the_same_keys_as_the_http_endpoint_without_a_token() {
    let app = crate::support::in_memory(|_| {}).await;
    let keys = Auth::of(&app).client.clone().get_jwks(pb::GetJwksRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(
        (key.kid.as_str(), key.kty.as_str(), key.alg.as_str(), key.r#use.as_str()),
        (app.key().kid(), "OKP", "EdDSA", "sig")
    );
}

#[tokio::test]
async fn a_watcher_that_reconnects_with_its_last_position_gets_exactly_what_it_missed() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let edge = scoped_token(&app, "acme", "edge", &["revocations.read"]);
    let mut first = auth.watch(&edge, false).await.unwrap();
    assert!(matches!(next_event(&mut first).await, Event::Confirmed(_)));
    let (_, one) = auth.signed_up("acme").await;
    auth.logout(Some(&one.access), "").await.unwrap();
    let Event::Revocation(seen) = next_event(&mut first).await else { panic!("a revocation") };
    drop(first);

    let (_, two) = auth.signed_up("acme").await;
    let (_, three) = auth.signed_up("acme").await;
    auth.logout(Some(&two.access), "").await.unwrap();
    auth.logout(Some(&three.access), "").await.unwrap();
    let last = seen.position.unwrap().position;
    let request = pb::WatchRevocationsRequest { last_position: last, all_tenants: false };
    let mut resumed =
        auth.client.clone().watch_revocations(crate::support::bearer(request, &edge)).await.unwrap().into_inner();
    let Event::Confirmed(confirmed) = next_event(&mut resumed).await else { panic!("a confirmation first") };
    assert!(confirmed.recovery_requested && confirmed.recovered, "{confirmed:?}");
    for expected in [&two.session_id, &three.session_id] {
        let Event::Revocation(revocation) = next_event(&mut resumed).await else { panic!("a missed revocation") };
        assert_eq!(&revocation.session_ids[0], expected);
    }
}
