//! The in-process document store: the embedded default and the test double.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    BoxFuture, Committed, DocKey, Document, DocumentError, DocumentStore, Expect, Fields, Page, Precondition, Query,
    Version, Write, check_distinct,
};

/// Documents in a map, behind one lock. Versions are microsecond timestamps, strictly
/// increasing across commits (as Firestore's update times are per document).
#[derive(Debug, Default)]
pub struct MemoryDocuments {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    documents: BTreeMap<DocKey, (Fields, Version)>,
    last_micros: i64,
}

impl State {
    /// A commit time later than every earlier one.
    fn tick(&mut self) -> Version {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.last_micros = now.max(self.last_micros + 1);
        Version {
            seconds: self.last_micros.div_euclid(1_000_000),
            nanos: (self.last_micros.rem_euclid(1_000_000) * 1_000) as i32,
        }
    }

    fn check(&self, write: &Write) -> Result<(), DocumentError> {
        let current = self.documents.get(write.key()).map(|(_, version)| *version);
        let failed = match (write, write.expect(), current) {
            (Write::Create { .. }, _, Some(_)) => Some(Precondition::AlreadyExists),
            (_, Expect::Exists | Expect::Version(_), None) => Some(Precondition::Missing),
            (_, Expect::Version(expected), Some(current)) if expected != current => Some(Precondition::Changed),
            _ => None,
        };
        match failed {
            Some(kind) => Err(DocumentError::Precondition { key: write.key().to_string(), kind }),
            None => Ok(()),
        }
    }
}

impl MemoryDocuments {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // a panic while holding the lock leaves the map consistent: every commit checks all
        // preconditions before it changes anything
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DocumentStore for MemoryDocuments {
    fn get<'a>(&'a self, keys: &'a [DocKey]) -> BoxFuture<'a, Result<Vec<Option<Document>>, DocumentError>> {
        Box::pin(async move {
            let state = self.state();
            Ok(keys
                .iter()
                .map(|key| {
                    state.documents.get(key).map(|(fields, version)| Document {
                        key: key.clone(),
                        fields: fields.clone(),
                        version: *version,
                    })
                })
                .collect())
        })
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Committed, DocumentError>> {
        Box::pin(async move {
            check_distinct(&writes)?;
            let mut state = self.state();
            for write in &writes {
                state.check(write)?;
            }
            let at = state.tick();
            let versions = vec![at; writes.len()];
            for write in writes {
                match write {
                    Write::Create { key, fields } | Write::Put { key, fields, .. } => {
                        state.documents.insert(key, (fields, at));
                    }
                    Write::Delete { key, .. } => {
                        state.documents.remove(&key);
                    }
                }
            }
            Ok(Committed { versions, at })
        })
    }

    fn query<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Page, DocumentError>> {
        Box::pin(async move {
            query.check()?;
            let state = self.state();
            let mut matches: Vec<Document> = state
                .documents
                .iter()
                .filter(|(key, _)| key.collection() == query.collection)
                .map(|(key, (fields, version))| Document {
                    key: key.clone(),
                    fields: fields.clone(),
                    version: *version,
                })
                .filter(|document| query.matches(document) && query.is_after_cursor(document))
                .collect();
            matches.sort_by(|a, b| query.compare(a, b));
            matches.truncate(query.limit + 1);
            Ok(Page::from_matches(query, matches))
        })
    }
}
