//! Throttling, bad input, registration rules and tenant isolation.

use mesh_proto::mesh::auth::v1 as pb;
use mesh_testkit::RedisServer;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{Auth, PASSWORD, bearer, email, in_memory, on_redis, reason, scoped_token};

#[tokio::test]
async fn failed_logins_are_throttled_with_retry_info_and_unknown_emails_fail_alike() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |settings| settings.auth.login_throttle.max_failures_per_account = 3).await;
    let auth = Auth::of(&app);
    let email = email();
    auth.register("acme", &email, PASSWORD).await.unwrap();

    let wrong = auth.login("acme", &email, "wrong password!").await.unwrap_err();
    let unknown = auth.login("acme", &crate::support::email(), "wrong password!").await.unwrap_err();
    let no_tenant = auth.login("not a tenant", &email, PASSWORD).await.unwrap_err();
    for status in [&wrong, &unknown, &no_tenant] {
        assert_eq!((status.code(), status.message()), (wrong.code(), wrong.message()), "indistinguishable");
        assert_eq!(reason(status).as_deref(), Some("INVALID_CREDENTIALS"));
    }
    for _ in 0..2 {
        assert_eq!(auth.login("acme", &email, "wrong password!").await.unwrap_err().code(), Code::Unauthenticated);
    }
    let throttled = auth.login("acme", &email, PASSWORD).await.unwrap_err();
    assert_eq!((throttled.code(), reason(&throttled).as_deref()), (Code::ResourceExhausted, Some("LOGIN_THROTTLED")));
    let retry = throttled.get_details_retry_info().expect("RetryInfo").retry_delay.expect("a delay");
    assert!(retry.as_secs() >= 1, "{retry:?}");
    let other = crate::support::email();
    auth.register("acme", &other, PASSWORD).await.unwrap();
    auth.login("acme", &other, PASSWORD).await.expect("another account of the same address is not throttled");
}

#[tokio::test]
async fn failed_logins_from_one_address_are_throttled_across_accounts() {
    let app = in_memory(|settings| settings.auth.login_throttle.max_failures_per_address = 3).await;
    let auth = Auth::of(&app);
    let victim = email();
    auth.register("acme", &victim, PASSWORD).await.unwrap();
    for _ in 0..3 {
        let status = auth.login("acme", &email(), "guessing again").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "each guess names another account");
    }
    let throttled = auth.login("acme", &victim, PASSWORD).await.unwrap_err();
    assert_eq!((throttled.code(), reason(&throttled).as_deref()), (Code::ResourceExhausted, Some("LOGIN_THROTTLED")));
    assert!(throttled.get_details_retry_info().is_some(), "with RetryInfo");
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_or_unauthenticated_and_never_internal() {
    let app = in_memory(|_| {}).await;
    let auth = Auth::of(&app);
    let huge = "p".repeat(10_000);
    let cases: Vec<(&str, &str, &str, Code)> = vec![
        ("acme", "not-an-email", PASSWORD, Code::InvalidArgument),
        ("acme", "a@@b", PASSWORD, Code::InvalidArgument),
        ("acme", "", PASSWORD, Code::InvalidArgument),
        ("acme", "fine@example.com", "", Code::InvalidArgument),
        ("acme", "fine@example.com", "short", Code::InvalidArgument),
        ("acme", "fine@example.com", &huge, Code::InvalidArgument),
        ("../etc", "fine@example.com", PASSWORD, Code::InvalidArgument),
        ("", "fine@example.com", PASSWORD, Code::InvalidArgument),
    ];
    for (tenant, email, password, code) in cases {
        let status = auth.register(tenant, email, password).await.unwrap_err();
        assert_eq!(status.code(), code, "register {tenant:?} {email:?} ({} chars): {status:?}", password.len());
        assert!(status.get_details_bad_request().is_some(), "the offending field is named");
    }
    let login = auth.login("acme", "not-an-email", PASSWORD).await.unwrap_err();
    assert_eq!(login.code(), Code::InvalidArgument);
    let login = auth.login("acme", "fine@example.com", &huge).await.unwrap_err();
    assert_eq!(login.code(), Code::InvalidArgument);

    for garbage in ["", "garbage", "a.b.c", &"x".repeat(43), &huge] {
        let status = auth.refresh(garbage).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "refresh {garbage:.20}: {status:?}");
        if !garbage.is_empty() {
            let status = auth.current_user(garbage).await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "bearer {garbage:.20}: {status:?}");
        }
    }
    let status = auth.client.clone().get_current_user(pb::GetCurrentUserRequest {}).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_deref()), (Code::Unauthenticated, Some("TOKEN_MISSING")));
    for session_id in ["", "abc", "../../x", &"s".repeat(300)] {
        let status = auth.revoke(&app.token("acme", "u1"), session_id).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "session id {session_id:.20}: {status:?}");
    }
}

#[tokio::test]
async fn an_email_registers_once_per_tenant_and_a_request_id_makes_a_retry_safe() {
    let app = in_memory(|_| {}).await;
    let auth = Auth::of(&app);
    let email = email();
    let first = auth.register("acme", &email, PASSWORD).await.unwrap();
    let taken = auth.register("acme", &email.to_uppercase(), PASSWORD).await.unwrap_err();
    assert_eq!((taken.code(), reason(&taken).as_deref()), (Code::AlreadyExists, Some("EMAIL_TAKEN")));

    let request = pb::RegisterRequest {
        tenant_id: "acme".into(),
        email: crate::support::email(),
        password: PASSWORD.into(),
        request_id: "3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13".into(),
    };
    let once = auth.client.clone().register(request.clone()).await.unwrap().into_inner().user.unwrap();
    let twice = auth.client.clone().register(request.clone()).await.unwrap().into_inner().user.unwrap();
    assert_eq!(once, twice, "a retry with the request id gets the first answer");
    assert_ne!(once.user_id, first.user_id);
    let bad = pb::RegisterRequest { request_id: "not-a-uuid".into(), ..request };
    assert_eq!(auth.client.clone().register(bad).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn closed_registration_is_permission_denied_for_every_tenant_or_the_listed_ones() {
    let app = in_memory(|settings| settings.auth.closed_tenants = vec!["closed-corp".into()]).await;
    let auth = Auth::of(&app);
    let status = auth.register("closed-corp", &email(), PASSWORD).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_deref()), (Code::PermissionDenied, Some("REGISTRATION_CLOSED")));
    auth.register("open-corp", &email(), PASSWORD).await.expect("other tenants stay open");

    let closed = in_memory(|settings| settings.auth.registration = mesh_core::config::Registration::Closed).await;
    let status = Auth::of(&closed).register("acme", &email(), PASSWORD).await.unwrap_err();
    assert_eq!(reason(&status).as_deref(), Some("REGISTRATION_CLOSED"));
}

#[tokio::test]
async fn a_token_of_one_tenant_sees_nothing_of_another() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let auth = Auth::of(&app);
    let email = email();
    let in_a = auth.register("tenant-a", &email, PASSWORD).await.unwrap();
    let in_b = auth.register("tenant-b", &email, PASSWORD).await.unwrap();
    assert_ne!(in_a.user_id, in_b.user_id, "the same email registers independently per tenant");
    let a = auth.login("tenant-a", &email, PASSWORD).await.unwrap();
    let b = auth.login("tenant-b", &email, PASSWORD).await.unwrap();

    let me = auth.current_user(&a.access).await.unwrap();
    assert_eq!(me.user.unwrap().tenant_id, "tenant-a");
    let status = auth.get_session(&a.access, &b.session_id).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "B's session through Session");
    let admin_a = scoped_token(&app, "tenant-a", "root", &["admin", "revocations.read"]);
    assert_eq!(auth.revoke(&admin_a, &b.session_id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(auth.get_session(&admin_a, &b.session_id).await.unwrap_err().code(), Code::NotFound);
    let forged = pb::LogoutRequest { refresh_token: b.refresh.clone() };
    let status = auth.client.clone().logout(bearer(forged, &a.access)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "B's refresh token with A's access token: {status:?}");
    auth.current_user(&b.access).await.expect("B's session is untouched by all of it");

    // A's revocation stream never carries B's revocations.
    let mut watch = auth.watch(&admin_a, false).await.unwrap();
    assert!(matches!(
        crate::support::next_event(&mut watch).await,
        pb::watch_revocations_response::Event::Confirmed(_)
    ));
    auth.logout(Some(&b.access), "").await.unwrap();
    auth.logout(Some(&a.access), "").await.unwrap();
    match crate::support::next_event(&mut watch).await {
        pb::watch_revocations_response::Event::Revocation(revocation) => {
            assert_eq!(revocation.tenant_id, "tenant-a");
            assert_eq!(revocation.session_ids, vec![a.session_id.clone()]);
        }
        other => panic!("expected A's revocation first, got {other:?}"),
    }
}
