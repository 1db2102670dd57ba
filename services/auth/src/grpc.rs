//! The gRPC adapter of `mesh.auth.v1.AuthService`: decode, validate into domain types, call
//! the stores, the Session service and the revocation fan-out, map the result.
//!
//! Sessions are the Session service's: Login creates one through its generated client with a
//! `sessions.create` service token, Refresh touches it and every way of ending credentials
//! deletes it with a `sessions.admin` service token. In one meshd the client is an
//! in-process channel (through the same auth layer); in a mesh it is a network channel.
//!
//! Ending a session ([`AuthGrpc::end_session`]) goes in the order that keeps a failure
//! safe: the access tokens are revoked first, by session id (revocation store, this
//! process, the broker), so every token of the session, even one a concurrent Refresh is
//! minting, is dead from then on; then the session is deleted; then its refresh tokens.
//! Each step is idempotent and the refresh tokens go last, so a call that failed half-way
//! (UNAVAILABLE) is retried with the same refresh token (Logout) or the same spent token
//! (reuse is recognised again until the family is gone).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::auth::revocations::{all_channel, tenant_channel};
use mesh_core::auth::{Caller, Jwk, Revocations, is_valid_principal_id};
use mesh_core::broker::Publication;
use mesh_core::broker::hub::Hub;
use mesh_core::broker::subscription::{ChannelRequest, SubscriptionSettings, subscribe};
use mesh_core::request_id::RequestId;
use mesh_core::transport::stream::{ContractMessages, ContractStream};
use mesh_core::transport::{caller, stream as stream_pb};
use mesh_core::{Error, FieldViolation};
use mesh_proto::mesh::auth::v1 as pb;
use mesh_proto::mesh::session::v1 as session_pb;
use mesh_proto::mesh::stream::v1::{Heartbeat, SubscriptionConfirmed};
use pb::auth_service_server::{AuthService, AuthServiceServer};
use pb::watch_revocations_response::Event;
use prost::Message as _;
use session_pb::session_service_client::SessionServiceClient;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use crate::AuthError;
use crate::domain::{
    Email, FamilyId, Password, PasswordHasher, RefreshRecord, RefreshToken, TokenIssuer, User, UserId,
};
use crate::hash_pool::HashPool;
use crate::store::{LoginThrottle, RefreshTokenStore, Rotation, UserStore};

/// The transport of the Session client: an in-process service or a network channel.
pub type SessionChannel =
    tower::util::BoxCloneSyncService<http::Request<tonic::body::Body>, http::Response<tonic::body::Body>, ChannelError>;

/// A transport failure of the Session client (a concrete type: the generated client's
/// bounds do not accept a boxed error here).
#[derive(Debug)]
pub struct ChannelError(pub tower::BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session channel: {}", self.0)
    }
}

impl std::error::Error for ChannelError {}

/// The generated Session client Auth calls.
pub type SessionClient = SessionServiceClient<SessionChannel>;

/// Scope of service tokens that create sessions (Login).
const SESSIONS_CREATE: &str = "sessions.create";
/// Scope of service tokens that touch and delete sessions (Refresh, Logout, revocations).
const SESSIONS_ADMIN: &str = "sessions.admin";
/// Scope of tokens that watch their tenant's revocations.
const REVOCATIONS_READ: &str = "revocations.read";
/// Scope of tokens that watch every tenant's revocations.
const REVOCATIONS_READ_ALL: &str = "revocations.read.all";
/// Sessions read per ListSessions page when ChangePassword ends the other sessions.
const LIST_PAGE: i32 = 100;

/// Who may register where.
#[derive(Debug, Clone, Default)]
pub struct RegistrationPolicy {
    /// Registration is closed for every tenant.
    pub closed: bool,
    /// Tenants whose registration is closed.
    pub closed_tenants: HashSet<String>,
}

impl RegistrationPolicy {
    fn is_open_for(&self, tenant: &str) -> bool {
        !self.closed && !self.closed_tenants.contains(tenant)
    }
}

/// Everything the service is built from.
pub struct AuthParts {
    /// Accounts.
    pub users: Arc<dyn UserStore>,
    /// Refresh tokens.
    pub refresh: Arc<dyn RefreshTokenStore>,
    /// Failed-login limits.
    pub throttle: LoginThrottle,
    /// Password hashing, on its own threads.
    pub hashing: HashPool,
    /// Signs access and service tokens.
    pub issuer: TokenIssuer,
    /// The public keys that verify access tokens (GetJwks).
    pub jwks: Vec<Jwk>,
    /// The Session service.
    pub sessions: SessionClient,
    /// Revokes and fans revocations out.
    pub revocations: Arc<Revocations>,
    /// WatchRevocations subscribes through it.
    pub hub: Hub,
    /// Settings of WatchRevocations streams.
    pub subscription: SubscriptionSettings,
    /// How long a revocation must hold: the longest lifetime a verifier accepts plus its
    /// clock leeway (`auth.max_token_lifetime` + `auth.leeway`).
    pub revocation_hold: Duration,
    /// Who may register.
    pub registration: RegistrationPolicy,
}

/// The Auth service over gRPC.
#[derive(Clone)]
pub struct AuthGrpc {
    inner: Arc<AuthParts>,
}

impl std::fmt::Debug for AuthGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGrpc").field("registration", &self.inner.registration).finish_non_exhaustive()
    }
}

impl AuthGrpc {
    /// The service built from `parts`.
    pub fn new(parts: AuthParts) -> Self {
        Self { inner: Arc::new(parts) }
    }

    /// The tonic server of the service, with the message size limits given.
    pub fn into_server(self, max_decoding: usize, max_encoding: usize) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self).max_decoding_message_size(max_decoding).max_encoding_message_size(max_encoding)
    }

    /// A Session request carrying a service token for `user` of `tenant` with `scope`.
    fn service_request<T>(&self, tenant: &str, user: &str, scope: &str, message: T) -> Result<Request<T>, Status> {
        let token = self.inner.issuer.service_token(tenant, user, scope, SystemTime::now()).map_err(internal)?;
        Ok(bearer(message, &token.token))
    }

    /// Access and refresh credentials for `record`'s session.
    fn credentials(&self, record: &RefreshRecord, refresh: &RefreshToken) -> Result<pb::Credentials, Status> {
        let access = self
            .inner
            .issuer
            .access_token(&record.tenant, &record.user, &record.session_id, &[], SystemTime::now(), record.expire_time)
            .map_err(internal)?;
        Ok(pb::Credentials {
            access_token: access.token,
            access_token_expire_time: Some(stream_pb::timestamp(access.expire_time)),
            refresh_token: refresh.as_str().to_owned(),
            refresh_token_expire_time: Some(stream_pb::timestamp(record.expire_time)),
        })
    }

    /// Ends `session_id` of `user` in `tenant` for `reason`: its refresh tokens, its access
    /// tokens (revocation fan-out) and the session itself. Idempotent.
    async fn end_session(
        &self,
        tenant: &str,
        user: &str,
        session_id: &str,
        reason: pb::RevocationReason,
        families: Vec<String>,
    ) -> Result<(), Status> {
        let hold = self.inner.revocation_hold;
        self.inner
            .revocations
            .revoke_sessions(tenant, user, vec![session_id.to_owned()], families, reason, hold)
            .await
            .map_err(Status::from)?;
        let request = session_pb::DeleteSessionRequest { session_id: session_id.to_owned(), expected_version: None };
        let request = self.service_request(tenant, user, SESSIONS_ADMIN, request)?;
        match self.inner.sessions.clone().delete_session(request).await {
            Ok(_) => {}
            Err(error) if error.code() == Code::NotFound => {}
            Err(error) => return Err(session_failed(error)),
        }
        self.inner.refresh.revoke_session(tenant, session_id).await.map_err(status)?;
        Ok(())
    }

    /// Runs `check` on the blocking pool (Argon2id takes tens of milliseconds of CPU).
    /// Runs `check` on the hashing threads (Argon2id takes tens of milliseconds of CPU).
    async fn hashing<T: Send + 'static>(&self, check: impl FnOnce(&PasswordHasher) -> T + Send + 'static) -> T {
        self.inner.hashing.run(check).await
    }

    /// The calling user's account; NOT_FOUND for a token whose user has none here.
    async fn account(&self, caller: &Caller) -> Result<User, Status> {
        let id = UserId::parse(&caller.user).ok_or_else(|| Status::from(Error::not_found("user")))?;
        self.inner
            .users
            .by_id(&caller.tenant, &id)
            .await
            .map_err(status)?
            .ok_or_else(|| status(AuthError::UserNotFound))
    }
}

/// `message` with `authorization: Bearer <token>`.
fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("a JWT is valid metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Maps a domain error to its status.
pub fn status(error: AuthError) -> Status {
    Status::from(match error {
        AuthError::Invalid(violations) => Error::invalid_argument(violations),
        AuthError::EmailTaken => {
            Error::already_exists("EMAIL_TAKEN", "an account with this email exists in this tenant")
        }
        AuthError::UserNotFound => Error::not_found("user"),
        AuthError::Throttled { retry_after } => Error::resource_exhausted(
            "LOGIN_THROTTLED",
            "too many failed attempts; retry after the delay given",
            retry_after,
        ),
        AuthError::Unavailable(detail) => Error::unavailable("BACKEND_UNAVAILABLE", "an auth backend is unavailable")
            .with_source(anyhow::anyhow!(detail)),
    })
}

fn internal(error: impl std::fmt::Display) -> Status {
    Status::from(Error::internal(anyhow::anyhow!("{error}")))
}

/// A Session call failed: retryable failures stay UNAVAILABLE; INVALID_ARGUMENT (a session
/// id the client sent) goes back as it is; anything else is a bug.
fn session_failed(error: Status) -> Status {
    match error.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted => {
            Status::from(Error::unavailable("SESSION_SERVICE_UNAVAILABLE", "the session service is unavailable"))
        }
        Code::InvalidArgument => error,
        _ => internal(format!("session service answered {:?}: {}", error.code(), error.message())),
    }
}

/// The one answer to every failed login, whatever failed.
fn bad_credentials() -> Status {
    Status::from(Error::unauthenticated("INVALID_CREDENTIALS", "the tenant, email or password is wrong"))
}

fn bad_refresh_token() -> Status {
    Status::from(Error::unauthenticated(
        "REFRESH_TOKEN_INVALID",
        "the refresh token is unknown, expired, revoked or already used",
    ))
}

fn invalid(violations: Vec<FieldViolation>) -> Status {
    status(AuthError::Invalid(violations))
}

fn user_pb(user: &User) -> pb::User {
    pb::User {
        user_id: user.id.to_string(),
        tenant_id: user.tenant.clone(),
        email: user.email.as_str().to_owned(),
        create_time: Some(stream_pb::timestamp(user.create_time)),
        update_time: Some(stream_pb::timestamp(user.update_time)),
    }
}

/// The client address a login attempt counts against.
fn client_address<T>(request: &Request<T>) -> String {
    request.remote_addr().map_or_else(|| "unknown".to_owned(), |address| address.ip().to_string())
}

/// A presented refresh token: UNAUTHENTICATED unless it has the shape of one (an access
/// token or garbage is a wrong credential, like an unknown token).
fn refresh_token(raw: &str) -> Result<RefreshToken, Status> {
    RefreshToken::parse(raw).ok_or_else(bad_refresh_token)
}

/// The caller must be a user token (with a session).
fn user_session(caller: &Caller) -> Result<&str, Status> {
    caller.session.as_deref().ok_or_else(|| {
        Status::from(Error::permission_denied("USER_TOKEN_REQUIRED", "this call needs a user's access token"))
    })
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Vec::new();
        if !is_valid_principal_id(&request.tenant_id) {
            violations.push(FieldViolation::new("tenant_id", "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"));
        }
        let email = Email::parse(&request.email, "email").map_err(|v| violations.push(v)).ok();
        let password = Password::parse(&request.password, "password").map_err(|v| violations.push(v)).ok();
        let request_id = RequestId::parse(&request.request_id, "request_id").map_err(|v| violations.push(v)).ok();
        let (Some(email), Some(password), Some(request_id)) = (email, password, request_id) else {
            return Err(invalid(violations));
        };
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        if !self.inner.registration.is_open_for(&request.tenant_id) {
            return Err(Status::from(Error::permission_denied(
                "REGISTRATION_CLOSED",
                "registration is closed for this tenant",
            )));
        }
        let hash = self.hashing(move |hasher| hasher.hash(&password)).await;
        let now = SystemTime::now();
        let user = User {
            id: UserId::generate(),
            tenant: request.tenant_id,
            email,
            password_hash: hash,
            create_time: now,
            update_time: now,
        };
        let user = self.inner.users.create(user, request_id.as_ref()).await.map_err(status)?;
        Ok(Response::new(pb::RegisterResponse { user: Some(user_pb(&user)) }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let address = client_address(&request);
        let request = request.into_inner();
        let mut violations = Vec::new();
        let email = Email::parse(&request.email, "email").map_err(|v| violations.push(v)).ok();
        let password = Password::presented(&request.password, "password").map_err(|v| violations.push(v)).ok();
        let (Some(email), Some(password)) = (email, password) else {
            return Err(invalid(violations));
        };
        let tenant = request.tenant_id;
        if !is_valid_principal_id(&tenant) {
            // Like a wrong password, in time too.
            self.hashing(move |hasher| hasher.verify_nothing(&password)).await;
            return Err(bad_credentials());
        }
        self.inner.throttle.attempt(&tenant, &email, &address, SystemTime::now()).await.map_err(status)?;
        let user = self.inner.users.by_email(&tenant, &email).await.map_err(status)?;
        let matched = match user.clone() {
            Some(user) => self.hashing(move |hasher| hasher.verify(&password, &user.password_hash)).await,
            None => self.hashing(move |hasher| hasher.verify_nothing(&password)).await,
        };
        let (true, Some(user)) = (matched, user) else {
            return Err(bad_credentials());
        };
        self.inner.throttle.succeeded(&tenant, &email, &address).await.map_err(status)?;

        let create = session_pb::CreateSessionRequest { attributes: Default::default(), request_id: String::new() };
        let create = self.service_request(&tenant, user.id.as_str(), SESSIONS_CREATE, create)?;
        let session = self
            .inner
            .sessions
            .clone()
            .create_session(create)
            .await
            .map_err(session_failed)?
            .into_inner()
            .session
            .ok_or_else(|| internal("CreateSession answered without a session"))?;
        let expire_time = session
            .max_expire_time
            .map(stream_pb::system_time)
            .ok_or_else(|| internal("CreateSession answered without max_expire_time"))?;
        let record = RefreshRecord {
            tenant: tenant.clone(),
            user: user.id.to_string(),
            session_id: session.session_id.clone(),
            family: FamilyId::generate(),
            expire_time,
        };
        let refresh = RefreshToken::generate();
        self.inner.refresh.issue(&refresh.hash(), &record).await.map_err(status)?;
        let credentials = self.credentials(&record, &refresh)?;
        Ok(Response::new(pb::LoginResponse {
            credentials: Some(credentials),
            session_id: session.session_id,
            user: Some(user_pb(&user)),
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshResponse>, Status> {
        let token = refresh_token(&request.get_ref().refresh_token)?;
        let hash = token.hash();
        // A live token's session is touched before the token is spent: if the Session service
        // fails, the token still works for the retry; if the session ended, so do its tokens.
        if let Some(record) = self.inner.refresh.find(&hash, SystemTime::now()).await.map_err(status)? {
            let touch = session_pb::TouchSessionRequest { session_id: record.session_id.clone() };
            let touch = self.service_request(&record.tenant, &record.user, SESSIONS_ADMIN, touch)?;
            match self.inner.sessions.clone().touch_session(touch).await {
                Ok(_) => {}
                Err(error) if error.code() == Code::NotFound => {
                    self.inner.refresh.revoke_session(&record.tenant, &record.session_id).await.map_err(status)?;
                    return Err(bad_refresh_token());
                }
                Err(error) => return Err(session_failed(error)),
            }
        }
        let next = RefreshToken::generate();
        let record = match self.inner.refresh.rotate(&hash, &next.hash(), SystemTime::now()).await.map_err(status)? {
            Rotation::Rotated(record) => record,
            Rotation::Invalid => return Err(bad_refresh_token()),
            Rotation::Reused(record) => {
                tracing::warn!(tenant = %record.tenant, family = record.family.as_str(), "a spent refresh token was presented again: ending its session");
                self.end_session(
                    &record.tenant,
                    &record.user,
                    &record.session_id,
                    pb::RevocationReason::RefreshTokenReused,
                    vec![record.family.as_str().to_owned()],
                )
                .await?;
                return Err(bad_refresh_token());
            }
        };
        Ok(Response::new(pb::RefreshResponse { credentials: Some(self.credentials(&record, &next)?) }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let request = request.into_inner();
        let record = if request.refresh_token.is_empty() {
            None
        } else {
            let token = refresh_token(&request.refresh_token)?;
            let record = self.inner.refresh.find(&token.hash(), SystemTime::now()).await.map_err(status)?;
            if record.is_none() && caller.is_none() {
                // Already logged out (or never valid): nothing is left to end.
                return Ok(Response::new(pb::LogoutResponse {}));
            }
            record
        };
        let (tenant, user, session) = match (&caller, &record) {
            (Some(caller), Some(record)) => {
                if caller.tenant != record.tenant || caller.session.as_deref() != Some(record.session_id.as_str()) {
                    return Err(invalid(vec![FieldViolation::new(
                        "refresh_token",
                        "belongs to another session than the access token",
                    )]));
                }
                (record.tenant.clone(), record.user.clone(), record.session_id.clone())
            }
            (None, Some(record)) => (record.tenant.clone(), record.user.clone(), record.session_id.clone()),
            (Some(caller), None) => {
                let session = user_session(caller)?;
                (caller.tenant.clone(), caller.user.clone(), session.to_owned())
            }
            (None, None) => {
                return Err(Status::from(Error::unauthenticated(
                    "TOKEN_MISSING",
                    "Logout needs a valid access token or the session's refresh token",
                )));
            }
        };
        self.end_session(&tenant, &user, &session, pb::RevocationReason::Logout, Vec::new()).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = caller(&request)?.clone();
        user_session(&caller)?;
        let authorization = request.metadata().get("authorization").cloned();
        let session_id = request.into_inner().session_id;
        if session_id.is_empty()
            || session_id.len() > 128
            || !session_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(vec![FieldViolation::new("session_id", "must be a session id")]));
        }
        // The Session service decides what the caller reaches (its own sessions, or with
        // `admin` any of its tenant), with the caller's own token, and says who owns it.
        let mut get = Request::new(session_pb::GetSessionRequest { session_id: session_id.clone() });
        if let Some(value) = authorization {
            get.metadata_mut().insert("authorization", value);
        }
        let owner = match self.inner.sessions.clone().get_session(get).await {
            Ok(response) => response.into_inner().session.map(|session| session.user_id).unwrap_or_default(),
            Err(error) if error.code() == Code::NotFound => return Err(Status::from(Error::not_found("session"))),
            Err(error) => return Err(session_failed(error)),
        };
        let reason =
            if owner == caller.user { pb::RevocationReason::UserRevoked } else { pb::RevocationReason::AdminRevoked };
        self.end_session(&caller.tenant, &owner, &session_id, reason, Vec::new()).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        let keys = self
            .inner
            .jwks
            .iter()
            .map(|key| pb::Jwk {
                kty: key.kty.clone(),
                crv: key.crv.clone(),
                x: key.x.clone(),
                kid: key.kid.clone(),
                alg: key.alg.clone(),
                r#use: key.key_use.clone(),
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let caller = caller(&request)?.clone();
        let session_id = user_session(&caller)?.to_owned();
        let user = self.account(&caller).await?;
        Ok(Response::new(pb::GetCurrentUserResponse {
            user: Some(user_pb(&user)),
            session_id,
            scopes: caller.scopes.iter().map(|scope| scope.0.clone()).collect(),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = caller(&request)?.clone();
        let current_session = user_session(&caller)?.to_owned();
        let address = client_address(&request);
        let authorization = request.metadata().get("authorization").cloned();
        let request = request.into_inner();
        let mut violations = Vec::new();
        let current =
            Password::presented(&request.current_password, "current_password").map_err(|v| violations.push(v)).ok();
        let new = Password::parse(&request.new_password, "new_password").map_err(|v| violations.push(v)).ok();
        let (Some(current), Some(new)) = (current, new) else {
            return Err(invalid(violations));
        };
        if current == new {
            return Err(invalid(vec![FieldViolation::new("new_password", "must differ from the current password")]));
        }
        let user = self.account(&caller).await?;
        self.inner.throttle.attempt(&caller.tenant, &user.email, &address, SystemTime::now()).await.map_err(status)?;
        let stored = user.password_hash.clone();
        if !self.hashing(move |hasher| hasher.verify(&current, &stored)).await {
            return Err(Status::from(Error::permission_denied("PASSWORD_WRONG", "the current password is wrong")));
        }
        self.inner.throttle.succeeded(&caller.tenant, &user.email, &address).await.map_err(status)?;
        let hash = self.hashing(move |hasher| hasher.hash(&new)).await;
        self.inner.users.set_password(&caller.tenant, &user.id, hash, SystemTime::now()).await.map_err(status)?;

        // Every other session of the user ends; the caller's own token lists them.
        let mut page_token = String::new();
        let mut others = Vec::new();
        loop {
            let mut list = Request::new(session_pb::ListSessionsRequest { page_size: LIST_PAGE, page_token });
            if let Some(value) = &authorization {
                list.metadata_mut().insert("authorization", value.clone());
            }
            let page = self.inner.sessions.clone().list_sessions(list).await.map_err(session_failed)?.into_inner();
            others.extend(
                page.sessions.into_iter().map(|session| session.session_id).filter(|id| *id != current_session),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        for session in others {
            self.end_session(&caller.tenant, &caller.user, &session, pb::RevocationReason::PasswordChanged, Vec::new())
                .await?;
        }
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    type WatchRevocationsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchRevocationsResponse, Status>> + Send + 'static>>;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let (channel, scope) = if request.all_tenants {
            (all_channel(), REVOCATIONS_READ_ALL)
        } else {
            (tenant_channel(&caller.tenant).map_err(Status::from)?, REVOCATIONS_READ)
        };
        if !caller.has_scope(scope) {
            return Err(Status::from(Error::permission_denied(
                "SCOPE_MISSING",
                format!("watching these revocations needs the `{scope}` scope"),
            )));
        }
        let since = stream_pb::last_position(request.last_position.as_ref(), "last_position")
            .map_err(|violation| invalid(vec![violation]))?;
        let requests = vec![ChannelRequest { channel, since }];
        let subscription =
            subscribe(&self.inner.hub, requests, &self.inner.subscription).await.map_err(Status::from)?;
        let heartbeat_interval = self.inner.subscription.heartbeat_interval;
        Ok(Response::new(Box::pin(ContractStream::new(subscription, RevocationMessages, heartbeat_interval))))
    }
}

/// The WatchRevocations responses of the stream contract.
struct RevocationMessages;

impl ContractMessages for RevocationMessages {
    type Message = pb::WatchRevocationsResponse;

    fn confirmed(&self, confirmed: SubscriptionConfirmed) -> Self::Message {
        pb::WatchRevocationsResponse { event: Some(Event::Confirmed(confirmed)) }
    }

    fn heartbeat(&self, heartbeat: Heartbeat) -> Self::Message {
        pb::WatchRevocationsResponse { event: Some(Event::Heartbeat(heartbeat)) }
    }

    fn publication(&mut self, publication: &Publication) -> Result<(Self::Message, bool), Status> {
        let mut revocation = pb::Revocation::decode(publication.payload.as_ref())
            .map_err(|error| internal(format!("a published revocation does not decode: {error}")))?;
        revocation.position = Some(stream_pb::channel_position(&publication.channel, &publication.position));
        Ok((pb::WatchRevocationsResponse { event: Some(Event::Revocation(revocation)) }, false))
    }
}
