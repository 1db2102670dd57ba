//! [`CachedDocuments`]: a Redis read-through cache in front of any [`DocumentStore`].
//!
//! - **Reads by key** look in Redis first (one `MGET` for a batch); the misses go to the
//!   store in one batch get, and what it finds is cached for the TTL.
//! - **Writes** go to the store; once it committed, each written document's new state is put
//!   into the cache (a delete leaves a tombstone), so a read through any instance of the mesh
//!   after a successful write never returns the old value.
//! - **Races** between a reader filling the cache and a writer are settled by version: every
//!   cache entry carries its document's version, and a Lua script only replaces an entry with
//!   a newer one. A reader that fetched the old version before a commit cannot overwrite
//!   what the writer put there after it.
//! - **Tenant re-check**: an entry records the tenant, collection and id it belongs to, and a
//!   read uses it only if they are the key's; anything else is treated as a miss.
//! - **Breaker**: a store call that fails as unavailable (or exceeds the call timeout) opens
//!   the breaker for a jittered, exponentially growing backoff. While it is open, cached
//!   reads are still served and everything that needs the store fails fast with
//!   UNAVAILABLE; the first call after the backoff tries the store again, and a success
//!   closes the breaker.
//! - **Redis down or slow** (each Redis call has the call timeout too): reads go to the store
//!   directly. When the cache update after a commit fails, the written entries are deleted
//!   instead; a commit that fails a precondition or goes unanswered deletes them as well, so
//!   a compare-and-set loop never keeps reading a stale entry. Only when Redis refuses even
//!   that delete (logged as an error) can an entry kept from before the outage outlive a
//!   write made during it, until its TTL.
//!
//! Queries are not cached: they always ask the store (through the breaker).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, Committed, DocKey, Document, DocumentError, DocumentStore, Fields, Page, Query, Version, Write,
};
use crate::backend::RedisPool;

/// How the cache keeps entries and backs off from a failing store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// How long a cached document is served without asking the store (default 5 min).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long one store call may take before it counts as a failure (default 2 s).
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How long the breaker stays open after the first failure (default 200 ms); it doubles
    /// with each further consecutive failure, with up to half of it random.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// The longest the breaker stays open (default 30 s).
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            call_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

impl CacheSettings {
    /// Checks the values; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl < Duration::from_millis(1) {
            return Err("ttl must be at least 1ms".into());
        }
        if self.call_timeout.is_zero() {
            return Err("call_timeout must be above zero".into());
        }
        if self.backoff_cap < self.backoff_base {
            return Err("backoff_cap must not be below backoff_base".into());
        }
        Ok(())
    }
}

/// Sets an entry unless the cache holds a newer version of it (an equal version is the same
/// document state, and is replaced).
///
/// KEYS[1] the entry; ARGV[1] the entry (`<seconds>:<nanos>\n<json>`), ARGV[2] seconds,
/// ARGV[3] nanos, ARGV[4] TTL in ms. Returns 1 if it was set.
const PUT_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local s, n = string.match(current, '^(%-?%d+):(%d+)\n')
  if s then
    s, n = tonumber(s), tonumber(n)
    local new_s, new_n = tonumber(ARGV[2]), tonumber(ARGV[3])
    if s > new_s or (s == new_s and n > new_n) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return 1
";

/// A cache entry: whose document it is, and its fields (`None`: deleted at that version).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    tenant: String,
    collection: String,
    id: String,
    fields: Option<Fields>,
}

/// A document store with a Redis read-through cache; see the module docs.
pub struct CachedDocuments<S> {
    store: S,
    redis: RedisPool,
    settings: CacheSettings,
    put_if_newer: Script,
    breaker: Mutex<Breaker>,
}

impl<S> std::fmt::Debug for CachedDocuments<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDocuments").field("settings", &self.settings).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// The Redis key of a document's entry: `t:<tenant>:doc:{<collection>/<id>}`.
fn cache_key(key: &DocKey) -> String {
    format!("t:{}:doc:{{{}/{}}}", key.tenant(), key.collection(), key.id())
}

fn encode(key: &DocKey, fields: Option<&Fields>, version: Version) -> Result<String, DocumentError> {
    let entry = Entry {
        tenant: key.tenant().to_owned(),
        collection: key.collection().to_owned(),
        id: key.id().to_owned(),
        fields: fields.cloned(),
    };
    let json = serde_json::to_string(&entry)
        .map_err(|error| DocumentError::Corrupt { key: key.to_string(), reason: error.to_string() })?;
    Ok(format!("{}:{}\n{json}", version.seconds, version.nanos))
}

/// What an entry says about `key`: `Some(Some(doc))` cached, `Some(None)` deleted, `None`
/// unusable (another key's entry, or unreadable): a miss.
fn decode(key: &DocKey, raw: &str) -> Option<Option<Document>> {
    let (version, json) = raw.split_once('\n')?;
    let (seconds, nanos) = version.split_once(':')?;
    let version = Version { seconds: seconds.parse().ok()?, nanos: nanos.parse().ok()? };
    let entry: Entry = serde_json::from_str(json).ok()?;
    if entry.tenant != key.tenant() || entry.collection != key.collection() || entry.id != key.id() {
        tracing::warn!(key = %key, "a document cache entry belongs to another document; ignored");
        return None;
    }
    Some(entry.fields.map(|fields| Document { key: key.clone(), fields, version }))
}

impl<S: DocumentStore> CachedDocuments<S> {
    /// Caches `store` in the Redis behind `redis`.
    pub fn new(store: S, redis: RedisPool, settings: CacheSettings) -> Self {
        Self { store, redis, settings, put_if_newer: Script::new(PUT_IF_NEWER), breaker: Mutex::default() }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one store call through the breaker and the call timeout.
    async fn guarded<T>(&self, call: impl Future<Output = Result<T, DocumentError>>) -> Result<T, DocumentError> {
        if let Some(until) = self.breaker().open_until
            && Instant::now() < until
        {
            return Err(DocumentError::Unavailable("the document store's breaker is open".into()));
        }
        let result = match tokio::time::timeout(self.settings.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(DocumentError::Unavailable(format!(
                "no answer within {}",
                humantime::format_duration(self.settings.call_timeout)
            ))),
        };
        let mut breaker = self.breaker();
        match &result {
            Err(DocumentError::Unavailable(detail)) => {
                breaker.failures = breaker.failures.saturating_add(1);
                let ceiling = crate::backoff::ceiling(
                    self.settings.backoff_base,
                    2.0,
                    self.settings.backoff_cap,
                    breaker.failures,
                );
                let delay = crate::backoff::jittered(ceiling, 0.5, crate::backoff::unit());
                breaker.open_until = Some(Instant::now() + delay);
                tracing::warn!(failures = breaker.failures, ?delay, detail = %detail, "document store failed; breaker open");
            }
            _ => {
                if breaker.failures > 0 {
                    tracing::info!("document store answers again; breaker closed");
                }
                *breaker = Breaker::default();
            }
        }
        result
    }

    async fn connection(&self) -> Option<bb8::PooledConnection<'_, crate::backend::RedisManager>> {
        match self.redis.get().await {
            Ok(connection) => Some(connection),
            Err(error) => {
                tracing::warn!(%error, "document cache: no redis connection");
                None
            }
        }
    }

    /// The cached state of each key: `None` where Redis has nothing usable (or is down).
    async fn lookup(&self, keys: &[DocKey]) -> Vec<Option<Option<Document>>> {
        let misses = || keys.iter().map(|_| None).collect();
        let Some(mut connection) = self.connection().await else { return misses() };
        let names: Vec<String> = keys.iter().map(cache_key).collect();
        let mut mget = redis::cmd("MGET");
        mget.arg(&names);
        let read = mget.query_async::<Vec<Option<String>>>(&mut *connection);
        match tokio::time::timeout(self.settings.call_timeout, read).await {
            Ok(Ok(raw)) => keys.iter().zip(raw).map(|(key, raw)| raw.and_then(|raw| decode(key, &raw))).collect(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "document cache: read failed; asking the store");
                misses()
            }
            Err(_) => {
                tracing::warn!("document cache: no answer from redis in time; asking the store");
                misses()
            }
        }
    }

    /// Deletes the entries of `keys` (best effort: a failure is logged; an entry that stays is
    /// replaced by the next newer write or expires with its TTL).
    async fn forget<'k>(&self, keys: impl Iterator<Item = &'k DocKey>) {
        let names: Vec<String> = keys.map(cache_key).collect();
        let forget = async {
            let mut connection = self.connection().await.ok_or("no redis connection")?;
            redis::cmd("DEL").arg(&names).query_async::<()>(&mut *connection).await.map_err(|_| "DEL failed")
        };
        match tokio::time::timeout(self.settings.call_timeout, forget).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(error, ?names, "document cache: stale entries could not be dropped"),
            Err(_) => tracing::error!(?names, "document cache: stale entries could not be dropped in time"),
        }
    }

    /// Puts each `(key, fields, version)` unless a newer version is cached.
    async fn fill(&self, entries: Vec<(&DocKey, Option<&Fields>, Version)>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection().await.ok_or("no redis connection")?;
        let ttl = self.settings.ttl.as_millis().to_string();
        let mut pipeline = redis::pipe();
        // EVALSHA in a pipeline does not load a script Redis lacks (a fresh or restarted
        // server): load it first, on the same connection.
        pipeline.cmd("SCRIPT").arg("LOAD").arg(PUT_IF_NEWER).ignore();
        for (key, fields, version) in entries {
            let entry = encode(key, fields, version).map_err(|error| error.to_string())?;
            pipeline
                .invoke_script(
                    self.put_if_newer.key(cache_key(key)).arg(entry).arg(version.seconds).arg(version.nanos).arg(&ttl),
                )
                .ignore();
        }
        match tokio::time::timeout(self.settings.call_timeout, pipeline.query_async::<()>(&mut *connection)).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err("no answer from redis in time".into()),
        }
    }
}

impl<S: DocumentStore> DocumentStore for CachedDocuments<S> {
    fn get<'a>(&'a self, keys: &'a [DocKey]) -> BoxFuture<'a, Result<Vec<Option<Document>>, DocumentError>> {
        Box::pin(async move {
            let mut found = self.lookup(keys).await;
            let missing: Vec<DocKey> =
                keys.iter().zip(&found).filter(|(_, cached)| cached.is_none()).map(|(key, _)| key.clone()).collect();
            if !missing.is_empty() {
                let fetched = self.guarded(self.store.get(&missing)).await?;
                let fill = fetched.iter().flatten().map(|doc| (&doc.key, Some(&doc.fields), doc.version)).collect();
                if let Err(error) = self.fill(fill).await {
                    tracing::debug!(%error, "document cache: fill failed");
                }
                let mut fetched = fetched.into_iter();
                for slot in found.iter_mut().filter(|slot| slot.is_none()) {
                    *slot = Some(fetched.next().flatten());
                }
            }
            Ok(found.into_iter().map(Option::flatten).collect())
        })
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Committed, DocumentError>> {
        Box::pin(async move {
            let keys: Vec<(DocKey, Option<Fields>)> =
                writes.iter().map(|write| (write.key().clone(), write.fields().cloned())).collect();
            let committed = match self.guarded(self.store.commit(writes)).await {
                Ok(committed) => committed,
                Err(error) => {
                    // A failed precondition means a cached entry may be behind the store (the
                    // caller read it there), and an unanswered commit may have been applied:
                    // either way the entries go, so the next read asks the store.
                    if matches!(error, DocumentError::Precondition { .. } | DocumentError::Unavailable(_)) {
                        self.forget(keys.iter().map(|(key, _)| key)).await;
                    }
                    return Err(error);
                }
            };
            let entries =
                keys.iter().zip(&committed.versions).map(|((key, fields), version)| (key, fields.as_ref(), *version));
            if let Err(error) = self.fill(entries.collect()).await {
                tracing::warn!(%error, "document cache: update after a commit failed; dropping the entries");
                self.forget(keys.iter().map(|(key, _)| key)).await;
            }
            Ok(committed)
        })
    }

    fn query<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Page, DocumentError>> {
        Box::pin(self.guarded(self.store.query(query)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_are_checked_against_their_key() {
        let key = DocKey::new("acme", "files", "f1").unwrap();
        let mut fields = Fields::new();
        fields.insert("size".into(), serde_json::json!(i64::MAX));
        let version = Version { seconds: 1_700_000_000, nanos: 123_456_000 };
        let raw = encode(&key, Some(&fields), version).unwrap();
        assert_eq!(decode(&key, &raw), Some(Some(Document { key: key.clone(), fields, version })));
        let tombstone = encode(&key, None, version).unwrap();
        assert_eq!(decode(&key, &tombstone), Some(None));

        let other_tenant = DocKey::new("evil", "files", "f1").unwrap();
        assert_eq!(decode(&other_tenant, &raw), None);
        assert_eq!(decode(&key, "garbage"), None);
        assert_eq!(cache_key(&key), "t:acme:doc:{files/f1}");
    }
}
