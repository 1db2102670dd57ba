-- Shared by every session script (prepended to each, after mesh-core's mesh_enqueue_job and
-- mesh_publish). A session hash holds: user, version, attributes (JSON object), create,
-- update, expire, max_expire (ms since the epoch).
--
-- Every script but list takes the same KEYS and first ARGV, read by `context`:
-- KEYS: session hash, owner index, audit stream, expiry index, channel meta, channel log.
-- ARGV: user, now, idle ttl, grace, session id, expiry member, pub/sub channel, candidate
-- epoch, history size, history ttl (s); script arguments start at ARGV[FIRST_ARG]. The get
-- script announces nothing and is given neither the channel keys nor their arguments.
-- Replies are {status, version, attributes, create, update, expire, max_expire}, status 'ok'
-- or 'conflict'; a missing, foreign or expired session replies nil.

local FIRST_ARG = 11

local function context()
  return {
    key = KEYS[1], index = KEYS[2], stream = KEYS[3], expiry = KEYS[4], channel_meta = KEYS[5],
    channel_log = KEYS[6], user = ARGV[1], now = tonumber(ARGV[2]), idle = tonumber(ARGV[3]),
    grace = tonumber(ARGV[4]), id = ARGV[5], member = ARGV[6], pubsub = ARGV[7], epoch = ARGV[8],
    history_size = ARGV[9], history_ttl = ARGV[10],
  }
end

-- The session at `key` if it belongs to `user` (alive or not), else nil.
local function load(key, user)
  local raw = redis.call('HMGET', key, 'user', 'version', 'attributes', 'create', 'update', 'expire', 'max_expire')
  if raw[1] ~= user then
    return nil
  end
  return {
    version = tonumber(raw[2]), attributes = raw[3], create = tonumber(raw[4]), update = tonumber(raw[5]),
    expire = tonumber(raw[6]), max_expire = tonumber(raw[7]),
  }
end

-- Whether `session` has ended at `now` (idle expiry or cap passed).
local function ended(session, now)
  return now >= session.expire or now >= session.max_expire
end

-- The session at `key` if it belongs to `user` and is alive at `now`, else nil.
local function load_live(key, user, now)
  local session = load(key, user)
  if session == nil or ended(session, now) then
    return nil
  end
  return session
end

-- The idle expiry after activity at `now`: slid forward, never back, never past the cap.
local function slide(session, now, idle)
  local expire = math.min(now + idle, session.max_expire)
  if expire < session.expire then
    expire = session.expire
  end
  return math.min(expire, session.max_expire)
end

-- Writes a new idle expiry: in the hash, in the expiry index (which the sweeper reads), and
-- as the hash's own Redis expiry `grace` ms later (a safety net: the sweeper deletes it).
local function save_expire(ctx, session, expire)
  session.expire = expire
  redis.call('HSET', ctx.key, 'expire', expire)
  redis.call('PEXPIREAT', ctx.key, expire + ctx.grace)
  redis.call('ZADD', ctx.expiry, expire, ctx.member)
end

-- Publishes change `kind` of the session on its channel (see store/change.rs for the shape);
-- DELETED and EXPIRED carry no snapshot.
local function announce(ctx, kind, session)
  local head = string.format('{"kind":"%s","at":%d,"user":%s,"version":%d', kind, ctx.now, cjson.encode(ctx.user),
    session.version)
  local payload
  if kind == 'DELETED' or kind == 'EXPIRED' then
    payload = head .. '}'
  else
    payload = head .. string.format(',"attributes":%s,"create":%d,"update":%d,"expire":%d,"max_expire":%d}',
      cjson.encode(session.attributes), session.create, session.update, session.expire, session.max_expire)
  end
  mesh_publish(ctx.channel_meta, ctx.channel_log, ctx.pubsub, ctx.epoch, payload, ctx.history_size, ctx.history_ttl)
end

-- Removes the session from the hash, the owner index and the expiry index.
local function remove(ctx)
  redis.call('DEL', ctx.key)
  redis.call('ZREM', ctx.index, ctx.id)
  redis.call('ZREM', ctx.expiry, ctx.member)
end

local function reply(status, session)
  return { status, session.version, session.attributes, session.create, session.update, session.expire,
    session.max_expire }
end
