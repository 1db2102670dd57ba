//! Hermetic test harness for the mesh workspace: private `redis-server` instances on free loopback ports.
pub mod redis;
pub use redis::RedisServer;
