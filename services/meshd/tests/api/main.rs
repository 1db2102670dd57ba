//! meshd's integration tests: one binary, booting the real server in-process (through
//! mesh-testkit's `TestApp`) or as a process (`CARGO_BIN_EXE_meshd`) on `127.0.0.1:0`.

mod auth;
mod cli;
mod grpc_web;
mod health;
mod keys;
mod reflection;
mod shutdown;
mod support;
