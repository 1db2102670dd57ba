-- Script KEYS: the common six, then the request id key when the call has one. Script ARGV:
-- attributes, expire, max_expire, event id, event payload, request id TTL (ms). Replies the
-- common reply plus the session id: a new session's, or the one the request id created
-- first when that session is still alive (then nothing changes).
local ctx = context()
local request = KEYS[7]
if request ~= nil then
  local first = redis.call('GET', request)
  if first then
    local prior = load_live(string.sub(ctx.key, 1, #ctx.key - #ctx.id) .. first, ctx.user, ctx.now)
    if prior ~= nil then
      local out = reply('ok', prior)
      out[8] = first
      return out
    end
  end
end
local attributes, expire = ARGV[FIRST_ARG], tonumber(ARGV[FIRST_ARG + 1])
local max_expire = tonumber(ARGV[FIRST_ARG + 2])
if redis.call('EXISTS', ctx.key) == 1 then
  return redis.error_reply('session id collision')
end
local session = { version = 1, attributes = attributes, create = ctx.now, update = ctx.now, max_expire = max_expire }
redis.call('HSET', ctx.key, 'user', ctx.user, 'version', 1, 'attributes', attributes, 'create', ctx.now,
  'update', ctx.now, 'max_expire', max_expire)
save_expire(ctx, session, expire)
redis.call('ZADD', ctx.index, ctx.now, ctx.id)
local index_until = redis.call('PEXPIRETIME', ctx.index)
if index_until < max_expire + ctx.grace then
  redis.call('PEXPIREAT', ctx.index, max_expire + ctx.grace)
end
mesh_enqueue_job(ctx.stream, ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4])
announce(ctx, 'CREATED', session)
if request ~= nil then
  redis.call('SET', request, ctx.id, 'PX', ARGV[FIRST_ARG + 5])
end
local out = reply('ok', session)
out[8] = ctx.id
return out
