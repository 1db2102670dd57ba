//! Wiring of the Session service: its store (memory, or Redis when the backbone is on
//! Redis), its audit trail (a JSON-lines file in the data folder, or PostgreSQL), the audit
//! worker that moves events from the job queue to the trail, and the expiry sweeper.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::auth::Revocations;
use mesh_core::config::{AuditSinkKind, Settings};
use mesh_proto::mesh::session::v1::session_service_server::SessionServiceServer;
use mesh_session::audit::{AuditSink, AuditWorker, JsonLinesAuditSink, PostgresAuditOptions, PostgresAuditSink};
use mesh_session::domain::Lifetimes;
use mesh_session::grpc::SessionGrpc;
use mesh_session::store::{MemoryStore, RedisStore, SessionStore, audit_queues};
use mesh_session::sweeper::Sweeper;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backbone::Backbone;

/// Longest pause between attempts to migrate an audit database that is down.
const MIGRATE_PAUSE_MAX: Duration = Duration::from_secs(30);

/// Builds the Session service on `backbone` (a user's DeleteSession revokes the session's
/// tokens through `revocations`) and starts its background work (audit worker,
/// sweeper) in `tasks`, until `stop`. Fails when the audit trail cannot be opened (a
/// damaged file, a malformed database URL).
pub async fn start(
    settings: &Settings,
    backbone: &Backbone,
    revocations: &Arc<Revocations>,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> anyhow::Result<SessionServiceServer<SessionGrpc>> {
    let session = &settings.session;
    let lifetimes = Lifetimes { idle_ttl: session.idle_ttl, max_lifetime: session.max_lifetime };
    let (store, queues): (Arc<dyn SessionStore>, _) = match &backbone.redis {
        Some(pool) => (Arc::new(RedisStore::new(pool.clone(), lifetimes, backbone.history)), audit_queues()),
        None => {
            let store = MemoryStore::new(backbone.jobs.clone(), backbone.broker.clone(), lifetimes);
            (Arc::new(store), vec![mesh_session::audit::audit_queue()])
        }
    };

    let consumer = format!("meshd-{}-audit", mesh_core::auth::random_id());
    let (sink, database): (Arc<dyn AuditSink>, _) = match session.audit_sink {
        AuditSinkKind::File => (Arc::new(JsonLinesAuditSink::open_in(&settings.data_dir).await?), None),
        AuditSinkKind::Postgres => {
            let url = session.postgres_url.as_ref().expect("validated: postgres needs session.postgres_url");
            let options =
                PostgresAuditOptions { max_connections: session.postgres_pool_size, ..PostgresAuditOptions::default() };
            let sink = PostgresAuditSink::new(url.expose(), options)?;
            (Arc::new(sink.clone()), Some(sink))
        }
    };
    let worker = AuditWorker::new(backbone.jobs.clone(), sink, consumer).with_queues(queues);
    let worker_stop = stop.clone();
    tasks.spawn(async move {
        // With PostgreSQL, events wait in the queue until the schema is in place.
        if let Some(database) = database
            && !migrate_when_reachable(&database, &worker_stop).await
        {
            return;
        }
        worker.run(worker_stop).await;
    });
    tasks.spawn(Sweeper::new(store.clone(), session.sweep_interval).run(stop.clone()));

    // A token verified here may live up to the longest accepted lifetime plus the leeway.
    let hold = settings.auth.max_token_lifetime + settings.auth.leeway;
    let grpc = SessionGrpc::new(store, backbone.hub.clone(), backbone.subscription, session.idle_ttl)
        .with_revocations(revocations.clone(), hold);
    Ok(grpc.into_server(settings.server.max_decoding_message_size, settings.server.max_encoding_message_size))
}

/// Applies the audit schema, retrying while the database is down; `false` when stopped or
/// when a migration fails for good (logged).
async fn migrate_when_reachable(sink: &PostgresAuditSink, stop: &CancellationToken) -> bool {
    let mut pause = Duration::from_millis(200);
    loop {
        match sink.migrate().await {
            Ok(()) => return true,
            Err(error) if error.is_unavailable() => {
                tracing::warn!(%error, "audit database unreachable: audit events wait in the queue");
            }
            Err(error) => {
                tracing::error!(%error, "audit schema migration failed: audit events wait in the queue");
                return false;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MIGRATE_PAUSE_MAX);
    }
}
