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
