//! Helpers of the Feed tests: meshd on Redis or memory, a Feed client acting as one user.

use std::time::Duration;

use mesh_core::auth::SigningKeyPair;
use mesh_core::config::Settings;
use mesh_proto::mesh::feed::v1 as pb;
use mesh_proto::mesh::stream::v1::{ChannelPosition, Position};
use mesh_testkit::{RedisServer, TestApp};
use pb::feed_service_client::FeedServiceClient;
use pb::subscribe_response::Event;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

pub use mesh_testkit::status::reason;

/// Longest a test waits for one stream message (a guard, not a timing).
const STREAM_GUARD: Duration = Duration::from_secs(30);

/// Settings every Feed test shares: a publication rate no test reaches unless it sets one.
pub fn generous(settings: &mut Settings) {
    settings.feed.publish_rate = 1_000_000;
    settings.feed.publish_burst = 1_000_000;
}

/// meshd on `redis`, trusting `key` when given.
pub async fn on_redis(
    redis: &RedisServer,
    key: Option<SigningKeyPair>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    TestApp::on_redis(redis, key.unwrap_or_else(SigningKeyPair::generate), move |settings| {
        generous(settings);
        configure(settings);
    })
    .await
    .expect("meshd starts")
}

/// meshd on the embedded memory backbone.
pub async fn in_memory(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::start_with(move |settings| {
        generous(settings);
        configure(settings);
    })
    .await
    .expect("meshd starts")
}

/// A Feed client acting as one user.
#[derive(Clone)]
pub struct Feed {
    client: FeedServiceClient<Channel>,
    token: String,
}

impl Feed {
    pub fn of(app: &TestApp, tenant: &str, user: &str) -> Self {
        Self::with_token(app, app.token(tenant, user))
    }

    pub fn with_token(app: &TestApp, token: String) -> Self {
        Self { client: FeedServiceClient::new(app.channel()), token }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let bearer = MetadataValue::try_from(format!("Bearer {}", self.token)).unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    pub async fn publish(&self, verb: &str, text: &str) -> Result<pb::PublishActivityResponse, Status> {
        self.publish_with(pb::PublishActivityRequest {
            verb: verb.into(),
            object: Some(pb::ActivityObject { object_type: "post".into(), object_id: "1".into() }),
            text: text.into(),
            metadata: Default::default(),
            request_id: String::new(),
        })
        .await
    }

    pub async fn publish_with(
        &self,
        request: pb::PublishActivityRequest,
    ) -> Result<pb::PublishActivityResponse, Status> {
        Ok(self.client.clone().publish_activity(self.request(request)).await?.into_inner())
    }

    pub async fn get(&self, id: &str) -> Result<pb::Activity, Status> {
        let request = pb::GetActivityRequest { activity_id: id.into() };
        Ok(self.client.clone().get_activity(self.request(request)).await?.into_inner().activity.expect("an activity"))
    }

    pub async fn delete(&self, id: &str) -> Result<pb::DeleteActivityResponse, Status> {
        let request = pb::DeleteActivityRequest { activity_id: id.into() };
        Ok(self.client.clone().delete_activity(self.request(request)).await?.into_inner())
    }

    pub async fn list(&self, feed: &str, page_size: i32, page_token: &str) -> Result<pb::ListFeedResponse, Status> {
        let request = pb::ListFeedRequest { feed: feed.into(), page_size, page_token: page_token.into() };
        Ok(self.client.clone().list_feed(self.request(request)).await?.into_inner())
    }

    /// Every activity of `feed`, newest first, `page_size` at a time.
    pub async fn list_all(&self, feed: &str, page_size: i32) -> Vec<pb::Activity> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list(feed, page_size, &token).await.expect("a page");
            all.extend(page.activities);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    pub async fn subscribe(
        &self,
        channels: &[(&str, Option<Position>)],
    ) -> Result<Streaming<pb::SubscribeResponse>, Status> {
        let channels = channels
            .iter()
            .map(|(channel, position)| ChannelPosition { channel: (*channel).into(), position: position.clone() })
            .collect();
        Ok(self.client.clone().subscribe(self.request(pb::SubscribeRequest { channels })).await?.into_inner())
    }
}

/// The next message of `stream` that is not a heartbeat (`None` when it ended OK).
pub async fn next_event(stream: &mut Streaming<pb::SubscribeResponse>) -> Result<Option<Event>, Status> {
    loop {
        let message =
            tokio::time::timeout(STREAM_GUARD, stream.message()).await.expect("the stream answers within the guard")?;
        match message {
            None => return Ok(None),
            Some(message) => match message.event.expect("every message has an event") {
                Event::Heartbeat(_) => continue,
                event => return Ok(Some(event)),
            },
        }
    }
}

/// The confirmation that opens `stream`.
pub async fn confirmed(
    stream: &mut Streaming<pb::SubscribeResponse>,
) -> mesh_proto::mesh::stream::v1::SubscriptionConfirmed {
    match next_event(stream).await {
        Ok(Some(Event::Confirmed(confirmed))) => confirmed,
        other => panic!("expected the confirmation, got {other:?}"),
    }
}

/// The next activity event on `stream`.
pub async fn next_activity(stream: &mut Streaming<pb::SubscribeResponse>) -> pb::ActivityEvent {
    match next_event(stream).await {
        Ok(Some(Event::Activity(activity))) => activity,
        other => panic!("expected an activity, got {other:?}"),
    }
}
