//! Wiring of the Auth service: its stores (users in memory; refresh tokens and login
//! counters in Redis when the backbone is, else in memory), the password hasher and token
//! issuer from `[auth]`, and its Session client: an in-process channel to this process's
//! Session service, through the same auth layer a network call would pass.

use std::sync::Arc;

use mesh_auth::domain::{PasswordHasher, TokenIssuer};
use mesh_auth::grpc::{AuthGrpc, AuthParts, ChannelError, RegistrationPolicy, SessionChannel, SessionClient};
use mesh_auth::hash_pool::HashPool;
use mesh_auth::store::{
    AttemptStore, DocumentUserStore, LoginThrottle, MemoryAttemptStore, MemoryRefreshStore, MemoryUserStore,
    RedisAttemptStore, RedisRefreshStore, RefreshTokenStore, UserStore,
};
use mesh_core::auth::{Jwk, Revocations, SigningKeyPair};
use mesh_core::config::{ConfigError, Registration, Settings};
use mesh_core::transport::AuthLayer;
use mesh_proto::mesh::auth::v1::auth_service_server::AuthServiceServer;
use mesh_proto::mesh::session::v1::session_service_server::SessionServiceServer;
use mesh_session::grpc::SessionGrpc;
use tower::Layer as _;

use crate::backbone::Backbone;

/// What the Auth service needs from the rest of the process.
pub struct AuthWiring<'a> {
    /// The key it signs with.
    pub signer: &'a SigningKeyPair,
    /// The public keys it publishes.
    pub jwks: Vec<Jwk>,
    /// Where the Session service is.
    pub sessions: SessionTarget,
    /// The process's revocation view.
    pub revocations: Arc<Revocations>,
    /// The durable document store (Firestore), when one is configured: accounts live there,
    /// else in memory.
    pub documents: Option<Arc<dyn mesh_core::documents::DocumentStore>>,
}

/// Where the Auth service reaches the Session service.
pub enum SessionTarget {
    /// This process's Session service, behind the auth layer a network call would pass.
    InProcess(SessionServiceServer<SessionGrpc>, AuthLayer),
    /// Another meshd, at this URL (`auth.session_url`), connected lazily.
    Remote(String),
}

impl SessionTarget {
    fn client(self) -> Result<SessionClient, ConfigError> {
        Ok(match self {
            Self::InProcess(session, layer) => {
                let session =
                    tower::ServiceExt::<http::Request<tonic::body::Body>>::map_err(layer.layer(session), |never| {
                        ChannelError(Box::new(never))
                    });
                SessionClient::with_origin(
                    SessionChannel::new(session),
                    http::Uri::from_static("http://in-process.session"),
                )
            }
            Self::Remote(url) => {
                let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|error| ConfigError::new("auth.session_url", error.to_string(), "an http(s) URL"))?
                    .tcp_nodelay(true)
                    .connect_timeout(std::time::Duration::from_secs(5));
                let channel =
                    tower::ServiceExt::<http::Request<tonic::body::Body>>::map_err(endpoint.connect_lazy(), |error| {
                        ChannelError(Box::new(error))
                    });
                SessionClient::new(SessionChannel::new(channel))
            }
        })
    }
}

/// Builds the Auth service on `backbone`.
pub fn start(
    settings: &Settings,
    backbone: &Backbone,
    wiring: AuthWiring<'_>,
) -> Result<AuthServiceServer<AuthGrpc>, ConfigError> {
    let auth = &settings.auth;
    let hasher = PasswordHasher::new(auth.password_hash.into())
        .map_err(|problem| ConfigError::new("auth.password_hash", problem, "valid Argon2id parameters"))?;
    let (refresh, attempts): (Arc<dyn RefreshTokenStore>, Arc<dyn AttemptStore>) = match &backbone.redis {
        Some(pool) => (Arc::new(RedisRefreshStore::new(pool.clone())), Arc::new(RedisAttemptStore::new(pool.clone()))),
        None => (Arc::new(MemoryRefreshStore::default()), Arc::new(MemoryAttemptStore::default())),
    };
    let users: Arc<dyn UserStore> = match wiring.documents {
        Some(documents) => Arc::new(DocumentUserStore::new(documents)),
        None => Arc::new(MemoryUserStore::default()),
    };
    let sessions = wiring.sessions.client()?;
    let parts = AuthParts {
        users,
        refresh,
        throttle: LoginThrottle::new(attempts, auth.login_throttle.into()),
        hashing: HashPool::new(hasher, std::thread::available_parallelism().map_or(2, |cores| cores.get())).map_err(
            |error| {
                ConfigError::new(
                    "auth.password_hash",
                    format!("cannot start hashing threads: {error}"),
                    "a system that can start threads",
                )
            },
        )?,
        issuer: TokenIssuer::new(wiring.signer.clone(), &auth.issuer, &auth.audience, auth.access_token_ttl),
        jwks: wiring.jwks,
        sessions,
        revocations: wiring.revocations,
        hub: backbone.hub.clone(),
        subscription: backbone.subscription,
        revocation_hold: auth.max_token_lifetime + auth.leeway,
        registration: RegistrationPolicy {
            closed: auth.registration == Registration::Closed,
            closed_tenants: auth.closed_tenants.iter().cloned().collect(),
        },
    };
    Ok(AuthGrpc::new(parts)
        .into_server(settings.server.max_decoding_message_size, settings.server.max_encoding_message_size))
}
