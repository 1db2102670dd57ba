//! Wiring of the Feed service: activity records and read models in Redis when the backbone
//! is (else in memory), the projector on the backbone's broker, the per-caller limits and
//! the page-token key from `[feed]`.

use std::sync::Arc;

use mesh_core::config::{ConfigError, Settings};
use mesh_feed::grpc::{FeedGrpc, FeedParts, FeedServer};
use mesh_feed::limits::{RateLimiter, StreamSlots};
use mesh_feed::page_token::PageTokens;
use mesh_feed::projector::Projector;
use mesh_feed::store::{
    ActivityStore, MemoryActivityStore, MemoryReadModel, ReadModel, RedisActivityStore, RedisReadModel,
};

use crate::backbone::Backbone;

/// Builds the Feed service on `backbone`.
pub fn start(settings: &Settings, backbone: &Backbone) -> Result<FeedServer, ConfigError> {
    let feed = &settings.feed;
    let (store, models): (Arc<dyn ActivityStore>, Arc<dyn ReadModel>) = match &backbone.redis {
        Some(pool) => (
            Arc::new(RedisActivityStore::new(pool.clone(), backbone.history)),
            Arc::new(RedisReadModel::new(pool.clone())),
        ),
        None => (Arc::new(MemoryActivityStore::new(backbone.broker.clone())), Arc::new(MemoryReadModel::default())),
    };
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
        projector: Arc::new(Projector::new(backbone.broker.clone(), models.clone(), backbone.history.size)),
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
