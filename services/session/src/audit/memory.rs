//! [`MemoryAuditSink`]: audit events in process memory, for tests and as the reference
//! behaviour of the conformance suite. Nothing survives the process.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{AuditError, AuditSink, BoxFuture, first_of_each_id};
use crate::domain::AuditEvent;

/// The in-memory [`AuditSink`].
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Stored events, in the order they were first appended.
    events: Vec<AuditEvent>,
    /// Position of each stored event id in `events`.
    index: HashMap<String, usize>,
}

impl MemoryAuditSink {
    /// Every stored event, in the order it was first appended.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.state().events.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Appends are all-or-nothing under the lock, so a poisoned lock holds consistent data.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AuditSink for MemoryAuditSink {
    fn append<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            let mut state = self.state();
            for event in first_of_each_id(events) {
                if !state.index.contains_key(&event.event_id) {
                    let position = state.events.len();
                    state.index.insert(event.event_id.clone(), position);
                    state.events.push(event.clone());
                }
            }
            Ok(())
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(async move { Ok(self.state().events.len() as u64) })
    }

    fn get<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<Option<AuditEvent>, AuditError>> {
        Box::pin(async move {
            let state = self.state();
            Ok(state.index.get(event_id).map(|&position| state.events[position].clone()))
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async { Ok(()) })
    }
}
