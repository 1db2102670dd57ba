//! The Session service end to end: meshd in-process (mesh-testkit's `TestApp`) on its own
//! redis-server (and PostgreSQL for the audit trail), called through the generated client.

mod audit;
mod cross_instance;
mod lifetimes;
mod rpc;
mod support;
mod writers;
