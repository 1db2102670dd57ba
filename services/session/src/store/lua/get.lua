-- KEYS: session hash. ARGV: user, now, idle ttl, grace. Get counts as activity.
local key, now, idle, grace = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local session = load_live(key, ARGV[1], now)
if session == nil then
  return nil
end
save_expire(key, session, slide(session, now, idle), grace)
return reply('ok', session)
