//! mesh-testkit: the hermetic test harness every test binary of the workspace uses.
//!
//! - [`RedisServer`]: a private `redis-server` on a free loopback port (no persistence),
//!   stopped on drop; it can be stopped and restarted on the same port for fault tests.
//! - [`PostgresServer`]: a private PostgreSQL cluster (`initdb` in a temp dir, `postgres` on
//!   a free loopback port), removed on drop; stop and restart keep its data, for outage tests.
//! - [`FirestoreEmulator`]: a private Firestore emulator (the npm package
//!   `@firestore-emulator/server`, run by `node`) on a free loopback port, stopped on drop; it
//!   can be stopped and restarted on the same port (empty again: it keeps data in memory only).
//! - [`TestApp`]: meshd booted in-process on `127.0.0.1:0` with test settings, typed
//!   clients, and a signing key for test tokens.
//!
//! Nothing here depends on a server the machine happens to run, and nothing uses a fixed
//! port.

pub mod app;
pub mod bench;
pub mod firestore;
pub mod postgres;
pub mod redis;
mod server_process;
pub mod status;
pub mod wait;

pub use app::TestApp;
pub use firestore::FirestoreEmulator;
pub use postgres::PostgresServer;
pub use redis::RedisServer;
pub use wait::eventually;

/// Runs each named check of a conformance suite against the memory and the Redis
/// implementation of a boundary: `conformance!(Fixture: check_a, check_b)` makes the tests
/// `memory::check_a` and `redis::check_a` (on a 4-worker runtime, so concurrency checks meet
/// real parallelism), each calling `check_a(Fixture::start(redis).await)`. The fixture type
/// has `async fn start(redis: bool) -> Self`; the calling crate depends on tokio.
#[macro_export]
macro_rules! conformance {
    ($fixture:ident: $($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
              async fn $name() { super::$name(super::$fixture::start(false).await).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::$fixture::start(true).await).await })*
        }
    };
}
