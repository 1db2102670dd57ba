//! The Auth service end to end: meshd in-process (mesh-testkit's `TestApp`) on its own
//! redis-server or on the embedded memory backbone, called through the generated clients.

mod flows;
mod guards;
mod support;
mod watch;
