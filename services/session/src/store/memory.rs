//! [`MemoryStore`]: sessions in a map of this process (embedded mode and tests).
//!
//! One lock guards the map; a mutation computes the new state with the domain's reference
//! rules, enqueues its audit event, publishes the change on the broker and only then
//! commits, all under the lock, so a change without its event cannot exist and events and
//! changes come in the order of the commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::broker::Broker;
use mesh_core::jobs::JobQueue;
use tokio::sync::Mutex;

use super::{
    BoxFuture, ListCursor, SessionPage, SessionStore, channel_of, clamp_page_size, encode_change, millis,
    truncate_to_millis,
};
use crate::SessionError;
use crate::audit::enqueue_audit;
use crate::domain::{
    Attributes, AttributesPatch, AuditEvent, ExpectedVersion, Lifetimes, REQUEST_ID_TTL, RequestId, Session,
    SessionChange, SessionChangeKind, SessionId,
};

/// The in-memory [`SessionStore`]; audit events go to the given job queue (queue
/// [`AUDIT_QUEUE`](crate::audit::AUDIT_QUEUE)), changes to the given broker.
pub struct MemoryStore {
    lifetimes: Lifetimes,
    jobs: Arc<dyn JobQueue>,
    broker: Arc<dyn Broker>,
    owners: Mutex<HashMap<Owner, HashMap<SessionId, Session>>>,
    /// CreateSession idempotency keys: the session each created and until when it counts.
    /// Only touched while `owners` is locked.
    requests: std::sync::Mutex<HashMap<(Owner, RequestId), (SessionId, SystemTime)>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("lifetimes", &self.lifetimes).finish_non_exhaustive()
    }
}

/// The (tenant, user) that owns sessions.
type Owner = (String, String);

impl MemoryStore {
    /// An empty store with `lifetimes`, enqueueing audit events on `jobs` and publishing
    /// changes on `broker`.
    pub fn new(jobs: Arc<dyn JobQueue>, broker: Arc<dyn Broker>, lifetimes: Lifetimes) -> Self {
        Self { lifetimes, jobs, broker, owners: Mutex::new(HashMap::new()), requests: Default::default() }
    }

    /// Records a change of `session` (the state after it) at `now`: its audit event on the
    /// job queue, then the change on its channel. Called under the lock, before the commit.
    async fn record(&self, kind: SessionChangeKind, session: &Session, now: SystemTime) -> Result<(), SessionError> {
        let event = AuditEvent::of(kind, session, now);
        enqueue_audit(&*self.jobs, &event).await?;
        let channel = channel_of(&session.tenant, &session.id)?;
        let payload = encode_change(&SessionChange::of(kind, session, now));
        self.broker.publish(&channel, payload).await.map_err(|error| SessionError::Unavailable(error.to_string()))?;
        Ok(())
    }
}

fn owner(tenant: &str, user: &str) -> Owner {
    (tenant.to_owned(), user.to_owned())
}

/// The caller's live session `id` in `sessions` (an expired one stays until the sweeper
/// ends it, but is NotFound).
fn live<'m>(
    sessions: Option<&'m mut HashMap<SessionId, Session>>,
    id: &SessionId,
    now: SystemTime,
) -> Result<&'m mut Session, SessionError> {
    let session = sessions.and_then(|sessions| sessions.get_mut(id)).ok_or(SessionError::NotFound)?;
    if session.is_expired(now) {
        return Err(SessionError::NotFound);
    }
    Ok(session)
}

impl SessionStore for MemoryStore {
    fn create<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        attributes: Attributes,
        request: Option<&'a RequestId>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut owners = self.owners.lock().await;
            let request = request.map(|id| (owner(tenant, user), id.clone()));
            if let Some(key) = &request {
                let requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let first = requests.get(key).filter(|(_, until)| now < *until).map(|(id, _)| id);
                let first = first.and_then(|id| owners.get(&key.0)?.get(id)).filter(|s| !s.is_expired(now));
                if let Some(session) = first {
                    return Ok(session.clone());
                }
            }
            let session = Session::create(SessionId::generate(), tenant, user, attributes, now, &self.lifetimes);
            self.record(SessionChangeKind::Created, &session, now).await?;
            owners.entry(owner(tenant, user)).or_default().insert(session.id.clone(), session.clone());
            if let Some(key) = request {
                let mut requests = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                requests.retain(|_, (_, until)| now < *until);
                requests.insert(key, (session.id.clone(), now + REQUEST_ID_TTL));
            }
            Ok(session)
        })
    }

    fn get<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut owners = self.owners.lock().await;
            let session = live(owners.get_mut(&owner(tenant, user)), id, now)?;
            *session = session.clone().read(now, &self.lifetimes);
            Ok(session.clone())
        })
    }

    fn peek<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut owners = self.owners.lock().await;
            live(owners.get_mut(&owner(tenant, user)), id, now).map(|session| session.clone())
        })
    }

    fn owner_of<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<String, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let owners = self.owners.lock().await;
            owners
                .iter()
                .filter(|((owner_tenant, _), _)| owner_tenant == tenant)
                .find_map(|((_, user), sessions)| sessions.get(id).filter(|s| !s.is_expired(now)).map(|_| user.clone()))
                .ok_or(SessionError::NotFound)
        })
    }

    fn update<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        expected: ExpectedVersion,
        patch: &'a AttributesPatch,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut owners = self.owners.lock().await;
            let session = live(owners.get_mut(&owner(tenant, user)), id, now)?;
            let updated = session.clone().updated(expected, patch, now, &self.lifetimes)?;
            self.record(SessionChangeKind::Updated, &updated, now).await?;
            *session = updated.clone();
            Ok(updated)
        })
    }

    fn touch<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Session, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut owners = self.owners.lock().await;
            let session = live(owners.get_mut(&owner(tenant, user)), id, now)?;
            let touched = session.clone().touched(now, &self.lifetimes);
            self.record(SessionChangeKind::Touched, &touched, now).await?;
            *session = touched.clone();
            Ok(touched)
        })
    }

    fn delete<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        id: &'a SessionId,
        expected: Option<ExpectedVersion>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<(), SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut owners = self.owners.lock().await;
            let sessions = owners.get_mut(&owner(tenant, user));
            let session = live(sessions, id, now)?;
            if let Some(expected) = expected {
                expected.check(session.version)?;
            }
            self.record(SessionChangeKind::Deleted, session, now).await?;
            if let Some(sessions) = owners.get_mut(&owner(tenant, user)) {
                sessions.remove(id);
            }
            Ok(())
        })
    }

    fn list<'a>(
        &'a self,
        tenant: &'a str,
        user: &'a str,
        page_size: usize,
        after: Option<&'a ListCursor>,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<SessionPage, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let page_size = clamp_page_size(page_size);
            let owners = self.owners.lock().await;
            let Some(sessions) = owners.get(&owner(tenant, user)) else {
                return Ok(SessionPage { sessions: Vec::new(), next: None });
            };
            let mut page: Vec<Session> = sessions
                .values()
                .filter(|session| !session.is_expired(now))
                .filter(|session| after.is_none_or(|cursor| cursor.precedes(session)))
                .cloned()
                .collect();
            page.sort_by(|a, b| (millis(b.create_time), &b.id).cmp(&(millis(a.create_time), &a.id)));
            page.truncate(page_size + 1);
            let next = (page.len() > page_size).then(|| ListCursor::after(&page[page_size - 1]));
            page.truncate(page_size);
            Ok(SessionPage { sessions: page, next })
        })
    }

    fn expire_due(&self, now: SystemTime, limit: usize) -> BoxFuture<'_, Result<usize, SessionError>> {
        Box::pin(async move {
            let now = truncate_to_millis(now);
            let mut owners = self.owners.lock().await;
            let due: Vec<(Owner, SessionId)> = owners
                .iter()
                .flat_map(|(owner, sessions)| {
                    sessions.values().filter(|s| s.is_expired(now)).map(move |s| (owner.clone(), s.id.clone()))
                })
                .take(limit)
                .collect();
            for (owner, id) in &due {
                let sessions = owners.get_mut(owner).expect("the owner was just seen");
                let session = sessions.get(id).expect("the session was just seen");
                self.record(SessionChangeKind::Expired, session, now).await?;
                sessions.remove(id);
                if sessions.is_empty() {
                    owners.remove(owner);
                }
            }
            Ok(due.len())
        })
    }
}
