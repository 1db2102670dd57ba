//! Conformance suite of the document store boundary: every check runs against
//! [`MemoryDocuments`], against [`FirestoreDocuments`] on a private Firestore emulator, and
//! against each of them behind the Redis read-through cache ([`CachedDocuments`] on a private
//! `redis-server`), which must not change what a caller sees.

use std::collections::HashSet;
use std::sync::Arc;

use mesh_core::backend::redis_pool;
use mesh_core::config::RedisSettings;
use mesh_core::documents::{
    CacheSettings, CachedDocuments, Direction, DocKey, DocumentError, DocumentStore, Expect, Fields, Filter,
    FirestoreDocuments, MemoryDocuments, Op, Precondition, Query, Scope, Write,
};
use mesh_testkit::{FirestoreEmulator, RedisServer};
use serde_json::{Value, json};

/// The store under test, and the servers it needs (stopped on drop).
struct Fixture {
    store: Arc<dyn DocumentStore>,
    _redis: Option<RedisServer>,
    _emulator: Option<FirestoreEmulator>,
}

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Firestore,
}

impl Fixture {
    async fn start(kind: Kind, cached: bool) -> Self {
        let (store, emulator): (Arc<dyn DocumentStore>, _) = match kind {
            Kind::Memory => (Arc::new(MemoryDocuments::new()), None),
            Kind::Firestore => {
                let emulator = FirestoreEmulator::start().await.expect("the firestore emulator starts");
                let settings = emulator.settings();
                let store = FirestoreDocuments::connect(&settings).await.expect("firestore connects");
                (Arc::new(store), Some(emulator))
            }
        };
        if !cached {
            return Self { store, _redis: None, _emulator: emulator };
        }
        let redis = RedisServer::start().await.expect("redis-server starts");
        let pool = redis_pool(&redis.url(), &RedisSettings::default()).expect("the pool builds");
        let store = Arc::new(CachedDocuments::new(store, pool, CacheSettings::default()));
        Self { store, _redis: Some(redis), _emulator: emulator }
    }
}

macro_rules! suite {
    (everywhere: $($name:ident),* $(,)?; strict: $($strict:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
              async fn $name() { super::$name(super::Fixture::start(super::Kind::Memory, false).await).await })*
            $(#[tokio::test]
              async fn $strict() { super::$strict(super::Fixture::start(super::Kind::Memory, false).await).await })*
        }
        mod memory_cached {
            $(#[tokio::test]
              async fn $name() { super::$name(super::Fixture::start(super::Kind::Memory, true).await).await })*
            $(#[tokio::test]
              async fn $strict() { super::$strict(super::Fixture::start(super::Kind::Memory, true).await).await })*
        }
        mod firestore {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::Fixture::start(super::Kind::Firestore, false).await).await })*
        }
        mod firestore_cached {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
              async fn $name() { super::$name(super::Fixture::start(super::Kind::Firestore, true).await).await })*
        }
    };
}

// The `strict` checks hold on Firestore itself, which FirestoreDocuments is written for, but
// not on the only emulator available here (npm @firestore-emulator/server): it applies a
// commit's writes one by one, ignores `update_time` preconditions, ignores cursors and the
// `__name__` order, finds nothing in collection-group queries and refuses integers beyond
// 2^53. mesh-testkit's `firestore_emulator` test asserts each of these departures, so an
// emulator that fixes one shows up there; until then these checks run on memory only.
suite!(
    everywhere:
    created_documents_read_back_in_batches,
    a_create_of_an_existing_document_fails_and_leaves_it_unchanged,
    preconditions_on_existence_hold,
    values_round_trip_exactly,
    tenants_never_see_each_other,
    queries_filter_order_and_limit,
    queries_check_limits_and_cursors,
    a_commit_writes_a_document_once;
    strict:
    a_failed_commit_applies_none_of_its_writes,
    a_stale_version_is_refused,
    integers_keep_all_64_bits,
    queries_page_without_gaps_across_ties,
    all_tenant_queries_cross_tenants,
    concurrent_compare_and_set_loses_no_update,
);

const FILES: &str = "files";

fn key(tenant: &str, id: &str) -> DocKey {
    DocKey::new(tenant, FILES, id).expect("a valid key")
}

fn fields(value: Value) -> Fields {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

async fn create(store: &dyn DocumentStore, key: &DocKey, value: Value) -> mesh_core::documents::Version {
    store.commit(vec![Write::Create { key: key.clone(), fields: fields(value) }]).await.expect("create").versions[0]
}

fn precondition(result: Result<impl std::fmt::Debug, DocumentError>) -> Precondition {
    match result {
        Err(DocumentError::Precondition { kind, .. }) => kind,
        other => panic!("expected a failed precondition, got {other:?}"),
    }
}

async fn created_documents_read_back_in_batches(fixture: Fixture) {
    let store = &*fixture.store;
    let a = key("acme", "a");
    let b = key("acme", "b");
    let version = create(store, &a, json!({"name": "a.txt", "size": 3})).await;
    create(store, &b, json!({"name": "b.txt"})).await;

    let got = store.get(&[b.clone(), key("acme", "missing"), a.clone()]).await.expect("batch get");
    assert_eq!(got.len(), 3);
    let b_doc = got[0].as_ref().expect("b exists");
    assert_eq!(b_doc.key, b);
    assert_eq!(b_doc.fields, fields(json!({"name": "b.txt"})));
    assert!(got[1].is_none(), "a missing document reads as none");
    let a_doc = got[2].as_ref().expect("a exists");
    assert_eq!(a_doc.fields, fields(json!({"name": "a.txt", "size": 3})));
    assert_eq!(a_doc.version, version, "the version read is the version written");
    assert_eq!(store.get(&[]).await.expect("an empty batch"), vec![]);
}

async fn a_create_of_an_existing_document_fails_and_leaves_it_unchanged(fixture: Fixture) {
    let store = &*fixture.store;
    let existing = key("acme", "existing");
    create(store, &existing, json!({"n": 1})).await;
    let result = store.commit(vec![Write::Create { key: existing.clone(), fields: fields(json!({"n": 3})) }]).await;
    assert_eq!(precondition(result), Precondition::AlreadyExists);
    let got = store.get(&[existing]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().fields, fields(json!({"n": 1})), "the existing document is unchanged");
}

async fn a_failed_commit_applies_none_of_its_writes(fixture: Fixture) {
    let store = &*fixture.store;
    let existing = key("acme", "existing");
    let fresh = key("acme", "fresh");
    create(store, &existing, json!({"n": 1})).await;

    let result = store
        .commit(vec![
            Write::Create { key: fresh.clone(), fields: fields(json!({"n": 2})) },
            Write::Create { key: existing.clone(), fields: fields(json!({"n": 3})) },
        ])
        .await;
    assert_eq!(precondition(result), Precondition::AlreadyExists);
    let got = store.get(&[fresh, existing]).await.unwrap();
    assert!(got[0].is_none(), "the other write of the failed commit was not applied");
    assert_eq!(got[1].as_ref().unwrap().fields, fields(json!({"n": 1})), "the existing document is unchanged");
}

async fn preconditions_on_existence_hold(fixture: Fixture) {
    let store = &*fixture.store;
    let doc = key("acme", "doc");
    let first = create(store, &doc, json!({"n": 1})).await;

    let put = |n: i64, expect| Write::Put { key: doc.clone(), fields: fields(json!({"n": n})), expect };
    let second =
        store.commit(vec![put(2, Expect::Version(first))]).await.expect("a put at the current version").versions[0];
    assert!(second >= first, "versions never go back");
    store.commit(vec![put(3, Expect::Exists)]).await.expect("a put on an existing document");
    let read = store.get(std::slice::from_ref(&doc)).await.unwrap().remove(0).unwrap();
    assert_eq!(read.fields, fields(json!({"n": 3})));

    let missing = key("acme", "nope");
    let put_missing = Write::Put { key: missing.clone(), fields: fields(json!({})), expect: Expect::Exists };
    assert_eq!(precondition(store.commit(vec![put_missing]).await), Precondition::Missing);
    let delete_missing = Write::Delete { key: missing.clone(), expect: Expect::Exists };
    assert_eq!(precondition(store.commit(vec![delete_missing]).await), Precondition::Missing);
    assert!(store.get(&[missing]).await.unwrap()[0].is_none(), "a refused put creates nothing");

    store
        .commit(vec![Write::Delete { key: doc.clone(), expect: Expect::Version(read.version) }])
        .await
        .expect("delete");
    assert!(store.get(std::slice::from_ref(&doc)).await.unwrap()[0].is_none());
    store.commit(vec![Write::Delete { key: doc.clone(), expect: Expect::Any }]).await.expect("deleting nothing");
    let upsert = Write::Put { key: doc.clone(), fields: fields(json!({"n": 9})), expect: Expect::Any };
    store.commit(vec![upsert]).await.expect("an unconditional put creates");
    assert_eq!(store.get(&[doc]).await.unwrap()[0].as_ref().unwrap().fields, fields(json!({"n": 9})));
}

async fn a_stale_version_is_refused(fixture: Fixture) {
    let store = &*fixture.store;
    let doc = key("acme", "doc");
    let first = create(store, &doc, json!({"n": 1, "gone": true})).await;
    let put = |n: i64, expect| Write::Put { key: doc.clone(), fields: fields(json!({"n": n})), expect };
    let second =
        store.commit(vec![put(2, Expect::Version(first))]).await.expect("a put at the current version").versions[0];
    assert!(second > first, "each write gives a newer version");
    assert_eq!(precondition(store.commit(vec![put(3, Expect::Version(first))]).await), Precondition::Changed);
    let read = store.get(std::slice::from_ref(&doc)).await.unwrap().remove(0).unwrap();
    assert_eq!(read.fields, fields(json!({"n": 2})), "a put replaces the whole document");
    let stale_delete = Write::Delete { key: doc.clone(), expect: Expect::Version(first) };
    assert_eq!(precondition(store.commit(vec![stale_delete]).await), Precondition::Changed);
    assert!(store.get(&[doc]).await.unwrap()[0].is_some(), "a refused delete deletes nothing");
}

async fn values_round_trip_exactly(fixture: Fixture) {
    let store = &*fixture.store;
    let doc = key("acme", "values");
    let value = json!({
        "largest": (1_i64 << 53) - 1,
        "smallest": -((1_i64 << 53) - 1),
        "micros": 1_763_850_000_123_456_i64,
        "ratio": 0.25,
        "text": "grüße, 世界 \u{1F600}",
        "empty": "",
        "yes": true,
        "nothing": null,
        "list": [1, "two", {"three": 3}],
        "map": {"nested": {"deep": [true, null]}},
    });
    create(store, &doc, value.clone()).await;
    let got = store.get(&[doc]).await.unwrap().remove(0).expect("stored");
    assert_eq!(Value::Object(got.fields), value);
}

async fn integers_keep_all_64_bits(fixture: Fixture) {
    let store = &*fixture.store;
    let doc = key("acme", "integers");
    let value = json!({"max": i64::MAX, "min": i64::MIN, "near": (1_i64 << 53) + 1});
    create(store, &doc, value.clone()).await;
    let got = store.get(&[doc]).await.unwrap().remove(0).expect("stored");
    assert_eq!(Value::Object(got.fields), value);
}

async fn tenants_never_see_each_other(fixture: Fixture) {
    let store = &*fixture.store;
    create(store, &key("acme", "same"), json!({"owner": "acme"})).await;
    create(store, &key("globex", "same"), json!({"owner": "globex"})).await;

    let got = store.get(&[key("acme", "same"), key("globex", "same"), key("initech", "same")]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().fields["owner"], "acme");
    assert_eq!(got[1].as_ref().unwrap().fields["owner"], "globex");
    assert!(got[2].is_none());

    let page = store.query(&Query::new("acme", FILES, 10)).await.unwrap();
    let owners: Vec<&Value> = page.documents.iter().map(|doc| &doc.fields["owner"]).collect();
    assert_eq!(owners, vec!["acme"]);
    assert!(page.documents.iter().all(|doc| doc.key.tenant() == "acme"));
    assert!(store.query(&Query::new("initech", FILES, 10)).await.unwrap().documents.is_empty());
}

/// 25 documents of acme (sizes 0..25, every third one PENDING) and a few of another tenant.
async fn seed(store: &dyn DocumentStore) {
    let mut writes = Vec::new();
    for i in 0..25_i64 {
        let status = if i % 3 == 0 { "PENDING" } else { "READY" };
        writes.push(Write::Create {
            key: key("acme", &format!("f{i:02}")),
            // sizes descend with the id, and two documents share each size to test ties
            fields: fields(json!({"status": status, "size": (30 - i) / 2, "n": i})),
        });
    }
    for i in 0..3 {
        writes.push(Write::Create {
            key: key("globex", &format!("f{i:02}")),
            fields: fields(json!({"status": "PENDING", "size": 1, "n": i})),
        });
    }
    store.commit(writes).await.expect("seed");
}

async fn all_pages(store: &dyn DocumentStore, mut query: Query) -> Vec<i64> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let page = store.query(&query).await.expect("query");
        assert!(page.documents.len() <= query.limit);
        seen.extend(page.documents.iter().map(|doc| doc.fields["n"].as_i64().unwrap()));
        match page.next {
            Some(cursor) => query = query.after(Some(cursor)),
            None => return seen,
        }
    }
    panic!("paging did not end");
}

async fn queries_filter_order_and_limit(fixture: Fixture) {
    let store = &*fixture.store;
    seed(store).await;
    let ns = |page: mesh_core::documents::Page| -> Vec<i64> {
        page.documents.iter().map(|doc| doc.fields["n"].as_i64().unwrap()).collect()
    };

    // status == PENDING, by n (unique)
    let query =
        Query::new("acme", FILES, 100).filter(Filter::eq("status", "PENDING")).order_by("n", Direction::Ascending);
    let page = store.query(&query).await.unwrap();
    assert!(page.next.is_none());
    assert_eq!(ns(page), vec![0, 3, 6, 9, 12, 15, 18, 21, 24]);

    // descending with a limit: a next cursor, and the newest first
    let page = store.query(&Query::new("acme", FILES, 4).order_by("n", Direction::Descending)).await.unwrap();
    assert!(page.next.is_some(), "more than a page");
    assert_eq!(ns(page), vec![24, 23, 22, 21]);

    // a range filter and an equality filter
    let query = Query::new("acme", FILES, 100)
        .filter(Filter::eq("status", "READY"))
        .filter(Filter::new("n", Op::Ge, 20))
        .order_by("n", Direction::Ascending);
    assert_eq!(ns(store.query(&query).await.unwrap()), vec![20, 22, 23]);

    // a range filter matches values of its own type only
    let strings = store.query(&Query::new("acme", FILES, 100).filter(Filter::new("size", Op::Gt, "0"))).await.unwrap();
    assert!(strings.documents.is_empty());
    let none = store.query(&Query::new("acme", FILES, 100).filter(Filter::eq("status", "GONE"))).await.unwrap();
    assert!(none.documents.is_empty() && none.next.is_none());
}

async fn queries_page_without_gaps_across_ties(fixture: Fixture) {
    let store = &*fixture.store;
    seed(store).await;

    // by id, in pages of 4
    let by_id = all_pages(store, Query::new("acme", FILES, 4)).await;
    assert_eq!(by_id, (0..25).collect::<Vec<_>>());

    // status == PENDING
    let pending = all_pages(store, Query::new("acme", FILES, 3).filter(Filter::eq("status", "PENDING"))).await;
    assert_eq!(pending, vec![0, 3, 6, 9, 12, 15, 18, 21, 24]);

    // ordered by size ascending (ties by id), paged across ties
    let by_size = all_pages(store, Query::new("acme", FILES, 2).order_by("size", Direction::Ascending)).await;
    let mut expected: Vec<i64> = (0..25).collect();
    expected.sort_by_key(|&i| ((30 - i) / 2, i));
    assert_eq!(by_size, expected);

    // descending, with a range filter and an equality filter
    let query = Query::new("acme", FILES, 2)
        .filter(Filter::eq("status", "READY"))
        .filter(Filter::new("size", Op::Ge, 10))
        .order_by("size", Direction::Descending);
    let got = all_pages(store, query).await;
    let mut expected: Vec<i64> = (0..25).filter(|i| i % 3 != 0 && (30 - i) / 2 >= 10).collect();
    expected.sort_by_key(|&i| std::cmp::Reverse(((30 - i) / 2, i)));
    assert_eq!(got, expected);
}

async fn queries_check_limits_and_cursors(fixture: Fixture) {
    let store = &*fixture.store;
    seed(store).await;
    for limit in [0, mesh_core::documents::MAX_PAGE_SIZE + 1] {
        let result = store.query(&Query::new("acme", FILES, limit)).await;
        assert!(matches!(result, Err(DocumentError::InvalidQuery(_))), "limit {limit}: {result:?}");
    }
    let page = store.query(&Query::new("globex", FILES, 1)).await.unwrap();
    let foreign = page.next.expect("globex has more than one document");
    let result = store.query(&Query::new("acme", FILES, 10).after(Some(foreign))).await;
    assert!(matches!(result, Err(DocumentError::InvalidQuery(_))), "a cursor of another tenant: {result:?}");
    let exact = store.query(&Query::new("globex", FILES, 3)).await.unwrap();
    assert_eq!(exact.documents.len(), 3);
    assert!(exact.next.is_none(), "a page that holds the rest has no next cursor");
}

async fn all_tenant_queries_cross_tenants(fixture: Fixture) {
    let store = &*fixture.store;
    seed(store).await;
    let mut query = Query::all_tenants(FILES, 4).filter(Filter::eq("status", "PENDING"));
    assert_eq!(query.scope, Scope::AllTenants);
    let mut seen = Vec::new();
    loop {
        let page = store.query(&query).await.unwrap();
        seen.extend(page.documents.iter().map(|doc| doc.key.clone()));
        match page.next {
            Some(cursor) => query = query.after(Some(cursor)),
            None => break,
        }
    }
    let tenants: HashSet<&str> = seen.iter().map(DocKey::tenant).collect();
    assert_eq!(tenants, HashSet::from(["acme", "globex"]));
    assert_eq!(seen.len(), 9 + 3);
    let distinct: HashSet<&DocKey> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no document twice");
}

async fn concurrent_compare_and_set_loses_no_update(fixture: Fixture) {
    let store = fixture.store.clone();
    let counter = key("acme", "counter");
    create(&*store, &counter, json!({"n": 0})).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    loop {
                        let doc = store.get(std::slice::from_ref(&counter)).await.unwrap().remove(0).unwrap();
                        let n = doc.fields["n"].as_i64().unwrap();
                        let write = Write::Put {
                            key: counter.clone(),
                            fields: fields(json!({"n": n + 1})),
                            expect: Expect::Version(doc.version),
                        };
                        match store.commit(vec![write]).await {
                            Ok(_) => break,
                            Err(DocumentError::Precondition { kind: Precondition::Changed, .. }) => continue,
                            Err(error) => panic!("unexpected {error:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let doc = store.get(&[counter]).await.unwrap().remove(0).unwrap();
    assert_eq!(doc.fields["n"], 40, "every increment landed exactly once");
}

async fn a_commit_writes_a_document_once(fixture: Fixture) {
    let store = &*fixture.store;
    let doc = key("acme", "twice");
    let result = store
        .commit(vec![
            Write::Create { key: doc.clone(), fields: fields(json!({"n": 1})) },
            Write::Delete { key: doc.clone(), expect: Expect::Any },
        ])
        .await;
    assert!(matches!(result, Err(DocumentError::InvalidCommit(_))), "{result:?}");
    assert!(store.get(&[doc]).await.unwrap()[0].is_none());
}
