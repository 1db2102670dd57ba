//! The backbone of this process, built from settings: the broker (memory in the embedded
//! default, Redis when `redis.url` is set), the hub with its live feed (the in-process bus,
//! or the process's one Redis pub/sub connection), the job queue (memory, or Redis
//! Streams), and the probe that ties the services' health to them. Services receive it
//! from the composition root.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::backend::{BackendProbe, MemoryProbe, RedisPool, RedisProbe, redis_pool};
use mesh_core::broker::hub::Hub;
use mesh_core::broker::memory::MemoryBroker;
use mesh_core::broker::redis::RedisBroker;
use mesh_core::broker::redis_feed::RedisFeed;
use mesh_core::broker::subscription::SubscriptionSettings;
use mesh_core::broker::{Broker, HistorySettings, LiveFeed};
use mesh_core::config::Settings;
use mesh_core::jobs::{JobQueue, MemoryJobQueue, RedisJobQueue};

/// Longest a health probe of the backbone may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What streaming RPCs and durable writes are built on.
#[derive(Clone)]
pub struct Backbone {
    /// Publications and history.
    pub broker: Arc<dyn Broker>,
    /// The job queue (audit trail, projectors, archives).
    pub jobs: Arc<dyn JobQueue>,
    /// The process's fan-out point.
    pub hub: Hub,
    /// Settings every subscription uses.
    pub subscription: SubscriptionSettings,
    /// The Redis command pool, when the backbone is on Redis (services whose own store is
    /// in Redis share it).
    pub redis: Option<RedisPool>,
    /// How the broker keeps history.
    pub history: HistorySettings,
    probe: Arc<dyn BackendProbe>,
    kind: &'static str,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Backbone {
    /// Builds the backbone; must run inside the Tokio runtime (the Redis feed starts its
    /// connection task). Redis is not contacted here: if it is down, the services that
    /// depend on it report NOT_SERVING until it is back.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let history = settings.stream.history();
        let subscription = settings.stream.subscription();
        let Some(url) = &settings.redis.url else {
            let broker = MemoryBroker::new(history);
            let feed: Arc<dyn LiveFeed> = Arc::new(broker.bus().feed());
            let broker: Arc<dyn Broker> = Arc::new(broker);
            let hub = Hub::new(broker.clone(), feed, subscription.history_limit);
            let jobs: Arc<dyn JobQueue> = Arc::new(MemoryJobQueue::new(settings.jobs.clone()));
            return Ok(Self {
                broker,
                jobs,
                hub,
                subscription,
                redis: None,
                history,
                probe: Arc::new(MemoryProbe),
                kind: "memory",
            });
        };
        let url = url.expose();
        let pool = redis_pool(url, &settings.redis).map_err(|error| anyhow::anyhow!("invalid redis.url: {error}"))?;
        let client =
            redis::Client::open(url.as_str()).map_err(|error| anyhow::anyhow!("invalid redis.url: {error}"))?;
        let broker: Arc<dyn Broker> = Arc::new(RedisBroker::new(pool.clone(), history));
        let jobs: Arc<dyn JobQueue> = Arc::new(RedisJobQueue::new(pool.clone(), settings.jobs.clone()));
        let hub = Hub::new(broker.clone(), Arc::new(RedisFeed::start(client)), subscription.history_limit);
        let probe = Arc::new(RedisProbe::new(pool.clone(), PROBE_TIMEOUT));
        Ok(Self { broker, jobs, hub, subscription, redis: Some(pool), history, probe, kind: "redis" })
    }

    /// The probe of the backbone's backend, for the health of every service built on it.
    pub fn probe(&self) -> Arc<dyn BackendProbe> {
        self.probe.clone()
    }

    /// `memory` or `redis`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}
