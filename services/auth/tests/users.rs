//! Checks of the user-store boundary, written as a conformance suite: the memory store now,
//! the document store when it lands (storage issue) runs the same checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_auth::AuthError;
use mesh_auth::domain::{Email, PasswordHash, User, UserId};
use mesh_auth::store::{MemoryUserStore, UserStore};

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
    let alice = store.create(user("acme", "Alice@Example.com")).await.unwrap();
    let again = store.create(user("acme", "alice@EXAMPLE.com")).await.unwrap_err();
    assert_eq!(again, AuthError::EmailTaken);
    let elsewhere = store.create(user("other", "alice@example.com")).await.unwrap();
    assert_ne!(elsewhere.id, alice.id);

    let found = store.by_email("acme", &Email::parse("ALICE@example.COM", "email").unwrap()).await.unwrap();
    assert_eq!(found, Some(alice.clone()));
    assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.by_id("other", &alice.id).await.unwrap(), None, "ids are looked up within the tenant");
    assert_eq!(store.by_email("third", &alice.email).await.unwrap(), None);
}

async fn a_password_change_replaces_the_hash(store: Arc<dyn UserStore>) {
    let alice = store.create(user("acme", "alice@example.com")).await.unwrap();
    let later = alice.update_time + Duration::from_secs(60);
    let hash = PasswordHash::from_stored("$argon2id$v=19$m=64,t=1,p=1$bmV3c2FsdA$bmV3".into());
    let changed = store.set_password("acme", &alice.id, hash.clone(), later).await.unwrap();
    assert_eq!((changed.password_hash.clone(), changed.update_time), (hash, later));
    assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(changed));
    let missing = store.set_password("other", &alice.id, alice.password_hash.clone(), later).await.unwrap_err();
    assert_eq!(missing, AuthError::UserNotFound);
}

#[tokio::test]
async fn memory_an_email_is_unique_per_tenant_case_insensitively() {
    an_email_is_unique_per_tenant_case_insensitively(Arc::new(MemoryUserStore::default())).await;
}

#[tokio::test]
async fn memory_a_password_change_replaces_the_hash() {
    a_password_change_replaces_the_hash(Arc::new(MemoryUserStore::default())).await;
}
