//! The file-metadata repository on the document store: one document per file at
//! `tenants/<tenant>/files/<file id>`, and one per idempotency key at
//! `tenants/<tenant>/upload_requests/<user>:<request id>`.
//!
//! Scheduled removals of objects (of deleted and failed files) are at
//! `tenants/<tenant>/blob_purges/<file id>`.
//!
//! Queries it runs (Firestore needs these composite indexes; see ARCHITECTURE.md):
//! - ListFiles: `files` by `created_at` descending, optionally with `status ==`;
//! - the cleanup job: the `files` collection group with `status == PENDING`,
//!   `upload_expires_at <` a cutoff, ordered by `upload_expires_at`; and the `blob_purges`
//!   collection group by `purge_after <` now (single field).

use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::documents::{
    self, Cursor, Direction, DocKey, Document, DocumentError, DocumentStore, Expect, Fields, Filter, Op, Precondition,
    Query, Version, Write,
};
use mesh_core::request_id::{REQUEST_ID_TTL, RequestId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::domain::{Failure, FileId, FileRecord, FileStatus, NewUpload};
use mesh_core::documents::{from_micros, to_micros};

/// The collection of file metadata.
pub const FILES: &str = "files";
/// The collection of CreateUpload idempotency keys.
pub const UPLOAD_REQUESTS: &str = "upload_requests";
/// The collection of scheduled object removals (deleted and failed files), by file id.
pub const BLOB_PURGES: &str = "blob_purges";

/// A file as stored, with the store's version of its document (for compare-and-set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The file.
    pub file: FileRecord,
    /// The version of its document.
    pub revision: Version,
}

/// What [`Files::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// It saved the new file.
    New(Stored),
    /// The request id was used before (within 24 h): the file it created then.
    Existing(Stored),
}

/// Where a page of ListFiles ended: the last file's creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// The last file's `created_at`, in microseconds.
    pub created_at: i64,
    /// The last file's id.
    pub id: String,
}

/// The stored fields of a file (its id and tenant are the document's key).
#[derive(Debug, Serialize, Deserialize)]
struct StoredFile {
    owner: String,
    file_name: String,
    content_type: String,
    size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    status: FileStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<Failure>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    upload_expires_at: i64,
}

/// The stored fields of an idempotency key.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRequest {
    file_id: String,
    created_at: i64,
}

fn to_fields<T: Serialize>(key: &DocKey, value: &T) -> Result<Fields, StorageError> {
    Ok(documents::to_fields(&key.to_string(), value)?)
}

fn from_fields<T: DeserializeOwned>(document: &Document) -> Result<T, StorageError> {
    Ok(documents::from_fields(document)?)
}

/// The write that schedules the removal of `file`'s object at `at`.
fn purge_write(file: &FileRecord, at: SystemTime) -> Result<Write, StorageError> {
    let key = DocKey::new(&file.tenant, BLOB_PURGES, file.id.as_str())?;
    let fields = to_fields(&key, &serde_json::json!({ "purge_after": to_micros(at) }))?;
    Ok(Write::Put { key, fields, expect: Expect::Any })
}

fn file_key(tenant: &str, id: &FileId) -> Result<DocKey, StorageError> {
    Ok(DocKey::new(tenant, FILES, id.as_str())?)
}

impl StoredFile {
    /// The stored fields of `file`.
    fn of(file: &FileRecord) -> Self {
        Self {
            owner: file.owner.clone(),
            file_name: file.upload.file_name.clone(),
            content_type: file.upload.content_type.clone(),
            size: i64::try_from(file.upload.size).unwrap_or(i64::MAX),
            sha256: file.upload.sha256.clone(),
            status: file.status,
            failure: file.failure.clone(),
            version: file.version,
            created_at: to_micros(file.created_at),
            updated_at: to_micros(file.updated_at),
            upload_expires_at: to_micros(file.upload_expires_at),
        }
    }

    /// The file `key` names, with these fields.
    fn into_record(self, key: &DocKey) -> Result<FileRecord, StorageError> {
        let id = FileId::parse(key.id(), "file_id").map_err(|violation| {
            StorageError::Document(DocumentError::Corrupt { key: key.to_string(), reason: violation.description })
        })?;
        Ok(FileRecord {
            id,
            tenant: key.tenant().to_owned(),
            owner: self.owner,
            upload: NewUpload {
                file_name: self.file_name,
                content_type: self.content_type,
                size: u64::try_from(self.size).unwrap_or(0),
                sha256: self.sha256,
            },
            status: self.status,
            failure: self.failure,
            version: self.version,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
            upload_expires_at: from_micros(self.upload_expires_at),
        })
    }
}

fn encode(file: &FileRecord) -> Result<(DocKey, Fields), StorageError> {
    let key = file_key(&file.tenant, &file.id)?;
    let fields = to_fields(&key, &StoredFile::of(file))?;
    Ok((key, fields))
}

fn decode(document: &Document) -> Result<Stored, StorageError> {
    let file = from_fields::<StoredFile>(document)?.into_record(&document.key)?;
    Ok(Stored { file, revision: document.version })
}

/// File metadata in a document store.
#[derive(Clone)]
pub struct Files {
    documents: Arc<dyn DocumentStore>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").finish_non_exhaustive()
    }
}

impl Files {
    /// The repository on `documents`.
    pub fn new(documents: Arc<dyn DocumentStore>) -> Self {
        Self { documents }
    }

    /// Saves a new file; with a request id, a retry within 24 h returns the file the first
    /// call saved while it exists.
    pub async fn create(&self, file: &FileRecord, request: Option<&RequestId>) -> Result<Created, StorageError> {
        let (key, fields) = encode(file)?;
        let Some(request) = request else {
            let committed = self.documents.commit(vec![Write::Create { key, fields }]).await?;
            return Ok(Created::New(Stored { file: file.clone(), revision: committed.versions[0] }));
        };
        let request_key = DocKey::new(&file.tenant, UPLOAD_REQUESTS, &format!("{}:{request}", file.owner))?;
        let marker = to_fields(
            &request_key,
            &StoredRequest { file_id: file.id.to_string(), created_at: to_micros(file.created_at) },
        )?;
        // Two attempts: the second after replacing an expired key or one whose file is gone.
        let mut expect = None;
        for _ in 0..2 {
            let claim = match expect {
                None => Write::Create { key: request_key.clone(), fields: marker.clone() },
                Some(version) => {
                    Write::Put { key: request_key.clone(), fields: marker.clone(), expect: Expect::Version(version) }
                }
            };
            let writes = vec![claim, Write::Create { key: key.clone(), fields: fields.clone() }];
            match self.documents.commit(writes).await {
                Ok(committed) => {
                    return Ok(Created::New(Stored { file: file.clone(), revision: committed.versions[1] }));
                }
                Err(DocumentError::Precondition {
                    kind: Precondition::AlreadyExists | Precondition::Changed, ..
                }) => {}
                Err(error) => return Err(error.into()),
            }
            let Some(existing) = self.documents.get(std::slice::from_ref(&request_key)).await?.remove(0) else {
                continue;
            };
            let earlier: StoredRequest = from_fields(&existing)?;
            let fresh = from_micros(earlier.created_at) + REQUEST_ID_TTL > file.created_at;
            if fresh
                && let Ok(id) = FileId::parse(&earlier.file_id, "file_id")
                && let Some(stored) = self.get(&file.tenant, &id).await?
            {
                return Ok(Created::Existing(stored));
            }
            expect = Some(existing.version);
        }
        Err(StorageError::Document(DocumentError::Unavailable("the request id is being reused concurrently".into())))
    }

    /// The file `id` of `tenant`, if it exists.
    pub async fn get(&self, tenant: &str, id: &FileId) -> Result<Option<Stored>, StorageError> {
        let key = file_key(tenant, id)?;
        match self.documents.get(std::slice::from_ref(&key)).await?.remove(0) {
            Some(document) => Ok(Some(decode(&document)?)),
            None => Ok(None),
        }
    }

    /// Replaces `current` with `next` if nobody changed it since it was read; otherwise
    /// [`StorageError::Conflict`]. With `purge_after`, the file's object is also scheduled for
    /// removal at that time, in the same commit (see [`Files::due_purges`]).
    pub async fn replace(
        &self,
        current: &Stored,
        next: FileRecord,
        purge_after: Option<SystemTime>,
    ) -> Result<Stored, StorageError> {
        let (key, fields) = encode(&next)?;
        let mut writes = vec![Write::Put { key, fields, expect: Expect::Version(current.revision) }];
        writes.extend(purge_after.map(|at| purge_write(&next, at)).transpose()?);
        match self.documents.commit(writes).await {
            Ok(committed) => Ok(Stored { file: next, revision: committed.versions[0] }),
            Err(DocumentError::Precondition { kind: Precondition::Changed | Precondition::Missing, .. }) => {
                Err(StorageError::Conflict)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes `current` if nobody changed it since it was read (otherwise
    /// [`StorageError::Conflict`]), scheduling its object's removal at `purge_after` in the
    /// same commit: an object written later through a still valid upload URL goes too.
    pub async fn delete(&self, current: &Stored, purge_after: SystemTime) -> Result<(), StorageError> {
        let key = file_key(&current.file.tenant, &current.file.id)?;
        let writes = vec![
            Write::Delete { key, expect: Expect::Version(current.revision) },
            purge_write(&current.file, purge_after)?,
        ];
        match self.documents.commit(writes).await {
            Ok(_) => Ok(()),
            Err(DocumentError::Precondition { .. }) => Err(StorageError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    /// Up to `limit` scheduled object removals of any tenant that are due at `now`: the
    /// tenant and file id of each.
    pub async fn due_purges(&self, now: SystemTime, limit: usize) -> Result<Vec<(String, FileId)>, StorageError> {
        let query = Query::all_tenants(BLOB_PURGES, limit)
            .filter(Filter::new("purge_after", Op::Lt, to_micros(now)))
            .order_by("purge_after", Direction::Ascending);
        let page = self.documents.query(&query).await?;
        page.documents
            .iter()
            .map(|document| {
                let id = FileId::parse(document.key.id(), "file_id").map_err(|violation| {
                    StorageError::Document(DocumentError::Corrupt {
                        key: document.key.to_string(),
                        reason: violation.description,
                    })
                })?;
                Ok((document.key.tenant().to_owned(), id))
            })
            .collect()
    }

    /// Forgets a scheduled removal once the object is gone.
    pub async fn purged(&self, tenant: &str, id: &FileId) -> Result<(), StorageError> {
        let key = DocKey::new(tenant, BLOB_PURGES, id.as_str())?;
        self.documents.commit(vec![Write::Delete { key, expect: Expect::Any }]).await?;
        Ok(())
    }

    /// A page of `tenant`'s files, newest first, optionally of one status.
    pub async fn list(
        &self,
        tenant: &str,
        status: Option<FileStatus>,
        limit: usize,
        after: Option<&ListCursor>,
    ) -> Result<(Vec<FileRecord>, Option<ListCursor>), StorageError> {
        let mut query =
            Query::new(tenant, FILES, limit).order_by("created_at", Direction::Descending).after(after.map(|cursor| {
                Cursor { value: cursor.created_at.into(), tenant: tenant.to_owned(), id: cursor.id.clone() }
            }));
        if let Some(status) = status {
            query = query.filter(Filter::eq("status", status.as_str()));
        }
        let page = self.documents.query(&query).await?;
        let files = page
            .documents
            .iter()
            .map(|document| decode(document).map(|stored| stored.file))
            .collect::<Result<Vec<_>, _>>()?;
        let next = page.next.map(|cursor| ListCursor { created_at: cursor.value.as_i64().unwrap_or(0), id: cursor.id });
        Ok((files, next))
    }

    /// Up to `limit` PENDING files of any tenant whose upload URL expired before `cutoff`,
    /// the longest expired first.
    pub async fn abandoned(&self, cutoff: SystemTime, limit: usize) -> Result<Vec<Stored>, StorageError> {
        let query = Query::all_tenants(FILES, limit)
            .filter(Filter::eq("status", FileStatus::Pending.as_str()))
            .filter(Filter::new("upload_expires_at", Op::Lt, to_micros(cutoff)))
            .order_by("upload_expires_at", Direction::Ascending);
        let page = self.documents.query(&query).await?;
        page.documents.iter().map(decode).collect()
    }
}

/// The channel of a tenant's file changes: `files`.
pub fn changes_channel(tenant: &str) -> Result<mesh_core::broker::ChannelKey, StorageError> {
    let name = mesh_core::broker::ChannelName::parse("files", "channel").map_err(|v| StorageError::Invalid(vec![v]))?;
    mesh_core::broker::ChannelKey::new(tenant, name).map_err(|v| StorageError::Invalid(vec![v]))
}

/// A change as published on the `files` channel: the file after the change, and when.
#[derive(Debug, Serialize, Deserialize)]
struct ChangeWire {
    id: String,
    at: i64,
    #[serde(flatten)]
    file: StoredFile,
}

/// The payload announcing that `file` changed at `at`.
pub fn encode_change(file: &FileRecord, at: SystemTime) -> Result<bytes::Bytes, StorageError> {
    let wire = ChangeWire { id: file.id.to_string(), at: to_micros(at), file: StoredFile::of(file) };
    serde_json::to_vec(&wire).map(bytes::Bytes::from).map_err(|error| StorageError::Internal(error.into()))
}

/// The file and time of a change published on `tenant`'s channel.
pub fn decode_change(tenant: &str, payload: &[u8]) -> Result<(FileRecord, SystemTime), StorageError> {
    let wire: ChangeWire = serde_json::from_slice(payload).map_err(|error| StorageError::Internal(error.into()))?;
    let key = DocKey::new(tenant, FILES, &wire.id)?;
    Ok((wire.file.into_record(&key)?, from_micros(wire.at)))
}
