-- No script ARGV. Get counts as activity: it slides the idle expiry, announces nothing.
local ctx = context()
local session = load_live(ctx.key, ctx.user, ctx.now)
if session == nil then
  return nil
end
save_expire(ctx, session, slide(session, ctx.now, ctx.idle))
return reply('ok', session)
