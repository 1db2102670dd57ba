//! [`DocumentUserStore`]: accounts on the document store ([`mesh_core::documents`]), the
//! durable [`UserStore`] (Firestore in production). It passes the conformance suite of the
//! memory store (`tests/users.rs`).
//!
//! # Documents
//!
//! Every path starts with the tenant; times are integer microseconds since the Unix epoch.
//!
//! - `tenants/<tenant>/users/<user id>`: the account: `email` as typed, `password_hash`,
//!   `create_time_micros`, `update_time_micros`.
//! - `tenants/<tenant>/user_emails/<key>`: the uniqueness marker of a normalized email,
//!   holding `user_id`. The key is the lowercase hex SHA-256 of the normalized email: an
//!   address may hold `/`, braces or non-ASCII letters, which a document id may not.
//! - `tenants/<tenant>/user_requests/<request id>`: Register's idempotency key, holding
//!   `user_id` and `create_time_micros` (by this process's clock, as the memory store does).
//!   It answers for [`REQUEST_ID_TTL`]; after that, or once its account is gone, the next
//!   registration with the same id replaces it.
//!
//! A registration is one commit: create the email marker, claim the request marker, create
//! the account, in that order. Firestore applies a commit atomically; the emulator the tests
//! use applies the writes one by one and stops at the first failed precondition, so the
//! writes that can fail come first and the account last: a taken email leaves nothing behind.
//!
//! Every write carries every field: the emulator merges a write into the document instead of
//! replacing it, so no code may rely on a write removing a field.

use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::FieldViolation;
use mesh_core::documents::{
    self, DocKey, Document, DocumentError, DocumentStore, Expect, Fields, Precondition, Version, Write, from_micros,
    to_micros,
};
use mesh_core::request_id::{REQUEST_ID_TTL, RequestId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{BoxFuture, UserStore};
use crate::AuthError;
use crate::domain::{Email, PasswordHash, User, UserId};

/// Accounts in a document store; see the module docs.
#[derive(Clone)]
pub struct DocumentUserStore {
    documents: Arc<dyn DocumentStore>,
}

impl std::fmt::Debug for DocumentUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentUserStore").finish_non_exhaustive()
    }
}

impl DocumentUserStore {
    /// The store on `documents`.
    pub fn new(documents: Arc<dyn DocumentStore>) -> Self {
        Self { documents }
    }
}

impl UserStore for DocumentUserStore {
    fn create<'a>(&'a self, user: User, request_id: Option<&'a RequestId>) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            match request_id {
                Some(request_id) => self.create_once(user, request_id).await,
                None => self.create_new(user).await,
            }
        })
    }

    fn by_email<'a>(&'a self, tenant: &'a str, email: &'a Email) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        Box::pin(async move {
            let Some(marker) = self.get(&email_key(tenant, email)?).await? else {
                return Ok(None);
            };
            let id = stored_user_id(&marker, &from_fields::<EmailMarker>(&marker)?.user_id)?;
            let user = self.by_id(tenant, &id).await?;
            // a marker whose account is gone or holds another address finds nothing
            Ok(user.filter(|user| user.email.normalized() == email.normalized()))
        })
    }

    fn by_id<'a>(&'a self, tenant: &'a str, id: &'a UserId) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        Box::pin(async move { self.get(&user_key(tenant, id)?).await?.as_ref().map(decode_user).transpose() })
    }

    fn set_password<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a UserId,
        hash: PasswordHash,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            let key = user_key(tenant, id)?;
            for _ in 0..ATTEMPTS {
                let Some(document) = self.get(&key).await? else {
                    return Err(AuthError::UserNotFound);
                };
                let user = User { password_hash: hash.clone(), update_time: now, ..decode_user(&document)? };
                let write = Write::Put {
                    key: key.clone(),
                    fields: user_fields(&user)?,
                    expect: Expect::Version(document.version),
                };
                match self.documents.commit(vec![write]).await {
                    Ok(_) => return Ok(as_stored(user)),
                    // changed since it was read: read it again
                    Err(DocumentError::Precondition { kind: Precondition::Changed, .. }) => {}
                    Err(DocumentError::Precondition { kind: Precondition::Missing, .. }) => {
                        return Err(AuthError::UserNotFound);
                    }
                    Err(error) => return Err(store_error(error)),
                }
            }
            Err(AuthError::Unavailable(format!("account {key} kept changing during a password change")))
        })
    }
}

/// How many times a write that lost a race is tried again.
const ATTEMPTS: usize = 5;

/// The collection of accounts.
const USERS: &str = "users";
/// The collection of email uniqueness markers.
const USER_EMAILS: &str = "user_emails";
/// The collection of Register's idempotency keys.
const USER_REQUESTS: &str = "user_requests";

/// The stored fields of an account (its tenant and id are the document's key).
#[derive(Serialize, Deserialize)]
struct StoredUser {
    email: String,
    password_hash: String,
    create_time_micros: i64,
    update_time_micros: i64,
}

/// The stored fields of an email marker.
#[derive(Serialize, Deserialize)]
struct EmailMarker {
    user_id: String,
}

/// The stored fields of a request marker.
#[derive(Serialize, Deserialize)]
struct RequestMarker {
    user_id: String,
    create_time_micros: i64,
}

/// What a request id's marker says.
enum Claim {
    /// No marker: the id is new.
    Free,
    /// A live marker: the account the first call with this id created.
    Answered(User),
    /// A marker that expired, or whose account is gone: replace it (at this version).
    Spent(Version),
}

impl DocumentUserStore {
    /// Registers `user` without a request id.
    async fn create_new(&self, user: User) -> Result<User, AuthError> {
        let writes = vec![
            email_claim(&user)?,
            Write::Create { key: user_key(&user.tenant, &user.id)?, fields: user_fields(&user)? },
        ];
        match self.documents.commit(writes).await {
            Ok(_) => Ok(as_stored(user)),
            // the account's id is 128 random bits: only the email marker can exist
            Err(DocumentError::Precondition { kind: Precondition::AlreadyExists, .. }) => Err(AuthError::EmailTaken),
            Err(error) => Err(store_error(error)),
        }
    }

    /// Registers `user` under `request_id`, or answers with the account the id created.
    async fn create_once(&self, user: User, request_id: &RequestId) -> Result<User, AuthError> {
        let request_key = DocKey::new(&user.tenant, USER_REQUESTS, request_id.as_str()).map_err(store_error)?;
        let email_key = email_key(&user.tenant, &user.email)?;
        for _ in 0..ATTEMPTS {
            // Read the request marker first: a retry then writes nothing (on the emulator, a
            // commit that fails on the request marker would leave the email marker behind).
            let now = SystemTime::now();
            let marker =
                to_fields(&RequestMarker { user_id: user.id.to_string(), create_time_micros: to_micros(now) })?;
            let claim = match self.claim(&user.tenant, &request_key, now).await? {
                Claim::Answered(first) => return answer(first, &user),
                Claim::Free => Write::Create { key: request_key.clone(), fields: marker },
                Claim::Spent(version) => {
                    Write::Put { key: request_key.clone(), fields: marker, expect: Expect::Version(version) }
                }
            };
            let account = Write::Create { key: user_key(&user.tenant, &user.id)?, fields: user_fields(&user)? };
            let kind = match self.documents.commit(vec![email_claim(&user)?, claim, account]).await {
                Ok(_) => return Ok(as_stored(user)),
                Err(DocumentError::Precondition { kind, .. }) => kind,
                Err(error) => return Err(store_error(error)),
            };
            // Either the email is taken or a concurrent call with the same id won: look again.
            if let Claim::Answered(first) = self.claim(&user.tenant, &request_key, SystemTime::now()).await? {
                return answer(first, &user);
            }
            if kind == Precondition::AlreadyExists && self.get(&email_key).await?.is_some() {
                return Err(AuthError::EmailTaken);
            }
        }
        Err(AuthError::Unavailable(format!("request id {request_key} kept being claimed concurrently")))
    }

    /// What the marker of a request id says at `now`.
    async fn claim(&self, tenant: &str, key: &DocKey, now: SystemTime) -> Result<Claim, AuthError> {
        let Some(document) = self.get(key).await? else {
            return Ok(Claim::Free);
        };
        let marker: RequestMarker = from_fields(&document)?;
        // a marker from the future (another process's clock ahead) counts as fresh
        let age = now.duration_since(from_micros(marker.create_time_micros)).unwrap_or_default();
        if age < REQUEST_ID_TTL {
            let id = stored_user_id(&document, &marker.user_id)?;
            if let Some(first) = self.by_id(tenant, &id).await? {
                return Ok(Claim::Answered(first));
            }
        }
        Ok(Claim::Spent(document.version))
    }

    /// The document at `key`, if any.
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, AuthError> {
        let mut found = self.documents.get(std::slice::from_ref(key)).await.map_err(store_error)?;
        Ok(found.pop().flatten())
    }
}

/// The answer to a repeated request id: the first account if it is for the same email.
fn answer(first: User, user: &User) -> Result<User, AuthError> {
    if first.email.normalized() != user.email.normalized() {
        return Err(super::memory::request_id_reused());
    }
    Ok(first)
}

/// The error of a document store failure: the store is unavailable, or holds what this code
/// cannot read; an invalid tenant is the caller's.
fn store_error(error: DocumentError) -> AuthError {
    match error {
        DocumentError::InvalidKey { field: "tenant", reason } => {
            AuthError::Invalid(vec![FieldViolation::new("tenant_id", reason)])
        }
        error => AuthError::Unavailable(error.to_string()),
    }
}

fn corrupt(document: &Document, reason: impl Into<String>) -> AuthError {
    store_error(DocumentError::Corrupt { key: document.key.to_string(), reason: reason.into() })
}

fn user_key(tenant: &str, id: &UserId) -> Result<DocKey, AuthError> {
    DocKey::new(tenant, USERS, id.as_str()).map_err(store_error)
}

/// The marker key of `email`: the hex SHA-256 of its normalized form.
fn email_key(tenant: &str, email: &Email) -> Result<DocKey, AuthError> {
    let digest = Sha256::digest(email.normalized().as_bytes());
    DocKey::new(tenant, USER_EMAILS, &crate::domain::hex(&digest)).map_err(store_error)
}

/// The write that claims `user`'s email in its tenant.
fn email_claim(user: &User) -> Result<Write, AuthError> {
    let fields = to_fields(&EmailMarker { user_id: user.id.to_string() })?;
    Ok(Write::Create { key: email_key(&user.tenant, &user.email)?, fields })
}

fn user_fields(user: &User) -> Result<Fields, AuthError> {
    to_fields(&StoredUser {
        email: user.email.as_str().to_owned(),
        password_hash: user.password_hash.as_str().to_owned(),
        create_time_micros: to_micros(user.create_time),
        update_time_micros: to_micros(user.update_time),
    })
}

fn decode_user(document: &Document) -> Result<User, AuthError> {
    let stored: StoredUser = from_fields(document)?;
    Ok(User {
        id: stored_user_id(document, document.key.id())?,
        tenant: document.key.tenant().to_owned(),
        email: Email::parse(&stored.email, "email").map_err(|violation| corrupt(document, violation.description))?,
        password_hash: PasswordHash::from_stored(stored.password_hash),
        create_time: from_micros(stored.create_time_micros),
        update_time: from_micros(stored.update_time_micros),
    })
}

/// `user` as it reads back: its times to the microsecond.
fn as_stored(user: User) -> User {
    User {
        create_time: from_micros(to_micros(user.create_time)),
        update_time: from_micros(to_micros(user.update_time)),
        ..user
    }
}

fn stored_user_id(document: &Document, raw: &str) -> Result<UserId, AuthError> {
    UserId::parse(raw).ok_or_else(|| corrupt(document, format!("{raw:?} is not a user id")))
}

fn to_fields<T: Serialize>(value: &T) -> Result<Fields, AuthError> {
    documents::to_fields("a stored account record", value).map_err(|error| AuthError::Unavailable(error.to_string()))
}

fn from_fields<T: DeserializeOwned>(document: &Document) -> Result<T, AuthError> {
    documents::from_fields(document).map_err(|error| corrupt(document, error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use mesh_core::documents::{BoxFuture as DocFuture, Committed, MemoryDocuments, Page, Query};
    use serde_json::json;

    use super::*;

    fn user(tenant: &str, email: &str) -> User {
        let now = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        User {
            id: UserId::generate(),
            tenant: tenant.into(),
            email: Email::parse(email, "email").unwrap(),
            password_hash: PasswordHash::from_stored("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into()),
            create_time: now,
            update_time: now,
        }
    }

    fn fields(value: serde_json::Value) -> Fields {
        match value {
            serde_json::Value::Object(fields) => fields,
            other => panic!("not an object: {other}"),
        }
    }

    async fn put(documents: &MemoryDocuments, key: DocKey, value: serde_json::Value) {
        documents.commit(vec![Write::Put { key, fields: fields(value), expect: Expect::Any }]).await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_request_id_is_replaced_by_the_next_registration() {
        let documents = Arc::new(MemoryDocuments::new());
        let store = DocumentUserStore::new(documents.clone());
        let id = RequestId::parse("3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13", "request_id").unwrap().unwrap();
        let first = store.create(user("acme", "alice@example.com"), None).await.unwrap();
        let expired = to_micros(SystemTime::now() - REQUEST_ID_TTL - Duration::from_secs(1));
        let marker = json!({"user_id": first.id.as_str(), "create_time_micros": expired});
        put(&documents, DocKey::new("acme", USER_REQUESTS, id.as_str()).unwrap(), marker).await;

        let bob = store.create(user("acme", "bob@example.com"), Some(&id)).await.unwrap();
        assert_ne!(bob.id, first.id, "an expired id no longer answers");
        let retry = store.create(user("acme", "bob@example.com"), Some(&id)).await.unwrap();
        assert_eq!(retry, bob, "the replaced marker answers for the new account");
    }

    #[tokio::test]
    async fn a_request_id_whose_account_is_gone_is_replaced() {
        let documents = Arc::new(MemoryDocuments::new());
        let store = DocumentUserStore::new(documents.clone());
        let id = RequestId::parse("3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13", "request_id").unwrap().unwrap();
        let marker =
            json!({"user_id": UserId::generate().as_str(), "create_time_micros": to_micros(SystemTime::now())});
        put(&documents, DocKey::new("acme", USER_REQUESTS, id.as_str()).unwrap(), marker).await;

        let alice = store.create(user("acme", "alice@example.com"), Some(&id)).await.unwrap();
        assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(alice));
    }

    #[tokio::test]
    async fn addresses_of_any_spelling_get_valid_marker_keys() {
        let store = DocumentUserStore::new(Arc::new(MemoryDocuments::new()));
        let odd = store.create(user("acme", "Ö/{x}+tag@Example.com"), None).await.unwrap();
        let found = store.by_email("acme", &Email::parse("ö/{X}+TAG@example.COM", "email").unwrap()).await.unwrap();
        assert_eq!(found, Some(odd));
        let long = format!("{}@{}.example.com", "a".repeat(64), "b".repeat(63));
        assert!(store.create(user("acme", &long), None).await.is_ok());
    }

    #[tokio::test]
    async fn corrupt_documents_read_as_unavailable() {
        let documents = Arc::new(MemoryDocuments::new());
        let store = DocumentUserStore::new(documents.clone());
        let id = UserId::generate();
        put(&documents, user_key("acme", &id).unwrap(), json!({"email": 7})).await;
        let broken = store.by_id("acme", &id).await.unwrap_err();
        assert!(matches!(broken, AuthError::Unavailable(_)), "{broken:?}");
        let later = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hash = PasswordHash::from_stored("x".into());
        assert!(matches!(store.set_password("acme", &id, hash, later).await, Err(AuthError::Unavailable(_))));

        let email = Email::parse("alice@example.com", "email").unwrap();
        put(&documents, email_key("acme", &email).unwrap(), json!({"user_id": "not an id"})).await;
        assert!(matches!(store.by_email("acme", &email).await, Err(AuthError::Unavailable(_))));
        let bad_address =
            json!({"email": "nope", "password_hash": "x", "create_time_micros": 0, "update_time_micros": 0});
        put(&documents, user_key("acme", &id).unwrap(), bad_address).await;
        assert!(matches!(store.by_id("acme", &id).await, Err(AuthError::Unavailable(_))));
    }

    /// A document store that is always down.
    struct Down;

    impl DocumentStore for Down {
        fn get<'a>(&'a self, _: &'a [DocKey]) -> DocFuture<'a, Result<Vec<Option<Document>>, DocumentError>> {
            Box::pin(async { Err(DocumentError::Unavailable("down".into())) })
        }

        fn commit(&self, _: Vec<Write>) -> DocFuture<'_, Result<Committed, DocumentError>> {
            Box::pin(async { Err(DocumentError::Unavailable("down".into())) })
        }

        fn query<'a>(&'a self, _: &'a Query) -> DocFuture<'a, Result<Page, DocumentError>> {
            Box::pin(async { Err(DocumentError::Unavailable("down".into())) })
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_is_unavailable_and_a_bad_tenant_invalid() {
        let store = DocumentUserStore::new(Arc::new(Down));
        let alice = user("acme", "alice@example.com");
        assert!(matches!(store.create(alice.clone(), None).await, Err(AuthError::Unavailable(_))));
        assert!(matches!(store.by_email("acme", &alice.email).await, Err(AuthError::Unavailable(_))));
        assert!(matches!(store.by_id("acme", &alice.id).await, Err(AuthError::Unavailable(_))));

        let invalid = store.by_id("a/b", &alice.id).await.unwrap_err();
        assert!(
            matches!(invalid, AuthError::Invalid(ref violations) if violations[0].field == "tenant_id"),
            "{invalid:?}"
        );
    }
}
