//! Health probes of the I/O backends a service depends on. `meshd` polls them and reports
//! each service NOT_SERVING through grpc.health.v1 while one of its backends is down.
//!
//! Two implementations: [`MemoryProbe`] (in-process backends are up while the process is)
//! and [`RedisProbe`] (a `PING` through the bb8 command pool, with a deadline).
//!
//! Also the command pool itself ([`redis_pool`]): bb8 over [`RedisManager`], whose
//! connections notice when their link dropped, so the pool replaces them without a `PING`
//! on every checkout (which would double the round trips of every call).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::Error;
use crate::config::RedisSettings;

/// The bb8 pool of multiplexed Redis connections every Redis-backed store shares.
pub type RedisPool = bb8::Pool<RedisManager>;

/// The bb8 manager of [`RedisPool`]: opens multiplexed connections to one Redis.
#[derive(Debug, Clone)]
pub struct RedisManager {
    client: redis::Client,
}

/// A pooled Redis connection: a multiplexed connection that remembers when a command failed
/// because the link dropped, so bb8 discards it instead of handing it out again.
pub struct RedisConnection {
    inner: redis::aio::MultiplexedConnection,
    broken: bool,
}

impl RedisConnection {
    fn note<T>(&mut self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(error) = &result
            && (error.is_connection_dropped() || error.is_io_error() || error.is_unrecoverable_error())
        {
            self.broken = true;
        }
        result
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            self.note(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let result = self.inner.req_packed_commands(pipeline, offset, count).await;
            self.note(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = RedisConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let inner = self.client.get_multiplexed_async_connection().await?;
        Ok(RedisConnection { inner, broken: false })
    }

    async fn is_valid(&self, connection: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query_async::<String>(connection).await.map(drop)
    }

    fn has_broken(&self, connection: &mut Self::Connection) -> bool {
        connection.broken
    }
}

/// A boxed future returned by [`BackendProbe::check`].
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// Tells whether one backend answers.
pub trait BackendProbe: Send + Sync + 'static {
    /// A short name for logs, e.g. `redis` or `memory`.
    fn name(&self) -> &str;

    /// Resolves to `Ok` when the backend answers in time, UNAVAILABLE otherwise.
    fn check(&self) -> ProbeFuture<'_>;
}

/// The probe of in-process backends: always up.
#[derive(Debug, Default, Clone)]
pub struct MemoryProbe;

impl BackendProbe for MemoryProbe {
    fn name(&self) -> &str {
        "memory"
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// Pings Redis through the command pool.
#[derive(Debug, Clone)]
pub struct RedisProbe {
    pool: RedisPool,
    timeout: Duration,
}

impl RedisProbe {
    /// A probe that pings through `pool` and gives up after `timeout`.
    pub fn new(pool: RedisPool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }
}

impl BackendProbe for RedisProbe {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let ping = async {
                let mut connection = self
                    .pool
                    .get()
                    .await
                    .map_err(|error| redis_unavailable().with_source(anyhow::anyhow!("{error}")))?;
                redis::cmd("PING")
                    .query_async::<String>(&mut *connection)
                    .await
                    .map_err(|error| redis_unavailable().with_source(error))?;
                Ok(())
            };
            tokio::time::timeout(self.timeout, ping).await.unwrap_or_else(|_| Err(redis_unavailable()))
        })
    }
}

fn redis_unavailable() -> Error {
    Error::unavailable("BACKEND_UNAVAILABLE", "redis is unavailable")
}

/// Builds the command pool for `url` without waiting for Redis: connections are opened on
/// demand, so a Redis that is down at start-up shows as NOT_SERVING instead of stopping
/// the process.
pub fn redis_pool(url: &str, settings: &RedisSettings) -> Result<RedisPool, redis::RedisError> {
    let client = redis::Client::open(url)?;
    Ok(bb8::Pool::builder()
        .max_size(settings.pool_size)
        .min_idle(None)
        .connection_timeout(settings.connect_timeout)
        .retry_connection(false)
        // No PING per checkout: a connection whose link dropped fails its command and
        // reports itself broken, and bb8 then discards it.
        .test_on_check_out(false)
        .build_unchecked(RedisManager { client }))
}
