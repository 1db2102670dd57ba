//! mesh-testkit: the hermetic test harness every test binary of the workspace uses.
//!
//! - [`RedisServer`]: a private `redis-server` on a free loopback port (no persistence),
//!   stopped on drop; it can be stopped and restarted on the same port for fault tests.
//! - [`PostgresServer`]: a private PostgreSQL cluster (`initdb` in a temp dir, `postgres` on
//!   a free loopback port), removed on drop; stop and restart keep its data, for outage tests.
//! - [`TestApp`]: meshd booted in-process on `127.0.0.1:0` with test settings, typed
//!   clients, and a signing key for test tokens.
//!
//! Nothing here depends on a server the machine happens to run, and nothing uses a fixed
//! port.

pub mod app;
pub mod bench;
pub mod postgres;
pub mod redis;
mod server_process;
pub mod status;
pub mod wait;

pub use app::TestApp;
pub use postgres::PostgresServer;
pub use redis::RedisServer;
pub use wait::eventually;
