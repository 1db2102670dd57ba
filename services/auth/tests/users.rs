//! Checks of the user-store boundary, written as a conformance suite: the memory store now,
//! the document store when it lands (storage issue) runs the same checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_auth::AuthError;
use mesh_auth::domain::{Email, PasswordHash, User, UserId};
use mesh_auth::store::{MemoryUserStore, UserStore};
use mesh_core::request_id::RequestId;

fn user(tenant: &str, email: &str) -> User {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    User {
        id: UserId::generate(),
        tenant: tenant.into(),
        email: Email::parse(email, "email").unwrap(),
        password_hash: PasswordHash::from_stored("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
        create_time: now,
        update_time: now,
    }
}

async fn an_email_is_unique_per_tenant_case_insensitively(store: Arc<dyn UserStore>) {
    let alice = store.create(user("acme", "Alice@Example.com"), None).await.unwrap();
    let again = store.create(user("acme", "alice@EXAMPLE.com"), None).await.unwrap_err();
    assert_eq!(again, AuthError::EmailTaken);
    let elsewhere = store.create(user("other", "alice@example.com"), None).await.unwrap();
    assert_ne!(elsewhere.id, alice.id);

    let found = store.by_email("acme", &Email::parse("ALICE@example.COM", "email").unwrap()).await.unwrap();
    assert_eq!(found, Some(alice.clone()));
    assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.by_id("other", &alice.id).await.unwrap(), None, "ids are looked up within the tenant");
    assert_eq!(store.by_email("third", &alice.email).await.unwrap(), None);
}

async fn a_password_change_replaces_the_hash(store: Arc<dyn UserStore>) {
    let alice = store.create(user("acme", "alice@example.com"), None).await.unwrap();
    let later = alice.update_time + Duration::from_secs(60);
    let hash = PasswordHash::from_stored("$argon2id$v=19$m=64,t=1,p=1$bmV3c2FsdA$bmV3".into());
    let changed = store.set_password("acme", &alice.id, hash.clone(), later).await.unwrap();
    assert_eq!((changed.password_hash.clone(), changed.update_time), (hash, later));
    assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(changed));
    let missing = store.set_password("other", &alice.id, alice.password_hash.clone(), later).await.unwrap_err();
    assert_eq!(missing, AuthError::UserNotFound);
}

async fn a_request_id_returns_the_first_account_and_refuses_another_email(store: Arc<dyn UserStore>) {
    let key = RequestId::parse("3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13", "request_id").unwrap().unwrap();
    let first = store.create(user("acme", "alice@example.com"), Some(&key)).await.unwrap();
    let retry = store.create(user("acme", "ALICE@example.com"), Some(&key)).await.unwrap();
    assert_eq!(retry, first, "the retry gets the first account, not ALREADY_EXISTS");
    let other = store.create(user("acme", "bob@example.com"), Some(&key)).await.unwrap_err();
    assert!(matches!(other, AuthError::Invalid(ref violations) if violations[0].field == "request_id"), "{other:?}");
    let elsewhere = store.create(user("other", "bob@example.com"), Some(&key)).await.unwrap();
    assert_ne!(elsewhere.id, first.id, "keys are per tenant");
    let again = store.create(user("acme", "alice@example.com"), None).await.unwrap_err();
    assert_eq!(again, AuthError::EmailTaken, "without the key it is a second registration");
}

#[tokio::test]
async fn memory_a_request_id_returns_the_first_account_and_refuses_another_email() {
    a_request_id_returns_the_first_account_and_refuses_another_email(Arc::new(MemoryUserStore::default())).await;
}

#[tokio::test]
async fn memory_an_email_is_unique_per_tenant_case_insensitively() {
    an_email_is_unique_per_tenant_case_insensitively(Arc::new(MemoryUserStore::default())).await;
}

#[tokio::test]
async fn memory_a_password_change_replaces_the_hash() {
    a_password_change_replaces_the_hash(Arc::new(MemoryUserStore::default())).await;
}
