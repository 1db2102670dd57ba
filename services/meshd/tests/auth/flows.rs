//! Register, login, refresh rotation, logout and revocation across instances.

use std::time::Duration;

use mesh_core::auth::SigningKeyPair;
use mesh_testkit::RedisServer;
use mesh_testkit::wait::eventually;
use tonic::Code;

use crate::support::{Auth, PASSWORD, on_redis, reason, scoped_token};

#[tokio::test]
async fn register_login_then_the_access_token_reaches_session_and_the_token_kinds_never_mix() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let (email, login) = auth.signed_up("acme").await;

    let session = auth.get_session(&login.access, &login.session_id).await.unwrap();
    assert_eq!((session.tenant_id.as_str(), session.user_id.as_str()), ("acme", login.user_id.as_str()));
    let me = auth.current_user(&login.access).await.unwrap();
    assert_eq!(me.user.unwrap().email, email);
    assert_eq!(me.session_id, login.session_id);

    let status = auth.get_session(&login.refresh, &login.session_id).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "a refresh token is no access token: {status:?}");
    let status = auth.refresh(&login.access).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "an access token is no refresh token: {status:?}");
    assert_eq!(reason(&status).as_deref(), Some("REFRESH_TOKEN_INVALID"));
}

#[tokio::test]
async fn a_rotated_refresh_token_presented_again_ends_the_family_and_the_session() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let (_, login) = auth.signed_up("acme").await;

    let second = auth.refresh(&login.refresh).await.unwrap();
    assert_ne!(second.refresh_token, login.refresh);
    let fresh = auth.get_session(&second.access_token, &login.session_id).await.unwrap();
    assert_eq!(fresh.session_id, login.session_id, "the new access token is for the same session");

    let reused = auth.refresh(&login.refresh).await.unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);
    let after = auth.refresh(&second.refresh_token).await.unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated, "R2 is revoked with its family");
    let revoked = auth.get_session(&second.access_token, &login.session_id).await.unwrap_err();
    assert_eq!((revoked.code(), reason(&revoked).as_deref()), (Code::Unauthenticated, Some("TOKEN_REVOKED")));
    let admin = scoped_token(&app, "acme", "auditor", &["admin"]);
    let gone = auth.get_session(&admin, &login.session_id).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "the session is gone");
}

#[tokio::test]
async fn of_twenty_parallel_refreshes_with_one_token_exactly_one_succeeds() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let (_, login) = auth.signed_up("acme").await;

    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let (auth, token) = (auth.clone(), login.refresh.clone());
            tokio::spawn(async move { auth.refresh(&token).await })
        })
        .collect();
    let mut successes = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => successes += 1,
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        }
    }
    assert_eq!(successes, 1);
}

#[tokio::test]
async fn logout_is_rejected_by_a_second_instance_on_the_same_redis() {
    let redis = RedisServer::start().await.unwrap();
    let key = SigningKeyPair::generate();
    let a = on_redis(&redis, Some(key.clone()), |_| {}).await;
    let b = on_redis(&redis, Some(key), |_| {}).await;
    let (on_a, on_b) = (Auth::of(&a), Auth::of(&b));
    let (_, login) = on_a.signed_up("acme").await;
    on_b.get_session(&login.access, &login.session_id).await.expect("B accepts the token before the logout");

    on_a.logout(Some(&login.access), "").await.unwrap();
    let on_a_now = on_a.current_user(&login.access).await.unwrap_err();
    assert_eq!(reason(&on_a_now).as_deref(), Some("TOKEN_REVOKED"), "the instance that logged out rejects at once");
    // The bound is under a second; the patience here is only a guard against hanging.
    let rejected = eventually("instance B rejects the logged-out token", Duration::from_secs(10), || {
        let on_b = on_b.clone();
        let (access, id) = (login.access.clone(), login.session_id.clone());
        async move { on_b.get_session(&access, &id).await.err() }
    })
    .await;
    assert_eq!((rejected.code(), reason(&rejected).as_deref()), (Code::Unauthenticated, Some("TOKEN_REVOKED")));
    let refresh = on_b.refresh(&login.refresh).await.unwrap_err();
    assert_eq!(refresh.code(), Code::Unauthenticated, "the refresh token ended with the session");
    on_a.logout(Some(&login.access), &login.refresh).await.expect("a repeated logout succeeds");
}

#[tokio::test]
async fn logout_with_only_the_refresh_token_ends_the_session() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let (_, login) = auth.signed_up("acme").await;
    let (_, other) = auth.signed_up("acme").await;

    let mismatch = auth.logout(Some(&other.access), &login.refresh).await.unwrap_err();
    assert_eq!(mismatch.code(), Code::InvalidArgument, "tokens of two sessions: {mismatch:?}");
    auth.logout(None, &login.refresh).await.unwrap();
    assert_eq!(reason(&auth.current_user(&login.access).await.unwrap_err()).as_deref(), Some("TOKEN_REVOKED"));
    auth.logout(None, &login.refresh).await.expect("idempotent");
    assert_eq!(auth.logout(None, "").await.unwrap_err().code(), Code::Unauthenticated, "no credential at all");
    auth.current_user(&other.access).await.expect("the other session lives on");
}

#[tokio::test]
async fn revoke_session_ends_own_sessions_and_an_admin_ends_any_of_the_tenant() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let email = crate::support::email();
    auth.register("acme", &email, PASSWORD).await.unwrap();
    let laptop = auth.login("acme", &email, PASSWORD).await.unwrap();
    let phone = auth.login("acme", &email, PASSWORD).await.unwrap();
    let (_, stranger) = auth.signed_up("acme").await;

    let status = auth.revoke(&stranger.access, &phone.session_id).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "another user's session is out of reach");
    auth.revoke(&laptop.access, &phone.session_id).await.unwrap();
    assert_eq!(reason(&auth.current_user(&phone.access).await.unwrap_err()).as_deref(), Some("TOKEN_REVOKED"));
    auth.current_user(&laptop.access).await.expect("the revoking session lives on");

    let admin = scoped_token(&app, "acme", "root", &["admin"]);
    auth.revoke(&admin, &laptop.session_id).await.unwrap();
    assert_eq!(reason(&auth.current_user(&laptop.access).await.unwrap_err()).as_deref(), Some("TOKEN_REVOKED"));
    assert_eq!(auth.revoke(&admin, &laptop.session_id).await.unwrap_err().code(), Code::NotFound, "already ended");
}

#[tokio::test]
async fn change_password_keeps_the_calling_session_and_ends_every_other() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let email = crate::support::email();
    auth.register("acme", &email, PASSWORD).await.unwrap();
    let here = auth.login("acme", &email, PASSWORD).await.unwrap();
    let there = auth.login("acme", &email, PASSWORD).await.unwrap();

    let wrong = auth.change_password(&here.access, "not the password", "a brand new passphrase").await.unwrap_err();
    assert_eq!((wrong.code(), reason(&wrong).as_deref()), (Code::PermissionDenied, Some("PASSWORD_WRONG")));
    let same = auth.change_password(&here.access, PASSWORD, PASSWORD).await.unwrap_err();
    assert_eq!(same.code(), Code::InvalidArgument);
    auth.change_password(&here.access, PASSWORD, "a brand new passphrase").await.unwrap();

    auth.current_user(&here.access).await.expect("the calling session stays");
    assert_eq!(reason(&auth.current_user(&there.access).await.unwrap_err()).as_deref(), Some("TOKEN_REVOKED"));
    assert_eq!(auth.refresh(&there.refresh).await.unwrap_err().code(), Code::Unauthenticated);
    let old = auth.login("acme", &email, PASSWORD).await.unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated, "the old password no longer logs in");
    auth.login("acme", &email, "a brand new passphrase").await.expect("the new one does");
}

#[tokio::test]
async fn the_whole_flow_works_on_the_embedded_memory_backbone() {
    let app = crate::support::in_memory(|_| {}).await;
    let auth = Auth::of(&app);
    let (_, login) = auth.signed_up("acme").await;
    auth.get_session(&login.access, &login.session_id).await.unwrap();
    let next = auth.refresh(&login.refresh).await.unwrap();
    assert_eq!(auth.refresh(&login.refresh).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(
        reason(&auth.current_user(&next.access_token).await.unwrap_err()).as_deref(),
        Some("TOKEN_REVOKED"),
        "reuse revoked the session"
    );
}

#[tokio::test]
async fn a_session_its_user_deletes_through_session_revokes_its_tokens() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let (_, login) = auth.signed_up("acme").await;
    let delete = mesh_proto::mesh::session::v1::DeleteSessionRequest {
        session_id: login.session_id.clone(),
        expected_version: None,
    };
    auth.sessions.clone().delete_session(crate::support::bearer(delete, &login.access)).await.unwrap();
    let status = auth.current_user(&login.access).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_deref()), (Code::Unauthenticated, Some("TOKEN_REVOKED")));
    assert_eq!(auth.refresh(&login.refresh).await.unwrap_err().code(), Code::Unauthenticated, "no session to refresh");
}

#[tokio::test]
async fn auth_reaches_the_session_service_of_another_instance_over_the_network() {
    let redis = RedisServer::start().await.unwrap();
    let key = SigningKeyPair::generate();
    let sessions = on_redis(&redis, Some(key.clone()), |settings| settings.services = vec!["session".into()]).await;
    let url = sessions.url();
    let front = on_redis(&redis, Some(key), move |settings| {
        settings.services = vec!["auth".into()];
        settings.auth.session_url = Some(url);
    })
    .await;
    let (on_front, on_sessions) = (Auth::of(&front), Auth::of(&sessions));
    let (_, login) = on_front.signed_up("acme").await;
    let session = on_sessions.get_session(&login.access, &login.session_id).await.unwrap();
    assert_eq!(session.user_id, login.user_id, "the session lives in the other instance");
    let next = on_front.refresh(&login.refresh).await.unwrap();
    on_front.logout(Some(&next.access_token), "").await.unwrap();
    let gone = eventually("the session instance rejects the logged-out token", Duration::from_secs(10), || {
        let on_sessions = on_sessions.clone();
        let (access, id) = (next.access_token.clone(), login.session_id.clone());
        async move { on_sessions.get_session(&access, &id).await.err() }
    })
    .await;
    assert_eq!(gone.code(), Code::Unauthenticated);
}
