-- Consumes a token and issues the next of its family, atomically. ARGV: presented hash,
-- next hash, now (ms). Replies {'rotated', record...}; {'reused', record...} after revoking
-- the family of a token consumed before; {'invalid'} for an unknown or expired token.
local now = tonumber(ARGV[3])
local record = load(ARGV[1], now)
if record == nil then
  return invalid()
end
if record.state ~= 'live' then
  revoke_family(record.tenant, record.session, record.family)
  return reply('reused', record)
end
redis.call('HSET', token_key(ARGV[1]), 'state', 'used')
store_token(ARGV[2], record.tenant, record.user, record.session, record.family, record.expire)
return reply('rotated', record)
