-- Shared by the refresh-token scripts (prepended to each). Every key has the hash tag
-- {refresh}, so the scripts also run on Redis Cluster (one slot for all refresh tokens).
--   mesh:{refresh}:token:<hash>            hash: tenant, user, session, family, expire (ms),
--                                          state ('live' | 'used' | 'revoked': its family was reused)
--   mesh:{refresh}:family:<family>         set of the family's token hashes
--   mesh:{refresh}:session:<tenant>/<sid>  set of the session's families
-- Keys expire with the family (PEXPIREAT expire).

local PREFIX = 'mesh:{refresh}:'

local function token_key(hash) return PREFIX .. 'token:' .. hash end
local function family_key(family) return PREFIX .. 'family:' .. family end
local function session_key(tenant, session) return PREFIX .. 'session:' .. tenant .. '/' .. session end

-- Deletes every token of `family` and the family itself; drops it from its session's set.
local function revoke_family(tenant, session, family)
  for _, hash in ipairs(redis.call('SMEMBERS', family_key(family))) do
    redis.call('DEL', token_key(hash))
  end
  redis.call('DEL', family_key(family))
  redis.call('SREM', session_key(tenant, session), family)
end

-- Marks every token of `family` revoked: kept (until the family expires) so that any of
-- them presented again is still recognised as reuse.
local function mark_family_revoked(family)
  for _, hash in ipairs(redis.call('SMEMBERS', family_key(family))) do
    redis.call('HSET', token_key(hash), 'state', 'revoked')
  end
end

-- Stores token `hash` as live in `family` until `expire` (ms).
local function store_token(hash, tenant, user, session, family, expire)
  redis.call('HSET', token_key(hash), 'tenant', tenant, 'user', user, 'session', session, 'family', family,
    'expire', expire, 'state', 'live')
  redis.call('PEXPIREAT', token_key(hash), expire)
  redis.call('SADD', family_key(family), hash)
  redis.call('PEXPIREAT', family_key(family), expire)
end

-- The record of token `hash` if it exists and has not expired at `now`, else nil.
local function load(hash, now)
  local raw = redis.call('HMGET', token_key(hash), 'tenant', 'user', 'session', 'family', 'expire', 'state')
  if not raw[1] or now >= tonumber(raw[5]) then
    return nil
  end
  return { tenant = raw[1], user = raw[2], session = raw[3], family = raw[4], expire = tonumber(raw[5]), state = raw[6] }
end

local function reply(status, record)
  return { status, record.tenant, record.user, record.session, record.family, record.expire }
end

-- The reply for an unknown, expired, consumed or revoked token (same length as `reply`).
local function invalid()
  return { 'invalid', false, false, false, false, false }
end
