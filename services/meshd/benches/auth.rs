//! Benchmark of authentication: what the auth layer pays per request, and what Login and
//! Refresh cost through meshd.
//!
//! It measures and reports; it asserts nothing about timings. One process, a tokio runtime
//! with 2 worker threads, on a private `redis-server` started for the run.
//!
//! 1. Token checks of the auth layer, single calls timed with `Instant` on one thread
//!    (ns; the timer's own cost is reported alongside; a and b take turns in rounds):
//!    - a. `TokenVerifier::verify` on a token verified before (the remembered path every
//!      repeated call with one token takes);
//!    - b. the same plus `Revocations::check_local` on a live view (a `RedisRevocationStore`
//!      and a `Hub` on the private Redis, `watch` running, 1,000 other sessions of the
//!      caller's tenant revoked first): what every authenticated call pays;
//!    - c. `verify` plus `Revocations::check` on a view that never watches, so every check
//!      asks Redis: the fallback while the view is not live;
//!    - d. `verify` on a fresh token each time (signature and claims check, a token's first
//!      use), as a reference.
//! 2. Login and Refresh through meshd in-process on the same Redis (`TestApp::on_redis`,
//!    release build, the default Argon2id cost: what production pays), called through the
//!    generated client, at concurrency 1 and 16 (16 workers over 4 HTTP/2 connections),
//!    each for a fixed time after a warm-up. Every worker logs in with its own account;
//!    for Refresh every worker follows its own chain (each refresh presents the token its
//!    previous one returned). The same-run reference is grpc.health.v1 `Check` through the
//!    same meshd (no auth, no backend). Reported: p50/p99/mean latency, calls/s, the
//!    multiple of the Check, and CPU per call (this process; redis-server).
//!
//! The process's resident memory and the command are printed at the end.
//!
//! Run: `cargo bench -p meshd --bench auth` (about 40 s on 2 cores, build excluded);
//! `MESH_BENCH_QUICK=1 cargo bench -p meshd --bench auth` for 1 s runs and fewer
//! iterations; `MESH_BENCH_CONCURRENCY=16` to run part 2 at that one concurrency only.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use hdrhistogram::Histogram;
use mesh_core::auth::{
    AccessClaims, Caller, RedisRevocationStore, RevocationStore, Revocations, SigningKeyPair, TokenVerifier, random_id,
};
use mesh_core::backend::redis_pool;
use mesh_core::broker::HistorySettings;
use mesh_core::broker::hub::Hub;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::redis_feed::RedisFeed;
use mesh_core::broker::subscription::SubscriptionSettings;
use mesh_core::config::{AuthSettings, RedisSettings};
use mesh_core::transport::stream::timestamp;
use mesh_proto::mesh::auth::v1 as pb;
use mesh_testkit::bench::{LoadWorker, Measured, measure, rss_bytes};
use mesh_testkit::{RedisServer, TestApp};
use pb::auth_service_client::AuthServiceClient;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const COMMAND: &str = "cargo bench -p meshd --bench auth";
/// HTTP/2 connections the workers of part 2 share.
const CONNECTIONS: usize = 4;
/// Tenant of part 1's tokens and revocations.
const VERIFY_TENANT: &str = "bench-verify";
/// Tenant of part 2's accounts.
const LOGIN_TENANT: &str = "bench-login";
/// Rounds in which the in-memory paths (a, b) and the bare timer take turns.
const MEMORY_ROUNDS: usize = 10;
/// Other sessions of the caller's tenant revoked before part 1 (b).
const REVOKED_SESSIONS: usize = 1_000;
const PASSWORD: &str = "correct horse battery staple";
/// Longest the revocation view may take to become live (a guard, not a timing).
const LIVE_GUARD: Duration = Duration::from_secs(30);

struct Plan {
    quick: bool,
    warmup: Duration,
    run: Duration,
    /// Timed calls of the in-memory paths (a, b).
    memory_calls: usize,
    /// Timed calls of the store lookup (c) and of fresh tokens (d).
    slow_calls: usize,
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("MESH_BENCH_QUICK").is_some();
    let plan = if quick {
        Plan {
            quick,
            warmup: Duration::from_millis(300),
            run: Duration::from_secs(1),
            memory_calls: 20_000,
            slow_calls: 2_000,
        }
    } else {
        Plan {
            quick,
            warmup: Duration::from_secs(1),
            run: Duration::from_secs(4),
            memory_calls: 200_000,
            slow_calls: 20_000,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(plan))
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let rss_start = rss_bytes()?;
    let redis = RedisServer::start().await?;
    let mut report = String::new();
    writeln!(report, "Auth benchmark ({COMMAND}); 2 tokio workers, load generator in-process")?;

    eprintln!("bench: token checks");
    token_checks(&mut report, &redis, &plan).await?;
    writeln!(report, "  resident memory after part 1: {:.1} MiB", rss_bytes()? as f64 / 1048576.0)?;

    // The Argon2id cost stays the default: what production pays (the tests' hashes are cheap).
    let app = TestApp::on_redis(&redis, SigningKeyPair::generate(), |_| {}).await?;
    let hash = app.settings().auth.password_hash;
    writeln!(
        report,
        "\n2. Login and Refresh through meshd in-process on Redis (Argon2id m={} KiB, t={}, p={}: the defaults; \
         {} Redis connections in meshd's pool)",
        hash.memory_kib,
        hash.iterations,
        hash.parallelism,
        app.settings().redis.pool_size
    )?;
    let only: Option<usize> = std::env::var("MESH_BENCH_CONCURRENCY").ok().and_then(|value| value.parse().ok());
    let levels = only.map_or_else(|| vec![1, 16], |only| vec![only.max(1)]);
    for concurrency in levels {
        eprintln!("bench: preparing {concurrency} accounts");
        let workers = workers(&app, concurrency).await?;
        let mut figures = Vec::new();
        for call in Call::ALL {
            eprintln!("bench: {} at concurrency {concurrency}", call.name());
            figures.push((call, measure(&workers, call, plan.warmup, plan.run, redis.pid()).await?));
        }
        write_calls(&mut report, concurrency, &figures)?;
        writeln!(report, "  resident memory after this concurrency: {:.1} MiB", rss_bytes()? as f64 / 1048576.0)?;
    }

    let rss_end = rss_bytes()?;
    writeln!(
        report,
        "\nresident memory of the whole process (meshd, clients, histograms): {:.1} MiB at start, {:.1} MiB at the end",
        rss_start as f64 / 1048576.0,
        rss_end as f64 / 1048576.0
    )?;
    let mut command = String::new();
    for name in ["MESH_BENCH_QUICK", "MESH_BENCH_CONCURRENCY"] {
        if let Ok(value) = std::env::var(name) {
            write!(command, "{name}={value} ")?;
        }
    }
    writeln!(report, "command: {command}{COMMAND}{}", if plan.quick { " (quick run)" } else { "" })?;
    println!("{report}");
    app.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 1: the auth layer's token checks.

/// Latency figures in ns of one timed path.
struct Nanos {
    p50: f64,
    p99: f64,
    mean: f64,
    calls: u64,
}

impl Nanos {
    fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: histogram.value_at_quantile(0.5) as f64,
            p99: histogram.value_at_quantile(0.99) as f64,
            mean: histogram.mean(),
            calls: histogram.len(),
        }
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// `warmup` untimed calls of `call`, then `calls` calls each timed alone.
fn time_calls(
    warmup: usize,
    calls: usize,
    mut call: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Histogram<u64>> {
    for n in 0..warmup {
        call(n)?;
    }
    let mut histogram = histogram()?;
    for n in warmup..warmup + calls {
        let started = Instant::now();
        let outcome = call(n);
        let elapsed = started.elapsed();
        outcome?;
        histogram.record(elapsed.as_nanos().max(1) as u64)?;
    }
    Ok(histogram)
}

/// A revocation view over `server` as meshd builds one (and as services/core/tests/revocations.rs does).
fn revocation_view(server: &RedisServer) -> anyhow::Result<Arc<Revocations>> {
    let pool = redis_pool(&server.url(), &RedisSettings::default())?;
    let broker = Arc::new(RedisBroker::new(pool.clone(), HistorySettings::default()));
    let hub = Hub::new(broker, Arc::new(RedisFeed::start(server.client())), 1000);
    let store: Arc<dyn RevocationStore> = Arc::new(RedisRevocationStore::new(pool));
    Ok(Revocations::new(store, hub))
}

/// A revocation of `session` of [`VERIFY_TENANT`], in force for 16 minutes.
fn revocation(session: &str) -> pb::Revocation {
    let now = SystemTime::now();
    pb::Revocation {
        tenant_id: VERIFY_TENANT.into(),
        session_ids: vec![session.into()],
        user_id: "someone".into(),
        reason: pb::RevocationReason::Logout.into(),
        revoke_time: Some(timestamp(now)),
        expire_time: Some(timestamp(now + Duration::from_secs(960))),
        ..Default::default()
    }
}

/// An access token of `key` for a user of [`VERIFY_TENANT`] in a fresh session (random
/// ids of the lengths the Auth service issues; a user id must start alphanumeric).
fn token(key: &SigningKeyPair) -> anyhow::Result<String> {
    let user = format!("u{}", random_id().replace(['-', '_'], "0"));
    let claims = AccessClaims::new("mesh", "mesh", VERIFY_TENANT, &user, &random_id(), Duration::from_secs(900));
    Ok(key.sign(&claims)?)
}

async fn token_checks(report: &mut String, redis: &RedisServer, plan: &Plan) -> anyhow::Result<()> {
    let key = SigningKeyPair::generate();
    // The verifier meshd builds from the default `[auth]` settings with its signing key.
    let verifier = TokenVerifier::from_settings(&AuthSettings::default(), Some(&key))?;
    let remembered = token(&key)?;
    let caller = verifier.verify(&remembered)?;

    eprintln!("bench: revoking {REVOKED_SESSIONS} other sessions, waiting for the view to be live");
    let live = revocation_view(redis)?;
    for _ in 0..REVOKED_SESSIONS {
        live.revoke(&revocation(&random_id())).await?;
    }
    let stop = CancellationToken::new();
    tokio::spawn(live.clone().watch(SubscriptionSettings::default(), stop.clone()));
    let deadline = Instant::now() + LIVE_GUARD;
    while !live.is_live() {
        ensure!(Instant::now() < deadline, "the revocation view did not become live within {LIVE_GUARD:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let probe = revocation(&random_id());
    live.revoke(&probe).await?;
    let revoked_caller = Caller { session: Some(probe.session_ids[0].clone()), ..caller.clone() };
    ensure!(live.check_local(&revoked_caller) == Some(true), "the view knows a revoked session");
    let never_live = revocation_view(redis)?;

    eprintln!("bench: a. verify, remembered token; b. a + check_local on the live view (interleaved)");
    let mut nothing = |_| Ok(());
    let mut remembered_only = |_| {
        black_box(verifier.verify(black_box(&remembered))?);
        Ok(())
    };
    let mut with_check = |_| {
        let caller = verifier.verify(black_box(&remembered))?;
        match live.check_local(&caller) {
            Some(false) => Ok(()),
            other => bail!("the live view answered {other:?} for a token that is not revoked"),
        }
    };
    // The paths take turns in rounds, in reverse order every other round, so drift (clock
    // frequency, other processes on the machine) falls on all of them alike.
    let (mut timer, mut a, mut b) = (histogram()?, histogram()?, histogram()?);
    let per_round = plan.memory_calls / MEMORY_ROUNDS;
    for round in 0..MEMORY_ROUNDS {
        let order = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for path in order {
            let warmup = per_round / 10;
            match path {
                0 => timer.add(time_calls(warmup, per_round, &mut nothing)?)?,
                1 => a.add(time_calls(warmup, per_round, &mut remembered_only)?)?,
                _ => b.add(time_calls(warmup, per_round, &mut with_check)?)?,
            }
        }
    }

    eprintln!("bench: c. verify + check, view not live (Redis)");
    ensure!(never_live.check_local(&caller).is_none(), "a view that never watched is not live");
    let mut c = histogram()?;
    let slow_warmup = plan.slow_calls / 10;
    for n in 0..slow_warmup + plan.slow_calls {
        let started = Instant::now();
        let caller = verifier.verify(black_box(&remembered))?;
        never_live.check(&caller).await?;
        let elapsed = started.elapsed();
        if n >= slow_warmup {
            c.record(elapsed.as_nanos().max(1) as u64)?;
        }
    }

    eprintln!("bench: d. verify, fresh tokens (signing {} first)", slow_warmup + plan.slow_calls);
    let fresh = (0..slow_warmup + plan.slow_calls).map(|_| token(&key)).collect::<anyhow::Result<Vec<_>>>()?;
    let token_len = fresh[0].len();
    let d = time_calls(slow_warmup, plan.slow_calls, |n| {
        black_box(verifier.verify(black_box(&fresh[n]))?);
        Ok(())
    })?;
    stop.cancel();

    let (timer, a, b, c, d) = (Nanos::of(&timer), Nanos::of(&a), Nanos::of(&b), Nanos::of(&c), Nanos::of(&d));
    writeln!(
        report,
        "\n1. Token checks of the auth layer, ns per call (one thread; each call timed alone with Instant, \
         timer included; tokens of {token_len} bytes)"
    )?;
    writeln!(report, "  {:<62} {:>10} {:>10} {:>10} {:>9}", "path", "p50 ns", "p99 ns", "mean ns", "calls")?;
    let rows = [
        ("a. verify, remembered token".to_owned(), &a),
        (format!("b. a + check_local, live view ({REVOKED_SESSIONS} sessions revoked)"), &b),
        ("c. verify + check, view not live (store lookup on Redis)".to_owned(), &c),
        ("d. verify, fresh token (signature check)".to_owned(), &d),
        ("timer alone (Instant::now, elapsed)".to_owned(), &timer),
    ];
    for (name, f) in rows {
        writeln!(report, "  {:<62} {:>10.0} {:>10.0} {:>10.0} {:>9}", name, f.p50, f.p99, f.mean, f.calls)?;
    }
    writeln!(
        report,
        "  b vs a (the revocation check's added cost): p50 {:.2}x (+{:.0} ns), mean {:.2}x (+{:.0} ns)",
        b.p50 / a.p50,
        b.p50 - a.p50,
        b.mean / a.mean,
        b.mean - a.mean
    )?;
    writeln!(
        report,
        "  c vs b (the store fallback against memory): p50 {:.0}x (+{:.1} µs); d vs a (signature check against \
         remembered): p50 {:.0}x (+{:.1} µs)",
        c.p50 / b.p50,
        (c.p50 - b.p50) / 1e3,
        d.p50 / a.p50,
        (d.p50 - a.p50) / 1e3
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 2: Login and Refresh through meshd.

/// The calls measured, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Check,
    Login,
    Refresh,
}

impl Call {
    const ALL: [Call; 3] = [Call::Check, Call::Login, Call::Refresh];

    fn name(self) -> &'static str {
        match self {
            Call::Check => "health Check through meshd",
            Call::Login => "Login (Argon2id, session, refresh)",
            Call::Refresh => "Refresh (rotation, touch)",
        }
    }
}

/// What one worker calls with: its own account and refresh chain.
struct Worker {
    auth: AuthServiceClient<Channel>,
    health: HealthClient<Channel>,
    email: String,
    refresh: String,
}

impl LoadWorker<Call> for Worker {
    fn call(&mut self, call: Call) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        self.run(call)
    }
}

impl Worker {
    async fn run(&mut self, call: Call) -> anyhow::Result<()> {
        match call {
            Call::Check => {
                self.health.check(HealthCheckRequest { service: String::new() }).await?;
            }
            Call::Login => {
                let response = self.auth.login(login(&self.email)).await?.into_inner();
                ensure!(response.credentials.is_some(), "Login answered without credentials");
            }
            Call::Refresh => {
                let request = pb::RefreshRequest { refresh_token: self.refresh.clone() };
                let credentials = self.auth.refresh(request).await?.into_inner().credentials.context("credentials")?;
                self.refresh = credentials.refresh_token;
            }
        }
        Ok(())
    }
}

fn login(email: &str) -> pb::LoginRequest {
    pb::LoginRequest { tenant_id: LOGIN_TENANT.into(), email: email.into(), password: PASSWORD.into() }
}

/// `concurrency` workers over at most [`CONNECTIONS`] connections, each with a registered
/// account and a logged-in refresh chain.
async fn workers(app: &TestApp, concurrency: usize) -> anyhow::Result<Vec<Arc<Mutex<Worker>>>> {
    let connections = concurrency.min(CONNECTIONS);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(Endpoint::from_shared(app.url())?.tcp_nodelay(true).connect().await?);
    }
    let mut workers = Vec::new();
    for n in 0..concurrency {
        let channel = channels[n % connections].clone();
        let mut auth = AuthServiceClient::new(channel.clone());
        let email = format!("bench-{}@example.com", random_id().to_lowercase().replace(['-', '_'], ""));
        let register = pb::RegisterRequest {
            tenant_id: LOGIN_TENANT.into(),
            email: email.clone(),
            password: PASSWORD.into(),
            request_id: String::new(),
        };
        auth.register(register).await?;
        let credentials = auth.login(login(&email)).await?.into_inner().credentials.context("credentials")?;
        workers.push(Arc::new(Mutex::new(Worker {
            auth,
            health: HealthClient::new(channel),
            email,
            refresh: credentials.refresh_token,
        })));
    }
    Ok(workers)
}

fn write_calls(out: &mut String, concurrency: usize, figures: &[(Call, Measured)]) -> std::fmt::Result {
    let check = figures.iter().find(|(call, _)| *call == Call::Check).map(|(_, m)| m.figures).expect("Check measured");
    let connections = concurrency.min(CONNECTIONS);
    writeln!(
        out,
        "\nconcurrency {concurrency} ({connections} HTTP/2 connection{})",
        if connections == 1 { "" } else { "s" }
    )?;
    writeln!(
        out,
        "  {:<36} {:>10} {:>10} {:>10} {:>9} {:>12} {:>13} {:>12} {:>9} {:>9}",
        "call",
        "p50 µs",
        "p99 µs",
        "mean µs",
        "calls/s",
        "p50 vs Check",
        "mean vs Check",
        "thr vs Check",
        "cpu µs",
        "redis µs"
    )?;
    for (call, measured) in figures {
        let f = &measured.figures;
        let redis = measured.redis_cpu_us.map_or_else(|| "-".to_owned(), |value| format!("{value:.1}"));
        writeln!(
            out,
            "  {:<36} {:>10.1} {:>10.1} {:>10.1} {:>9.0} {:>11.1}x {:>12.1}x {:>11.2}% {:>9.1} {:>9}",
            call.name(),
            f.p50_us,
            f.p99_us,
            f.mean_us,
            f.per_second,
            f.p50_us / check.p50_us,
            f.mean_us / check.mean_us,
            100.0 * f.per_second / check.per_second,
            measured.cpu_us,
            redis
        )?;
    }
    writeln!(out, "  (cpu µs: CPU of this process per call, meshd and load generator; redis µs: redis-server's)")
}
