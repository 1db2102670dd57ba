//! Helpers of the Session tests: an authenticated client, meshd on Redis, status details.

use std::time::Duration;

use mesh_core::auth::{SigningKeyPair, random_id};
use mesh_core::config::Settings;
use mesh_proto::mesh::session::v1 as pb;
use mesh_proto::mesh::stream::v1::Position;
use mesh_testkit::{RedisServer, TestApp};
use pb::session_service_client::SessionServiceClient;
use pb::watch_session_response::Event;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

/// Longest a test waits for one stream message before it fails (a guard, not a timing).
const STREAM_GUARD: Duration = Duration::from_secs(30);

/// meshd on `redis` with short session lifetimes left at their defaults unless `configure`
/// changes them; trusts `key` when given (instances of one mesh share it).
pub async fn on_redis(
    redis: &RedisServer,
    key: Option<SigningKeyPair>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    TestApp::on_redis(redis, key.unwrap_or_else(SigningKeyPair::generate), configure).await.expect("meshd starts")
}

/// A Session client acting with one access token.
#[derive(Clone)]
pub struct Sessions {
    client: SessionServiceClient<Channel>,
    token: String,
}

impl Sessions {
    /// A client for `user` of `tenant` in a fresh session of theirs.
    pub fn of(app: &TestApp, tenant: &str, user: &str) -> Self {
        Self::with_token(app, app.token(tenant, user))
    }

    /// A client for a token with `scopes` (and a `sid` unless `service`).
    pub fn scoped(app: &TestApp, tenant: &str, user: &str, scopes: &[&str], service: bool) -> Self {
        let mut claims = app.claims(tenant, user);
        claims.scope = scopes.join(" ");
        if service {
            claims.sid = None;
        }
        Self::with_token(app, app.key().sign(&claims).unwrap())
    }

    /// A client sending `token`.
    pub fn with_token(app: &TestApp, token: String) -> Self {
        Self { client: SessionServiceClient::new(app.channel()), token }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let bearer = MetadataValue::try_from(format!("Bearer {}", self.token)).unwrap();
        request.metadata_mut().insert("authorization", bearer);
        request
    }

    pub async fn create(&self, attributes: &[(&str, &str)]) -> Result<pb::Session, Status> {
        self.create_with(pb::CreateSessionRequest { attributes: map(attributes), request_id: String::new() }).await
    }

    pub async fn create_with(&self, request: pb::CreateSessionRequest) -> Result<pb::Session, Status> {
        let response = self.client.clone().create_session(self.request(request)).await?;
        Ok(response.into_inner().session.expect("a session"))
    }

    pub async fn get(&self, id: &str) -> Result<pb::Session, Status> {
        let request = pb::GetSessionRequest { session_id: id.to_owned() };
        Ok(self.client.clone().get_session(self.request(request)).await?.into_inner().session.expect("a session"))
    }

    pub async fn update(
        &self,
        id: &str,
        expected_version: i64,
        set: &[(&str, &str)],
        remove: &[&str],
    ) -> Result<pb::Session, Status> {
        let request = pb::UpdateSessionRequest {
            session_id: id.to_owned(),
            expected_version,
            set_attributes: map(set),
            remove_attributes: remove.iter().map(|key| (*key).to_owned()).collect(),
        };
        Ok(self.client.clone().update_session(self.request(request)).await?.into_inner().session.expect("a session"))
    }

    pub async fn touch(&self, id: &str) -> Result<pb::Session, Status> {
        let request = pb::TouchSessionRequest { session_id: id.to_owned() };
        Ok(self.client.clone().touch_session(self.request(request)).await?.into_inner().session.expect("a session"))
    }

    pub async fn delete(&self, id: &str, expected_version: Option<i64>) -> Result<(), Status> {
        let request = pb::DeleteSessionRequest { session_id: id.to_owned(), expected_version };
        self.client.clone().delete_session(self.request(request)).await.map(drop)
    }

    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<pb::ListSessionsResponse, Status> {
        let request = pb::ListSessionsRequest { page_size, page_token: page_token.to_owned() };
        Ok(self.client.clone().list_sessions(self.request(request)).await?.into_inner())
    }

    pub async fn watch(&self, id: &str, last: Option<Position>) -> Result<Streaming<pb::WatchSessionResponse>, Status> {
        let request = pb::WatchSessionRequest { session_id: id.to_owned(), last_position: last };
        Ok(self.client.clone().watch_session(self.request(request)).await?.into_inner())
    }
}

fn map(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

/// The next message of `stream` that is not a heartbeat (`None` when the stream ended OK).
pub async fn next_event(stream: &mut Streaming<pb::WatchSessionResponse>) -> Option<Event> {
    loop {
        let message = tokio::time::timeout(STREAM_GUARD, stream.message())
            .await
            .expect("the stream answers within the guard")
            .expect("the stream does not fail");
        match message?.event.expect("every message has an event") {
            Event::Heartbeat(_) => continue,
            event => return Some(event),
        }
    }
}

/// The confirmation that opens `stream`.
pub async fn confirmed(
    stream: &mut Streaming<pb::WatchSessionResponse>,
) -> mesh_proto::mesh::stream::v1::SubscriptionConfirmed {
    match next_event(stream).await {
        Some(Event::Confirmed(confirmed)) => confirmed,
        other => panic!("expected the confirmation, got {other:?}"),
    }
}

/// The next change on `stream`.
pub async fn next_change(stream: &mut Streaming<pb::WatchSessionResponse>) -> pb::SessionChange {
    match next_event(stream).await {
        Some(Event::Change(change)) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

pub use mesh_testkit::status::reason;

pub use mesh_testkit::status::error_metadata as metadata;

pub use mesh_testkit::status::violated_fields;

/// A fresh user name, so tests on one Redis never meet each other's sessions.
pub fn user() -> String {
    format!("u{}", random_id().to_lowercase().replace(['-', '_'], ""))
}
