-- KEYS: session hash, user index, audit stream. ARGV: user, id, attributes, now, expire,
-- max_expire, grace, event id, event payload.
local key, index, stream = KEYS[1], KEYS[2], KEYS[3]
local now, expire, max_expire, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('EXISTS', key) == 1 then
  return redis.error_reply('session id collision')
end
redis.call('HSET', key, 'user', ARGV[1], 'version', 1, 'attributes', ARGV[3], 'create', now, 'update', now,
  'expire', expire, 'max_expire', max_expire)
redis.call('PEXPIREAT', key, expire + grace)
redis.call('ZADD', index, now, ARGV[2])
local index_until = redis.call('PEXPIRETIME', index)
if index_until < max_expire + grace then
  redis.call('PEXPIREAT', index, max_expire + grace)
end
mesh_enqueue_job(stream, ARGV[8], ARGV[9])
return { 'ok', 1, ARGV[3], now, now, expire, max_expire }
