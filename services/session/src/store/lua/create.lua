-- Script ARGV: attributes, expire, max_expire, event id, event payload.
local ctx = context()
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
return reply('ok', session)
