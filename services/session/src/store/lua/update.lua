-- Script ARGV: expected version, new attributes, idle expiry computed by the caller, event
-- id, event payload. The caller computed the new attributes and the event from the state at
-- the expected version; the compare and set makes sure that is still the stored state.
local ctx = context()
local expected = tonumber(ARGV[FIRST_ARG])
local session = load_live(ctx.key, ctx.user, ctx.now)
if session == nil then
  return nil
end
if session.version ~= expected then
  return reply('conflict', session)
end
session.version = expected + 1
session.attributes = ARGV[FIRST_ARG + 1]
session.update = ctx.now
redis.call('HSET', ctx.key, 'version', session.version, 'attributes', session.attributes, 'update', ctx.now)
local expire = math.min(math.max(tonumber(ARGV[FIRST_ARG + 2]), session.expire), session.max_expire)
save_expire(ctx, session, expire)
mesh_enqueue_job(ctx.stream, ARGV[FIRST_ARG + 3], ARGV[FIRST_ARG + 4])
announce(ctx, 'UPDATED', session)
return reply('ok', session)
