//! Conformance suite of the revocation store: memory and Redis (a `redis-server` the test
//! starts). Times are close to the real clock: Redis expires revocations by its own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_core::auth::revocation::ActiveRevocation;
use mesh_core::auth::{MemoryRevocationStore, RedisRevocationStore, RevocationStore, Revoked};
use mesh_core::backend::redis_pool;
use mesh_core::config::RedisSettings;
use mesh_testkit::RedisServer;

struct Fixture {
    store: Arc<dyn RevocationStore>,
    _server: Option<RedisServer>,
}

impl Fixture {
    async fn start(redis: bool) -> Self {
        if !redis {
            return Self { store: Arc::new(MemoryRevocationStore::default()), _server: None };
        }
        let server = RedisServer::start().await.expect("redis-server starts");
        let pool = redis_pool(&server.url(), &RedisSettings::default()).expect("a valid redis url");
        Self { store: Arc::new(RedisRevocationStore::new(pool)), _server: Some(server) }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

mesh_testkit::conformance!(
    Fixture:
    a_revoked_session_revokes_every_token_of_it_in_its_tenant_only,
    a_revoked_token_id_revokes_that_token_only,
    a_revocation_is_forgotten_after_its_until_and_never_shortened,
    active_lists_every_revocation_in_force_with_its_tenant_and_latest_until,
);

async fn a_revoked_session_revokes_every_token_of_it_in_its_tenant_only(fixture: Fixture) {
    let now = SystemTime::now();
    let store = &fixture.store;
    assert!(!store.is_revoked("acme", Some("s1"), "j1", now).await.unwrap());
    store.revoke("acme", &[Revoked::Session("s1".into()), Revoked::Session("s2".into())], now + HOUR).await.unwrap();
    for (session, token) in [("s1", "j1"), ("s1", "j9"), ("s2", "j2")] {
        assert!(store.is_revoked("acme", Some(session), token, now).await.unwrap(), "{session}/{token}");
    }
    assert!(!store.is_revoked("acme", Some("s3"), "j1", now).await.unwrap());
    assert!(!store.is_revoked("other", Some("s1"), "j1", now).await.unwrap(), "another tenant's s1");
    assert!(!store.is_revoked("acme", None, "j1", now).await.unwrap(), "a service token has no session");
    store.revoke("acme", &[Revoked::Session("s1".into())], now + HOUR).await.unwrap();
    assert!(store.is_revoked("acme", Some("s1"), "j1", now).await.unwrap(), "idempotent");
}

async fn a_revoked_token_id_revokes_that_token_only(fixture: Fixture) {
    let now = SystemTime::now();
    fixture.store.revoke("acme", &[Revoked::Token("j1".into())], now + HOUR).await.unwrap();
    assert!(fixture.store.is_revoked("acme", Some("s1"), "j1", now).await.unwrap());
    assert!(fixture.store.is_revoked("acme", None, "j1", now).await.unwrap());
    assert!(!fixture.store.is_revoked("acme", Some("s1"), "j2", now).await.unwrap());
    assert!(!fixture.store.is_revoked("other", Some("s1"), "j1", now).await.unwrap());
}

async fn a_revocation_is_forgotten_after_its_until_and_never_shortened(fixture: Fixture) {
    let now = SystemTime::now();
    let store = &fixture.store;
    store.revoke("acme", &[Revoked::Session("past".into())], now - Duration::from_secs(1)).await.unwrap();
    assert!(!store.is_revoked("acme", Some("past"), "j1", now).await.unwrap(), "already over");
    store.revoke("acme", &[Revoked::Session("s1".into())], now + HOUR).await.unwrap();
    store.revoke("acme", &[Revoked::Session("s1".into())], now - Duration::from_secs(1)).await.unwrap();
    assert!(store.is_revoked("acme", Some("s1"), "j1", now).await.unwrap(), "an earlier until never shortens");
    store.revoke("acme", &[], now + HOUR).await.unwrap();
}

async fn active_lists_every_revocation_in_force_with_its_tenant_and_latest_until(fixture: Fixture) {
    // Whole milliseconds: the Redis index keeps milliseconds.
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_millis(
            u64::try_from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis()).unwrap(),
        );
    let store = &fixture.store;
    assert!(store.active(now).await.unwrap().is_empty());
    store.revoke("acme", &[Revoked::Session("s1".into()), Revoked::Token("j1".into())], now + HOUR).await.unwrap();
    store.revoke("acme", &[Revoked::Session("s1".into())], now + 2 * HOUR).await.unwrap();
    store.revoke("other", &[Revoked::Session("s1".into())], now + HOUR).await.unwrap();
    store.revoke("acme", &[Revoked::Session("gone".into())], now - Duration::from_secs(1)).await.unwrap();
    let mut active = store.active(now).await.unwrap();
    active.sort_by(|a, b| (&a.tenant, format!("{:?}", a.revoked)).cmp(&(&b.tenant, format!("{:?}", b.revoked))));
    let entry = |tenant: &str, revoked: Revoked, until| ActiveRevocation { tenant: tenant.into(), revoked, until };
    assert_eq!(
        active,
        vec![
            entry("acme", Revoked::Session("s1".into()), now + 2 * HOUR),
            entry("acme", Revoked::Token("j1".into()), now + HOUR),
            entry("other", Revoked::Session("s1".into()), now + HOUR),
        ]
    );
    assert!(store.active(now + 3 * HOUR).await.unwrap().is_empty(), "none in force later");
}
