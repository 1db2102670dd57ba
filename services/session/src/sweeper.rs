//! [`Sweeper`]: ends sessions whose expiry passed, so their watchers hear EXPIRED and the
//! audit trail records it.
//!
//! Every instance runs one. There is no per-session timer and no election: each sweep asks
//! the store for the due sessions ([`SessionStore::expire_due`]), and the store ends each one
//! exactly once however many instances sweep at the same moment. Reads treat an expired
//! session as missing from the instant it expires, so the sweep interval only bounds how
//! late EXPIRED is announced.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::store::SessionStore;

/// Sessions ended per store call; a full batch is followed by another at once.
const BATCH: usize = 256;

/// Periodically ends expired sessions (see the module docs).
pub struct Sweeper {
    store: Arc<dyn SessionStore>,
    interval: Duration,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl Sweeper {
    /// A sweeper of `store` that looks every `interval`.
    pub fn new(store: Arc<dyn SessionStore>, interval: Duration) -> Self {
        Self { store, interval }
    }

    /// Sweeps until `shutdown` is cancelled. Store failures are logged; the next sweep tries
    /// again.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.sweep().await;
        }
    }

    /// Ends every session due now, batch after batch.
    pub async fn sweep(&self) {
        loop {
            match self.store.expire_due(SystemTime::now(), BATCH).await {
                Ok(ended) => {
                    if ended > 0 {
                        tracing::debug!(ended, "expired sessions ended");
                    }
                    if ended < BATCH {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "session expiry sweep failed; retrying at the next interval");
                    return;
                }
            }
        }
    }
}
