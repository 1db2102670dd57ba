//! The Redis read-through cache of the document store ([`CachedDocuments`]) on a private
//! `redis-server`: reads after writes through any instance, races between a reader's fill
//! and a writer, the tenant check of cached values, and what happens while the store is down
//! (a real Firestore emulator, stopped and restarted).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mesh_core::backend::{RedisPool, redis_pool};
use mesh_core::config::RedisSettings;
use mesh_core::documents::{
    BoxFuture, CacheSettings, CachedDocuments, Committed, DocKey, Document, DocumentError, DocumentStore, Expect,
    Fields, FirestoreDocuments, MemoryDocuments, Page, Query, Write,
};
use mesh_testkit::{FirestoreEmulator, RedisServer, eventually};
use serde_json::json;
use tokio::sync::Notify;

fn key(tenant: &str, id: &str) -> DocKey {
    DocKey::new(tenant, "files", id).unwrap()
}

fn fields(n: i64) -> Fields {
    json!({ "n": n }).as_object().unwrap().clone()
}

fn put(key: &DocKey, n: i64) -> Write {
    Write::Put { key: key.clone(), fields: fields(n), expect: Expect::Any }
}

async fn n_of(store: &dyn DocumentStore, key: &DocKey) -> Option<i64> {
    store.get(std::slice::from_ref(key)).await.unwrap()[0].as_ref().map(|doc| doc.fields["n"].as_i64().unwrap())
}

async fn pool(redis: &RedisServer) -> RedisPool {
    redis_pool(&redis.url(), &RedisSettings::default()).unwrap()
}

/// A store that counts the calls that reach it and can hold a read until released.
struct Probe<S> {
    inner: S,
    gets: AtomicUsize,
    hold: std::sync::Mutex<Option<Arc<Notify>>>,
}

impl<S: DocumentStore> Probe<S> {
    fn new(inner: S) -> Self {
        Self { inner, gets: AtomicUsize::new(0), hold: std::sync::Mutex::new(None) }
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

impl<S: DocumentStore> DocumentStore for Probe<S> {
    fn get<'a>(&'a self, keys: &'a [DocKey]) -> BoxFuture<'a, Result<Vec<Option<Document>>, DocumentError>> {
        Box::pin(async move {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let read = self.inner.get(keys).await;
            let hold = self.hold.lock().unwrap().take();
            if let Some(release) = hold {
                release.notified().await;
            }
            read
        })
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Committed, DocumentError>> {
        self.inner.commit(writes)
    }

    fn query<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Page, DocumentError>> {
        self.inner.query(query)
    }
}

#[tokio::test]
async fn a_read_after_a_write_through_any_instance_sees_the_write() {
    let redis = RedisServer::start().await.unwrap();
    let store = Arc::new(Probe::new(MemoryDocuments::new()));
    let a = CachedDocuments::new(store.clone(), pool(&redis).await, CacheSettings::default());
    let b = CachedDocuments::new(store.clone(), pool(&redis).await, CacheSettings::default());
    let doc = key("acme", "doc");

    a.commit(vec![put(&doc, 1)]).await.unwrap();
    assert_eq!(n_of(&b, &doc).await, Some(1));
    assert_eq!(n_of(&a, &doc).await, Some(1));
    assert_eq!(store.gets(), 0, "both reads were served by the entry the write left in the cache");
    b.commit(vec![put(&doc, 2)]).await.unwrap();
    assert_eq!(n_of(&a, &doc).await, Some(2), "a's cached value was replaced by b's write");
    assert_eq!(store.gets(), 0);
    b.commit(vec![Write::Delete { key: doc.clone(), expect: Expect::Any }]).await.unwrap();
    assert_eq!(n_of(&a, &doc).await, None, "a delete leaves no cached value behind");
    a.commit(vec![put(&doc, 3)]).await.unwrap();
    assert_eq!(n_of(&b, &doc).await, Some(3), "a document created again after a delete");
}

#[tokio::test]
async fn a_reader_that_read_before_a_write_cannot_put_the_old_value_back() {
    let redis = RedisServer::start().await.unwrap();
    let store = Arc::new(Probe::new(MemoryDocuments::new()));
    let reader = Arc::new(CachedDocuments::new(store.clone(), pool(&redis).await, CacheSettings::default()));
    let writer = CachedDocuments::new(store.clone(), pool(&redis).await, CacheSettings::default());
    let doc = key("acme", "raced");
    store.inner.commit(vec![put(&doc, 1)]).await.unwrap();

    // the reader misses, reads version 1 from the store and is held before it fills
    let release = Arc::new(Notify::new());
    *store.hold.lock().unwrap() = Some(release.clone());
    let slow = tokio::spawn({
        let reader = reader.clone();
        let doc = doc.clone();
        async move { n_of(&*reader, &doc).await }
    });
    eventually("the reader has read the store", Duration::from_secs(10), || {
        let done = store.gets() == 1 && store.hold.lock().unwrap().is_none();
        async move { done.then_some(()) }
    })
    .await;
    writer.commit(vec![put(&doc, 2)]).await.unwrap();
    release.notify_one();
    assert_eq!(slow.await.unwrap(), Some(1), "the slow read returns what it read");
    let gets = store.gets();
    assert_eq!(n_of(&*reader, &doc).await, Some(2), "the cache holds the newer write, not the slow fill");
    assert_eq!(store.gets(), gets, "served from the cache");
}

#[tokio::test]
async fn a_cached_value_of_another_document_is_never_served() {
    let redis = RedisServer::start().await.unwrap();
    let store = Arc::new(MemoryDocuments::new());
    let cache = CachedDocuments::new(store.clone(), pool(&redis).await, CacheSettings::default());
    let globex = key("globex", "secret");
    let acme = key("acme", "secret");
    cache.commit(vec![put(&globex, 42)]).await.unwrap();
    assert_eq!(n_of(&cache, &globex).await, Some(42));

    // copy globex's entry under acme's key, as a bug or an attacker with Redis access might
    let mut connection = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let entry: String =
        redis::cmd("GET").arg("t:globex:doc:{files/secret}").query_async(&mut connection).await.unwrap();
    let () = redis::cmd("SET").arg("t:acme:doc:{files/secret}").arg(&entry).query_async(&mut connection).await.unwrap();
    assert_eq!(n_of(&cache, &acme).await, None, "acme reads its own (missing) document, not globex's");
    store.commit(vec![put(&acme, 7)]).await.unwrap();
    assert_eq!(n_of(&cache, &acme).await, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_hits_are_served_until_their_ttl_and_misses_fail_fast_until_it_is_back() {
    let redis = RedisServer::start().await.unwrap();
    let mut emulator = FirestoreEmulator::start().await.unwrap();
    let settings = emulator.settings();
    let store = Arc::new(Probe::new(FirestoreDocuments::connect(&settings).await.unwrap()));
    let ttl = Duration::from_millis(1500);
    let cache = CacheSettings {
        ttl,
        call_timeout: Duration::from_secs(2),
        backoff_base: Duration::from_millis(200),
        backoff_cap: Duration::from_secs(1),
    };
    let cache = CachedDocuments::new(store.clone(), pool(&redis).await, cache);
    let hot = key("acme", "hot");
    let cold = key("acme", "cold");
    cache.commit(vec![put(&hot, 1), put(&cold, 2)]).await.unwrap();
    redis::cmd("DEL")
        .arg("t:acme:doc:{files/cold}")
        .query_async::<()>(
            &mut redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap(),
        )
        .await
        .unwrap();

    emulator.stop().await;
    assert_eq!(n_of(&cache, &hot).await, Some(1), "a cached document is served while the store is down");
    let first = cache.get(std::slice::from_ref(&cold)).await;
    assert!(matches!(first, Err(DocumentError::Unavailable(_))), "a miss fails: {first:?}");
    let reached = store.gets();
    let again = cache.get(std::slice::from_ref(&cold)).await;
    assert!(matches!(again, Err(DocumentError::Unavailable(_))), "{again:?}");
    assert_eq!(store.gets(), reached, "while the breaker is open a miss does not reach the store");
    let status = tonic::Status::from(mesh_core::Error::from(again.unwrap_err()));
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // once its TTL has passed, a cached document needs the store too
    eventually("the hot entry expires and its read fails", Duration::from_secs(30), || {
        let cache = &cache;
        let hot = hot.clone();
        async move { cache.get(std::slice::from_ref(&hot)).await.err() }
    })
    .await;

    // the emulator keeps nothing across a restart: the store is back, empty
    emulator.restart().await.unwrap();
    let back = eventually("reads reach the store again", Duration::from_secs(30), || {
        let cache = &cache;
        let cold = cold.clone();
        async move { cache.get(std::slice::from_ref(&cold)).await.ok() }
    })
    .await;
    assert_eq!(back, vec![None]);
    cache.commit(vec![put(&cold, 3)]).await.unwrap();
    assert_eq!(n_of(&cache, &cold).await, Some(3));
}
