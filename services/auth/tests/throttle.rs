//! Conformance suite of the failed-login counters under [`LoginThrottle`]: memory and Redis
//! (a `redis-server` the test starts).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_auth::AuthError;
use mesh_auth::domain::Email;
use mesh_auth::store::{AttemptStore, LoginThrottle, MemoryAttemptStore, RedisAttemptStore, ThrottleSettings};
use mesh_core::backend::redis_pool;
use mesh_core::config::RedisSettings;
use mesh_testkit::RedisServer;

struct Fixture {
    throttle: LoginThrottle,
    _server: Option<RedisServer>,
}

const SETTINGS: ThrottleSettings =
    ThrottleSettings { max_failures_per_account: 3, max_failures_per_address: 5, window: Duration::from_secs(600) };

impl Fixture {
    async fn start(redis: bool) -> Self {
        let (store, server): (Arc<dyn AttemptStore>, _) = if redis {
            let server = RedisServer::start().await.expect("redis-server starts");
            let pool = redis_pool(&server.url(), &RedisSettings::default()).expect("a valid redis url");
            (Arc::new(RedisAttemptStore::new(pool)), Some(server))
        } else {
            (Arc::new(MemoryAttemptStore::default()), None)
        };
        Self { throttle: LoginThrottle::new(store, SETTINGS), _server: server }
    }
}

fn email(raw: &str) -> Email {
    Email::parse(raw, "email").unwrap()
}

fn retry_after(result: Result<(), AuthError>) -> Duration {
    match result {
        Err(AuthError::Throttled { retry_after }) => retry_after,
        other => panic!("expected Throttled, got {other:?}"),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::Fixture::start(false).await).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $name() { super::$name(super::Fixture::start(true).await).await })*
        }
    };
}

conformance!(
    an_account_is_throttled_after_its_failures_until_the_window_ends,
    an_address_is_throttled_across_accounts_and_a_success_does_not_clear_it,
    a_success_clears_the_accounts_failures,
);

async fn an_account_is_throttled_after_its_failures_until_the_window_ends(fixture: Fixture) {
    let now = SystemTime::now();
    let alice = email("alice@example.com");
    for _ in 0..3 {
        fixture.throttle.check("acme", &alice, "10.0.0.1", now).await.unwrap();
        fixture.throttle.failed("acme", &alice, "10.0.0.1", now).await.unwrap();
    }
    // The same account, any address and any spelling of the email: throttled.
    let wait = retry_after(fixture.throttle.check("acme", &email("ALICE@example.com"), "10.0.0.2", now).await);
    assert!(wait > Duration::from_secs(590) && wait <= SETTINGS.window, "{wait:?}");
    // Another tenant's account of the same email is not.
    fixture.throttle.check("other", &alice, "10.0.0.2", now).await.unwrap();
}

async fn an_address_is_throttled_across_accounts_and_a_success_does_not_clear_it(fixture: Fixture) {
    let now = SystemTime::now();
    for n in 0..5 {
        let account = email(&format!("user{n}@example.com"));
        fixture.throttle.failed("acme", &account, "10.0.0.9", now).await.unwrap();
    }
    fixture.throttle.succeeded("acme", &email("user0@example.com")).await.unwrap();
    retry_after(fixture.throttle.check("acme", &email("fresh@example.com"), "10.0.0.9", now).await);
    fixture.throttle.check("acme", &email("fresh@example.com"), "10.0.0.10", now).await.unwrap();
}

async fn a_success_clears_the_accounts_failures(fixture: Fixture) {
    let now = SystemTime::now();
    let alice = email("alice@example.com");
    for _ in 0..2 {
        fixture.throttle.failed("acme", &alice, "10.0.0.1", now).await.unwrap();
    }
    fixture.throttle.succeeded("acme", &alice).await.unwrap();
    for _ in 0..2 {
        fixture.throttle.failed("acme", &alice, "10.0.0.1", now).await.unwrap();
    }
    fixture.throttle.check("acme", &alice, "10.0.0.1", now).await.unwrap();
    // The counters count: a third failure since the success throttles.
    fixture.throttle.failed("acme", &alice, "10.0.0.1", now).await.unwrap();
    retry_after(fixture.throttle.check("acme", &alice, "10.0.0.1", now).await);
}
