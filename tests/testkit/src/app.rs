//! [`TestApp`]: meshd booted in-process on `127.0.0.1:0` with test settings, and typed
//! clients to call it. Each test gets its own instance, data directory and signing key.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use mesh_core::auth::{AccessClaims, SigningKeyPair, random_id};
use mesh_core::config::{Secret, Settings, SigningKeySettings, VerificationKey};
use meshd::App;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as ReflectionV1Client;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as ReflectionV1AlphaClient;

/// Issuer and audience of test tokens (the defaults of `[auth]`).
pub const TEST_ISSUER: &str = "mesh";
/// See [`TEST_ISSUER`].
pub const TEST_AUDIENCE: &str = "mesh";

/// A running in-process meshd. Dropping it stops the server without draining; call
/// [`TestApp::shutdown`] to see a graceful shutdown through.
pub struct TestApp {
    addr: SocketAddr,
    channel: Channel,
    key: SigningKeyPair,
    settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _data_dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TestApp {
    /// Boots meshd with test settings: a free port, a fresh data directory, a generated
    /// key pair trusted under its key id (no dev key; it is also the signing key unless
    /// `configure` sets another), a 200 ms drain.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestApp::start`], with `configure` applied to the settings last.
    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> anyhow::Result<Self> {
        Self::start_trusting(SigningKeyPair::generate(), configure).await
    }

    /// Like [`TestApp::start_with`], trusting `key` (so several instances accept the same
    /// tokens, as the instances of one mesh do).
    pub async fn start_trusting(key: SigningKeyPair, configure: impl FnOnce(&mut Settings)) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir().context("failed to create a data directory")?;
        let mut settings = Settings { data_dir: data_dir.path().to_path_buf(), ..Settings::default() };
        settings.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.server.drain_timeout = Duration::from_millis(200);
        settings.auth.dev_key = false;
        settings.auth.keys = vec![VerificationKey {
            kid: key.kid().to_owned(),
            public_key_pem: Some(key.public_key_pem()),
            public_key_file: None,
        }];
        configure(&mut settings);
        if settings.auth.signing_key.is_none() && !settings.auth.dev_key {
            // No other signer was configured: the test key signs (the Auth service's
            // tokens), instead of only being trusted.
            settings.auth.keys.retain(|trusted| trusted.kid != key.kid());
            settings.auth.signing_key = Some(SigningKeySettings {
                kid: key.kid().to_owned(),
                private_key_pem: Some(Secret::new(key.private_key_pem())),
                private_key_file: None,
            });
        }

        let app = App::build(settings.clone()).map_err(|error| anyhow::anyhow!("meshd did not build: {error}"))?;
        let listener = meshd::app::bind(settings.server.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
        Ok(Self { addr, channel, key, settings, stop: Some(stop), server: Some(server), _data_dir: data_dir })
    }

    /// Like [`TestApp::start_trusting`], on `redis` (its backbone and stores), with a
    /// command pool of 64 connections.
    pub async fn on_redis(
        redis: &crate::RedisServer,
        key: SigningKeyPair,
        configure: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let url = redis.url();
        Self::start_trusting(key, move |settings| {
            settings.redis.url = Some(Secret::new(url));
            settings.redis.pool_size = 64;
            configure(settings);
        })
        .await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings the server runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A channel to the server (HTTP/2, lazily connected, shared by the typed clients).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The key pair the server trusts; sign custom claims with it.
    pub fn key(&self) -> &SigningKeyPair {
        &self.key
    }

    /// Claims for `user` of `tenant` in a fresh session, valid for 15 minutes.
    pub fn claims(&self, tenant: &str, user: &str) -> AccessClaims {
        AccessClaims::new(TEST_ISSUER, TEST_AUDIENCE, tenant, user, &random_id(), Duration::from_secs(900))
    }

    /// A valid access token for `user` of `tenant`.
    pub fn token(&self, tenant: &str, user: &str) -> String {
        self.key.sign(&self.claims(tenant, user)).expect("a test key signs")
    }

    /// A grpc.health.v1 client.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// A grpc.reflection.v1 client.
    pub fn reflection_v1(&self) -> ReflectionV1Client<Channel> {
        ReflectionV1Client::new(self.channel())
    }

    /// A grpc.reflection.v1alpha client.
    pub fn reflection_v1alpha(&self) -> ReflectionV1AlphaClient<Channel> {
        ReflectionV1AlphaClient::new(self.channel())
    }

    /// Starts a graceful shutdown and waits until the server has returned.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await.context("the server task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
