//! Wiring of the Feed service: activity records and read models in Redis when the backbone
//! is (else in memory); the event archive in the document store when `[documents.firestore]`
//! is configured, else in Redis when the backbone is, else in memory; the projector on the
//! backbone's broker, the consumers of the feed jobs (read models and archive) as background
//! tasks, the per-caller limits and the page-token key from `[feed]`.

use std::sync::Arc;

use mesh_core::config::{ConfigError, Settings};
use mesh_feed::grpc::{FeedGrpc, FeedParts, FeedServer};
use mesh_feed::limits::{RateLimiter, StreamSlots};
use mesh_feed::page_token::PageTokens;
use mesh_feed::projection::FeedWorkers;
use mesh_feed::projector::Projector;
use mesh_feed::store::{
    ActivityStore, DocumentFeedArchive, FeedArchive, MemoryActivityStore, MemoryFeedArchive, MemoryReadModel,
    ReadModel, RedisActivityStore, RedisFeedArchive, RedisReadModel,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backbone::Backbone;

/// The activity store and read models of the Feed service.
type Stores = (Arc<dyn ActivityStore>, Arc<dyn ReadModel>);

/// Builds the Feed service on `backbone`, archiving its events in `documents` when given (the
/// durable document store of `[documents.firestore]`); its job consumers run in `tasks`
/// until `stop`.
pub fn start(
    settings: &Settings,
    backbone: &Backbone,
    documents: Option<Arc<dyn mesh_core::documents::DocumentStore>>,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<FeedServer, ConfigError> {
    let feed = &settings.feed;
    let (store, models): Stores = match &backbone.redis {
        Some(pool) => (
            Arc::new(RedisActivityStore::new(pool.clone(), backbone.history)),
            Arc::new(RedisReadModel::new(pool.clone())),
        ),
        None => (
            Arc::new(MemoryActivityStore::new(backbone.broker.clone(), backbone.jobs.clone())),
            Arc::new(MemoryReadModel::default()),
        ),
    };
    // The archive is what read models are rebuilt from: the durable store when there is one.
    let archive: Arc<dyn FeedArchive> = match (documents, &backbone.redis) {
        (Some(documents), redis) => {
            if redis.is_some() {
                tracing::info!(
                    "the feed archive is in Firestore ([documents.firestore]); an archive kept in Redis before is not read"
                );
            }
            Arc::new(DocumentFeedArchive::new(documents))
        }
        (None, Some(pool)) => Arc::new(RedisFeedArchive::new(pool.clone())),
        (None, None) => Arc::new(MemoryFeedArchive::default()),
    };
    let projector =
        Arc::new(Projector::new(backbone.broker.clone(), models.clone(), archive.clone(), backbone.history.size));
    let consumer = format!("meshd-{}-feed", mesh_core::auth::random_id());
    let workers = FeedWorkers::new(backbone.jobs.clone(), projector.clone(), archive, consumer);
    tasks.spawn(workers.run(stop.clone()));
    let page_tokens = match &feed.page_token_key {
        Some(key) => PageTokens::from_base64(key.expose()).ok_or_else(|| {
            ConfigError::new("feed.page_token_key", "not 32 bytes of URL-safe base64", "43 characters of base64url")
        })?,
        None => {
            if backbone.redis.is_some() {
                tracing::warn!(
                    "feed.page_token_key is not set: ListFeed page tokens work only on the instance that issued them"
                );
            }
            PageTokens::random()
        }
    };
    let parts = FeedParts {
        projector,
        store,
        models,
        hub: backbone.hub.clone(),
        subscription: backbone.subscription,
        rate: RateLimiter::new(feed.publish_rate, feed.publish_burst),
        streams: StreamSlots::new(feed.max_streams_per_caller),
        page_tokens,
    };
    Ok(FeedGrpc::new(parts)
        .into_server(settings.server.max_decoding_message_size, settings.server.max_encoding_message_size))
}
