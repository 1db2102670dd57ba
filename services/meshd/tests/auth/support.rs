//! Helpers of the Auth tests: meshd on Redis with cheap password hashes, and an Auth client.

use std::time::Duration;

use mesh_core::auth::{SigningKeyPair, random_id};
use mesh_core::config::Settings;
use mesh_proto::mesh::auth::v1 as pb;
use mesh_proto::mesh::session::v1 as session_pb;
use mesh_testkit::{RedisServer, TestApp};
use pb::auth_service_client::AuthServiceClient;
use session_pb::session_service_client::SessionServiceClient;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status, Streaming};

pub use mesh_testkit::status::reason;

/// A password that passes the rules.
pub const PASSWORD: &str = "correct horse battery staple";

/// Longest a test waits for one stream message (a guard, not a timing).
const STREAM_GUARD: Duration = Duration::from_secs(30);

/// Settings every Auth test shares: cheap Argon2id (the cost is configuration; the
/// algorithm and the code path are the production ones).
pub fn cheap_hashes(settings: &mut Settings) {
    settings.auth.password_hash.memory_kib = 256;
    settings.auth.password_hash.iterations = 1;
}

/// meshd on `redis`, trusting (and signing with) `key` when given.
pub async fn on_redis(
    redis: &RedisServer,
    key: Option<SigningKeyPair>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let key = key.unwrap_or_else(SigningKeyPair::generate);
    TestApp::on_redis(redis, key, move |settings| {
        cheap_hashes(settings);
        configure(settings);
    })
    .await
    .expect("meshd starts")
}

/// meshd on the embedded memory backbone.
pub async fn in_memory(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::start_with(move |settings| {
        cheap_hashes(settings);
        configure(settings);
    })
    .await
    .expect("meshd starts")
}

/// A fresh email, so tests never meet each other's accounts.
pub fn email() -> String {
    format!("user-{}@example.com", random_id().to_lowercase().replace(['-', '_'], ""))
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {token}")).expect("a token is valid metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

/// The Auth service of one instance.
#[derive(Clone)]
pub struct Auth {
    pub client: AuthServiceClient<tonic::transport::Channel>,
    pub sessions: SessionServiceClient<tonic::transport::Channel>,
}

/// What a login hands back.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
    pub user_id: String,
}

impl Auth {
    pub fn of(app: &TestApp) -> Self {
        Self { client: AuthServiceClient::new(app.channel()), sessions: SessionServiceClient::new(app.channel()) }
    }

    pub async fn register(&self, tenant: &str, email: &str, password: &str) -> Result<pb::User, Status> {
        let request = pb::RegisterRequest {
            tenant_id: tenant.into(),
            email: email.into(),
            password: password.into(),
            request_id: String::new(),
        };
        Ok(self.client.clone().register(request).await?.into_inner().user.expect("a user"))
    }

    pub async fn login(&self, tenant: &str, email: &str, password: &str) -> Result<LoggedIn, Status> {
        let request = pb::LoginRequest { tenant_id: tenant.into(), email: email.into(), password: password.into() };
        let response = self.client.clone().login(request).await?.into_inner();
        let credentials = response.credentials.expect("credentials");
        Ok(LoggedIn {
            access: credentials.access_token,
            refresh: credentials.refresh_token,
            session_id: response.session_id,
            user_id: response.user.expect("a user").user_id,
        })
    }

    /// Registers a fresh account in `tenant` and logs it in.
    pub async fn signed_up(&self, tenant: &str) -> (String, LoggedIn) {
        let email = email();
        self.register(tenant, &email, PASSWORD).await.expect("register");
        let login = self.login(tenant, &email, PASSWORD).await.expect("login");
        (email, login)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::Credentials, Status> {
        let request = pb::RefreshRequest { refresh_token: refresh_token.into() };
        Ok(self.client.clone().refresh(request).await?.into_inner().credentials.expect("credentials"))
    }

    pub async fn logout(&self, access: Option<&str>, refresh_token: &str) -> Result<(), Status> {
        let message = pb::LogoutRequest { refresh_token: refresh_token.into() };
        let request = match access {
            Some(token) => bearer(message, token),
            None => Request::new(message),
        };
        self.client.clone().logout(request).await.map(drop)
    }

    pub async fn revoke(&self, access: &str, session_id: &str) -> Result<(), Status> {
        let request = bearer(pb::RevokeSessionRequest { session_id: session_id.into() }, access);
        self.client.clone().revoke_session(request).await.map(drop)
    }

    pub async fn current_user(&self, access: &str) -> Result<pb::GetCurrentUserResponse, Status> {
        Ok(self.client.clone().get_current_user(bearer(pb::GetCurrentUserRequest {}, access)).await?.into_inner())
    }

    pub async fn change_password(&self, access: &str, current: &str, new: &str) -> Result<(), Status> {
        let request = pb::ChangePasswordRequest { current_password: current.into(), new_password: new.into() };
        self.client.clone().change_password(bearer(request, access)).await.map(drop)
    }

    pub async fn watch(
        &self,
        token: &str,
        all_tenants: bool,
    ) -> Result<Streaming<pb::WatchRevocationsResponse>, Status> {
        let request = pb::WatchRevocationsRequest { last_position: None, all_tenants };
        Ok(self.client.clone().watch_revocations(bearer(request, token)).await?.into_inner())
    }

    /// GetSession of the Session service with `access`.
    pub async fn get_session(&self, access: &str, session_id: &str) -> Result<session_pb::Session, Status> {
        let request = bearer(session_pb::GetSessionRequest { session_id: session_id.into() }, access);
        Ok(self.sessions.clone().get_session(request).await?.into_inner().session.expect("a session"))
    }
}

/// The next message of `stream` that is not a heartbeat.
pub async fn next_event(stream: &mut Streaming<pb::WatchRevocationsResponse>) -> pb::watch_revocations_response::Event {
    use pb::watch_revocations_response::Event;
    loop {
        let message = tokio::time::timeout(STREAM_GUARD, stream.message())
            .await
            .expect("the stream answers within the guard")
            .expect("the stream does not fail")
            .expect("the stream does not end");
        match message.event.expect("every message has an event") {
            Event::Heartbeat(_) => continue,
            event => return event,
        }
    }
}

/// A token of `app`'s key for `user` of `tenant` with `scopes`.
pub fn scoped_token(app: &TestApp, tenant: &str, user: &str, scopes: &[&str]) -> String {
    let mut claims = app.claims(tenant, user);
    claims.scope = scopes.join(" ");
    app.key().sign(&claims).expect("a signed token")
}
