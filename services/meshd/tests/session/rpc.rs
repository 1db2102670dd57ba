//! Every RPC through the generated client: the happy path, tenant and user isolation,
//! access by token kind, and bad input.

use mesh_proto::mesh::session::v1 as pb;
use mesh_testkit::{RedisServer, TestApp};
use tonic::Code;

use crate::support::{Sessions, confirmed, metadata, next_change, on_redis, reason, user, violated_fields};

async fn redis_app() -> (RedisServer, TestApp) {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    (redis, app)
}

/// The whole life of a session on the embedded default and on Redis.
async fn a_session_lives_through_every_rpc(app: &TestApp) {
    let alice = Sessions::of(app, "acme", &user());
    let created = alice.create(&[("theme", "dark")]).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.session_id.len(), 22);
    assert_eq!(created.tenant_id, "acme");
    assert_eq!(created.idle_ttl.as_ref().map(|ttl| ttl.seconds), Some(3600));
    let mut watch = alice.watch(&created.session_id, None).await.unwrap();
    confirmed(&mut watch).await;

    let read = alice.get(&created.session_id).await.unwrap();
    assert_eq!((read.version, read.attributes.get("theme").map(String::as_str)), (1, Some("dark")));
    let updated = alice.update(&created.session_id, 1, &[("lang", "en")], &["theme"]).await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.attributes.len(), 1);
    let stale = alice.update(&created.session_id, 1, &[("lang", "de")], &[]).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale).as_deref(), Some("VERSION_CONFLICT"));
    assert_eq!(metadata(&stale, "current_version").as_deref(), Some("2"));
    let touched = alice.touch(&created.session_id).await.unwrap();
    assert_eq!(touched.version, 2);
    let listed = alice.list(0, "").await.unwrap();
    assert_eq!(
        listed.sessions.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(),
        [created.session_id.as_str()]
    );
    let conflict = alice.delete(&created.session_id, Some(1)).await.unwrap_err();
    assert_eq!(conflict.code(), Code::Aborted);
    alice.delete(&created.session_id, Some(2)).await.unwrap();
    assert_eq!(alice.get(&created.session_id).await.unwrap_err().code(), Code::NotFound);

    let kinds = [pb::SessionChangeKind::Updated, pb::SessionChangeKind::Touched, pb::SessionChangeKind::Deleted];
    let mut offsets = Vec::new();
    for kind in kinds {
        let change = next_change(&mut watch).await;
        assert_eq!(change.kind(), kind);
        assert_eq!(change.session_id, created.session_id);
        offsets.push(change.position.and_then(|p| p.position).unwrap().offset);
    }
    assert_eq!(offsets, [2, 3, 4], "CREATED was offset 1; Get announces nothing");
    assert!(crate::support::next_event(&mut watch).await.is_none(), "the stream ends OK after DELETED");
}

#[tokio::test]
async fn a_session_lives_through_every_rpc_on_the_embedded_default() {
    let app = TestApp::start().await.unwrap();
    a_session_lives_through_every_rpc(&app).await;
}

#[tokio::test]
async fn a_session_lives_through_every_rpc_on_redis() {
    let (_redis, app) = redis_app().await;
    a_session_lives_through_every_rpc(&app).await;
}

#[tokio::test]
async fn another_tenant_or_user_gets_not_found_from_every_rpc() {
    let (_redis, app) = redis_app().await;
    let name = user();
    let owner = Sessions::of(&app, "acme", &name);
    let session = owner.create(&[("k", "v")]).await.unwrap();
    let id = session.session_id.as_str();
    let strangers = [
        Sessions::of(&app, "other", &name),
        Sessions::of(&app, "acme", &user()),
        // An admin reaches its own tenant only.
        Sessions::scoped(&app, "other", &name, &["admin"], false),
    ];
    for stranger in &strangers {
        let results = [
            stranger.get(id).await.map(drop),
            stranger.update(id, 1, &[("k", "x")], &[]).await.map(drop),
            stranger.touch(id).await.map(drop),
            stranger.delete(id, None).await,
            stranger.watch(id, None).await.map(drop),
        ];
        for result in results {
            let status = result.unwrap_err();
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert_eq!(status.message(), "session not found");
        }
        assert!(stranger.list(0, "").await.unwrap().sessions.is_empty());
    }
    assert_eq!(owner.get(id).await.unwrap().version, 1, "nothing changed");
}

#[tokio::test]
async fn admin_and_service_tokens_reach_what_their_scopes_allow() {
    let (_redis, app) = redis_app().await;
    let name = user();
    let session = Sessions::of(&app, "acme", &name).create(&[]).await.unwrap();
    let id = session.session_id.as_str();

    let admin = Sessions::scoped(&app, "acme", &user(), &["admin"], false);
    assert_eq!(admin.get(id).await.unwrap().user_id, name);
    assert_eq!(admin.update(id, 1, &[("k", "v")], &[]).await.unwrap_err().code(), Code::NotFound, "own only");

    let login = Sessions::scoped(&app, "acme", &name, &["sessions.create"], true);
    let created = login.create(&[]).await.unwrap();
    assert_eq!(created.user_id, name);
    assert_eq!(login.get(id).await.unwrap_err().code(), Code::PermissionDenied);

    let auth = Sessions::scoped(&app, "acme", "auth-service", &["sessions.admin"], true);
    auth.touch(id).await.unwrap();
    auth.delete(&created.session_id, None).await.unwrap();
    assert_eq!(auth.list(0, "").await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(auth.create(&[]).await.unwrap_err().code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_create_retried_with_its_request_id_returns_the_first_session() {
    let (_redis, app) = redis_app().await;
    let alice = Sessions::of(&app, "acme", &user());
    let request = pb::CreateSessionRequest {
        attributes: [("a".to_owned(), "1".to_owned())].into(),
        request_id: "3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13".to_owned(),
    };
    let first = alice.create_with(request.clone()).await.unwrap();
    let retry = alice.create_with(request).await.unwrap();
    assert_eq!(retry.session_id, first.session_id);
    assert_eq!(alice.list(0, "").await.unwrap().sessions.len(), 1);
}

#[tokio::test]
async fn a_list_pages_newest_first_with_tokens_bound_to_their_owner() {
    let (_redis, app) = redis_app().await;
    let alice = Sessions::of(&app, "acme", &user());
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(alice.create(&[]).await.unwrap().session_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = alice.list(2, &token).await.unwrap();
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions.into_iter().map(|session| session.session_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "no duplicates, nothing missing");
    let mut expected = created.clone();
    expected.sort();
    assert_eq!(sorted, expected);

    let first_page = alice.list(2, "").await.unwrap();
    let bob = Sessions::of(&app, "acme", &user());
    let foreign = bob.list(2, &first_page.next_page_token).await.unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&foreign), ["page_token"]);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_every_field() {
    let (_redis, app) = redis_app().await;
    let alice = Sessions::of(&app, "acme", &user());
    let session = alice.create(&[]).await.unwrap();
    let id = session.session_id.as_str();

    let big = "v".repeat(5000);
    let oversized = alice.create(&[("big", &big)]).await.unwrap_err();
    assert_eq!(oversized.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&oversized), ["attributes.big"]);
    let too_many: Vec<(String, String)> = (0..65).map(|n| (format!("k{n}"), "v".to_owned())).collect();
    let too_many: Vec<(&str, &str)> = too_many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(violated_fields(&alice.create(&too_many).await.unwrap_err()), ["attributes"]);
    let bad_key = alice.update(id, 1, &[("bad key", "v")], &[]).await.unwrap_err();
    assert_eq!(violated_fields(&bad_key), ["set_attributes.bad key"]);
    let bad_request_id = alice
        .create_with(pb::CreateSessionRequest { attributes: Default::default(), request_id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_request_id), ["request_id"]);

    for bad_id in ["", "short", "!!!!!!!!!!!!!!!!!!!!!!", &"x".repeat(200)] {
        let results = [
            alice.get(bad_id).await.map(drop),
            alice.touch(bad_id).await.map(drop),
            alice.delete(bad_id, None).await,
            alice.watch(bad_id, None).await.map(drop),
        ];
        for result in results {
            let status = result.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad_id:?}: {status:?}");
            assert_eq!(violated_fields(&status), ["session_id"]);
        }
    }

    for version in [0, -1] {
        let status = alice.update(id, version, &[("k", "v")], &[]).await.unwrap_err();
        assert_eq!(violated_fields(&status), ["expected_version"], "{version}");
        let status = alice.delete(id, Some(version)).await.unwrap_err();
        assert_eq!(violated_fields(&status), ["expected_version"], "{version}");
    }
    let everything = alice.update("", 0, &[], &[]).await.unwrap_err();
    assert_eq!(violated_fields(&everything), ["session_id", "expected_version", "set_attributes"]);
    assert_eq!(violated_fields(&alice.list(-1, "").await.unwrap_err()), ["page_size"]);
    assert_eq!(violated_fields(&alice.list(0, "garbage").await.unwrap_err()), ["page_token"]);
    let bad_position = mesh_proto::mesh::stream::v1::Position { offset: 1, epoch: String::new() };
    let status = alice.watch(id, Some(bad_position)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["last_position.epoch"]);

    let after = alice.get(id).await.unwrap();
    assert_eq!((after.version, after.attributes.len()), (1, 0), "bad input changed nothing");
}
