//! The unary RPCs: publish, get, delete, list with paging, limits and bad input.

use std::collections::HashSet;

use mesh_proto::mesh::feed::v1 as pb;
use mesh_testkit::RedisServer;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{Feed, in_memory, on_redis, reason};

#[tokio::test]
async fn publish_get_delete_and_the_feeds_list_it_until_deleted() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let alice = Feed::of(&app, "acme", "alice");
    let published = alice.publish("post", "hello").await.unwrap();
    let activity = published.activity.unwrap();
    assert_eq!((activity.actor_id.as_str(), activity.tenant_id.as_str()), ("alice", "acme"));
    let channels: Vec<&str> = published.positions.iter().map(|p| p.channel.as_str()).collect();
    assert_eq!(channels, ["global", "actors/alice"]);
    assert_eq!(alice.get(&activity.activity_id).await.unwrap(), activity, "gettable at once");

    let listed = alice.list("global", 10, "").await.unwrap();
    assert_eq!(listed.activities, std::slice::from_ref(&activity), "ListFeed returns the same message");
    assert_eq!(listed.position.unwrap().offset, published.positions[0].position.as_ref().unwrap().offset);
    assert_eq!(alice.list("actors/alice", 10, "").await.unwrap().activities.len(), 1);
    assert!(alice.list("actors/bob", 10, "").await.unwrap().activities.is_empty(), "an empty feed, not NOT_FOUND");

    let bob = Feed::of(&app, "acme", "bob");
    let denied = bob.delete(&activity.activity_id).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    alice.delete(&activity.activity_id).await.unwrap();
    assert_eq!(alice.get(&activity.activity_id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(alice.delete(&activity.activity_id).await.unwrap_err().code(), Code::NotFound);
    assert!(alice.list("global", 10, "").await.unwrap().activities.is_empty());
}

#[tokio::test]
async fn of_1500_activities_global_lists_the_newest_1000_and_an_actor_its_newest_100_without_gaps() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |settings| settings.stream.history_size = 2000).await;
    let (alice, bob) = (Feed::of(&app, "acme", "alice"), Feed::of(&app, "acme", "bob"));
    let mut ids = Vec::new();
    for i in 0..1500 {
        let author = if i % 2 == 0 { &alice } else { &bob };
        ids.push((i % 2 == 0, author.publish("post", &format!("#{i}")).await.unwrap().activity.unwrap().activity_id));
    }
    let global: Vec<String> = alice.list_all("global", 33).await.into_iter().map(|a| a.activity_id).collect();
    let newest: Vec<String> = ids.iter().rev().take(1000).map(|(_, id)| id.clone()).collect();
    assert_eq!(global, newest, "newest first, no duplicate, no gap");
    let own: Vec<String> = alice.list_all("actors/alice", 7).await.into_iter().map(|a| a.activity_id).collect();
    let newest_own: Vec<String> =
        ids.iter().rev().filter(|(mine, _)| *mine).take(100).map(|(_, id)| id.clone()).collect();
    assert_eq!(own, newest_own);
    assert_eq!(own.iter().collect::<HashSet<_>>().len(), 100);
}

#[tokio::test]
async fn page_tokens_are_bound_to_the_caller_and_the_feed() {
    let app = in_memory(|_| {}).await;
    let alice = Feed::of(&app, "acme", "alice");
    for _ in 0..3 {
        alice.publish("post", "").await.unwrap();
    }
    let whole = alice.list("global", 3, "").await.unwrap();
    assert_eq!((whole.activities.len(), whole.next_page_token.as_str()), (3, ""), "a full last page has no token");
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = alice.list("global", 1, &token).await.unwrap();
        pages.push(page.activities.len());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, [1, 1, 1], "no empty page after the last");
    let token = alice.list("global", 1, "").await.unwrap().next_page_token;
    assert!(!token.is_empty());
    assert_eq!(alice.list("global", 1, &token).await.unwrap().activities.len(), 1);
    for (who, feed) in [
        (Feed::of(&app, "acme", "bob"), "global"),
        (Feed::of(&app, "other", "alice"), "global"),
        (alice.clone(), "actors/alice"),
    ] {
        let status = who.list(feed, 1, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{feed}: {status:?}");
    }
    let status = alice.list("global", 1, "tampered").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_fields() {
    let app = in_memory(|_| {}).await;
    let alice = Feed::of(&app, "acme", "alice");
    let request = pb::PublishActivityRequest {
        verb: "Not A Verb".into(),
        object: None,
        text: "x".repeat(5000),
        metadata: [("bad key".to_owned(), "v".to_owned())].into(),
        request_id: "nope".into(),
    };
    let status = alice.publish_with(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        status.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["verb", "object", "text", "metadata", "request_id"]);
    for feed in ["", "everything", "actors/", "actors/../x", "global/x"] {
        assert_eq!(alice.list(feed, 10, "").await.unwrap_err().code(), Code::InvalidArgument, "{feed:?}");
    }
    assert_eq!(alice.list("global", -1, "").await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(alice.get("short").await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(alice.get(&mesh_core::auth::random_id()).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn publishing_over_the_rate_is_resource_exhausted_with_retry_info_and_stores_nothing() {
    let app = in_memory(|settings| {
        settings.feed.publish_rate = 1;
        settings.feed.publish_burst = 2;
    })
    .await;
    let alice = Feed::of(&app, "acme", "alice");
    alice.publish("post", "1").await.unwrap();
    alice.publish("post", "2").await.unwrap();
    let status = alice.publish("post", "3").await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_deref()), (Code::ResourceExhausted, Some("RATE_LIMITED")));
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(alice.list("global", 10, "").await.unwrap().activities.len(), 2, "nothing stored");
    Feed::of(&app, "acme", "bob").publish("post", "mine").await.expect("per user");
}

#[tokio::test]
async fn a_request_id_makes_a_retried_publication_return_the_first_result() {
    let app = in_memory(|_| {}).await;
    let alice = Feed::of(&app, "acme", "alice");
    let request = pb::PublishActivityRequest {
        verb: "post".into(),
        object: Some(pb::ActivityObject { object_type: "post".into(), object_id: "7".into() }),
        text: String::new(),
        metadata: Default::default(),
        request_id: "3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13".into(),
    };
    let first = alice.publish_with(request.clone()).await.unwrap();
    assert_eq!(alice.publish_with(request).await.unwrap(), first);
    assert_eq!(alice.list("global", 10, "").await.unwrap().activities.len(), 1);
}
