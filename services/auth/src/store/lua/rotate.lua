-- Consumes a token and issues the next of its family, atomically. ARGV: presented hash,
-- next hash, now (ms). Replies {'rotated', record...}; {'reused', record...} for a token
-- consumed before or of a family revoked for reuse (the family is then revoked, every
-- time: the caller ends the session again, so a failed ending is retried by the next
-- presentation); {'invalid'} for an unknown or expired token.
local now = tonumber(ARGV[3])
local record = load(ARGV[1], now)
if record == nil then
  return invalid()
end
if record.state ~= 'live' then
  mark_family_revoked(record.family)
  return reply('reused', record)
end
redis.call('HSET', token_key(ARGV[1]), 'state', 'used')
store_token(ARGV[2], record.tenant, record.user, record.session, record.family, record.expire)
return reply('rotated', record)
