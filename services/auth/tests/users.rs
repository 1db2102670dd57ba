//! Conformance suite of the user-store boundary: every check runs against
//! [`MemoryUserStore`], against [`DocumentUserStore`] on [`MemoryDocuments`], and against
//! [`DocumentUserStore`] on [`FirestoreDocuments`] connected to a private Firestore emulator.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_auth::AuthError;
use mesh_auth::domain::{Email, PasswordHash, User, UserId};
use mesh_auth::store::{DocumentUserStore, MemoryUserStore, UserStore};
use mesh_core::documents::{FirestoreDocuments, FirestoreSettings, MemoryDocuments};
use mesh_core::request_id::RequestId;
use mesh_testkit::FirestoreEmulator;

/// The store under test, and the emulator it needs (stopped on drop).
struct Fixture {
    store: Arc<dyn UserStore>,
    _emulator: Option<FirestoreEmulator>,
}

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    DocumentsInMemory,
    Firestore,
}

impl Fixture {
    async fn start(kind: Kind) -> Self {
        match kind {
            Kind::Memory => Self { store: Arc::new(MemoryUserStore::default()), _emulator: None },
            Kind::DocumentsInMemory => {
                Self { store: Arc::new(DocumentUserStore::new(Arc::new(MemoryDocuments::new()))), _emulator: None }
            }
            Kind::Firestore => {
                let emulator = FirestoreEmulator::start().await.expect("the firestore emulator starts");
                let settings = FirestoreSettings {
                    project_id: emulator.project_id().to_owned(),
                    emulator_host: Some(emulator.host()),
                    ..FirestoreSettings::default()
                };
                let documents = FirestoreDocuments::connect(&settings).await.expect("firestore connects");
                Self { store: Arc::new(DocumentUserStore::new(Arc::new(documents))), _emulator: Some(emulator) }
            }
        }
    }
}

/// `suite!(checks...)` runs each check against every store. (No check needs to skip the
/// emulator: its commits are not atomic, but the store orders the writes so that a failed
/// precondition applies nothing, and it applies one commit at a time, so races between
/// registrations behave as on Firestore.)
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
              async fn $name() { super::run(super::Kind::Memory, super::$name).await })*
        }
        mod documents_in_memory {
            $(#[tokio::test]
              async fn $name() { super::run(super::Kind::DocumentsInMemory, super::$name).await })*
        }
        mod firestore {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::run(super::Kind::Firestore, super::$name).await })*
        }
    };
}

/// Runs `check` on a fresh store of `kind`, which lives (with its emulator) until it ends.
async fn run<F: Future<Output = ()>>(kind: Kind, check: impl FnOnce(Arc<dyn UserStore>) -> F) {
    let fixture = Fixture::start(kind).await;
    check(fixture.store.clone()).await;
}

suite!(
    an_email_is_unique_per_tenant_case_insensitively,
    an_email_taken_in_one_tenant_is_free_in_another,
    an_account_reads_back_as_created,
    unknown_accounts_are_not_found,
    a_password_change_replaces_the_hash,
    a_password_change_of_a_missing_account_is_user_not_found,
    a_request_id_returns_the_first_account_and_refuses_another_email,
    a_refused_registration_does_not_spend_its_request_id,
    concurrent_registrations_of_one_email_create_one_account,
    concurrent_retries_of_one_request_id_return_one_account,
);

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

fn email(raw: &str) -> Email {
    Email::parse(raw, "email").unwrap()
}

fn request_id(raw: &str) -> RequestId {
    RequestId::parse(raw, "request_id").unwrap().unwrap()
}

async fn an_email_is_unique_per_tenant_case_insensitively(store: Arc<dyn UserStore>) {
    let alice = store.create(user("acme", "Alice@Example.com"), None).await.unwrap();
    let again = store.create(user("acme", "alice@EXAMPLE.com"), None).await.unwrap_err();
    assert_eq!(again, AuthError::EmailTaken);
    let elsewhere = store.create(user("other", "alice@example.com"), None).await.unwrap();
    assert_ne!(elsewhere.id, alice.id);

    let found = store.by_email("acme", &email("ALICE@example.COM")).await.unwrap();
    assert_eq!(found, Some(alice.clone()));
    assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.by_id("other", &alice.id).await.unwrap(), None, "ids are looked up within the tenant");
    assert_eq!(store.by_email("third", &alice.email).await.unwrap(), None);
}

async fn an_email_taken_in_one_tenant_is_free_in_another(store: Arc<dyn UserStore>) {
    let acme = store.create(user("acme", "bob@example.com"), None).await.unwrap();
    let globex = store.create(user("globex", "BOB@example.com"), None).await.unwrap();
    assert_eq!(store.by_email("acme", &email("bob@example.com")).await.unwrap(), Some(acme));
    assert_eq!(store.by_email("globex", &email("bob@example.com")).await.unwrap(), Some(globex.clone()));
    assert_eq!(globex.email.as_str(), "BOB@example.com", "each tenant keeps its own spelling");
    let again = store.create(user("globex", "bob@EXAMPLE.com"), None).await.unwrap_err();
    assert_eq!(again, AuthError::EmailTaken);
}

async fn an_account_reads_back_as_created(store: Arc<dyn UserStore>) {
    let mut carol = user("acme", "Zoë.O'Brien+mesh@Example.co.uk");
    carol.create_time = SystemTime::UNIX_EPOCH + Duration::from_micros(1_763_850_000_123_456);
    carol.update_time = carol.create_time + Duration::from_micros(789);
    let created = store.create(carol.clone(), None).await.unwrap();
    assert_eq!(created, carol, "times of whole microseconds are kept exactly");
    assert_eq!(created.email.as_str(), "Zoë.O'Brien+mesh@Example.co.uk", "the spelling is kept");
    assert_eq!(store.by_id("acme", &carol.id).await.unwrap(), Some(carol.clone()));
    assert_eq!(store.by_email("acme", &email("zoë.o'brien+MESH@example.CO.UK")).await.unwrap(), Some(carol));
}

async fn unknown_accounts_are_not_found(store: Arc<dyn UserStore>) {
    assert_eq!(store.by_id("acme", &UserId::generate()).await.unwrap(), None);
    assert_eq!(store.by_email("acme", &email("nobody@example.com")).await.unwrap(), None);
}

async fn a_password_change_replaces_the_hash(store: Arc<dyn UserStore>) {
    let alice = store.create(user("acme", "alice@example.com"), None).await.unwrap();
    let later = alice.update_time + Duration::from_secs(60);
    let hash = PasswordHash::from_stored("$argon2id$v=19$m=64,t=1,p=1$bmV3c2FsdA$bmV3".into());
    let changed = store.set_password("acme", &alice.id, hash.clone(), later).await.unwrap();
    assert_eq!((changed.password_hash.clone(), changed.update_time), (hash.clone(), later));
    assert_eq!(changed.create_time, alice.create_time, "the creation time stays");
    assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(changed.clone()));
    assert_eq!(store.by_email("acme", &alice.email).await.unwrap(), Some(changed));

    let latest = later + Duration::from_secs(60);
    let again = store.set_password("acme", &alice.id, alice.password_hash.clone(), latest).await.unwrap();
    assert_eq!((again.password_hash.clone(), again.update_time), (alice.password_hash.clone(), latest));
}

async fn a_password_change_of_a_missing_account_is_user_not_found(store: Arc<dyn UserStore>) {
    let alice = store.create(user("acme", "alice@example.com"), None).await.unwrap();
    let later = alice.update_time + Duration::from_secs(60);
    let other_tenant = store.set_password("other", &alice.id, alice.password_hash.clone(), later).await.unwrap_err();
    assert_eq!(other_tenant, AuthError::UserNotFound);
    let unknown =
        store.set_password("acme", &UserId::generate(), alice.password_hash.clone(), later).await.unwrap_err();
    assert_eq!(unknown, AuthError::UserNotFound);
    assert_eq!(store.by_id("acme", &alice.id).await.unwrap(), Some(alice), "nothing else changed");
}

async fn a_request_id_returns_the_first_account_and_refuses_another_email(store: Arc<dyn UserStore>) {
    let key = request_id("3f2b8c1e-9d4a-4e7b-8c21-5a6f0b9d7e13");
    let first = store.create(user("acme", "alice@example.com"), Some(&key)).await.unwrap();
    let retry = store.create(user("acme", "ALICE@example.com"), Some(&key)).await.unwrap();
    assert_eq!(retry, first, "the retry gets the first account, not ALREADY_EXISTS");
    let other = store.create(user("acme", "bob@example.com"), Some(&key)).await.unwrap_err();
    assert!(matches!(other, AuthError::Invalid(ref violations) if violations[0].field == "request_id"), "{other:?}");
    assert_eq!(store.by_email("acme", &email("bob@example.com")).await.unwrap(), None, "bob was not registered");
    let elsewhere = store.create(user("other", "bob@example.com"), Some(&key)).await.unwrap();
    assert_ne!(elsewhere.id, first.id, "keys are per tenant");
    let again = store.create(user("acme", "alice@example.com"), None).await.unwrap_err();
    assert_eq!(again, AuthError::EmailTaken, "without the key it is a second registration");
    let bob = store.create(user("acme", "bob@example.com"), None).await.unwrap();
    assert_eq!(store.by_email("acme", &email("bob@example.com")).await.unwrap(), Some(bob), "bob's email stayed free");
}

async fn a_refused_registration_does_not_spend_its_request_id(store: Arc<dyn UserStore>) {
    let key = request_id("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d");
    store.create(user("acme", "alice@example.com"), None).await.unwrap();
    let taken = store.create(user("acme", "alice@example.com"), Some(&key)).await.unwrap_err();
    assert_eq!(taken, AuthError::EmailTaken);
    let carol = store.create(user("acme", "carol@example.com"), Some(&key)).await.unwrap();
    assert_eq!(store.create(user("acme", "carol@example.com"), Some(&key)).await.unwrap(), carol);
}

async fn concurrent_registrations_of_one_email_create_one_account(store: Arc<dyn UserStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let spelling = if i % 2 == 0 { "dave@example.com" } else { "DAVE@example.com" };
            tokio::spawn(async move { store.create(user("acme", spelling), None).await })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(user) => created.push(user),
            Err(error) => assert_eq!(error, AuthError::EmailTaken),
        }
    }
    assert_eq!(created.len(), 1, "exactly one registration wins: {created:?}");
    let found = store.by_email("acme", &email("dave@example.com")).await.unwrap();
    assert_eq!(found.as_ref(), created.first());
}

async fn concurrent_retries_of_one_request_id_return_one_account(store: Arc<dyn UserStore>) {
    let key = request_id("1b4e28ba-2fa1-41d2-883f-0016d3cca427");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move { store.create(user("acme", "erin@example.com"), Some(&key)).await })
        })
        .collect();
    let mut accounts = Vec::new();
    for task in tasks {
        accounts.push(task.await.unwrap().expect("every retry gets the account"));
    }
    assert!(accounts.windows(2).all(|pair| pair[0] == pair[1]), "one account: {accounts:?}");
    assert_eq!(store.by_email("acme", &email("erin@example.com")).await.unwrap().as_ref(), accounts.first());
}
