//! Benchmark of the Session service (issue 4; targets in design.md, "Performance targets").
//!
//! It measures and reports; it asserts nothing about timings. One process, a tokio runtime
//! with 2 worker threads, on a private `redis-server` started for the run:
//!
//! - meshd in-process on Redis (`TestApp`, release build), called through the generated
//!   client with a verified access token on every call (auth included);
//! - a bare tonic server whose `Check` does one Redis GET through a mesh pool (the design's
//!   "handler doing one Redis GET");
//! - the same meshd on its memory store (GetSession without Redis: the service's own cost);
//! - the reference: a bare tonic server on its own port with only grpc.health.v1, whose
//!   `Check` is the "echo" call (no layers, no auth, no backend), and the same `Check`
//!   through meshd's full stack;
//! - Redis GET through mesh-core's connection pool (bb8 + redis-rs, as the store uses it),
//!   and `redis-benchmark GET` on the same Redis, at the same concurrency: the cost of the
//!   client library against the C client.
//!
//! At concurrency 1 and 64 (64 workers over 8 HTTP/2 connections), each call is run for a
//! fixed time after a warm-up; every worker has its own session (UpdateSession measures the
//! compare-and-set, its audit enqueue and its change publication, not version conflicts).
//! Reported: p50/p99/mean latency and calls/s per call, the ratios against the echo call and
//! against Redis GET, the CPU time per call (this process, and redis-server), and the
//! process's resident memory.
//!
//! Run: `cargo bench -p meshd --bench session` (about 45 s on 2 cores, build excluded);
//! `MESH_BENCH_QUICK=1 cargo bench -p meshd --bench session` for 1 s runs;
//! `MESH_BENCH_CONCURRENCY=1` to run one concurrency only and `MESH_BENCH_CALLS=get,update`
//! some calls only (echo always runs; names: check, pool-get, echo-redis, get-memory, get,
//! update), e.g.
//! under a profiler.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_core::auth::SigningKeyPair;
use mesh_core::backend::{RedisPool, redis_pool};
use mesh_core::config::{RedisSettings, Secret};
use mesh_proto::mesh::session::v1 as pb;
use mesh_testkit::bench::{self, Figures, LoadWorker, Measured, measure, rss_bytes};
use mesh_testkit::{RedisServer, TestApp};
use pb::session_service_client::SessionServiceClient;
use tokio::sync::Mutex;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const COMMAND: &str = "cargo bench -p meshd --bench session";
/// HTTP/2 connections the 64 workers share.
const CONNECTIONS: usize = 8;

struct Plan {
    warmup: Duration,
    run: Duration,
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("MESH_BENCH_QUICK").is_some();
    let plan = if quick {
        Plan { warmup: Duration::from_millis(300), run: Duration::from_secs(1) }
    } else {
        Plan { warmup: Duration::from_secs(1), run: Duration::from_secs(4) }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(plan))
}

/// The calls measured, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Echo,
    MeshdCheck,
    PoolGet,
    EchoRedis,
    GetSessionMemory,
    GetSession,
    UpdateSession,
}

impl Call {
    const ALL: [Call; 7] = [
        Call::Echo,
        Call::MeshdCheck,
        Call::PoolGet,
        Call::EchoRedis,
        Call::GetSessionMemory,
        Call::GetSession,
        Call::UpdateSession,
    ];

    /// The call's name in `MESH_BENCH_CALLS`.
    fn short(self) -> &'static str {
        match self {
            Call::Echo => "echo",
            Call::MeshdCheck => "check",
            Call::PoolGet => "pool-get",
            Call::EchoRedis => "echo-redis",
            Call::GetSessionMemory => "get-memory",
            Call::GetSession => "get",
            Call::UpdateSession => "update",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Call::Echo => "echo: bare tonic health Check",
            Call::MeshdCheck => "health Check through meshd",
            Call::PoolGet => "Redis GET via mesh's pool",
            Call::EchoRedis => "bare tonic Check + one Redis GET",
            Call::GetSessionMemory => "GetSession (auth + memory store)",
            Call::GetSession => "GetSession (auth + Redis)",
            Call::UpdateSession => "UpdateSession (auth + CAS)",
        }
    }
}

/// What one worker calls with.
struct Worker {
    echo: HealthClient<Channel>,
    echo_redis: HealthClient<Channel>,
    meshd_health: HealthClient<Channel>,
    redis: RedisPool,
    sessions: SessionServiceClient<Channel>,
    memory_sessions: SessionServiceClient<Channel>,
    memory_session_id: String,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    session_id: String,
    version: i64,
}

impl LoadWorker<Call> for Worker {
    fn call(&mut self, call: Call) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        self.run(call)
    }
}

impl Worker {
    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.bearer.clone());
        request
    }

    async fn run(&mut self, call: Call) -> anyhow::Result<()> {
        match call {
            Call::Echo => {
                self.echo.check(HealthCheckRequest { service: String::new() }).await?;
            }
            Call::EchoRedis => {
                self.echo_redis.check(HealthCheckRequest { service: String::new() }).await?;
            }
            Call::MeshdCheck => {
                self.meshd_health.check(HealthCheckRequest { service: String::new() }).await?;
            }
            Call::PoolGet => {
                let mut connection = self.redis.get().await?;
                let _: Option<String> = redis::cmd("GET").arg("bench:key").query_async(&mut *connection).await?;
            }
            Call::GetSessionMemory => {
                let request = self.authed(pb::GetSessionRequest { session_id: self.memory_session_id.clone() });
                self.memory_sessions.get_session(request).await?;
            }
            Call::GetSession => {
                let request = self.authed(pb::GetSessionRequest { session_id: self.session_id.clone() });
                self.sessions.get_session(request).await?;
            }
            Call::UpdateSession => {
                let request = self.authed(pb::UpdateSessionRequest {
                    session_id: self.session_id.clone(),
                    expected_version: self.version,
                    set_attributes: [("counter".to_owned(), self.version.to_string())].into(),
                    remove_attributes: Vec::new(),
                });
                let response = self.sessions.update_session(request).await?;
                self.version = response.into_inner().session.context("a session")?.version;
            }
        }
        Ok(())
    }
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let rss_start = rss_bytes()?;
    let redis = RedisServer::start().await?;
    let url = redis.url();
    let key = SigningKeyPair::generate();
    let memory_app = TestApp::start_trusting(key.clone(), |_| {}).await?;
    let app = TestApp::start_trusting(key, move |settings| {
        settings.redis.url = Some(Secret::new(url));
        settings.redis.pool_size = 64;
    })
    .await?;
    let echo_addr = start_bare_echo().await?;
    let echo_redis_pool = redis_pool(&redis.url(), &RedisSettings { pool_size: 64, ..RedisSettings::default() })?;
    let echo_redis_addr = start_bare_redis_check(echo_redis_pool).await?;

    let mut report = String::new();
    writeln!(report, "Session service benchmark ({COMMAND}); 2 tokio workers, load generator in-process")?;
    let only: Option<usize> = std::env::var("MESH_BENCH_CONCURRENCY").ok().and_then(|value| value.parse().ok());
    for concurrency in [1usize, 64].into_iter().filter(|c| only.is_none_or(|only| only == *c)) {
        let pool = redis_pool(&redis.url(), &RedisSettings { pool_size: 64, ..RedisSettings::default() })?;
        let workers = workers(&app, &memory_app, [&echo_addr, &echo_redis_addr], &pool, concurrency).await?;
        let mut figures = Vec::new();
        let calls = std::env::var("MESH_BENCH_CALLS").ok();
        for call in Call::ALL.into_iter().filter(|call| {
            *call == Call::Echo || calls.as_deref().is_none_or(|calls| calls.split(',').any(|c| c == call.short()))
        }) {
            eprintln!("bench: {} at concurrency {concurrency}", call.name());
            figures.push((call, measure(&workers, call, plan.warmup, plan.run, redis.pid()).await?));
        }
        let requests = if concurrency == 1 { 50_000 } else { 200_000 };
        let get = bench::redis_benchmark(redis.port(), requests, concurrency, &["GET", "bench:key"]).await;
        write_table(&mut report, concurrency, &figures, &get)?;
    }
    let mut connection = redis.connection().await?;
    let clients: String = redis::cmd("INFO").arg("stats").query_async(&mut connection).await?;
    if let Some(line) = clients.lines().find(|line| line.starts_with("total_connections_received:")) {
        writeln!(report, "\nRedis {line} (the pools' connections, redis-benchmark's and this one)")?;
    }
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await?;
    writeln!(report, "\nRedis-side time per command (INFO commandstats):")?;
    for line in stats.lines().filter(|line| line.starts_with("cmdstat_")) {
        writeln!(report, "  {line}")?;
    }
    let rss_end = rss_bytes()?;
    writeln!(
        report,
        "\nresident memory of the whole process (server, clients, histograms): {:.1} MiB at start, {:.1} MiB at the end",
        rss_start as f64 / 1048576.0,
        rss_end as f64 / 1048576.0
    )?;
    println!("{report}");
    app.shutdown().await?;
    memory_app.shutdown().await?;
    Ok(())
}

/// A bare tonic server with only grpc.health.v1 (the echo reference); its address.
async fn start_bare_echo() -> anyhow::Result<String> {
    let (_reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok(format!("http://{addr}"))
}

/// A bare tonic server whose grpc.health.v1 `Check` does one Redis GET through a mesh pool
/// (the design's "handler doing one Redis GET"); its address.
async fn start_bare_redis_check(pool: RedisPool) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            .add_service(HealthServer::new(RedisCheck { pool }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok(format!("http://{addr}"))
}

/// grpc.health.v1 whose `Check` reads one Redis key first.
struct RedisCheck {
    pool: RedisPool,
}

#[tonic::async_trait]
impl Health for RedisCheck {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let mut connection = self.pool.get().await.map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let _: Option<String> = redis::cmd("GET")
            .arg("bench:key")
            .query_async(&mut *connection)
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        Ok(tonic::Response::new(HealthCheckResponse { status: ServingStatus::Serving as i32 }))
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this benchmark"))
    }
}

/// `concurrency` workers, each with its own session and token, over at most
/// [`CONNECTIONS`] connections per server.
async fn workers(
    app: &TestApp,
    memory_app: &TestApp,
    [echo, echo_redis]: [&str; 2],
    redis: &RedisPool,
    concurrency: usize,
) -> anyhow::Result<Vec<Arc<Mutex<Worker>>>> {
    let connections = concurrency.min(CONNECTIONS);
    let mut echo_channels = Vec::new();
    let mut echo_redis_channels = Vec::new();
    let mut meshd_channels = Vec::new();
    let mut memory_channels = Vec::new();
    for _ in 0..connections {
        echo_channels.push(Endpoint::from_shared(echo.to_owned())?.tcp_nodelay(true).connect().await?);
        echo_redis_channels.push(Endpoint::from_shared(echo_redis.to_owned())?.tcp_nodelay(true).connect().await?);
        meshd_channels.push(Endpoint::from_shared(app.url())?.tcp_nodelay(true).connect().await?);
        memory_channels.push(Endpoint::from_shared(memory_app.url())?.tcp_nodelay(true).connect().await?);
    }
    let mut workers = Vec::new();
    for n in 0..concurrency {
        let token = app.token("bench", &format!("user{n}"));
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))?;
        let channel = meshd_channels[n % connections].clone();
        let mut sessions = SessionServiceClient::new(channel.clone());
        let session = create_session(&mut sessions, &bearer).await?;
        let mut memory_sessions = SessionServiceClient::new(memory_channels[n % connections].clone());
        let memory_session = create_session(&mut memory_sessions, &bearer).await?;
        workers.push(Arc::new(Mutex::new(Worker {
            echo: HealthClient::new(echo_channels[n % connections].clone()),
            echo_redis: HealthClient::new(echo_redis_channels[n % connections].clone()),
            meshd_health: HealthClient::new(channel),
            redis: redis.clone(),
            sessions,
            memory_sessions,
            memory_session_id: memory_session.session_id,
            bearer,
            session_id: session.session_id,
            version: session.version,
        })));
    }
    Ok(workers)
}

/// A new session of the caller `bearer` names.
async fn create_session(
    sessions: &mut SessionServiceClient<Channel>,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
) -> anyhow::Result<pb::Session> {
    let mut create = Request::new(pb::CreateSessionRequest::default());
    create.metadata_mut().insert("authorization", bearer.clone());
    sessions.create_session(create).await?.into_inner().session.context("a session")
}

fn write_table(
    out: &mut String,
    concurrency: usize,
    figures: &[(Call, Measured)],
    redis_get: &Result<Figures, String>,
) -> std::fmt::Result {
    let echo = figures.iter().find(|(call, _)| *call == Call::Echo).map(|(_, m)| m.figures).expect("echo measured");
    writeln!(out, "\nconcurrency {concurrency}")?;
    writeln!(
        out,
        "  {:<34} {:>9} {:>9} {:>9} {:>10} {:>12} {:>12} {:>9} {:>9}",
        "call", "p50 µs", "p99 µs", "mean µs", "calls/s", "p50 vs echo", "thr vs echo", "cpu µs", "redis µs"
    )?;
    let line = |out: &mut String, name: &str, f: &Figures, cpu: Option<f64>, redis_cpu: Option<f64>| {
        let show = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |value| format!("{value:.1}"));
        writeln!(
            out,
            "  {:<34} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>11.2}x {:>11.0}% {:>9} {:>9}",
            name,
            f.p50_us,
            f.p99_us,
            f.mean_us,
            f.per_second,
            f.p50_us / echo.p50_us,
            100.0 * f.per_second / echo.per_second,
            show(cpu),
            show(redis_cpu)
        )
    };
    for (call, measured) in figures {
        line(out, call.name(), &measured.figures, Some(measured.cpu_us), measured.redis_cpu_us)?;
    }
    match redis_get {
        Ok(get) => {
            line(out, "redis-benchmark GET (same Redis)", get, None, None)?;
            for call in [Call::GetSession, Call::UpdateSession] {
                let Some(f) = figures.iter().find(|(c, _)| *c == call).map(|(_, m)| m.figures) else {
                    continue;
                };
                writeln!(
                    out,
                    "  {} vs Redis GET: p50 +{:.1} µs ({:.1}x), throughput {:.0}%",
                    call.name(),
                    f.p50_us - get.p50_us,
                    f.p50_us / get.p50_us,
                    100.0 * f.per_second / get.per_second
                )?;
            }
        }
        Err(why) => writeln!(out, "  redis-benchmark GET: {why}")?,
    }
    writeln!(out, "  (cpu µs: CPU of this process per call, server and load generator; redis µs: redis-server's)")
}
