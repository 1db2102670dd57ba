-- Script ARGV: event id, event payload before the version, after the version (the event's
-- version is the stored one).
local ctx = context()
local session = load_live(ctx.key, ctx.user, ctx.now)
if session == nil then
  return nil
end
save_expire(ctx, session, slide(session, ctx.now, ctx.idle))
mesh_enqueue_job(ctx.stream, ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1] .. session.version .. ARGV[FIRST_ARG + 2])
announce(ctx, 'TOUCHED', session)
return reply('ok', session)
