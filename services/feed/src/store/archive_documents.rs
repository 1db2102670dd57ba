//! [`DocumentFeedArchive`]: the [`FeedArchive`] in the document store
//! ([`mesh_core::documents`]: Firestore, or memory), with the trait's contract unchanged.
//!
//! # Layout
//!
//! Every document is the tenant's (`tenants/<tenant>/<collection>/<id>`); `<event>` is the
//! event id and `<feed>` the feed name, both [escaped](escape) into document ids:
//!
//! - `feed_archive_events/<event>`: the event as first written, fields `event` (the feed-log
//!   payload as text) and `positions` (`[{"feed": "global", "position": "<offset>:<epoch>"},
//!   ..]`, the form of the read models' watermarks; offsets as text, so no integer nears the
//!   2^53 the emulator allows). It decides which write of an event wins.
//! - `feed_archive_entries/<feed>:<event>`: one per feed the event has a position in, a copy
//!   of the event document's fields plus `feed` (its name) and `key` (its own id). A feed's
//!   entries are exactly the keys from `<feed>:` to `<feed>;` (an escaped name holds no `:`),
//!   and each key is unique, so [`FeedArchive::events`] pages through them with a range filter
//!   on `key`, ordered by `key` (`key > <last seen>`, [`MAX_PAGE_SIZE`] a page), never with a
//!   query cursor; on Firestore that needs only the automatic single-field index.
//! - `feed_archive_feeds/<feed>`: one per feed with entries, field `feed` (its name), read
//!   page by page the same way, by `feed`.
//!
//! # Appending: first write wins without atomic commits
//!
//! 1. The event documents are created ([`Write::Create`]), a commit per chunk. When a commit
//!    fails because one of them exists, the chunk is read back: an event found is archived
//!    already (whichever write created it won, even this one's on a store that applied part
//!    of the failed commit), the ones still missing are created again. Each round finds at
//!    least the document that failed, so it ends.
//! 2. Then the entries and feed documents are *put*, from the fields the event documents
//!    hold, never from the batch: every writer of an event writes the same entries, so
//!    concurrent or repeated appends agree, a second write adds no feed, and appending again
//!    after a crash between the two steps completes the first write's entries.
//!
//! This holds where commits are atomic (Firestore, memory) and where they apply their writes
//! one by one but check `exists` per write (the test emulator). An event's entries appear
//! after its event document, and a feed document after its entries, so a reader sees an event
//! either in all its feeds or, while an append is under way, in some of them.
//!
//! [`FeedArchive::events`] reads a feed's entries and sorts them in feed order (by epoch
//! start, epoch, offset, as [`MemoryFeedArchive`](super::MemoryFeedArchive) does): an epoch's
//! start can move when an older event is appended late, so no stored field keeps that order.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use mesh_core::FieldViolation;
use mesh_core::documents::{
    Direction, DocKey, DocumentError, DocumentStore, Expect, Fields, Filter, MAX_PAGE_SIZE, Op, Precondition, Query,
    Write,
};
use serde_json::{Value, json};

use super::BoxFuture;
use super::archive::{ArchivedEvent, FeedArchive, decode_feed, decode_position, in_feed_order};
use crate::domain::{FeedError, FeedEvent, FeedName};

/// The archive in a document store; see the module docs.
#[derive(Clone)]
pub struct DocumentFeedArchive {
    documents: Arc<dyn DocumentStore>,
}

impl std::fmt::Debug for DocumentFeedArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentFeedArchive").finish_non_exhaustive()
    }
}

impl DocumentFeedArchive {
    /// The archive in `documents`.
    pub fn new(documents: Arc<dyn DocumentStore>) -> Self {
        Self { documents }
    }
}

/// One document per archived event.
const EVENTS: &str = "feed_archive_events";
/// One document per event and feed.
const ENTRIES: &str = "feed_archive_entries";
/// One document per feed with events.
const FEEDS: &str = "feed_archive_feeds";

/// Most writes in one commit (Firestore allows 500; an event is up to some 25 KB of text,
/// and a request up to 10 MiB).
const WRITES_PER_COMMIT: usize = 200;

/// An event as its event document holds it: the fields to copy into its entries, and the
/// feeds it has a position in (each once, in order).
struct StoredEvent {
    id: String,
    fields: Fields,
    feeds: Vec<FeedName>,
}

impl FeedArchive for DocumentFeedArchive {
    fn append<'a>(&'a self, tenant: &'a str, events: &'a [ArchivedEvent]) -> BoxFuture<'a, Result<(), FeedError>> {
        Box::pin(async move {
            // An event twice in one batch: its first copy is the first write.
            let mut seen = HashSet::new();
            let unique: Vec<&ArchivedEvent> =
                events.iter().filter(|archived| seen.insert(archived.event.event_id())).collect();
            let mut stored = Vec::with_capacity(unique.len());
            for chunk in unique.chunks(WRITES_PER_COMMIT) {
                stored.extend(self.create_events(tenant, chunk).await?);
            }
            self.put_entries(tenant, &stored).await
        })
    }

    fn feeds<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<FeedName>, FeedError>> {
        Box::pin(async move {
            check_tenant(tenant)?;
            let mut feeds = Vec::new();
            // Every name is above the empty text.
            let mut after = String::new();
            loop {
                let query = Query::new(tenant, FEEDS, MAX_PAGE_SIZE)
                    .filter(Filter::new("feed", Op::Gt, after.as_str()))
                    .order_by("feed", Direction::Ascending);
                let page = self.documents.query(&query).await.map_err(document_error)?;
                let more = page.next.is_some();
                for document in page.documents {
                    let name = text(&document.fields, "feed")?;
                    next_after(&mut after, name)?;
                    feeds.push(decode_feed(name)?);
                }
                if !more {
                    break;
                }
            }
            feeds.sort_by_cached_key(FeedName::to_string);
            Ok(feeds)
        })
    }

    fn events<'a>(
        &'a self,
        tenant: &'a str,
        feed: &'a FeedName,
    ) -> BoxFuture<'a, Result<Vec<ArchivedEvent>, FeedError>> {
        Box::pin(async move {
            check_tenant(tenant)?;
            let prefix = escape(&feed.to_string());
            // Every key of the feed is `<prefix>:<event>`: above `<prefix>:`, below `<prefix>;`.
            let end = format!("{prefix};");
            let mut after = format!("{prefix}:");
            let mut archived = Vec::new();
            loop {
                let query = Query::new(tenant, ENTRIES, MAX_PAGE_SIZE)
                    .filter(Filter::new("key", Op::Gt, after.as_str()))
                    .filter(Filter::new("key", Op::Lt, end.as_str()))
                    .order_by("key", Direction::Ascending);
                let page = self.documents.query(&query).await.map_err(document_error)?;
                let more = page.next.is_some();
                for document in page.documents {
                    next_after(&mut after, text(&document.fields, "key")?)?;
                    archived.push(decode_record(&document.fields)?);
                }
                if !more {
                    break;
                }
            }
            Ok(in_feed_order(feed, archived))
        })
    }
}

impl DocumentFeedArchive {
    /// Creates the event documents of `chunk` (at most [`WRITES_PER_COMMIT`] events, distinct
    /// ids) where there are none yet; returns each event as its document holds it.
    async fn create_events(&self, tenant: &str, chunk: &[&ArchivedEvent]) -> Result<Vec<StoredEvent>, FeedError> {
        let ids: Vec<String> = chunk.iter().map(|archived| archived.event.event_id()).collect();
        let keys: Vec<DocKey> = ids.iter().map(|id| event_key(tenant, id)).collect::<Result<_, _>>()?;
        let records: Vec<Fields> = chunk.iter().map(|archived| record_fields(archived)).collect();
        let mut stored: Vec<Option<StoredEvent>> = chunk.iter().map(|_| None).collect();
        loop {
            let missing: Vec<usize> = (0..chunk.len()).filter(|&i| stored[i].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            let creates =
                missing.iter().map(|&i| Write::Create { key: keys[i].clone(), fields: records[i].clone() }).collect();
            match self.documents.commit(creates).await {
                Ok(_) => {
                    for i in missing {
                        let feeds = distinct_feeds(chunk[i].positions.iter().map(|(feed, _)| feed));
                        stored[i] = Some(StoredEvent { id: ids[i].clone(), fields: records[i].clone(), feeds });
                    }
                }
                Err(DocumentError::Precondition { kind: Precondition::AlreadyExists, .. }) => {
                    // Some are archived already: take those as they are, create the rest.
                    let missing_keys: Vec<DocKey> = missing.iter().map(|&i| keys[i].clone()).collect();
                    let found = self.documents.get(&missing_keys).await.map_err(document_error)?;
                    let mut progress = false;
                    for (&i, document) in missing.iter().zip(found) {
                        let Some(document) = document else { continue };
                        stored[i] = Some(stored_event(ids[i].clone(), document.fields)?);
                        progress = true;
                    }
                    if !progress {
                        return Err(FeedError::Unavailable(
                            "an archived event exists on create but cannot be read back".into(),
                        ));
                    }
                }
                Err(error) => return Err(document_error(error)),
            }
        }
        Ok(stored.into_iter().flatten().collect())
    }

    /// Puts the entries of `stored` (distinct events), then the documents of their feeds.
    async fn put_entries(&self, tenant: &str, stored: &[StoredEvent]) -> Result<(), FeedError> {
        let mut entries = Vec::new();
        let mut feeds: Vec<&FeedName> = Vec::new();
        for event in stored {
            for feed in &event.feeds {
                let key = entry_id(feed, &event.id);
                let mut fields = event.fields.clone();
                fields.insert("feed".into(), json!(feed.to_string()));
                fields.insert("key".into(), json!(key));
                entries.push(Write::Put { key: doc_key(tenant, ENTRIES, &key)?, fields, expect: Expect::Any });
                if !feeds.contains(&feed) {
                    feeds.push(feed);
                }
            }
        }
        let mut feed_writes = Vec::with_capacity(feeds.len());
        for feed in feeds {
            let name = feed.to_string();
            let fields = Fields::from_iter([("feed".to_owned(), json!(name))]);
            feed_writes.push(Write::Put { key: doc_key(tenant, FEEDS, &escape(&name))?, fields, expect: Expect::Any });
        }
        for writes in [entries, feed_writes] {
            for chunk in writes.chunks(WRITES_PER_COMMIT) {
                self.documents.commit(chunk.to_vec()).await.map_err(document_error)?;
            }
        }
        Ok(())
    }
}

/// `raw` as (part of) a document id: ASCII letters, digits and `-` as they are, `_` and `.`
/// too except first, every other byte as `%XX`. The result is never empty for a non-empty
/// `raw`, holds no `/` or `:`, never starts with `_` or `.` (so it is none of the names
/// Firestore reserves), and no two texts give the same result.
fn escape(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for (index, byte) in raw.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || (index > 0 && matches!(byte, b'_' | b'.')) {
            escaped.push(char::from(byte));
        } else {
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    escaped
}

/// The id (and `key`) of `feed`'s entry of event `event_id`.
fn entry_id(feed: &FeedName, event_id: &str) -> String {
    format!("{}:{}", escape(&feed.to_string()), escape(event_id))
}

fn event_key(tenant: &str, event_id: &str) -> Result<DocKey, FeedError> {
    doc_key(tenant, EVENTS, &escape(event_id))
}

fn doc_key(tenant: &str, collection: &'static str, id: &str) -> Result<DocKey, FeedError> {
    DocKey::new(tenant, collection, id).map_err(document_error)
}

/// Fails for a tenant no document path can start with (before it is used in a query).
fn check_tenant(tenant: &str) -> Result<(), FeedError> {
    doc_key(tenant, FEEDS, "global").map(drop)
}

fn document_error(error: DocumentError) -> FeedError {
    match error {
        DocumentError::InvalidKey { field, reason } => {
            FeedError::Invalid(vec![FieldViolation::new(field.replace(' ', "_"), reason)])
        }
        error => FeedError::Unavailable(error.to_string()),
    }
}

/// Moves a page's lower bound to `key`, which must lie above it (keys are unique and come in
/// order; anything else would page forever).
fn next_after(after: &mut String, key: &str) -> Result<(), FeedError> {
    if key <= after.as_str() {
        return Err(FeedError::Unavailable(format!("the document store pages out of order at {key}")));
    }
    key.clone_into(after);
    Ok(())
}

/// `feeds` without repeats, in order (of a malformed event's positions in one feed, the first
/// counts, as in feed order).
fn distinct_feeds<'a>(feeds: impl IntoIterator<Item = &'a FeedName>) -> Vec<FeedName> {
    let mut distinct: Vec<FeedName> = Vec::new();
    for feed in feeds {
        if !distinct.contains(feed) {
            distinct.push(feed.clone());
        }
    }
    distinct
}

/// The fields of an event document (see the module docs).
fn record_fields(archived: &ArchivedEvent) -> Fields {
    let event = String::from_utf8(archived.event.encode()).expect("a feed event encodes to JSON text");
    let positions: Vec<Value> = archived
        .positions
        .iter()
        .map(|(feed, position)| {
            json!({ "feed": feed.to_string(), "position": format!("{}:{}", position.offset, position.epoch.as_str()) })
        })
        .collect();
    Fields::from_iter([("event".to_owned(), json!(event)), ("positions".to_owned(), Value::Array(positions))])
}

/// An event document found on create: its record fields, checked.
fn stored_event(id: String, mut found: Fields) -> Result<StoredEvent, FeedError> {
    let archived = decode_record(&found)?;
    let feeds = distinct_feeds(archived.positions.iter().map(|(feed, _)| feed));
    let fields = ["event", "positions"].into_iter().filter_map(|name| found.remove_entry(name)).collect();
    Ok(StoredEvent { id, fields, feeds })
}

/// Reads the record fields of an event or entry document; a malformed one is a backend fault.
fn decode_record(fields: &Fields) -> Result<ArchivedEvent, FeedError> {
    let event = FeedEvent::decode(text(fields, "event")?.as_bytes())?;
    let Some(Value::Array(raw_positions)) = fields.get("positions") else {
        return Err(malformed("positions"));
    };
    let positions = raw_positions
        .iter()
        .map(|raw| {
            let Value::Object(position) = raw else { return Err(malformed("positions")) };
            Ok((decode_feed(text(position, "feed")?)?, decode_position(text(position, "position")?)?))
        })
        .collect::<Result<_, FeedError>>()?;
    Ok(ArchivedEvent { event, positions })
}

fn text<'a>(fields: &'a Fields, name: &'static str) -> Result<&'a str, FeedError> {
    fields.get(name).and_then(Value::as_str).ok_or_else(|| malformed(name))
}

fn malformed(field: &str) -> FeedError {
    FeedError::Unavailable(format!("an archived event document has no valid {field}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use mesh_core::broker::{Epoch, Position};

    use super::*;
    use crate::domain::{Activity, ActivityId, NewActivity, Tombstone};

    fn published(seconds: u64, global: (u64, &str)) -> ArchivedEvent {
        let new = NewActivity::parse("post", Some(("post", "1")), "", []).unwrap();
        let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds);
        let activity = Activity::new(ActivityId::generate(), "acme", "alice", new, time);
        let position = |(offset, epoch): (u64, &str)| Position { offset, epoch: Epoch(epoch.into()) };
        ArchivedEvent {
            event: FeedEvent::Published(activity),
            positions: vec![(FeedName::Global, position(global)), (FeedName::actor("alice"), position(global))],
        }
    }

    #[test]
    fn escaped_ids_are_distinct_and_fit_document_ids() {
        let raws = ["global", "actors/alice", "actors%2Falice", "_x_", ".", "..", "__a__", "a:b", "a.b_c-d", "é"];
        let escaped: Vec<String> = raws.iter().map(|raw| escape(raw)).collect();
        assert_eq!(escaped[..2], ["global", "actors%2Falice"]);
        assert_eq!(escape("a.b_c-d"), "a.b_c-d");
        for (raw, id) in raws.iter().zip(&escaped) {
            assert!(DocKey::new("acme", ENTRIES, id).is_ok(), "{raw:?} -> {id:?}");
            assert!(!id.contains(':'), "{id}");
        }
        let distinct: HashSet<&String> = escaped.iter().collect();
        assert_eq!(distinct.len(), raws.len());
    }

    #[test]
    fn a_feeds_entry_keys_lie_strictly_between_its_bounds_and_no_other_feeds_do() {
        let feeds = [
            FeedName::Global,
            FeedName::actor("a"),
            FeedName::actor("a.b"),
            FeedName::actor("a-"),
            FeedName::actor("a0"),
        ];
        for feed in &feeds {
            let prefix = escape(&feed.to_string());
            let (low, high) = (format!("{prefix}:"), format!("{prefix};"));
            for other in &feeds {
                let key = entry_id(other, "Xy-_12:deleted");
                let inside = low.as_str() < key.as_str() && key.as_str() < high.as_str();
                assert_eq!(inside, feed == other, "{feed} {key}");
            }
        }
    }

    #[test]
    fn records_round_trip_and_a_malformed_one_is_a_backend_fault() {
        let event = published(1, (7, "e:1"));
        assert_eq!(decode_record(&record_fields(&event)).unwrap(), event);
        let tombstone = ArchivedEvent {
            event: FeedEvent::Deleted(Tombstone {
                id: event.event.activity_id().clone(),
                actor: "alice".into(),
                delete_time: UNIX_EPOCH + Duration::from_secs(1_700_000_005),
            }),
            positions: vec![(FeedName::Global, Position { offset: 8, epoch: Epoch("e1".into()) })],
        };
        assert_eq!(decode_record(&record_fields(&tombstone)).unwrap(), tombstone);
        let stored = stored_event(event.event.event_id(), record_fields(&event)).unwrap();
        assert_eq!(stored.feeds, [FeedName::Global, FeedName::actor("alice")]);

        let mut broken_position = record_fields(&event);
        broken_position["positions"][0]["position"] = json!("x:e");
        let mut broken_feed = record_fields(&event);
        broken_feed["positions"][1]["feed"] = json!("actors/");
        let malformed =
            [Fields::new(), Fields::from_iter([("event".to_owned(), json!("{}"))]), broken_position, broken_feed];
        for fields in malformed {
            assert!(matches!(decode_record(&fields), Err(FeedError::Unavailable(_))), "{fields:?}");
        }
    }

    #[test]
    fn the_epoch_with_the_earliest_event_comes_first_then_offsets() {
        let old = [published(1, (1, "zz")), published(2, (2, "zz"))];
        let new = [published(10, (1, "aa")), published(11, (2, "aa"))];
        let expected: Vec<ArchivedEvent> = old.iter().chain(&new).cloned().collect();
        let input = vec![new[1].clone(), old[1].clone(), new[0].clone(), old[0].clone()];
        assert_eq!(in_feed_order(&FeedName::Global, input), expected);
        assert!(in_feed_order(&FeedName::actor("bob"), expected).is_empty());
    }
}
