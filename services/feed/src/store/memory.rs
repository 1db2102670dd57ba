//! The memory store: the embedded default and the reference of the conformance suite.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use mesh_core::broker::{Broker, BrokerError, Position};
use mesh_core::jobs::JobQueue;
use mesh_core::request_id::{REQUEST_ID_TTL, RequestId};
use tokio::sync::Mutex;

use super::{ActivityStore, BoxFuture, Deleter, NOT_YOURS, Published, feeds_of};
use crate::domain::{Activity, ActivityId, FeedError, FeedEvent, FeedName, Tombstone};
use crate::projection::{FeedJob, feed_queue};

/// Activity records in memory; events go to the given broker, their jobs to the given
/// queue.
pub struct MemoryActivityStore {
    broker: Arc<dyn Broker>,
    jobs: Arc<dyn JobQueue>,
    /// Held across the publications, so record and events change together.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    records: HashMap<(String, ActivityId), Activity>,
    requests: HashMap<(String, String, RequestId), (Published, SystemTime)>,
}

impl std::fmt::Debug for MemoryActivityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryActivityStore").finish_non_exhaustive()
    }
}

impl MemoryActivityStore {
    /// An empty store publishing on `broker` and enqueueing feed jobs on `jobs`.
    pub fn new(broker: Arc<dyn Broker>, jobs: Arc<dyn JobQueue>) -> Self {
        Self { broker, jobs, state: Mutex::new(State::default()) }
    }

    async fn append(
        &self,
        tenant: &str,
        actor: &str,
        event: &FeedEvent,
    ) -> Result<Vec<(FeedName, Position)>, FeedError> {
        let payload = Bytes::from(event.encode());
        let mut positions = Vec::with_capacity(2);
        for feed in feeds_of(actor) {
            let channel = feed.channel(tenant).map_err(|violation| FeedError::Invalid(vec![violation]))?;
            let position = self.broker.publish(&channel, payload.clone()).await.map_err(broker_error)?;
            positions.push((feed, position));
        }
        let id = FeedJob::id(event)?;
        let job = FeedJob::payload(tenant, &positions, &payload);
        self.jobs.enqueue(&feed_queue(), &id, job).await.map_err(|error| FeedError::Unavailable(error.to_string()))?;
        Ok(positions)
    }
}

fn broker_error(error: BrokerError) -> FeedError {
    match error {
        BrokerError::PayloadTooLarge { size, limit } => super::redis::too_large(size, limit),
        BrokerError::Unavailable(_) => FeedError::Unavailable(error.to_string()),
    }
}

impl ActivityStore for MemoryActivityStore {
    fn publish<'a>(
        &'a self,
        activity: Activity,
        request_id: Option<&'a RequestId>,
    ) -> BoxFuture<'a, Result<Published, FeedError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let now = SystemTime::now();
            state.requests.retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < REQUEST_ID_TTL);
            let request_key = request_id.map(|id| (activity.tenant.clone(), activity.actor.clone(), id.clone()));
            if let Some((first, _)) = request_key.as_ref().and_then(|key| state.requests.get(key)) {
                return Ok(first.clone());
            }
            let positions =
                self.append(&activity.tenant, &activity.actor, &FeedEvent::Published(activity.clone())).await?;
            state.records.insert((activity.tenant.clone(), activity.id.clone()), activity.clone());
            let published = Published { activity, positions };
            if let Some(key) = request_key {
                state.requests.insert(key, (published.clone(), now));
            }
            Ok(published)
        })
    }

    fn get<'a>(&'a self, tenant: &'a str, id: &'a ActivityId) -> BoxFuture<'a, Result<Activity, FeedError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            state.records.get(&(tenant.to_owned(), id.clone())).cloned().ok_or(FeedError::NotFound)
        })
    }

    fn get_many<'a>(
        &'a self,
        tenant: &'a str,
        ids: &'a [ActivityId],
    ) -> BoxFuture<'a, Result<Vec<Activity>, FeedError>> {
        Box::pin(async move {
            let state = self.state.lock().await;
            Ok(ids.iter().filter_map(|id| state.records.get(&(tenant.to_owned(), id.clone())).cloned()).collect())
        })
    }

    fn delete<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a ActivityId,
        deleter: Deleter<'a>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<(FeedName, Position)>, FeedError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let key = (tenant.to_owned(), id.clone());
            let actor = state.records.get(&key).map(|activity| activity.actor.clone()).ok_or(FeedError::NotFound)?;
            if actor != deleter.user && !deleter.admin {
                return Err(FeedError::PermissionDenied(NOT_YOURS));
            }
            let tombstone = Tombstone {
                id: id.clone(),
                actor: actor.clone(),
                delete_time: crate::domain::activity::to_millis(now),
            };
            let positions = self.append(tenant, &actor, &FeedEvent::Deleted(tombstone)).await?;
            state.records.remove(&key);
            Ok(positions)
        })
    }
}
