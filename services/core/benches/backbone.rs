//! Benchmark of the streaming backbone (issue 3; targets in design.md, "Performance targets").
//!
//! It measures and reports; it asserts nothing about timings (style rule 17). Everything runs
//! against a private `redis-server` started for the run on a free loopback port (never the
//! machine's Redis), on a tokio multi-thread runtime with 2 worker threads:
//!
//! 1. **Publish latency** at concurrency 1: sequential `RedisBroker::publish` calls (one Lua
//!    script each) with a 100-byte payload: p50/p99/mean and publications/s, side by side
//!    with `redis-benchmark -c 1 PUBLISH` against the same server in the same run.
//! 2. **Local fan-out**: 10,000 subscribers on one hub and one channel, each a tokio task
//!    reading its `Subscription` (queue 100, heartbeat 1 h), at rising publication rates
//!    paced by a tokio interval. Each payload carries its publish time, so every delivery
//!    records its publish-to-deliver latency (HdrHistogram, sharded). Per step: target and
//!    achieved deliveries/s, p50/p99/max and subscribers cut off (SLOW_CONSUMER; they
//!    resubscribe without recovery). The rates stop rising once p99 passes 100 ms or a
//!    subscriber is cut off. Three tables: the real path (RedisBroker + RedisFeed), the
//!    in-process memory broker (same hub, no Redis hop), and the reference, a naive
//!    `tokio::sync::broadcast` fan-out whose receivers each encode every message themselves.
//! 3. **Memory per idle subscriber**: RSS growth (`/proc/self/statm`) for 10,000 confirmed,
//!    idle subscriptions on a fresh Redis-backed hub. Measured first, before the fan-out
//!    phases have grown the heap.
//!
//! Run: `cargo bench -p mesh-core --bench backbone` (about 75 s on 2 cores, build
//! excluded); `MESH_BENCH_QUICK=1 cargo bench -p mesh-core --bench backbone` for a shorter
//! run (fewer samples, 1 s steps). Needs `redis-server`; `redis-benchmark` (Debian
//! `redis-tools`) is optional: without it only that reference line is skipped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use mesh_core::backend::redis_pool;
use mesh_core::broker::hub::Hub;
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::redis_feed::RedisFeed;
use mesh_core::broker::subscription::{ChannelRequest, StreamEvent, Subscription, SubscriptionSettings, subscribe};
use mesh_core::broker::{Broker, ChannelKey, ChannelName, HistorySettings, LiveFeed};
use mesh_core::config::RedisSettings;
use mesh_testkit::RedisServer;
use mesh_testkit::bench::{self, Figures as PublishFigures, rss_bytes};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;

const COMMAND: &str = "cargo bench -p mesh-core --bench backbone";
/// Payload size of every publication (the fan-out stamp takes its first 12 bytes).
const PAYLOAD_LEN: usize = 100;
/// Publications before the publish-latency sample (script load, pool warm-up).
const WARMUP_PUBLISHES: usize = 1_000;
/// Histogram shards of the fan-out: subscriber `i` records into shard `i % SHARDS`.
const SHARDS: usize = 32;
/// Rates stop rising once a step's p99 passes this.
const P99_LIMIT_MS: f64 = 100.0;
/// Longest wait for a step's last deliveries after its last publication.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A step's drain also ends once no delivery arrived for this long.
const DRAIN_STALL: Duration = Duration::from_millis(500);
/// Largest latency recorded (µs); larger ones saturate.
const MAX_LATENCY_US: u64 = 120_000_000;
const TENANT: &str = "t1";

/// The common time base of publishers and subscribers: payloads carry nanoseconds since it.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ns() -> u64 {
    BASE.elapsed().as_nanos() as u64
}

/// What this run does (`MESH_BENCH_QUICK=1` shortens it).
struct Plan {
    quick: bool,
    publishes: usize,
    subscribers: usize,
    step: Duration,
    rates: Vec<u64>,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("MESH_BENCH_QUICK").is_ok_and(|value| !value.is_empty() && value != "0");
        if quick {
            Self {
                quick,
                publishes: 5_000,
                subscribers: 10_000,
                step: Duration::from_secs(1),
                rates: vec![10, 50, 100, 200, 500],
            }
        } else {
            Self {
                quick,
                publishes: 20_000,
                subscribers: 10_000,
                step: Duration::from_secs(3),
                rates: vec![10, 20, 50, 100, 150, 200, 300, 500],
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    LazyLock::force(&BASE);
    let started = Instant::now();
    let plan = Plan::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    // The whole run is a spawned task, so publishers, the feed and subscribers all run on
    // the 2 workers (as in a server), not on the thread that blocks on the runtime.
    let report = runtime.block_on(runtime.spawn(run(plan))).context("the benchmark task panicked")??;
    drop(runtime);
    print!("{report}");
    println!("total time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn run(plan: Plan) -> anyhow::Result<String> {
    let plan = &plan;
    let redis = RedisServer::start().await.context("cannot start a private redis-server")?;
    let redis_version = redis_version(&redis).await.unwrap_or_else(|_| "?".to_owned());
    progress(format!("private redis-server {redis_version} on 127.0.0.1:{}", redis.port()));

    // Memory first: later phases grow the heap, and a grown heap hides new allocations.
    progress(format!("memory: opening {} idle subscriptions", plan.subscribers));
    let memory = idle_memory(&redis, plan.subscribers).await?;

    progress(format!("publish latency: {} sequential publishes", plan.publishes));
    let publish = publish_latency(&redis, plan.publishes).await?;
    let server_script_us = server_usec_per_call(&redis, "evalsha").await;
    reset_command_stats(&redis).await;
    let reference = redis_benchmark(redis.port(), plan.publishes).await;
    let server_publish_us = server_usec_per_call(&redis, "publish").await;

    let (hub, broker) = redis_hub(&redis)?;
    let over_redis = hub_fanout("redis", hub, broker, plan).await?;

    let broker = MemoryBroker::new(HistorySettings::default());
    let feed: Arc<dyn LiveFeed> = Arc::new(broker.bus().feed());
    let broker: Arc<dyn Broker> = Arc::new(broker);
    let hub = Hub::new(broker.clone(), feed, 1000);
    let in_memory = hub_fanout("memory", hub, broker, plan).await?;

    let naive = broadcast_fanout(plan).await?;

    Ok(render(
        plan,
        &Report {
            redis_version,
            redis_port: redis.port(),
            publish,
            reference,
            server_script_us,
            server_publish_us,
            over_redis,
            in_memory,
            naive,
            memory,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// 1. Publish latency

async fn publish_latency(redis: &RedisServer, publishes: usize) -> anyhow::Result<PublishFigures> {
    let broker = RedisBroker::new(
        redis_pool(&redis.url(), &RedisSettings::default()).context("cannot build the redis pool")?,
        HistorySettings::default(),
    );
    let key = channel("bench/publish")?;
    let payload = Bytes::from(vec![b'x'; PAYLOAD_LEN]);
    for _ in 0..WARMUP_PUBLISHES {
        broker.publish(&key, payload.clone()).await?;
    }
    reset_command_stats(redis).await;
    let mut latency_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let started = Instant::now();
    for _ in 0..publishes {
        let call = Instant::now();
        broker.publish(&key, payload.clone()).await?;
        latency_ns.saturating_record(call.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(PublishFigures {
        p50_us: latency_ns.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: latency_ns.value_at_quantile(0.99) as f64 / 1e3,
        mean_us: latency_ns.mean() / 1e3,
        per_second: publishes as f64 / elapsed,
    })
}

/// `redis-benchmark -c 1 --csv PUBLISH` against the same server; `Err` says why it is missing.
async fn redis_benchmark(port: u16, requests: usize) -> Result<PublishFigures, String> {
    let payload = "x".repeat(PAYLOAD_LEN);
    progress("reference: redis-benchmark PUBLISH".to_owned());
    bench::redis_benchmark(port, requests, 1, &["PUBLISH", "bench:ref", &payload]).await
}

// ---------------------------------------------------------------------------------------------
// 2. Fan-out

/// Publish time and step, in the first 12 bytes of every fan-out payload.
fn stamped_payload(step: usize, sent_ns: u64) -> Bytes {
    let mut payload = BytesMut::with_capacity(PAYLOAD_LEN);
    payload.put_u64_le(sent_ns);
    payload.put_u32_le(step as u32);
    payload.resize(PAYLOAD_LEN, b'x');
    payload.freeze()
}

fn read_stamp(payload: &[u8]) -> Option<(usize, u64)> {
    let sent_ns = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let step = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?) as usize;
    Some((step, sent_ns))
}

/// Per-step latency histograms (µs) and last delivery times of one histogram shard.
struct Shard {
    latency_us: Vec<Histogram<u64>>,
    last_ns: Vec<u64>,
}

/// Where every subscriber of a fan-out run records what it received.
struct Recorder {
    shards: Vec<Mutex<Shard>>,
    cut_offs: Vec<AtomicU64>,
    other_errors: AtomicU64,
    step: AtomicUsize,
}

impl Recorder {
    fn new(steps: usize) -> anyhow::Result<Arc<Self>> {
        let histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 2)?;
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { latency_us: vec![histogram.clone(); steps], last_ns: vec![0; steps] }))
            .collect();
        Ok(Arc::new(Self {
            shards,
            cut_offs: (0..steps).map(|_| AtomicU64::new(0)).collect(),
            other_errors: AtomicU64::new(0),
            step: AtomicUsize::new(0),
        }))
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index % SHARDS].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One delivery of `payload` (a stamped payload) to a subscriber of shard `shard`.
    fn record(&self, shard: usize, payload: &[u8]) {
        let Some((step, sent_ns)) = read_stamp(payload) else {
            self.other_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = now_ns();
        let mut shard = self.shard(shard);
        if step < shard.latency_us.len() {
            shard.latency_us[step].saturating_record(now.saturating_sub(sent_ns) / 1_000);
            shard.last_ns[step] = shard.last_ns[step].max(now);
        }
    }

    fn cut_off(&self) {
        let step = self.step.load(Ordering::Relaxed).min(self.cut_offs.len() - 1);
        self.cut_offs[step].fetch_add(1, Ordering::Relaxed);
    }

    fn other_error(&self) {
        self.other_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn delivered(&self, step: usize) -> u64 {
        (0..SHARDS).map(|index| self.shard(index).latency_us[step].len()).sum()
    }

    /// The step's merged histogram and its last delivery time.
    fn summary(&self, step: usize) -> anyhow::Result<(Histogram<u64>, u64)> {
        let mut merged = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 2)?;
        let mut last_ns = 0;
        for index in 0..SHARDS {
            let shard = self.shard(index);
            merged.add(&shard.latency_us[step])?;
            last_ns = last_ns.max(shard.last_ns[step]);
        }
        Ok((merged, last_ns))
    }
}

/// Figures of one fan-out step.
struct Step {
    rate: u64,
    target_per_s: u64,
    achieved_per_s: f64,
    delivered: u64,
    expected: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cut_offs: u64,
    cpu_percent: f64,
}

impl Step {
    fn healthy(&self) -> bool {
        self.p99_ms <= P99_LIMIT_MS && self.cut_offs == 0
    }
}

/// Figures of one fan-out run.
struct Fanout {
    open_secs: f64,
    steps: Vec<Step>,
    other_errors: u64,
}

/// Where a fan-out run publishes.
enum Publisher {
    Broker(Arc<dyn Broker>, ChannelKey),
    Broadcast(broadcast::Sender<(u64, Bytes)>, AtomicU64),
}

impl Publisher {
    async fn publish(&self, payload: Bytes) -> anyhow::Result<()> {
        match self {
            Self::Broker(broker, key) => {
                broker.publish(key, payload).await?;
            }
            Self::Broadcast(sender, offset) => {
                let offset = offset.fetch_add(1, Ordering::Relaxed) + 1;
                sender.send((offset, payload)).map_err(|_| anyhow!("every broadcast receiver is gone"))?;
            }
        }
        Ok(())
    }
}

fn subscription_settings() -> SubscriptionSettings {
    SubscriptionSettings { heartbeat_interval: Duration::from_secs(3600), ..SubscriptionSettings::default() }
}

/// Subscribes and reads the confirmation.
async fn open(hub: &Hub, request: &ChannelRequest, settings: &SubscriptionSettings) -> anyhow::Result<Subscription> {
    let mut subscription = subscribe(hub, vec![request.clone()], settings).await?;
    match subscription.next().await {
        Some(Ok(StreamEvent::Confirmed(_))) => Ok(subscription),
        Some(Err(error)) => Err(error.into()),
        other => Err(anyhow!("expected a confirmation first, got {other:?}")),
    }
}

/// [`open`], retried for a while (the Redis feed connects in the background).
async fn open_with_retry(
    hub: &Hub,
    request: &ChannelRequest,
    settings: &SubscriptionSettings,
) -> anyhow::Result<Subscription> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(hub, request, settings).await {
            Ok(subscription) => return Ok(subscription),
            Err(error) if Instant::now() > deadline => return Err(error.context("cannot subscribe")),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One subscriber: reads its stream and records every publication; when cut off it counts
/// that and resubscribes without recovery (what it missed is not delivered).
async fn hub_subscriber(
    hub: Hub,
    request: ChannelRequest,
    settings: SubscriptionSettings,
    mut subscription: Subscription,
    shard: usize,
    recorder: Arc<Recorder>,
) {
    loop {
        while let Some(event) = subscription.next().await {
            match event {
                Ok(StreamEvent::Publication(publication)) => recorder.record(shard, &publication.payload),
                Ok(_) => {}
                Err(error) => {
                    if error.reason() == "SLOW_CONSUMER" {
                        recorder.cut_off();
                    } else {
                        recorder.other_error();
                    }
                    break;
                }
            }
        }
        subscription = loop {
            match open(&hub, &request, &settings).await {
                Ok(subscription) => break subscription,
                Err(_) => {
                    recorder.other_error();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
    }
}

/// A Redis-backed hub with its own command pool and pub/sub connection, and its broker.
fn redis_hub(redis: &RedisServer) -> anyhow::Result<(Hub, Arc<dyn Broker>)> {
    let pool = redis_pool(&redis.url(), &RedisSettings::default()).context("cannot build the redis pool")?;
    let broker: Arc<dyn Broker> = Arc::new(RedisBroker::new(pool, HistorySettings::default()));
    let feed: Arc<dyn LiveFeed> = Arc::new(RedisFeed::start(redis.client()));
    Ok((Hub::new(broker.clone(), feed, 1000), broker))
}

async fn hub_fanout(label: &str, hub: Hub, broker: Arc<dyn Broker>, plan: &Plan) -> anyhow::Result<Fanout> {
    let key = channel("bench/fanout")?;
    let request = ChannelRequest { channel: key.clone(), since: None };
    let settings = subscription_settings();
    let recorder = Recorder::new(plan.rates.len())?;
    progress(format!("fan-out ({label}): opening {} subscriptions", plan.subscribers));
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(plan.subscribers);
    for index in 0..plan.subscribers {
        let subscription = open_with_retry(&hub, &request, &settings).await?;
        tasks.push(tokio::spawn(hub_subscriber(
            hub.clone(),
            request.clone(),
            settings,
            subscription,
            index,
            recorder.clone(),
        )));
    }
    let open_secs = opening.elapsed().as_secs_f64();
    let steps = run_steps(label, plan, &Publisher::Broker(broker, key), &recorder).await;
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(Fanout { open_secs, steps: steps?, other_errors: recorder.other_errors.load(Ordering::Relaxed) })
}

/// The naive reference: one `tokio::sync::broadcast` channel (capacity = the hub's queue) to
/// every stream task, and each stream encodes every message on its own (as a per-stream
/// protobuf encode would: header fields and a copy of the payload into a fresh buffer).
async fn broadcast_fanout(plan: &Plan) -> anyhow::Result<Fanout> {
    let recorder = Recorder::new(plan.rates.len())?;
    let (sender, _) = broadcast::channel::<(u64, Bytes)>(subscription_settings().queue_capacity);
    progress(format!("fan-out (naive broadcast): starting {} receivers", plan.subscribers));
    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(plan.subscribers);
    for index in 0..plan.subscribers {
        let mut receiver = sender.subscribe();
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok((offset, payload)) => {
                        let encoded = std::hint::black_box(encode_per_stream("t1/bench/fanout", offset, &payload));
                        recorder.record(index, &encoded[encoded.len() - payload.len()..]);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => recorder.cut_off(),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }));
    }
    let open_secs = opening.elapsed().as_secs_f64();
    let steps = run_steps("naive broadcast", plan, &Publisher::Broadcast(sender, AtomicU64::new(0)), &recorder).await;
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(Fanout { open_secs, steps: steps?, other_errors: recorder.other_errors.load(Ordering::Relaxed) })
}

/// Protobuf layout of `{ string channel = 1; uint64 offset = 2; bytes payload = 3; }`.
fn encode_per_stream(channel: &str, offset: u64, payload: &[u8]) -> Bytes {
    fn varint(buffer: &mut BytesMut, mut value: u64) {
        while value >= 0x80 {
            buffer.put_u8((value as u8) | 0x80);
            value >>= 7;
        }
        buffer.put_u8(value as u8);
    }
    let mut buffer = BytesMut::with_capacity(channel.len() + payload.len() + 24);
    buffer.put_u8(0x0a);
    varint(&mut buffer, channel.len() as u64);
    buffer.put_slice(channel.as_bytes());
    buffer.put_u8(0x10);
    varint(&mut buffer, offset);
    buffer.put_u8(0x1a);
    varint(&mut buffer, payload.len() as u64);
    buffer.put_slice(payload);
    buffer.freeze()
}

/// Publishes at each rate of the plan for one step, waits for the step's deliveries, and
/// stops after the first step whose p99 passes the limit or that cut a subscriber off.
async fn run_steps(label: &str, plan: &Plan, publisher: &Publisher, recorder: &Recorder) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (step, &rate) in plan.rates.iter().enumerate() {
        recorder.step.store(step, Ordering::Relaxed);
        let count = ((rate as f64 * plan.step.as_secs_f64()).round() as u64).max(1);
        let cpu_before = process_cpu_seconds();
        let wall = Instant::now();
        let started_ns = now_ns();
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        for _ in 0..count {
            ticker.tick().await;
            publisher.publish(stamped_payload(step, now_ns())).await?;
        }
        let expected = count * plan.subscribers as u64;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let (mut seen, mut changed) = (0, Instant::now());
        loop {
            let delivered = recorder.delivered(step);
            if delivered >= expected || Instant::now() > deadline {
                break;
            }
            if delivered != seen {
                (seen, changed) = (delivered, Instant::now());
            } else if changed.elapsed() > DRAIN_STALL {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu_percent = match (cpu_before, process_cpu_seconds()) {
            (Some(before), Some(after)) => 100.0 * (after - before) / wall.elapsed().as_secs_f64(),
            _ => f64::NAN,
        };
        let (latency_us, last_ns) = recorder.summary(step)?;
        let delivered = latency_us.len();
        let span = last_ns.saturating_sub(started_ns) as f64 / 1e9;
        let result = Step {
            rate,
            target_per_s: rate * plan.subscribers as u64,
            achieved_per_s: if span > 0.0 { delivered as f64 / span } else { 0.0 },
            delivered,
            expected,
            p50_ms: latency_us.value_at_quantile(0.50) as f64 / 1e3,
            p99_ms: latency_us.value_at_quantile(0.99) as f64 / 1e3,
            max_ms: latency_us.max() as f64 / 1e3,
            cut_offs: recorder.cut_offs[step].load(Ordering::Relaxed),
            cpu_percent,
        };
        progress(format!(
            "fan-out ({label}): {rate}/s -> {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, cut off {}",
            result.achieved_per_s, result.p50_ms, result.p99_ms, result.cut_offs
        ));
        let healthy = result.healthy();
        steps.push(result);
        if !healthy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(steps)
}

// ---------------------------------------------------------------------------------------------
// 3. Memory per idle subscriber

struct MemoryFigures {
    subscribers: usize,
    rss_before: u64,
    rss_after: u64,
}

impl MemoryFigures {
    fn kib_per_subscriber(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / 1024.0 / self.subscribers as f64
    }
}

async fn idle_memory(redis: &RedisServer, subscribers: usize) -> anyhow::Result<MemoryFigures> {
    let (hub, _broker) = redis_hub(redis)?;
    let request = ChannelRequest { channel: channel("bench/idle")?, since: None };
    let settings = subscription_settings();
    // The channel's entry and its one pub/sub subscription exist before the baseline.
    let first = open_with_retry(&hub, &request, &settings).await?;
    let mut idle = Vec::with_capacity(subscribers);
    let rss_before = rss_bytes()?;
    for _ in 0..subscribers {
        idle.push(open(&hub, &request, &settings).await?);
    }
    let rss_after = rss_bytes()?;
    drop(idle);
    drop(first);
    Ok(MemoryFigures { subscribers, rss_before, rss_after })
}

/// User + system CPU time of this process (`/proc/self/stat`, 100 ticks per second).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name `(...)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

// ---------------------------------------------------------------------------------------------
// Helpers and the report

fn channel(name: &str) -> anyhow::Result<ChannelKey> {
    let name = ChannelName::parse(name, "channel").map_err(|violation| anyhow!("{violation:?}"))?;
    ChannelKey::new(TENANT, name).map_err(|violation| anyhow!("{violation:?}"))
}

async fn redis_version(redis: &RedisServer) -> anyhow::Result<String> {
    let mut connection = redis.connection().await?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut connection).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(|version| version.trim().to_owned())
        .ok_or_else(|| anyhow!("no redis_version in INFO"))
}

/// Clears Redis's per-command statistics (best effort: they only annotate the report).
async fn reset_command_stats(redis: &RedisServer) {
    if let Ok(mut connection) = redis.connection().await {
        let _: redis::RedisResult<()> = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut connection).await;
    }
}

/// Average time inside redis-server per call of `command` since the last reset
/// (`cmdstat_<command>:calls=..,usec=..,usec_per_call=..` in `INFO commandstats`).
async fn server_usec_per_call(redis: &RedisServer, command: &str) -> Option<f64> {
    let mut connection = redis.connection().await.ok()?;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.ok()?;
    let prefix = format!("cmdstat_{command}:");
    let stats = info.lines().find_map(|line| line.strip_prefix(prefix.as_str()))?;
    stats.split(',').find_map(|field| field.strip_prefix("usec_per_call="))?.trim().parse().ok()
}

fn progress(line: String) {
    eprintln!("[{:>6.1} s] {line}", BASE.elapsed().as_secs_f64());
}

struct Report {
    redis_version: String,
    redis_port: u16,
    publish: PublishFigures,
    reference: Result<PublishFigures, String>,
    server_script_us: Option<f64>,
    server_publish_us: Option<f64>,
    over_redis: Fanout,
    in_memory: Fanout,
    naive: Fanout,
    memory: MemoryFigures,
}

fn render(plan: &Plan, report: &Report) -> String {
    let mut out = String::new();
    let rule = "=".repeat(96);
    let _ = writeln!(out, "\n{rule}");
    let _ = writeln!(out, "mesh backbone benchmark");
    let quick = if plan.quick { "MESH_BENCH_QUICK=1 " } else { "" };
    let _ = writeln!(out, "command: {quick}{COMMAND}");
    let _ = writeln!(
        out,
        "machine: {} cores; tokio multi-thread runtime, 2 workers; private redis-server {} on 127.0.0.1:{}",
        std::thread::available_parallelism().map_or(0, usize::from),
        report.redis_version,
        report.redis_port
    );
    let _ = writeln!(out, "{rule}");

    let publish = &report.publish;
    let _ = writeln!(out, "\n1. Publish latency, concurrency 1, {PAYLOAD_LEN}-byte payload, {} calls", plan.publishes);
    let _ = writeln!(out, "   {:<40} {:>9} {:>9} {:>9} {:>10}", "", "p50 µs", "p99 µs", "mean µs", "calls/s");
    let line = |out: &mut String, name: &str, f: &PublishFigures| {
        let _ = writeln!(
            out,
            "   {name:<40} {:>9.1} {:>9.1} {:>9.1} {:>10.0}",
            f.p50_us, f.p99_us, f.mean_us, f.per_second
        );
    };
    line(&mut out, "RedisBroker::publish (one Lua script)", publish);
    match &report.reference {
        Ok(reference) => {
            line(&mut out, "redis-benchmark -c 1 PUBLISH", reference);
            let _ = writeln!(
                out,
                "   {:<40} {:>8.2}x {:>8.2}x {:>8.2}x {:>9.2}x",
                "ratio ours / redis-benchmark",
                publish.p50_us / reference.p50_us,
                publish.p99_us / reference.p99_us,
                publish.mean_us / reference.mean_us,
                publish.per_second / reference.per_second
            );
        }
        Err(why) => {
            let _ = writeln!(out, "   redis-benchmark: {why}");
        }
    }
    let server = |usec: Option<f64>| usec.map_or_else(|| "?".to_owned(), |usec| format!("{usec:.2} µs"));
    let _ = writeln!(
        out,
        "   inside redis-server per call (INFO commandstats): publish script (EVALSHA) {}, bare PUBLISH {}",
        server(report.server_script_us),
        server(report.server_publish_us)
    );

    let _ = writeln!(
        out,
        "\n2. Fan-out: {} subscribers, one hub, one channel, queue {}, {}-byte payload, {} s per step",
        plan.subscribers,
        subscription_settings().queue_capacity,
        PAYLOAD_LEN,
        plan.step.as_secs_f64()
    );
    let _ = writeln!(out, "   (rates stop rising after a step with p99 > {P99_LIMIT_MS} ms or a cut-off subscriber)");
    let tables = [
        ("a) hub over Redis (RedisBroker + RedisFeed, the real path)", &report.over_redis),
        ("b) hub over the memory broker (in-process feed, no Redis hop)", &report.in_memory),
        ("c) reference: naive tokio::sync::broadcast, each stream encodes", &report.naive),
    ];
    for (title, fanout) in tables {
        let _ = writeln!(out, "\n   {title}; set up in {:.1} s", fanout.open_secs);
        let _ = writeln!(
            out,
            "   {:>6} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "pub/s", "target dl/s", "achieved", "p50 ms", "p99 ms", "max ms", "cut off", "lost", "cpu%"
        );
        for step in &fanout.steps {
            let _ = writeln!(
                out,
                "   {:>6} {:>12} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>9} {:>6.0}",
                step.rate,
                step.target_per_s,
                step.achieved_per_s,
                step.p50_ms,
                step.p99_ms,
                step.max_ms,
                step.cut_offs,
                step.expected.saturating_sub(step.delivered),
                step.cpu_percent
            );
        }
        if fanout.other_errors > 0 {
            let _ = writeln!(out, "   other errors (failed resubscribes, bad payloads): {}", fanout.other_errors);
        }
    }
    let _ = writeln!(out, "\n   p99 ratio, hub / naive broadcast, at the same rate:");
    let _ = writeln!(out, "   {:>6} {:>14} {:>14}", "pub/s", "redis hub", "memory hub");
    for naive in &report.naive.steps {
        let ratio = |fanout: &Fanout| {
            fanout
                .steps
                .iter()
                .find(|step| step.rate == naive.rate)
                .map_or_else(|| "-".to_owned(), |step| format!("{:.2}x", step.p99_ms / naive.p99_ms))
        };
        let _ =
            writeln!(out, "   {:>6} {:>14} {:>14}", naive.rate, ratio(&report.over_redis), ratio(&report.in_memory));
    }

    let memory = &report.memory;
    let _ = writeln!(
        out,
        "\n3. Memory per idle subscriber (Redis hub, confirmed, idle): RSS {:.1} MiB -> {:.1} MiB for {} \
         subscriptions = {:.2} KiB each (size_of::<Subscription>() = {} bytes)",
        memory.rss_before as f64 / 1048576.0,
        memory.rss_after as f64 / 1048576.0,
        memory.subscribers,
        memory.kib_per_subscriber(),
        std::mem::size_of::<Subscription>()
    );

    let _ = writeln!(out, "\nAgainst design.md (reported, not asserted):");
    let at_100k = report.over_redis.steps.iter().find(|step| step.target_per_s == 100_000);
    let _ = writeln!(
        out,
        "   p99 at 100,000 deliveries/s (redis hub): {} (target <= 20 ms)",
        at_100k.map_or_else(|| "not reached".to_owned(), |step| format!("{:.2} ms", step.p99_ms))
    );
    for (name, fanout) in [("redis hub", &report.over_redis), ("memory hub", &report.in_memory)] {
        let best =
            fanout.steps.iter().filter(|step| step.healthy()).map(|step| step.achieved_per_s).fold(0.0_f64, f64::max);
        let _ = writeln!(
            out,
            "   highest deliveries/s with p99 <= {P99_LIMIT_MS} ms and no cut-off ({name}): {best:.0} (target >= 1,000,000)"
        );
    }
    let _ = writeln!(out, "   memory per idle subscriber: {:.2} KiB (target <= 6 KiB)", memory.kib_per_subscriber());
    let _ = writeln!(out, "{rule}");
    out
}
