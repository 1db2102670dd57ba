-- Script ARGV: expected version ('' for any), event id, event payload before the version,
-- after the version.
local ctx = context()
local session = load_live(ctx.key, ctx.user, ctx.now)
if session == nil then
  return nil
end
if ARGV[FIRST_ARG] ~= '' and session.version ~= tonumber(ARGV[FIRST_ARG]) then
  return reply('conflict', session)
end
remove(ctx)
mesh_enqueue_job(ctx.stream, ARGV[FIRST_ARG + 1], ARGV[FIRST_ARG + 2] .. session.version .. ARGV[FIRST_ARG + 3])
announce(ctx, 'DELETED', session)
return reply('ok', session)
