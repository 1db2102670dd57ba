-- KEYS: session hash, audit stream. ARGV: user, now, expected version, new attributes,
-- idle expiry computed by the caller, grace, event id, event payload. The caller computed
-- the new attributes and the event from the state at the expected version; the compare and
-- set makes sure that is still the stored state.
local key, stream, now, expected = KEYS[1], KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3])
local session = load_live(key, ARGV[1], now)
if session == nil then
  return nil
end
if session.version ~= expected then
  return reply('conflict', session)
end
session.version = expected + 1
session.attributes = ARGV[4]
session.update = now
redis.call('HSET', key, 'version', session.version, 'attributes', session.attributes, 'update', now)
local expire = math.min(math.max(tonumber(ARGV[5]), session.expire), session.max_expire)
save_expire(key, session, expire, tonumber(ARGV[6]))
mesh_enqueue_job(stream, ARGV[7], ARGV[8])
return reply('ok', session)
