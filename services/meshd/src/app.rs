//! The application: [`App::build`] turns settings into everything meshd serves, and
//! [`App::serve`] runs it on a bound listener until the shutdown future resolves.
//!
//! Layers, outermost first: CORS (answers browser preflights); then plain HTTP routes, or
//! for everything else the grpc-web translation (tonic-web, HTTP/1.1 included), the RPC
//! layer (tracing span, end of open streams at shutdown), the auth layer (bearer token ->
//! `Caller`) and the gRPC services.
//!
//! Shutdown: stop accepting and send GOAWAY, report NOT_SERVING, let calls and streams run
//! on for `server.drain_timeout`, then end every open stream with UNAVAILABLE and a retry
//! hint, and return once the connections have closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use mesh_core::auth::{
    MemoryRevocationStore, RedisRevocationStore, RevocationStore, Revocations, SigningKeyPair, TokenVerifier,
    load_or_create_dev_key,
};
use mesh_core::backend::BackendProbe;
use mesh_core::config::{ConfigError, ServerSettings, Settings};
use mesh_core::documents::DocumentsProbe;
use mesh_core::transport::{AuthLayer, EndStreams, RpcLayer};

use crate::coalesce::Coalescing;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::backbone::Backbone;
use crate::health::{self, HealthTarget};
use crate::registry::{self, ServiceEntry};

/// gRPC names of the reflection services.
const REFLECTION_SERVICES: [&str; 2] =
    ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];
/// The health service's own name.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// How often backend probes run.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a backend probe may take before its backend counts as down.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra time, after the drain period, for ended streams to flush before serve returns.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why meshd could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A configuration value is unusable (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else (exit code 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A built application, ready to serve.
pub struct App {
    settings: Settings,
    verifier: Arc<TokenVerifier>,
    dev_key: Option<SigningKeyPair>,
    signer: Option<SigningKeyPair>,
    services: Vec<ServiceEntry>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("services", &self.services)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds the application: selects the services, loads the signing key
    /// (`auth.signing_key`) and loads or creates the dev key when `auth.dev_key` is on, and
    /// builds the token verifier, which trusts both and `auth.keys`.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let services = registry::select(&settings.services)?;
        let dev_key = if settings.auth.dev_key {
            Some(load_or_create_dev_key(&settings.data_dir).map_err(anyhow::Error::from)?)
        } else {
            None
        };
        let configured = SigningKeyPair::from_settings(&settings.auth)?;
        let mut verifier = TokenVerifier::from_settings(&settings.auth, configured.as_ref().or(dev_key.as_ref()))?;
        if let (Some(_), Some(dev_key)) = (&configured, &dev_key) {
            // The configured key signs; the dev key still verifies.
            verifier.add_key_pair(dev_key);
        }
        let signer = configured.or_else(|| dev_key.clone());
        Ok(Self { settings, verifier: Arc::new(verifier), dev_key, signer, services })
    }

    /// The settings the application was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The embedded default's signing key, when `auth.dev_key` is on.
    pub fn dev_key(&self) -> Option<&SigningKeyPair> {
        self.dev_key.as_ref()
    }

    /// The key this instance signs access tokens with: `auth.signing_key`, else the dev key.
    pub fn signer(&self) -> Option<&SigningKeyPair> {
        self.signer.as_ref()
    }

    /// Fully-qualified names of every gRPC service this application serves.
    pub fn grpc_service_names(&self) -> Vec<String> {
        let mut names = vec![HEALTH_SERVICE.to_owned()];
        if self.settings.server.reflection {
            names.extend(REFLECTION_SERVICES.iter().map(|name| (*name).to_owned()));
        }
        names.extend(self.services.iter().flat_map(|entry| entry.grpc_names.iter().map(|name| (*name).to_owned())));
        names
    }

    /// Serves on `listener` until `shutdown` resolves, then drains and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let server_settings = self.settings.server.clone();
        let end_streams = EndStreams::new();
        let stopping = CancellationToken::new();

        let backbone = Backbone::from_settings(&self.settings)?;
        tracing::info!(backend = backbone.kind(), "streaming backbone ready");
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health_service = health_service
            .max_decoding_message_size(server_settings.max_decoding_message_size)
            .max_encoding_message_size(server_settings.max_encoding_message_size);
        // One document store for the services that keep documents: Firestore (cached in
        // Redis) when configured; not even connected when none of them runs.
        let keeps_documents = self.services.iter().any(|entry| matches!(entry.name, "auth" | "feed" | "storage"));
        let documents = match keeps_documents {
            true => Some(crate::storage::documents(&self.settings, &backbone).await?),
            false => None,
        };
        let durable = documents.as_ref().filter(|documents| documents.durable);
        let durable_documents = durable.map(|documents| documents.cached.clone());
        let targets = self.health_targets(&backbone, durable_documents.as_ref());
        let monitor =
            health::spawn_monitor(reporter.clone(), targets.clone(), HEALTH_PROBE_INTERVAL, stopping.clone()).await;

        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        let background = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // Every instance rejects revoked tokens: its view follows the broker, and asks the
        // revocation store while it cannot trust that feed.
        let revocation_store: Arc<dyn RevocationStore> = match &backbone.redis {
            Some(pool) => Arc::new(RedisRevocationStore::new(pool.clone())),
            None => Arc::new(MemoryRevocationStore::default()),
        };
        let revocations = Revocations::new(revocation_store, backbone.hub.clone());
        tasks.spawn(revocations.clone().watch(backbone.subscription, background.clone()));
        let auth_layer = AuthLayer::new(self.verifier.clone()).with_revocations(revocations.clone());

        let selected = |name: &str| self.services.iter().any(|entry| entry.name == name);
        let session = if selected("session") {
            Some(crate::session::start(&self.settings, &backbone, &revocations, &mut tasks, &background).await?)
        } else {
            None
        };
        if selected("auth") {
            let signer = self.signer.as_ref().ok_or_else(|| {
                anyhow::anyhow!("the auth service needs a signing key: set [auth.signing_key] (or auth.dev_key)")
            })?;
            let sessions = match (&self.settings.auth.session_url, &session) {
                (Some(url), _) => crate::auth::SessionTarget::Remote(url.clone()),
                (None, Some(session)) => crate::auth::SessionTarget::InProcess(session.clone(), auth_layer.clone()),
                (None, None) => unreachable!("checked in App::build"),
            };
            let wiring = crate::auth::AuthWiring {
                signer,
                jwks: self.verifier.jwks(),
                sessions,
                revocations: revocations.clone(),
                documents: durable_documents.clone(),
            };
            routes.add_service(crate::auth::start(&self.settings, &backbone, wiring)?);
        }
        if let Some(session) = session {
            routes.add_service(session);
        }
        if selected("feed") {
            let feed = crate::feed::start(
                &self.settings,
                &backbone,
                durable.map(|documents| documents.direct.clone()),
                &mut tasks,
                &background,
            )?;
            routes.add_service(feed);
        }
        let mut blob_routes = None;
        if let Some(documents) = documents.as_ref().filter(|_| selected("storage")) {
            let listen = listener.local_addr()?;
            let storage = crate::storage::start(
                &self.settings,
                &backbone,
                documents.cached.clone(),
                listen,
                &mut tasks,
                &background,
            )?;
            routes.add_service(storage.server);
            blob_routes = storage.routes;
        }
        if server_settings.reflection {
            add_reflection(&mut routes, &self.grpc_service_names(), &server_settings)?;
        }
        // gRPC (and grpc-web) calls pass the grpc-web translation, the RPC layer and the
        // auth layer; plain HTTP routes are matched first and skip all three (tonic-web
        // would answer a plain HTTP/1.1 request with 400).
        let grpc = tower::ServiceBuilder::new()
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(RpcLayer::new(end_streams.clone()))
            .layer(auth_layer)
            .service(routes.routes());
        let mut http = crate::http::router(self.grpc_service_names(), &self.verifier.jwks());
        if let Some(blobs) = blob_routes {
            http = http.merge(blobs);
        }
        let routes = Routes::from(http.fallback_service(grpc));

        let drain = server_settings.drain_timeout;
        let plan = ShutdownPlan { reporter, targets, monitor, stopping: stopping.clone(), end_streams, drain };
        let signal = plan.run_after(shutdown);
        let server = Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(server_settings.max_concurrent_streams)
            .http2_max_header_list_size(server_settings.max_header_list_size)
            .http2_max_pending_accept_reset_streams(Some(server_settings.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(server_settings.max_local_error_reset_streams))
            .http2_keepalive_interval(Some(server_settings.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .layer(cors_layer(&server_settings))
            .add_routes(routes)
            .serve_with_incoming_shutdown(no_delay(listener), signal);

        // Connections that do not close after their streams were ended (a peer that never
        // reads) must not keep the process alive forever.
        let deadline = async {
            stopping.cancelled().await;
            tokio::time::sleep(drain + CLOSE_GRACE).await;
        };
        let served = tokio::select! {
            result = server => result.map_err(anyhow::Error::from),
            () = deadline => {
                tracing::warn!("connections still open after the drain period; closing them");
                Ok(())
            }
        };
        // Background work (audit writers, sweepers) finishes what it claimed, then stops.
        background.cancel();
        if tokio::time::timeout(CLOSE_GRACE, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!("background tasks still busy after the close grace; stopping them");
        }
        served
    }

    /// Health targets: reflection (no backend), and every mesh service, which depends on
    /// the backbone's backend.
    fn health_targets(
        &self,
        backbone: &Backbone,
        documents: Option<&Arc<dyn mesh_core::documents::DocumentStore>>,
    ) -> Vec<HealthTarget> {
        let mut targets: Vec<HealthTarget> = Vec::new();
        if self.settings.server.reflection {
            targets.extend(
                REFLECTION_SERVICES.iter().map(|name| HealthTarget { service: (*name).to_owned(), probes: Vec::new() }),
            );
        }
        let documents: Option<Arc<dyn BackendProbe>> = documents
            .map(|store| Arc::new(DocumentsProbe::new(store.clone(), HEALTH_PROBE_TIMEOUT)) as Arc<dyn BackendProbe>);
        for entry in &self.services {
            let mut probes = vec![backbone.probe()];
            // Storage keeps its files there; Auth and Feed only their accounts and archive,
            // whose outage their own calls report.
            if entry.name == "storage" {
                probes.extend(documents.clone());
            }
            targets.extend(
                entry
                    .grpc_names
                    .iter()
                    .map(|name| HealthTarget { service: (*name).to_owned(), probes: probes.clone() }),
            );
        }
        targets
    }
}

/// Everything shutdown needs, gathered so one future can play it out.
struct ShutdownPlan {
    reporter: HealthReporter,
    targets: Vec<HealthTarget>,
    monitor: JoinHandle<()>,
    stopping: CancellationToken,
    end_streams: EndStreams,
    drain: Duration,
}

impl ShutdownPlan {
    /// Resolves when the server must stop accepting (once `shutdown` has); meanwhile turns
    /// health NOT_SERVING and arranges for open streams to end after the drain.
    async fn run_after(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!(drain = %humantime_duration(self.drain), "shutting down: no new connections, draining open calls");
        self.stopping.cancel();
        // The monitor must be gone before NOT_SERVING is reported, or a probe round still
        // running could report SERVING after it.
        self.monitor.abort();
        let _ = self.monitor.await;
        health::report_shutdown(&self.reporter, &self.targets).await;
        let (drain, end_streams) = (self.drain, self.end_streams);
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            tracing::info!("drain period over: ending open streams with UNAVAILABLE");
            end_streams.end();
        });
    }
}

fn humantime_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn add_reflection(routes: &mut RoutesBuilder, served: &[String], settings: &ServerSettings) -> anyhow::Result<()> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(mesh_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            // google.rpc error details: grpcurl and buf curl decode ErrorInfo & co with them.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .include_reflection_service(false);
        for name in served {
            builder = builder.with_service_name(name.clone());
        }
        builder
    };
    routes.add_service(
        builder()
            .build_v1()?
            .max_decoding_message_size(settings.max_decoding_message_size)
            .max_encoding_message_size(settings.max_encoding_message_size),
    );
    routes.add_service(
        builder()
            .build_v1alpha()?
            .max_decoding_message_size(settings.max_decoding_message_size)
            .max_encoding_message_size(settings.max_encoding_message_size),
    );
    Ok(())
}

/// CORS for grpc-web callers: the headers a grpc-web client sends are allowed, and the
/// gRPC status headers are exposed so browser code can read them.
fn cors_layer(settings: &ServerSettings) -> CorsLayer {
    let origins = if settings.cors_allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(settings.cors_allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()))
    };
    let allow_headers =
        ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "authorization", "traceparent", "tracestate"];
    let expose_headers = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::POST, Method::GET, Method::PUT, Method::OPTIONS])
        .allow_headers(allow_headers.map(HeaderName::from_static))
        .expose_headers(expose_headers.map(HeaderName::from_static))
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// The accepted connections of `listener`, with Nagle's algorithm off and writes
/// coalesced ([`Coalescing`]). tonic's `Server::tcp_nodelay` does not apply to an incoming
/// stream: without this, a response written in two parts (message, then trailers) waits for
/// the client's delayed ACK (~40 ms).
fn no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<Coalescing<tokio::net::TcpStream>>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.map(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not turn Nagle's algorithm off on a connection");
            }
            Coalescing::new(stream)
        })
    })
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| anyhow::anyhow!("failed to listen on {addr}: {error}"))
}
