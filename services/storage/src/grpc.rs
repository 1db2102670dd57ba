//! The gRPC adapter of `mesh.storage.v1.StorageService`: decode, validate into domain types,
//! call [`Storage`], map the result. Tenant and user come from the verified token only.

use std::pin::Pin;
use std::sync::Arc;

use mesh_core::FieldViolation;
use mesh_core::auth::Caller;
use mesh_core::broker::Publication;
use mesh_core::broker::hub::Hub;
use mesh_core::broker::subscription::{ChannelRequest, SubscriptionSettings, subscribe};
use mesh_core::limits::{StreamSlot, StreamSlots};
use mesh_core::request_id::RequestId;
use mesh_core::sealed::Sealer;
use mesh_core::transport::stream::{ContractMessages, ContractStream};
use mesh_core::transport::{caller, stream as stream_pb};
use mesh_proto::mesh::storage::v1 as pb;
use mesh_proto::mesh::stream::v1::{Heartbeat, SubscriptionConfirmed};
use pb::storage_service_server::{StorageService, StorageServiceServer};
use pb::watch_files_response::Event;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::StorageError;
use crate::domain::{FailureReason, FileId, FileRecord, FileStatus, NewUpload};
use crate::service::{Actor, Storage};
use crate::store::{ListCursor, changes_channel, decode_change};

/// Page size of ListFiles when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page of ListFiles; larger requests are cut to it.
pub const MAX_PAGE_SIZE: usize = 100;

/// Scope of user tokens that may delete any file of their tenant.
const ADMIN: &str = "admin";

/// The Storage service over gRPC.
#[derive(Clone)]
pub struct StorageGrpc {
    storage: Storage,
    hub: Hub,
    subscription: SubscriptionSettings,
    page_tokens: Arc<Sealer>,
    watches: StreamSlots,
}

impl std::fmt::Debug for StorageGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageGrpc").field("storage", &self.storage).finish_non_exhaustive()
    }
}

fn status(error: StorageError) -> Status {
    Status::from(mesh_core::Error::from(error))
}

fn invalid(violations: Vec<FieldViolation>) -> Status {
    status(StorageError::Invalid(violations))
}

/// The caller as the service's operations see it.
fn actor(caller: &Caller) -> Actor<'_> {
    Actor { tenant: &caller.tenant, user: &caller.user, admin: caller.has_scope(ADMIN) }
}

fn file_id(raw: &str) -> Result<FileId, Status> {
    FileId::parse(raw, "file_id").map_err(|violation| invalid(vec![violation]))
}

fn status_pb(status: FileStatus) -> pb::FileStatus {
    match status {
        FileStatus::Pending => pb::FileStatus::Pending,
        FileStatus::Ready => pb::FileStatus::Ready,
        FileStatus::Failed => pb::FileStatus::Failed,
        FileStatus::Deleted => pb::FileStatus::Deleted,
    }
}

/// The file as the API shows it.
pub fn file_pb(file: &FileRecord) -> pb::File {
    let (reason, message) = match &file.failure {
        Some(failure) => {
            let reason = match failure.reason {
                FailureReason::SizeMismatch => pb::FailureReason::SizeMismatch,
                FailureReason::ChecksumMismatch => pb::FailureReason::ChecksumMismatch,
                FailureReason::UploadExpired => pb::FailureReason::UploadExpired,
            };
            (reason, failure.message.clone())
        }
        None => (pb::FailureReason::Unspecified, String::new()),
    };
    pb::File {
        file_id: file.id.to_string(),
        tenant_id: file.tenant.clone(),
        owner_user_id: file.owner.clone(),
        file_name: file.upload.file_name.clone(),
        content_type: file.upload.content_type.clone(),
        size_bytes: i64::try_from(file.upload.size).unwrap_or(i64::MAX),
        sha256: file.upload.sha256.clone().unwrap_or_default(),
        status: status_pb(file.status).into(),
        failure_reason: reason.into(),
        failure_message: message,
        version: file.version,
        create_time: Some(stream_pb::timestamp(file.created_at)),
        update_time: Some(stream_pb::timestamp(file.updated_at)),
    }
}

/// The context a ListFiles page token is bound to.
fn token_context(tenant: &str, user: &str, status: Option<FileStatus>) -> String {
    format!("mesh.storage.v1 files\0{tenant}\0{user}\0{}", status.map_or("ANY", FileStatus::as_str))
}

fn seal_cursor(tokens: &Sealer, context: &str, cursor: &ListCursor) -> String {
    let mut plain = cursor.created_at.to_be_bytes().to_vec();
    plain.extend_from_slice(cursor.id.as_bytes());
    tokens.seal(context, &plain)
}

fn open_cursor(tokens: &Sealer, context: &str, token: &str) -> Result<ListCursor, FieldViolation> {
    let invalid = || FieldViolation::new("page_token", "is not a page token of this list for this caller");
    let plain = tokens.open(token, context).ok_or_else(invalid)?;
    if plain.len() < 8 {
        return Err(invalid());
    }
    let (micros, id) = plain.split_at(8);
    let created_at = i64::from_be_bytes(micros.try_into().map_err(|_| invalid())?);
    let id = String::from_utf8(id.to_vec()).map_err(|_| invalid())?;
    Ok(ListCursor { created_at, id })
}

impl StorageGrpc {
    /// The adapter of `storage`; WatchFiles subscribes through `hub` with `subscription`,
    /// ListFiles seals its page tokens with `page_tokens`.
    pub fn new(storage: Storage, hub: Hub, subscription: SubscriptionSettings, page_tokens: Sealer) -> Self {
        let watches = StreamSlots::new(storage.settings().max_watches_per_caller);
        Self { storage, hub, subscription, page_tokens: Arc::new(page_tokens), watches }
    }

    /// The tonic server with the given message size limits.
    pub fn into_server(self, max_decoding: usize, max_encoding: usize) -> StorageServiceServer<Self> {
        StorageServiceServer::new(self).max_decoding_message_size(max_decoding).max_encoding_message_size(max_encoding)
    }
}

#[tonic::async_trait]
impl StorageService for StorageGrpc {
    async fn create_upload(
        &self,
        request: Request<pb::CreateUploadRequest>,
    ) -> Result<Response<pb::CreateUploadResponse>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let limits = self.storage.settings().limits_of(&caller.tenant);
        let mut violations = Vec::new();
        let upload =
            NewUpload::parse(&request.file_name, &request.content_type, request.size_bytes, &request.sha256, limits)
                .map_err(|errors| violations.extend(errors))
                .ok();
        let request_id = RequestId::parse(&request.request_id, "request_id").map_err(|v| violations.push(v)).ok();
        let (Some(upload), Some(request_id)) = (upload, request_id) else {
            return Err(invalid(violations));
        };
        let actor = actor(&caller);
        let upload = self.storage.create_upload(actor, upload, request_id.as_ref()).await.map_err(status)?;
        let (upload_url, expires, headers) = match upload.url {
            Some(url) => (url.url, Some(stream_pb::timestamp(url.expires_at)), url.headers),
            None => (String::new(), None, Vec::new()),
        };
        Ok(Response::new(pb::CreateUploadResponse {
            file: Some(file_pb(&upload.file)),
            upload_url,
            upload_url_expire_time: expires,
            upload_headers: headers.into_iter().map(|(name, value)| pb::HttpHeader { name, value }).collect(),
        }))
    }

    async fn complete_upload(
        &self,
        request: Request<pb::CompleteUploadRequest>,
    ) -> Result<Response<pb::CompleteUploadResponse>, Status> {
        let caller = caller(&request)?.clone();
        let id = file_id(&request.get_ref().file_id)?;
        let actor = actor(&caller);
        let file = self.storage.complete_upload(actor, &id).await.map_err(status)?;
        Ok(Response::new(pb::CompleteUploadResponse { file: Some(file_pb(&file)) }))
    }

    async fn get_file(&self, request: Request<pb::GetFileRequest>) -> Result<Response<pb::GetFileResponse>, Status> {
        let caller = caller(&request)?.clone();
        let id = file_id(&request.get_ref().file_id)?;
        let file = self.storage.get(&caller.tenant, &id).await.map_err(status)?;
        Ok(Response::new(pb::GetFileResponse { file: Some(file_pb(&file)) }))
    }

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = Vec::new();
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                DEFAULT_PAGE_SIZE
            }
            size => (size as usize).min(MAX_PAGE_SIZE),
        };
        let filter = match pb::FileStatus::try_from(request.status) {
            Ok(pb::FileStatus::Unspecified) => None,
            Ok(pb::FileStatus::Pending) => Some(FileStatus::Pending),
            Ok(pb::FileStatus::Ready) => Some(FileStatus::Ready),
            Ok(pb::FileStatus::Failed) => Some(FileStatus::Failed),
            Ok(pb::FileStatus::Deleted) | Err(_) => {
                violations.push(FieldViolation::new("status", "must be PENDING, READY, FAILED or unspecified"));
                None
            }
        };
        let context = token_context(&caller.tenant, &caller.user, filter);
        let after = match request.page_token.as_str() {
            "" => None,
            token => open_cursor(&self.page_tokens, &context, token).map_err(|v| violations.push(v)).ok(),
        };
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
        let (files, next) = self.storage.list(&caller.tenant, filter, limit, after.as_ref()).await.map_err(status)?;
        Ok(Response::new(pb::ListFilesResponse {
            files: files.iter().map(file_pb).collect(),
            next_page_token: next.map(|cursor| seal_cursor(&self.page_tokens, &context, &cursor)).unwrap_or_default(),
        }))
    }

    async fn create_download_url(
        &self,
        request: Request<pb::CreateDownloadUrlRequest>,
    ) -> Result<Response<pb::CreateDownloadUrlResponse>, Status> {
        let caller = caller(&request)?.clone();
        let id = file_id(&request.get_ref().file_id)?;
        let url = self.storage.download_url(&caller.tenant, &id).await.map_err(status)?;
        Ok(Response::new(pb::CreateDownloadUrlResponse {
            download_url: url.url,
            download_url_expire_time: Some(stream_pb::timestamp(url.expires_at)),
        }))
    }

    async fn delete_file(
        &self,
        request: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let id = file_id(&request.file_id)?;
        if let Some(expected) = request.expected_version
            && expected < 1
        {
            return Err(invalid(vec![FieldViolation::new("expected_version", "must be at least 1 when set")]));
        }
        let actor = actor(&caller);
        self.storage.delete(actor, &id, request.expected_version).await.map_err(status)?;
        Ok(Response::new(pb::DeleteFileResponse {}))
    }

    type WatchFilesStream = Pin<Box<dyn Stream<Item = Result<pb::WatchFilesResponse, Status>> + Send + 'static>>;

    async fn watch_files(
        &self,
        request: Request<pb::WatchFilesRequest>,
    ) -> Result<Response<Self::WatchFilesStream>, Status> {
        let caller = caller(&request)?.clone();
        let since = stream_pb::last_position(request.get_ref().last_position.as_ref(), "last_position")
            .map_err(|violation| invalid(vec![violation]))?;
        let channel = changes_channel(&caller.tenant).map_err(status)?;
        let slot = self.watches.acquire(&caller.tenant, &caller.user).ok_or_else(|| {
            Status::from(mesh_core::Error::resource_exhausted(
                "TOO_MANY_STREAMS",
                "this caller has the most WatchFiles streams allowed open; close one first",
                std::time::Duration::from_secs(1),
            ))
        })?;
        let requests = vec![ChannelRequest { channel, since }];
        let subscription = subscribe(&self.hub, requests, &self.subscription).await.map_err(Status::from)?;
        let messages = WatchMessages { tenant: caller.tenant, _slot: slot };
        Ok(Response::new(Box::pin(ContractStream::new(subscription, messages, self.subscription.heartbeat_interval))))
    }
}

/// The WatchFiles responses of the stream contract; the stream holds its caller's slot.
struct WatchMessages {
    tenant: String,
    _slot: StreamSlot,
}

impl ContractMessages for WatchMessages {
    type Message = pb::WatchFilesResponse;

    fn confirmed(&self, confirmed: SubscriptionConfirmed) -> Self::Message {
        pb::WatchFilesResponse { event: Some(Event::Confirmed(confirmed)) }
    }

    fn heartbeat(&self, heartbeat: Heartbeat) -> Self::Message {
        pb::WatchFilesResponse { event: Some(Event::Heartbeat(heartbeat)) }
    }

    fn publication(&mut self, publication: &Publication) -> Result<(Self::Message, bool), Status> {
        let (file, at) = decode_change(&self.tenant, &publication.payload).map_err(status)?;
        let change = pb::FileChange {
            position: Some(stream_pb::channel_position(&publication.channel, &publication.position)),
            file: Some(file_pb(&file)),
            change_time: Some(stream_pb::timestamp(at)),
        };
        Ok((pb::WatchFilesResponse { event: Some(Event::Change(change)) }, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_open_only_for_their_caller_and_filter() {
        let tokens = Sealer::random();
        let cursor = ListCursor { created_at: 1_763_850_000_123_456, id: "AAAAAAAAAAAAAAAAAAAAAA".into() };
        let context = token_context("acme", "alice", Some(FileStatus::Ready));
        let token = seal_cursor(&tokens, &context, &cursor);
        assert_eq!(open_cursor(&tokens, &context, &token).unwrap(), cursor);
        for other in [
            token_context("globex", "alice", Some(FileStatus::Ready)),
            token_context("acme", "bob", Some(FileStatus::Ready)),
            token_context("acme", "alice", None),
        ] {
            assert_eq!(open_cursor(&tokens, &other, &token).unwrap_err().field, "page_token");
        }
    }
}
