//! The document store: small JSON documents kept per tenant, written through atomic commits
//! with preconditions (optimistic concurrency) and read by key (batch get) or by query.
//!
//! Two implementations of one boundary, [`DocumentStore`]: [`MemoryDocuments`] (the embedded
//! default and the test double) and [`FirestoreDocuments`] (Firestore through the `firestore`
//! crate, or its emulator). [`CachedDocuments`] decorates either with a Redis read-through
//! cache. Repositories (file metadata, users, the feed archive) are built on the trait and
//! never see which one they got.
//!
//! # Model
//!
//! - A document is addressed by a [`DocKey`]: tenant, collection, id. Its path in the store
//!   is `tenants/<tenant>/<collection>/<id>`: every path starts with the tenant, and no read
//!   or query crosses tenants unless it asks for [`Scope::AllTenants`] (maintenance jobs).
//! - Its [`Fields`] are a JSON object. Integers are kept exact as 64-bit values; timestamps
//!   are stored by repositories as integers (microseconds since the Unix epoch), so they sort
//!   and compare the same in every implementation.
//! - Every write gives the document a new [`Version`] (its update time in the store, strictly
//!   increasing per document). A write may require the version it read ([`Expect::Version`]):
//!   that is the optimistic lock.
//! - [`DocumentStore::commit`] applies several writes atomically: all of them or none.

mod cache;
mod codec;
mod firestore;
mod memory;
mod query;

use std::cmp::Ordering;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use cache::{CacheSettings, CachedDocuments};
pub use codec::{from_fields, from_micros, to_fields, to_micros, whole_micros};
pub use firestore::{FirestoreDocuments, FirestoreSettings};
pub use memory::MemoryDocuments;
pub use query::{Cursor, Direction, Filter, MAX_PAGE_SIZE, Op, Page, Query, Scope};

/// A boxed future, as the [`DocumentStore`] methods return them (it is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The fields of a document.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// Longest tenant or document id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// The address of one document: `tenants/<tenant>/<collection>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocKey {
    tenant: String,
    collection: &'static str,
    id: String,
}

impl DocKey {
    /// Checks the parts: the tenant and the id are 1 to [`MAX_ID_LEN`] bytes of printable
    /// ASCII without `/`, whitespace, `{` or `}`, and neither `.`, `..` nor `__…__`
    /// (names Firestore reserves); the collection is a repository's constant name of ASCII
    /// lowercase letters, digits and `_`.
    pub fn new(tenant: &str, collection: &'static str, id: &str) -> Result<Self, DocumentError> {
        check_segment("tenant", tenant)?;
        check_segment("document id", id)?;
        if collection.is_empty()
            || !collection.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || collection.starts_with("__")
        {
            return Err(DocumentError::InvalidKey {
                field: "collection",
                reason: format!("{collection:?} must be lowercase ASCII letters, digits and '_'"),
            });
        }
        Ok(Self { tenant: tenant.to_owned(), collection, id: id.to_owned() })
    }

    /// The tenant that owns the document.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The collection, e.g. `files`.
    pub fn collection(&self) -> &'static str {
        self.collection
    }

    /// The id within the tenant's collection.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `tenants/<tenant>/<collection>/<id>`.
    pub fn path(&self) -> String {
        format!("tenants/{}/{}/{}", self.tenant, self.collection, self.id)
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenants/{}/{}/{}", self.tenant, self.collection, self.id)
    }
}

fn check_segment(field: &'static str, raw: &str) -> Result<(), DocumentError> {
    let invalid = |reason: String| DocumentError::InvalidKey { field, reason };
    if raw.is_empty() || raw.len() > MAX_ID_LEN {
        return Err(invalid(format!("must be 1 to {MAX_ID_LEN} bytes")));
    }
    if let Some(bad) = raw.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '{' | '}')) {
        return Err(invalid(format!("must be printable ASCII without '/', '{{' or '}}', not {bad:?}")));
    }
    if raw == "." || raw == ".." || (raw.len() >= 4 && raw.starts_with("__") && raw.ends_with("__")) {
        return Err(invalid(format!("{raw:?} is reserved")));
    }
    Ok(())
}

/// The version of a stored document: the store's time of its last write, strictly increasing
/// per document (and per commit in the memory store). Compare it only for equality with
/// another version of the same document, or order two versions of the same document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: i32,
}

impl Version {
    /// The version as microseconds since the Unix epoch (for logs and metadata).
    pub fn as_micros(&self) -> i64 {
        self.seconds.saturating_mul(1_000_000).saturating_add(i64::from(self.nanos / 1_000))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.seconds, self.nanos)
    }
}

/// One stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Its address.
    pub key: DocKey,
    /// Its fields.
    pub fields: Fields,
    /// The version of its last write.
    pub version: Version,
}

/// What a write requires of the document's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing.
    Any,
    /// The document must exist.
    Exists,
    /// The document must exist with exactly this version.
    Version(Version),
}

/// One write of a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Creates the document; fails with [`Precondition::AlreadyExists`] if it exists.
    Create {
        /// Where.
        key: DocKey,
        /// Its fields.
        fields: Fields,
    },
    /// Replaces (or creates, with [`Expect::Any`]) the whole document.
    Put {
        /// Where.
        key: DocKey,
        /// Its new fields.
        fields: Fields,
        /// The precondition.
        expect: Expect,
    },
    /// Deletes the document (deleting a missing one with [`Expect::Any`] succeeds).
    Delete {
        /// Where.
        key: DocKey,
        /// The precondition.
        expect: Expect,
    },
}

impl Write {
    /// The document it writes.
    pub fn key(&self) -> &DocKey {
        match self {
            Self::Create { key, .. } | Self::Put { key, .. } | Self::Delete { key, .. } => key,
        }
    }

    /// The fields it leaves, `None` for a delete.
    pub fn fields(&self) -> Option<&Fields> {
        match self {
            Self::Create { fields, .. } | Self::Put { fields, .. } => Some(fields),
            Self::Delete { .. } => None,
        }
    }

    /// What it requires of the current state.
    pub fn expect(&self) -> Expect {
        match self {
            Self::Create { .. } => Expect::Any,
            Self::Put { expect, .. } | Self::Delete { expect, .. } => *expect,
        }
    }
}

/// The result of a successful commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The new version of each written document, in the order of the writes (for a delete:
    /// the commit's time).
    pub versions: Vec<Version>,
    /// The commit's time.
    pub at: Version,
}

/// Which precondition of a commit failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// A create found the document.
    AlreadyExists,
    /// The document was required to exist and does not.
    Missing,
    /// The document's version is not the expected one.
    Changed,
}

/// Failures of a document store.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// A key does not fit the rules of [`DocKey`].
    #[error("invalid {field}: {reason}")]
    InvalidKey {
        /// Which part.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A query cannot be run (e.g. a cursor of another tenant).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A commit cannot be applied as asked (it writes one document twice): a bug of the caller.
    #[error("invalid commit: {0}")]
    InvalidCommit(String),
    /// A precondition of a commit failed: nothing of the commit was applied.
    #[error("precondition failed on {key}: {kind:?}")]
    Precondition {
        /// The document whose precondition failed (the first one found).
        key: String,
        /// Which precondition.
        kind: Precondition,
    },
    /// The store refused a well-formed request it should have served (e.g. a query whose
    /// index is missing): a deployment problem, not retryable.
    #[error("document store refused the request: {0}")]
    Rejected(String),
    /// The store is unreachable, failed, or its breaker is open; retryable.
    #[error("document store unavailable: {0}")]
    Unavailable(String),
    /// A stored document cannot be read (it was not written by this code).
    #[error("corrupt document {key}: {reason}")]
    Corrupt {
        /// The document.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<DocumentError> for crate::Error {
    fn from(error: DocumentError) -> Self {
        match error {
            DocumentError::InvalidKey { field, reason } => {
                crate::Error::invalid_argument(vec![crate::FieldViolation::new(field.replace(' ', "_"), reason)])
            }
            DocumentError::InvalidQuery(reason) => {
                crate::Error::invalid_argument(vec![crate::FieldViolation::new("page_token", reason)])
            }
            DocumentError::Precondition { kind: Precondition::AlreadyExists, .. } => {
                crate::Error::already_exists("ALREADY_EXISTS", "the document exists already")
            }
            DocumentError::Precondition { .. } => {
                crate::Error::new(crate::error::Code::Aborted, "CONCURRENT_UPDATE", "the document changed meanwhile")
            }
            DocumentError::Unavailable(detail) => {
                crate::Error::unavailable("BACKEND_UNAVAILABLE", "the document store is unavailable")
                    .with_source(anyhow::anyhow!(detail))
            }
            error @ (DocumentError::Corrupt { .. } | DocumentError::InvalidCommit(_) | DocumentError::Rejected(_)) => {
                crate::Error::internal(error)
            }
        }
    }
}

/// A document store; see the module docs.
pub trait DocumentStore: Send + Sync + 'static {
    /// The documents at `keys`, in the same order; `None` where there is none.
    fn get<'a>(&'a self, keys: &'a [DocKey]) -> BoxFuture<'a, Result<Vec<Option<Document>>, DocumentError>>;

    /// Applies `writes` atomically: every precondition holds and all are applied, or none is.
    /// A commit writes each document at most once.
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Committed, DocumentError>>;

    /// One page of the documents matching `query`.
    fn query<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Page, DocumentError>>;
}

impl<S: DocumentStore + ?Sized> DocumentStore for std::sync::Arc<S> {
    fn get<'a>(&'a self, keys: &'a [DocKey]) -> BoxFuture<'a, Result<Vec<Option<Document>>, DocumentError>> {
        (**self).get(keys)
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Committed, DocumentError>> {
        (**self).commit(writes)
    }

    fn query<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Page, DocumentError>> {
        (**self).query(query)
    }
}

/// The health probe of a document store: a batch get of one document that never exists
/// (`tenants/_mesh/health/probe`; no tenant id can be `_mesh`), within a deadline.
pub struct DocumentsProbe {
    store: std::sync::Arc<dyn DocumentStore>,
    timeout: std::time::Duration,
    key: DocKey,
}

impl std::fmt::Debug for DocumentsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentsProbe").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl DocumentsProbe {
    /// A probe of `store` that gives up after `timeout`.
    pub fn new(store: std::sync::Arc<dyn DocumentStore>, timeout: std::time::Duration) -> Self {
        let key = DocKey::new("_mesh", "health", "probe").expect("a valid key");
        Self { store, timeout, key }
    }
}

impl crate::backend::BackendProbe for DocumentsProbe {
    fn name(&self) -> &str {
        "documents"
    }

    fn check(&self) -> crate::backend::ProbeFuture<'_> {
        Box::pin(async move {
            let unavailable = || crate::Error::unavailable("BACKEND_UNAVAILABLE", "the document store is unavailable");
            match tokio::time::timeout(self.timeout, self.store.get(std::slice::from_ref(&self.key))).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(unavailable().with_source(error)),
                Err(_) => Err(unavailable()),
            }
        })
    }
}

/// Checks that a commit writes each document at most once (both stores require it).
fn check_distinct(writes: &[Write]) -> Result<(), DocumentError> {
    let mut keys: Vec<&DocKey> = writes.iter().map(Write::key).collect();
    keys.sort();
    match keys.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(DocumentError::InvalidCommit(format!("{} is written twice in one commit", pair[0]))),
        None => Ok(()),
    }
}

/// Orders two JSON values the way Firestore orders values of one type; values of different
/// types order by type (null < booleans < numbers < strings < arrays < objects).
pub(crate) fn compare_values(a: &serde_json::Value, b: &serde_json::Value) -> Ordering {
    use serde_json::Value;
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => a.as_f64().unwrap_or(f64::NAN).total_cmp(&b.as_f64().unwrap_or(f64::NAN)),
        },
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Array(a), Value::Array(b)) => {
            a.iter().zip(b).map(|(a, b)| compare_values(a, b)).find(|o| o.is_ne()).unwrap_or(a.len().cmp(&b.len()))
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(DocKey::new("acme", "files", "f1").is_ok());
        for (tenant, id) in
            [("", "x"), ("a/b", "x"), ("acme", "a/b"), ("acme", ".."), ("acme", "__x__"), ("ac me", "x")]
        {
            assert!(DocKey::new(tenant, "files", id).is_err(), "{tenant:?} {id:?}");
        }
        assert!(DocKey::new("acme", "Files", "x").is_err());
        assert!(DocKey::new("acme", "files", &"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert_eq!(DocKey::new("acme", "files", "f1").unwrap().path(), "tenants/acme/files/f1");
    }

    #[test]
    fn values_order_within_and_across_types() {
        use serde_json::json;
        assert_eq!(compare_values(&json!(2), &json!(10)), Ordering::Less);
        assert_eq!(compare_values(&json!(i64::MAX), &json!(i64::MAX - 1)), Ordering::Greater);
        assert_eq!(compare_values(&json!("b"), &json!("a")), Ordering::Greater);
        assert_eq!(compare_values(&json!(null), &json!(false)), Ordering::Less);
        assert_eq!(compare_values(&json!(5), &json!("5")), Ordering::Less);
    }

    #[test]
    fn a_document_is_written_once_per_commit() {
        let key = DocKey::new("acme", "files", "f1").unwrap();
        let put = Write::Put { key: key.clone(), fields: Fields::new(), expect: Expect::Any };
        assert!(check_distinct(&[put.clone(), Write::Delete { key, expect: Expect::Any }]).is_err());
        assert!(check_distinct(&[put]).is_ok());
    }
}
