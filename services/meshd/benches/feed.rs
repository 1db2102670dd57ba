//! Benchmark of Feed fan-out: many concurrent Subscribe streams on one meshd process.
//!
//! It measures and reports; it asserts nothing about timings. The load generator (this
//! process, a tokio runtime with 2 worker threads) and meshd (the release binary cargo built
//! for this bench, a separate process) share the machine, on a private `redis-server`:
//!
//! 1. Reference: ONE subscriber on the tenant's `global` feed, publications at a low rate:
//!    the floor of publish-to-deliver (one gRPC hop in, Redis, one gRPC hop out).
//! 2. N = 10,000 Subscribe streams on `global` (1,000 with `MESH_BENCH_QUICK=1`), 100 per
//!    HTTP/2 connection, each with its own token; the bench waits until every stream got its
//!    confirmation. meshd's resident memory (VmRSS) before and after, idle: KiB per stream.
//! 3. Publications at increasing rates (5, 10, 20, 50, 100, 200 /s; each step 3 s, 1 s in
//!    quick mode) from a few publisher tasks via PublishActivity; each publication's text is
//!    its send time (ns since a shared `Instant`). Every stream task decodes what it receives
//!    and records receive time - send time in its own histogram (µs, 2 significant digits),
//!    merged per step. Reported per step: target and achieved publications/s, deliveries/s,
//!    p50/p99/max, lost deliveries (N × published - received; a stream ended, e.g. with
//!    SLOW_CONSUMER, loses everything after), streams ended, and CPU of meshd and of this
//!    process. The ramp stops after the first step whose p99 exceeds 20 ms.
//! 4. Two instances: a second meshd on the same Redis, 100 subscribers on it, publications
//!    on the first at 20/s: publish-to-deliver across instances.
//!
//! Run: `cargo bench -p meshd --bench feed` (about 1 minute on 2 cores, build excluded);
//! `MESH_BENCH_QUICK=1 cargo bench -p meshd --bench feed` for 1,000 streams and 1 s steps.

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use mesh_core::auth::{AccessClaims, SigningKeyPair, random_id};
use mesh_proto::mesh::feed::v1 as pb;
use mesh_proto::mesh::stream::v1::ChannelPosition;
use mesh_testkit::RedisServer;
use mesh_testkit::bench::{cpu_time, rss_bytes};
use mesh_testkit::status::reason;
use pb::feed_service_client::FeedServiceClient;
use pb::subscribe_response::Event;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Streaming};

const COMMAND: &str = "cargo bench -p meshd --bench feed";
const TENANT: &str = "bench";
/// Subscribe streams per HTTP/2 connection.
const STREAMS_PER_CONNECTION: usize = 100;
/// Publisher tasks (each its own user and connection).
const PUBLISHERS: usize = 4;
/// The ramp stops after the first step whose p99 exceeds this.
const P99_LIMIT: Duration = Duration::from_millis(20);
/// Subscribe calls in flight while the streams open.
const OPENING_CONCURRENCY: usize = 200;
/// Longest the bench waits for one thing (a guard, not a timing).
const GUARD: Duration = Duration::from_secs(60);
/// Subscribers on the second instance.
const CROSS_SUBSCRIBERS: usize = 100;

struct Plan {
    streams: usize,
    step: Duration,
    rates: &'static [u32],
    reference_rate: u32,
    cross_rate: u32,
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("MESH_BENCH_QUICK").is_some();
    let plan = if quick {
        Plan {
            streams: 1_000,
            step: Duration::from_secs(1),
            rates: &[5, 10, 20, 50, 100, 200],
            reference_rate: 20,
            cross_rate: 20,
        }
    } else {
        Plan {
            streams: 10_000,
            step: Duration::from_secs(3),
            rates: &[5, 10, 20, 50, 100, 200],
            reference_rate: 20,
            cross_rate: 20,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(plan))
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let base = Instant::now();
    let redis = RedisServer::start().await?;
    let key = SigningKeyPair::generate();
    let a = Meshd::spawn(&redis.url(), &key).await?;
    let publishers = Publishers::connect(&a.addr, &key).await?;

    let mut report = String::new();
    writeln!(report, "Feed fan-out benchmark ({COMMAND})")?;
    writeln!(
        report,
        "meshd: release binary, separate process (pid {}), on a private redis-server; load generator: this process, 2 tokio workers; {} CPUs",
        a.pid,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;

    // 1. The floor: one subscriber, a low rate.
    eprintln!("bench: reference, one subscriber at {}/s", plan.reference_rate);
    let one = Subscribers::open(&a.addr, &key, 1, base, "reference").await?;
    let reference = step(&one, &publishers, plan.reference_rate, plan.step.max(Duration::from_secs(2)), a.pid).await?;
    one.close().await;
    writeln!(report, "\nreference: 1 subscriber, {}/s", plan.reference_rate)?;
    write_header(&mut report)?;
    write_step(&mut report, &reference, None)?;

    // 2. N idle streams: meshd's memory per stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = a.rss()?;
    eprintln!("bench: opening {} streams over {} connections", plan.streams, plan.streams / STREAMS_PER_CONNECTION);
    let opening = Instant::now();
    let subscribers = Subscribers::open(&a.addr, &key, plan.streams, base, "reader").await?;
    let opened_in = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = a.rss()?;
    writeln!(
        report,
        "\n{} Subscribe streams on `global` over {} HTTP/2 connections: all confirmed in {:.2} s",
        plan.streams,
        subscribers.connections,
        opened_in.as_secs_f64()
    )?;
    writeln!(
        report,
        "meshd resident memory: {:.1} MiB before, {:.1} MiB with the streams idle: {:.1} KiB per idle stream",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        (rss_after as f64 - rss_before as f64) / 1024.0 / plan.streams as f64
    )?;

    // 3. The ramp.
    writeln!(report, "\npublish-to-deliver to {} subscribers (ramp stops after the first p99 > 20 ms)", plan.streams)?;
    write_header(&mut report)?;
    for &rate in plan.rates {
        eprintln!("bench: {rate} publications/s to {} streams", plan.streams);
        let measured = step(&subscribers, &publishers, rate, plan.step, a.pid).await?;
        write_step(&mut report, &measured, Some(&reference))?;
        eprint!("{}", report.lines().last().map(|line| format!("{line}\n")).unwrap_or_default());
        if measured.p99_us > P99_LIMIT.as_micros() as f64 || measured.deliveries == 0 {
            break;
        }
    }
    writeln!(
        report,
        "  (ratio: p50 and p99 as multiples of the 1-subscriber reference; cpu: CPU time over the step, % of one core)"
    )?;
    subscribers.close().await;
    writeln!(report, "meshd resident memory after the ramp, streams closed: {:.1} MiB", a.rss()? as f64 / 1048576.0)?;

    // 4. Across instances.
    eprintln!("bench: second instance, {CROSS_SUBSCRIBERS} subscribers on it");
    let b = Meshd::spawn(&redis.url(), &key).await?;
    let remote = Subscribers::open(&b.addr, &key, CROSS_SUBSCRIBERS, base, "remote").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cross = step(&remote, &publishers, plan.cross_rate, plan.step.max(Duration::from_secs(2)), b.pid).await?;
    remote.close().await;
    writeln!(
        report,
        "\nacross instances: publish on meshd A, {CROSS_SUBSCRIBERS} subscribers on meshd B (same Redis), {}/s (cpu: meshd B)",
        plan.cross_rate
    )?;
    write_header(&mut report)?;
    write_step(&mut report, &cross, Some(&reference))?;

    writeln!(report, "\nload generator resident memory at the end: {:.1} MiB", rss_bytes()? as f64 / 1048576.0)?;
    println!("{report}");
    b.stop().await;
    a.stop().await;
    Ok(())
}

/// A meshd child process on the private Redis.
struct Meshd {
    child: Child,
    addr: String,
    pid: u32,
    stderr: JoinHandle<String>,
    _data_dir: tempfile::TempDir,
}

impl Meshd {
    async fn spawn(redis_url: &str, key: &SigningKeyPair) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new().prefix("mesh-bench-feed-").tempdir()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_meshd"));
        for (name, _) in std::env::vars() {
            if name.starts_with("MESH__") {
                command.env_remove(name);
            }
        }
        command
            .env("MESH__REDIS__URL", redis_url)
            .env("MESH__AUTH__SIGNING_KEY__KID", key.kid())
            .env("MESH__AUTH__SIGNING_KEY__PRIVATE_KEY_PEM", key.private_key_pem())
            .env("MESH__FEED__PUBLISH_RATE", "1000000")
            .env("MESH__FEED__PUBLISH_BURST", "1000000")
            .env("MESH__FEED__MAX_STREAMS_PER_CALLER", "10000")
            .env("MESH__SERVER__MAX_CONCURRENT_STREAMS", "1000")
            .env("MESH__STREAM__QUEUE_CAPACITY", "1000")
            .env("MESH__LOG__FILTER", "warn")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("cannot start meshd")?;
        let pid = child.id().context("meshd has a pid")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let stderr = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut tail = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                tail.push(line);
                if tail.len() > 50 {
                    tail.remove(0);
                }
            }
            tail.join("\n")
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = match tokio::time::timeout(GUARD, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.start_kill();
                let log = stderr.await.unwrap_or_default();
                bail!("meshd printed no banner ({other:?}); its log:\n{log}");
            }
        };
        let addr = first.strip_prefix("meshd listening on ").with_context(|| format!("unexpected banner {first:?}"))?;
        let addr = if addr.starts_with("http") { addr.to_owned() } else { format!("http://{addr}") };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr, pid, stderr, _data_dir: data_dir })
    }

    /// VmRSS of the process, bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let log = self.stderr.await.unwrap_or_default();
        if log.contains("ERROR") || log.contains("panicked") {
            eprintln!("meshd (pid {}) log tail:\n{log}", self.pid);
        }
    }
}

fn bearer(key: &SigningKeyPair, user: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    let claims = AccessClaims::new("mesh", "mesh", TENANT, user, &random_id(), Duration::from_secs(50 * 60));
    Ok(MetadataValue::try_from(format!("Bearer {}", key.sign(&claims)?))?)
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(addr.to_owned())?.tcp_nodelay(true).connect().await?)
}

/// Counters every stream task of a group shares.
struct Shared {
    base: Instant,
    received: AtomicU64,
    ended: AtomicU64,
    slow_consumers: AtomicU64,
}

/// One histogram per stream task: publish-to-deliver in µs.
type Slot = Arc<Mutex<Histogram<u32>>>;

/// A group of Subscribe streams on `global`, each read by its own task.
struct Subscribers {
    streams: usize,
    connections: usize,
    slots: Vec<Slot>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Subscribers {
    /// Opens `streams` streams, [`STREAMS_PER_CONNECTION`] per connection, and returns once
    /// every one got its confirmation.
    async fn open(addr: &str, key: &SigningKeyPair, streams: usize, base: Instant, user: &str) -> anyhow::Result<Self> {
        let connections = streams.div_ceil(STREAMS_PER_CONNECTION);
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(connect(addr).await?);
        }
        let shared = Arc::new(Shared {
            base,
            received: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
        });
        let gate = Arc::new(Semaphore::new(OPENING_CONCURRENCY));
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut slots = Vec::with_capacity(streams);
        let mut tasks = Vec::with_capacity(streams);
        for index in 0..streams {
            let slot: Slot = Arc::new(Mutex::new(Histogram::new(2)?));
            slots.push(slot.clone());
            let client = FeedServiceClient::new(channels[index / STREAMS_PER_CONNECTION].clone());
            let bearer = bearer(key, &format!("{user}-{index}"))?;
            let (gate, ready, shared) = (gate.clone(), ready_tx.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let stream = match tokio::time::timeout(GUARD, subscribe(client, bearer)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        let _ = ready.send(Err(format!("{error:#}")));
                        return;
                    }
                    Err(_) => {
                        let _ = ready.send(Err("no confirmation within the guard".to_owned()));
                        return;
                    }
                };
                drop(permit);
                let _ = ready.send(Ok(()));
                drop(ready);
                read(stream, slot, shared).await;
            }));
        }
        drop(ready_tx);
        for _ in 0..streams {
            match ready_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(why)) => bail!("a Subscribe stream did not open: {why}"),
                None => bail!("the stream tasks ended before all were confirmed"),
            }
        }
        Ok(Self { streams, connections, slots, tasks, shared })
    }

    /// The merged histograms since the last call (each task's is reset).
    fn collect(&self) -> anyhow::Result<Histogram<u32>> {
        let mut all = Histogram::<u32>::new(2)?;
        for slot in &self.slots {
            let mut histogram = slot.lock().expect("no task panics holding its histogram");
            all.add(&*histogram)?;
            histogram.reset();
        }
        Ok(all)
    }

    async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Subscribe to `global`, waiting for the confirmation.
async fn subscribe(
    mut client: FeedServiceClient<Channel>,
    bearer: MetadataValue<Ascii>,
) -> anyhow::Result<Streaming<pb::SubscribeResponse>> {
    let mut request = Request::new(pb::SubscribeRequest {
        channels: vec![ChannelPosition { channel: "global".into(), position: None }],
    });
    request.metadata_mut().insert("authorization", bearer);
    let mut stream = client.subscribe(request).await?.into_inner();
    loop {
        match stream.message().await?.and_then(|message| message.event) {
            Some(Event::Confirmed(_)) => return Ok(stream),
            Some(Event::Heartbeat(_)) => continue,
            other => bail!("expected the confirmation, got {other:?}"),
        }
    }
}

/// Reads `stream` until it ends, recording each activity's publish-to-deliver time.
async fn read(mut stream: Streaming<pb::SubscribeResponse>, slot: Slot, shared: Arc<Shared>) {
    loop {
        match stream.message().await {
            Ok(Some(pb::SubscribeResponse { event: Some(Event::Activity(event)) })) => {
                let now = shared.base.elapsed().as_nanos() as u64;
                let Some(sent) = event.activity.and_then(|activity| activity.text.parse::<u64>().ok()) else {
                    continue;
                };
                let micros = (now.saturating_sub(sent) / 1_000).max(1);
                let _ = slot.lock().expect("no task panics holding its histogram").record(micros);
                shared.received.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                shared.ended.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(status) => {
                if reason(&status).as_deref() == Some("SLOW_CONSUMER") {
                    shared.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
                shared.ended.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// The publisher users, each with its own connection to meshd A.
struct Publishers {
    clients: Vec<(FeedServiceClient<Channel>, MetadataValue<Ascii>)>,
}

impl Publishers {
    async fn connect(addr: &str, key: &SigningKeyPair) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for index in 0..PUBLISHERS {
            clients.push((FeedServiceClient::new(connect(addr).await?), bearer(key, &format!("author-{index}"))?));
        }
        Ok(Self { clients })
    }

    /// Publishes at `rate` per second in total for `duration`: (published, failed).
    async fn publish(&self, rate: u32, duration: Duration, base: Instant) -> anyhow::Result<(u64, u64)> {
        let tasks = self.clients.len().min(rate as usize).max(1);
        let period = Duration::from_secs_f64(tasks as f64 / rate as f64);
        let start = tokio::time::Instant::now();
        let until = start + duration;
        let mut handles = Vec::new();
        for (index, (client, bearer)) in self.clients.iter().take(tasks).enumerate() {
            let (mut client, bearer) = (client.clone(), bearer.clone());
            let offset = Duration::from_secs_f64(index as f64 / rate as f64);
            handles.push(tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(start + offset, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let (mut published, mut failed) = (0u64, 0u64);
                loop {
                    let ticked = tokio::time::timeout_at(until, ticks.tick()).await;
                    if ticked.is_err() || tokio::time::Instant::now() >= until {
                        return (published, failed);
                    }
                    let sent = base.elapsed().as_nanos() as u64;
                    let mut request = Request::new(pb::PublishActivityRequest {
                        verb: "post".into(),
                        object: Some(pb::ActivityObject { object_type: "post".into(), object_id: "1".into() }),
                        text: sent.to_string(),
                        metadata: Default::default(),
                        request_id: String::new(),
                    });
                    request.metadata_mut().insert("authorization", bearer.clone());
                    match client.publish_activity(request).await {
                        Ok(_) => published += 1,
                        Err(_) => failed += 1,
                    }
                }
            }));
        }
        let (mut published, mut failed) = (0, 0);
        for handle in handles {
            let (p, f) = handle.await?;
            published += p;
            failed += f;
        }
        Ok((published, failed))
    }
}

/// One measured step.
struct Step {
    streams: usize,
    rate: u32,
    published: u64,
    failed: u64,
    publish_secs: f64,
    deliveries: u64,
    deliver_secs: f64,
    lost: u64,
    ended: u64,
    slow_consumers: u64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    meshd_cpu: f64,
    own_cpu: f64,
}

/// Publishes at `rate` for `duration`, then waits until every live stream got everything
/// (or nothing arrived for 1 s), and reads the merged histograms.
async fn step(
    subscribers: &Subscribers,
    publishers: &Publishers,
    rate: u32,
    duration: Duration,
    meshd_pid: u32,
) -> anyhow::Result<Step> {
    subscribers.collect()?;
    let shared = &subscribers.shared;
    let received_before = shared.received.load(Ordering::Relaxed);
    let (meshd_cpu_before, own_cpu_before) = (cpu_time(Some(meshd_pid))?, cpu_time(None)?);
    let start = Instant::now();
    let (published, failed) = publishers.publish(rate, duration, shared.base).await?;
    let publish_secs = start.elapsed().as_secs_f64();
    let mut last = (shared.received.load(Ordering::Relaxed), Instant::now());
    let drain_until = Instant::now() + Duration::from_secs(15);
    loop {
        let live = subscribers.streams as u64 - shared.ended.load(Ordering::Relaxed);
        let received = shared.received.load(Ordering::Relaxed);
        if received != last.0 {
            last = (received, Instant::now());
        }
        if received - received_before >= live * published
            || last.1.elapsed() > Duration::from_secs(1)
            || Instant::now() > drain_until
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deliver_secs = last.1.duration_since(start).as_secs_f64();
    let elapsed = start.elapsed().as_secs_f64();
    let meshd_cpu = (cpu_time(Some(meshd_pid))? - meshd_cpu_before).as_secs_f64() / elapsed;
    let own_cpu = (cpu_time(None)? - own_cpu_before).as_secs_f64() / elapsed;
    let histogram = subscribers.collect()?;
    let deliveries = last.0 - received_before;
    let expected = subscribers.streams as u64 * published;
    Ok(Step {
        streams: subscribers.streams,
        rate,
        published,
        failed,
        publish_secs,
        deliveries,
        deliver_secs,
        lost: expected.saturating_sub(deliveries),
        ended: shared.ended.load(Ordering::Relaxed),
        slow_consumers: shared.slow_consumers.load(Ordering::Relaxed),
        p50_us: histogram.value_at_quantile(0.5) as f64,
        p99_us: histogram.value_at_quantile(0.99) as f64,
        max_us: histogram.max() as f64,
        meshd_cpu,
        own_cpu,
    })
}

fn write_header(out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "  {:>8} {:>6} {:>8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>12} {:>11} {:>9} {:>9}",
        "target/s",
        "pub/s",
        "pub fail",
        "deliver/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "lost",
        "ended(slow)",
        "ratio p50/99",
        "meshd cpu",
        "bench cpu"
    )
}

fn write_step(out: &mut String, step: &Step, reference: Option<&Step>) -> std::fmt::Result {
    let ratio = reference.map_or_else(
        || "-".to_owned(),
        |reference| format!("{:.1}x/{:.1}x", step.p50_us / reference.p50_us, step.p99_us / reference.p99_us),
    );
    let per_second = |count: u64, secs: f64| if secs > 0.0 { count as f64 / secs } else { 0.0 };
    writeln!(
        out,
        "  {:>8} {:>6.1} {:>8} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>12} {:>12} {:>8.0}% {:>8.0}%",
        step.rate,
        per_second(step.published, step.publish_secs),
        step.failed,
        per_second(step.deliveries, step.deliver_secs),
        step.p50_us / 1e3,
        step.p99_us / 1e3,
        step.max_us / 1e3,
        step.lost,
        format!("{}({})", step.ended, step.slow_consumers),
        ratio,
        step.meshd_cpu * 100.0,
        step.own_cpu * 100.0
    )?;
    if step.deliveries == 0 && step.published > 0 {
        writeln!(out, "  (no delivery to the {} streams in this step)", step.streams)?;
    }
    Ok(())
}
