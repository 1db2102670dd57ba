//! [`PostgresAuditSink`]: the audit trail in PostgreSQL, the append-only table
//! `audit_events` keyed by the event id (schema in `services/session/migrations`).
//!
//! tokio-postgres through a bb8 pool, without TLS (the database is reached on a trusted
//! network or through a local proxy). A batch is one statement, a multi-row
//! `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT (event_id) DO NOTHING`, so it is stored
//! whole or not at all and a repeated event changes nothing. Every call is bounded: getting
//! a connection by `connect_timeout`, the statement by `statement_timeout`; a database that
//! is down answers [`AuditError::Unavailable`] within them.

use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bb8::{ErrorSink, Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::{NoTls, Row};

use super::migrations;
use super::{AuditError, AuditSink, BoxFuture, first_of_each_id};
use crate::domain::{Attributes, AuditEvent, SessionChangeKind, SessionId, Version};

/// Connection pool settings of the PostgreSQL audit sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresAuditOptions {
    /// Most open connections (default 4: one worker writes one batch at a time).
    pub max_connections: u32,
    /// Longest wait for a connection, including connecting (default 3 s).
    pub connect_timeout: Duration,
    /// Longest time one statement or migration may take (default 10 s). Keep it well below
    /// the job queue's visibility timeout.
    pub statement_timeout: Duration,
}

impl Default for PostgresAuditOptions {
    fn default() -> Self {
        Self { max_connections: 4, connect_timeout: Duration::from_secs(3), statement_timeout: Duration::from_secs(10) }
    }
}

/// The PostgreSQL [`AuditSink`] (see the module docs).
#[derive(Clone)]
pub struct PostgresAuditSink {
    pool: Pool<PostgresConnectionManager<NoTls>>,
    options: PostgresAuditOptions,
    /// The last error met while connecting, to say why no connection came.
    last_connect_error: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for PostgresAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection URL may hold a password: it is not shown.
        f.debug_struct("PostgresAuditSink").field("options", &self.options).finish_non_exhaustive()
    }
}

const INSERT: &str = "INSERT INTO audit_events
        (event_id, tenant_id, user_id, session_id, kind, version, occurred_at, attributes)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                         $7::timestamptz[], $8::jsonb[])
    ON CONFLICT (event_id) DO NOTHING";

const SELECT_ONE: &str = "SELECT event_id, tenant_id, user_id, session_id, kind, version, occurred_at, attributes
    FROM audit_events WHERE event_id = $1";

impl PostgresAuditSink {
    /// A sink for the database at `url` (`postgres://user:password@host:port/database`).
    /// Connects lazily: nothing is reached until the first call. Fails only on a malformed
    /// URL (the error never repeats the URL).
    pub fn new(url: &str, options: PostgresAuditOptions) -> Result<Self, AuditError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|_| AuditError::Rejected("the audit database URL is malformed".into()))?;
        config.connect_timeout(options.connect_timeout).application_name("mesh-session");
        let last_connect_error = Arc::new(Mutex::new(None));
        let pool = Pool::builder()
            .max_size(options.max_connections.max(1))
            .connection_timeout(options.connect_timeout.max(Duration::from_millis(1)))
            .error_sink(Box::new(RememberLastError(last_connect_error.clone())))
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        Ok(Self { pool, options, last_connect_error })
    }

    /// [`new`](Self::new), then [`migrate`](Self::migrate): the sink ready to write.
    pub async fn open(url: &str, options: PostgresAuditOptions) -> Result<Self, AuditError> {
        let sink = Self::new(url, options)?;
        sink.migrate().await?;
        Ok(sink)
    }

    /// Applies the pending schema migrations (see [`MIGRATIONS`](super::MIGRATIONS)). Safe to
    /// run again and from several instances at once.
    pub async fn migrate(&self) -> Result<(), AuditError> {
        self.bounded(async {
            let mut connection = self.connection().await?;
            migrations::apply(&mut connection).await
        })
        .await
    }

    async fn connection(&self) -> Result<PooledConnection<'_, PostgresConnectionManager<NoTls>>, AuditError> {
        self.pool.get().await.map_err(|error| match error {
            RunError::User(error) => classify(error),
            RunError::TimedOut => {
                let last = self.last_connect_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
                let cause = last.map(|error| format!(" (last error: {error})")).unwrap_or_default();
                AuditError::Unavailable(format!(
                    "no database connection within {:?}{cause}",
                    self.options.connect_timeout
                ))
            }
        })
    }

    /// Runs `work` within the statement timeout.
    async fn bounded<T>(&self, work: impl Future<Output = Result<T, AuditError>>) -> Result<T, AuditError> {
        let limit = self.options.statement_timeout;
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(AuditError::Unavailable(format!("the audit database did not answer within {limit:?}")))
        })
    }
}

impl AuditSink for PostgresAuditSink {
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(self.bounded(async move {
            let batch = first_of_each_id(events);
            if batch.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = batch.iter().map(|event| event.event_id.as_str()).collect();
            let tenants: Vec<&str> = batch.iter().map(|event| event.tenant.as_str()).collect();
            let users: Vec<&str> = batch.iter().map(|event| event.user.as_str()).collect();
            let sessions: Vec<&str> = batch.iter().map(|event| event.session_id.as_str()).collect();
            let kinds: Vec<&str> = batch.iter().map(|event| event.kind.as_str()).collect();
            let versions: Vec<i64> = batch.iter().map(|event| event.version.get()).collect();
            let times: Vec<SystemTime> = batch.iter().map(|event| event.occurred_at).collect();
            let attributes: Vec<Option<serde_json::Value>> = batch
                .iter()
                .map(|event| event.attributes.as_ref().map(|attributes| serde_json::json!(attributes.as_map())))
                .collect();
            let connection = self.connection().await?;
            connection
                .execute(INSERT, &[&ids, &tenants, &users, &sessions, &kinds, &versions, &times, &attributes])
                .await
                .map_err(classify)?;
            Ok(())
        }))
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(self.bounded(async move {
            let connection = self.connection().await?;
            let row = connection.query_one("SELECT count(*) FROM audit_events", &[]).await.map_err(classify)?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        }))
    }

    fn get<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<AuditEvent>, AuditError>> {
        Box::pin(self.bounded(async move {
            let connection = self.connection().await?;
            let row = connection.query_opt(SELECT_ONE, &[&event_id]).await.map_err(classify)?;
            row.map(|row| event_from_row(&row)).transpose()
        }))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(self.bounded(async move {
            let connection = self.connection().await?;
            connection.simple_query("SELECT 1").await.map_err(classify)?;
            Ok(())
        }))
    }
}

/// Reads one row of `audit_events` back into an event.
fn event_from_row(row: &Row) -> Result<AuditEvent, AuditError> {
    let event_id: String = row.get("event_id");
    let corrupt = |what: &str| AuditError::Corrupt(format!("audit_events row {event_id:?}: {what}"));
    let session_id: String = row.get("session_id");
    let kind: String = row.get("kind");
    let attributes = match row.get::<_, Option<serde_json::Value>>("attributes") {
        Some(json) => Some(serde_json::from_value::<Attributes>(json).map_err(|error| corrupt(&error.to_string()))?),
        None => None,
    };
    Ok(AuditEvent {
        session_id: SessionId::parse(&session_id, "session_id").map_err(|v| corrupt(&v.description))?,
        kind: SessionChangeKind::from_name(&kind).ok_or_else(|| corrupt("unknown kind"))?,
        version: Version::new(row.get("version")).ok_or_else(|| corrupt("version below 1"))?,
        tenant: row.get("tenant_id"),
        user: row.get("user_id"),
        occurred_at: row.get("occurred_at"),
        attributes,
        event_id,
    })
}

/// Sorts a database error: an outage (no connection, a closed connection, a server shutting
/// down or out of resources) is [`AuditError::Unavailable`]; the server refusing the statement
/// itself is [`AuditError::Rejected`].
pub(super) fn classify(error: tokio_postgres::Error) -> AuditError {
    let Some(db_error) = error.as_db_error() else {
        return AuditError::Unavailable(format!("audit database: {error}"));
    };
    let code = db_error.code();
    let class = &code.code()[..2];
    // 08 connection exception, 40 transaction rollback (serialization, deadlock), 53
    // insufficient resources, 57 operator intervention (shutdown, cannot connect now,
    // statement cancelled), 58 system error (I/O).
    let outage = matches!(class, "08" | "40" | "53" | "57" | "58");
    let detail = format!("audit database: {} ({})", db_error.message(), code.code());
    if outage { AuditError::Unavailable(detail) } else { AuditError::Rejected(detail) }
}

/// Keeps the last error of the pool's background connection attempts.
#[derive(Debug, Clone)]
struct RememberLastError(Arc<Mutex<Option<String>>>);

impl ErrorSink<tokio_postgres::Error> for RememberLastError {
    fn sink(&self, error: tokio_postgres::Error) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error.to_string());
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<tokio_postgres::Error>> {
        Box::new(self.clone())
    }
}
