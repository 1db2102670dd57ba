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

mesh_testkit::conformance!(
    Fixture:
    an_account_is_throttled_after_its_failures,
    parallel_attempts_cannot_exceed_the_limit,
    an_address_is_throttled_across_accounts_and_a_success_does_not_clear_it,
    a_success_clears_the_accounts_failures,
);

/// A failed login: the attempt is counted and the password did not match.
async fn fail(fixture: &Fixture, tenant: &str, account: &Email, address: &str) {
    fixture.throttle.attempt(tenant, account, address, SystemTime::now()).await.unwrap();
}

async fn an_account_is_throttled_after_its_failures(fixture: Fixture) {
    let alice = email("alice@example.com");
    for _ in 0..3 {
        fail(&fixture, "acme", &alice, "10.0.0.1").await;
    }
    // The same account, any address and any spelling of the email: throttled.
    let now = SystemTime::now();
    let wait = retry_after(fixture.throttle.attempt("acme", &email("ALICE@example.com"), "10.0.0.2", now).await);
    assert!(wait > Duration::from_secs(590) && wait <= SETTINGS.window, "{wait:?}");
    // Another tenant's account of the same email is not.
    fixture.throttle.attempt("other", &alice, "10.0.0.3", now).await.unwrap();
}

async fn parallel_attempts_cannot_exceed_the_limit(fixture: Fixture) {
    let fixture = Arc::new(fixture);
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let fixture = fixture.clone();
            tokio::spawn(async move {
                let alice = email("alice@example.com");
                fixture.throttle.attempt("acme", &alice, &format!("10.0.1.{n}"), SystemTime::now()).await
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => allowed += 1,
            Err(AuthError::Throttled { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(allowed, SETTINGS.max_failures_per_account, "exactly the limit may check a password");
}

async fn an_address_is_throttled_across_accounts_and_a_success_does_not_clear_it(fixture: Fixture) {
    for n in 0..5 {
        fail(&fixture, "acme", &email(&format!("user{n}@example.com")), "10.0.0.9").await;
    }
    let now = SystemTime::now();
    let fresh = email("fresh@example.com");
    retry_after(fixture.throttle.attempt("acme", &fresh, "10.0.0.9", now).await);
    fixture.throttle.succeeded("acme", &fresh, "10.0.0.9").await.unwrap();
    retry_after(fixture.throttle.attempt("acme", &email("other@example.com"), "10.0.0.9", now).await);
    fixture.throttle.attempt("acme", &email("other@example.com"), "10.0.0.10", now).await.unwrap();
}

async fn a_success_clears_the_accounts_failures(fixture: Fixture) {
    let alice = email("alice@example.com");
    for _ in 0..2 {
        fail(&fixture, "acme", &alice, "10.0.0.1").await;
    }
    // The third attempt matches: the account's count is cleared, the address's refunded.
    fixture.throttle.attempt("acme", &alice, "10.0.0.1", SystemTime::now()).await.unwrap();
    fixture.throttle.succeeded("acme", &alice, "10.0.0.1").await.unwrap();
    for _ in 0..3 {
        fail(&fixture, "acme", &alice, "10.0.0.1").await;
    }
    // Three failures since the success: the next attempt is throttled.
    retry_after(fixture.throttle.attempt("acme", &alice, "10.0.0.1", SystemTime::now()).await);
    // The address counted 2 + 3 failures and 1 throttled attempt, the success refunded: it
    // is over its limit of 5 only now.
    retry_after(fixture.throttle.attempt("acme", &email("bob@example.com"), "10.0.0.1", SystemTime::now()).await);
}
