-- Shared by every session script (prepended to each). A session hash holds: user, version,
-- attributes (JSON object), create, update, expire, max_expire (ms since the epoch). Every
-- reply is {status, version, attributes, create, update, expire, max_expire}, status 'ok' or
-- 'conflict'; a missing, foreign or expired session replies nil.

-- The session at `key` if it belongs to `user` and is alive at `now`, else nil.
local function load_live(key, user, now)
  local raw = redis.call('HMGET', key, 'user', 'version', 'attributes', 'create', 'update', 'expire', 'max_expire')
  if raw[1] ~= user then
    return nil
  end
  local session = {
    version = tonumber(raw[2]), attributes = raw[3], create = tonumber(raw[4]), update = tonumber(raw[5]),
    expire = tonumber(raw[6]), max_expire = tonumber(raw[7]),
  }
  if now >= session.expire or now >= session.max_expire then
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

-- Writes a new idle expiry and lets Redis drop the hash `grace` ms after it.
local function save_expire(key, session, expire, grace)
  session.expire = expire
  redis.call('HSET', key, 'expire', expire)
  redis.call('PEXPIREAT', key, expire + grace)
end

local function reply(status, session)
  return { status, session.version, session.attributes, session.create, session.update, session.expire,
    session.max_expire }
end
