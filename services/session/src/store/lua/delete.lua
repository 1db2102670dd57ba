-- KEYS: session hash, user index, audit stream. ARGV: user, now, expected version ('' for
-- any), session id, event id, payload before the version, payload after the version.
local key, index, stream, now = KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2])
local session = load_live(key, ARGV[1], now)
if session == nil then
  return nil
end
if ARGV[3] ~= '' and session.version ~= tonumber(ARGV[3]) then
  return reply('conflict', session)
end
redis.call('DEL', key)
redis.call('ZREM', index, ARGV[4])
mesh_enqueue_job(stream, ARGV[5], ARGV[6] .. session.version .. ARGV[7])
return reply('ok', session)
