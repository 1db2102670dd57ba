//! `meshctl feed rebuild`: against a meshd on its own redis-server, flushing the feed read
//! models and rebuilding them from the archive gives the same lists as before; the command
//! refuses tokens without `admin` or of another tenant.

use std::time::Duration;

use mesh_core::auth::SigningKeyPair;
use mesh_core::backend::{RedisPool, redis_pool};
use mesh_core::config::RedisSettings;
use mesh_core::jobs::{JobQueue, JobQueueSettings, QueueName, RedisJobQueue};
use mesh_proto::mesh::feed::v1 as pb;
use mesh_testkit::{RedisServer, TestApp};
use pb::feed_service_client::FeedServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// Longest the test waits for the feed jobs to be consumed (a guard, not a timing).
const PATIENCE: Duration = Duration::from_secs(60);

fn token(app: &TestApp, tenant: &str, user: &str, scopes: &[&str]) -> String {
    let mut claims = app.claims(tenant, user);
    claims.scope = scopes.join(" ");
    app.key().sign(&claims).expect("a signed token")
}

fn request<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    request
}

/// Every activity id of `feed`, newest first, through ListFeed.
async fn list(client: &mut FeedServiceClient<Channel>, token: &str, feed: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let message = pb::ListFeedRequest { feed: feed.into(), page_size: 100, page_token };
        let page = client.list_feed(request(token, message)).await.unwrap().into_inner();
        ids.extend(page.activities.into_iter().map(|activity| activity.activity_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

/// Waits until both consumer groups of the feed queue have handled every job.
async fn jobs_consumed(pool: &RedisPool) {
    let jobs = RedisJobQueue::new(pool.clone(), JobQueueSettings::default());
    let queue = QueueName::parse("feed.events").unwrap();
    mesh_testkit::eventually("the feed jobs are consumed", PATIENCE, || async {
        for group in ["feed-read-models", "feed-archive"] {
            if jobs.stats(&queue, group).await.ok()?.depth() > 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Runs meshctl with `args` and the token in `MESH_TOKEN`: (success, stdout, stderr).
async fn meshctl(args: &[&str], token: &str) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .env("MESH_TOKEN", token)
        .output()
        .await
        .expect("meshctl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn flushed_read_models_rebuilt_by_meshctl_list_as_before() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let app = TestApp::on_redis(&redis, SigningKeyPair::generate(), |settings| {
        settings.feed.publish_rate = 1_000_000;
        settings.feed.publish_burst = 1_000_000;
    })
    .await
    .expect("meshd starts");
    let pool = redis_pool(&redis.url(), &RedisSettings::default()).unwrap();
    let mut client = FeedServiceClient::new(app.channel());
    let actors = ["alice", "bob", "carol"];
    let tokens: Vec<String> = actors.iter().map(|actor| token(&app, "acme", actor, &[])).collect();
    let admin = token(&app, "acme", "root", &["admin"]);

    let mut published = Vec::new();
    for i in 0..1500 {
        let message = pb::PublishActivityRequest {
            verb: "post".into(),
            object: Some(pb::ActivityObject { object_type: "post".into(), object_id: i.to_string() }),
            text: format!("activity {i}"),
            ..Default::default()
        };
        let response = client.publish_activity(request(&tokens[i % 3], message)).await.unwrap().into_inner();
        published.push(response.activity.unwrap().activity_id);
    }
    for id in published.iter().rev().step_by(11).take(20) {
        let message = pb::DeleteActivityRequest { activity_id: id.clone() };
        client.delete_activity(request(&admin, message)).await.unwrap();
    }
    jobs_consumed(&pool).await;
    let feeds = ["global", "actors/alice", "actors/bob", "actors/carol"];
    let mut before = Vec::new();
    for feed in feeds {
        before.push(list(&mut client, &tokens[0], feed).await);
    }
    assert_eq!(before[0].len(), 980, "the newest 1,000 without the 20 deleted");

    let mut connection = pool.get().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("t:acme:feed:model:*").query_async(&mut *connection).await.unwrap();
    assert!(!keys.is_empty());
    let () = redis::cmd("DEL").arg(keys).query_async(&mut *connection).await.unwrap();
    drop(connection);

    let url = app.url();
    let (ok, stdout, stderr) = meshctl(&["feed", "rebuild", "--tenant", "acme", "--url", &url], &admin).await;
    assert!(ok, "meshctl feed rebuild failed: {stderr}");
    assert!(stdout.contains("rebuilt 4 feeds of tenant acme: 1260 activities"), "{stdout}");
    for (feed, before) in feeds.iter().zip(before) {
        assert_eq!(list(&mut client, &tokens[0], feed).await, before, "{feed}");
    }

    // Without admin, or for another tenant: refused, and nothing changes.
    let (ok, _, stderr) = meshctl(&["feed", "rebuild", "--tenant", "acme", "--url", &url], &tokens[0]).await;
    assert!(!ok && stderr.contains("PermissionDenied"), "{stderr}");
    let (ok, _, stderr) = meshctl(&["feed", "rebuild", "--tenant", "other", "--url", &url], &admin).await;
    assert!(!ok && stderr.contains("PermissionDenied"), "{stderr}");
    let (ok, _, stderr) = meshctl(&["feed", "rebuild", "--tenant", "", "--url", &url], &admin).await;
    assert!(!ok && stderr.contains("InvalidArgument"), "{stderr}");
    let (ok, _, stderr) = meshctl(&["feed", "rebuild", "--tenant", "acme", "--url", &url], "garbage").await;
    assert!(!ok && stderr.contains("Unauthenticated"), "{stderr}");
}
