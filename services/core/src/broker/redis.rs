//! The Redis [`Broker`]: history in a Redis stream per channel, offsets and epoch in a hash,
//! live delivery through Redis pub/sub. Every operation is one Lua script, so each is
//! atomic and takes one round trip (`EVALSHA`, loading the script on `NOSCRIPT`).
//!
//! # Keys
//!
//! All keys of one channel share the hash tag `{<tenant>/<name>}` (Redis Cluster ready):
//!
//! - `t:<tenant>:ch:{<tenant>/<name>}:meta`: hash with `epoch` (set once per epoch with
//!   `HSETNX`; candidates are generated client-side by [`Epoch::random`], since randomness
//!   inside Lua is not trustworthy) and `offset` (the last offset of the epoch).
//! - `t:<tenant>:ch:{<tenant>/<name>}:log`: stream of the last `size` publications (exact
//!   `MAXLEN`), entry id `<offset>-1`, one field `p` holding the payload.
//! - pub/sub channel `t:<tenant>:ch:{<tenant>/<name>}` ([`RedisBroker::pubsub_channel`]).
//!
//! Publishing sets both keys to expire `ttl` (whole seconds, rounded up, at least 1) after the
//! last publication. When the meta hash is gone (expired, deleted, a fresh Redis), the next
//! `publish` or `position` starts a new epoch and deletes any stale log first.
//!
//! `position` on a channel without publications in its epoch (re)sets the meta hash's
//! expiry to `ttl`, so an epoch handed to subscribers before anything was published lives
//! `ttl` after the last such call; on a channel with publications it changes no expiry, so
//! reading never extends a history beyond `ttl` after its last publication.
//!
//! # Wire format of live messages
//!
//! `PUBLISH` sends `<offset>:<epoch>:<payload bytes>` (offset in decimal; epochs never
//! contain `:`; the payload is raw bytes and may contain anything).
//! [`RedisBroker::decode_message`] reads it back.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use super::{
    BoxFuture, Broker, BrokerError, ChannelKey, Epoch, History, HistorySettings, Position, Publication, Unrecoverable,
};
use crate::backend::RedisPool;

/// Defines `mesh_publish(meta, log, pubsub, candidate_epoch, payload, size, ttl_seconds)`,
/// which returns {offset, epoch}. The offset is stored only after `XADD` succeeded (a failing
/// command aborts the script but does not undo earlier writes), so a failure leaves no gap.
const PUBLISH_FN: &str = r"
local function mesh_publish(meta, log, pubsub, candidate_epoch, payload, size, ttl)
  if redis.call('HSETNX', meta, 'epoch', candidate_epoch) == 1 then
    redis.call('DEL', log)
  end
  local state = redis.call('HMGET', meta, 'epoch', 'offset')
  local epoch = state[1]
  local id = string.format('%d', (tonumber(state[2]) or 0) + 1)
  redis.call('XADD', log, 'MAXLEN', size, id .. '-1', 'p', payload)
  redis.call('HSET', meta, 'offset', id)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', log, ttl)
  redis.call('PUBLISH', pubsub, id .. ':' .. epoch .. ':' .. payload)
  return {tonumber(id), epoch}
end
";

/// KEYS: meta, log. ARGV: candidate epoch, payload, size, ttl seconds, pub/sub channel.
/// Returns {offset, epoch}.
const PUBLISH_LUA: &str = r"
return mesh_publish(KEYS[1], KEYS[2], ARGV[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
";

/// KEYS: meta, log. ARGV: since epoch, since offset, limit.
/// Returns {'epoch'|'ahead'|'toomany'|'trimmed'} or {'ok', id1, payload1, id2, ...}.
const HISTORY_LUA: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
if not meta[1] or meta[1] ~= ARGV[1] then
  return {'epoch'}
end
local last = tonumber(meta[2]) or 0
local since = tonumber(ARGV[2])
if since > last then
  return {'ahead'}
end
local missed = last - since
if missed > tonumber(ARGV[3]) then
  return {'toomany'}
end
if missed == 0 then
  return {'ok'}
end
local first = string.format('%d', since + 1)
local entries = redis.call('XRANGE', KEYS[2], first .. '-0', '+', 'COUNT', string.format('%d', missed))
if #entries ~= missed or entries[1][1] ~= first .. '-1' then
  return {'trimmed'}
end
local out = {'ok'}
for _, entry in ipairs(entries) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
end
return out
";

/// KEYS: meta, log. ARGV: candidate epoch, ttl seconds. Returns {offset, epoch}.
const POSITION_LUA: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local offset = tonumber(meta[2]) or 0
if offset == 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {offset, meta[1]}
";

static PUBLISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{PUBLISH_FN}\n{PUBLISH_LUA}")));
static HISTORY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HISTORY_LUA));
static POSITION_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(POSITION_LUA));

/// The Redis broker; see the [module documentation](self). Cloning is cheap (the pool is
/// shared).
#[derive(Clone)]
pub struct RedisBroker {
    pool: RedisPool,
    settings: HistorySettings,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker on the command pool `pool`, keeping history as `settings` say.
    pub fn new(pool: RedisPool, settings: HistorySettings) -> Self {
        Self { pool, settings }
    }

    /// The history settings.
    pub fn settings(&self) -> &HistorySettings {
        &self.settings
    }

    /// Lua source to put in front of another component's script: it defines
    /// `mesh_publish(meta, log, pubsub, candidate_epoch, payload, size, ttl_seconds)`, which
    /// publishes exactly as [`Broker::publish`] does (history, offset, pub/sub message),
    /// atomically with the rest of that script, and returns `{offset, epoch}`. The caller
    /// passes [`publish_keys`](Self::publish_keys) (meta and log among its KEYS), a fresh
    /// [`Epoch::random`] and the [`settings`](Self::settings)' size and TTL
    /// ([`ttl_seconds`](Self::ttl_seconds)); it checks the payload size itself.
    ///
    /// A channel's keys carry the channel's own hash tag, so a script that also writes keys
    /// of its own spans two slots: standalone Redis (the only topology this build connects
    /// to) runs it atomically; on Redis Cluster such a caller must publish in a second step.
    pub fn publish_lua() -> &'static str {
        PUBLISH_FN
    }

    /// The keys `mesh_publish` takes for `channel`: meta hash, history stream, pub/sub
    /// channel.
    pub fn publish_keys(channel: &ChannelKey) -> (String, String, String) {
        (Self::meta_key(channel), Self::log_key(channel), Self::pubsub_channel(channel))
    }

    /// A history TTL as `mesh_publish` takes it: whole seconds, rounded up, at least 1.
    pub fn ttl_seconds(ttl: Duration) -> u64 {
        ttl_seconds(ttl)
    }

    /// The pub/sub channel `channel`'s publications are sent on: `t:<tenant>:ch:{<full>}`.
    pub fn pubsub_channel(channel: &ChannelKey) -> String {
        format!("t:{}:ch:{{{}}}", channel.tenant(), channel.full())
    }

    /// The channel whose pub/sub channel is `name` (the inverse of
    /// [`pubsub_channel`](Self::pubsub_channel)); `None` for any other name.
    pub fn channel_from_pubsub(name: &str) -> Option<ChannelKey> {
        let full = name.strip_suffix('}')?.split_once('{')?.1;
        let channel = ChannelKey::from_full(full)?;
        (Self::pubsub_channel(&channel) == name).then_some(channel)
    }

    /// Decodes a message received on `channel`'s pub/sub channel
    /// (`<offset>:<epoch>:<payload>`); `None` if it is malformed.
    pub fn decode_message(channel: ChannelKey, raw: &[u8]) -> Option<Publication> {
        let (offset, rest) = split_at_colon(raw)?;
        let (epoch, payload) = split_at_colon(rest)?;
        if offset.is_empty() || !offset.iter().all(u8::is_ascii_digit) || epoch.is_empty() {
            return None;
        }
        let offset = std::str::from_utf8(offset).ok()?.parse().ok()?;
        let epoch = Epoch(std::sync::Arc::from(std::str::from_utf8(epoch).ok()?));
        Some(Publication::new(channel, Position { offset, epoch }, Bytes::copy_from_slice(payload)))
    }

    /// The meta hash of `channel`.
    fn meta_key(channel: &ChannelKey) -> String {
        format!("{}:meta", Self::pubsub_channel(channel))
    }

    /// The history stream of `channel`.
    fn log_key(channel: &ChannelKey) -> String {
        format!("{}:log", Self::pubsub_channel(channel))
    }

    async fn connection(&self) -> Result<bb8::PooledConnection<'_, crate::backend::RedisManager>, BrokerError> {
        self.pool.get().await.map_err(|error| BrokerError::Unavailable(format!("redis pool: {error}")))
    }

    async fn publish_now(&self, channel: &ChannelKey, payload: Bytes) -> Result<Position, BrokerError> {
        let limit = self.settings.max_payload;
        if payload.len() > limit {
            return Err(BrokerError::PayloadTooLarge { size: payload.len(), limit });
        }
        let mut connection = self.connection().await?;
        let (offset, epoch): (u64, String) = PUBLISH_SCRIPT
            .key(Self::meta_key(channel))
            .key(Self::log_key(channel))
            .arg(Epoch::random().as_str())
            .arg(payload.as_ref())
            .arg(self.settings.size)
            .arg(ttl_seconds(self.settings.ttl))
            .arg(Self::pubsub_channel(channel))
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(Position { offset, epoch: Epoch(epoch.into()) })
    }

    async fn history_now(&self, channel: &ChannelKey, since: &Position, limit: usize) -> Result<History, BrokerError> {
        let mut connection = self.connection().await?;
        let reply: Vec<Vec<u8>> = HISTORY_SCRIPT
            .key(Self::meta_key(channel))
            .key(Self::log_key(channel))
            .arg(since.epoch.as_str())
            .arg(since.offset)
            .arg(limit)
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        drop(connection);
        let mut reply = reply.into_iter();
        let status = reply.next().ok_or_else(|| malformed("an empty history reply"))?;
        let reason = match status.as_slice() {
            b"ok" => None,
            b"epoch" => Some(Unrecoverable::EpochChanged),
            b"ahead" => Some(Unrecoverable::Ahead),
            b"toomany" => Some(Unrecoverable::TooMany),
            b"trimmed" => Some(Unrecoverable::Trimmed),
            _ => return Err(malformed("an unknown history status")),
        };
        if let Some(reason) = reason {
            return Ok(History::Unrecoverable(reason));
        }
        let mut publications = Vec::with_capacity(reply.len() / 2);
        while let Some(id) = reply.next() {
            let payload = reply.next().ok_or_else(|| malformed("a history entry without payload"))?;
            let offset = entry_offset(&id).ok_or_else(|| malformed("a history entry id"))?;
            publications.push(Publication::new(
                channel.clone(),
                Position { offset, epoch: since.epoch.clone() },
                Bytes::from(payload),
            ));
        }
        Ok(History::Recovered(publications))
    }

    async fn position_now(&self, channel: &ChannelKey) -> Result<Position, BrokerError> {
        let mut connection = self.connection().await?;
        let (offset, epoch): (u64, String) = POSITION_SCRIPT
            .key(Self::meta_key(channel))
            .key(Self::log_key(channel))
            .arg(Epoch::random().as_str())
            .arg(ttl_seconds(self.settings.ttl))
            .invoke_async(&mut *connection)
            .await
            .map_err(unavailable)?;
        Ok(Position { offset, epoch: Epoch(epoch.into()) })
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(&'a self, channel: &'a ChannelKey, payload: Bytes) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(self.publish_now(channel, payload))
    }

    fn history<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        Box::pin(self.history_now(channel, since, limit))
    }

    fn position<'a>(&'a self, channel: &'a ChannelKey) -> BoxFuture<'a, Result<Position, BrokerError>> {
        Box::pin(self.position_now(channel))
    }
}

/// `ttl` in whole seconds, rounded up, at least 1 (`EXPIRE` takes seconds; 0 would delete).
fn ttl_seconds(ttl: Duration) -> u64 {
    (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
}

/// `(before, after)` the first `:` of `bytes`.
fn split_at_colon(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = bytes.iter().position(|&byte| byte == b':')?;
    Some((&bytes[..colon], &bytes[colon + 1..]))
}

/// The offset of a stream entry id `<offset>-1`.
fn entry_offset(id: &[u8]) -> Option<u64> {
    std::str::from_utf8(id).ok()?.strip_suffix("-1")?.parse().ok()
}

fn unavailable(error: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {error}"))
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("redis: the history script returned {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ChannelName;

    fn key(tenant: &str, name: &str) -> ChannelKey {
        ChannelKey::new(tenant, ChannelName::parse(name, "channel").unwrap()).unwrap()
    }

    #[test]
    fn keys_of_a_channel_share_one_hash_tag() {
        let channel = key("t1", "actors/u1");
        assert_eq!(RedisBroker::pubsub_channel(&channel), "t:t1:ch:{t1/actors/u1}");
        assert_eq!(RedisBroker::meta_key(&channel), "t:t1:ch:{t1/actors/u1}:meta");
        assert_eq!(RedisBroker::log_key(&channel), "t:t1:ch:{t1/actors/u1}:log");
    }

    #[test]
    fn pubsub_names_map_back_to_their_channel_and_nothing_else() {
        let channel = key("t-1.x", "a:b/c.d");
        assert_eq!(RedisBroker::channel_from_pubsub(&RedisBroker::pubsub_channel(&channel)), Some(channel));
        for name in ["", "t:t1:ch:{t1/x}:meta", "t:t2:ch:{t1/x}", "t:t1:ch:{t1/x", "x{t1/x}", "t:t1:ch:{t1/../x}"] {
            assert_eq!(RedisBroker::channel_from_pubsub(name), None, "{name}");
        }
    }

    #[test]
    fn messages_decode_with_any_payload_bytes() {
        let channel = key("t1", "global");
        let publication = RedisBroker::decode_message(channel.clone(), b"42:AbC_-x:a:b\x00\xff").unwrap();
        assert_eq!(publication.channel, channel);
        assert_eq!(publication.position, Position { offset: 42, epoch: Epoch("AbC_-x".into()) });
        assert_eq!(publication.payload.as_ref(), b"a:b\x00\xff");
        let empty = RedisBroker::decode_message(channel.clone(), b"1:e:").unwrap();
        assert!(empty.payload.is_empty());
        for raw in [&b""[..], b"1", b"1:e", b":e:p", b"x:e:p", b"-1:e:p", b"1::p", b"99999999999999999999:e:p"] {
            assert_eq!(RedisBroker::decode_message(channel.clone(), raw), None, "{raw:?}");
        }
    }

    #[test]
    fn ttl_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(3600)), 3600);
    }
}
