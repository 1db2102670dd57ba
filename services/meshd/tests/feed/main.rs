//! The Feed service end to end: meshd in-process (mesh-testkit's `TestApp`) on its own
//! redis-server or on the embedded memory backbone, called through the generated client.

mod browser;
mod rpc;
mod subscribe;
mod support;
