//! Per-caller limits every streaming service shares: [`StreamSlots`] counts each caller's
//! open streams (per tenant and user, per instance) up to a maximum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts the open streams per caller, up to a maximum.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    max: usize,
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

/// One open stream's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    key: (String, String),
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl StreamSlots {
    /// At most `max` streams per caller.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1), open: Arc::default() }
    }

    /// A slot for `user` of `tenant`, or `None` when it has `max` streams open.
    pub fn acquire(&self, tenant: &str, user: &str) -> Option<StreamSlot> {
        let key = (tenant.to_owned(), user.to_owned());
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot { key, open: self.open.clone() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_caller_and_freed_on_drop() {
        let slots = StreamSlots::new(2);
        let first = slots.acquire("acme", "alice").unwrap();
        let _second = slots.acquire("acme", "alice").unwrap();
        assert!(slots.acquire("acme", "alice").is_none());
        assert!(slots.acquire("acme", "bob").is_some());
        drop(first);
        assert!(slots.acquire("acme", "alice").is_some());
    }
}
