//! Conformance suite of the refresh-token store: every test runs against
//! [`MemoryRefreshStore`] and [`RedisRefreshStore`] (on a `redis-server` the test starts).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_auth::domain::{FamilyId, RefreshRecord, RefreshToken};
use mesh_auth::store::{MemoryRefreshStore, RedisRefreshStore, RefreshTokenStore, Rotation};
use mesh_core::backend::redis_pool;
use mesh_core::config::RedisSettings;
use mesh_testkit::RedisServer;

struct Fixture {
    store: Arc<dyn RefreshTokenStore>,
    _server: Option<RedisServer>,
}

impl Fixture {
    async fn start(redis: bool) -> Self {
        if !redis {
            return Self { store: Arc::new(MemoryRefreshStore::default()), _server: None };
        }
        let server = RedisServer::start().await.expect("redis-server starts");
        let settings = RedisSettings { pool_size: 32, ..RedisSettings::default() };
        let pool = redis_pool(&server.url(), &settings).expect("a valid redis url");
        Self { store: Arc::new(RedisRefreshStore::new(pool)), _server: Some(server) }
    }

    /// A new family for session `session` of alice@acme, its first token stored.
    async fn login(&self, session: &str, lifetime: Duration) -> (RefreshToken, RefreshRecord) {
        let record = RefreshRecord {
            tenant: "acme".into(),
            user: "alice".into(),
            session_id: session.into(),
            family: FamilyId::generate(),
            expire_time: truncated(SystemTime::now() + lifetime),
        };
        let token = RefreshToken::generate();
        self.store.issue(&token.hash(), &record).await.unwrap();
        (token, record)
    }

    async fn rotate(&self, token: &RefreshToken, now: SystemTime) -> (RefreshToken, Rotation) {
        let next = RefreshToken::generate();
        let rotation = self.store.rotate(&token.hash(), &next.hash(), now).await.unwrap();
        (next, rotation)
    }
}

/// Stores keep milliseconds.
fn truncated(time: SystemTime) -> SystemTime {
    let ms = time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

const HOUR: Duration = Duration::from_secs(3600);

mesh_testkit::conformance!(
    Fixture:
    a_rotation_consumes_the_token_and_the_next_one_works,
    a_reused_token_revokes_its_whole_family,
    of_twenty_parallel_rotations_of_one_token_exactly_one_succeeds,
    revoking_a_session_revokes_every_family_of_it_only,
    an_expired_or_unknown_token_is_invalid,
);

async fn a_rotation_consumes_the_token_and_the_next_one_works(fixture: Fixture) {
    let (r1, record) = fixture.login("s1", HOUR).await;
    let now = SystemTime::now();
    assert_eq!(fixture.store.find(&r1.hash(), now).await.unwrap(), Some(record.clone()));

    let (r2, rotation) = fixture.rotate(&r1, now).await;
    assert_eq!(rotation, Rotation::Rotated(record.clone()));
    assert_eq!(fixture.store.find(&r1.hash(), now).await.unwrap(), None, "r1 is spent");
    assert_eq!(fixture.store.find(&r2.hash(), now).await.unwrap(), Some(record.clone()), "same family and expiry");

    let (_r3, rotation) = fixture.rotate(&r2, now).await;
    assert_eq!(rotation, Rotation::Rotated(record));
}

async fn a_reused_token_revokes_its_whole_family(fixture: Fixture) {
    let (r1, record) = fixture.login("s1", HOUR).await;
    let (other, other_record) = fixture.login("s2", HOUR).await;
    let now = SystemTime::now();
    let (r2, _) = fixture.rotate(&r1, now).await;

    let (_, rotation) = fixture.rotate(&r1, now).await;
    assert_eq!(rotation, Rotation::Reused(record), "the record names the session to end");
    let (_, r2_again) = fixture.rotate(&r2, now).await;
    assert!(matches!(r2_again, Rotation::Reused(_)), "r2 is revoked with its family, and presenting it is reuse");
    assert!(
        matches!(fixture.rotate(&r1, now).await.1, Rotation::Reused(_)),
        "r1 stays reuse: a failed ending is retried"
    );
    assert_eq!(fixture.store.find(&r2.hash(), now).await.unwrap(), None, "no token of the family is live");
    assert_eq!(fixture.store.find(&other.hash(), now).await.unwrap(), Some(other_record), "other families live on");
}

async fn of_twenty_parallel_rotations_of_one_token_exactly_one_succeeds(fixture: Fixture) {
    let (r1, _) = fixture.login("s1", HOUR).await;
    let fixture = Arc::new(fixture);
    let now = SystemTime::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (fixture, r1) = (fixture.clone(), r1.clone());
            tokio::spawn(async move { fixture.rotate(&r1, now).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let rotated: Vec<&RefreshToken> = outcomes
        .iter()
        .filter(|(_, rotation)| matches!(rotation, Rotation::Rotated(_)))
        .map(|(next, _)| next)
        .collect();
    assert_eq!(rotated.len(), 1, "{:?}", outcomes.iter().map(|(_, r)| r).collect::<Vec<_>>());
    // The losers presented a consumed token: reuse, so the winner's token is revoked too.
    assert_eq!(fixture.store.find(&rotated[0].hash(), now).await.unwrap(), None);
}

async fn revoking_a_session_revokes_every_family_of_it_only(fixture: Fixture) {
    let (first, _) = fixture.login("s1", HOUR).await;
    let (second, _) = fixture.login("s1", HOUR).await;
    let (other, other_record) = fixture.login("s2", HOUR).await;
    let now = SystemTime::now();
    let (first_next, _) = fixture.rotate(&first, now).await;

    assert_eq!(fixture.store.revoke_session("acme", "s1").await.unwrap().len(), 2);
    for token in [&first, &first_next, &second] {
        assert_eq!(fixture.store.find(&token.hash(), now).await.unwrap(), None);
        assert_eq!(fixture.rotate(token, now).await.1, Rotation::Invalid);
    }
    assert_eq!(fixture.store.find(&other.hash(), now).await.unwrap(), Some(other_record));
    assert!(fixture.store.revoke_session("acme", "s1").await.unwrap().is_empty(), "idempotent");
    assert!(fixture.store.revoke_session("other", "s2").await.unwrap().is_empty(), "by tenant and session");
}

async fn an_expired_or_unknown_token_is_invalid(fixture: Fixture) {
    let (token, record) = fixture.login("s1", HOUR).await;
    let after = record.expire_time + Duration::from_millis(1);
    assert_eq!(fixture.store.find(&token.hash(), after).await.unwrap(), None);
    assert_eq!(fixture.rotate(&token, after).await.1, Rotation::Invalid);
    let unknown = RefreshToken::generate();
    assert_eq!(fixture.rotate(&unknown, SystemTime::now()).await.1, Rotation::Invalid);
    assert_eq!(fixture.store.find(&unknown.hash(), SystemTime::now()).await.unwrap(), None);
}

/// Redis only: every key of a family expires with it, so spent and revoked families never
/// pile up.
#[tokio::test]
async fn redis_keys_expire_with_their_family() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let pool = redis_pool(&server.url(), &RedisSettings::default()).unwrap();
    let fixture = Fixture { store: Arc::new(RedisRefreshStore::new(pool)), _server: None };
    let (r1, record) = fixture.login("s1", HOUR).await;
    let (r2, _) = fixture.rotate(&r1, SystemTime::now()).await;
    let expected = record.expire_time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut connection = server.connection().await.unwrap();
    for key in [
        format!("mesh:{{refresh}}:token:{}", r1.hash().as_str()),
        format!("mesh:{{refresh}}:token:{}", r2.hash().as_str()),
        format!("mesh:{{refresh}}:family:{}", record.family.as_str()),
        "mesh:{refresh}:session:acme/s1".to_owned(),
    ] {
        let at: i64 = ::redis::cmd("PEXPIRETIME").arg(&key).query_async(&mut connection).await.unwrap();
        assert_eq!(at, expected, "{key}");
    }
}
