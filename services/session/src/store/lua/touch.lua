-- KEYS: session hash, audit stream. ARGV: user, now, idle ttl, grace, event id, payload
-- before the version, payload after the version (the event's version is the stored one).
local key, stream, now, idle, grace = KEYS[1], KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local session = load_live(key, ARGV[1], now)
if session == nil then
  return nil
end
save_expire(key, session, slide(session, now, idle), grace)
mesh_enqueue_job(stream, ARGV[5], ARGV[6] .. session.version .. ARGV[7])
return reply('ok', session)
