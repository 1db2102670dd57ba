//! Benchmark of the Storage service's reads (issue 7): GetFile with a warm Redis cache
//! against GetFile on a cache miss that goes to the Firestore emulator, in one run.
//!
//! It measures and reports; it asserts nothing about timings. One process, a tokio runtime
//! with 2 worker threads; a private `redis-server` and a private Firestore emulator
//! (npm `@firestore-emulator/server`, a Node process) started for the run:
//!
//! - meshd in-process (`TestApp`, release build) on Redis with `[documents.firestore]` on the
//!   emulator: the documents sit behind the Redis read-through cache;
//! - **warm**: GetFile of one file whose entry is in the cache (one Redis MGET);
//! - **miss**: GetFile after the file's entry was deleted from Redis (outside the timed
//!   part): MGET, a BatchGetDocuments on the emulator, and the fill;
//! - the reference: the same GetFile on a second meshd whose documents are in memory (no
//!   Redis, no Firestore), i.e. the service's own cost.
//!
//! Each is called sequentially (concurrency 1) for a fixed time after a warm-up. Reported:
//! p50/p99/mean latency and calls/s, the ratios against the reference and warm against miss,
//! and the process's resident memory.
//!
//! Run: `cargo bench -p meshd --bench storage` (about 20 s, build excluded);
//! `MESH_BENCH_QUICK=1 cargo bench -p meshd --bench storage` for 1 s runs.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use mesh_core::auth::SigningKeyPair;
use mesh_core::config::BlobBackend;
use mesh_proto::mesh::storage::v1 as pb;
use mesh_testkit::bench::rss_bytes;
use mesh_testkit::{FirestoreEmulator, RedisServer, TestApp};
use pb::storage_service_client::StorageServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const COMMAND: &str = "cargo bench -p meshd --bench storage";

fn main() -> anyhow::Result<()> {
    let quick = std::env::var_os("MESH_BENCH_QUICK").is_some();
    let (warmup, run) = if quick {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(bench(warmup, run))
}

/// A client of one meshd acting as one user, and the file it reads.
struct Reader {
    client: StorageServiceClient<Channel>,
    token: MetadataValue<tonic::metadata::Ascii>,
    file_id: String,
}

impl Reader {
    async fn new(app: &TestApp) -> anyhow::Result<Self> {
        let token = MetadataValue::try_from(format!("Bearer {}", app.token("acme", "alice")))?;
        let mut reader = Self { client: StorageServiceClient::new(app.channel()), token, file_id: String::new() };
        let request = pb::CreateUploadRequest {
            file_name: "bench.txt".into(),
            content_type: "text/plain".into(),
            size_bytes: 5,
            sha256: String::new(),
            request_id: String::new(),
        };
        let created = reader.client.create_upload(reader.request(request)).await?.into_inner();
        reader.file_id = created.file.context("a file")?.file_id;
        Ok(reader)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.token.clone());
        request
    }

    async fn get(&mut self) -> anyhow::Result<()> {
        let request = self.request(pb::GetFileRequest { file_id: self.file_id.clone() });
        self.client.get_file(request).await?;
        Ok(())
    }
}

struct Figures {
    name: &'static str,
    histogram: Histogram<u64>,
    calls: u64,
    elapsed: Duration,
}

impl Figures {
    fn micros(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
}

/// Calls `reader.get()` for `run` after `warmup`, running `before` (untimed) before each.
async fn measure<F: AsyncFnMut() -> anyhow::Result<()>>(
    name: &'static str,
    reader: &mut Reader,
    mut before: F,
    warmup: Duration,
    run: Duration,
) -> anyhow::Result<Figures> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let warm_until = Instant::now() + warmup;
    while Instant::now() < warm_until {
        before().await?;
        reader.get().await?;
    }
    let mut timed = Duration::ZERO;
    let mut calls = 0;
    while timed < run {
        before().await?;
        let sent = Instant::now();
        reader.get().await?;
        let took = sent.elapsed();
        timed += took;
        calls += 1;
        histogram.record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1))?;
    }
    Ok(Figures { name, histogram, calls, elapsed: timed })
}

async fn bench(warmup: Duration, run: Duration) -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let emulator = FirestoreEmulator::start().await?;
    let firestore = emulator.settings();
    let cached = TestApp::on_redis(&redis, SigningKeyPair::generate(), move |settings| {
        settings.documents.firestore = Some(firestore);
        settings.storage.blobs = BlobBackend::Memory;
    })
    .await?;
    let memory = TestApp::start_with(|settings| settings.storage.blobs = BlobBackend::Memory).await?;

    let mut reference_reader = Reader::new(&memory).await?;
    let mut cached_reader = Reader::new(&cached).await?;
    let entry = format!("t:acme:doc:{{files/{}}}", cached_reader.file_id);
    let mut redis_connection = redis::Client::open(redis.url())?.get_multiplexed_async_connection().await?;

    let reference = measure(
        "GetFile, memory documents (reference)",
        &mut reference_reader,
        async || Ok::<(), anyhow::Error>(()),
        warmup,
        run,
    )
    .await?;
    let warm =
        measure("GetFile, warm Redis cache", &mut cached_reader, async || Ok::<(), anyhow::Error>(()), warmup, run)
            .await?;
    let miss = measure(
        "GetFile, cache miss (Firestore emulator)",
        &mut cached_reader,
        async || {
            redis::cmd("DEL").arg(&entry).query_async::<()>(&mut redis_connection).await?;
            Ok(())
        },
        warmup,
        run,
    )
    .await?;

    println!("\n# Storage benchmark ({COMMAND})\n");
    println!("concurrency 1, {} s per call after {} ms of warm-up\n", run.as_secs_f64(), warmup.as_millis());
    println!("| call | p50 µs | p99 µs | mean µs | calls/s | p50 vs reference |");
    println!("|---|---|---|---|---|---|");
    for figures in [&reference, &warm, &miss] {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x |",
            figures.name,
            figures.micros(0.5),
            figures.micros(0.99),
            figures.histogram.mean() / 1000.0,
            figures.per_second(),
            figures.micros(0.5) / reference.micros(0.5),
        );
    }
    println!(
        "\nwarm cache vs miss: p50 {:.2}x faster, p99 {:.2}x faster",
        miss.micros(0.5) / warm.micros(0.5),
        miss.micros(0.99) / warm.micros(0.99)
    );
    println!("process RSS: {:.1} MiB", rss_bytes()? as f64 / (1024.0 * 1024.0));
    Ok(())
}
