//! The Storage service end to end: meshd in-process (mesh-testkit's `TestApp`) with its
//! blobs in a local folder served on its own port, called through the generated client and
//! a plain HTTP client; and on a Firestore emulator behind a Redis cache.

mod cleanup;
mod firestore;
mod flow;
mod support;
