//! The gRPC adapter of `mesh.feed.v1.FeedService`: decode, check who may do what, validate
//! into domain types, call the store, the read models and the hub, map the result.
//!
//! ListFeed first catches the feed's read model up with its channel (cheap when it is
//! current: two small reads), so a listing never misses an event that was published before
//! it started; the read-model consumers of the feed jobs ([`crate::projection`]) keep the
//! models current meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mesh_core::broker::hub::Hub;
use mesh_core::broker::subscription::{ChannelRequest, Subscription, SubscriptionSettings, subscribe};
use mesh_core::broker::{Position, Publication};
use mesh_core::request_id::RequestId;
use mesh_core::transport::encoded::{Encoded, SharedEncoding, StreamingRoute};
use mesh_core::transport::stream::{ContractMessages, ContractStream};
use mesh_core::transport::{caller, stream as stream_pb};
use mesh_core::{Error, FieldViolation};
use mesh_proto::mesh::feed::v1 as pb;
use mesh_proto::mesh::stream::v1::{Heartbeat, SubscriptionConfirmed};
use pb::feed_service_server::{FeedService, FeedServiceServer};
use pb::subscribe_response::Event;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::domain::{Activity, ActivityId, FeedError, FeedEvent, FeedName, NewActivity};
use crate::limits::{RateLimiter, StreamSlot, StreamSlots};
use crate::page_token::PageTokens;
use crate::projector::Projector;
use crate::store::{ActivityStore, Deleter, ReadModel};

/// Page size of ListFeed when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page of ListFeed; larger requests are cut to it.
pub const MAX_PAGE_SIZE: usize = 100;
/// Scope that deletes any activity of the tenant.
const ADMIN: &str = "admin";

/// Everything the service is built from.
pub struct FeedParts {
    /// Activity records and the feed log.
    pub store: Arc<dyn ActivityStore>,
    /// The feeds' read models.
    pub models: Arc<dyn ReadModel>,
    /// Catches read models up.
    pub projector: Arc<Projector>,
    /// Subscribe joins it.
    pub hub: Hub,
    /// Settings of Subscribe streams.
    pub subscription: SubscriptionSettings,
    /// Publications per user.
    pub rate: RateLimiter,
    /// Subscribe streams per caller.
    pub streams: StreamSlots,
    /// ListFeed's page tokens.
    pub page_tokens: PageTokens,
}

/// The Feed service over gRPC.
#[derive(Clone)]
pub struct FeedGrpc {
    inner: Arc<FeedParts>,
}

impl std::fmt::Debug for FeedGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedGrpc").finish_non_exhaustive()
    }
}

impl FeedGrpc {
    /// The service built from `parts`.
    pub fn new(parts: FeedParts) -> Self {
        Self { inner: Arc::new(parts) }
    }

    /// The tonic server of the service, with the message size limits given. Subscribe
    /// sends each publication's response encoded once and shared by every stream
    /// ([`mesh_core::transport::encoded`]); the other methods are the generated server's.
    pub fn into_server(self, max_decoding: usize, max_encoding: usize) -> FeedServer {
        let generated = FeedServiceServer::new(self.clone())
            .max_decoding_message_size(max_decoding)
            .max_encoding_message_size(max_encoding);
        StreamingRoute::new(generated, SUBSCRIBE_PATH, SharedSubscribe(self), max_decoding, max_encoding)
    }

    /// Checks a Subscribe request and subscribes: the subscription and the messages of its
    /// stream (which hold the caller's stream slot).
    async fn open(&self, request: Request<pb::SubscribeRequest>) -> Result<(Subscription, FeedMessages), Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = Vec::new();
        let mut requests = Vec::with_capacity(request.channels.len());
        for (index, channel) in request.channels.iter().enumerate() {
            let feed = FeedName::parse(&channel.channel, &format!("channels[{index}].channel"));
            let since = stream_pb::last_position(channel.position.as_ref(), &format!("channels[{index}].position"));
            match (feed, since) {
                (Ok(feed), Ok(since)) => match feed.channel(&caller.tenant) {
                    Ok(channel) => requests.push(ChannelRequest { channel, since }),
                    Err(violation) => violations.push(violation),
                },
                (feed, since) => violations.extend(feed.err().into_iter().chain(since.err())),
            }
        }
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        let slot = self.inner.streams.acquire(&caller.tenant, &caller.user).ok_or_else(|| {
            Status::from(Error::resource_exhausted(
                "TOO_MANY_STREAMS",
                "this caller has the most Subscribe streams allowed open; close one first",
                std::time::Duration::from_secs(1),
            ))
        })?;
        let subscription =
            subscribe(&self.inner.hub, requests, &self.inner.subscription).await.map_err(Status::from)?;
        Ok((subscription, FeedMessages { _slot: slot }))
    }
}

fn status(error: FeedError) -> Status {
    Status::from(Error::from(error))
}

fn invalid(violations: Vec<FieldViolation>) -> Status {
    status(FeedError::Invalid(violations))
}

/// The activity as the API shows it.
pub fn activity_pb(activity: &Activity) -> pb::Activity {
    pb::Activity {
        activity_id: activity.id.to_string(),
        tenant_id: activity.tenant.clone(),
        actor_id: activity.actor.clone(),
        verb: activity.verb.clone(),
        object: Some(pb::ActivityObject {
            object_type: activity.object.object_type.clone(),
            object_id: activity.object.object_id.clone(),
        }),
        text: activity.text.clone(),
        metadata: activity.metadata.iter().map(|(key, value)| (key.to_owned(), value.to_owned())).collect(),
        create_time: Some(stream_pb::timestamp(activity.create_time)),
    }
}

fn positions_pb(positions: &[(FeedName, Position)]) -> Vec<mesh_proto::mesh::stream::v1::ChannelPosition> {
    positions
        .iter()
        .map(|(feed, position)| mesh_proto::mesh::stream::v1::ChannelPosition {
            channel: feed.to_string(),
            position: Some(stream_pb::position(position)),
        })
        .collect()
}

fn activity_id(raw: &str) -> Result<ActivityId, Status> {
    ActivityId::parse(raw, "activity_id").map_err(|violation| invalid(vec![violation]))
}

#[tonic::async_trait]
impl FeedService for FeedGrpc {
    async fn publish_activity(
        &self,
        request: Request<pb::PublishActivityRequest>,
    ) -> Result<Response<pb::PublishActivityResponse>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let object = request.object.as_ref().map(|object| (object.object_type.as_str(), object.object_id.as_str()));
        let mut violations = Vec::new();
        let new = NewActivity::parse(&request.verb, object, &request.text, request.metadata)
            .map_err(|errors| violations.extend(errors))
            .ok();
        let request_id = RequestId::parse(&request.request_id, "request_id").map_err(|v| violations.push(v)).ok();
        let (Some(new), Some(request_id)) = (new, request_id) else {
            return Err(invalid(violations));
        };
        if let Err(retry_after) = self.inner.rate.take(&caller.tenant, &caller.user, Instant::now()) {
            return Err(status(FeedError::RateLimited { retry_after }));
        }
        let activity = Activity::new(ActivityId::generate(), &caller.tenant, &caller.user, new, SystemTime::now());
        let published = self.inner.store.publish(activity, request_id.as_ref()).await.map_err(status)?;
        Ok(Response::new(pb::PublishActivityResponse {
            activity: Some(activity_pb(&published.activity)),
            positions: positions_pb(&published.positions),
        }))
    }

    async fn delete_activity(
        &self,
        request: Request<pb::DeleteActivityRequest>,
    ) -> Result<Response<pb::DeleteActivityResponse>, Status> {
        let caller = caller(&request)?.clone();
        let id = activity_id(&request.get_ref().activity_id)?;
        let deleter = Deleter { user: &caller.user, admin: caller.has_scope(ADMIN) };
        let positions =
            self.inner.store.delete(&caller.tenant, &id, deleter, SystemTime::now()).await.map_err(status)?;
        Ok(Response::new(pb::DeleteActivityResponse { positions: positions_pb(&positions) }))
    }

    async fn get_activity(
        &self,
        request: Request<pb::GetActivityRequest>,
    ) -> Result<Response<pb::GetActivityResponse>, Status> {
        let caller = caller(&request)?.clone();
        let id = activity_id(&request.get_ref().activity_id)?;
        let activity = self.inner.store.get(&caller.tenant, &id).await.map_err(status)?;
        Ok(Response::new(pb::GetActivityResponse { activity: Some(activity_pb(&activity)) }))
    }

    async fn list_feed(&self, request: Request<pb::ListFeedRequest>) -> Result<Response<pb::ListFeedResponse>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = Vec::new();
        let feed = FeedName::parse(&request.feed, "feed").map_err(|v| violations.push(v)).ok();
        let page_size = match usize::try_from(request.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
            Err(_) => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                0
            }
        };
        let Some(feed) = feed else {
            return Err(invalid(violations));
        };
        let before = match request.page_token.as_str() {
            "" => None,
            raw => self
                .inner
                .page_tokens
                .open(raw, "page_token", &caller.tenant, &caller.user, &feed)
                .map_err(|v| violations.push(v))
                .ok(),
        };
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        self.inner.projector.catch_up(&caller.tenant, &feed).await.map_err(status)?;
        // One entry more than the page: a token only when something older exists.
        let mut page = self.inner.models.page(&caller.tenant, &feed, before, page_size + 1).await.map_err(status)?;
        let more = page.entries.len() > page_size;
        page.entries.truncate(page_size);
        let ids: Vec<ActivityId> = page.entries.iter().map(|(_, id)| id.clone()).collect();
        let activities = self.inner.store.get_many(&caller.tenant, &ids).await.map_err(status)?;
        let next_page_token = match page.entries.last() {
            Some((sequence, _)) if more => self.inner.page_tokens.seal(&caller.tenant, &caller.user, &feed, *sequence),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListFeedResponse {
            activities: activities.iter().map(activity_pb).collect(),
            next_page_token,
            position: page.watermark.as_ref().map(stream_pb::position),
        }))
    }

    async fn rebuild_feeds(
        &self,
        request: Request<pb::RebuildFeedsRequest>,
    ) -> Result<Response<pb::RebuildFeedsResponse>, Status> {
        let caller = caller(&request)?.clone();
        if request.get_ref().tenant_id.is_empty() {
            return Err(invalid(vec![FieldViolation::new("tenant_id", "required: the caller's own tenant")]));
        }
        if !caller.has_scope(ADMIN) || request.get_ref().tenant_id != caller.tenant {
            return Err(status(FeedError::PermissionDenied(
                "rebuilding read models takes the admin scope, for the caller's own tenant",
            )));
        }
        let rebuilt = self.inner.projector.rebuild(&caller.tenant).await.map_err(status)?;
        tracing::info!(tenant = %caller.tenant, feeds = rebuilt.feeds, entries = rebuilt.entries, "feed read models rebuilt");
        Ok(Response::new(pb::RebuildFeedsResponse {
            feeds: i32::try_from(rebuilt.feeds).unwrap_or(i32::MAX),
            entries: i64::try_from(rebuilt.entries).unwrap_or(i64::MAX),
        }))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (subscription, messages) = self.open(request).await?;
        let stream = ContractStream::new(subscription, messages, self.inner.subscription.heartbeat_interval);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The Feed service as meshd serves it: the generated server, with Subscribe through
/// [`SharedSubscribe`].
pub type FeedServer = StreamingRoute<FeedServiceServer<FeedGrpc>, SharedSubscribe, pb::SubscribeRequest>;

/// The path of Subscribe.
const SUBSCRIBE_PATH: &str = "/mesh.feed.v1.FeedService/Subscribe";

/// Subscribe with each publication's response encoded once per process and shared by
/// every stream that sends it.
#[derive(Clone)]
pub struct SharedSubscribe(FeedGrpc);

impl std::fmt::Debug for SharedSubscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSubscribe").finish_non_exhaustive()
    }
}

/// The encoded responses of a shared Subscribe.
type EncodedStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send + 'static>>;

impl tonic::server::ServerStreamingService<pb::SubscribeRequest> for SharedSubscribe {
    type Response = Encoded;
    type ResponseStream = EncodedStream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<EncodedStream>, Status>> + Send>>;

    fn call(&mut self, request: Request<pb::SubscribeRequest>) -> Self::Future {
        let feed = self.0.clone();
        Box::pin(async move {
            let (subscription, messages) = feed.open(request).await?;
            let messages = SharedEncoding::new(messages, "mesh.feed.v1.SubscribeResponse");
            let stream = ContractStream::new(subscription, messages, feed.inner.subscription.heartbeat_interval);
            Ok(Response::new(Box::pin(stream) as EncodedStream))
        })
    }
}

/// The Subscribe responses of the stream contract; holds the caller's stream slot.
struct FeedMessages {
    _slot: StreamSlot,
}

impl ContractMessages for FeedMessages {
    type Message = pb::SubscribeResponse;

    fn confirmed(&self, confirmed: SubscriptionConfirmed) -> Self::Message {
        pb::SubscribeResponse { event: Some(Event::Confirmed(confirmed)) }
    }

    fn heartbeat(&self, heartbeat: Heartbeat) -> Self::Message {
        pb::SubscribeResponse { event: Some(Event::Heartbeat(heartbeat)) }
    }

    fn publication(&mut self, publication: &Publication) -> Result<(Self::Message, bool), Status> {
        let position = Some(stream_pb::channel_position(&publication.channel, &publication.position));
        let event = match FeedEvent::decode(&publication.payload).map_err(status)? {
            FeedEvent::Published(activity) => {
                Event::Activity(pb::ActivityEvent { position, activity: Some(activity_pb(&activity)) })
            }
            FeedEvent::Deleted(tombstone) => Event::Tombstone(pb::ActivityTombstone {
                position,
                activity_id: tombstone.id.to_string(),
                actor_id: tombstone.actor,
                delete_time: Some(stream_pb::timestamp(tombstone.delete_time)),
            }),
        };
        Ok((pb::SubscribeResponse { event: Some(event) }, false))
    }
}
