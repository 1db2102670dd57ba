//! Waiting for state that has no event to wait on (a row in a database, a queue drained):
//! poll with a deadline, never a fixed sleep.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `probe` until it yields a value and returns it; fails the test with "timed out
/// waiting until `what`" after `patience`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    patience: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}
