//! The gRPC adapter of `mesh.session.v1.SessionService`: decode, check who may do what,
//! validate into domain types, call the store, map the result. Nothing here decides a
//! session rule; the domain and the store do.
//!
//! Who may reach which session (see session.proto): user access tokens (with a `sid`) act on
//! their own sessions, and with scope `admin` may also Get, Touch and Delete any session of
//! their tenant; service tokens (no `sid`) may only CreateSession with `sessions.create`, and
//! Touch and Delete any session of their tenant with `sessions.admin`. Anything else is
//! PERMISSION_DENIED; a session out of reach is NOT_FOUND, like a missing one.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::auth::{Caller, Revocations};
use mesh_core::broker::hub::Hub;
use mesh_core::broker::subscription::{ChannelRequest, SubscriptionSettings, subscribe};
use mesh_core::broker::{ChannelKey, History, Position, Publication};
use mesh_core::transport::stream::{ContractMessages, ContractStream};
use mesh_core::transport::{caller, stream as stream_pb};
use mesh_core::{Error, FieldViolation};
use mesh_proto::mesh::auth::v1::RevocationReason;
use mesh_proto::mesh::session::v1 as pb;
use mesh_proto::mesh::stream::v1::{Heartbeat, SubscriptionConfirmed};
use pb::session_service_server::{SessionService, SessionServiceServer};
use pb::watch_session_response::Event;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::SessionError;
use crate::domain::{
    Attributes, AttributesPatch, ExpectedVersion, RequestId, Session, SessionChange, SessionChangeKind, SessionId,
};
use crate::store::{ListCursor, SessionStore, channel_of, decode_change};

/// Page size of ListSessions when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page of ListSessions; larger requests are cut to it.
pub const MAX_LIST_PAGE_SIZE: usize = 100;

/// Scope of user tokens that reach every session of their tenant (Get, Touch, Delete).
const ADMIN: &str = "admin";
/// Scope of service tokens that may create sessions.
const SESSIONS_CREATE: &str = "sessions.create";
/// Scope of service tokens that may touch and delete any session of their tenant.
const SESSIONS_ADMIN: &str = "sessions.admin";

/// The Session service over gRPC.
#[derive(Clone)]
pub struct SessionGrpc {
    store: Arc<dyn SessionStore>,
    hub: Hub,
    subscription: SubscriptionSettings,
    idle_ttl: Duration,
    /// Revokes the access tokens of sessions deleted by their users or an admin, and how
    /// long such a revocation must hold.
    revocations: Option<(Arc<Revocations>, Duration)>,
}

impl std::fmt::Debug for SessionGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGrpc").field("idle_ttl", &self.idle_ttl).finish_non_exhaustive()
    }
}

impl SessionGrpc {
    /// The service on `store`; WatchSession subscribes through `hub` with `subscription`;
    /// `idle_ttl` is reported in every session.
    pub fn new(store: Arc<dyn SessionStore>, hub: Hub, subscription: SubscriptionSettings, idle_ttl: Duration) -> Self {
        Self { store, hub, subscription, idle_ttl, revocations: None }
    }

    /// DeleteSession called with a user's token (its own session, or any with `admin`) also
    /// revokes the session's access tokens through `revocations`, for `hold` (the access
    /// TTL plus the verification leeway). Deletions with a service token come from the Auth
    /// service, which revokes before it deletes.
    pub fn with_revocations(mut self, revocations: Arc<Revocations>, hold: Duration) -> Self {
        self.revocations = Some((revocations, hold));
        self
    }

    /// The tonic server of the service, with the message size limits given.
    pub fn into_server(self, max_decoding: usize, max_encoding: usize) -> SessionServiceServer<Self> {
        SessionServiceServer::new(self).max_decoding_message_size(max_decoding).max_encoding_message_size(max_encoding)
    }

    fn session(&self, session: Session) -> pb::Session {
        pb::Session {
            session_id: session.id.to_string(),
            tenant_id: session.tenant,
            user_id: session.user,
            attributes: session.attributes.into_map().into_iter().collect(),
            version: session.version.get(),
            create_time: Some(stream_pb::timestamp(session.create_time)),
            update_time: Some(stream_pb::timestamp(session.update_time)),
            expire_time: Some(stream_pb::timestamp(session.expire_time)),
            max_expire_time: Some(stream_pb::timestamp(session.max_expire_time)),
            idle_ttl: Some(stream_pb::duration(self.idle_ttl)),
        }
    }

    /// The owner of session `id` for `caller` with `reach`: the caller itself, or for a
    /// tenant-wide reach whoever owns it (NotFound when nobody does).
    async fn owner(&self, caller: &Caller, reach: Reach, id: &SessionId) -> Result<String, Status> {
        match reach {
            Reach::Own => Ok(caller.user.clone()),
            Reach::Tenant => Ok(self.store.owner_of(&caller.tenant, id, SystemTime::now()).await.map_err(status)?),
        }
    }
}

/// How far a caller reaches for one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The caller's own sessions.
    Own,
    /// Every session of the caller's tenant.
    Tenant,
}

/// The RPCs, for the access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Create,
    Get,
    Update,
    Touch,
    Delete,
    List,
    Watch,
}

/// What `caller` may reach with `rpc` (see the module docs).
fn reach(caller: &Caller, rpc: Rpc) -> Result<Reach, Status> {
    let reach = if caller.session.is_some() {
        let admin = caller.has_scope(ADMIN) && matches!(rpc, Rpc::Get | Rpc::Touch | Rpc::Delete);
        Some(if admin { Reach::Tenant } else { Reach::Own })
    } else {
        match rpc {
            Rpc::Create if caller.has_scope(SESSIONS_CREATE) => Some(Reach::Own),
            Rpc::Touch | Rpc::Delete if caller.has_scope(SESSIONS_ADMIN) => Some(Reach::Tenant),
            _ => None,
        }
    };
    reach.ok_or_else(|| {
        Status::from(Error::permission_denied(
            "SCOPE_MISSING",
            "this token may not call this method (a service token needs its scope)",
        ))
    })
}

fn status(error: SessionError) -> Status {
    Status::from(Error::from(error))
}

fn invalid(violations: Vec<FieldViolation>) -> Status {
    status(SessionError::Invalid(violations))
}

/// What a parse fails with: one violation or several.
trait Violations {
    fn into_violations(self) -> Vec<FieldViolation>;
}

impl Violations for FieldViolation {
    fn into_violations(self) -> Vec<FieldViolation> {
        vec![self]
    }
}

impl Violations for Vec<FieldViolation> {
    fn into_violations(self) -> Vec<FieldViolation> {
        self
    }
}

/// The value of a parse, with its violations (if any) added to `violations`.
fn collect<T>(result: Result<T, impl Violations>, violations: &mut Vec<FieldViolation>) -> Option<T> {
    result.map_err(|error| violations.extend(error.into_violations())).ok()
}

/// A session id field, or INVALID_ARGUMENT.
fn session_id(raw: &str) -> Result<SessionId, Status> {
    SessionId::parse(raw, "session_id").map_err(|violation| invalid(vec![violation]))
}

#[tonic::async_trait]
impl SessionService for SessionGrpc {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let caller = caller(&request)?.clone();
        reach(&caller, Rpc::Create)?;
        let request = request.into_inner();
        let mut violations = Vec::new();
        let attributes = collect(Attributes::parse(request.attributes, "attributes"), &mut violations);
        let request_id = collect(RequestId::parse(&request.request_id, "request_id"), &mut violations);
        let (Some(attributes), Some(request_id)) = (attributes, request_id) else {
            return Err(invalid(violations));
        };
        let session = self
            .store
            .create(&caller.tenant, &caller.user, attributes, request_id.as_ref(), SystemTime::now())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateSessionResponse { session: Some(self.session(session)) }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let caller = caller(&request)?.clone();
        let reach = reach(&caller, Rpc::Get)?;
        let id = session_id(&request.get_ref().session_id)?;
        let owner = self.owner(&caller, reach, &id).await?;
        let session = self.store.get(&caller.tenant, &owner, &id, SystemTime::now()).await.map_err(status)?;
        Ok(Response::new(pb::GetSessionResponse { session: Some(self.session(session)) }))
    }

    async fn update_session(
        &self,
        request: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::UpdateSessionResponse>, Status> {
        let caller = caller(&request)?.clone();
        reach(&caller, Rpc::Update)?;
        let request = request.into_inner();
        let mut violations = Vec::new();
        let id = collect(SessionId::parse(&request.session_id, "session_id"), &mut violations);
        let expected = collect(ExpectedVersion::parse(request.expected_version, "expected_version"), &mut violations);
        let patch = collect(
            AttributesPatch::parse(
                request.set_attributes,
                "set_attributes",
                request.remove_attributes,
                "remove_attributes",
            ),
            &mut violations,
        );
        let (Some(id), Some(expected), Some(patch)) = (id, expected, patch) else {
            return Err(invalid(violations));
        };
        let session = self
            .store
            .update(&caller.tenant, &caller.user, &id, expected, &patch, SystemTime::now())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UpdateSessionResponse { session: Some(self.session(session)) }))
    }

    async fn touch_session(
        &self,
        request: Request<pb::TouchSessionRequest>,
    ) -> Result<Response<pb::TouchSessionResponse>, Status> {
        let caller = caller(&request)?.clone();
        let reach = reach(&caller, Rpc::Touch)?;
        let id = session_id(&request.get_ref().session_id)?;
        let owner = self.owner(&caller, reach, &id).await?;
        let session = self.store.touch(&caller.tenant, &owner, &id, SystemTime::now()).await.map_err(status)?;
        Ok(Response::new(pb::TouchSessionResponse { session: Some(self.session(session)) }))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let caller = caller(&request)?.clone();
        let reach = reach(&caller, Rpc::Delete)?;
        let request = request.into_inner();
        let mut violations = Vec::new();
        let id = collect(SessionId::parse(&request.session_id, "session_id"), &mut violations);
        let expected = match request.expected_version {
            Some(raw) => collect(ExpectedVersion::parse(raw, "expected_version"), &mut violations).map(Some),
            None => Some(None),
        };
        let (Some(id), Some(expected)) = (id, expected) else {
            return Err(invalid(violations));
        };
        let owner = self.owner(&caller, reach, &id).await?;
        if let Some((revocations, hold)) = &self.revocations
            && caller.session.is_some()
        {
            // Revoked first (a session that does not exist, or whose delete would be refused
            // for its version, is not), so a failure leaves the session in place for the
            // retry rather than its tokens valid.
            let current = self.store.peek(&caller.tenant, &owner, &id, SystemTime::now()).await.map_err(status)?;
            if let Some(expected) = expected {
                expected.check(current.version).map_err(status)?;
            }
            revocations
                .revoke_sessions(
                    &caller.tenant,
                    &owner,
                    vec![id.to_string()],
                    Vec::new(),
                    RevocationReason::SessionEnded,
                    *hold,
                )
                .await
                .map_err(Status::from)?;
        }
        self.store.delete(&caller.tenant, &owner, &id, expected, SystemTime::now()).await.map_err(status)?;
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = caller(&request)?.clone();
        reach(&caller, Rpc::List)?;
        let request = request.into_inner();
        let mut violations = Vec::new();
        let page_size = match usize::try_from(request.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_LIST_PAGE_SIZE),
            Err(_) => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                0
            }
        };
        let after = match request.page_token.as_str() {
            "" => None,
            raw => collect(ListCursor::parse_token(raw, "page_token", &caller.tenant, &caller.user), &mut violations),
        };
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        let page = self
            .store
            .list(&caller.tenant, &caller.user, page_size, after.as_ref(), SystemTime::now())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            next_page_token: page.next.map(|next| next.to_token(&caller.tenant, &caller.user)).unwrap_or_default(),
            sessions: page.sessions.into_iter().map(|session| self.session(session)).collect(),
        }))
    }

    type WatchSessionStream = Pin<Box<dyn Stream<Item = Result<pb::WatchSessionResponse, Status>> + Send + 'static>>;

    async fn watch_session(
        &self,
        request: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let caller = caller(&request)?.clone();
        reach(&caller, Rpc::Watch)?;
        let request = request.into_inner();
        let mut violations = Vec::new();
        let id = collect(SessionId::parse(&request.session_id, "session_id"), &mut violations);
        let since = collect(stream_pb::last_position(request.last_position.as_ref(), "last_position"), &mut violations);
        let (Some(id), Some(since)) = (id, since) else {
            return Err(invalid(violations));
        };
        let channel = channel_of(&caller.tenant, &id).map_err(status)?;
        // Subscribe before checking the session: a change committed after the check is then
        // already on its way to this stream.
        let requests = vec![ChannelRequest { channel: channel.clone(), since: since.clone() }];
        let subscription = subscribe(&self.hub, requests, &self.subscription).await.map_err(Status::from)?;
        match self.store.peek(&caller.tenant, &caller.user, &id, SystemTime::now()).await {
            Ok(_) => {}
            Err(SessionError::NotFound) => {
                // An ended session: only a client whose missed changes, through the end,
                // are all still in history may watch them.
                let Some(since) = since else {
                    return Err(status(SessionError::NotFound));
                };
                if !self.replay_reaches_the_end(&channel, &caller, &id, &since).await? {
                    return Err(status(SessionError::NotFound));
                }
            }
            Err(error) => return Err(status(error)),
        }
        let messages = WatchMessages { tenant: caller.tenant, id, service: self.clone() };
        let watch = ContractStream::new(subscription, messages, self.subscription.heartbeat_interval);
        Ok(Response::new(Box::pin(watch)))
    }
}

impl SessionGrpc {
    /// Whether the history of `channel` after `since` holds the end (DELETED or EXPIRED) of
    /// `caller`'s session `id`.
    async fn replay_reaches_the_end(
        &self,
        channel: &ChannelKey,
        caller: &Caller,
        id: &SessionId,
        since: &Position,
    ) -> Result<bool, Status> {
        let history = self
            .hub
            .broker()
            .history(channel, since, self.subscription.history_limit)
            .await
            .map_err(|error| Status::from(Error::from(error)))?;
        let History::Recovered(missed) = history else {
            return Ok(false);
        };
        Ok(missed.iter().any(|publication| {
            decode_change(&caller.tenant, id, &publication.payload)
                .is_ok_and(|change| change.owner == caller.user && change.kind.ends_session())
        }))
    }

    fn change(&self, change: SessionChange, channel: &ChannelKey, position: &Position) -> pb::SessionChange {
        let kind = match change.kind {
            SessionChangeKind::Created => pb::SessionChangeKind::Created,
            SessionChangeKind::Updated => pb::SessionChangeKind::Updated,
            SessionChangeKind::Touched => pb::SessionChangeKind::Touched,
            SessionChangeKind::Deleted => pb::SessionChangeKind::Deleted,
            SessionChangeKind::Expired => pb::SessionChangeKind::Expired,
        };
        pb::SessionChange {
            position: Some(stream_pb::channel_position(channel, position)),
            kind: kind.into(),
            session_id: change.session_id.to_string(),
            version: change.version.get(),
            session: change.session.map(|session| self.session(session)),
            change_time: Some(stream_pb::timestamp(change.at)),
        }
    }
}

/// The WatchSession responses of the stream contract; the stream ends OK after the
/// session's final change.
struct WatchMessages {
    tenant: String,
    id: SessionId,
    service: SessionGrpc,
}

impl ContractMessages for WatchMessages {
    type Message = pb::WatchSessionResponse;

    fn confirmed(&self, confirmed: SubscriptionConfirmed) -> Self::Message {
        pb::WatchSessionResponse { event: Some(Event::Confirmed(confirmed)) }
    }

    fn heartbeat(&self, heartbeat: Heartbeat) -> Self::Message {
        pb::WatchSessionResponse { event: Some(Event::Heartbeat(heartbeat)) }
    }

    fn publication(&mut self, publication: &Publication) -> Result<(Self::Message, bool), Status> {
        let change = decode_change(&self.tenant, &self.id, &publication.payload)
            .map_err(|error| Status::from(Error::internal(anyhow::anyhow!("{error}"))))?;
        let last = change.kind.ends_session();
        let change = self.service.change(change, &publication.channel, &publication.position);
        Ok((pb::WatchSessionResponse { event: Some(Event::Change(change)) }, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(session: Option<&str>, scopes: &[&str]) -> Caller {
        Caller {
            tenant: "acme".into(),
            user: "alice".into(),
            session: session.map(str::to_owned),
            token_id: "t1".into(),
            scopes: scopes.iter().map(|scope| mesh_core::auth::Scope((*scope).to_owned())).collect(),
            expires_at: SystemTime::now(),
        }
    }

    #[test]
    fn a_user_token_reaches_its_own_sessions_and_admin_its_tenant_for_get_touch_delete() {
        let user = caller(Some("s1"), &[]);
        for rpc in [Rpc::Create, Rpc::Get, Rpc::Update, Rpc::Touch, Rpc::Delete, Rpc::List, Rpc::Watch] {
            assert_eq!(reach(&user, rpc).unwrap(), Reach::Own, "{rpc:?}");
        }
        let admin = caller(Some("s1"), &[ADMIN]);
        for rpc in [Rpc::Get, Rpc::Touch, Rpc::Delete] {
            assert_eq!(reach(&admin, rpc).unwrap(), Reach::Tenant, "{rpc:?}");
        }
        for rpc in [Rpc::Create, Rpc::Update, Rpc::List, Rpc::Watch] {
            assert_eq!(reach(&admin, rpc).unwrap(), Reach::Own, "{rpc:?}");
        }
    }

    #[test]
    fn a_service_token_may_do_only_what_its_scopes_say() {
        let creator = caller(None, &[SESSIONS_CREATE]);
        assert_eq!(reach(&creator, Rpc::Create).unwrap(), Reach::Own);
        let admin = caller(None, &[SESSIONS_ADMIN]);
        assert_eq!(reach(&admin, Rpc::Touch).unwrap(), Reach::Tenant);
        assert_eq!(reach(&admin, Rpc::Delete).unwrap(), Reach::Tenant);
        let bare = caller(None, &[ADMIN]);
        for rpc in [Rpc::Create, Rpc::Get, Rpc::Update, Rpc::Touch, Rpc::Delete, Rpc::List, Rpc::Watch] {
            assert_eq!(reach(&bare, rpc).unwrap_err().code(), tonic::Code::PermissionDenied, "{rpc:?}");
        }
        assert_eq!(reach(&admin, Rpc::Get).unwrap_err().code(), tonic::Code::PermissionDenied);
    }
}
